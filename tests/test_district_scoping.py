import pytest


@pytest.fixture
def two_districts(factory):
    heping = factory.district("210102", "和平区")
    shenhe = factory.district("210103", "沈河区")
    in_heping = factory.resident(heping, name="和平居民")
    in_shenhe = factory.resident(shenhe, name="沈河居民")
    return heping, shenhe, in_heping, in_shenhe


def test_district_officer_lists_only_their_district(client, factory, login, two_districts):
    heping, _, _, _ = two_districts
    login(factory.user(roles=["bureau_officer"], district=heping))
    page = client.get("/bureau/residents/").get_data(as_text=True)
    assert "和平居民" in page
    assert "沈河居民" not in page


def test_other_districts_records_look_missing(client, factory, login, two_districts):
    heping, _, in_heping, in_shenhe = two_districts
    login(factory.user(roles=["bureau_approver"], district=heping))
    assert client.get(f"/bureau/residents/{in_heping.id}").status_code == 200
    assert client.get(f"/bureau/residents/{in_shenhe.id}").status_code == 404


def test_city_officer_sees_every_district(client, factory, login, two_districts):
    login(factory.user(roles=["bureau_officer"], district=None))
    page = client.get("/bureau/residents/").get_data(as_text=True)
    assert "和平居民" in page and "沈河居民" in page


def test_search_by_last_digits_of_id_number(client, factory, login, two_districts):
    _, _, in_heping, _ = two_districts
    login(factory.user(roles=["bureau_officer"]))
    page = client.get(f"/bureau/residents/?q={in_heping.id_number[-4:]}").get_data(as_text=True)
    assert "和平居民" in page and "沈河居民" not in page
