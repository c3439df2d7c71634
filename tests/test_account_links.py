"""Linking an account to a registered resident: asked by the account holder, decided by the
bureau, never telling a stranger whether an ID number is registered, throttled per account."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest
import sqlalchemy as sa

from eldercare import account_links, stored_text
from eldercare.account_links import AccountLinkRequest
from eldercare.accounts import FamilyLink, User, UserRole, elders_acted_for
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.notifications import Notification
from eldercare.residents import District, Resident, compose_resident_id
from eldercare.tokens import issue_token

UNREGISTERED = compose_resident_id("210102", date(1950, 1, 2), 999)


@pytest.fixture
def world(app_ctx, factory):
    heping = factory.district("210102", "和平区")
    shenhe = factory.district("210103", "沈河区")
    elder = factory.resident(heping, name="王秀英")
    return {
        "elder": elder,
        "elder_account": factory.user("wang.app", roles=["elder"]),
        "son": factory.user("zhang.app", roles=["family_agent"]),
        "officer": factory.user("heping.off", roles=["bureau_officer"], district=heping),
        "other_officer": factory.user("shenhe.off", roles=["bureau_officer"], district=shenhe),
        "city_officer": factory.user("city.off", roles=["bureau_officer"]),
    } | _settle()


def _settle() -> dict:
    """Keep what the test built: a refused request rolls back everything uncommitted."""
    db.session.commit()
    return {}


def _token(user, scopes=("read", "elders:write")):
    secret = issue_token(user, "phone", list(scopes))[1]
    _settle()
    return {"Authorization": f"Bearer {secret}"}


def _ask(client, user, lang="en", **body):
    return client.post(
        "/api/v1/account-links", json=body, headers=_token(user) | {"Accept-Language": lang}
    )


def _count(model, *where):
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


# --- asking, and what the asker learns -----------------------------------------------------


def test_an_elder_asks_and_the_districts_officer_confirms_it_becomes_their_own_account(
    client, world
):
    elder, account = world["elder"], world["elder_account"]
    answer = _ask(client, account, id_number=elder.id_number, name="王秀英", relationship="self")
    assert answer.status_code == 202, answer.get_json()
    request_id = answer.get_json()["id"]
    assert elders_acted_for(account) == []  # nothing until the bureau confirms

    queue = client.get("/api/v1/bureau/account-links", headers=_token(world["officer"]))
    assert [item["id"] for item in queue.get_json()["items"]] == [request_id]
    assert queue.get_json()["items"][0]["name_matches"] is True

    confirmed = client.post(
        f"/api/v1/bureau/account-links/{request_id}/confirm",
        headers=_token(world["officer"], ["bureau:write"]),
    )
    assert confirmed.status_code == 200, confirmed.get_json()
    assert confirmed.get_json()["status"] == "confirmed"
    db.session.refresh(account)
    assert account.resident_id == elder.id
    assert _count(AuditLog, AuditLog.action == "account_link.confirm") == 1
    mine = sa.select(Notification).where(Notification.recipient_user_id == account.id)
    notice = db.session.scalar(mine)
    assert stored_text.render(notice.subject, "en") == "Your account is linked"
    assert "王**" in stored_text.render(notice.body, "zh_CN")


def test_a_family_member_becomes_a_family_agent_with_the_relationship_asked(client, world):
    elder, son = world["elder"], world["son"]
    answer = _ask(client, son, id_number=elder.id_number, name="王秀英", relationship="child")
    request_id = answer.get_json()["id"]
    client.post(
        f"/api/v1/bureau/account-links/{request_id}/confirm",
        headers=_token(world["officer"], ["bureau:write"]),
    )
    link = db.session.scalar(sa.select(FamilyLink).where(FamilyLink.agent_user_id == son.id))
    assert (link.resident_id, link.relationship) == (elder.id, "child")
    assert [r.id for r in elders_acted_for(db.session.get(User, son.id))] == [elder.id]
    # Asking again for an elder one already acts for says so (the asker knows it anyway).
    again = _ask(client, son, id_number=elder.id_number, name="王秀英", relationship="child")
    assert again.status_code == 409
    assert _count(AccountLinkRequest) == 1


def test_the_answer_never_tells_whether_the_id_number_is_registered(client, world, factory):
    elder = world["elder"]
    askers = [factory.user(f"family{i}", roles=["family_agent"]) for i in range(3)]
    _settle()
    responses = [
        _ask(client, asker, id_number=number, name=name, relationship="child")
        for asker, (number, name) in zip(
            askers,
            [
                (elder.id_number, "王秀英"),  # registered, the register's name
                (elder.id_number, "王某某"),  # registered, another name
                (UNREGISTERED, "王秀英"),  # nobody
            ],
            strict=True,
        )
    ]
    assert [response.status_code for response in responses] == [202, 202, 202]
    varying = {"id", "created_at", "masked_id_number", "name"}
    shown = [
        {k: v for k, v in response.get_json().items() if k not in varying} for response in responses
    ]
    assert shown[0] == shown[1] == shown[2]
    assert shown[0]["status"] == "pending"
    # Only the bureau learns the difference.
    rows = db.session.scalars(sa.select(AccountLinkRequest).order_by(AccountLinkRequest.id)).all()
    assert [(r.resident_id is not None, r.name_matches) for r in rows] == [
        (True, True),
        (True, False),
        (False, False),
    ]


def _by_field(response) -> dict:
    details = response.get_json()["error"]["details"]
    return details.get("json", details)


def test_bad_input_is_refused_in_both_languages_and_nothing_is_stored(client, world):
    son = world["son"]
    cases = [
        ({"id_number": "2101021945050112", "name": "王秀英", "relationship": "child"}, "id_number"),
        ({"id_number": UNREGISTERED, "name": " ", "relationship": "child"}, "name"),
        ({"id_number": UNREGISTERED, "name": "王秀英", "relationship": "friend"}, "relationship"),
        ({"id_number": UNREGISTERED, "name": "王秀英", "relationship": "self"}, "relationship"),
    ]
    for body, field in cases:
        en = _ask(client, son, lang="en", **body)
        zh = _ask(client, son, lang="zh-CN", **body)
        assert en.status_code == zh.status_code == 422, (body, en.get_json())
        # Refused by the schema (the document's rules) the fields sit under "json".
        en_details, zh_details = (_by_field(r) for r in (en, zh))
        assert field in en_details
        assert en_details[field] != zh_details[field]
    for body in ({"id_number": 210102, "name": "x", "relationship": "child"}, {"extra": 1}):
        assert _ask(client, son, **body).status_code == 422
    assert _count(AccountLinkRequest) == 0


def test_an_account_may_ask_only_a_few_times_a_day(client, world, app):
    son = world["son"]
    limit = app.config["LINK_REQUESTS_PER_DAY"]
    numbers = [compose_resident_id("210102", date(1950, 1, 2), 100 + i) for i in range(limit + 1)]
    for number in numbers[:limit]:
        answer = _ask(client, son, id_number=number, name="王", relationship="child")
        assert answer.status_code == 202
    refused = _ask(
        client, son, lang="zh-CN", id_number=numbers[-1], name="王", relationship="child"
    )
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    assert "明天" in refused.get_json()["error"]["message"]
    assert _count(AccountLinkRequest) == limit


# --- the bureau's decision ---------------------------------------------------------------


def test_other_districts_do_not_see_or_decide_and_a_refusal_needs_a_reason(client, world):
    elder, son = world["elder"], world["son"]
    request_id = _ask(
        client, son, id_number=elder.id_number, name="王秀英", relationship="spouse"
    ).get_json()["id"]
    unmatched_id = _ask(
        client, son, id_number=UNREGISTERED, name="王秀英", relationship="spouse"
    ).get_json()["id"]
    other = _token(world["other_officer"], ["read", "bureau:write"])
    url = "/api/v1/bureau/account-links"

    def listed(headers):
        return [item["id"] for item in client.get(url, headers=headers).get_json()["items"]]

    assert listed(other) == []
    assert client.post(f"{url}/{request_id}/confirm", headers=other).status_code == 404
    # District staff never see requests that matched nobody; city-wide staff do.
    heping = _token(world["officer"], ["read", "bureau:write"])
    city = _token(world["city_officer"], ["read", "bureau:write"])
    assert listed(heping) == [request_id]
    assert listed(city) == [request_id, unmatched_id]
    # An unmatched request cannot be confirmed, only refused.
    assert client.post(f"{url}/{unmatched_id}/confirm", headers=city).status_code == 409

    for reason in ("", "   ", "x" * 501):
        blank = client.post(f"{url}/{request_id}/refuse", json={"reason": reason}, headers=heping)
        assert blank.status_code == 422
        assert "reason" in _by_field(blank)
    assert db.session.get(AccountLinkRequest, request_id).status == "pending"

    refused = client.post(
        f"/api/v1/bureau/account-links/{request_id}/refuse",
        json={"reason": "请携带身份证到窗口办理。"},
        headers=heping,
    )
    assert refused.status_code == 200 and refused.get_json()["status"] == "refused"
    again = client.post(f"/api/v1/bureau/account-links/{request_id}/confirm", headers=heping)
    assert again.status_code == 409
    assert _count(FamilyLink) == 0
    mine = client.get("/api/v1/account-links", headers=_token(son)).get_json()
    assert {r["id"]: r["refusal_reason"] for r in mine}[request_id] == "请携带身份证到窗口办理。"
    assert _count(AuditLog, AuditLog.action == "account_link.refuse") == 1
    mine = sa.select(Notification).where(Notification.recipient_user_id == son.id)
    notice = db.session.scalar(mine)
    assert "请携带身份证到窗口办理。" in notice.body


def test_a_name_that_differs_from_the_register_cannot_be_confirmed(client, world):
    elder = world["elder"]
    request_id = _ask(
        client, world["elder_account"], id_number=elder.id_number, name="王秀", relationship="self"
    ).get_json()["id"]
    answer = client.post(
        f"/api/v1/bureau/account-links/{request_id}/confirm",
        headers=_token(world["officer"], ["bureau:write"]),
    )
    assert answer.status_code == 409
    assert db.session.get(User, world["elder_account"].id).resident_id is None


def test_the_bureau_creates_an_account_linked_at_once(client, world):
    elder = world["elder"]
    headers = _token(world["officer"], ["bureau:write"])
    made = client.post(
        f"/api/v1/residents/{elder.id}/accounts",
        json={"username": "wang.xiuying", "display_name": "王秀英",
              "password": "a-first-password-2026", "relationship": "self"},
        headers=headers,
    )  # fmt: skip
    assert made.status_code == 201, made.get_json()
    assert made.get_json() == {
        "username": "wang.xiuying", "roles": ["elder"], "resident_id": elder.id,
        "relationship": "self",
    }  # fmt: skip
    user = db.session.scalar(sa.select(User).where(User.username == "wang.xiuying"))
    assert user.resident_id == elder.id
    assert _count(AuditLog, AuditLog.action == "account_link.direct") == 1
    # A second own account for the same resident is refused, and nothing is created.
    second = client.post(
        f"/api/v1/residents/{elder.id}/accounts",
        json={"username": "wang.two", "display_name": "王秀英",
              "password": "a-first-password-2026", "relationship": "self"},
        headers=headers,
    )  # fmt: skip
    assert second.status_code == 409
    assert _count(User, User.username == "wang.two") == 0
    other = client.post(
        f"/api/v1/residents/{elder.id}/accounts",
        json={"username": "wang.three", "display_name": "x",
              "password": "a-first-password-2026", "relationship": "child"},
        headers=_token(world["other_officer"], ["bureau:write"]),
    )  # fmt: skip
    assert other.status_code == 404


def test_the_pages_ask_list_and_decide(client, world, login):
    elder, son = world["elder"], world["son"]
    login(son)
    page = client.post(
        "/account/link",
        data={"id_number": "bad", "name": "王秀英", "relationship": "child"},
        headers={"Accept-Language": "en"},
    )
    assert page.status_code == 422 and "18 characters" in page.get_data(as_text=True)
    sent = client.post(
        "/account/link",
        data={"id_number": elder.id_number, "name": "王秀英", "relationship": "child"},
    )
    assert sent.status_code == 302
    assert "2101**********" in client.get("/account/link").get_data(as_text=True)
    client.post("/logout")
    login(world["officer"])
    queue = client.get("/bureau/link-requests", headers={"Accept-Language": "en"})
    assert elder.id_number in queue.get_data(as_text=True)
    request_id = db.session.scalar(sa.select(AccountLinkRequest.id))
    refused = client.post(f"/bureau/link-requests/{request_id}/refuse", data={"reason": ""})
    assert refused.status_code == 422
    confirmed = client.post(f"/bureau/link-requests/{request_id}/confirm")
    assert confirmed.status_code == 302
    assert _count(FamilyLink, FamilyLink.agent_user_id == son.id) == 1
    accounts = client.get(f"/bureau/residents/{elder.id}/accounts").get_data(as_text=True)
    assert son.username in accounts


def test_the_openapi_document_describes_the_link_operations_with_examples(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    operations = {
        ("/api/v1/account-links", "post"),
        ("/api/v1/account-links", "get"),
        ("/api/v1/bureau/account-links", "get"),
        ("/api/v1/bureau/account-links/{request_id}/confirm", "post"),
        ("/api/v1/bureau/account-links/{request_id}/refuse", "post"),
        ("/api/v1/residents/{resident_id}/accounts", "post"),
    }
    for path, method in operations:
        operation = paths[path][method]
        success = next(v for k, v in operation["responses"].items() if k.startswith("2"))
        assert "example" in success["content"]["application/json"], (path, method)
        if "requestBody" in operation:
            assert "example" in operation["requestBody"]["content"]["application/json"]


# --- PostgreSQL: many requests of one account at once --------------------------------------


@pytest.mark.postgres
def test_parallel_requests_of_one_account_stop_at_the_limit(private_app, monkeypatch):
    threads_count = 12
    counted = account_links._throttle

    def count_then_pause(user):
        # Every request stays between its count and its insert a while, so that without the
        # lock on the account's row they would all count the same rows and all pass.
        counted(user)
        time.sleep(0.2)

    monkeypatch.setattr(account_links, "_throttle", count_then_pause)
    with private_app.app_context():
        district = District(code="210102", name_zh="和平区", name_en="Heping")
        db.session.add(district)
        db.session.flush()
        user = User(username="racer", display_name="racer")
        user.set_password("correct-horse-42")
        user.role_rows = [UserRole(role="family_agent")]
        db.session.add(user)
        db.session.add(
            Resident(
                id_number=compose_resident_id("210102", date(1945, 5, 1), 101),
                name="王秀英", birth_date=date(1945, 5, 1), district_id=district.id,
                street="s", address="a",
            )
        )  # fmt: skip
        db.session.flush()
        # A token per thread: each request stamps its token's last use, and one shared token
        # would line the requests up on that row instead of on the account's.
        scopes = ["read", "elders:write"]
        secrets = [issue_token(user, f"phone {i}", scopes)[1] for i in range(threads_count)]
        db.session.commit()
        limit = private_app.config["LINK_REQUESTS_PER_DAY"]

    barrier = threading.Barrier(threads_count)
    statuses: list[int] = []

    def ask(i: int):
        number = compose_resident_id("210102", date(1950, 1, 2), 200 + i)
        client = private_app.test_client()
        barrier.wait()
        response = client.post(
            "/api/v1/account-links",
            json={"id_number": number, "name": "王", "relationship": "child"},
            headers={"Authorization": f"Bearer {secrets[i]}"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * limit + [429] * (threads_count - limit)
    with private_app.app_context():
        assert _count(AccountLinkRequest) == limit
