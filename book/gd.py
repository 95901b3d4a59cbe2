r"""Full-batch descent methods: gradient descent, momentum, Newton, and a line search.

Every method here takes a function ``f`` that maps one point, a ``(dim,)`` tensor, to a
scalar, and a start point ``x0``. Gradients (and Newton's Hessians) come from autograd,
so ``f`` can be any differentiable torch code, for example a landscape from
:mod:`book.landscapes`. The methods return the whole path as a ``(steps + 1, dim)``
tensor whose first row is ``x0``, on ``x0``'s device and in its dtype, ready to plot::

    >>> import torch
    >>> from book.gd import gradient_descent
    >>> from book.landscapes import ill_conditioned_quadratic
    >>> f = ill_conditioned_quadratic(10.0)
    >>> xs = gradient_descent(f, torch.tensor([1.0, 1.0]), lr=0.1, steps=50)
    >>> xs.shape
    torch.Size([51, 2])

The helpers :func:`optimal_lr`, :func:`gd_rate` and :func:`convergence_rate` put numbers
on the theory of gradient descent on quadratics: the predicted contraction per step and
the one a run actually shows. :func:`momentum_spectral_radius`, :func:`optimal_momentum`
and :func:`momentum_rate` do the same for the heavy ball and Nesterov's method.

References:
    Cauchy (1847), the method of steepest descent; Armijo (1966), backtracking with
    sufficient decrease; Polyak (1964), momentum (the heavy ball); Nesterov (1983), the
    accelerated gradient; Lessard, Recht & Packard (2016), momentum's optimal tunings
    on quadratics; Nocedal & Wright, *Numerical Optimization* (2006), chapters 2, 3 and 6.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import Tensor

from book import checks

__all__ = [
    "gradient_descent",
    "momentum_descent",
    "newton",
    "backtracking_line_search",
    "gradient_descent_backtracking",
    "convergence_rate",
    "optimal_lr",
    "gd_rate",
    "momentum_spectral_radius",
    "optimal_momentum",
    "momentum_rate",
]

Objective = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------------
# Validation and the one autograd call every method makes


def _check_x0(x0) -> Tensor:
    if not isinstance(x0, Tensor):
        raise TypeError(
            f"x0 must be a torch.Tensor of shape (dim,), got {type(x0).__name__}; "
            "wrap it with torch.tensor(..., dtype=torch.float64)"
        )
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a 1-D tensor of shape (dim,), got shape {tuple(x0.shape)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got {x0.dtype}")
    return x0.detach()


def _check_steps(steps) -> int:
    return checks.integer(steps, "steps", 0)


def _check_lr(lr) -> float:
    return checks.nonnegative(lr, "lr")


def _value(f: Objective, x: Tensor) -> Tensor:
    """``f(x)``, checked to be a scalar tensor."""
    value = f(x)
    if not isinstance(value, Tensor):
        raise TypeError(f"f must return a torch.Tensor scalar, got {type(value).__name__}")
    if value.ndim != 0:
        raise ValueError(
            f"f must return a scalar (a 0-dim tensor) for a point of shape {tuple(x.shape)}, "
            f"got a tensor of shape {tuple(value.shape)}; reduce it, e.g. with .sum()"
        )
    return value


def _value_and_grad(f: Objective, x: Tensor) -> tuple[Tensor, Tensor]:
    """``f(x)`` and ``∇f(x)`` by autograd, both detached from any graph."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = _value(f, x)
        if not value.requires_grad:  # f does not depend on x: the gradient is zero
            return value.detach(), torch.zeros_like(x)
        (g,) = torch.autograd.grad(value, x, allow_unused=True)
    g = torch.zeros_like(x) if g is None else g
    return value.detach(), g.detach()


# ---------------------------------------------------------------------------
# The methods


