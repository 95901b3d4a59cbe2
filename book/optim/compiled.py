r"""An opt-in one-pass path: the functional kernels themselves, compiled by ``torch.compile``, on flat buffers.

Why. An optimizer step does almost no arithmetic per number and moves a lot of memory:
Adam reads :math:`\theta, g, m, v` and writes :math:`\theta, m, v` — 7 float32 arrays,
28 bytes per parameter — for about a dozen flops. Written as tensor operations (the
kernels of :mod:`book.optim.functional`, or torch's for-loop and foreach paths) each
line is one pass over memory, with fresh temporaries (the denominator). A compiler can
fuse the lines into **one loop** that loads each array once, keeps the intermediates in
registers and stores the results once: what ``torch.optim.Adam(fused=True)`` does in
hand-written C++ and CUDA, and what ``torch.compile`` (TorchInductor: C++/OpenMP on a CPU,
Triton on a GPU) generates here.

The kernel written once. What is compiled is the readable kernel itself, not a copy of its
arithmetic: :func:`book.optim.functional.sgd`, and :func:`book.optim.functional.adam_update`
(the tensor part of :func:`book.optim.functional.adam`, after the step counter and the bias
corrections). The only thing added around them is where the scalars come from: the learning
rate and Adam's two bias-corrected factors travel in one small float64 tensor and are read
inside the compiled graph (``.item()``, captured as symbolic scalars), so a new step or a
schedule's new learning rate is new *data*, not a new program. The other hyperparameters
(betas, eps, momentum, dampening, weight decay) are constants of the program: a new value
compiles one more variant (a second or so with a warm cache), up to :data:`RECOMPILE_LIMIT`
variants per process.

One pass over every layout. A model is not one tensor but hundreds (weights, biases, norms).
With ``compiled=True`` the optimizer classes keep each group's parameters, their gradients and
their state as **views into one flat buffer** per dtype and device (:class:`FlatGroup`), as
fused and sharded optimizers do: ``p.data``, ``p.grad`` and ``state[p]["exp_avg"]`` are slices
of three long vectors, so a step is one compiled call over all of them — one loop, one start
of the thread pool, whatever the number of tensors. The semantics are those of the
single-tensor kernel: ``state[p]`` holds ``step``, ``exp_avg``, ... per parameter (views, so a
``state_dict`` is torch.optim's), ``zero_grad()`` sets the gradients to ``None`` (backward then
makes fresh ones, which the next step copies into the buffer: one more read and write of the
gradients per step; ``zero_grad(set_to_none=False)`` zeroes the views in place instead, and
backward accumulates straight into the buffer), a
step in which some parameter has no gradient, or after which the step counts differ, takes
the per-tensor path on the same views, and anything that replaced a view (``load_state_dict``,
``p.data = ...``, ``model.to(...)``, DistributedDataParallel's bucket views) is noticed at the
next step and copied back in. Parameters that share storage with other tensors (views into
somebody else's buffer, as ``ZeroRedundancyOptimizer(parameters_as_bucket_view=True)`` makes
them), non-contiguous, sparse or complex ones, and those without a gradient when the buffers are
built (frozen ones) are left where they are and stepped per tensor.

One call per step. ``torch.compile``'s wrapper runs TorchDynamo on every call (a frame hook and the
guards that pick a compiled variant), about 30 µs, four times what the built program then takes on a
small buffer. So the first call of each option set compiles through ``torch.compile`` and keeps the
program TorchInductor built (:func:`_capturing_backend`), and later calls run that program directly
(:class:`_Program`), after checking what the guards would have checked for these arguments; anything
unusual (a misaligned view, a one-element buffer) goes through ``torch.compile``'s own call.

When it pays. Compiling takes seconds, once per process and option set (8-20 s for the first
on a shared 2-core CPU, TorchInductor's start-up and the C++ build included; a warm on-disk
cache, ``TORCHINDUCTOR_CACHE_DIR``, cuts a rerun's to about a second). In exchange a step is
one pass over memory: ``benchmarks/RESULTS.md`` has the measurements against torch's fused
step. Single tensors smaller than :data:`MIN_NUMEL` take the eager kernel in the one-tensor
functions :func:`adam` and :func:`sgd` (a compiled call's fixed cost would exceed the pass).

    >>> import torch
    >>> from book.optim import compiled
    >>> p, g = torch.ones(4), torch.full((4,), 0.5)
    >>> m, v, t = torch.zeros(4), torch.zeros(4), torch.tensor(0.0)
    >>> compiled.adam(p, g, m, v, None, t, lr=0.1)   # doctest: +SKIP
    >>> p                                            # doctest: +SKIP
    tensor([0.9000, 0.9000, 0.9000, 0.9000])

References:
    J. Ansel et al., "PyTorch 2: faster machine learning through dynamic Python bytecode
    transformation and graph compilation", ASPLOS 2024 (TorchDynamo and TorchInductor).
    S. Rajbhandari et al., "ZeRO: memory optimizations toward training trillion parameter
    models", SC 2020 (flat, partitioned optimizer buffers).
"""

