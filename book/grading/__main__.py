"""Command line: ``python -m book.grading NOTEBOOK_OR_FOLDER... [--json PATH] [--csv PATH]``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def _table(report) -> str:
    lines = [f"{report.notebook}: {report.score:g}/{report.max_score:g}"
             + (f"   ({report.error})" if report.error else "")]
    for r in report.results:
        msg = r.message if len(r.message) <= 150 else r.message[:147] + "..."
        lines.append(f"  {'PASS' if r.passed else 'FAIL'}  {r.id:<26} {r.points:>3g}/{r.max_points:<3g} {msg}")
    return "\n".join(lines)


def write_csv(reports, path: Path) -> None:
    """A gradebook: one row per submission, one column per question (points, partial credit
    included), one per kind of question (the points earned on questions of that kind, e.g.
    ``derive``), then the total."""
    from book.grading.core import KINDS
    from book.grading.questions import all_questions

    kind_of = {q.id: q.kind for q in all_questions()}
    columns: list[str] = []
    for rep in reports:
        for r in rep.results:
            if r.id not in columns:
                columns.append(r.id)
    kinds = [k for k in KINDS if any(kind_of.get(c) == k for c in columns)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["notebook", "chapter", *columns, *[f"{k} (points)" for k in kinds], "score", "max_score",
                    "error"])
        for rep in reports:
            pts = {r.id: r.points for r in rep.results}
            by_kind = [round(sum(r.points for r in rep.results if kind_of.get(r.id) == k), 2) for k in kinds]
            w.writerow([rep.notebook, rep.chapter or "", *[pts.get(c, "") for c in columns], *by_kind,
                        rep.score, rep.max_score, rep.error or ""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="book-grade",
        description="Grade exercise notebooks in a separate, time- and memory-limited process.",
    )
    parser.add_argument("paths", nargs="+", help="notebooks, or folders of notebooks")
    parser.add_argument("--json", type=Path, help="write the grades as JSON here")
    parser.add_argument("--csv", type=Path, help="write a gradebook (one row per notebook) here")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds each answer cell and each question may take (default 10)")
    parser.add_argument("--memory-mb", type=int, default=3072,
                        help="memory limit of the process running the answers (default 3072)")
    parser.add_argument("--quiet", action="store_true", help="print only the totals")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")

    from book.grading.runner import find_notebooks, grade_notebook

    notebooks = find_notebooks(args.paths)
    missing = [str(p) for p in notebooks if not p.exists()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    if not notebooks:
        parser.error("no notebooks found")
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=len(notebooks), desc="grading", unit="nb", file=sys.stderr,
               disable=True if len(notebooks) < 2 else None) if tqdm else None
    reports = []
    for nb in notebooks:
        rep = grade_notebook(nb, timeout=args.timeout, memory_mb=args.memory_mb)
        reports.append(rep)
        if bar:
            bar.update(1)
        if bar and not bar.disable:
            bar.write(_table(rep) if not args.quiet else f"{rep.notebook}: {rep.score:g}/{rep.max_score:g}")
        else:
            print(_table(rep) if not args.quiet else f"{rep.notebook}: {rep.score:g}/{rep.max_score:g}")
    if bar:
        bar.close()
    if len(reports) > 1:
        total = sum(r.score for r in reports)
        print(f"\n{len(reports)} notebooks graded; total {total:g} points")
    if args.json:
        data = [r.to_dict() for r in reports]
        args.json.write_text(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    if args.csv:
        write_csv(reports, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
