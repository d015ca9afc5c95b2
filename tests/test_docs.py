"""The documentation site, checked as a reader meets it (slow; needs the ``docs`` extra).

* the site builds with ``mkdocs build --strict`` and prints no warning;
* every internal link and anchor of the built HTML resolves (a small crawler over the files);
* served over HTTP and opened in headless Chromium, the home page and the API page of
  ``manifold_scores.losses`` render, ``dsm`` is there with its example, and the site search
  finds it; screenshots of both pages are taken (written to ``$MS_DOCS_SCREENSHOTS`` too when
  set: ``MS_DOCS_SCREENSHOTS=docs/screenshots`` refreshes the committed ones);
* the Python examples of the hand-written pages run.

Without the ``docs`` extra or without Chromium these tests skip with the reason, except where
``MS_REQUIRE_DOCS=1`` (set by ``.ci/run``, which installs both): there they fail instead.
Chromium comes from the system packages (Debian: ``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import pathlib
import posixpath
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _missing(what: str) -> None:
    if os.environ.get("MS_REQUIRE_DOCS") == "1":
        pytest.fail(f"{what} (MS_REQUIRE_DOCS=1: the docs check must run here)")
    pytest.skip(what)


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        _missing(f"needs the docs extra ({module}): pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    """The site built once for this module, in strict mode."""
    _need("mkdocs")
    _need("mkdocstrings_handlers.python")
    _need("mkdocs_jupyter")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert not warnings, "\n".join(warnings)
    print(f"site built in {time.perf_counter() - start:.1f} s")
    return out


# --------------------------------------------------------------------------------------------
# The built site


def test_site_has_the_pages_a_reader_needs(site):
    for page in ("index.html", "getting-started/index.html", "gpu/index.html",
                 "benchmarks/index.html", "api/index.html",
                 "api/manifold_scores.losses/index.html", "notebooks/index.html",
                 "notebooks/e1_geometry/index.html"):
        assert (site / page).is_file(), f"missing page {page}"
    # one API page per public module, found on disk the way the site generator finds them
    for path in (ROOT / "manifold_scores").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        if any(p.startswith("_") for p in parts):
            continue
        name = ".".join(parts)
        assert (site / "api" / name / "index.html").is_file(), f"no API page for {name}"
    # the notebooks are shown with their committed outputs (figures), not re-run
    nb = (site / "notebooks" / "e1_geometry" / "index.html").read_text(encoding="utf-8")
    assert "data:image/png;base64" in nb


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        ref = {"a": "href", "link": "href", "img": "src", "script": "src"}.get(tag)
        if ref and a.get(ref):
            self.refs.append(a[ref])


@functools.cache
def _parse(path: pathlib.Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def _target(site: pathlib.Path, page: pathlib.Path, ref: str):
    """The file a relative reference points to (directory URLs end in index.html)."""
    url = urllib.parse.urlsplit(ref)
    base = "" if url.path.startswith("/") else page.parent.relative_to(site).as_posix()
    rel = posixpath.normpath(posixpath.join(base, urllib.parse.unquote(url.path).lstrip("/"))) \
        if url.path else page.relative_to(site).as_posix()
    if rel == ".." or rel.startswith("../"):
        return None, ""  # points outside the site
    target = site / rel
    if url.path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, urllib.parse.unquote(url.fragment)


def test_every_internal_link_and_anchor_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 40
    broken, checked = [], 0
    for page in pages:
        for ref in _parse(page).refs:
            if re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.I) or ref.startswith("//"):
                continue  # external (https:, mailto:, data:, javascript:)
            target, fragment = _target(site, page, ref)
            checked += 1
            where = f"{page.relative_to(site)}: {ref}"
            if target is None:
                broken.append(f"{where} (outside the site)")
            elif not target.is_file():
                broken.append(f"{where} (no file {target.relative_to(site)})")
            elif fragment and target.suffix == ".html" and fragment not in _parse(target).ids:
                broken.append(f"{where} (no anchor #{fragment})")
    assert checked > 1000
    assert not broken, f"{len(broken)} broken of {checked}:\n" + "\n".join(broken[:50])


# --------------------------------------------------------------------------------------------
# In a browser


def _browser_paths() -> tuple[str, str]:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        _missing("needs Chromium and its driver (Debian: apt-get install chromium "
                 "chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    _need("selenium")
    binary, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _screenshot(driver, tmp_path: pathlib.Path, name: str) -> pathlib.Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{name}: blank screenshot?"
    keep = os.environ.get("MS_DOCS_SCREENSHOTS")
    if keep:
        dest = pathlib.Path(keep)
        dest = dest if dest.is_absolute() else ROOT / dest
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / name)
    return path


def test_home_page_in_chromium(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(served)
    assert "manifold_scores" in browser.title
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Exact scores, losses, models and samplers" in body
    nav = browser.find_element(By.CSS_SELECTOR, "nav.md-nav--primary").get_attribute(
        "textContent")
    for section in ("Getting started", "Concepts", "Benchmarks", "Notebooks", "API reference"):
        assert section in nav
    _screenshot(browser, tmp_path, "home.png")


def test_api_page_of_dsm_shows_its_example_in_chromium(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(served + "api/manifold_scores.losses/#manifold_scores.losses.dsm")
    heading = browser.find_element(By.ID, "manifold_scores.losses.dsm")
    assert heading.is_displayed() and heading.text.strip().startswith("dsm")
    obj = heading.find_element(By.XPATH, "./ancestor::div[contains(@class, 'doc-function')][1]")
    text = obj.text
    assert "Denoising score matching" in text
    assert "dsm(" in obj.find_element(By.CSS_SELECTOR, ".doc-signature").text
    # the example is rendered as highlighted code, prompts and all, not as prose
    examples = [b.text for b in obj.find_elements(By.CSS_SELECTOR, ".highlight pre")]
    assert any(">>> " in ex and "ms.losses.dsm(key, exact" in ex for ex in examples), examples
    # a cross-reference in the docstring is a working link
    link = obj.find_element(By.CSS_SELECTOR, "a.autorefs-internal[href$='dsm_constant']")
    assert link.text.startswith("dsm_constant")
    # one tall screenshot: heading, signature, parameters and the example
    browser.set_window_size(1280, 2100)
    try:
        browser.execute_script("window.scrollTo(0, arguments[0].getBoundingClientRect().top"
                               " + window.scrollY - 60);", heading)
        time.sleep(0.3)
        _screenshot(browser, tmp_path, "api_dsm.png")
    finally:
        browser.set_window_size(1280, 1000)


def test_search_finds_dsm_in_chromium(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served)
    box = WebDriverWait(browser, 10).until(ec.element_to_be_clickable(
        (By.CSS_SELECTOR, "input.md-search__input")))
    box.click()
    box.send_keys("dsm_fixed_sigma")

    def hits(driver):
        items = driver.find_elements(By.CSS_SELECTOR, ".md-search-result__item a")
        return [a.get_attribute("href") for a in items] or False

    found = WebDriverWait(browser, 30).until(hits)
    assert any("manifold_scores.losses" in href for href in found), found


# --------------------------------------------------------------------------------------------
# The examples on the hand-written pages


PAGES = sorted(p for p in DOCS.rglob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_python_examples_on_the_page_run(page, capsys):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page.relative_to(ROOT)} (example {i + 1})", "exec"), {})
