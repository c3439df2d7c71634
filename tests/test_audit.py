import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from eldercare import audit
from eldercare.audit import (
    GENESIS_HASH,
    AuditLog,
    compute_legacy_hash,
    compute_row_hash,
    seal,
    verify_chain,
)
from eldercare.db import db
from eldercare.timeutil import now_utc


def _dialect(session):
    return session.get_bind().dialect.name


def _allow_tampering(session):
    """Do what an intruder with database rights would: switch the guard off.

    Runs inside the test's transaction, so the triggers are back after the rollback.
    """
    if _dialect(session) == "postgresql":
        for trigger in ("audit_logs_no_change", "audit_logs_no_delete"):
            session.execute(sa.text(f"ALTER TABLE audit_logs DISABLE TRIGGER {trigger}"))
    else:
        session.execute(sa.text("DROP TRIGGER IF EXISTS audit_logs_no_update"))
        session.execute(sa.text("DROP TRIGGER IF EXISTS audit_logs_no_delete"))


def _trail(session, count, *, sealed=True):
    rows = [
        audit.record("test.event", object_type="thing", object_id=i, after={"n": i, "名": "值"})
        for i in range(count)
    ]
    if sealed:
        seal()
        for row in rows:
            session.refresh(row)
    return rows


def _unsealed(session):
    return session.scalar(
        sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.seal_seq.is_(None))
    )


def test_rows_are_appended_unsealed_and_chained_in_order_by_the_sealer(db_session):
    first, second = _trail(db_session, 2, sealed=False)
    assert (first.seal_seq, first.prev_hash, first.row_hash) == (None, None, None)
    assert verify_chain().unsealed >= 2

    report = seal(batch_size=1)  # one row per batch: the tail is read again each time
    db_session.refresh(first)
    db_session.refresh(second)
    assert report.sealed >= 2 and report.batches == report.sealed
    assert second.seal_seq == first.seal_seq + 1 == report.last_seq
    assert second.prev_hash == first.row_hash and len(second.row_hash) == 64
    assert second.row_hash == compute_row_hash(second)
    assert _unsealed(db_session) == 0
    report = verify_chain()
    assert report.ok and report.rows_checked == second.seal_seq and report.unsealed == 0
    assert seal().sealed == 0  # nothing left: a rerun changes nothing


def test_the_hash_covers_the_rows_id_and_place_in_the_chain(db_session):
    (row,) = _trail(db_session, 1)
    variants = {
        compute_row_hash(row),
        compute_row_hash(row, seal_seq=row.seal_seq + 1),
        compute_row_hash(row, prev_hash="1" * 64),
    }
    row.id += 1000  # in memory only: the same content under another id
    variants.add(compute_row_hash(row))
    db_session.expire(row)
    assert len(variants) == 4


def test_the_database_refuses_to_edit_or_delete_audit_rows(db_session):
    sealed = _trail(db_session, 1)[0]
    unsealed = audit.record("b", object_type="t", object_id=2)
    refused = pytest.raises(sa.exc.DatabaseError, match="append-only")
    for row in (unsealed, sealed):
        with refused, db_session.begin_nested():
            db_session.execute(
                sa.update(AuditLog).where(AuditLog.id == row.id).values(action="forged")
            )
        with refused, db_session.begin_nested():
            db_session.execute(sa.delete(AuditLog).where(AuditLog.id == row.id))
    # Sealing and editing at once, sealing again, or half a seal is not a seal.
    with refused, db_session.begin_nested():
        db_session.execute(
            sa.update(AuditLog)
            .where(AuditLog.id == unsealed.id)
            .values(seal_seq=10**9, prev_hash="a" * 64, row_hash="b" * 64, after_json='{"x":1}')
        )
    with refused, db_session.begin_nested():
        db_session.execute(
            sa.update(AuditLog).where(AuditLog.id == sealed.id).values(row_hash="c" * 64)
        )
    with refused, db_session.begin_nested():
        db_session.execute(
            sa.update(AuditLog).where(AuditLog.id == unsealed.id).values(seal_seq=10**9)
        )


