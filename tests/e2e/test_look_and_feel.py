"""The base look and feel in a real Chromium at phone width, and signing in and out.

Elder-first rules from app.css: one column at 375 px (no sideways scrolling), body text of
at least 18 px, touch targets of at least 44 x 44 px, text contrast of at least 4.5:1,
a large-text mode and a language switch on every page.
"""

from __future__ import annotations

import re
import struct
from datetime import date

import pytest
from playwright.sync_api import Page, expect

from eldercare.residents import compose_resident_id
from tests.e2e.helpers import (
    contrast_failures,
    focus_ring,
    font_size,
    overflow,
    path_of,
    sign_in,
    sign_out,
    small_targets,
    small_text,
    tab_to,
)

BODY_TEXT = "body, p, label, input, select, textarea, button, li, td, th, dd, dt"
# 王秀英 of the demo city (eldercare/demo.py); the register must never show this in full.
WANG_ID = compose_resident_id("210102", date(1944, 3, 12), 122)


def _assert_phone_layout(page: Page, where: str) -> None:
    scroll_width, client_width = overflow(page)
    assert client_width == 375, f"{where}: viewport is {client_width}px, not a 375px phone"
    assert scroll_width <= client_width, (
        f"{where}: scrolls sideways ({scroll_width}px of content in {client_width}px)"
    )
    too_small = small_text(page, BODY_TEXT, 18)
    assert not too_small, f"{where}: text under 18px: {too_small}"


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
def test_one_column_and_18px_text_at_phone_width(new_page, locale):
    page = new_page(locale=locale)
    page.goto("/")
    assert font_size(page) >= 18
    _assert_phone_layout(page, f"home ({locale})")
    page.goto("/login")
    _assert_phone_layout(page, f"login ({locale})")
    expect(page.locator("#username")).to_be_visible()

    sign_in(page, "bureau.officer")
    _assert_phone_layout(page, f"home signed in ({locale})")
    page.goto("/bureau/residents/")
    _assert_phone_layout(page, f"resident register ({locale})")


def test_touch_targets_are_at_least_44px(page):
    page.goto("/login")
    checked, bad = small_targets(page)
    # header: brand, 中文, English, large text, sign in; form: 2 inputs and the button
    assert checked >= 8, f"only {checked} targets found on the login page"
    assert not bad, f"login page: targets under 44x44 px: {bad}"

    page.goto("/")
    checked, bad = small_targets(page)
    assert not bad, f"home page signed out: targets under 44x44 px: {bad}"

    sign_in(page, "admin")
    expect(page.locator("nav.main")).to_be_visible()
    checked, bad = small_targets(page)
    assert checked >= 8, f"only {checked} targets found on the admin's home page"
    assert not bad, f"home page signed in as admin: targets under 44x44 px: {bad}"

    # The skip link hides off-screen until a keyboard user reaches it: then it must show
    # and be big enough too.
    page.keyboard.press("Tab")
    skip = page.locator(".skip-link")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["x"] >= 0 and box["y"] >= 0, f"skip link off-screen: {box}"
    assert box["width"] >= 44 and box["height"] >= 44, f"focused skip link is {box}"


def _home_signed_out(page: Page) -> None:
    page.goto("/")


def _home_as_admin(page: Page) -> None:
    sign_in(page, "admin")


def _login_with_error(page: Page) -> None:
    page.goto("/login")
    page.fill("#username", "agency.admin")
    page.fill("#password", "not-the-password")
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    expect(page.locator(".notice.error")).to_be_visible()


def _login_after_redirect(page: Page) -> None:
    page.goto("/bureau/residents/")  # signed out: a flash asks to sign in
    expect(page.locator(".flash")).to_be_visible()


def _register_as_officer(page: Page) -> None:
    sign_in(page, "bureau.officer")
    page.goto("/bureau/residents/")
    expect(page.locator("table")).to_contain_text("王秀英")


def _home_after_sign_out(page: Page) -> None:
    sign_in(page, "auditor")
    sign_out(page)
    expect(page.locator(".flash")).to_be_visible()


