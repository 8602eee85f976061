"""The report site (``python -m ntkpaper site``): claims ledger, failed figures, provenance.

The fast tests build the site once for a synthetic results tree (one built figure, one whose
notebook failed, one whose run failed, one not built). The browser test builds it for the
tiny workflow run (``tiny_built``) and opens it in headless Chromium (``make browser``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urljoin, urlparse

import pytest

from ntkpaper import cli, plan, site, store
from ntkpaper import params as P
from tests.conftest import TINY_FIGURES, write_tiny

LEDGER = ["figure", "claim", "expected", "measured", "holds"]
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated. Check CHANGES for Sphinx API")


def squash(text: str) -> str:
    return " ".join(text.split())


class Html(HTMLParser):
    """The text, tables (rows of cell texts) and link targets of one HTML page."""

    def __init__(self, path: Path):
        super().__init__()
        self.text, self.tables, self.links = [], [], []
        self._cell: list[str] | None = None
        self.feed(path.read_text())
        self.text = squash("".join(self.text))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "src"):
            if attrs.get(name) is not None:
                self.links.append(attrs[name])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br":
            self.handle_data(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append(squash("".join(self._cell)))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, header: list[str]) -> list[list[str]]:
        """The body rows of the table with this header."""
        found = [t[1:] for t in self.tables if t and t[0] == header]
        assert len(found) == 1, f"{len(found)} tables with header {header}"
        return found[0]

    def field(self, name: str) -> str:
        """The value of ``name`` in a two-column (field, value) table."""
        return dict(tuple(r) for r in self.table(["field", "value"]))[name]


def png(width: int = 6, height: int = 4) -> bytes:
    """A small red RGB PNG."""
    raw = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))


def write_claims(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """A ``claims.csv`` as pandas writes it (an unnamed index column first)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["", "claim", "expected", "measured", "holds"])
    writer.writerows([i, *row] for i, row in enumerate(rows))
    path.write_text(buf.getvalue())


