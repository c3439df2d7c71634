"""A streamed response body made from one row: ``row_body(chunks, Model, row_id)``.

The WSGI server iterates a streamed body after the request has ended: its unit of work has
committed (which expires every object it loaded) and Flask-SQLAlchemy has closed its session
at the end of the app context. ``stream_with_context`` pushes the contexts again for the
body, but ``db.session`` is then a new session, and a row the view loaded is detached from
it: the first attribute the body reads raised DetachedInstanceError, half-way through the
download.

So the body does not take the view's object. It loads the row again by primary key, in the
session it runs in, and hands it to ``chunks``; the chunks are made as they are sent (the
lines streamed from the database), so memory stays bounded however large the file. That
session ends (closes, rolls back: the body only reads) when the body has been sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from flask import stream_with_context

from eldercare.db import db

Row = TypeVar("Row")


def row_body(
    chunks: Callable[[Row], Iterator[bytes]], model: type[Row], row_id: int
) -> Iterator[bytes]:
    """``chunks(row)`` as a response body, ``row`` the ``model`` row ``row_id`` loaded in the
    body's own session. Call it in the view, with the row's id (the view has checked that
    the row exists and who may read it)."""

    def body() -> Iterator[bytes]:
        row = db.session.get(model, row_id)
        if row is None:  # deleted between the request and its body: end the download cut off
            raise LookupError(f"{model.__name__} {row_id} is gone; the download is incomplete")
        yield from chunks(row)

    # Creating the generator runs none of it: nothing is read before the body is sent.
    return stream_with_context(body())
