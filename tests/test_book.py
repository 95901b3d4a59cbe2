"""The book as a whole: its table of contents, its notebooks as committed, and its build.

The build test runs last (tests/conftest.py orders it). It reuses the chapters that
nbval executed earlier in the same session, so each chapter runs once per `make test`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from book import _bookbuild, _pdf, _runbox, _theme

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
# The appendix's executed pages: notebooks in chapters/ without a chapter number (chapters/speed.ipynb). nbval
# runs them with the chapters, the build reuses those runs, and the same time limit holds.
APPENDIX_PAGES = sorted(p for p in (ROOT / "chapters").glob("*.ipynb") if p not in CHAPTERS)
NOTEBOOKS = sorted(
    p for d in ("chapters", "exercises", "solutions") for p in (ROOT / d).glob("*.ipynb")
)
CHAPTER_TIME_LIMIT_S = 60.0


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for entry in part.get("chapters", []):
            files.append(entry["file"])
            files.extend(s["file"] for s in entry.get("sections", []))
    return files


def resolve(entry: str) -> Path | None:
    for suffix in (".ipynb", ".md"):
        if (ROOT / (entry + suffix)).exists():
            return ROOT / (entry + suffix)
    return None


def test_toc_entries_exist():
    missing = [f for f in toc_files() if resolve(f) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_chapter_is_in_the_toc():
    listed = set(toc_files())
    absent = [p.name for p in CHAPTERS + APPENDIX_PAGES if f"chapters/{p.stem}" not in listed]
    assert not absent, f"chapters missing from _toc.yml: {absent}"


@pytest.mark.parametrize("path", APPENDIX_PAGES, ids=[p.name for p in APPENDIX_PAGES])
def test_appendix_page_follows_the_pattern(path):
    """An executed appendix page: a title without a chapter number, a seeded device-agnostic start, takeaways,
    citations. It has no exercises and no explorer; its figures follow the chapters' rules
    (tests/test_chapter_policy.py)."""
    nb = json.loads(path.read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# ") and not re.match(r"# \d+\. ", first), "an appendix page's title has no number"
    assert len(re.findall(r"^# ", md, flags=re.M)) == 1, "exactly one top-level heading"
    assert "seed_everything(" in code and "device()" in code
    assert "{cite}" in md and re.search(r"^## Takeaways", md, flags=re.M)
    assert APPENDIX_PAGES, "chapters/speed.ipynb is an appendix page"


def test_chapter_slugs_match_across_folders():
    """One chapter = one slug: an exercise or solution notebook names an existing chapter."""
    slugs = {p.stem for p in CHAPTERS}
    for folder in ("exercises", "solutions"):
        for p in (ROOT / folder).glob("*.ipynb"):
            assert p.stem in slugs, f"{folder}/{p.name} has no chapter chapters/{p.name}"


def _title(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join(nb["cells"][0]["source"]).splitlines()[0] if nb["cells"] else ""


SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_solution_and_exercise_pages_have_their_own_titles(path):
    """The sidebar and the search show both pages: "Solutions for chapter N: ..." in the
    appendix, "Exercises for chapter N: ..." (written by `make exercises`) among the exercises."""
    from book.grading.exercises import EXERCISES_TITLE, SOLUTIONS_TITLE

    title = _title(path)
    assert title.startswith(SOLUTIONS_TITLE), f"solutions/{path.name} starts {title!r}, not {SOLUTIONS_TITLE!r}..."
    exercise = ROOT / "exercises" / path.name
    assert _title(exercise) == EXERCISES_TITLE + title[len(SOLUTIONS_TITLE):], "run `make exercises`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_notebook_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; outputs are produced by the build"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_follows_the_pattern(path):
    """A title, a seeded device-agnostic start, an explorer, takeaways, references."""
    nb = json.loads(path.read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert re.match(r"# \d+\. ", "".join(nb["cells"][0]["source"])), "first cell must be '# N. Title'"
    assert len(re.findall(r"^# ", md, flags=re.M)) == 1, "exactly one top-level heading"
    assert "seed_everything(" in code and "device()" in code
    assert "explorer(" in code, "each chapter has one interactive explorer"
    assert "{cite}" in md, "each chapter cites its sources"
    assert re.search(r"^## Takeaways", md, flags=re.M)
    assert f"exercises/{path.stem}.ipynb" in md, "each chapter points to its exercises"


@pytest.mark.parametrize(
    "text, pieces",
    [
        ("rate $O(1/k^2)$.", [(False, "rate "), (True, "O(1/k^2)"), (False, ".")]),
        ("$O(1/k^2)$", [(True, "O(1/k^2)")]),
        ("costs $5 and $10", [(False, "costs $5 and $10")]),
        (r"an escaped \$ sign", [(False, r"an escaped \$ sign")]),
    ],
)
def test_bibliography_math_is_split_out_of_the_text(text, pieces):
    assert _theme.split_dollar_math(text) == pieces


def test_a_script_registered_twice_is_included_once():
    """Sphinx 7.4 adds an inline script as file name None and again as "" (sphinx-thebe's
    `const THEBE_JS_URL`, declared twice: a console error on every page)."""
    from sphinx.builders.html._assets import _JavaScript

    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=thebe), _JavaScript("", body=thebe),
               _JavaScript("_static/a.js"), _JavaScript("", body="other")]
    context = {"script_files": scripts}
    _theme.dedupe_scripts(None, "page", "page.html", context, None)
    assert [(str(js.filename or ""), js.attributes.get("body")) for js in context["script_files"]] == [
        ("_static/a.js", None), ("", thebe), ("", "other")]


@pytest.mark.parametrize("seconds, text", [(7.25, "7.2 s"), (21.79, "22 s"), (59.6, "1 min 0 s"), (75, "1 min 15 s")])
def test_run_times_are_written_for_readers(seconds, text):
    assert _runbox.format_seconds(seconds) == text


def test_the_run_box_sits_after_the_objectives():
    """The "Run this chapter" box goes right after the objectives' list (chapter 7 has a paragraph after it),
    or, for a chapter without the objectives' heading, before its first code cell or section."""
    from docutils import nodes

    def section(*children):
        return nodes.section("", nodes.title("", "7. Title"), *children)

    goals = [nodes.paragraph("", "", nodes.strong("", _runbox.OBJECTIVES)), nodes.bullet_list()]
    cell = nodes.container(classes=["cell"])
    assert _runbox.objectives_end(section(nodes.paragraph("", "intro"), *goals, nodes.paragraph("", "more"), cell)) == 4
    assert _runbox.objectives_end(section(nodes.paragraph("", "intro"), cell, nodes.section())) == 2


