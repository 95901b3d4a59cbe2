r"""Sharpness and weight averaging: Hessian-vector products, the top Hessian eigenvalue, SAM, EMA and SWA.

**Sharpness** is the largest eigenvalue :math:`\lambda_{\max}` of the Hessian :math:`H = \nabla^2 L(w)`.
Gradient descent with step size :math:`\eta` is stable on a quadratic only while
:math:`\lambda_{\max} < 2/\eta`; in full-batch training of networks the sharpness rises to about
:math:`2/\eta` and hovers there: the *edge of stability* (Cohen et al., 2021). The Hessian of a network
is never formed: :func:`hvp` computes :math:`Hv` by differentiating :math:`\nabla L(w)^\top v` once more,
and :func:`top_hessian_eigenvalue` runs power iteration on such products.

**SAM** (Foret et al., 2021) descends with the gradient taken at the worst nearby point
:math:`w + \epsilon`, :math:`\epsilon = \rho\, g / \|g\|`, which favours flat minima. :class:`SAM` wraps
any ``torch.optim`` optimizer and needs a closure, since it evaluates two gradients per step.

**Weight averaging** keeps a running average of the weights: an exponential moving average
(:func:`ema_update_`) or the equal-weight average of stochastic weight averaging
(:func:`swa_update_`, Izmailov et al., 2018); :func:`update_bn` then recomputes batch-norm statistics
for the averaged weights. These three are thin, readable equals of ``torch.optim.swa_utils``
(``get_ema_multi_avg_fn``, ``get_swa_multi_avg_fn`` inside ``AveragedModel``, and ``update_bn``); the
book's version of ``update_bn`` also resets the book's own ``book.normalization`` layers, which
torch's skips (it only looks for ``torch.nn`` batch norm).

    >>> import torch
    >>> A = torch.diag(torch.tensor([1.0, 4.0, 9.0]))
    >>> x = torch.ones(3, requires_grad=True)
    >>> loss = lambda: 0.5 * x @ A @ x
    >>> hvp(loss, [x], [torch.tensor([0.0, 1.0, 0.0])])[0]      # H e_2 = A e_2
    tensor([0., 4., 0.])
    >>> round(top_hessian_eigenvalue(loss, [x], generator=torch.Generator().manual_seed(0)).value, 2)
    9.0

References:
    J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, "Gradient Descent on Neural Networks Typically
    Occurs at the Edge of Stability", ICLR 2021, arXiv:2103.00065.
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware Minimization for Efficiently
    Improving Generalization", ICLR 2021, arXiv:2010.01412.
    J. Kwon, J. Kim, H. Park, I. K. Choi, "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
    Learning of Deep Neural Networks", ICML 2021, arXiv:2102.11600.
    P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov, A. G. Wilson, "Averaging Weights Leads to Wider
    Optima and Better Generalization", UAI 2018, arXiv:1803.05407.
    B. A. Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation 1994.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from book.checks import integer, nonnegative, number

__all__ = ["hvp", "top_hessian_eigenvalue", "TopEigen", "SAM", "ema_update_", "swa_update_", "update_bn"]


# ---------------------------------------------------------------------------
# Hessian-vector products and the sharpness


def _as_list(tensors, name: str) -> list[Tensor]:
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if not tensors:
        raise ValueError(f"{name} is empty")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must hold tensors, got {type(t).__name__}")
    return tensors


def _check_params(params) -> list[Tensor]:
    params = _as_list(params, "params")
    for i, p in enumerate(params):
        if not p.requires_grad:
            raise ValueError(f"params[{i}] does not require grad: the Hessian is taken with respect to it")
    return params


def _grads_with_graph(loss_fn: Callable[[], Tensor], params: list[Tensor]) -> tuple[Tensor]:
    """The gradient of ``loss_fn()`` with its graph kept, so that it can be differentiated again."""
    with torch.enable_grad():
        loss = loss_fn()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
        return torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)


def _hvp_from_grads(grads, params: list[Tensor], v: list[Tensor]) -> list[Tensor]:
    # Hv = ∇_w (∇L(w)ᵀ v): one more backward pass through the gradient's graph (Pearlmutter, 1994)
    pairs = [(g, u) for g, u in zip(grads, v) if g is not None and g.requires_grad]
    if not pairs:  # the loss is at most linear in params: H = 0
        return [torch.zeros_like(p) for p in params]
    dot = sum((g * u).sum() for g, u in pairs)
    hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params)]


def hvp(loss_fn: Callable[[], Tensor], params, v) -> list[Tensor]:
    r"""The Hessian-vector product :math:`Hv` of ``loss_fn()`` with respect to ``params``, by double backward.

    .. math::
        H v = \nabla_w \big( \nabla_w L(w)^\top v \big)

    costs about two backward passes and never forms :math:`H` (Pearlmutter, 1994).

    Args:
        loss_fn: a function of no arguments returning the scalar loss at the current ``params``
            (a closure, as for ``optimizer.step(closure)``; it need not call ``backward``).
        params: the tensors (``requires_grad=True``) the Hessian is taken with respect to:
            one tensor or a list (e.g. ``list(model.parameters())``).
        v: a tensor per parameter, of the same shapes: the vector, split like ``params``.

    Returns:
        ``[Hv]`` as a list of detached tensors shaped like ``params``.

    Example:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> hvp(lambda: (x ** 3).sum(), x, torch.ones(2))       # H = diag(6x)
        [tensor([ 6., 12.])]
    """
    params = _check_params(params)
    v = _as_list(v, "v")
    if len(v) != len(params):
        raise ValueError(f"v has {len(v)} tensors but params has {len(params)}")
    for i, (u, p) in enumerate(zip(v, params)):
        if u.shape != p.shape:
            raise ValueError(f"v[{i}] has shape {tuple(u.shape)} but params[{i}] has shape {tuple(p.shape)}")
    v = [u.to(device=p.device, dtype=p.dtype) for u, p in zip(v, params)]
    return _hvp_from_grads(_grads_with_graph(loss_fn, params), params, v)


class TopEigen(NamedTuple):
    """The result of :func:`top_hessian_eigenvalue`."""

    value: float            # the largest eigenvalue λ_max of H
    vector: list[Tensor]    # a unit eigenvector, split like params
    iterations: int         # Hessian-vector products spent
    converged: bool         # whether the relative change fell below tol


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _power_iteration(op, v: list[Tensor], iters: int, tol: float) -> tuple[float, list[Tensor], int, bool]:
    norm = _dot(v, v).sqrt()
    v = [x / norm for x in v]
    value, prev = 0.0, None
    for k in range(1, iters + 1):
        hv = op(v)
        value = _dot(v, hv).item()                   # Rayleigh quotient vᵀHv, ‖v‖ = 1
        norm = _dot(hv, hv).sqrt()
        if norm == 0:                               # v lies in the null space
            return 0.0, v, k, True
        v = [x / norm for x in hv]                  # v ← Hv / ‖Hv‖
        if prev is not None and abs(value - prev) <= tol * max(abs(value), 1e-30):
            return value, v, k, True
        prev = value
    return value, v, iters, False


def top_hessian_eigenvalue(loss_fn: Callable[[], Tensor], params, iters: int = 100, tol: float = 1e-4,
                           generator: torch.Generator | None = None, v0=None) -> TopEigen:
    r"""The sharpness: the largest eigenvalue of the Hessian of ``loss_fn()``, by power iteration on :func:`hvp`.

    .. math::
        v_{k+1} = \frac{H v_k}{\|H v_k\|}, \qquad \lambda_k = v_k^\top H v_k \to \lambda_{\max}

    from a random unit :math:`v_0` (or a given one), until :math:`|\lambda_k - \lambda_{k-1}| \le \text{tol}\,|\lambda_k|`
    or ``iters`` products. The gradient's graph is built once and reused by every product.

    Note:
        Power iteration finds the eigenvalue of largest *magnitude*. If that one is negative (a saddle
        with strong negative curvature), a second run on :math:`H - \mu I` (:math:`\mu` the first
        result) finds :math:`\lambda_{\max}` as the returned value, so the result is always the largest
        algebraic eigenvalue, the one that sets the stability limit :math:`\lambda_{\max} < 2/\eta` of
        gradient descent. Convergence is geometric with ratio :math:`|\lambda_2 / \lambda_1|`: slow when
        the top two eigenvalues are close (then ``converged`` may be ``False``: read ``iterations``).
        Cohen et al. (2021) use Lanczos, which converges faster on the same products.

    Args:
        loss_fn: a function of no arguments returning the scalar loss (e.g. the full-batch loss).
        params: the tensors the Hessian is taken with respect to.
        iters: at most this many Hessian-vector products (per run).
        tol: relative change of the estimate at which to stop.
        generator: for the random start (on any device); seeded runs repeat exactly.
        v0: a start vector, split like ``params`` (it need not be a unit vector), instead of a random one:
            pass the ``vector`` of the previous estimate to follow the sharpness along a training run
            with fewer products (a warm start; the top eigenvector moves little between nearby weights).

    Returns:
        :class:`TopEigen` ``(value, vector, iterations, converged)``.

    Example:
        >>> A = torch.tensor([[2.0, 1.0], [1.0, 2.0]])          # eigenvalues 1 and 3
        >>> x = torch.zeros(2, requires_grad=True)
        >>> top = top_hessian_eigenvalue(lambda: 0.5 * x @ A @ x, x, generator=torch.Generator().manual_seed(0))
        >>> round(top.value, 3), top.converged
        (3.0, True)
    """
    params = _check_params(params)
    iters = integer(iters, "iters", minimum=1)
    tol = nonnegative(tol, "tol")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    grads = _grads_with_graph(loss_fn, params)

    def op(v):
        return _hvp_from_grads(grads, params, v)

    if v0 is not None:
        v0 = _as_list(v0, "v0")
        if len(v0) != len(params) or any(u.shape != p.shape for u, p in zip(v0, params)):
            raise ValueError(f"v0 must hold one tensor shaped like each of params; got shapes "
                             f"{[tuple(u.shape) for u in v0]} for {[tuple(p.shape) for p in params]}")
        v0 = [u.detach().to(device=p.device, dtype=p.dtype) for u, p in zip(v0, params)]
        if float(_dot(v0, v0)) == 0:
            raise ValueError("v0 is the zero vector: power iteration needs a start with a nonzero norm")
    else:
        gen_device = generator.device if generator is not None else None
        v0 = [torch.randn(p.shape, generator=generator, dtype=p.dtype, device=gen_device or p.device).to(p.device)
              for p in params]
    value, v, k, converged = _power_iteration(op, v0, iters, tol)
    if value < 0:  # dominant eigenvalue is negative: the largest one is μ + top eigenvalue of H - μI ≥ 0 shift
        mu = value

        def shifted(u):
            return [h - mu * x for h, x in zip(op(u), u)]

        shift_value, v, k2, converged = _power_iteration(shifted, v0, iters, tol)
        value, k = shift_value + mu, k + k2
    return TopEigen(value, [x.detach() for x in v], k, converged)


# ---------------------------------------------------------------------------
# Sharpness-aware minimization


class SAM(torch.optim.Optimizer):
    r"""Sharpness-aware minimization (Foret et al., 2021) around any base optimizer.

    Each step takes two gradients: :math:`g = \nabla L(w)`, then the gradient at the perturbed point

    .. math::
        \epsilon = \rho \frac{g}{\|g\|}, \qquad
        g_{\text{SAM}} = \nabla L(w + \epsilon),

    and the base optimizer steps from the *original* :math:`w` with :math:`g_{\text{SAM}}`.
    :math:`\|g\|` is the norm of all gradients as one vector. With ``adaptive=True`` it is ASAM
    (Kwon et al., 2021) with :math:`T_w = |w|`: :math:`\epsilon = \rho\, T_w^2 g / \|T_w g\|`.

    ``rho`` is :math:`\rho` (the radius; the paper uses 0.05); ``base_optimizer`` is a
    ``torch.optim.Optimizer`` class built on the same parameter groups with ``**kwargs``
    (``SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)``).

    Two ways to call it::

        def closure():                    # what torch's LBFGS takes: zero, forward, backward
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)                 # returns the loss at w (before the perturbation)

        loss_fn(model(x), y).backward()   # or by hand, as in the authors' code
        opt.first_step(zero_grad=True)    # w ← w + ε
        loss_fn(model(x), y).backward()
        opt.second_step(zero_grad=True)   # w ← w, then the base step with ∇L(w + ε)

    Note:
        The authors' widely copied implementation (github.com/davda54/sam) expects the first gradient to
        be computed *before* ``step(closure)``; here ``step`` accepts both that and ``torch.optim``'s
        protocol, in which the closure computes both gradients (see :meth:`step`). :math:`\|g\|` gets
        ``1e-12`` added, as there. ``state_dict`` is the base optimizer's (its groups carry ``rho`` and
        ``adaptive``); the perturbation only lives between ``first_step`` and ``second_step``. With ``rho=0`` a step is
        exactly the base optimizer's step, at twice the cost. With a batch-norm model both forward passes
        update the running statistics. With a fixed :math:`\rho`, SAM does not settle at a minimum: once
        :math:`\|g\|` is small, :math:`g/\|g\|` turns from step to step and the iterates bounce at a
        distance of order :math:`\rho`; there, runs that differ only by rounding part ways (on a quadratic,
        two equivalent float64 formulas of :math:`\epsilon` differ by 1e-2 after 100 steps).

    Example:
        >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = SAM([w], torch.optim.SGD, rho=0.1, lr=0.1)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> opt.step(closure).item()                            # the loss at w
        5.0
        >>> w                                                   # w - 0.1 * ∇L(w + ε)
        tensor([ 0.7911, -1.5821], requires_grad=True)
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **kwargs):
        rho = nonnegative(rho, "rho")
        if not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be a bool, got {type(adaptive).__name__}")
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            raise TypeError("base_optimizer must be a torch.optim.Optimizer class (e.g. torch.optim.SGD), "
                            f"got {base_optimizer!r}; pass its arguments to SAM as keywords")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        # the base optimizer shares these group dicts, so lr changes (schedules) reach it
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def _grad_norm(self) -> Tensor:
        # ‖g‖ (or ‖T_w g‖ for ASAM) over all parameters as one vector, on the first parameter's device
        norms = [((p.abs() if group["adaptive"] else 1.0) * p.grad).norm(2)
                 for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not norms:
            raise RuntimeError("SAM.first_step: no parameter has a gradient; call backward() first")
        device = norms[0].device
        return torch.stack([n.to(device) for n in norms]).norm(2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the perturbed point ``w + ε`` (remembering ``w``), using the gradients in ``.grad``."""
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                # ε = ρ g/‖g‖ (ASAM: ρ w²g/‖|w|g‖)
                e_w = (p * p if group["adaptive"] else 1.0) * p.grad * scale.to(p)
                p.add_(e_w)                                                          # w ← w + ε
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to ``w`` and step the base optimizer with the gradients in ``.grad`` (taken at ``w + ε``)."""
        for group in self.param_groups:
            for p in group["params"]:
                if "old_p" in self.state[p]:
                    p.copy_(self.state[p].pop("old_p"))                              # w ← w
        self.base_optimizer.step()                                                   # base step with ∇L(w + ε)
        if zero_grad:
            self.zero_grad()

    def step(self, closure=None):
        """One SAM step: the gradient at ``w``, :meth:`first_step`, ``closure()`` at ``w + ε``, :meth:`second_step`.

        The gradient at ``w`` is the one already in ``.grad`` if any parameter has one (you, or
        :func:`book.train.fit` with ``closure=True``, called ``backward()`` before ``step``: the authors'
        protocol, which also lets a gradient-clipping hook act on it); otherwise ``closure()`` computes it
        (``torch.optim``'s protocol) and its loss is returned. The gradients are set to ``None`` at the end,
        so a stale one is never taken for the next step's.
        """
        if closure is None:
            raise RuntimeError("SAM needs a closure (zero_grad, forward, backward, return loss), "
                               "or call first_step() and second_step() yourself")
        loss = None
        if all(p.grad is None for group in self.param_groups for p in group["params"]):
            with torch.enable_grad():
                loss = closure()
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            closure()
        self.second_step(zero_grad=True)
        return loss

    def state_dict(self):
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups  # load_state_dict made new group dicts


# ---------------------------------------------------------------------------
# Weight averaging


def _pairs(avg_params, params) -> tuple[list[Tensor], list[Tensor]]:
    avg_params, params = _as_list(avg_params, "avg_params"), _as_list(params, "params")
    if len(avg_params) != len(params):
        raise ValueError(f"avg_params has {len(avg_params)} tensors but params has {len(params)}")
    for i, (a, p) in enumerate(zip(avg_params, params)):
        if a.shape != p.shape:
            raise ValueError(f"avg_params[{i}] has shape {tuple(a.shape)} but params[{i}] has shape {tuple(p.shape)}")
    return avg_params, params


@torch.no_grad()
def ema_update_(avg_params, params, decay: float = 0.999) -> None:
    r"""Exponential moving average of weights, in place: :math:`\bar w \leftarrow \beta \bar w + (1-\beta) w`.

    Written as the interpolation :math:`\bar w \leftarrow \bar w + (1-\beta)(w - \bar w)` (``lerp_``), which
    is how ``torch.optim.swa_utils.get_ema_multi_avg_fn(decay)`` computes it, so the two agree bit for bit.
    ``decay`` is :math:`\beta`; the average spans about :math:`1/(1-\beta)` recent steps.

    Note:
        ``AveragedModel`` copies the weights at its first update (``n_averaged == 0``) and applies this
        rule from the second on; start ``avg_params`` as a copy of the weights to do the same. There is
        no bias correction (unlike Adam's moments), which is why the copy matters.

    Example:
        >>> avg, w = [torch.zeros(2)], [torch.ones(2)]
        >>> ema_update_(avg, w, decay=0.9); avg
        [tensor([0.1000, 0.1000])]
    """
    decay = number(decay, "decay", low=0, high=1)
    for a, p in zip(*_pairs(avg_params, params)):
        a.lerp_(p.detach().to(a), 1 - decay)  # to the average's device and dtype (lerp_ needs one dtype)


@torch.no_grad()
def swa_update_(avg_params, params, num_averaged: int) -> None:
    r"""Stochastic weight averaging, in place: the running mean :math:`\bar w \leftarrow \bar w + (w - \bar w)/(n+1)`.

    After the weights :math:`w_1, \dots, w_{n+1}` have been folded in (the first by copying, as
    ``AveragedModel`` does), :math:`\bar w` is their equal-weight mean (Izmailov et al., 2018).
    ``num_averaged`` is :math:`n`, the number of weights already in :math:`\bar w`.

    Note:
        ``AveragedModel``'s default average takes one of two roads by device: on the CPU
        ``get_swa_avg_fn``'s :math:`\bar w + (w - \bar w)/(n+1)`, which this function computes, so the two
        agree bit for bit; on CUDA ``get_swa_multi_avg_fn``'s ``_foreach_lerp_`` with the weight
        ``1 / (n_averaged + 1)`` computed as a float32 tensor, which agrees to rounding in float32 but, for
        float64 weights, carries the float32 rounding of :math:`1/(n+1)` (relative error up to about 6e-8).

    Example:
        >>> avg = [torch.tensor([1.0])]
        >>> swa_update_(avg, [torch.tensor([3.0])], num_averaged=1); avg     # mean of 1 and 3
        [tensor([2.])]
    """
    n = integer(num_averaged, "num_averaged", minimum=0)
    for a, p in zip(*_pairs(avg_params, params)):
        a.add_((p.detach().to(a.device) - a) / (n + 1))     # w̄ ← w̄ + (w − w̄)/(n+1)


def _is_batch_norm(module: torch.nn.Module) -> bool:
    # torch.nn's _BatchNorm, and any module shaped like it (book.normalization's, which kernels may not import)
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return True
    return (hasattr(module, "reset_running_stats") and hasattr(module, "momentum")
            and isinstance(getattr(module, "running_mean", None), Tensor))


@torch.no_grad()
def update_bn(loader: Iterable, model: torch.nn.Module, device: torch.device | str | None = None) -> None:
    r"""Recompute the batch-norm running statistics of ``model`` with one pass over ``loader``.

    Averaged weights were never trained with the running statistics they inherit, so after
    :func:`swa_update_` the statistics are recomputed: reset them, set ``momentum=None`` (a cumulative
    average of the batch statistics, :math:`\bar\mu = \frac1B\sum_b \mu_b`), run every batch forward in
    train mode, then restore the momenta and the train/eval mode. Each batch is a tensor or a
    list/tuple whose first element is the input.

    The same procedure as ``torch.optim.swa_utils.update_bn``, with equal statistics; it also treats
    the book's ``book.normalization.BatchNorm1d/2d``, which torch's version does not recognise.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        >>> update_bn([torch.randn(8, 3) for _ in range(2)], net)
        >>> int(net[1].num_batches_tracked)
        2
    """
    momenta = {}
    for module in model.modules():
        if _is_batch_norm(module):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None        # cumulative moving average over this pass
    for batch in loader:
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        if device is not None:
            batch = batch.to(device)
        model(batch)
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.train(was_training)
