r"""Lion, the twin of ``lion_pytorch.Lion``: a thin shell over :func:`book.optim.functional.lion`."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import functional as F
from book.optim._base import ListOptimizer, dense_grad, single_tensor_loop

__all__ = ["Lion"]

_lion_loop = single_tensor_loop(F.lion)


class Lion(ListOptimizer):
    r"""Lion, EvoLved Sign Momentum (Chen et al. 2023): ``lion_pytorch.Lion``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \beta_1, \beta_2 \text{ (betas)},\
            \lambda \text{ (weight\_decay)},\ \theta_0;\ m_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1}) \\
        &\quad \theta_{t-1} \leftarrow (1 - \eta\lambda)\, \theta_{t-1} \\
        &\quad \theta_t \leftarrow \theta_{t-1} - \eta\,
            \mathrm{sign}\bigl(\beta_1 m_{t-1} + (1 - \beta_1)\, g_t\bigr) \\
        &\quad m_t \leftarrow \beta_2 m_{t-1} + (1 - \beta_2)\, g_t
        \end{aligned}

    :math:`m` is ``state[p]["exp_avg"]``, the only state: one tensor per parameter, half of
    Adam's. There is no step counter and no bias correction (a sign needs none).

    Note:
        **The sign update, and the scale of lr and weight decay.** Every coordinate of the
        update is :math:`\pm 1` (0 only where the interpolation is exactly 0), so the update's
        RMS is 1, larger than an Adam update's, whose coordinates
        :math:`\hat m/(\sqrt{\hat v} + \epsilon)` are mostly well below 1 in size once gradients are noisy. The paper's
        advice on hyperparameters (its section on tuning) therefore takes Lion's learning rate 3–10
        times *smaller* than AdamW's, and, since the decoupled decay multiplies
        :math:`\eta\lambda`, a :math:`\lambda` 3–10 times *larger*, to keep the same effective decay
        (for instance, by that rule, AdamW's lr 3e-4 and wd 0.1 become lr 3e-5 to 1e-4 and wd 0.3 to 1). The default
        ``betas=(0.9, 0.99)`` are the package's and the paper's; the default ``lr=1e-4`` is the
        package's only (the paper sets no default learning rate: it tunes lr per task, by the
        rule above). The paper suggests ``betas=(0.95, 0.98)`` where training is unstable.

        **Conventions of lion-pytorch 0.2.5** (reproduced): the decay is always multiplied by
        ``lr`` (``param.mul_(1 - lr * weight_decay)``, even when ``weight_decay`` is 0). Its
        option ``decoupled_weight_decay=True`` (default False) divides ``weight_decay`` by the
        learning rate given at construction, so the decay per step is
        :math:`(\eta_t/\eta_0)\lambda`, independent of the lr's scale; offered here with the
        same meaning and default. Its ``use_triton`` option (default False) runs a Triton
        kernel on CUDA; not offered (there is no Triton in this book's environment). Its
        ``lion_pytorch.foreach.Lion`` is a separate class. The package checks its arguments
        with ``assert`` (``lr > 0``, betas in :math:`[0, 1]`); this class raises
        ``ValueError`` for the same cases and also for a negative ``weight_decay``.
        Parameters without a gradient are skipped. Complex parameters are not supported.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: :math:`\eta > 0` (default ``1e-4``).
        betas: :math:`(\beta_1, \beta_2)` in :math:`[0, 1]` (default ``(0.9, 0.99)``).
        weight_decay: :math:`\lambda \ge 0` (default 0), multiplied by ``lr``.
        decoupled_weight_decay: divide ``weight_decay`` by the initial ``lr`` (default False).

    Raises:
        ValueError: for ``lr <= 0``, a beta outside :math:`[0, 1]` or a negative weight decay.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> X, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> opt = Lion(model.parameters(), lr=0.01)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < 1.5), sorted(opt.state[model.weight])
        (True, ['exp_avg'])

    References:
        X. Chen, C. Liang, D. Huang, E. Real, K. Wang, Y. Liu, H. Pham, X. Dong, T. Luong,
        C.-J. Hsieh, Y. Lu, Q. V. Le, "Symbolic discovery of optimization algorithms",
        NeurIPS 2023, arXiv:2302.06675. Reference code: https://github.com/lucidrains/lion-pytorch.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr} (Lion needs lr > 0)")
        checks.optim_arg(betas[0], "beta parameter at index 0", high=1.0)
        checks.optim_arg(betas[1], "beta parameter at index 1", high=1.0)
        checks.optim_arg(weight_decay, "weight_decay value")
        self.init_lr = lr
        self.decoupled_weight_decay = decoupled_weight_decay
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    def _init_group(self, group: dict) -> tuple[list, ...]:
        """The group's parameters that have a gradient, with their gradients and momenta (created at the first step)."""
        params, grads, exp_avgs = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            grads.append(dense_grad(p, type(self).__name__))
            state = self.state[p]
            if len(state) == 0:
                state["exp_avg"] = torch.zeros_like(p)
            exp_avgs.append(state["exp_avg"])
        return params, grads, exp_avgs

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Take one step; ``closure`` (optional) re-evaluates the loss and returns it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs = self._init_group(group)
            weight_decay = group["weight_decay"]
            if self.decoupled_weight_decay:
                weight_decay = weight_decay / self.init_lr  # lambda / eta_0: the decay no longer scales with lr
            _lion_loop(params, grads, exp_avgs, lr=group["lr"], betas=group["betas"], weight_decay=weight_decay)
        return loss
