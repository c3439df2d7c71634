import sqlalchemy as sa

from eldercare.accounts import ROLES, FamilyLink, User, UserRole
from eldercare.audit import AuditLog, seal, verify_chain
from eldercare.demo import DEMO_PASSWORD
from eldercare.residents import District


def _count(session, model):
    return session.scalar(sa.select(sa.func.count()).select_from(model))


def test_demo_builds_a_city_with_every_role_and_is_idempotent(app, db_session):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    counts = [_count(db_session, m) for m in (District, User, FamilyLink)]
    assert counts[0] == 10
    roles = set(db_session.scalars(sa.select(UserRole.role)))
    assert roles == set(ROLES)
    assert DEMO_PASSWORD in first.output and "bureau.officer" in first.output

    again = runner.invoke(args=["demo", "--json"])
    assert again.exit_code == 0
    assert [_count(db_session, m) for m in (District, User, FamilyLink)] == counts
    seal()
    report = verify_chain()
    assert report.ok and report.unsealed == 0
    assert report.rows_checked == _count(db_session, AuditLog) > 0


def test_demo_passwords_work(app, db_session, client):
    app.test_cli_runner().invoke(args=["demo"])
    response = client.post("/login", data={"username": "heping.officer", "password": DEMO_PASSWORD})
    assert response.status_code == 302
    page = client.get("/bureau/residents/").get_data(as_text=True)
    assert "王秀英" in page and "2101**********" in page


def test_demo_refuses_production(app, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "ENV_NAME", "production")
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code != 0
    assert "production" in result.output


def test_scheduler_lists_registered_jobs(app):
    result = app.test_cli_runner().invoke(args=["scheduler", "list", "--json"])
    assert result.exit_code == 0
    assert result.output.strip().startswith("[")


def test_demo_has_a_month_settled_paid_and_reconciled_and_the_next_ready(app, db_session, client):
    from datetime import date

    from eldercare.timeutil import local_today
    from vouchers.settlement.demo import demo_months
    from vouchers.settlement.models import BankTransfer, ReconciliationRun, Statement
    from vouchers.settlement.reconcile.reconcile import reconcile_month
    from vouchers.settlement.statements import periods, run

    runner = app.test_cli_runner()
    assert runner.invoke(args=["demo"]).exit_code == 0
    today = local_today()
    settled, ready = demo_months(today)
    assert (
        periods.settles_from(ready)
        <= today
        < periods.settles_from(date(ready.year + ready.month // 12, ready.month % 12 + 1, 1))
    )
    statements = list(db_session.scalars(sa.select(Statement).where(Statement.month == settled)))
    assert len(statements) >= 2  # at more than one provider
    assert {s.status for s in statements} == {"paid"}
    officer, approver = (
        db_session.scalar(sa.select(User.id).where(User.username == name))
        for name in ("bureau.officer", "bureau.approver")
    )
    assert {s.prepared_by_user_id for s in statements} == {officer}
    assert {s.approved_by_user_id for s in statements} == {approver}
    # A second city-wide approver for statements above the threshold (a third person).
    second = db_session.scalar(sa.select(User).where(User.username == "bureau.approver2"))
    assert second.roles == {"bureau_approver"} and second.district_id is None
    transfers = list(db_session.scalars(sa.select(BankTransfer)))
    assert transfers and {t.status for t in transfers} == {"paid"}
    assert db_session.scalar(
        sa.select(ReconciliationRun.ok).where(ReconciliationRun.month == settled)
    )
    with app.app_context():
        assert reconcile_month(settled).ok
    assert db_session.scalar(sa.select(Statement.id).where(Statement.month == ready)) is None

    # What bureau.officer sees: the ready month with its button, the settled one green.
    signed_in = client.post(
        "/login", data={"username": "bureau.officer", "password": DEMO_PASSWORD}
    )
    assert signed_in.status_code == 302
    months = client.get("/settlement/").get_data(as_text=True)
    assert f'id="settle-{ready:%Y-%m}"' in months and f'id="settle-{settled:%Y-%m}"' not in months
    recon = client.get(f"/settlement/reconcile?month={settled:%Y-%m}").get_data(as_text=True)
    assert 'data-state="green"' in recon
    client.get("/logout")

    # A rerun changes nothing: no new redemption, statement, batch or reconciliation.
    counts = [_count(db_session, m) for m in (Statement, BankTransfer, ReconciliationRun, AuditLog)]
    assert runner.invoke(args=["demo"]).exit_code == 0
    assert [
        _count(db_session, m) for m in (Statement, BankTransfer, ReconciliationRun, AuditLog)
    ] == counts

    # The ready month settles today, with lines at more than one provider.
    with app.app_context():
        outcome = run.run_settlement(ready, today=today)
    made = list(db_session.scalars(sa.select(Statement).where(Statement.month == ready)))
    assert len(made) >= 2 and all(s.line_count > 0 for s in made), outcome


def test_the_demos_certified_providers_carry_their_documents(app, db_session):
    """Issue 14 item 5: every certified provider of the demo has each document its type
    requires, stored and readable (checked against its recorded SHA-256)."""
    from marketplace import documents
    from marketplace.models import Provider

    assert app.test_cli_runner().invoke(args=["demo"]).exit_code == 0
    certified = list(db_session.scalars(sa.select(Provider).where(Provider.status == "active")))
    assert len(certified) >= 3
    with app.app_context():  # where the store is
        for provider in certified:
            assert documents.missing_kinds(provider) == [], provider.name
            for document in documents.documents_of(provider):
                assert documents.read_document(document).startswith(b"%PDF-")
