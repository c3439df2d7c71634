"""Which kind of voucher an elder holds: home & community by default, or institutional.

An elder holds one kind in a month. The choice is stored once per elder; issuance reads it
when it issues a month's voucher, so a change made today applies from the next voucher and
never alters one already issued: the month's first voucher fixes the month's kind (a voucher
re-issued after a revocation keeps it, see ``kind_of_month``). An elder living in an
institution holds the institutional kind whatever was chosen before (POLICY: "institutional
while living in an institution").

Who sets what:
- the elder or a family agent chooses the kind (``choose_kind``), never while the elder
  lives in an institution;
- the bureau (district staff for their district's elders) sets the kind and whether the elder
  lives in an institution (``set_kind``);
- a care institution's administrator says that an elder lives, or no longer lives, in that
  institution (``set_kind`` with ``institution``): only for an elder the institution serves
  (a stay delivered in the last 31 days, or accepted for today), and only the institution
  that said so may take it back.
Every change is audited (``voucher_kind.choose`` / ``voucher_kind.set``) with the month it
applies from.
"""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound, PermissionDenied
from eldercare.residents import Resident
from eldercare.timeutil import local_today, now_utc
from marketplace import bookings
from vouchers.models import LIVE_FIRST, VOUCHER_KINDS, KindChoice, Voucher

DEFAULT_KIND = "home_community"
KIND_LABELS = {
    "home_community": _l("Home and community care"),
    "institutional": _l("Care in an institution"),
}
STAY_LOOKBACK = timedelta(days=31)  # an institution serves an elder it housed this long ago


def _choice(resident_id: int) -> KindChoice | None:
    return db.session.scalar(sa.select(KindChoice).where(KindChoice.resident_id == resident_id))


def kind_for(resident_id: int) -> str:
    choice = _choice(resident_id)
    if choice is None:
        return DEFAULT_KIND
    return "institutional" if choice.in_institution else choice.kind


def choose_kind(
    resident: Resident, kind: str, *, actor: User | None, in_institution: bool | None = None
) -> KindChoice:
    """Record the elder's (or agent's) choice; ``in_institution`` is set by the bureau or the
    institution and, while true, only the institutional kind can be chosen."""
    if kind not in VOUCHER_KINDS:
        raise InvalidInput(details={"kind": _l("Choose the kind of voucher.")})
    if in_institution is not None and not isinstance(in_institution, bool):
        raise InvalidInput(
            details={"in_institution": _l("Say whether the elder lives in an institution.")}
        )
    choice = _choice(resident.id)
    living_in = (
        in_institution if in_institution is not None else bool(choice and choice.in_institution)
    )
    if living_in and kind != "institutional":
        raise InvalidInput(
            details={
                "kind": _l("An elder living in an institution holds the institutional voucher.")
            }
        )
    before = {"kind": choice.kind, "in_institution": choice.in_institution} if choice else None
    if choice is None:
        choice = KindChoice(resident_id=resident.id)
        db.session.add(choice)
    choice.kind, choice.in_institution = kind, living_in
    choice.chosen_by_user_id = actor.id if actor is not None else None
    choice.chosen_at = now_utc()
    db.session.flush()
    audit.record(
        "voucher_kind.choose",
        choice,
        district_id=resident.district_id,
        before=before,
        after={"kind": kind, "in_institution": living_in},
        actor=actor,
    )
    return choice


def kind_of_month(resident_id: int, month: date) -> str | None:
    """The kind a month's voucher has, when one was issued (even if revoked since): the
    month's kind is fixed by its first voucher, so a re-issue keeps it."""
    return db.session.scalar(
        sa.select(Voucher.kind)
        .where(Voucher.resident_id == resident_id, Voucher.month == month)
        .order_by(*LIVE_FIRST)
        .limit(1)
    )


