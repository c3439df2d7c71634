"""The tablet form answers every input problem at once, keeps what was typed except the
co-signer's password (and says so), and spends no co-signer sign-in guess on a form that is
refused for other reasons (issue 14, item 9)."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from eldercare.accounts import LoginThrottle
from tests.assessment.test_views import EN, _form, _scheduled, _text

PASSWORD_NOTE_EN = "For your safety the password was not kept; type it again."
PASSWORD_NOTE_ZH = "为了您的安全，密码没有保留，请重新输入。"


def _failures(db_session, username: str) -> int:
    return (
        db_session.scalar(
            sa.select(LoginThrottle.failures).where(
                LoginThrottle.username_key == username, LoginThrottle.client_key == "127.0.0.1"
            )
        )
        or 0
    )


def _bad_form(world, password):
    data = _form(world, password=password, fee="eighty", diagnoses="dementia F00")
    for code in ("stairs", "eating", "bathing"):
        del data[f"score-{code}"]
    return data


def test_one_answer_lists_unscored_items_with_the_other_errors_and_keeps_the_input(
    client, login, world, db_session
):
    case = _scheduled(world)
    login(world.li.user)
    response = client.post(
        f"/assessment/cases/{case.id}/record", data=_bad_form(world, "typed-secret"), headers=EN
    )
    assert response.status_code == 422
    page = _text(response)
    # The unscored items and the other fields' errors are in the same first answer.
    for code in ("stairs", "eating", "bathing"):
        assert re.search(rf'id="score-{code}-error" role="alert">missing; give a score', page)
        assert f'<a href="#item-{code}">' in page
    assert re.search(r'id="fee-error" role="alert">[^<]*at most two decimals', page)
    assert '<a href="#field-fee_fen">' in page
    assert re.search(r'id="diagnoses-error" role="alert">[^<]*ICD-10 code', page)
    # What was typed comes back, except the password, and the page says why.
    assert len(re.findall(r"\schecked>", page)) == 23
    assert 'value="dementia F00"' in page and 'value="eighty"' in page
    assert 'value="assessor1"' in page
    assert "typed-secret" not in page
    assert PASSWORD_NOTE_EN in page
    db_session.refresh(case)
    assert case.status == "scheduled" and case.total is None


def test_the_password_note_is_in_chinese_first(client, login, world):
    case = _scheduled(world)
    login(world.li.user)
    response = client.post(
        f"/assessment/cases/{case.id}/record", data=_bad_form(world, "typed-secret")
    )
    assert response.status_code == 422
    assert PASSWORD_NOTE_ZH in _text(response)


def test_no_note_when_no_password_was_typed(client, login, world):
    case = _scheduled(world)
    login(world.li.user)
    response = client.post(
        f"/assessment/cases/{case.id}/record", data=_bad_form(world, ""), headers=EN
    )
    assert response.status_code == 422
    assert PASSWORD_NOTE_EN not in _text(response)


def test_a_form_refused_for_other_reasons_spends_no_cosigner_guess(
    client, login, world, db_session
):
    case = _scheduled(world)
    login(world.li.user)
    response = client.post(
        f"/assessment/cases/{case.id}/record", data=_bad_form(world, "wrong-guess"), headers=EN
    )
    assert response.status_code == 422
    # The password was not judged: no "not correct" message, no failure counted.
    assert "The username or password is not correct." not in _text(response)
    assert _failures(db_session, "assessor1") == 0

    # The same wrong password on an otherwise valid form is judged and counted.
    wrong = client.post(
        f"/assessment/cases/{case.id}/record",
        data=_form(world, password="wrong-guess"),
        headers=EN,
    )
    assert wrong.status_code == 422
    assert "The username or password is not correct." in _text(wrong)
    assert PASSWORD_NOTE_EN in _text(wrong)
    assert _failures(db_session, "assessor1") == 1


def test_the_services_date_and_fee_checks_come_in_the_same_answer(client, login, world, db_session):
    case = _scheduled(world)
    login(world.li.user)
    data = _form(
        world,
        password="wrong-guess",
        fee="2000",
        assessed_on=(world.today + timedelta(days=1)).isoformat(),
        care_risk_events_30d="many",
    )
    del data["score-stairs"]
    response = client.post(f"/assessment/cases/{case.id}/record", data=data, headers=EN)
    assert response.status_code == 422
    page = _text(response)
    assert re.search(r'id="score-stairs-error" role="alert">missing; give a score', page)
    assert re.search(r'id="fee-error" role="alert">The fee must be between 0 and 1,000', page)
    assert re.search(r'id="assessed_on-error" role="alert">[^<]*cannot be in the future', page)
    assert re.search(r'id="care_risk_events_30d-error" role="alert">[^<]*whole number', page)
    assert _failures(db_session, "assessor1") == 0
