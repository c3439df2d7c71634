"""The vouchers operations of /api/v1: the city's mini-program acting for an elder, a
provider's scanner, and the bureau, with real tokens against the real services (and a real
localstripe for cards).

The ``shop`` fixture (tests/vouchers/conftest.py) gives the elder on 三好街 this month's
voucher of ¥500, the community station's certified caregiver and its administrator; the
station's lunch (¥15) is a meal on its premises, its bath a home visit.
"""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa
from openapi_spec_validator import validate

from eldercare.tokens import issue_token
from marketplace import catalogue
from tests.marketplace.conftest import ELDER_HOME
from tests.vouchers import conftest as voucher_fixtures
from tests.vouchers.helpers import give_voucher
from vouchers.models import JournalEntry, PaymentAttempt, Redemption, TokenUse, Voucher
from vouchers.pool import ledger, ledger_checks
from vouchers.redemption import cards
from vouchers.redemption.gateway import gateway

NEAR_HOME = {"latitude": ELDER_HOME[0] + 0.001, "longitude": ELDER_HOME[1]}  # ~110 m
FAR = {"latitude": ELDER_HOME[0] + 0.01, "longitude": ELDER_HOME[1]}  # ~1.1 km
PIN = "270415"

# The voucher tests' fixtures, used here by name.
market = voucher_fixtures.market
world = voucher_fixtures.world
take_through = voucher_fixtures.take_through
scheme = voucher_fixtures.scheme
shop = voucher_fixtures.shop
localstripe_server = voucher_fixtures.localstripe_server
localstripe = voucher_fixtures.localstripe
gateway_app_config = voucher_fixtures.gateway_app_config


