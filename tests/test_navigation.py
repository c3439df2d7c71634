EN = {"Accept-Language": "en"}


def _menu(client):
    page = client.get("/", headers=EN).get_data(as_text=True)
    return page[page.index('<nav class="main"') : page.index("</nav>")]


def test_each_role_sees_its_own_destinations(client, factory, login):
    login(factory.user("an-elder", roles=["elder"]))
    menu = _menu(client)
    assert "My bookings" in menu and "My assessment" in menu and "Find services" in menu
    assert "Audit trail" not in menu and "Provider certification" not in menu
    client.post("/logout")
    login(factory.user("an-auditor", roles=["auditor"]))
    menu = _menu(client)
    assert "Audit trail" in menu and "My bookings" not in menu


def test_home_cards_come_from_the_same_destinations(client, factory, login):
    login(factory.user("clerk", roles=["bureau_officer"]))
    page = client.get("/", headers=EN).get_data(as_text=True)
    assert 'href="/marketplace/bureau/providers"' in page  # a card registered by marketplace
    assert "Applications, suspensions, renewals and star levels" in page
    assert "Tokens for devices and partner systems" not in page  # the admin's card


def test_visitors_get_the_invitation_but_no_menu(client):
    page = client.get("/", headers=EN).get_data(as_text=True)
    assert "Find eldercare services near you" in page
    assert '<nav class="main"' not in page


# Pages every signed-in person may open: they need no rule of their own.
OPEN_TO_ALL = {"marketplace.search", "messages.index"}


def test_every_destination_is_offered_by_the_rule_its_view_enforces(app):
    """The menus ask the view's recorded roles_required (eldercare.auth.may_open); a page
    that checked its callers only inside its body would be offered to people it refuses."""
    undeclared = [
        d.endpoint
        for d in app.extensions["destinations"]
        if d.endpoint not in OPEN_TO_ALL
        and not hasattr(app.view_functions[d.endpoint], "access")
    ]
    assert undeclared == []
