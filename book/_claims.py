"""The perturbation harness behind ``make claims``: run chapters under other seeds and threads.

Every chapter asserts the claims its prose makes. A claim that holds for one seed on one
machine is luck, not a claim: another seed, CPU, thread count or a GPU rounds differently,
and training turns a rounding difference into a seed-sized one. This runs each chapter top
to bottom in a fresh kernel under perturbed settings and prints a table, chapter x run:

    python -m book._claims                       # every chapter, the six default runs
    python -m book._claims --chapters 06,08      # only these chapters
    python -m book._claims --chapters speed      # an appendix page, by its name
    python -m book._claims --runs s1t1 --jobs 2  # one run: offset 1, one thread; two at once

A run is written ``s<offset>`` (``BOOK_SEED=<offset>``, torch's default thread count) or
``s<offset>t<threads>`` (and ``BOOK_THREADS=<threads>``). The default runs are offsets 1 to
5, offset 0 with one thread, and offset 0 with two threads (the chapters whose networks are
tiny run on one thread unless ``BOOK_THREADS`` says otherwise, so that run is the one where
their thread count, and with it the rounding, changes). A failure shows the failing line and the values of the
expressions it compares, evaluated in the failed kernel. The exit status is 1 when any run
failed. Results are also written as JSON to ``_build/claims.json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = ("s1", "s2", "s3", "s4", "s5", "s0t1", "s0t2")
_RUN = re.compile(r"^s(-?\d+)(?:t(\d+))?$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_run(spec: str) -> tuple[int, int | None]:
    """``"s3"`` -> (3, None); ``"s0t1"`` -> (0, 1)."""
    m = _RUN.match(spec.strip())
    if not m:
        raise ValueError(f"a run is written s<offset> or s<offset>t<threads> (e.g. s3, s0t1), got {spec!r}")
    threads = int(m.group(2)) if m.group(2) else None
    if threads is not None and threads < 1:
        raise ValueError(f"thread count must be positive in {spec!r}")
    return int(m.group(1)), threads


def describe_run(spec: str) -> str:
    offset, threads = parse_run(spec)
    text = f"seed +{offset}" if offset >= 0 else f"seed {offset}"
    return text + (f", {threads} thr" if threads else "")


def chapter_paths(chapters: str | None) -> list[Path]:
    """The executed pages, all or those whose number (or slug) is in ``chapters``: the numbered
    chapters first, then the appendix's notebooks in ``chapters/`` (``speed``), which make claims too."""
    numbered = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
    paths = numbered + sorted(p for p in (ROOT / "chapters").glob("*.ipynb") if p not in numbered)
    if not chapters:
        return paths
    wanted = [c.strip() for c in chapters.split(",") if c.strip()]
    chosen = []
    for w in wanted:
        hits = [p for p in paths if p.stem == w or p.stem.split("_", 1)[0] == w.zfill(2)]
        if not hits:
            raise SystemExit(f"no chapter {w!r}; there are: {', '.join(p.stem for p in paths)}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


# ---------------------------------------------------------------------------------------
# One run of one chapter (in a child process, so the environment is its own)


def _failing_line(source: str, traceback: str) -> tuple[int | None, str]:
    """The line of the cell that raised, from IPython's ``Cell In[n], line k`` marker."""
    text = _ANSI.sub("", traceback)
    hits = re.findall(r"Cell In\[\d+\], line (\d+)", text)
    if not hits:
        return None, ""
    lineno = int(hits[-1])  # the innermost frame that lies in a cell
    lines = source.splitlines()
    return lineno, lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""


def _compared_expressions(line: str) -> list[str]:
    """The non-constant operands of the comparisons in an ``assert`` line."""
    code = line.split("#", 1)[0].strip() if "#" in line else line
    for candidate in (line, code):
        try:
            tree = ast.parse(candidate)
            break
        except SyntaxError:
            tree = None
    if tree is None:
        return []
    found: list[str] = []

    def visit(node):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                visit(operand)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                visit(value)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            visit(node.operand)
        elif isinstance(node, ast.Constant):
            return
        else:
            text = ast.unparse(node)
            if text not in found:
                found.append(text)
            if isinstance(node, ast.Call):  # all(...), abs(...), (a < b).all(): show what they were given
                if isinstance(node.func, ast.Attribute) and not isinstance(node.func.value, ast.Name):
                    visit(node.func.value)
                for arg in node.args:
                    if not isinstance(arg, (ast.Constant, ast.GeneratorExp, ast.ListComp, ast.Lambda)):
                        visit(arg)

    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            visit(node.test)
            break
    return found[:8]


def run_one(path: Path, timeout: int) -> dict:
    """Execute one notebook in a fresh kernel; on a failure, evaluate what its line compared."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    result: dict = {"status": "passed"}
    with client.setup_kernel():
        code_index = 0
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            code_index += 1
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as error:
                lineno, line = _failing_line(cell.source, str(error))
                result = {"status": "failed", "cell": code_index, "line_number": lineno, "line": line,
                          "error": f"{error.ename}: {error.evalue}".strip().rstrip(":"), "values": {}}
                exprs = _compared_expressions(line) if line.startswith("assert") else []
                if exprs:
                    probe = nbformat.v4.new_code_cell(
                        "import json as _j\n_out = {}\n"
                        f"for _e in {exprs!r}:\n"
                        "    try:\n        _v = eval(_e)\n"
                        "        _out[_e] = repr(_v.tolist() if hasattr(_v, 'tolist') else _v)[:300]\n"
                        "    except Exception as _x:\n        _out[_e] = f'<{type(_x).__name__}>'\n"
                        "print(_j.dumps(_out))")
                    nb.cells.append(probe)
                    try:
                        client.execute_cell(probe, len(nb.cells) - 1)
                        text = "".join(o.get("text", "") for o in probe.outputs if o.get("name") == "stdout")
                        result["values"] = json.loads(text.strip().splitlines()[-1])
                    except Exception:  # the values are a courtesy; the failure stands without them
                        pass
                break
            except Exception as error:  # a timeout or a dead kernel
                result = {"status": "failed", "cell": code_index, "line_number": None, "line": "",
                          "error": f"{type(error).__name__}: {error}"[:500], "values": {}}
                break
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _child_main(argv: list[str]) -> None:
    path, timeout = Path(argv[0]), int(argv[1])
    print("CLAIMS-RESULT " + json.dumps(run_one(path, timeout)), flush=True)


def _run_in_child(path: Path, spec: str, timeout: int) -> dict:
    offset, threads = parse_run(spec)
    env = dict(os.environ, BOOK_SEED=str(offset), PYTHONHASHSEED="0")
    env.pop("BOOK_THREADS", None)
    if threads:
        env["BOOK_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)  # also caps NumPy's BLAS threads
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "book._claims", "--child", str(path), str(timeout)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout * 4 + 120)
    for line in proc.stdout.splitlines():
        if line.startswith("CLAIMS-RESULT "):
            return json.loads(line[len("CLAIMS-RESULT "):])
    return {"status": "failed", "cell": None, "line": "", "error": (proc.stderr or proc.stdout)[-800:],
            "values": {}, "seconds": round(time.perf_counter() - start, 1)}


# ---------------------------------------------------------------------------------------
# The table


def format_table(chapters: list[str], runs: list[str], results: dict) -> str:
    heads = [describe_run(r) for r in runs]
    width = max(12, *(len(h) for h in heads))
    first = max(len(c) for c in chapters)
    lines = [f"{'chapter':{first}s}  " + "  ".join(f"{h:>{width}s}" for h in heads)]
    for c in chapters:
        cells = []
        for r in runs:
            res = results.get((c, r))
            if res is None:
                cells.append("-")
            elif res["status"] == "passed":
                cells.append(f"pass {res['seconds']:.0f}s")
            else:
                cells.append(f"FAIL cell {res.get('cell')}")
        lines.append(f"{c:{first}s}  " + "  ".join(f"{x:>{width}s}" for x in cells))
    failures = [(c, r, results[c, r]) for c in chapters for r in runs
                if (c, r) in results and results[c, r]["status"] != "passed"]
    if failures:
        lines.append("")
        lines.append("Failures:")
        for c, r, res in failures:
            where = f"code cell {res.get('cell')}"
            if res.get("line_number"):
                where += f", line {res['line_number']}"
            lines.append(f"- {c} [{describe_run(r)}] {where}: {res.get('error', '')}")
            if res.get("line"):
                lines.append(f"    {res['line']}")
            for expr, value in res.get("values", {}).items():
                lines.append(f"      {expr} = {value}")
    passed = sum(res["status"] == "passed" for res in results.values())
    lines.append("")
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m book._claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", default=os.environ.get("CHAPTERS") or None,
                        help="comma-separated chapter numbers or slugs (default: all)")
    parser.add_argument("--runs", default=None, help=f"comma-separated runs (default: {','.join(DEFAULT_RUNS)})")
    parser.add_argument("--jobs", type=int, default=1,
                        help="chapters executed at once (default 1); never more threads than cores in all")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    parser.add_argument("--json", default=str(ROOT / "_build" / "claims.json"), help="where to write the results")
    args = parser.parse_args(argv)
    runs = [r.strip() for r in (args.runs or ",".join(DEFAULT_RUNS)).split(",") if r.strip()]
    for r in runs:
        parse_run(r)
    paths = chapter_paths(args.chapters)
    names = [p.stem for p in paths]
    jobs = [(p, r) for r in runs for p in paths]
    print(f"Running {len(paths)} chapter(s) x {len(runs)} run(s) = {len(jobs)} executions, "
          f"{args.jobs} at a time ...", flush=True)
    results: dict = {}
    done = 0

    cores = os.cpu_count() or 1
    budget = threading.Condition()
    free = [cores]

    def work(job):
        # Each execution holds as many cores as it runs threads (one for the chapters' default),
        # so that two-thread runs are not squeezed two at a time onto two cores: oversubscribed
        # BLAS threads make a 15 s chapter take minutes.
        path, run = job
        need = min(parse_run(run)[1] or 1, cores)
        with budget:
            budget.wait_for(lambda: free[0] >= need)
            free[0] -= need
        try:
            return path.stem, run, _run_in_child(path, run, args.timeout)
        finally:
            with budget:
                free[0] += need
                budget.notify_all()

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in as_completed([pool.submit(work, job) for job in jobs]):
            name, run, res = future.result()
            done += 1
            results[name, run] = res
            mark = "pass" if res["status"] == "passed" else "FAIL"
            print(f"[{done:>3d}/{len(jobs)}] {name:24s} {describe_run(run):18s} {mark} ({res['seconds']:.0f} s)", flush=True)
    print()
    print(format_table(names, runs, results))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([{"chapter": c, "run": r, **res} for (c, r), res in results.items()], indent=1))
    return 0 if all(res["status"] == "passed" for res in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
