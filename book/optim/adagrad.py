r"""AdaGrad: a thin shell over :func:`book.optim.functional.adagrad`."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import functional as F
from book.optim._base import ListOptimizer, dense_grad, single_tensor_loop, step_counter, use_foreach

__all__ = ["Adagrad"]

_adagrad_loop = single_tensor_loop(F.adagrad)


class Adagrad(ListOptimizer):
    r"""AdaGrad: ``torch.optim.Adagrad``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \delta \text{ (lr\_decay)},\
            \lambda \text{ (weight\_decay)},\ s_0 \text{ (initial\_accumulator\_value)},\
            \epsilon \text{ (eps)},\ \theta_0 \text{ (params)} \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad g_t \leftarrow g_t + \lambda\, \theta_{t-1} \\
        &\quad \tilde\eta_t \leftarrow \eta \,/\, \bigl(1 + (t - 1)\,\delta\bigr) \\
        &\quad s_t \leftarrow s_{t-1} + g_t^2 \\
        &\quad \theta_t \leftarrow \theta_{t-1} - \tilde\eta_t\, g_t / (\sqrt{s_t} + \epsilon)
        \end{aligned}

    :math:`s` is ``state[p]["sum"]`` and :math:`t` is ``state[p]["step"]`` (a 0-dim float32
    CPU tensor). As in PyTorch, the state of every parameter is created **at
    construction**, with the constructor's ``initial_accumulator_value`` (a value given in
    a parameter group does not change it). The arithmetic is in
    :func:`book.optim.functional.adagrad`.

    Note:
        **Conventions.** The sum of squared gradients never forgets, so every
        coordinate's step size only shrinks: AdaGrad suits convex problems and sparse
        features (rare features keep large steps), and stalls on long non-convex runs,
        which RMSprop and Adam repair by averaging instead of summing. ``lr_decay`` is a
        PyTorch addition, not in Duchi et al.: it divides the learning rate by
        :math:`1 + (t - 1)\delta` on top of the adaptive scaling (default 0: off).
        :math:`\epsilon` is added outside the square root, and
        ``initial_accumulator_value`` (PyTorch's default 0; TensorFlow uses 0.1) bounds the
        first steps.

        **foreach.** ``foreach=None`` (the default; on a CPU not for one tensor or over 4M elements,
        see :func:`book.optim._base.use_foreach`) or ``True`` runs
        :func:`book.optim.functional.adagrad_foreach`; ``False`` the single-tensor loop.
        Same numbers (bit for bit on a CPU); the multi-tensor path was faster on a
        200-tensor, one-million-parameter model on a shared 2-core CPU (a whole ``step``
        1.4 to 2.5 times faster in two runs).

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: :math:`\eta \ge 0` (default ``1e-2``).
        lr_decay: :math:`\delta \ge 0` (default 0).
        weight_decay: :math:`\lambda \ge 0`, an L2 penalty (default 0).
        initial_accumulator_value: :math:`s_0 \ge 0` (default 0).
        eps: :math:`\epsilon \ge 0` (default ``1e-10``).
        foreach: ``None`` or ``True`` for the multi-tensor kernel, ``False`` for the
            single-tensor loop (default ``None``).
        maximize: ascend the objective instead of descending it (default False).

    Raises:
        ValueError: for a negative ``lr``, ``lr_decay``, ``weight_decay``,
            ``initial_accumulator_value`` or ``eps`` (PyTorch's messages).

    Example:
        >>> import torch
        >>> w = torch.ones(2, requires_grad=True)
        >>> opt = Adagrad([w], lr=0.5)
        >>> sorted(opt.state[w])            # created at construction
        ['step', 'sum']
        >>> w.grad = torch.tensor([0.1, 10.0])
        >>> opt.step()
        >>> w.detach()                      # the first step is lr * sign(g)
        tensor([0.5000, 0.5000])

    References:
        J. Duchi, E. Hazan, Y. Singer, "Adaptive subgradient methods for online learning and
        stochastic optimization", JMLR 12, 2011.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(lr_decay, "lr_decay value")
        checks.optim_arg(weight_decay, "weight_decay value")
        checks.optim_arg(initial_accumulator_value, "initial_accumulator_value value")
        checks.optim_arg(eps, "epsilon value")
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:  # eager, as PyTorch: every parameter has a state from the start
            for p in group["params"]:
                self._init_state(p, initial_accumulator_value)

    def _init_state(self, p: torch.Tensor, initial_accumulator_value: float) -> None:
        state = self.state[p]
        state["step"] = step_counter()
        state["sum"] = torch.full_like(p, initial_accumulator_value, memory_format=torch.preserve_format)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _init_group(self, group: dict) -> tuple[list, ...]:
        """The group's parameters that have a gradient, with their gradients and state."""
        params, grads, state_sums, steps = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            grads.append(dense_grad(p, type(self).__name__))
            state = self.state[p]
            if len(state) == 0:  # a group added after construction (PyTorch uses the defaults' value)
                self._init_state(p, self.defaults["initial_accumulator_value"])
            state_sums.append(state["sum"])
            steps.append(state["step"])
        return params, grads, state_sums, steps

    HYPERPARAMETERS = ("lr", "lr_decay", "weight_decay", "eps", "maximize")

    def _step_impl(self, group: dict) -> Callable:
        """The kernel on lists that steps this group: the multi-tensor one or the single-tensor loop."""
        return F.adagrad_foreach if use_foreach(group) else _adagrad_loop

