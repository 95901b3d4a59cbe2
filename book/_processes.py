"""Worker processes started from a notebook: let the kernel shut down promptly afterwards.

:func:`book.distributed.launch` and :func:`book.practice.run_parallel_study` start their workers from a
multiprocessing *forkserver* (or *spawn*), which also starts two helper processes that outlive the call:
the forkserver itself, kept so that later calls start quickly, and the *resource tracker*. In an IPython
kernel both are the kernel's children, and when the kernel is asked to shut down, ipykernel (7.x)
terminates its children before it exits, retrying with growing pauses until none is left. The resource
tracker ignores SIGTERM, so the kernel never finishes: the client kills it after half its wait
(``shutdown_wait_time``, 5 s by default). Measured on chapters 10 and 11: 2.6 s to shut down, against
0.6-1.1 s for the other chapters.

:func:`worker_context` is where both get their start method; it also calls
:func:`stop_helpers_at_shutdown`, which asks the kernel's shell to stop both helpers the moment a shutdown
is requested (the shell's ``exit_now`` is set before the children are terminated). Outside a kernel that
does nothing: a script's interpreter exits without waiting for them.
"""

from __future__ import annotations

import multiprocessing


def worker_context(preload: list[str]):
    """The multiprocessing context for worker processes that start clean (safe with threads and notebooks).

    A *forkserver* where the platform has one: it imports the modules in ``preload`` once, and every worker
    forks from it with them loaded. Elsewhere *spawn*: every worker is a fresh interpreter. In a notebook's
    kernel the helpers are stopped at shutdown (:func:`stop_helpers_at_shutdown`).
    """
    stop_helpers_at_shutdown()
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
        return ctx
    return multiprocessing.get_context("spawn")


def stop_helpers() -> None:
    """Stop multiprocessing's forkserver and resource tracker, where they run (the next use restarts them).

    Uses their private ``_stop`` (Python 3.9 and later) and does nothing where it is missing.
    """
    from multiprocessing import forkserver, resource_tracker

    for helper in (getattr(forkserver, "_forkserver", None), getattr(resource_tracker, "_resource_tracker", None)):
        stop = getattr(helper, "_stop", None)
        if callable(stop):
            try:
                stop()
            except Exception:  # pragma: no cover - shutting down: nothing useful to report
                pass


def stop_helpers_at_shutdown() -> bool:
    """In an IPython kernel, stop the helpers when the kernel is asked to shut down; whether a kernel was found.

    Idempotent: the hook is installed once per shell.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if getattr(shell, "kernel", None) is None or not hasattr(shell, "observe"):
        return False  # not a kernel's shell (a terminal IPython, or a shell some test created): nothing waits
    if not getattr(shell, "_book_stops_helpers", False):
        shell.observe(_on_exit_now, names="exit_now")
        shell._book_stops_helpers = True
    return True


def _on_exit_now(change) -> None:
    if change.get("new"):
        stop_helpers()
