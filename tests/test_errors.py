import pytest
import sqlalchemy as sa

from eldercare.residents import Resident

EN = {"Accept-Language": "en"}


def test_browser_gets_a_friendly_page_for_a_missing_page(client):
    response = client.get("/no/such/page", headers={"Accept": "text/html", **EN})
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "does not exist" in page and "Back to the home page" in page


def test_api_client_gets_json_for_a_missing_page(client):
    response = client.get("/api/v1/nothing-here", headers=EN)
    assert response.status_code == 404
    assert response.get_json() == {
        "error": {
            "code": "not_found",
            "message": "This page or record does not exist, or you may not see it.",
            "details": {},
        }
    }


def test_json_accept_header_gets_json_outside_the_api(client):
    response = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_error_messages_follow_the_language(client):
    body = client.get("/api/v1/me", headers={"Accept-Language": "zh-CN"}).get_json()
    assert body["error"]["code"] == "authentication_required"
    assert "令牌" in body["error"]["message"]


def test_method_not_allowed_is_mapped(client):
    response = client.delete("/api/v1/districts")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("path", "accept", "mimetype"),
    [
        ("/api/v1/districts", "application/json", "application/json"),
        ("/login", "text/html", "text/html"),
    ],
)
def test_every_405_names_the_methods_allowed(client, path, accept, mimetype):
    # RFC 9110 §15.5.6: a 405 must carry Allow; generated clients and Schemathesis rely on it.
    response = client.delete(path, headers={"Accept": accept})
    assert response.status_code == 405
    assert response.mimetype == mimetype
    allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
    assert "GET" in allowed and "DELETE" not in allowed


def test_unexpected_error_rolls_back_and_shows_a_calm_page(
    app, client, factory, login, db_session, monkeypatch
):
    district = factory.district("210102")
    login(factory.user(roles=["bureau_officer"]))

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    # Fail after the resident row is added but before the request can finish.
    monkeypatch.setattr("eldercare.register.audit.record", explode)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app, "testing", False)  # let the handler answer instead of re-raising
        mp.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
        response = client.post(
            "/bureau/residents/new",
            headers=EN,
            data={
                "id_number": "210102194403121225",
                "name": "王秀英",
                "district_id": district.id,
                "street": "南湖街道",
                "address": "三好街 12 号",
            },
        )
    assert response.status_code == 500
    assert "Nothing was changed" in response.get_data(as_text=True)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Resident)) == 0
