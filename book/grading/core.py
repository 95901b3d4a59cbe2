"""Questions as data, and the verdict: compare an answer's outputs with the reference.

A :class:`Question` says which function the student writes, how to make its test
inputs (seeded, several shapes and edge cases), how to compute the right answer from
the book's tested kernels (or torch), how close is close enough, and which common
mistakes to recognise. :func:`judge` turns the outputs of an answer into a
:class:`Result` whose message points at the first mismatch and, when the outputs
equal a known mistake's, names the mistake and how to fix it.

The same :func:`judge` serves the in-notebook ``check`` and the command-line grader;
in the latter the outputs come from a child process (see ``runner``) and only plain
numbers and tensors cross the boundary (:func:`encode` / :func:`decode`).
"""

from __future__ import annotations

import base64
import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["Case", "Mistake", "Question", "Result", "judge", "run_case", "encode", "decode", "compare", "KINDS",
           "AUTOGRAD"]

# What a question asks of the student (``Question.kind``):
#   implement - turn a given formula into code that equals PyTorch's
#   derive    - find the closed form (a gradient, a rate, an optimal step) and write it as a function;
#               autograd is forbidden (AUTOGRAD is added to the question's forbidden names)
#   predict   - a number (or a few), written down before running anything, graded against the
#               closed form with a stated tolerance; the message never shows the right value
#   diagnose  - name the cause of training curves from seeded runs drawn when grading
#   tune      - choose hyperparameters; the grader trains with them on seeds of its own
#   build     - a small piece of machinery (a training loop, an optimizer, a schedule) run against
#               the reference on the same seeded problem
KINDS = ("implement", "derive", "predict", "diagnose", "tune", "build")
AUTOGRAD = ("torch.autograd", "torch.func", "functorch", "torch.Tensor.backward")


@dataclass(frozen=True)
class Case:
    """One test input: positional ``args`` (and ``kwargs``) for the student's function."""

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A common wrong answer, reproduced as a function with the student's signature."""

    name: str
    fn: Callable
    hint: str


@dataclass(frozen=True)
class Question:
    """A graded question.

    Attributes:
        id: the name used in ``check("id")`` and as nbgrader's ``grade_id``.
        chapter: the chapter slug (``"01_landscapes"``) whose exercise notebook asks it.
        function: the name of the function the student defines.
        points: what a correct answer is worth.
        cases: ``cases(device) -> list[Case]``: seeded inputs on ``device``.
        reference: the right answer, with the student's signature, built from the
            book's tested kernels or torch.
        mistakes: common wrong answers, each recognised by name in the message.
        rtol, atol: tolerance of the comparison (``torch.allclose`` in float64).
        forbidden: dotted names an answer may not use (``"book.gd"``,
            ``"torch.optim"``): calling the library's own implementation of the thing
            asked for scores zero.
        title: a short description for tables.
        call: how to run a function on one case and what to compare, as
            ``call(fn, *args, **kwargs)``; by default what ``fn(*args, **kwargs)``
            returns. A question whose answer acts through an argument (an objective that
            records the calls made to it) returns what that argument observed.
        operators: ATen operator names (``"native_batch_norm"``, ``"_fused_adam"``) an
            answer may not run, beyond those ``book.grading.guard.OPERATORS`` already
            maps the ``forbidden`` names to; the run-time check watches for them.
        kind: what the question asks for, one of :data:`KINDS` (see there).
        partial: award ``points × (inputs answered right) / (inputs)`` instead of all or
            nothing.
        space: for a ``tune`` question, what the answer's dict may hold: ``{name: (low, high)}``
            for a float, ``{name: ("int", low, high)}`` for an integer, ``{name: [choices]}``.
            Its ``reference(params, seed)`` trains with the validated ``params`` on the grader's
            ``seed`` and returns ``(reached, metric)`` (see :mod:`book.grading.tune`).
    """

    id: str
    chapter: str
    function: str
    points: int
    cases: Callable[[torch.device], Sequence[Case]]
    reference: Callable
    mistakes: Sequence[Mistake] = ()
    rtol: float = 1e-5
    atol: float = 1e-7
    forbidden: Sequence[str] = ()
    title: str = ""
    call: Callable | None = None
    operators: Sequence[str] = ()
    kind: str = "implement"
    partial: bool = False
    space: dict | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "derive":  # a derivation done by autograd is no derivation
            object.__setattr__(self, "forbidden", tuple(self.forbidden) + tuple(
                a for a in AUTOGRAD if a not in self.forbidden))


@dataclass
class Result:
    """The verdict on one question (the JSON of DESIGN.md has these fields)."""

    id: str
    points: float
    max_points: float
    passed: bool
    message: str
    mistake: str | None = None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "points": self.points,
            "max_points": self.max_points,
            "passed": self.passed,
            "message": self.message,
        }


