"""Issue 13 item 7: a token with read scopes only must not write.

The rule is structural (eldercare/tokens.py): an API operation whose method is not GET, HEAD
or OPTIONS needs one of the write scopes its route declares, whatever else the route says.
These tests walk the app's own route table, so a new write route is covered without anyone
remembering to add it here.
"""

from __future__ import annotations

import re

import pytest

from eldercare.accounts import ROLES
from eldercare.tokens import READ_SCOPES, SCOPES, WRITE_SCOPES, issue_token

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Reviewed exceptions: the payment gateway's webhook is signed by the gateway, not sent with a
# token; the eligibility check is a POST only so that the ID number stays out of URLs and logs.
NOT_TOKEN_WRITES = {"vouchers_gateway.webhook", "assessment_api.check_eligibility"}


def _api_write_operations(app) -> list[tuple[str, str, str]]:
    """(method, rule, endpoint) of every /api/ operation that is not a plain read."""
    operations = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        for method in sorted(rule.methods - SAFE_METHODS):
            operations.append((method, rule.rule, rule.endpoint))
    return sorted(operations)


def _url(rule: str) -> str:
    # Any id will do: the scope is checked before the body or the path's object is looked at.
    return re.sub(r"<(?:[^:>]+:)?[^>]+>", "1", rule)


def _auth(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def token_for(everyone, db_session):
    def _issue(scopes):
        _token, secret = issue_token(everyone, "a device", sorted(scopes))
        db_session.commit()  # a refused request rolls back its unit of work, not the token
        return secret

    return _issue


@pytest.fixture
def everyone(app_ctx, factory):
    """An account holding every role, so that only the token's scopes can refuse it."""
    return factory.user("all-roles", roles=sorted(ROLES))


def test_scopes_are_either_read_or_write():
    assert READ_SCOPES | WRITE_SCOPES == set(SCOPES)
    assert not READ_SCOPES & WRITE_SCOPES
    assert READ_SCOPES == {"read", "vouchers:read"}


def test_the_route_table_has_api_write_operations(app):
    # Guards the tests below against walking an empty list.
    assert len(_api_write_operations(app)) >= 40


def test_every_api_write_operation_declares_a_write_scope(app):
    """Read from the views themselves: a write route must name the write scope it needs
    (or be one of the few reviewed exceptions below)."""
    unscoped, lookups = [], []
    for method, rule, endpoint in _api_write_operations(app):
        view = app.view_functions[endpoint]
        scopes = getattr(view, "token_scopes", None)
        if scopes is None:
            unscoped.append(rule)
        elif getattr(view, "token_lookup", False):
            lookups.append(rule)
        elif not set(scopes) & WRITE_SCOPES:
            unscoped.append((method, rule, scopes))
    assert unscoped == ["/api/v1/payments/webhook"]
    assert lookups == ["/api/v1/eligibility-checks"]
    assert {app.url_map._rules_by_endpoint[e][0].rule for e in NOT_TOKEN_WRITES} == {
        *unscoped,
        *lookups,
    }


def test_a_read_only_token_is_refused_on_every_api_write_operation(client, token_for, app):
    secret = token_for(READ_SCOPES)
    refused = {}
    for method, rule, endpoint in _api_write_operations(app):
        if endpoint in NOT_TOKEN_WRITES:
            continue
        response = client.open(_url(rule), method=method, headers=_auth(secret), json={})
        body = response.get_json(silent=True) or {}
        refused[(method, rule)] = (response.status_code, body.get("error", {}).get("code"))
    wrong = {op: got for op, got in refused.items() if got != (403, "write_scope_required")}
    assert wrong == {}
    assert len(refused) >= 40


def test_the_refusal_says_which_scope_is_missing(client, token_for):
    secret = token_for(["read"])
    response = client.post(
        "/api/v1/bookings", headers=_auth(secret) | {"Accept-Language": "en"}, json={}
    )
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "write_scope_required"
    assert error["details"] == {"missing": ["elders:write"]}
    assert "write" in error["message"]
    zh = client.post(
        "/api/v1/bookings", headers=_auth(secret) | {"Accept-Language": "zh-CN"}, json={}
    )
    assert "写入" in zh.get_json()["error"]["message"]


def test_a_write_scope_passes_the_gate(client, token_for, app):
    """The same walk with every scope: nothing is refused for its scope (the body, the id or
    the account may still be refused, with another answer)."""
    secret = token_for(SCOPES)
    for method, rule, endpoint in _api_write_operations(app):
        if endpoint in NOT_TOKEN_WRITES:
            continue
        response = client.open(_url(rule), method=method, headers=_auth(secret), json={})
        body = response.get_json(silent=True) or {}
        code = body.get("error", {}).get("code")
        assert code != "write_scope_required", (method, rule)
        assert response.status_code < 500, (method, rule, response.status_code)


def test_every_api_read_operation_declares_the_scopes_it_needs(app):
    """Reads are scoped too: every token-protected GET names the scopes that may read it,
    except ``/me``, which tells any valid token what it is."""
    undeclared = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or "GET" not in rule.methods:
            continue
        scopes = getattr(app.view_functions[rule.endpoint], "token_scopes", None)
        if scopes is None:
            undeclared.append(rule.rule)  # not token-protected at all
        elif not scopes:
            undeclared.append(rule.rule)
    assert sorted(undeclared) == ["/api/v1/me", "/api/v1/openapi.json"]
