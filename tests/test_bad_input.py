"""Bad input anywhere is a clear 4xx that changes nothing, never a 500 (issue 13, item 9).

The walks below take the routes from ``app.url_map`` and the API's operations from its
OpenAPI document, so a new route or field is covered without being listed here. They send
what the probe sent: ids past the database's INTEGER, offsets past BIGINT, NUL characters
(PostgreSQL cannot store them in text), dates in year 9999 or 1, JSON nested 100,000 deep
and page numbers past any page. SQLite accepts most of these; CI runs them on PostgreSQL.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from eldercare.accounts import ROLES
from eldercare.audit import AuditLog
from eldercare.tokens import SCOPES, issue_token

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}
OUT_OF_RANGE_IDS = [str(2**31), str(2**63), str(-(2**31) - 1), "9" * 30]
HUGE_NUMBERS = [2**31, 2**63, -(2**63) - 1, 10**30]
BAD_DATES = ["9999-12-31", "0001-01-01"]
DEEP_JSON = "[" * 100_000 + "]" * 100_000
DATE_RANGE_EN = "Give a date between 1900-01-01 and 2100-12-31."
DATE_RANGE_ZH = "请填写 1900-01-01 至 2100-12-31 之间的日期。"


@pytest.fixture
def everyone(app_ctx, factory, db_session):
    """One account holding every role, signed in and with a token of every scope: it gets
    past the door of every route, so what is tested is how the route reads its input."""
    district = factory.district("210102", "和平区")
    user = factory.user("everyone", roles=sorted(ROLES), district=None)
    _token, secret = issue_token(user, "probe", sorted(SCOPES))
    db_session.commit()  # a savepoint: the first refused request rolls back only its own work
    return {"user": user, "secret": secret, "district": district}


def _audit_rows(db_session) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(AuditLog))


def _open(client, everyone, method, url, **kwargs):
    headers = {**EN, **kwargs.pop("headers", {})}
    if url.startswith("/api/"):
        headers["Authorization"] = f"Bearer {everyone['secret']}"
    return client.open(url, method=method, headers=headers, **kwargs)


@pytest.fixture
def signed_in(client, login, everyone):
    login(everyone["user"])
    return client


def _spec(client):
    return client.get("/api/v1/openapi.json").get_json()


def _resolve(spec, schema):
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _operations(spec):
    """(method, url with ids 1, operation) for every operation of the document."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method.upper(), re.sub(r"{\w+}", "1", path), operation


def _sample(spec, schema):
    """A value of the schema's shape, so that one bad field is not hidden by a missing one."""
    schema = _resolve(spec, schema)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    if kind == "array":
        return [_sample(spec, schema.get("items", {}))]
    if kind == "object" or "properties" in schema:
        return {name: _sample(spec, sub) for name, sub in schema.get("properties", {}).items()}
    return {"date": "2026-01-01", "date-time": "2026-01-01T09:00:00+08:00"}.get(
        schema.get("format"), "x"
    )


def _bad_values(schema):
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "integer":
        return HUGE_NUMBERS
    if fmt == "date":
        return BAD_DATES
    if fmt == "date-time":
        return [f"{day}T09:00:00+08:00" for day in BAD_DATES]
    if kind == "string":
        return ["a\x00b"]
    return []


# ----------------------------------------------------------------------------- ids in URLs