class Api:
    def __init__(self, client):
        self.client = client

    def call(self, method, url, secret=None, *, json=None, query=None):
        headers = {"Accept-Language": "en"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        return self.client.open(
            "/api/v1" + url, method=method, headers=headers, json=json, query_string=query
        )

    def get(self, url, secret=None, **kwargs):
        return self.call("GET", url, secret, **kwargs)

    def post(self, url, secret=None, **kwargs):
        return self.call("POST", url, secret, **kwargs)


@pytest.fixture
def api(client):
    return Api(client)


@pytest.fixture
def token(shop, db_session):
    """A token acting as ``user`` with ``scopes``; what the test built so far is committed
    (an error answer rolls back everything uncommitted)."""

    def _issue(user, scopes=("read", "elders:write")):  # the mini-program's token
        _token, secret = issue_token(user, "Test client", list(scopes))
        db_session.commit()
        return secret

    return _issue


@pytest.fixture
def elder(token, shop):
    return token(shop.elder_user)


@pytest.fixture
def scanner(token, shop):
    return token(shop.caregiver, ("providers:write",))


@pytest.fixture
def card(shop, db_session):
    issued = cards.issue_card(shop.elder.id, PIN, actor=shop.son)
    db_session.commit()
    return issued


def error(response, status):
    assert response.status_code == status, response.get_json()
    return response.get_json()["error"]


def count(db_session, model):
    return db_session.scalar(sa.select(sa.func.count()).select_from(model))


def money(shop, db_session):
    db_session.refresh(shop.voucher)
    books = ledger.balances()
    return (
        shop.voucher.balance_fen,
        shop.voucher.held_fen,
        books["vouchers:held"],
        books["redeemed:unsettled"],
        ledger.verify_ledger().ok,
    )


def qr_token(api, elder, voucher_id):
    answer = api.post(f"/vouchers/{voucher_id}/qr-token", elder)
    assert answer.status_code == 200
    return answer


def card_link(card):
    """What the card's QR encodes (cards.card_url needs a request for the host)."""
    return f"https://eldercare.example/r/c{card.card_code}"


def scan_and_check_in(api, shop, elder, scanner, service=None, *, card=None, **location):
    """Scan the elder's phone (or, with ``card``, the printed card) and check in.

    A rotating token stays the same for its minute and is used once, so a second scanner in
    the same minute scans the card instead; the same scanner gets its earlier scan back."""
    if card is None:
        code = qr_token(api, elder, shop.voucher.id).get_json()["token"]
        scanned = api.post("/scans", scanner, json={"code": code})
    else:
        scanned = api.post("/scans", scanner, json={"code": card_link(card), "pin": PIN})
    assert scanned.status_code in (200, 201)
    service = service or shop.market.meals
    return api.post(
        f"/scans/{scanned.get_json()['scan_id']}/check-in",
        scanner,
        json={"service_id": service.id, **location},
    )


def priced(api, shop, elder, scanner, price_fen=1500):
    checked_in = scan_and_check_in(api, shop, elder, scanner)
    assert checked_in.status_code == 201
    rid = checked_in.get_json()["id"]
    answer = api.post(f"/redemptions/{rid}/price", scanner, json={"price_fen": price_fen})
    assert answer.status_code == 200
    return answer.get_json()


# --- the document -----------------------------------------------------------------------------


def test_the_openapi_document_validates_and_describes_the_voucher_endpoints(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    for path in (
        "/api/v1/vouchers",
        "/api/v1/vouchers/{voucher_id}/qr-token",
        "/api/v1/scans",
        "/api/v1/scans/{scan_id}/check-in",
        "/api/v1/redemptions/{redemption_id}/card",
        "/api/v1/pool",
    ):
        assert path in spec["paths"], path
    card = spec["paths"]["/api/v1/redemptions/{redemption_id}/card"]["post"]
    assert {"402", "409", "503"} <= set(card["responses"])
    assert card["security"] == [{"bearerAuth": []}]


# --- the mini-program -------------------------------------------------------------------------


def test_an_elder_and_the_family_see_the_voucher_and_no_one_elses(
    api, shop, elder, token, factory, db_session
):
    other = factory.resident(shop.heping, name="李桂兰")
    others_voucher = give_voucher(other, shop.today)
    son = token(shop.son)
    for secret in (elder, son):
        listed = api.get("/vouchers", secret).get_json()
        assert [v["id"] for v in listed] == [shop.voucher.id]
        assert listed[0] | {"issued_at": None} == {
            "id": shop.voucher.id,
            "resident": {"id": shop.elder.id, "name": shop.elder.name},
            "month": shop.today.strftime("%Y-%m"),
            "kind": "home_community",
            "status": "active",
            "face_value_fen": 50_000,
            "balance_fen": 50_000,
            "held_fen": 0,
            "used_fen": 0,
            "ratio_bp": shop.voucher.policy.ratio_bp,
            "in_scope_categories": sorted(shop.voucher.policy.category_set),
            "usable": True,
            "problem": None,
            "issued_at": None,
        }
        assert listed[0]["issued_at"].endswith("+08:00")
        for url in ("", "/redemptions"):
            assert error(api.get(f"/vouchers/{others_voucher.id}{url}", secret), 404)
        error(api.post(f"/vouchers/{others_voucher.id}/qr-token", secret), 404)
    detail = api.get(f"/vouchers/{shop.voucher.id}", elder).get_json()
    assert detail["redemptions"] == []


def test_a_qr_token_is_fresh_not_cached_and_accepted_once_by_a_scanner(
    api, shop, elder, scanner, token, db_session
):
    answer = qr_token(api, elder, shop.voucher.id)
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert body["already_used"] is False
    assert len(body["token"]) == 23 and body["url"].endswith("/r/" + body["token"])
    assert body["refresh_at"] < body["expires_at"]
    # The link the QR encodes is what the camera reads.
    first = api.post("/scans", scanner, json={"code": body["url"]})
    assert first.status_code == 201
    scan = first.get_json()
    assert scan["voucher_id"] == shop.voucher.id and scan["repeated"] is False
    assert scan["remaining_fen"] == 50_000
    assert scan["elder"] == {"masked_name": shop.elder.masked_name, "district": "210102"}
    assert shop.elder.name not in str(scan)
    by_title = {s["title"]: s for s in scan["services"]}
    assert by_title["社区助餐（午餐）"]["home_service"] is False
    assert by_title["上门助浴"]["home_service"] is True
    # Where it is delivered, as the provider set it; home_service is derived from it.
    assert by_title["社区助餐（午餐）"]["delivery_place"] == "provider"
    assert by_title["上门助浴"]["delivery_place"] == "home"
    assert by_title["上门助浴"]["you_may_deliver"] is True
    assert scan["bookings_today"] == []
    # The same scanner sending it again (a retry) is the same scan...
    again = api.post("/scans", scanner, json={"code": body["token"].lower()})
    assert again.status_code == 200
    assert again.get_json()["scan_id"] == scan["scan_id"] and again.get_json()["repeated"]
    if qr_token(api, elder, shop.voucher.id).get_json()["token"] == body["token"]:
        assert qr_token(api, elder, shop.voucher.id).get_json()["already_used"] is True
    # ...another scanner is told it was used, and nothing more is recorded.
    before = count(db_session, TokenUse)
    other = token(shop.market.home_admin, ("providers:write",))
    assert error(api.post("/scans", other, json={"code": body["token"]}), 409)["code"] == (
        "qr_code_used"
    )
    assert count(db_session, TokenUse) == before
    # A scan is its scanner's own.
    assert error(api.post(f"/scans/{scan['scan_id']}/check-in", other, json={}), 404)


def test_forged_codes_are_refused_and_record_nothing(api, shop, scanner, db_session):
    before = count(db_session, TokenUse)
    for code in ("0" * 23, "hello", "https://example.org/r/0123456789ABCDEFGHJKMNP"):
        assert error(api.post("/scans", scanner, json={"code": code}), 422)["code"] == (
            "qr_code_invalid"
        )
    assert error(api.post("/scans", scanner, json={"code": 5}), 422)
    assert count(db_session, TokenUse) == before


def test_scan_check_in_price_cash_redeems_and_moves_the_money(
    api, shop, elder, scanner, db_session
):
    checked_in = scan_and_check_in(api, shop, elder, scanner)
    assert checked_in.status_code == 201
    r = checked_in.get_json()
    assert r["status"] == "checked_in" and r["service"]["id"] == shop.market.meals.id
    priced_ = api.post(
        f"/redemptions/{r['id']}/price", scanner, json={"price_fen": 1500, "insurance_fen": 0}
    ).get_json()
    # ¥15 lunch: the voucher pays 40%, the elder ¥9.
    assert (priced_["price_fen"], priced_["subsidy_fen"], priced_["copay_fen"]) == (1500, 600, 900)
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
    out = api.post(f"/redemptions/{r['id']}/check-out", scanner).get_json()
    assert out["checked_out_at"] is not None
    paid = api.post(f"/redemptions/{r['id']}/cash", scanner).get_json()
    assert (paid["status"], paid["payment_method"], paid["remaining_fen"]) == (
        "redeemed",
        "cash",
        49_400,
    )
    assert paid["reversal_deadline"] is not None
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)
    # The same cash POST again answers the redeemed redemption and moves nothing.
    again = api.post(f"/redemptions/{r['id']}/cash", scanner)
    assert again.status_code == 200 and again.get_json()["status"] == "redeemed"
    captures = sa.select(sa.func.count()).where(JournalEntry.kind == "capture")
    assert db_session.scalar(captures) == 1
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)
    # The elder's side sees it.
    seen = api.get(f"/vouchers/{shop.voucher.id}/redemptions", elder).get_json()
    assert [(x["id"], x["subsidy_fen"], x["provider"]["name"]) for x in seen] == [
        (r["id"], 600, shop.market.station.name)
    ]
    assert api.get(f"/vouchers/{shop.voucher.id}", elder).get_json()["used_fen"] == 600
    # The provider's list, paged.
    page = api.get("/redemptions", scanner, query={"limit": 1}).get_json()
    assert (page["total"], [x["id"] for x in page["items"]]) == (1, [r["id"]])
    assert api.get("/redemptions", scanner, query={"status": "failed"}).get_json()["total"] == 0


