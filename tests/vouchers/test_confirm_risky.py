"""Issue 14 item 7: the vouchers' risky actions take two steps. The first POST changes
nothing (no money moved, no row, no audit row) and says what would happen, the amount
repeated for money; the same fields with confirm=1 act as before."""

import html as html_lib
import re
from datetime import date

import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from eldercare.db import db
from tests.confirm_helpers import asks_first, audit_rows, confirmed, hidden_fields
from tests.conftest import PASSWORD
from tests.vouchers.helpers import give_voucher
from vouchers.models import JournalEntry, VoucherCard, VoucherPolicy
from vouchers.pool import ledger
from vouchers.redemption import cards

GOOD_PIN = "730619"


def _entries() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(JournalEntry))


def test_a_district_allocation_asks_with_the_amount_and_moves_only_when_confirmed(
    scheme, client, login
):
    login(scheme.approver)
    before, entries = ledger.balances(), _entries()
    data = {"district_id": str(scheme.heping.id), "amount": "100000", "memo": "沈财〔2025〕7号"}
    page = asks_first(
        client,
        "/vouchers/bureau/pool/allocate",
        data,
        "¥100,000.00",
        "和平区",
        # What the pool keeps and the district then has, in yuan.
        f"¥{(before['pool:available'] - 10_000_000) / 100:,.2f}",
        f"¥{(before['district:210102:available'] + 10_000_000) / 100:,.2f}",
    )
    assert "Allocate ¥100,000.00 to 和平区" in page
    assert ledger.balances() == before and _entries() == entries

    done = client.post("/vouchers/bureau/pool/allocate", data=confirmed(data))
    assert done.status_code == 302
    after = ledger.balances()
    assert after["district:210102:available"] == before["district:210102:available"] + 10_000_000
    assert after["pool:available"] == before["pool:available"] - 10_000_000


def test_taking_money_back_from_a_district_asks_in_its_own_words(scheme, client, login):
    login(scheme.approver)
    before = ledger.balances()
    data = {"district_id": str(scheme.heping.id), "amount": "-200", "memo": "调回"}
    asks_first(client, "/vouchers/bureau/pool/allocate", data, "Take ¥200.00 back from 和平区")
    assert ledger.balances() == before


def test_bad_input_is_refused_before_any_question(scheme, client, login):
    login(scheme.approver)
    refused = client.post(
        "/vouchers/bureau/pool/allocate", data={"district_id": "", "amount": "abc", "memo": ""}
    )
    assert refused.status_code == 422
    assert 'id="confirm-form"' not in refused.get_data(as_text=True)


def test_a_top_up_asks_with_the_amount_and_records_only_when_confirmed(scheme, client, login):
    login(scheme.approver)
    before, entries = ledger.balances(), _entries()
    data = {"source": "local", "amount": "500000.50", "memo": "沈财〔2025〕1号"}
    asks_first(client, "/vouchers/bureau/pool/topup", data, "¥500,000.50", "沈财〔2025〕1号")
    assert ledger.balances() == before and _entries() == entries
    assert client.post("/vouchers/bureau/pool/topup", data=confirmed(data)).status_code == 302
    assert ledger.balances()["funding:local"] == before.get("funding:local", 0) - 50_000_050


def _policy_form():
    return {
        "kind": "home_community",
        "effective_from": date(date.today().year + 1, 1, 1).isoformat(),
        "cap": "500",
        "ratio": "50",
        "in_scope_categories": ["meal_help", "bathing"],
        "eligible_levels": ["moderate", "severe", "complete"],
        "evv_max_distance_m": "500",
        "reversal_window_days": "7",
        "note": "沈民发〔2025〕9号",
    }


def test_a_policy_change_asks_and_is_added_only_when_confirmed(scheme, client, login):
    login(scheme.approver)
    count = db.session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy))
    start = date(date.today().year + 1, 1, 1).isoformat()
    asks_first(
        client, "/vouchers/bureau/policies", _policy_form(), f"from {start}", "¥500.00", "50%"
    )
    assert db.session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy)) == count
    added = client.post("/vouchers/bureau/policies", data=confirmed(_policy_form()))
    assert added.status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy)) == count + 1


def _card(scheme):
    return db.session.scalar(
        sa.select(VoucherCard).where(VoucherCard.resident_id == scheme.elder.id)
    )


def _with_card(scheme):
    give_voucher(scheme.elder, scheme.today)
    cards.issue_card(scheme.elder.id, GOOD_PIN, actor=scheme.approver)
    db.session.flush()
    card = _card(scheme)
    return card, card.card_code, card.pin_hash


def test_stopping_a_printed_card_asks_first(scheme, client, login):
    card, code, _pin = _with_card(scheme)
    login(scheme.son)
    url = f"/vouchers/elder/{scheme.elder.id}/card/revoke"
    asks_first(client, url, {}, f"ending {code[-4:]}", "stops working at once")
    db.session.expire_all()
    assert _card(scheme).status == "active"
    assert client.post(url, data=confirmed()).status_code == 302
    db.session.expire_all()
    assert _card(scheme).status == "revoked"


