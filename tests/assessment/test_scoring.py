import json
import os
from pathlib import Path

import pytest
from flask_babel import force_locale
from hypothesis import given
from hypothesis import strategies as st

from assessment.errors import InvalidScores
from assessment.instrument import DATA_FILE, instrument
from assessment.scoring import score_assessment
from tests.assessment.helpers import items_with_total

SHARED = Path(__file__).resolve().parents[3] / "shared/domain/gbt42195_items.json"


def test_package_copy_equals_the_shared_instrument():
    if not SHARED.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared/ must sit beside the clone in CI: {SHARED}")
        pytest.skip("shared/ is not beside this checkout")
    assert json.loads(DATA_FILE.read_text("utf-8")) == json.loads(SHARED.read_text("utf-8"))


def test_instrument_shape():
    inst = instrument()
    assert len(inst.items) == 26 and len(inst.dimensions) == 4
    assert inst.max_total == 90
    for dimension in inst.dimensions:
        assert sum(i.max for i in dimension.items) == dimension.max


@pytest.mark.parametrize(
    "total, level",
    [
        (0, "complete"),
        (29, "complete"),
        (30, "severe"),
        (45, "severe"),
        (46, "moderate"),
        (65, "moderate"),
        (66, "mild"),
        (89, "mild"),
        (90, "intact"),
    ],
)
def test_every_band_edge(total, level):
    result = score_assessment(items_with_total(total))
    assert result.total == total
    assert result.base_level == result.level == level
    assert result.reasons == ()


def test_dimension_subtotals():
    result = score_assessment(items_with_total(90))
    assert result.dimensions == {
        "self_care": 32,
        "mobility": 15,
        "mental": 28,
        "perception_social": 15,
    }
    partial = score_assessment(items_with_total(40))
    assert partial.dimensions == {
        "self_care": 32,
        "mobility": 8,
        "mental": 0,
        "perception_social": 0,
    }


@pytest.mark.parametrize(
    "kwargs, reasons",
    [
        ({"diagnoses": ["F00"]}, ("psychiatric_diagnosis",)),  # dementia
        ({"diagnoses": ["F03.9"]}, ("psychiatric_diagnosis",)),
        ({"diagnoses": ["F32"]}, ("psychiatric_diagnosis",)),  # other mental disorder
        ({"care_risk_events_30d": 2}, ("care_risk_events",)),
        ({"care_risk_events_30d": 5}, ("care_risk_events",)),
    ],
)
def test_each_adjustment_alone_raises_one_level(kwargs, reasons):
    result = score_assessment(items_with_total(70), **kwargs)  # mild by total
    assert (result.base_level, result.level, result.reasons) == ("mild", "moderate", reasons)


def test_non_psychiatric_diagnosis_and_one_event_change_nothing():
    result = score_assessment(
        items_with_total(70), diagnoses=["I10", "E11.9"], care_risk_events_30d=1
    )
    assert (result.level, result.reasons) == ("mild", ())


def test_both_adjustments_raise_only_once():
    result = score_assessment(items_with_total(50), diagnoses=["F01"], care_risk_events_30d=3)
    assert result.base_level == "moderate"
    assert result.level == "severe"
    assert result.reasons == ("psychiatric_diagnosis", "care_risk_events")


def test_raise_is_capped_at_complete():
    result = score_assessment(items_with_total(10), diagnoses=["F02"])
    assert (result.base_level, result.level) == ("complete", "complete")


def test_coma_overrides_a_perfect_total():
    result = score_assessment(items_with_total(90), coma=True, diagnoses=["F00"])
    assert (result.total, result.base_level, result.level) == (90, "intact", "complete")
    assert result.reasons == ("coma",)


def _problems(items, locale="en", **kwargs):
    with force_locale(locale), pytest.raises(InvalidScores) as excinfo:
        score_assessment(items, **kwargs)
    return {k: str(v) for k, v in excinfo.value.details.items()}


def test_missing_item_is_named_with_its_range(app_ctx):
    items = items_with_total(50)
    del items["stairs"]
    assert _problems(items) == {"stairs": "missing; give a score from 0 to 3"}


def test_unknown_item_is_named(app_ctx):
    items = items_with_total(50) | {"juggling": 2}
    assert _problems(items) == {"juggling": "unknown item"}


@pytest.mark.parametrize(
    "value, message",
    [
        (5, "5 is outside the allowed range 0 to 4"),
        (-1, "-1 is outside the allowed range 0 to 4"),
        ("3", "must be a whole number from 0 to 4"),
        (2.5, "must be a whole number from 0 to 4"),
        (True, "must be a whole number from 0 to 4"),
        (None, "must be a whole number from 0 to 4"),
    ],
)
def test_bad_scores_are_named_with_the_allowed_range(app_ctx, value, message):
    items = items_with_total(50) | {"eating": value}
    assert _problems(items) == {"eating": message}


def test_errors_are_in_chinese_by_default(app_ctx):
    items = items_with_total(50) | {"eating": 5}
    assert "超出" in _problems(items, locale="zh_CN")["eating"]


@pytest.mark.parametrize(
    "bad",
    [{"diagnoses": ["dementia"]}, {"care_risk_events_30d": -1}, {"care_risk_events_30d": "2"}],
)
def test_bad_adjustment_inputs(app_ctx, bad):
    with pytest.raises(InvalidScores):
        score_assessment(items_with_total(50), **bad)


@given(
    scores=st.fixed_dictionaries(
        {code: st.integers(item.min, item.max) for code, item in instrument().items.items()}
    ),
    coma=st.booleans(),
    psychiatric=st.booleans(),
    events=st.integers(0, 10),
)
def test_level_rules_hold_for_any_valid_scores(scores, coma, psychiatric, events):
    result = score_assessment(
        scores, coma=coma, diagnoses=["F20"] if psychiatric else [], care_risk_events_30d=events
    )
    inst = instrument()
    assert result.total == sum(scores.values()) == sum(result.dimensions.values())
    base = inst.level(result.base_level)
    assert base.min_total <= result.total <= base.max_total
    raised = psychiatric or events >= 2
    expected = 4 if coma else min(base.rank + (1 if raised else 0), 4)
    assert inst.level(result.level).rank == expected