def test_bad_prices_name_their_field_and_change_nothing(api, shop, elder, scanner, db_session):
    checked_in = scan_and_check_in(api, shop, elder, scanner).get_json()
    url = f"/redemptions/{checked_in['id']}/price"
    assert error(api.post(url, scanner, json={"price_fen": 99_999}), 422)["details"].keys() == {
        "price_fen"
    }
    assert (
        "insurance_fen"
        in error(api.post(url, scanner, json={"price_fen": 1500, "insurance_fen": 2000}), 422)[
            "details"
        ]
    )
    assert error(api.post(url, scanner, json={"price_fen": "15"}), 422)
    assert db_session.get(Redemption, checked_in["id"]).price_fen is None
    # Paying before pricing is refused.
    assert error(api.post(f"/redemptions/{checked_in['id']}/cash", scanner), 409)["code"] == (
        "redemption_state"
    )
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)


def test_check_in_refusals_carry_their_codes_and_create_nothing(
    api, shop, elder, scanner, token, card, db_session
):
    # A home visit 1.1 km from the elder's home; then one without any location.
    far = scan_and_check_in(api, shop, elder, scanner, shop.market.bath, **FAR)
    assert error(far, 409)["code"] == "check_in_too_far"
    nowhere = scan_and_check_in(api, shop, elder, scanner, shop.market.bath)
    assert error(nowhere, 422)["details"].keys() == {"latitude", "longitude"}
    # The message says why first (issue 14 item 3), not that something is not valid.
    assert error(nowhere, 422)["message"].startswith("A home service needs the phone's location")
    # Hairdressing, at the home-service company, is not what the voucher pays for.
    home = token(shop.market.home_admin, ("providers:write",))
    haircut = scan_and_check_in(api, shop, elder, home, shop.market.haircut, card=card, **NEAR_HOME)
    assert error(haircut, 409)["code"] == "out_of_scope"
    # The station's administrator holds no caregiver certificate for the bath.
    admin = token(shop.station_admin, ("providers:write",))
    bath = scan_and_check_in(api, shop, elder, admin, shop.market.bath, card=card, **NEAR_HOME)
    assert error(bath, 403)["code"] == "staff_not_qualified"
    assert count(db_session, Redemption) == 0
    # Near the home, the caregiver's bath is checked in, with the distance as proof.
    ok = scan_and_check_in(api, shop, elder, scanner, shop.market.bath, **NEAR_HOME)
    assert ok.status_code == 201 and 100 <= ok.get_json()["check_in_distance_m"] <= 120
    # Another provider's redemption looks missing.
    assert error(api.get(f"/redemptions/{ok.get_json()['id']}", home), 404)


