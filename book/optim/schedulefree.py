r"""Schedule-free SGD and AdamW (Defazio et al. 2024), twins of the ``schedulefree`` package's
``SGDScheduleFree`` and ``AdamWScheduleFree``: thin shells over
:func:`book.optim.functional.schedule_free_sgd` and :func:`book.optim.functional.schedule_free_adamw`.

Schedule-free training replaces the learning-rate schedule by an average. It keeps three
sequences: :math:`z`, plain SGD (or Adam) steps with a constant learning rate; :math:`x`, the
running average of the :math:`z`, the point to evaluate; and :math:`y = (1 - \beta) z + \beta x`,
the point where gradients are taken. The parameter tensors hold :math:`y` while training and
:math:`x` while evaluating, so, unlike any other optimizer in this book, these must be told
which: call ``opt.train()`` before training steps and ``opt.eval()`` before evaluating or
saving a checkpoint.

    >>> import torch
    >>> from book.optim import ScheduleFreeSGD
    >>> w = torch.nn.Parameter(torch.tensor([1.0]))
    >>> opt = ScheduleFreeSGD([w], lr=0.5)
    >>> opt.train()
    >>> for _ in range(3):
    ...     w.grad = torch.ones(1)
    ...     opt.step()
    >>> y = w.detach().clone(); opt.eval(); x = w.detach().clone()
    >>> sorted(opt.state[w]), opt.param_groups[0]["k"], bool(x > y)   # x averages the early, larger z
    (['z'], 3, True)
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import functional as F

__all__ = ["ScheduleFreeSGD", "ScheduleFreeAdamW"]


class _ScheduleFree(torch.optim.Optimizer):
    """What the two share: the train/eval switch, the group's schedule scalars and the step loop."""

    BETA: str  # the group entry that holds the interpolation constant beta
    NOT_TRAINING = ("Optimizer was not in train mode when step is called. "
                    "Please insert .train() and .eval() calls on the optimizer. See documentation for details.")

    def _beta(self, group: dict) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def _switch(self, train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] != train:
                beta = self._beta(group)
                for p in group["params"]:
                    state = self.state[p]
                    if "z" in state:
                        F.schedule_free_swap(p, state["z"], beta, to_eval=not train)
                group["train_mode"] = train

    def train(self) -> None:
        """Put the parameters at :math:`y`, where gradients are taken (a no-op if already in train mode)."""
        self._switch(True)

    def eval(self) -> None:
        """Put the parameters at the average :math:`x`, the point to evaluate and save (a no-op if already there)."""
        self._switch(False)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Take one step (in train mode only); ``closure`` (optional) re-evaluates the loss and returns it.

        Raises:
            RuntimeError: if the optimizer is in eval mode (as the package, judged by the first group).
        """
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError(self.NOT_TRAINING)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            k = group["k"]
            lr, group["lr_max"], group["weight_sum"], ckp1 = F.schedule_free_weights(
                k, group["lr"], warmup_steps=group["warmup_steps"], r=group["r"],
                weight_lr_power=group["weight_lr_power"], lr_max=group["lr_max"], weight_sum=group["weight_sum"])
            group["scheduled_lr"] = lr  # for logging, as the package
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                self._step_one(p, self.state[p], group, lr, ckp1, k + 1)
            group["k"] = k + 1  # every group counts the step, with or without gradients (as the package)
        return loss


def _check_schedule(warmup_steps, r, weight_lr_power) -> None:
    """The warmup and averaging settings: a whole number of steps >= 0 and two finite powers (kept as given)."""
    checks.integer(warmup_steps, "warmup_steps", 0)
    checks.number(r, "r")
    checks.number(weight_lr_power, "weight_lr_power")


class ScheduleFreeSGD(_ScheduleFree):
    r"""Schedule-free SGD (Defazio et al. 2024): ``schedulefree.SGDScheduleFree``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \gamma \text{ (lr)},\ \beta \text{ (momentum)},\
            \lambda \text{ (weight\_decay)},\ T_w \text{ (warmup\_steps)},\ r,\
            p \text{ (weight\_lr\_power)};\ z_0 = x_0 = y_0 = \theta_0,\ W_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad \gamma_t \leftarrow \gamma \min(1, t/T_w),\quad
            w_t \leftarrow t^r \bigl(\max_{s \le t} \gamma_s\bigr)^p,\quad
            W_t \leftarrow W_{t-1} + w_t,\quad c_t \leftarrow w_t / W_t \\
        &\quad g_t \leftarrow \nabla f_t(y_{t-1}) + \lambda\, y_{t-1} \\
        &\quad z_t \leftarrow z_{t-1} - \gamma_t\, g_t \\
        &\quad x_t \leftarrow (1 - c_t)\, x_{t-1} + c_t\, z_t \\
        &\quad y_t \leftarrow (1 - \beta)\, z_t + \beta\, x_t
        \end{aligned}

    The parameter holds :math:`y` in train mode, :math:`x` in eval mode; ``state[p]["z"]`` is
    :math:`z` (a copy of the parameter at its first step), and :math:`x` is never stored: the
    step updates :math:`y` directly (see :func:`book.optim.functional.schedule_free_sgd`), and
    :meth:`eval` recovers :math:`x = y + (1 - 1/\beta)(z - y)`. With :math:`r = 0` and no
    warmup, :math:`c_t = 1/t`: :math:`x` is the uniform average of all the :math:`z`, which
    is what makes a constant learning rate work as well as a decaying schedule (the paper's
    theory and experiments). The step count :math:`t` and the scalars live in the *parameter
    group*, as in the package: ``k`` (steps taken), ``lr_max``, ``weight_sum``
    (:math:`W`), ``scheduled_lr`` (:math:`\gamma_t`, for logging) and ``train_mode``.

    Note:
        **Conventions of schedulefree 1.4.1** (reproduced; the keys of the state and of the
        groups are the package's, so ``state_dict`` files load into either class):

        - The optimizer starts in *eval* mode; ``step`` in eval mode raises (the package
          raises a bare ``Exception``, this class a ``RuntimeError`` with its message).
          Only the first group's mode is checked.
        - The default ``lr=1.0`` is the package's (schedule-free SGD tolerates large steps);
          the weight decay is taken at :math:`y`, the point of the gradient.
        - ``foreach`` (default True) is accepted and stored; both values run the
          single-tensor kernel, which repeats the package's operations in its order.
        - The package adds the weight decay to ``p.grad`` *in place*; this class leaves the
          gradient unchanged.
        - Resuming: save in eval mode, as the package advises; ``load_state_dict`` restores
          ``train_mode`` with the groups, so call ``train()`` again before stepping.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: :math:`\gamma \ge 0` (default 1.0).
        momentum: :math:`\beta`, strictly between 0 and 1 (default 0.9).
        weight_decay: :math:`\lambda \ge 0` (default 0).
        warmup_steps: :math:`T_w`, steps of linear warmup of the lr (default 0).
        r: the power :math:`r` of the polynomial weighting of the average (default 0).
        weight_lr_power: :math:`p` (default 2): during warmup, the weights grow like
            :math:`\gamma_t^p`.
        foreach: accepted for the package's signature (default True).

    Raises:
        ValueError: for a negative ``lr`` or ``weight_decay``, or ``momentum`` outside
            :math:`(0, 1)`, in the package's words; for a negative ``warmup_steps`` or a ``r`` or
            ``weight_lr_power`` that is not finite (the package does not check these).
        TypeError: for a ``warmup_steps`` that is not a whole number, or a power that is not a number.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> X, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> opt = ScheduleFreeSGD(model.parameters(), lr=0.1)
        >>> opt.train()
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     torch.nn.functional.mse_loss(model(X), y).backward()
        ...     opt.step()
        >>> opt.eval()      # evaluate at the average x
        >>> bool(torch.nn.functional.mse_loss(model(X), y) < 1.5)
        True

    References:
        A. Defazio, X. A. Yang, H. Mehta, K. Mishchenko, A. Khaled, A. Cutkosky, "The road
        less scheduled", NeurIPS 2024, arXiv:2405.15682. Reference code:
        https://github.com/facebookresearch/schedule_free.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = True,
    ) -> None:
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(weight_decay, "weight_decay value")
        _check_schedule(warmup_steps, r, weight_lr_power)
        if not 0 < momentum < 1:
            raise ValueError(f"Momentum must be between 0 and 1 exclusive: {momentum}")
        defaults = dict(lr=lr, momentum=momentum, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    def _beta(self, group: dict) -> float:
        return group["momentum"]

    def _step_one(self, p, state, group, lr, ckp1, step) -> None:
        if "z" not in state:
            state["z"] = torch.clone(p, memory_format=torch.preserve_format).detach()
        F.schedule_free_sgd(p, p.grad, state["z"], lr=lr, momentum=group["momentum"],
                            weight_decay=group["weight_decay"], ckp1=ckp1)


class ScheduleFreeAdamW(_ScheduleFree):
    r"""Schedule-free AdamW (Defazio et al. 2024): ``schedulefree.AdamWScheduleFree``'s twin.

    :class:`ScheduleFreeSGD` with Adam's normalised gradient in place of the gradient:

    .. math::

        \begin{aligned}
        &\quad v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,\quad
            \hat g_t \leftarrow \frac{g_t}{\sqrt{v_t/(1 - \beta_2^t)} + \epsilon} + \lambda\, y_{t-1} \\
        &\quad z_t \leftarrow z_{t-1} - \gamma_t\, \hat g_t,\quad
            x_t \leftarrow (1 - c_t)\, x_{t-1} + c_t\, z_t,\quad
            y_t \leftarrow (1 - \beta_1)\, z_t + \beta_1\, x_t
        \end{aligned}

    with :math:`\gamma_t`, :math:`c_t` as in :class:`ScheduleFreeSGD`. :math:`\beta_1` is the
    interpolation between :math:`z` and :math:`x` and replaces Adam's first moment, which is
    not kept: the state is ``state[p]["z"]`` and ``state[p]["exp_avg_sq"]`` (:math:`v`), the
    same memory as AdamW's two moments. The decay is added after the normalisation
    (decoupled, as in AdamW) and taken at :math:`y`. The step count lives in the group
    (``k``), with ``lr_max``, ``weight_sum``, ``scheduled_lr`` and ``train_mode``, as in the
    package.

    Note:
        The conventions listed under :class:`ScheduleFreeSGD` hold here too (eval mode at
        the start, ``RuntimeError`` for a step in eval mode, ``foreach`` accepted but the
        single-tensor kernel run, the gradient left unchanged where the package divides
        ``p.grad`` in place, the package's state and group keys). The package validates
        none of AdamW's arguments; this class raises ``ValueError`` for a negative ``lr``,
        ``eps`` or ``weight_decay``, :math:`\beta_1` outside :math:`(0, 1)` (``eval`` divides
        by it) and :math:`\beta_2` outside :math:`[0, 1)`.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: :math:`\gamma \ge 0` (default ``0.0025``).
        betas: :math:`(\beta_1, \beta_2)` (default ``(0.9, 0.999)``).
        eps: :math:`\epsilon`, added to the denominator (default ``1e-8``).
        weight_decay: :math:`\lambda \ge 0` (default 0).
        warmup_steps, r, weight_lr_power, foreach: as in :class:`ScheduleFreeSGD`.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> X, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> opt = ScheduleFreeAdamW(model.parameters(), lr=0.05, warmup_steps=10)
        >>> opt.train()
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     torch.nn.functional.mse_loss(model(X), y).backward()
        ...     opt.step()
        >>> opt.eval()
        >>> bool(torch.nn.functional.mse_loss(model(X), y) < 1.5), sorted(opt.state[model.weight])
        (True, ['exp_avg_sq', 'z'])

    References:
        A. Defazio, X. A. Yang, H. Mehta, K. Mishchenko, A. Khaled, A. Cutkosky, "The road
        less scheduled", NeurIPS 2024, arXiv:2405.15682.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = True,
    ) -> None:
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(eps, "epsilon value")
        if not 0 < betas[0] < 1:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]} (must be strictly between 0 and 1)")
        checks.optim_arg(betas[1], "beta parameter at index 1", high=1.0, high_inclusive=False)
        checks.optim_arg(weight_decay, "weight_decay value")
        _check_schedule(warmup_steps, r, weight_lr_power)
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    def _beta(self, group: dict) -> float:
        return group["betas"][0]

    def _step_one(self, p, state, group, lr, ckp1, step) -> None:
        if "z" not in state:
            state["z"] = torch.clone(p, memory_format=torch.preserve_format).detach()
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        F.schedule_free_adamw(p, p.grad, state["z"], state["exp_avg_sq"], lr=lr, betas=group["betas"],
                              eps=group["eps"], weight_decay=group["weight_decay"], ckp1=ckp1, step=step)
