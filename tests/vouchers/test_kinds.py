"""The voucher kind set by the bureau or by the care institution the elder lives in
(issue 10 item 6): from the first month without a voucher, audited, district-scoped."""

from datetime import datetime, time, timedelta

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.errors import InvalidInput, NotFound, PermissionDenied
from eldercare.timeutil import SHANGHAI
from marketplace import bookings
from tests.vouchers.helpers import give_voucher
from vouchers.issuance.monthly import issue_for, next_month, revoke_for
from vouchers.models import KindChoice, Voucher
from vouchers.pool import kinds

INSTITUTIONAL_CAP = 80_000


def _audits(session):
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditLog)
        .where(AuditLog.action == "voucher_kind.set")
    )


def _stay(scheme):
    """The elder stays at 沈河区颐养院: booked, accepted and started (completed)."""
    m = scheme.market
    start = datetime.combine(scheme.today + timedelta(days=1), time(10), tzinfo=SHANGHAI)
    booking = bookings.book(m.stay, resident=scheme.elder, booked_by=scheme.son, slot_start=start)
    bookings.accept(booking, m.institution_admin)
    bookings.complete(booking, m.institution_admin, now=start + timedelta(hours=1))
    return booking


def test_the_bureau_sets_the_kind_from_next_month_and_this_months_voucher_keeps_its_kind(
    scheme, db_session
):
    current = give_voucher(scheme.elder, scheme.today)
    answer = kinds.set_kind(
        scheme.elder, kind=None, in_institution=True, actor=scheme.approver, today=scheme.today
    )
    assert answer["kind"] == "institutional"
    assert answer["applies_from"] == next_month(current.month)
    assert _audits(db_session) == 1
    assert db_session.get(Voucher, current.id).kind == "home_community"
    # A re-issue of this month after a revocation keeps the month's kind.
    revoke_for(scheme.elder.id, from_month=current.month, reason="exclusion")
    again = issue_for(scheme.elder.id, current.month)
    assert again is not None and again.kind == "home_community"
    nxt = issue_for(scheme.elder.id, next_month(current.month))
    assert (nxt.kind, nxt.face_value_fen) == ("institutional", INSTITUTIONAL_CAP)


def test_without_a_voucher_this_month_the_setting_applies_this_month(scheme, db_session):
    answer = kinds.set_kind(
        scheme.elder, kind="institutional", in_institution=False, actor=scheme.approver
    )
    assert answer["applies_from"] == scheme.today.replace(day=1)


@pytest.mark.parametrize(
    "kind,in_institution,field",
    [
        ("cash", False, "kind"),
        ("home_community", True, "kind"),
        ("institutional", "yes", "in_institution"),
        (None, None, "in_institution"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(
    scheme, db_session, kind, in_institution, field
):
    with pytest.raises(InvalidInput) as refused:
        kinds.set_kind(
            scheme.elder, kind=kind, in_institution=in_institution, actor=scheme.approver
        )
    assert field in refused.value.details
    assert db_session.scalar(sa.select(sa.func.count()).select_from(KindChoice)) == 0
    assert _audits(db_session) == 0


def test_an_institution_sets_it_only_for_an_elder_it_houses(scheme, db_session):
    m = scheme.market
    with pytest.raises(NotFound):
        kinds.set_kind(
            scheme.elder,
            kind=None,
            in_institution=True,
            actor=m.institution_admin,
            institution=m.institution,
        )
    # A community station is not an institution an elder lives in.
    with pytest.raises(PermissionDenied):
        kinds.set_kind(
            scheme.elder,
            kind=None,
            in_institution=True,
            actor=m.station_admin,
            institution=m.station,
        )
    assert _audits(db_session) == 0
    _stay(scheme)
    kinds.set_kind(
        scheme.elder,
        kind=None,
        in_institution=True,
        actor=m.institution_admin,
        institution=m.institution,
    )
    assert kinds.kind_for(scheme.elder.id) == "institutional"
    # The elder or family cannot choose the home kind meanwhile.
    with pytest.raises(InvalidInput):
        kinds.choose_kind(scheme.elder, "home_community", actor=scheme.son)
    # The institution ends it (the elder moved home); the bureau could too.
    kinds.set_kind(
        scheme.elder,
        kind="home_community",
        in_institution=False,
        actor=m.institution_admin,
        institution=m.institution,
    )
    assert kinds.kind_for(scheme.elder.id) == "home_community"
    assert _audits(db_session) == 2


def test_an_institution_cannot_end_what_it_did_not_record(scheme, db_session):
    m = scheme.market
    kinds.set_kind(scheme.elder, kind=None, in_institution=True, actor=scheme.approver)
    _stay(scheme)
    with pytest.raises(PermissionDenied):
        kinds.set_kind(
            scheme.elder,
            kind="home_community",
            in_institution=False,
            actor=m.institution_admin,
            institution=m.institution,
        )
    assert kinds.kind_for(scheme.elder.id) == "institutional"


# --- the page ---------------------------------------------------------------------------


def test_the_bureau_sets_the_kind_on_its_page(scheme, client, login, db_session):
    login(scheme.approver)
    en = {"Accept-Language": "en"}
    form = client.get("/vouchers/kinds", headers=en)
    assert form.status_code == 200 and 'name="id_number"' in form.get_data(as_text=True)
    bad = client.post(
        "/vouchers/kinds",
        data={"id_number": "12345", "in_institution": "yes", "kind": ""},
        headers=en,
    )
    assert bad.status_code == 422
    wrong = client.post(
        "/vouchers/kinds",
        data={
            "id_number": scheme.elder.id_number,
            "in_institution": "yes",
            "kind": "home_community",
        },
        headers=en,
    )
    assert wrong.status_code == 422
    assert "holds the institutional voucher" in wrong.get_data(as_text=True)
    assert _audits(db_session) == 0
    done = client.post(
        "/vouchers/kinds",
        data={"id_number": scheme.elder.id_number, "in_institution": "yes", "kind": ""},
        headers=en,
    )
    assert done.status_code == 200
    assert "the voucher is for: Care in an institution" in done.get_data(as_text=True)
    assert kinds.kind_for(scheme.elder.id) == "institutional" and _audits(db_session) == 1


def test_a_district_officer_and_an_institution_reach_only_their_elders(
    scheme, client, login, db_session
):
    w = scheme.world
    shenhe = w.factory.user("officer.sh2", roles=["bureau_officer"], district=w.shenhe)
    login(shenhe)
    data = {"id_number": scheme.elder.id_number, "in_institution": "yes", "kind": ""}
    assert client.post("/vouchers/kinds", data=data).status_code == 404
    login(scheme.market.institution_admin)
    assert client.post("/vouchers/kinds", data=data).status_code == 404
    assert _audits(db_session) == 0
    _stay(scheme)
    assert client.post("/vouchers/kinds", data=data).status_code == 200
    assert _audits(db_session) == 1