def test_a_printed_card_needs_its_pin(api, shop, scanner, card, db_session):
    url = card_link(card)
    wrong = error(api.post("/scans", scanner, json={"code": url, "pin": "111333"}), 422)
    assert wrong["code"] == "wrong_pin"
    assert error(api.post("/scans", scanner, json={"code": url}), 422)["details"].keys() == {"pin"}
    scanned = api.post("/scans", scanner, json={"code": cards.card_number(card), "pin": PIN})
    assert scanned.status_code == 201 and scanned.get_json()["voucher_id"] == shop.voucher.id


def test_reversal_gives_the_subsidy_back(api, shop, elder, scanner, db_session):
    r = priced(api, shop, elder, scanner)
    api.post(f"/redemptions/{r['id']}/cash", scanner)
    url = f"/redemptions/{r['id']}/reverse"
    blank = error(api.post(url, scanner, json={"reason": "  "}), 422)["details"]
    assert blank == {"json": {"reason": ["This cannot be left empty."]}}
    assert error(api.post(url, scanner, json={}), 422)
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)
    reversed_ = api.post(url, scanner, json={"reason": "服务未完成"}).get_json()
    assert (reversed_["status"], reversed_["reversal_reason"]) == ("reversed", "服务未完成")
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
    assert error(api.post(url, scanner, json={"reason": "again"}), 409)["code"] == (
        "redemption_state"
    )


# --- cards, against localstripe ------------------------------------------------------------


def payment_method(number):
    return gateway().create_card_payment_method(number, 12, 2030, "123")["id"]