def test_the_run_box_states_only_measured_times():
    box = _runbox.run_box("chapters/05_adaptive", {"runtime": 21.79, "mtime": 0.0, "succeeded": True}, "cpu", 2)
    text = box.astext()
    assert "make lab" in text and "jupyter lab chapters/05_adaptive.ipynb" in text
    assert all(v in text for v in ("book.utils.device()", "BOOK_DEVICE", "BOOK_SEED", "BOOK_THREADS"))
    assert "22 s to run all its cells in a fresh kernel" in text and "machine that built this book" in text
    assert "(2 CPU cores, computing on cpu)" in text
    unmeasured = _runbox.run_box("chapters/05_adaptive", None, None, None).astext()
    assert "Not measured" in unmeasured and " s to run all its cells" not in unmeasured


@pytest.mark.parametrize("title, stripped", [("1. Optimization and deep learning", "Optimization and deep learning"),
                                              ("11. Scaling out", "Scaling out"), ("Notation", "Notation")])
def test_the_pdf_numbers_each_chapter_once(title, stripped):
    """LaTeX numbers chapters itself, so the PDF drops the number the title carries for the site."""
    from docutils import nodes

    node = nodes.title("", title)
    assert _pdf.strip_number(node) == (title != stripped) and node.astext() == stripped


def _heading_slugs(notebook: Path) -> set[str]:
    from myst_parser.mdit_to_docutils.base import default_slugify

    nb = json.loads(notebook.read_text())
    slugs = set()
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for level, title in re.findall(r"^(#{1,3}) (.+)$", "".join(cell["source"]), flags=re.M):
                slugs.add(default_slugify(re.sub(r"`([^`]*)`", r"\1", title.strip())))
    return slugs


@pytest.mark.parametrize("page", ["notation.md", "glossary.md"])
def test_notation_and_glossary_link_to_sections_that_exist(page):
    """Each symbol and term links to the section that defines it (`myst_heading_anchors` makes the slugs)."""
    text = (ROOT / "chapters" / page).read_text()
    links = re.findall(r"\]\((\d\d_[a-z0-9_]+)\.ipynb#([a-z0-9-]+)\)", text)
    assert len(links) > 30, f"{page}: only {len(links)} links to chapter sections"
    slugs = {nb: _heading_slugs(ROOT / "chapters" / f"{nb}.ipynb") for nb, _ in links}
    missing = sorted({f"{nb}#{slug}" for nb, slug in links if slug not in slugs[nb]})
    assert not missing, f"{page} links to headings that do not exist: {missing}"


