r"""Large batches: the linear scaling rule, the gradient noise scale and the critical batch size.

Data parallelism multiplies the batch size. Two questions follow, and this module holds the
arithmetic for both:

- **How should the learning rate change with the batch?** :func:`scaled_lr` is the linear
  scaling rule of Goyal et al. (2017): multiply the batch by :math:`k`, multiply the rate by
  :math:`k`. Their gradual warmup is :func:`book.schedules.linear_warmup` with
  ``start_factor = 1/k``::

      >>> from book.schedules import constant, linear_warmup
      >>> lr = scaled_lr(0.1, base_batch=32, batch=256)            # k = 8
      >>> warm = linear_warmup(constant(lr), warmup_steps=4, start_factor=32 / 256)
      >>> [round(warm(t), 3) for t in range(6)]
      [0.1, 0.275, 0.45, 0.625, 0.8, 0.8]

- **How large a batch is still worth it?** McCandlish et al. (2018) answer with the
  *gradient noise scale* :math:`B_\text{simple} = \operatorname{tr}\Sigma / |G|^2`, the
  batch at which the noise of a minibatch gradient is as large as the gradient itself.
  :func:`gradient_noise_scale` forms their unbiased two-batch estimates from the squared
  norms of a small-batch and a large-batch gradient, :func:`measure_noise_scale` measures
  them for a model, and :func:`per_example_noise_scale` computes the exact values on a data
  set from per-example gradients (:func:`per_example_sq_norms`; affordable for small models)
  to check them against.
  :func:`critical_batch_size` fits their steps-versus-batch-size law
  :math:`S = S_\text{min}(1 + B_\text{crit}/B)` to measured steps to a target loss.

This is a kernel module: it imports torch, :mod:`book.checks` and :mod:`book.utils` only.

References:
    P. Goyal et al., "Accurate, large minibatch SGD: training ImageNet in 1 hour", 2017,
    arXiv:1706.02677.
    S. McCandlish, J. Kaplan, D. Amodei and the OpenAI Dota Team, "An empirical model of
    large-batch training", 2018, arXiv:1812.06162.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from book import checks

__all__ = [
    "scaled_lr",
    "NoiseScale",
    "gradient_noise_scale",
    "measure_noise_scale",
    "per_example_sq_norms",
    "per_example_noise_scale",
    "pool_noise_scales",
    "CriticalBatch",
    "critical_batch_size",
    "CopiesRun",
    "train_copies",
]


# ---------------------------------------------------------------------------
# The linear scaling rule


def scaled_lr(base_lr: float, base_batch: int, batch: int) -> float:
    r"""The linear scaling rule: the learning rate for ``batch`` given a tuned ``base_lr`` at ``base_batch``.

    .. math::
        \eta(B) = \eta_0\, \frac{B}{B_0}

    with :math:`\eta_0` = ``base_lr``, :math:`B_0` = ``base_batch`` and :math:`B` = ``batch``.
    Goyal et al.'s argument: :math:`k` steps of SGD with batches of :math:`B_0` and rate
    :math:`\eta_0` move the weights by :math:`-\eta_0 \sum_{j<k} \nabla L_j(w_{t+j})`; one step
    with the union of those batches (:math:`B = k B_0`) and rate :math:`k\eta_0` moves them by
    :math:`-k\eta_0 \cdot \tfrac1k \sum_{j<k} \nabla L_j(w_t)`. The two agree as long as the
    gradient changes little over :math:`k` small steps, which fails early in training (hence
    their warmup) and once :math:`k\eta_0` passes the largest stable rate.

    Note:
        The rule is for SGD (with momentum). For Adam-type methods a square-root rule,
        :math:`\eta \propto \sqrt{B}`, is the usual starting point instead.

    References:
        P. Goyal et al., "Accurate, large minibatch SGD: training ImageNet in 1 hour", 2017,
        arXiv:1706.02677, section 2.1.

    Example:
        >>> scaled_lr(0.1, base_batch=256, batch=8192)
        3.2
    """
    base_lr = checks.positive(base_lr, "base_lr")
    base_batch = checks.integer(base_batch, "base_batch", 1)
    batch = checks.integer(batch, "batch", 1)
    return base_lr * batch / base_batch


# ---------------------------------------------------------------------------
# The gradient noise scale


class NoiseScale(NamedTuple):
    r"""Estimates of :math:`|G|^2`, :math:`\operatorname{tr}\Sigma` and their ratio :math:`B_\text{simple}`."""

    grad_sq: float
    """:math:`|G|^2`, the squared norm of the full-batch (expected) gradient."""
    trace_cov: float
    r""":math:`\operatorname{tr}\Sigma`, the trace of the per-example gradients' covariance."""
    b_simple: float
    r""":math:`B_\text{simple} = \operatorname{tr}\Sigma / |G|^2`; NaN when the estimate of :math:`|G|^2` is not
    positive."""


