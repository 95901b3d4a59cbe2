r"""Data-parallel training on ``torch.distributed``: by hand, with DDP, and with ZeRO.

In data-parallel SGD, :math:`P` processes (ranks) hold the same model. At every step each
rank takes its own slice of the global batch, computes the gradient of its local mean loss,
and the ranks average their gradients with one collective, the **all-reduce**:

.. math::

    g \;=\; \frac{1}{P}\sum_{r=0}^{P-1} g^{(r)}, \qquad
    g^{(r)} = \nabla_\theta \frac{1}{B/P}\sum_{i \in S_r} \ell_i(\theta).

When the :math:`P` slices :math:`S_r` have equal sizes :math:`B/P`, the average of the local
means is the mean over the whole batch, so :math:`g` is exactly the gradient one process
would compute on the global batch of :math:`B` samples, and every rank then takes the same
optimizer step. This module runs that on one machine::

    >>> from book.distributed import launch, collectives_demo
    >>> launch(collectives_demo, 2)[1]["all_reduce_sum"]      # doctest: +SKIP
    3.0

- :func:`launch` starts ``world_size`` processes with a process group and returns what
  each returns (the chapter's way to run a "cluster" inside a notebook);
- :func:`average_gradients` and :func:`broadcast_parameters` are the by-hand data-parallel
  step and start; :func:`shard` says which samples a rank owns;
- the workers :func:`train_by_hand`, :func:`train_ddp` (DDP, with ``no_sync`` gradient
  accumulation), :func:`train_zero` (``ZeroRedundancyOptimizer``), :func:`time_allreduce`
  and :func:`compare_methods` (all of them in one launch) are module-level functions that
  return plain data (lists, tensors, numbers), ready to hand to :func:`launch`;
- ``torchrun --standalone --nproc-per-node=2 -m book.distributed`` trains the chapter's
  model with DDP under PyTorch's own launcher (:func:`main`): on several machines only that
  command changes.

The workers use the ``seed`` they are given as it is (the spawned processes would otherwise
add ``BOOK_SEED`` a second time): a chapter passes ``method_seed(k)``. Process start-up is
the cost of a launch: where the platform has it (Linux, macOS) the ranks are forked from a
*forkserver* that imported torch once, at the first launch (about 2 s), so later launches
start in a fraction of a second; elsewhere every rank is a fresh interpreter that imports
torch (1.5-3 s per launch). Either way a chapter batches its experiments into few launches
(:func:`compare_methods`).

References:
    Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training",
    VLDB 2020, arXiv:2006.15704 (DDP: gradient buckets, overlap with the backward pass);
    Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter
    Models", SC 2020, arXiv:1910.02054; Goyal et al., "Accurate, Large Minibatch SGD:
    Training ImageNet in 1 Hour", 2017, arXiv:1706.02677; Patarasuk & Yuan, "Bandwidth
    optimal all-reduce algorithms for clusters of workstations", JPDC 2009 (the ring).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from book import checks
from book._processes import worker_context

__all__ = [
    "launch",
    "WorkerError",
    "average_gradients",
    "broadcast_parameters",
    "shard",
    "mlp",
    "collectives_demo",
    "train_by_hand",
    "train_ddp",
    "train_zero",
    "time_allreduce",
    "compare_methods",
    "optimizer_state_bytes",
    "main",
]

_STOP_GRACE_S = 5.0  # seconds a terminated worker gets before it is killed


# ---------------------------------------------------------------------------
# Launching processes


class WorkerError(RuntimeError):
    """A rank of :func:`launch` raised. ``rank``, ``exc_type`` (e.g. ``"ValueError"``),
    ``exc_message`` and ``remote_traceback`` (the worker's traceback as text) say where and what."""

    def __init__(self, message: str, rank: int, exc_type: str | None = None, exc_message: str | None = None,
                 remote_traceback: str | None = None):
        super().__init__(message)
        self.rank, self.exc_type, self.exc_message, self.remote_traceback = rank, exc_type, exc_message, remote_traceback

    def __reduce__(self):  # picklable, attributes included
        return type(self), (str(self), self.rank, self.exc_type, self.exc_message, self.remote_traceback)


def _default_backend(world_size: int) -> str:
    """nccl when every rank can have its own CUDA device, else gloo (which runs on the CPU)."""
    if torch.cuda.is_available() and dist.is_nccl_available() and world_size <= torch.cuda.device_count():
        return "nccl"
    return "gloo"


def _check_spawnable(fn) -> None:
    """Fail in the parent, with the fix, on a ``fn`` that spawned processes cannot import."""
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    qualname = getattr(target, "__qualname__", type(target).__qualname__)
    module = getattr(target, "__module__", None) or type(target).__module__
    fix = ("define it with `def` at the top level of a .py module (e.g. workers.py next to the "
           "notebook) and import it from there; pass extra arguments through launch(fn, world_size, "
           "*args) or functools.partial(fn, key=value)")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(
            f"launch needs a function defined at module level, got {qualname!r}: the spawned "
            f"processes receive fn by its importable name, and a lambda or a function defined "
            f"inside another function has none, so it cannot be pickled. Instead, {fix}")
    main = sys.modules.get("__main__")
    if module == "__main__" and not getattr(main, "__file__", None):
        raise TypeError(
            f"launch cannot send {qualname!r} to spawned processes: it is defined in a notebook or "
            f"an interactive session (module __main__), which a fresh process cannot import. Instead, {fix}")
    try:
        pickle.dumps(fn)
    except Exception as exc:  # e.g. a partial holding an unpicklable argument
        raise TypeError(f"launch cannot pickle fn={fn!r} for the spawned processes ({exc}); {fix}") from exc


def _loopback_interface() -> str | None:
    """The loopback network interface's name (``lo`` on Linux, ``lo0`` on macOS), if any."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


def _write(path: Path, obj) -> None:
    """Pickle ``obj`` to ``path`` atomically (the parent never reads half a file)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _worker_entry(rank: int, world_size: int, payload: bytes, backend: str, init_method: str,
                  folder: str, threads: int | None, timeout_s: float, environ: dict | None = None) -> None:
    """What each spawned process runs: join the group, call ``fn``, leave the group, report."""
    folder = Path(folder)
    try:
        if environ is not None:  # the launching process's environment now, not the forkserver's at its start
            os.environ.clear()
            os.environ.update(environ)
        fn, args = pickle.loads(payload)  # this rank's own copy of the arguments
        if threads is not None:
            torch.set_num_threads(threads)
        if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ:
            lo = _loopback_interface()  # all ranks are on this machine: talk over loopback
            if lo is not None:
                os.environ["GLOO_SOCKET_IFNAME"] = lo
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
        result = fn(rank, world_size, *args)
        if dist.is_initialized():  # fn may have left the group itself
            dist.destroy_process_group()
        _write(folder / f"result-{rank}.pkl", result)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        # Report first, leave the group after: the peers fail only once this rank disconnects,
        # so the first report by time is the original error, not its echo in the other ranks.
        _write(folder / f"error-{rank}.pkl", {
            "rank": rank, "time": time.time(), "type": type(exc).__name__,
            "module": type(exc).__module__, "message": str(exc), "traceback": traceback.format_exc(),
        })
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                dist.destroy_process_group()
        sys.exit(1)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _failure(procs, folder: Path, first_rank: int, name: str) -> WorkerError:
    """The error to raise once a rank has failed: the earliest traceback any rank wrote."""
    reports = []
    for rank in range(len(procs)):
        path = folder / f"error-{rank}.pkl"
        if path.exists():
            with open(path, "rb") as f:
                reports.append(pickle.load(f))
    if not reports:  # it died without a Python exception
        code = procs[first_rank].exitcode
        return WorkerError(
            f"launch({name}): rank {first_rank} {_exit_reason(code)} without raising a Python exception "
            f"(killed, out of memory, os._exit, or it failed before it ran: in a script, is the call to "
            f"launch under `if __name__ == \"__main__\":`? spawn re-imports the main module). "
            f"All {len(procs)} processes were stopped.", rank=first_rank)
    first = min(reports, key=lambda r: r["time"])  # a rank's peers fail after it, when it disconnects
    others = sorted(r["rank"] for r in reports if r is not first)
    also = f" (rank(s) {others} failed after it, most likely because rank {first['rank']} left)" if others else ""
    return WorkerError(
        f"launch({name}): rank {first['rank']} raised {first['type']}: {first['message']}{also}. "
        f"All {len(procs)} processes were stopped.\n\nTraceback in rank {first['rank']}:\n{first['traceback']}",
        rank=first["rank"], exc_type=first["type"], exc_message=first["message"],
        remote_traceback=first["traceback"])


def _stop(procs) -> None:
    """Terminate, then kill, every process still alive, and reap them all."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + _STOP_GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


def launch(fn: Callable[..., Any], world_size: int, *args, backend: str | None = None,
           timeout_s: float = 60.0, threads: int | None = 1) -> list:
    r"""Run ``fn(rank, world_size, *args)`` in ``world_size`` processes and return their results.

    Each process starts clean, as with the *spawn* start method (so this works from notebooks,
    pytest and threads alike): it is forked from a *forkserver*, a server process started at
    the first launch that has imported torch and this module and nothing else (it stays, idle,
    until the launching Python process exits), or, on platforms without forkserver (Windows),
    it is a fresh interpreter. It gets the launching process's current environment variables,
    and joins a ``torch.distributed`` process group of
    ``world_size`` ranks before it calls ``fn``, and leaves it (``destroy_process_group``)
    after. The ranks meet through a file, ``init_method="file://<tmp>/rendezvous"`` in a
    fresh temporary directory: no network port is fixed, so two launches never collide.

    Args:
        fn: a function defined at **module level** (``def`` at the top of a ``.py`` file): the
            processes receive it by its importable name. A lambda, a function defined inside
            another function or in a notebook cell raises ``TypeError`` saying so. For keyword
            arguments pass ``functools.partial(fn, key=value)``.
        world_size: the number of processes :math:`P` (>= 1).
        *args: passed to every rank after ``rank, world_size``; they must be picklable. Each
            rank gets its own copy (pickled once in the parent, unpickled in each process), as
            if it ran on its own machine: a worker that changes a tensor in place changes its
            copy only.
        backend: ``"gloo"`` (CPU tensors) or ``"nccl"`` (CUDA tensors, rank ``r`` on GPU ``r``).
            ``None``: nccl when CUDA is available and there are at least ``world_size`` GPUs,
            else gloo.
        timeout_s: seconds for the whole launch, process start-up included (about 2 s for the
            first launch, which starts the forkserver: it imports torch); also the process group's timeout for one
            collective.
        threads: torch CPU threads per process (``torch.set_num_threads``); one by default, since
            the processes share the machine's cores. ``None`` leaves torch's default.

    Returns:
        ``[fn(0, P, *args), ..., fn(P-1, P, *args)]``, the ranks' return values in rank order.
        They travel back pickled (through files), so they must be picklable: return plain data
        (numbers, lists, dicts, CPU tensors), not models or optimizers. ``print`` in ``fn``
        goes to the terminal that started Jupyter, not to the notebook: return values instead.

    Raises:
        WorkerError: (a ``RuntimeError``) when a rank raises or dies: the message names the rank
            that failed first and holds its exception's type, message and traceback. All ranks
            are stopped.
        TimeoutError: when the ranks are not done within ``timeout_s`` (a deadlock, such as one
            rank skipping a collective the others wait in); all ranks are stopped.
        TypeError: when ``fn`` or the arguments cannot be sent to a spawned process.

    No rank outlives the call, whichever way it ends: the stragglers are terminated,
    killed after 5 s if need be, and reaped (the forkserver, which runs no user code, stays). In a script, call ``launch`` under
    ``if __name__ == "__main__":`` (spawn re-imports the main module).

    Example:
        >>> from book.distributed import launch, collectives_demo
        >>> [r["all_reduce_sum"] for r in launch(collectives_demo, 2)]  # doctest: +SKIP
        [3.0, 3.0]
    """
    _check_spawnable(fn)
    world_size = checks.integer(world_size, "world_size", 1)
    timeout_s = checks.positive(timeout_s, "timeout_s")
    if threads is not None:
        threads = checks.integer(threads, "threads", 1)
    backend = _default_backend(world_size) if backend is None else str(backend).lower()
    is_available = getattr(dist, "is_backend_available", None)
    if is_available is not None and not is_available(backend):
        raise ValueError(f"backend {backend!r} is not available in this build of torch; use 'gloo' on the CPU")
    if backend == "nccl" and world_size > torch.cuda.device_count():
        raise ValueError(f"backend 'nccl' needs one GPU per rank: world_size={world_size} but "
                         f"{torch.cuda.device_count()} GPU(s) are visible; use backend='gloo'")
    name = getattr(fn, "__qualname__", None) or getattr(getattr(fn, "func", None), "__qualname__", repr(fn))

    try:  # pickled once, here: each rank unpickles its own copy, as if on its own machine
        payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"launch cannot send the arguments to the spawned processes: {exc}. "
                        f"Arguments must be picklable (numbers, strings, lists, dicts, tensors)") from exc

    # a forkserver that imports torch once, and torch._dynamo (which the first optimizer a process builds imports,
    # about a second); each rank forks from it with these modules loaded
    ctx = worker_context([__name__, "torch._dynamo"])
    folder = Path(tempfile.mkdtemp(prefix="book-launch-"))
    init_method = "file://" + str(folder / "rendezvous")
    procs = []
    try:
        for rank in range(world_size):
            p = ctx.Process(target=_worker_entry, name=f"book-launch-rank-{rank}",
                            args=(rank, world_size, payload, backend, init_method, str(folder), threads, timeout_s,
                                  dict(os.environ)))
            p.start()
            procs.append(p)
        deadline = time.monotonic() + timeout_s
        running = {p.sentinel: rank for rank, p in enumerate(procs)}
        while running:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"launch({name}): rank(s) {sorted(running.values())} of {world_size} were still running "
                    f"after {timeout_s:g} s; all processes were stopped. Raise timeout_s= if the work is "
                    f"long, or look for a deadlock (a rank that skips a collective the others wait in).")
            for sentinel in multiprocessing.connection.wait(list(running), timeout=left):
                rank = running.pop(sentinel)
                procs[rank].join()
                if procs[rank].exitcode != 0:
                    _stop(procs)  # the others may be waiting for it in a collective
                    raise _failure(procs, folder, rank, name)
        results = []
        for rank in range(world_size):
            with open(folder / f"result-{rank}.pkl", "rb") as f:
                results.append(pickle.load(f))
        return results
    finally:
        try:
            _stop(procs)
            for p in procs:
                p.close()  # release the process objects' resources (pipes)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------
# The data-parallel step by hand


def _parameters(model) -> list[Tensor]:
    return list(model.parameters()) if isinstance(model, nn.Module) else list(model)


def average_gradients(model: nn.Module | Iterable[Tensor], group=None, flat: bool = False) -> int:
    r"""Average the gradients over the ranks, in place: the by-hand data-parallel step.

    For every parameter with a gradient,

    .. math::  g \leftarrow \frac{1}{P} \sum_{r=0}^{P-1} g^{(r)}

    by ``dist.all_reduce(g, op=SUM)`` followed by ``g /= P`` (gloo has no ``AVG``
    reduction). Call it between ``loss.backward()`` and ``optimizer.step()``; every rank
    then holds the same gradient and takes the same step.

    Args:
        model: a module, or an iterable of parameters.
        group: the process group (``None``: all ranks).
        flat: copy all gradients into one buffer and all-reduce it once, instead of one
            all-reduce per tensor (fewer, larger messages: what DDP's buckets do). All
            gradients must then share a dtype and device.

    Returns:
        The number of bytes all-reduced (the gradients' total size), per rank and call.

    Note:
        ``torch.nn.parallel.DistributedDataParallel`` computes the same average, but in
        *buckets* of about 25 MB, each all-reduced as soon as the backward pass has filled it,
        so communication overlaps the rest of the backward pass; it divides by :math:`P`
        before summing rather than after (the same number when :math:`P` is a power of two).

    Example:
        >>> loss_fn(model(X_local), y_local).backward()   # doctest: +SKIP
        >>> average_gradients(model)                       # doctest: +SKIP
        >>> optimizer.step()                               # doctest: +SKIP
    """
    if not dist.is_initialized():
        raise RuntimeError("average_gradients needs a process group: call it inside a function run by "
                           "book.distributed.launch, or after torch.distributed.init_process_group")
    world = dist.get_world_size(group)
    grads = [p.grad for p in _parameters(model) if p.grad is not None]
    if flat and grads:
        if len({(g.dtype, g.device) for g in grads}) > 1:
            raise ValueError("flat=True needs all gradients in one dtype and on one device")
        buffer = torch.cat([g.reshape(-1) for g in grads])  # one message instead of len(grads)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
        buffer.div_(world)
        offset = 0
        for g in grads:
            g.copy_(buffer[offset: offset + g.numel()].view_as(g))
            offset += g.numel()
    else:
        for g in grads:
            dist.all_reduce(g, op=dist.ReduceOp.SUM, group=group)  # g = sum over ranks
            g.div_(world)  # the mean
    return sum(g.numel() * g.element_size() for g in grads)


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0, group=None) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank, in place, so all ranks start equal.

    Without it, ranks that initialise their models from different seeds train different
    models whose gradients are averaged: nonsense. ``DistributedDataParallel`` does this
    broadcast when it is constructed. Buffers (batch norm's running statistics) are included.
    """
    if not dist.is_initialized():
        raise RuntimeError("broadcast_parameters needs a process group (see average_gradients)")
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.detach(), src=src, group=group)


def shard(n: int, rank: int, world_size: int, strided: bool = False, drop_last: bool = False) -> Tensor:
    r"""The indices of the samples (of ``n``) that ``rank`` owns: a ``(n // world_size,)`` int64 tensor.

    Contiguous by default: rank :math:`r` owns :math:`[r m, (r+1) m)` with
    :math:`m = n / P`. ``strided=True`` deals them out like cards, :math:`r, r + P, r + 2P,
    \dots`, as ``torch.utils.data.DistributedSampler`` does. Either way the shards are
    disjoint and, together, hold every sample once.

    All shards have the same size, because the average of the local mean losses equals the
    mean over the whole batch only then. If ``world_size`` does not divide ``n``, pass
    ``drop_last=True`` to drop the last ``n mod world_size`` samples; otherwise a
    ``ValueError`` says so. (``DistributedSampler`` instead repeats samples to pad.)

    Example:
        >>> shard(8, 1, 2).tolist(), shard(8, 1, 2, strided=True).tolist()
        ([4, 5, 6, 7], [1, 3, 5, 7])
    """
    n = checks.integer(n, "n", 0)
    world_size = checks.integer(world_size, "world_size", 1)
    rank = checks.integer(rank, "rank", 0)
    if rank >= world_size:
        raise ValueError(f"rank must be < world_size={world_size}, got {rank}")
    if n % world_size and not drop_last:
        raise ValueError(f"n={n} samples do not split evenly over world_size={world_size} ranks; unequal "
                         f"shards would make the average of the ranks' mean losses differ from the batch mean. "
                         f"Use a batch size divisible by {world_size}, or drop_last=True")
    m = n // world_size
    if strided:
        return torch.arange(rank, m * world_size, world_size)
    return torch.arange(rank * m, (rank + 1) * m)


# ---------------------------------------------------------------------------
# The chapter's model and workers


def mlp(sizes: Sequence[int] = (64, 64, 64, 10), seed: int = 0, dtype: torch.dtype = torch.float32,
        device=None) -> nn.Sequential:
    """A multilayer perceptron ``Linear, Tanh, ..., Linear`` with layer widths ``sizes``.

    Initialised by ``nn.Linear``'s default (Kaiming-uniform) in float32 under
    ``torch.manual_seed(seed)`` (without touching the caller's random state), then cast to
    ``dtype`` and moved to ``device``: the same seed gives the same model everywhere.

    Example:
        >>> [p.shape for p in mlp((4, 3, 2)).parameters()]
        [torch.Size([3, 4]), torch.Size([3]), torch.Size([2, 3]), torch.Size([2])]
    """
    sizes = [checks.integer(s, "sizes[i]", 1) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {sizes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        model = nn.Sequential(*layers)
    return model.to(dtype=dtype, device=device)


def _device() -> torch.device:
    """This rank's device: its GPU under nccl, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _check_world(world_size: int) -> None:
    if world_size > 1 and not dist.is_initialized():
        raise RuntimeError(f"world_size={world_size} needs a process group: run this function through "
                           f"book.distributed.launch (or torchrun), not directly")


def _global_batches(X: Tensor, y: Tensor, batch_size: int, steps: int, seed: int):
    """``steps`` global batches, the same on every rank: consecutive slices of random
    permutations drawn from ``torch.Generator().manual_seed(seed)``, one per epoch, dropping
    each epoch's incomplete last batch (``book.data.minibatches(..., drop_last=True)``)."""
    from book.data import minibatches

    if batch_size > len(X):
        raise ValueError(f"batch_size={batch_size} is larger than the data set ({len(X)} samples)")
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while True:
        for Xb, yb in minibatches(X, y, batch_size, generator=gen, drop_last=True):
            if done == steps:
                return
            yield Xb, yb
            done += 1


def _local_microbatches(Xb: Tensor, yb: Tensor, rank: int, world_size: int, accumulate: int):
    """This rank's shard of a global batch, cut into ``accumulate`` equal micro-batches."""
    idx = shard(len(Xb), rank, world_size)
    if len(idx) % accumulate:
        raise ValueError(f"each rank's share of the batch ({len(idx)} samples) must be divisible by "
                         f"accumulate={accumulate}")
    return list(zip(Xb[idx].chunk(accumulate), yb[idx].chunk(accumulate)))


def _finish(model: nn.Module, X: Tensor, y: Tensor, losses: list[float], world_size: int, seconds: float,
            **extra) -> dict:
    """What every training worker returns: plain CPU data."""
    step_losses = torch.tensor(losses, dtype=torch.float64, device=_device())
    if world_size > 1:  # the global batch's loss is the mean of the ranks' local mean losses
        dist.all_reduce(step_losses, op=dist.ReduceOp.SUM)
        step_losses /= world_size
    with torch.no_grad():
        final = F.cross_entropy(model(X), y).item()
    return {"params": [p.detach().cpu().clone() for p in model.parameters()],
            "losses": step_losses.cpu().tolist(), "final_loss": final, "seconds": seconds, **extra}


def collectives_demo(rank: int, world_size: int) -> dict:
    """The collectives on tiny tensors: rank ``r`` contributes ``r + 1``.

    Returns ``{"rank", "all_reduce_sum", "broadcast_from_0", "all_gather"}``: the sum
    :math:`P(P+1)/2` on every rank, rank 0's ``1.0`` on every rank, and ``[1.0, ..., P]``.
    """
    dev = _device()
    mine = torch.tensor([rank + 1.0], device=dev)
    total = mine.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    from_0 = mine.clone()
    dist.broadcast(from_0, src=0)
    gathered = [torch.zeros_like(mine) for _ in range(world_size)]
    dist.all_gather(gathered, mine)
    return {"rank": rank, "all_reduce_sum": total.item(), "broadcast_from_0": from_0.item(),
            "all_gather": [g.item() for g in gathered]}


def train_by_hand(rank: int, world_size: int, X: Tensor, y: Tensor, sizes: Sequence[int] = (64, 64, 64, 10),
                  lr: float = 0.1, steps: int = 10, batch_size: int = 64, seed: int = 0, accumulate: int = 1,
                  flat: bool = False) -> dict:
    r"""Data-parallel SGD by hand: shard each global batch, backward, :func:`average_gradients`, step.

    Every rank builds :func:`mlp(sizes) <mlp>` from the seed ``seed + rank`` (deliberately
    different) and then copies rank 0's weights (:func:`broadcast_parameters`), so all
    ranks start from ``mlp(sizes, seed)``. Step :math:`t` takes the :math:`t`-th global batch
    of ``batch_size`` samples of ``(X, y)`` (random order from the seed ``seed``, the same
    on every rank; see :func:`book.data.minibatches` with ``drop_last=True``), keeps this
    rank's :func:`shard`, and, over ``accumulate`` micro-batches, adds up the gradients of
    the micro-batch mean cross-entropies divided by ``accumulate``; then the gradients are
    averaged over the ranks and ``torch.optim.SGD(lr)`` steps. The result equals one process
    training on the whole global batch. With ``world_size == 1`` it runs without a process
    group: the single-process reference.

    Returns:
        ``{"params": [tensors], "losses": [the global batch's mean loss, per step],
        "final_loss": mean loss on all of (X, y), "seconds": training time,
        "bytes_per_step": bytes all-reduced per step, "calls_per_step": all-reduces per step}``.
    """
    _check_world(world_size)
    dev = _device()
    X, y = X.to(dev), y.to(dev)
    model = mlp(sizes, seed + rank, X.dtype, dev)
    if world_size > 1:
        broadcast_parameters(model, src=0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses, sent = [], 0
    n_grads = sum(1 for _ in model.parameters())
    _sync(dev)
    start = time.perf_counter()
    for Xb, yb in _global_batches(X, y, batch_size, steps, seed):
        opt.zero_grad()
        local = 0.0
        for Xm, ym in _local_microbatches(Xb, yb, rank, world_size, accumulate):
            loss = F.cross_entropy(model(Xm), ym) / accumulate
            loss.backward()  # gradients add up in p.grad over the micro-batches
            local += loss.item()
        if world_size > 1:
            sent = average_gradients(model, flat=flat)
        opt.step()
        losses.append(local)
    _sync(dev)
    seconds = time.perf_counter() - start
    calls = 0 if world_size == 1 else (1 if flat else n_grads)
    return _finish(model, X, y, losses, world_size, seconds, bytes_per_step=sent, calls_per_step=calls)


class _CommCounter:
    """State of :func:`_counting_allreduce_hook`: all-reduces and bytes since the last reset."""

    def __init__(self):
        self.process_group = None
        self.calls = 0
        self.bytes = 0


def _counting_allreduce_hook(state: _CommCounter, bucket):
    """DDP's default all-reduce (divide by P, then sum), counting each bucket's calls and bytes."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    buffer = bucket.buffer()
    state.calls += 1
    state.bytes += buffer.numel() * buffer.element_size()
    return allreduce_hook(state.process_group, bucket)


def _ddp(model: nn.Module, dev: torch.device, counter: _CommCounter | None = None):
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)  # broadcasts rank 0's weights
    if counter is not None:
        ddp.register_comm_hook(counter, _counting_allreduce_hook)
    return ddp


def train_ddp(rank: int, world_size: int, X: Tensor, y: Tensor, sizes: Sequence[int] = (64, 64, 64, 10),
              lr: float = 0.1, steps: int = 10, batch_size: int = 64, seed: int = 0, accumulate: int = 1,
              no_sync: bool = True) -> dict:
    r"""The same training as :func:`train_by_hand`, with ``DistributedDataParallel`` doing the averaging.

    DDP broadcasts rank 0's weights when it wraps the model and all-reduces the gradients
    during ``backward()``, bucket by bucket. With ``accumulate = k > 1`` the first
    :math:`k-1` micro-batches run under ``ddp.no_sync()``, so gradients add up locally and are
    all-reduced once per step, on the last backward; ``no_sync=False`` all-reduces after
    every micro-batch instead (the same parameters, :math:`k` times the communication).

    Returns:
        As :func:`train_by_hand`; ``bytes_per_step`` and ``calls_per_step`` are counted by a
        DDP communication hook (the all-reduced buckets per optimizer step, averaged over steps).
    """
    _check_world(world_size)
    if not dist.is_initialized():
        raise RuntimeError("train_ddp needs a process group: run it through book.distributed.launch or torchrun")
    dev = _device()
    X, y = X.to(dev), y.to(dev)
    counter = _CommCounter()
    model = _ddp(mlp(sizes, seed + rank, X.dtype, dev), dev, counter)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    _sync(dev)
    start = time.perf_counter()
    for Xb, yb in _global_batches(X, y, batch_size, steps, seed):
        opt.zero_grad()
        local = 0.0
        micro = _local_microbatches(Xb, yb, rank, world_size, accumulate)
        for i, (Xm, ym) in enumerate(micro):
            last = i == len(micro) - 1
            with (model.no_sync() if no_sync and not last else contextlib.nullcontext()):
                loss = F.cross_entropy(model(Xm), ym) / accumulate
                loss.backward()  # under no_sync: local accumulation only; else: all-reduce buckets
            local += loss.item()
        opt.step()
        losses.append(local)
    _sync(dev)
    seconds = time.perf_counter() - start
    steps_done = max(len(losses), 1)
    return _finish(model.module, X, y, losses, world_size, seconds,
                   bytes_per_step=counter.bytes // steps_done, calls_per_step=counter.calls / steps_done)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of all tensors in ``optimizer.state`` (Adam: ``exp_avg``, ``exp_avg_sq``, ``step``).

    For a ``ZeroRedundancyOptimizer`` pass its local optimizer, ``zero.optim``: the state this
    rank holds.
    """
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if isinstance(t, Tensor))


def train_zero(rank: int, world_size: int, X: Tensor, y: Tensor, sizes: Sequence[int] = (64, 64, 64, 10),
               lr: float = 1e-3, steps: int = 10, batch_size: int = 64, seed: int = 0) -> dict:
    r"""DDP with Adam whose state is sharded over the ranks: ``ZeroRedundancyOptimizer`` (ZeRO stage 1).

    Each rank keeps Adam's ``exp_avg`` and ``exp_avg_sq`` for its share of the parameters only,
    updates that share after DDP's gradient all-reduce, and broadcasts the updated share to
    the others. The parameters equal those of plain ``torch.optim.Adam(lr)`` in one process on
    the global batch; the optimizer's memory per rank falls to about :math:`1/P`. PyTorch's
    version shards whole tensors (the greedy partition assigns each parameter tensor to the
    least-loaded rank), so the split is as even as the tensor sizes allow.

    Returns:
        As :func:`train_ddp` (without the byte counts), plus ``"state_bytes"`` (the optimizer
        state this rank holds), ``"total_state_bytes"`` (summed over ranks: what one
        unsharded Adam would hold), ``"owned_numel"`` (parameters this rank updates) and
        ``"numel"`` (all parameters).
    """
    from torch.distributed.optim import ZeroRedundancyOptimizer

    _check_world(world_size)
    if not dist.is_initialized():
        raise RuntimeError("train_zero needs a process group: run it through book.distributed.launch or torchrun")
    dev = _device()
    X, y = X.to(dev), y.to(dev)
    model = _ddp(mlp(sizes, seed + rank, X.dtype, dev), dev)
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.Adam, lr=lr)
    losses = []
    _sync(dev)
    start = time.perf_counter()
    for Xb, yb in _global_batches(X, y, batch_size, steps, seed):
        opt.zero_grad()
        (Xm, ym), = _local_microbatches(Xb, yb, rank, world_size, 1)
        loss = F.cross_entropy(model(Xm), ym)
        loss.backward()
        opt.step()  # this rank's share with Adam, then a broadcast of every share
        losses.append(loss.item())
    _sync(dev)
    seconds = time.perf_counter() - start
    mine = optimizer_state_bytes(opt.optim)
    total = torch.tensor([mine], dtype=torch.float64, device=dev)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    owned = sum(p.numel() for group in opt.optim.param_groups for p in group["params"])
    return _finish(model.module, X, y, losses, world_size, seconds, state_bytes=mine,
                   total_state_bytes=int(total.item()), owned_numel=owned,
                   numel=sum(p.numel() for p in model.parameters()))


def time_allreduce(rank: int, world_size: int, numels: Sequence[int] = (1_000, 100_000, 1_000_000),
                   repeats: int = 5, dtype: torch.dtype = torch.float32) -> list[dict]:
    r"""Time one all-reduce of ``numel`` elements, for each size: the median of ``repeats`` runs.

    The ranks pass a barrier before each timed call (so no rank waits for a late peer inside
    the timing), after one untimed warm-up call per size. A ring all-reduce sends and receives
    :math:`2\frac{P-1}{P}` times the tensor's bytes per rank, so the time is roughly
    :math:`\alpha \log P + 2\frac{P-1}{P}\frac{\text{bytes}}{\beta}`: a latency for small tensors, a
    bandwidth :math:`\beta` for large ones.

    Returns:
        One ``{"numel", "bytes", "seconds", "min_seconds", "algbw", "busbw"}`` per size: the
        median seconds on this rank, the fastest call (what the machine can do when nothing
        else competes for it: other load only adds time), ``bytes / seconds`` and the bus
        bandwidth ``2 (P-1)/P * bytes / seconds`` (bytes per second; what nccl-tests report).
    """
    dev = _device()
    esize = torch.empty((), dtype=dtype).element_size()
    rows = []
    for n in numels:
        n = checks.integer(n, "numel", 1)
        t = torch.zeros(n, dtype=dtype, device=dev)
        dist.all_reduce(t)  # warm-up: connections, buffers
        times = []
        for _ in range(checks.integer(repeats, "repeats", 1)):
            dist.barrier()
            _sync(dev)
            start = time.perf_counter()
            dist.all_reduce(t)
            _sync(dev)
            times.append(time.perf_counter() - start)
        sec = statistics.median(times)
        nbytes = n * esize
        rows.append({"numel": n, "bytes": nbytes, "seconds": sec, "min_seconds": min(times), "algbw": nbytes / sec,
                     "busbw": 2 * (world_size - 1) / world_size * nbytes / sec})
    return rows


def compare_methods(rank: int, world_size: int, X: Tensor, y: Tensor, sizes: Sequence[int] = (64, 64, 64, 10),
                    lr: float = 0.1, steps: int = 5, batch_size: int = 64, seed: int = 0, accumulate: int = 2,
                    adam_lr: float = 1e-3, numels: Sequence[int] = (1_000, 100_000), repeats: int = 5) -> dict:
    """Every worker of this module in one launch (one process start-up instead of six).

    Returns ``{"shard": this rank's indices of a batch_size batch, "by_hand": ..., "by_hand_flat": ...,
    "ddp": ..., "ddp_accumulate": ... (no_sync over accumulate micro-batches), "ddp_accumulate_sync":
    ... (the same without no_sync), "zero": ... (Adam, adam_lr), "allreduce": ...}``, each the
    named worker's return value.
    """
    common = (X, y, sizes, lr, steps, batch_size, seed)
    return {
        "shard": shard(batch_size, rank, world_size),
        "by_hand": train_by_hand(rank, world_size, *common),
        "by_hand_flat": train_by_hand(rank, world_size, *common, 1, True),
        "ddp": train_ddp(rank, world_size, *common),
        "ddp_accumulate": train_ddp(rank, world_size, *common, accumulate, True),
        "ddp_accumulate_sync": train_ddp(rank, world_size, *common, accumulate, False),
        "zero": train_zero(rank, world_size, X, y, sizes, adam_lr, steps, batch_size, seed),
        "allreduce": time_allreduce(rank, world_size, numels, repeats),
    }


# ---------------------------------------------------------------------------
# Under torchrun


def main(argv: Sequence[str] | None = None) -> float:
    """Train the chapter's MLP on the digits with DDP under ``torchrun``; print the final loss on rank 0.

    ``torchrun --standalone --nproc-per-node=2 -m book.distributed [--steps 30 ...]`` starts the
    processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` for each; this joins the group with ``init_process_group(backend)`` (the
    ``env://`` rendezvous), rank ``LOCAL_RANK`` taking GPU ``LOCAL_RANK`` under nccl. On two
    machines with 8 GPUs each only the command changes::

        torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
            -m book.distributed

    Without torchrun (no ``WORLD_SIZE`` in the environment) it trains in one process. Rank 0
    prints the validation accuracy and ``final_loss=<mean loss on the whole training split>``;
    every rank returns that loss.
    """
    parser = argparse.ArgumentParser(prog="python -m book.distributed", description=main.__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size, split over the ranks")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default=None, help="gloo or nccl (default: nccl if CUDA, else gloo)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    args = parser.parse_args(argv)

    from book.data import digits

    torch.set_num_threads(args.threads)
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
        backend = args.backend or ("nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)  # env://, from the variables torchrun sets
    else:
        rank, world, backend = 0, 1, "none"
    try:
        data = digits(seed=0)  # the same split on every rank
        X, y = data.train
        sizes = (X.shape[1], args.hidden, args.hidden, 10)
        train = train_ddp if distributed else train_by_hand
        result = train(rank, world, X, y, sizes, args.lr, args.steps, args.batch_size, args.seed)
        if rank == 0:
            model = mlp(sizes)
            with torch.no_grad():
                for p, trained in zip(model.parameters(), result["params"]):
                    p.copy_(trained)
                accuracy = (model(data.val.X).argmax(1) == data.val.y).float().mean().item()
            print(f"rank 0 of {world} ({backend}): {args.steps} steps of SGD, batch {args.batch_size}, "
                  f"{result['seconds']:.2f} s; validation accuracy {accuracy:.3f}", flush=True)
            print(f"final_loss={result['final_loss']!r}", flush=True)
        return result["final_loss"]
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
