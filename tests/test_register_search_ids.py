"""The resident register's search keeps ID numbers out of addresses (issue 13 item 5).

The search takes a name or the last digits of an ID number; someone can type a whole number
there. The form is POSTed (the number travels in the body) and the pager posts too; an
address whose ``?q=`` holds more than the last four characters of an ID number is refused
without searching.
"""

from __future__ import annotations

import re

import pytest

ZH = {"Accept-Language": "zh-CN"}


@pytest.fixture
def resident(factory):
    return factory.resident(factory.district("210102", "和平区"), name="和平居民")


@pytest.fixture
def officer(factory, login):
    login(factory.user(roles=["bureau_officer"]))


def test_the_search_form_posts(client, officer, resident):
    page = client.get("/bureau/residents/").get_data(as_text=True)
    form = re.search(r'<form[^>]*role="search"[^>]*>', page).group(0)
    assert 'method="post"' in form


def test_a_posted_full_number_finds_the_resident(client, officer, resident):
    answer = client.post("/bureau/residents/", data={"q": resident.id_number.lower()})
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert "和平居民" in page


def test_an_address_holding_a_full_number_searches_nothing(client, officer, resident):
    answer = client.get(f"/bureau/residents/?q={resident.id_number}", headers=ZH)
    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    assert "和平居民" not in page
    assert "身份证号码不会从链接或网址中查询" in page


def test_a_name_or_last_digits_still_work_from_an_address(client, officer, resident):
    by_name = client.get("/bureau/residents/?q=和平").get_data(as_text=True)
    by_digits = client.get(f"/bureau/residents/?q={resident.id_number[-4:]}")
    assert "和平居民" in by_name
    assert by_digits.status_code == 200 and "和平居民" in by_digits.get_data(as_text=True)


def test_the_pager_posts_the_search(client, officer, factory):
    district = factory.district("210102", "和平区")
    for n in range(51):
        factory.resident(district, name=f"同名居民{n}")
    page = client.post("/bureau/residents/", data={"q": "同名"}).get_data(as_text=True)
    assert "q=" not in " ".join(re.findall(r'href="([^"]*)"', page))
    pager = re.search(r'<div class="pager">(.*?)</div>', page, re.S).group(1)
    assert 'method="post"' in pager and 'name="page" value="2"' in pager
    second = client.post("/bureau/residents/", data={"q": "同名", "page": "2"})
    assert "同名居民" in second.get_data(as_text=True)


def test_the_search_as_a_browser_sends_it(csrf_client, factory, resident):
    """With CSRF on, as in production: the page's own token goes with the posted number."""
    user = factory.user(roles=["bureau_officer"])
    token = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')
    login_page = csrf_client.get("/login").get_data(as_text=True)
    csrf_client.post(
        "/login",
        data={
            "username": user.username,
            "password": "correct-horse-42",
            "csrf_token": token.search(login_page).group(1),
        },
    )
    page = csrf_client.get("/bureau/residents/").get_data(as_text=True)
    form = page[page.index('role="search"') :]
    answer = csrf_client.post(
        "/bureau/residents/",
        data={"q": resident.id_number, "csrf_token": token.search(form).group(1)},
    )
    assert answer.status_code == 200 and "和平居民" in answer.get_data(as_text=True)