from __future__ import annotations

import collections
import functools
import shutil
import time
from typing import Callable

import torch
from torch import Tensor

from book.optim import functional as F
from book.optim._base import step_counter

__all__ = ["adam", "adamw", "sgd", "FlatGroup", "flat_step", "available", "compile_seconds", "MIN_NUMEL",
           "RECOMPILE_LIMIT"]

#: Single tensors with fewer elements than this take the eager kernel in :func:`adam` and
#: :func:`sgd` (a compiled call's fixed overhead would cost more than the pass it saves).
MIN_NUMEL = 2**15

#: Variants (option sets, constant hyperparameters, dtypes) the compiled steps may have in one process.
RECOMPILE_LIMIT = 64

#: Wall-clock seconds spent in each option set's first (compiling) call, by cache key.
compile_seconds: dict[tuple, float] = {}


def available() -> tuple[bool, str]:
    """Whether ``torch.compile`` can work here: ``(True, "")`` or ``(False, reason)``.

    Checks that TorchDynamo supports this Python and that a C++ compiler is on the
    ``PATH`` (Inductor's CPU backend needs one). A True answer is not a guarantee: the
    first compilation may still fail, and :func:`adam` then raises.
    """
    if not hasattr(torch, "compile"):
        return False, f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo as dynamo
    except Exception as err:  # pragma: no cover - broken installs
        return False, f"torch._dynamo does not import: {err}"
    if not dynamo.is_dynamo_supported():
        return False, "torch.compile does not support this Python version or platform"
    if shutil.which("g++") is None and shutil.which("c++") is None and shutil.which("clang++") is None:
        return False, "no C++ compiler (g++, c++ or clang++) on the PATH for Inductor's CPU backend"
    return True, ""


# ---------------------------------------------------------------------------
# What is compiled: the functional kernels, with the per-step scalars read from a tensor.


def _adam_body(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars, betas, eps, weight_decay,
               amsgrad, maximize, decoupled_weight_decay) -> None:
    # scalars (float64) = [lr, step_size, bias_correction2_sqrt]: data, so a new step or lr reuses the program
    lr, step_size, bias_correction2_sqrt = scalars[0].item(), scalars[1].item(), scalars[2].item()
    F.adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr=lr, betas=betas, eps=eps,
                  weight_decay=weight_decay, step_size=step_size, bias_correction2_sqrt=bias_correction2_sqrt,
                  amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)


def _sgd_body(param, grad, momentum_buffer, scalars, momentum, dampening, weight_decay, nesterov, maximize) -> None:
    # scalars (float64) = [lr]; momentum_buffer is an existing buffer, or None with momentum=0
    F.sgd(param, grad, momentum_buffer, lr=scalars[0].item(), momentum=momentum, dampening=dampening,
          weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)


_BODIES = {"adam": _adam_body, "sgd": _sgd_body}


@functools.lru_cache(maxsize=None)
def _compiled(kind: str) -> Callable[..., None]:
    """The compiled step of one algorithm, built on first use.

    With ``dynamic=True`` one program serves every length of buffer; ``torch.compile``
    specializes on the booleans and the constant hyperparameters, so each option set (and
    dtype, and device) compiles once and is cached under a guard (TorchDynamo allows 8
    variants per function by default, ``torch._dynamo.config.recompile_limit``). The backend
    is TorchInductor's own ``compile_fx``, called through :func:`_capturing_backend` so that
    the program it builds can later be called directly (:class:`_Program`).
    """
    return torch.compile(_BODIES[kind], backend=_capturing_backend, fullgraph=True, dynamic=True)


