r"""Gradient clipping: rescale the whole gradient, or clamp each of its entries.

A step of gradient descent moves the weights by :math:`\eta g`. When a rare minibatch (or a
cliff in the loss surface, as in recurrent networks) makes :math:`\|g\|` huge, one step can
throw the weights far away. Clipping bounds the step:

- :func:`clip_grad_norm_` treats the gradients of all parameters as **one vector** and scales
  it down when its norm exceeds ``max_norm``, keeping its direction (Pascanu et al., 2013);
- :func:`clip_grad_value_` clamps every entry to :math:`[-c, c]`, which changes the direction;
- :func:`grad_norm` only measures: the same total norm, without touching the gradients.

Each equals its ``torch.nn.utils`` counterpart, and is written to be read::

    >>> import torch
    >>> w = torch.zeros(2, requires_grad=True)
    >>> w.grad = torch.tensor([3.0, 4.0])           # norm 5
    >>> clip_grad_norm_([w], max_norm=1.0)          # returns the norm *before* clipping
    tensor(5.)
    >>> w.grad                                      # now of norm 1, same direction
    tensor([0.6000, 0.8000])

All three can be given as a ``step_callbacks`` hook of :func:`book.train.fit`, which calls
hooks after ``loss.backward()`` and before ``optimizer.step()``::

    fit(model, opt, loss_fn, data, epochs=5,
        step_callbacks=[lambda step, model, loss: clip_grad_norm_(model.parameters(), 1.0)])

References:
    R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural
    networks", ICML 2013, arXiv:1211.5063.
"""

from __future__ import annotations

import math
import numbers
import types
import warnings

import torch
from torch import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "grad_norm"]

# Device types with multi-tensor (torch._foreach_*) kernels; the CPU has them too.
_FOREACH_DEVICES = ("cpu", "cuda", "xpu")


# ---------------------------------------------------------------------------
# Helpers


def _as_list(parameters) -> list[Tensor]:
    """A single tensor or an iterable of tensors, as a list (a generator is consumed once)."""
    if isinstance(parameters, Tensor):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = list(parameters)
    if is_generator and not parameters:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    return parameters


def _grads(parameters: list[Tensor]) -> list[Tensor]:
    """The gradients that exist: parameters whose ``.grad`` is ``None`` are skipped."""
    return [p.grad for p in parameters if p.grad is not None]


def _by_device_and_dtype(tensors: list[Tensor]) -> dict[tuple, list[Tensor]]:
    """Group tensors by (device, dtype), the groups in order of first appearance.

    A multi-tensor kernel needs its tensors on one device with one dtype.
    """
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def _use_foreach(foreach: bool | None, device: torch.device, tensors: list[Tensor]) -> bool:
    """Whether to use the ``torch._foreach_*`` kernels for this group (``None``: when possible)."""
    supported = device.type in _FOREACH_DEVICES
    if foreach is None:
        return supported and all(type(t) in (Tensor, torch.nn.Parameter) for t in tensors)
    if foreach and not supported:
        raise RuntimeError(f"foreach=True was passed, but can't use the foreach API on {device.type} tensors")
    return bool(foreach)


