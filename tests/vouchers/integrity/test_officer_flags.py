"""What a bureau officer does with anomaly flags (issue 15): several flags on one redemption
(rejecting one reverses it once and closes the others, audited; clearing one leaves the
others holding it), the flags page in words (the rule's name, the evidence described, the
officer's reason), counted and filtered by rule, paged, saying when a redemption is already
settled; the redemption's own page lists its flags; a district's officers see theirs only."""

import json

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.db import db
from tests.confirm_helpers import asks_first
from tests.vouchers.settlement import conftest as settlement
from tests.vouchers.settlement.builders import approved_statement
from tests.vouchers.settlement.conftest import spend
from vouchers.integrity import flags
from vouchers.integrity import views as flag_views
from vouchers.integrity.models import RedemptionFlag

PAGE = "/vouchers/bureau/flags"
bureau = settlement.bureau  # city-wide settlement staff (a fixture)


@pytest.fixture
def en(client):
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


@pytest.fixture
def two_flags(shop, rules_on):
    """A lunch both the high-value rule (above 1 yuan) and the review sample (every one)
    flag at its capture."""
    rules_on(high_value={"subsidy_fen": 100}, review_sample={"share_bp": 10000})
    r = spend(shop)
    found = _flags_of(r)
    assert [(f.rule, f.status) for f in found] == [
        ("high_value", "open"),
        ("review_sample", "open"),
    ]
    return r, found


def _flags_of(r):
    return db.session.scalars(
        sa.select(RedemptionFlag)
        .where(RedemptionFlag.redemption_id == r.id)
        .order_by(RedemptionFlag.id)
    ).all()


def _audits(action):
    return [
        (row.object_id, json.loads(row.after_json))
        for row in db.session.scalars(
            sa.select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)
        )
    ]


def test_rejecting_one_flag_reverses_once_and_closes_the_others(shop, two_flags, db_session):
    r, (high, sample) = two_flags
    flags.reject(high, reason="家属证实当日未送餐", actor=shop.market.officer)
    db_session.refresh(r)
    assert r.status == "reversed" and r.reversal_reason == "家属证实当日未送餐"
    high, sample = _flags_of(r)
    assert [(f.status, f.reason) for f in (high, sample)] == [
        ("rejected", "家属证实当日未送餐"),
        ("rejected", "家属证实当日未送餐"),
    ]
    assert sample.decided_by_user_id == shop.market.officer.id and sample.decided_at
    rows = _audits("redemption_flag.reject")
    assert [object_id for object_id, _ in rows] == [str(high.id), str(sample.id)]
    assert rows[0][1]["reversed"] is True and "with_flag" not in rows[0][1]
    assert rows[1][1]["with_flag"] == high.id and rows[1][1]["reason"] == "家属证实当日未送餐"
    # One reversal, audited once.
    assert len(_audits("redemption.reverse")) <= 1
    # The other flag is decided: deciding it again is a conflict, nothing changes.
    from eldercare.errors import Conflict

    with pytest.raises(Conflict):
        flags.clear(sample, reason="x", actor=shop.market.officer)


def test_clearing_one_flag_leaves_the_other_holding(shop, two_flags, en, login, db_session):
    r, (high, sample) = two_flags
    login(shop.market.officer)
    page = en.get(PAGE).get_data(as_text=True)
    assert f'id="others-{high.id}"' in page and "1 other flag holds it too" in page
    done = en.post(f"{PAGE}/{high.id}/clear", data={"reason": "电话核实无误"})
    assert done.status_code == 302
    page = en.get(PAGE).get_data(as_text=True)
    assert "the redemption is still held by 1 other flag" in page
    assert f'id="flag-{high.id}"' not in page and f'id="flag-{sample.id}"' in page
    assert f'id="others-{sample.id}"' not in page
    db_session.refresh(sample)
    db_session.refresh(r)
    assert (sample.status, r.status) == ("open", "redeemed")


def test_the_page_says_each_flag_in_words(shop, two_flags, en, client, login):
    r, (high, sample) = two_flags
    login(shop.market.officer)
    page = en.get(PAGE).get_data(as_text=True)
    assert "High-value redemption" in page and "Random review sample" in page
    assert "A subsidy of" in page and f"(#{r.id})" in page
    assert "Drawn at random for review (100% of every provider" in page
    assert "share_bp" not in page and "threshold_fen" not in page  # words, not data
    # The counts per rule, each a filter.
    assert 'id="flag-counts"' in page and "Open flags: 2" in page
    only = en.get(PAGE + "?rule=high_value").get_data(as_text=True)
    assert f'id="flag-{high.id}"' in only and f'id="flag-{sample.id}"' not in only
    ignored = en.get(PAGE + "?rule=nonsense").get_data(as_text=True)
    assert f'id="flag-{high.id}"' in ignored and f'id="flag-{sample.id}"' in ignored