CLAIMS = [  # text that markdown, math or smart quotes would change, and three verdicts
    ("'the barrier ... falls' -- a | pipe, *stars*, _under_ and $x^2$", "b <= 0.01", "0.0069",
     "True"),
    ("<b>not bold</b> [not](a-link) `not code` \\ backslash", "a > b", "1 < 2", "False"),
    ("a claim\nover two lines", "anything", "n/a", "n/a (no data)"),
]  # fmt: skip
STALE = [("a claim of an earlier run of the failed notebook", "e", "m", "False")]
NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {},
         "source": "# Tiny notebook\n\nThe narration of the tiny figure: the barrier $B(t)$."},
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "print(6 * 7)",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "printed output 42\n"}]},
    ],
    "metadata": {"language_info": {"name": "python"}},
    "nbformat": 4,
    "nbformat_minor": 4,  # papermill's: no cell ids
}  # fmt: skip
NOTEBOOK_LOG = "\n".join(
    [f"early line {i}" for i in range(100)]
    + ["Executing:  50%\rExecuting: 100%", "\x1b[0;31mRuntimeError\x1b[0m: planted failure"]
)
RUN_LOG = "epoch 1\nerror: parent diverged at step 7 (planted)\n"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A results tree of four figures, its site built by ``python -m ntkpaper site``."""
    root = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("PARAMS", "RUNS", "RESULTS"):
            mp.setenv(f"NTKPAPER_{var}", str(root / var.lower()))
        write_tiny(root / "params", "tiny-fig")
        write_tiny(root / "params", "tiny-notebook-failed")
        write_tiny(root / "params", "tiny-run-failed", **{"parent.seed": 5})
        write_tiny(root / "params", "tiny-unbuilt", **{"parent.seed": 6})
        figures = P.load_all("quick")
        jobs = {fid: plan.figure_runs(fig).jobs() for fid, fig in figures.items()}

        built = store.results_dir("quick", "tiny-fig")
        built.mkdir(parents=True)
        (built / "tiny-fig.pdf").write_bytes(b"%PDF-1.4 planted\n")
        (built / "tiny-fig.png").write_bytes(png())
        (built / "tiny-fig.ipynb").write_text(json.dumps(NOTEBOOK))
        (built / "papermill.log").write_text("ok\n")
        (built / "panel_A.csv").write_text("epoch,error\n0,0.5\n")
        write_claims(built / "claims.csv", CLAIMS)
        provenance = {
            "figure": "tiny-fig", "profile": "quick", "notebook": "fort_integrated_view",
            "params_file": "params/tiny-fig.yaml", "params_sha256": "ab" * 32,
            "commit": "c0ffee" * 6 + "abcd", "modified": True,
            "runs": [{"kind": j.kind, "key": j.key} for j in jobs["tiny-fig"][:2]],
            "device": "cpu (TFRT_CPU_0)", "jax": "0.10.2", "date": "2026-11-30T17:00:00Z",
        }  # fmt: skip
        (built / "provenance.json").write_text(json.dumps(provenance))

        failed = store.results_dir("quick", "tiny-notebook-failed")
        failed.mkdir(parents=True)
        (failed / "papermill.log").write_text(NOTEBOOK_LOG)
        write_claims(failed / "claims.csv", STALE)

        parent = next(j for j in jobs["tiny-run-failed"] if j.kind == "parent")
        stale = store.results_dir("quick", "tiny-run-failed")
        stale.mkdir(parents=True)
        (stale / "papermill.log").write_text("an earlier attempt's notebook error\n")
        store.run_dir(parent.kind, parent.key).mkdir(parents=True)
        (store.run_dir(parent.kind, parent.key) / "log.txt").write_text(RUN_LOG)

        old = store.results_dir("quick") / "site"
        old.mkdir()
        (old / "stale.html").write_text("a site from before")

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = cli.main(["site", "--profile", "quick"])
        yield SimpleNamespace(
            root=root, status=status, stdout=out.getvalue(), site=old, parent=parent,
            provenance=provenance, results=store.results_dir("quick"),
        )  # fmt: skip


def test_cli_builds_the_site_and_prints_index(synthetic):
    assert synthetic.status == 0
    assert synthetic.stdout.strip() == str(synthetic.site / "index.html")
    assert (synthetic.site / "index.html").exists()
    assert not (synthetic.site / "stale.html").exists()  # the old site was replaced
    leftovers = [p.name for p in synthetic.results.iterdir() if p.name.startswith(".site-")]
    assert leftovers == [".site-src"]  # no temporary build folders, no jupyter_execute
    assert not (synthetic.results / "jupyter_execute").exists()


def test_ledger_has_every_claims_row_with_its_verdict(synthetic):
    index = Html(synthetic.site / "index.html")
    want = [["tiny-fig", *map(squash, row)] for row in CLAIMS]
    want += [["tiny-notebook-failed (earlier run)", *map(squash, row)] for row in STALE]
    assert index.table(LEDGER) == want
    assert "1 of 4 figures built, 2 failed, 1 not built." in index.text
    assert "Claims: 1 hold, 2 do not, 1 other (of 4)." in index.text
    assert "Profile quick. Site built" in index.text


def test_failed_figures_show_as_failed_with_their_log(synthetic):
    index = Html(synthetic.site / "index.html")
    statuses = dict(tuple(r[:2]) for r in index.table(["figure", "status", "claims held"]))
    run_failed = f"failed (run parent {synthetic.parent.key})"
    assert statuses == {
        "tiny-fig": "built",
        "tiny-notebook-failed": "failed (notebook error)",
        "tiny-run-failed": run_failed,
        "tiny-unbuilt": "not built",
    }
    assert "Failed figures" in index.text
    assert f"tiny-notebook-failed: failed (notebook error) tiny-run-failed: {run_failed}" in (
        index.text
    )

    page = Html(synthetic.site / "figures" / "tiny-notebook-failed.html")
    assert "Status: failed (notebook error)." in page.text
    assert "RuntimeError: planted failure" in page.text  # the tail, without colour codes
    assert "Executing: 100%" in page.text and "Executing: 50%" not in page.text
    assert "early line 99" in page.text and "early line 10 " not in page.text
    assert "This claims.csv is from an earlier run" in page.text

    page = Html(synthetic.site / "figures" / "tiny-run-failed.html")
    assert f"Status: {run_failed}." in page.text
    assert "error: parent diverged at step 7 (planted)" in page.text
    assert "an earlier attempt's notebook error" not in page.text

    page = Html(synthetic.site / "figures" / "tiny-unbuilt.html")
    assert "Status: not built." in page.text and "Log" not in page.text


def test_figure_page_shows_provenance_image_claims_and_data(synthetic):
    page = Html(synthetic.site / "figures" / "tiny-fig.html")
    prov = synthetic.provenance
    assert page.field("commit") == f"{prov['commit']} (modified)"
    assert page.field("profile") == "quick"
    assert page.field("parameter file") == "params/tiny-fig.yaml"
    assert page.field("parameter file sha256") == "ab" * 32
    assert page.field("runs") == " ".join(f"{r['kind']} {r['key']}" for r in prov["runs"])
    assert page.field("device") == "cpu (TFRT_CPU_0)"
    assert page.field("JAX") == "0.10.2"
    assert page.field("date") == "2026-11-30T17:00:00Z"
    assert page.table(["claim", "expected", "measured", "holds"]) == [
        list(map(squash, row)) for row in CLAIMS
    ]
    images = {s for s in page.links if s.endswith(".png")}
    assert len(images) == 1
    assert (synthetic.site / "figures" / images.pop()).read_bytes() == png()
    for name in ("tiny-fig.pdf", "claims.csv", "panel_A.csv", "tiny-fig.ipynb"):
        assert any(link.endswith("/" + name) for link in page.links), name
    assert "tiny-fig/tiny-fig.html" in page.links  # the executed notebook's own page

    notebook = Html(synthetic.site / "figures" / "tiny-fig" / "tiny-fig.html")
    assert "The narration of the tiny figure" in notebook.text
    assert "printed output 42" in notebook.text

    unbuilt = Html(synthetic.site / "figures" / "tiny-unbuilt.html")
    for name in ("commit", "profile", "parameter file sha256", "runs", "device", "JAX", "date"):
        assert unbuilt.field(name) == "unknown"


def test_every_internal_link_resolves(synthetic):
    pages = [synthetic.site / "index.html", synthetic.site / "definitions.html"]
    pages += sorted((synthetic.site / "figures").rglob("*.html"))
    assert len(pages) == 2 + 4 + 1  # index, definitions, four figures, one notebook
    for page in pages:
        for link in Html(page).links:
            target = internal(page.as_uri(), link)
            assert target is None or target.exists(), f"{page}: {link}"
    defs = Html(synthetic.site / "definitions.html").text
    assert "Measurement definitions" in defs and "Error barrier" in defs


def internal(page_url: str, link: str) -> Path | None:
    """The file a link on the page at ``page_url`` points to, or None for an external one."""
    if re.match(r"^(https?:|mailto:|#|javascript:|data:)", link):
        return None
    return Path(unquote(urlparse(urljoin(page_url, link)).path))


def test_a_failed_build_keeps_the_previous_site(synthetic, monkeypatch, capsys):
    for var in ("PARAMS", "RUNS", "RESULTS"):
        monkeypatch.setenv(f"NTKPAPER_{var}", str(synthetic.root / var.lower()))
    before = (synthetic.site / "index.html").read_bytes()

    def broken(src, out, doctrees):
        out.mkdir(parents=True)
        (out / "half.html").write_text("half a site")
        return 2

    monkeypatch.setattr(site, "sphinx", broken)
    assert cli.main(["site", "--profile", "quick"]) == 1
    assert "error: sphinx failed (exit status 2)" in capsys.readouterr().err
    assert (synthetic.site / "index.html").read_bytes() == before
    assert not (synthetic.site / "half.html").exists()
    assert [p.name for p in synthetic.results.glob(".site-new-*")] == []


# ---------------------------------------------------------------------------------------
# In a browser: the site of a real (tiny) workflow run
# ---------------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def browser_paths() -> tuple[Path, Path] | None:
    found = [p if p.exists() else shutil.which(p.name) for p in (CHROMIUM, CHROMEDRIVER)]
    return (Path(found[0]), Path(found[1])) if all(found) else None


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """Headless Chromium and its driver (Debian's packages), installed once with apt-get
    when running as root; skipped when absent, failed instead with NTKPAPER_REQUIRE_BROWSER=1."""
    if browser_paths() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
        for cmd in (install, ["apt-get", "update", "-q"], install):
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, timeout=900)
            except subprocess.TimeoutExpired:
                break
            if cmd is install and done.returncode == 0:
                break
    paths = browser_paths()
    if paths is None:
        why = (
            f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install chromium chromium-driver"
        )
        if os.environ.get("NTKPAPER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"NTKPAPER_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return paths


@pytest.fixture
def browser(chromium):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium[0])
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1200,900"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(chromium[1])), options=options)
    viewport = {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", viewport)  # the screenshot's
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> None:
    """Load a page with every image loaded (lazy ones too)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    driver.execute_script("for (const i of document.images) i.loading = 'eager';")
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(i => i.complete)"
        )
    )