_captured: list = []  # (input sources, program) of the compilations made during the current tracing call


def _capturing_backend(gm: torch.fx.GraphModule, example_inputs: list):
    """TorchInductor (what ``backend="inductor"`` runs), keeping where the graph's inputs come from (read
    first: compiling drops TorchDynamo's notes on the graph) and the program it returns."""
    from torch._inductor.compile_fx import compile_fx

    sources = [_source_name(node) for node in gm.graph.nodes if node.op == "placeholder"]
    program = compile_fx(gm, example_inputs)
    _captured.append((sources, program))
    return program


def _source_name(node: torch.fx.Node) -> str:
    """What TorchDynamo says a graph input is, e.g. ``L['param']`` or ``L['param'].size()[0]`` ("" if unknown)."""
    source = getattr(node.meta.get("grapharg"), "source", None)
    name = getattr(source, "name", None)
    return (name() if callable(name) else name) or ""


class _Program:
    """A built program of one option set, called without TorchDynamo.

    ``torch.compile``'s wrapper spends about 30 µs per call in TorchDynamo (its frame hook
    and the guards that choose a cached variant) before the program runs, more than the
    program itself takes on a small buffer (7 µs on 16 elements). The key of :data:`_programs`
    already names what the guards check for our calls (the algorithm, the option set, the
    constant hyperparameters, the dtype and the device of the parameters); what is left is
    checked here, per call: every buffer 1-D, contiguous, 16-byte aligned, of the parameters'
    dtype and device and of the same length (from 2, as TorchDynamo compiles the lengths 0
    and 1 apart, to :math:`2^{31} - 1`), the scalars tensor as built by :func:`_scalars`, gradients off. Anything
    else goes through ``torch.compile``'s own call.

    ``inputs`` says where each input of the graph comes from, in the graph's order:
    ``(0, i)`` the body's argument ``i``, ``(1, i)`` that argument's length.
    """

    def __init__(self, program: Callable, inputs: list[tuple[int, int]], buffers: tuple[int, ...],
                 scalars: int) -> None:
        self.program, self.inputs, self.buffers, self.scalars = program, inputs, buffers, scalars

    @classmethod
    def from_sources(cls, kind: str, sources: list[str], program: Callable) -> "_Program | None":
        """Place the graph's inputs from their sources (as TorchDynamo names them); None if one is anything else."""
        import re

        names = _argument_names(kind)
        inputs = []
        for name in sources:
            whole = re.fullmatch(r"L\['(\w+)'\]", name)
            length = re.fullmatch(r"L\['(\w+)'\]\.size\(\)\[0\]", name)
            if whole and whole.group(1) in names:
                inputs.append((0, names.index(whole.group(1))))
            elif length and length.group(1) in names:
                inputs.append((1, names.index(length.group(1))))
            else:
                return None
        scalars = names.index("scalars")
        buffers = tuple(sorted({i for what, i in inputs if what == 0} - {scalars}))
        if not buffers or (0, scalars) not in inputs or not any(what == 1 for what, _ in inputs):
            return None  # e.g. a program built for one length (TorchDynamo specializes 0 and 1): not general
        return cls(program, inputs, buffers, scalars)

    def accepts(self, args: tuple) -> bool:
        """Whether ``args`` are what the program was built for (see the class)."""
        if torch.is_grad_enabled():
            return False
        first = args[self.buffers[0]]
        n, dtype, device = first.numel(), first.dtype, first.device
        if not 2 <= n < 2**31:  # the lengths TorchDynamo's guards and 32-bit indexing leave to the program
            return False
        for i in self.buffers:
            t = args[i]
            if (t.dim() != 1 or t.numel() != n or t.dtype != dtype or t.device != device or not t.is_contiguous()
                    or t.data_ptr() % 16):
                return False
        return args[self.scalars] is _last_scalars[1]

    def __call__(self, args: tuple) -> None:
        self.program(*[args[i] if what == 0 else args[i].shape[0] for what, i in self.inputs])


@functools.lru_cache(maxsize=None)
def _argument_names(kind: str) -> list[str]:
    import inspect

    return list(inspect.signature(_BODIES[kind]).parameters)