def _float(value, name: str) -> float:
    """A real number (a 0-dim tensor too) that is not NaN; ``inf`` is allowed."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or getattr(value, "ndim", None) == 0):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def _total_norm(grads: list[Tensor], norm_type: float, error_if_nonfinite: bool, foreach: bool | None) -> Tensor:
    r"""The p-norm of all ``grads`` viewed as one vector, as the p-norm of their p-norms."""
    if not grads:
        return torch.tensor(0.0)
    # ||(g_1, ..., g_k)||_p = ||(||g_1||_p, ..., ||g_k||_p)||_p : norm each tensor, then the norms.
    norms: list[Tensor] = []
    for (device, _), group in _by_device_and_dtype(grads).items():
        if _use_foreach(foreach, device, group):
            norms.extend(torch._foreach_norm(group, norm_type))  # one kernel for the whole group
        else:
            norms.extend(torch.linalg.vector_norm(g, norm_type) for g in group)
    first_device = grads[0].device
    total = torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]), norm_type)
    if error_if_nonfinite and bool(total.isnan() | total.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it "
            "cannot be clipped. To disable this error and scale the gradients by the non-finite norm "
            "anyway, set `error_if_nonfinite=False`"
        )
    return total


# ---------------------------------------------------------------------------
# Public functions


@torch.no_grad()
def grad_norm(parameters, norm_type: float = 2.0) -> Tensor:
    r"""The norm of all gradients together, as one vector; nothing is modified.

    .. math::
        \|g\|_p = \Big(\sum_{i} \|g_i\|_p^p\Big)^{1/p}, \qquad
        \|g\|_\infty = \max_i \|g_i\|_\infty ,

    where :math:`g_i` is the gradient of parameter :math:`i`. It is the value
    :func:`clip_grad_norm_` returns (and compares with ``max_norm``), computed the same way
    (``torch.nn.utils.get_total_norm`` of the gradients). Parameters without a gradient are
    skipped; with none at all the norm is ``tensor(0.)``.

    Args:
        parameters: a tensor or an iterable of tensors (``model.parameters()``).
        norm_type: :math:`p`; ``float("inf")`` (or ``"inf"``) for the largest absolute entry.

    Example:
        >>> a, b = torch.zeros(1, requires_grad=True), torch.zeros(2, requires_grad=True)
        >>> a.grad, b.grad = torch.tensor([2.0]), torch.tensor([-1.0, 2.0])
        >>> grad_norm([a, b]), grad_norm([a, b], norm_type=1), grad_norm([a, b], "inf")
        (tensor(3.), tensor(5.), tensor(2.))
    """
    return _total_norm(_grads(_as_list(parameters)), float(norm_type), False, None)


@torch.no_grad()
def clip_grad_norm_(
    parameters,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    r"""Scale all gradients together so that their total norm is at most ``max_norm``.

    With :math:`g` the gradients of all parameters viewed as one vector (see
    :func:`grad_norm`), :math:`c` = ``max_norm`` and :math:`p` = ``norm_type``:

    .. math::
        g \leftarrow g \cdot \min\!\Big(1, \frac{c}{\|g\|_p + 10^{-6}}\Big).

    The direction of :math:`g` is kept; only its length shrinks, and only when it exceeds
    :math:`c` (the factor is clamped at 1, never scaling up). The gradients are modified in
    place; the norm **before** clipping is returned, which makes this also the way to log
    gradient norms during training.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` to clip; parameters
            without a gradient are skipped.
        max_norm: :math:`c`, the largest allowed total norm (``inf``: never clip, only measure).
        norm_type: :math:`p` (1, 2, ``inf`` or any other order).
        error_if_nonfinite: raise ``RuntimeError`` if the total norm is NaN or infinite
            (instead of multiplying every gradient by 0 or NaN).
        foreach: use the multi-tensor kernels (``torch._foreach_norm``, ``torch._foreach_mul_``);
            ``None`` uses them where the device has them.

    Returns:
        The total norm :math:`\|g\|_p` before clipping, a 0-dim tensor on the first gradient's
        device (``tensor(0.)`` when there are no gradients).

    Note:
        Equal to ``torch.nn.utils.clip_grad_norm_``, including the :math:`10^{-6}` in the
        denominator (so a gradient of norm exactly :math:`c` is multiplied by
        :math:`c/(c + 10^{-6})`, a hair below 1) and the total norm computed as the norm of
        the per-tensor norms. Results are bit for bit the same when all gradients share one
        device and dtype; with several, torch visits the groups in a hash-map order and this
        function in order of appearance, so the total norm can differ in its last bit.
        Unlike torch, a NaN ``max_norm`` raises ``ValueError``; a negative ``max_norm`` also
        raises it (torch would silently flip the sign of every gradient).

    References:
        R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural
        networks", ICML 2013, arXiv:1211.5063.

    Example:
        >>> w = torch.zeros(3, requires_grad=True)
        >>> w.grad = torch.tensor([0.0, 30.0, 40.0])
        >>> clip_grad_norm_(w, max_norm=5.0)
        tensor(50.)
        >>> w.grad                  # times 5 / (50 + 1e-6): 3 and 4 up to a relative 2e-8
        tensor([0.0000, 3.0000, 4.0000])
    """
    max_norm = _float(max_norm, "max_norm")
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    parameters = _as_list(parameters)
    grads = _grads(parameters)
    total = _total_norm(grads, float(norm_type), error_if_nonfinite, foreach)
    if not grads:
        return total
    # The factor stays a tensor (no `if factor < 1:`), which would wait for the GPU to finish.
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for (device, _), group in _by_device_and_dtype(grads).items():
        f = factor.to(device)
        if _use_foreach(foreach, device, group):
            torch._foreach_mul_(group, f)
        else:
            for g in group:
                g.mul_(f)
    return total


@torch.no_grad()
def clip_grad_value_(parameters, clip_value: float, foreach: bool | None = None) -> None:
    r"""Clamp every gradient entry to :math:`[-c, c]`, in place.

    .. math::
        g_j \leftarrow \max(-c, \min(c, g_j)) \quad \text{for every entry } j,

    with :math:`c` = ``clip_value``. Unlike :func:`clip_grad_norm_` this changes the
    direction of the gradient (large entries are cut, small ones kept), and the bound does
    not depend on the number of parameters.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` to clamp; parameters
            without a gradient are skipped.
        clip_value: :math:`c \ge 0`.
        foreach: use the multi-tensor kernels (``torch._foreach_clamp_min_`` and
            ``_max_``); ``None`` uses them where the device has them.

    Note:
        Equal to ``torch.nn.utils.clip_grad_value_`` (NaN entries stay NaN). Unlike torch, a
        negative or NaN ``clip_value`` raises ``ValueError`` (torch would set every entry to
        ``clip_value``).

    Example:
        >>> w = torch.zeros(3, requires_grad=True)
        >>> w.grad = torch.tensor([-5.0, 0.5, 2.0])
        >>> clip_grad_value_(w, clip_value=1.0)
        >>> w.grad
        tensor([-1.0000,  0.5000,  1.0000])
    """
    clip_value = _float(clip_value, "clip_value")
    if clip_value < 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value}")
    grads = _grads(_as_list(parameters))
    for (device, _), group in _by_device_and_dtype(grads).items():
        if _use_foreach(foreach, device, group):
            torch._foreach_clamp_min_(group, -clip_value)
            torch._foreach_clamp_max_(group, clip_value)
        else:
            for g in group:
                g.clamp_(min=-clip_value, max=clip_value)
