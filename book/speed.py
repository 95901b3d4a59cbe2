r"""How fast an optimizer step can be: bytes per parameter, memory bandwidth, interleaved timing.

An optimizer step does a handful of arithmetic operations per parameter and reads and writes
several arrays as large as the model, so its speed is set by the memory, not by the arithmetic.
This module measures the pieces of that argument; the appendix page "How fast can an optimizer
step be?" (``chapters/speed.ipynb``) and ``benchmarks/bench_optim.py`` both call it.

- :func:`trace_step` and :func:`bytes_per_parameter` record which parameter-sized arrays one
  ``step()`` really reads and writes (under a ``TorchDispatchMode``, so it is the step's own
  code that is counted, not a table typed by hand);
- :class:`StreamTriad` and :func:`triad_bandwidth` measure the memory bandwidth with McCalpin's
  STREAM triad :math:`a = b + s\,c` (12 bytes per float32 element);
- :func:`time_variants` times several step functions interleaved in a shuffled order (a burst
  of load from other jobs hits them alike) and returns median and best seconds per step;
- :func:`shapes` and :func:`make_params` build the parameters: one flat tensor, or blocks of
  transformer-like tensors that add up to the same count.

It is a measuring layer: it imports torch, :mod:`book.utils` and :mod:`book.optim`, and no
kernel module imports it.

References: J. D. McCalpin, "Memory bandwidth and machine balance in current high performance
computers", IEEE TCCA Newsletter, 1995. S. Williams, A. Waterman, D. Patterson, "Roofline: an
insightful visual performance model for multicore architectures", CACM 52(4), 2009.
"""

from __future__ import annotations

import inspect
import math
import random
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["sync", "StreamTriad", "triad_bandwidth", "matmul_flops", "StepTrace", "trace_step", "bytes_per_parameter",
           "optimizer_class", "shapes", "block_shapes", "make_params", "time_variants", "paired_ratio", "time_step"]

TRIAD_BYTES_PER_ELEMENT = 3 * 4
"""The triad ``a = b + s c`` on float32 reads b and c and writes a: 12 bytes per element (STREAM's count)."""


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ---------------------------------------------------------------------------
# Memory bandwidth


class StreamTriad:
    r"""The memory bandwidth in GB/s of :math:`a = b + s\,c` on float32 arrays of ``numel`` elements.

    ``torch.add(b, c, alpha=s, out=a)`` does the triad in one multi-threaded pass. It is
    charged 3 arrays × 4 bytes per element (read b, c; write a), STREAM's convention, which
    does not count the cache line a store first reads (write-allocate): the hardware moves
    up to 4/3 as much. 2**25 elements make 128 MiB per array, far beyond any cache. On a
    shared machine one measurement can land in a burst of load, so the benchmark samples
    the triad again between its cells and keeps the best: ``best`` is the fastest pass seen.

    Example:
        >>> triad = StreamTriad(2**16)
        >>> triad.sample(2) > 0
        True
    """

    def __init__(self, numel: int = 2**25, device: torch.device | str = torch.device("cpu")) -> None:
        self.numel, self.device = numel, torch.device(device)
        self.a = torch.empty(numel, device=self.device)
        self.b, self.c = torch.rand(numel, device=self.device), torch.rand(numel, device=self.device)
        torch.add(self.b, self.c, alpha=0.5, out=self.a)  # touch every page first
        self.best = 0.0
        self.samples = 0

    def sample(self, repeats: int = 3) -> float:
        for _ in range(repeats):
            sync(self.device)
            start = time.perf_counter()
            torch.add(self.b, self.c, alpha=0.5, out=self.a)
            sync(self.device)
            self.best = max(self.best, TRIAD_BYTES_PER_ELEMENT * self.numel / (time.perf_counter() - start) / 1e9)
            self.samples += 1
        return self.best


def triad_bandwidth(numel: int = 2**24, device: torch.device | str = "cpu", repeats: int = 10) -> float:
    r"""The best of ``repeats`` STREAM triads :math:`a = b + s\,c` on ``numel`` float32 elements, in GB/s.

    Bandwidth is bytes moved over time, :math:`12 n / t` (read :math:`b, c`, write :math:`a`),
    McCalpin's convention. Keep ``numel`` large enough that the three arrays do not fit in the
    caches (2**24 elements are 192 MiB in all), or the number is the cache's bandwidth.

    Example:
        >>> triad_bandwidth(2**16, "cpu", repeats=2) > 0
        True
    """
    if numel < 1 or repeats < 1:
        raise ValueError(f"numel and repeats must be positive, got numel={numel}, repeats={repeats}")
    return StreamTriad(numel, device).sample(repeats)