#: The built programs by cache key (see :func:`_call`), called directly once built.
_programs: dict[tuple, _Program] = {}


def _call(kind: str, key: tuple, args: tuple) -> None:
    from torch._dynamo.exc import TorchDynamoException

    program = _programs.get(key)
    if program is not None and program.accepts(args):
        program(args)  # the usual call: the built program, without TorchDynamo
        return
    fn = _compiled(kind)
    if key in compile_seconds:
        try:
            fn(*args)  # a cached program, through TorchDynamo's guards
            return
        except TorchDynamoException:  # a recompile (a new guard) refused without the flag below: trace again with it
            pass
    start = time.perf_counter()
    _captured.clear()
    _with_captured_scalars(kind, fn, args)
    compile_seconds.setdefault(key, time.perf_counter() - start)
    if len(_captured) == 1 and key not in _programs:  # one graph, built for this key by this call
        built = _Program.from_sources(kind, *_captured[0])
        if built is not None:
            _programs[key] = built
    _captured.clear()


def _with_captured_scalars(kind: str, fn: Callable[..., None], args: tuple) -> None:
    """Call ``fn`` while TorchDynamo turns ``tensor.item()`` into a symbolic scalar of the graph.

    Without ``capture_scalar_outputs`` an ``.item()`` is a graph break, which ``fullgraph=True``
    refuses; the flag matters only while tracing, so it is set around the calls that compile (a
    first call, or a retry after a refused recompile) and not around every step (setting a dynamo
    config costs microseconds, and it is global state). ``specialize_float`` makes the float
    hyperparameters constants of the program (they are part of its key), and the scalars tensor
    is marked static (its length is not a dimension of the problem): the graph's only symbolic
    input is then the buffers' length.
    """
    import torch._dynamo.config as dynamo_config

    torch._dynamo.mark_static(args[_argument_names(kind).index("scalars")])
    # each option set and constant (betas, eps, momentum, weight decay) is one variant of the same code: allow
    # more than TorchDynamo's default 8 of them, for ours only (the limit is read when a variant compiles)
    with dynamo_config.patch(capture_scalar_outputs=True, specialize_float=True,
                             recompile_limit=max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)), _vector_width():
        fn(*args)


def _vector_width():
    """On an x86 CPU, TorchInductor's C++ loops in 256-bit vectors (AVX2), the width of torch's own CPU kernels.

    TorchInductor picks the widest vectors the CPU has, 512 bits on an AVX-512 machine. ATen's
    ``_fused_adam_`` runs its AVX2 build there (a profile shows 256-bit instructions in its loop):
    ``REGISTER_DISPATCH`` leaves a kernel's AVX-512 slot empty unless the kernel opts in, since many
    kernels run no faster on 512-bit vectors and the CPU may lower its clock for them. An Adam step over
    cached data is bound by its square root and two divisions per element; on the machine where this was
    measured (``benchmarks/RESULTS.md``), the 512-bit loop took 6-7 % longer than the same loop in 256
    bits (1M parameters, one thread). A width set by the user (``torch._inductor.config.cpp.simdlen``) is
    kept, and other CPUs keep TorchInductor's choice.
    """
    import contextlib
    import platform

    import torch._inductor.config as inductor_config

    if inductor_config.cpp.simdlen is not None or platform.machine().lower() not in ("x86_64", "amd64"):
        return contextlib.nullcontext()
    return inductor_config.patch({"cpp.simdlen": 256})


_last_scalars: list = [None, None]  # (values, device) and their tensor: reused while they repeat (SGD's lr)


def _scalars(values: tuple[float, ...], device: torch.device) -> Tensor:
    """The per-step scalars as one float64 tensor, which the compiled program reads with ``.item()``.

    On a CPU they live on the CPU. On a GPU they must live on the parameters' device: TorchInductor
    (seen with torch 2.11 on CUDA) cannot launch a generated GPU kernel whose scalars are read from a
    CPU tensor ("CUDA driver error: invalid argument"). Reading them there costs the step one wait for
    the GPU (``.item()`` synchronises)."""
    device = torch.device("cpu") if device.type == "cpu" else device
    if _last_scalars[0] != (values, device):
        _last_scalars[:] = [(values, device), torch.tensor(values, dtype=torch.float64, device=device)]
    return _last_scalars[1]


