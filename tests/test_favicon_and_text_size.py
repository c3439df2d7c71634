"""Issue 14 item 10: the shell has a favicon served from our own origin (the CSP allows only
'self'), and no style sheet of ours sets text below the 18 px minimum of the look."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOT_PX = 18  # html { font-size: 18px } in eldercare/static/css/app.css


def test_every_page_links_a_local_svg_favicon_that_is_served(client):
    html = client.get("/auth/login").get_data(as_text=True)
    link = re.search(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)"', html)
    assert link, "base.html links no favicon"
    href = link.group(1)
    assert href.startswith("/"), "the favicon must come from our own origin (CSP 'self')"
    with client.get(href) as icon:  # a static file: closing the response closes the file
        assert icon.status_code == 200
        assert icon.mimetype == "image/svg+xml"
        assert b"<svg" in icon.data


def font_sizes_in_px(css: str):
    """Each (selector, size in px) of the sheet; em counts against the 18 px root, as our
    sheets only use it inside body text."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        for number, unit in re.findall(r"font-size:\s*([\d.]+)(px|rem|em)\b", body):
            size = float(number) if unit == "px" else float(number) * ROOT_PX
            yield selector.strip(), size


def test_no_style_sheet_sets_text_under_18px():
    sheets = [p for p in ROOT.glob("*/**/static/**/*.css") if ".venv" not in p.parts]
    assert any(p.name == "assessment.css" for p in sheets)
    too_small = [
        f"{p.relative_to(ROOT)}: {selector} {size:.1f}px"
        for p in sheets
        for selector, size in font_sizes_in_px(p.read_text(encoding="utf-8"))
        if size < ROOT_PX
    ]
    assert not too_small, too_small


def test_the_size_check_sees_a_small_rule():
    # The parser itself: a helper-text rule at 0.9rem is 16.2 px and is caught.
    assert list(font_sizes_in_px(".hint { color: red; font-size: 0.9rem; }")) == [(".hint", 16.2)]
