"""The child process that runs a submission's answer cells (never trusted).

Protocol: the grader writes one JSON job line to our stdin::

    {"cells": [source, ...], "timeout": seconds, "memory_mb": MB,
     "questions": [{"id": ..., "function": ..., "forbidden": [...], "operators": [...]}, ...]}

then, once we report ``ready``, one request line per question, when it wants that answer::

    {"request": "run", "id": question_id, "token": fresh_random_hex,
     "cases": book.grading.harness.pack([(args, kwargs), ...]), "call": name or null}

and we reply with events carrying that token (the grader ignores any other). The test
inputs come with the request: this process never imports the grader's questions, so their
references, known mistakes and case generators are not here for an answer to reach (one
that imports them is caught running them). While a question's cases run,
:mod:`book.grading.guard` records which forbidden implementations executed and any
tampering with the check; we report both, the grader judges.

We keep a private copy of stdout for our replies, send everything the student's code
prints to /dev/null, cap our own memory, execute the answer cells in order, then call
each question's function on that question's inputs and reply with one JSON line per
event. Only plain data goes back (``core.encode``); the grader computes every verdict
itself, against references this process cannot touch.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import types


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Timeout):
        return "TimeoutError: the time limit ran out"
    if isinstance(exc, SystemExit):
        return "SystemExit: the answer called sys.exit()"
    if isinstance(exc, MemoryError):
        return "MemoryError: the answer ran out of its memory limit"
    text = f"{type(exc).__name__}: {exc}"
    if "not enough memory" in text or "DefaultCPUAllocator" in text:
        return "MemoryError: the answer ran out of its memory limit"
    return text[:500]


def _innards(fn) -> tuple:
    """What makes a function do what it does, short of rebinding it: its code, defaults, closure."""
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell
            cells.append(_innards)
    return (fn.__code__, fn.__defaults__, fn.__kwdefaults__, *cells)


def _snapshot() -> list:
    """The grader's modules in this process (and their classes and functions), as they are now."""
    out = []
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "book.grading" or name.startswith("book.grading.")):
            continue
        namespace = vars(mod)
        out.append((name, namespace, dict(namespace)))
        for key, value in list(namespace.items()):
            if isinstance(value, type) and getattr(value, "__module__", None) == name:
                out.append((f"{name}.{key}", value.__dict__, dict(value.__dict__)))
                for attr, member in list(vars(value).items()):
                    member = getattr(member, "__func__", member)
                    if isinstance(member, types.FunctionType):
                        out.append((f"{name}.{key}.{attr}", member, _innards(member)))
            elif isinstance(value, types.FunctionType) and getattr(value, "__module__", None) == name:
                out.append((f"{name}.{key}", value, _innards(value)))
    return out


def _changed(snapshot: list) -> list[str]:
    """What an answer rebound in the grader's modules since ``snapshot``, or changed inside
    one of their functions (its code, defaults or closure)."""
    changed = []
    for name, namespace, before in snapshot:
        if isinstance(namespace, types.FunctionType):
            now_innards = _innards(namespace)
            if len(now_innards) != len(before) or any(a is not b for a, b in zip(now_innards, before)):
                changed.append(name)
            continue
        now = dict(namespace)
        for key in set(before) | set(now):
            if key in ("__cached__", "__builtins__") or (key not in before and isinstance(now[key], type(sys))):
                continue  # a submodule imported since is not a rebinding
            if before.get(key, _changed) is not now.get(key, _changed):
                changed.append(f"{name}.{key}")
    return sorted(changed)[:5]


class _Unwatched:
    """A guard that watches nothing (see ``watch`` in the job)."""

    def __init__(self):
        self.ran, self.tampered = set(), []

    def start(self, trusted=(), report=None):
        pass

    def stop(self):
        pass


def _run(call, fn, args, kwargs):
    """What the grader compares for one case (see ``Question.call``)."""
    return fn(*args, **kwargs) if call is None else call(fn, *args, **kwargs)


