"""Resident ID numbers and phones encrypted at rest (eldercare/pii.py): nothing clear in the
tables, look-up through the keyed hash, key rotation, tampering refused, production keys."""

from __future__ import annotations

import base64
from datetime import date

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from eldercare import create_app
from eldercare.account_links import AccountLinkRequest, request_link
from eldercare.config import ConfigError
from eldercare.db import db
from eldercare.pii import DEMO_PII_HMAC_KEY, DEMO_PII_KEYS, PiiDecryptError, lookup_hash
from eldercare.pii_rotation import key_ids_in_use, rotate
from eldercare.residents import District, Resident, compose_resident_id
from tests.conftest import ON_POSTGRES, fresh_postgres_database


def _key(fill: str) -> str:
    return base64.b64encode(fill.encode() * 32).decode()


OLD = f"old:{_key('o')}"
NEW = f"new:{_key('n')}"
HMAC = _key("h")
PHONE = "13812345678"


def _raw(table: str, columns: str, row_id: int):
    query = sa.text(f"SELECT {columns} FROM {table} WHERE id = :id")  # noqa: S608 - fixed names
    return db.session.execute(query, {"id": row_id}).one()


# --- at rest ---------------------------------------------------------------------------


def test_the_table_holds_no_clear_id_number_or_phone(app_ctx, factory, db_session):
    resident = factory.resident(phone=PHONE)
    number = resident.id_number
    stored_id, stored_phone, id_hash = _raw(
        "residents", "id_number, phone, id_number_hash", resident.id
    )
    for stored in (stored_id, stored_phone):
        assert stored.startswith("demo1:")
        assert number not in stored and PHONE not in stored and number[-4:] not in id_hash
    db_session.expire_all()
    again = db_session.get(Resident, resident.id)
    assert (again.id_number, again.phone) == (number, PHONE)


def test_the_same_number_encrypts_differently_each_time_but_hashes_alike(app_ctx, factory):
    a = factory.resident(phone=PHONE)
    b = factory.resident(phone=PHONE)
    assert _raw("residents", "phone", a.id)[0] != _raw("residents", "phone", b.id)[0]
    assert lookup_hash("id_number", a.id_number.lower()) == lookup_hash("id_number", a.id_number)


def test_look_up_by_id_number_goes_through_the_hash(app_ctx, factory, db_session):
    resident = factory.resident()
    found = db_session.scalar(sa.select(Resident).where(Resident.id_number_is(resident.id_number)))
    assert found is resident
    tail = db_session.scalars(
        sa.select(Resident).where(Resident.id_number_ends_with(resident.id_number[-4:]))
    ).all()
    assert resident in tail
    # Comparing the ciphertext would silently match nothing: it is refused instead.
    with pytest.raises(TypeError, match="lookup hash"):
        sa.select(Resident).where(Resident.id_number == resident.id_number)


def test_a_bulk_insert_fills_the_hash_too(app_ctx, factory, db_session):
    district = factory.district("210102")
    number = compose_resident_id("210102", date(1950, 1, 1), 901)
    db_session.execute(
        sa.insert(Resident),
        [
            {
                "id_number": number,
                "name": "长者",
                "birth_date": date(1950, 1, 1),
                "district_id": district.id,
                "street": "南湖街道",
                "address": "三好街 1 号",
            }
        ],
    )
    found = db_session.scalar(sa.select(Resident).where(Resident.id_number_is(number)))
    assert found is not None and found.id_number == number


def test_an_id_number_stays_unique_through_its_hash(app_ctx, factory, db_session):
    resident = factory.resident()
    twin = Resident(
        id_number=resident.id_number.lower(),  # the same number, as typed with a small x
        name="重复",
        birth_date=resident.birth_date,
        district_id=resident.district_id,
        street="街",
        address="址",
    )
    db_session.add(twin)
    with pytest.raises(sa.exc.IntegrityError), db_session.begin_nested():
        db_session.flush()


