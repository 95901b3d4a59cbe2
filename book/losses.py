r"""Loss functions as negative log-likelihoods, written to be numerically stable.

Every loss here takes ``(input, target, ..., reduction="mean")`` like its
``torch.nn.functional`` counterpart and returns the same values and, through autograd, the
same gradients::

    >>> import torch
    >>> from book import losses
    >>> z = torch.tensor([[2.0, 0.5, -1.0]])
    >>> y = torch.tensor([0])
    >>> losses.cross_entropy(z, y)
    tensor(0.2413)

| loss | model of the target | gradient with respect to the input |
|---|---|---|
| :func:`mse` | Gaussian :math:`y \sim \mathcal N(\hat y, \sigma^2)` | :math:`2(\hat y - y)` |
| :func:`mae` | Laplace :math:`y \sim \operatorname{Laplace}(\hat y, b)` | :math:`\operatorname{sign}(\hat y - y)` |
| :func:`huber` | Gaussian centre, Laplace tails | :math:`\operatorname{clip}(\hat y - y, -\delta, \delta)` |
| :func:`binary_cross_entropy_with_logits` | Bernoulli, :math:`p = \sigma(z)` | :math:`\sigma(z) - y` |
| :func:`cross_entropy` | categorical, :math:`p = \operatorname{softmax}(z)` | :math:`\operatorname{softmax}(z) - y` |
| :func:`hinge` | (no likelihood: a margin) | :math:`1/C` per violated margin, :math:`-k/C` on the true class |
| :func:`focal` | Bernoulli, re-weighted | see its docstring |

(the gradients are per sample, before the ``1/N`` of ``reduction="mean"``).

The ``naive_*`` functions compute the same formulas the textbook way, with ``exp`` and
``log`` of probabilities. They overflow for large logits and exist only to show why the
stable forms are needed; do not train with them.
"""

from __future__ import annotations


import torch
from torch import Tensor

from book import checks

__all__ = [
    "mse",
    "mae",
    "huber",
    "binary_cross_entropy_with_logits",
    "log_softmax",
    "cross_entropy",
    "hinge",
    "focal",
    "expected_calibration_error",
    "naive_softmax",
    "naive_softmax_cross_entropy",
    "naive_binary_cross_entropy_with_logits",
    "REDUCTIONS",
]

REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------
# Validation and reduction


def _check_reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")
    return reduction


def _check_tensor(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_floating(x: Tensor, name: str) -> Tensor:
    _check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _check_same_shape(input: Tensor, target: Tensor, what: str = "target") -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"input and {what} must have the same shape, got input {tuple(input.shape)} and {what} "
            f"{tuple(target.shape)} (no broadcasting: a (N, 1) output against a (N,) target is a classic bug)"
        )


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _regression_args(input, target, reduction) -> str:
    _check_floating(input, "input")
    _check_floating(target, "target")
    _check_same_shape(input, target)
    return _check_reduction(reduction)


# ---------------------------------------------------------------------------
# Regression