def test_the_triggers_guard_every_column_but_the_seal():
    """A column added to audit_logs must be added to the triggers' list in migration 0014,
    or a seal could change it unseen."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "migrations" / "versions" / "0014_audit_sealing.py"
    spec = importlib.util.spec_from_file_location("migration_0014", path)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    columns = {c.name for c in AuditLog.__table__.columns}
    assert set(migration.CONTENT) == columns - set(migration.SEAL)


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


def test_renumbering_sealed_rows_is_detected(db_session):
    rows = _trail(db_session, 3)
    _allow_tampering(db_session)
    # Two rows swap places in the chain, hashes untouched.
    (a, a_seq), (b, b_seq) = ((r.id, r.seal_seq) for r in rows[:2])
    for row_id, seq in ((a, -1), (b, a_seq), (a, b_seq)):
        db_session.execute(sa.update(AuditLog).where(AuditLog.id == row_id).values(seal_seq=seq))
    report = verify_chain()
    assert (report.ok, report.broken_row_id, report.problem) == (False, b, "link")


def test_a_deleted_row_breaks_the_link_of_the_next(db_session):
    rows = _trail(db_session, 3)
    _allow_tampering(db_session)
    db_session.execute(sa.delete(AuditLog).where(AuditLog.id == rows[1].id))
    report = verify_chain()
    assert (report.ok, report.broken_row_id, report.problem) == (False, rows[2].id, "link")


def test_cli_verify_seals_first_and_passes_on_an_intact_chain(db_session, app):
    _trail(db_session, 2, sealed=False)
    result = app.test_cli_runner().invoke(args=["audit", "verify", "--no-seal", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["unsealed"] >= 2

    result = app.test_cli_runner().invoke(args=["audit", "verify", "--json"])
    assert result.exit_code == 0
    summary = json.loads(result.output)
    assert summary["ok"] is True and summary["unsealed"] == 0
    assert _unsealed(db_session) == 0


def test_cli_seal_reports_what_it_sealed(db_session, app):
    _trail(db_session, 3, sealed=False)
    result = app.test_cli_runner().invoke(args=["audit", "seal", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["sealed"] >= 3 and summary["unsealed"] == 0
    assert summary["oldest_unsealed_age_s"] is None
    again = app.test_cli_runner().invoke(args=["audit", "seal"])
    assert "sealed 0 rows" in again.output and "no rows wait" in again.output


def test_the_seal_job_is_registered_and_recorded(db_session, app):
    from eldercare.job_runs import JobRun
    from eldercare.scheduler import all_jobs, execute

    job = all_jobs(app)["audit-seal"]
    assert (job.trigger, job.trigger_args) == ("interval", {"minutes": 1})
    audit.record("late", object_type="t", object_id=1)
    with app.app_context():
        ok, result = execute(job)
    assert ok and result["sealed"] >= 1 and result["unsealed"] == 0
    run = db_session.scalar(
        sa.select(JobRun).where(JobRun.job_id == "audit-seal").order_by(JobRun.id.desc())
    )
    assert run.status == "ok" and run.result["sealed"] == result["sealed"]


def test_verify_reports_the_unsealed_rows_and_the_oldest_ones_age(db_session):
    seal()
    row = audit.record("late", object_type="t", object_id=1)
    db_session.execute(  # appended ten minutes ago
        sa.insert(AuditLog).values(
            occurred_at=now_utc() - timedelta(minutes=10),
            actor_label="cli",
            action="older",
            object_type="t",
            object_id="2",
        )
    )
    report = verify_chain()
    assert report.ok and report.unsealed == 2
    assert 599 <= report.oldest_unsealed_age_s < 900
    assert row.seal_seq is None


def test_the_auditors_page_shows_the_unsealed_count(db_session, client, factory, login):
    login(factory.user("auditor.seal", roles=("auditor",)))  # signing in is audited too
    seal()
    audit.record("late", object_type="t", object_id=1)
    audit.record("late", object_type="t", object_id=2)
    page = client.get("/audit/verify", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert 'data-unsealed="2"' in page and "2 entries are not yet sealed" in page
    seal()
    page = client.get("/audit/verify", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert 'data-unsealed="0"' in page and "所有记录均已封存入链" in page


def test_bulk_appends_chain_like_single_ones(db_session):
    seal()
    before = db_session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    appended = audit.record_many(
        [
            {"action": "bulk.one", "object_type": "t", "object_id": 1, "after": {"名": "值"}},
            {"action": "bulk.two", "object_type": "t", "object_id": 2, "district_id": None},
        ]
    )
    assert appended == 2 and audit.record_many([]) == 0
    source = sa.select(
        sa.literal(now_utc(), AuditLog.occurred_at.type).label("occurred_at"),
        sa.null().label("actor_user_id"),
        sa.literal("system").label("actor_label"),
        sa.literal("bulk.copy").label("action"),
        AuditLog.object_type,
        AuditLog.object_id,
        sa.null().label("district_id"),
        AuditLog.after_json.label("before_json"),
        sa.null().label("after_json"),
    ).where(AuditLog.action.in_(("bulk.one", "bulk.two")))
    assert audit.insert_from_select(source) == 2
    copies = db_session.scalars(
        sa.select(AuditLog).where(AuditLog.action == "bulk.copy").order_by(AuditLog.object_id)
    ).all()
    assert [c.before for c in copies] == [{"名": "值"}, None]
    assert all(c.actor_label == "system" and c.seal_seq is None for c in copies)
    assert _unsealed(db_session) == 4
    assert seal().sealed == 4
    report = verify_chain()
    assert report.ok and report.rows_checked == before + 4


def test_rows_chained_before_the_sealer_keep_their_hashes_in_the_chains_prefix(db_session):
    """Rows hashed in the old form (before migration 0014) verify as they are, but only
    before the first row sealed in the new form: an old-form row after it is an edit."""
    seal()
    _allow_tampering(db_session)
    db_session.execute(sa.delete(AuditLog))  # an empty trail, then the 0013 era's rows
    prev = GENESIS_HASH
    for i in range(3):
        row = AuditLog(
            occurred_at=now_utc(),
            actor_label="cli",
            action="old.event",
            object_type="t",
            object_id=str(i),
            after_json='{"i":1}',
            prev_hash=prev,
            seal_seq=i + 1,
        )
        row.row_hash = compute_legacy_hash(row)
        db_session.add(row)
        db_session.flush()
        prev = row.row_hash
    report = verify_chain()
    assert report.ok and report.rows_checked == 3
    audit.record("new.event", object_type="t", object_id=9)
    seal()
    report = verify_chain()
    assert report.ok and report.rows_checked == 4
    # An old-form row after the new-form one: refused.
    late = AuditLog(
        occurred_at=now_utc(),
        actor_label="cli",
        action="old.event",
        object_type="t",
        object_id="late",
        prev_hash=db_session.scalar(sa.select(AuditLog.row_hash).where(AuditLog.seal_seq == 4)),
        seal_seq=5,
    )
    late.row_hash = compute_legacy_hash(late)
    db_session.add(late)
    db_session.flush()
    report = verify_chain()
    assert (report.ok, report.broken_row_id, report.problem) == (False, late.id, "content")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payloads=st.lists(
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8), max_size=3),
        min_size=1,
        max_size=6,
    ),
    victim=st.integers(min_value=0),
    column=st.sampled_from(["actor_label", "object_id", "after_json", "occurred_at"]),
)
def test_any_edit_of_any_sealed_row_is_detected(db_session, payloads, victim, column):
    # Each example adds to the same trail (sealing commits: no savepoint to roll back to),
    # and puts the edited value back at the end.
    rows = [
        audit.record("prop.event", object_type="p", object_id=i, after=p)
        for i, p in enumerate(payloads)
    ]
    seal()
    assert verify_chain().ok
    target = rows[victim % len(rows)]
    original = db_session.scalar(
        sa.select(AuditLog.__table__.c[column]).where(AuditLog.id == target.id)
    )
    forged = {
        "actor_label": "mallory",
        "object_id": "forged",
        "after_json": '{"forged":1}',
        "occurred_at": now_utc() - timedelta(days=400),
    }[column]
    _allow_tampering(db_session)
    try:
        db_session.execute(
            sa.update(AuditLog).where(AuditLog.id == target.id).values({column: forged})
        )
        report = verify_chain()
        assert not report.ok and report.broken_row_id == target.id
    finally:
        db_session.execute(
            sa.update(AuditLog).where(AuditLog.id == target.id).values({column: original})
        )
    assert verify_chain().ok


def test_genesis_row_points_at_zero_hash(db_session):
    seal()
    first = db_session.scalar(sa.select(AuditLog).where(AuditLog.seal_seq == 1))
    if first is None:
        first = _trail(db_session, 1)[0]
    assert first.prev_hash == GENESIS_HASH


# --------------------------------------------------------------------------- PostgreSQL


@contextmanager
def _as_session(session: Session):
    """Run audit's functions in ``session`` (they use ``db.session``), as another request
    would: a connection and transaction of its own."""
    original = db.session
    db.session = session
    try:
        yield session
    finally:
        db.session = original


def _count(where=None):
    statement = sa.select(sa.func.count()).select_from(AuditLog)
    if where is not None:
        statement = statement.where(where)
    return db.session.scalar(statement)


def _assert_every_row_sealed_once():
    total = _count()
    sealed = db.session.execute(
        sa.select(
            sa.func.count(AuditLog.seal_seq.distinct()),
            sa.func.min(AuditLog.seal_seq),
            sa.func.max(AuditLog.seal_seq),
        )
    ).one()
    assert tuple(sealed) == ((total, 1, total) if total else (0, None, None))
    report = verify_chain()
    assert report.ok and report.rows_checked == total and report.unsealed == 0, report


@pytest.mark.postgres
def test_an_append_does_not_wait_for_another_transaction_that_appended(private_app):
    """A appends and keeps its transaction open; B appends and commits at once. Before the
    sealer, B queued on the chain's lock until A ended (here: lock_timeout)."""
    with private_app.app_context():
        engine = db.engine
        with Session(engine) as a, Session(engine) as b:
            with _as_session(a):
                audit.record("a.open", object_type="t", object_id="a")
            with _as_session(b):
                b.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
                b.execute(sa.text("SET LOCAL statement_timeout = '5s'"))
                audit.record("b.commits", object_type="t", object_id="b")
                b.commit()
            a.commit()
        seal()
        _assert_every_row_sealed_once()
        db.session.remove()


