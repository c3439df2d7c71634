import hashlib

import pytest
import sqlalchemy as sa
from openapi_spec_validator import validate

from eldercare.tokens import ApiToken, issue_token, revoke_token


def test_openapi_document_is_valid_and_describes_the_api(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)  # raises if the document breaks OpenAPI 3
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/me" in spec["paths"] and "/api/v1/districts" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


@pytest.fixture
def token_pair(app_ctx, factory):
    user = factory.user("agency-system", roles=["agency_admin"])
    factory.district("210102", "和平区")
    return issue_token(user, "Agency software", ["read"])


def _auth(secret):
    return {"Authorization": f"Bearer {secret}"}


def test_a_token_acts_for_its_account(client, token_pair):
    _token, secret = token_pair
    body = client.get("/api/v1/me", headers=_auth(secret)).get_json()
    assert body == {
        "username": "agency-system",
        "roles": ["agency_admin"],
        "token_name": "Agency software",
        "scopes": ["read"],
    }
    districts = client.get("/api/v1/districts", headers=_auth(secret)).get_json()
    assert {"code": "210102", "name_zh": "和平区", "name_en": "和平区"} in districts


def test_only_a_hash_of_the_secret_is_stored(db_session, token_pair):
    token, secret = token_pair
    raw = secret.split("_", 2)[2]  # ect_<prefix>_<secret>; the secret may contain "_"
    stored = db_session.get(ApiToken, token.id)
    assert raw not in (stored.secret_sha256, stored.prefix, stored.name)
    assert stored.secret_sha256 == hashlib.sha256(raw.encode()).hexdigest()


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ect_nope_nope", "Basic abc", "Bearer {secret}x"],
)
def test_missing_or_wrong_tokens_are_refused(client, token_pair, header):
    _token, secret = token_pair
    headers = {} if header is None else {"Authorization": header.format(secret=secret)}
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "authentication_required"


def test_a_revoked_token_stops_working(client, app_ctx, token_pair):
    token, secret = token_pair
    assert client.get("/api/v1/me", headers=_auth(secret)).status_code == 200
    revoke_token(token)
    assert client.get("/api/v1/me", headers=_auth(secret)).status_code == 401


def test_scopes_limit_what_a_token_may_do(client, app_ctx, factory):
    user = factory.user("scanner", roles=["provider_staff"])
    _token, secret = issue_token(user, "Scanner phone", ["vouchers:redeem"])
    response = client.get("/api/v1/districts", headers=_auth(secret))
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {"missing": ["read"]}


def test_unknown_scope_is_refused_and_nothing_is_stored(app_ctx, factory, db_session):
    from eldercare.errors import InvalidInput

    user = factory.user("x", roles=["admin"])
    count = db_session.scalar(sa.select(sa.func.count()).select_from(ApiToken))
    with pytest.raises(InvalidInput):
        issue_token(user, "bad", ["everything"])
    assert db_session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == count


def test_admin_creates_and_revokes_tokens_in_the_browser(client, factory, login, db_session):
    admin = factory.user("root", roles=["admin"])
    login(admin)
    page = client.post(
        "/admin/tokens/",
        data={"name": "Tablet 7", "user_id": admin.id, "scopes": ["read"]},
        headers={"Accept-Language": "en"},
    )
    assert page.status_code == 201
    html = page.get_data(as_text=True)
    assert "it will not be shown again" in html and 'id="new-token">ect_' in html
    token = db_session.scalar(sa.select(ApiToken).where(ApiToken.name == "Tablet 7"))
    client.post(f"/admin/tokens/{token.id}/revoke", data={"confirm": "1"})
    db_session.refresh(token)
    assert token.revoked_at is not None