def gradient_descent(f: Objective, x0: Tensor, lr: float, steps: int) -> Tensor:
    r"""Gradient descent with a fixed step size: the method of steepest descent.

    .. math::

        x_{k+1} = x_k - \eta\, \nabla f(x_k), \qquad k = 0, 1, \dots, \text{steps} - 1

    where :math:`\eta` is ``lr``. This is what ``torch.optim.SGD(lr=lr)`` does with the
    exact (full-batch) gradient, and the iterates are the same.

    Args:
        f: the objective, mapping a ``(dim,)`` tensor to a scalar tensor.
        x0: the start point, a ``(dim,)`` floating-point tensor.
        lr: the step size :math:`\eta \ge 0`.
        steps: the number of updates.

    Returns:
        The iterates :math:`x_0, \dots, x_{\text{steps}}` as a ``(steps + 1, dim)`` tensor
        on ``x0``'s device and in its dtype.

    Example:
        >>> import torch
        >>> f = lambda x: (x ** 2).sum()          # gradient 2x
        >>> gradient_descent(f, torch.tensor([1.0]), lr=0.25, steps=3).squeeze(1)
        tensor([1.0000, 0.5000, 0.2500, 0.1250])

    References:
        A.-L. Cauchy, "Méthode générale pour la résolution des systèmes d'équations
        simultanées", Comptes Rendus 25 (1847). Nocedal & Wright, *Numerical
        Optimization*, 2nd ed. (2006), chapter 3.
    """
    x = _check_x0(x0)
    lr, steps = _check_lr(lr), _check_steps(steps)
    iterates = [x]
    for _ in range(steps):
        _, g = _value_and_grad(f, x)
        x = x - lr * g  # x_{k+1} = x_k - lr * grad f(x_k)
        iterates.append(x)
    return torch.stack(iterates)  # (steps + 1, dim)


def momentum_descent(
    f: Objective,
    x0: Tensor,
    lr: float,
    momentum: float,
    steps: int,
    nesterov: bool = False,
) -> Tensor:
    r"""Gradient descent with momentum (heavy ball) or Nesterov momentum, as torch.optim.SGD.

    With :math:`\eta` = ``lr``, :math:`\mu` = ``momentum``, :math:`g_k = \nabla f(x_k)`
    and the buffer :math:`b_0 = 0` (so the first buffer is the gradient itself):

    .. math::

        b_{k+1} = \mu\, b_k + g_k, \qquad
        x_{k+1} = \begin{cases}
            x_k - \eta\, b_{k+1} & \text{(heavy ball)} \\
            x_k - \eta\, (g_k + \mu\, b_{k+1}) & \text{(nesterov=True)}
        \end{cases}

    These are ``torch.optim.SGD(lr=lr, momentum=momentum, nesterov=nesterov)``'s updates
    (with ``dampening=0``), and with the exact gradient its iterates are the same.

    Note:
        Other texts write momentum differently. Polyak's heavy ball and Sutskever et
        al. keep a velocity :math:`v_{k+1} = \mu v_k - \eta g_k`, :math:`x_{k+1} = x_k +
        v_{k+1}`: with a constant ``lr`` that is this method with :math:`v = -\eta b`,
        but the two differ once ``lr`` changes during a run. The "exponential moving
        average" form :math:`v_{k+1} = \beta v_k + (1 - \beta) g_k` scales the buffer by
        :math:`1 - \beta`; it equals this method with ``lr`` multiplied by
        :math:`1 - \beta`. ``torch.optim.SGD`` refuses ``nesterov=True`` with zero
        momentum; here ``momentum=0`` is allowed and gives plain gradient descent.

    Args:
        f: the objective, mapping a ``(dim,)`` tensor to a scalar tensor.
        x0: the start point, a ``(dim,)`` floating-point tensor.
        lr: the step size :math:`\eta \ge 0`.
        momentum: :math:`\mu \in [0, 1)`.
        steps: the number of updates.
        nesterov: use Nesterov's look-ahead form.

    Returns:
        The iterates as a ``(steps + 1, dim)`` tensor on ``x0``'s device and dtype.

    Example:
        >>> import torch
        >>> f = lambda x: 0.5 * (x ** 2).sum()    # gradient x
        >>> momentum_descent(f, torch.tensor([1.0]), lr=0.5, momentum=0.5, steps=2).squeeze(1)
        tensor([1.0000, 0.5000, 0.0000])

    References:
        B. T. Polyak, "Some methods of speeding up the convergence of iteration
        methods", USSR Comput. Math. and Math. Phys. 4(5) (1964).
    """
    x = _check_x0(x0)
    lr, steps = _check_lr(lr), _check_steps(steps)
    momentum = float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(
            f"momentum must be in [0, 1) (0 gives plain gradient descent), got {momentum}"
        )
    b = torch.zeros_like(x)  # the momentum buffer; after one step it is the gradient
    iterates = [x]
    for _ in range(steps):
        _, g = _value_and_grad(f, x)
        b = momentum * b + g  # b_{k+1} = mu * b_k + g_k
        if nesterov:
            x = x - lr * (g + momentum * b)  # look ahead along the buffer
        else:
            x = x - lr * b
        iterates.append(x)
    return torch.stack(iterates)  # (steps + 1, dim)


