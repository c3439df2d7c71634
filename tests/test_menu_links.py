"""Every link a signed-in person is shown on the home page (its cards and the header menu),
and every card on the pages those lead to (a provider's dashboard, the assessment index),
opens for them: none answers 403 or 404, none fails (issue 14, item 8).

One seeded demo city for the module (tests/authz_world.py); each demo account signs in and
follows each link it is offered with a GET.
"""

from __future__ import annotations

import pytest

from tests.authz_world import seeded_world
from tests.site_links import cards as _cards
from tests.site_links import links as _links


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with seeded_world(tmp_path_factory) as built:
        yield built


def test_every_menu_entry_and_card_opens_for_each_demo_role(world):
    refused = []
    signed_in = [who for who, cookie in world.cookies.items() if cookie]
    assert len(signed_in) >= 10  # every demo role, not a vacuous loop
    for who in signed_in:
        client = world.app.test_client()
        client.set_cookie("session", world.cookies[who])
        home = client.get("/", headers={"Accept-Language": "en"})
        assert home.status_code == 200, who
        links = _links(home.get_data(as_text=True))
        assert "/" in links and len(links) > 3, (who, links)  # the menu was there
        seen, cards = set(), set()
        for link in sorted(links):
            answer = client.get(link, headers={"Accept-Language": "en"})
            if answer.status_code == 200 and answer.mimetype == "text/html":
                cards |= _cards(answer.get_data(as_text=True))
            answer.close()
            seen.add(link)
            if answer.status_code in (403, 404) or answer.status_code >= 500:
                refused.append((who, link, answer.status_code))
        for link in sorted(cards - seen):
            answer = client.get(link, headers={"Accept-Language": "en"})
            answer.close()
            if answer.status_code in (403, 404) or answer.status_code >= 500:
                refused.append((who, f"{link} (a card)", answer.status_code))
    assert refused == [], "\n".join(map(str, refused))
