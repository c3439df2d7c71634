"""Issue 14 item 7: revoking an API token takes two steps; the first POST leaves the token
working and says so."""

import sqlalchemy as sa

from eldercare.tokens import ApiToken, issue_token
from tests.confirm_helpers import asks_first, confirmed


def test_revoking_a_token_asks_first(client, login, factory, db_session):
    admin = factory.user("root", roles=["admin"])
    token, _secret = issue_token(admin, "Tablet 7", ["read"])
    db_session.flush()
    login(admin)
    url = f"/admin/tokens/{token.id}/revoke"
    asks_first(client, url, {}, "Revoke the token Tablet 7?", "cannot be restored")
    db_session.refresh(token)
    assert token.revoked_at is None
    assert client.post(url, data=confirmed()).status_code == 302
    db_session.refresh(token)
    assert token.revoked_at is not None
    assert db_session.scalar(sa.select(ApiToken.revoked_at).where(ApiToken.id == token.id))
