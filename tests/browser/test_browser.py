"""The published site in a real browser: headless Chromium over _build/html.

Run by `make browser-test` (after a strict `make html`) and by .ci/run after
`make test`; `make test` never collects this directory (norecursedirs in
pyproject.toml), whatever -m expression PYTEST_ARGS passes.  Every test here
is marked ``browser``.

The site is served from 127.0.0.1 under a subdirectory, /pkeyspec/, the way a
GitHub Pages project site is, and a missing path gets 404.html with status
404, as there.  Chromium is Debian's (/usr/bin/chromium, package
``chromium``), driven by Playwright's Python package, whose wheel carries its
driver: nothing is downloaded at run time (`playwright install` is never
needed).  Every request a page makes is recorded, and any to a host other
than the local server is aborted and fails the test.

Without Chromium the browser tests skip, except under CI=true, where they
fail: CI cannot go green by skipping.  Screenshots of the pages go to
_build/screenshots/ and their paths are printed (`make browser-test` shows
them).
"""

import functools
import http.server
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

import pkeyspec

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("PKEYSPEC_SITE", ROOT / "_build" / "html"))
SCREENSHOTS = ROOT / "_build" / "screenshots"
PREFIX = "/pkeyspec/"  # where the site is served, like a GitHub Pages project site
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# Debian's chromium as this machine documents it; Playwright adds --headless
# and a fresh --user-data-dir of its own (a new temporary profile per launch).
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason):
    """Skip on a developer's machine; fail in CI, which must run these tests."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def find_chromium():
    """PKEYSPEC_CHROMIUM if set (and only it), else Debian's chromium."""
    if "PKEYSPEC_CHROMIUM" in os.environ:
        candidates = [os.environ["PKEYSPEC_CHROMIUM"]]
    else:
        candidates = ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# -- the static site, checked without a browser ---------------------------------

# A tag that makes the browser fetch its src/href (not <a>, not rel="canonical").
ASSET_TAG = re.compile(
    r"<(?:script|img|iframe|source|video|audio|embed|track|image|use)\b[^>]*?"
    r"\b(?:src|href|srcset|poster)\s*=\s*[\"']?\s*(?:https?:)?//[^\s\"'>]+",
    re.IGNORECASE,
)
LINK_TAG = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
FETCHING_RELS = {
    "stylesheet", "preload", "prefetch", "modulepreload", "icon", "shortcut",
    "apple-touch-icon", "manifest", "preconnect", "dns-prefetch",
}  # fmt: skip
REMOTE = re.compile(r"(?:https?:)?//[^\s\"')]+", re.IGNORECASE)
CSS_REMOTE = re.compile(
    r"(?:@import\s+(?:url\()?\s*|url\(\s*)[\"']?\s*(?:https?:)?//[^\s\"')]+",
    re.IGNORECASE,
)


def remote_links(html):
    found = [m.group(0) for m in ASSET_TAG.finditer(html)]
    for tag in LINK_TAG.findall(html):
        rel = re.search(r"\brel\s*=\s*[\"']?([^\"'>]+)", tag, re.IGNORECASE)
        href = re.search(r"\bhref\s*=\s*[\"']?\s*((?:https?:)?//[^\s\"'>]+)", tag)
        if rel and href and FETCHING_RELS & set(rel.group(1).lower().split()):
            found.append(tag)
    # <style> blocks and style="" attributes inside the page
    found += CSS_REMOTE.findall(html)
    return found


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no site at {SITE}: run `make html` first", pytrace=False)
    return SITE


def test_no_asset_from_another_host(site):
    """No page or stylesheet fetches anything (script, style, image, font) from
    another host: the tree works from any static host, and offline."""
    offenders = []
    for path in sorted(site.rglob("*.html")):
        offenders += [f"{path.relative_to(site)}: {hit}" for hit in remote_links(path.read_text())]
    for path in sorted(site.rglob("*.css")):
        offenders += [f"{path.relative_to(site)}: {hit}" for hit in CSS_REMOTE.findall(path.read_text())]
    assert not offenders, "\n".join(offenders)


def test_scanner_sees_remote_assets():
    """The patterns above catch what they are meant to (and not <a> or xmlns)."""
    page = """
        <a href="https://man7.org/">man</a>
        <svg xmlns="http://www.w3.org/2000/svg"></svg>
        <link rel="canonical" href="https://example.org/x.html">
        <link rel="stylesheet" href="https://cdn.example/x.css">
        <script src="//cdn.example/x.js"></script>
        <img alt="" src='https://img.example/x.png'>
        <div style="background: url(https://img.example/y.png)"></div>
    """
    hits = remote_links(page)
    assert len(hits) == 4, hits
    assert CSS_REMOTE.findall("@import url('https://fonts.example/f.css');")
    assert CSS_REMOTE.findall("@font-face{src:url(//fonts.example/f.woff2)}")
    assert not CSS_REMOTE.findall("url('data:image/svg+xml,<svg xmlns=\"http://www.w3.org/2000/svg\"/>')")


def test_search_index_has_pkey_free(site):
    """Sphinx's own search, which runs in the page from searchindex.js."""
    index = (site / "searchindex.js").read_text()
    assert '"reference/pkey_free"' in index
    assert re.search(r'"pkey_free"\s*:', index), "no term pkey_free in the index"


# furo's footer line, html_last_updated_fmt in conf.py: build date and version.
FOOTER = re.compile(
    rf"Last updated on \d{{4}}-\d{{2}}-\d{{2}} \(pkeyspec {re.escape(pkeyspec.__version__)}\)"
)


