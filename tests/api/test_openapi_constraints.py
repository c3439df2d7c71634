"""The published document states the rules the code applies (issue 13 item 10).

Each row was a request the document admitted and the code refused: the document now says
it, so that a client generated from it cannot send it. tests/api/test_schemathesis.py
proves the same across every operation by generating requests.
"""

import re
from datetime import date

import pytest

from eldercare.residents import compose_resident_id

NOT_BLANK = {"minLength": 1}


def _components(client):
    return client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]


def _query_parameter(client, path, name):
    spec = client.get("/api/v1/openapi.json").get_json()
    parameters = spec["paths"][path]["get"]["parameters"]
    return next(p["schema"] for p in parameters if p["name"] == name)


@pytest.mark.parametrize(
    ("component", "field", "stated"),
    [
        ("VouchersReverseRequest", "reason", NOT_BLANK),
        ("LinkRefusal", "reason", NOT_BLANK),
        ("RejectIn", "reason", NOT_BLANK),
        ("MarketplaceReviewRequest", "rating", {"minimum": 1, "maximum": 5}),
        ("MarketplaceBeds", "beds_total", {"minimum": 1, "maximum": 10_000}),
        ("MarketplaceBeds", "beds_free", {"minimum": 0}),
        ("AssessmentPolicyNew", "min_age", {"minimum": 50, "maximum": 100}),
        ("AssessmentPolicyNew", "assessment_validity_months", {"minimum": 1, "maximum": 60}),
        ("AssessmentDecision", "decision", {"enum": ["approve", "return"]}),
        ("AssessmentDecision", "assessment_ids", {"minItems": 1, "maxItems": 200}),
        ("VouchersKindRequest", "id_number", {"format": "resident-id"}),
        ("AssessmentEligibilityCheck", "id_number", {"format": "resident-id"}),
        ("AssessmentMoveOut", "id_number", {"format": "resident-id"}),
        ("LinkRequestNew", "id_number", {"format": "resident-id"}),
        ("RunIn", "month", {"pattern": r"^20\d{2}-(0[1-9]|1[0-2])$"}),
    ],
)
def test_the_document_states_the_rule(client, component, field, stated):
    schema = _components(client)[component]["properties"][field]
    assert {key: schema.get(key) for key in stated} == stated


def test_search_parameters_state_their_ranges_and_codes(client):
    path = "/api/v1/providers/search"
    lat = _query_parameter(client, path, "lat")
    assert (lat["minimum"], lat["maximum"]) == (-90, 90)
    assert _query_parameter(client, path, "min_stars")["maximum"] == 5
    assert _query_parameter(client, path, "district")["pattern"] == r"^[1-9]\d{5}$"


def test_the_id_pattern_admits_valid_numbers_and_not_misshapen_ones(client):
    pattern = _components(client)["AssessmentEligibilityCheck"]["properties"]["id_number"]
    regex = re.compile(pattern["pattern"])
    assert regex.search(compose_resident_id("210102", date(1944, 3, 12), 122))
    misshapen = ["", "Bank transfer", "010102194403121225", "210102194413121225", "21010219"]
    for wrong in misshapen:
        assert not regex.search(wrong), wrong


def test_the_return_url_pattern_is_what_the_card_endpoint_accepts(client):
    pattern = _components(client)["VouchersCardRequest"]["properties"]["return_url"]["pattern"]
    regex = re.compile(pattern)
    assert regex.search("https://pay.example.cn/back?x=1")
    assert regex.search("http://127.0.0.1:5000/")
    for wrong in ["pay", "ftp://a.cn/", "https://a b/", "https://例子.cn/"]:
        assert not regex.search(wrong), wrong


def test_every_path_answers_an_undocumented_method_with_405_and_allow(client):
    # RFC 9110: a 405 names the methods the resource has; the document lists the same ones.
    spec = client.get("/api/v1/openapi.json").get_json()
    checked = 0
    for path, operations in spec["paths"].items():
        documented = {m.upper() for m in operations if m != "parameters"}
        method = next(m for m in ("DELETE", "PATCH", "PUT", "POST") if m not in documented)
        url = re.sub(r"\{[^}]+\}", "1", path)
        response = client.open(url, method=method)
        assert response.status_code == 405, (method, url)
        allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
        assert documented <= allowed and method not in allowed, (url, allowed)
        checked += len(documented)
    assert checked >= 80


def test_the_rules_of_every_operation_are_stated_once(client):
    info = client.get("/api/v1/openapi.json").get_json()["info"]
    assert "NUL" in info["description"] and "Allow" in info["description"]
