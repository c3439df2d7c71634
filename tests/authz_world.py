"""The seeded world the authorisation matrix (tests/authz_matrix.py) is checked against.

One app on a database of its own, built once with the demo city (``eldercare.demo``) plus a
second district's officer; every route's ids point at real objects of the first provider
(the demo's ``provider.staff`` works there) and of the Heping district (``elder.wang``'s).
Each cell is one request inside a transaction rolled back afterwards, so cells cannot
change what later cells see.
"""

from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy.orm import sessionmaker

from eldercare import create_app
from eldercare.accounts import User
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.demo import DEMO_PASSWORD, build_demo, district_by_code, ensure_account
from eldercare.residents import Resident
from eldercare.tokens import SCOPES, issue_token
from tests.conftest import (
    ON_POSTGRES,
    TEST_CONFIG,
    FreshGlobalsClient,
    _TestSession,
    fresh_postgres_database,
)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Who asks: the demo's account for each role, and the three outsiders the issue names.
ACCOUNTS = {
    "anonymous": None,
    "elder": "elder.wang",
    "family": "family.zhang",
    "provider_admin": "provider.admin",
    "provider_staff": "provider.staff",
    "other_provider_admin": None,  # found below: an administrator of another provider
    "other_provider_staff": None,  # found below: a caregiver of another provider
    "assessor": None,  # found below: an assessor of the demo's agency
    "agency_admin": "agency.admin",
    "bureau_officer": "bureau.officer",  # city-wide
    "bureau_approver": "bureau.approver",  # city-wide
    "district_officer": "heping.officer",  # Heping, where the objects are
    "other_district_officer": "shenhe.officer",  # added here: Shenhe
    "auditor": "auditor",
    "admin": "admin",
}
# What each answer means in the matrix (tests/authz_matrix.py has the legend).
ALLOW, LOGIN, DENY, HIDDEN, INVALID, ERROR = "A", "L", "D", "H", "I", "E"


@dataclass
class Cell:
    outcome: str
    status: int
    audit_rows_added: int


@dataclass
class World:
    app: Flask
    ids: dict[str, object]
    connection: sa.Connection | None = None
    cookies: dict[str, str | None] = field(default_factory=dict)
    tokens: dict[str, str | None] = field(default_factory=dict)


def routes(app: Flask) -> list[tuple[str, str, str]]:
    """(method, rule, endpoint) for every operation of the app, HEAD and OPTIONS aside."""
    found = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found.add((method, rule.rule, rule.endpoint))
    return sorted(found, key=lambda r: (r[1], r[0]))


def route_key(method: str, rule: str) -> str:
    return f"{method} {rule}"


def is_api(rule: str) -> bool:
    return rule.startswith("/api/")


# --- building the world -----------------------------------------------------------------


def _first(statement):
    return db.session.scalar(statement.limit(1))


def _user_id(username):
    return db.session.scalar(sa.select(User.id).where(User.username == username))


