"""What the browser tests do and measure on a page: signing in, sizes, colours.

The measuring runs as JavaScript inside Chromium, on computed styles and laid-out boxes,
so it sees the page as a phone shows it, not as the templates intend it.
"""

from __future__ import annotations

from pathlib import Path

import zxingcpp
from PIL import Image
from playwright.sync_api import BrowserContext, Page

from eldercare.demo import DEMO_PASSWORD

# Only QR codes, as the platform reads them (vouchers.redemption.qr_decode): a random module
# pattern can also pass for a 1-D barcode and add a second, false reading.
QR_ONLY = zxingcpp.BarcodeFormat.QRCode

# What a page's Content-Security-Policy refused (an inline script or style, a foreign source),
# said on the console: a page whose script the policy blocks can look right and not work.
_REPORT_CSP_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error(`CSP violation: ${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}`
                + ` at ${e.sourceFile || e.documentURI}:${e.lineNumber}`);
});
"""


def is_csp_violation(text: str) -> bool:
    return text.startswith("CSP violation:") or "Content Security Policy" in text


def watch_csp(context: BrowserContext, violations: list[str]) -> None:
    """Append to ``violations`` every CSP violation any page of ``context`` reports."""
    context.add_init_script(_REPORT_CSP_VIOLATIONS)

    def collect(message) -> None:
        if is_csp_violation(message.text):
            violations.append(f"{message.page.url if message.page else '?'}: {message.text}")

    context.on("console", collect)


def path_of(page: Page) -> str:
    return "/" + page.url.split("/", 3)[3]


def sign_in(page: Page, username: str, password: str = DEMO_PASSWORD) -> None:
    """Sign in through the real form, CSRF token and all, and arrive on the home page."""
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    alert = page.locator("[role=alert]")
    problem = alert.first.inner_text() if alert.count() else ""
    assert path_of(page) == "/", f"signing in as {username} failed: {problem!r}"


def sign_out(page: Page) -> None:
    with page.expect_navigation():
        page.click(".site-header form button[type=submit]")


def screenshot_qr(page: Page, path: Path, selector: str = "#qr-image") -> str:
    """The code the phone's screen shows, read from a screenshot as a camera would."""
    page.wait_for_function(f"document.querySelector({selector!r}).naturalWidth > 0")
    page.locator(selector).screenshot(path=str(path))
    seen = zxingcpp.read_barcodes(Image.open(path), formats=QR_ONLY)
    assert seen and "/r/" in seen[0].text, "the QR on the elder's screen does not read"
    return seen[0].text.rsplit("/r/", 1)[1]


def overflow(page: Page) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of the document: the first > the second means sideways
    scrolling, which elders on phones miss."""
    return tuple(
        page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
    )


# Shared by the measuring scripts below, which run inside the page.
_LIB = r"""
const shown = (el) => {
  if (!el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) return false;
  const r = el.getBoundingClientRect();
  // Not zero-sized, and not parked off-screen to the left like an unfocused skip link.
  return r.width > 0 && r.height > 0 && r.right > 0 && r.bottom + window.scrollY > 0;
};
const describe = (el) =>
  `<${el.tagName.toLowerCase()}> ` + JSON.stringify(
    (el.innerText || el.value || el.name || el.id || '').trim().replace(/\s+/g, ' ').slice(0, 50));