def mse(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""Mean squared error, the negative log-likelihood of a Gaussian (``F.mse_loss``).

    .. math::
        \ell(\hat y, y) = (\hat y - y)^2, \qquad
        \frac{\partial \ell}{\partial \hat y} = 2(\hat y - y).

    If :math:`y \sim \mathcal N(\hat y, \sigma^2)` with a fixed :math:`\sigma`, then
    :math:`-\log p(y \mid \hat y) = \tfrac{1}{2\sigma^2}(\hat y - y)^2 + \text{const}`: least
    squares is maximum likelihood under Gaussian noise (Gauss, 1809; Goodfellow et al.,
    *Deep Learning*, 2016, section 5.5.1). The gradient grows linearly with the residual,
    so a single outlier can dominate it.

    Args:
        input: predictions :math:`\hat y`, any shape, floating point.
        target: targets :math:`y`, the same shape (no broadcasting).
        reduction: ``"mean"`` (over all elements), ``"sum"`` or ``"none"``.

    Example:
        >>> mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(2.5000)
    """
    reduction = _regression_args(input, target, reduction)
    return _reduce((input - target) ** 2, reduction)


def mae(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""Mean absolute error, the negative log-likelihood of a Laplace distribution (``F.l1_loss``).

    .. math::
        \ell(\hat y, y) = |\hat y - y|, \qquad
        \frac{\partial \ell}{\partial \hat y} = \operatorname{sign}(\hat y - y)
        \quad (0 \text{ at } \hat y = y, \text{ as PyTorch}).

    If :math:`p(y \mid \hat y) = \tfrac{1}{2b} e^{-|y - \hat y| / b}` then
    :math:`-\log p = |y - \hat y| / b + \text{const}`. Its minimizer over a constant is the
    median, not the mean: every sample pulls with the same force, however far it lies.

    Args:
        input: predictions, any shape, floating point.
        target: targets, the same shape.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> mae(torch.tensor([1.0, -3.0]), torch.tensor([0.0, 0.0]))
        tensor(2.)
    """
    reduction = _regression_args(input, target, reduction)
    return _reduce((input - target).abs(), reduction)


def huber(input: Tensor, target: Tensor, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    r"""Huber's loss: quadratic near zero, linear in the tails (``F.huber_loss``).

    With the residual :math:`r = \hat y - y`,

    .. math::
        \ell_\delta(r) = \begin{cases} \tfrac12 r^2 & |r| < \delta \\
        \delta\,(|r| - \tfrac12\delta) & |r| \ge \delta \end{cases}, \qquad
        \frac{\partial \ell_\delta}{\partial \hat y} = \operatorname{clip}(r, -\delta, \delta).

    The gradient is the residual, clipped at :math:`\pm\delta`: small residuals are treated
    as by least squares, large ones as by the absolute error, so an outlier pulls with force
    at most :math:`\delta`. It is the negative log-likelihood of a density with a Gaussian
    centre and Laplace (exponential) tails, the least favourable distribution of Huber's
    minimax argument (Huber, "Robust Estimation of a Location Parameter", 1964).
    ``delta -> 0`` gives :math:`\delta\,|r|`; ``delta -> inf`` gives :math:`\tfrac12 r^2`.

    Args:
        input: predictions, any shape, floating point.
        target: targets, the same shape.
        delta: :math:`\delta > 0`, where the quadratic turns linear.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> huber(torch.tensor([0.5, 3.0]), torch.zeros(2), delta=1.0, reduction="none")
        tensor([0.1250, 2.5000])
    """
    reduction = _regression_args(input, target, reduction)
    delta = checks.number(delta, "delta")
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    r = input - target
    a = r.abs()
    loss = torch.where(a < delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------
# Binary classification


def _softplus_neg(x: Tensor) -> Tensor:
    r""":math:`\log(1 + e^{-x}) = \max(-x, 0) + \log(1 + e^{-|x|})`, without overflow.

    :math:`\max(-x, 0)` is written :math:`(|x| - x)/2` so that autograd's (sub)gradient at
    :math:`x = 0` is :math:`-\tfrac12`, the true derivative :math:`-\sigma(0)` (``clamp_min`` would
    give -1 there, as the two pieces of the formula each have a kink at 0).
    """
    return 0.5 * (x.abs() - x) + torch.log1p(torch.exp(-x.abs()))


def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, pos_weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    r"""Binary cross-entropy on logits, the negative log-likelihood of a Bernoulli (``F.binary_cross_entropy_with_logits``).

    With :math:`p = \sigma(z) = 1/(1 + e^{-z})` the probability of class 1 and a target
    :math:`y \in [0, 1]`,

    .. math::
        \ell(z, y) = -\,[\,w_+\, y \log \sigma(z) + (1 - y) \log(1 - \sigma(z))\,]
                   = (1 - y)\, z + (1 + (w_+ - 1)\, y)\, \operatorname{softplus}(-z),

    computed as :math:`\operatorname{softplus}(-z) = \max(-z, 0) + \log(1 + e^{-|z|})`, which never
    exponentiates a positive number (for :math:`w_+ = 1` this is
    :math:`\max(z, 0) - z y + \log(1 + e^{-|z|})`). The gradient is

    .. math::
        \frac{\partial \ell}{\partial z} = \sigma(z) - y \qquad (w_+ = 1),

    bounded by 1 in absolute value, however wrong the logit. ``pos_weight`` :math:`w_+`
    multiplies the loss of the positive examples (a way to counter class imbalance: with
    :math:`w_+ = n_-/n_+` both classes carry equal total weight).

    Args:
        input: logits :math:`z`, any shape, floating point.
        target: targets in :math:`[0, 1]` (0./1. labels or probabilities), the same shape and a
            floating dtype (use ``y.float()`` on integer labels).
        pos_weight: optional :math:`w_+`, a tensor broadcastable to ``input`` (e.g. one weight
            per class along the last dimension), positive.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> binary_cross_entropy_with_logits(torch.tensor([1e4, -1e4]), torch.tensor([0.0, 0.0]))
        tensor(5000.)
    """
    _check_floating(input, "input")
    _check_tensor(target, "target")
    if not target.is_floating_point():
        raise TypeError(
            f"target must be a floating-point tensor of 0./1. labels or probabilities, got dtype {target.dtype} "
            "(use target.float())"
        )
    _check_same_shape(input, target)
    reduction = _check_reduction(reduction)
    sp = _softplus_neg(input)  # -log sigma(z)
    if pos_weight is None:
        loss = (1 - target) * input + sp
    else:
        _check_floating(pos_weight, "pos_weight")
        try:
            torch.broadcast_shapes(pos_weight.shape, input.shape)
        except RuntimeError:
            raise ValueError(
                f"pos_weight of shape {tuple(pos_weight.shape)} does not broadcast to input {tuple(input.shape)}"
            ) from None
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * sp
    return _reduce(loss, reduction)


def _log_one_minus_pt(input: Tensor, target: Tensor) -> Tensor:
    r""":math:`\log(1 - p_t) = \log\bigl(y\,\sigma(-z) + (1 - y)\,\sigma(z)\bigr)`, in log space (values only).

    A log-sum-exp of :math:`\log y + \log\sigma(-z)` and :math:`\log(1 - y) + \log\sigma(z)`:
    no cancellation in :math:`1 - p_t`, no underflow to :math:`\log 0` at logits of
    :math:`\pm 10^4`, and :math:`\log 0 = -\infty` drops a term exactly at a hard target.
    Its autograd gradient with respect to the target would be :math:`0 \cdot \infty` at
    :math:`y \in \{0, 1\}`; :class:`_FocalModulation` supplies the exact one instead.
    """
    log_sig_pos = -_softplus_neg(input)  # log sigma(z)
    log_sig_neg = -_softplus_neg(-input)  # log sigma(-z)
    return torch.logaddexp(torch.log(target) + log_sig_neg, torch.log1p(-target) + log_sig_pos)


class _FocalModulation(torch.autograd.Function):
    r"""The focal factor :math:`(1 - p_t)^\gamma`, with :math:`1 - p_t = (1 - y)\,\sigma(z) + y\,\sigma(-z)`.

    The value is :math:`e^{\gamma L}` with :math:`L = \log(1 - p_t)` from :func:`_log_one_minus_pt`.
    The backward pass writes the two derivatives so that every exponent is at most 0 (for
    :math:`\gamma \ge 1`) and nothing multiplies :math:`0` by :math:`\infty`:

    .. math::
        \frac{\partial (1 - p_t)^\gamma}{\partial z} = \gamma\,(1 - 2y)\,e^{\log\sigma(z) + \log\sigma(-z) + (\gamma - 1) L},
        \qquad
        \frac{\partial (1 - p_t)^\gamma}{\partial y} = \gamma\,\bigl(e^{\log\sigma(-z) + (\gamma - 1) L}
        - e^{\log\sigma(z) + (\gamma - 1) L}\bigr),

    from :math:`\partial(1 - p_t)/\partial z = (1 - 2y)\,\sigma(z)\,\sigma(-z)` and
    :math:`\partial(1 - p_t)/\partial y = \sigma(-z) - \sigma(z)`: the target enters
    :math:`1 - p_t` linearly, so its derivative is finite at :math:`y = 0` and :math:`y = 1`
    (a target from a teacher network that requires grad gets a finite gradient, as with
    ``F.binary_cross_entropy_with_logits``). The backward pass is built of differentiable
    operations on the saved inputs, so gradients of gradients work too (away from hard targets).
    """

    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, gamma: float) -> Tensor:
        ctx.save_for_backward(input, target)
        ctx.gamma = gamma
        return torch.exp(gamma * _log_one_minus_pt(input, target))

    @staticmethod
    def backward(ctx, grad: Tensor):
        input, target = ctx.saved_tensors
        gamma = ctx.gamma
        log_sig_pos = -_softplus_neg(input)  # log sigma(z)
        log_sig_neg = -_softplus_neg(-input)  # log sigma(-z)
        power = (gamma - 1) * _log_one_minus_pt(input, target)  # log (1 - p_t)^(gamma - 1)
        d_input = gamma * (1 - 2 * target) * torch.exp(log_sig_pos + log_sig_neg + power)
        d_target = gamma * (torch.exp(log_sig_neg + power) - torch.exp(log_sig_pos + power))
        grad_input = grad * d_input if ctx.needs_input_grad[0] else None
        grad_target = grad * d_target if ctx.needs_input_grad[1] else None
        return grad_input, grad_target, None


def focal(
    input: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean"
) -> Tensor:
    r"""Sigmoid focal loss of Lin et al. (2017), as ``torchvision.ops.sigmoid_focal_loss``.

    With :math:`p = \sigma(z)`, :math:`p_t = p\,y + (1 - p)(1 - y)` the probability given to the
    true class and :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)`,

    .. math::
        \operatorname{FL}(z, y) = \alpha_t\,(1 - p_t)^\gamma\,\operatorname{CE}(z, y),
        \qquad \operatorname{CE}(z, y) = -y \log p - (1 - y)\log(1 - p)
        = (1 - y)\,z + \log(1 + e^{-z}),

    where :math:`\operatorname{CE} = -\log p_t` for a hard label :math:`y \in \{0, 1\}` (for a soft
    target it is the binary cross-entropy, as in torchvision). The factor :math:`(1 - p_t)^\gamma`
    shrinks the loss of well-classified examples (:math:`p_t \to 1`) so that a flood of easy ones
    does not drown the rare hard ones; :math:`\gamma = 0` gives the (:math:`\alpha`-weighted)
    cross-entropy. ``alpha < 0`` turns off the :math:`\alpha_t` weighting. For hard labels the
    gradient is

    .. math::
        \frac{\partial\,\operatorname{FL}}{\partial z}
        = \alpha_t\, s\,(1 - p_t)^{\gamma}\bigl(\gamma\, p_t \log p_t + p_t - 1\bigr),

    with :math:`s = 2y - 1`. Stability: :math:`1 - p_t = y\,\sigma(-z) + (1 - y)\,\sigma(z)` is
    formed in log space, :math:`(1 - p_t)^\gamma = \exp(\gamma \log(1 - p_t))`, so values and
    gradients stay finite (and accurate: no cancellation in :math:`1 - p_t`) for logits of
    :math:`\pm 10^4` and any :math:`\gamma \ge 0`; torchvision's ``1 - p_t`` is the same number
    up to rounding. The target enters :math:`1 - p_t`, :math:`\alpha_t` and CE linearly, and the
    gradient with respect to a target that requires grad is finite at :math:`y = 0` and
    :math:`y = 1` too (see :class:`_FocalModulation`). For :math:`0 < \gamma < 1` that target
    gradient is itself unbounded where :math:`1 - p_t \to 0` (it grows like
    :math:`(1 - p_t)^{\gamma - 1}`), so at a hard target with a logit of very large magnitude
    (say :math:`10^4`) it overflows to infinity.

    Reference: Lin, Goyal, Girshick, He and Dollár, "Focal Loss for Dense Object Detection",
    ICCV 2017, arXiv:1708.02002.

    Args:
        input: logits :math:`z`, any shape, floating point.
        target: targets in :math:`[0, 1]`, the same shape, floating point.
        alpha: :math:`\alpha \in [0, 1]`, the weight of the positive class (negative: none).
            The paper's 0.25 *down*-weights the rare positives, which the focusing term has
            already up-weighted.
        gamma: :math:`\gamma \ge 0`, the focusing parameter.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> z, y = torch.tensor([3.0, -3.0]), torch.tensor([1.0, 1.0])
        >>> focal(z, y, reduction="none")  # the easy positive counts 25,000 times less
        tensor([2.7321e-05, 6.9157e-01])
    """
    _check_floating(input, "input")
    _check_floating(target, "target")
    _check_same_shape(input, target)
    reduction = _check_reduction(reduction)
    alpha = checks.number(alpha, "alpha")
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative to turn it off), got {alpha}")
    gamma = checks.nonnegative(gamma, "gamma")
    ce = (1 - target) * input + _softplus_neg(input)  # binary cross-entropy, linear in the target
    loss = ce
    if gamma != 0:
        loss = _FocalModulation.apply(input, target, gamma) * ce  # (1 - p_t)^gamma * CE
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------
# Multi-class classification


def log_softmax(input: Tensor, dim: int = -1) -> Tensor:
    r"""The stable log-softmax :math:`\log \operatorname{softmax}(z)_k = z_k - \operatorname{LSE}(z)`.

    .. math::
        \operatorname{LSE}(z) = \log \sum_j e^{z_j} = m + \log \sum_j e^{z_j - m}, \qquad m = \max_j z_j .

    Subtracting the maximum makes the largest exponent :math:`e^0 = 1`: nothing overflows and
    the sum is at least 1, so its log is never :math:`-\infty`. The shift :math:`m` is a
    constant for autograd (its exact gradient is zero because LSE is shift-equivariant).

    Example:
        >>> log_softmax(torch.tensor([1000.0, 999.0, 0.0]))
        tensor([-3.1326e-01, -1.3133e+00, -1.0003e+03])
    """
    _check_floating(input, "input")
    m = input.detach().amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf rows: no shift
    shifted = input - m
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def _check_class_target(input: Tensor, target: Tensor, name: str = "cross_entropy") -> tuple[bool, int]:
    """Validate (input, target) of a classification loss; return (probability_targets, C)."""
    _check_floating(input, "input")
    _check_tensor(target, "target")
    if input.ndim < 2:
        raise ValueError(f"{name}: input must be (N, C) or (N, C, d1, ...) scores, got shape {tuple(input.shape)}")
    C = input.shape[1]
    index_shape = (input.shape[0],) + tuple(input.shape[2:])
    if target.is_floating_point():
        if target.shape == input.shape:
            return True, C
        if tuple(target.shape) == index_shape:
            raise TypeError(
                f"{name}: class-index targets must be an integer tensor (int64), got dtype {target.dtype}; "
                f"class-probability targets must have the input's shape {tuple(input.shape)}"
            )
        raise ValueError(
            f"{name}: target shape {tuple(target.shape)} does not match input {tuple(input.shape)}: expected "
            f"{index_shape} (class indices) or {tuple(input.shape)} (class probabilities)"
        )
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"{name}: class-index targets must be an integer tensor (int64), got dtype {target.dtype}")
    if tuple(target.shape) != index_shape:
        raise ValueError(
            f"{name}: class-index target of shape {tuple(target.shape)} does not match input "
            f"{tuple(input.shape)}: expected {index_shape}"
        )
    if target.numel() > 0:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= C:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: class index {bad} is out of range for {C} classes (valid: 0 to {C - 1})")
    return False, C


