from contextlib import contextmanager

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from eldercare import create_app
from eldercare.db import db
from tests.conftest import ON_POSTGRES, fresh_postgres_database


def test_models_and_migrations_agree(app):
    """The migrated schema (the suite's database) has exactly the models' tables and columns."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_object": _include, "render_as_batch": True},
        )
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def _include(obj, name, type_, reflected, compare_to):
    return not (type_ == "table" and name == "apscheduler_jobs")


def test_every_revision_downgrades_and_upgrades_again(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/m.db"})
    with app.app_context():
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"residents", "users", "audit_logs", "api_tokens"} <= tables
        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert set(sa.inspect(db.engine).get_table_names()) == tables
        db.engine.dispose()


def test_0015_keeps_every_balance_in_and_out_of_shards(tmp_path):
    """Upgrade moves each account's balance into its shard 0 (the hot accounts get 31 more,
    empty); downgrade puts the sum of the shards back. No fen is lost either way."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/m.db"})
    accounts = sa.text("SELECT code, balance_fen FROM ledger_accounts ORDER BY code")
    with app.app_context():
        upgrade(revision="0013")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE ledger_accounts SET balance_fen = CASE code "
                    "WHEN 'funding:central' THEN -700 WHEN 'pool:available' THEN 200 "
                    "WHEN 'vouchers:outstanding' THEN 300 WHEN 'vouchers:held' THEN 150 "
                    "WHEN 'redeemed:unsettled' THEN 50 ELSE 0 END"
                )
            )
            before = dict(conn.execute(accounts).all())
        upgrade(revision="0015")
        with db.engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT a.code, a.shards, COUNT(*), SUM(b.balance_fen), "
                    "MAX(CASE WHEN b.shard = 0 THEN b.balance_fen END) "
                    "FROM ledger_accounts a JOIN ledger_balances b ON b.account_id = a.id "
                    "GROUP BY a.code, a.shards"
                )
            ).all()
            shards = {code: (n, rows_n) for code, n, rows_n, _, _ in rows}
            assert {code: total for code, _, _, total, _ in rows} == before
            assert {code: first for code, _, _, _, first in rows} == before
            # vouchers:held now holds some money on shard 7: the sum is what comes back.
            conn.execute(
                sa.text(
                    "UPDATE ledger_balances SET balance_fen = balance_fen + 20 WHERE shard = 7 "
                    "AND account_id = (SELECT id FROM ledger_accounts WHERE code = 'vouchers:held')"
                )
            )
            conn.execute(
                sa.text(
                    "UPDATE ledger_balances SET balance_fen = balance_fen - 20 WHERE shard = 0 "
                    "AND account_id = (SELECT id FROM ledger_accounts WHERE code = 'vouchers:held')"
                )
            )
        assert shards["vouchers:held"] == (32, 32) and shards["pool:available"] == (1, 1)
        downgrade(revision="0013")
        with db.engine.begin() as conn:
            assert dict(conn.execute(accounts).all()) == before


def test_migration_0014_seals_the_old_chain_as_it_is_and_gives_it_back_on_downgrade(tmp_path):
    """Rows chained at insert before 0014 are sealed in id order with their hashes kept;
    downgrading re-chains the later rows after them in the old form, by id."""
    from eldercare import audit
    from eldercare.audit import GENESIS_HASH, compute_legacy_hash
    from eldercare.db import UTCDateTime
    from eldercare.timeutil import now_utc

    table = sa.table(
        "audit_logs",
        *(sa.column(c) for c in ("id", "actor_label", "action", "object_type", "object_id")),
        *(sa.column(c) for c in ("actor_user_id", "district_id", "before_json", "after_json")),
        sa.column("occurred_at", UTCDateTime()),
        sa.column("prev_hash"),
        sa.column("row_hash"),
    )

    def old_chain_holds():
        prev = GENESIS_HASH
        for row in db.session.execute(sa.select(table).order_by(table.c.id)):
            assert row.prev_hash == prev and row.row_hash == compute_legacy_hash(row)
            prev = row.row_hash

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/m.db"})
    with app.app_context():
        upgrade(revision="0013")
        prev = GENESIS_HASH
        for i in range(3):
            row = audit.AuditLog(
                occurred_at=now_utc(),
                actor_label="cli",
                action="old",
                object_type="t",
                object_id=str(i),
                after_json='{"i":1}',
                prev_hash=prev,
            )
            row.row_hash = compute_legacy_hash(row)
            values = {
                c: getattr(row, c)
                for c in (
                    "occurred_at",
                    "actor_label",
                    "action",
                    "object_type",
                    "object_id",
                    "after_json",
                    "prev_hash",
                    "row_hash",
                )
            }
            db.session.execute(table.insert().values(values))
            prev = row.row_hash
        db.session.commit()
        hashes = db.session.execute(sa.text("SELECT row_hash FROM audit_logs ORDER BY id")).all()
        db.session.remove()

        upgrade()
        report = audit.verify_chain()
        assert report.ok and report.rows_checked == 3 and report.unsealed == 0
        assert (
            db.session.execute(sa.text("SELECT row_hash FROM audit_logs ORDER BY seal_seq")).all()
            == hashes
        )
        for i in range(2):
            audit.record("new", object_type="t", object_id=i)
        db.session.commit()
        audit.seal()
        assert audit.verify_chain().rows_checked == 5
        audit.record("unsealed", object_type="t", object_id=9)
        db.session.commit()
        db.session.remove()

        downgrade(revision="0013")
        old_chain_holds()
        assert db.session.scalar(sa.text("SELECT count(*) FROM audit_logs")) == 6
        db.session.remove()
        upgrade()
        report = audit.verify_chain()
        assert report.ok and report.rows_checked == 6
        db.engine.dispose()