def _find_ids() -> tuple[dict, dict]:
    """The objects the URLs point at, and the outsiders' account names."""
    from assessment.models import Agency, AgencyAdmin, Assessment, Assessor, Exclusion, FeeRefund
    from eldercare.account_links import AccountLinkRequest
    from eldercare.tokens import ApiToken
    from marketplace.models import (
        Booking,
        Complaint,
        ProviderDocument,
        ProviderStaff,
        Service,
    )
    from vouchers.integrity.models import RedemptionFlag
    from vouchers.models import ParkedEvent, Redemption, TokenUse, Voucher
    from vouchers.settlement.models import (
        BankBatch,
        PayeeChange,
        SettlementException,
        SettlementMonth,
        Statement,
    )

    staff_id = _user_id("provider.staff")
    provider = _first(sa.select(ProviderStaff.provider_id).where(ProviderStaff.user_id == staff_id))
    wang = db.session.scalar(sa.select(User).where(User.username == "elder.wang")).resident_id
    agency = _first(
        sa.select(AgencyAdmin.agency_id).where(AgencyAdmin.user_id == _user_id("agency.admin"))
    )
    other_admin = _first(
        sa.select(User.username)
        .join(ProviderStaff, ProviderStaff.user_id == User.id)
        .where(ProviderStaff.provider_id != provider, ProviderStaff.is_admin.is_(True))
        .order_by(ProviderStaff.id)
    )
    other_staff = _first(
        sa.select(User.username)
        .join(ProviderStaff, ProviderStaff.user_id == User.id)
        .where(ProviderStaff.provider_id != provider, ProviderStaff.is_admin.is_(False))
        .order_by(ProviderStaff.id)
    )
    assessor = _first(
        sa.select(User.username)
        .join(Assessor, Assessor.user_id == User.id)
        .where(Assessor.agency_id == agency)
        .order_by(Assessor.id)
    )
    redemption = _first(
        sa.select(Redemption.id).where(Redemption.provider_id == provider).order_by(Redemption.id)
    )
    by_id = {
        "provider_id": provider,
        "service_id": _first(sa.select(Service.id).where(Service.provider_id == provider)),
        "booking_id": _first(
            sa.select(Booking.id).where(
                Booking.provider_id == provider, Booking.resident_id == wang
            )
        )
        or _first(sa.select(Booking.id).where(Booking.provider_id == provider)),
        "complaint_id": _first(sa.select(Complaint.id).where(Complaint.provider_id == provider))
        or _first(sa.select(Complaint.id)),
        "document_id": _first(
            sa.select(ProviderDocument.id).where(ProviderDocument.provider_id == provider)
        ),
        "staff_id": _first(
            sa.select(ProviderStaff.id).where(
                ProviderStaff.provider_id == provider, ProviderStaff.user_id == staff_id
            )
        ),
        "resident_id": wang,
        "redemption_id": redemption,
        "voucher_id": _first(sa.select(Voucher.id).where(Voucher.resident_id == wang)),
        "use_id": _first(sa.select(TokenUse.id).order_by(TokenUse.id)),
        "scan_id": _first(sa.select(TokenUse.id).order_by(TokenUse.id)),
        "statement_id": _first(sa.select(Statement.id).where(Statement.provider_id == provider)),
        "batch_id": _first(sa.select(BankBatch.id)),
        "change_id": _first(sa.select(PayeeChange.id).where(PayeeChange.provider_id == provider))
        or _first(sa.select(PayeeChange.id)),
        "exception_id": _first(sa.select(SettlementException.id)),
        "case_id": _first(sa.select(Assessment.id).where(Assessment.resident_id == wang))
        or _first(sa.select(Assessment.id)),
        "assessment_id": _first(sa.select(Assessment.id).where(Assessment.resident_id == wang))
        or _first(sa.select(Assessment.id)),
        "refund_id": _first(sa.select(FeeRefund.id).where(FeeRefund.resident_id == wang))
        or _first(sa.select(FeeRefund.id)),
        "exclusion_id": _first(sa.select(Exclusion.id).where(Exclusion.resident_id == wang)),
        "agency_id": agency or _first(sa.select(Agency.id)),
        "assessor_id": _first(sa.select(Assessor.id).where(Assessor.agency_id == agency)),
        "request_id": _first(sa.select(AccountLinkRequest.id)),
        "token_id": _first(sa.select(ApiToken.id)),
        # The hand-raised flag on a Heping redemption (_add_what_the_demo_lacks): the demo's
        # review sample draws at random, so "the first flag" was now and then another
        # district's (its officers then saw 404 where the matrix expects 422).
        "flag_id": _first(
            sa.select(RedemptionFlag.id)
            .where(RedemptionFlag.rule == "bureau", RedemptionFlag.status == "open")
            .order_by(RedemptionFlag.id.desc())
        ),
        "parked_id": _first(sa.select(ParkedEvent.id)),
        "month_text": _first(sa.select(SettlementMonth.month).order_by(SettlementMonth.month)),
    }
    outsiders = {
        "other_provider_admin": other_admin,
        "other_provider_staff": other_staff,
        "assessor": assessor,
    }
    return by_id, outsiders


