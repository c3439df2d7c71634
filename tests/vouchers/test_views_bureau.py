"""The bureau's pool page, top-ups and allocations, policy versions, redemptions and the
printed card at the district office, through the real services."""

import re
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.forms import FormErrors
from tests.vouchers.helpers import give_voucher
from vouchers.models import JournalEntry, Shortfall, VoucherCard, VoucherPolicy
from vouchers.pool import ledger
from vouchers.views_bureau import parse_amount


@pytest.mark.parametrize(
    ("text", "signed", "fen"),
    [
        ("500", False, 50000),
        ("500.5", False, 50050),
        ("¥1,000.05", False, 100005),
        ("-200", True, -20000),
        ("1.234", False, None),
        ("-5", False, None),
        ("abc", False, None),
        ("0", False, None),
        ("", False, None),
    ],
)
def test_yuan_is_read_exactly(app_ctx, text, signed, fen):
    errors = FormErrors()
    assert parse_amount(text, "amount", errors, signed=signed) == fen
    assert bool(errors) is (fen is None)


def _figure(html, name):
    return int(re.search(rf'data-fen="(-?\d+)" id="fig-{name}"', html).group(1))


def test_pool_numbers_equal_the_ledger(scheme, client, login):
    give_voucher(scheme.elder, scheme.today)
    login(scheme.approver)
    assert client.post("/vouchers/bureau/pool/verify").status_code == 302
    html = client.get("/vouchers/bureau/pool", headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    balances = ledger.balances()
    assert _figure(html, "central") == -balances["funding:central"] == 100_000_000
    assert _figure(html, "local") == -balances.get("funding:local", 0)
    assert _figure(html, "unallocated") == balances["pool:available"]
    assert _figure(html, "outstanding") == balances["vouchers:outstanding"]
    assert _figure(html, "held") == balances["vouchers:held"]
    assert _figure(html, "unsettled") == balances["redeemed:unsettled"]
    row = re.search(r'data-district="210102">.*?data-fen="(\d+)"', html, re.S)
    assert int(row.group(1)) == balances["district:210102:available"]
    assert re.search(
        r'class="notice ok" id="ledger-check" role="status" data-checked="[^"]+">'
        r'<p class="tight">The books balanced to the fen when last checked, [^<]+ '
        r"\(less than a minute ago\)\.</p>",
        html,
    )
    assert re.search(r'id="fig-issued">1 ', html)


def test_top_up_and_allocation_move_money_and_bad_amounts_change_nothing(scheme, client, login):
    login(scheme.approver)
    before = ledger.balances()
    entries = db.session.scalar(sa.select(sa.func.count()).select_from(JournalEntry))
    for amount in ("1.234", "-5", "abc", "0", ""):
        response = client.post(
            "/vouchers/bureau/pool/topup",
            data={"source": "local", "amount": amount, "memo": "沈财〔2025〕1号"},
            headers={"Accept-Language": "en"},
        )
        assert response.status_code == 422, amount
        assert "Nothing has been saved." in response.get_data(as_text=True)
    no_memo = client.post(
        "/vouchers/bureau/pool/topup",
        data={"source": "local", "amount": "5", "memo": " "},
        headers={"Accept-Language": "en"},
    )
    assert no_memo.status_code == 422 and "Name the funding document" in no_memo.get_data(
        as_text=True
    )
    too_much = client.post(
        "/vouchers/bureau/pool/allocate",
        data={"district_id": scheme.heping.id, "amount": "-999999", "memo": ""},
    )
    assert too_much.status_code == 422
    assert ledger.balances() == before
    assert db.session.scalar(sa.select(sa.func.count()).select_from(JournalEntry)) == entries

    ok = client.post(
        "/vouchers/bureau/pool/topup",
        data={"source": "local", "amount": "500.5", "memo": "沈财〔2025〕1号", "confirm": "1"},
    )
    assert ok.status_code == 302
    assert ledger.balances()["funding:local"] == before.get("funding:local", 0) - 50050
    taken = client.post(
        "/vouchers/bureau/pool/allocate",
        data={"district_id": scheme.heping.id, "amount": "-200", "memo": "调回", "confirm": "1"},
    )
    assert taken.status_code == 302
    after = ledger.balances()
    assert after["district:210102:available"] == before["district:210102:available"] - 20000
    assert after["pool:available"] == before["pool:available"] + 50050 + 20000


def test_officers_cannot_fund_and_a_district_officer_sees_only_their_district(
    scheme, client, login, factory
):
    shenhe_officer = factory.user(
        "shenhe.officer", roles=["bureau_officer"], district=scheme.market.shenhe
    )
    login(scheme.market.officer)
    before = ledger.balances()
    refused = client.post(
        "/vouchers/bureau/pool/topup", data={"source": "local", "amount": "5", "memo": "x"}
    )
    assert refused.status_code == 403
    client.post("/logout")
    login(shenhe_officer)
    html = client.get("/vouchers/bureau/pool").get_data(as_text=True)
    assert 'data-district="210103"' in html and 'data-district="210102"' not in html
    assert 'id="fig-central"' not in html and 'id="journal"' not in html
    assert client.get(f"/vouchers/bureau/residents/{scheme.elder.id}/card").status_code == 404
    assert (
        client.post(
            f"/vouchers/bureau/residents/{scheme.elder.id}/card/issue",
            data={"pin": "730619", "pin_again": "730619"},
        ).status_code
        == 404
    )
    assert db.session.scalar(sa.select(VoucherCard)) is None
    assert ledger.balances() == before


def test_the_district_office_issues_a_card(scheme, client, login, factory):
    heping_officer = factory.user("heping.off", roles=["bureau_officer"], district=scheme.heping)
    login(heping_officer)
    page = client.get(f"/vouchers/bureau/residents/{scheme.elder.id}/card")
    assert page.status_code == 200 and "王**" in page.get_data(as_text=True)
    issued = client.post(
        f"/vouchers/bureau/residents/{scheme.elder.id}/card/issue",
        data={"pin": "730619", "pin_again": "730619"},
    )
    assert issued.status_code == 302
    card = db.session.scalar(
        sa.select(VoucherCard).where(VoucherCard.resident_id == scheme.elder.id)
    )
    assert card.status == "active" and card.issued_by_user_id == heping_officer.id


def _policy_form(**changes):
    form = {
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
    form.update(changes)
    return form


def test_a_policy_version_is_added_and_a_past_date_refused(scheme, client, login):
    login(scheme.approver)
    count = db.session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy))
    past = client.post(
        "/vouchers/bureau/policies",
        data=_policy_form(effective_from=(scheme.today - timedelta(days=1)).isoformat()),
        headers={"Accept-Language": "en"},
    )
    assert past.status_code == 422
    # Next to the date field, in the words an English reader sees.
    assert re.search(
        r'id="effective_from-error" role="alert">\s*A new rule starts tomorrow at the earliest\.',
        past.get_data(as_text=True),
    )
    bad_cap = client.post("/vouchers/bureau/policies", data=_policy_form(cap="1.234"))
    assert bad_cap.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy)) == count

    added = client.post("/vouchers/bureau/policies", data=_policy_form(confirm="1"))
    assert added.status_code == 302
    version = db.session.scalar(sa.select(VoucherPolicy).order_by(VoucherPolicy.id.desc()).limit(1))
    assert version.ratio_bp == 5000 and version.monthly_cap_fen == 50000
    assert version.effective_from == date(date.today().year + 1, 1, 1)
    assert version.category_set == {"meal_help", "bathing"}
    listing = client.get("/vouchers/bureau/policies").get_data(as_text=True)
    assert f'data-from="{version.effective_from.isoformat()}"' in listing
    client.post("/logout")
    login(scheme.market.officer)
    assert client.post("/vouchers/bureau/policies", data=_policy_form()).status_code == 403