def test_0019_downgrade_restores_0017s_statement_freeze(tmp_path):
    """0019 freezes bank transfers and extends the statements' freeze; going back to 0018
    drops the one and puts 0017's statements trigger back as it was."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/m.db"})
    triggers = sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
    with app.app_context():
        upgrade(revision="0018")
        with db.engine.connect() as conn:
            at_0018 = dict(conn.execute(triggers).all())
        upgrade()
        with db.engine.connect() as conn:
            at_head = dict(conn.execute(triggers).all())
        assert {"bank_transfers_fixed_update", "bank_transfers_fixed_delete"} <= set(at_head)
        assert "prepared_at" in at_head["statements_frozen_update"]
        assert "prepared_at" not in at_0018["statements_frozen_update"]
        downgrade(revision="0018")
        with db.engine.connect() as conn:
            assert dict(conn.execute(triggers).all()) == at_0018
        db.engine.dispose()


def test_0022_makes_todays_guess_of_the_delivery_place_explicit(tmp_path):
    """Each service gets the place the check-in rule guessed until now: a home-service
    company's services and anything sold by the visit or the hour are home visits; the
    rest happen at the station, or in the care institution."""
    with _empty_database(tmp_path) as url:
        _check_0022_backfill(create_app({"SQLALCHEMY_DATABASE_URI": url}))


@contextmanager
def _empty_database(tmp_path):
    """A database of its own: on the PostgreSQL server when the suite runs there."""
    if ON_POSTGRES:
        with fresh_postgres_database("migration_0022") as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path}/m.db"


def _check_0022_backfill(app):
    expected = {
        ("home_service", "meal"): "home",
        ("community_station", "visit"): "home",
        ("community_station", "hour"): "home",
        ("community_station", "meal"): "provider",
        ("community_station", "day"): "provider",
        ("care_institution", "month"): "institution",
        ("care_institution", "hour"): "home",
    }
    with app.app_context():
        upgrade(revision="0021")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO districts (id, code, name_zh, name_en)"
                    " VALUES (1, '210102', '和平区', 'Heping')"
                )
            )
            for n, kind in enumerate(("home_service", "community_station", "care_institution")):
                conn.execute(
                    sa.text(
                        "INSERT INTO providers (id, name, credit_code, type, status, district_id,"
                        " address, latitude, longitude, contact_name, contact_phone,"
                        " bank_account_name, bank_name, bank_account_number,"
                        " created_at) VALUES (:id, :name, :code, :type, 'active', 1, 'a',"
                        " 41.7, 123.4, 'c', '1', 'n', 'b', '1', '2026-01-01')"
                    ),
                    {"id": n + 1, "name": kind, "code": f"52210102{n:010d}", "type": kind},
                )
            ids = {"home_service": 1, "community_station": 2, "care_institution": 3}
            for n, (kind, unit) in enumerate(expected):
                conn.execute(
                    sa.text(
                        "INSERT INTO services (id, provider_id, category_code, title,"
                        " description, unit, price_fen, capacity_per_slot, active, created_at)"
                        " VALUES (:id, :provider, 'meal_help', :title, '', :unit, 100, 1, :active,"
                        " '2026-01-01')"
                    ),
                    {
                        "id": n + 1,
                        "provider": ids[kind],
                        "title": f"{kind} {unit}",
                        "unit": unit,
                        "active": True,
                    },
                )
        upgrade(revision="0022")
        with db.engine.connect() as conn:
            places = dict(conn.execute(sa.text("SELECT title, delivery_place FROM services")).all())
        assert places == {f"{kind} {unit}": place for (kind, unit), place in expected.items()}
        downgrade(revision="0021")
        columns = {c["name"] for c in sa.inspect(db.engine).get_columns("services")}
        assert "delivery_place" not in columns
        db.engine.dispose()
