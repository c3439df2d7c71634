"""Every demo role, in both languages, opens every page its menus offer, in Chromium (issue 14:
"a browser test signs in as every demo role and opens every page reachable from that role's
menus in both languages with no 4xx/5xx and no words of the other language outside data").

Each account signs in through the real form in a context of its own whose browser speaks
zh-CN or English (Accept-Language, as a phone would send it), then opens every link of the home
page (header menu, home cards) and every card of the pages those lead to, one page down, as
tests/test_menu_links.py does with the test client. On each page: the answer is below 400,
the console shows no error (a failed script, a missing file, a CSP refusal), and the text
shown (``document.body.innerText``, the title, labels, placeholders and tips) holds no words
of the other language except data:

- a zh-CN page may show no Latin word (two letters or more) but the few the platform shows
  on purpose (ALLOWED_LATIN); e-mail and web addresses, codes (a token with a digit: credit
  codes, licence and voucher numbers) and identifiers (joined by dots or underscores:
  usernames, file names) are not words;
- an English page may show no Han character but the language switcher's own "中文";
- on both, what the page marks as code (``<code>``, ``<kbd>``, ``<samp>``) or not to be
  translated (``translate="no"``) is read or typed as it is, and is not looked at.

Data is what people and the demo typed: names (also masked), addresses, services, reasons
(DATA_COLUMNS), read from the live server's database when the test starts, not written into
this file.
"""

from __future__ import annotations

import re
from importlib import import_module

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page

from eldercare import stored_text
from eldercare.db import db
from eldercare.residents import mask_name
from tests.e2e.helpers import path_of, sign_in
from tests.site_links import cards, links

# Every role of the demo city, and the variations whose menus differ: a district-scoped
# officer, a second approver, the administrator and a caregiver of a second provider.
ACCOUNTS = (
    "admin",
    "bureau.officer",
    "heping.officer",
    "bureau.approver",
    "bureau.approver2",
    "auditor",
    "agency.admin",
    "assessor.li",
    "provider.admin",
    "provider.staff",
    "provider.shengjing",
    "beishichang.staff",
    "elder.wang",
    "family.zhang",
)
LOCALES = ("zh-CN", "en")

# Links that change a preference or end the session rather than show a page of the menu.
NOT_PAGES = ("/lang/", "/display/", "/logout")

# Latin words a zh-CN page shows on purpose: names of formats and things that have no
# Chinese name people use (a QR code is "QR码"), and the switcher's own label "English".
ALLOWED_LATIN = {"QR", "PIN", "API", "CSV", "XLSX", "PDF", "SVG", "ID", "URL", "English"}
ALLOWED_LATIN |= {
    "Excel",  # the spreadsheet residents and assessments are imported from
    "JPEG",  # the picture formats a provider may upload, and their size limit
    "PNG",
    "KB",
    "MB",
    "GB",  # GB/T 42195, the national standard the assessment follows
}
_ALLOWED_LATIN = {word.casefold() for word in ALLOWED_LATIN}
# The switcher's own label for Chinese, shown on every English page.
ALLOWED_HAN = {"中文"}

