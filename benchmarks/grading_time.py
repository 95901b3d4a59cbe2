"""What the grader's run-time check costs: grading time per notebook with and without it.

Grades every notebook of ``solutions/`` (full marks expected) with the run-time check of what the
answers run (``book.grading.guard``) and, for comparison only, without it, interleaved
(with, without, with, without, ...) so that a change in the machine's load hits both alike.
Prints one row per notebook: the median seconds of each and their ratio, and the total.

    python benchmarks/grading_time.py [--repeats 3] [--out benchmarks/results/grading_time.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from book.grading.runner import grade_notebook  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="gradings of each notebook per setting")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    notebooks = sorted((ROOT / "solutions").glob("*.ipynb"))
    rows, totals = [], {True: 0.0, False: 0.0}
    for nb in notebooks:
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for watch in (True, False):
                start = time.perf_counter()
                report = grade_notebook(nb, watch=watch)
                seconds[watch].append(time.perf_counter() - start)
                if report.score != report.max_score:
                    raise SystemExit(f"{nb.name} (watch={watch}) scored {report.score}/{report.max_score}: "
                                     f"{[r.message for r in report.results if not r.passed]}")
        med = {w: statistics.median(s) for w, s in seconds.items()}
        totals[True] += med[True]
        totals[False] += med[False]
        rows.append((nb.stem, med[True], med[False], med[True] / med[False]))
        print(f"{nb.stem:<24} {med[True]:6.2f} s watched  {med[False]:6.2f} s unwatched  "
              f"x{med[True] / med[False]:.2f}", flush=True)

    ratio = totals[True] / totals[False]
    lines = [
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"`python benchmarks/grading_time.py --repeats {args.repeats}`: median seconds to grade each solutions "
        "notebook (full marks every time), with the run-time check and without it, interleaved.",
        "",
        "| notebook | with the check (s) | without (s) | ratio |",
        "|---|---|---|---|",
        *[f"| {n} | {a:.2f} | {b:.2f} | {r:.2f} |" for n, a, b, r in rows],
        f"| **all** | **{totals[True]:.2f}** | **{totals[False]:.2f}** | **{ratio:.2f}** |",
    ]
    print(f"all: {totals[True]:.2f} s watched, {totals[False]:.2f} s unwatched, ratio {ratio:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
