r"""An opt-in one-pass path: the single-tensor kernels' math, compiled by ``torch.compile``.

Why. An optimizer step does almost no arithmetic per number and moves a lot of memory:
Adam reads :math:`\theta, g, m, v` and writes :math:`\theta, m, v` — 7 float32 arrays,
28 bytes per parameter — for about a dozen flops. Written as tensor operations (the
kernels of :mod:`book.optim.functional`, or torch's for-loop and foreach paths) each
line is one pass over memory, with fresh temporaries (the denominator) that the
operating system must map and zero. A compiler can fuse the lines into **one loop**
that loads each array once, keeps the intermediates in registers and stores the
results once: this is what ``torch.optim.Adam(fused=True)`` does in hand-written C++
and CUDA, and what ``torch.compile`` (TorchInductor: C++/OpenMP on a CPU, Triton on a
GPU) generates here from the same lines as the readable kernel.

How. Each function below has the signature of its twin in :mod:`book.optim.functional`
(:func:`adam`, :func:`adamw`, :func:`sgd`) and gives the same result within float32
rounding (tested in ``tests/test_optim_compiled.py``). It

1. increments the step counter and computes the step-dependent scalars (bias
   corrections) in Python, in double precision, exactly as the kernel does;
2. packs every scalar (learning rate, betas, ...) into one small float64 tensor, so
   that a new value — a new step, a schedule's learning rate — is new *data*, not a new
   program (``torch.compile`` specializes on Python floats and would recompile at every
   step);
3. calls a compiled step on a flat 1-D view of the tensors. The step is compiled once
   per option set (``amsgrad``, ``maximize``, weight decay on/off ...) with dynamic
   shapes, so one compilation serves every parameter size, dtype and device (the
   dtype and device are guarded by ``torch.compile`` itself and recompile once each).

When it pays. Compiling takes seconds, once per process and option set: on a shared
2-core CPU the first compilation in a process took 15–20 s (TorchInductor's start-up and
the C++ build included), each further variant (AdamW after Adam, say, or the chunked
variant below) 1–7 s; a warm on-disk cache (``TORCHINDUCTOR_CACHE_DIR``) cuts a rerun's to
about a second. In exchange a step over a large tensor becomes one pass over memory: on 16M
parameters in one tensor the compiled Adam step was about 6 times faster than torch's
for-loop (its default on a CPU) and between 0.86× and 1.2× of torch's hand-written fused
step across runs (``benchmarks/RESULTS.md`` has the numbers). So it pays in a run of many
steps on large parameters, not in a short experiment on a small model. Each compiled call
also costs about 0.1 ms (Python, TorchDynamo's guards and wrappers, the start of a parallel
loop): tensors smaller than :data:`MIN_NUMEL` elements (biases, norms) take the eager
kernel, or, from the optimizer classes (:func:`adam_multi`, :func:`sgd_multi`), the foreach
kernel in one call for all of them, and the classes pass large tensors :data:`CHUNK` at a
time to share a call. Still, on a model of many mid-sized tensors (16M parameters in ~200
tensors) the compiled path stays about 1.5× behind torch's fused one, whose per-tensor
overhead is smaller.

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
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import time
from typing import Callable

import torch
from torch import Tensor

from book.optim import functional as F

__all__ = ["adam", "adamw", "sgd", "adam_multi", "sgd_multi", "available", "compile_seconds", "MIN_NUMEL"]

#: Tensors with fewer elements than this take the eager kernel (a compiled call's fixed
#: overhead, and a parallel loop's start-up, would cost more than the pass it saves).
MIN_NUMEL = 2**15

#: Large tensors that share a step go through the compiled step this many at a time (one
#: call, one loop each), which divides the per-call overhead on models of many tensors.
CHUNK = 8

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
# The compiled bodies: the kernels' lines, with every scalar read from a tensor.


def _adam_body(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    scalars: Tensor,
    amsgrad: bool,
    maximize: bool,
    has_weight_decay: bool,
    decoupled_weight_decay: bool,
) -> None:
    # (n,) flat views; scalars = [lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt]
    lr, beta1, beta2, eps, weight_decay = scalars[0], scalars[1], scalars[2], scalars[3], scalars[4]
    step_size, bias_correction2_sqrt = scalars[5], scalars[6]  # eta / (1 - beta1^t), sqrt(1 - beta2^t)
    if maximize:
        grad = -grad
    if has_weight_decay:
        if decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)  # AdamW: theta <- (1 - eta lambda) theta
        else:
            grad = grad + weight_decay * param  # Adam: g <- g + lambda * theta
    exp_avg.lerp_(grad, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)  # v <- beta2 v + (1 - beta2) g^2
    if amsgrad:
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)  # vhat <- max(vhat, v)
        denom = max_exp_avg_sq.sqrt() / bias_correction2_sqrt + eps  # sqrt(vhat / (1 - beta2^t)) + eps
    else:
        denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps  # sqrt(v / (1 - beta2^t)) + eps
    param.sub_(step_size * exp_avg / denom)  # theta <- theta - eta mhat / (sqrt(vhat) + eps)


def _sgd_body(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor,
    scalars: Tensor,
    maximize: bool,
    has_weight_decay: bool,
    nesterov: bool,
) -> None:
    # (n,) flat views; scalars = [lr, momentum, dampening, weight_decay]
    lr, momentum, dampening, weight_decay = scalars[0], scalars[1], scalars[2], scalars[3]
    d_p = -grad if maximize else grad
    if has_weight_decay:
        d_p = d_p + weight_decay * param  # g <- g + lambda * theta
    momentum_buffer.mul_(momentum).add_((1 - dampening) * d_p)  # b <- mu b + (1 - tau) g
    if nesterov:
        d_p = d_p + momentum * momentum_buffer  # look ahead: g + mu b
    else:
        d_p = momentum_buffer  # heavy ball: step along b
    param.sub_(lr * d_p)  # theta <- theta - lr * d_p


def _adam_chunk_body(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None,
    scalars: Tensor,
    *options: bool,
) -> None:
    # CHUNK tensors in one compiled call (one fused loop each): the call's fixed cost is paid once
    for i in range(len(params)):
        max_exp_avg_sq = None if max_exp_avg_sqs is None else max_exp_avg_sqs[i]
        _adam_body(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], max_exp_avg_sq, scalars, *options)


def _sgd_chunk_body(
    params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor], scalars: Tensor, *options: bool
) -> None:
    # CHUNK tensors in one compiled call (one fused loop each)
    for i in range(len(params)):
        _sgd_body(params[i], grads[i], momentum_buffers[i], scalars, *options)


@functools.lru_cache(maxsize=None)
def _compiled(kind: str) -> Callable[..., None]:
    """The compiled step of one algorithm, built on first use.

    The option flags are ordinary arguments: ``torch.compile`` specializes on booleans,
    so each option set (and dtype, and device) compiles once and is cached under a
    guard. TorchDynamo allows 8 such variants per function by default
    (``torch._dynamo.config.recompile_limit``), far more than one run uses.
    """
    body = {"adam": _adam_body, "adam_chunk": _adam_chunk_body, "sgd": _sgd_body, "sgd_chunk": _sgd_chunk_body}[kind]
    return torch.compile(body, fullgraph=True, dynamic=True)


def _independent_sizes():
    """Compile a chunk without assuming that tensors of equal size now have equal sizes later.

    TorchDynamo gives inputs of equal size one symbol ("duck sizing") and guards on it, so a
    chunk of other sizes would recompile; a chunk's tensors are unrelated, so turn it off.
    """
    try:
        from torch.fx.experimental import _config

        return _config.patch(use_duck_shape=False)
    except (ImportError, AttributeError):  # pragma: no cover - other torch versions
        return contextlib.nullcontext()


def _call(kind: str, options: tuple, key_extra: tuple, tensors: tuple) -> None:
    fn = _compiled(kind)
    key = (kind, options) + key_extra
    context = _independent_sizes() if kind.endswith("_chunk") else contextlib.nullcontext()
    with context:
        if key in compile_seconds:
            fn(*tensors, *options)
            return
        start = time.perf_counter()
        fn(*tensors, *options)
    compile_seconds[key] = time.perf_counter() - start


_last_scalars: list = [None, None]  # (values and device, tensor): parameters of one step share it


def _scalars(values: tuple[float, ...], device: torch.device) -> Tensor:
    """The scalars as one float64 tensor on ``device``; reused while the values repeat (every
    parameter of a group at one step), so a step makes one small tensor, not one per parameter."""
    key = (values, device)
    if _last_scalars[0] != key:
        _last_scalars[:] = [key, torch.tensor(values, dtype=torch.float64, device=device)]
    return _last_scalars[1]


def _adam_scalars(t: float, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                  device: torch.device) -> Tensor:
    """Adam's scalars at step ``t``, the bias corrections in double precision as the kernel computes them."""
    beta1, beta2 = betas
    bias_correction1 = 1 - beta1**t
    bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    return _scalars((lr, beta1, beta2, eps, weight_decay, lr / bias_correction1, bias_correction2_sqrt), device)