@pytest.mark.parametrize("value", OUT_OF_RANGE_IDS)
def test_every_id_in_a_url_past_the_integer_range_is_404(value, signed_in, everyone, app):
    answers = {}
    for rule in app.url_map.iter_rules():
        if not any(type(c).__name__ == "RowIdConverter" for c in rule._converters.values()):
            continue
        url = re.sub(r"<int:\w+>", value, rule.rule)
        url = re.sub(r"<(?:any\(([a-z]+)[^)]*\)|\w+):\w+>|<\w+>", lambda m: m[1] or "png", url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            answers[method, url] = _open(signed_in, everyone, method, url).status_code
    # 405 where the same path has a route for another method: werkzeug tells the method
    # apart before it reads the id. Either way no route ran.
    assert answers and set(answers.values()) <= {404, 405}, {
        k: v for k, v in answers.items() if v not in (404, 405)
    }
    assert {v for (method, _url), v in answers.items() if method == "GET"} == {404}


# ----------------------------------------------------------------------------- the API walk


def test_every_api_field_refuses_huge_numbers_nul_and_far_dates(client, everyone, db_session):
    """Each query parameter and body field of every operation, one at a time, gets a number
    past BIGINT, a NUL character or a date in year 9999 or 1: always a 4xx."""
    spec = _spec(client)
    audit_before = _audit_rows(db_session)
    server_errors, sent = [], 0
    for method, url, operation in _operations(spec):
        body_schema = (
            operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        ).get("schema")
        body = _sample(spec, body_schema) if body_schema else None
        cases = []
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "query":
                schema = _resolve(spec, parameter.get("schema", {}))
                items = _resolve(spec, schema.get("items", {})) if "items" in schema else schema
                cases += [("query", parameter["name"], v) for v in _bad_values(items)]
        if body_schema:
            for name, schema in _resolve(spec, body_schema).get("properties", {}).items():
                schema = _resolve(spec, schema)
                if schema.get("type") == "array":
                    items = _resolve(spec, schema.get("items", {}))
                    cases += [("body", name, [v]) for v in _bad_values(items)]
                else:
                    cases += [("body", name, v) for v in _bad_values(schema)]
        for where, name, value in cases:
            if where == "query":
                response = _open(client, everyone, method, url, query_string={name: str(value)})
            else:
                response = _open(client, everyone, method, url, json={**body, name: value})
            sent += 1
            assert response.status_code != 401, (url, response.get_json())  # still signed in
            if response.status_code >= 500:
                server_errors.append((method, url, where, name, value, response.status_code))
    assert sent > 100
    assert server_errors == [], "\n".join(map(repr, server_errors))
    assert _audit_rows(db_session) == audit_before


def test_every_list_operation_refuses_an_offset_or_limit_past_bigint(client, everyone):
    spec = _spec(client)
    listed = 0
    for method, url, operation in _operations(spec):
        names = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
        if method != "GET" or "offset" not in names:
            continue
        if _open(client, everyone, method, url).status_code != 200:
            continue  # the door is shut (e.g. no provider of one's own): not about paging
        listed += 1
        for query in ({"offset": 2**63}, {"limit": 2**63}, {"offset": -1}):
            response = _open(client, everyone, method, url, query_string=query)
            body = response.get_json()
            assert response.status_code == 422, (url, query, body)
            assert set(query) <= set(body["error"]["details"]["query"]), (url, body)
    assert listed >= 6


def test_an_offset_past_bigint_is_explained_in_chinese(client, everyone):
    response = _open(
        client, everyone, "GET", "/api/v1/bureau/vouchers", query_string={"offset": 2**63},
        headers=ZH,
    )  # fmt: skip
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["query"]["offset"] == [
        "偏移量（offset）应为 0 至 2147483647 之间的整数。"
    ]


def test_json_nested_100000_deep_is_400_at_every_json_operation(client, everyone, db_session):
    spec = _spec(client)
    audit_before = _audit_rows(db_session)
    answered = 0
    for method, url, operation in _operations(spec):
        if "application/json" not in operation.get("requestBody", {}).get("content", {}):
            continue
        response = _open(
            client, everyone, method, url, data=DEEP_JSON, content_type="application/json"
        )
        body = response.get_json()
        assert response.status_code == 400, (method, url, response.status_code)
        assert body["error"]["code"] == "json_too_deep", (url, body)
        assert "nested" in body["error"]["message"]
        answered += 1
    assert answered >= 20
    assert _audit_rows(db_session) == audit_before


def test_deep_json_is_refused_in_chinese_too(client, everyone):
    response = _open(
        client, everyone, "POST", "/api/v1/complaints", data=DEEP_JSON,
        content_type="application/json", headers=ZH,
    )  # fmt: skip
    assert response.status_code == 400
    assert "嵌套" in response.get_json()["error"]["message"]


def test_moderately_nested_json_still_reaches_the_schema(client, everyone):
    """The depth limit leaves room for every body the API documents: a few levels."""
    response = _open(client, everyone, "POST", "/api/v1/complaints", json={"x": [[[{"y": 1}]]]})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "invalid_input"


# ----------------------------------------------------------------------------- NUL characters


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer ect_ab\x00cd_secret"},
        {"Idempotency-Key": "key\x00"},
        {"X-Anything": "\x00"},
    ],
)
def test_a_nul_in_a_header_is_refused(client, everyone, headers):
    response = client.get("/api/v1/vouchers", headers={**EN, **headers})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "NUL characters" in response.get_json()["error"]["message"]