def newton(
    f: Objective,
    x0: Tensor,
    steps: int,
    lr: float = 1.0,
    damping: float = 0.0,
) -> Tensor:
    r"""Newton's method, optionally damped: step to the minimum of the local quadratic model.

    .. math::

        x_{k+1} = x_k - \eta\, \bigl(\nabla^2 f(x_k) + \lambda I\bigr)^{-1} \nabla f(x_k)

    with :math:`\eta` = ``lr`` and :math:`\lambda` = ``damping``. Pure Newton
    (:math:`\eta = 1, \lambda = 0`) minimizes a quadratic with positive definite
    Hessian in one step, and near a minimum with positive definite Hessian it converges
    quadratically (the error is roughly squared at each step). A step size
    :math:`\eta < 1` shortens the steps; damping :math:`\lambda > 0` blends the step
    towards the gradient step :math:`-\nabla f / \lambda` (Levenberg's idea) and keeps
    the system solvable where the Hessian is singular or indefinite.

    The Hessian is computed by autograd (``dim`` backward passes) and the linear system
    is solved densely, which costs :math:`O(\text{dim}^2)` memory and
    :math:`O(\text{dim}^3)` time per step: fine for a handful of variables, impossible
    for a network's millions of weights.

    Note:
        Newton's step goes to the critical point of the quadratic model, whatever its
        kind: where the Hessian has negative eigenvalues it can move uphill, towards a
        saddle or a maximum. Damping larger than the most negative eigenvalue prevents
        that.

    Args:
        f: the objective, mapping a ``(dim,)`` tensor to a scalar tensor (twice
            differentiable).
        x0: the start point, a ``(dim,)`` floating-point tensor.
        steps: the number of updates.
        lr: the step size :math:`\eta \ge 0` (1 is pure Newton).
        damping: :math:`\lambda \ge 0`, added to the Hessian's diagonal.

    Returns:
        The iterates as a ``(steps + 1, dim)`` tensor on ``x0``'s device and dtype.

    Raises:
        ValueError: if :math:`\nabla^2 f(x_k) + \lambda I` is singular at some step
            (increase ``damping``), or for invalid arguments.

    Example:
        >>> import torch
        >>> from book.landscapes import quadratic
        >>> f = quadratic([[3.0, 1.0], [1.0, 2.0]], b=[1.0, 1.0])
        >>> newton(f, torch.zeros(2, dtype=torch.float64), steps=1)[-1]   # A^{-1} b
        tensor([0.2000, 0.4000], dtype=torch.float64)

    References:
        Nocedal & Wright, *Numerical Optimization*, 2nd ed. (2006), chapters 2 and 3.
    """
    x = _check_x0(x0)
    lr, steps = _check_lr(lr), _check_steps(steps)
    damping = checks.nonnegative(damping, "damping")
    eye = torch.eye(x.numel(), device=x.device, dtype=x.dtype)
    iterates = [x]
    for k in range(steps):
        _, g = _value_and_grad(f, x)
        H = torch.autograd.functional.hessian(f, x)  # (dim, dim)
        try:
            d = torch.linalg.solve(H + damping * eye, g)  # (H + damping I) d = g
        except torch.linalg.LinAlgError as err:
            raise ValueError(
                f"the Newton system is singular at step {k} (x = {x.tolist()}): the Hessian "
                f"plus damping = {damping} has a zero eigenvalue; use damping > 0"
            ) from err
        if not bool(torch.isfinite(d).all()):
            raise ValueError(
                f"the Newton system is singular at step {k} (x = {x.tolist()}): solving it "
                f"gave non-finite values; use damping > 0"
            )
        x = x - lr * d
        iterates.append(x)
    return torch.stack(iterates)  # (steps + 1, dim)


# ---------------------------------------------------------------------------
# Line search


def _check_line_search(lr0, shrink, c, max_halvings):
    lr0, shrink, c = checks.positive(lr0, "lr0"), checks.number(shrink, "shrink"), checks.number(c, "c")
    if not 0.0 < shrink < 1.0:
        raise ValueError(f"shrink must be in (0, 1), got {shrink}")
    if not 0.0 < c < 1.0:
        raise ValueError(f"c must be in (0, 1), got {c}")
    max_halvings = checks.integer(max_halvings, "max_halvings", 0)
    return lr0, shrink, c, max_halvings


