from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "eldercare/translations/zh_Hans_CN/LC_MESSAGES/messages.po"


def _source_msgids() -> set[str]:
    keywords = dict(DEFAULT_KEYWORDS, _l=None)
    found = set()
    for package in ("eldercare", "assessment", "marketplace", "vouchers"):
        method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map, keywords=keywords
        ):
            found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_string_in_the_code_has_a_chinese_translation():
    with CATALOG.open("rb") as handle:
        catalog = read_po(handle)
    translated = {
        m.id[0] if isinstance(m.id, tuple) else m.id  # plural entries: (singular, plural)
        for m in catalog
        if m.id and not m.fuzzy and all(m.string if isinstance(m.string, tuple) else [m.string])
    }
    missing = sorted(_source_msgids() - translated)
    assert not missing, f"untranslated (run `make messages`, then translate): {missing}"


def test_chinese_is_the_default(client):
    page = client.get("/login").get_data(as_text=True)
    assert '<html lang="zh-CN"' in page
    assert "<h1>登录</h1>" in page


def test_browser_language_english_is_honoured(client):
    page = client.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"}).get_data(
        as_text=True
    )
    assert "<h1>Sign in</h1>" in page


def test_language_switch_sticks_across_pages_and_overrides_the_browser(client):
    response = client.get("/lang/en?next=/login", headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    page = client.get("/login", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "<h1>Sign in</h1>" in page and '<html lang="en"' in page
    client.get("/lang/zh_CN")
    assert "<h1>登录</h1>" in client.get("/login").get_data(as_text=True)


def test_unknown_language_and_offsite_next_are_ignored(client):
    response = client.get("/lang/fr?next=https://evil.example/")
    assert response.headers["Location"] == "/"
    assert "<h1>登录</h1>" in client.get("/login").get_data(as_text=True)


def test_every_page_offers_the_switch_and_large_text(client):
    page = client.get("/").get_data(as_text=True)
    assert "/lang/en?next=" in page and "/lang/zh_CN?next=" in page
    assert 'id="large-text-toggle"' in page
    client.get("/display/large-text?next=/")
    assert 'class="large-text"' in client.get("/").get_data(as_text=True)
