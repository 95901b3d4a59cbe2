"""Grade submitted notebooks without trusting them.

For each notebook: find its chapter, read its answer cells (the cells nbgrader marks as
solutions), and run them in a child process (``book.grading._child``) with a time and
a memory limit, on the CPU, in an empty temporary folder, with its output thrown away.
The child sends back only the values each function returned, as plain numbers and
tensors. Every verdict is computed here, against references the child cannot touch,
so nothing the submission does (printing "passed", redefining ``check``, patching
``torch``, writing files, returning a tensor that claims to equal anything) changes
its score. An answer that hangs or kills its process loses that question only: the
grader starts a fresh child for the remaining questions.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from book.grading.core import Case, Question, Result, decode, judge
from book.grading.harness import call_name, pack
from book.grading.questions import chapters, questions_for
from book.grading.static import forbidden_message, forbidden_uses

# Imported in the grading process before the answers run when a question trains a network:
# torch.optim's first step imports torch._dynamo (1.5 s), much slower under the check's hook.
WARM = ["torch._dynamo"]
STARTUP_S = 60.0  # importing torch in a fresh process can take a while on a busy machine


class NotebookError(Exception):
    """The file is not a notebook we can grade; the message says why."""


@dataclass
class NotebookReport:
    """The grade of one notebook (``to_dict`` gives the JSON of DESIGN.md)."""

    notebook: str
    chapter: str | None
    results: list[Result] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r in self.results)

    def to_dict(self) -> dict:
        d = {
            "notebook": self.notebook,
            "score": self.score,
            "max_score": self.max_score,
            "questions": [r.to_dict() for r in self.results],
        }
        if self.error:
            d["error"] = self.error
        return d


# ---------------------------------------------------------------------------
# Reading a notebook (plain JSON: no nbformat, which is slow to import)


def read_cells(path: Path) -> tuple[list[dict], dict]:
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NotebookError("the file is not text (is it really a .ipynb notebook?)") from None
    except json.JSONDecodeError as exc:
        raise NotebookError(f"the file is not valid notebook JSON ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise NotebookError(f"cannot read the file: {exc.strerror}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError("the file is JSON but not a notebook: it has no list of cells")
    cells = []
    for c in nb["cells"]:
        if not isinstance(c, dict):
            continue
        src = c.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        cells.append({"cell_type": c.get("cell_type"), "source": src, "metadata": c.get("metadata") or {}})
    return cells, nb.get("metadata") or {}


def answer_sources(cells: list[dict]) -> list[str]:
    """The code the grader runs, in notebook order: the answer cells (nbgrader's solution
    cells) and the set-up cells they rely on (locked cells that are not tests). The
    ``check(...)`` cells and anything else the student added are not run."""
    out = []
    for c in cells:
        meta = c["metadata"].get("nbgrader") or {}
        if c["cell_type"] == "code" and (
            meta.get("solution") is True or (meta.get("locked") is True and not meta.get("grade"))
        ):
            out.append(c["source"])
    return out


def identify_chapter(path: Path, cells: list[dict], metadata: dict) -> str | None:
    """Which chapter's exercises this is: from the file name, else the notebook's
    metadata, else the grade ids in its cells."""
    known = chapters()
    stem = Path(path).stem
    for slug in known:
        if slug in stem:
            return slug
    slug = (metadata.get("optdl") or {}).get("chapter")
    if slug in known:
        return slug
    ids = {(c["metadata"].get("nbgrader") or {}).get("grade_id") for c in cells}
    best, hits = None, 0
    for slug in known:
        n = len(ids & {q.id for q in questions_for(slug)})
        if n > hits:
            best, hits = slug, n
    return best


# ---------------------------------------------------------------------------
# The child process


def _child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "JPY_"))}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(BOOK_DEVICE="cpu", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def _reader(stream, q: queue.Queue) -> None:
    while True:
        line = stream.readline(20_000_000)
        if not line:
            q.put(None)
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            q.put(event)


def run_answers(sources: list[str], questions: list[Question], cases: dict[str, list[Case]], timeout: float,
                memory_mb: int, watch: bool = True) -> dict[str, dict]:
    """Run the answer cells once per surviving child and collect each question's event.

    ``cases[qid]`` are the inputs the child receives for question ``qid``, with the request for
    that answer (it never makes them itself). Returns
    ``{qid: {"status": "result"|"missing"|"timeout"|"crash"|"cell", ...}}``. ``watch=False``
    switches the run-time check off, only to measure what it costs.
    """
    events: dict[str, dict] = {}
    by_id = {q.id: q for q in questions}
    specs = {q.id: {"id": q.id, "function": q.function, "forbidden": list(q.forbidden),
                    "operators": list(getattr(q, "operators", ()) or ())} for q in questions}
    packed = {q.id: pack([(c.args, c.kwargs) for c in cases[q.id]]) for q in questions}
    remaining = [q.id for q in questions]
    live: dict[str, set[str]] = {}  # forbidden implementations reported as they ran, by question
    while remaining:
        with tempfile.TemporaryDirectory(prefix="book-grade-") as cwd:
            proc = subprocess.Popen(
                [sys.executable, "-m", "book.grading._child"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                cwd=cwd, env=_child_env(), text=True, start_new_session=True,
            )
            q: queue.Queue = queue.Queue()
            threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
            def request(qid: str) -> str:
                token = secrets.token_hex(16)
                try:
                    proc.stdin.write(json.dumps({"request": "run", "id": qid, "token": token, "cases": packed[qid],
                                                 "call": call_name(by_id[qid].call)}) + "\n")
                    proc.stdin.flush()
                except (BrokenPipeError, OSError, ValueError):
                    pass
                return token

            try:
                proc.stdin.write(json.dumps({"cells": sources, "questions": [specs[r] for r in remaining],
                                             "timeout": timeout, "memory_mb": memory_mb, "watch": bool(watch),
                                             "warm": WARM if any(by_id[r].kind in ("build", "tune")
                                                                 for r in remaining) else []}) + "\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass
            phase, cell, current, token = "startup", None, None, None
            deadline = time.monotonic() + STARTUP_S
            cell_errors: list[str] = []
            while True:
                try:
                    event = q.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    event = "deadline"
                if event == "deadline" or event is None:
                    _kill(proc)
                    code = proc.returncode
                    if phase in ("startup", "cells"):
                        why = (f"answer cell {cell + 1} did not finish within {timeout:g} s"
                               if event == "deadline" and cell is not None else
                               f"the answer cells stopped the grading process (exit code {code})"
                               + (f" in answer cell {cell + 1}" if cell is not None else ""))
                        for qid in remaining:
                            events[qid] = {"status": "cell", "message": why}
                        remaining = []
                    elif current is not None:
                        events[current] = {
                            "status": "timeout" if event == "deadline" else "crash",
                            "message": (f"your function did not finish within {timeout:g} s"
                                        if event == "deadline" else
                                        f"your function ended the grading process (exit code {code}); "
                                        "answers must return a value, not exit"),
                        }
                        remaining = [r for r in remaining if r != current]
                    break
                kind = event.get("event")
                if kind == "ran":  # reported by the check the moment it saw it: believed without a token
                    label = str(event.get("label"))[:200]
                    for qid in ([current] if phase == "questions" and current else remaining):
                        live.setdefault(qid, set()).add(label)
                    continue
                if phase == "questions" and (token is None or event.get("token") != token):
                    continue  # not the answer to the request the grader made: written in advance, or forged
                if kind == "started":
                    phase, deadline = "cells", time.monotonic() + timeout + 5
                elif kind == "cell":
                    cell, deadline = int(event.get("index", 0)), time.monotonic() + timeout + 5
                elif kind == "cell_error":
                    cell_errors.append(f"answer cell {int(event.get('index', 0)) + 1} raised {str(event.get('error'))[:300]}")
                elif kind == "tamper" and phase == "cells":
                    _kill(proc)
                    for qid in remaining:
                        events[qid] = {"status": "tamper", "tampered": event.get("tampered")}
                    remaining = []
                    break
                elif kind == "ready" and phase == "cells":
                    phase, deadline = "questions", time.monotonic() + timeout + 5
                    current = remaining[0]
                    token = request(current)
                elif kind == "tamper" and event.get("id") == current:
                    events[current] = {"status": "tamper", "tampered": event.get("tampered")}
                    remaining = [r for r in remaining if r != current]
                    _kill(proc)
                    break
                elif kind in ("result", "timeout") and event.get("id") == current:
                    ev = dict(event)
                    ev["status"] = "timeout" if kind == "timeout" else ("missing" if event.get("missing") else "result")
                    ev["cell_errors"] = cell_errors
                    if kind == "timeout":
                        ev["message"] = f"your function did not finish within {timeout:g} s"
                    if live.get(current):
                        ev["ran"] = sorted(set(ev.get("ran") or []) | live[current])
                    events[current] = ev
                    remaining = [r for r in remaining if r != current]
                    if not remaining:
                        _kill(proc)
                        break
                    current, deadline = remaining[0], time.monotonic() + timeout + 5
                    token = request(current)
    return events


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------------------
# Verdicts


def _verdict(question: Question, event: dict, cases: list[Case]) -> Result:
    status = event.get("status")
    zero = lambda msg: Result(question.id, 0, question.points, False, msg)  # noqa: E731
    if status == "missing":
        errs = event.get("cell_errors") or []
        extra = f" ({errs[0]})" if errs else ""
        return zero(f"the notebook defines no function named `{question.function}` in its answer cells{extra}")
    if status == "tamper" or (status == "result" and event.get("tampered")):
        why = "; ".join(str(t)[:200] for t in (event.get("tampered") or [])[:3]) or "the check was switched off"
        return zero(f"your answer tampered with the grader's check of what it runs ({why}): "
                    "an answer that switches off, replaces or silences the check scores zero")
    if status != "result":
        return zero(event.get("message") or "your function did not finish")
    ran = event.get("ran") or []
    if ran:
        if not isinstance(ran, list):
            return zero("the grading process sent back a malformed result")
        return zero(forbidden_message([str(r)[:200] for r in ran[:10]]))
    raw_out, raw_err = event.get("outputs"), event.get("errors")
    if not isinstance(raw_out, list) or not isinstance(raw_err, list) or len(raw_out) != len(cases) or len(raw_err) != len(cases):
        return zero("the grading process sent back a malformed result")
    outputs, errors = [], []
    for out, err in zip(raw_out, raw_err):
        if err is not None:
            outputs.append(None)
            errors.append(str(err)[:500])
            continue
        try:
            outputs.append(decode(out))
            errors.append(None)
        except (ValueError, TypeError, KeyError):
            outputs.append(None)
            errors.append("an output that is not a tensor, number or tuple of them")
    return judge(question, cases, outputs, errors)


def grade_notebook(path, timeout: float = 10.0, memory_mb: int = 3072, watch: bool = True) -> NotebookReport:
    """Grade one submitted notebook. Never raises for a bad submission: the report
    carries the message and zero for the affected questions. (``watch=False`` switches off
    the run-time check of what the answers run; it exists only to measure the check's cost.)"""
    path = Path(path)
    start = time.perf_counter()
    try:
        cells, meta = read_cells(path)
    except NotebookError as exc:
        chapter = next((s for s in chapters() if s in path.stem), None)
        qs = questions_for(chapter) if chapter else []
        report = NotebookReport(str(path), chapter, error=str(exc))
        report.results = [Result(q.id, 0, q.points, False, str(exc)) for q in qs]
        return report
    chapter = identify_chapter(path, cells, meta)
    if chapter is None:
        return NotebookReport(str(path), None, error="cannot tell which chapter's exercises this notebook holds")
    questions = questions_for(chapter)
    sources = answer_sources(cells)
    report = NotebookReport(str(path), chapter)
    if not any((c["metadata"].get("nbgrader") or {}).get("solution") is True for c in cells):
        report.error = "the notebook has no answer cells (cells marked as solutions)"
        report.results = [Result(q.id, 0, q.points, False, report.error) for q in questions]
        return report
    verdicts: dict[str, Result] = {}
    to_run = []
    for q in questions:
        bad = forbidden_uses(sources, q.forbidden, q.function)
        if bad:
            verdicts[q.id] = Result(q.id, 0, q.points, False, forbidden_message(bad, dynamic=True))
        else:
            to_run.append(q)
    cases = {q.id: list(q.cases(torch.device("cpu"))) for q in to_run}
    events = run_answers(sources, to_run, cases, timeout, memory_mb, watch) if to_run else {}
    for q in to_run:
        verdicts[q.id] = _verdict(q, events.get(q.id, {"status": "crash", "message": "no result"}), cases[q.id])
    report.results = [verdicts[q.id] for q in questions]
    report.seconds = time.perf_counter() - start
    return report


def find_notebooks(paths) -> list[Path]:
    """Expand folders into the notebooks they hold (skipping checkpoints), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in x.parts))
        else:
            out.append(p)
    return out