// Every rgb()/rgba() in a computed value, e.g. a colour or a box-shadow list.
const colours = (css) => (css.match(/rgba?\([^)]*\)/g) || []).map((c) => {
  const p = c.slice(c.indexOf('(') + 1, -1).split(/[\s,\/]+/).filter(Boolean).map(Number);
  return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
});
const over = (top, below) => ({
  r: top.r * top.a + below.r * (1 - top.a),
  g: top.g * top.a + below.g * (1 - top.a),
  b: top.b * top.a + below.b * (1 - top.a),
  a: 1,
});
// WCAG 2.x relative luminance and contrast ratio.
const channel = (v) => {
  const c = v / 255;
  return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
};
const luminance = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
const contrast = (a, b) => {
  const l1 = luminance(a), l2 = luminance(b);
  return (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
};
const hex = (c) => '#' + [c.r, c.g, c.b]
  .map((v) => Math.round(v).toString(16).padStart(2, '0')).join('');
// The colour behind ``el``: backgrounds composited from ``el`` outwards until an opaque
// one, onto a white page, so a translucent highlight counts as the colour it shows.
const backdrop = (el) => {
  const layers = [];
  for (let node = el; node; node = node.parentElement) {
    const style = getComputedStyle(node);
    if (style.backgroundImage !== 'none') return {unknown: 'background-image on ' + describe(node)};
    const bg = colours(style.backgroundColor)[0];
    if (!bg) return {unknown: 'background ' + style.backgroundColor};
    if (bg.a > 0) layers.push(bg);
    if (bg.a >= 1) break;
  }
  let colour = {r: 255, g: 255, b: 255, a: 1};
  for (const layer of layers.reverse()) colour = over(layer, colour);
  return {colour};
};
"""


def _script(params: str, body: str) -> str:
    return f"({params}) => {{\n{_LIB}\n{body}\n}}"


_FONT_SIZES = _script(
    "[selector, minPx]",
    r"""
  const bad = [];
  for (const el of document.querySelectorAll(selector)) {
    if (el.matches('input[type=hidden]') || !shown(el)) continue;
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (size < minPx) bad.push(`${describe(el)} is ${size}px`);
  }
  return bad;
""",
)


def small_text(page: Page, selector: str, min_px: float) -> list[str]:
    """Descriptions of the shown elements matching ``selector`` whose font is too small."""
    return page.evaluate(_FONT_SIZES, [selector, min_px])


def font_size(page: Page, selector: str = "body") -> float:
    return page.evaluate(
        "(s) => parseFloat(getComputedStyle(document.querySelector(s)).fontSize)", selector
    )


_TARGETS = _script(
    "[selector, minPx]",
    r"""
  const bad = [];
  let checked = 0;
  for (const el of document.querySelectorAll(selector)) {
    if (el.matches('input[type=hidden]') || !shown(el)) continue;
    checked += 1;
    const r = el.getBoundingClientRect();
    if (r.width < minPx || r.height < minPx) {
      bad.push(`${describe(el)} is ${r.width.toFixed(1)} x ${r.height.toFixed(1)}`);
    }
  }
  return {checked, bad};
""",
)


def small_targets(
    page: Page, selector: str = "a, button, input, select, textarea", min_px: float = 44
) -> tuple[int, list[str]]:
    """How many shown targets were measured, and those smaller than ``min_px`` square."""
    result = page.evaluate(_TARGETS, [selector, min_px])
    return result["checked"], result["bad"]


_CONTRAST = _script(
    "minRatio",
    r"""
  const fields = 'input:not([type=hidden]):not([type=checkbox]):not([type=radio]), '
    + 'select, textarea';
  const hasOwnText = (el) => el.matches(fields) || Array.from(el.childNodes).some(
    (n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
  const failures = [];
  let checked = 0;
  for (const el of document.body.querySelectorAll('*')) {
    if (['SCRIPT', 'STYLE', 'TEMPLATE', 'OPTION'].includes(el.tagName)) continue;
    if (!hasOwnText(el) || !shown(el)) continue;
    checked += 1;
    const text = (el.innerText || el.value || el.name || '').trim().replace(/\s+/g, ' ')
      .slice(0, 50);
    const css = getComputedStyle(el).color;
    const fg = colours(css)[0];
    const bg = backdrop(el);
    if (!fg || bg.unknown) {
      failures.push({text, ratio: null, why: bg.unknown || 'colour ' + css});
      continue;
    }
    const seen = fg.a < 1 ? over(fg, bg.colour) : fg;
    const ratio = contrast(seen, bg.colour);
    if (ratio < minRatio) {
      failures.push({text, ratio: Math.round(ratio * 100) / 100,
                     why: `${hex(seen)} on ${hex(bg.colour)} ${describe(el)}`});
    }
  }
  return {checked, failures};
""",
)


def contrast_failures(page: Page, min_ratio: float = 4.5) -> tuple[int, list[dict]]:
    """How many text-bearing elements were measured, and those below ``min_ratio``
    (``ratio`` None when the backdrop cannot be known, e.g. a background image)."""
    result = page.evaluate(_CONTRAST, min_ratio)
    return result["checked"], result["failures"]


def tab_to(page: Page, selector: str, max_presses: int = 40) -> None:
    """Reach ``selector`` with the Tab key, as a keyboard user would (so :focus-visible)."""
    target = page.locator(selector)
    for _ in range(max_presses):
        page.keyboard.press("Tab")
        if target.evaluate("(el) => el === document.activeElement"):
            return
    raise AssertionError(f"{selector} cannot be reached with the Tab key")


# The focus indicator must stand out from what surrounds the element (WCAG 1.4.11, 3:1);
# a two-tone ring passes when either of its colours does.
_FOCUS_RING = _script(
    "",
    r"""
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const around = backdrop(el.parentElement);
  if (around.unknown) return {element: describe(el), best: 0, why: around.unknown};
  const ring = [];
  if (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2) {
    ring.push(...colours(style.outlineColor));
  }
  if (style.boxShadow !== 'none') ring.push(...colours(style.boxShadow));
  const ratios = ring.map((c) => contrast(over(c, around.colour), around.colour));
  return {
    element: describe(el),
    outline: `${style.outlineStyle} ${style.outlineWidth} ${style.outlineColor}`,
    boxShadow: style.boxShadow,
    around: hex(around.colour),
    best: ratios.length ? Math.round(Math.max(...ratios) * 100) / 100 : 0,
  };
""",
)


def focus_ring(page: Page) -> dict:
    """The focused element's indicator and its best contrast against its surroundings."""
    return page.evaluate(_FOCUS_RING)