# Columns whose values are data (names, addresses, what people typed), shown as stored in
# either language: ("module:Model", column, ...).
DATA_COLUMNS = (
    ("eldercare.accounts:User", "username", "display_name", "email"),
    ("eldercare.residents:Resident", "name", "street", "address"),
    ("eldercare.account_links:AccountLinkRequest", "name", "refusal_reason"),
    ("marketplace.models:Provider", "name", "address", "contact_name", "status_reason"),
    ("marketplace.models:Provider", "bank_account_name", "bank_name"),
    ("marketplace.models:ProviderDocument", "original_filename"),
    ("marketplace.models:Service", "title", "description", "unit"),
    ("marketplace.models:Booking", "note", "cancel_reason"),
    ("marketplace.models:Review", "text"),
    ("marketplace.models:Complaint", "text", "resolution"),
    ("assessment.models:Agency", "name", "status_reason"),
    ("assessment.models:Assessor", "name"),
    ("assessment.models:Assessment", "application_note", "review_note", "diagnoses"),
    ("assessment.models:FeeRefund", "payee_account_name", "payee_bank_name"),
    ("vouchers.settlement.models:Statement", "payee_account_name", "payee_bank_name"),
    ("vouchers.settlement.models:Statement", "rejection_reason"),
    ("vouchers.settlement.models:PayeeChange", "account_name", "bank_name", "reason"),
    ("vouchers.settlement.models:BankTransfer", "payee_account_name", "payee_bank_name"),
    ("vouchers.settlement.models:BankTransfer", "bank_reason"),
    ("vouchers.settlement.models:SettlementException", "resolution"),
    ("vouchers.integrity.models:RedemptionFlag", "reason"),
    ("vouchers.models:Redemption", "reversal_reason"),
    ("vouchers.models:ParkedEvent", "resolution_note"),
    # What the bureau types: top-up and allocation memos, a bureau-resolved payment's reason.
    # The platform's own memos and reasons are stored as codes (eldercare.stored_text) and
    # never shown as stored, so listing the columns cannot hide one of them.
    ("vouchers.models:JournalEntry", "memo"),
    ("vouchers.models:Redemption", "failure_reason"),
    ("vouchers.models:PaymentAttempt", "note"),
)

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A web address or a path of this site ("/vouchers/scan"), not a slash between two words.
_WEB_ADDRESS = re.compile(r"(?:https?://|(?<![^\s(（:：])/)[A-Za-z0-9_./?=&%:#~-]+")
# A run of letters and digits, joined by the marks codes and names use inside them.
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-._][A-Za-z0-9]+)*")


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _latin_words(text: str) -> set[str]:
    """The Latin words of ``text`` that are words of a language: a token holding a digit is a
    code (a credit code, a licence or voucher number, LN-PG-2025-001), one joined by dots or
    underscores an identifier (a username, a file name, an audit action); e-mail and web
    addresses are neither."""
    words = set()
    for token in _TOKEN.findall(_WEB_ADDRESS.sub(" ", _EMAIL.sub(" ", text))):
        if re.search(r"[0-9._]", token):
            continue
        words |= {part for part in token.split("-") if len(part) >= 2}
    return words


class DataText:
    """The values the pages may show as stored, whatever the page's language: a page's
    foreign words are looked for again once the values holding them are taken out."""

    def __init__(self, values: list[str]):
        self.values = sorted({_squash(v) for v in values if v.strip()}, key=len, reverse=True)

    def foreign_words(self, text: str, locale: str) -> list[str]:
        text = _squash(text)
        found = self._foreign(text, locale)
        if found:  # only then: taking every value out of every page would be slow
            # A Han run of the page may join two values (an address after a name).
            pieces = set("".join(found)) if locale == "en" else found
            for value in self.values:
                if any(piece in value for piece in pieces) and value in text:
                    text = text.replace(value, " ")
            found = self._foreign(text, locale)
        return sorted(found)

    @staticmethod
    def _foreign(text: str, locale: str) -> set[str]:
        if locale == "en":
            return {run for run in _HAN.findall(text) if run not in ALLOWED_HAN}
        return {w for w in _latin_words(text) if w.casefold() not in _ALLOWED_LATIN}


_NAMES = (("eldercare.residents:Resident", "name"), ("assessment.models:Assessor", "name"))


def _column_values(sources) -> list[str]:
    values = []
    for source, *columns in sources:
        module, name = source.split(":")
        model = getattr(import_module(module), name)
        for column in columns:
            for value in db.session.scalars(sa.select(getattr(model, column))):
                # The platform's own stored text is not data: a code a page failed to say
                # in its reader's language must show up as foreign words, not be let pass.
                if value and stored_text.decode(value) is None:
                    values.append(stored_text.render(value))  # typed text, as shown
    return values