def _ratio(trace_cov: float, grad_sq: float) -> float:
    return trace_cov / grad_sq if grad_sq > 0 else math.nan


def gradient_noise_scale(g_small_sq: float, g_big_sq: float, b_small: int, b_big: int) -> NoiseScale:
    r"""Two-batch estimates of :math:`|G|^2`, :math:`\operatorname{tr}\Sigma` and :math:`B_\text{simple}`.

    A minibatch gradient :math:`G_B` averages :math:`B` independent per-example gradients with
    mean :math:`G` and covariance :math:`\Sigma`, so
    :math:`\mathbb E|G_B|^2 = |G|^2 + \operatorname{tr}\Sigma / B`. Two batch sizes
    :math:`B_s < B_b` give two such equations; solving them for the two unknowns gives

    .. math::
        |\mathcal G|^2 = \frac{B_b |G_{B_b}|^2 - B_s |G_{B_s}|^2}{B_b - B_s}, \qquad
        \mathcal S = \frac{|G_{B_s}|^2 - |G_{B_b}|^2}{1/B_s - 1/B_b},

    unbiased for :math:`|G|^2` and :math:`\operatorname{tr}\Sigma` (appendix A.1 of the
    paper), and :math:`B_\text{simple} = \mathcal S / |\mathcal G|^2`.

    Args:
        g_small_sq: :math:`|G_{B_s}|^2`, the squared norm of a gradient on ``b_small`` examples
            (or the mean of several such squared norms).
        g_big_sq: :math:`|G_{B_b}|^2`, the same for ``b_big`` examples.
        b_small, b_big: :math:`B_s < B_b`.

    Returns:
        A :class:`NoiseScale`. Each estimate can be negative on a single draw; the ratio is
        biased, so average the squared norms over many draws first and take the ratio last, as
        the paper does (:func:`measure_noise_scale` does this). ``b_simple`` is NaN when the
        estimate of :math:`|G|^2` is not positive: the gradient is lost in the noise.

    References:
        S. McCandlish et al., "An empirical model of large-batch training", 2018,
        arXiv:1812.06162, appendix A.1.

    Example:
        >>> # |G|^2 = 1, tr(Sigma) = 100: E|G_B|^2 = 1 + 100/B
        >>> gradient_noise_scale(1 + 100 / 10, 1 + 100 / 1000, b_small=10, b_big=1000)
        NoiseScale(grad_sq=1.0, trace_cov=100.0, b_simple=100.0)
    """
    g_small_sq = checks.nonnegative(g_small_sq, "g_small_sq")
    g_big_sq = checks.nonnegative(g_big_sq, "g_big_sq")
    b_small, b_big = _two_batches(b_small, b_big)
    grad_sq = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace_cov = (g_small_sq - g_big_sq) / (1 / b_small - 1 / b_big)
    return NoiseScale(grad_sq, trace_cov, _ratio(trace_cov, grad_sq))


def _two_batches(b_small, b_big) -> tuple[int, int]:
    b_small = checks.integer(b_small, "b_small", 1)
    b_big = checks.integer(b_big, "b_big", 1)
    if b_small >= b_big:
        raise ValueError(f"b_small must be smaller than b_big, got b_small={b_small}, b_big={b_big}")
    return b_small, b_big


LossFn = Callable[[Tensor, Tensor], Tensor]


