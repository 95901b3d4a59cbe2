r"""Single-tensor optimizer kernels: the readable ground truth of :mod:`book.optim`.

A kernel updates **one** parameter tensor in place from its gradient and returns its new
state; it keeps nothing between calls. The optimizer classes loop over parameters and
store the returned state, so these few lines are the whole algorithm::

    >>> import torch
    >>> from book.optim import functional as F
    >>> param, grad = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5])
    >>> buf = F.sgd(param, grad, None, lr=0.1, momentum=0.9)
    >>> param, buf
    (tensor([ 0.9500, -2.0500]), tensor([0.5000, 0.5000]))

Every kernel runs under ``torch.no_grad()`` and works on any device and floating dtype
(it follows ``param``'s).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sgd"]


@torch.no_grad()
def sgd(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> Tensor | None:
    r"""One step of stochastic gradient descent, with optional momentum, on one tensor.

    With :math:`\eta` = ``lr``, :math:`\mu` = ``momentum``, :math:`\tau` = ``dampening``
    and :math:`\lambda` = ``weight_decay``:

    .. math::

        g &\leftarrow \pm\nabla f(\theta) + \lambda\theta
            \qquad (- \text{ if maximize}) \\
        b &\leftarrow \begin{cases} g & \text{first step} \\
                                    \mu b + (1 - \tau) g & \text{after} \end{cases} \\
        \theta &\leftarrow \theta - \eta \cdot \begin{cases} b & \\
                                                    g + \mu b & \text{(nesterov)} \end{cases}

    With ``momentum=0`` there is no buffer and the step is :math:`\theta \leftarrow
    \theta - \eta g`. This is exactly ``torch.optim.SGD``'s update (its single-tensor
    path, operation for operation); see :class:`book.optim.SGD` for the conventions.

    Args:
        param: the parameter, updated in place (any shape).
        grad: its gradient, same shape as ``param``.
        momentum_buffer: the buffer :math:`b` from the previous step, or ``None`` on the
            first step (or when ``momentum=0``).
        lr, momentum, dampening, weight_decay, nesterov, maximize: as in
            :class:`book.optim.SGD`.

    Returns:
        The new momentum buffer (the same tensor, updated in place, after the first
        step), or ``None`` when ``momentum=0``.

    Example:
        >>> p = torch.tensor([1.0]); buf = None
        >>> for _ in range(3):                   # constant gradient 1
        ...     buf = sgd(p, torch.ones(1), buf, lr=0.1, momentum=0.5)
        >>> buf, p                               # b = 1, 1.5, 1.75; p = 1 - 0.1 * 4.25
        (tensor([1.7500]), tensor([0.5750]))
    """
    d_p = -grad if maximize else grad  # (same shape as param) the direction to descend
    if weight_decay != 0:
        d_p = d_p.add(param, alpha=weight_decay)  # g <- g + lambda * theta  (the L2 penalty's gradient)
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = d_p.detach().clone()  # b_1 = g_1: no dampening on the first step
        else:
            momentum_buffer.mul_(momentum).add_(d_p, alpha=1 - dampening)  # b <- mu b + (1 - tau) g
        if nesterov:
            d_p = d_p.add(momentum_buffer, alpha=momentum)  # look ahead: g + mu b
        else:
            d_p = momentum_buffer  # heavy ball: step along b
    param.add_(d_p, alpha=-lr)  # theta <- theta - lr * d_p
    return momentum_buffer