def _adam_scalars(t: float, lr: float, betas: tuple[float, float], device: torch.device) -> Tensor:
    """Adam's per-step scalars at step ``t`` as one tensor, computed by the kernel's own
    :func:`book.optim.functional.adam_scalars`: ``[lr, step_size, bias_correction2_sqrt]``."""
    return _scalars((lr, *F.adam_scalars(t, lr, betas)), device)


def _adam_call(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, t, *, lr, betas, eps, weight_decay, amsgrad,
               maximize, decoupled_weight_decay) -> None:
    options = (bool(amsgrad), bool(maximize), bool(decoupled_weight_decay))
    betas, eps, weight_decay = (float(betas[0]), float(betas[1])), float(eps), float(weight_decay)
    key = ("adam", options, betas, eps, weight_decay, param.dtype, param.device)
    scalars = _adam_scalars(t, lr, betas, param.device)
    _call("adam", key, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None, scalars,
                        betas, eps, weight_decay, *options))


def _sgd_call(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay, nesterov, maximize) -> None:
    momentum, dampening, weight_decay = float(momentum), float(dampening), float(weight_decay)
    key = ("sgd", (bool(nesterov), bool(maximize)), momentum, dampening, weight_decay, param.dtype, param.device)
    _call("sgd", key, (param, grad, momentum_buffer, _scalars((lr,), param.device), momentum, dampening,
                       weight_decay, bool(nesterov), bool(maximize)))


def _compilable(*tensors: Tensor | None) -> bool:
    """Large, contiguous, dense, real tensors: the ones a flat compiled loop handles."""
    first = tensors[0]
    if first.numel() < MIN_NUMEL or first.is_complex() or first.is_sparse:
        return False
    return all(t is None or (t.is_contiguous() and not t.is_sparse) for t in tensors)


def _flat(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.view(-1)


# ---------------------------------------------------------------------------
# One tensor: the functional kernels' signatures.


@torch.no_grad()
def adam(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    step: Tensor,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> None:
    r"""One Adam (AMSGrad, AdamW) step on one tensor in one compiled pass: :func:`book.optim.functional.adam`, compiled.

    Same arguments, same update, same in-place results (within float32 rounding: the
    compiled loop may fuse a multiply and an add). Small or non-contiguous tensors
    (fewer than :data:`MIN_NUMEL` elements) take the eager kernel.

    Example:
        >>> p, m, v, t = torch.ones(2**16), torch.zeros(2**16), torch.zeros(2**16), torch.tensor(0.0)
        >>> adam(p, torch.full((2**16,), 0.5), m, v, None, t, lr=0.1)  # doctest: +SKIP
        >>> p[:2]                                                      # doctest: +SKIP
        tensor([0.9000, 0.9000])
    """
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("amsgrad=True needs a max_exp_avg_sq tensor (zeros like param), got None")
    hyper = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                 decoupled_weight_decay=decoupled_weight_decay)
    if not _compilable(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None):
        F.adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, **hyper)
        return
    step += 1  # t <- t + 1 (as the kernel: the counter stays where the caller keeps it)
    _adam_call(_flat(param), _flat(grad), _flat(exp_avg), _flat(exp_avg_sq), _flat(max_exp_avg_sq), step.item(),
               **hyper)


@torch.no_grad()
def adamw(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    step: Tensor,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
) -> None:
    """One AdamW step in one compiled pass: :func:`adam` with ``decoupled_weight_decay=True``."""
    adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr=lr, betas=betas, eps=eps,
         weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)


@torch.no_grad()
def sgd(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> Tensor | None:
    r"""One SGD step on one tensor, compiled into one pass: :func:`book.optim.functional.sgd`, compiled.

    The first step with ``momentum != 0`` creates the buffer (:math:`b_1 = g_1`) and takes
    the eager kernel, as do small tensors. Returns the momentum buffer, as the kernel does.
    """
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                 maximize=maximize)
    if (momentum != 0 and momentum_buffer is None) or not _compilable(param, grad, momentum_buffer):
        return F.sgd(param, grad, momentum_buffer, **hyper)
    _sgd_call(_flat(param), _flat(grad), _flat(momentum_buffer), **hyper)
    return momentum_buffer