def test_a_lost_card_reprint_asks_first_at_the_district_office(scheme, client, login, factory):
    card, code, pin_hash = _with_card(scheme)
    officer = factory.user("heping.off", roles=["bureau_officer"], district=scheme.heping)
    login(officer)
    url = f"/vouchers/bureau/residents/{scheme.elder.id}/card/issue"
    data = {"pin": "482915", "pin_again": "482915"}
    asks_first(
        client,
        url,
        data,
        f"ending {code[-4:]}",
        "stops working at once",
        secrets=("pin", "pin_again"),
    )
    db.session.expire_all()
    assert _card(scheme).card_code == code and _card(scheme).status == "active"
    assert client.post(url, data=confirmed(data)).status_code == 302
    db.session.expire_all()
    assert _card(scheme).card_code != code


def test_a_new_pin_asks_first_and_a_bad_pin_is_refused_before(scheme, client, login):
    card, code, pin_hash = _with_card(scheme)
    login(scheme.son)
    url = f"/vouchers/elder/{scheme.elder.id}/card/pin"
    refused = client.post(url, data={"pin": "123456", "pin_again": "123456"})
    assert refused.status_code == 422
    data = {"pin": "482915", "pin_again": "482915"}
    asks_first(client, url, data, "old PIN stops working", secrets=("pin", "pin_again"))
    db.session.expire_all()
    assert _card(scheme).pin_hash == pin_hash
    before = audit_rows()
    assert client.post(url, data=confirmed(data)).status_code == 302
    db.session.expire_all()
    assert _card(scheme).pin_hash != pin_hash and audit_rows() > before


def test_a_first_card_is_issued_in_one_step(scheme, client, login):
    """Nothing is lost by a first card: no question."""
    give_voucher(scheme.elder, scheme.today)
    login(scheme.son)
    issued = client.post(
        f"/vouchers/elder/{scheme.elder.id}/card/issue",
        data={"pin": GOOD_PIN, "pin_again": GOOD_PIN},
    )
    assert issued.status_code == 302 and _card(scheme).status == "active"


def test_the_card_controls_look_like_buttons(scheme, client, login):
    _with_card(scheme)
    login(scheme.son)
    page = client.get(f"/vouchers/elder/{scheme.elder.id}").get_data(as_text=True)
    assert page.count('<summary class="button secondary">') == 2
    assert 'class="link-target">' not in page.split('id="card-heading"')[1]


def test_the_question_is_asked_in_chinese_first(scheme, client, login):
    login(scheme.approver)
    before = ledger.balances()
    page = client.post(
        "/vouchers/bureau/pool/allocate",
        data={"district_id": str(scheme.heping.id), "amount": "100000", "memo": ""},
        headers={"Accept-Language": "zh-CN"},
    ).get_data(as_text=True)
    assert "向和平区分配 ¥100,000.00 吗？" in page
    assert "目前还没有做任何更改。" in page and "返回，不做更改" in page
    assert ledger.balances() == before


def test_the_confirmation_form_carries_its_own_csrf_token(scheme, csrf_client):
    """With CSRF on, as in production: the confirmation page's form posts a token of its
    own with the repeated fields, and that post acts."""

    def token(page: str) -> str:
        return re.search(r'name="csrf_token"[^>]* value="([^"]+)"', page).group(1)

    login_page = csrf_client.get("/login").get_data(as_text=True)
    signed_in = csrf_client.post(
        "/login",
        data={
            "username": scheme.approver.username,
            "password": PASSWORD,
            "csrf_token": token(login_page),
        },
    )
    assert signed_in.status_code == 302
    pool_page = csrf_client.get("/vouchers/bureau/pool").get_data(as_text=True)
    data = {"district_id": str(scheme.heping.id), "amount": "300", "memo": "CSRF"}
    before = ledger.balances()["district:210102:available"]
    asked = csrf_client.post(
        "/vouchers/bureau/pool/allocate", data={**data, "csrf_token": token(pool_page)}
    )
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and 'id="confirm-form"' in page
    fields = hidden_fields(page)
    assert [n for n, _v in fields].count("csrf_token") == 1
    done = csrf_client.post("/vouchers/bureau/pool/allocate", data=MultiDict(fields))
    assert done.status_code == 302
    assert ledger.balances()["district:210102:available"] == before + 30_000


def test_the_language_links_of_a_page_answering_a_post_lead_to_a_page_not_a_405(
    scheme, client, login
):
    """A confirmation page (or a form shown again with its errors) answers a POST; its
    language and large-text links must bring the reader back to a page they can open, not to
    the POST-only address (a 405)."""
    login(scheme.approver)
    data = {"district_id": str(scheme.heping.id), "amount": "100", "memo": "m"}
    page = client.post(
        "/vouchers/bureau/pool/allocate",
        data=data,
        headers={"Referer": "http://localhost/vouchers/bureau/pool?tab=1"},
    ).get_data(as_text=True)
    switches = re.findall(r'href="(/(?:lang|display)/[^"]+)"', page)
    assert len(switches) == 3, switches
    for switch in switches:
        answer = client.get(html_lib.unescape(switch))
        assert answer.status_code == 302
        target = answer.headers["Location"]
        assert target.endswith("/vouchers/bureau/pool?tab=1"), target
        assert client.get(target).status_code == 200
    # Without a referrer of this site, home.
    page = client.post(
        "/vouchers/bureau/pool/allocate", data=data, headers={"Referer": "https://evil.example/x"}
    ).get_data(as_text=True)
    switch = html_lib.unescape(re.search(r'href="(/lang/en[^"]*)"', page).group(1))
    assert client.get(switch).headers["Location"] in ("/", "http://localhost/")
