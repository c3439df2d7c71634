"""The bureau's flag pages: "Hold out of settlement" from the redemptions list, the list of
open flags with clear and reject forms (a reason required, in Chinese and English), and who
may see them."""

import pytest
import sqlalchemy as sa

from eldercare.db import db
from tests.confirm_helpers import asks_first
from tests.vouchers.settlement.conftest import spend
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag


@pytest.fixture
def en(client):
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def _flags():
    return db.session.scalars(sa.select(RedemptionFlag).order_by(RedemptionFlag.id)).all()


def test_an_officer_holds_a_redemption_from_the_list_and_clears_it(shop, en, login, db_session):
    r = spend(shop)
    login(shop.market.officer)
    listing = en.get("/vouchers/bureau/redemptions").get_data(as_text=True)
    where = f"/vouchers/bureau/redemptions/{r.id}/flag"
    assert f'href="{where}"' in listing and "Hold out of settlement" in listing
    assert 'id="flag-form"' in en.get(where).get_data(as_text=True)
    refused = en.post(where, data={"reason": "  "})
    assert refused.status_code == 422
    assert "Give the reason; it is kept in the audit trail." in refused.get_data(as_text=True)
    assert _flags() == []
    done = en.post(where, data={"reason": "家属投诉未上门"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/vouchers/bureau/flags")
    [flag] = _flags()
    assert (flag.status, flag.evidence) == ("open", {"reason": "家属投诉未上门"})
    # The list now says it is held, and offers no second hold.
    listing = en.get("/vouchers/bureau/redemptions").get_data(as_text=True)
    assert "Held out of settlement" in listing and f'href="{where}"' not in listing
    again = en.post(where, data={"reason": "again"})
    assert again.status_code == 409 and len(_flags()) == 1

    page = en.get("/vouchers/bureau/flags").get_data(as_text=True)
    assert f'id="flag-{flag.id}"' in page and "家属投诉未上门" in page
    refused = en.post(f"/vouchers/bureau/flags/{flag.id}/clear", data={"reason": ""})
    assert refused.status_code == 422
    assert "Give the reason; it is kept in the audit trail." in refused.get_data(as_text=True)
    db_session.refresh(flag)
    assert flag.status == "open"
    cleared = en.post(f"/vouchers/bureau/flags/{flag.id}/clear", data={"reason": "电话核实已上门"})
    assert cleared.status_code == 302
    db_session.refresh(flag)
    assert (flag.status, flag.reason) == ("cleared", "电话核实已上门")
    assert 'id="no-flags"' in en.get("/vouchers/bureau/flags").get_data(as_text=True)
    # Decided already: a second decision (a stale page) is a clear conflict, nothing changes.
    late = en.post(f"/vouchers/bureau/flags/{flag.id}/reject", data={"reason": "未上门"})
    assert late.status_code == 409
    assert "Another officer decided this flag a moment ago" in late.get_data(as_text=True)
    db_session.refresh(r)
    assert r.status == "redeemed"


def test_rejecting_from_the_page_reverses(shop, client, login, db_session):
    r = spend(shop)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "可疑"}, actor=shop.market.officer
    )
    login(shop.approver)
    refused = client.post(f"/vouchers/bureau/flags/{flag.id}/reject", data={"reason": ""})
    assert refused.status_code == 422
    assert "请填写理由" in refused.get_data(as_text=True)  # Chinese by default
    # Issue 14 item 7: rejecting reverses the redemption, so the first POST only asks.
    url = f"/vouchers/bureau/flags/{flag.id}/reject"
    asks_first(client, url, {"reason": "未提供服务"}, "Reverse the redemption of", "未提供服务")
    db_session.refresh(flag)
    db_session.refresh(r)
    assert (flag.status, r.status) == ("open", "redeemed")
    done = client.post(url, data={"reason": "未提供服务", "confirm": "1"})
    assert done.status_code == 302
    db_session.refresh(flag)
    db_session.refresh(r)
    assert (flag.status, r.status, r.reversal_reason) == ("rejected", "reversed", "未提供服务")


