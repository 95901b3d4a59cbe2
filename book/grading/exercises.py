"""Generate the student notebooks in exercises/ from the solution notebooks in solutions/.

    python -m book.grading.exercises            # (re)write exercises/ (make exercises)
    python -m book.grading.exercises --check    # exit 1 if exercises/ is out of date

The answers between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` are replaced with
a stub by nbgrader's own ``ClearSolutions`` preprocessor, and outputs are removed by
its ``ClearOutput``, so the solution notebooks work unchanged as an nbgrader
assignment's source. (nbgrader is imported only here: it is slow to import.)

The two are different pages of the book, so they have different titles: a solution
notebook starts ``# Solutions for chapter N: ...`` and its exercise notebook
``# Exercises for chapter N: ...``, the one change made here besides nbgrader's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS_TITLE = "# Solutions for chapter "
EXERCISES_TITLE = "# Exercises for chapter "


def retitle(nb) -> None:
    """Turn a solution notebook's title into its exercise notebook's (in place)."""
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "markdown" and first.source.startswith(SOLUTIONS_TITLE):
        first.source = EXERCISES_TITLE + first.source[len(SOLUTIONS_TITLE):]


def generate(solution: Path):
    """The exercise notebook for one solution notebook (an nbformat NotebookNode)."""
    import nbformat
    from nbgrader.preprocessors import ClearOutput, ClearSolutions

    nb = nbformat.read(str(solution), as_version=4)
    resources: dict = {}
    nb, resources = ClearSolutions(enforce_metadata=True).preprocess(nb, resources)
    nb, resources = ClearOutput().preprocess(nb, resources)
    retitle(nb)
    return nb


def render(solution: Path) -> str:
    import nbformat

    return nbformat.writes(generate(solution)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that exercises/ is up to date")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    solutions = sorted((args.root / "solutions").glob("*.ipynb"))
    out_dir = args.root / "exercises"
    stale = []
    for sol in solutions:
        target = out_dir / sol.name
        text = render(sol)
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(args.root)}")
    if args.check:
        extra = sorted(p.name for p in out_dir.glob("*.ipynb") if not (args.root / "solutions" / p.name).exists())
        if stale or extra:
            print(f"exercises/ is out of date: {stale + extra}; run `make exercises`", file=sys.stderr)
            return 1
        print("exercises/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