# ---------------------------------------------------------------------------
# Many tensors: a group's parameters, gradients and state as views into flat buffers.


def _owns_storage(p: Tensor) -> bool:
    """``p`` is the whole of its storage: re-pointing it at a slice of a flat buffer aliases nothing else."""
    return p.storage_offset() == 0 and p.untyped_storage().nbytes() == p.numel() * p.element_size()


def _flattenable(p: Tensor) -> bool:
    # a parameter without a gradient at the group's first flat step (frozen) stays out of the buffers
    return (p.grad is not None and p.numel() > 0 and p.is_floating_point() and not p.is_sparse
            and not p.is_complex() and p.is_contiguous())


class FlatGroup:
    """Parameters of one dtype and device, their gradients and their state as views into flat buffers.

    ``param``, ``grad`` and ``buffers[key]`` (one per state entry, e.g. ``exp_avg``) are 1-D
    tensors of the parameters' total size; parameter ``i`` is the slice
    ``[offsets[i], offsets[i] + numels[i])`` of each. Building one re-points every ``p.data``
    at its slice (the values are copied in). ``steps`` holds the per-parameter step counters
    (``state[p]["step"]`` is ``steps[i]``, a 0-dim view), so incrementing all of them is one op.

    :meth:`prepare` makes the gradients and the optimizer state views again (copying in
    whatever replaced them) and says whether the flat step may run now.
    """

    def __init__(self, params: list[Tensor], keys: tuple[str, ...]) -> None:
        first = params[0]
        self.params = list(params)
        with_step = "step" in keys
        self.keys = tuple(key for key in keys if key != "step")
        self.numels = [p.numel() for p in params]
        total = sum(self.numels)
        self.offsets = [0]
        for n in self.numels[:-1]:
            self.offsets.append(self.offsets[-1] + n)
        make = functools.partial(torch.zeros, total, dtype=first.dtype, device=first.device)
        self.param, self.grad = make(), make()
        self.buffers = {key: make() for key in self.keys}

        def views(flat: Tensor) -> list[Tensor]:
            return [flat[o:o + n].view(p.shape) for o, n, p in zip(self.offsets, self.numels, params)]

        self.param_views, self.grad_views = views(self.param), views(self.grad)
        self.state_views = {key: views(flat) for key, flat in self.buffers.items()}
        with torch.no_grad():
            for p, view in zip(params, self.param_views):
                view.copy_(p)
                p.data = view  # the parameter now lives in the flat buffer
        self.ptrs = [p.data_ptr() for p in params]
        self.steps = torch.zeros(len(params), dtype=step_counter().dtype) if with_step else None
        self.step_views = [self.steps[i] for i in range(len(params))] if with_step else []
        self.t: float | None = None  # the common step count, when known to be common

    def intact(self) -> bool:
        """Every parameter still lives where this layout put it (nobody assigned ``p.data``)."""
        return all(p.data_ptr() == ptr for p, ptr in zip(self.params, self.ptrs))

    def prepare(self, state: dict, create: bool) -> bool:
        """Make every gradient and state entry a view of the buffers; whether the flat step may run.

        A parameter without state gets zeros (and step 0) when ``create``; otherwise (SGD, whose
        first buffer is the gradient itself) the answer is False and the caller steps these
        parameters per tensor, as it does when a parameter has no gradient or a sparse one, or
        when the step counters differ between parameters.
        """
        params, grad_views = self.params, self.grad_views
        stale = []
        for i, p in enumerate(params):
            g = p.grad
            if g is not grad_views[i]:
                if g is None or g.is_sparse:
                    return False
                stale.append(i)
        if stale:  # fresh gradients (after zero_grad, or a replaced .grad): copy them into the buffer
            torch._foreach_copy_([grad_views[i] for i in stale], [params[i].grad for i in stale])
            for i in stale:
                params[i].grad = grad_views[i]
        keys, state_views, step_views = self.keys, self.state_views, self.step_views
        for i, p in enumerate(params):
            st = state[p]
            if not st and (keys or step_views):
                if not create:
                    return False
                for key in keys:
                    st[key] = state_views[key][i].zero_()
                if step_views:
                    st["step"] = step_views[i].zero_()
                    self.t = None
            for key in keys:
                value, view = st[key], state_views[key][i]
                if value is not view:
                    view.copy_(value)  # e.g. after load_state_dict
                    st[key] = view
            if step_views:
                value, view = st["step"], step_views[i]
                if value is not view:
                    view.copy_(value)
                    st["step"] = view
                    self.t = None
        if step_views and self.t is None:
            low, high = torch.aminmax(self.steps)
            if low.item() != high.item():
                return False  # some parameters skipped steps: their bias corrections differ
            self.t = low.item()
        return True