@pytest.mark.postgres
def test_concurrent_appends_are_each_sealed_exactly_once(private_app):
    """Eight threads append at once, each in its own committed transaction."""

    def append(i):
        with private_app.app_context():
            audit.record("concurrency.event", object_type="thread", object_id=i)
            db.session.commit()
            db.session.remove()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(append, range(80)))
    with private_app.app_context():
        assert _count() == 80 == _count(AuditLog.seal_seq.is_(None))
        assert seal(batch_size=7).sealed == 80
        _assert_every_row_sealed_once()
        db.session.remove()


@pytest.mark.postgres
def test_a_row_committed_after_later_rows_were_sealed_is_sealed_by_the_next_run(private_app):
    with private_app.app_context():
        engine = db.engine
        with Session(engine) as slow:
            with _as_session(slow):
                late = audit.record("slow.request", object_type="t", object_id="late").id
            audit.record("fast.request", object_type="t", object_id="fast")
            db.session.commit()
            assert seal().sealed == 1  # the slow row is not committed: not seen
            fast = db.session.scalar(sa.select(AuditLog).where(AuditLog.object_id == "fast"))
            assert fast.id > late and fast.seal_seq == 1
            slow.commit()
        assert seal().sealed == 1
        row = db.session.get(AuditLog, late)
        db.session.refresh(row)
        assert row.seal_seq == 2 and row.prev_hash == fast.row_hash
        _assert_every_row_sealed_once()
        db.session.remove()


