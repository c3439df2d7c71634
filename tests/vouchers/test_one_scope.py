"""What a voucher pays for has one answer (issue 14, item 4): the version of the voucher
kind's policy in force on the day (``vouchers.pool.policy.scope_on``), the rule check-in
enforces. The search's "voucher accepted" badge (for the elder's own kind when an elder or
a family is signed in; for anyone else, naming the kinds that pay), the kind's description
on the elder's page, and the services the scan page offers all ask it.

The demo (and test) policy is the Shenyang pilot's, seeded by migration 0004: day care is
the institutional voucher's, not the home-and-community one's."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from html import unescape

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eldercare.db import db
from marketplace import catalogue
from marketplace.models import ServiceCategory
from marketplace.search import search_services
from marketplace.staff import invite_staff
from tests.marketplace.conftest import ELDER_HOME
from tests.vouchers.helpers import give_voucher
from vouchers.errors import OutOfScope
from vouchers.models import VOUCHER_KINDS, VoucherPolicy
from vouchers.pool.policy import add_version, policy_on, scope_on
from vouchers.redemption import steps as redemption
from vouchers.redemption.qr_tokens import make_token

EN = {"Accept-Language": "en"}
CAREGIVER_PASSWORD = "caregiver-pass-1"


def words(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def result_cards(response) -> dict[int, str]:
    """Each result card's text, by service id."""
    html = response.get_data(as_text=True)
    found = re.findall(r'<li class="result-card" id="service-(\d+)">(.*?)</li>', html, flags=re.S)
    return {int(sid): words(card) for sid, card in found}


def kind_description(response, kind: str) -> str:
    """The words next to a kind's radio button on the elder's voucher page."""
    html = response.get_data(as_text=True)
    match = re.search(
        rf'<div class="kind-option">\s*<label for="kind-{kind}">(.*?)</label>', html, flags=re.S
    )
    assert match, f"no option for {kind}"
    return words(match.group(1))


def offered(response) -> set[int]:
    """The services the scan page offers to check in."""
    html = response.get_data(as_text=True)
    listed = re.search(r'<ul class="card-list" id="scope-services">(.*?)</ul>', html, flags=re.S)
    return {int(s) for s in re.findall(r'data-service="(\d+)"', listed.group(1))}


def scan_page(client, voucher, seq=0) -> str:
    response = client.get(f"/r/{make_token(voucher.id, seq=seq)}")
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


@pytest.fixture
def day_care(shop):
    m = shop.market
    shop.day_care = catalogue.add_service(
        m.station,
        actor=m.station_admin,
        category_code="day_care",
        title="日间照料（含午餐）",
        description="",
        unit="day",
        price_fen=8000,
        capacity_per_slot=15,
        districts=[m.heping, m.shenhe],
        delivery_place="provider",
    )
    db.session.flush()
    return shop


# --------------------------------------------------------------------------- the badge


def test_day_care_has_no_voucher_badge_for_a_home_and_community_elder(day_care, client, login):
    s = day_care
    login(s.elder_user)
    found = result_cards(client.get("/marketplace/", headers=EN))
    assert "Voucher accepted" in found[s.market.meals.id]
    assert "Voucher accepted" not in found[s.day_care.id]
    # The filter asks the same: day care is not among the services "the voucher pays part of".
    only = result_cards(client.get("/marketplace/?vouchers=1", headers=EN))
    assert s.market.meals.id in only and s.day_care.id not in only
    service = words(client.get(f"/marketplace/services/{s.day_care.id}", headers=EN).data.decode())
    assert "Voucher accepted" not in service and "Not paid by your voucher" in service


def test_an_institutional_elder_sees_day_care_badged_and_meals_not(day_care, client, login):
    s = day_care
    db.session.delete(s.voucher)  # this month's voucher is an institutional one instead
    db.session.flush()
    give_voucher(s.elder, s.today, kind="institutional")
    login(s.elder_user)
    found = result_cards(client.get("/marketplace/", headers=EN))
    assert "Voucher accepted" in found[s.day_care.id]
    assert "Voucher accepted" not in found[s.market.meals.id]


def test_an_anonymous_visitor_reads_which_kind_pays(day_care, client):
    s = day_care
    heping = s.market.heping
    response = client.get(
        f"/marketplace/?district={heping.id}&near=district&radius=5000", headers=EN
    )
    found = result_cards(response)
    assert "Voucher accepted: Care in an institution" in found[s.day_care.id]
    assert "Home and community care" not in found[s.day_care.id]
    assert "Voucher accepted: Home and community care" in found[s.market.meals.id]
    assert "Voucher accepted" not in found[s.market.haircut.id]
    page = words(client.get(f"/marketplace/services/{s.day_care.id}", headers=EN).data.decode())
    assert "Voucher accepted: Care in an institution" in page


