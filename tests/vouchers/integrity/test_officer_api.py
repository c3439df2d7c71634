"""The flags and the anomaly rules in /api/v1 (issue 15): the bureau's list of flags with the
evidence as data and in words, paged and filtered; deciding a flag ("bureau:write", scoped to
the district as the page is); the rules' versions, read-only."""

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.tokens import issue_token
from tests.vouchers.settlement.conftest import spend
from vouchers.integrity.models import RedemptionFlag
from vouchers.integrity.rules import DEFAULTS

FLAGS = "/api/v1/bureau/flags"


@pytest.fixture
def bearer(db_session):
    def _for(user, scopes=("read", "bureau:write")):
        _token, secret = issue_token(user, "test", sorted(scopes))
        db_session.commit()
        return {"Authorization": f"Bearer {secret}"}

    return _for


@pytest.fixture
def flagged(shop, rules_on):
    rules_on(high_value={"subsidy_fen": 100}, review_sample={"share_bp": 10000})
    r = spend(shop)
    found = db.session.scalars(
        sa.select(RedemptionFlag)
        .where(RedemptionFlag.redemption_id == r.id)
        .order_by(RedemptionFlag.id)
    ).all()
    return r, found


def test_the_list_gives_evidence_as_data_and_in_words(shop, flagged, client, bearer):
    r, (high, sample) = flagged
    auth = bearer(shop.market.officer)
    body = client.get(FLAGS, headers={**auth, "Accept-Language": "en"}).get_json()
    assert body["total"] == 2 and [f["id"] for f in body["items"]] == [high.id, sample.id]
    first = body["items"][0]
    assert first["rule"] == "high_value" and first["rule_label"] == "High-value redemption"
    assert first["evidence"]["threshold_fen"] == 100
    assert first["explanation"].startswith("A subsidy of") and f"#{r.id}" in first["explanation"]
    assert first["redemption"]["id"] == r.id and first["redemption"]["settled"] is False
    assert first["status"] == "open" and first["raised_at"].endswith("+08:00")
    only = client.get(FLAGS + "?rule=review_sample", headers=auth).get_json()
    assert [f["id"] for f in only["items"]] == [sample.id]
    month = shop.voucher.month.strftime("%Y-%m")
    paged = client.get(f"{FLAGS}?month={month}&limit=1&offset=1", headers=auth).get_json()
    assert paged["total"] == 2 and [f["id"] for f in paged["items"]] == [sample.id]
    assert client.get(FLAGS + "?month=2001-01", headers=auth).get_json()["total"] == 0
    assert client.get(FLAGS + "?status=cleared", headers=auth).get_json()["total"] == 0
    for bad in ("?rule=nope", "?status=maybe", "?month=2026-13", "?limit=0"):
        answer = client.get(FLAGS + bad, headers=auth)
        assert answer.status_code == 422, bad


def test_clearing_and_rejecting_through_the_api(shop, flagged, client, bearer, db_session):
    r, (high, sample) = flagged
    auth = bearer(shop.market.officer)
    refused = client.post(f"{FLAGS}/{high.id}/clear", json={"reason": "  "}, headers=auth)
    assert refused.status_code == 422
    db_session.refresh(high)
    assert high.status == "open"
    cleared = client.post(f"{FLAGS}/{high.id}/clear", json={"reason": "核实无误"}, headers=auth)
    assert cleared.status_code == 200
    assert cleared.get_json()["status"] == "cleared" and cleared.get_json()["reason"] == "核实无误"
    again = client.post(f"{FLAGS}/{high.id}/reject", json={"reason": "未提供"}, headers=auth)
    assert again.status_code == 409
    rejected = client.post(
        f"{FLAGS}/{sample.id}/reject", json={"reason": "家属证实未送餐"}, headers=auth
    )
    assert rejected.status_code == 200
    answer = rejected.get_json()
    assert answer["status"] == "rejected" and answer["redemption"]["status"] == "reversed"
    db_session.refresh(r)
    assert r.status == "reversed"


def test_a_read_token_cannot_decide(shop, flagged, client, bearer, db_session):
    r, (high, _sample) = flagged
    auth = bearer(shop.market.officer, scopes=("read",))
    answer = client.post(f"{FLAGS}/{high.id}/clear", json={"reason": "x"}, headers=auth)
    assert answer.status_code == 403
    db_session.refresh(high)
    assert high.status == "open"