def test_a_nul_in_a_json_key_or_query_is_refused(client, everyone):
    response = _open(client, everyone, "POST", "/api/v1/complaints", json={"a\x00": "x"})
    assert response.status_code == 422
    response = _open(client, everyone, "GET", "/api/v1/vouchers", query_string={"month": "\x00"})
    assert response.status_code == 422
    assert "month" in response.get_json()["error"]["details"]


# ----------------------------------------------------------------------------- HTML pages


def _html_get_rules(app):
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and not rule.arguments and "static" not in rule.endpoint:
            yield rule.rule


# The lists that read ?page= through eldercare.paging.page_number.
PAGED = (
    "/audit/",
    "/messages",
    "/bureau/residents/",
    "/assessment/fee-refunds",
    "/vouchers/bureau/pool",
    "/vouchers/bureau/redemptions",
)


@pytest.mark.parametrize("page", [str(2**63), "9" * 30, str(10**7), "-5", "abc"])
def test_no_list_page_fails_on_its_page_number(page, signed_in, everyone, app):
    answers = {}
    for url in _html_get_rules(app):
        if url.startswith("/api/") or url in ("/logout", "/display/large-text"):
            continue
        answers[url] = _open(signed_in, everyone, "GET", url, query_string={"page": page})
    failing = {url: r.status_code for url, r in answers.items() if r.status_code >= 500}
    assert failing == {}
    if page.lstrip("-").isdigit() and int(page) > 0:
        # A page number no list can reach is a clear 404 where the page reads one.
        for url in PAGED:
            assert answers[url].status_code == 404, url
            assert "This page of results does not exist" in answers[url].get_data(as_text=True)
    else:
        for url in PAGED:
            assert answers[url].status_code == 200, url


# Every date, id or number a form or filter of the HTML pages reads (the names of their
# fields): each is sent, all at once, with the same bad value.
FORM_FIELDS = (
    "date", "day", "date_from", "date_to", "date_of_death", "start_date", "end_date",
    "moved_out_on", "effective_from", "certified_until", "valid_until", "assessed_on", "on",
    "month", "user_id", "resident_id", "agency_id", "district_id", "disputed_assessment_id",
    "provider_id", "booking_id", "service_id", "star_level", "page", "quantity", "amount",
)  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [*BAD_DATES, "99999-01-01", "0000-01-01", str(2**31), str(2**63), str(-(2**63) - 1)],
)
def test_html_forms_and_filters_refuse_far_dates_and_huge_ids(value, signed_in, everyone, app):
    """Every HTML route, its fields fed a date in year 9999 or 1, or a number past INTEGER."""
    answers = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or "static" in rule.endpoint or rule.rule == "/logout":
            continue
        url = re.sub(r"<int:\w+>", "1", rule.rule)
        url = re.sub(r"<(?:any\(([a-z]+)[^)]*\)|\w+):\w+>|<\w+>", lambda m: m[1] or "png", url)
        fields = dict.fromkeys(FORM_FIELDS, value)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method == "GET":
                response = _open(signed_in, everyone, method, url, query_string=fields)
            else:
                response = _open(signed_in, everyone, method, url, data=fields)
            answers[method, url] = response.status_code
            assert "/login" not in response.headers.get("Location", ""), url  # still signed in
    assert len(answers) > 100
    assert {k: v for k, v in answers.items() if v >= 500} == {}


@pytest.mark.parametrize("day", BAD_DATES)
@pytest.mark.parametrize(("headers", "message"), [(EN, DATE_RANGE_EN), (ZH, DATE_RANGE_ZH)])
def test_a_far_date_gets_a_form_error_and_changes_nothing(
    day, headers, message, signed_in, everyone, factory, db_session
):
    resident = factory.resident(everyone["district"])
    db_session.commit()
    audit_before = _audit_rows(db_session)
    response = signed_in.post(
        f"/assessment/residents/{resident.id}/move-out",
        data={"moved_out_on": day},
        headers=headers,
    )
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    db_session.refresh(resident)
    assert resident.moved_out_on is None
    assert _audit_rows(db_session) == audit_before