def test_a_link_request_is_encrypted_and_found_by_hash(app_ctx, factory, db_session):
    resident = factory.resident(name="王秀英")
    son = factory.user(roles=["family_agent"])
    link = request_link(son, id_number=resident.id_number, name="王秀英", relationship="child")
    stored, stored_hash = _raw("account_link_requests", "id_number, id_number_hash", link.id)
    assert resident.id_number not in stored and stored_hash == resident.id_number_hash
    assert link.resident_id == resident.id
    db_session.expire_all()
    assert db_session.get(AccountLinkRequest, link.id).id_number == resident.id_number


# --- tampering -------------------------------------------------------------------------


def _tamper(value: str) -> str:
    kid, body = value.split(":")
    raw = bytearray(base64.b64decode(body))
    raw[-20] ^= 1  # one bit of the ciphertext
    return f"{kid}:{base64.b64encode(bytes(raw)).decode()}"


def test_a_tampered_ciphertext_is_refused_not_read_wrong(app_ctx, factory, db_session):
    tampered, moved = factory.resident(phone=PHONE), factory.resident(phone=PHONE)
    phone = _raw("residents", "phone", tampered.id)[0]
    # A valid ciphertext of another column (the ID number moved into phone) is refused too.
    id_number = _raw("residents", "id_number", moved.id)[0]
    for resident, value in ((tampered, _tamper(phone)), (moved, id_number)):
        db_session.execute(
            sa.text("UPDATE residents SET phone = :p WHERE id = :id"),
            {"p": value, "id": resident.id},
        )
    db_session.expire_all()
    for resident in (tampered, moved):
        with pytest.raises(PiiDecryptError, match="residents.phone: stored value fails"):
            db_session.scalar(sa.select(Resident.phone).where(Resident.id == resident.id))


# --- keys and rotation -----------------------------------------------------------------


def _app_with_keys(url: str, keys: str):
    return create_app({"SQLALCHEMY_DATABASE_URI": url, "PII_KEYS": keys, "PII_HMAC_KEY": HMAC})


def _seed(count: int) -> list[str]:
    district = District(code="210102", name_zh="和平区", name_en="Heping")
    db.session.add(district)
    db.session.flush()
    numbers = [compose_resident_id("210102", date(1945, 1, 1), 100 + i) for i in range(count)]
    db.session.add_all(
        Resident(
            id_number=n,
            name="长者",
            birth_date=date(1945, 1, 1),
            district_id=district.id,
            street="街",
            address="址",
            phone=PHONE if i % 2 else None,
        )
        for i, n in enumerate(numbers)
    )
    db.session.commit()
    return numbers


def _read_all(app, numbers):
    with app.app_context():
        for n in numbers:
            found = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(n)))
            assert found.id_number == n
        db.session.remove()


def test_rotation_re_encrypts_under_the_new_key_and_the_old_one_can_go(tmp_path):
    _rotate_and_drop_the_old_key(f"sqlite:///{tmp_path}/rotate.db")


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL-only; set TEST_DATABASE_URL (CI does)")
def test_rotation_on_postgres():
    with fresh_postgres_database("pii_rotate") as url:
        _rotate_and_drop_the_old_key(url)