# ---------------------------------------------------------------------------
# Comparing values


def _plain(value: Any) -> Any:
    """Tensors to plain CPU float64/int64/bool tensors; tuples/lists recursively."""
    if isinstance(value, torch.Tensor):
        t = torch.Tensor.as_subclass(value.detach(), torch.Tensor).to("cpu")
        return t.to(torch.float64) if t.is_floating_point() else t
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return _plain(torch.from_numpy(np.array(value)))
    if isinstance(value, (bool, int, float)) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def compare(got: Any, want: Any, rtol: float, atol: float, where: str = "the result") -> str | None:
    """Return None when ``got`` matches ``want``, otherwise a sentence naming the first
    mismatch (which element, the two values)."""
    got, want = _plain(got), _plain(want)
    if isinstance(want, torch.Tensor):
        if isinstance(got, (int, float)) and not isinstance(got, bool) and want.numel() == 1:
            got = torch.tensor(float(got), dtype=torch.float64).reshape(want.shape)
        if not isinstance(got, torch.Tensor):
            return f"{where} should be a tensor of shape {tuple(want.shape)}, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"{where} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        g, w = got.to(torch.float64), want.to(torch.float64)
        bad = ~torch.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        if bad.any():
            idx = tuple(int(i) for i in torch.nonzero(bad)[0])
            pos = f" at index {list(idx)}" if g.ndim else ""
            diff = float((g - w).abs().nan_to_num(nan=math.inf).max())
            return (
                f"{where}{pos} is {_fmt(float(g[idx]))}, expected {_fmt(float(w[idx]))} "
                f"({int(bad.sum())} of {bad.numel()} elements differ; max abs diff {_fmt(diff)})"
            )
        return None
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"{where} should be a {type(want).__name__} of {len(want)} items, got {type(got).__name__}"
        if len(got) != len(want):
            return f"{where} has {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            msg = compare(g, w, rtol, atol, where=f"{where}[{i}]")
            if msg:
                return msg
        return None
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return None if got == want and type(got) is type(want) else f"{where} is {got!r}, expected {want!r}"
    if isinstance(want, (int, float)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = float(got.reshape(()))
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"{where} should be a number, got {type(got).__name__}"
        if not math.isclose(float(got), float(want), rel_tol=rtol, abs_tol=atol):
            return f"{where} is {_fmt(float(got))}, expected {_fmt(float(want))}"
        return None
    return f"cannot compare {where} of type {type(got).__name__}"


# ---------------------------------------------------------------------------
# The verdict


def run_case(question: Question, fn: Callable, case: Case) -> Any:
    """What the grader compares for ``fn`` on ``case`` (see ``Question.call``)."""
    if question.call is None:
        return fn(*case.args, **case.kwargs)
    return question.call(fn, *case.args, **case.kwargs)


def _call(question: Question, fn: Callable, case: Case) -> Any:
    """Run ``fn`` on a private copy of the case's inputs, so that a function that
    updates its arguments in place cannot change what the next one sees."""
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    return run_case(question, fn, Case(case.label, args, kwargs))


def reference_outputs(question: Question, cases: Sequence[Case]) -> list[Any]:
    return [_call(question, question.reference, c) for c in cases]


def _case_message(question: Question, case: Case, got: Any, err: str | None, want: Any) -> str | None:
    """Why the answer is wrong on one input (None when it is right)."""
    if err is not None:
        if "NotImplementedError" in err:
            return "not answered yet: the function still raises NotImplementedError"
        return f"on input {case.label!r} your function raised {err}"
    msg = compare(got, want, question.rtol, question.atol)
    if msg is None:
        return None
    if question.kind == "predict":  # never show the value a prediction is graded against
        return (f"{case.label}: not within the tolerance of the closed form (relative {question.rtol:g}); "
                "work it out again from the chapter's formulas")
    return f"on input {case.label!r}: {msg}"


def judge(question: Question, cases: Sequence[Case], outputs: Sequence[Any],
          errors: Sequence[str | None] | None = None) -> Result:
    """The verdict on the outputs an answer gave for ``cases`` (one per case).

    ``errors[i]`` is the exception message if case ``i`` raised. The references and the
    known mistakes are evaluated here, in the caller's process. A ``partial`` question earns
    its points in proportion to the inputs answered right.
    """
    errors = list(errors) if errors is not None else [None] * len(cases)
    if question.kind == "tune":  # trained with the answer's choices, in a clean process
        from book.grading.tune import judge_tune

        return judge_tune(question, outputs, errors)
    wants = reference_outputs(question, cases)
    verdicts = [_case_message(question, c, got, err, want)
                for c, got, err, want in zip(cases, outputs, errors, wants)]
    first = next((m for m in verdicts if m), None)
    if first is None:
        return Result(question.id, question.points, question.points, True,
                      f"correct on all {len(cases)} test inputs" if len(cases) > 1 else "correct")
    points = 0.0
    if question.kind == "diagnose" and len({repr(o) for o in outputs}) == 1 and len(cases) > 1:
        return Result(question.id, 0, question.points, False,
                      f"{first}. Every run got the same answer, {outputs[0]!r}: read each run's curves "
                      "(a constant answer earns nothing)")
    if question.partial:
        right = sum(m is None for m in verdicts)
        points = round(question.points * right / len(cases), 2)
        if right:
            first = f"right on {right} of {len(cases)} test inputs ({points:g} of {question.points:g} points); {first}"
    # Does the answer behave like a known mistake on every input?
    if all(e is None for e in errors):
        for mistake in question.mistakes:
            if all(
                compare(got, _call(question, mistake.fn, c), question.rtol, question.atol) is None
                for c, got in zip(cases, outputs)
            ):
                return Result(question.id, points, question.points, False,
                              f"{first}. This looks like a common mistake, {mistake.name}: {mistake.hint}",
                              mistake=mistake.name)
    return Result(question.id, points, question.points, False, first)


# ---------------------------------------------------------------------------
# Values across a process boundary: plain data only, never pickle.

_DTYPES = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "bool": np.bool_,
}
MAX_ELEMENTS = 50_000_000


