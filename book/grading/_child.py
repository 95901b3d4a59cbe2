"""The child process that runs a submission's answer cells (never trusted).

Protocol: the grader writes one JSON job to our stdin::

    {"cells": [source, ...], "questions": [id, ...], "timeout": seconds, "memory_mb": MB}

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


def main() -> None:
    job = json.loads(sys.stdin.read())
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

    from book.grading.core import encode, run_case
    from book.grading.questions import get_question

    torch.set_num_threads(1)
    timeout = max(1, int(round(float(job.get("timeout", 10)))))
    signal.signal(signal.SIGALRM, _alarm)
    send(event="started")

    namespace: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    for i, source in enumerate(job["cells"]):
        send(event="cell", index=i)
        signal.alarm(timeout)
        try:
            exec(compile(source, f"<answer cell {i + 1}>", "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001 - the student's code may raise anything
            send(event="cell_error", index=i, error=_describe(exc))
        finally:
            signal.alarm(0)
    send(event="ready", names=sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("_"))[:50])

    for qid in job["questions"]:
        question = get_question(qid)
        send(event="start", id=qid)
        fn = namespace.get(question.function)
        if not callable(fn):
            send(event="result", id=qid, missing=True)
            continue
        outputs, errors = [], []
        signal.alarm(timeout)
        try:
            for case in question.cases(torch.device("cpu")):
                try:
                    value = run_case(question, fn, case)
                    outputs.append(encode(value))
                    errors.append(None)
                except _Timeout:
                    raise
                except BaseException as exc:  # noqa: BLE001
                    outputs.append(None)
                    errors.append(_describe(exc))
        except _Timeout:
            send(event="timeout", id=qid)
            continue
        finally:
            signal.alarm(0)
        send(event="result", id=qid, outputs=outputs, errors=errors)
    send(event="done")


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # pragma: no cover - report and die quietly
        try:
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(3)
