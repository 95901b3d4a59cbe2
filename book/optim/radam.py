r"""RAdam: a thin shell over :func:`book.optim.functional.radam` and its foreach twin."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import functional as F
from book.optim._base import ListOptimizer, single_tensor_loop, step_counter, use_foreach, zeros

__all__ = ["RAdam"]

_radam_loop = single_tensor_loop(F.radam)


class RAdam(ListOptimizer):
    r"""RAdam, Adam with a rectified adaptive learning rate: ``torch.optim.RAdam``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \beta_1, \beta_2 \text{ (betas)},\
            \epsilon \text{ (eps)},\ \lambda \text{ (weight\_decay)},\ \theta_0 \text{ (params)};\
            m_0 = v_0 = 0,\ \rho_\infty = 2/(1 - \beta_2) - 1 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad g_t \leftarrow g_t + \lambda\, \theta_{t-1}
            \quad (\text{decoupled instead: } \theta_{t-1} \leftarrow (1 - \eta\lambda)\,\theta_{t-1}) \\
        &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t,\quad
            v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,\quad
            \hat m_t \leftarrow m_t / (1 - \beta_1^t) \\
        &\quad \rho_t \leftarrow \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
        &\quad \textbf{if } \rho_t > 5: \quad
            r_t \leftarrow \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\,\rho_\infty}
                {(\rho_\infty - 4)(\rho_\infty - 2)\,\rho_t}},\quad
            \theta_t \leftarrow \theta_{t-1} - \eta\, \hat m_t\, r_t\,
                \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon} \\
        &\quad \textbf{else}: \quad \theta_t \leftarrow \theta_{t-1} - \eta\, \hat m_t
        \end{aligned}

    While :math:`v_t` holds too few squared gradients (:math:`\rho_t \le 5`: steps 1 to 5
    with :math:`\beta_2 = 0.999`), the step is SGD with (bias-corrected) momentum; after,
    it is Adam's step scaled by :math:`r_t`, which grows from about 0.03 towards 1 (0.22
    at step 100, 0.65 at step 1000): a learning-rate warmup that needs no schedule.
    :math:`m` and :math:`v` are ``state[p]["exp_avg"]`` and ``state[p]["exp_avg_sq"]``, and
    :math:`t` is ``state[p]["step"]`` (a 0-dim float32 CPU tensor, as in PyTorch). The
    arithmetic and the notes on conventions (the switch at 5 rather than the paper's 4,
    where :math:`\epsilon` goes, the units of the first steps) are in
    :func:`book.optim.functional.radam`; :func:`book.optim.functional.radam_rectification`
    gives :math:`r_t`.

    Note:
        **foreach.** ``foreach=None`` (the default; on a CPU not for one tensor or over 4M elements,
        see :func:`book.optim._base.use_foreach`) or ``True`` runs
        :func:`book.optim.functional.radam_foreach`; ``False`` the single-tensor loop. Same
        numbers (bit for bit on a CPU). It is the default, as for the other adaptive
        optimizers; a rough check (~200 tensors, 1.6M parameters, one thread of a shared
        2-core CPU, two runs; not ``benchmarks/``'s careful kind) found it 1.21 times as
        fast as the loop in one run and 0.77 times in the other: no clear gain on a CPU.
        PyTorch's own multi-tensor path arranges the arithmetic differently (it folds all
        the factors into one multiplier of :math:`m` per tensor), so on a GPU, where
        ``torch.optim.RAdam`` takes it by default, the two agree to rounding only
        (on a CPU, differences of order :math:`10^{-15}` in float64 after 100 steps).
        PyTorch's ``capturable`` and ``differentiable`` options are not offered (as in
        :class:`book.optim.Adam`).

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\eta \ge 0` (default ``1e-3``).
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)` (default ``(0.9, 0.999)``).
            With :math:`\beta_2 \le 2/3`, :math:`\rho_\infty \le 5` and every step is a
            momentum step.
        eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{v}` (default ``1e-8``).
        weight_decay: :math:`\lambda \ge 0` (default 0): an L2 penalty added to the gradient,
            or, with ``decoupled_weight_decay=True``, a direct decay as in AdamW.
        decoupled_weight_decay: decay the weights as AdamW does (default False).
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
        >>> opt = RAdam(model.parameters(), lr=0.05)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < 1.5), sorted(opt.state[model.weight])
        (True, ['exp_avg', 'exp_avg_sq', 'step'])

    References:
        L. Liu, H. Jiang, P. He, W. Chen, X. Liu, J. Gao, J. Han, "On the variance of the
        adaptive learning rate and beyond", ICLR 2020, arXiv:1908.03265.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
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
            maximize=maximize,
            foreach=foreach,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("decoupled_weight_decay", False)

    def _init_group(self, group: dict) -> tuple[list, ...]:
        """The group's parameters that have a gradient, with their gradients and state (created at the first step)."""
        return self._gather(group, ("exp_avg", "exp_avg_sq", "step"),
                            lambda p: dict(step=step_counter(), exp_avg=zeros(p), exp_avg_sq=zeros(p)))

    HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "maximize", "decoupled_weight_decay")

    def _step_impl(self, group: dict) -> Callable:
        """The kernel on lists that steps this group: the multi-tensor one or the single-tensor loop."""
        return F.radam_foreach if use_foreach(group) else _radam_loop