def encode(value: Any, depth: int = 0) -> dict:
    """Turn an answer's output into JSON-able plain data (in the child process)."""
    if depth > 20:
        return {"type": "unsupported", "repr": "nested too deeply"}
    if isinstance(value, torch.Tensor):
        t = torch.Tensor.as_subclass(value.detach(), torch.Tensor).to("cpu")
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        arr = t.contiguous().numpy()  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        return {"type": "tensor", "dtype": str(arr.dtype), "shape": list(arr.shape),
                "data": base64.b64encode(arr.tobytes()).decode("ascii")}
    if isinstance(value, np.ndarray):
        return encode(torch.from_numpy(np.array(value)), depth)
    if isinstance(value, bool):
        return {"type": "bool", "value": bool(value)}
    if isinstance(value, (int, np.integer)):
        return {"type": "int", "value": int(value)}
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return {"type": "float", "value": v if math.isfinite(v) else repr(v)}
    if value is None:
        return {"type": "none"}
    if isinstance(value, str):
        return {"type": "str", "value": value[:1000]}
    if isinstance(value, (list, tuple)):
        return {"type": "tuple" if isinstance(value, tuple) else "list",
                "items": [encode(v, depth + 1) for v in list(value)[:10_000]]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"type": "dict", "items": [[k[:200], encode(v, depth + 1)] for k, v in list(value.items())[:1000]]}
    return {"type": "unsupported", "repr": type(value).__name__}


def decode(data: Any, depth: int = 0) -> Any:
    """Rebuild plain values from :func:`encode`'s output (in the grader's process).

    Only base ``torch.Tensor``s, numbers, strings, None and lists/tuples come out;
    anything malformed raises ``ValueError``.
    """
    if depth > 20 or not isinstance(data, dict):
        raise ValueError("malformed value")
    kind = data.get("type")
    if kind == "tensor":
        dtype = _DTYPES.get(data.get("dtype"))
        shape = data.get("shape")
        if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError("malformed tensor")
        n = int(np.prod(shape)) if shape else 1
        if n > MAX_ELEMENTS:
            raise ValueError("tensor too large")
        raw = base64.b64decode(data.get("data", ""), validate=True)
        if len(raw) != n * np.dtype(dtype).itemsize:
            raise ValueError("tensor data does not match its shape")
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        return torch.from_numpy(arr)
    if kind == "bool":
        return bool(data["value"])
    if kind == "int":
        return int(data["value"])
    if kind == "float":
        v = data["value"]
        return float(v) if isinstance(v, (int, float)) else float(str(v))
    if kind == "none":
        return None
    if kind == "str":
        return str(data["value"])
    if kind in ("list", "tuple"):
        items = [decode(v, depth + 1) for v in data.get("items", [])]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        items = data.get("items", [])
        if not isinstance(items, list) or not all(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], str)
                                                  for kv in items):
            raise ValueError("malformed dict")
        return {k: decode(v, depth + 1) for k, v in items}
    if kind == "unsupported":
        return _Unsupported(str(data.get("repr", "?")))
    raise ValueError(f"unknown value type {kind!r}")


class _Unsupported:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<a {self.name}>"