def _flat(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.view(-1)


def _compilable(*tensors: Tensor | None) -> bool:
    """Large, contiguous, dense, real tensors: the ones a flat compiled loop handles."""
    first = tensors[0]
    if first.numel() < MIN_NUMEL or first.is_complex() or first.is_sparse:
        return False
    return all(t is None or t.is_contiguous() for t in tensors)


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
    r"""One Adam (AMSGrad, AdamW) step on one tensor in one compiled pass: :func:`book.optim.functional.adam`'s twin.

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
    if not _compilable(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        F.adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr=lr, betas=betas, eps=eps,
               weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
               decoupled_weight_decay=decoupled_weight_decay)
        return
    step += 1  # t <- t + 1 (as the kernel: the counter stays where the caller keeps it)
    scalars = _adam_scalars(step.item(), lr, betas, eps, weight_decay, param.device)
    options = (bool(amsgrad), bool(maximize), weight_decay != 0, bool(decoupled_weight_decay))
    tensors = (_flat(param), _flat(grad), _flat(exp_avg), _flat(exp_avg_sq),
               _flat(max_exp_avg_sq) if amsgrad else None, scalars)
    _call("adam", options, (param.dtype, param.device.type), tensors)


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
    r"""One SGD step on one tensor, compiled into one pass when it has momentum: :func:`book.optim.functional.sgd`'s twin.

    Only the steps after the first with ``momentum != 0`` are compiled: the first step
    creates the buffer (:math:`b_1 = g_1`), and plain SGD, :math:`\theta \leftarrow
    \theta - \eta g`, is a single pass already; both take the eager kernel, as do small
    tensors. Returns the momentum buffer, as the kernel does.
    """
    if momentum == 0 or momentum_buffer is None or not _compilable(param, grad, momentum_buffer):
        return F.sgd(param, grad, momentum_buffer, lr=lr, momentum=momentum, dampening=dampening,
                     weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
    scalars = _scalars((lr, momentum, dampening, weight_decay), param.device)
    options = (bool(maximize), weight_decay != 0, bool(nesterov))
    tensors = (_flat(param), _flat(grad), _flat(momentum_buffer), scalars)
    _call("sgd", options, (param.dtype, param.device.type), tensors)
    return momentum_buffer


# ---------------------------------------------------------------------------
# Lists of tensors (what the optimizer classes call): the large tensors one compiled pass
# each, the small ones (biases, norms: many tensors, few bytes) together through the
# foreach kernel, one call for all of them instead of one small call each.


def _split(params: list[Tensor], *lists: list | None) -> tuple[list[int], list[int]]:
    big, small = [], []
    for i, p in enumerate(params):
        tensors = [p] + [None if lst is None else lst[i] for lst in lists]
        (big if _compilable(*tensors) else small).append(i)
    return big, small


def _pick(lst: list | None, idx: list[int]) -> list | None:
    return None if lst is None else [lst[i] for i in idx]


@torch.no_grad()
def adam_multi(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None,
    steps: list[Tensor],
    **hyperparameters,
) -> None:
    """:func:`adam` on lists (the signature of :func:`book.optim.functional.adam_foreach`):
    each large tensor in one compiled pass (:data:`CHUNK` of them per call), the small ones
    through the foreach kernel."""
    big, small = _split(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
    hyper = {**dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                    decoupled_weight_decay=False), **hyperparameters}
    if hyper["amsgrad"] and max_exp_avg_sqs is None:
        raise ValueError("amsgrad=True needs max_exp_avg_sqs (zeros like the params), got None")
    options = (bool(hyper["amsgrad"]), bool(hyper["maximize"]), hyper["weight_decay"] != 0,
               bool(hyper["decoupled_weight_decay"]))
    groups: dict[tuple, list[int]] = {}  # tensors that share a step, dtype and device share the scalars
    for i in big:
        steps[i] += 1  # t <- t + 1
        groups.setdefault((steps[i].item(), params[i].dtype, params[i].device), []).append(i)
    maxs = max_exp_avg_sqs if hyper["amsgrad"] else None
    for (t, dtype, device), idx in groups.items():
        scalars = _adam_scalars(t, hyper["lr"], hyper["betas"], hyper["eps"], hyper["weight_decay"], device)
        full = len(idx) - len(idx) % CHUNK
        for k in range(0, full, CHUNK):  # CHUNK tensors per compiled call
            chunk = idx[k:k + CHUNK]
            lists = [[_flat(lst[i]) for i in chunk] for lst in (params, grads, exp_avgs, exp_avg_sqs)]
            lists.append(None if maxs is None else [_flat(maxs[i]) for i in chunk])
            _call("adam_chunk", options, (dtype, device.type), (*lists, scalars))
        for i in idx[full:]:  # the rest one by one
            tensors = (_flat(params[i]), _flat(grads[i]), _flat(exp_avgs[i]), _flat(exp_avg_sqs[i]),
                       None if maxs is None else _flat(maxs[i]), scalars)
            _call("adam", options, (dtype, device.type), tensors)
    if small:
        F.adam_foreach(_pick(params, small), _pick(grads, small), _pick(exp_avgs, small),
                       _pick(exp_avg_sqs, small), _pick(max_exp_avg_sqs, small), _pick(steps, small),
                       **hyperparameters)


@torch.no_grad()
def sgd_multi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    **hyperparameters,
) -> list[Tensor | None]:
    """:func:`sgd` on lists (the signature of :func:`book.optim.functional.sgd_foreach`): each
    large tensor with a buffer in one compiled pass (:data:`CHUNK` per call), the rest through
    the foreach kernel.
    Returns the momentum buffers."""
    out: list[Tensor | None] = list(momentum_buffers)
    ready = [b is not None and hyperparameters.get("momentum", 0) != 0 for b in momentum_buffers]
    big, _ = _split(params, grads, [b if ok else None for b, ok in zip(momentum_buffers, ready)])
    big = [i for i in big if ready[i]]
    rest = [i for i in range(len(params)) if i not in set(big)]
    hyper = {**dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
             **hyperparameters}
    options = (bool(hyper["maximize"]), hyper["weight_decay"] != 0, bool(hyper["nesterov"]))
    groups: dict[tuple, list[int]] = {}
    for i in big:
        groups.setdefault((params[i].dtype, params[i].device), []).append(i)
    for (dtype, device), idx in groups.items():
        scalars = _scalars((hyper["lr"], hyper["momentum"], hyper["dampening"], hyper["weight_decay"]), device)
        full = len(idx) - len(idx) % CHUNK
        for k in range(0, full, CHUNK):  # CHUNK tensors per compiled call
            chunk = idx[k:k + CHUNK]
            lists = [[_flat(lst[i]) for i in chunk] for lst in (params, grads, momentum_buffers)]
            _call("sgd_chunk", options, (dtype, device.type), (*lists, scalars))
        for i in idx[full:]:  # the rest one by one
            tensors = (_flat(params[i]), _flat(grads[i]), _flat(momentum_buffers[i]), scalars)
            _call("sgd", options, (dtype, device.type), tensors)
    if rest:
        bufs = F.sgd_foreach(_pick(params, rest), _pick(grads, rest), _pick(momentum_buffers, rest),
                             **hyperparameters)
        for i, buf in zip(rest, bufs):
            out[i] = buf
    return out