def backtracking_line_search(
    f: Objective,
    x: Tensor,
    direction: Tensor | None = None,
    lr0: float = 1.0,
    shrink: float = 0.5,
    c: float = 1e-4,
    max_halvings: int = 50,
) -> float:
    r"""Backtracking (Armijo) line search: the first step size that decreases ``f`` enough.

    Tries :math:`t = t_0, \rho t_0, \rho^2 t_0, \dots` and returns the first that satisfies
    the Armijo (sufficient decrease) condition

    .. math::

        f(x + t\, d) \le f(x) + c\, t\, \nabla f(x)^\top d

    where :math:`d` is ``direction`` (the negative gradient when omitted), :math:`t_0` =
    ``lr0``, :math:`\rho` = ``shrink`` and :math:`c` = ``c``. For a descent direction
    (:math:`\nabla f(x)^\top d < 0`) of a smooth function some small enough :math:`t`
    always qualifies.

    Args:
        f: the objective, mapping a ``(dim,)`` tensor to a scalar tensor.
        x: the current point, a ``(dim,)`` tensor.
        direction: the search direction :math:`d`; :math:`-\nabla f(x)` when omitted.
        lr0: the first (largest) step size tried, > 0.
        shrink: the factor :math:`\rho \in (0, 1)` applied after each rejection.
        c: the sufficient-decrease constant, in :math:`(0, 1)`; the usual 1e-4 asks for
            only a little of the decrease the slope promises.
        max_halvings: how many times to shrink before giving up.

    Returns:
        The accepted step size as a Python float: ``lr0`` when the full step is already
        good enough. If no step up to ``lr0 * shrink**max_halvings`` qualifies (which
        happens only at the limit of floating-point precision, where ``f`` cannot decrease
        measurably), returns ``0.0``: stay where you are.

    Raises:
        ValueError: if ``direction`` points uphill (:math:`\nabla f(x)^\top d > 0`), or
            for invalid arguments.

    Example:
        >>> import torch
        >>> f = lambda x: (x ** 2).sum()            # the gradient step 1 overshoots to -x
        >>> backtracking_line_search(f, torch.tensor([1.0, 2.0]))
        0.5

    References:
        L. Armijo, "Minimization of functions having Lipschitz continuous first partial
        derivatives", Pacific J. Math. 16(1) (1966). Nocedal & Wright (2006), section 3.1.
    """
    x = _check_x0(x)
    lr0, shrink, c, max_halvings = _check_line_search(lr0, shrink, c, max_halvings)
    fx, g = _value_and_grad(f, x)
    d = -g if direction is None else direction.detach().to(x)
    if d.shape != x.shape:
        raise ValueError(f"direction must have the shape of x, {tuple(x.shape)}, got {tuple(d.shape)}")
    return _armijo(f, x, fx, g, d, lr0, shrink, c, max_halvings)


def _armijo(f, x, fx, g, d, lr0, shrink, c, max_halvings) -> float:
    """The backtracking loop of :func:`backtracking_line_search`, given f(x) and its gradient."""
    slope = float(g @ d)  # the directional derivative grad f(x)^T d
    if slope > 0.0:
        raise ValueError(f"direction is not a descent direction: grad f(x)^T d = {slope:.3g} > 0")
    fx = float(fx)
    t = lr0
    with torch.no_grad():
        for _ in range(max_halvings + 1):
            if float(_value(f, x + t * d)) <= fx + c * t * slope:  # Armijo's condition
                return t
            t *= shrink
    return 0.0


