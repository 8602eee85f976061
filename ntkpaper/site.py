"""Report site: every figure's claims, image, provenance and executed notebook, as HTML.

``python -m ntkpaper site --profile quick`` writes a Sphinx source tree (myst-nb, the book
theme) to ``results/<profile>/.site-src/`` and builds it into ``results/<profile>/site/``::

    index.html                      claims ledger of every figure, summary, failed figures
    definitions.html                docs/measurements.md and docs/theory.md
    figures/<fid>.html              status, image, PDF, provenance, claims, CSVs
    figures/<fid>/<fid>.html        the executed notebook, narration and outputs

The site is built into a temporary folder beside ``site/`` and renamed over it only once
Sphinx has succeeded, so a failed build leaves the previous site in place. It opens from
the file system (``file://``) as well as from a web server; math needs MathJax's CDN.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ntkpaper import params as P
from ntkpaper import plan, provenance, store

REPO = provenance.REPO
LOG_LINES = 40
PROVENANCE = (  # (key in provenance.json, label on the figure page)
    ("commit", "commit"),
    ("profile", "profile"),
    ("notebook", "notebook"),
    ("params_file", "parameter file"),
    ("params_sha256", "parameter file sha256"),
    ("runs", "runs"),
    ("device", "device"),
    ("jax", "JAX"),
    ("date", "date"),
)


class SiteError(RuntimeError):
    """Sphinx failed; the previous site (if any) is left in place."""


@dataclass
class Page:
    """What the site says about one figure."""

    id: str
    notebook: str
    params_file: str
    status: str
    log: str = ""  # tail of the log of a failed notebook or run
    claims: list[dict[str, str]] = field(default_factory=list)
    csvs: list[str] = field(default_factory=list)
    provenance: dict | None = None
    runs: list[tuple[str, str, bool]] = field(default_factory=list)  # kind, key, complete

    @property
    def built(self) -> bool:
        return self.status == "built"

    @property
    def failed(self) -> bool:
        return self.status.startswith("failed")


# ---------------------------------------------------------------------------------------
# Markdown helpers: every text from a results file is escaped, never interpreted
# ---------------------------------------------------------------------------------------

_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def md(value) -> str:
    """``value`` as literal MyST text on one line (every ASCII punctuation escaped)."""
    return _PUNCT.sub(r"\\\1", " ".join(str(value).split()))


def code(value) -> str:
    """``value`` as an inline code span."""
    text = " ".join(str(value).split())
    ticks = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    return f"{ticks} {text} {ticks}"


def block(text: str, lang: str = "text") -> str:
    """A fenced code block that no run of backticks in ``text`` can close."""
    ticks = "`" * max(3, max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}\n"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table of already-escaped cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c or " " for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def natural(fid: str) -> list:
    """Sort key: fort-fig2 before fort-fig10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", fid)]


def tail(path: Path, n: int = LOG_LINES) -> str:
    """The last ``n`` lines of a log, without colour codes or progress-bar redraws."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
        text = f.read().decode("utf-8", "replace")
    lines = [_ANSI.sub("", line).rstrip("\r").split("\r")[-1] for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines[-n:]) or "(empty log)"


# ---------------------------------------------------------------------------------------
# What the results say
# ---------------------------------------------------------------------------------------


def read_claims(path: Path) -> list[dict[str, str]]:
    """The rows of a ``claims.csv``, every cell as the text in the file."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return [{k: v or "" for k, v in row.items() if k} for row in csv.DictReader(f)]