def _check_data(model, X, y) -> list[Tensor]:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"X and y must be tensors, got {type(X).__name__} and {type(y).__name__}")
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X and y must hold the same, nonzero number of examples, got {len(X)} and {len(y)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameter that requires a gradient")
    return params


def _squared_norm(tensors) -> float:
    return float(sum(t.double().pow(2).sum() for t in tensors))


def measure_noise_scale(
    model: torch.nn.Module,
    loss_fn: LossFn,
    X: Tensor,
    y: Tensor,
    b_small: int,
    b_big: int,
    repeats: int = 10,
    generator: torch.Generator | None = None,
) -> NoiseScale:
    r"""Measure the gradient noise scale of ``model`` on ``(X, y)`` with two batch sizes.

    Each of ``repeats`` draws samples ``b_big`` examples **with replacement** (so the
    per-example gradients are independent draws from the data set, as the estimators
    assume), computes the gradient :math:`G_{B_b}` of the mean loss on all of them and
    :math:`G_{B_s}` on the first ``b_small`` of them (the small batch of one worker inside
    the large batch of all, as in the paper's data-parallel measurement). The squared norms
    are averaged over the draws, and :func:`gradient_noise_scale` turns the two means into
    :math:`|G|^2`, :math:`\operatorname{tr}\Sigma` and :math:`B_\text{simple}`. Here
    :math:`G` and :math:`\Sigma` are the mean and covariance of the per-example gradients
    over the whole of ``(X, y)`` (what :func:`per_example_noise_scale` computes exactly).

    The model is used as it is (call ``model.eval()`` first if it has dropout or batch
    norm), its ``.grad`` fields are not touched, and ``loss_fn`` must average over the batch
    (``reduction="mean"``).

    Note:
        Sampling *without* replacement from :math:`N` examples would shrink the noise term to
        :math:`\operatorname{tr}\Sigma\,(N - B)/(B(N - 1))` and bias both estimates when
        ``b_big`` is a sizeable fraction of :math:`N`.

    Args:
        model: the network at the point of measurement.
        loss_fn: ``loss_fn(output, target)``, a mean over the batch.
        X, y: the data set, ``(N, ...)``.
        b_small, b_big: the two batch sizes, ``1 <= b_small < b_big``.
        repeats: draws to average over (>= 1).
        generator: a ``torch.Generator`` on the CPU for the draws (the global one if ``None``).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> X, y = torch.randn(200, 3), torch.randn(200, 1)
        >>> g = torch.Generator().manual_seed(0)
        >>> est = measure_noise_scale(model, torch.nn.functional.mse_loss, X, y, 8, 64, repeats=20, generator=g)
        >>> est.trace_cov > 0
        True
    """
    params = _check_data(model, X, y)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function (output, target) -> loss, got {type(loss_fn).__name__}")
    b_small, b_big = _two_batches(b_small, b_big)
    repeats = checks.integer(repeats, "repeats", 1)
    small_sq = big_sq = 0.0
    for _ in range(repeats):
        idx = torch.randint(len(X), (b_big,), generator=generator).to(X.device)
        for size in (b_small, b_big):
            batch = idx[:size]
            grads = torch.autograd.grad(loss_fn(model(X[batch]), y[batch]), params)
            if size == b_small:
                small_sq += _squared_norm(grads) / repeats
            else:
                big_sq += _squared_norm(grads) / repeats
    return gradient_noise_scale(small_sq, big_sq, b_small, b_big)


def per_example_sq_norms(
    model: torch.nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor, chunk_size: int | None = 256
) -> Tensor:
    r"""The squared norm :math:`|g_i|^2` of every example's gradient, an ``(N,)`` float64 tensor.

    :math:`g_i` is the gradient of example :math:`i`'s loss with respect to all parameters that
    require a gradient, computed with ``torch.func.vmap`` over ``torch.func.grad`` (``loss_fn``
    is called on one example at a time, as a batch of one, so it must average over the batch).
    ``chunk_size`` examples are differentiated at once (all of them for ``None``): memory for
    that many copies of the gradient. How unequal these norms are says how heavy-tailed the
    gradient noise is; their mean is :math:`|G|^2 + \operatorname{tr}\Sigma`.

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> X, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 1)
        >>> per_example_sq_norms(model, torch.nn.functional.mse_loss, X, y).tolist()  # |2 (w.x) x|^2
        [4.0, 64.0]
    """
    params = _check_data(model, X, y)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function (output, target) -> loss, got {type(loss_fn).__name__}")
    if chunk_size is not None:
        chunk_size = checks.integer(chunk_size, "chunk_size", 1)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    weights = {name: p.detach() for name, p in zip(names, params)}

    def example_loss(w, x, target):  # one example, as a batch of one
        return loss_fn(torch.func.functional_call(model, w, (x[None],)), target[None])

    def squared_norm(x, target):  # |g_i|^2, without keeping g_i
        grads = torch.func.grad(example_loss)(weights, x, target)
        return sum(g.double().pow(2).sum() for g in grads.values())

    return torch.func.vmap(squared_norm, chunk_size=chunk_size)(X, y)


def per_example_noise_scale(
    model: torch.nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor, chunk_size: int | None = 256
) -> NoiseScale:
    r"""The exact :math:`|G|^2`, :math:`\operatorname{tr}\Sigma` and :math:`B_\text{simple}` of ``model`` on ``(X, y)``.

    With :math:`g_i` the gradient of example :math:`i`'s loss (:func:`per_example_sq_norms`)
    and :math:`G` the gradient of the mean loss over all :math:`N` examples:

    .. math::
        G = \frac1N \sum_i g_i, \qquad
        \operatorname{tr}\Sigma = \frac1N \sum_i |g_i - G|^2 = \frac1N \sum_i |g_i|^2 - |G|^2, \qquad
        B_\text{simple} = \operatorname{tr}\Sigma / |G|^2 .

    :math:`\Sigma` is the covariance of one example drawn uniformly from the data set, the
    quantity :func:`measure_noise_scale` estimates. Affordable for small models, where it is
    the ground truth to check the two-batch estimate against. ``loss_fn`` must average over
    the batch.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> X, y = torch.randn(100, 3), torch.randn(100, 1)
        >>> exact = per_example_noise_scale(model, torch.nn.functional.mse_loss, X, y)
        >>> round(exact.b_simple, 6) == round(exact.trace_cov / exact.grad_sq, 6)
        True
    """
    mean_sq = float(per_example_sq_norms(model, loss_fn, X, y, chunk_size).mean())
    params = [p for p in model.parameters() if p.requires_grad]
    grad_sq = _squared_norm(torch.autograd.grad(loss_fn(model(X), y), params))
    trace_cov = mean_sq - grad_sq
    return NoiseScale(grad_sq, trace_cov, _ratio(trace_cov, grad_sq))


def pool_noise_scales(estimates: Sequence[NoiseScale]) -> NoiseScale:
    r"""Pool several estimates: average :math:`|G|^2` and :math:`\operatorname{tr}\Sigma`, then take the ratio.

    The estimates of :math:`|G|^2` and :math:`\operatorname{tr}\Sigma` are unbiased, their
    ratio is not; a ratio of single noisy draws can even be negative. McCandlish et al.
    therefore average the two estimates (over training steps, with an exponential moving
    average) and divide the averages. This function does it with a plain mean, e.g. over the
    measurements made during one stretch of training.

    Example:
        >>> pool_noise_scales([NoiseScale(1.0, 50.0, 50.0), NoiseScale(-0.5, 10.0, math.nan)])
        NoiseScale(grad_sq=0.25, trace_cov=30.0, b_simple=120.0)
    """
    estimates = list(estimates)
    if not estimates:
        raise ValueError("pool_noise_scales needs at least one estimate")
    if not all(isinstance(e, NoiseScale) for e in estimates):
        raise TypeError("pool_noise_scales expects NoiseScale values (from measure_noise_scale or "
                        "gradient_noise_scale)")
    grad_sq = sum(e.grad_sq for e in estimates) / len(estimates)
    trace_cov = sum(e.trace_cov for e in estimates) / len(estimates)
    return NoiseScale(grad_sq, trace_cov, _ratio(trace_cov, grad_sq))


# ---------------------------------------------------------------------------
# The critical batch size


class CriticalBatch(NamedTuple):
    r"""The fitted law :math:`S(B) = S_\text{min}(1 + B_\text{crit}/B)`, with
    :math:`E_\text{min} = S_\text{min} B_\text{crit}`."""

    b_crit: float
    """:math:`B_\\text{crit} = E_\\text{min} / S_\\text{min}`: the batch at which training takes twice the fewest
    steps and twice the fewest examples."""
    s_min: float
    """:math:`S_\\text{min}`, the steps needed with an infinitely large batch."""
    e_min: float
    """:math:`E_\\text{min}`, the examples needed with batches of one (in the limit of small batches)."""

    def steps(self, batch) -> float | Tensor:
        r""":math:`S(B) = S_\text{min}(1 + B_\text{crit}/B)` (a number or a tensor of batch sizes)."""
        return self.s_min * (1 + self.b_crit / batch)

    def examples(self, batch) -> float | Tensor:
        r""":math:`E(B) = B\, S(B) = E_\text{min}(1 + B/B_\text{crit})`."""
        return self.e_min * (1 + batch / self.b_crit)


def critical_batch_size(batch_sizes: Sequence[float], steps: Sequence[float], relative: bool = True) -> CriticalBatch:
    r"""Fit McCandlish et al.'s steps-versus-batch law to measured steps to a target loss.

    Their model of training (derived for SGD at the best rate on a locally quadratic loss, and
    found by them to describe the training of many networks) says that the steps :math:`S` and the examples
    :math:`E = BS` needed to reach a given loss trade off as

    .. math::
        \left(\frac{S}{S_\text{min}} - 1\right)\left(\frac{E}{E_\text{min}} - 1\right) = 1,
        \qquad\text{i.e.}\qquad
        S(B) = S_\text{min}\left(1 + \frac{B_\text{crit}}{B}\right),
        \quad B_\text{crit} = \frac{E_\text{min}}{S_\text{min}} .

    Below :math:`B_\text{crit}` doubling the batch almost halves the steps (perfect scaling:
    the examples stay near :math:`E_\text{min}`); above it, the steps barely fall and the
    examples grow. :math:`S` is linear in :math:`1/B`, with intercept :math:`S_\text{min}`
    and slope :math:`E_\text{min}`, so the fit is linear least squares in :math:`1/B`. With
    ``relative=True`` (the default) it minimises the *relative* residuals
    :math:`\sum_i (S(B_i)/S_i - 1)^2`, which suits measured steps whose noise grows with their
    size; ``relative=False`` minimises :math:`\sum_i (S(B_i) - S_i)^2`, dominated by the small
    batches with many steps.

    Args:
        batch_sizes: the batch sizes :math:`B_i` (positive; at least two distinct values).
        steps: the measured steps :math:`S_i` to the same target at each batch size (positive).
        relative: fit relative residuals (True) or absolute ones.

    Returns:
        A :class:`CriticalBatch` ``(b_crit, s_min, e_min)``; its ``steps(B)`` and
        ``examples(B)`` evaluate the fitted curves.

    Raises:
        ValueError: for mismatched lengths, fewer than two distinct batch sizes, values that
            are not positive, or measurements the law cannot describe (a fitted
            :math:`S_\text{min}` or :math:`E_\text{min}` that is not positive).

    References:
        S. McCandlish et al., "An empirical model of large-batch training", 2018,
        arXiv:1812.06162.

    Example:
        >>> B = [16, 64, 256, 1024]
        >>> fit = critical_batch_size(B, [100 * (1 + 128 / b) for b in B])
        >>> round(fit.b_crit, 6), round(fit.s_min, 6), round(fit.e_min, 6)
        (128.0, 100.0, 12800.0)
    """
    B = _positive_vector(batch_sizes, "batch_sizes")
    S = _positive_vector(steps, "steps")
    if len(B) != len(S):
        raise ValueError(f"batch_sizes and steps must have the same length, got {len(B)} and {len(S)}")
    if len(torch.unique(B)) < 2:
        raise ValueError(f"need at least two distinct batch sizes to fit S_min and B_crit, got {B.tolist()}")
    A = torch.stack([torch.ones_like(B), 1 / B], dim=1)  # S = s_min * 1 + e_min * (1/B)
    w = 1 / S if relative else torch.ones_like(S)
    s_min, e_min = torch.linalg.lstsq(A * w[:, None], (S * w)[:, None]).solution[:, 0].tolist()
    if s_min <= 0:
        raise ValueError(
            f"the fitted S_min is {s_min:.4g} <= 0: the steps still fall like 1/B at the largest batches "
            f"measured ({B.max().item():g}); measure larger batches, where the steps level off"
        )
    if e_min <= 0:
        raise ValueError(f"the fitted E_min is {e_min:.4g} <= 0: the steps do not fall as the batch grows")
    return CriticalBatch(e_min / s_min, s_min, e_min)


def _positive_vector(values, name: str) -> Tensor:
    try:
        t = torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"{name} must be finite and > 0, got {t.tolist()}")
    return t