def gradient_descent_backtracking(
    f: Objective,
    x0: Tensor,
    steps: int,
    lr0: float = 1.0,
    shrink: float = 0.5,
    c: float = 1e-4,
) -> tuple[Tensor, Tensor]:
    r"""Gradient descent whose step size is chosen at every step by backtracking.

    .. math::

        x_{k+1} = x_k - t_k \nabla f(x_k), \qquad
        t_k = \text{the first of } t_0, \rho t_0, \rho^2 t_0, \dots \text{ with }
        f(x_{k+1}) \le f(x_k) - c\, t_k \|\nabla f(x_k)\|^2

    (see :func:`backtracking_line_search`). Each search starts again from ``lr0``, so
    the step can grow back after the landscape flattens.

    Args:
        f: the objective, mapping a ``(dim,)`` tensor to a scalar tensor.
        x0: the start point, a ``(dim,)`` floating-point tensor.
        steps: the number of updates.
        lr0, shrink, c: as in :func:`backtracking_line_search`.

    Returns:
        ``(iterates, step_sizes)``: the ``(steps + 1, dim)`` iterates (first row ``x0``)
        and the ``(steps,)`` accepted step sizes :math:`t_k`, both on ``x0``'s device
        and dtype.

    Example:
        >>> import torch
        >>> from book.landscapes import rosenbrock
        >>> x0 = torch.tensor([-1.5, 2.0], dtype=torch.float64)
        >>> xs, ts = gradient_descent_backtracking(rosenbrock, x0, steps=2000, lr0=0.01)
        >>> bool(rosenbrock(xs[-1]) < rosenbrock(x0) / 1e4), bool(ts.min() < 0.01)
        (True, True)

    References:
        Armijo (1966); Nocedal & Wright (2006), section 3.1.
    """
    x = _check_x0(x0)
    steps = _check_steps(steps)
    lr0, shrink, c, max_halvings = _check_line_search(lr0, shrink, c, 50)
    iterates, step_sizes = [x], []
    for _ in range(steps):
        fx, g = _value_and_grad(f, x)
        t = _armijo(f, x, fx, g, -g, lr0, shrink, c, max_halvings)  # search along -grad
        x = x - t * g
        iterates.append(x)
        step_sizes.append(t)
    return torch.stack(iterates), torch.tensor(step_sizes, device=x.device, dtype=x.dtype)


# ---------------------------------------------------------------------------
# Rates


def convergence_rate(iterates: Tensor, x_star, skip: int | None = None) -> float:
    r"""The measured linear rate :math:`\rho` of a run: the factor by which the error shrinks per step.

    With errors :math:`e_k = \|x_k - x^\star\|`, fits :math:`\log e_k \approx a + k \log
    \rho` by least squares over the tail of the run and returns :math:`\rho`. On a
    quadratic, gradient descent has :math:`e_k \approx C \rho^k` for large :math:`k`, so
    this recovers the predicted rate (:func:`gd_rate`). A rate above 1 means divergence.

    Which steps count:

    * errors at or below the rounding floor :math:`\sqrt{\varepsilon}\,\|x^\star\|`
      (with :math:`\varepsilon` the dtype's machine epsilon; exact zeros included) and
      non-finite errors end the usable part of the run: past them the error is
      rounding noise or overflow, not the method's rate;
    * of the usable steps, the first ``skip`` are dropped, because the error only
      settles into its asymptotic rate after the faster components have died out.
      The default drops the first half.

    Args:
        iterates: the ``(n, dim)`` iterates of a run, as the methods here return.
        x_star: the minimizer, a ``(dim,)`` tensor (or sequence).
        skip: the number of leading steps to ignore; ``None`` means half of the usable
            steps. At least two points are always kept.

    Returns:
        :math:`\rho` as a float. ``0.0`` if the error reached the floor after a single
        step (faster than any linear rate can show).

    Example:
        >>> import torch
        >>> xs = torch.tensor([[1.0], [0.5], [0.25], [0.125]], dtype=torch.float64)
        >>> round(convergence_rate(xs, torch.zeros(1), skip=0), 12)
        0.5
    """
    if not isinstance(iterates, Tensor) or iterates.ndim != 2:
        shape = tuple(iterates.shape) if isinstance(iterates, Tensor) else type(iterates).__name__
        raise ValueError(f"iterates must be a (n, dim) tensor, got {shape}")
    xs = iterates.detach().to("cpu", torch.float64)
    x_star = torch.as_tensor(x_star).detach().to("cpu", torch.float64).reshape(-1)
    if x_star.shape[0] != xs.shape[1]:
        raise ValueError(f"x_star has {x_star.shape[0]} coordinates but the iterates have {xs.shape[1]}")
    if xs.shape[0] < 2:
        raise ValueError(f"need at least 2 iterates to measure a rate, got {xs.shape[0]}")
    eps = torch.finfo(iterates.dtype).eps if iterates.is_floating_point() else 2.0**-52
    floor = max(math.sqrt(eps) * float(x_star.norm()), 1e3 * torch.finfo(torch.float64).tiny)
    errors = (xs - x_star).norm(dim=1)
    usable = torch.isfinite(errors) & (errors > floor)
    n = int(usable.numel()) if bool(usable.all()) else int((~usable).nonzero()[0, 0])
    if n == 0:
        raise ValueError("the start point is already at x_star (to rounding): no rate to measure")
    if n == 1:
        if bool(torch.isfinite(errors[1])):
            return 0.0  # reached x_star (to rounding) in one step
        raise ValueError("the run overflowed after one step: no rate to measure")
    skip = n // 2 if skip is None else int(skip)
    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")
    start = min(skip, n - 2)
    k = torch.arange(start, n, dtype=torch.float64)
    log_e = errors[start:n].log()
    kc = k - k.mean()
    slope = float((kc * (log_e - log_e.mean())).sum() / (kc**2).sum())
    return math.exp(slope)


