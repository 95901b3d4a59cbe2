"""The chapters' house rules, read from their sources (nothing is executed here).

They hold for every notebook in ``chapters/``: the numbered chapters and the executed appendix pages.

- every figure is numbered and captioned: drawn through ``plotting.show(fig, "fig-...")`` in
  a cell tagged ``remove-output``, and placed by a ``{glue:figure}`` directive with a caption;
- figures are drawn at most the page's width (``book.plotting.PAGE_WIDTH``), so their labels
  are not shrunk;
- the prose never names a curve by its colour alone: it uses the legend's labels;
- every seed of a method's randomness goes through ``book.utils.method_seed`` (or
  ``generator``), so ``make claims`` can move it; a seed that fixes a problem instance says so
  with a ``# problem instance`` comment on its line, and the set-up cell says what BOOK_SEED moves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from book.plotting import PAGE_WIDTH

ROOT = Path(__file__).resolve().parent.parent
# Every executed page in chapters/: the numbered chapters and the appendix's notebooks (chapters/speed.ipynb)
# keep the same rules; nbval executes them all.
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
IDS = [p.stem for p in CHAPTERS]

SHOW = re.compile(r"plotting\.show\(\s*[^,]+,\s*[\"'](fig-[a-z0-9-]+)[\"']\s*\)")
DIRECTIVE = re.compile(r"```\{glue:figure\}\s*(\S+)\s*\n(.*?)```", re.S)
COLOUR = re.compile(r"\b(blue|orange|green|purple|red|vermillion|yellow|black|grey|gray|pink|sky[- ]blue)\b", re.I)
SEED_CALL = re.compile(r"manual_seed\(([^()]*(?:\([^()]*\))?[^()]*)\)")
FIGSIZE = re.compile(r"figsize\s*=\s*\(\s*([0-9.]+)")


def cells(path: Path):
    nb = json.loads(path.read_text())
    for index, cell in enumerate(nb["cells"]):
        yield index, cell["cell_type"], "".join(cell["source"]), cell.get("metadata", {}).get("tags", [])


def code_lines(source: str):
    for number, line in enumerate(source.splitlines(), 1):
        yield number, line


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_every_figure_is_numbered_and_captioned(path):
    shown, placed, problems = {}, {}, []
    for index, kind, source, tags in cells(path):
        if kind == "code":
            if "plt.show()" in source:
                problems.append(f"cell {index}: plt.show() -- use plotting.show(fig, 'fig-...') and a captioned glue:figure")
            names = SHOW.findall(source)
            if "explorer(" in source and not names:
                problems.append(f"cell {index}: an explorer not shown through plotting.show(explorer, 'fig-...')")
            if names and "remove-output" not in tags:
                problems.append(f"cell {index}: shows {names} but is not tagged remove-output (the book would show it twice)")
            for name in names:
                if name in shown:
                    problems.append(f"cell {index}: figure name {name!r} used twice")
                shown[name] = index
        else:
            for name, body in DIRECTIVE.findall(source):
                options = [line for line in body.splitlines() if line.strip().startswith(":")]
                caption = " ".join(line.strip() for line in body.splitlines()
                                   if line.strip() and not line.strip().startswith(":"))
                if f":name: {name}" not in "\n".join(o.strip() for o in options):
                    problems.append(f"cell {index}: glue:figure {name} has no ':name: {name}' (it would not be numbered)")
                if len(caption.split()) < 5:
                    problems.append(f"cell {index}: glue:figure {name} has no caption that says what to look at")
                placed[name] = index
    for name in shown.keys() - placed.keys():
        problems.append(f"figure {name!r} (cell {shown[name]}) is never placed with a glue:figure directive")
    for name in placed.keys() - shown.keys():
        problems.append(f"glue:figure {name!r} (cell {placed[name]}) places a figure no cell shows")
    for name in shown.keys() & placed.keys():
        if placed[name] < shown[name]:
            problems.append(f"glue:figure {name!r} comes before the cell that draws it")
    assert not problems, "\n".join(problems)


def test_figure_names_are_unique_across_the_book():
    seen: dict[str, str] = {}
    for path in CHAPTERS:
        for _, kind, source, _ in cells(path):
            if kind == "code":
                for name in SHOW.findall(source):
                    assert name not in seen, f"{name} is used in {seen[name]} and {path.stem}"
                    seen[name] = path.stem


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_figures_fit_the_page(path):
    wide = []
    for index, kind, source, _ in cells(path):
        if kind == "code":
            for number, line in code_lines(source):
                for width in FIGSIZE.findall(line):
                    if float(width) > PAGE_WIDTH:
                        wide.append(f"cell {index}, line {number}: {line.strip()}")
    assert not wide, f"figures wider than the page ({PAGE_WIDTH} in) are shrunk, labels too:\n" + "\n".join(wide)


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_prose_does_not_name_curves_by_colour(path):
    found = []
    for index, kind, source, _ in cells(path):
        if kind == "markdown":
            for match in COLOUR.finditer(source):
                start = max(0, match.start() - 40)
                found.append(f"cell {index}: ...{source[start:match.end() + 20]!r}...")
    assert not found, "name the curve by its legend label, not its colour:\n" + "\n".join(found)


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_seeds_go_through_method_seed(path):
    bad, setup_mentions_offset = [], False
    for index, kind, source, _ in cells(path):
        if kind != "code":
            continue
        if "seed_everything(" in source and "BOOK_SEED" in source:
            setup_mentions_offset = True
        for number, line in code_lines(source):
            for argument in SEED_CALL.findall(line):
                if "method_seed(" not in argument and "# problem instance" not in line:
                    bad.append(f"cell {index}, line {number}: {line.strip()}")
    assert not bad, ("a seed that BOOK_SEED cannot move: use method_seed(k) / generator(k), or mark a "
                     "problem instance with '# problem instance':\n" + "\n".join(bad))
    assert setup_mentions_offset, "the set-up cell (with seed_everything) should say what BOOK_SEED moves and what stays fixed"


def test_the_rules_cover_the_appendix_pages():
    """A notebook in chapters/ without a chapter number is held to the same rules, not exempted."""
    assert ROOT / "chapters" / "speed.ipynb" in CHAPTERS
    assert len(CHAPTERS) > len(list((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")))
