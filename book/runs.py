"""Independent training runs, two at a time where that is safe: the sweeps of the later chapters.

A sweep (every learning rate of a grid, under three seeds) is many small runs that share nothing. On
a CPU a small network's run keeps one core busy, so :func:`run_all` spreads the runs over worker
processes, one per core, and returns their results in order: the same results as running them one
after the other, since each run seeds its own generators and every process computes with one thread.

The workers are *forked* from the notebook's process, so they know every function the notebook
defined; only the arguments and the results travel between processes (pickled). Forking is safe
only where the parent runs no thread pool of its own that the child would need, so the runs go one
after the other, in this process, unless all of these hold: Linux (where fork is the platform's
model), a CPU-only process (CUDA cannot be forked), torch computing with one thread (an OpenMP pool
does not survive a fork), at least two cores, and more than one run.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Sequence

import torch

__all__ = ["run_all", "workers"]


def workers(n_runs: int, limit: int | None = None) -> int:
    """How many processes :func:`run_all` uses for ``n_runs`` runs here: 1 (this process) where forking is
    unsafe or would not pay, else one per core (at most ``limit``)."""
    if n_runs < 2 or sys.platform != "linux" or torch.get_num_threads() != 1:
        return 1
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    n = min(cores, n_runs, limit if limit is not None else cores)
    return max(n, 1)


def run_all(fn: Callable, arguments: Iterable[Sequence], limit: int | None = None,
            progress: str | None = None) -> list:
    """``[fn(*args) for args in arguments]``, computed in :func:`workers` processes, in order.

    ``fn`` must be a function defined at the top level of a module or notebook (the workers find it by
    name), and its arguments and results picklable: numbers, strings, tensors, modules, optimizers,
    dictionaries of them. An exception in a run is raised here. ``progress``: a description for a
    ``tqdm`` bar over the runs, advanced as each one returns (none when ``None``).

    Example:
        >>> run_all(pow, [(2, 3), (3, 2)])
        [8, 9]
    """
    calls = [(fn, tuple(args)) for args in arguments]
    n = workers(len(calls), limit)
    import contextlib
    import multiprocessing

    from tqdm.auto import tqdm

    with (multiprocessing.get_context("fork").Pool(n) if n > 1 else contextlib.nullcontext()) as pool, \
            tqdm(total=len(calls), desc=progress, unit="run", disable=progress is None) as bar:
        results = []
        for result in (pool.imap(_apply, calls, chunksize=1) if pool is not None else map(_apply, calls)):
            results.append(result)
            bar.update(1)
        return results


def _apply(call: tuple[Callable, tuple]) -> object:
    fn, args = call
    return fn(*args)