def _add_what_the_demo_lacks() -> None:
    """Objects the demo city has none of, so that their routes point at real rows of the
    first provider and of Heping: a complaint, a link request, a hand-raised flag on a
    redemption, a pending payee change, an exclusion, a document, a scanned QR code."""
    from datetime import date

    from assessment.eligibility import add_exclusion
    from eldercare.account_links import request_link
    from marketplace.complaints import file_complaint
    from marketplace.documents import store_document
    from marketplace.models import Provider, ProviderStaff
    from vouchers.integrity.flags import raise_flag
    from vouchers.integrity.models import RedemptionFlag
    from vouchers.models import Redemption, Voucher
    from vouchers.redemption.qr_tokens import consume_token, make_token
    from vouchers.settlement.bank.payees import request_change

    def user(name):
        return db.session.scalar(sa.select(User).where(User.username == name))

    wang = user("elder.wang")
    provider = db.session.get(
        Provider,
        _first(
            sa.select(ProviderStaff.provider_id).where(
                ProviderStaff.user_id == user("provider.staff").id
            )
        ),
    )
    file_complaint(provider, by=wang, text="送餐晚了一个小时")
    asker = ensure_account("link.asker", "李桂兰", ["elder"])
    other = _first(sa.select(Resident).where(Resident.id != wang.resident_id).order_by(Resident.id))
    request_link(asker, id_number=other.id_number, name=other.name, relationship="self")
    completed = _first(  # a Heping elder's, like every other object here
        sa.select(Redemption)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(
            Redemption.provider_id == provider.id,
            Redemption.status == "redeemed",
            Voucher.district_id == wang.resident.district_id,
            # Not one an anomaly rule holds already (the demo's seeded ones, the sample).
            ~sa.exists().where(
                RedemptionFlag.redemption_id == Redemption.id, RedemptionFlag.status == "open"
            ),
        )
        .order_by(Redemption.id.desc())
    )
    raise_flag(
        completed, rule="bureau", evidence={"reason": "核对签到"}, actor=user("bureau.officer")
    )
    request_change(
        provider,
        account_name=provider.name,
        bank_name="中国银行沈阳分行",
        account_number="6217000010001234567",
        actor=user("provider.admin"),
    )
    add_exclusion(wang.resident, "basic_upgrade_project", date(2020, 1, 1), source="matrix")
    store_document(
        provider,
        kind="other",
        filename="licence.pdf",
        data=b"%PDF-1.4\n% matrix\n",
        actor=user("provider.admin"),
    )
    voucher = _first(
        sa.select(Voucher)
        .where(Voucher.resident_id == wang.resident_id, Voucher.status == "active")
        .order_by(Voucher.id.desc())
    )
    consume_token(make_token(voucher.id), user=user("provider.staff"))


# Arguments that are not row ids, by (endpoint, argument) or by argument.
_FIXED = {
    ("static", "filename"): "css/app.css",
    ("assessment.static", "filename"): "assessment.css",
    ("marketplace.static", "filename"): "marketplace.css",
    ("vouchers.static", "filename"): "scan.js",
    ("prefs.switch_language", "code"): "en",
    ("vouchers_short.short", "code"): "NOSUCHCODE",
    ("settlement.bank_batch_file", "fmt"): "csv",
    ("vouchers.bureau_forecast_projection", "fmt"): "csv",
    ("vouchers.bureau_forecast_history", "fmt"): "xlsx",
    ("vouchers.bureau_report_table", "name"): "months",
    ("vouchers.bureau_report_table", "fmt"): "csv",
    ("vouchers.insight_download", "table"): "districts",
    ("vouchers.insight_download", "fmt"): "csv",
    ("vouchers_api.insight_table", "table"): "districts",
    "action": "issue",
    "fmt": "png",
    "token": "not-a-real-token",
}


def url_for_rule(rule: str, endpoint: str, ids: dict) -> str:
    def value(match):
        name = match.group(2)
        fixed = _FIXED.get((endpoint, name), _FIXED.get(name))
        if fixed is not None:
            return str(fixed)
        found = ids.get(name)
        if found is None:
            return "999999"  # no such object in the demo: every cell answers for a missing row
        return f"{found:%Y-%m}" if name == "month_text" else str(found)

    path = re.sub(r"<(?:([^:>(]+(?:\([^)]*\))?):)?([^>]+)>", value, rule)
    query = _QUERIES.get(endpoint)
    return f"{path}?{query.format(**ids)}" if query else path


# Bodies for API writes whose schema would refuse an empty body before anyone's role counts
# (most API writes read the body first, then check the caller): with these, the cells show
# the access decision itself. Ids come from the world's ``ids``.
_BODIES = {
    "marketplace_api.set_own_service_active": {"active": True},
    "marketplace_api.change_own_price": {"price_fen": 1234},
    "marketplace_api.set_own_delivery_place": {"delivery_place": "provider"},
    "marketplace_api.set_own_beds": {"beds_total": 10, "beds_free": 5},
    "account-links.refuse": {"reason": "材料不符"},
    "account-links.ask": {"id_number": "{id_number}", "name": "王秀英", "relationship": "child"},
    "assessment_api.schedule_assessment": {"scheduled_for": "2030-01-02T09:30:00+08:00"},
    "assessment_api.move_out": {"id_number": "{id_number}", "moved_out_on": "2030-01-01"},
    "assessment_api.check_eligibility": {"id_number": "{id_number}"},
    "vouchers_api.set_price": {"price_fen": 100},
    "vouchers_api.reverse": {"reason": "重复录入"},
}