@pytest.mark.parametrize("day", BAD_DATES)
@pytest.mark.parametrize(("headers", "message"), [(EN, DATE_RANGE_EN), (ZH, DATE_RANGE_ZH)])
def test_a_far_date_in_the_api_is_a_422_naming_the_field(
    day, headers, message, client, everyone, factory, db_session
):
    resident = factory.resident(everyone["district"])
    db_session.commit()
    response = _open(
        client, everyone, "POST", "/api/v1/residents/move-out", headers=headers,
        json={"id_number": resident.id_number, "moved_out_on": day},
    )  # fmt: skip
    assert response.status_code == 422
    assert response.get_json()["error"]["details"]["json"]["moved_out_on"] == [message]
    response = _open(
        client, everyone, "POST", "/api/v1/bookings", headers=headers,
        json={"service_id": 1, "resident_id": resident.id, "slot_start": f"{day}T09:00:00+08:00"},
    )  # fmt: skip
    assert response.status_code == 422
    assert response.get_json()["error"]["details"]["json"]["slot_start"] == [message]


@pytest.mark.parametrize("value", [2**31, 2**63])
def test_an_id_past_integer_in_the_api_is_a_422_naming_the_field(value, client, everyone):
    response = _open(
        client, everyone, "POST", "/api/v1/complaints", headers=ZH,
        json={"provider_id": value, "text": "服务态度差"},
    )  # fmt: skip
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]["json"]
    assert details["provider_id"] == ["编号应为 1 至 2147483647 之间的整数。"]


@pytest.mark.parametrize("day", BAD_DATES)
def test_the_booking_form_refuses_a_slot_in_year_9999_or_1(day, app):
    from eldercare.forms import FormErrors
    from marketplace.views_bookings import parse_slot

    errors = FormErrors()
    with app.test_request_context(headers=EN):
        assert parse_slot(day, "09:00", errors) is None
        assert errors == {"slot_date": DATE_RANGE_EN}


@pytest.mark.parametrize("day", BAD_DATES)
def test_the_voucher_policy_form_refuses_a_start_in_year_9999_or_1(
    day, signed_in, everyone, db_session
):
    audit_before = _audit_rows(db_session)
    response = _open(
        signed_in, everyone, "POST", "/vouchers/bureau/policies", data={"effective_from": day}
    )
    assert response.status_code == 422
    assert DATE_RANGE_EN in response.get_data(as_text=True)
    assert _audit_rows(db_session) == audit_before


def test_the_document_states_the_date_range_and_the_id_range(client):
    """Generated clients (and Schemathesis) learn the bounds from the document, so a
    request the document allows is not refused by them."""
    spec = _spec(client)
    dates = ids = 0
    for _method, _url, operation in _operations(spec):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        if "schema" not in body:
            continue
        for name, schema in _resolve(spec, body["schema"]).get("properties", {}).items():
            schema = _resolve(spec, schema)
            if schema.get("format") in ("date", "date-time"):
                assert schema.get("pattern") == "^(19[0-9]{2}|20[0-9]{2}|2100)-", name
                dates += 1
            if name.endswith("_id") and schema.get("type") == "integer":
                assert (schema.get("minimum"), schema.get("maximum")) == (1, 2**31 - 1), name
                ids += 1
    assert dates >= 6 and ids >= 4


@pytest.mark.parametrize("month", ["9999-12", "0001-01"])
def test_a_fee_refund_month_outside_1900_to_2100_is_refused(month, signed_in, everyone, client):
    response = _open(
        signed_in, everyone, "GET", "/assessment/fee-refunds", query_string={"month": month}
    )
    assert response.status_code == 422
    assert "Enter the month as year-month" in response.get_data(as_text=True)
    response = _open(
        client, everyone, "GET", "/api/v1/assessment-fee-refunds", query_string={"month": month}
    )
    assert response.status_code == 422, response.get_json()


def test_the_audit_trail_pages_through_more_than_one_page(signed_in, everyone, db_session):
    """Its Previous/Next links once hid gettext behind a ``set _``: a 500 on every trail
    longer than a page."""
    from eldercare import audit

    audit.record_many(
        {"action": "probe.row", "object_type": "probe", "object_id": str(n), "actor": None}
        for n in range(120)
    )
    db_session.commit()
    for page, links in ((1, ["Next"]), (2, ["Previous", "Next"])):
        response = _open(signed_in, everyone, "GET", "/audit/", query_string={"page": page})
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert all(f">{link}</a>" in text for link in links), page
        assert f"page={page + 1}" in text
