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