def test_a_tokenized_card_pays_the_co_payment(
    api, shop, elder, scanner, db_session, gateway_app_config
):
    r = priced(api, shop, elder, scanner)
    body = {"payment_method_id": payment_method("4242424242424242")}
    paid = api.post(f"/redemptions/{r['id']}/card", scanner, json=body).get_json()
    assert (paid["outcome"], paid["redemption"]["status"]) == ("succeeded", "redeemed")
    assert paid["redemption"]["payment_method"] == "card"
    intent = gateway().retrieve_payment_intent(
        db_session.get(Redemption, r["id"]).payment_intent_id
    )
    assert (intent["amount"], intent["status"]) == (900, "succeeded")
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_a_declined_card_is_a_402_and_redeems_nothing(
    api, shop, elder, scanner, db_session, gateway_app_config
):
    r = priced(api, shop, elder, scanner)
    body = {"payment_method_id": payment_method("4000000000000341")}
    declined = error(api.post(f"/redemptions/{r['id']}/card", scanner, json=body), 402)
    assert declined["code"] == "card_declined"
    assert db_session.get(Redemption, r["id"]).status == "checked_in"
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
    # Cash then pays.
    assert api.post(f"/redemptions/{r['id']}/cash", scanner).get_json()["status"] == "redeemed"


def test_three_d_secure_sends_the_payer_away_then_settles_on_get(
    api, shop, elder, scanner, db_session, gateway_app_config
):
    r = priced(api, shop, elder, scanner)
    body = {
        "payment_method_id": payment_method("4000002760003184"),
        "return_url": "https://scanner.example/done",
    }
    waiting = api.post(f"/redemptions/{r['id']}/card", scanner, json=body).get_json()
    assert waiting["outcome"] == "requires_action"
    url = waiting["next_action_url"]
    assert url and url.startswith(gateway_app_config["PAYMENT_GATEWAY_URL"])
    assert waiting["redemption"]["status"] == "pending_payment"
    assert money(shop, db_session) == (49_400, 600, 600, 0, True)
    requests.post(url, data={"success": "true"}, allow_redirects=False, timeout=5)
    settled = api.get(f"/redemptions/{r['id']}", scanner).get_json()
    assert (settled["status"], settled["next_action_url"]) == ("redeemed", None)
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_a_bad_payment_method_id_is_refused_before_any_hold(
    api, shop, elder, scanner, db_session, gateway_app_config
):
    r = priced(api, shop, elder, scanner)
    bad = api.post(f"/redemptions/{r['id']}/card", scanner, json={"payment_method_id": "pm/../x"})
    assert error(bad, 422)["details"]["json"].keys() == {"payment_method_id"}
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)


# --- the bureau ----------------------------------------------------------------------------


def test_the_bureau_reads_the_pool(api, shop, token, elder, factory, db_session):
    approver = token(shop.approver)
    assert api.get("/pool", approver).get_json()["ledger"] is None  # never checked yet
    ledger_checks.run_check()
    pool = api.get("/pool", approver).get_json()
    accounts = {a["code"]: a["balance_fen"] for a in pool["accounts"]}
    assert accounts["pool:available"] == 90_000_000
    assert accounts["vouchers:outstanding"] == 50_000
    assert pool["districts"] == [
        {
            "code": "210102",
            "name_zh": "和平区",
            "name_en": shop.heping.name_en,
            "allocated_fen": 10_000_000,
            "available_fen": 9_950_000,
            "outstanding_fen": 50_000,
            "active_vouchers": 1,
        }
    ]
    checked_at = pool["ledger"].pop("checked_at")
    assert checked_at.endswith("+08:00")
    assert pool["ledger"] == {
        "ok": True,
        "unbalanced_entries": [],
        "drifted_accounts": [],
        "total_fen": 0,
        "subledger_mismatches": [],
        "closed_vouchers_with_balance": [],
        "capture_mismatches": [],
        "negative_accounts": [],
        "stale": False,
    }
    # District staff of another district see neither Heping's row nor its account.
    shenhe_officer = factory.user(
        "officer.shenhe", roles=["bureau_officer"], district=shop.market.shenhe
    )
    mine = api.get("/pool", token(shenhe_officer)).get_json()
    assert mine["districts"] == []
    assert "district:210102:available" not in {a["code"] for a in mine["accounts"]}
    assert error(api.get("/pool", elder), 403)


