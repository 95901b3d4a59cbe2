r"""NAdam: a thin shell over :func:`book.optim.functional.nadam` and its foreach twin."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import functional as F
from book.optim._base import ListOptimizer, single_tensor_loop, step_counter, use_foreach, zeros

__all__ = ["NAdam"]

_nadam_loop = single_tensor_loop(F.nadam)


class NAdam(ListOptimizer):
    r"""NAdam, Adam with Nesterov momentum: ``torch.optim.NAdam``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \beta_1, \beta_2 \text{ (betas)},\
            \epsilon \text{ (eps)},\ \lambda \text{ (weight\_decay)},\
            \psi \text{ (momentum\_decay)},\ \theta_0 \text{ (params)};\
            m_0 = v_0 = 0,\ \Pi_0 = 1 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad g_t \leftarrow g_t + \lambda\, \theta_{t-1}
            \quad (\text{NAdamW instead: } \theta_{t-1} \leftarrow (1 - \eta\lambda)\,\theta_{t-1}) \\
        &\quad \mu_t \leftarrow \beta_1 \bigl(1 - \tfrac12\, 0.96^{\,t\psi}\bigr),\quad
            \mu_{t+1} \leftarrow \beta_1 \bigl(1 - \tfrac12\, 0.96^{\,(t+1)\psi}\bigr),\quad
            \Pi_t \leftarrow \Pi_{t-1}\, \mu_t \\
        &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t,\quad
            v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        &\quad \bar m_t \leftarrow \frac{(1 - \mu_t)\, g_t}{1 - \Pi_t}
            + \frac{\mu_{t+1}\, m_t}{1 - \Pi_t\, \mu_{t+1}} \\
        &\quad \theta_t \leftarrow \theta_{t-1} - \eta\, \frac{\bar m_t}
            {\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
        \end{aligned}

    :math:`\bar m_t` is Nesterov's look-ahead: the fresh gradient plus the momentum the
    *next* step would apply, each with its bias correction; Adam's :math:`\hat m_t` would
    weigh the *previous* average. :math:`m`, :math:`v` and :math:`\Pi` are
    ``state[p]["exp_avg"]``, ``state[p]["exp_avg_sq"]`` and ``state[p]["mu_product"]``, and
    :math:`t` is ``state[p]["step"]`` (``mu_product`` and ``step`` are 0-dim float32 CPU
    tensors, as in PyTorch). The arithmetic, and the notes on the momentum schedule
    (:math:`\mu_t` climbs from :math:`\beta_1/2` towards :math:`\beta_1` over thousands of
    steps) and on where PyTorch's conventions differ from Dozat's paper, are in
    :func:`book.optim.functional.nadam`; this class validates, creates the state lazily
    and loops.

    Note:
        **foreach.** ``foreach=None`` (the default; on a CPU not for one tensor or over 4M elements,
        see :func:`book.optim._base.use_foreach`) or ``True`` runs
        :func:`book.optim.functional.nadam_foreach`; ``False`` the single-tensor loop. Same
        numbers (bit for bit on a CPU). It is the default, as for the other adaptive
        optimizers; a rough check (~200 tensors, 1.6M parameters, one thread of a shared
        2-core CPU, two runs; not ``benchmarks/``'s careful kind) found it 1.12 and 1.16
        times as fast as the loop. PyTorch's own multi-tensor path arranges the arithmetic
        slightly differently (:math:`\sqrt{v}/\sqrt{1-\beta_2^t}`), so on a GPU, where
        ``torch.optim.NAdam`` takes it by default, the two agree to rounding only
        (on a CPU, differences of order :math:`10^{-15}` in float64 after 100 steps).
        PyTorch's ``capturable`` and ``differentiable`` options are not offered (as in
        :class:`book.optim.Adam`).

        **Resuming.** ``torch.optim.Optimizer.load_state_dict`` casts every floating
        state tensor except ``step`` to the parameter's dtype and device, ``mu_product``
        included; this class puts ``mu_product`` back as it was saved (a CPU scalar of the
        saved dtype), so that a resumed run continues exactly as the uninterrupted one. A
        ``torch.optim.NAdam`` resumed from float64 parameters continues with a float64
        product and departs from its own uninterrupted run (by :math:`10^{-10}` when resumed
        after one step, in this package's test; the product shrinks like
        :math:`0.45^t`, so a late resume loses nothing visible).

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\eta \ge 0` (default ``2e-3``).
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)` (default ``(0.9, 0.999)``).
        eps: :math:`\epsilon \ge 0`, added to the denominator (default ``1e-8``).
        weight_decay: :math:`\lambda \ge 0` (default 0): an L2 penalty added to the gradient,
            or, with ``decoupled_weight_decay=True``, a direct decay (NAdamW).
        momentum_decay: :math:`\psi \ge 0`, the pace of the momentum schedule (default
            ``4e-3``, Dozat's :math:`1/250`).
        decoupled_weight_decay: decay the weights as AdamW does (default False).
        foreach: ``None`` or ``True`` for the multi-tensor kernel, ``False`` for the
            single-tensor loop (default ``None``: multi-tensor, on the CPU up to 4M
            elements per group, see :func:`book.optim._base.use_foreach`).
        maximize: ascend the objective instead of descending it (default False).

    Raises:
        ValueError: for a negative ``lr``, ``eps``, ``weight_decay`` or ``momentum_decay``,
            or a beta outside :math:`[0, 1)` (PyTorch's messages).

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> X, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> opt = NAdam(model.parameters(), lr=0.05)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < 1.5), sorted(opt.state[model.weight])
        (True, ['exp_avg', 'exp_avg_sq', 'mu_product', 'step'])

    References:
        T. Dozat, "Incorporating Nesterov momentum into Adam", ICLR 2016 workshop track,
        https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.
        I. Loshchilov, F. Hutter, "Decoupled weight decay regularization", ICLR 2019,
        arXiv:1711.05101 (the decoupled decay).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
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
        checks.optim_arg(momentum_decay, "momentum_decay value")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("decoupled_weight_decay", False)

    def load_state_dict(self, state_dict: dict) -> None:
        """``Optimizer.load_state_dict``, then each ``mu_product`` put back as saved: a CPU scalar of its dtype.

        (The base class would cast it to its parameter's dtype and device; see the class's note.)
        """
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        products = {}
        for i, p in zip(saved_ids, params):
            product = state_dict["state"].get(i, {}).get("mu_product")
            if product is not None:
                products[p] = (product.detach().to("cpu", copy=True) if torch.is_tensor(product)
                               else step_counter().fill_(float(product)))
        super().load_state_dict(state_dict)
        for p, product in products.items():
            self.state[p]["mu_product"] = product

    def _init_group(self, group: dict) -> tuple[list, ...]:
        """The group's parameters that have a gradient, with their gradients and state (created at the first step)."""
        return self._gather(group, ("exp_avg", "exp_avg_sq", "mu_product", "step"),
                            lambda p: dict(step=step_counter(),
                                           mu_product=step_counter().fill_(1.0),  # the empty product, kept like the step
                                           exp_avg=zeros(p), exp_avg_sq=zeros(p)))

    HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "momentum_decay", "maximize", "decoupled_weight_decay")

    def _step_impl(self, group: dict) -> Callable:
        """The kernel on lists that steps this group: the multi-tensor one or the single-tensor loop."""
        return F.nadam_foreach if use_foreach(group) else _nadam_loop