@pytest.mark.parametrize(
    "reach",
    [
        _home_signed_out,
        _home_as_admin,
        _login_with_error,
        _login_after_redirect,
        _register_as_officer,
        _home_after_sign_out,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_text_contrast_is_at_least_4_5(page, reach):
    reach(page)
    checked, failures = contrast_failures(page, 4.5)
    assert checked >= 5, f"only {checked} text elements measured on {path_of(page)}"
    assert not failures, (
        "text under 4.5:1 contrast on "
        + path_of(page)
        + ":\n"
        + "\n".join(f"  {f['text']!r}: {f['ratio']} ({f['why']})" for f in failures)
    )


@pytest.mark.parametrize(
    "selector",
    [".prefs a[lang=en]", "#username", "main form button[type=submit]"],
    ids=["header-link", "input", "button"],
)
def test_keyboard_focus_is_clearly_visible(page, selector):
    page.goto("/login")
    tab_to(page, selector)
    ring = focus_ring(page)
    assert ring["best"] >= 3, f"focus indicator hard to see (WCAG 1.4.11 wants 3:1): {ring}"


def test_measurements_catch_known_defects(page):
    """The checks above would pass on anything if the measuring were broken."""
    page.set_content(
        """<html><body style="margin:0;font-size:18px">
        <p style="color:#777">grey on white, 4.48:1</p>
        <p style="color:#767676">grey on white, 4.54:1</p>
        <div style="background:#0a4f9e"><span style="background:rgba(255,255,255,.6);color:#fff">
          white on a pale highlight</span></div>
        <p style="font-size:16px">sixteen</p>
        <a href="#" style="display:inline-block;width:300px;height:30px">short target</a>
        <div style="width:500px">too wide</div>
        </body></html>"""
    )
    _checked, failures = contrast_failures(page, 4.5)
    assert sorted(f["text"] for f in failures) == [
        "grey on white, 4.48:1",
        "white on a pale highlight",
    ], failures
    assert small_text(page, "p", 18) == ['<p> "sixteen" is 16px']
    _checked, bad = small_targets(page)
    assert bad == ['<a> "short target" is 300.0 x 30.0']
    assert overflow(page) == (500, 375)


def test_large_text_mode_persists_and_switches_back(page):
    page.goto("/")
    assert font_size(page) == 18
    toggle = page.locator("#large-text-toggle")
    expect(toggle).to_have_text("大字")

    with page.expect_navigation():
        toggle.click()
    assert path_of(page) == "/", "the toggle should bring the reader back to the same page"
    assert font_size(page) == 22
    assert font_size(page, "main h1") > 22
    expect(page.locator("html")).to_have_class(re.compile(r"\blarge-text\b"))
    expect(toggle).to_have_text("标准字")

    page.goto("/login")
    assert font_size(page) == 22, "large text should stay on for the next page"
    assert font_size(page, "#username") == 22
    scroll_width, client_width = overflow(page)
    assert scroll_width <= client_width, f"large text scrolls sideways: {scroll_width}px"

    with page.expect_navigation():
        page.locator("#large-text-toggle").click()
    assert path_of(page) == "/login"
    assert font_size(page) == 18
    expect(page.locator("html")).not_to_have_class(re.compile(r"\blarge-text\b"))
    page.goto("/")
    assert font_size(page) == 18


def test_language_follows_browser_then_switch(new_page):
    page = new_page(locale="zh-CN")
    page.goto("/login")
    html = page.locator("html")
    expect(html).to_have_attribute("lang", "zh-CN")
    expect(page.locator("main h1")).to_have_text("登录")
    expect(page.locator(".prefs a[lang=zh-CN]")).to_have_attribute("aria-current", "true")

    with page.expect_navigation():
        page.click(".prefs a[lang=en]")
    assert path_of(page) == "/login", "switching language should stay on the same page"
    expect(html).to_have_attribute("lang", "en")
    expect(page.locator("main h1")).to_have_text("Sign in")
    expect(page.locator(".prefs a[lang=en]")).to_have_attribute("aria-current", "true")
    expect(page.locator(".prefs a[lang=zh-CN]")).not_to_have_attribute("aria-current", "true")

    page.goto("/")
    expect(html).to_have_attribute("lang", "en")
    expect(page.locator("main h1")).to_have_text("Eldercare service vouchers")

    with page.expect_navigation():
        page.get_by_role("link", name="中文").click()
    assert path_of(page) == "/"
    expect(html).to_have_attribute("lang", "zh-CN")
    expect(page.locator(".prefs a[lang=zh-CN]")).to_have_attribute("aria-current", "true")
    page.goto("/login")
    expect(html).to_have_attribute("lang", "zh-CN")
    expect(page.locator("main h1")).to_have_text("登录")


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_sign_in_see_register_and_sign_out(page, tmp_path):
    sign_in(page, "bureau.officer")
    expect(page.locator(".site-header")).to_contain_text("市民政局 刘科员")
    expect(page.locator("main")).to_contain_text("市民政局 刘科员")
    expect(page.locator(".site-header a[href='/login']")).to_have_count(0)

    shot = tmp_path / "home-signed-in.png"
    page.screenshot(path=str(shot), full_page=True)
    width, height = _png_size(shot)
    assert width == 375 and height >= 812, f"screenshot is {width} x {height}"

    with page.expect_navigation():
        page.click("nav.main a[href='/bureau/residents/']")
    row = page.locator("table tbody tr", has_text="王秀英")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_contain_text("**********")
    assert WANG_ID not in page.content(), "the full resident ID number is on the page"

    sign_out(page)
    assert path_of(page) == "/"
    expect(page.locator(".site-header")).not_to_contain_text("市民政局 刘科员")
    expect(page.locator(".site-header a[href='/login']")).to_be_visible()
    expect(page.locator("nav.main")).to_have_count(0)

    page.goto("/bureau/residents/")
    assert path_of(page).startswith("/login?next="), "the register is open after signing out"
    expect(page.locator("main")).not_to_contain_text("王秀英")


def test_wrong_password_shows_error_and_stays_on_login(page, tmp_path):
    page.goto("/login")
    page.fill("#username", "bureau.approver")
    page.fill("#password", "demo-pass-2024")
    with page.expect_navigation():
        page.click("main form button[type=submit]")

    assert path_of(page) == "/login"
    expect(page.locator(".notice.error[role=alert]")).to_have_text("用户名或密码不正确。")
    expect(page.locator("main h1")).to_have_text("登录")
    expect(page.locator(".site-header")).not_to_contain_text("赵科长")
    expect(page.locator("#password")).to_have_value("")  # a password is never sent back

    shot = tmp_path / "login-error.png"
    page.screenshot(path=str(shot), full_page=True)
    width, _height = _png_size(shot)
    assert width == 375 and shot.stat().st_size > 1000

    # The same name with the right password still gets in: one failure locks nothing.
    sign_in(page, "bureau.approver")
    expect(page.locator(".site-header")).to_contain_text("赵科长")


DESK = {"width": 1280, "height": 900}
# The bureau's desk pages whose tables hold links (a month, a statement, an elder, a record):
# each link is a target a finger (or an unsteady hand on a mouse) must hit, on a desk screen
# as on a phone.
DESK_TABLE_PAGES = [
    ("bureau.approver", "/settlement/"),
    ("bureau.approver", "/vouchers/bureau/pool"),
    ("bureau.approver", "/vouchers/bureau/redemptions"),
    ("bureau.approver", "/settlement/bank"),
    ("bureau.officer", "/bureau/residents/"),
    ("auditor", "/audit/"),
]


def test_links_in_desk_tables_are_at_least_44px(new_page):
    measured, too_small = {}, {}
    signed_in = None
    page = new_page(viewport=DESK)
    for username, path in DESK_TABLE_PAGES:
        if username != signed_in:
            if signed_in:
                sign_out(page)
            sign_in(page, username)
            signed_in = username
        page.goto(path)
        checked, bad = small_targets(page, "main table a")
        measured[path] = checked
        if bad:
            too_small[path] = bad
    assert not too_small, f"table links under 44x44 px: {too_small}"
    # The demo city fills these tables with links (the others may have none today): an empty
    # table would measure nothing.
    filled = ("/settlement/", "/vouchers/bureau/redemptions", "/bureau/residents/")
    assert all(measured[p] for p in filled), measured
