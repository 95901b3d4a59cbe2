r"""Mixed precision: what float16 and bfloat16 can hold, and one training step under autocast.

A float with :math:`e` exponent bits and :math:`m` stored mantissa bits holds normal numbers
down to :math:`2^{2 - 2^{e-1}}` and subnormal ones, with fewer significant bits, down to
:math:`2^{2 - 2^{e-1} - m}`; below half of that a value rounds to zero. float16 (:math:`e = 5`,
:math:`m = 10`) stops at :math:`2^{-14}` (normal) and :math:`2^{-24}` (subnormal), and its
largest value is 65,504. bfloat16 (:math:`e = 8`, :math:`m = 7`) has float32's exponent range
and only 8 significant bits. :func:`float_format` lists these numbers for any float dtype,
:func:`cast_report` and :func:`underflow_fraction` count how many entries of a set of float32
tensors (gradients, say) a cast to the narrow format flushes to zero, makes subnormal or
overflows, and :func:`mixed_precision_step` takes one training step the way Micikevicius et
al. (2018) describe: the forward pass in the narrow format under ``torch.autocast``, float32
master weights, optimizer state and gradients, and, for float16, a loss scale
(``torch.amp.GradScaler``). :func:`autocast_dtypes` shows which dtype each stage of a step has.

    >>> import torch
    >>> underflow_fraction(torch.tensor([1e-9, 1e-3, 0.0]))            # 1e-9 < 2**-25: flushed
    0.5
    >>> underflow_fraction(torch.tensor([1e-9, 1e-3, 0.0]), scale=2.0**16)  # 1e-9 * 2**16: kept
    0.0

References:
    P. Micikevicius, S. Narang, J. Alben, G. Diamos, E. Elsen, D. Garcia, B. Ginsburg, M. Houston,
    O. Kuchaiev, G. Venkatesh, H. Wu, "Mixed precision training", ICLR 2018, arXiv:1710.03740.
    D. Kalamkar et al., "A study of BFLOAT16 for deep learning training", arXiv:1905.12322, 2019.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

import torch
from torch import Tensor

from book import checks

__all__ = [
    "FloatFormat",
    "float_format",
    "CastReport",
    "cast_report",
    "underflow_fraction",
    "supported_autocast_dtypes",
    "check_autocast",
    "StepResult",
    "mixed_precision_step",
    "autocast_dtypes",
]

_CANDIDATES = (torch.float16, torch.bfloat16)  # the dtypes torch.autocast knows


# ---------------------------------------------------------------------------
# Formats and casts


def _check_float_dtype(dtype, name: str = "dtype") -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype (e.g. torch.float16), got {dtype!r}")
    return dtype


@dataclass(frozen=True)
class FloatFormat:
    """The limits of a floating-point format (see :func:`float_format`).

    Attributes:
        dtype: the torch dtype.
        bits: its width in bits.
        exponent_bits, mantissa_bits: the stored exponent and fraction bits (the sign bit is
            the remaining one).
        smallest_subnormal: the smallest positive value, :math:`2^{1 - b - m}` for bias :math:`b`.
        smallest_normal: the smallest positive value with full precision, :math:`2^{1 - b}`.
        max: the largest finite value.
        eps: the gap between 1 and the next value, :math:`2^{-m}`.
        underflow_below: magnitudes at or below this (half the smallest subnormal) round to 0.
        overflow_from: magnitudes at or above this (the largest value plus half its spacing)
            round to infinity.
    """

    dtype: torch.dtype
    bits: int
    exponent_bits: int
    mantissa_bits: int
    smallest_subnormal: float
    smallest_normal: float
    max: float
    eps: float
    underflow_below: float
    overflow_from: float


def float_format(dtype: torch.dtype) -> FloatFormat:
    r"""The limits of ``dtype``: smallest subnormal and normal values, largest value, ``eps``.

    Rounding to nearest (ties to even) sends :math:`|x| \le` ``underflow_below`` to zero and
    :math:`|x| \ge` ``overflow_from`` to infinity; in between, :math:`|x|` below
    ``smallest_normal`` becomes subnormal (or rounds up to ``smallest_normal`` from within half
    a subnormal step of it).

    Example:
        >>> f = float_format(torch.float16)
        >>> f.smallest_subnormal == 2.0**-24, f.smallest_normal == 2.0**-14, f.max, f.overflow_from
        (True, True, 65504.0, 65520.0)
        >>> float_format(torch.bfloat16).smallest_normal == float_format(torch.float32).smallest_normal
        True
    """
    info = torch.finfo(_check_float_dtype(dtype))
    mantissa = round(-torch.log2(torch.tensor(info.eps, dtype=torch.float64)).item())
    exponent = info.bits - 1 - mantissa
    subnormal = info.smallest_normal * info.eps  # 2**(1 - bias - m)
    spacing_at_max = info.eps * 2.0 ** torch.log2(torch.tensor(info.max, dtype=torch.float64)).floor().item()
    return FloatFormat(dtype=dtype, bits=info.bits, exponent_bits=exponent, mantissa_bits=mantissa,
                       smallest_subnormal=subnormal, smallest_normal=info.smallest_normal, max=info.max,
                       eps=info.eps, underflow_below=subnormal / 2, overflow_from=info.max + spacing_at_max / 2)


class CastReport(NamedTuple):
    """What a cast did to the nonzero finite entries (see :func:`cast_report`).

    Attributes:
        nonzero: how many entries were nonzero and finite before the cast.
        underflow: the fraction of those that became zero.
        subnormal: the fraction that became subnormal (nonzero, below the smallest normal).
        overflow: the fraction that became infinite.
    """

    nonzero: int
    underflow: float
    subnormal: float
    overflow: float


def _tensors(tensors) -> list[Tensor]:
    """A tensor, or an iterable of tensors and ``None`` (a missing ``.grad``), as a list of tensors."""
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    elif isinstance(tensors, torch.nn.Module):
        raise TypeError("pass tensors, e.g. [p.grad for p in model.parameters()], not a module")
    out = []
    for t in tensors:
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"expected tensors, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"expected floating-point tensors, got {t.dtype}")
        out.append(t.detach())
    return out


@torch.no_grad()
def cast_report(tensors, dtype: torch.dtype = torch.float16, scale: float = 1.0) -> CastReport:
    r"""Cast :math:`s x` to ``dtype`` for every entry :math:`x` and count what was lost.

    Only the entries that are nonzero and finite before the cast count (zeros cannot be lost;
    an inf or NaN is already lost). Of these, the report gives the fractions that become
    exactly zero (*flushed*: :math:`|s x| \le 2^{-25}` for float16), subnormal
    (:math:`2^{-25} < |s x| \lesssim 2^{-14}`: kept, with fewer significant bits) and
    infinite (:math:`|s x| \ge 65{,}520`). The product :math:`s x` is formed in the tensors'
    own dtype, then rounded to ``dtype`` by PyTorch's cast (to nearest, ties to even).

    Args:
        tensors: a tensor, or an iterable of tensors (``None`` entries, such as a missing
            ``.grad``, are skipped).
        dtype: the narrow format (default ``torch.float16``).
        scale: :math:`s > 0`, the loss scale: gradients of :math:`s \cdot` loss are :math:`s`
            times the gradients (default 1, no scaling).

    Returns:
        A :class:`CastReport`; all fractions are 0 when no entry is nonzero.

    Raises:
        TypeError: for a non-float dtype or non-float tensors.
        ValueError: for a scale that is not a finite positive number.

    Example:
        >>> x = torch.tensor([2.0**-26, 2.0**-20, 1.0, 1e5, 0.0])
        >>> cast_report(x)
        CastReport(nonzero=4, underflow=0.25, subnormal=0.25, overflow=0.25)
    """
    dtype = _check_float_dtype(dtype)
    scale = checks.positive(scale, "scale")
    tiny = torch.finfo(dtype).smallest_normal
    nonzero = underflow = subnormal = overflow = 0
    for t in _tensors(tensors):
        counted = (t != 0) & torch.isfinite(t)
        cast = (t[counted] * scale).to(dtype)  # the entries that count, scaled and rounded
        nonzero += cast.numel()
        underflow += int((cast == 0).sum())
        subnormal += int(((cast != 0) & (cast.abs() < tiny)).sum())
        overflow += int(torch.isinf(cast).sum())
    if nonzero == 0:
        return CastReport(0, 0.0, 0.0, 0.0)
    return CastReport(nonzero, underflow / nonzero, subnormal / nonzero, overflow / nonzero)


def underflow_fraction(tensors, dtype: torch.dtype = torch.float16, scale: float = 1.0) -> float:
    r"""The fraction of the nonzero entries that become zero when multiplied by ``scale`` and cast to ``dtype``.

    These are the gradient entries a float16 backward pass would lose without loss scaling
    (``scale=1``), or with a loss scale :math:`s` (``scale=s``): for float16, the entries with
    :math:`|s x| \le 2^{-25}`, half the smallest subnormal :math:`2^{-24}`. The same as
    ``cast_report(tensors, dtype, scale).underflow``; see :func:`cast_report`.

    Example:
        >>> g = torch.tensor([1e-9, 1e-7, 1e-3, 0.0])   # 2**-25 is about 3.0e-8
        >>> underflow_fraction(g), underflow_fraction(g, scale=2.0**16), underflow_fraction(g, torch.bfloat16)
        (0.3333333333333333, 0.0, 0.0)
    """
    return cast_report(tensors, dtype, scale).underflow


# ---------------------------------------------------------------------------
# Autocast


@functools.lru_cache(maxsize=None)
def _autocast_works(device_type: str, dtype: torch.dtype) -> bool:
    """Whether a matrix product under ``torch.autocast(device_type, dtype)`` comes out in ``dtype`` here."""
    try:
        with warnings.catch_warnings():  # an unsupported dtype only warns and disables autocast
            warnings.simplefilter("ignore")
            with torch.autocast(device_type, dtype=dtype):
                if not torch.is_autocast_enabled(device_type):
                    return False
                a = torch.ones(2, 2, device=device_type)
                return (a @ a).dtype == dtype
    except (RuntimeError, ValueError, AssertionError, TypeError):  # no such device, or dtype refused
        return False


def supported_autocast_dtypes(device_type: str) -> list[torch.dtype]:
    """The dtypes ``torch.autocast`` runs in on ``device_type`` (``"cpu"``, ``"cuda"``, ``"mps"``) here.

    Found by trying: a matrix product under autocast must come out in the dtype. On the CPU
    (PyTorch 2.13) both float16 and bfloat16; on CUDA float16, and bfloat16 where the GPU
    supports it (compute capability 8.0 and later, natively); an empty list for a device
    this machine does not have.

    Example:
        >>> torch.bfloat16 in supported_autocast_dtypes("cpu")
        True
    """
    if not isinstance(device_type, str):
        raise TypeError(f"device_type must be a string such as 'cpu' or 'cuda', got {type(device_type).__name__}")
    return [dt for dt in _CANDIDATES if _autocast_works(device_type, dt)]


def check_autocast(device_type: str, dtype: torch.dtype) -> None:
    """Raise a ``ValueError`` naming what works unless autocast runs in ``dtype`` on ``device_type``.

    Example:
        >>> check_autocast("cpu", torch.float64)
        Traceback (most recent call last):
        ...
        ValueError: torch.autocast on 'cpu' does not run in torch.float64 here; it supports torch.float16, torch.bfloat16
    """
    dtype = _check_float_dtype(dtype)
    supported = supported_autocast_dtypes(device_type)
    if dtype not in supported:
        what = ", ".join(str(d) for d in supported) if supported else "nothing (no such device here)"
        raise ValueError(f"torch.autocast on {device_type!r} does not run in {dtype} here; it supports {what}")


def _device_type(X: Tensor, device_type: str | None) -> str:
    if not isinstance(X, Tensor):
        raise TypeError(f"X must be a tensor, got {type(X).__name__}")
    if device_type is None:
        return X.device.type
    if device_type != X.device.type:
        raise ValueError(f"device_type {device_type!r} does not match the data's device {X.device}: "
                         f"autocast on {device_type!r} would not touch the ops on {X.device.type!r}")
    return device_type


def _check_master_weights(model: torch.nn.Module) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    narrow = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
    if narrow:
        raise ValueError(f"mixed precision keeps float32 master weights, but the model has {', '.join(narrow)} "
                         f"parameters: call model.float() and let autocast cast inside the forward pass")
    return params


class StepResult(NamedTuple):
    """What :func:`mixed_precision_step` did.

    Attributes:
        loss: the batch's loss (unscaled, as a float).
        skipped: whether the optimizer step was skipped (only with a scaler: an inf or NaN
            gradient).
        scale: the scaler's loss scale after its update, or ``None`` without a scaler.
    """

    loss: float
    skipped: bool
    scale: float | None


def mixed_precision_step(
    model: torch.nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    X: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    dtype: torch.dtype = torch.bfloat16,
    scaler: torch.amp.GradScaler | None = None,
    device_type: str | None = None,
) -> StepResult:
    r"""One training step with the forward pass under ``torch.autocast(device_type, dtype)``.

    .. math::

        \begin{aligned}
        &\ell \leftarrow \text{loss}(f_{\mathrm{low}(w)}(X), y)
            && \text{autocast: matmuls in } \texttt{dtype}, \text{ the loss in float32} \\
        &g \leftarrow \nabla_w (s\,\ell) && \text{backward; } g \text{ in float32, like } w \\
        &\textbf{if } g \text{ is finite: } w \leftarrow \text{step}(w, g / s)
            \textbf{ else skip}; \ s \leftarrow \text{update}(s)
            && \text{with a scaler} \\
        &w \leftarrow \text{step}(w, g) && \text{without one } (s = 1)
        \end{aligned}

    The parameters :math:`w` stay float32 (the *master weights*): autocast casts them to
    ``dtype`` inside each eligible op (matrix products, convolutions), and the backward pass
    of that cast returns float32 gradients, so the optimizer's state is float32 too. Ops that
    need range or accumulate many terms (losses, ``softmax`` on CUDA, norms) run in float32.

    With a ``scaler`` (``torch.amp.GradScaler``, needed for float16, harmless for bfloat16)
    the loss is multiplied by the scale :math:`s` before the backward pass, so small gradients
    stay above float16's underflow threshold, and the gradients are divided by :math:`s`
    again (``scaler.unscale_``) before the step. If any gradient is then inf or NaN the step
    is skipped and :math:`s` is halved; after ``growth_interval`` (2,000) finite steps in a
    row it is doubled (the scaler's defaults). ``skipped`` is found by checking the
    unscaled gradients, which is the check the scaler makes.

    Args:
        model: the network, with float32 parameters on ``X``'s device.
        loss_fn: ``loss_fn(output, y)``, the mean loss of the batch.
        X, y: the batch.
        optimizer: any optimizer over the model's parameters (its state stays float32).
        dtype: the autocast dtype, ``torch.bfloat16`` (default) or ``torch.float16``.
        scaler: a ``torch.amp.GradScaler`` for ``X``'s device type, or ``None``.
        device_type: ``X.device.type`` by default (it must match).

    Returns:
        A :class:`StepResult` ``(loss, skipped, scale)``.

    Raises:
        ValueError: if autocast does not support ``dtype`` on this device (the message lists
            what does), if the parameters are not float32, or if ``device_type`` is not the
            data's.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        >>> opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        >>> X, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
        >>> first = mixed_precision_step(model, torch.nn.functional.cross_entropy, X, y, opt)
        >>> for _ in range(50):
        ...     last = mixed_precision_step(model, torch.nn.functional.cross_entropy, X, y, opt)
        >>> last.loss < first.loss, last.skipped, model[0].weight.dtype, opt.state[model[0].weight]["exp_avg"].dtype
        (True, False, torch.float32, torch.float32)

    References:
        Micikevicius et al., "Mixed precision training", ICLR 2018, arXiv:1710.03740 (master
        weights, loss scaling); PyTorch's "Automatic Mixed Precision" recipe and the
        ``torch.amp`` documentation (autocast op lists, ``GradScaler``).
    """
    device_type = _device_type(X, device_type)
    check_autocast(device_type, dtype)
    params = _check_master_weights(model)
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"scaler must be a torch.amp.GradScaler or None, got {type(scaler).__name__}")
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype):
        loss = loss_fn(model(X), y)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return StepResult(float(loss.detach()), False, None)
    scaler.scale(loss).backward()  # gradients of s * loss
    scaler.unscale_(optimizer)  # divide by s, in place; records whether any is inf or NaN
    skipped = not all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
    scaler.step(optimizer)  # skips optimizer.step() if the unscale found an inf or NaN
    scaler.update()  # halve s after a skip; double it after growth_interval good steps
    return StepResult(float(loss.detach()), skipped, float(scaler.get_scale()))


def autocast_dtypes(
    model: torch.nn.Module,
    X: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    dtype: torch.dtype = torch.bfloat16,
    device_type: str | None = None,
) -> dict[str, torch.dtype]:
    """The dtype of each stage of one forward and backward pass under ``torch.autocast``.

    Runs ``loss_fn(model(X), y).backward()`` under ``torch.autocast(device_type, dtype)``
    with hooks and reports, in order: the parameters, the input, the output of every leaf
    module (keys ``"output of 0 (Linear)"``, by the module's name in ``model``), the logits
    (the model's output), the loss, the gradient with respect to the logits, and the
    parameters' gradients. The model's existing ``.grad`` are restored afterwards.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> stages = autocast_dtypes(model, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]),
        ...                          torch.nn.functional.cross_entropy)
        >>> stages["output of 0 (Linear)"], stages["loss"], stages["parameter gradients"]
        (torch.bfloat16, torch.float32, torch.float32)
    """
    device_type = _device_type(X, device_type)
    check_autocast(device_type, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    outputs: dict[str, torch.dtype] = {}

    def recorder(key):
        def hook(module, inputs, output):
            if isinstance(output, Tensor):
                outputs[key] = output.dtype
        return hook

    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(recorder(f"output of {name or 'model'} ({type(m).__name__})"))
               for name, m in leaves]
    grad_at_logits: list[torch.dtype] = []
    try:
        for p in params:
            p.grad = None
        with torch.enable_grad():
            with torch.autocast(device_type, dtype=dtype):
                logits = model(X)
                loss = loss_fn(logits, y)
            if logits.requires_grad:
                logits.register_hook(lambda g: grad_at_logits.append(g.dtype))
            loss.backward()
        stages = {"parameters": _one_dtype({p.dtype for p in params}), "input": X.dtype, **outputs,
                  "logits": logits.dtype, "loss": loss.dtype}
        if grad_at_logits:
            stages["gradient at the logits"] = grad_at_logits[0]
        if any(p.grad is not None for p in params):
            stages["parameter gradients"] = _one_dtype({p.grad.dtype for p in params if p.grad is not None})
        return stages
    finally:
        for h in handles:
            h.remove()
        for p, g in zip(params, saved):
            p.grad = g


def _one_dtype(dtypes: set) -> torch.dtype | None:
    """The dtype all of a set share, or ``None`` if they are mixed (or none)."""
    return next(iter(dtypes)) if len(dtypes) == 1 else None