# --------------------------------------------------------------------------- the description


def test_the_kinds_description_is_the_policys_categories(day_care, client, login):
    s = day_care
    login(s.elder_user)
    page = client.get(f"/vouchers/elder/{s.elder.id}", headers=EN)
    home = kind_description(page, "home_community")
    institutional = kind_description(page, "institutional")
    assert "Meal help" in home and "Rehabilitation nursing" in home
    assert "Day care" not in home and "day care" not in home
    assert "Day care" in institutional and "Long-term stay (over 30 days)" in institutional


# --------------------------------------------------------------------------- the scan page


def test_the_scan_page_offers_what_check_in_accepts(day_care, client, login):
    s = day_care
    login(s.caregiver, CAREGIVER_PASSWORD)
    page = scan_page(client, s.voucher)
    assert offered(client.get(page, headers=EN)) == {s.market.meals.id, s.market.bath.id}
    refused = client.post(f"{page}/check-in", data={"service_id": s.day_care.id}, headers=EN)
    assert refused.status_code in (403, 409, 422)
    accepted = client.post(f"{page}/check-in", data={"service_id": s.market.meals.id})
    assert accepted.status_code == 302


def test_with_no_version_in_force_the_scan_page_offers_nothing_as_check_in_refuses(
    day_care, client, login
):
    s = day_care
    # The home-and-community version ends today (its end is exclusive): none is in force.
    version = db.session.get(VoucherPolicy, s.voucher.policy_id)
    version.effective_to = s.today
    db.session.flush()
    login(s.caregiver, CAREGIVER_PASSWORD)
    page = scan_page(client, s.voucher)
    assert offered(client.get(page, headers=EN)) == set()
    refused = client.post(f"{page}/check-in", data={"service_id": s.market.meals.id}, headers=EN)
    assert refused.status_code != 302


# --------------------------------------------------------------------------- all agree


def _category_world(s, day=None):
    """A service of every category at a provider that may offer it, a certified caregiver
    at each provider, and an elder of each kind holding a voucher for ``day``'s month (the
    shop's elder and voucher when ``day`` is None)."""
    m = s.market
    providers = [m.station, m.home, m.institution]
    admins = {m.station.id: m.station_admin, m.home.id: m.home_admin}
    admins[m.institution.id] = m.institution_admin
    staff = {
        p.id: invite_staff(
            p,
            username=f"carer.{p.id}",
            display_name="护理员",
            password=CAREGIVER_PASSWORD,
            certificate_number=f"YL-2026-{p.id:04d}",
            certificate_valid_until=s.today + timedelta(days=365),
            today=s.today,
        ).user
        for p in providers
    }
    services = {}
    for category in db.session.scalars(sa.select(ServiceCategory)):
        provider = next(p for p in providers if p.type in category.provider_types.split())
        services[category.code] = catalogue.add_service(
            provider,
            actor=admins[provider.id],
            category_code=category.code,
            title=f"服务 {category.code}",
            description="",
            unit="visit",
            price_fen=5000,
            capacity_per_slot=2,
            districts=[m.heping, m.shenhe],
            # A place this kind of provider may deliver at; check-in below is made at the
            # elder's home, so only the scope can refuse it.
            delivery_place=catalogue.PLACES_BY_PROVIDER_TYPE[provider.type][-1],
        )

    def elder(username, kind):
        resident = m.factory.resident(
            m.heping, birth=date(1941, 5, 2), latitude=ELDER_HOME[0], longitude=ELDER_HOME[1]
        )
        user = m.factory.user(username, roles=["elder"], resident=resident)
        return user, give_voucher(resident, day or s.today, kind=kind)

    elders = {
        "home_community": (s.elder_user, s.voucher)
        if day is None
        else elder("elder.ma", "home_community"),
        "institutional": elder("elder.li", "institutional"),
    }
    db.session.flush()
    return providers, staff, services, elders