def test_the_pool_check_fails_naming_a_drifted_subledger(api, shop, token, db_session):
    """A voucher's balance changed behind the ledger's back: the journal still balances,
    but vouchers:outstanding no longer equals the vouchers."""
    db_session.execute(
        sa.update(Voucher).where(Voucher.id == shop.voucher.id).values(balance_fen=49_000)
    )
    db_session.expire_all()
    ledger_checks.run_check()  # what the hourly job or the pool page's button does
    check = api.get("/pool", token(shop.approver)).get_json()["ledger"]
    assert check["ok"] is False
    assert check["drifted_accounts"] == [] and check["unbalanced_entries"] == []
    assert check["subledger_mismatches"] == [
        {"account": "vouchers:outstanding", "ledger_fen": 50_000, "subledger_fen": 49_000}
    ]


# --- who may call what ---------------------------------------------------------------------


def test_tokens_scopes_and_roles(api, shop, elder, scanner, token, db_session):
    assert error(api.get("/vouchers"), 401)["code"] == "authentication_required"
    assert error(api.post("/scans", json={"code": "x"}), 401)
    # A caregiver's token without a writing scope cannot scan...
    reader = token(shop.caregiver, ("read",))
    assert error(api.post("/scans", reader, json={"code": "x"}), 403)["details"] == {
        "missing_one_of": ["providers:write", "vouchers:redeem"]
    }
    # ...and an elder's token is refused on the scanner's endpoints, even with the scope,
    # before its body is read.
    assert error(api.post("/scans", elder, json={"code": "x"}), 403)
    both = token(shop.elder_user, ("read", "providers:write"))
    assert error(api.post("/scans", both, json={}), 403)
    assert error(api.get("/redemptions", both), 403)
    # The scanner is not an elder's account.
    assert error(api.get("/vouchers", scanner), 403)
    assert error(api.get("/pool", scanner), 403)
    # A voucher of another month answers no token.
    db_session.get(Voucher, shop.voucher.id).status = "revoked"
    db_session.commit()
    assert error(api.post(f"/vouchers/{shop.voucher.id}/qr-token", elder), 409)["code"] == (
        "voucher_revoked"
    )


def test_ids_too_large_for_any_row_are_refused_not_crashed(client):
    # A path id past any INTEGER key matches no route; nothing reaches the database.
    assert client.get("/api/v1/redemptions/" + "9" * 25).status_code == 404
    assert client.get("/vouchers/scan/" + "9" * 25).status_code == 404


@pytest.mark.parametrize("cash_meanwhile", [False, True])
def test_polling_a_redemption_repairs_a_charge_that_landed_after_it_left_pending(
    cash_meanwhile, api, shop, elder, scanner, db_session, gateway_app_config
):
    """3-D Secure: the hold was given back (here by hand, as an early release did) and the
    payer then authenticated. The scanner's poll finds the charge and redeems again, or
    refunds it when cash was taken meanwhile."""
    from vouchers.redemption import steps as redemptions

    r = priced(api, shop, elder, scanner)
    body = {
        "payment_method_id": payment_method("4000002760003184"),
        "return_url": "https://scanner.example/done",
    }
    url = api.post(f"/redemptions/{r['id']}/card", scanner, json=body).get_json()["next_action_url"]
    row = db_session.get(Redemption, r["id"])
    redemptions.release(row, reason="released early", retry=True)
    if cash_meanwhile:
        redemptions.pay_cash(row, staff_user=shop.caregiver)
    db_session.commit()
    intent_id = row.payment_intent_id
    requests.post(url, data={"success": "true"}, allow_redirects=False, timeout=5)
    polled = api.get(f"/redemptions/{r['id']}", scanner).get_json()
    assert (polled["status"], polled["payment_method"]) == (
        "redeemed",
        "cash" if cash_meanwhile else "card",
    )
    charge = gateway().retrieve_payment_intent(intent_id)["latest_charge"]
    assert charge["amount_refunded"] == (900 if cash_meanwhile else 0)
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def _point_at_an_intent_the_gateway_refuses(db_session, redemption_id):
    """The redemption's live attempt names an intent the gateway answers 404 for (another
    account's, or one lost with a gateway's data): asking about it is refused."""
    row = db_session.get(Redemption, redemption_id)
    attempt = db_session.scalar(
        sa.select(PaymentAttempt).where(PaymentAttempt.intent_id == row.payment_intent_id)
    )
    attempt.intent_id = row.payment_intent_id = "pi_unknowntothegateway"
    db_session.commit()