def body_for(endpoint: str, ids: dict) -> dict:
    body = _BODIES.get(endpoint, {})
    return {k: v.format(**ids) if isinstance(v, str) else v for k, v in body.items()}


# Query strings without which a read is refused as incomplete before anyone's role counts.
_QUERIES = {
    "vouchers_api.bureau_vouchers_export": "month={month}",
    "vouchers_api.bureau_redemptions_export": "month={month}",
    "settlement_api.list_statements": "month={month}",
    "marketplace_api.search": "lat=41.7741&lng=123.4356",
}


@contextmanager
def seeded_world(tmp_path_factory):
    with ExitStack() as stack:
        if ON_POSTGRES:
            url = stack.enter_context(fresh_postgres_database("eldercare_authz"))
        else:
            url = "sqlite:///" + str(tmp_path_factory.mktemp("authz") / "authz.db")
        documents = tmp_path_factory.mktemp("authz_documents")
        app = create_app(
            TEST_CONFIG
            | {
                "SQLALCHEMY_DATABASE_URI": url,
                "WTF_CSRF_ENABLED": False,
                "DOCUMENT_STORE": str(documents),
            }
        )
        app.test_client_class = FreshGlobalsClient
        with app.app_context():
            upgrade()
            build_demo()
            ensure_account(
                "shenhe.officer",
                "沈河区民政局 科员",
                ["bureau_officer"],
                district=district_by_code("210103"),
            )
            _add_what_the_demo_lacks()
            db.session.commit()
            _ids, outsiders = _find_ids()
            names = ACCOUNTS | outsiders
            tokens = {}
            for who, username in names.items():
                if username is None:
                    tokens[who] = None
                    continue
                user = db.session.scalar(sa.select(User).where(User.username == username))
                tokens[who] = issue_token(user, "matrix", sorted(SCOPES))[1]
            db.session.commit()
            ids, _outsiders = _find_ids()  # now with the tokens' ids
            ids["month"] = f"{ids['month_text']:%Y-%m}"
            ids["id_number"] = db.session.get(Resident, ids["resident_id"]).id_number
            world = World(app, ids, tokens=tokens)
        for who, username in names.items():
            world.cookies[who] = _sign_in(app, username) if username else None
        with app.app_context():
            world.connection = db.engine.connect()
        try:
            yield world
        finally:
            world.connection.close()
            with app.app_context():
                db.engine.dispose()


def _sign_in(app, username) -> str:
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": DEMO_PASSWORD})
    assert response.status_code == 302, (username, response.status_code)
    return client.get_cookie("session").value


# --- asking -----------------------------------------------------------------------------


def classify(response) -> str:
    status = response.status_code
    if status == 401:
        return LOGIN
    if status in (301, 302, 303, 307, 308):
        location = response.headers.get("Location", "")
        return LOGIN if location.split("?")[0].endswith("/login") else ALLOW
    if status == 403:
        return DENY
    if status == 404:
        return HIDDEN
    if status in (400, 422):
        return INVALID
    if status >= 500:
        return ERROR
    return ALLOW


def ask(world: World, who: str, method: str, rule: str, endpoint: str) -> Cell:
    """One cell: the request, in a transaction rolled back afterwards."""
    app = world.app
    connection = world.connection
    outer = connection.begin()
    original = db.session
    db.session = _TestSession(
        sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    )
    count = sa.select(sa.func.count()).select_from(AuditLog)
    try:
        before = connection.scalar(count)
        client = app.test_client()
        headers = {"Accept-Language": "en"}
        kwargs = {}
        if is_api(rule):
            if world.tokens[who]:
                headers["Authorization"] = f"Bearer {world.tokens[who]}"
            if method not in SAFE_METHODS:
                kwargs["json"] = body_for(endpoint, world.ids)
        else:
            if world.cookies[who]:
                client.set_cookie("session", world.cookies[who])
            if method not in SAFE_METHODS:
                kwargs["data"] = {}
        url = url_for_rule(rule, endpoint, world.ids)
        response = client.open(url, method=method, headers=headers, **kwargs)
        response.close()  # a static file's answer holds the file open until closed
        db.session.registry().close()
        after = connection.scalar(count)
        return Cell(classify(response), response.status_code, after - before)
    finally:
        db.session.registry().close()
        db.session = original
        outer.rollback()
