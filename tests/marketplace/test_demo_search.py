"""The demo must show a newcomer something: every district with demo providers has services
within the default 1 km of its centre, and 王秀英 finds help within 1 km of home."""

import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.residents import District
from marketplace.search import search_services


def test_demo_search_finds_services_near_district_centres_and_the_elder(app, app_ctx, db_session):
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    for code in ("210102", "210103", "210105", "210106", "210112"):
        district = db_session.scalar(sa.select(District).where(District.code == code))
        found = search_services(lat=district.center_latitude, lng=district.center_longitude)
        assert found, f"nothing within 1 km of the centre of {district.name_en}"
    wang = db_session.scalar(sa.select(User).where(User.username == "elder.wang")).resident
    near_home = search_services(lat=wang.latitude, lng=wang.longitude)
    assert {r.provider.name for r in near_home} >= {"和平区南湖社区养老服务站"}
