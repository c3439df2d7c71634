"""Every cell of the authorisation matrix (tests/authz_matrix.py), asked of the app.

One app and one seeded database for the module (tests/authz_world.py); each request runs in
a transaction rolled back afterwards. A refused write must also leave no audit row behind.
"""

from __future__ import annotations

import pytest

from tests.authz_matrix import CALLERS, MATRIX
from tests.authz_world import ALLOW, INVALID, ask, route_key, routes, seeded_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with seeded_world(tmp_path_factory) as built:
        yield built


def _operations():
    """The operations of an app built here, to parametrize by (no database needed)."""
    from eldercare import create_app
    from tests.conftest import TEST_CONFIG

    app = create_app(TEST_CONFIG | {"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    return routes(app)


OPERATIONS = _operations()


def test_every_route_is_in_the_matrix_and_every_row_is_a_route():
    actual = {route_key(method, rule) for method, rule, _endpoint in OPERATIONS}
    assert sorted(actual - set(MATRIX)) == [], "routes missing from tests/authz_matrix.py"
    assert sorted(set(MATRIX) - actual) == [], "rows for routes that no longer exist"


def test_every_row_has_a_known_letter_for_every_caller():
    for key, row in MATRIX.items():
        letters = row.split()
        assert len(letters) == len(CALLERS), key
        assert set(letters) <= set("AILDH"), key


def test_the_matrix_size():
    # The README states this figure; it changes with the route table.
    assert len(MATRIX) * len(CALLERS) == len(OPERATIONS) * len(CALLERS) >= 3900


@pytest.mark.parametrize(
    "method, rule, endpoint",
    OPERATIONS,
    ids=[route_key(method, rule) for method, rule, _ in OPERATIONS],
)
def test_row(world, method, rule, endpoint):
    expected = MATRIX.get(route_key(method, rule), "").split()
    if not expected:
        pytest.fail(f"{route_key(method, rule)} is not in tests/authz_matrix.py")
    cells = {who: ask(world, who, method, rule, endpoint) for who in CALLERS}
    got = [cells[who].outcome for who in CALLERS]
    wrong = {
        who: f"expected {want}, got {cell.outcome} ({cell.status})"
        for (who, cell), want in zip(cells.items(), expected, strict=True)
        if cell.outcome != want
    }
    assert wrong == {}, " ".join(got)
    if method != "GET":
        # A refused write changes nothing: no audit row is left behind.
        wrote = {
            who: cell.audit_rows_added
            for who, cell in cells.items()
            if cell.outcome not in (ALLOW, INVALID) and cell.audit_rows_added
        }
        assert wrote == {}