def kind_held_on(resident_id: int, day: date) -> str:
    """The kind of voucher the elder pays with on ``day``: that of the month's voucher when
    one was issued (a redemption uses the voucher's kind), otherwise the kind the month's
    voucher will have (the elder's choice; see ``applies_from``)."""
    return kind_of_month(resident_id, day.replace(day=1)) or kind_for(resident_id)


def _next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def applies_from(resident_id: int, today: date) -> date:
    """The first month a change made today applies to: this month while it has no voucher
    yet, otherwise the next (the current month's voucher keeps its kind)."""
    this_month = today.replace(day=1)
    if kind_of_month(resident_id, this_month) is None:
        return this_month
    return _next_month(this_month)


def serves(provider, resident_id: int, today: date) -> bool:
    """The institution houses the elder: a stay delivered recently or accepted for today."""
    return bool(
        bookings.bookings_to_serve(provider.id, resident_id, today)
        or bookings.last_completed(provider.id, resident_id, today - STAY_LOOKBACK)
    )


def set_kind(
    resident: Resident,
    *,
    kind: str | None,
    in_institution,
    actor: User,
    institution=None,
    today: date | None = None,
) -> dict:
    """The bureau's (``institution`` None) or a care institution's setting of the elder's
    kind for the coming months. The caller has checked the actor's role and district. An
    elder living in an institution holds the institutional kind, so ``kind`` may be left
    out then. Returns what now holds and the month it applies from."""
    today = today or local_today()
    if not isinstance(in_institution, bool):
        raise InvalidInput(
            details={"in_institution": _l("Say whether the elder lives in an institution.")}
        )
    if in_institution and kind in (None, ""):
        kind = "institutional"
    if kind not in VOUCHER_KINDS:
        raise InvalidInput(details={"kind": _l("Choose the kind of voucher.")})
    choice = _choice(resident.id)
    if institution is not None:
        _check_institution(resident, choice, institution, in_institution, today)
    if in_institution and kind != "institutional":
        raise InvalidInput(
            details={
                "kind": _l("An elder living in an institution holds the institutional voucher.")
            }
        )
    before = (
        {
            "kind": choice.kind,
            "in_institution": choice.in_institution,
            "institution": choice.institution_provider_id,
        }
        if choice
        else None
    )
    if choice is None:
        choice = KindChoice(resident_id=resident.id)
        db.session.add(choice)
    choice.kind, choice.in_institution = kind, in_institution
    if institution is not None:
        choice.institution_provider_id = institution.id if in_institution else None
    elif not in_institution:
        choice.institution_provider_id = None
    choice.chosen_by_user_id = actor.id
    choice.chosen_at = now_utc()
    db.session.flush()
    start = applies_from(resident.id, today)
    after = {
        "kind": kind,
        "in_institution": in_institution,
        "institution": choice.institution_provider_id,
        "applies_from": start.strftime("%Y-%m"),
    }
    audit.record(
        "voucher_kind.set",
        choice,
        district_id=resident.district_id,
        before=before,
        after=after,
        actor=actor,
    )
    return after | {"kind": kind_for(resident.id), "applies_from": start}


def _check_institution(resident, choice, institution, in_institution: bool, today: date):
    """A care institution speaks only of elders it houses, and takes back only what it said."""
    if institution.type != "care_institution":
        raise PermissionDenied(_l("Only a care institution can say that an elder lives there."))
    if choice is not None and choice.in_institution:
        if choice.institution_provider_id not in (None, institution.id):
            raise PermissionDenied(
                _l("Another institution recorded that this elder lives there; ask the bureau.")
            )
    if not in_institution and not (choice and choice.institution_provider_id == institution.id):
        raise PermissionDenied(
            _l("Only the institution that recorded the elder as living there can end it.")
        )
    if in_institution and not serves(institution, resident.id, today):
        # An elder the institution does not house looks like one it cannot find.
        raise NotFound(
            _l("No stay of this elder at your institution was found in the last 31 days.")
        )