def main() -> None:
    requests = os.fdopen(os.dup(0), "r")
    job = json.loads(requests.readline())
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")

    def send(**event):
        reply.write(json.dumps(event) + "\n")
        reply.flush()

    try:
        import resource

        limit = int(job.get("memory_mb", 3072)) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on this platform
        pass

    import torch

    import book.grading  # noqa: F401 - imported here, so that answer cells importing it run none of its code
    from book.grading.core import encode
    from book.grading.guard import Guard, report_to
    from book.grading.harness import CALLS, unpack

    torch.set_num_threads(1)
    for name in job.get("warm", ()):  # what the answers' library calls import on first use, imported
        __import__(name)             # now, unwatched, rather than under the check's hook (slow)
    timeout = max(1, int(round(float(job.get("timeout", 10)))))
    signal.signal(signal.SIGALRM, _alarm)

    # Everything the check needs is resolved before any answer code runs.
    questions = {q["id"]: q for q in job["questions"]}
    calls = dict(CALLS)  # resolved now: an answer that edits the registry later changes nothing
    channel = (reply, reply.buffer, getattr(reply.buffer, "raw", None), requests)
    harness = (main, _run, encode, unpack, _describe, _alarm)
    if job.get("watch", True):
        report_to(reply.fileno())
        guards = {qid: Guard(q.get("forbidden") or (), q.get("operators") or None, harness=harness, reply=channel)
                  for qid, q in questions.items()}
        cell_guard = Guard((), harness=harness, reply=channel)
    else:  # only for measuring what the check costs (benchmarks/grading_time.py): the grader always watches
        guards = {qid: _Unwatched() for qid in questions}
        cell_guard = _Unwatched()

    def cell_tamper(g):
        send(event="tamper", tampered=list(g.tampered))
        os._exit(4)
    snapshot = _snapshot()
    threads = set(sys._current_frames())  # a thread the answer leaves running would run unwatched

    def stray_threads() -> bool:
        return bool(set(sys._current_frames()) - threads)
    send(event="started")

    namespace: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    for i, source in enumerate(job["cells"]):
        send(event="cell", index=i)
        signal.alarm(timeout)
        try:
            code = compile(source, f"<answer cell {i + 1}>", "exec")
            cell_guard.start(report=cell_tamper)
            try:
                exec(code, namespace)
            finally:
                cell_guard.stop()
        except BaseException as exc:  # noqa: BLE001 - the student's code may raise anything
            send(event="cell_error", index=i, error=_describe(exc))
        finally:
            signal.alarm(0)
    rebound = _changed(snapshot)
    if rebound:
        cell_guard.tampered.append(f"the answer cells rebound {', '.join(rebound)}")
    if stray_threads():
        cell_guard.tampered.append("the answer cells left a thread running, where code would run unwatched")
    send(event="ready", names=sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("_"))[:50])

    # One request at a time: the grader sends a fresh token with each and accepts only the
    # reply that carries it, so nothing written before the request can count.
    while True:
        line = requests.readline()
        if not line:
            break
        req = json.loads(line)
        if req.get("request") != "run":
            break
        qid, token = req["id"], req["token"]
        question, guard = questions[qid], guards[qid]
        fn = namespace.get(question["function"])
        if not callable(fn):
            send(event="result", id=qid, token=token, missing=True)
            continue
        outputs, errors = [], []
        call = calls[req["call"]] if req.get("call") else None
        cases = unpack(req["cases"])

        def report(g, qid=qid, token=token):
            send(event="tamper", id=qid, token=token, tampered=list(g.tampered))

        signal.alarm(timeout)
        try:
            for args, kwargs in cases:
                guard.start(trusted=(call, args, kwargs), report=report)
                try:
                    value = _run(call, fn, args, kwargs)
                except _Timeout:
                    # the alarm may have gone off inside the profile hook, which unsets it: that is the
                    # time limit's doing, and the question scores zero for the timeout anyway
                    guard.stop(expired=True)
                    raise
                except BaseException as exc:  # noqa: BLE001
                    guard.stop()
                    value, error = None, _describe(exc)
                else:
                    guard.stop()
                    error = None
                if error is None:
                    try:
                        encoded = encode(value)
                    except Exception as exc:  # noqa: BLE001 - an output may be anything
                        encoded, error = None, _describe(exc)
                outputs.append(None if error else encoded)
                errors.append(error)
        except _Timeout:
            send(event="timeout", id=qid, token=token)
            continue
        finally:
            signal.alarm(0)
        rebound = _changed(snapshot)
        if rebound and not cell_guard.tampered:
            guard.tampered.append(f"it rebound {', '.join(rebound)}")
        if stray_threads() and not cell_guard.tampered:
            guard.tampered.append("it left a thread running, where code would run unwatched")
        send(event="result", id=qid, token=token, outputs=outputs, errors=errors,
             ran=sorted(guard.ran | cell_guard.ran), tampered=cell_guard.tampered + guard.tampered)
    send(event="done")


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # pragma: no cover - report and die quietly
        try:
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(3)