def _check_weight(weight, C: int, input: Tensor) -> Tensor | None:
    if weight is None:
        return None
    _check_floating(weight, "weight")
    if weight.shape != (C,):
        raise ValueError(f"weight must have one entry per class, shape ({C},), got {tuple(weight.shape)}")
    return weight


def _class_view(v: Tensor, ndim: int) -> Tensor:
    """A (C,) vector reshaped to broadcast along dim 1 of an ndim-dimensional input: (1, C, 1, ...)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Softmax cross-entropy, the negative log-likelihood of a categorical (``F.cross_entropy``).

    With logits :math:`z \in \mathbb R^C`, :math:`p = \operatorname{softmax}(z)` and a target
    distribution :math:`q` (one-hot for a class index :math:`y`),

    .. math::
        \ell(z, q) = -\sum_k q_k \log p_k = \operatorname{LSE}(z) - \sum_k q_k z_k ,
        \qquad \frac{\partial \ell}{\partial z} = \operatorname{softmax}(z) - q ,

    with the log-sum-exp :math:`\operatorname{LSE}(z) = m + \log\sum_k e^{z_k - m}`,
    :math:`m = \max_k z_k` (see :func:`log_softmax`), finite for any finite logits. The
    gradient is bounded (each entry in :math:`[-1, 1]`) and does not vanish when the model is
    confidently wrong, unlike the squared error on :math:`p`.

    **Label smoothing** (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016)
    trains on :math:`q = (1 - \varepsilon)\,\text{onehot}(y) + \varepsilon / C` instead of the
    one-hot vector, so the optimum logits stay finite (the loss is minimized at
    :math:`p_y = 1 - \varepsilon + \varepsilon / C`).

    **Weights** :math:`w_k` multiply the terms of class :math:`k`:
    :math:`\ell_i = -\sum_k w_k q_{ik} \log p_{ik}`. With class-index targets
    ``reduction="mean"`` divides the sum by :math:`\sum_i w_{y_i}` (a weighted mean, as
    PyTorch); with probability targets it divides by the number of samples :math:`N`.

    Args:
        input: logits, ``(N, C)`` (or ``(N, C, d1, ...)``), floating point.
        target: class indices, ``(N,)`` (or ``(N, d1, ...)``), integer, in ``[0, C)``; or
            class probabilities with the input's shape, floating point.
        weight: optional ``(C,)`` class weights.
        label_smoothing: :math:`\varepsilon \in [0, 1]`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Note:
        There is no ``ignore_index``: every class index must lie in ``[0, C)`` (PyTorch's default
        ``ignore_index=-100`` is rejected with a ``ValueError``). Any integer dtype is accepted for
        class indices (PyTorch wants int64).

    Example:
        >>> z = torch.tensor([[1000.0, 999.0, 0.0]])
        >>> cross_entropy(z, torch.tensor([1]))  # the naive formula gives nan here
        tensor(1.3133)
    """
    probabilities, C = _check_class_target(input, target)
    weight = _check_weight(weight, C, input)
    reduction = _check_reduction(reduction)
    eps = checks.number(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    logp = log_softmax(input, dim=1)  # (N, C, ...)
    if weight is not None:
        logp_w = logp * _class_view(weight, input.ndim)  # w_k log p_k
    else:
        logp_w = logp
    if probabilities:
        q = target if eps == 0 else target * (1 - eps) + eps / C
        loss = -(q * logp_w).sum(dim=1)  # (N, ...)
        return _reduce(loss, reduction)
    target = target.long()  # gather wants int64; any integer dtype is accepted
    nll = -logp_w.gather(1, target.unsqueeze(1)).squeeze(1)  # -w_y log p_y, (N, ...)
    loss = nll if eps == 0 else (1 - eps) * nll - (eps / C) * logp_w.sum(dim=1)
    if reduction == "mean" and weight is not None:
        return loss.sum() / weight[target].sum()
    return _reduce(loss, reduction)


def hinge(
    input: Tensor, target: Tensor, margin: float = 1.0, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    r"""Multi-class hinge loss (``F.multi_margin_loss`` with ``p=1``): a margin, not a likelihood.

    For scores :math:`z \in \mathbb R^C` and the true class :math:`y`,

    .. math::
        \ell(z, y) = \frac{1}{C} \sum_{j \ne y} \max(0,\; \Delta - z_y + z_j), \qquad
        \frac{\partial \ell}{\partial z_j} = \frac{1}{C}\,[\Delta - z_y + z_j > 0], \quad
        \frac{\partial \ell}{\partial z_y} = -\frac{1}{C} \sum_{j \ne y} [\Delta - z_y + z_j > 0].

    Every wrong class whose score is within the margin :math:`\Delta` of the true class's adds a
    linear penalty; once all of them are beaten by :math:`\Delta` the loss **and its gradient
    are exactly zero**, so correctly classified examples with a margin stop influencing
    training (the support-vector idea). The hinge is not a negative log-likelihood: it gives
    scores, not probabilities.

    Note:
        Which multi-class hinge: this sum over the wrong classes is the loss of Weston and
        Watkins (1999), divided by :math:`C` as PyTorch does. Crammer and Singer (2001) charge
        only the largest violation, :math:`\max\bigl(0,\; \Delta - z_y + \max_{j \ne y} z_j\bigr)`,
        which ``F.multi_margin_loss`` does not compute. With two classes, scores
        :math:`(z, 0)` and :math:`y = 0`, :math:`C\,\ell = \max(0, \Delta - z)` is the binary
        hinge of support vector machines (Cortes and Vapnik, 1995).

    Args:
        input: scores, ``(N, C)``, floating point.
        target: class indices, ``(N,)``, integer, in ``[0, C)``.
        margin: :math:`\Delta`.
        weight: optional ``(C,)`` class weights, multiplying the loss of samples of class :math:`y`
            (``reduction="mean"`` is then still the plain mean over samples, as PyTorch).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> hinge(torch.tensor([[3.0, 1.0, 2.5]]), torch.tensor([0]))  # (0 + 0.5) / 3
        tensor(0.1667)
    """
    probabilities, C = _check_class_target(input, target, "hinge")
    if probabilities:
        raise TypeError(f"hinge: target must be integer class indices, got dtype {target.dtype}")
    if input.ndim != 2:
        raise ValueError(f"hinge: input must be (N, C), got shape {tuple(input.shape)}")
    weight = _check_weight(weight, C, input)
    margin = checks.number(margin, "margin")
    reduction = _check_reduction(reduction)
    target = target.long()
    z_y = input.gather(1, target.unsqueeze(1))  # (N, 1)
    others = torch.ones_like(input).scatter_(1, target.unsqueeze(1), 0.0)  # 0 at the true class
    loss = (torch.relu(margin - z_y + input) * others).sum(dim=1) / C  # (N,)
    if weight is not None:
        loss = loss * weight[target]
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------
# Calibration


def expected_calibration_error(probs: Tensor, target: Tensor, n_bins: int = 15) -> float:
    r"""Expected calibration error of the top-class confidence (Guo et al., 2017).

    Split the samples into ``n_bins`` equal-width bins of confidence :math:`\hat p_i = \max_k p_{ik}`
    (bin :math:`b` holds :math:`\hat p \in ((b-1)/B, b/B]`) and average the gap between accuracy and
    mean confidence, weighted by the bin's share of samples:

    .. math::
        \operatorname{ECE} = \sum_{b=1}^{B} \frac{|S_b|}{n}\,
        \bigl|\operatorname{acc}(S_b) - \operatorname{conf}(S_b)\bigr| .

    Reference: Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks",
    ICML 2017, arXiv:1706.04599.

    Args:
        probs: ``(N, C)`` predicted class probabilities (rows sum to 1).
        target: ``(N,)`` integer labels.
        n_bins: the number of bins :math:`B \ge 1`.

    Returns:
        The ECE, a float in :math:`[0, 1]`.

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
        >>> round(expected_calibration_error(p, torch.tensor([0, 1])), 4)  # conf 0.9, acc 0.5
        0.4
    """
    _check_floating(probs, "probs")
    _check_tensor(target, "target")
    if probs.ndim != 2 or target.shape != (probs.shape[0],):
        raise ValueError(f"probs must be (N, C) and target (N,), got {tuple(probs.shape)} and {tuple(target.shape)}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    conf, pred = probs.max(dim=1)
    correct = (pred == target).to(probs.dtype)
    bins = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1  # (N,), bin b holds conf in (b/B, (b+1)/B]
    count = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device).index_add_(0, bins, torch.ones_like(conf))
    conf_sum = torch.zeros_like(count).index_add_(0, bins, conf)
    acc_sum = torch.zeros_like(count).index_add_(0, bins, correct)
    return float((conf_sum - acc_sum).abs().sum() / max(len(target), 1))


# ---------------------------------------------------------------------------
# Naive (unstable) versions, for teaching only


def naive_softmax(input: Tensor, dim: int = -1) -> Tensor:
    r"""UNSTABLE softmax :math:`e^{z_k} / \sum_j e^{z_j}`, as written in textbooks.

    ``exp`` overflows to ``inf`` for :math:`z > 88.7` in float32 (709.8 in float64) and
    ``inf / inf`` is ``nan``. For teaching only; use ``torch.softmax`` or :func:`log_softmax`.

    Example:
        >>> naive_softmax(torch.tensor([1000.0, 0.0]))
        tensor([nan, 0.])
    """
    e = torch.exp(input)
    return e / e.sum(dim=dim, keepdim=True)


def naive_softmax_cross_entropy(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""UNSTABLE cross-entropy :math:`-\log(\operatorname{softmax}(z)_y)` via :func:`naive_softmax`.

    Returns ``nan`` when a logit overflows ``exp`` and ``inf`` when the true class's
    probability underflows to 0. For teaching only; use :func:`cross_entropy`.

    Example:
        >>> naive_softmax_cross_entropy(torch.tensor([[1000.0, 999.0, 0.0]]), torch.tensor([1]))
        tensor(nan)
    """
    reduction = _check_reduction(reduction)
    p = naive_softmax(input, dim=1)
    return _reduce(-torch.log(p.gather(1, target.unsqueeze(1)).squeeze(1)), reduction)


def naive_binary_cross_entropy_with_logits(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""UNSTABLE binary cross-entropy :math:`-[y \log \sigma(z) + (1-y)\log(1-\sigma(z))]`.

    In float32 :math:`\sigma(z)` rounds to exactly 1 for :math:`z > 16.6` (and
    :math:`\log(1 - 1) = -\infty`), so a confidently wrong logit gives ``inf`` (or ``nan``
    as :math:`0 \cdot \infty`). For teaching only; use :func:`binary_cross_entropy_with_logits`.

    Example:
        >>> naive_binary_cross_entropy_with_logits(torch.tensor([20.0]), torch.tensor([0.0]))
        tensor(inf)
    """
    reduction = _check_reduction(reduction)
    p = torch.sigmoid(input)
    return _reduce(-(target * torch.log(p) + (1 - target) * torch.log(1 - p)), reduction)
