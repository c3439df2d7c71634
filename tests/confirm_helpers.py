"""Asking a risky action's first POST (eldercare.confirmation): it must change nothing and
say what would happen; the same fields with confirm=1 act."""

from __future__ import annotations

import html as html_lib
import re

import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.db import db


def audit_rows() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog))


def confirmed(data: dict | None = None) -> dict:
    return {**(data or {}), "confirm": "1"}


def hidden_fields(page: str) -> list[tuple[str, str]]:
    """The fields the confirmation form posts again, in order."""
    form = re.search(r'<form id="confirm-form"[^>]*>(.*?)</form>', page, re.S)
    assert form, "no confirmation form on the page"
    hidden = r'<input type="hidden" name="([^"]+)" value="([^"]*)">'
    return [
        (html_lib.unescape(n), html_lib.unescape(v)) for n, v in re.findall(hidden, form.group(1))
    ]


def asks_first(
    client, url: str, data: dict | None = None, *texts: str, secrets: tuple[str, ...] = ()
) -> str:
    """POST ``data`` without confirm=1: a 200 page with a confirmation form that posts back to
    ``url`` with the same fields and confirm=1, a way back, no audit row, and each of
    ``texts`` in the page (in English). ``secrets`` (a PIN) are never written into the page:
    the form asks for them again, empty. Returns the page."""
    before = audit_rows()
    response = client.post(url, data=data or {}, headers={"Accept-Language": "en"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page[:2000]
    assert re.search(rf'<form id="confirm-form" method="post" action="{re.escape(url)}"[ >]', page)
    fields = hidden_fields(page)
    assert ("confirm", "1") in fields
    for name in secrets:
        assert name not in dict(fields), name
        assert str(data[name]) not in page, name
        typed_again = rf'<input type="password" id="confirm-{name}" name="{name}"'
        assert re.search(typed_again, page), name
    for name, value in (data or {}).items():
        if name in secrets:
            continue
        values = value if isinstance(value, list) else [value]
        assert [v for n, v in fields if n == name] == [str(v) for v in values], name
    assert 'id="confirm-back"' in page
    assert "Nothing has been changed yet." in page
    for text in texts:
        assert text in html_lib.unescape(page), text
    db.session.expire_all()
    assert audit_rows() == before
    return page
