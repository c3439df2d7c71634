"""A full resident ID number never appears in an address (issue 13 item 5).

Addresses end up in access logs, proxies and browser histories. Each form that looks a
resident up by ID number is followed as a browser would: the page is fetched, its form read
(method, action, CSRF token), submitted, and every redirect followed; the number must be in
no request's path or query and no Location. An old link carrying ``?id_number=`` does not
look anyone up.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest

ZH = {"Accept-Language": "zh-CN"}
EN = {"Accept-Language": "en"}


class _Forms(HTMLParser):
    """The page's forms: method, action, and their fields' names and values."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append(
                {"method": (attrs.get("method") or "get").lower(), "action": attrs.get("action")}
                | {"fields": {}}
            )
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""


def _id_number_form(html: str) -> dict:
    parser = _Forms()
    parser.feed(html)
    found = [f for f in parser.forms if "id_number" in f["fields"]]
    assert len(found) == 1, found
    return found[0]


class Browser:
    """Follows redirects itself, writing down every address it asks for or is sent to."""

    def __init__(self, client):
        self.client = client
        self.addresses: list[str] = []

    def go(self, method: str, url: str, data: dict | None = None):
        response = self.client.open(url, method=method, data=data, headers=ZH)
        self.addresses.append(url)
        while response.status_code in (301, 302, 303, 307, 308):
            url = urljoin(url, response.headers["Location"])
            self.addresses.append(response.headers["Location"])
            response = self.client.get(url, headers=ZH)
        return response

    def submit(self, page_url: str, id_number: str):
        page = self.go("GET", page_url)
        assert page.status_code == 200
        form = _id_number_form(page.get_data(as_text=True))
        assert form["method"] == "post", f"{page_url}: the ID number form uses GET"
        data = form["fields"] | {"id_number": id_number}
        return self.go("POST", form["action"], data)


@pytest.fixture
def officer_browser(csrf_client, world):
    response = csrf_client.get("/login")
    token = re.search(r'name="csrf_token"[^>]*?value="([^"]+)"', response.get_data(as_text=True))
    signed_in = csrf_client.post(
        "/login",
        data={
            "username": world.officer.username,
            "password": "correct-horse-42",
            "csrf_token": token.group(1),
        },
    )
    assert signed_in.status_code == 302
    return Browser(csrf_client)


def _assert_nowhere(browser: Browser, number: str) -> None:
    for address in browser.addresses:
        assert number not in address.upper(), address
    assert browser.addresses  # the flow was followed


def test_finding_a_residents_eligibility_keeps_the_number_out_of_addresses(officer_browser, world):
    number = world.elder.id_number
    page = officer_browser.submit("/assessment/", number.lower())
    assert page.status_code == 200
    assert world.elder.name in page.get_data(as_text=True)
    assert officer_browser.addresses[-1] == f"/assessment/residents/{world.elder.id}"
    _assert_nowhere(officer_browser, number)


def test_a_number_not_found_is_said_without_an_address_holding_it(officer_browser, world):
    page = officer_browser.submit("/assessment/", "110101190001011234")
    assert page.status_code == 404
    _assert_nowhere(officer_browser, "110101190001011234")


def test_applying_on_an_elders_behalf_keeps_the_number_out_of_addresses(officer_browser, world):
    number = world.elder.id_number
    page = officer_browser.submit("/assessment/apply", number)
    assert page.status_code == 200
    assert officer_browser.addresses[-1] == f"/assessment/apply?resident_id={world.elder.id}"
    assert f'name="resident_id" value="{world.elder.id}"' in page.get_data(as_text=True)
    _assert_nowhere(officer_browser, number)


@pytest.mark.parametrize("path", ["/assessment/residents/find", "/assessment/apply"])
def test_a_link_with_an_id_number_looks_nobody_up(client, login, world, path):
    login(world.officer)
    response = client.get(f"{path}?id_number={world.elder.id_number}", headers=ZH)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "身份证号码不会从链接或网址中查询" in page  # said in Chinese first
    assert world.elder.name not in page and "Location" not in response.headers
    english = client.get(f"{path}?id_number={world.elder.id_number}", headers=EN)
    assert "ID numbers are not looked up from a link" in english.get_data(as_text=True)
