r"""Stochastic gradient descent with momentum: a thin shell over :func:`book.optim.functional.sgd`."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch.optim import Optimizer

from book import checks
from book.optim import compiled as _compiled
from book.optim import functional as F
from book.optim._base import dense_grad, evaluate_closure, single_tensor_loop, use_foreach

__all__ = ["SGD"]

_sgd_loop = single_tensor_loop(F.sgd)


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum: ``torch.optim.SGD``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \mu \text{ (momentum)},\ \tau \text{ (dampening)},\
            \lambda \text{ (weight\_decay)},\ \theta_0 \text{ (params)} \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad g_t \leftarrow g_t + \lambda\, \theta_{t-1} \\
        &\quad \textbf{if } \mu \ne 0: \\
        &\qquad b_t \leftarrow \begin{cases} g_t & t = 1 \\
                                     \mu\, b_{t-1} + (1 - \tau)\, g_t & t > 1 \end{cases} \\
        &\qquad g_t \leftarrow \begin{cases} g_t + \mu\, b_t & \text{nesterov} \\
                                     b_t & \text{otherwise} \end{cases} \\
        &\quad \theta_t \leftarrow \theta_{t-1} - \eta\, g_t
        \end{aligned}

    Here :math:`f_t` is the loss on the minibatch of step :math:`t`, :math:`\eta` is
    ``lr``, :math:`\mu` is ``momentum``, :math:`\tau` is ``dampening``, :math:`\lambda` is
    ``weight_decay`` (an L2 penalty :math:`\tfrac{\lambda}{2}\|\theta\|^2` added to the
    loss), and :math:`b_t` is the momentum buffer, stored per parameter as
    ``state[p]["momentum_buffer"]`` (nothing is stored when ``momentum=0``, as in
    PyTorch). Each parameter group may set its own values. The arithmetic is in
    :func:`book.optim.functional.sgd`; this class validates, keeps the state and loops.

    Note:
        **Three ways to write momentum.** Textbooks use three forms of the heavy ball:

        1. PyTorch's (this class, :math:`\tau = 0`): :math:`b_t = \mu b_{t-1} + g_t`,
           :math:`\theta_t = \theta_{t-1} - \eta_t b_t`;
        2. the exponential moving average (EMA): :math:`m_t = \beta m_{t-1} +
           (1 - \beta) g_t`, :math:`\theta_t = \theta_{t-1} - \alpha_t m_t`;
        3. Sutskever et al.'s velocity: :math:`v_t = \mu v_{t-1} - \eta_t g_t`,
           :math:`\theta_t = \theta_{t-1} + v_t`.

        Starting from zero buffers, :math:`m_t = (1 - \beta) b_t` with :math:`\beta =
        \mu`, so the EMA form with :math:`\alpha_t = \eta_t / (1 - \beta)` takes exactly
        PyTorch's steps: a constant learning rate :math:`\eta` of PyTorch's form is the
        rate :math:`\eta / (1 - \beta)` of the EMA form (ten times larger for
        :math:`\beta = 0.9`). This holds step by step while the momentum is constant.
        With a constant learning rate, Sutskever's velocity is
        :math:`v_t = -\eta\, b_t` and the iterates are again identical. With a learning
        rate that changes during a run (any schedule), Sutskever's form differs: it
        scales each gradient by the rate at the step it arrives, while PyTorch's scales
        the whole buffer, old gradients included, by the current rate.

        **The first step.** The buffer starts as the gradient itself,
        :math:`b_1 = g_1`, not as :math:`(1 - \tau) g_1`: dampening applies from the
        second step on. In particular ``dampening=momentum`` is *not* the EMA above,
        whose first buffer is :math:`(1 - \beta) g_1`; its first gradient keeps a
        weight :math:`\beta^{t-1}` instead of :math:`(1 - \beta)\beta^{t-1}`.

        **Nesterov** (``nesterov=True``) steps along :math:`g_t + \mu b_t`: the
        gradient plus a look-ahead along the new buffer. This is Nesterov's accelerated
        gradient in the form of Sutskever et al., rewritten so that the gradient is
        taken at the stored parameters rather than at a look-ahead point. It requires
        ``momentum > 0`` and ``dampening = 0``.

        **foreach.** ``foreach=None`` (the default; on a CPU not for one tensor or over 4M elements,
        see :func:`book.optim._base.use_foreach`) or ``True`` runs
        :func:`book.optim.functional.sgd_foreach`, one ``torch._foreach_*`` call per
        operation for all the parameters of a group; ``foreach=False`` runs
        :func:`book.optim.functional.sgd` once per parameter. Both give the same numbers
        (bit for bit on a CPU). The multi-tensor path is the default because it was faster
        on a 200-tensor, one-million-parameter model on a 2-core CPU (a whole ``step`` about
        1.7 to 3 times faster in two runs); PyTorch picks it by default only on GPUs.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\eta \ge 0` (default ``1e-3``, as PyTorch).
        momentum: :math:`\mu \ge 0` (default 0: plain SGD).
        dampening: :math:`\tau`, which scales the gradient entering the buffer by
            :math:`1 - \tau` (default 0).
        weight_decay: :math:`\lambda \ge 0`, the L2 penalty's coefficient (default 0).
        nesterov: use Nesterov momentum (default False).
        maximize: ascend the objective instead of descending it (default False).
        foreach: ``None`` or ``True`` for the multi-tensor kernel, ``False`` for the
            single-tensor loop (default ``None``: multi-tensor).
        compiled: keep each group's parameters, gradients and momentum buffers as views into
            one flat buffer per dtype and device, and step them all in one pass over memory:
            :func:`book.optim.functional.sgd` compiled by ``torch.compile``
            (:mod:`book.optim.compiled`; default False; opt-in: the first step with a buffer
            compiles for seconds; the very first step creates the buffers per tensor). Overrides
            ``foreach``; kept as the attribute ``compiled``, not in the parameter groups.

    Raises:
        ValueError: for a negative ``lr``, ``momentum`` or ``weight_decay``, or
            ``nesterov=True`` without momentum or with dampening (PyTorch's messages).

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> X, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < 1.5)
        True

    References:
        B. T. Polyak, "Some methods of speeding up the convergence of iteration methods",
        USSR Computational Mathematics and Mathematical Physics 4(5), 1964 (the heavy ball).
        Yu. Nesterov, "A method for solving the convex programming problem with
        convergence rate O(1/k²)", Soviet Mathematics Doklady 27, 1983.
        I. Sutskever, J. Martens, G. Dahl, G. Hinton, "On the importance of initialization
        and momentum in deep learning", ICML 2013.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        compiled: bool = False,
    ) -> None:
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(momentum, "momentum value")
        checks.optim_arg(weight_decay, "weight_decay value")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
        )
        super().__init__(params, defaults)
        self.compiled = bool(compiled)  # an execution choice, like a device: not a group hyperparameter

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)

    def _init_group(self, group: dict, skip: set | tuple = ()) -> tuple[list, list, list]:
        """The group's parameters that have a gradient (except ``skip``), their gradients and buffers (``None``
        before the first step)."""
        params, grads, momentum_buffers = [], [], []
        for p in group["params"]:
            if p.grad is None or p in skip:
                continue
            params.append(p)
            grads.append(dense_grad(p, "SGD"))
            momentum_buffers.append(self.state[p].get("momentum_buffer") if group["momentum"] != 0 else None)
        return params, grads, momentum_buffers

    def _step_impl(self, group: dict) -> Callable:
        """The kernel on lists that steps this group: the multi-tensor one or the single-tensor loop."""
        return F.sgd_foreach if use_foreach(group) else _sgd_loop

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Take one step; ``closure`` (optional) re-evaluates the loss and returns it.

        Parameters whose ``.grad`` is ``None`` are skipped (their state is untouched).
        Returns the closure's loss, or ``None`` without a closure.
        """
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            done = set()
            if getattr(self, "compiled", False):  # the group's tensors as views into flat buffers, one compiled pass
                keys = ("momentum_buffer",) if group["momentum"] != 0 else ()
                done = _compiled.flat_step(self, group, keys, False, _compiled.sgd_flat_kernel)
            params, grads, momentum_buffers = self._init_group(group, done)
            if not params:
                continue
            momentum_buffers = self._step_impl(group)(
                params,
                grads,
                momentum_buffers,
                lr=group["lr"],
                momentum=group["momentum"],
                dampening=group["dampening"],
                weight_decay=group["weight_decay"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
            )
            if group["momentum"] != 0:  # like torch: no state at all without momentum
                for p, buf in zip(params, momentum_buffers):
                    self.state[p]["momentum_buffer"] = buf
        return loss