def test_reading_a_cash_redemption_answers_it_as_recorded_when_the_gateway_refuses(
    api, shop, elder, scanner, db_session, gateway_app_config
):
    """A declined card, then cash: the card's attempt is still open (a late charge on it
    would be refunded), but a gateway that refuses to say anything about it must not turn
    a plain read into a 502."""
    r = priced(api, shop, elder, scanner)
    body = {"payment_method_id": payment_method("4000000000000341")}
    error(api.post(f"/redemptions/{r['id']}/card", scanner, json=body), 402)
    assert api.post(f"/redemptions/{r['id']}/cash", scanner).status_code == 200
    _point_at_an_intent_the_gateway_refuses(db_session, r["id"])
    read = api.get(f"/redemptions/{r['id']}", scanner)
    assert read.status_code == 200, read.get_json()
    assert (read.get_json()["status"], read.get_json()["payment_method"]) == ("redeemed", "cash")
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_reading_a_waiting_payment_answers_it_as_recorded_when_the_gateway_refuses(
    api, shop, elder, scanner, db_session, gateway_app_config
):
    r = priced(api, shop, elder, scanner)
    body = {
        "payment_method_id": payment_method("4000002760003184"),
        "return_url": "https://scanner.example/done",
    }
    assert api.post(f"/redemptions/{r['id']}/card", scanner, json=body).status_code == 200
    _point_at_an_intent_the_gateway_refuses(db_session, r["id"])
    read = api.get(f"/redemptions/{r['id']}", scanner)
    assert read.status_code == 200, read.get_json()
    assert (read.get_json()["status"], read.get_json()["next_action_url"]) == (
        "pending_payment",
        None,
    )
    assert money(shop, db_session) == (49_400, 600, 600, 0, True)


def test_reading_a_redemption_paid_in_cash_asks_the_gateway_nothing(
    api, shop, elder, scanner, db_session, gateway_app_config, localstripe_server
):
    """Once the card's attempt is closed (the every-minute job), nothing is left to settle."""
    from datetime import timedelta

    from eldercare.timeutil import now_utc
    from vouchers.redemption import payments

    r = priced(api, shop, elder, scanner)
    body = {"payment_method_id": payment_method("4000000000000341")}
    error(api.post(f"/redemptions/{r['id']}/card", scanner, json=body), 402)
    assert api.post(f"/redemptions/{r['id']}/cash", scanner).status_code == 200
    assert payments.settle_stale_holds(now_utc() + timedelta(minutes=16))["closed"] == 1
    db_session.commit()
    asked = len(localstripe_server.received())
    read = api.get(f"/redemptions/{r['id']}", scanner)
    assert read.status_code == 200 and read.get_json()["status"] == "redeemed"
    assert len(localstripe_server.received()) == asked


def test_a_service_at_the_providers_premises_checks_in_without_location(
    api, shop, elder, scanner, db_session
):
    """The station's own bathroom (issue 14 item 3): the provider says where, check-in
    follows it; the same bath as a home visit still needs the phone's location."""
    bath = catalogue.add_service(
        shop.market.station,
        actor=shop.market.station_admin,
        category_code="bathing",
        title="助浴（站内浴室，护理员协助）",
        description="",
        unit="visit",
        price_fen=6000,
        capacity_per_slot=2,
        districts=[shop.market.heping],
        delivery_place="provider",
    )
    answer = scan_and_check_in(api, shop, elder, scanner, bath)
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["service"]["delivery_place"] == "provider"
    assert body["check_in_distance_m"] is None
