import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eldercare import audit
from eldercare.audit import GENESIS_HASH, AuditLog, verify_chain
from eldercare.db import db


def _dialect(session):
    return session.get_bind().dialect.name


def _allow_tampering(session):
    """Do what an intruder with database rights would: switch the guard off.

    Runs inside the test's transaction, so the triggers are back after the rollback.
    """
    if _dialect(session) == "postgresql":
        session.execute(sa.text("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_no_change"))
    else:
        session.execute(sa.text("DROP TRIGGER audit_logs_no_update"))
        session.execute(sa.text("DROP TRIGGER audit_logs_no_delete"))


def _trail(session, count):
    return [
        audit.record("test.event", object_type="thing", object_id=i, after={"n": i, "名": "值"})
        for i in range(count)
    ]


def test_rows_chain_from_the_tail(db_session):
    first, second = _trail(db_session, 2)
    assert second.prev_hash == first.row_hash
    assert len(second.row_hash) == 64
    report = verify_chain()
    assert report.ok and report.rows_checked >= 2


def test_the_database_refuses_to_edit_or_delete_audit_rows(db_session):
    (row,) = _trail(db_session, 1)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), db_session.begin_nested():
        db_session.execute(sa.update(AuditLog).where(AuditLog.id == row.id).values(action="forged"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), db_session.begin_nested():
        db_session.execute(sa.delete(AuditLog).where(AuditLog.id == row.id))


def test_an_edited_row_is_named_by_verify(db_session, app):
    rows = _trail(db_session, 4)
    _allow_tampering(db_session)
    db_session.execute(
        sa.update(AuditLog).where(AuditLog.id == rows[2].id).values(after_json='{"n":99}')
    )
    db_session.expire_all()
    report = verify_chain()
    assert not report.ok
    assert report.broken_row_id == rows[2].id
    assert report.problem == "content"

    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert f"BROKEN at row {rows[2].id}" in result.output


def test_a_deleted_row_breaks_the_link_of_the_next(db_session):
    rows = _trail(db_session, 3)
    _allow_tampering(db_session)
    db_session.execute(sa.delete(AuditLog).where(AuditLog.id == rows[1].id))
    report = verify_chain()
    assert (report.ok, report.broken_row_id, report.problem) == (False, rows[2].id, "link")


def test_cli_verify_passes_on_an_intact_chain(db_session, app):
    _trail(db_session, 2)
    result = app.test_cli_runner().invoke(args=["audit", "verify", "--json"])
    assert result.exit_code == 0
    assert '"ok": true' in result.output


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payloads=st.lists(
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8), max_size=3),
        min_size=1,
        max_size=6,
    ),
    victim=st.integers(min_value=0),
)
def test_any_edit_of_any_row_is_detected(db_session, payloads, victim):
    nested = db_session.begin_nested()  # each example starts from the same trail
    try:
        rows = [
            audit.record("prop.event", object_type="p", object_id=i, after=p)
            for i, p in enumerate(payloads)
        ]
        assert verify_chain().ok
        target = rows[victim % len(rows)]
        _allow_tampering(db_session)
        db_session.execute(
            sa.update(AuditLog).where(AuditLog.id == target.id).values(actor_label="mallory")
        )
        report = verify_chain()
        assert not report.ok and report.broken_row_id == target.id
    finally:
        nested.rollback()


def test_genesis_row_points_at_zero_hash(db_session):
    first = db_session.scalar(sa.select(AuditLog).order_by(AuditLog.id).limit(1))
    if first is None:
        first = _trail(db_session, 1)[0]
    assert first.prev_hash == GENESIS_HASH


@pytest.mark.postgres
def test_concurrent_appends_never_fork_the_chain(app):
    """Eight threads append at once, each in its own committed transaction."""
    from concurrent.futures import ThreadPoolExecutor

    def append(i):
        with app.app_context():
            audit.record("concurrency.event", object_type="thread", object_id=i)
            db.session.commit()
            db.session.remove()

    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(append, range(40)))
    with app.app_context():
        after = db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
        report = verify_chain()
        db.session.remove()
    assert after - before == 40
    assert report.ok