def test_the_glossary_defines_30_to_60_terms():
    body = (ROOT / "chapters" / "glossary.md").read_text().split("```{glossary}", 1)[1].split("\n```", 1)[0]
    definitions = [block for block in body.split("\n\n") if block.strip() and not block.strip().startswith(":")]
    assert 30 <= len(definitions) <= 60, len(definitions)
    for block in definitions:
        assert re.search(r"Chapter \d+", block), f"no chapter given for {block.splitlines()[0]!r}"


def _nbval_executions(session) -> dict[Path, tuple[object, float]]:
    """Notebooks that nbval executed in this session with every cell passing."""
    by_notebook: dict[Path, list] = {}
    for item in session.items:
        if type(item).__name__ == "IPyNbCell" and Path(str(item.parent.path)).parent.name == "chapters":
            by_notebook.setdefault(Path(str(item.parent.path)), []).append(item)
    done = {}
    for path, items in by_notebook.items():
        reports = [r for item in items for r in getattr(item, "book_reports", [])]
        calls = [r for r in reports if r.when == "call"]
        if len(calls) != len(items) or not all(r.passed for r in reports):
            continue  # not run, or failed: leave it to the build
        nb = items[0].parent.nb
        for n, item in enumerate(items, start=1):
            item.cell.outputs = list(item.test_outputs or [])
            for out in item.cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = n
            item.cell.execution_count = n
        done[path] = (nb, sum(r.duration for r in reports))
    return done