def _rotate_and_drop_the_old_key(url: str):
    old_only = _app_with_keys(url, OLD)
    with old_only.app_context():
        upgrade()
        numbers = _seed(5)
    both = _app_with_keys(url, f"{NEW},{OLD}")
    _read_all(both, numbers)  # written under the old key, readable with it listed second
    with both.app_context():
        with db.engine.connect() as conn:
            assert key_ids_in_use(conn) == {"old": 7}  # 5 ID numbers and 2 phones
        db.engine.dispose()

    result = both.test_cli_runner().invoke(args=["pii", "rotate", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 7 values under key 'new'" in result.output
    assert "old keys can be removed" in result.output
    with both.app_context():
        with db.engine.connect() as conn:
            assert key_ids_in_use(conn) == {"new": 7}
        db.engine.dispose()
    assert both.test_cli_runner().invoke(args=["pii", "status"]).output.strip() == "new: 7"
    with both.app_context():
        db.engine.dispose()

    new_only = _app_with_keys(url, NEW)
    _read_all(new_only, numbers)
    with new_only.app_context():
        db.engine.dispose()
    with old_only.app_context():  # the old key alone no longer reads anything
        with pytest.raises(PiiDecryptError, match="no key 'new'"):
            db.session.scalar(sa.select(Resident).limit(1))
        db.session.remove()
        db.engine.dispose()


def test_rotation_with_a_new_hmac_key_rehashes(tmp_path):
    url = f"sqlite:///{tmp_path}/rehash.db"
    app = _app_with_keys(url, OLD)
    with app.app_context():
        upgrade()
        numbers = _seed(3)
        db.engine.dispose()
    rekeyed = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "PII_KEYS": OLD, "PII_HMAC_KEY": _key("H")}
    )
    with rekeyed.app_context():
        by_old_hash = sa.select(Resident).where(Resident.id_number_is(numbers[0]))
        assert db.session.scalar(by_old_hash) is None  # hashed under the old HMAC key
        db.session.remove()
    result = rekeyed.test_cli_runner().invoke(args=["pii", "rotate", "--rehash"])
    assert result.exit_code == 0, result.output
    _read_all(rekeyed, numbers)
    with rekeyed.app_context():  # the register's search by the last four too
        by_tail = sa.select(Resident.id_number).where(Resident.id_number_ends_with(numbers[1]))
        assert db.session.scalars(by_tail).all() == [numbers[1]]
        db.session.remove()
        db.engine.dispose()


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL-only; set TEST_DATABASE_URL (CI does)")
def test_rotation_leaves_a_row_changed_meanwhile_as_the_application_wrote_it():
    # PostgreSQL writes each batch with one UPDATE … FROM unnest(arrays): the same guard on
    # the ciphertext read as the executemany it replaced. (On SQLite the rotation's open
    # transaction locks the file, so nothing can change meanwhile.)
    with fresh_postgres_database("pii_meanwhile") as url:
        _rotation_with_a_change_meanwhile(url)


def _rotation_with_a_change_meanwhile(url: str):
    old_only = _app_with_keys(url, OLD)
    with old_only.app_context():
        upgrade()
        numbers = _seed(5)  # phones on the 2nd and 4th
        db.engine.dispose()
    both = _app_with_keys(url, f"{NEW},{OLD}")
    replacement = compose_resident_id("210102", date(1946, 2, 2), 777)
    with both.app_context():
        target = db.session.scalar(sa.select(Resident.id).where(Resident.id_number_is(numbers[1])))
        db.session.remove()
        changed = []

        def the_application_meanwhile(conn, cursor, statement, params, context, executemany):
            # Between the batch's read and its write, the application corrects one ID
            # number and one phone (under the current key, hashes beside it) and commits.
            if statement.startswith("UPDATE residents") and not changed:
                changed.append(statement)
                resident = db.session.get(Resident, target)
                resident.id_number, resident.phone = replacement, "13900000000"
                db.session.commit()
                db.session.remove()

        with db.engine.connect() as connection:
            sa.event.listen(connection, "before_cursor_execute", the_application_meanwhile)
            rewritten = sum(done for done in _committing(connection, rotate(connection, batch=3)))
            sa.event.remove(connection, "before_cursor_execute", the_application_meanwhile)
            assert key_ids_in_use(connection) == {"new": 7}
        # Offered: 5 ID numbers; then the 2 phones less the one already under the new key.
        assert changed and rewritten == 5 + 1
        found = db.session.get(Resident, target)
        assert (found.id_number, found.phone) == (replacement, "13900000000")
        assert db.session.scalar(
            sa.select(Resident.id).where(Resident.id_number_is(replacement))
        ) == target  # fmt: skip
        assert (
            db.session.scalar(sa.select(Resident).where(Resident.id_number_is(numbers[1]))) is None
        )
        db.session.remove()
        db.engine.dispose()
    new_only = _app_with_keys(url, NEW)  # every other row reads with the new key alone
    _read_all(new_only, [n for i, n in enumerate(numbers) if i != 1])
    with new_only.app_context():
        db.engine.dispose()