def test_a_district_approver_cannot_change_the_city_policy(scheme, client, login, factory):
    approver = factory.user("heping.approver", roles=["bureau_approver"], district=scheme.heping)
    login(approver)
    count = db.session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy))
    assert client.post("/vouchers/bureau/policies", data=_policy_form()).status_code == 403
    assert db.session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy)) == count
    assert 'id="policy-form"' not in client.get("/vouchers/bureau/policies").get_data(as_text=True)


def test_shortfalls_are_listed_with_resolved_ones_marked(scheme, client, login, factory):
    month = scheme.today.replace(day=1)
    other = factory.resident(scheme.heping, name="赵大娘")
    db.session.add_all(
        [
            Shortfall(
                month=month,
                resident_id=scheme.elder.id,
                district_id=scheme.heping.id,
                level="moderate",
                needed_fen=50000,
            ),
            Shortfall(
                month=month,
                resident_id=other.id,
                district_id=scheme.heping.id,
                level="severe",
                needed_fen=50000,
                resolved_at=db.func.now(),
            ),
        ]
    )
    db.session.flush()
    login(scheme.market.officer)
    html = client.get("/vouchers/bureau/pool").get_data(as_text=True)
    table = html[html.index('id="shortfalls"') :]
    assert '<tr class="open"><td>王**' in table
    assert '<tr class="resolved"><td>赵**' in table
    assert "王秀英" not in table


def test_the_redemption_list_filters(scheme, client, login):
    login(scheme.market.officer)
    page = client.get("/vouchers/bureau/redemptions?status=redeemed&month=2025-13")
    assert page.status_code == 200 and 'id="no-redemptions"' in page.get_data(as_text=True)


def test_the_bureau_list_links_each_redemption_and_bad_filters_are_ignored(shop, client, login):
    from vouchers.redemption import steps as redemption

    r = redemption.check_in(
        shop.voucher,
        scan_digest="listed",
        staff_user=shop.caregiver,
        service_id=shop.market.meals.id,
    )
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    login(shop.market.officer)
    page = client.get("/vouchers/bureau/redemptions").get_data(as_text=True)
    assert f'href="/vouchers/redemptions/{r.id}"' in page
    assert client.get(f"/vouchers/redemptions/{r.id}").status_code == 200
    for query in ("month=0000-01", "provider_id=" + "9" * 25):
        answer = client.get(f"/vouchers/bureau/redemptions?{query}")
        assert answer.status_code in (200, 422), (query, answer.status_code)
    # A page no list can reach is a clear 404, as on every list (eldercare.paging).
    assert client.get("/vouchers/bureau/redemptions?page=" + "9" * 25).status_code == 404
    assert client.get("/vouchers/bureau/pool?page=" + "9" * 25).status_code == 404
    assert client.get("/vouchers/redemptions/" + "9" * 25).status_code == 404