@pytest.mark.postgres
def test_two_sealers_at_once_make_one_chain(private_app):
    with private_app.app_context():
        audit.record_many(
            [{"action": "many", "object_type": "t", "object_id": i} for i in range(3000)]
        )
        db.session.commit()
        db.session.remove()
    start = threading.Barrier(2)

    def sealer():
        with private_app.app_context():
            start.wait()
            try:
                return seal(batch_size=100).sealed
            finally:
                db.session.remove()

    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda _: sealer(), range(2)))
    assert sum(counts) == 3000
    with private_app.app_context():
        _assert_every_row_sealed_once()
        db.session.remove()


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 2)),
        st.tuples(st.just("commit"), st.integers(0, 2)),
        st.tuples(st.just("rollback"), st.integers(0, 2)),
        st.tuples(st.just("seal"), st.integers(1, 3)),
    ),
    max_size=25,
)


@pytest.mark.postgres
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_STEPS)
def test_any_interleaving_of_appends_commits_and_seals_gives_one_whole_chain(private_app, steps):
    """Three requests append and commit or roll back in any order while a sealer runs in
    between: every row committed before a seal began is sealed by it, exactly once, and the
    chain verifies; rolled-back rows leave no trace."""
    with private_app.app_context():
        engine = db.engine
        sessions = [Session(engine) for _ in range(3)]
        committed: set[int] = set()
        rolled_back: set[int] = set()
        pending: list[list[int]] = [[], [], []]
        try:
            for step, n in steps:
                if step == "append":
                    with _as_session(sessions[n]):
                        pending[n].append(audit.record("p", object_type="t", object_id=n).id)
                elif step == "commit":
                    sessions[n].commit()
                    committed.update(pending[n])
                    pending[n] = []
                elif step == "rollback":
                    sessions[n].rollback()
                    rolled_back.update(pending[n])
                    pending[n] = []
                else:
                    seal(batch_size=n)
                    unsealed = set(
                        db.session.scalars(
                            sa.select(AuditLog.id).where(AuditLog.seal_seq.is_(None))
                        )
                    )
                    assert not unsealed & committed  # committed before the run: sealed
                    assert verify_chain().ok
            for n, session in enumerate(sessions):
                session.commit()
                committed.update(pending[n])
        finally:
            for session in sessions:
                session.close()
        seal()
        ids = set(db.session.scalars(sa.select(AuditLog.id)))
        assert committed <= ids and not rolled_back & ids
        _assert_every_row_sealed_once()
        db.session.remove()


def test_the_audit_trail_pages_through_more_than_a_page(db_session, client, factory, login):
    """The pager's links once replaced gettext (``_``) in the template: a trail longer than a
    page was a 500 for the auditor (found by the authorisation matrix)."""
    login(factory.user("auditor.pages", roles=("auditor",)))
    for n in range(120):
        audit.record("paged", object_type="t", object_id=n)
    db_session.commit()
    first = client.get("/audit/?page=1", headers={"Accept-Language": "en"})
    assert first.status_code == 200
    assert "page=2" in first.get_data(as_text=True) and "Next" in first.get_data(as_text=True)
    middle = client.get("/audit/?page=2", headers={"Accept-Language": "en"})
    assert middle.status_code == 200
    text = middle.get_data(as_text=True)
    assert "page=1" in text and "page=3" in text and "Previous" in text
