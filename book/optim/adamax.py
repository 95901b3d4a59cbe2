r"""Adamax: a thin shell over :func:`book.optim.functional.adamax` and its foreach twin."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import functional as F
from book.optim._base import ListOptimizer, single_tensor_loop, step_counter, use_foreach, zeros

__all__ = ["Adamax"]

_adamax_loop = single_tensor_loop(F.adamax)


class Adamax(ListOptimizer):
    r"""Adamax, Adam with the infinity norm: ``torch.optim.Adamax``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \beta_1, \beta_2 \text{ (betas)},\
            \epsilon \text{ (eps)},\ \lambda \text{ (weight\_decay)},\ \theta_0 \text{ (params)};\
            m_0 = u_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad g_t \leftarrow g_t + \lambda\, \theta_{t-1} \\
        &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        &\quad u_t \leftarrow \max\bigl(\beta_2 u_{t-1},\ |g_t| + \epsilon\bigr) \\
        &\quad \theta_t \leftarrow \theta_{t-1} - \frac{\eta}{1 - \beta_1^t}\, \frac{m_t}{u_t}
        \end{aligned}

    Adam's denominator :math:`\sqrt{v_t}` is a decaying :math:`L^2` norm of the past
    gradients; Adamax takes the :math:`L^\infty` limit, a decaying maximum :math:`u_t` of
    their sizes, which needs neither a square root nor a bias correction. Each
    coordinate's step is bounded by about :math:`\eta` whatever the gradients (Kingma &
    Ba's :math:`|\Delta_t| \le \alpha`; exactly, for :math:`\beta_1 < \beta_2`, by
    :math:`\eta\,(1 - \beta_1)/(1 - \beta_1/\beta_2)`, :math:`1.009\,\eta` with the
    defaults, since :math:`u` decays too). :math:`m` and :math:`u` are
    ``state[p]["exp_avg"]`` and ``state[p]["exp_inf"]``, and :math:`t` is
    ``state[p]["step"]`` (a 0-dim float32 CPU tensor, as in PyTorch). The arithmetic and
    the note on :math:`\epsilon` (inside the maximum in PyTorch; absent from the paper) are
    in :func:`book.optim.functional.adamax`.

    Note:
        **foreach.** ``foreach=None`` (the default; on a CPU not for one tensor or over 4M elements,
        see :func:`book.optim._base.use_foreach`) or ``True`` runs
        :func:`book.optim.functional.adamax_foreach`; ``False`` the single-tensor loop.
        Same numbers (bit for bit on a CPU, where both also equal
        ``torch.optim.Adamax``'s multi-tensor path bit for bit). It is the default, as for the other
        adaptive optimizers; a rough check (~200 tensors, 1.6M parameters, one thread of a
        shared 2-core CPU, two runs; not ``benchmarks/``'s careful kind) found it 1.16 and
        1.18 times as fast as the loop. As in ``torch.optim.Adamax``, ``foreach`` is the
        sixth positional argument and the rest are keyword-only; PyTorch's ``capturable``
        and ``differentiable`` options are not offered (as in :class:`book.optim.Adam`).
        There is no decoupled weight decay (PyTorch's Adamax has none).

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\eta \ge 0` (default ``2e-3``, the paper's).
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)` (default ``(0.9, 0.999)``).
        eps: :math:`\epsilon \ge 0`, added to :math:`|g|` inside the maximum (default ``1e-8``).
        weight_decay: :math:`\lambda \ge 0`, an L2 penalty added to the gradient (default 0).
        foreach: ``None`` or ``True`` for the multi-tensor kernel, ``False`` for the
            single-tensor loop (default ``None``: multi-tensor, on the CPU up to 4M
            elements per group, see :func:`book.optim._base.use_foreach`).
        maximize: ascend the objective instead of descending it (default False).

    Raises:
        ValueError: for a negative ``lr``, ``eps`` or ``weight_decay``, or a beta outside
            :math:`[0, 1)` (PyTorch's messages).

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> X, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> opt = Adamax(model.parameters(), lr=0.05)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < 1.5), sorted(opt.state[model.weight])
        (True, ['exp_avg', 'exp_inf', 'step'])

    References:
        D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015,
        arXiv:1412.6980 (section 7.1).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
    ) -> None:
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(eps, "epsilon value")
        checks.optim_arg(betas[0], "beta parameter at index 0", high=1.0, high_inclusive=False)
        checks.optim_arg(betas[1], "beta parameter at index 1", high=1.0, high_inclusive=False)
        checks.optim_arg(weight_decay, "weight_decay value")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _init_group(self, group: dict) -> tuple[list, ...]:
        """The group's parameters that have a gradient, with their gradients and state (created at the first step)."""
        return self._gather(group, ("exp_avg", "exp_inf", "step"),
                            lambda p: dict(step=step_counter(), exp_avg=zeros(p), exp_inf=zeros(p)))

    HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "maximize")

    def _step_impl(self, group: dict) -> Callable:
        """The kernel on lists that steps this group: the multi-tensor one or the single-tensor loop."""
        return F.adamax_foreach if use_foreach(group) else _adamax_loop
