r"""Batch normalization and layer normalization, with hand-derived backward passes.

Batch normalization (Ioffe & Szegedy, 2015) standardizes every channel of a layer's input
with the mean and variance of the current minibatch, then applies a learned scale and
shift. For an input ``x`` of shape ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)`` the
statistics of channel :math:`c` are taken over the :math:`m = N \cdot L` (or
:math:`N \cdot H \cdot W`) values :math:`x_{i}` of that channel:

.. math::

    \mu = \frac1m \sum_i x_i, \qquad
    \sigma^2 = \frac1m \sum_i (x_i - \mu)^2, \qquad
    \hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad
    y_i = \gamma \hat x_i + \beta .

The backward pass of the training-mode transform, derived by hand in chapter 9, is

.. math::

    \frac{\partial L}{\partial x_i} = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}
        \Bigl( m\, g_i - \sum_j g_j - \hat x_i \sum_j g_j \hat x_j \Bigr), \qquad
    \frac{\partial L}{\partial \gamma} = \sum_i g_i \hat x_i, \qquad
    \frac{\partial L}{\partial \beta} = \sum_i g_i,

with :math:`g_i = \partial L / \partial y_i`. Layer normalization (Ba et al., 2016) applies
the same transform to each sample over its trailing feature dimensions instead of to each
channel over the batch.

What is here:

- :func:`batch_norm` (the argument order and semantics of ``torch.nn.functional.batch_norm``)
  and :func:`layer_norm` (of ``torch.nn.functional.layer_norm``), each built on a
  ``torch.autograd.Function`` with the backward above;
- the modules :class:`BatchNorm1d`, :class:`BatchNorm2d` and :class:`LayerNorm`, with
  ``torch.nn``'s constructor arguments, parameter and buffer names, so a ``state_dict``
  moves between them and ``torch.nn``'s in both directions.

Example:
    >>> import torch
    >>> bn = BatchNorm1d(3)
    >>> y = bn(torch.randn(16, 3) * 5 + 2)
    >>> bool(torch.allclose(y.mean(0), torch.zeros(3), atol=1e-5))
    True
    >>> bool(torch.allclose(y.var(0, unbiased=False), torch.ones(3), atol=1e-3))
    True

References:
    S. Ioffe and C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by
    Reducing Internal Covariate Shift", ICML 2015, arXiv:1502.03167.
    J. L. Ba, J. R. Kiros and G. E. Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
    S. Santurkar, D. Tsipras, A. Ilyas and A. Madry, "How Does Batch Normalization Help
    Optimization?", NeurIPS 2018, arXiv:1805.11604.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "batch_norm",
    "layer_norm",
    "BatchNormFunction",
    "LayerNormFunction",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
]


# ---------------------------------------------------------------------------
# Helpers


def _check_float(value, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"Invalid {name}: {value} (must be >= {minimum})")
    if maximum is not None and value > maximum:
        raise ValueError(f"Invalid {name}: {value} (must be <= {maximum})")
    return value


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    """A per-channel ``(C,)`` tensor viewed as ``(1, C, 1, ...)`` to broadcast against ``ndim`` dims."""
    return t.view((1, -1) + (1,) * (ndim - 2))


def _reduce_dims(x: Tensor) -> list[int]:
    """Every dimension but the channel dimension 1: the batch and the spatial ones."""
    return [0] + list(range(2, x.ndim))


def _check_channel_tensor(t: Tensor | None, name: str, x: Tensor) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor or None, got {type(t).__name__}")
    if t.shape != (x.shape[1],):
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} but the input of shape {tuple(x.shape)} has "
            f"{x.shape[1]} channels (dimension 1): expected shape ({x.shape[1]},)"
        )


# ---------------------------------------------------------------------------
# Batch norm: the training-mode transform as an autograd Function


class BatchNormFunction(torch.autograd.Function):
    r"""Training-mode batch normalization with the hand-derived backward pass.

    ``BatchNormFunction.apply(x, weight, bias, eps)`` normalizes ``x`` (``(N, C, *)``) per
    channel with the batch mean and the **biased** batch variance and returns
    ``(y, mean, var)``: the output and the per-channel statistics (``(C,)`` each, not
    differentiable; :func:`batch_norm` uses them to update the running statistics).
    ``weight`` and ``bias`` may be ``None``.

    Backward (:math:`m` values per channel, :math:`g = \partial L/\partial y`):

    .. math::

        dx = \frac{\gamma}{m\sigma}\Bigl(m\,g - \textstyle\sum g - \hat x \sum g\,\hat x\Bigr),\quad
        d\gamma = \textstyle\sum g\,\hat x,\quad d\beta = \textstyle\sum g,
        \qquad \sigma = \sqrt{\sigma_B^2 + \epsilon}.

    The backward is written with plain tensor operations on saved, detached values, so it
    is differentiable only once (``once_differentiable``): a second derivative raises
    instead of being silently wrong.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        dims = _reduce_dims(x)  # reduce over N and the spatial dims: (N, C, *) -> (C,)
        # Half precision is normalized in float32, as PyTorch does, then cast back.
        xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        mean = xc.mean(dim=dims)  # (C,)
        var = xc.var(dim=dims, unbiased=False)  # (C,) biased: divides by m
        invstd = torch.rsqrt(var + eps)  # (C,) 1 / sqrt(var + eps)
        xhat = (xc - _channel_view(mean, x.ndim)) * _channel_view(invstd, x.ndim)  # (N, C, *)
        y = xhat
        if weight is not None:
            y = y * _channel_view(weight, x.ndim)  # gamma * xhat
        if bias is not None:
            y = y + _channel_view(bias, x.ndim)  # + beta
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y.to(x.dtype), mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor, _grad_mean, _grad_var):
        xhat, invstd, weight = ctx.saved_tensors
        ndim = xhat.ndim
        dims = _reduce_dims(xhat)
        m = xhat.numel() // xhat.shape[1]  # values per channel
        g = grad_y.to(xhat.dtype)  # (N, C, *)
        sum_g = g.sum(dim=dims)  # (C,)  sum_i g_i          = d beta
        sum_gx = (g * xhat).sum(dim=dims)  # (C,)  sum_i g_i xhat_i  = d gamma
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            scale = invstd / m if weight is None else weight.to(xhat.dtype) * invstd / m  # (C,) gamma / (m sigma)
            grad_x = _channel_view(scale, ndim) * (
                m * g - _channel_view(sum_g, ndim) - xhat * _channel_view(sum_gx, ndim)
            )
            grad_x = grad_x.to(grad_y.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_w = sum_gx.to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = sum_g.to(grad_y.dtype)
        return grad_x, grad_w, grad_b, None


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""Batch normalization of ``x`` per channel (dimension 1), as ``torch.nn.functional.batch_norm``.

    In **training** mode (``training=True``) each channel is normalized with the statistics
    of the batch, taken over every dimension but the channel one (:math:`m` values):

    .. math::

        \mu_B = \tfrac1m \textstyle\sum_i x_i,\quad
        \sigma_B^2 = \tfrac1m \textstyle\sum_i (x_i-\mu_B)^2,\quad
        y = \gamma\,\frac{x-\mu_B}{\sqrt{\sigma_B^2+\epsilon}} + \beta,

    and, when ``running_mean`` / ``running_var`` are given, they are updated **in place**:

    .. math::

        \hat\mu \leftarrow (1-\alpha)\,\hat\mu + \alpha\,\mu_B, \qquad
        \hat\sigma^2 \leftarrow (1-\alpha)\,\hat\sigma^2 + \alpha\,\tfrac{m}{m-1}\,\sigma_B^2,

    with :math:`\alpha` = ``momentum``. The output uses the biased variance
    :math:`\sigma_B^2`; the running variance accumulates the **unbiased** one.
    The forward and backward of this mode are :class:`BatchNormFunction`.

    In **eval** mode (``training=False``) the running statistics replace the batch's, so
    the layer is a fixed per-channel affine map,
    :math:`y = \gamma (x-\hat\mu)/\sqrt{\hat\sigma^2+\epsilon} + \beta`, and each sample's
    output no longer depends on the rest of the batch (plain autograd differentiates it).

    Args:
        x: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)`` (any ``(N, C, *)``).
        running_mean, running_var: ``(C,)`` buffers or ``None`` (required in eval mode).
        weight, bias: :math:`\gamma` and :math:`\beta`, ``(C,)`` or ``None`` (no scale / shift).
        training: use (and record) batch statistics, or use the running ones.
        momentum: :math:`\alpha`, the weight of the **new** batch statistic in the
            running average.
        eps: :math:`\epsilon`, added to the variance for numerical safety.

    Returns:
        A tensor of the shape of ``x``.

    Raises:
        ValueError: for an input with fewer than 2 dimensions, a ``(C,)`` tensor that does
            not match the input's channel count, a training batch with a single value per
            channel (its variance is undefined), or eval mode without running statistics.

    Note:
        ``momentum`` is the weight of the new value, :math:`\hat\mu \leftarrow
        (1-\alpha)\hat\mu + \alpha\mu_B`: the opposite of the optimizer convention, where
        momentum 0.9 keeps 90 % of the old velocity. PyTorch's default 0.1 corresponds to a
        decay of 0.9 in the other convention (TensorFlow's ``BatchNormalization`` uses
        ``momentum=0.99`` in that sense). Ioffe & Szegedy estimate the inference variance
        with the unbiased :math:`\tfrac{m}{m-1}\sigma_B^2`, as PyTorch does; some
        implementations and textbooks store the biased batch variance instead.

    Example:
        >>> x = torch.randn(8, 3) * 2 + 1
        >>> rm, rv = torch.zeros(3), torch.ones(3)
        >>> y = batch_norm(x, rm, rv, training=True)
        >>> bool(torch.allclose(rm, 0.1 * x.mean(0)))
        True
        >>> bool(torch.allclose(rv, 0.9 + 0.1 * x.var(0)))   # unbiased variance
        True

    References:
        S. Ioffe and C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by
        Reducing Internal Covariate Shift", ICML 2015, arXiv:1502.03167.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects an input of shape (N, C, *), got shape {tuple(x.shape)}")
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        _check_channel_tensor(t, name, x)
    momentum = _check_float(momentum, "momentum", 0.0, 1.0)
    eps = _check_float(eps, "eps", 0.0)
    if training:
        m = x.numel() // x.shape[1]
        if m <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}"
            )
        y, mean, var = BatchNormFunction.apply(x, weight, bias, eps)
        with torch.no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            if running_var is not None:
                unbiased = var * (m / (m - 1))  # n/(n-1): the running variance is unbiased
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        return y
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm in eval mode (training=False) needs running_mean and running_var")
    # Eval mode: a fixed affine map per channel; autograd differentiates it.
    scale = torch.rsqrt(running_var + eps)  # (C,)
    if weight is not None:
        scale = scale * weight  # gamma / sqrt(var + eps)
    shift = -running_mean * scale  # (C,)
    if bias is not None:
        shift = shift + bias
    return x * _channel_view(scale.to(x.dtype), x.ndim) + _channel_view(shift.to(x.dtype), x.ndim)