def _groups_of(params: list[Tensor], ours: set[int]) -> tuple[dict, list[Tensor]]:
    """The flattenable parameters by (dtype, device), and the rest: a parameter that shares its memory with
    anything but a flat buffer of ours (``ours``: their storages' addresses) stays where it is."""
    by_kind: dict[tuple, list[Tensor]] = {}
    rest = []
    ptrs = [p.untyped_storage().data_ptr() for p in params]
    shared = {ptr for ptr, count in collections.Counter(ptrs).items() if count > 1} - ours
    for p, ptr in zip(params, ptrs):
        if _flattenable(p) and ptr not in shared and (ptr in ours or _owns_storage(p)):
            by_kind.setdefault((p.dtype, p.device), []).append(p)
        else:
            rest.append(p)
    return by_kind, rest


def flat_step(
    optimizer: torch.optim.Optimizer,
    group: dict,
    keys: tuple[str, ...],
    create: bool,
    kernel: Callable[[FlatGroup, dict], None],
) -> set[Tensor]:
    """Step what can be stepped flat in ``group``; return the parameters that were (the caller steps the rest).

    ``keys`` are the state entries kept in flat buffers (``"step"``: the step counters), ``create``
    whether a parameter's first step may create its state as zeros (Adam; SGD's first buffer is the
    gradient, so its first step goes per tensor), and ``kernel(layout, group)`` the compiled step on
    one :class:`FlatGroup`. The layouts live in ``optimizer._flat_groups`` (not in the groups, so
    not in the ``state_dict``), keyed by the group's position; they are rebuilt when the group's
    parameters or ``keys`` change, or a parameter was moved out of its buffer.
    """
    layouts = optimizer.__dict__.setdefault("_flat_groups", {})
    index = next(i for i, g in enumerate(optimizer.param_groups) if g is group)
    entry = layouts.get(index)
    params = group["params"]
    ids = [id(p) for p in params]
    if (entry is None or entry[0] is not params or entry[1] != ids or entry[2] != keys
            or not all(layout.intact() for layout in entry[3])):
        ours = {layout.param.untyped_storage().data_ptr() for layout in entry[3]} if entry else set()
        by_kind, _ = _groups_of(params, ours)
        entry = (params, ids, keys, [FlatGroup(ps, keys) for ps in by_kind.values()])
        layouts[index] = entry
    done: set[Tensor] = set()
    for layout in entry[3]:
        if layout.prepare(optimizer.state, create):
            kernel(layout, group)
            done.update(layout.params)
        else:
            layout.t = None  # they step per tensor now: their counters may part
    return done


def adam_flat_kernel(layout: FlatGroup, group: dict) -> None:
    """One Adam/AdamW step over a whole :class:`FlatGroup`: all step counters at once, then one compiled pass."""
    layout.steps.add_(1)  # t <- t + 1, for every parameter
    layout.t += 1
    amsgrad = group["amsgrad"]
    _adam_call(layout.param, layout.grad, layout.buffers["exp_avg"], layout.buffers["exp_avg_sq"],
               layout.buffers["max_exp_avg_sq"] if amsgrad else None, layout.t, lr=group["lr"],
               betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"], amsgrad=amsgrad,
               maximize=group["maximize"], decoupled_weight_decay=group["decoupled_weight_decay"])


def sgd_flat_kernel(layout: FlatGroup, group: dict) -> None:
    """One SGD step over a whole :class:`FlatGroup` (with its momentum buffers, if any) in one compiled pass."""
    momentum = group["momentum"]
    _sgd_call(layout.param, layout.grad, layout.buffers["momentum_buffer"] if momentum != 0 else None,
              lr=group["lr"], momentum=momentum, dampening=group["dampening"], weight_decay=group["weight_decay"],
              nesterov=group["nesterov"], maximize=group["maximize"])
