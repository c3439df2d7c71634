"""Bulk import of residents and assessments from real CSV and XLSX files."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

import openpyxl
import pytest
import sqlalchemy as sa
from flask import g

from assessment.agencies import add_assessor
from assessment.importing import import_file, parse_fee_fen
from assessment.instrument import instrument
from assessment.models import AgencyAdmin, Assessment
from eldercare.audit import AuditLog
from eldercare.residents import Resident, check_character, compose_resident_id
from tests.assessment.helpers import items_with_total

RESIDENT_HEADER = [
    "id_number",
    "name",
    "district",
    "street",
    "address",
    "phone",
    "latitude",
    "longitude",
]
ITEM_CODES = list(instrument().items)
ASSESSMENT_HEADER = [
    "id_number",
    "agency_licence",
    "external_ref",
    "type",
    "assessed_on",
    *ITEM_CODES,
    "coma",
    "diagnoses",
    "care_risk_events_30d",
    "recorder_certificate",
    "cosigner_certificate",
    "fee_yuan",
]


def person(sequence: int, birth: date = date(1946, 7, 8)) -> str:
    return compose_resident_id("210102", birth, sequence)


def resident_row(number: str, name: str = "王秀英", district: str = "210102", **extra):
    row = {
        "id_number": number,
        "name": name,
        "district": district,
        "street": "南湖街道",
        "address": "三好街 12 号",
        "phone": "13804001234",
        "latitude": "41.7741",
        "longitude": "123.4356",
        **extra,
    }
    return [row[column] for column in RESIDENT_HEADER]


def assessment_row(resident, ref, *, total=50, assessed_on, recorder="C-001", **extra):
    values = {
        "id_number": resident.id_number,
        "agency_licence": "PG-001",
        "external_ref": ref,
        "type": "first",
        "assessed_on": assessed_on,
        **items_with_total(total),
        "coma": "0",
        "diagnoses": "",
        "care_risk_events_30d": "0",
        "recorder_certificate": recorder,
        "cosigner_certificate": "C-002",
        "fee_yuan": "80.5",
        **extra,
    }
    return [values[column] for column in ASSESSMENT_HEADER]


def write_csv(path, header, rows, encoding="utf-8"):
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_xlsx(path, header, rows):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def run(path, kind, **kwargs):
    return import_file(path.read_bytes(), path.name, kind, **kwargs)


def counts(session, model):
    return (
        session.scalar(sa.select(sa.func.count()).select_from(model)),
        session.scalar(sa.select(sa.func.count()).select_from(AuditLog)),
    )


@pytest.fixture
def english(app, world):
    """Reasons in English, as an operator who chose English would read them (a CLI run
    speaks the default, Chinese). The locale is cached in ``g``, which ``world`` keeps."""
    g.pop("_flask_babel", None)
    with app.test_request_context(headers={"Accept-Language": "en"}):
        yield
    g.pop("_flask_babel", None)


# --- residents --------------------------------------------------------------------------


def test_residents_csv_imports_and_importing_it_again_changes_nothing(
    english, tmp_path, db_session
):
    path = write_csv(
        tmp_path / "residents.csv",
        RESIDENT_HEADER,
        [
            resident_row(person(121)),
            resident_row(person(132), name="李建国", district="沈河区"),
            resident_row(person(143), name="赵淑珍", phone="", latitude="", longitude=""),
        ],
    )
    before = counts(db_session, Resident)
    report = run(path, "residents")
    assert (report.created, report.unchanged, report.errors, report.imported) == (3, 0, [], True)
    after = counts(db_session, Resident)
    assert after[0] == before[0] + 3
    assert after[1] == before[1] + 3 + 1  # one resident.create per row, one for the run
    summary = db_session.scalar(sa.select(AuditLog).order_by(AuditLog.id.desc()).limit(1))
    assert summary.action == "import.residents"
    assert summary.after["created"] == 3 and summary.after["file"] == "residents.csv"
    li = db_session.scalar(sa.select(Resident).where(Resident.id_number_is(person(132))))
    assert li.district.code == "210103" and li.latitude == pytest.approx(41.7741)

    again = run(path, "residents")
    assert (again.created, again.unchanged, again.errors, again.imported) == (0, 3, [], True)
    assert counts(db_session, Resident) == after


def test_same_id_number_with_other_details_is_an_error_not_an_overwrite(
    english, tmp_path, db_session
):
    run(write_csv(tmp_path / "a.csv", RESIDENT_HEADER, [resident_row(person(121))]), "residents")
    moved = write_csv(
        tmp_path / "b.csv", RESIDENT_HEADER, [resident_row(person(121), address="北陵大街 3 号")]
    )
    report = run(moved, "residents")
    assert not report.imported
    assert report.errors == [(2, "id_number", "Already registered with different details.")]
    resident = db_session.scalar(sa.select(Resident).where(Resident.id_number_is(person(121))))
    assert resident.address == "三好街 12 号"


def _file_with_bad_rows(tmp_path):
    impossible_birth = "21010219440230123"  # 30 February
    wrong_check = person(121)[:-1] + ("0" if person(121)[-1] != "0" else "1")
    return write_csv(
        tmp_path / "mixed.csv",
        RESIDENT_HEADER,
        [
            resident_row(person(154)),  # row 2: valid
            resident_row(wrong_check),  # row 3
            resident_row(impossible_birth + check_character(impossible_birth)),  # row 4
            resident_row(person(165), district="火星区"),  # row 5
            resident_row(person(176), name=""),  # row 6
        ],
    )


def test_bad_rows_are_each_named_and_nothing_is_imported(english, tmp_path, db_session):
    path = _file_with_bad_rows(tmp_path)
    before = counts(db_session, Resident)
    report = run(path, "residents")
    assert not report.imported and report.created == 0 and report.error_rows == 4
    found = {(p.row, p.column): p.reason for p in report.errors}
    assert set(found) == {(3, "id_number"), (4, "id_number"), (5, "district"), (6, "name")}
    assert "last character does not match" in found[3, "id_number"]
    assert "birth date" in found[4, "id_number"]
    assert "Unknown district" in found[5, "district"]
    assert "Enter the name" in found[6, "name"]
    assert counts(db_session, Resident) == before  # not even the valid row 2


def test_valid_rows_only_imports_the_valid_rows_once(english, tmp_path, db_session):
    path = _file_with_bad_rows(tmp_path)
    before = counts(db_session, Resident)
    report = run(path, "residents", valid_rows_only=True)
    assert report.imported and report.created == 1 and report.error_rows == 4
    assert {p.row for p in report.errors} == {3, 4, 5, 6}
    after = counts(db_session, Resident)
    assert after == (before[0] + 1, before[1] + 2)
    assert db_session.scalar(sa.select(Resident.id).where(Resident.id_number_is(person(154))))

    again = run(path, "residents", valid_rows_only=True)
    assert (again.created, again.unchanged, again.error_rows) == (0, 1, 4)
    assert counts(db_session, Resident) == after


@pytest.mark.parametrize("encoding", ["gb18030", "utf-8-sig"])
def test_chinese_headers_in_gb18030_or_utf8_with_bom(encoding, english, tmp_path, db_session):
    header = ["身份证号", "姓名", "区", "街道", "地址", "电话", "纬度", "经度", "备注"]
    row = resident_row(person(187), name="孙桂兰", district="和平区") + ["老人证已核"]
    path = write_csv(tmp_path / "居民.csv", header, [row], encoding=encoding)
    if encoding == "gb18030":
        with pytest.raises(UnicodeDecodeError):
            path.read_bytes().decode("utf-8")  # really not UTF-8
    report = run(path, "residents")
    assert report.created == 1 and report.errors == []
    assert [(w.row, w.column) for w in report.warnings] == [(1, "备注")]  # ignored, not fatal
    resident = db_session.scalar(sa.select(Resident).where(Resident.id_number_is(person(187))))
    assert resident.name == "孙桂兰" and resident.district.name_zh == "和平区"


def test_duplicate_id_in_one_file_is_reported(english, tmp_path, db_session):
    path = write_csv(
        tmp_path / "dup.csv",
        RESIDENT_HEADER,
        [resident_row(person(121)), resident_row(person(121))],
    )
    report = run(path, "residents")
    assert report.errors == [(3, "id_number", "The same ID number is in row 2.")]
    assert not db_session.scalar(sa.select(Resident.id).where(Resident.id_number_is(person(121))))


def test_district_officer_imports_only_their_district(english, tmp_path, world, db_session):
    path = write_csv(
        tmp_path / "r.csv",
        RESIDENT_HEADER,
        [resident_row(person(121)), resident_row(person(132), district="沈河区")],
    )
    report = run(path, "residents", district_id=world.heping.id, valid_rows_only=True)
    assert report.created == 1
    assert [(p.row, p.column) for p in report.errors] == [(3, "district")]


# --- file-level guards ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.csv", b"", "The file is empty."),
        ("header.csv", b"id_number,name,district,street,address\r\n", "no data rows"),
        ("fake.xlsx", b"id_number,name\r\n1,2\r\n", "not a valid Excel (.xlsx) file"),
        ("old.xls", b"\xd0\xcf\x11\xe0 binary", "Upload a .csv or .xlsx file."),
        ("binary.csv", b"\xff\xfe\x00\x81\xff", "not text in UTF-8 or GB18030"),
    ],
)
def test_unreadable_files_are_refused_with_a_reason(english, name, content, reason, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    report = run(path, "residents")
    assert not report.imported and report.created == 0
    assert len(report.errors) == 1 and report.errors[0].row is None
    assert reason in report.errors[0].reason


def test_missing_required_columns_stop_before_any_row(english, tmp_path, db_session):
    path = write_csv(tmp_path / "r.csv", ["id_number", "name"], [[person(121), "王秀英"]])
    report = run(path, "residents")
    assert {(p.row, p.column) for p in report.errors} == {
        (1, "district"),
        (1, "street"),
        (1, "address"),
    }
    assert all(p.reason == "This required column is missing." for p in report.errors)
    assert not db_session.scalar(sa.select(Resident.id).where(Resident.id_number_is(person(121))))


def test_row_and_size_limits(english, app, tmp_path, monkeypatch):
    rows = [resident_row(person(100 + i)) for i in range(3)]
    csv_path = write_csv(tmp_path / "r.csv", RESIDENT_HEADER, rows)
    xlsx_path = write_xlsx(tmp_path / "r.xlsx", RESIDENT_HEADER, rows)
    monkeypatch.setitem(app.config, "IMPORT_MAX_ROWS", 2)
    for path in (csv_path, xlsx_path):
        report = run(path, "residents")
        assert report.created == 0 and "more than 2 rows" in report.errors[0].reason
    monkeypatch.setitem(app.config, "IMPORT_MAX_ROWS", 3)
    monkeypatch.setitem(app.config, "IMPORT_MAX_BYTES", 200)
    report = run(csv_path, "residents")
    assert report.created == 0 and "larger than" in report.errors[0].reason
    monkeypatch.setitem(app.config, "IMPORT_MAX_BYTES", 10_000)
    assert run(csv_path, "residents").created == 3


@pytest.mark.parametrize(
    ("text", "fen"), [("80", 8000), ("80.5", 8050), ("0.07", 7), ("", 0), ("１００", 10000)]
)
def test_fees_in_yuan_become_exact_fen(text, fen):
    assert parse_fee_fen(text) == fen


@pytest.mark.parametrize("text", ["80.555", "-5", "abc", "NaN", "80元"])
def test_bad_fees_are_refused(text):
    with pytest.raises(ValueError):
        parse_fee_fen(text)


# --- assessments ------------------------------------------------------------------------


@pytest.fixture
def elders(world):
    return [world.elder] + [
        world.factory.resident(world.heping, birth=date(1940 + i, 1, 1)) for i in range(4)
    ]


def test_assessments_xlsx_are_recorded_by_both_assessors_awaiting_review(
    english, world, elders, tmp_path, db_session
):
    earlier = world.today - timedelta(days=3)
    path = write_xlsx(
        tmp_path / "cases.xlsx",
        ASSESSMENT_HEADER,
        [
            assessment_row(elders[0], "K-1", total=50, assessed_on=world.today),
            assessment_row(elders[1], "K-2", total=50, assessed_on=earlier, diagnoses="f03, I10"),
            assessment_row(elders[2], "K-3", total=70, assessed_on=earlier, coma="是", fee_yuan=""),
        ],
    )
    before = counts(db_session, Assessment)
    report = run(path, "assessments")
    assert (report.created, report.errors, report.imported) == (3, [], True)
    cases = {
        c.external_ref: c
        for c in db_session.scalars(
            sa.select(Assessment).where(Assessment.external_ref.is_not(None))
        )
    }
    first = cases["K-1"]
    assert (first.status, first.total, first.level) == ("recorded", 50, "moderate")
    assert (first.assessor1_id, first.assessor2_id) == (world.li.id, world.zhao.id)
    assert (first.agency_id, first.applied_via, first.fee_fen) == (
        world.agency.id,
        "agency_import",
        8050,
    )
    assert first.signed_content_sha256 and first.reviewed_at is None  # not approved
    assert cases["K-2"].assessed_on == earlier and cases["K-2"].diagnoses == "F03 I10"
    assert (cases["K-2"].base_level, cases["K-2"].level) == ("moderate", "severe")
    assert (cases["K-3"].level, cases["K-3"].fee_fen) == ("complete", 0)

    after = counts(db_session, Assessment)
    again = run(path, "assessments")
    assert (again.created, again.unchanged, again.errors) == (0, 3, [])
    assert counts(db_session, Assessment) == after and after[0] == before[0] + 3


def _bad_assessments(world, elders, tmp_path):
    staff = world.factory.user("assessor.expired", roles=["assessor"])
    add_assessor(
        world.agency,
        staff,
        name="钱进",
        certificate_number="C-009",
        valid_until=world.today - timedelta(days=1),
    )
    return write_xlsx(
        tmp_path / "bad.xlsx",
        ASSESSMENT_HEADER,
        [
            assessment_row(elders[0], "K-1", assessed_on=world.today),  # 2: valid
            assessment_row(elders[1], "K-2", assessed_on=world.today, eating=5),  # 3
            assessment_row(elders[2], "K-3", assessed_on=world.today, recorder="C-002"),  # 4
            assessment_row(elders[3], "K-4", assessed_on=world.today, recorder="C-009"),  # 5
        ],
    )


def test_bad_assessment_rows_are_named_and_nothing_is_imported(
    english, world, elders, tmp_path, db_session
):
    path = _bad_assessments(world, elders, tmp_path)
    before = counts(db_session, Assessment)
    report = run(path, "assessments")
    assert not report.imported and report.created == 0
    found = {(p.row, p.column): p.reason for p in report.errors}
    assert set(found) == {
        (3, "eating"),
        (4, "cosigner_certificate"),
        (5, "recorder_certificate"),
    }
    assert found[3, "eating"] == "5 is outside the allowed range 0 to 4"
    assert found[4, "cosigner_certificate"] == "Two different assessors must sign the assessment."
    assert "certificate is not valid" in found[5, "recorder_certificate"]
    assert counts(db_session, Assessment) == before


def test_valid_assessment_rows_only_and_failed_rows_leave_no_trace(
    english, world, elders, tmp_path, db_session
):
    path = _bad_assessments(world, elders, tmp_path)
    before = counts(db_session, Assessment)
    report = run(path, "assessments", valid_rows_only=True)
    assert report.imported and report.created == 1 and report.error_rows == 3
    # Row 5 got as far as apply, assign and schedule before record refused it: its savepoint
    # took all of that back, so only row 2's case (and its four steps + the summary) remain.
    after = counts(db_session, Assessment)
    assert after == (before[0] + 1, before[1] + 4 + 1)
    assert not db_session.scalar(
        sa.select(Assessment.id).where(Assessment.resident_id == elders[3].id)
    )
    again = run(path, "assessments", valid_rows_only=True)
    assert (again.created, again.unchanged, again.error_rows) == (0, 1, 3)
    assert counts(db_session, Assessment) == after


def test_changed_case_under_the_same_number_is_an_error(
    english, world, elders, tmp_path, db_session
):
    row = assessment_row(elders[0], "K-1", assessed_on=world.today)
    run(write_xlsx(tmp_path / "a.xlsx", ASSESSMENT_HEADER, [row]), "assessments")
    changed = assessment_row(elders[0], "K-1", assessed_on=world.today, total=40)
    report = run(write_xlsx(tmp_path / "b.xlsx", ASSESSMENT_HEADER, [changed]), "assessments")
    assert [(p.row, p.column) for p in report.errors] == [(2, "external_ref")]
    case = db_session.scalar(sa.select(Assessment).where(Assessment.external_ref == "K-1"))
    assert case.total == 50


def test_dates_are_read_and_checked_by_the_lifecycle(english, world, elders, tmp_path):
    rows = [
        assessment_row(elders[0], "D-1", assessed_on=world.today.strftime("%Y/%-m/%-d")),
        assessment_row(elders[1], "D-2", assessed_on=(world.today + timedelta(days=1)).isoformat()),
        # Before the first policy (2025-07-01): recording needs none (issue 10, item 3).
        assessment_row(elders[2], "D-3", assessed_on="2025-01-05"),
        assessment_row(elders[3], "D-4", assessed_on="2025-02-30"),
    ]
    report = run(write_csv(tmp_path / "d.csv", ASSESSMENT_HEADER, rows), "assessments")
    assert [(p.row, p.column) for p in report.errors] == [
        (3, "assessed_on"),
        (5, "assessed_on"),
    ]
    reasons = [p.reason for p in report.errors]
    assert reasons[0] == "The assessment date cannot be in the future."
    assert reasons[1] == "Enter a real date as YYYY-MM-DD."


# --- the command ------------------------------------------------------------------------


def test_cli_exits_non_zero_on_errors_and_prints_json(app, world, tmp_path, db_session):
    db_session.commit()  # keep world: a run that keeps nothing rolls the unit of work back
    runner = app.test_cli_runner()
    bad = _file_with_bad_rows(tmp_path)
    result = runner.invoke(args=["assessment", "import", str(bad), "--kind", "residents", "--json"])
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert (body["created"], body["imported"], body["error_rows"]) == (0, False, 4)
    assert {e["row"] for e in body["errors"]} == {3, 4, 5, 6}

    result = runner.invoke(
        args=["assessment", "import", str(bad), "--kind", "residents", "--valid-rows-only"]
    )
    assert result.exit_code == 0
    assert "1 created" in result.stdout
    assert db_session.scalar(sa.select(Resident.id).where(Resident.id_number_is(person(154))))
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "import.residents"))
    assert row.actor_label == "cli"


# --- the upload page --------------------------------------------------------------------


def _post(client, path, kind, lang="en", **form):
    for name in ("_flask_babel", "_login_user"):  # world's app context is shared; see api tests
        g.pop(name, None)
    data = {"kind": kind, "file": (io.BytesIO(path.read_bytes()), path.name), **form}
    return client.post(
        "/assessment/import/",
        data=data,
        content_type="multipart/form-data",
        headers={"Accept-Language": lang},
    )


def test_bureau_officer_uploads_and_sees_the_report(world, client, login, tmp_path, db_session):
    login(world.officer)
    g.pop("_login_user", None)
    page = client.get("/assessment/import/", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    assert 'accept=".csv,.xlsx"' in page.get_data(as_text=True)

    response = _post(client, _file_with_bad_rows(tmp_path), "residents")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "nothing was imported" in html and "Unknown district" in html
    assert '<dd id="rows-errors">4</dd>' in html

    response = _post(client, _file_with_bad_rows(tmp_path), "residents", valid_rows_only="1")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and '<dd id="rows-created">1</dd>' in html
    resident = db_session.scalar(sa.select(Resident).where(Resident.id_number_is(person(154))))
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "resident.create"))
    assert resident is not None and row.actor_user_id == world.officer.id

    chinese = _post(client, _file_with_bad_rows(tmp_path), "residents", lang="zh-CN")
    assert "最后一位" in chinese.get_data(as_text=True)  # the register's reason, in Chinese


def test_an_upload_over_the_limit_is_refused_before_it_is_read(
    world, client, login, app, tmp_path, monkeypatch, db_session
):
    login(world.officer)
    monkeypatch.setitem(app.config, "IMPORT_MAX_BYTES", 1000)
    rows = [resident_row(person(100 + i % 900)) for i in range(2000)]  # about 150 KB
    response = _post(client, write_csv(tmp_path / "big.csv", RESIDENT_HEADER, rows), "residents")
    assert response.status_code == 413
    assert not db_session.scalar(sa.select(Resident.id).where(Resident.id_number_is(person(100))))


def test_an_elder_may_not_import(world, client, login, factory, tmp_path):
    login(factory.user("elder.one", roles=["elder"]))
    g.pop("_login_user", None)
    assert client.get("/assessment/import/").status_code == 403
    assert _post(client, _file_with_bad_rows(tmp_path), "residents").status_code == 403


def test_agency_admin_imports_only_for_their_own_agency(
    world, elders, client, login, tmp_path, db_session
):
    admin = world.factory.user("agency.boss", roles=["agency_admin"])
    db_session.add(AgencyAdmin(user_id=admin.id, agency_id=world.agency.id))
    login(admin)
    other = assessment_row(
        elders[1], "W-1", assessed_on=world.today.isoformat(), agency_licence="PG-002"
    )
    own = assessment_row(elders[0], "K-1", assessed_on=world.today.isoformat())
    path = write_csv(tmp_path / "cases.csv", ASSESSMENT_HEADER, [own, other])

    response = _post(client, path, "assessments")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "You may import assessments of your own agency only." in html
    assert not db_session.scalar(sa.select(Assessment.id).where(Assessment.external_ref == "K-1"))

    response = _post(client, path, "assessments", valid_rows_only="1")
    assert response.status_code == 200
    case = db_session.scalar(sa.select(Assessment).where(Assessment.external_ref == "K-1"))
    assert case.status == "recorded" and case.applied_by_user_id == admin.id
    assert _post(client, path, "residents").status_code == 403  # agencies do not register
