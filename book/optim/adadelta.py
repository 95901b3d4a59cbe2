r"""Adadelta: a thin shell over :func:`book.optim.functional.adadelta`."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import functional as F
from book.optim._base import ListOptimizer, single_tensor_loop, step_counter, use_foreach, zeros

__all__ = ["Adadelta"]

_adadelta_loop = single_tensor_loop(F.adadelta)


class Adadelta(ListOptimizer):
    r"""Adadelta: ``torch.optim.Adadelta``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \rho \text{ (rho)},\ \epsilon \text{ (eps)},\
            \lambda \text{ (weight\_decay)},\ \theta_0 \text{ (params)};\ v_0 = u_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad g_t \leftarrow g_t + \lambda\, \theta_{t-1} \\
        &\quad v_t \leftarrow \rho v_{t-1} + (1 - \rho)\, g_t^2 \\
        &\quad \Delta_t \leftarrow \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        &\quad u_t \leftarrow \rho u_{t-1} + (1 - \rho)\, \Delta_t^2 \\
        &\quad \theta_t \leftarrow \theta_{t-1} - \eta\, \Delta_t
        \end{aligned}

    :math:`v` (a running average of squared gradients) is ``state[p]["square_avg"]``,
    :math:`u` (of squared updates) is ``state[p]["acc_delta"]`` and ``state[p]["step"]``
    counts the steps (a 0-dim float32 CPU tensor, unused by the update). The arithmetic is
    in :func:`book.optim.functional.adadelta`.

    Note:
        **The learning rate.** Zeiler's Adadelta has no learning rate: the ratio of the two
        root mean squares gives the step the units of :math:`\theta`. PyTorch adds a
        multiplier ``lr`` with default **1.0**, which is Zeiler's method; other values scale
        every step (and, through :math:`u`, the following ones). Both :math:`\epsilon` are
        *inside* the square roots, as in the paper; the one in the numerator sets the size
        of the first steps (about :math:`\sqrt{\epsilon / (1 - \rho)}`, 0.0032 with the
        defaults), which is why Adadelta starts slowly.

        **foreach.** ``foreach=None`` (the default; on a CPU not for one tensor or over 4M elements,
        see :func:`book.optim._base.use_foreach`) or ``True`` runs
        :func:`book.optim.functional.adadelta_foreach`; ``False`` the single-tensor loop.
        Same numbers (bit for bit on a CPU); the multi-tensor path was faster on a
        200-tensor, one-million-parameter model on a shared 2-core CPU (a whole ``step``
        1.2 to 2.9 times faster in two runs).

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the multiplier :math:`\eta \ge 0` (default 1.0: Zeiler's method).
        rho: the decay :math:`\rho \in [0, 1]` of both running averages (default 0.9).
        eps: :math:`\epsilon \ge 0` (default ``1e-6``).
        weight_decay: :math:`\lambda \ge 0`, an L2 penalty (default 0).
        foreach: ``None`` or ``True`` for the multi-tensor kernel, ``False`` for the
            single-tensor loop (default ``None``).
        maximize: ascend the objective instead of descending it (default False).

    Raises:
        ValueError: for a negative ``lr``, ``eps`` or ``weight_decay``, or ``rho`` outside
            :math:`[0, 1]` (PyTorch's messages).

    Example:
        >>> import torch
        >>> w = torch.ones(1, requires_grad=True)
        >>> opt = Adadelta([w])
        >>> w.grad = torch.ones(1)
        >>> opt.step()
        >>> w.detach()                      # 1 - sqrt(1e-6) / sqrt(0.1 + 1e-6)
        tensor([0.9968])

    References:
        M. D. Zeiler, "ADADELTA: an adaptive learning rate method", arXiv:1212.5701, 2012.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(rho, "rho value", high=1.0)
        checks.optim_arg(eps, "epsilon value")
        checks.optim_arg(weight_decay, "weight_decay value")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _init_group(self, group: dict) -> tuple[list, ...]:
        """The group's parameters that have a gradient, with their gradients and state (created at the first step)."""
        return self._gather(group, ("square_avg", "acc_delta", "step"),
                            lambda p: dict(step=step_counter(), square_avg=zeros(p), acc_delta=zeros(p)))

    HYPERPARAMETERS = ("lr", "rho", "eps", "weight_decay", "maximize")

    def _step_impl(self, group: dict) -> Callable:
        """The kernel on lists that steps this group: the multi-tensor one or the single-tensor loop."""
        return F.adadelta_foreach if use_foreach(group) else _adadelta_loop

