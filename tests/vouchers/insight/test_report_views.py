"""The report page, its PDF, its downloads and its API: the same figures, in one language
per page (the PDF Chinese then English), the charts on the page and in the PDF, district
staff held to their district, and bad periods a clear 400."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from eldercare.tokens import issue_token
from tests.one_language import assert_one_language
from tests.vouchers.insight.report_world import build
from vouchers.insight.report_tables import TABLE_NAMES


@pytest.fixture
def world(factory):
    w = build(factory)
    w.city = factory.user("report.city", roles=["bureau_officer"])
    w.officer_a = factory.user("report.a", roles=["bureau_officer"], district=w.a)
    w.officer_b = factory.user("report.b", roles=["bureau_approver"], district=w.b)
    return w


@pytest.fixture
def en(client):
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _fonts(pdf: bytes) -> set[tuple[str, tuple]]:
    found = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descendants = font.get("/DescendantFonts")
            target = descendants[0].get_object() if descendants else font
            descriptor = target.get("/FontDescriptor")
            descriptor = descriptor.get_object() if descriptor else {}
            files = tuple(k for k in ("/FontFile", "/FontFile2", "/FontFile3") if k in descriptor)
            found.add((str(font["/BaseFont"]), files))
    return found


# -- the page ---------------------------------------------------------------------------------


def test_the_page_in_chinese_has_the_figures_tables_and_charts(world, client, login):
    login(world.city)
    page = client.get("/vouchers/bureau/report?period=2026-03")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "月度报告" in html and "到账中央资金" in html
    assert "¥10,000.00" in html  # central funds received, with the project's formatter
    assert "¥2,300.00" in html  # face value issued in March
    assert "¥105.00" in html  # subsidy paid
    for name in ("months", "elders-by-district", "elders-by-level"):
        assert f'id="chart-{name}"' in html
    assert html.count("<svg ") == 3 and 'role="img"' in html
    for name in TABLE_NAMES:
        assert f"/vouchers/bureau/report/{name}.csv?period=2026-03" in html
        assert f"/vouchers/bureau/report/{name}.xlsx?period=2026-03" in html
    assert "/vouchers/bureau/report.pdf?period=2026-03" in html
    districts = [world.a.name_zh, world.b.name_zh, world.a.name_en, world.b.name_en]
    # A rule without a label yet shows its code (data); the username is data too.
    data = ["odd_hours", world.city.display_name, "210102", "210103", *districts]
    assert_one_language(html, "zh_CN", data=data)


def test_the_page_in_english(world, en, login):
    login(world.city)
    html = en.get("/vouchers/bureau/report?period=2026").get_data(as_text=True)
    assert "Monthly report" in html and "Report for the year 2026" in html
    assert "Central funds received (yuan)" in html
    assert html.count("<svg ") == 3
    # A year: twelve months in the table.
    assert all(f"2026-{n:02d}" in html for n in range(1, 13))
    assert_one_language(html, "en", data=[world.a.name_zh, world.b.name_zh])


def test_the_page_of_an_empty_month_says_so(world, client, login):
    login(world.city)
    html = client.get("/vouchers/bureau/report?period=2031-07").get_data(as_text=True)
    assert "本期暂无数据" in html
    assert html.count("<svg ") == 3


def test_no_period_is_last_month(world, client, login):
    login(world.city)
    assert client.get("/vouchers/bureau/report").status_code == 200


def test_district_staff_see_their_district_only(world, en, login):
    login(world.officer_a)
    html = en.get("/vouchers/bureau/report?period=2026-03").get_data(as_text=True)
    assert world.a.name_en in html
    assert "Allocated to the district (yuan)" in html
    assert "Central funds received" not in html
    assert "¥1,500.00" in html  # A's March face value: three vouchers
    assert "¥2,300.00" not in html  # the city's
    assert 'name="district"' not in html  # no district choice for district staff
    # Another district is missing, on the page, the PDF and the downloads alike.
    other = f"period=2026-03&district={world.b.id}"
    assert en.get(f"/vouchers/bureau/report?{other}").status_code == 404
    assert en.get(f"/vouchers/bureau/report.pdf?{other}").status_code == 404
    assert en.get(f"/vouchers/bureau/report/months.csv?{other}").status_code == 404
    # Their own, named: fine.
    own = f"period=2026-03&district={world.a.id}"
    assert en.get(f"/vouchers/bureau/report?{own}").status_code == 200


def test_city_staff_pick_a_district(world, en, login):
    login(world.city)
    html = en.get(f"/vouchers/bureau/report?period=2026-03&district={world.b.id}").get_data(
        as_text=True
    )
    assert "¥800.00" in html and "¥2,300.00" not in html
    assert f"district={world.b.id}" in html  # the downloads keep the district
    assert en.get("/vouchers/bureau/report?district=999999").status_code == 404
    assert en.get("/vouchers/bureau/report?district=abc").status_code == 404


@pytest.mark.parametrize("period", ["2026-13", "1999", "March", "2026-3", "20260"])
def test_bad_periods_are_a_clear_400(world, client, login, period):
    login(world.city)
    for url in ("/vouchers/bureau/report", "/vouchers/bureau/report.pdf"):
        zh = client.get(f"{url}?period={period}", headers={"Accept-Language": "zh-CN"})
        assert zh.status_code == 400
        assert "请填写月份（如 2026-03）或年份（如 2026）" in zh.get_data(as_text=True)
        english = client.get(f"{url}?period={period}", headers={"Accept-Language": "en"})
        assert english.status_code == 400
        assert "Give the period as a month (YYYY-MM" in english.get_data(as_text=True)
    assert client.get(f"/vouchers/bureau/report/months.csv?period={period}").status_code == 400


def test_a_nul_in_the_period_is_refused_not_a_500(world, client, login):
    login(world.city)
    response = client.get("/vouchers/bureau/report?period=2026%00")
    assert response.status_code in (400, 422)
    assert "NUL" in response.get_data(as_text=True)


def test_not_for_other_roles(world, factory, client, login):
    login(factory.user("report.elder", roles=["elder"]))
    assert client.get("/vouchers/bureau/report?period=2026-03").status_code == 403
    assert client.get("/vouchers/bureau/report.pdf?period=2026-03").status_code == 403


# -- downloads --------------------------------------------------------------------------------


def test_every_table_downloads_as_csv_and_xlsx(world, en, login):
    login(world.city)
    for name in TABLE_NAMES:
        response = en.get(f"/vouchers/bureau/report/{name}.csv?period=2026-03")
        assert response.status_code == 200, name
        assert response.get_data(as_text=True).startswith("\ufeff")  # read to the end
        assert response.mimetype == "text/csv"
        assert f"report-2026-03-city-{name}.csv" in response.headers["Content-Disposition"]
        xlsx = en.get(f"/vouchers/bureau/report/{name}.xlsx?period=2026-03")
        assert xlsx.status_code == 200 and xlsx.data[:2] == b"PK", name
    rows = list(
        csv.reader(
            io.StringIO(
                en.get("/vouchers/bureau/report/months.csv?period=2026-03").get_data(as_text=True)
            )
        )
    )
    assert rows[0][0] == "\ufeffMonth"
    assert rows[1] == ["2026-03", "4", "2300.00", "4", "105.00", "1", "3"]
    sheet = load_workbook(
        io.BytesIO(en.get("/vouchers/bureau/report/summary.xlsx?period=2026-03").data)
    ).active
    values = {row[0]: row[1] for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert Decimal(str(values["Central funds received (yuan)"])) == Decimal("10000")
    assert values["Elders served"] == 3
    assert en.get("/vouchers/bureau/report/nothing.csv?period=2026-03").status_code == 404
    assert en.get("/vouchers/bureau/report/months.pdf?period=2026-03").status_code in (400, 422)


def test_a_district_download_holds_the_district_only(world, en, login):
    login(world.officer_a)
    response = en.get("/vouchers/bureau/report/elders-by-district.csv?period=2026-03")
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert [r[0] for r in rows[1:]] == [world.a.name_en]
    assert "report-2026-03-210102-" in response.headers["Content-Disposition"]


# -- the PDF ----------------------------------------------------------------------------------


def test_the_pdf_of_a_month(world, client, login):
    login(world.city)
    response = client.get("/vouchers/bureau/report.pdf?period=2026-03")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    pdf = response.data
    assert pdf.startswith(b"%PDF")
    text = _text(pdf)
    assert "沈阳市 养老服务消费券 月度报告 2026年3月" in text
    assert "Monthly report" in text and "March 2026" in text
    assert "到账中央资金（元） Central funds received (yuan)" in text
    assert "10,000.00" in text and "2,300.00" in text
    assert "第 1 /" in text and "Page 1 of" in text
    # The charts are drawn in: their titles, in both languages.
    assert "按区统计服务老年人 Elders served by district" in text
    assert "按月发放面额与支付补贴（元）" in text
    fonts = _fonts(pdf)
    assert fonts and all(files == ("/FontFile2",) for _base, files in fonts), fonts
    assert all("WenQuanYiMicroHei" in base for base, _files in fonts)


def test_the_pdf_of_an_empty_period_and_of_a_year(world, client, login):
    login(world.city)
    empty = client.get("/vouchers/bureau/report.pdf?period=2031-07").data
    assert empty.startswith(b"%PDF")
    assert "本期暂无数据" in _text(empty)
    year = client.get("/vouchers/bureau/report.pdf?period=2026").data
    text = _text(year)
    assert "年度报告 2026年" in text and "Annual report" in text
    assert all(f"2026-{n:02d}" in text for n in range(1, 13))


def test_the_pdf_of_a_district(world, client, login):
    login(world.officer_a)
    text = _text(client.get("/vouchers/bureau/report.pdf?period=2026-03").data)
    assert "资金由全市统一接收" in text
    assert "到账中央资金" not in text and "1,500.00" in text


# -- the API ----------------------------------------------------------------------------------


def _token(db_session, user, scopes=("read",)) -> dict:
    _t, secret = issue_token(user, "Statistics system", list(scopes))
    db_session.commit()
    return {"Authorization": f"Bearer {secret}"}


def test_the_api_answers_the_figures(world, client, db_session):
    headers = _token(db_session, world.city)
    body = client.get("/api/v1/bureau/report?period=2026-03", headers=headers).get_json()
    assert body["period"] == "2026-03" and body["kind"] == "month"
    assert body["district"] is None
    assert body["funds"]["central_fen"] == 1_000_000 and body["funds"]["local_fen"] == 500_000
    assert body["totals"]["issued_fen"] == 230_000 and body["totals"]["redeemed_fen"] == 10_500
    assert body["elders_by_level"] == [
        {"level": "moderate", "count": 1},
        {"level": "severe", "count": 1},
        {"level": "complete", "count": 1},
    ]
    assert (body["providers_certified"], body["agencies_certified"]) == (2, 2)
    assert (body["flags_raised"], body["flags_cleared"], body["flags_rejected"]) == (3, 1, 1)
    assert body["reconciliation"][0]["status"] == "red"
    assert body["reconciliation"][0]["last_run_at"].endswith("+08:00")
    year = client.get("/api/v1/bureau/report?period=2026", headers=headers).get_json()
    assert len(year["months"]) == 12 and year["totals"]["redeemed"] == 5
    picked = client.get(
        "/api/v1/bureau/report?period=2026-03&district=210103", headers=headers
    ).get_json()
    assert picked["district"]["code"] == "210103" and picked["totals"]["issued"] == 1


def test_the_api_is_district_scoped(world, client, db_session):
    headers = _token(db_session, world.officer_a)
    body = client.get("/api/v1/bureau/report?period=2026-03", headers=headers).get_json()
    assert body["district"]["code"] == "210102"
    assert body["funds"] == {
        "scope": "district",
        "central_fen": None,
        "local_fen": None,
        "allocated_fen": 250_000,
        "allocations": [{"district": "210102", "allocated_fen": 250_000}],
    }
    assert [d["district"]["code"] for d in body["elders_by_district"]] == ["210102"]
    other = client.get("/api/v1/bureau/report?period=2026-03&district=210103", headers=headers)
    assert other.status_code == 404
    assert (
        client.get(
            "/api/v1/bureau/report.pdf?period=2026-03&district=210103", headers=headers
        ).status_code
        == 404
    )
    pdf = client.get("/api/v1/bureau/report.pdf?period=2026-03", headers=headers)
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")


def test_the_api_refuses_bad_periods_and_other_accounts(world, factory, client, db_session):
    headers = _token(db_session, world.city)
    for period in ("2026-13", "1999", "abc"):
        refused = client.get(f"/api/v1/bureau/report?period={period}", headers=headers)
        assert refused.status_code == 400
        assert refused.get_json()["error"]["code"] == "invalid_period"
        assert "2026-03" in refused.get_json()["error"]["message"]
    assert client.get("/api/v1/bureau/report").status_code == 401
    elder = _token(db_session, factory.user("report.api.elder", roles=["elder"]))
    assert client.get("/api/v1/bureau/report", headers=elder).status_code == 403


@pytest.mark.parametrize(
    ("lang", "name"), [("en", "Too many redemptions in one day"), ("zh-CN", "单日核销次数过多")]
)
def test_the_api_names_an_anomaly_rule(world, client, db_session, lang, name):
    from tests.vouchers.insight.test_report import add_flag

    add_flag(world, "daily_frequency")
    headers = _token(db_session, world.city) | {"Accept-Language": lang}
    body = client.get("/api/v1/bureau/report?period=2026-03", headers=headers).get_json()
    labels = {f["rule"]: f["label"] for f in body["flags"]}
    assert labels["daily_frequency"] == name
