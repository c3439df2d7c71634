"""The officer's pages speak one language (tests/one_language.py): the flags page, the
redemption's flags and the anomaly rules page, in Chinese and in English, apart from their
data (names, what people typed)."""

import pytest
from flask_babel import force_locale

from eldercare.residents import mask_name
from tests.one_language import assert_one_language
from tests.vouchers.settlement.conftest import spend
from vouchers.integrity import flags
from vouchers.integrity.rules import DEFAULTS

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}


def _data(shop):
    m = shop.market
    return [
        "家属投诉未上门",
        m.station.name,
        mask_name(shop.elder.name),
        m.meals.title,
        shop.market.officer.display_name,
        shop.caregiver.display_name,
    ]


def _untranslated_labels(lang):
    """Rule names no Chinese yet on this branch (the rule modules bring theirs): data here."""
    with force_locale(lang):
        return [flags.rule_label(code) for code in DEFAULTS]


@pytest.mark.parametrize(("lang", "headers"), [("en", EN), ("zh_CN", ZH)])
def test_the_flags_pages_speak_one_language(shop, client, login, rules_on, lang, headers):
    rules_on(high_value={"subsidy_fen": 100})
    r = spend(shop)
    other = spend(shop, 150)  # a subsidy under the threshold
    flags.raise_flag(
        other,
        rule=flags.RULE_BUREAU,
        evidence={"reason": "家属投诉未上门"},
        actor=shop.market.officer,
    )
    login(shop.market.officer)
    data = _data(shop)
    if lang == "zh_CN":
        data += _untranslated_labels("zh_CN")
        with force_locale("zh_CN"):
            data += [flags.explain(f.rule, f.evidence) for f in flags.flags_of(r.id)]
    page = client.get("/vouchers/bureau/flags", headers=headers).get_data(as_text=True)
    assert 'id="flag-counts"' in page
    assert_one_language(page, lang, data)
    page = client.get(f"/vouchers/redemptions/{r.id}", headers=headers).get_data(as_text=True)
    assert 'id="redemption-flags"' in page
    assert_one_language(page, lang, data)


@pytest.mark.parametrize(("lang", "headers"), [("en", EN), ("zh_CN", ZH)])
def test_the_rules_page_speaks_one_language(scheme, client, login, lang, headers):
    login(scheme.approver)
    page = client.get("/vouchers/bureau/anomaly-rules", headers=headers).get_data(as_text=True)
    assert 'id="add-version-high_value"' in page
    data = [scheme.approver.display_name]
    if lang == "zh_CN":
        data += _untranslated_labels("zh_CN")
    assert_one_language(page, lang, data)
