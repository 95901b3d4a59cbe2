r"""RMSprop (plain, centered, with momentum): a thin shell over :func:`book.optim.functional.rmsprop`."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import functional as F
from book.optim._base import ListOptimizer, single_tensor_loop, step_counter, use_foreach, zeros

__all__ = ["RMSprop"]

_rmsprop_loop = single_tensor_loop(F.rmsprop)


class RMSprop(ListOptimizer):
    r"""RMSprop, optionally centered and with momentum: ``torch.optim.RMSprop``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \alpha \text{ (alpha)},\ \epsilon \text{ (eps)},\
            \lambda \text{ (weight\_decay)},\ \mu \text{ (momentum)},\ \theta_0 \text{ (params)};\
            v_0 = \bar g_0 = b_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad g_t \leftarrow g_t + \lambda\, \theta_{t-1} \\
        &\quad v_t \leftarrow \alpha v_{t-1} + (1 - \alpha)\, g_t^2 \\
        &\quad \textbf{if } \text{centered}: \ \bar g_t \leftarrow \alpha \bar g_{t-1}
            + (1 - \alpha)\, g_t, \quad d_t \leftarrow \sqrt{v_t - \bar g_t^2} + \epsilon \\
        &\quad \textbf{else}: \ d_t \leftarrow \sqrt{v_t} + \epsilon \\
        &\quad \textbf{if } \mu > 0: \ b_t \leftarrow \mu b_{t-1} + g_t / d_t, \quad
            \theta_t \leftarrow \theta_{t-1} - \eta\, b_t \\
        &\quad \textbf{else}: \ \theta_t \leftarrow \theta_{t-1} - \eta\, g_t / d_t
        \end{aligned}

    :math:`v` is ``state[p]["square_avg"]``, :math:`\bar g` is ``state[p]["grad_avg"]``
    (only when ``centered=True``), :math:`b` is ``state[p]["momentum_buffer"]`` (only when
    ``momentum > 0``) and ``state[p]["step"]`` counts the steps (a 0-dim float32 CPU
    tensor; the update does not use it). The arithmetic is in
    :func:`book.optim.functional.rmsprop`; this class validates, creates the state lazily
    and loops.

    Note:
        **Conventions.** There is no bias correction: :math:`v` starts at zero, so the
        first steps are large (the first is :math:`\eta / \sqrt{1 - \alpha}` times the
        gradient's sign, ten times :math:`\eta` for :math:`\alpha = 0.99`). :math:`\epsilon`
        is added outside the square root (TensorFlow's RMSprop adds it inside). The
        momentum buffer accumulates the *normalized* gradient :math:`g / d` and starts at
        zero, unlike SGD's, which starts at the first gradient. **Centered** RMSprop
        (Graves 2013) divides by an estimate of the gradient's standard deviation instead
        of its root mean square; it can be much smaller, so the steps are larger.

        **foreach.** ``foreach=None`` (the default; on a CPU not for one tensor or over 4M elements,
        see :func:`book.optim._base.use_foreach`) or ``True`` runs
        :func:`book.optim.functional.rmsprop_foreach`; ``False`` the single-tensor loop.
        Both give the same numbers (bit for bit on a CPU). The multi-tensor path is the
        default because it was faster on a 200-tensor, one-million-parameter model on a
        2-core CPU (a whole ``step`` 1.5 to 1.8 times faster in two runs).

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: :math:`\eta \ge 0` (default ``1e-2``).
        alpha: the smoothing constant :math:`\alpha \ge 0` (default 0.99).
        eps: :math:`\epsilon \ge 0` (default ``1e-8``).
        weight_decay: :math:`\lambda \ge 0`, an L2 penalty (default 0).
        momentum: :math:`\mu \ge 0` (default 0).
        centered: divide by the centered second moment (default False).
        foreach: ``None`` or ``True`` for the multi-tensor kernel, ``False`` for the
            single-tensor loop (default ``None``).
        maximize: ascend the objective instead of descending it (default False).

    Raises:
        ValueError: for a negative ``lr``, ``eps``, ``momentum``, ``weight_decay`` or
            ``alpha`` (PyTorch's messages).

    Example:
        >>> import torch
        >>> w = torch.ones(2, requires_grad=True)
        >>> opt = RMSprop([w], lr=0.01)
        >>> w.grad = torch.tensor([0.1, 10.0])
        >>> opt.step()
        >>> w.detach()                      # 1 - 0.01 / sqrt(0.01): the same for both
        tensor([0.9000, 0.9000])

    References:
        T. Tieleman, G. Hinton, "Lecture 6.5 -- rmsprop: divide the gradient by a running
        average of its recent magnitude", COURSERA: Neural Networks for Machine Learning, 2012.
        A. Graves, "Generating sequences with recurrent neural networks", arXiv:1308.0850, 2013.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(eps, "epsilon value")
        checks.optim_arg(momentum, "momentum value")
        checks.optim_arg(weight_decay, "weight_decay value")
        checks.optim_arg(alpha, "alpha value")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _init_group(self, group: dict) -> tuple[list | None, ...]:
        """The group's parameters that have a gradient, with their gradients and state (created at the first step)."""
        momentum, centered = group["momentum"] > 0, group["centered"]
        keys = ("square_avg",) + (("grad_avg",) if centered else ()) + (("momentum_buffer",) if momentum else ())
        params, grads, *lists, steps = self._gather(
            group, keys + ("step",),
            lambda p: dict(step=step_counter(), square_avg=zeros(p), **({"momentum_buffer": zeros(p)} if momentum else {}),
                           **({"grad_avg": zeros(p)} if centered else {})))
        square_avgs = lists.pop(0)
        grad_avgs = lists.pop(0) if centered else None
        momentum_buffers = lists.pop(0) if momentum else None
        return params, grads, square_avgs, grad_avgs, momentum_buffers, steps

    HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")

    def _step_impl(self, group: dict) -> Callable:
        """The kernel on lists that steps this group: the multi-tensor one or the single-tensor loop."""
        return F.rmsprop_foreach if use_foreach(group) else _rmsprop_loop

