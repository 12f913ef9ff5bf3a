"""The documentation site works opened from disk (file://site/index.html), with no network:
it is built here (mkdocs build --strict, as `make docs`), every internal link and anchor of the
built pages resolves on disk, and in headless Chromium search lists a hit, a formula is
typeset by the vendored MathJax, a mermaid diagram is drawn by the vendored mermaid and the
widest tables fit the content column at 1400 px. The
browser test skips where Chromium is not installed, as the HTML report's does."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from browser_helpers import driver  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]
MATH_PAGE = "protocol.html"  # $...$ and $$...$$ through pymdownx.arithmatex
MERMAID_PAGE = "engine.html"
SEARCH_QUERY = "negation"
# The pages with the widest tables (12-14 columns, or intervals in every cell) before they were reshaped.
WIDE_TABLE_PAGES = ("getting-started.html", "negation-remedies.html", "methods/memit.html", "tune.html")
LINK_ATTRS = {"href", "src"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in LINK_ATTRS and value:
                self.links.append(value)
            elif name in ("id", "name") and value:
                self.ids.add(value)


def _parse(path: Path, cache: dict[Path, _Page]) -> _Page:
    if path not in cache:
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        cache[path] = page
    return cache[path]


def _broken_link(page_path: Path, link: str, site: Path, cache: dict[Path, _Page]) -> str | None:
    """Why `link` on `page_path` does not resolve on disk, or None; links with a scheme or a
    host (https:, mailto:, data:) are not followed."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc:
        return None
    target = (page_path.parent / unquote(parts.path)).resolve() if parts.path else page_path
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return "no such file"
    if not target.is_relative_to(site.resolve()):
        return "outside the site"
    if parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _parse(target, cache).ids:
        return "no such anchor"
    return None


def test_every_internal_link_and_anchor_resolves_on_disk(site):
    cache: dict[Path, _Page] = {}
    broken = []
    # 404.html is for a web server (its links are absolute, from the server's root): not a page on disk.
    for page_path in sorted(p for p in site.rglob("*.html") if p.name != "404.html"):
        for link in _parse(page_path, cache).links:
            why = _broken_link(page_path, link, site, cache)
            if why:
                broken.append(f"{page_path.relative_to(site)}: {link} ({why})")
    assert not broken, f"{len(broken)} broken: " + "; ".join(broken[:20])


def test_no_page_loads_a_script_or_style_from_the_network(site):
    remote = []
    for page_path in sorted(site.rglob("*.html")):
        text = page_path.read_text(encoding="utf-8")
        remote += [f"{page_path.relative_to(site)}: {host}" for host in
                   ("cdn.jsdelivr.net", "unpkg.com", "fonts.googleapis.com", "fonts.gstatic.com") if host in text]
    assert not remote, remote[:10]
    assert (site / "search" / "search_index.js").is_file(), "the offline plugin writes the index as a script"
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "mermaid.min.js" not in home and "tex-svg.js" not in home, "docs/_hooks/page_scripts.py drops them"


# --- in headless Chromium -------------------------------------------------------------------
def _wait_for(drv, css: str, what: str, timeout: float = 20.0):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(drv, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))
    except TimeoutException:
        logs = "; ".join(entry["message"] for entry in _console(drv))
        pytest.fail(f"{what}: no {css!r} after {timeout:.0f} s on {drv.current_url} (console: {logs or 'empty'})")


def _console(drv) -> list[dict]:
    try:
        return drv.get_log("browser")
    except Exception:  # not every driver keeps the console log; it only enriches a failure message
        return []


def _remote_requests(drv) -> list[str]:
    urls = drv.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [u for u in urls if not u.startswith(("file:", "data:", "blob:", "about:"))]


def test_search_lists_a_hit_from_disk(driver, site):
    driver.get((site / "index.html").as_uri())
    box = _wait_for(driver, "input.md-search__input", "search box")[0]
    box.click()
    box.send_keys(SEARCH_QUERY)
    hits = _wait_for(driver, ".md-search-result__item", f"search for {SEARCH_QUERY!r}")
    assert any(SEARCH_QUERY in h.text.lower() for h in hits), [h.text[:80] for h in hits[:3]]
    assert not _remote_requests(driver)


def test_formulas_are_typeset_from_disk(driver, site):
    driver.get((site / MATH_PAGE).as_uri())
    math = _wait_for(driver, ".arithmatex mjx-container svg", "MathJax")
    assert len(math) >= 2
    raw = driver.execute_script(
        "return [...document.querySelectorAll('.arithmatex')].filter(e => !e.querySelector('mjx-container'))"
        ".map(e => e.textContent.slice(0, 60))")
    assert not raw, f"formulas left as TeX: {raw[:3]}"
    assert not _remote_requests(driver)


def test_mermaid_diagram_is_drawn_from_disk(driver, site):
    from selenium.webdriver.support.ui import WebDriverWait

    n_diagrams = (site / MERMAID_PAGE).read_text(encoding="utf-8").count('class="mermaid"')
    assert n_diagrams >= 1
    # Material draws each diagram into a closed shadow root: opened here so the svg can be seen.
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "const attach = Element.prototype.attachShadow;"
        "Element.prototype.attachShadow = function (o) { return attach.call(this, {...o, mode: 'open'}); };")})
    try:
        driver.get((site / MERMAID_PAGE).as_uri())
        drawn = WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "const s = [...document.querySelectorAll('div.mermaid')].map(e => e.shadowRoot && e.shadowRoot.querySelector('svg'));"
            "return s.length == arguments[0] && s.every(svg => svg && svg.getBoundingClientRect().height > 50);",
            n_diagrams), message=f"{n_diagrams} mermaid diagrams drawn as svg")
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
    assert drawn and not driver.find_elements("css selector", "pre.mermaid")
    assert not _remote_requests(driver)


@pytest.mark.parametrize("page", WIDE_TABLE_PAGES)
def test_wide_tables_fit_at_1400_px(driver, site, page):
    """No table scrolls sideways at 1400 px (docs/stylesheets/extra.css; the widest are split)."""
    driver.get((site / page).as_uri())
    hidden = driver.execute_script(
        "return [...document.querySelectorAll('.md-typeset__scrollwrap')]"
        ".filter(w => w.scrollWidth > w.clientWidth + 1)"
        ".map(w => w.querySelector('tr').innerText.replace(/\\s+/g, ' ').slice(0, 80))")
    assert not hidden, f"{page}: tables wider than the column: {hidden}"