def _check_curvatures(mu, L) -> tuple[float, float]:
    mu, L = float(mu), float(L)
    if not (0.0 <= mu <= L and 0.0 < L < math.inf):
        raise ValueError(
            f"need 0 <= mu <= L with L > 0 (the smallest and largest curvature), got mu={mu}, L={L}"
        )
    return mu, L


def optimal_lr(mu: float, L: float) -> float:
    r"""The fixed step size that makes gradient descent fastest on a quadratic.

    For a quadratic whose Hessian has eigenvalues in :math:`[\mu, L]`,

    .. math::

        \eta^\star = \frac{2}{L + \mu},

    which balances the contraction :math:`|1 - \eta\mu|` of the flattest direction
    against :math:`|1 - \eta L|` of the steepest.

    Example:
        >>> optimal_lr(1.0, 9.0)
        0.2
    """
    mu, L = _check_curvatures(mu, L)
    return 2.0 / (L + mu)


def gd_rate(mu: float, L: float, lr: float | None = None) -> float:
    r"""The predicted rate of gradient descent on a quadratic with curvatures in :math:`[\mu, L]`.

    .. math::

        \rho(\eta) = \max\bigl(|1 - \eta\mu|,\ |1 - \eta L|\bigr),
        \qquad \|x_k - x^\star\| \le \rho(\eta)^k\, \|x_0 - x^\star\|

    Gradient descent converges when :math:`\rho < 1`, i.e. :math:`0 < \eta < 2/L`. At the
    optimal step :math:`\eta^\star = 2/(L + \mu)` (the default when ``lr`` is ``None``)
    the rate is :math:`(\kappa - 1)/(\kappa + 1)` with :math:`\kappa = L/\mu`.

    Example:
        >>> gd_rate(1.0, 9.0)                 # (9 - 1) / (9 + 1)
        0.8
        >>> gd_rate(1.0, 9.0, lr=1 / 9)       # 1 - 1/kappa
        0.8888888888888888
    """
    mu, L = _check_curvatures(mu, L)
    lr = optimal_lr(mu, L) if lr is None else _check_lr(lr)
    return max(abs(1.0 - lr * mu), abs(1.0 - lr * L))


# ---------------------------------------------------------------------------
# Momentum on quadratics


def _check_momentum_coefficient(momentum) -> float:
    return checks.number(momentum, "momentum", low=0, high=1)


