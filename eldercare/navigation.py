"""Where people can go: the menu's destinations, and redirect targets that stay on the site."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, url_for


def safe_next(target: str | None, default_endpoint: str = "home.index") -> str:
    """Accept only a path on this site ("/x"), never "//host" or "http://host"."""
    if target:
        parts = urlsplit(target)
        if (
            not parts.scheme
            and not parts.netloc
            and target.startswith("/")
            and not target.startswith("//")
            and "\\" not in target
        ):
            return target
    return url_for(default_endpoint)


@dataclass(frozen=True)
class Destination:
    """A page offered in the main menu (and as a home-page card when it has a description).

    Each package registers its own, so the shell's templates need not know the domains'
    pages."""

    endpoint: str
    label: Any
    # Who is offered it is decided by the view's own roles_required (eldercare.auth.may_open);
    # roles here only narrow that further (a menu entry for some of those the page admits).
    roles: tuple[str, ...] = ()
    description: Any = None  # the home-page card's text; None: menu only
    invitation: Any = None  # a home-page button for every visitor, signed in or not


def register_destinations(app, *destinations: Destination) -> None:
    app.extensions.setdefault("destinations", []).extend(destinations)


def destinations_for(user) -> list[Destination]:
    """The destinations ``user`` may open: the view's own roles_required decides (so a menu
    never offers a page that answers 403), and the entry's ``roles`` may narrow it further."""
    from eldercare.auth import may_open  # auth imports this module

    if not getattr(user, "is_authenticated", False):
        return []
    return [
        d
        for d in current_app.extensions.get("destinations", [])
        if (not d.roles or user.has_role(*d.roles)) and may_open(user, d.endpoint)
    ]


def invitations() -> list[Destination]:
    return [d for d in current_app.extensions.get("destinations", []) if d.invitation]


def register_home_panel(app, render) -> None:
    """``render(user)`` gives the top of ``user``'s home page (HTML, with its own ``<h1>``) or
    None. A domain shows what a person comes for (the elder's voucher and its code) there,
    without the shell knowing the domain's pages. A panel is personal and may carry a live
    code, so a home page with one is never cached."""
    app.extensions.setdefault("home_panels", []).append(render)


def home_panels(user) -> list:
    if not getattr(user, "is_authenticated", False):
        return []
    shown = (render(user) for render in current_app.extensions.get("home_panels", []))
    return [panel for panel in shown if panel is not None]
