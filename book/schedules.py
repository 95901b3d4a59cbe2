r"""Learning-rate schedules as plain functions of the step, reduce-on-plateau, and the LR range test.

A **schedule** is a function ``step -> lr``: ``step`` is the index of the optimizer step
(``0, 1, 2, ...``) and the value is the learning rate used *for* that step. Schedules are
cheap pure-Python float functions, so they can be plotted, composed and tested without an
optimizer::

    >>> from book.schedules import cosine_annealing, linear_warmup
    >>> sched = linear_warmup(cosine_annealing(0.1, total_steps=90), warmup_steps=10)
    >>> [round(sched(t), 4) for t in (0, 5, 10, 55, 100)]
    [0.0, 0.05, 0.1, 0.05, 0.0]

Every factory equals its ``torch.optim.lr_scheduler`` counterpart step for step (the tests
drive both): :func:`step_decay` = ``StepLR``, :func:`exponential_decay` = ``ExponentialLR``,
:func:`polynomial_decay` = ``PolynomialLR``, :func:`cosine_annealing` = ``CosineAnnealingLR``,
:func:`cosine_restarts` = ``CosineAnnealingWarmRestarts``, :func:`linear_warmup` =
``LinearLR`` followed by ``SequentialLR``, :func:`triangular` = ``CyclicLR(mode="triangular")``,
:func:`one_cycle` = ``OneCycleLR`` (its learning rate) and :class:`ReduceLROnPlateau` =
``ReduceLROnPlateau``. Where torch computes a value recursively (``lr_t`` from ``lr_{t-1}``)
the function here uses the closed form; the two agree to rounding.

Use a schedule with

- :func:`book.train.fit`: ``fit(..., scheduler=schedule)`` sets the lr before every step;
- any torch optimizer: ``sched = to_torch(optimizer, schedule)`` and ``sched.step()`` after
  every ``optimizer.step()``, as with torch's own schedulers;
- a hand-written loop: ``for g in optimizer.param_groups: g["lr"] = schedule(t)``.

:class:`ReduceLROnPlateau` needs a metric, so it is a small object with ``.step(metric)``;
``.callback(optimizer)`` turns it into a :func:`book.train.fit` callback.
The LR range test ("LR finder") is a training procedure: :func:`book.train.lr_range_test`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from book import checks

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "exponential_decay",
    "polynomial_decay",
    "cosine_annealing",
    "cosine_restarts",
    "linear_warmup",
    "triangular",
    "one_cycle",
    "ReduceLROnPlateau",
    "ScheduleLR",
    "to_torch",
]

Schedule = Callable[[int], float]

# ---------------------------------------------------------------------------
# Validation helpers


def _min_lr(min_lr, lr: float) -> float:
    min_lr = checks.nonnegative(min_lr, "min_lr")
    if min_lr > lr:
        raise ValueError(f"min_lr must not exceed lr, got min_lr={min_lr} > lr={lr}")
    return min_lr


def _step(t) -> int:
    return checks.integer(t, "step", 0)


def _named(fn, text: str):
    """Give a schedule a readable name: repr(schedule) shows its factory and arguments."""
    fn.__name__ = fn.__qualname__ = text
    return fn


# ---------------------------------------------------------------------------
# Schedules


def constant(lr: float) -> Schedule:
    r"""The same learning rate at every step, :math:`\eta_t = \eta`.

    Args:
        lr: :math:`\eta > 0`.

    Example:
        >>> constant(0.1)(1000)
        0.1
    """
    lr = checks.positive(lr, "lr")

    def schedule(t: int) -> float:
        _step(t)
        return lr

    return _named(schedule, f"constant(lr={lr:g})")


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` steps (torch's ``StepLR``).

    .. math::
        \eta_t = \eta\, \gamma^{\lfloor t / s \rfloor}

    with :math:`\eta` = ``lr``, :math:`s` = ``step_size``, :math:`\gamma` = ``gamma``. The
    classic ResNet recipe on ImageNet (divide by 10 when the error plateaus, He et al., 2016;
    at epochs 30, 60 and 80 in Goyal et al., 2017) is a step decay with ``gamma=0.1``.

    Example:
        >>> s = step_decay(1.0, step_size=10, gamma=0.5)
        >>> [s(t) for t in (0, 9, 10, 25)]
        [1.0, 1.0, 0.5, 0.25]
    """
    lr = checks.positive(lr, "lr")
    step_size = checks.integer(step_size, "step_size", 1)
    gamma = checks.positive(gamma, "gamma")

    def schedule(t: int) -> float:
        return lr * gamma ** (_step(t) // step_size)

    return _named(schedule, f"step_decay(lr={lr:g}, step_size={step_size}, gamma={gamma:g})")


def exponential_decay(lr: float, gamma: float) -> Schedule:
    r"""Multiply the learning rate by ``gamma`` every step (torch's ``ExponentialLR``).

    .. math::
        \eta_t = \eta\, \gamma^{t}

    A half-life of :math:`h` steps is :math:`\gamma = 2^{-1/h}`.

    Example:
        >>> exponential_decay(1.0, gamma=0.5)(3)
        0.125
    """
    lr = checks.positive(lr, "lr")
    gamma = checks.positive(gamma, "gamma")

    def schedule(t: int) -> float:
        return lr * gamma ** _step(t)

    return _named(schedule, f"exponential_decay(lr={lr:g}, gamma={gamma:g})")


def polynomial_decay(lr: float, total_steps: int, power: float = 1.0) -> Schedule:
    r"""Decay to zero over ``total_steps`` steps as a power of the remaining fraction (``PolynomialLR``).

    .. math::
        \eta_t = \eta \left(1 - \frac{\min(t, T)}{T}\right)^{p}

    with :math:`T` = ``total_steps`` and :math:`p` = ``power``; ``power=1`` is the linear
    decay to zero used to train BERT and many language models, and the rate stays 0
    after :math:`T`.

    Example:
        >>> s = polynomial_decay(1.0, total_steps=4)
        >>> [s(t) for t in range(6)]
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    lr = checks.positive(lr, "lr")
    total_steps = checks.integer(total_steps, "total_steps", 1)
    power = checks.positive(power, "power")

    def schedule(t: int) -> float:
        return lr * (1.0 - min(total_steps, _step(t)) / total_steps) ** power

    return _named(schedule, f"polynomial_decay(lr={lr:g}, total_steps={total_steps}, power={power:g})")


def _cosine(lr: float, min_lr: float, fraction: float) -> float:
    """Half a cosine from lr (fraction 0) down to min_lr (fraction 1)."""
    return min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * fraction)) / 2.0


def cosine_annealing(lr: float, total_steps: int, min_lr: float = 0.0) -> Schedule:
    r"""Half a cosine from ``lr`` down to ``min_lr`` over ``total_steps`` steps (``CosineAnnealingLR``).

    .. math::
        \eta_t = \eta_{\min} + \tfrac12 (\eta - \eta_{\min})
        \left(1 + \cos\frac{\pi \min(t, T)}{T}\right)

    with :math:`T` = ``total_steps``. The rate falls slowly at first, fastest in the middle
    and slowly again at the end: most of the training happens near the peak and the last
    steps settle. This is one period of SGDR (Loshchilov & Hutter, 2017) without restarts.

    Note:
        After :math:`T` the rate stays at ``min_lr``. Torch's ``CosineAnnealingLR`` goes
        on along the cosine and climbs back up (a period of :math:`2T`); the two agree for
        :math:`t \le T`, which is how the schedule is meant to be used.

    References:
        I. Loshchilov and F. Hutter, "SGDR: Stochastic gradient descent with warm restarts",
        ICLR 2017, arXiv:1608.03983.

    Example:
        >>> s = cosine_annealing(1.0, total_steps=4)
        >>> [round(s(t), 4) for t in range(6)]
        [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    """
    lr = checks.positive(lr, "lr")
    total_steps = checks.integer(total_steps, "total_steps", 1)
    min_lr = _min_lr(min_lr, lr)

    def schedule(t: int) -> float:
        return _cosine(lr, min_lr, min(_step(t), total_steps) / total_steps)

    return _named(schedule, f"cosine_annealing(lr={lr:g}, total_steps={total_steps}, min_lr={min_lr:g})")


def cosine_restarts(lr: float, period: int, period_mult: int = 1, min_lr: float = 0.0) -> Schedule:
    r"""Cosine annealing that restarts at ``lr`` (SGDR; torch's ``CosineAnnealingWarmRestarts``).

    .. math::
        \eta_t = \eta_{\min} + \tfrac12 (\eta - \eta_{\min})
        \left(1 + \cos\frac{\pi\, t_{\mathrm{cur}}}{T_i}\right)

    where :math:`T_0` = ``period``, :math:`T_{i+1} = m\, T_i` with :math:`m` =
    ``period_mult``, and :math:`t_{\mathrm{cur}}` counts the steps since the last restart
    (the :math:`i`-th restart happens at :math:`t = T_0 + T_1 + \dots + T_{i-1}`). Each
    restart jumps back to the peak; with :math:`m = 2` every period is twice as long as the
    one before. The step just before a restart is the end of an annealing phase, where
    Loshchilov & Hutter take snapshots of the model.

    References:
        I. Loshchilov and F. Hutter, "SGDR: Stochastic gradient descent with warm restarts",
        ICLR 2017, arXiv:1608.03983.

    Example:
        >>> s = cosine_restarts(1.0, period=2, period_mult=2)
        >>> [round(s(t), 4) for t in range(7)]
        [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0]
    """
    lr = checks.positive(lr, "lr")
    period = checks.integer(period, "period", 1)
    period_mult = checks.integer(period_mult, "period_mult", 1)
    min_lr = _min_lr(min_lr, lr)

    def schedule(t: int) -> float:
        t_cur, t_i = _step(t), period
        if period_mult == 1:
            t_cur %= period
        else:  # integer arithmetic: no log() rounding at the restart boundaries
            while t_cur >= t_i:
                t_cur -= t_i
                t_i *= period_mult
        return _cosine(lr, min_lr, t_cur / t_i)

    return _named(schedule, f"cosine_restarts(lr={lr:g}, period={period}, period_mult={period_mult}, min_lr={min_lr:g})")


def linear_warmup(schedule: Schedule, warmup_steps: int, start_factor: float = 0.0) -> Schedule:
    r"""Ramp the rate up linearly for ``warmup_steps`` steps, then follow ``schedule`` from its step 0.

    .. math::
        \eta_t = \begin{cases}
        \eta_0 \left(f + (1 - f)\, \dfrac{t}{W}\right) & t < W \\
        \operatorname{schedule}(t - W) & t \ge W
        \end{cases}

    with :math:`W` = ``warmup_steps``, :math:`f` = ``start_factor`` and :math:`\eta_0` =
    ``schedule(0)``, the wrapped schedule's peak. The ramp ends where the schedule starts,
    so the rate is continuous at the seam.

    Note:
        The wrapped schedule **starts counting at 0 after the warmup**: a
        ``cosine_annealing(lr, 90)`` wrapped in 10 warmup steps reaches ``min_lr`` at step
        100. This is what torch's ``SequentialLR([LinearLR(start_factor=f, total_iters=W),
        scheduler], milestones=[W])`` does, and the tests compare with it. (Torch's
        ``LinearLR`` needs :math:`f > 0`; here :math:`f = 0` is allowed, and then step 0
        has rate 0.)

    References:
        P. Goyal et al., "Accurate, large minibatch SGD: training ImageNet in 1 hour",
        2017, arXiv:1706.02677 (the gradual warmup for large batches).

    Example:
        >>> s = linear_warmup(constant(0.4), warmup_steps=4, start_factor=0.0)
        >>> [s(t) for t in range(6)]
        [0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.4]
    """
    if not callable(schedule):
        raise TypeError(f"schedule must be a function step -> lr, got {type(schedule).__name__}")
    warmup_steps = checks.integer(warmup_steps, "warmup_steps", 0)
    start_factor = checks.nonnegative(start_factor, "start_factor")
    if start_factor > 1:
        raise ValueError(f"start_factor must be in [0, 1], got {start_factor}")
    peak = float(schedule(0))

    def warmed(t: int) -> float:
        t = _step(t)
        if t < warmup_steps:
            return peak * (start_factor + (1.0 - start_factor) * t / warmup_steps)
        return float(schedule(t - warmup_steps))

    name = getattr(schedule, "__name__", "schedule")
    return _named(warmed, f"linear_warmup({name}, warmup_steps={warmup_steps}, start_factor={start_factor:g})")


def triangular(base_lr: float, max_lr: float, step_size_up: int, step_size_down: int | None = None) -> Schedule:
    r"""A cyclical rate: up linearly from ``base_lr`` to ``max_lr`` and back, again and again (``CyclicLR``).

    With :math:`u` = ``step_size_up``, :math:`d` = ``step_size_down`` (default :math:`u`) and
    the position in the cycle :math:`p = t \bmod (u + d)`,

    .. math::
        \eta_t = \eta_{\text{base}} + (\eta_{\max} - \eta_{\text{base}})
        \begin{cases} p / u & p \le u \\ (u + d - p) / d & p > u \end{cases}

    Smith (2017) argues that periodically raising the rate costs little and helps escape
    saddle regions, and picks the bounds with the LR range test (:func:`book.train.lr_range_test`):
    ``max_lr`` near where the loss stops falling, ``base_lr`` a few times smaller. He
    recommends a half cycle of 2 to 10 epochs.

    Note:
        Equals torch's ``CyclicLR(base_lr, max_lr, step_size_up, step_size_down,
        mode="triangular", cycle_momentum=False)``.

    References:
        L. N. Smith, "Cyclical learning rates for training neural networks", WACV 2017,
        arXiv:1506.01186.

    Example:
        >>> s = triangular(0.1, 0.5, step_size_up=2)
        >>> [round(s(t), 4) for t in range(6)]
        [0.1, 0.3, 0.5, 0.3, 0.1, 0.3]
    """
    base_lr = checks.positive(base_lr, "base_lr")
    max_lr = checks.positive(max_lr, "max_lr")
    if max_lr < base_lr:
        raise ValueError(f"max_lr must be >= base_lr, got max_lr={max_lr} < base_lr={base_lr}")
    up = checks.integer(step_size_up, "step_size_up", 1)
    down = up if step_size_down is None else checks.integer(step_size_down, "step_size_down", 1)
    total = up + down

    def schedule(t: int) -> float:
        p = _step(t) % total
        scale = p / up if p <= up else (total - p) / down
        return base_lr + (max_lr - base_lr) * scale

    return _named(schedule, f"triangular(base_lr={base_lr:g}, max_lr={max_lr:g}, step_size_up={up}, step_size_down={down})")


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    r"""One cycle: a cosine up from ``max_lr / div_factor`` to ``max_lr``, then a cosine down to almost 0.

    With :math:`\eta_0 = \eta_{\max} / d`, :math:`\eta_{\min} = \eta_0 / d_f`, the end of the
    first phase :math:`a = p\,T - 1` (:math:`p` = ``pct_start``, :math:`T` = ``total_steps``)
    and :math:`b = T - 1`, and :math:`c(x, y, s) = y + \tfrac12 (x - y)(1 + \cos \pi s)` the
    cosine from :math:`x` to :math:`y`,

    .. math::
        \eta_t = \begin{cases}
        c\left(\eta_0, \eta_{\max}, t / a\right) & t \le a \\
        c\left(\eta_{\max}, \eta_{\min}, (t - a)/(b - a)\right) & a < t \le b
        \end{cases}

    Smith & Topin (2019) found that one such cycle, with a large peak chosen by the LR
    range test, trains some networks to a given accuracy in far fewer steps
    ("super-convergence"); the large rates in the middle act as a regularizer.

    Note:
        Equals the learning rate of torch's ``OneCycleLR(max_lr, total_steps, pct_start,
        anneal_strategy="cos", div_factor, final_div_factor, three_phase=False)`` for
        :math:`t \le T - 1`; after that the rate stays at :math:`\eta_{\min}` (torch raises an
        error after step :math:`T`). Momentum cycling is left out: use a constant momentum.

    References:
        L. N. Smith and N. Topin, "Super-convergence: very fast training of neural networks
        using large learning rates", 2019, arXiv:1708.07120.

    Example:
        >>> s = one_cycle(1.0, total_steps=100)
        >>> round(s(0), 4), round(s(29), 4), s(99)
        (0.04, 1.0, 4e-06)
    """
    max_lr = checks.positive(max_lr, "max_lr")
    total_steps = checks.integer(total_steps, "total_steps", 2)
    pct_start = checks.number(pct_start, "pct_start")
    div_factor = checks.positive(div_factor, "div_factor")
    final_div_factor = checks.positive(final_div_factor, "final_div_factor")
    a, b = float(pct_start * total_steps) - 1, total_steps - 1
    if not 0 < a < b:
        raise ValueError(
            f"pct_start * total_steps - 1 must lie strictly between 0 and total_steps - 1 (both phases "
            f"non-empty), got pct_start={pct_start}, total_steps={total_steps}"
        )
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor

    def _ann(start: float, end: float, pct: float) -> float:  # torch's _annealing_cos, term for term
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def schedule(t: int) -> float:
        t = _step(t)
        if t <= a:
            return _ann(initial_lr, max_lr, t / a)
        if t >= b:
            return min_lr
        return _ann(max_lr, min_lr, (t - a) / (b - a))

    return _named(
        schedule,
        f"one_cycle(max_lr={max_lr:g}, total_steps={total_steps}, pct_start={pct_start:g}, "
        f"div_factor={div_factor:g}, final_div_factor={final_div_factor:g})",
    )


# ---------------------------------------------------------------------------
# Reduce on plateau


class ReduceLROnPlateau:
    r"""Cut the learning rate by ``factor`` when a metric has stopped improving (torch's ``ReduceLROnPlateau``).

    Call :meth:`step` once per evaluation (usually per epoch) with the metric, e.g. the
    validation loss; it returns the learning rate to use from now on. A value is an
    **improvement** when it beats the best so far by the threshold :math:`\tau`:

    ==========  ===========================  ===========================
    mode        ``threshold_mode="rel"``     ``threshold_mode="abs"``
    ==========  ===========================  ===========================
    ``"min"``   :math:`m < b\,(1 - \tau)`    :math:`m < b - \tau`
    ``"max"``   :math:`m > b\,(1 + \tau)`    :math:`m > b + \tau`
    ==========  ===========================  ===========================

    Otherwise the count of bad steps grows; when it exceeds ``patience`` the rate becomes
    :math:`\max(\eta \cdot \text{factor}, \eta_{\min})` (unless that changes it by less than
    ``eps``), the count restarts and the next ``cooldown`` steps do not count as bad.

    Args:
        lr: the initial learning rate.
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        factor: the cut, in (0, 1).
        patience: how many non-improving steps to tolerate before a cut.
        threshold: :math:`\tau \ge 0`, the least improvement that counts.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: steps after a cut during which the bad count is held at 0.
        min_lr: the floor of the learning rate.
        eps: a cut smaller than this is skipped (as in torch).

    Attributes:
        lr: the current learning rate. ``best``, ``num_bad_steps``, ``cooldown_counter``
        and ``last_step`` hold the state; :meth:`state_dict` returns them.

    Example:
        >>> plateau = ReduceLROnPlateau(1.0, patience=1)
        >>> [plateau.step(m) for m in (3.0, 2.0, 2.0, 2.0, 1.0)]
        [1.0, 1.0, 1.0, 0.1, 0.1]
    """

    def __init__(
        self,
        lr: float,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ):
        self.lr = checks.positive(lr, "lr")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        factor = checks.number(factor, "factor")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.mode, self.threshold_mode, self.factor = mode, threshold_mode, factor
        self.patience = checks.integer(patience, "patience", 0)
        self.threshold = checks.nonnegative(threshold, "threshold")
        self.cooldown = checks.integer(cooldown, "cooldown", 0)
        self.min_lr = checks.nonnegative(min_lr, "min_lr")
        self.eps = checks.nonnegative(eps, "eps")
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_steps = 0
        self.cooldown_counter = 0
        self.last_step = 0

    def is_better(self, value: float, best: float) -> bool:
        """Whether ``value`` improves on ``best`` by more than the threshold."""
        if self.mode == "min":
            return value < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return value > (best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metric) -> float:
        """Record one value of the metric (a float or a 0-d tensor); returns the learning rate to use next."""
        value = float(metric)
        if math.isnan(value):
            raise ValueError(f"metric is NaN at step {self.last_step + 1}")
        self.last_step += 1
        if self.is_better(value, self.best):
            self.best, self.num_bad_steps = value, 0
        else:
            self.num_bad_steps += 1
        if self.cooldown_counter > 0:  # bad steps in the cooldown do not count
            self.cooldown_counter -= 1
            self.num_bad_steps = 0
        if self.num_bad_steps > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_steps = 0
        return self.lr

    def callback(self, optimizer: torch.optim.Optimizer, metric: str = "val_loss"):
        """A :func:`book.train.fit` callback that steps on ``history[metric]`` after every epoch.

        It sets every parameter group's ``lr`` to :attr:`lr` now and after each epoch. Do
        not also pass a ``scheduler`` to ``fit``: it would overwrite these rates.

        Example:
            >>> # plateau = ReduceLROnPlateau(0.1, patience=3)
            >>> # fit(model, opt, loss, train, epochs=50, val=val, callbacks=plateau.callback(opt))
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        for group in optimizer.param_groups:
            group["lr"] = self.lr

        def on_epoch_end(epoch, history, model):
            value = history[metric][-1]
            if value is None:
                raise ValueError(f"history[{metric!r}] is None: pass val= to fit, or pick a recorded metric")
            lr = self.step(value)
            for group in optimizer.param_groups:
                group["lr"] = lr
            return None

        return on_epoch_end

    _STATE = ("lr", "best", "num_bad_steps", "cooldown_counter", "last_step")

    def state_dict(self) -> dict:
        """The state (current lr, best value, counters) as a dict."""
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved with :meth:`state_dict`."""
        missing = [k for k in self._STATE if k not in state]
        if missing:
            raise KeyError(f"state_dict lacks {missing}")
        for k in self._STATE:
            setattr(self, k, state[k])

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(lr={self.lr:g}, mode={self.mode!r}, factor={self.factor:g}, "
                f"patience={self.patience}, best={self.best:.4g})")


# ---------------------------------------------------------------------------
# torch interoperation


class ScheduleLR(torch.optim.lr_scheduler.LRScheduler):
    """A ``torch.optim.lr_scheduler`` scheduler that sets every group's lr to ``schedule(step)``.

    Build it with :func:`to_torch`. Like torch's schedulers, it sets ``schedule(0)`` when
    created and ``schedule(t)`` after the ``t``-th call of :meth:`step`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, last_epoch: int = -1):
        if not callable(schedule):
            raise TypeError(f"schedule must be a function step -> lr, got {type(schedule).__name__}")
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lr = float(self.schedule(self.last_epoch))
        return [lr for _ in self.optimizer.param_groups]

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict:
        """The step counters (the schedule function itself is code, not state)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedule")}


def to_torch(optimizer: torch.optim.Optimizer, schedule: Schedule) -> ScheduleLR:
    r"""Drive any torch optimizer with a schedule: returns a ``torch.optim.lr_scheduler`` object.

    The optimizer's rate is set to ``schedule(0)`` at once, and each ``scheduler.step()``
    (after ``optimizer.step()``, as with torch's schedulers) moves it to the next step's
    value: step :math:`t` uses :math:`\eta_t = \operatorname{schedule}(t)`. Every parameter
    group gets the same rate. (A ``LambdaLR`` over ``schedule(t) / schedule(0)`` would do the
    same, but fails for schedules that start at 0, like a warmup from 0.)

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([p], lr=123.0)
        >>> sched = to_torch(opt, step_decay(0.1, step_size=2, gamma=0.5))
        >>> lrs = []
        >>> for _ in range(5):
        ...     lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
        >>> lrs
        [0.1, 0.1, 0.05, 0.05, 0.025]
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not callable(schedule):
        raise TypeError(f"schedule must be a function step -> lr, got {type(schedule).__name__}")
    for group in optimizer.param_groups:
        group["lr"] = float(schedule(0))
        group.pop("initial_lr", None)  # the new scheduler's base rate is schedule(0)
    return ScheduleLR(optimizer, schedule)
