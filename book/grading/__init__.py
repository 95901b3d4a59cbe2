"""Graded exercises: instant feedback in the notebook, a trustworthy score from the shell.

In an exercise notebook::

    from book.grading import check
    check("newton_step")      # runs your newton_step on the test inputs, shows the verdict
    check_all()               # a summary of every question of this notebook

From a shell (grades in a separate process that the submission cannot influence)::

    python -m book.grading exercises/02_gradient_descent.ipynb
    book-grade submissions/ --csv gradebook.csv --json grades.json

Questions are data (``book.grading.questions``): adding one means writing its inputs,
its reference and its common mistakes; see the README's "For instructors" section.
"""

from __future__ import annotations

import copy
import html
import inspect
import os
import sys
import textwrap

from book.grading.core import Case, Mistake, Question, Result, judge, run_case

__all__ = ["check", "check_all", "Question", "Case", "Mistake", "Result", "Feedback", "Summary"]

# The verdicts given in this kernel, by question id (for check_all's summary).
_SESSION: dict[str, Result] = {}


class Feedback:
    """What ``check`` returns: shown as a coloured box in Jupyter, as text elsewhere."""

    def __init__(self, result: Result, title: str = ""):
        self.result = result
        self.title = title

    @property
    def passed(self) -> bool:
        return self.result.passed

    def __repr__(self) -> str:
        r = self.result
        mark = "PASS" if r.passed else "FAIL"
        return f"[{mark}] {r.id}: {r.points:g}/{r.max_points:g} points. {r.message}"

    def _repr_html_(self) -> str:
        r = self.result
        colour, bg, mark = ("#1a7f37", "#e9f7ee", "✔ passed") if r.passed else ("#b3261e", "#fdecea", "✘ not yet")
        return (
            f'<div style="border-left:5px solid {colour};background:{bg};padding:0.5em 0.8em;'
            f'margin:0.3em 0;font-family:sans-serif">'
            f'<b style="color:{colour}">{mark}</b> &nbsp; <code>{html.escape(r.id)}</code>'
            f'{" — " + html.escape(self.title) if self.title else ""}'
            f'<span style="float:right"><b>{r.points:g}</b> / {r.max_points:g} points</span>'
            f'<div style="margin-top:0.3em">{html.escape(r.message)}</div></div>'
        )


class Summary:
    """What ``check_all`` returns: a table of every question of the notebook."""

    def __init__(self, chapter: str, rows: list[tuple[Result, str]]):
        self.chapter = chapter
        self.rows = rows

    @property
    def score(self) -> float:
        return sum(r.points for r, _ in self.rows)

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r, _ in self.rows)

    def __repr__(self) -> str:
        lines = [f"{self.chapter}: {self.score:g}/{self.max_score:g} points"]
        for r, _ in self.rows:
            lines.append(f"  {'PASS' if r.passed else 'FAIL'}  {r.id:<28} {r.points:g}/{r.max_points:g}  {r.message}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td>{'✔' if r.passed else '✘'}</td><td><code>{html.escape(r.id)}</code></td>"
            f"<td>{html.escape(t)}</td><td>{r.points:g} / {r.max_points:g}</td>"
            f"<td style='text-align:left'>{html.escape(r.message)}</td></tr>"
            for r, t in self.rows
        )
        return (
            f"<div style='font-family:sans-serif'><b>{html.escape(self.chapter)}</b>: "
            f"{self.score:g} / {self.max_score:g} points<table>"
            "<tr><th></th><th>question</th><th>task</th><th>points</th><th>message</th></tr>"
            f"{body}</table></div>"
        )


def _evaluate(question: Question, fn) -> Result:
    """Run ``fn`` on the question's inputs in this process and judge it."""
    from book.grading.static import forbidden_message, forbidden_uses
    from book.utils import device

    if not callable(fn):
        return Result(question.id, 0, question.points, False,
                      f"define a function named `{question.function}` first (and run its cell)")
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        source = ""
    bad = forbidden_uses([source], question.forbidden, getattr(fn, "__name__", None)) if source else []
    if bad:
        return Result(question.id, 0, question.points, False, forbidden_message(bad))
    cases = list(question.cases(device()))
    outputs, errors = [], []
    # The grader's own functions (a known mistake checked by the grader's tests) may use
    # what answers may not; everything else is watched.
    code = getattr(fn, "__code__", None)
    own = code is not None and code.co_filename.startswith(os.path.join(os.path.dirname(__file__), "questions"))
    guard = _guard(question) if not own else None
    for case in copy.deepcopy(cases):  # the student's own copy of the inputs (some are drawn afresh per check)
        if guard is not None:
            guard.start(trusted=(question.call, case.args, case.kwargs))
        try:
            outputs.append(run_case(question, fn, case))
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - a wrong answer may raise anything
            outputs.append(None)
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if guard is not None:
                guard.stop()
    if guard is None:
        return judge(question, cases, outputs, errors)
    if guard.tampered:
        return Result(question.id, 0, question.points, False,
                      f"your answer tampered with the grader's check of what it runs ({'; '.join(guard.tampered)}): "
                      "an answer that switches off, replaces or silences the check scores zero")
    if guard.ran:
        return Result(question.id, 0, question.points, False, forbidden_message(sorted(guard.ran)))
    return judge(question, cases, outputs, errors)


def _guard(question: Question):
    """The run-time check of one question (what its answer may not run), made fresh per check."""
    from book.grading.guard import Guard

    return Guard(question.forbidden, getattr(question, "operators", None), harness=(_evaluate, run_case))


def check(question_id: str, fn=None) -> Feedback:
    """Check your answer to one question and show the verdict.

    Args:
        question_id: the id printed in the exercise, e.g. ``"newton_step"``.
        fn: the function to check; by default the function of the question's name
            defined in your notebook.

    Under nbgrader's autograder (``NBGRADER_EXECUTION`` set) an answer that earns nothing raises
    ``AssertionError``, and otherwise the points earned are returned as a plain number, which
    nbgrader takes as the grade cell's (partial) credit; so the solution notebooks also work as an
    nbgrader assignment.
    """
    from book.grading.questions import get_question

    question = get_question(question_id)
    if fn is None:
        fn = sys._getframe(1).f_globals.get(question.function)
    result = _evaluate(question, fn)
    _SESSION[question.id] = result
    if os.environ.get("NBGRADER_EXECUTION"):
        if result.points <= 0:
            raise AssertionError(result.message)
        return float(result.points)  # the cell's output: nbgrader's partial credit
    return Feedback(result, question.title)


def check_all(chapter: str | None = None) -> Summary:
    """Check every question of this notebook's chapter and show a summary.

    The chapter is the one whose functions your notebook defines (or pass its slug,
    e.g. ``"02_gradient_descent"``).
    """
    from book.grading.questions import chapters, questions_for

    namespace = sys._getframe(1).f_globals
    if chapter is None:
        counts = {c: sum(q.function in namespace for q in questions_for(c)) for c in chapters()}
        chapter = max(counts, key=counts.get) if counts and max(counts.values()) > 0 else None
        if chapter is None:
            raise ValueError("no exercise functions defined yet; pass the chapter, e.g. check_all('01_landscapes')")
    rows = []
    for q in questions_for(chapter):
        result = _evaluate(q, namespace.get(q.function))
        _SESSION[q.id] = result
        rows.append((result, q.title))
    return Summary(chapter, rows)