def test_404_page_and_footer(site):
    page = (site / "404.html").read_text()
    assert 'href="index.html"' in page  # relative, so any subdirectory works
    assert FOOTER.search(page)


# -- a local server ---------------------------------------------------------------


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site under PREFIX; 404.html for any missing path."""

    def send_head(self):
        if not urllib.parse.urlsplit(self.path).path.startswith(PREFIX):
            self.send_error(404)  # e.g. /favicon.ico: nothing outside the site
            return None
        return super().send_head()

    def translate_path(self, path):
        return super().translate_path(path.removeprefix(PREFIX.rstrip("/")))

    def send_error(self, code, message=None, explain=None):
        page = Path(self.directory) / "404.html"
        if code != 404 or not page.is_file():
            return super().send_error(code, message, explain)
        body = page.read_bytes()
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def base_url(site):
    handler = functools.partial(SiteHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    server.shutdown()
    server.server_close()
    thread.join()


# -- Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        unavailable("Chromium is not installed (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is missing (pip install -e '.[browser]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Visit:
    """One browser context: every request recorded, foreign ones aborted."""

    def __init__(self, browser, **options):
        self.requests = []  # every URL any page of this context asked for
        self.blocked = []
        self.failed = []  # local responses >= 400 and JS errors
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, service_workers="block", **options
        )
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.failed.append(f"JS error: {error}"))
        self.page.on("response", self._response)

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in {"data", "blob", "about"} or parts.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def _response(self, response):
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")

    def goto(self, url, status=200):
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == status, (url, response)
        return self.page

    def screenshot(self, name):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        print(f"screenshot: {path}")
        return path

    def close(self):
        """Close the context; return what went wrong in it."""
        self.context.close()
        problems = [f"request to another host (blocked): {url}" for url in self.blocked]
        problems += self.failed
        if not self.requests:
            problems.append("the route saw no request at all")
        return problems


@pytest.fixture
def visit(browser):
    visits = []

    def open_context(**options):
        visits.append(Visit(browser, **options))
        return visits[-1]

    yield open_context
    problems = [problem for v in visits for problem in v.close()]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def stylesheets_loaded(page):
    """Number of stylesheets whose rules the page could read (all are local)."""
    return page.evaluate(
        "() => [...document.styleSheets].filter(s => s.cssRules.length > 0).length"
    )


def test_landing_page(visit, base_url):
    v = visit()
    page = v.goto(base_url)
    assert "pkeyspec" in page.title()
    footer = page.inner_text("footer")
    assert FOOTER.search(footer), footer
    assert stylesheets_loaded(page) >= 3
    v.screenshot("index")


def picture_boxes(page):
    """Bounding boxes of the model's pictures, and of the article around them."""
    return page.evaluate(
        """() => {
            const article = document.querySelector("article").getBoundingClientRect();
            return [...document.querySelectorAll("svg.pkeyspec-picture")].map(svg => {
                const r = svg.getBoundingClientRect();
                return {label: svg.getAttribute("aria-label"), x: r.left, y: r.top,
                        width: r.width, height: r.height, articleRight: article.right};
            });
        }"""
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_race_page_pictures(visit, base_url, scheme):
    v = visit(color_scheme=scheme)
    page = v.goto(base_url + "races/rfc.html")
    boxes = picture_boxes(page)
    assert boxes, "no svg.pkeyspec-picture on races/rfc.html"
    for box in boxes:
        assert box["width"] > 0 and box["height"] > 0, box
        # max-width: 100% in _static/pkeyspec.css: no picture sticks out of the text
        assert box["x"] + box["width"] <= box["articleRight"] + 1, box
    # Every label of a picture is readable on the page's background: in dark
    # mode the pictures' colours come from furo's variables too.
    contrast = page.evaluate(
        """() => {
            const rgb = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
            const lum = ([r, g, b]) => {
                const f = v => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
            };
            const ratio = (a, b) => (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
            const page = lum(rgb(getComputedStyle(document.body).backgroundColor));
            const texts = [...document.querySelectorAll("svg.pkeyspec-picture text")];
            return Math.min(...texts.map(t => ratio(lum(rgb(getComputedStyle(t).fill)), page)));
        }"""
    )
    assert contrast >= 4.5, f"a picture's text has contrast {contrast:.2f} in {scheme} mode"
    v.screenshot("races-rfc" if scheme == "light" else f"races-rfc-{scheme}")


def test_guarantee_index(visit, base_url):
    v = visit()
    page = v.goto(base_url + "guarantees.html")
    assert page.inner_text("h1").startswith("Guarantee index")
    assert page.locator("article table").count() > 0
    v.screenshot("guarantees")


def test_search_finds_pkey_free(visit, base_url):
    v = visit()
    page = v.goto(base_url + "search.html?q=pkey_free")
    link = page.locator('#search-results a[href*="reference/pkey_free.html"]').first
    link.wait_for(timeout=30_000)
    href = link.get_attribute("href")
    v.screenshot("search")
    # the result leads to the page
    v.goto(urllib.parse.urljoin(page.url, href))
    assert "pkey_free" in page.inner_text("h1")


def test_404_from_a_subdirectory(visit, base_url):
    """A missing page gets 404.html, styled, with working links back."""
    v = visit()
    page = v.goto(base_url + "no-such-page.html", status=404)
    v.failed.remove(f"404 {page.url}")  # the one 404 this test asks for
    assert page.inner_text("h1").startswith("Page not found")
    assert stylesheets_loaded(page) >= 3, "404.html lost its stylesheets"
    v.screenshot("404")
    home = page.get_by_role("link", name="the home page")
    with page.expect_navigation():
        home.click()
    assert page.url == base_url + "index.html"
    assert "pkeyspec" in page.title()