# ---------------------------------------------------------------------------
# Many small runs at once


class CopiesRun(NamedTuple):
    """What :func:`train_copies` returns."""

    models: list
    """The models, trained in place (the same objects that were passed in)."""
    steps_to_target: Tensor
    """``(K,)`` float64: the (interpolated) step at which each copy's loss on ``(X, y)`` first reached
    ``target``; NaN where it did not (or without a target)."""
    steps: int
    """The steps taken (fewer than asked when every copy reached the target, or by ``patience``)."""


def train_copies(
    models: Sequence[torch.nn.Module],
    loss_fn: LossFn,
    X: Tensor,
    y: Tensor,
    batch_size: int,
    lrs: Sequence,
    steps: int,
    momentum: float = 0.9,
    generators: Sequence[torch.Generator] | None = None,
    target: float | None = None,
    eval_every: int = 1,
    patience: float | None = None,
) -> CopiesRun:
    r"""Train K models of one architecture with minibatch SGD at once, as one batched model.

    Copy :math:`k` takes the steps of ``torch.optim.SGD(lr=lrs[k], momentum=momentum)`` on the
    mean loss of its own minibatches:

    .. math::
        b_{t+1} = \mu\, b_t + \nabla L_{k,t}(\theta_t), \qquad
        \theta_{t+1} = \theta_t - \eta_k(t)\, b_{t+1}, \qquad b_0 = 0 .

    The K copies' parameters are stacked along a new leading dimension
    (``torch.func.stack_module_state``) and the forward pass is ``torch.func.vmap`` over
    ``functional_call``: one batched computation instead of K small ones, which is what makes
    sweeps over seeds and learning rates affordable on a CPU. The copies share nothing, so
    the gradient of the **sum** of their losses with respect to copy :math:`k`'s weights is
    the gradient of copy :math:`k`'s own loss.

    **Batches.** Copy :math:`k`'s examples come from ``generators[k]``: a fresh random
    permutation of the data set for every epoch, the permutations laid end to end and cut into
    consecutive batches of ``batch_size`` (a batch can straddle two epochs). After :math:`T`
    steps every copy has seen :math:`TB` examples, each example the same number of times up
    to one. Copies given generators with the same seed see the same batches.

    **Target.** With ``target``, the mean loss on all of ``(X, y)`` is computed before the first
    step and every ``eval_every`` steps; the step at which it first falls to ``target`` is
    interpolated linearly in :math:`\log` loss between the two evaluations around it.
    Training stops when every copy has reached the target or diverged (a non-finite loss),
    or, with ``patience`` :math:`p`, once :math:`p` times the steps of the fastest copy have
    passed (a sweep that looks for the fastest setting need not wait for the slow ones).

    Args:
        models: K models of the same architecture (e.g. ``book.distributed.mlp`` with K seeds),
            on ``X``'s device. Their parameters are overwritten with the trained values.
        loss_fn: ``loss_fn(output, target)``, a mean over the batch (vmapped over the copies).
        X, y: the training data ``(N, ...)``.
        batch_size: examples per step, at most ``N``.
        lrs: K learning rates, each a number or a schedule ``step -> lr`` (:mod:`book.schedules`).
        steps: the most steps to take.
        momentum: :math:`\mu \in [0, 1)`, shared by the copies.
        generators: K ``torch.Generator`` on the CPU for the batch orders (the global one if ``None``).
        target: a loss to reach on ``(X, y)``, or ``None``.
        eval_every: steps between evaluations of the target.
        patience: stop after ``patience`` times the fastest copy's steps to the target (>= 1).

    Example:
        >>> import torch.nn.functional as F
        >>> X, y = torch.randn(256, 5), torch.randint(0, 3, (256,))
        >>> nets = [torch.nn.Linear(5, 3) for _ in range(4)]
        >>> run = train_copies(nets, F.cross_entropy, X, y, batch_size=32, lrs=[0.01, 0.03, 0.1, 0.3],
        ...                    steps=20, generators=[torch.Generator().manual_seed(0)] * 4)
        >>> run.steps, len(run.models)
        (20, 4)
    """
    models = list(models)
    if not models or not all(isinstance(m, torch.nn.Module) for m in models):
        raise TypeError("models must be a non-empty sequence of torch.nn.Module")
    K = len(models)
    shapes = [[(n, p.shape) for n, p in m.named_parameters()] for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("every model must have the same architecture (the same parameter names and shapes)")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function (output, target) -> loss, got {type(loss_fn).__name__}")
    if not isinstance(X, Tensor) or not isinstance(y, Tensor) or len(X) != len(y) or len(X) == 0:
        raise ValueError("X and y must be tensors with the same, nonzero number of examples")
    N = len(X)
    batch_size = checks.integer(batch_size, "batch_size", 1)
    if batch_size > N:
        raise ValueError(f"batch_size must be at most the number of examples ({N}), got {batch_size}")
    lrs = list(lrs)
    if len(lrs) != K:
        raise ValueError(f"give one learning rate (or schedule) per model: {K} models, {len(lrs)} rates")
    schedules = [lr if callable(lr) else (lambda t, v=checks.positive(lr, "lr"): v) for lr in lrs]
    steps = checks.integer(steps, "steps", 1)
    momentum = checks.number(momentum, "momentum", low=0, high=1)
    if momentum == 1:
        raise ValueError("momentum must be < 1, got 1.0")
    if generators is None:
        generators = [None] * K
    generators = list(generators)
    if len(generators) != K:
        raise ValueError(f"give one generator per model: {K} models, {len(generators)} generators")
    if target is not None:
        target = checks.positive(target, "target")
    eval_every = checks.integer(eval_every, "eval_every", 1)
    if patience is not None and checks.number(patience, "patience") < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")

    params, buffers = torch.func.stack_module_state(models)  # {name: (K, *shape)}
    params = {name: p.detach().clone().requires_grad_() for name, p in params.items()}
    momenta = {name: torch.zeros_like(p) for name, p in params.items()}
    skeleton = copy.deepcopy(models[0]).to("meta")  # the architecture, without weights

    def forward(p, b, x):
        return torch.func.functional_call(skeleton, (p, b), (x,))

    batched = torch.func.vmap(forward)                            # each copy on its own batch
    shared = torch.func.vmap(forward, in_dims=(0, 0, None))       # every copy on the same inputs
    losses_of = torch.func.vmap(loss_fn)                          # (K, B, ...) -> (K,)

    def loss_on_all() -> Tensor:
        with torch.no_grad():
            return torch.func.vmap(loss_fn, in_dims=(0, None))(shared(params, buffers, X), y).double()

    order = torch.empty(K, 0, dtype=torch.long)
    reached = torch.full((K,), math.nan, dtype=torch.float64)
    diverged = torch.zeros(K, dtype=torch.bool)
    previous = loss_on_all() if target is not None else None
    t = t_previous = 0
    while t < steps:
        if order.shape[1] < batch_size:  # lay the next epoch's permutations end to end
            order = torch.cat([order, torch.stack([torch.randperm(N, generator=g) for g in generators])], dim=1)
        idx, order = order[:, :batch_size].to(X.device), order[:, batch_size:]
        total = losses_of(batched(params, buffers, X[idx]), y[idx]).sum()  # (K, B, ...) -> sum of K means
        grads = torch.autograd.grad(total, list(params.values()))
        rates = torch.tensor([float(s(t)) for s in schedules], dtype=X.dtype, device=X.device)
        with torch.no_grad():
            for (name, p), g in zip(params.items(), grads):
                b = momenta[name].mul_(momentum).add_(g)  # b <- mu b + g
                p.sub_(rates.view(-1, *[1] * (p.ndim - 1)) * b)  # theta <- theta - eta_k b
        t += 1
        if target is not None and (t % eval_every == 0 or t == steps):
            current = loss_on_all()
            diverged |= ~torch.isfinite(current)
            hit = (current <= target) & reached.isnan()
            if hit.any():  # interpolate in log loss between the evaluations at t_previous and t
                fraction = (previous.log() - math.log(target)) / (previous.log() - current.log())
                reached[hit] = (t_previous + (t - t_previous) * fraction.clamp(0, 1))[hit]
            previous, t_previous = current, t
            if bool((~reached.isnan() | diverged).all()):
                break
            fastest = float(reached.nan_to_num(math.inf).min())
            if patience is not None and t >= patience * fastest:
                break
    with torch.no_grad():  # write the trained weights back into the models
        for k, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][k])
    return CopiesRun(models, reached, t)
