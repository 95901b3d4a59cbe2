"""The question registry: one module per chapter, each with a ``QUESTIONS`` list.

To add a chapter's questions, write ``book/grading/questions/<concept>.py`` defining
``QUESTIONS = [Question(...), ...]`` and add the module's name to ``MODULES``. The
grader's own tests (tests/test_grading.py) pick every question up from here.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from book.grading.core import Question

MODULES = ["landscapes", "gradient_descent", "sgd", "momentum", "adaptive", "schedules", "losses", "regularization",
           "normalization", "practice", "scaling", "frontiers"]


@lru_cache(maxsize=None)
def all_questions() -> tuple[Question, ...]:
    """Every registered question, in chapter order."""
    out: list[Question] = []
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        out.extend(module.QUESTIONS)
    ids = [q.id for q in out]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise RuntimeError(f"question ids must be unique; repeated: {sorted(dupes)}")
    return tuple(out)


def get_question(question_id: str) -> Question:
    """The question with this id; ``KeyError`` listing the known ids otherwise."""
    for q in all_questions():
        if q.id == question_id:
            return q
    known = ", ".join(q.id for q in all_questions())
    raise KeyError(f"no question {question_id!r}; the questions are: {known}")


def chapters() -> list[str]:
    """The chapter slugs that have questions, in order."""
    seen: list[str] = []
    for q in all_questions():
        if q.chapter not in seen:
            seen.append(q.chapter)
    return seen


def questions_for(chapter: str) -> list[Question]:
    """The questions of one chapter's exercise notebook, in order."""
    return [q for q in all_questions() if q.chapter == chapter]