def read_provenance(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def figure_page(fig: P.Figure, profile: str) -> Page:
    """Status, claims, CSVs and provenance of one figure from its results and runs."""
    out = store.results_dir(profile, fig.id)
    jobs = [(j.kind, j.key, store.is_complete(j.kind, j.key)) for j in plan.figure_runs(fig).jobs()]
    page = Page(fig.id, fig.notebook, f"params/{fig.path.name}", "not built", runs=jobs)
    failed_runs = [
        (kind, key, store.run_dir(kind, key) / "log.txt")
        for kind, key, complete in jobs
        if not complete and (store.run_dir(kind, key) / "log.txt").exists()
    ]
    if (out / f"{fig.id}.pdf").exists():
        page.status = "built"
    elif failed_runs:  # before the notebook's log: with runs missing, that log is older
        kind, key, log = failed_runs[0]
        page.status, page.log = f"failed (run {kind} {key})", tail(log)
    elif (out / "papermill.log").exists():
        page.status, page.log = "failed (notebook error)", tail(out / "papermill.log")
    if (out / "claims.csv").exists():
        page.claims = read_claims(out / "claims.csv")
    page.csvs = sorted(p.name for p in out.glob("*.csv"))
    page.provenance = read_provenance(out / "provenance.json")
    return page


def readme_descriptions() -> dict[str, str]:
    """Figure id -> its row of README.md's figure table (markdown), where there is one."""
    try:
        lines = (REPO / "README.md").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3:
            continue
        ids = [s.strip() for s in cells[0].split(",")]
        base = ids[0].rsplit("-", 1)[0]
        for fid in ids:
            found[base + fid if fid.startswith("-") else fid] = cells[2]
    return found


def git_commit() -> str:
    """This checkout's commit, with "(modified)" when its files differ from it."""
    commit, modified = provenance.code_version()
    return commit + (" (modified)" if modified else "")


def commit_of(prov: dict | None) -> str:
    if not prov or not prov.get("commit"):
        return "unknown"
    return str(prov["commit"]) + (" (modified)" if prov.get("modified") is True else "")


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


def provenance_rows(page: Page) -> list[list[str]]:
    prov = page.provenance or {}
    rows = []
    for key, label in PROVENANCE:
        value = prov.get(key)
        if key == "commit":
            text = code(commit_of(page.provenance)) if value else "unknown"
        elif key == "runs" and isinstance(value, list) and value:
            text = "<br>".join(
                f"{md(r.get('kind', '?'))} {code(r.get('key', '?'))}"
                if isinstance(r, dict)
                else md(r)
                for r in value
            )
        elif value is None or value == "" or value == []:
            text = "unknown"
        elif key in ("params_sha256", "params_file"):
            text = code(value)
        else:
            text = md(value)
        rows.append([label, text])
    return rows


def claims_rows(claims: list[dict[str, str]]) -> list[list[str]]:
    return [[md(r.get(k, "")) for k in ("claim", "expected", "measured", "holds")] for r in claims]


def write_figure(src: Path, page: Page, profile: str, about: str) -> None:
    """``figures/<fid>.md`` and its files (image, PDF, CSVs, notebook) in ``figures/<fid>/``."""
    out, assets = store.results_dir(profile, page.id), src / "figures" / page.id
    assets.mkdir(parents=True)
    text = [f"# {md(page.id)}\n", f"{about}\n" if about else ""]
    text.append(
        f"**Status:** {md(page.status)}. Notebook {code(page.notebook)}, "
        f"parameters {code(page.params_file)}, profile {code(profile)}.\n"
    )
    if page.log:
        text += ["## Log\n", f"The last lines of the log ({md(page.status)}):\n", block(page.log)]
    for ext in ("png", "pdf"):
        if (out / f"{page.id}.{ext}").exists():
            shutil.copy2(out / f"{page.id}.{ext}", assets / f"{page.id}.{ext}")
    if (assets / f"{page.id}.png").exists():
        text.append(f"```{{image}} {page.id}/{page.id}.png\n:alt: {page.id}\n:width: 100%\n```\n")
    if (assets / f"{page.id}.pdf").exists():
        text.append(f"{{download}}`The figure as PDF <{page.id}/{page.id}.pdf>`\n")
    text += ["## Provenance\n", table(["field", "value"], provenance_rows(page))]
    if page.provenance is None:
        text.append("No readable `provenance.json` beside the figure: every field is unknown.\n")
    text.append("## Claims\n")
    if page.claims:
        if not page.built:
            text.append("This `claims.csv` is from an earlier run: the figure is not built now.\n")
        text.append(table(["claim", "expected", "measured", "holds"], claims_rows(page.claims)))
    else:
        text.append("No `claims.csv`.\n")
    text.append("## Data\n")
    for name in page.csvs:
        shutil.copy2(out / name, assets / name)
        text.append(f"- {{download}}`{name} <{page.id}/{name}>`\n")
    if not page.csvs:
        text.append("No CSV files.\n")
    text += ["\n## Runs\n", table(["kind", "key", "state"], [
        [md(kind), code(key), "complete" if done else "not complete"]
        for kind, key, done in page.runs
    ])]  # fmt: skip
    text.append("## Executed notebook\n")
    if copy_notebook(out / f"{page.id}.ipynb", assets / f"{page.id}.ipynb"):
        text.append(
            f"{{doc}}`The notebook as executed, with its narration <{page.id}/{page.id}>` "
            f"({{download}}`{page.id}.ipynb <{page.id}/{page.id}.ipynb>`).\n\n"
            f"```{{toctree}}\n:hidden:\n\n{page.id}/{page.id}\n```\n"
        )
    else:
        text.append("No readable executed notebook.\n")
    (src / "figures" / f"{page.id}.md").write_text("\n".join(text))


def copy_notebook(source: Path, target: Path) -> bool:
    """Copy an executed notebook, giving its cells the ids nbformat 4.5 wants; False if
    it is missing or not a notebook."""
    try:
        nb = json.loads(source.read_text())
        cells = nb["cells"]
        for i, cell in enumerate(cells):
            cell.setdefault("id", f"cell-{i}")
        nb["nbformat_minor"] = max(nb.get("nbformat_minor", 0), 5)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return False
    target.write_text(json.dumps(nb))
    return True


def write_index(src: Path, pages: list[Page], profile: str) -> None:
    """The front page: summary, provenance, the claims ledger, the figures."""
    failed = [p for p in pages if p.failed]
    built = sum(p.built for p in pages)
    verdicts = [r.get("holds", "") for p in pages for r in p.claims]
    held, not_held = verdicts.count("True"), verdicts.count("False")
    other = len(verdicts) - held - not_held
    commits = sorted({commit_of(p.provenance) for p in pages if p.built})
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    link = lambda p: f"[{md(p.id)}](figures/{p.id}.md)"
    text = [
        f"# ntkpaper report, profile {md(profile)}\n",
        f"**{built} of {len(pages)} figures built, {len(failed)} failed, "
        f"{len(pages) - built - len(failed)} not built.** Claims: {held} hold, {not_held} do "
        f"not" + (f", {other} other" if other else "") + f" (of {len(verdicts)}).\n",
        f"Profile {code(profile)}. Site built {md(stamp)} from ntkpaper commit "
        f"{code(git_commit())}; figures built from commit "
        + (", ".join(code(c) for c in commits) or "none")
        + " (each figure's page has its provenance).\n",
    ]
    if failed:
        text.append("## Failed figures\n")
        text += [f"- {link(p)}: {md(p.status)}\n" for p in failed]
    text.append("\n## Claims ledger\n")
    text.append(
        "Every row of every figure's `claims.csv`: the paper's claim, what would confirm it at "
        "this scale, what this run measured, and whether it holds.\n"
    )
    rows = [
        [link(p) + ("" if p.built else " (earlier run)"), *claims_rows([r])[0]]
        for p in pages
        for r in p.claims
    ]
    text.append(table(["figure", "claim", "expected", "measured", "holds"], rows))
    text.append("\n## Figures\n")
    text.append(table(["figure", "status", "claims held"], [
        [link(p), md(p.status),
         f"{sum(r.get('holds') == 'True' for r in p.claims)} of {len(p.claims)}"]
        for p in pages
    ]))  # fmt: skip
    text.append("\nDefinitions of every measured quantity: [](definitions.md).\n")
    toc = "\n".join(f"figures/{p.id}" for p in pages)
    text.append(f"```{{toctree}}\n:hidden:\n:caption: Figures\n\n{toc}\n```\n")
    text.append("```{toctree}\n:hidden:\n:caption: Reference\n\ndefinitions\n```\n")
    (src / "index.md").write_text("\n".join(text))


def write_definitions(src: Path) -> None:
    """One page of docs/measurements.md and docs/theory.md (included, headings shifted)."""
    (src / "_docs").mkdir()
    text = ["# Measurement definitions\n"]
    for name in ("measurements.md", "theory.md"):
        if (REPO / "docs" / name).exists():
            shutil.copy2(REPO / "docs" / name, src / "_docs" / name)
            text.append(f"```{{include}} _docs/{name}\n:heading-offset: 1\n```\n")
    (src / "definitions.md").write_text("\n".join(text))


CONF = """\
# Written by ntkpaper.site: the report site of profile {profile}.
project = {project!r}
author = "ntkpaper"
html_title = {project!r}
extensions = ["myst_nb", "sphinx-mathjax-offline"]  # MathJax bundled: math renders offline
exclude_patterns = ["_docs"]
myst_enable_extensions = ["dollarmath", "amsmath"]
nb_execution_mode = "off"
smartquotes = False
html_theme = "sphinx_book_theme"
html_theme_options = {{
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "show_navbar_depth": 1,
    "secondary_sidebar_items": {{"**": ["page-toc"], "index": []}},
}}
html_static_path = ["_static"]
html_css_files = ["ntkpaper.css"]
html_copy_source = False
html_show_sourcelink = False
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
"""


CSS = """\
/* The front page has no page-contents sidebar: its claims ledger takes the width. */
.bd-content:not(:has(.bd-sidebar-secondary)) .bd-article-container { max-width: 100%; }
td:first-child a.reference.internal { white-space: nowrap; }
"""


def write_source(src: Path, profile: str) -> list[Page]:
    """The whole Sphinx source tree under ``src`` (emptied first)."""
    figures = P.load_all(profile)
    pages = [figure_page(figures[fid], profile) for fid in sorted(figures, key=natural)]
    if src.exists():
        shutil.rmtree(src)
    (src / "figures").mkdir(parents=True)
    about = readme_descriptions()
    for page in pages:
        write_figure(src, page, profile, about.get(page.id, ""))
    write_index(src, pages, profile)
    write_definitions(src)
    (src / "conf.py").write_text(CONF.format(profile=profile, project=f"ntkpaper ({profile})"))
    (src / "_static").mkdir()
    (src / "_static" / "ntkpaper.css").write_text(CSS)
    return pages


def sphinx(src: Path, out: Path, doctrees: Path) -> int:
    """Run Sphinx (HTML, quiet: warnings and errors still print); its exit status."""
    from sphinx.cmd.build import build_main

    return build_main(["-b", "html", "-q", "-N", "-d", str(doctrees), str(src), str(out)])


def build(profile: str) -> Path:
    """Build ``results/<profile>/site/`` and return the path of its ``index.html``."""
    root = store.results_dir(profile)
    root.mkdir(parents=True, exist_ok=True)
    src, site = root / ".site-src", root / "site"
    write_source(src, profile)
    work = Path(tempfile.mkdtemp(prefix=".site-new-", dir=root))  # myst-nb writes beside html/
    old = work / "old"
    try:
        status = sphinx(src, work / "html", work / "doctrees")
        if status != 0 or not (work / "html" / "index.html").exists():
            raise SiteError(f"sphinx failed (exit status {status}) on {src}; {site} unchanged")
        if site.exists():
            os.replace(site, old)
        try:
            os.replace(work / "html", site)
        except OSError:
            if old.exists():
                os.replace(old, site)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return site / "index.html"