# ---------------------------------------------------------------------------
# Layer norm


class LayerNormFunction(torch.autograd.Function):
    r"""Layer normalization over the trailing ``k`` dimensions, with a hand-derived backward.

    ``LayerNormFunction.apply(x, k, weight, bias, eps)``: each sample (each index of the
    leading dimensions) is normalized over its last ``k`` dimensions (:math:`m` values) with
    its own mean and biased variance. The backward is batch norm's, with the roles of the
    axes swapped: the sums run over a sample's features, :math:`\gamma` multiplies inside,

    .. math::

        dx = \frac{1}{m\sigma}\Bigl(m\,h - \textstyle\sum h - \hat x \sum h\,\hat x\Bigr),
        \quad h = \gamma \odot g, \quad
        d\gamma = \textstyle\sum_{\text{samples}} g\,\hat x,\quad
        d\beta = \textstyle\sum_{\text{samples}} g .
    """

    @staticmethod
    def forward(ctx, x: Tensor, k: int, weight: Tensor | None, bias: Tensor | None, eps: float):
        dims = tuple(range(x.ndim - k, x.ndim))  # the normalized (feature) dimensions
        xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        mean = xc.mean(dim=dims, keepdim=True)  # (..., 1, ..., 1)
        var = xc.var(dim=dims, unbiased=False, keepdim=True)  # biased, per sample
        invstd = torch.rsqrt(var + eps)
        xhat = (xc - mean) * invstd  # (..., *normalized_shape)
        y = xhat
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        ctx.k = k
        ctx.save_for_backward(xhat, invstd, weight)
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        xhat, invstd, weight = ctx.saved_tensors
        k = ctx.k
        dims = tuple(range(xhat.ndim - k, xhat.ndim))  # per-sample sums
        batch_dims = tuple(range(xhat.ndim - k))  # sums over samples, for gamma and beta
        m = 1
        for s in xhat.shape[xhat.ndim - k :]:
            m *= s
        g = grad_y.to(xhat.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            h = g if weight is None else g * weight.to(xhat.dtype)  # gradient w.r.t. xhat
            sum_h = h.sum(dim=dims, keepdim=True)
            sum_hx = (h * xhat).sum(dim=dims, keepdim=True)
            grad_x = (invstd / m) * (m * h - sum_h - xhat * sum_hx)
            grad_x = grad_x.to(grad_y.dtype)
        if weight is not None and ctx.needs_input_grad[2]:
            grad_w = (g * xhat).sum(dim=batch_dims).to(weight.dtype) if batch_dims else (g * xhat).to(weight.dtype)
        if ctx.needs_input_grad[3]:
            grad_b = g.sum(dim=batch_dims) if batch_dims else g.clone()
            grad_b = grad_b.to(grad_y.dtype)
        return grad_x, None, grad_w, grad_b, None


def _normalized_shape(normalized_shape) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        shape = (int(normalized_shape),)
    elif isinstance(normalized_shape, (tuple, list, torch.Size)):
        shape = tuple(normalized_shape)
    else:
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got {normalized_shape!r}")
    if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"normalized_shape must be a non-empty sequence of positive ints, got {normalized_shape!r}")
    return tuple(int(s) for s in shape)