def momentum_spectral_radius(lr, momentum, curvature, nesterov: bool = False) -> Tensor:
    r"""How fast momentum shrinks the error along one eigenvector of a quadratic's Hessian.

    On :math:`f(x) = \tfrac12 (x - x^\star)^\top A (x - x^\star)` the component of the
    error along an eigenvector of :math:`A` with eigenvalue :math:`\lambda` (the
    ``curvature``) evolves by itself, by a linear recurrence of order two. With
    :math:`\eta` = ``lr``, :math:`\beta` = ``momentum`` and :math:`t = \eta\lambda`,
    the heavy ball :math:`x_{k+1} = x_k - \eta \nabla f(x_k) + \beta (x_k - x_{k-1})`
    and Nesterov's method have the characteristic polynomials

    .. math::

        z^2 - (1 + \beta - t)\, z + \beta \quad \text{(heavy ball)}, \qquad
        z^2 - (1 + \beta)(1 - t)\, z + \beta (1 - t) \quad \text{(Nesterov)},

    which are also those of the :math:`2 \times 2` iteration matrices of
    ``torch.optim.SGD``'s buffer form (see :func:`momentum_descent`). This function
    returns the spectral radius :math:`\rho = \max |z|` over the two roots: the error
    component shrinks like :math:`\rho^k` (like :math:`k \rho^k` where the roots
    coincide). When the roots are complex, :math:`\rho = \sqrt{\beta}` (heavy ball) or
    :math:`\sqrt{\beta (1 - t)}` (Nesterov), independently of how the error started: the
    iterate spirals in.

    The heavy ball converges (:math:`\rho < 1`) exactly when :math:`0 < t < 2(1 + \beta)`,
    Nesterov's method exactly when :math:`0 < t < 2(1 + \beta)/(1 + 2\beta)`, and plain
    gradient descent (``momentum=0``, :math:`\rho = |1 - t|`) when :math:`0 < t < 2`.

    Note:
        ``lr`` and ``momentum`` are in ``torch.optim.SGD``'s convention, which for a
        constant step size is also Polyak's and Sutskever et al.'s. For the "EMA" form
        :math:`m \leftarrow \beta m + (1 - \beta) g`, :math:`x \leftarrow x - \alpha m`,
        pass ``lr`` :math:`= \alpha (1 - \beta)`.

    Args:
        lr: the step size :math:`\eta \ge 0` (a float or a tensor).
        momentum: :math:`\beta \in [0, 1]` (a float or a tensor).
        curvature: the eigenvalue :math:`\lambda` (a float or a tensor; negative values
            describe directions of negative curvature).
        nesterov: Nesterov's method instead of the heavy ball.

    Returns:
        A tensor of the spectral radii, broadcast over the three arguments, in float64
        (or in the floating dtype and on the device of the tensor arguments).

    Example:
        >>> momentum_spectral_radius(0.1, 0.0, 10.0)          # gradient descent, t = 1
        tensor(0., dtype=torch.float64)
        >>> momentum_spectral_radius(0.25, 0.25, 9.0)         # complex roots: sqrt(beta)
        tensor(0.5000, dtype=torch.float64)

    References:
        Polyak (1964); Nesterov (1983); Lessard, Recht & Packard, "Analysis and design
        of optimization algorithms via integral quadratic constraints", SIAM J. Optim.
        26(1) (2016); Goh, "Why momentum really works", Distill (2017).
    """
    tensors = [a for a in (lr, momentum, curvature) if isinstance(a, Tensor)]
    floating = [a.dtype for a in tensors if a.is_floating_point()]
    dtype = functools.reduce(torch.promote_types, floating) if floating else torch.float64
    device = tensors[0].device if tensors else None
    eta = torch.as_tensor(lr, dtype=dtype, device=device)
    beta = torch.as_tensor(momentum, dtype=dtype, device=device)
    lam = torch.as_tensor(curvature, dtype=dtype, device=device)
    if not bool(torch.isfinite(eta).all()):
        raise ValueError(f"lr must be finite, got {lr}")
    if not bool((eta >= 0).all()):
        raise ValueError(f"lr must be >= 0, got {lr}")
    if not bool(((beta >= 0) & (beta <= 1)).all()):
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if not bool(torch.isfinite(lam).all()):
        raise ValueError(f"curvature must be finite, got {curvature}")
    t = eta * lam
    if nesterov:
        trace, det = (1 + beta) * (1 - t), beta * (1 - t)  # z^2 - trace z + det
    else:
        trace, det = 1 + beta - t, beta + torch.zeros_like(t)
    disc = trace**2 - 4 * det
    real = (trace.abs() + disc.clamp_min(0).sqrt()) / 2  # the larger root in magnitude
    complex_ = det.clamp_min(0).sqrt()  # |z|^2 = det for a complex pair
    return torch.where(disc < 0, complex_, real)