@pytest.mark.book_build
def test_book_builds_without_warnings(request):
    """`jupyter-book build` with warnings as errors; every chapter runs within its budget."""
    executed = _nbval_executions(request.session)
    slow = {p.name: round(t, 1) for p, (_, t) in executed.items() if t > CHAPTER_TIME_LIMIT_S}
    for path, (nb, seconds) in executed.items():
        _bookbuild.cache_executed_notebook(ROOT, path, nb, seconds)
    if executed:
        timings = ", ".join(f"{p.name} {t:.1f} s" for p, (_, t) in sorted(executed.items()))
        print(f"\nchapter execution times (nbval): {timings}")

    _bookbuild.sync_cache(ROOT)
    jb = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--builder", "html", "--warningiserror", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    elapsed = time.perf_counter() - start
    log = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, f"book build failed (exit {proc.returncode}):\n{log}"
    print(f"book build: {elapsed:.1f} s")

    html = ROOT / "_build" / "html"
    assert (html / "index.html").exists()
    for chapter in CHAPTERS:
        page = (html / "chapters" / f"{chapter.stem}.html").read_text()
        assert "<img" in page, f"{chapter.name}: no figure in the built page"
        assert 'class="math' in page, f"{chapter.name}: no math in the built page"
        assert "Traceback" not in page, f"{chapter.name}: a traceback in the built page"
        # every figure is numbered and captioned (placed by a glue:figure directive)
        nb = json.loads(chapter.read_text())
        placed = sum("".join(c["source"]).count("{glue:figure}") for c in nb["cells"] if c["cell_type"] == "markdown")
        numbered = len(re.findall(r'<span class="caption-number">Fig\. [\d.]+ </span>', page))
        assert numbered == placed > 0, f"{chapter.name}: {placed} glue:figure directives but {numbered} numbered figures"
        # the math is typeset by the site's own copy of MathJax (book/_mathjax.py), not a CDN
        assert '_static/mathjax/MathJax.js' in page and "cdn.jsdelivr" not in page, chapter.name
        # each script once (book/_theme.py; a second `const THEBE_JS_URL` is a console error)
        assert page.count("const THEBE_JS_URL") <= 1, f"{chapter.name}: thebe's configuration twice"
        # the "Run this chapter" box (book/_runbox.py): after the objectives, before the set-up cell, with the
        # run time measured when the chapter was executed (never a typed number)
        box = page.find('class="tip run-this-chapter admonition"')
        assert 0 < page.find("After this chapter you can") < box < page.find('class="cell docutils container"'), (
            f"{chapter.name}: no 'Run this chapter' box between the objectives and the set-up cell")
        box_text = re.sub(r"<[^>]+>", "", page[box:page.find("</div>", box)])
        assert f"jupyter lab chapters/{chapter.name}" in box_text.replace("\n", " "), chapter.name
        measured = r"Run time\.</strong> [\d.]+ (s|min \d+ s) to run all its cells in a fresh kernel"
        assert re.search(measured, page[box:]), f"{chapter.name}: the box has no measured run time"
        # the download button gives the executed notebook, outputs included (book/_theme.py)
        download = json.loads((html / "_sources" / "chapters" / chapter.name).read_text())
        assert any(c.get("outputs") for c in download["cells"] if c["cell_type"] == "code"), (
            f"{chapter.name}: the notebook the page offers for download has no outputs")
    for extra in APPENDIX_PAGES:  # executed like a chapter: figures numbered, outputs in the download
        page = (html / "chapters" / f"{extra.stem}.html").read_text()
        nb = json.loads(extra.read_text())
        placed = sum("".join(c["source"]).count("{glue:figure}") for c in nb["cells"] if c["cell_type"] == "markdown")
        numbered = len(re.findall(r'<span class="caption-number">Fig\. [\d.]+ </span>', page))
        assert numbered == placed > 0, f"{extra.name}: {placed} glue:figure directives but {numbered} numbered figures"
        assert "<img" in page and 'class="math' in page and "Traceback" not in page, extra.name
        download = json.loads((html / "_sources" / "chapters" / extra.name).read_text())
        assert any(c.get("outputs") for c in download["cells"] if c["cell_type"] == "code"), extra.name
    # the intro's table of run times has every chapter, each measured
    intro = (html / "chapters" / "intro.html").read_text()
    table = intro[intro.find('class="chapter-run-times'):]
    table = table[:table.find("</table>")]
    assert len(re.findall(r"[\d.]+ s</p>", table)) == len(CHAPTERS) and "not executed" not in table, "intro: run times"
    assert (html / "_static" / "mathjax" / "MathJax.js").is_file()
    # TeX in a .bib title is typeset on the bibliography page, by the site's MathJax
    if "$" in (ROOT / "chapters" / "references.bib").read_text():
        bibliography = (html / "chapters" / "bibliography.html").read_text()
        assert 'class="math' in bibliography and "_static/mathjax/MathJax.js" in bibliography
    assert (html / "_static" / "mathjax" / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").is_dir()
    assert not slow, f"chapters over the {CHAPTER_TIME_LIMIT_S:.0f} s budget: {slow}"


def test_a_library_change_empties_the_cache_and_the_stored_doctrees(tmp_path):
    """Sphinx re-reads only changed sources: a stale doctree would keep the old library's outputs."""
    build = tmp_path / "_build"
    (build / ".jupyter_cache").mkdir(parents=True)
    (build / ".doctrees").mkdir()
    (build / ".doctrees" / "chapters.doctree").write_text("old")
    (build / _bookbuild.FINGERPRINT_FILE).write_text("a fingerprint of another library\n")
    assert _bookbuild.sync_cache(tmp_path)
    assert not (build / ".jupyter_cache").exists() and not (build / ".doctrees").exists()
    (build / ".doctrees").mkdir()
    assert not _bookbuild.sync_cache(tmp_path)  # same library: everything stays
    assert (build / ".doctrees").exists()


def test_the_test_scheduler_keeps_the_chapters_with_the_build():
    """`make test` runs on two processes; the build must run after the chapters, in their process
    (conftest.py's scheduler). Its list of build tests is the list of tests marked book_build,
    and every chapter cell and no other test falls in the build's unit."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_root_conftest", ROOT / "conftest.py")
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    marked = tuple(f"tests/test_book.py::{name}" for name, fn in globals().items()
                   if any(m.name == "book_build" for m in getattr(fn, "pytestmark", [])))
    assert marked == root.BOOK_BUILD_TESTS
    others = [p.name for p in (ROOT / "tests").glob("test_*.py")
              if p.name != "test_book.py" and "mark.book_build" in p.read_text()]
    assert not others, f"book_build tests outside test_book.py, unknown to conftest.py: {others}"
    assert root.scope_of("chapters/03_sgd.ipynb::Cell 4") == "book"
    assert root.scope_of("exercises/03_sgd.ipynb::Cell 4") == "exercises/03_sgd.ipynb"
    assert root.scope_of("tests/test_book.py::test_toc_entries_exist") == "tests/test_book.py"
    assert root.scope_of("tests/test_optim_sgd.py::test_x[cpu-a::b]") == "tests/test_optim_sgd.py"
