"""Open the built book in a real browser and check what a reader sees (``make test-site``).

    python -m book._sitecheck [SITE]        # SITE defaults to _build/html (run `make book` first)

The site is served on 127.0.0.1 (a free port) and every HTML page is opened in headless
Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright; Playwright's own browser
download needs the internet), at a desktop width (1,280 px) and a phone width (390 px).
The checks, each counted and reported by name:

``http``        every page answers 200 and every file a page asks for exists
``console``     no error in the browser's console and no uncaught exception
``offline``     no request leaves 127.0.0.1 (such requests are blocked and reported)
``math``        every formula is typeset (as many rendered as the HTML holds, no MathJax
                error) and no raw TeX (``$...$``, ``\\(``, ``\\frac``) or raw MyST
                (``{cite}`...```) is left in the text
``baseline``    inline formulas sit on the baseline of the text around them
``images``      every image loads (``naturalWidth > 0``)
``figure-size`` at 1,280 px a figure is shown at 90-110 % of the width it was drawn at,
                so its labels have the size the figure style gave them; at 390 px at least
                90 % (it scrolls sideways in its frame rather than shrink)
``overflow``    no code, formula or table is cut off at either width: what does not fit
                scrolls sideways inside its own box
``sidebar``     each page's sidebar links every page of the book
``titles``      no two pages share a title
``links``       every internal link and citation reaches an existing page and anchor
``search``      the search page finds a known word (``momentum``)
``downloads``   a page's notebook download carries the outputs the page shows

Screenshots of the intro and the first chapter at both widths, and a JSON report, go to
``_build/site-check/``. The exit status is 0 only when every page was opened and no
check failed; each failure names the page, the element and what is wrong. Without
Chromium (or Playwright) it fails with the command that installs it: it never passes
without having opened a page.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INSTALL_CHROMIUM = "apt-get update && apt-get install -y chromium chromium-driver"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
SEARCH_WORD = "momentum"
BASELINE_TOLERANCE_PX = 1.5
FIGURE_SCALE = (0.9, 1.1)  # displayed width / drawn width at the desktop width (on a phone: at least 0.9)
FIGURE_MIN_WIDTH = 300  # images narrower than this (icons, badges) are not figures
TIMEOUT_MS = 60_000
SPHINX_PAGES = {"genindex.html", "search.html", "py-modindex.html"}  # generated, not in the table of contents
CHECKS = ("http", "console", "offline", "math", "baseline", "images", "figure-size", "overflow",
          "sidebar", "titles", "links", "search", "downloads")

# Text a reader should never see: TeX that MathJax did not typeset, or MyST that was not parsed.
RAW_PATTERNS = [
    (re.compile(r"\\\(|\\\)|\\\[|\\\]"), "TeX delimiter"),
    (re.compile(r"\$\$"), "TeX delimiter"),
    (re.compile(r"(?<![\w$])\$(?=\S)[^$\n]{1,200}?(?<=\S)\$(?![\w$])"), "TeX between dollars"),
    (re.compile(r"\\(?:frac|mathbb|mathcal|mathrm|sqrt|sum|prod|nabla|alpha|beta|gamma|eta|theta|lambda|"
                r"sigma|mu|kappa|epsilon|varepsilon|cdot|left|right|begin|end|operatorname|top|leq|geq)(?![A-Za-z])"),
     "TeX command"),
    (re.compile(r"\{(?:cite|cite:[a-z]+|glue|glue:[a-z]+|numref|ref|doc|eq|math|term|download)\}`"), "MyST role"),
    (re.compile(r"^\s*(?:```|:::)\s*\{[a-z:-]+\}", re.M), "MyST directive"),
]


def raw_markup(text: str) -> list[tuple[str, str]]:
    """The pieces of ``text`` that are TeX or MyST source rather than rendered output.

    >>> raw_markup("a rate $O(1/k^2)$ here")
    [('TeX between dollars', '$O(1/k^2)$')]
    >>> raw_markup("costs $5 and $10")   # money, not math
    []
    """
    found = []
    for pattern, what in RAW_PATTERNS:
        found += [(what, m.group(0)) for m in pattern.finditer(text)]
    return found


@dataclass
class Problem:
    check: str
    page: str
    width: str
    element: str
    detail: str

    def __str__(self) -> str:
        where = f"{self.page} [{self.width}]" if self.width else self.page
        return f"{self.check}: {where}: {self.element}: {self.detail}"


@dataclass
class Report:
    checked: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    pages_opened: int = 0

    def ok(self, check: str, n: int = 1) -> None:
        self.checked[check] += n

    def fail(self, check: str, page: str, width: str, element: str, detail: str) -> None:
        self.checked[check] += 1
        self.problems.append(Problem(check, page, width, element, detail))

    def failures(self) -> Counter:
        return Counter(p.check for p in self.problems)


class ChromiumMissing(RuntimeError):
    pass


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium executable to drive: ``explicit`` (``--chromium``), else ``$BOOK_CHROMIUM``,
    else Debian's ``/usr/bin/chromium`` (or another on the PATH).

    Raises:
        ChromiumMissing: with the command that installs Chromium.
    """
    chosen = explicit or os.environ.get("BOOK_CHROMIUM")
    candidates = [chosen] if chosen else [*CHROMIUM_CANDIDATES, shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    where = f"{chosen} is not an executable. " if chosen else ""
    raise ChromiumMissing(
        f"no Chromium to open the book in. {where}Install Debian's (as root):\n"
        f"    {INSTALL_CHROMIUM}\n"
        "or point BOOK_CHROMIUM (or --chromium) at a Chromium or Chrome executable."
    )


# ----------------------------------------------------------------------------- the server

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``site`` on 127.0.0.1 at a free port, in a daemon thread: (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def site_pages(site: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to it (assets and sources left out)."""
    skip = {"_static", "_sources", "_images", "_downloads"}
    return sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if not skip & set(p.relative_to(site).parts)
    )


# ------------------------------------------------------------------ what runs in the page

# A short description of an element, for the failure messages.
_DESCRIBE = r"""
function describe(el) {
  const parts = [];
  for (let e = el; e && e.nodeType === 1 && parts.length < 4; e = e.parentElement) {
    let s = e.tagName.toLowerCase();
    if (e.id) { s += '#' + e.id; parts.unshift(s); break; }
    const cls = [...e.classList].filter(c => !c.startsWith('MathJax-Span')).slice(0, 2);
    if (cls.length) s += '.' + cls.join('.');
    parts.unshift(s);
  }
  let text = (el.textContent || '').replace(/\s+/g, ' ').trim();
  const tex = el.closest && el.closest('.math, .MathJax_Display, .MathJax');
  let script = null;
  if (tex) {
    const container = tex.closest('.math') || tex.parentElement;
    script = container && container.querySelector('script[type^="math/tex"]');
  }
  if (script) text = script.textContent.trim();
  if (text.length > 70) text = text.slice(0, 67) + '...';
  return parts.join(' > ') + (text ? ' "' + text + '"' : '');
}
"""

def _with_describe(arrow: str) -> str:
    """A page function that can call describe(element)."""
    return "() => {\n" + _DESCRIBE + "\nreturn (" + arrow.strip() + ")();\n}"


_SETTLE = r"""
async () => {
  const withTimeout = (p, ms) => Promise.race([p, new Promise(r => setTimeout(() => r('timeout'), ms))]);
  // images: load the lazy ones too
  for (const img of document.images) img.loading = 'eager';
  await withTimeout(Promise.all([...document.images].map(img => img.complete ? 0 :
      new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); }))), 20000);
  let mathjax = 'absent';
  if (window.MathJax && MathJax.Hub) {
    mathjax = await withTimeout(new Promise(r => MathJax.Hub.Register.StartupHook('End',
        () => { MathJax.Hub.Queue(() => r('typeset')); })), 45000);
  }
  if (document.fonts) await withTimeout(document.fonts.ready, 10000);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return mathjax;
}
"""

_MATH = _with_describe(r"""
() => {
  const sources = [...document.querySelectorAll('.math')].filter(e => !e.closest('.MathJax, .MathJax_Display')
      && !e.parentElement.closest('.math'));
  const untypeset = [];
  let rendered = 0;
  for (const m of sources) {
    const out = m.querySelector('.MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_SVG_Display, mjx-container');
    const error = m.querySelector('.MathJax_Error, merror, [data-mjx-error]')
        || (out && /Math Processing Error/.test(out.textContent));
    if (out && !error) rendered++;
    else untypeset.push({element: describe(m), error: !!error});
  }
  // text nodes a reader sees, outside code, scripts and typeset math
  const texts = [];
  const walker = document.createTreeWalker(document.querySelector('.bd-article') || document.body, NodeFilter.SHOW_TEXT);
  const skip = 'pre, code, script, style, textarea, .MathJax, .MathJax_Display, .MathJax_Preview, '
      + '.MathJax_SVG, mjx-container, .MJX_Assistive_MathML, .highlight, .output.text_plain, .output.stream';
  let node;
  const byParent = new Map();
  while ((node = walker.nextNode())) {
    const p = node.parentElement;
    if (!p || p.closest(skip) || !node.textContent.trim()) continue;
    byParent.set(p, (byParent.get(p) || '') + node.textContent);
  }
  for (const [p, t] of byParent) texts.push({element: describe(p), text: t});
  const mathjaxBoxes = document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_SVG, mjx-container').length;
  return {sources: sources.length, rendered, untypeset, texts, mathjaxBoxes};
}
""")

# MathJax 2's HTML-CSS output puts each formula in a zero-height inline-block whose bottom
# edge is the formula's baseline; a zero-size inline-block put just before the formula sits
# on the baseline of the text line. The two should coincide.
_BASELINE = _with_describe(r"""
() => {
  const out = [];
  for (const m of document.querySelectorAll('span.math')) {
    if (m.closest('.MathJax')) continue;  // MathJax's own span.math inside its output
    const box = m.querySelector('.MathJax nobr > .math > span:first-child');
    if (!box || !m.parentNode) continue;
    const marker = document.createElement('span');
    marker.style.cssText = 'display:inline-block;width:0;height:0;margin:0;padding:0;border:0;vertical-align:baseline';
    m.parentNode.insertBefore(marker, m);
    const mr = marker.getBoundingClientRect(), fr = m.getBoundingClientRect();
    const sameLine = mr.bottom >= fr.top && mr.bottom <= fr.bottom + 40 && Math.abs(mr.left - fr.left) < 2;
    const offset = mr.bottom - box.getBoundingClientRect().bottom;
    marker.remove();
    if (sameLine && box.getBoundingClientRect().width > 0) out.push({element: describe(m), offset});
  }
  return out;
}
""")

_IMAGES = _with_describe(r"""
() => [...document.images].map(img => {
  const r = img.getBoundingClientRect();
  return {element: describe(img), src: img.getAttribute('src'), complete: img.complete,
          natural: img.naturalWidth, shown: r.width,
          drawn: parseFloat(img.getAttribute('width')) || img.naturalWidth, visible: r.width > 0 && r.height > 0,
          figure: !!img.closest('figure, .cell_output, .output')};
})
""")

_OVERFLOW = _with_describe(r"""
() => {
  const ox = e => getComputedStyle(e).overflowX;
  const scrollable = o => o === 'auto' || o === 'scroll';
  const hides = o => o === 'hidden' || o === 'clip';
  const selector = 'pre, table, .MathJax nobr > .math, .MathJax_SVG > svg, mjx-container';
  const result = {checked: 0, scrolls: [], clipped: [], pageWidth: document.documentElement.scrollWidth,
                  viewport: document.documentElement.clientWidth};
  for (const el of document.querySelectorAll(selector)) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (el.closest('.bd-sidebar-primary, .bd-sidebar-secondary, .MJX_Assistive_MathML, .MathJax_Preview')) continue;
    result.checked++;
    const own = ox(el);
    let right = r.left + Math.max(el.scrollWidth, r.width);
    let verdict = 'fits', by = null;
    if (el.scrollWidth > el.clientWidth + 1 && (scrollable(own) || hides(own))) {
      verdict = scrollable(own) ? 'scrolls' : 'clipped'; by = el;
    } else {
      if (own !== 'visible') right = r.right;
      for (let a = el.parentElement; a; a = a.parentElement) {
        const o = ox(a);
        if (o === 'visible') continue;
        const ar = a.getBoundingClientRect();
        const inner = ar.left + a.clientLeft + a.clientWidth;
        if (scrollable(o)) {
          if (right > inner + 1) { verdict = a.scrollWidth > a.clientWidth + 1 ? 'scrolls' : 'clipped'; by = a; }
          break;
        }
        if (right > inner + 1) { verdict = 'clipped'; by = a; break; }
      }
      if (verdict === 'fits' && right > document.documentElement.clientWidth + 1) { verdict = 'page'; }
    }
    if (verdict === 'fits') continue;
    const scroller = verdict === 'scrolls' ? by : null;
    const bs = scroller ? getComputedStyle(scroller) : null;
    const bar = scroller ? scroller.offsetHeight - scroller.clientHeight
        - parseFloat(bs.borderTopWidth) - parseFloat(bs.borderBottomWidth) : 0;
    const item = {element: describe(el), by: by ? describe(by).split(' "')[0] : 'the page', bar,
                  hidden: Math.round(right - (by ? by.getBoundingClientRect().right : document.documentElement.clientWidth)),
                  code: el.tagName === 'PRE'};
    if (verdict === 'scrolls') result.scrolls.push(item); else { item.verdict = verdict; result.clipped.push(item); }
  }
  return result;
}
""")

_NAVIGATION = r"""
() => {
  const abs = a => a.href.split('#')[0];
  const sidebar = [...document.querySelectorAll('.bd-sidebar-primary a[href]')].map(abs);
  const article = document.querySelector('.bd-article');
  const links = article ? [...article.querySelectorAll('a[href]')]
      .filter(a => new URL(a.href).origin === location.origin)
      .map(a => ({href: a.href, text: (a.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 60)}))
      : [];
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  const bibliography = [...document.querySelectorAll('.citation[id], [role="doc-biblioentry"][id]')].map(e => e.id);
  const downloads = [...document.querySelectorAll('a[href$=".ipynb"]')].map(a => a.href);
  const outputs = document.querySelectorAll('.bd-article .cell_output').length;
  return {sidebar, links, ids, bibliography, downloads, outputs, title: document.title,
          isDocument: !!article};
}
"""


# ----------------------------------------------------------------------------- the checks

@dataclass
class PageInfo:
    title: str = ""
    is_document: bool = False
    sidebar: set = field(default_factory=set)
    links: list = field(default_factory=list)
    ids: set = field(default_factory=set)
    bibliography: set = field(default_factory=set)
    downloads: list = field(default_factory=list)
    outputs: int = 0


class SiteCheck:
    def __init__(self, site: Path, browser, base: str, report: Report, shots: Path):
        self.site, self.browser, self.base, self.report, self.shots = site, browser, base, report, shots
        self.host = urlsplit(base).netloc
        self.info: dict[str, PageInfo] = {}
        self.baselines: list[float] = []
        self.contexts = {}
        for width, viewport in VIEWPORTS.items():
            phone = width == "phone"
            ctx = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone,
                                      device_scale_factor=1, service_workers="block")
            ctx.set_default_timeout(TIMEOUT_MS)
            ctx.route("**/*", self._route)
            self.contexts[width] = ctx
        self._external: list[str] = []

    def _route(self, route):
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about") or parts.netloc == self.host:
            route.continue_()
        else:
            self._external.append(url)
            route.abort("blockedbyclient")

    def page_name(self, url: str) -> str:
        path = urlsplit(url).path
        return unquote(path[len(urlsplit(self.base).path):]) or "index.html"

    # one page at one width
    def visit(self, page_path: str, width: str, screenshot: str | None = None) -> None:
        rep = self.report
        page = self.contexts[width].new_page()
        console, bad_responses = [], {}  # url -> the first failure seen (a 404 is also reported as aborted)
        self._external = []
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(f"uncaught {e}"))
        page.on("response", lambda r: bad_responses.setdefault(r.url, f"HTTP {r.status}") if r.status >= 400 else None)
        page.on("requestfailed", lambda r: bad_responses.setdefault(r.url, r.failure or "failed")
                if urlsplit(r.url).netloc == self.host else None)
        url = urljoin(self.base, page_path)
        try:
            response = page.goto(url, wait_until="load")
        except Exception as e:  # noqa: BLE001 - any failure to load is the finding
            rep.fail("http", page_path, width, "the page", f"did not load: {e}")
            page.close()
            return
        rep.pages_opened += 1
        if response is None or response.status != 200:
            rep.fail("http", page_path, width, "the page", f"HTTP {response.status if response else 'no response'}")
        redirect = _redirect_target(self.site / page_path)
        if redirect is not None:  # Jupyter Book's index.html: it only forwards to the root document
            target = urljoin(url, redirect)
            try:
                page.wait_for_url(target, wait_until="load")
                rep.ok("http")
            except Exception as e:  # noqa: BLE001
                rep.fail("http", page_path, width, "meta refresh", f"did not forward to {redirect}: {e}")
            if not (self.site / self.page_name(target)).is_file():
                rep.fail("http", page_path, width, "meta refresh", f"forwards to a missing page {redirect}")
            page.close()
            return
        mathjax = page.evaluate(_SETTLE)
        if mathjax == "timeout":
            rep.fail("math", page_path, width, "MathJax", "did not finish typesetting within 45 s")

        for res, status in bad_responses.items():
            rep.fail("http", page_path, width, self.page_name(res), status)
        if not bad_responses:
            rep.ok("http")
        for message in console:
            rep.fail("console", page_path, width, "console", message[:300])
        if not console:
            rep.ok("console")
        for ext in sorted(set(self._external)):
            rep.fail("offline", page_path, width, "request", f"to another host: {ext}")
        if not self._external:
            rep.ok("offline")

        self.check_math(page, page_path, width)
        self.check_overflow(page, page_path, width)
        if width == "phone":
            self.check_phone_figures(page, page_path)
        if width == "desktop":
            self.check_baseline(page, page_path)
            self.check_images(page, page_path)
            nav = page.evaluate(_NAVIGATION)
            self.info[page_path] = PageInfo(
                title=nav["title"], is_document=nav["isDocument"],
                sidebar={self.page_name(u) for u in nav["sidebar"]}, links=nav["links"], ids=set(nav["ids"]),
                bibliography=set(nav["bibliography"]), downloads=nav["downloads"], outputs=nav["outputs"])
        if screenshot:
            self.shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(self.shots / f"{screenshot}-{width}.png"))
        page.close()

    def check_math(self, page, name, width):
        rep = self.report
        m = page.evaluate(_MATH)
        html = (self.site / name).read_text(encoding="utf-8", errors="replace")
        source = len(re.findall(r'<(?:span|div)\s+class="math[\s"]', html))
        self.report.stats.setdefault("formulas", Counter())[width] += source
        if m["rendered"] != source or m["untypeset"]:
            first = m["untypeset"][0]["element"] if m["untypeset"] else "the page"
            kind = "a MathJax error" if m["untypeset"] and m["untypeset"][0]["error"] else "not typeset"
            rep.fail("math", name, width, first,
                     f"{m['rendered']} of {source} formulas typeset ({len(m['untypeset'])} {kind})")
        else:
            rep.ok("math")
        raw = [(t["element"], what, snippet) for t in m["texts"] for what, snippet in raw_markup(t["text"])]
        for element, what, snippet in raw[:10]:
            rep.fail("math", name, width, element, f"raw {what} in the text: {snippet[:80]!r}")
        if len(raw) > 10:
            rep.fail("math", name, width, "...", f"{len(raw) - 10} more pieces of raw markup")
        if not raw:
            rep.ok("math")

    def check_baseline(self, page, name):
        rows = page.evaluate(_BASELINE)
        self.baselines += [r["offset"] for r in rows]
        off = [r for r in rows if abs(r["offset"]) > BASELINE_TOLERANCE_PX]
        if off:
            worst = max(off, key=lambda r: abs(r["offset"]))
            self.report.fail("baseline", name, "desktop", worst["element"],
                             f"{len(off)} of {len(rows)} inline formulas off the text baseline "
                             f"(median {statistics.median(abs(r['offset']) for r in off):.1f} px, "
                             f"this one {worst['offset']:+.1f} px)")
        else:
            self.report.ok("baseline", len(rows) > 0)

    def check_images(self, page, name):
        rep = self.report
        for img in page.evaluate(_IMAGES):
            if not img["complete"] or img["natural"] == 0:
                rep.fail("images", name, "desktop", img["element"], f"did not load ({img['src']})")
                continue
            rep.ok("images")
            if img["figure"] and img["visible"] and img["drawn"] >= FIGURE_MIN_WIDTH:
                # drawn: the width the figure was made for (a 2x PNG says so in its width attribute)
                scale = img["shown"] / img["drawn"]
                self.report.stats.setdefault("figure_scales", []).append(round(scale, 3))
                if not FIGURE_SCALE[0] <= scale <= FIGURE_SCALE[1]:
                    rep.fail("figure-size", name, "desktop", img["element"],
                             f"drawn {img['drawn']:.0f} px wide, shown at {img['shown']:.0f} px ({scale:.0%}): "
                             "draw figures at the width the page shows them (book.plotting.PAGE_WIDTH)")
                else:
                    rep.ok("figure-size")

    def check_phone_figures(self, page, name):
        """On a phone a figure keeps its drawn width (its frame scrolls), so its labels stay legible."""
        rep = self.report
        for img in page.evaluate(_IMAGES):
            if img["figure"] and img["visible"] and img["natural"] and img["drawn"] >= FIGURE_MIN_WIDTH:
                scale = img["shown"] / img["drawn"]
                if scale < FIGURE_SCALE[0]:
                    rep.fail("figure-size", name, "phone", img["element"],
                             f"drawn {img['drawn']:.0f} px wide, shown at {img['shown']:.0f} px ({scale:.0%}): "
                             "its labels are too small to read; let the figure keep its width and scroll")
                else:
                    rep.ok("figure-size")

    def check_overflow(self, page, name, width):
        rep = self.report
        o = page.evaluate(_OVERFLOW)
        for item in o["clipped"]:
            what = ("is wider than the screen and the page cannot show it" if item["verdict"] == "page"
                    else f"is cut off by {item['by']} ({item['hidden']} px hidden) with no way to scroll")
            rep.fail("overflow", name, width, item["element"], what)
        if width == "desktop":  # a phone's scrollbars are overlays: they show while scrolling
            for item in o["scrolls"]:
                if item["bar"] <= 0:
                    rep.fail("overflow", name, width, item["element"],
                             f"scrolls sideways inside {item['by']} but shows no scrollbar")
        rep.ok("overflow", o["checked"] - len(o["clipped"]))
        code = sum(1 for s in o["scrolls"] if s["code"])
        stats = self.report.stats.setdefault("scrolling", Counter())
        stats[f"{width} code"] += code
        stats[f"{width} other"] += len(o["scrolls"]) - code

    # after every page was opened
    def check_site(self, pages: list[str]) -> None:
        rep = self.report
        documents = sorted(p for p, i in self.info.items() if i.is_document and p not in SPHINX_PAGES)
        # sidebar: from every page, every document is one click away
        for p in documents:
            missing = sorted(set(documents) - self.info[p].sidebar - {p})
            if missing:
                rep.fail("sidebar", p, "desktop", ".bd-sidebar-primary",
                         f"does not link {len(missing)} page(s): {', '.join(missing[:5])}")
            else:
                rep.ok("sidebar")
        # titles
        by_title = defaultdict(list)
        for p in documents:
            by_title[self.info[p].title].append(p)
        for title, same in by_title.items():
            if len(same) > 1:
                rep.fail("titles", same[1], "desktop", "title", f"{title!r} is also the title of {same[0]}")
            else:
                rep.ok("titles")
        # links and citations
        bib_pages = {p for p, i in self.info.items() if i.bibliography}
        citations = 0
        for p in documents:
            for link in self.info[p].links:
                parts = urlsplit(link["href"])
                target = self.page_name(link["href"])
                if target.endswith("/"):
                    target += "index.html"
                if not (self.site / target).is_file():
                    rep.fail("links", p, "desktop", f'a "{link["text"]}"', f"links to a missing file {target}")
                    continue
                if parts.fragment and target in self.info:
                    fragment = unquote(parts.fragment)
                    if fragment not in self.info[target].ids:
                        rep.fail("links", p, "desktop", f'a "{link["text"]}"',
                                 f"links to {target}#{fragment}, which has no such anchor")
                        continue
                    if target in bib_pages and fragment in self.info[target].bibliography:
                        citations += 1
                rep.ok("links")
        rep.stats["citations resolved"] = citations
        # downloads: the notebook a page offers carries the outputs the page shows
        for p in documents:
            info = self.info[p]
            for href in info.downloads:
                path = self.site / self.page_name(href)
                if not path.is_file():
                    rep.fail("downloads", p, "desktop", "download button", f"{self.page_name(href)} is missing")
                    continue
                nb = json.loads(path.read_text(encoding="utf-8"))
                with_outputs = sum(1 for c in nb.get("cells", []) if c.get("cell_type") == "code" and c.get("outputs"))
                if info.outputs and with_outputs < info.outputs:
                    rep.fail("downloads", p, "desktop", "download button",
                             f"{self.page_name(href)} has outputs in {with_outputs} code cells; the page shows "
                             f"{info.outputs} cell outputs")
                else:
                    rep.ok("downloads")
        rep.stats["documents"] = len(documents)

    def check_search(self, word: str = SEARCH_WORD) -> None:
        rep = self.report
        page = self.contexts["desktop"].new_page()
        console = []
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.goto(urljoin(self.base, f"search.html?q={word}"), wait_until="load")
        try:
            page.wait_for_function(
                "() => { const s = document.querySelector('.search-summary, #search-results p');"
                " return s && /found|no/i.test(s.textContent) && !/Preparing/i.test(s.textContent); }",
                timeout=TIMEOUT_MS)
        except Exception as e:  # noqa: BLE001
            rep.fail("search", "search.html", "desktop", "#search-results", f"search for {word!r} did not finish: {e}")
            page.close()
            return
        hits = page.evaluate("() => [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.href)")
        page.close()
        pages = {self.page_name(h) for h in hits}
        rep.stats["search hits"] = {word: len(pages)}
        if not pages:
            rep.fail("search", "search.html", "desktop", "#search-results", f"no page found for {word!r}")
        elif missing := sorted(p for p in pages if not (self.site / p).is_file()):
            rep.fail("search", "search.html", "desktop", "#search-results", f"results link missing pages: {missing}")
        else:
            rep.ok("search")
        for message in console:
            rep.fail("console", "search.html", "desktop", "console", message[:300])


def run(site: Path, chromium: str, shots: Path, word: str = SEARCH_WORD, pages: list[str] | None = None,
        log=print) -> Report:
    from playwright.sync_api import sync_playwright

    report = Report()
    all_pages = site_pages(site)
    todo = pages or all_pages
    server, base = serve(site)
    start = time.perf_counter()
    try:
        with sync_playwright() as pw:
            # Playwright hides scrollbars by default; a reader's browser shows them, and the
            # overflow check asks whether a box that scrolls shows its scrollbar.
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True,
                                         ignore_default_args=["--hide-scrollbars"])
            check = SiteCheck(site, browser, base, report, shots)
            root = _root_document(site)
            first_chapter = next((p for p in todo if p.startswith("chapters/") and re.match(r"chapters/\d", p)), None)
            for n, p in enumerate(todo, 1):
                shot = "intro" if p == root else "chapter" if p == first_chapter else None
                for width in VIEWPORTS:
                    check.visit(p, width, screenshot=shot)
                log(f"  [{n:2}/{len(todo)}] {p}")
            check.check_search(word)
            check.check_site(todo)
            if check.baselines:
                offs = [abs(x) for x in check.baselines]
                report.stats["inline formulas"] = {
                    "measured": len(offs), "off baseline": sum(x > BASELINE_TOLERANCE_PX for x in offs),
                    "median px": round(statistics.median(offs), 2), "max px": round(max(offs), 2)}
            browser.close()
    finally:
        server.shutdown()
    report.stats["seconds"] = round(time.perf_counter() - start, 1)
    report.stats["pages"] = len(todo)
    return report


def _redirect_target(path: Path) -> str | None:
    """Where a page that only forwards (``<meta http-equiv="refresh">``) sends the reader."""
    m = re.search(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"',
                  path.read_text(encoding="utf-8", errors="replace"), flags=re.I)
    return m.group(1) if m else None


def _root_document(site: Path) -> str | None:
    """The page index.html forwards to (Jupyter Book's root document)."""
    index = site / "index.html"
    target = _redirect_target(index) if index.is_file() else None
    return urlsplit(urljoin("http://x/", target)).path.lstrip("/") if target else None


def summary(report: Report) -> str:
    failed = report.failures()
    lines = [f"{'check':<12} {'checked':>8} {'failed':>7}"]
    for name in CHECKS:
        lines.append(f"{name:<12} {report.checked[name]:>8} {failed[name]:>7}")
    stats = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in report.stats.items() if k != "figure_scales"}
    scales = report.stats.get("figure_scales")
    if scales:
        stats["figures shown/drawn"] = {"n": len(scales), "min": min(scales), "median": statistics.median(scales),
                                        "max": max(scales)}
    lines.append(json.dumps(stats, sort_keys=True))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--chromium", help="the Chromium executable (default: $BOOK_CHROMIUM or /usr/bin/chromium)")
    parser.add_argument("--out", type=Path, help="screenshots and report.json (default: SITE/../site-check)")
    parser.add_argument("--word", default=SEARCH_WORD, help="a word the search must find")
    parser.add_argument("--page", action="append", help="check only this page (repeatable; for debugging)")
    parser.add_argument("--max-problems", type=int, default=60, help="problems to print (all go to report.json)")
    args = parser.parse_args(argv)

    site = args.site.resolve()
    if not (site / "index.html").is_file():
        print(f"site check: no built book at {site}: run `make book` first", file=sys.stderr)
        return 2
    try:
        chromium = find_chromium(args.chromium)
        import playwright.sync_api  # noqa: F401
    except ChromiumMissing as e:
        print(f"site check: {e}", file=sys.stderr)
        return 2
    except ImportError:
        print("site check: Playwright is not installed: run `make install` "
              "(or .venv/bin/pip install -c constraints.txt playwright)", file=sys.stderr)
        return 2
    out = (args.out or site.parent / "site-check").resolve()
    print(f"site check: {site} in {chromium}")
    report = run(site, chromium, out, word=args.word, pages=args.page)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(
        {"checked": report.checked, "failed": report.failures(), "pages_opened": report.pages_opened,
         "stats": report.stats, "problems": [asdict(p) for p in report.problems]},
        indent=1, default=lambda o: dict(o) if isinstance(o, Counter) else str(o)) + "\n")
    for problem in report.problems[: args.max_problems]:
        print(f"FAIL {problem}")
    if len(report.problems) > args.max_problems:
        print(f"... and {len(report.problems) - args.max_problems} more (all in {out / 'report.json'})")
    print(summary(report))
    expected = len(args.page or site_pages(site)) * len(VIEWPORTS)
    if report.pages_opened < expected:
        print(f"site check: opened {report.pages_opened} of {expected} pages", file=sys.stderr)
        return 1
    if report.problems:
        print(f"site check FAILED: {len(report.problems)} problems on "
              f"{len({p.page for p in report.problems})} pages; screenshots and report in {out}")
        return 1
    print(f"site check passed: {report.pages_opened} page views; screenshots and report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
