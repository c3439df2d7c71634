"""Schemathesis over the whole API: every operation, as every role, against the app in-process.

The published document (/api/v1/openapi.json) is the contract generated clients are built
from. For every operation Schemathesis generates requests that the document says are valid
and sends them, with a bearer token of each role in turn, to the app through WSGI; every
answer must:

- not be a server error (no 5xx, whatever the input);
- match the response schema the document gives for its status (and the status must be one
  the document lists);
- not refuse the valid request as invalid: 400, 405, 406, 413, 415 and 422 count as
  "refused". 401, 403, 404, 409 (and 402 declined card, 429 throttled) do not: whether a
  role may act, whether a record with a generated id or code exists and whether its state
  allows the move depend on the data, not on the request's shape, and the document lists
  them for each operation where they can happen. The only 422s allowed are the few rules a
  JSON Schema cannot state (the clock, one field against another), listed below in
  BEYOND_JSON_SCHEMA, each described in its operation's text.

Generated text never holds a NUL character: the API refuses NUL in any text (one hook,
eldercare.errors; item 9 of issue 13), which no field's schema repeats.

The demo city is loaded first (in the test's rolled-back transaction), so that the ids
drawn for path parameters often name real rows (ids 1..40, of every kind), and every role
has a demo account to act as, with a token of every scope. Each operation has its own fixed
Hypothesis seed and no example database: a CI run generates the same cases every time.
Each operation gets one case as each of the 10 roles, then EXAMPLES_AS_ADMITTED more as the
roles that were not refused with 403: 1,440 cases a run, printed with their answers by status
(measured on the 2-core machine under other load: about 35 s on SQLite, 140 s on PostgreSQL).
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from datetime import date

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from eldercare.accounts import ROLES, User, UserRole
from eldercare.db import db
from eldercare.residents import compose_resident_id
from eldercare.tokens import SCOPES, issue_token

OPENAPI = "/api/v1/openapi.json"
EXAMPLES_AS_ADMITTED = 8  # per operation, after one case as each of the 10 roles
# Statuses that say "your request is malformed": a request valid by the document must not get one.
REFUSED = {400, 405, 406, 413, 415, 422}
ACCEPTED = ["2XX", "3XX", *(str(s) for s in range(401, 500) if s not in REFUSED)]
# Path ids: mostly ones the demo city has; the range of every id column.
DEMO_IDS = st.integers(min_value=1, max_value=40)
ANY_ID = st.integers(min_value=-(2**31), max_value=2**31 - 1)

# Rules a JSON Schema cannot state, each named in its operation's description and answered
# with a documented 422 naming the field (or with its own error code): a 422 whose details
# name only these is not a refusal of a valid request. Everything else the document states.
BEYOND_JSON_SCHEMA = {
    # the clock: a visit today or later; a month is settled after its cut-off
    "POST /api/v1/assessments/{assessment_id}/schedule": {"scheduled_for"},
    "POST /api/v1/settlement/runs": {"month"},
    # stored data named by a field: the agency's assessors' certificates, the categories
    # a kind of provider may offer, the districts the provider serves, the platform's codes
    "POST /api/v1/assessments/{assessment_id}/result": {
        "recorder_certificate",
        "cosigner_certificate",
    },
    "POST /api/v1/provider/services": {"category_code", "districts"},
    "POST /api/v1/scans": {"code:qr_code_invalid"},
    # a file's content: the bank's result file, refused whole with the reason
    "POST /api/v1/settlement/batches/{batch_id}/results": {"file"},
    # the clock: a slot in the future and at most MAX_DAYS_AHEAD ahead
    "POST /api/v1/bookings": {"slot", "slot_start", "slot_end"},
    # the clock: a policy version starts tomorrow at the earliest
    "POST /api/v1/eligibility-policies": {"effective_from"},
    # across fields: a reason is needed to return, not to approve
    "POST /api/v1/assessment-reviews": {"reason"},
    # across fields: free beds at most the beds
    "PUT /api/v1/provider/beds": {"beds_free"},
    # across the caller's role and a field: "self" only for an elder's account, any other
    # relationship only for a family agent's
    "POST /api/v1/account-links": {"relationship"},
}

# Resident ID numbers valid to the last check character: the document names their shape
# "resident-id", which Schemathesis learns here (the pattern alone would give a wrong check
# character ten times in eleven).
schemathesis.openapi.format(
    "resident-id",
    st.builds(
        compose_resident_id,
        st.sampled_from(["210102", "210103", "210104", "110105"]),
        st.dates(date(1920, 1, 1), date(2000, 12, 31)),
        st.integers(0, 999),
    ),
)

# One demo account of each role (eldercare.demo.DEMO_ACCOUNTS).
DEMO_USER_OF_ROLE = {
    "elder": "elder.wang",
    "family_agent": "family.zhang",
    "provider_admin": "provider.admin",
    "provider_staff": "provider.staff",
    "assessor": None,  # found by role below: the assessment demo adds the assessors
    "agency_admin": "agency.admin",
    "bureau_officer": "bureau.officer",
    "bureau_approver": "bureau.approver",
    "auditor": "auditor",
    "admin": "admin",
}


@pytest.fixture
def tokens(app, db_session):
    """A token with every scope for a demo account of each role: {role: secret}."""
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    secrets = {}
    with app.app_context():
        for role in ROLES:
            username = DEMO_USER_OF_ROLE.get(role)
            query = db.select(User).join(UserRole).where(UserRole.role == role).order_by(User.id)
            if username:
                query = query.where(User.username == username)
            user = db.session.scalars(query).first()
            assert user is not None, role
            _token, secret = issue_token(user, f"schemathesis {role}", sorted(SCOPES))
            secrets[role] = secret
        db.session.commit()
    return secrets


def _config():
    return schemathesis.Config.from_dict(
        {
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
            # Text with a NUL character is refused everywhere (eldercare.errors, one hook),
            # as the document's description says: no field repeats it as a pattern.
            "generation": {"allow-x00": False},
        }
    )


def _path_ids(operation):
    return [p.name for p in operation.iter_parameters() if p.location.value == "path"]


def _beyond_json_schema(label: str, response) -> bool:
    """A documented 422 for a rule the document can only describe (BEYOND_JSON_SCHEMA)."""
    if response.status_code != 422 or label not in BEYOND_JSON_SCHEMA:
        return False
    try:
        error = json.loads(response.text)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    named = set(error["details"]) or {f"code:{error['code']}"}
    return named <= BEYOND_JSON_SCHEMA[label]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    positive_data_acceptance,
]


def _exercise(
    operation, roles: list[str], examples: int, tokens: dict, failures: dict, counter: Counter
) -> set[str]:
    """Send ``examples`` generated requests to ``operation``, each as one of ``roles``; what the
    checks find goes into ``failures`` (all are reported, none stops the run), ``counter``
    counts the cases by role and by answer status. Returns the roles not refused with 403."""
    ids = _path_ids(operation)
    admitted: set[str] = set()

    # Each operation and set of roles its own, fixed stream.
    @seed(zlib.crc32(f"{operation.label} {roles}".encode()))
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data):
        role = data.draw(st.sampled_from(roles), label="role")
        fixed = {name: data.draw(st.one_of(DEMO_IDS, ANY_ID), label=name) for name in ids}
        case = data.draw(operation.as_strategy(path_parameters=fixed or None))
        counter[role] += 1
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        response = case.call(headers=headers)
        counter[response.status_code] += 1
        if response.status_code != 403:
            admitted.add(role)
        checks = CHECKS
        if _beyond_json_schema(operation.label, response):
            checks = [c for c in CHECKS if c is not positive_data_acceptance]
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as error:  # collected, reported together below
            found = getattr(error, "exceptions", [error])
            titles = ", ".join(sorted({getattr(f, "title", type(f).__name__) for f in found}))
            failures.setdefault(operation.label, []).append(
                f"[{role}] {titles}: {case.path_parameters or ''} {case.query or ''} "
                f"{str(case.body)[:200] if case.body is not None else ''} -> "
                f"{response.status_code} {response.text[:300]}"
            )

    run()
    return admitted


def test_every_operation_as_every_role_keeps_to_the_document(app, db_session, tokens):
    schema = schemathesis.openapi.from_wsgi(OPENAPI, app, config=_config())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 80
    by_label = {operation.label: operation for operation in operations}
    for label in BEYOND_JSON_SCHEMA:  # the rules the document only describes: it lists the 422
        assert "422" in by_label[label].definition.raw["responses"], label
    failures: dict[str, list[str]] = {}
    counter: Counter = Counter()
    roles = sorted(tokens)
    for operation in operations:
        # Every operation as every role, once; then more cases as the roles it admits, so that
        # most cases reach the code behind the role check.
        admitted = set()
        for role in roles:
            admitted |= _exercise(operation, [role], 1, tokens, failures, counter)
        if admitted:
            examples = EXAMPLES_AS_ADMITTED
            _exercise(operation, sorted(admitted), examples, tokens, failures, counter)
    report = "\n".join(
        f"{label}: {len(msgs)}x\n  " + "\n  ".join(sorted(set(msgs))[:3])
        for label, msgs in failures.items()
    )
    by_role = {k: v for k, v in counter.items() if isinstance(k, str)}
    by_status = dict(sorted((k, v) for k, v in counter.items() if isinstance(k, int)))
    total = sum(by_role.values())
    print(f"schemathesis: {total} cases, {len(operations)} operations; {by_role}; {by_status}")
    assert not failures, report
    assert total >= 1_000 and set(by_role) == set(ROLES)
