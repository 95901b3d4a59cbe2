"""The process that trains with a student's hyperparameters (see :mod:`book.grading.tune`).

Reads one JSON line ``{"id": question_id, "params": {...}, "seeds": [...]}`` from stdin and prints
``[[reached, metric], ...]``, one pair per seed. No student code runs here: the parameters were
validated by the grader before they were passed on.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    job = json.loads(sys.stdin.readline())
    import torch

    from book.grading.questions import get_question

    torch.set_num_threads(1)
    question = get_question(job["id"])
    out = [list(question.reference(dict(job["params"]), int(seed))) for seed in job["seeds"]]
    print(json.dumps([[bool(r), float(m)] for r, m in out]))


if __name__ == "__main__":
    main()