def _committing(connection, batches):
    for done in batches:
        connection.commit()
        yield done


@pytest.mark.parametrize(
    ("keys", "hmac_key", "named"),
    [
        (None, None, "PII_KEYS is empty"),
        (NEW, None, "PII_HMAC_KEY is empty"),
        (DEMO_PII_KEYS, HMAC, "not the demo"),
        (f"{NEW},{DEMO_PII_KEYS}", HMAC, "not the demo"),
        (NEW, DEMO_PII_HMAC_KEY, "not the demo"),
        ("new:c2hvcnQ=", HMAC, "32 bytes"),
    ],
)
def test_production_refuses_to_start_without_real_keys(monkeypatch, keys, hmac_key, named):
    monkeypatch.setenv("ELDERCARE_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "k" * 48)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://app@db.invalid/eldercare")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://yanglao.shenyang.example.gov.cn")
    for name, value in (("PII_KEYS", keys), ("PII_HMAC_KEY", hmac_key)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        create_app()
    monkeypatch.setenv("PII_KEYS", NEW)
    monkeypatch.setenv("PII_HMAC_KEY", HMAC)
    assert create_app().config["PII_KEYS"] == NEW


def test_development_uses_the_marked_demo_keys(monkeypatch):
    monkeypatch.delenv("ELDERCARE_ENV", raising=False)
    monkeypatch.delenv("PII_KEYS", raising=False)
    monkeypatch.delenv("PII_HMAC_KEY", raising=False)
    config = create_app().config
    assert (config["PII_KEYS"], config["PII_HMAC_KEY"]) == (DEMO_PII_KEYS, DEMO_PII_HMAC_KEY)
    assert base64.b64decode(DEMO_PII_KEYS.split(":")[1]).startswith(b"DEMO-ONLY")


# --- the migration ---------------------------------------------------------------------


def _migrate_up_and_down(url: str):
    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    number = compose_resident_id("210102", date(1944, 3, 12), 2)
    with app.app_context():
        upgrade(revision="0019")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO districts (id, code, name_zh, name_en) "
                    "VALUES (1, '210102', '和平区', 'Heping')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO residents (id, id_number, name, birth_date, phone, district_id,"
                    " street, address, created_at) VALUES (1, :n, '王秀英', '1944-03-12', :p,"
                    " 1, '街', '址', '2026-01-01 00:00:00')"
                ),
                {"n": number, "p": PHONE},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, password_hash, display_name, active,"
                    " created_at) VALUES (1, 'son', '!', '儿子', true, '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO account_link_requests (id, user_id, id_number, name,"
                    " relationship, resident_id, name_matches, status, created_at) VALUES"
                    " (1, 1, :n, '王秀英', 'child', 1, true, 'pending', '2026-01-01 00:00:00')"
                ),
                {"n": number},
            )
        upgrade(revision="0020")
        with db.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT id_number, phone FROM residents")).one()
            link = conn.execute(sa.text("SELECT id_number FROM account_link_requests")).scalar()
        assert number not in row.id_number + link and PHONE not in row.phone
        found = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(number)))
        assert (found.id_number, found.phone) == (number, PHONE)
        assert (
            db.session.scalar(
                sa.select(AccountLinkRequest.id_number).where(
                    AccountLinkRequest.id_number_hash == lookup_hash("id_number", number)
                )
            )
            == number
        )
        db.session.remove()
        downgrade(revision="0019")
        with db.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT id_number, phone FROM residents")).one()
            link = conn.execute(sa.text("SELECT id_number FROM account_link_requests")).scalar()
        assert (row.id_number, row.phone, link) == (number, PHONE, number)
        db.engine.dispose()


def test_migration_0020_encrypts_and_decrypts_again_on_sqlite(tmp_path):
    _migrate_up_and_down(f"sqlite:///{tmp_path}/m.db")


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL-only; set TEST_DATABASE_URL (CI does)")
def test_migration_0020_encrypts_and_decrypts_again_on_postgres():
    with fresh_postgres_database("pii_migration") as url:
        _migrate_up_and_down(url)