def test_badge_description_scan_page_and_check_in_agree_for_every_kind_and_category(
    shop, client, login
):
    """A property over the whole demo policy: for every voucher kind and every category,
    the badge the kind's elder sees == the category named in the kind's description ==
    the scan page offering it == check-in accepting it."""
    s = shop
    providers, staff, services, elders = _category_world(s)
    names = {c.code: c.name_en for c in db.session.scalars(sa.select(ServiceCategory))}
    disagreements = []
    for kind in VOUCHER_KINDS:
        elder_user, voucher = elders[kind]
        login(elder_user)
        found = result_cards(client.get("/marketplace/?radius=5000", headers=EN))
        description = kind_description(
            client.get(f"/vouchers/elder/{elder_user.resident.id}", headers=EN), kind
        )
        on_scan_pages = set()
        for seq, provider in enumerate(providers):
            login(staff[provider.id], CAREGIVER_PASSWORD)
            on_scan_pages |= offered(client.get(scan_page(client, voucher, seq), headers=EN))
        for code, service in services.items():
            try:
                with db.session.begin_nested():
                    redemption.check_in(
                        voucher,
                        scan_digest=f"{kind}-{code}",
                        staff_user=staff[service.provider_id],
                        service_id=service.id,
                        latitude=ELDER_HOME[0],
                        longitude=ELDER_HOME[1],
                    )
                    raise _Undo()
            except _Undo:
                accepted = True
            except OutOfScope:
                accepted = False
            answers = {
                "badge": "Voucher accepted" in found[service.id],
                "description": names[code] in description,
                "scan page": service.id in on_scan_pages,
                "check-in": accepted,
            }
            if len(set(answers.values())) != 1:
                disagreements.append((kind, code, answers))
    assert disagreements == []
    # And the policy is not trivial: each kind pays for some categories and not for others.
    for kind in VOUCHER_KINDS:
        assert (
            0
            < len(
                db.session.scalars(sa.select(VoucherPolicy).where(VoucherPolicy.kind == kind))
                .first()
                .category_set
            )
            < len(services)
        )


class _Undo(Exception):
    """Rolls the savepoint of an accepted check-in back, so each category starts clean."""


def _accepted(voucher, service, staff_user, at) -> bool:
    """Check-in's answer: accepted (then undone), or refused as out of scope."""
    try:
        with db.session.begin_nested():
            redemption.check_in(
                voucher,
                scan_digest=f"{voucher.id}-{service.id}-{at.isoformat()}",
                staff_user=staff_user,
                service_id=service.id,
                latitude=ELDER_HOME[0],
                longitude=ELDER_HOME[1],
                now=at,
            )
            raise _Undo()
    except _Undo:
        return True
    except OutOfScope:
        return False


def _described(kind: str, day: date) -> set[str]:
    """The category names the kind's description on the elder's page lists for ``day``."""
    from vouchers.views_elder import kind_options

    text = next(o["pays_for"] for o in kind_options(day) if o["kind"] == kind)
    listed = re.search(r"[:：]\s*(.*?)[.。]$", text)
    return set(re.split(r"、|, ", listed.group(1))) if listed else set()


@settings(
    max_examples=8,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_for_any_policy_version_the_four_answers_agree(shop, data):
    """Whatever categories a new version gives each kind (drawn by hypothesis), on the day
    it starts the badge for the kind's elder, the kind's description, the scan page and
    check-in agree on every category."""
    s = shop
    day = s.today + timedelta(days=1)
    at = datetime.combine(day, time(4, 0), tzinfo=UTC)  # noon in Shanghai
    if not hasattr(s, "scope_world"):
        s.scope_world = _category_world(s, day)
    providers, staff, services, elders = s.scope_world
    codes = sorted(services)
    names = {
        c.code: c.display_name("zh_CN") for c in db.session.scalars(sa.select(ServiceCategory))
    }
    savepoint = db.session.begin_nested()
    drawn = {}
    try:
        for kind in VOUCHER_KINDS:
            scope = data.draw(
                st.sets(st.sampled_from(codes), min_size=1, max_size=len(codes) - 1), label=kind
            )
            drawn[kind] = frozenset(scope)
            current = policy_on(kind, s.today)
            add_version(
                kind,
                effective_from=day,
                monthly_cap_fen=current.monthly_cap_fen,
                ratio_bp=current.ratio_bp,
                in_scope_categories=sorted(scope),
                eligible_levels=sorted(current.level_set),
                evv_max_distance_m=current.evv_max_distance_m,
                reversal_window_days=current.reversal_window_days,
                note="试点调整",
                actor=s.approver,
                known_categories=set(codes),
            )
        db.session.flush()
        assert scope_on(day) == drawn  # the drawn versions, and only they, are in force
        for kind in VOUCHER_KINDS:
            _, voucher = elders[kind]
            found = search_services(
                lat=ELDER_HOME[0],
                lng=ELDER_HOME[1],
                radius_m=5000,
                voucher_kinds={kind},
                limit=200,
                today=day,
            )
            badged = {r.service.id for r in found if r.accepts_vouchers}
            described = _described(kind, day)
            on_scan_pages = {
                service.id
                for p in providers
                for service in redemption.services_paid_for(p, voucher, day)
            }
            for code, service in services.items():
                answers = {
                    "badge": service.id in badged,
                    "description": names[code] in described,
                    "scan page": service.id in on_scan_pages,
                    "check-in": _accepted(voucher, service, staff[service.provider_id], at),
                }
                assert len(set(answers.values())) == 1, (kind, code, answers)
    finally:
        savepoint.rollback()
        # The versions the example ended are read again (a savepoint's rollback leaves
        # what was flushed inside it in the session's objects).
        db.session.expire_all()