def layer_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Layer normalization, as ``torch.nn.functional.layer_norm``.

    Each sample is normalized over its trailing dimensions ``normalized_shape`` (:math:`m`
    values :math:`x_j`) with its **own** statistics, the same in training and at inference:

    .. math::

        \mu = \tfrac1m \textstyle\sum_j x_j,\quad
        \sigma^2 = \tfrac1m \textstyle\sum_j (x_j-\mu)^2,\quad
        y = \gamma \odot \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}} + \beta,

    where :math:`\gamma` (``weight``) and :math:`\beta` (``bias``) have shape
    ``normalized_shape``. No sample's output depends on another sample, and there are no
    running statistics. The backward is hand-written (:class:`LayerNormFunction`).

    Raises:
        ValueError: if ``x``'s trailing dimensions are not ``normalized_shape`` or a
            weight/bias has another shape.

    Example:
        >>> x = torch.randn(4, 6) * 3 + 5
        >>> y = layer_norm(x, 6)
        >>> bool(torch.allclose(y.mean(1), torch.zeros(4), atol=1e-5))
        True

    References:
        J. L. Ba, J. R. Kiros and G. E. Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    shape = _normalized_shape(normalized_shape)
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != shape:
        raise ValueError(
            f"layer_norm: input of shape {tuple(x.shape)} does not end with normalized_shape {shape}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"layer_norm: {name} has shape {tuple(t.shape)}, expected normalized_shape {shape}")
    eps = _check_float(eps, "eps", 0.0)
    return LayerNormFunction.apply(x, k, weight, bias, eps)


# ---------------------------------------------------------------------------
# Modules


class _BatchNorm(torch.nn.Module):
    """Shared code of :class:`BatchNorm1d` and :class:`BatchNorm2d` (subclasses set ``_ndims``)."""

    _ndims: tuple[int, ...] = ()
    _dims_text: str = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = _check_float(eps, "eps", 0.0)
        self.momentum = None if momentum is None else _check_float(momentum, "momentum", 0.0, 1.0)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        factory = {"device": device, "dtype": dtype}
        if self.affine:
            self.weight = torch.nn.Parameter(torch.empty(num_features, **factory))  # gamma
            if bias:
                self.bias = torch.nn.Parameter(torch.empty(num_features, **factory))  # beta
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, :math:`\\gamma = 1` and :math:`\\beta = 0`."""
        self.reset_running_stats()
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a tensor, got {type(x).__name__}")
        if x.ndim not in self._ndims:
            raise ValueError(
                f"{type(self).__name__} expects {self._dims_text} input, got shape {tuple(x.shape)} ({x.ndim}D)"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) got an input of shape {tuple(x.shape)} with "
                f"{x.shape[1]} channels in dimension 1; expected {self.num_features}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average: the mean of all batch statistics so far
                factor = 1.0 / float(self.num_batches_tracked)
        # Batch statistics in training, and always when there are no running statistics.
        use_batch = self.training or not self.track_running_stats
        # Running statistics are updated in training only (and read in eval).
        track = not self.training or self.track_running_stats
        return batch_norm(
            x,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            training=use_batch,
            momentum=factor,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization over a ``(N, C)`` or ``(N, C, L)`` input, a drop-in for ``torch.nn.BatchNorm1d``.

    Training mode normalizes each of the ``C`` channels with the mean and biased variance
    of the batch (over ``N``, or ``N`` and ``L``), then scales by :math:`\gamma`
    (``weight``, initially 1) and shifts by :math:`\beta` (``bias``, initially 0); it
    updates the buffers ``running_mean`` and ``running_var`` (with the unbiased batch
    variance) and counts ``num_batches_tracked``. Eval mode (``model.eval()``) uses the
    running statistics instead, so a sample's output no longer depends on its batch.
    See :func:`batch_norm` for the formulas.

    Args:
        num_features: ``C``.
        eps: :math:`\epsilon` added to the variance.
        momentum: the weight of the new batch statistic in the running averages,
            :math:`\hat\mu \leftarrow (1-\alpha)\hat\mu + \alpha\mu_B`; ``None`` gives the
            cumulative average :math:`\alpha = 1/t` for the :math:`t`-th batch.
        affine: learn :math:`\gamma` and :math:`\beta` (else ``weight`` and ``bias`` are ``None``).
        track_running_stats: keep running statistics; with ``False`` the batch
            statistics are used in eval mode too and the buffers are ``None``.
        device, dtype: of the parameters and buffers.
        bias: (keyword-only) learn :math:`\beta`; ``False`` keeps only the scale
            (``affine=True`` needed), as in recent PyTorch versions.

    Parameter and buffer names equal ``torch.nn.BatchNorm1d``'s, so ``load_state_dict``
    works across the two classes.

    Example:
        >>> bn = BatchNorm1d(4)
        >>> x = torch.randn(32, 4) + 3
        >>> _ = bn(x)                            # training mode: batch statistics
        >>> bool(torch.allclose(bn.running_mean, 0.1 * x.mean(0)))   # 0.9 * 0 + 0.1 * batch mean
        True
        >>> int(bn.num_batches_tracked)
        1

    References:
        S. Ioffe and C. Szegedy, ICML 2015, arXiv:1502.03167; S. Santurkar et al.,
        "How Does Batch Normalization Help Optimization?", NeurIPS 2018, arXiv:1805.11604.
    """

    _ndims = (2, 3)
    _dims_text = "2D (N, C) or 3D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization over a ``(N, C, H, W)`` input, a drop-in for ``torch.nn.BatchNorm2d``.

    Each channel is normalized with statistics over the batch and both spatial dimensions
    (:math:`m = N H W` values), so every pixel of a feature map shares one
    :math:`(\mu, \sigma, \gamma, \beta)`: the convolutional form of Ioffe & Szegedy (2015).
    Arguments, buffers and modes as in :class:`BatchNorm1d`.

    Example:
        >>> bn = BatchNorm2d(3)
        >>> y = bn(torch.randn(4, 3, 5, 5) * 2 + 1)
        >>> bool(torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5))
        True
    """

    _ndims = (4,)
    _dims_text = "4D (N, C, H, W)"


class LayerNorm(torch.nn.Module):
    r"""Layer normalization over the trailing ``normalized_shape`` dimensions, a drop-in for ``torch.nn.LayerNorm``.

    .. math::

        y = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,

    with the mean :math:`\mu` and biased variance :math:`\sigma^2` of each sample over
    ``normalized_shape``: the same computation in training and eval mode, independent of
    the batch (it works with a batch of one). The backward is hand-written
    (:class:`LayerNormFunction`), checked against ``torch.nn.LayerNorm`` and gradcheck.

    Args:
        normalized_shape: an int or a tuple, the trailing dimensions to normalize over.
        eps: :math:`\epsilon`.
        elementwise_affine: learn :math:`\gamma` (``weight``, initially 1) and, if
            ``bias``, :math:`\beta` (``bias``, initially 0), of shape ``normalized_shape``.
        bias: learn :math:`\beta` (only with ``elementwise_affine``).
        device, dtype: of the parameters.

    Example:
        >>> ln = LayerNorm(5)
        >>> y = ln(torch.randn(1, 5) * 4 - 2)       # a batch of one is fine
        >>> bool(torch.allclose(y.mean(), torch.tensor(0.0), atol=1e-5))
        True

    References:
        J. L. Ba, J. R. Kiros and G. E. Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.eps = _check_float(eps, "eps", 0.0)
        self.elementwise_affine = bool(elementwise_affine)
        factory = {"device": device, "dtype": dtype}
        if self.elementwise_affine:
            self.weight = torch.nn.Parameter(torch.ones(self.normalized_shape, **factory))
            if bias:
                self.bias = torch.nn.Parameter(torch.zeros(self.normalized_shape, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """:math:`\\gamma = 1`, :math:`\\beta = 0`."""
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )
