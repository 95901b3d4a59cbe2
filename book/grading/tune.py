"""Grading a ``tune`` question: train with the student's hyperparameters, on the grader's seeds.

The answer is a function that returns a dict of hyperparameters. Only that dict leaves the
process that ran the answer, and only after :func:`validate` has checked it against the
question's ``space`` (known names, numbers in range, finite, one of the allowed choices). The
training then runs in a fresh process (``python -m book.grading._tune``) that no student code has
touched, with a time limit, on seeds drawn when grading. The question earns
``points × (seeds that reached the target) / (seeds)``. The message says, per seed, how far the
run got, and names a known mistake when the dict is one.
"""

from __future__ import annotations

import json
import math
import secrets
import subprocess
import sys
from typing import Any, Sequence

from book.grading.core import Question, Result

SEEDS = 3  # grading seeds per answer
TIME_LIMIT_S = 30.0  # for all the seeds' training together (each question's takes a few seconds)


def validate(space: dict, params: Any) -> tuple[dict | None, str | None]:
    """``(clean params, None)``, or ``(None, why not)`` when ``params`` does not fit ``space``."""
    if not isinstance(params, dict):
        return None, f"return a dict of hyperparameters, got {type(params).__name__}"
    unknown = sorted(set(params) - set(space))
    if unknown:
        return None, f"unknown hyperparameters {unknown}; the choices are {sorted(space)}"
    missing = sorted(set(space) - set(params))
    if missing:
        return None, f"missing hyperparameters {missing}"
    clean = {}
    for name, spec in space.items():
        value = params[name]
        if isinstance(spec, list):
            if not isinstance(value, str) or value not in spec:
                return None, f"{name} must be one of {spec}, got {value!r}"
            clean[name] = value
            continue
        is_int = isinstance(spec, tuple) and len(spec) == 3 and spec[0] == "int"
        low, high = (spec[1], spec[2]) if is_int else spec
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"{name} must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return None, f"{name} must be a finite number, got {value!r}"
        if is_int and value != int(value):
            return None, f"{name} must be a whole number, got {value!r}"
        if not low <= value <= high:
            return None, f"{name} must lie in [{low:g}, {high:g}], got {value!r}"
        clean[name] = int(value) if is_int else float(value)
    return clean, None


def train_seeds(question_id: str, params: dict, seeds: Sequence[int], time_limit: float = TIME_LIMIT_S) -> list:
    """Run the question's training for each seed in a fresh process; ``[(reached, metric), ...]``.

    Raises ``TimeoutError`` when the training takes longer than ``time_limit`` seconds, and
    ``RuntimeError`` when the process fails."""
    from book.grading.runner import _child_env  # the same clean environment as the answers' process

    env = _child_env()
    job = json.dumps({"id": question_id, "params": params, "seeds": list(seeds)})
    try:
        proc = subprocess.run([sys.executable, "-m", "book.grading._tune"], input=job, capture_output=True,
                              text=True, timeout=time_limit, env=env)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"the training did not finish within {time_limit:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the training process failed: {proc.stderr.strip().splitlines()[-1:]}")
    return [(bool(r), float(m)) for r, m in json.loads(proc.stdout)]


def _same(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    return all(a[k] == b[k] if isinstance(b[k], str) else
               isinstance(a[k], (int, float)) and math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) for k in b)


def judge_tune(question: Question, outputs: Sequence[Any], errors: Sequence[str | None]) -> Result:
    def zero(msg: str) -> Result:
        return Result(question.id, 0, question.points, False, msg)

    if errors and errors[0] is not None:
        if "NotImplementedError" in errors[0]:
            return zero("not answered yet: the function still raises NotImplementedError")
        return zero(f"your function raised {errors[0]}")
    params, why = validate(question.space or {}, outputs[0] if outputs else None)
    if params is None:
        return zero(why)
    seeds = [secrets.randbits(31) for _ in range(SEEDS)]
    try:
        runs = train_seeds(question.id, params, seeds)
    except (TimeoutError, RuntimeError) as exc:
        return zero(str(exc))
    reached = sum(r for r, _ in runs)
    points = round(question.points * reached / len(runs), 2)
    detail = ", ".join(f"{m:.3g}" for _, m in runs)
    if reached == len(runs):
        return Result(question.id, question.points, question.points, True,
                      f"reached the target on all {len(runs)} of the grader's seeds ({detail})")
    message = f"reached the target on {reached} of {len(runs)} of the grader's seeds ({detail})"
    for mistake in question.mistakes:
        want = mistake.fn()
        if isinstance(want, dict) and _same(params, want):
            return Result(question.id, points, question.points, False,
                          f"{message}. This looks like a common choice, {mistake.name}: {mistake.hint}",
                          mistake=mistake.name)
    return Result(question.id, points, question.points, False, message)
