"""Which kind of voucher an elder holds: home & community by default, or institutional.

An elder holds one kind in a month. The choice is stored once per elder; issuance reads it
when it issues a month's voucher, so a change made today applies from the next voucher and
never alters one already issued. An elder living in an institution holds the institutional
kind whatever was chosen before (POLICY: "institutional while living in an institution").
"""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.residents import Resident
from eldercare.timeutil import now_utc
from vouchers.models import VOUCHER_KINDS, KindChoice

DEFAULT_KIND = "home_community"


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