@pytest.mark.browser
def test_site_in_a_browser(tiny_built, tmp_path, monkeypatch, browser):
    from selenium.webdriver.common.by import By

    shutil.copytree(tiny_built / "results", tmp_path / "results")  # tiny_built stays as it was
    monkeypatch.setenv("NTKPAPER_PARAMS", str(tiny_built / "params"))
    monkeypatch.setenv("NTKPAPER_RUNS", str(tiny_built / "runs"))
    monkeypatch.setenv("NTKPAPER_RESULTS", str(tmp_path / "results"))
    index = site.build("quick")
    results = tmp_path / "results" / "quick"

    open_page(browser, index)
    shot = tmp_path / "front-page.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("NTKPAPER_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["NTKPAPER_SCREENSHOT"])

    rows = browser.find_elements(By.CSS_SELECTOR, "section#claims-ledger table tbody tr")
    shown = [
        [squash(c.get_attribute("textContent")) for c in r.find_elements(By.TAG_NAME, "td")]
        for r in rows
    ]
    want = []
    for fid in sorted(TINY_FIGURES, key=site.natural):
        claims = results / fid / "claims.csv"
        assert claims.exists(), f"{fid} has no claims.csv"
        want += [[squash(r["claim"]), squash(r["holds"])] for r in site.read_claims(claims)]
    assert [[row[1], row[4]] for row in shown] == want
    assert len(want) > len(TINY_FIGURES)

    figure_pages = [index.parent / "figures" / f"{fid}.html" for fid in TINY_FIGURES]
    for page in [index, *figure_pages]:
        open_page(browser, page)
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.src, i.naturalWidth])"
        )
        assert all(width > 0 for _, width in images), (page, images)
        if page != index:
            assert any(src.endswith(".png") for src, _ in images), page
        links = browser.execute_script(
            "return Array.from(document.querySelectorAll('[href], [src]'))"
            ".map(e => e.getAttribute('href') ?? e.getAttribute('src'))"
        )
        for link in links:
            target = internal(browser.current_url, link)
            assert target is None or target.exists(), f"{page}: {link}"