def optimal_momentum(mu: float, L: float, nesterov: bool = False) -> tuple[float, float]:
    r"""The ``(lr, momentum)`` that make momentum fastest on a quadratic with curvatures in :math:`[\mu, L]`.

    For the heavy ball (Polyak, 1964) the optimum is

    .. math::

        \eta^\star = \frac{4}{(\sqrt{L} + \sqrt{\mu})^2}, \qquad
        \beta^\star = \left(\frac{\sqrt{\kappa} - 1}{\sqrt{\kappa} + 1}\right)^2,
        \qquad \rho^\star = \frac{\sqrt{\kappa} - 1}{\sqrt{\kappa} + 1},

    with :math:`\kappa = L/\mu`: it puts both extreme curvatures exactly on the edge
    of the region where the roots are complex, so that every curvature in between has
    :math:`\rho = \sqrt{\beta}`. For Nesterov's method the optimum on quadratics is
    (Lessard, Recht & Packard, 2016)

    .. math::

        \eta^\star = \frac{4}{3L + \mu}, \qquad
        \beta^\star = \frac{\sqrt{3\kappa + 1} - 2}{\sqrt{3\kappa + 1} + 2},
        \qquad \rho^\star = 1 - \frac{2}{\sqrt{3\kappa + 1}} .

    The usual textbook tuning of Nesterov's method, :math:`\eta = 1/L`,
    :math:`\beta = (\sqrt\kappa - 1)/(\sqrt\kappa + 1)`, has rate :math:`1 - 1/\sqrt{\kappa}`
    on quadratics and, unlike the heavy ball, keeps a rate of that order on every smooth
    strongly convex function (Nesterov, 2018, section 2.2).

    ``lr`` and ``momentum`` are in ``torch.optim.SGD``'s convention, which for a constant
    step size gives the same iterates as the textbook forms (see :func:`momentum_descent`).
    See :func:`momentum_rate` for the rate.

    Returns:
        ``(lr, momentum)`` as floats. With ``mu = 0`` the momentum is 1 and the rate 1.

    Example:
        >>> optimal_momentum(1.0, 9.0)                  # kappa = 9: beta = (2/4)^2
        (0.25, 0.25)
        >>> optimal_momentum(1.0, 8.0, nesterov=True)   # sqrt(3 kappa + 1) = 5
        (0.16, 0.42857142857142855)

    References:
        Polyak (1964); Lessard, Recht & Packard, SIAM J. Optim. 26(1) (2016), section 2.
    """
    mu, L = _check_curvatures(mu, L)
    if nesterov:
        q, r = math.sqrt(3 * L + mu), 2 * math.sqrt(mu)  # sqrt(3 kappa + 1) = q / sqrt(mu)
        return 4.0 / (3 * L + mu), (q - r) / (q + r)
    sl, sm = math.sqrt(L), math.sqrt(mu)
    return 4.0 / (sl + sm) ** 2, ((sl - sm) / (sl + sm)) ** 2


def momentum_rate(
    mu: float,
    L: float,
    lr: float | None = None,
    momentum: float | None = None,
    nesterov: bool = False,
) -> float:
    r"""The predicted rate of the heavy ball (or Nesterov) on a quadratic with curvatures in :math:`[\mu, L]`.

    .. math::

        \rho(\eta, \beta) = \max_{\lambda \in [\mu, L]} \rho_\lambda(\eta, \beta)
        = \max\bigl(\rho_\mu(\eta, \beta),\ \rho_L(\eta, \beta)\bigr)

    where :math:`\rho_\lambda` is the spectral radius of :func:`momentum_spectral_radius`.
    The maximum over the interval sits at an end because :math:`\rho_\lambda` first
    falls and then rises as :math:`\eta\lambda` grows. The error then shrinks like
    :math:`\rho^k` (up to a factor :math:`k` where the two roots coincide, as they do at
    the optimum). Without ``lr`` and ``momentum`` the optimal ones of
    :func:`optimal_momentum` are used, giving :math:`(\sqrt\kappa - 1)/(\sqrt\kappa + 1)`
    for the heavy ball and :math:`1 - 2/\sqrt{3\kappa + 1}` for Nesterov, against
    :math:`(\kappa - 1)/(\kappa + 1)` for gradient descent (:func:`gd_rate`, which is the
    case ``momentum=0``).

    Note:
        At the optimum the two roots of each extreme curvature coincide, and a double
        root is sensitive: rounding ``lr`` and ``momentum`` to floats moves the spectral
        radius by about :math:`\sqrt{\varepsilon} \approx 10^{-8}`. The default (optimal)
        call therefore returns the closed form rather than the radius at the rounded pair.

    Example:
        >>> momentum_rate(1.0, 9.0)                       # (3 - 1) / (3 + 1)
        0.5
        >>> round(momentum_rate(1.0, 8.0, nesterov=True), 12)   # 1 - 2/5
        0.6
        >>> round(momentum_rate(1.0, 100.0, lr=0.01, momentum=9 / 11, nesterov=True), 12)   # 1 - 1/sqrt(kappa)
        0.9
    """
    mu, L = _check_curvatures(mu, L)
    if (lr is None) != (momentum is None):
        raise ValueError(
            f"give both lr and momentum, or neither (for the optimal pair); got lr={lr}, momentum={momentum}"
        )
    if lr is None:  # the closed form: exact, where the radius at the rounded (lr, momentum) is not
        sl, sm = math.sqrt(L), math.sqrt(mu)
        return 1.0 - 2.0 * sm / math.sqrt(3 * L + mu) if nesterov else (sl - sm) / (sl + sm)
    lr, momentum = _check_lr(lr), _check_momentum_coefficient(momentum)
    radii = momentum_spectral_radius(lr, momentum, torch.tensor([mu, L], dtype=torch.float64), nesterov)
    return float(radii.max())