def test_providers_cannot_reach_the_flag_pages(shop, client, login, db_session):
    r = spend(shop)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "可疑"}, actor=shop.market.officer
    )
    login(shop.station_admin)
    assert client.get("/vouchers/bureau/flags").status_code == 403
    assert (
        client.post(f"/vouchers/bureau/flags/{flag.id}/clear", data={"reason": "x"}).status_code
        == 403
    )
    assert (
        client.post(f"/vouchers/bureau/redemptions/{r.id}/flag", data={"reason": "x"}).status_code
        == 403
    )
    db_session.refresh(flag)
    assert flag.status == "open"


def test_a_district_officer_sees_only_their_districts_flags(
    shop, client, login, factory, db_session
):
    r = spend(shop)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "可疑"}, actor=shop.market.officer
    )
    shenhe = factory.user("shenhe.officer", roles=["bureau_officer"], district=shop.market.shenhe)
    login(shenhe)
    page = client.get("/vouchers/bureau/flags").get_data(as_text=True)
    assert f'id="flag-{flag.id}"' not in page and 'id="no-flags"' in page
    assert (
        client.post(f"/vouchers/bureau/flags/{flag.id}/clear", data={"reason": "x"}).status_code
        == 404
    )
    assert client.get(f"/vouchers/bureau/redemptions/{r.id}/flag").status_code == 404
    client.post("/logout")
    heping = factory.user("heping.officer", roles=["bureau_officer"], district=shop.heping)
    login(heping)
    assert f'id="flag-{flag.id}"' in client.get("/vouchers/bureau/flags").get_data(as_text=True)
    db_session.refresh(flag)
    assert flag.status == "open"


CLEARED = {
    "en": (
        "The flag was cleared: the redemption will be settled with the next run.",
        "The flag was cleared: the redemption was reversed; nothing will be settled.",
    ),
    "zh-CN": (
        "标记已解除：该核销将在下一次结算中结算。",
        "标记已解除：该核销已撤销，不会结算任何款项。",
    ),
}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("reversed_first", [False, True])
def test_clearing_says_one_thing_by_the_redemptions_status(
    shop, client, login, db_session, lang, reversed_first
):
    """Clearing flashed a stray "None" (no done message) beside a "will be settled" that a
    reversed redemption never is."""
    from vouchers.redemption import steps as redemption

    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
    r = spend(shop)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "待核实"}, actor=shop.market.officer
    )
    if reversed_first:
        redemption.reverse(r, actor=shop.station_admin, reason="扫错了老人")
    db_session.commit()
    login(shop.market.officer)
    done = client.post(
        f"/vouchers/bureau/flags/{flag.id}/clear", data={"reason": "核实"}, follow_redirects=True
    )
    page = done.get_data(as_text=True)
    assert done.status_code == 200
    assert CLEARED[lang][reversed_first] in page
    assert CLEARED[lang][not reversed_first] not in page
    assert 'role="status">None<' not in page


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", "This redemption was reversed: nothing is held out of settlement."),
        ("zh-CN", "该核销已撤销：没有款项被暂缓结算。"),
    ],
)
def test_the_queue_says_a_flagged_redemption_was_reversed(
    shop, client, login, db_session, lang, words
):
    """A reversal leaves the flag open (an officer should look at it), but the queue said
    nothing of it: the redemption looked held."""
    from vouchers.redemption import steps as redemption

    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
    r, kept = spend(shop), spend(shop)
    flag = flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": "待核实"}, actor=shop.market.officer
    )
    other = flags.raise_flag(
        kept, rule=flags.RULE_BUREAU, evidence={"reason": "待核实"}, actor=shop.market.officer
    )
    redemption.reverse(r, actor=shop.station_admin, reason="扫错了老人")
    db_session.commit()
    assert flag.status == "open"
    login(shop.market.officer)
    page = client.get("/vouchers/bureau/flags").get_data(as_text=True)
    assert f'id="reversed-{flag.id}"' in page and words in page
    assert f'id="reversed-{other.id}"' not in page
    assert {f.id: flags.is_held(x) for f, x in flags.open_flags(shop.market.officer)} == {
        flag.id: False,
        other.id: True,
    }