def test_another_districts_staff_see_and_decide_nothing(
    shop, flagged, client, bearer, factory, db_session
):
    r, (high, _sample) = flagged
    shenhe = factory.user("shenhe.officer", roles=["bureau_officer"], district=shop.market.shenhe)
    auth = bearer(shenhe)
    assert client.get(FLAGS, headers=auth).get_json()["total"] == 0
    answer = client.post(f"{FLAGS}/{high.id}/reject", json={"reason": "x"}, headers=auth)
    assert answer.status_code == 404
    heping = factory.user("heping.officer", roles=["bureau_officer"], district=shop.heping)
    assert client.get(FLAGS, headers=bearer(heping)).get_json()["total"] == 2
    provider = bearer(shop.station_admin, scopes=("read", "bureau:write", "providers:write"))
    assert client.get(FLAGS, headers=provider).status_code == 403
    db_session.refresh(high)
    assert high.status == "open"


def test_the_rules_versions_are_listed(shop, client, bearer):
    body = client.get(
        "/api/v1/bureau/anomaly-rules", headers=bearer(shop.market.officer, ("read",))
    ).get_json()
    codes = {v["code"] for v in body["versions"]}
    assert codes == set(DEFAULTS)
    high = next(v for v in body["versions"] if v["code"] == "high_value")
    assert high["params"] == {"subsidy_fen": 30000} and high["effective_to"] is None


def test_the_operations_are_documented(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, method in (
        ("/api/v1/bureau/flags", "get"),
        ("/api/v1/bureau/flags/{flag_id}/clear", "post"),
        ("/api/v1/bureau/flags/{flag_id}/reject", "post"),
        ("/api/v1/bureau/anomaly-rules", "get"),
    ):
        assert spec["paths"][path][method]["security"] == [{"bearerAuth": []}]


@pytest.mark.parametrize(
    ("lang", "words"), [("en", "at most 2000 characters"), ("zh-CN", "最多 2000 个字符")]
)
def test_a_reason_too_long_is_refused_in_the_readers_language(
    shop, flagged, client, bearer, db_session, lang, words
):
    """api_fields.said() gave marshmallow's English default past the maximum length."""
    r, (high, _sample) = flagged
    auth = bearer(shop.market.officer)
    answer = client.post(
        f"{FLAGS}/{high.id}/clear",
        json={"reason": "x" * 2001},
        headers={**auth, "Accept-Language": lang},
    )
    assert answer.status_code == 422
    text = str(answer.get_json())
    assert words in text and "Longer than maximum length" not in text
    db_session.refresh(high)
    assert high.status == "open"


def test_the_list_says_a_reversed_redemption_is_not_held(shop, flagged, client, bearer):
    """A reversal leaves its flags open; the list must say nothing is held any more."""
    from vouchers.redemption import steps as redemption

    r, (high, sample) = flagged
    auth = bearer(shop.market.officer)
    before = client.get(FLAGS, headers=auth).get_json()["items"]
    assert [f["redemption"]["held"] for f in before] == [True, True]
    redemption.reverse(r, actor=shop.station_admin, reason="扫错了老人")
    db.session.commit()
    after = client.get(FLAGS, headers=auth).get_json()["items"]
    assert [f["id"] for f in after] == [high.id, sample.id]  # still open: worth a look
    assert [(f["redemption"]["status"], f["redemption"]["held"]) for f in after] == [
        ("reversed", False),
        ("reversed", False),
    ]


def test_a_redemption_whose_last_flag_is_cleared_is_no_longer_held(shop, flagged, client, bearer):
    """``held`` is "held out of settlement now": the first clearing leaves the other flag
    holding it, the last one frees it (it was said held after every flag was decided)."""
    r, (high, sample) = flagged
    auth = bearer(shop.market.officer)
    first = client.post(f"{FLAGS}/{high.id}/clear", json={"reason": "家属确认"}, headers=auth)
    assert first.status_code == 200 and first.get_json()["redemption"]["held"] is True
    last = client.post(f"{FLAGS}/{sample.id}/clear", json={"reason": "抽查无误"}, headers=auth)
    assert last.status_code == 200 and last.get_json()["redemption"]["held"] is False
    listed = client.get(f"{FLAGS}?status=all", headers=auth).get_json()["items"]
    assert [(f["status"], f["redemption"]["held"]) for f in listed] == [
        ("cleared", False),
        ("cleared", False),
    ]