@pytest.fixture(scope="module")
def data_text(live_server_app) -> DataText:
    with live_server_app.app_context():
        try:
            values = _column_values(DATA_COLUMNS)
            # Pages that need not show a whole name show it masked ("王*英").
            values += [mask_name(name) for name in _column_values(_NAMES)]
            return DataText(values)
        finally:
            db.session.remove()


# The text a person is given: the page's title, its visible text less what the page marks as
# code or not to be translated (commands, identifiers, the audit trail's stored JSON, the
# voucher code to type: read or typed as they are, in either language), and what a screen
# reader or a pointer shows (labels, placeholders, tips).
_SHOWN_TEXT = """() => {
  let text = document.body.innerText;
  for (const code of document.body.querySelectorAll('code, kbd, samp, [translate=no]')) {
    const shown = code.innerText;
    if (shown.trim()) text = text.replace(shown, ' ');
  }
  const said = [];
  for (const el of document.body.querySelectorAll('[aria-label], [placeholder], [title], [alt]')) {
    for (const name of ['aria-label', 'placeholder', 'title', 'alt']) {
      if (el.hasAttribute(name)) said.push(el.getAttribute(name));
    }
  }
  return [document.title, text, ...said].join('\\n');
}"""


def _open(page: Page, path: str, problems: list[str], data: DataText, locale: str) -> str:
    """Open ``path``; note what is wrong with it; its HTML (empty when it is not a page)."""
    response = page.goto(path)
    status = response.status if response else 0
    if status >= 400 or response is None:
        problems.append(f"{path}: HTTP {status}")
        return ""
    if "text/html" not in (response.header_value("content-type") or ""):
        return ""
    lang = "zh-CN" if locale == "zh-CN" else "en"
    shown = page.evaluate("() => document.documentElement.lang")
    if shown != lang:
        problems.append(f"{path}: <html lang={shown!r}>, not {lang!r}")
    foreign = data.foreign_words(page.evaluate(_SHOWN_TEXT), locale)
    if foreign:
        problems.append(f"{path} ({path_of(page)}): words of the other language: {foreign}")
    return page.content()


def _pages_of(html: str) -> set[str]:
    return {link for link in links(html) if not link.startswith(NOT_PAGES)}


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("username", ACCOUNTS)
def test_every_page_of_every_role_in_both_languages(new_page, data_text, username, locale):
    page = new_page(locale=locale)
    console_errors: list[str] = []
    page.on(
        "console",
        lambda m: m.type == "error" and console_errors.append(f"{path_of(page)}: {m.text}"),
    )
    page.on("pageerror", lambda e: console_errors.append(f"{path_of(page)}: {e}"))
    sign_in(page, username)

    problems: list[str] = []
    home = _open(page, "/", problems, data_text, locale)
    menu = _pages_of(home)
    assert len(menu) > 3, (username, menu)  # the menu was there: not a vacuous walk
    below = set()
    for path in sorted(menu - {"/"}):
        below |= cards(_open(page, path, problems, data_text, locale))
    for path in sorted(below - menu):
        if not path.startswith(NOT_PAGES):
            _open(page, path, problems, data_text, locale)

    assert problems + console_errors == [], f"{username} ({locale}):\n" + "\n".join(
        problems + console_errors
    )


def test_the_language_check_flags_words_and_spares_data_codes_and_names():
    """The check the walk relies on: an English word on a zh-CN page and a Han word on an
    English page are found; data, codes, identifiers and the allow-lists are not."""
    data = DataText(["和平区南湖社区养老服务站", "Sunshine Home Care", "王秀英"])
    zh = "保存 Save 和平区南湖社区养老服务站 Sunshine Home Care 扫描 QR 码 LN-PG-2025-001"
    zh += " 用户名 zhou.qiang 邮箱 a.b@example.com 网址 https://example.com/x 见 /vouchers/scan"
    zh += " 价格 5 元/times"  # a slash between words is no web address
    assert data.foreign_words(zh, "zh-CN") == ["Save", "times"]
    en = "Save 王秀英 中文 LN-PG-2025-001 和平区南湖社区养老服务站王秀英 provider 备案"
    assert data.foreign_words(en, "en") == ["备案"]