def test_a_hold_by_hand_shows_the_officers_reason_in_both_languages(shop, en, login):
    r = spend(shop)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "家属投诉未上门"}, actor=shop.market.officer
    )
    login(shop.market.officer)
    page = en.get(PAGE).get_data(as_text=True)
    assert "Held by a bureau officer" in page and "家属投诉未上门" in page
    zh = en.get(PAGE, headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert f'id="flag-{flag.id}"' in zh and "家属投诉未上门" in zh
    assert "Held by a bureau officer" not in zh


def test_the_list_is_paged(shop, rules_on, en, login, monkeypatch):
    rules_on(high_value={"subsidy_fen": 100})
    first, second = spend(shop), spend(shop)
    monkeypatch.setattr(flag_views, "FLAG_PAGE", 1)
    login(shop.market.officer)
    page = en.get(PAGE).get_data(as_text=True)
    [one] = _flags_of(first)
    [two] = _flags_of(second)
    assert f'id="flag-{one.id}"' in page and f'id="flag-{two.id}"' not in page
    assert "page=2" in page and "Open flags: 2" in page
    later = en.get(PAGE + "?page=2").get_data(as_text=True)
    assert f'id="flag-{two.id}"' in later and f'id="flag-{one.id}"' not in later
    assert en.get(PAGE + "?page=99999999").status_code == 404


def test_a_settled_redemption_says_rejecting_claws_it_back(shop, en, login, bureau, db_session):
    r = spend(shop)
    approved_statement(shop.market.station, [r], preparer=bureau.officer, approver=bureau.approver)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "事后投诉"}, actor=shop.market.officer
    )
    login(shop.market.officer)
    page = en.get(PAGE).get_data(as_text=True)
    assert f'id="settled-{flag.id}"' in page and "Already settled" in page
    asks_first(
        en,
        f"{PAGE}/{flag.id}/reject",
        {"reason": "未提供服务"},
        "This redemption is already settled",
        "claws the subsidy of",
    )
    db_session.refresh(flag)
    assert flag.status == "open"


def test_the_confirmation_says_the_other_flags_close_too(shop, two_flags, en, login, db_session):
    r, (high, sample) = two_flags
    login(shop.market.officer)
    url = f"{PAGE}/{high.id}/reject"
    asks_first(en, url, {"reason": "未送餐"}, "other open flag on this redemption is closed")
    done = en.post(url, data={"reason": "未送餐", "confirm": "1"})
    assert done.status_code == 302
    assert [f.status for f in _flags_of(r)] == ["rejected", "rejected"]


def test_clearing_a_settled_redemptions_flag_says_nothing_changes(
    shop, en, login, bureau, db_session
):
    """Flagged after its statement was approved: it was paid already. Clearing said "will be
    settled with the next run", which settles nothing of it."""
    r = spend(shop)
    approved_statement(shop.market.station, [r], preparer=bureau.officer, approver=bureau.approver)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "事后投诉"}, actor=shop.market.officer
    )
    db_session.commit()
    login(shop.market.officer)
    page = en.post(
        f"{PAGE}/{flag.id}/clear", data={"reason": "家属确认"}, follow_redirects=True
    ).get_data(as_text=True)
    assert "The flag was cleared: the redemption was settled already; nothing changes." in page
    assert "will be settled with the next run" not in page


def test_a_settled_redemption_reversed_since_promises_no_claw_back(
    shop, en, login, bureau, db_session
):
    """The reversal clawed it back already (a rejection does not reverse it again): the
    queue said both "nothing is held" and "rejecting claws the subsidy back"."""
    from vouchers.redemption import steps as redemption

    r = spend(shop)
    approved_statement(shop.market.station, [r], preparer=bureau.officer, approver=bureau.approver)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "事后投诉"}, actor=shop.market.officer
    )
    redemption.reverse(r, actor=bureau.officer, reason="家属投诉未上门")
    db_session.commit()
    login(shop.market.officer)
    page = en.get(PAGE).get_data(as_text=True)
    assert f'id="reversed-{flag.id}"' in page
    assert f'id="settled-{flag.id}"' not in page and "claws the subsidy back" not in page


def test_the_redemptions_page_lists_its_flags_for_the_bureau_only(shop, two_flags, en, login):
    r, (high, sample) = two_flags
    flags.clear(high, reason="核实无误", actor=shop.market.officer)
    login(shop.market.officer)
    page = en.get(f"/vouchers/redemptions/{r.id}").get_data(as_text=True)
    assert 'id="redemption-flags"' in page
    assert f'id="redemption-flag-{high.id}"' in page and f'id="redemption-flag-{sample.id}"' in page
    assert "High-value redemption" in page and "Cleared" in page and "Decision: 核实无误" in page
    assert "Open: held out of settlement" in page and "A subsidy of" in page
    login(shop.station_admin)
    page = en.get(f"/vouchers/redemptions/{r.id}").get_data(as_text=True)
    assert 'id="redemption-flags"' not in page and "High-value redemption" not in page


def test_a_district_officer_sees_and_counts_only_their_district(
    shop, two_flags, en, login, factory
):
    r, (high, sample) = two_flags
    shenhe = factory.user("shenhe.officer", roles=["bureau_officer"], district=shop.market.shenhe)
    login(shenhe)
    page = en.get(PAGE).get_data(as_text=True)
    assert 'id="no-flags"' in page and 'id="flag-counts"' not in page
    assert en.get(PAGE + "?rule=high_value").get_data(as_text=True).count('id="flag-') == 0
    assert en.post(f"{PAGE}/{high.id}/reject", data={"reason": "x"}).status_code == 404
    heping = factory.user("heping.officer", roles=["bureau_officer"], district=shop.heping)
    login(heping)
    page = en.get(PAGE).get_data(as_text=True)
    assert f'id="flag-{high.id}"' in page and "Open flags: 2" in page