def matmul_flops(n: int = 1024, device: torch.device | str = "cpu", repeats: int = 5) -> float:
    """The best of ``repeats`` float32 products of two ``n x n`` matrices, in GFLOP/s (``2 n^3`` flops each).

    A large matrix product reuses each number it loads about ``n`` times, so it runs near the
    machine's arithmetic peak: the roof of a roofline, as the triad is its memory slope.

    Example:
        >>> matmul_flops(64, "cpu", repeats=2) > 0
        True
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be positive, got n={n}, repeats={repeats}")
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    out = torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


# ---------------------------------------------------------------------------
# What a step touches


def optimizer_class(optimizer: str | type) -> type:
    """``"adam"``, ``"Adam"`` or a class -> the class (names are looked up in :mod:`book.optim`)."""
    if isinstance(optimizer, type):
        return optimizer
    import book.optim as bo

    names = {n.lower(): n for n in dir(bo) if isinstance(getattr(bo, n), type)}
    if not isinstance(optimizer, str) or optimizer.lower() not in names:
        raise ValueError(f"Unknown optimizer {optimizer!r}: give a class or a name from book.optim "
                         f"(e.g. 'SGD', 'Adam')")
    return getattr(bo, names[optimizer.lower()])


# Operations that write their first argument without reading it.
_WRITE_ONLY = {"copy_", "fill_", "zero_"}


class StepTrace:
    """What one optimizer step read and wrote: the parameter-sized arrays by name, and the operations.

    Attributes:
        read: names of the arrays read (``"param"``, ``"grad"`` and state keys such as ``"exp_avg"``).
        written: names of the arrays written.
        ops: the ATen operations that produced a parameter-sized result, in order (each is one
            pass over the parameters: one elementwise operation per parameter).
        element_size: bytes per element of the parameter's dtype.
        passes: parameter-sized arrays read or written, summed over the operations, temporaries
            included: what the traced code moves when each operation is its own pass over memory.
    """

    def __init__(self, read: list[str], written: list[str], ops: list[str], element_size: int,
                 passes: int = 0) -> None:
        self.read, self.written, self.ops, self.element_size = read, written, ops, element_size
        self.passes = passes

    @property
    def arrays(self) -> int:
        """Arrays moved through memory: each array read counts once, each array written once."""
        return len(self.read) + len(self.written)

    @property
    def bytes_per_parameter(self) -> int:
        """The least any implementation must move: each array read once and written once."""
        return self.arrays * self.element_size

    @property
    def unfused_bytes_per_parameter(self) -> int:
        """What the traced code moves with one pass over memory per operation (temporaries included)."""
        return self.passes * self.element_size

    def __repr__(self) -> str:
        return f"StepTrace(read={self.read}, written={self.written}, {len(self.ops)} ops)"


class _Recorder(TorchDispatchMode):
    """Records which of the named storages each ATen call reads and writes."""

    def __init__(self, named: dict[int, str], numel: int) -> None:
        super().__init__()
        self.named, self.numel = named, numel
        self.read: list[str] = []
        self.written: list[str] = []
        self.ops: list[str] = []
        self.passes = 0

    def _name(self, t) -> str | None:
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            return self.named.get(t.untyped_storage().data_ptr())
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = func.__name__.split(".")[0]
        seen: set[tuple[int, bool]] = set()  # addcmul_(g, g) reads g once
        for index, argument in enumerate(func._schema.arguments):
            value = args[index] if index < len(args) and not argument.kwarg_only else kwargs.get(argument.name)
            for t in tree_flatten(value)[0]:
                if not isinstance(t, torch.Tensor) or t.numel() != self.numel:
                    continue
                writes = argument.alias_info is not None and argument.alias_info.is_write
                reads = not writes or not (op in _WRITE_ONLY or argument.name == "out")
                ptr = t.untyped_storage().data_ptr()
                for direction, happens in ((False, reads), (True, writes)):
                    if happens and (ptr, direction) not in seen:
                        seen.add((ptr, direction))
                        self.passes += 1
                name = self._name(t)
                if name is None:
                    continue
                if reads and name not in self.read:
                    self.read.append(name)
                if writes and name not in self.written:
                    self.written.append(name)
        out = func(*args, **kwargs)
        results = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.numel() == self.numel]
        if results:
            self.ops.append(op)
        # a fresh result (not an alias of an argument, as an in-place op returns) is one more array written
        fresh = [r for r in func._schema.returns if r.alias_info is None]
        self.passes += min(len(fresh), len(results))
        return out


def trace_step(optimizer: str | type, numel: int = 64, dtype: torch.dtype = torch.float32, warmup: int = 2,
               **hyper) -> StepTrace:
    """Run a step of ``optimizer`` on one parameter and record the parameter-sized arrays it reads and writes.

    The optimizer steps ``warmup`` times first (the first step creates the state, and SGD's
    first momentum step copies the gradient), then one more step runs under a
    ``TorchDispatchMode`` that sees every ATen operation. An array counts as read when an
    operation takes it as an input (an in-place update reads what it overwrites; ``copy_``,
    ``fill_``, ``zero_`` and ``out=`` do not), and as written when an operation mutates it.
    Temporaries are not counted: a fused kernel keeps them in registers, which is the least
    any implementation must move. A class that takes ``foreach`` is run with
    ``foreach=False``, the single-tensor kernel, the readable ground truth.

    Args:
        optimizer: a ``torch.optim.Optimizer`` subclass, or a name from :mod:`book.optim`.
        numel: elements of the parameter (more than 1: 0-d counters such as ``step`` are not arrays).
        dtype: the parameter's dtype (sets :attr:`StepTrace.element_size`).
        warmup: steps before the traced one.
        **hyper: the optimizer's arguments (``lr``, ``momentum``, ``amsgrad``, ...).

    Example:
        >>> trace_step("Adam", lr=1e-3)
        StepTrace(read=['param', 'grad', 'exp_avg', 'exp_avg_sq'], written=['param', 'exp_avg', 'exp_avg_sq'], 7 ops)
    """
    if numel < 2:
        raise ValueError(f"numel must be at least 2 (scalars are not arrays), got {numel}")
    cls = optimizer_class(optimizer)
    gen = torch.Generator().manual_seed(0)  # fixed inputs: the trace does not depend on their values
    param = torch.randn(numel, generator=gen, dtype=dtype).requires_grad_(True)
    param.grad = torch.randn(numel, generator=gen, dtype=dtype)
    try:
        accepts_foreach = "foreach" in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        accepts_foreach = False
    opt = cls([param], **hyper, **({"foreach": False} if accepts_foreach and "foreach" not in hyper else {}))
    for _ in range(warmup):
        opt.step()
    named = {param.untyped_storage().data_ptr(): "param", param.grad.untyped_storage().data_ptr(): "grad"}
    for key, value in opt.state[param].items():
        if isinstance(value, torch.Tensor) and value.numel() > 1:
            named[value.untyped_storage().data_ptr()] = key
    recorder = _Recorder(named, numel)
    with recorder:
        opt.step()
    order = list(named.values())  # param, grad, then the state in the optimizer's order
    return StepTrace(sorted(recorder.read, key=order.index), sorted(recorder.written, key=order.index), recorder.ops,
                     param.element_size(), recorder.passes)


def bytes_per_parameter(optimizer: str | type, dtype: torch.dtype = torch.float32, **hyper) -> int:
    """Bytes one step must move per parameter: (arrays read + arrays written) × the element size.

    Counted from what the step really touches (:func:`trace_step`). Adam in float32 reads
    θ, g, m, v and writes θ, m, v: 7 arrays, 28 bytes. This is a floor: an implementation
    that stores temporaries in memory between operations (a for-loop of separate kernels)
    moves more.

    Example:
        >>> bytes_per_parameter("Adam"), bytes_per_parameter("SGD", lr=0.1), bytes_per_parameter("SGD", lr=0.1, momentum=0.9)
        (28, 12, 20)
    """
    return trace_step(optimizer, dtype=dtype, **hyper).bytes_per_parameter


# ---------------------------------------------------------------------------
# Parameters


def block_shapes(numel: int, blocks: int) -> list[tuple[int, ...]]:
    """``blocks`` transformer-like blocks of 4 tensors (two (4d, d) matrices, a (4d,) bias and a
    (d,) norm weight), with the largest d that fits, plus one vector for the remainder: ``numel``
    parameters in about ``4 * blocks + 1`` tensors.

    Example:
        >>> len(block_shapes(2**20, 50)), sum(math.prod(s) for s in block_shapes(2**20, 50))
        (201, 1048576)
    """
    if blocks < 1:
        raise ValueError(f"blocks must be positive, got {blocks}")
    # largest d with blocks * (8 d^2 + 5 d) <= numel
    d = max(1, int((math.sqrt(25 * blocks**2 + 32 * blocks * numel) - 5 * blocks) / (16 * blocks)))
    while d > 1 and blocks * (8 * d * d + 5 * d) > numel:
        d -= 1
    out: list[tuple[int, ...]] = []
    for _ in range(blocks):
        out += [(4 * d, d), (d, 4 * d), (4 * d,), (d,)]
    rest = numel - sum(math.prod(s) for s in out)
    if rest < 0:
        raise ValueError(f"{blocks} blocks need at least {13 * blocks} parameters, got {numel}")
    if rest > 0:
        out.append((rest,))
    return out


def shapes(numel: int, layout: str) -> list[tuple[int, ...]]:
    """``flat``: one tensor. ``mixed``: 50 transformer-like blocks of 4 tensors (two (4d, d)
    matrices, a (4d,) bias and a (d,) norm weight) plus a remainder vector: ~200 tensors."""
    if layout == "flat":
        return [(numel,)]
    if layout != "mixed":
        raise ValueError(f"Unknown layout {layout!r}: use 'flat' or 'mixed'")
    if numel < 650:
        raise ValueError(f"A mixed layout needs at least 650 parameters, got {numel}")
    return block_shapes(numel, 50)


def make_params(numel: int | list[tuple[int, ...]], layout: str = "flat", seed: int = 0,
                device: torch.device | str = torch.device("cpu")) -> list[torch.Tensor]:
    """Parameters with gradients: ``shapes(numel, layout)``, or the given list of shapes.

    Values are drawn on the CPU from ``seed`` (the same numbers on every device), then moved.
    """
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in (numel if isinstance(numel, list) else shapes(numel, layout)):
        p = torch.randn(shape, generator=gen).to(device)
        p.grad = (torch.randn(shape, generator=gen) * 1e-2).to(device)
        params.append(p)
    return params


# ---------------------------------------------------------------------------
# Timing


def _stepper(variant) -> Callable[[], object]:
    return variant.step if hasattr(variant, "step") else variant


def time_variants(optimizers: dict, repeats: int, target_s: float = 0.02, warmup: int = 2,
                  device: torch.device | str = torch.device("cpu"), seed: int = 0,
                  samples: dict | None = None) -> tuple[dict, dict]:
    """Median and best seconds per step of each variant, measured interleaved, and first-step times.

    ``optimizers`` maps a name to an optimizer (its ``step()`` is timed) or to a function of no
    arguments. Each runs ``warmup`` steps first (the first creates the state, or compiles). A
    sample is as many steps as take about ``target_s`` (1 to 50), and in each of the
    ``repeats`` rounds every variant takes one sample, in an order shuffled by ``seed``: a
    burst of load from other programs hits all variants alike, so the ratio of two medians is
    steadier than either time. On CUDA the clock is read after the device has finished.

    Args:
        samples: a dict to fill with every sample, ``{name: [seconds per step, one per round]}``:
            the ``i``-th samples of two variants were taken in the same round, moments apart,
            so their ratio is free of slow drifts in the machine's load (see :func:`paired_ratio`).

    Returns:
        ``({name: (median_s, best_s)}, {name: first_step_s})``.

    Example:
        >>> import torch
        >>> p = torch.zeros(10, requires_grad=True); p.grad = torch.ones(10)
        >>> times, first = time_variants({"sgd": torch.optim.SGD([p], lr=0.1)}, repeats=3)
        >>> times["sgd"][0] > 0
        True
    """
    device = torch.device(device)
    first = {}
    for variant, opt in optimizers.items():
        step = _stepper(opt)
        sync(device)
        start = time.perf_counter()
        step()  # creates the state (and compiles)
        sync(device)
        first[variant] = time.perf_counter() - start
        for _ in range(warmup - 1):
            step()
    # steps per sample: enough for ~target_s, estimated from one more step
    inner = {}
    for variant, opt in optimizers.items():
        step = _stepper(opt)
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        inner[variant] = max(1, min(50, round(target_s / max(time.perf_counter() - start, 1e-6))))
    samples = {v: [] for v in optimizers} if samples is None else samples
    samples.update({v: [] for v in optimizers})
    order = list(optimizers)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for variant in order:
            step, n = _stepper(optimizers[variant]), inner[variant]
            sync(device)
            start = time.perf_counter()
            for _ in range(n):
                step()
            sync(device)
            samples[variant].append((time.perf_counter() - start) / n)
    return {v: (statistics.median(s), min(s)) for v, s in samples.items()}, first


def paired_ratio(samples: dict, a: str, b: str) -> float:
    """The median over rounds of ``a``'s time over ``b``'s in the same round (``samples`` from :func:`time_variants`).

    Example:
        >>> paired_ratio({"loop": [2.0, 9.0, 4.0], "flat": [1.0, 3.0, 2.0]}, "loop", "flat")
        2.0
    """
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def time_step(step, repeats: int = 5, target_s: float = 0.01, device: torch.device | str = "cpu") -> float:
    """Median seconds of one call of ``step`` (an optimizer or a function of no arguments).

    Example:
        >>> time_step(lambda: None, repeats=3) >= 0
        True
    """
    return time_variants({"step": step}, repeats, target_s=target_s, device=device)[0]["step"][0]
