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
