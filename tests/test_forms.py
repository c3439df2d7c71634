"""eldercare.forms: reading form fields and showing a service's refusal, for every domain."""

from __future__ import annotations

from datetime import date

import pytest
from flask_babel import lazy_gettext as _l

from eldercare.errors import InvalidInput, leading_message
from eldercare.forms import (
    FormErrors,
    fen_from_yuan,
    input_problem,
    parse_date,
    parse_yuan,
    problem_from,
    whole_number,
    whole_number_or_raw,
    yuan,
    yuan_input,
)

GOOD_AMOUNTS = [
    ("80", 8000),
    ("80.5", 8050),
    ("80.50", 8050),
    ("0.1", 10),
    ("1,000.00", 100_000),
    ("¥80", 8000),
    ("￥ 35.50", 3550),
    (" 0 ", 0),
]
BAD_AMOUNTS = ["", "abc", "-5", "80.555", "1e3", "NaN", "80.", ".5"]


@pytest.mark.parametrize("typed, fen", GOOD_AMOUNTS)
def test_fees_typed_in_yuan_become_exact_fen(app_ctx, typed, fen):
    errors = FormErrors()
    assert parse_yuan(typed, "fee_fen", errors) == fen and not errors
    assert fen_from_yuan(typed) == fen


@pytest.mark.parametrize("typed", BAD_AMOUNTS)
def test_bad_fees_are_refused(app_ctx, typed):
    errors = FormErrors()
    assert parse_yuan(typed, "fee_fen", errors) is None and "fee_fen" in errors
    assert fen_from_yuan(typed) is None


def test_a_missing_amount_and_an_unreadable_one_get_different_messages(app_ctx):
    blank, bad = FormErrors(), FormErrors()
    parse_yuan("  ", "fee_fen", blank)
    parse_yuan("80.555", "fee_fen", bad)
    assert blank["fee_fen"] != bad["fee_fen"]


def test_the_first_message_for_a_field_wins(app_ctx):
    errors = FormErrors()
    errors.add("date", "first")
    errors.add("date", "second")
    assert errors == {"date": "first"}


def test_fen_is_shown_as_yuan():
    assert yuan(None) == "—"
    assert yuan(8000) == "¥80.00"
    assert yuan(123_456_789) == "¥1,234,567.89"
    assert [yuan_input(f) for f in (None, 1500, 1550, 5)] == ["", "15", "15.50", "0.05"]


@pytest.mark.parametrize("fen", [0, 5, 1500, 1550, 99_999_99])
def test_an_amount_shown_in_a_form_reads_back_the_same(fen):
    assert fen_from_yuan(yuan_input(fen)) == fen


def test_dates(app_ctx):
    errors = FormErrors()
    assert parse_date(" 2025-07-01 ", "on", errors) == date(2025, 7, 1) and not errors
    assert parse_date("", "until", errors, required=False) is None and not errors
    assert parse_date("", "on", errors) is None
    assert parse_date("01/07/2025", "day", errors) is None
    assert set(errors) == {"on", "day"} and errors["on"] != errors["day"]


def test_whole_numbers():
    assert [whole_number(t) for t in ("12", " -3 ", "007", None)] == [12, -3, 7, None]
    assert [whole_number(t) for t in ("1.5", "1e3", "+1", "1234567890")] == [None] * 4
    assert whole_number("123", digits=2) is None
    assert [whole_number_or_raw(t) for t in ("7", " 7 ", "abc", "", None)] == [
        7,
        7,
        "abc",
        None,
        None,
    ]
    assert whole_number_or_raw("1234567") == "1234567"  # too long: the service refuses it


def test_a_refusal_is_split_between_the_fields_and_the_notice(app_ctx):
    error = InvalidInput(
        details={"name": _l("Enter a name."), "hours": _l("Bad hours."), "provider_id": 7}
    )
    problem = problem_from(error, ("name",), extra=FormErrors(beds="Not a number."))
    assert problem["message"] == str(error.message)
    assert problem["fields"] == {"name": str(_l("Enter a name.")), "beds": "Not a number."}
    assert problem["other"] == [str(_l("Bad hours."))]  # the id is no message for people
    assert problem_from(error, ("name",), others=False)["other"] == []


def test_a_detail_holding_the_offending_value_shows_the_message(app_ctx):
    error = InvalidInput(_l("Unknown diagnosis code."), details={"diagnoses": "X99"})
    problem = problem_from(error, ("diagnoses",), message_fields=("diagnoses",))
    assert problem["fields"] == {"diagnoses": str(_l("Unknown diagnosis code."))}


def test_unreadable_input_is_a_problem_of_its_own(app_ctx):
    errors = FormErrors(date="Enter a date.")
    problem = input_problem(errors)
    assert problem["fields"] == {"date": "Enter a date."} and problem["other"] == []
    assert problem["message"]


def test_a_single_reason_leads_instead_of_the_generic_message(app_ctx):
    """Issue 14 item 3: "a home service needs the phone's location" first, not "some of the
    information entered is not valid"."""
    reason = _l("A home service needs the phone's location at check-in.")
    problem = problem_from(InvalidInput(details={"location": reason, "code": "x"}), ("location",))
    assert problem["message"] == str(reason)
    assert problem["fields"] == {"location": str(reason)}
    # Not placed by the form: it leads, and is not said a second time below it.
    alone = problem_from(InvalidInput(details={"location": reason}), ())
    assert (alone["message"], alone["other"]) == (str(reason), [])
    # Two reasons, a message of its own, or input that could not be read: no single reason.
    two = InvalidInput(details={"a": _l("Enter a name."), "b": _l("Bad hours.")})
    assert leading_message(two) is two.message
    own = InvalidInput(_l("Unknown diagnosis code."), details={"diagnoses": _l("Bad hours.")})
    assert leading_message(own) is own.message
    with_extra = problem_from(
        InvalidInput(details={"location": reason}), ("location",), extra=FormErrors(x="Bad.")
    )
    assert with_extra["message"] == str(InvalidInput.default_message)
