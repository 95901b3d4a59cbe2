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

import math

import torch
from torch import Tensor

__all__ = [
    "sgd",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
    "adamw",
    "adam_scalars",
    "adam_update",
    "sgd_foreach",
    "adagrad_foreach",
    "rmsprop_foreach",
    "adadelta_foreach",
    "adam_foreach",
    "adamw_foreach",
    "lars",
    "lamb",
    "nadam",
    "radam",
    "adamax",
    "radam_rectification",
    "nadam_foreach",
    "radam_foreach",
    "adamax_foreach",
]


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


def _negate_if(maximize: bool, grad: Tensor) -> Tensor:
    """The descent direction's gradient: ``-grad`` (a new tensor) when maximizing, else ``grad`` itself."""
    return -grad if maximize else grad


@torch.no_grad()
def adagrad(
    param: Tensor,
    grad: Tensor,
    state_sum: Tensor,
    step: Tensor,
    *,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
) -> None:
    r"""One step of AdaGrad on one tensor: each coordinate's step shrinks with its gradient history.

    With :math:`\eta` = ``lr``, :math:`\delta` = ``lr_decay``, :math:`\lambda` =
    ``weight_decay``, :math:`\epsilon` = ``eps``, :math:`s` = ``state_sum`` and :math:`t` =
    ``step`` (after the increment):

    .. math::

        g &\leftarrow \pm\nabla f(\theta) + \lambda\theta
            \qquad (- \text{ if maximize}) \\
        \tilde\eta &\leftarrow \eta \,/\, \bigl(1 + (t - 1)\,\delta\bigr) \\
        s &\leftarrow s + g \odot g \\
        \theta &\leftarrow \theta - \tilde\eta\, g \,/\, (\sqrt{s} + \epsilon)

    Operation for operation ``torch.optim.Adagrad``'s single-tensor path.

    Note:
        ``lr_decay`` is PyTorch's addition, not Duchi et al.'s: the learning rate itself
        decays as :math:`\eta / (1 + (t - 1)\delta)`, on top of the adaptive
        :math:`1 / \sqrt{s}` (default :math:`\delta = 0`). :math:`\epsilon` is added
        outside the square root; the initial value of :math:`s` (PyTorch's
        ``initial_accumulator_value``, default 0; 0.1 in TensorFlow) bounds the first steps.

    Args:
        param: the parameter, updated in place.
        grad: its gradient, same shape as ``param`` (not modified).
        state_sum: :math:`s`, the running sum of squared gradients, updated in place; it
            starts at ``initial_accumulator_value`` (PyTorch's default 0).
        step: the number of steps taken so far, a 0-dim tensor incremented in place
            (PyTorch keeps it as a float32 tensor on the CPU).
        lr, lr_decay, weight_decay, eps, maximize: as in :class:`book.optim.Adagrad`.

    Example:
        >>> p, s, t = torch.tensor([1.0, 1.0]), torch.zeros(2), torch.tensor(0.0)
        >>> adagrad(p, torch.tensor([0.1, 10.0]), s, t, lr=0.5)
        >>> p                   # the first step is lr * sign(g), whatever |g|
        tensor([0.5000, 0.5000])

    References:
        J. Duchi, E. Hazan, Y. Singer, "Adaptive subgradient methods for online learning and
        stochastic optimization", JMLR 12, 2011.
    """
    step += 1  # t <- t + 1
    t = step.item()
    grad = _negate_if(maximize, grad)
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)  # g <- g + lambda * theta
    clr = lr / (1 + (t - 1) * lr_decay)  # eta_t = eta / (1 + (t - 1) delta)
    state_sum.addcmul_(grad, grad, value=1)  # s <- s + g^2
    std = state_sum.sqrt().add_(eps)  # sqrt(s) + eps
    param.addcdiv_(grad, std, value=-clr)  # theta <- theta - eta_t g / (sqrt(s) + eps)


@torch.no_grad()
def rmsprop(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    grad_avg: Tensor | None,
    momentum_buffer: Tensor | None,
    step: Tensor | None,
    *,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> None:
    r"""One step of RMSprop on one tensor: divide the gradient by a running RMS of recent gradients.

    With :math:`\eta` = ``lr``, :math:`\alpha` = ``alpha``, :math:`\epsilon` = ``eps``,
    :math:`\lambda` = ``weight_decay``, :math:`\mu` = ``momentum``, :math:`v` =
    ``square_avg``, :math:`\bar g` = ``grad_avg`` and :math:`b` = ``momentum_buffer``:

    .. math::

        g &\leftarrow \pm\nabla f(\theta) + \lambda\theta \\
        v &\leftarrow \alpha v + (1 - \alpha)\, g \odot g \\
        \bar g &\leftarrow \alpha \bar g + (1 - \alpha)\, g
            \qquad \text{(centered only)} \\
        d &\leftarrow \sqrt{v} + \epsilon
            \quad\text{or}\quad \sqrt{v - \bar g \odot \bar g} + \epsilon
            \quad \text{(centered)} \\
        \theta &\leftarrow \theta - \eta\, g / d
            \quad\text{or, with momentum,}\quad
            b \leftarrow \mu b + g / d,\ \ \theta \leftarrow \theta - \eta b

    Operation for operation ``torch.optim.RMSprop``'s single-tensor path.

    Note:
        Tieleman & Hinton's RMSprop is the plain form: no bias correction (:math:`v` starts
        at zero, so the first step is :math:`\eta/\sqrt{1-\alpha}` times the gradient's
        sign) and :math:`\epsilon` outside the square root (TensorFlow puts it inside).
        ``centered=True`` is Graves's variant: it divides by an estimate of the gradient's
        standard deviation, :math:`\sqrt{v - \bar g^2}`, instead of its root mean square.
        With ``momentum`` the buffer accumulates the *normalized* gradient :math:`g/d` and
        starts at zero (SGD's starts at the first gradient), and ``lr`` scales the buffer.

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        square_avg: :math:`v`, updated in place (starts at zero).
        grad_avg: :math:`\bar g`, updated in place (starts at zero); used only when
            ``centered=True``, else may be ``None``.
        momentum_buffer: :math:`b`, updated in place (starts at zero, unlike SGD's);
            used only when ``momentum > 0``, else may be ``None``.
        step: the step counter, a 0-dim tensor incremented in place (RMSprop's update does
            not use it; PyTorch keeps it in the state), or ``None``.
        lr, alpha, eps, weight_decay, momentum, centered, maximize: as in
            :class:`book.optim.RMSprop`.

    Example:
        >>> p, v = torch.tensor([1.0, 1.0]), torch.zeros(2)
        >>> rmsprop(p, torch.tensor([0.1, 10.0]), v, None, None, None, lr=0.01, alpha=0.99)
        >>> p                   # first step: g / sqrt(0.01 g^2) = 10 sign(g)
        tensor([0.9000, 0.9000])

    References:
        T. Tieleman, G. Hinton, "Lecture 6.5 -- rmsprop: divide the gradient by a running
        average of its recent magnitude", COURSERA: Neural Networks for Machine Learning, 2012.
        A. Graves, "Generating sequences with recurrent neural networks", arXiv:1308.0850,
        2013 (the centered variant).
    """
    if step is not None:
        step += 1  # a counter only
    grad = _negate_if(maximize, grad)
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)  # g <- g + lambda * theta
    square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)  # v <- alpha v + (1 - alpha) g^2
    if centered:
        grad_avg.lerp_(grad, 1 - alpha)  # gbar <- alpha gbar + (1 - alpha) g
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()  # sqrt(v - gbar^2): a std, not an RMS
    else:
        avg = square_avg.sqrt()  # sqrt(v): the RMS of recent gradients
    avg = avg.add_(eps)  # d = sqrt(...) + eps
    if momentum > 0:
        momentum_buffer.mul_(momentum).addcdiv_(grad, avg)  # b <- mu b + g / d
        param.add_(momentum_buffer, alpha=-lr)  # theta <- theta - eta b
    else:
        param.addcdiv_(grad, avg, value=-lr)  # theta <- theta - eta g / d


@torch.no_grad()
def adadelta(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    acc_delta: Tensor,
    step: Tensor | None,
    *,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r"""One step of Adadelta on one tensor: a step in the units of the parameter, from two running averages.

    With :math:`\eta` = ``lr``, :math:`\rho` = ``rho``, :math:`\epsilon` = ``eps``,
    :math:`\lambda` = ``weight_decay``, :math:`v` = ``square_avg`` (of squared gradients)
    and :math:`u` = ``acc_delta`` (of squared updates):

    .. math::

        g &\leftarrow \pm\nabla f(\theta) + \lambda\theta \\
        v &\leftarrow \rho v + (1 - \rho)\, g \odot g \\
        \Delta &\leftarrow \frac{\sqrt{u + \epsilon}}{\sqrt{v + \epsilon}} \odot g \\
        u &\leftarrow \rho u + (1 - \rho)\, \Delta \odot \Delta \\
        \theta &\leftarrow \theta - \eta\, \Delta

    Operation for operation ``torch.optim.Adadelta``'s single-tensor path.

    Note:
        Zeiler's algorithm has no learning rate: the ratio of root mean squares gives
        :math:`\Delta` the units of :math:`\theta`. PyTorch multiplies it by ``lr``,
        default **1.0**, which is Zeiler's method; any other value scales every step and,
        through :math:`u`, the later ones too. Both :math:`\epsilon` are inside the square
        roots, as in the paper; the numerator's sets the first steps' size,
        :math:`\approx\sqrt{\epsilon/(1-\rho)}`.

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        square_avg: :math:`v`, updated in place (starts at zero).
        acc_delta: :math:`u`, updated in place (starts at zero).
        step: the step counter, a 0-dim tensor incremented in place (unused by the update),
            or ``None``.
        lr, rho, eps, weight_decay, maximize: as in :class:`book.optim.Adadelta`.

    Example:
        >>> p, v, u = torch.tensor([1.0]), torch.zeros(1), torch.zeros(1)
        >>> adadelta(p, torch.tensor([1.0]), v, u, None)
        >>> p                   # the first step is tiny: sqrt(eps / (0.1 + eps)) ~ 0.0032
        tensor([0.9968])

    References:
        M. D. Zeiler, "ADADELTA: an adaptive learning rate method", arXiv:1212.5701, 2012.
    """
    if step is not None:
        step += 1  # a counter only
    grad = _negate_if(maximize, grad)
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)  # g <- g + lambda * theta
    square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)  # v <- rho v + (1 - rho) g^2
    std = square_avg.add(eps).sqrt_()  # RMS[g] = sqrt(v + eps)
    delta = acc_delta.add(eps).sqrt_()  # RMS[Delta] = sqrt(u + eps), from the previous steps
    delta.div_(std).mul_(grad)  # Delta = RMS[Delta] / RMS[g] * g
    acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)  # u <- rho u + (1 - rho) Delta^2
    param.add_(delta, alpha=-lr)  # theta <- theta - eta Delta


@torch.no_grad()
def adam(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    step: Tensor,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> None:
    r"""One step of Adam (or AMSGrad, or AdamW) on one tensor.

    With :math:`\eta` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\epsilon` =
    ``eps``, :math:`\lambda` = ``weight_decay``, :math:`m` = ``exp_avg``, :math:`v` =
    ``exp_avg_sq``, :math:`\hat v` = ``max_exp_avg_sq`` and :math:`t` = ``step`` (after the
    increment):

    .. math::

        g &\leftarrow \pm\nabla f(\theta) + \lambda\theta
            \qquad \text{(Adam: an L2 penalty in the gradient)} \\
        \theta &\leftarrow (1 - \eta\lambda)\,\theta
            \qquad \text{(instead, with decoupled\_weight\_decay: AdamW)} \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g \odot g \\
        \hat v &\leftarrow \max(\hat v, v)
            \qquad \text{(amsgrad; then } \hat v \text{ replaces } v \text{ below)} \\
        \theta &\leftarrow \theta - \frac{\eta}{1 - \beta_1^t}\,
            m \,\Big/\, \Bigl(\frac{\sqrt{v}}{\sqrt{1 - \beta_2^t}} + \epsilon\Bigr)

    The last line is Adam's :math:`\theta - \eta\,\hat m / (\sqrt{\hat v} + \epsilon)`
    with the bias-corrected moments :math:`\hat m = m / (1 - \beta_1^t)` and
    :math:`\hat v = v / (1 - \beta_2^t)`, arranged as PyTorch does so that only one
    parameter-sized temporary (the denominator) is formed. Operation for operation
    ``torch.optim.Adam``'s single-tensor path (``torch.optim.AdamW``'s with
    ``decoupled_weight_decay=True``).

    Note:
        **Where** :math:`\epsilon` **goes.** PyTorch, like Kingma & Ba's paper, adds
        :math:`\epsilon` *outside* the square root, :math:`\sqrt{\hat v} + \epsilon`, and to
        the bias-corrected :math:`\hat v`. Some libraries add it inside,
        :math:`\sqrt{\hat v + \epsilon}` (optax's ``scale_by_adam`` has both: ``eps``
        outside and ``eps_root`` inside, default 0; TensorFlow 1's Adam added its "epsilon
        hat" to the uncorrected :math:`\sqrt{v}`). With :math:`\epsilon = 10^{-8}` the
        forms differ only where :math:`\hat v` is tiny, but there they differ a lot: outside,
        the largest step is :math:`\eta\hat m / \epsilon`; inside, :math:`\eta \hat m /
        \sqrt{\epsilon}`. Copying an :math:`\epsilon` between libraries means checking
        which form each uses.

        **L2 penalty or decoupled decay.** With ``weight_decay`` :math:`\lambda` and
        ``decoupled_weight_decay=False`` (Adam), :math:`\lambda\theta` is added to the
        gradient and so passes through :math:`m`, :math:`v` and the division: weights with
        a large gradient history are barely decayed. With ``decoupled_weight_decay=True``
        (AdamW) the weights shrink directly, :math:`\theta \leftarrow (1 - \eta\lambda)
        \theta`, **with the learning rate as a factor**, as PyTorch does. Loshchilov &
        Hutter's algorithm writes :math:`\theta \leftarrow \theta - \eta_t(\alpha\,
        \hat m / (\sqrt{\hat v} + \epsilon) + \lambda\theta)` with a schedule multiplier
        :math:`\eta_t` and a base rate :math:`\alpha`: there the decay follows the schedule
        but not :math:`\alpha`. PyTorch's :math:`\lambda` is therefore the paper's
        :math:`\lambda` divided by :math:`\alpha` (``weight_decay=1e-2`` with ``lr=1e-3``
        decays by :math:`10^{-5}` per step), and changing ``lr`` changes the decay too.

        **AMSGrad** (``amsgrad=True``) divides by the running maximum :math:`\hat v` of
        :math:`v`, so a coordinate's effective step never grows back after a large gradient;
        Reddi et al. built it to repair a convergence counterexample for Adam. PyTorch
        applies the bias correction to the maximum, as here (the paper has none).

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        exp_avg: :math:`m`, the first moment, updated in place (starts at zero).
        exp_avg_sq: :math:`v`, the second moment, updated in place (starts at zero).
        max_exp_avg_sq: :math:`\hat v`, the running maximum of :math:`v`, updated in place
            (starts at zero); required when ``amsgrad=True``, else may be ``None``.
        step: the number of steps taken so far, a 0-dim tensor incremented in place
            (PyTorch keeps it as a float32 tensor on the CPU).
        lr, betas, eps, weight_decay, amsgrad, maximize: as in :class:`book.optim.Adam`.
        decoupled_weight_decay: decay the weights directly, :math:`\theta \leftarrow
            (1 - \eta\lambda)\theta`, instead of adding :math:`\lambda\theta` to the
            gradient: AdamW (see :func:`adamw`).

    Example:
        >>> p, m, v, t = torch.tensor([1.0, 1.0]), torch.zeros(2), torch.zeros(2), torch.tensor(0.0)
        >>> adam(p, torch.tensor([0.1, 10.0]), m, v, None, t, lr=0.1)
        >>> p                   # the first step is lr * sign(g), whatever |g|
        tensor([0.9000, 0.9000])

    References:
        D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015,
        arXiv:1412.6980.
        S. J. Reddi, S. Kale, S. Kumar, "On the convergence of Adam and beyond", ICLR 2018
        (AMSGrad).
        I. Loshchilov, F. Hutter, "Decoupled weight decay regularization", ICLR 2019,
        arXiv:1711.05101 (AdamW).
    """
    step += 1  # t <- t + 1
    step_size, bias_correction2_sqrt = adam_scalars(step.item(), lr, betas)  # eta / (1 - beta1^t), sqrt(1 - beta2^t)
    adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr=lr, betas=betas, eps=eps,
                weight_decay=weight_decay, step_size=step_size, bias_correction2_sqrt=bias_correction2_sqrt,
                amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)


def adam_scalars(t: float, lr: float, betas: tuple[float, float]) -> tuple[float, float]:
    r"""Adam's two step-dependent scalars at step ``t``, in double precision: :math:`\eta / (1 - \beta_1^t)` and
    :math:`\sqrt{1 - \beta_2^t}` (the bias corrections of :func:`adam`)."""
    beta1, beta2 = betas
    return lr / (1 - beta1**t), (1 - beta2**t) ** 0.5


def adam_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    step_size: float,
    bias_correction2_sqrt: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    r"""The tensor part of one :func:`adam` step, given the step's scalars: every line that touches memory.

    :func:`adam` counts the step and computes :math:`\eta / (1 - \beta_1^t)` (``step_size``) and
    :math:`\sqrt{1 - \beta_2^t}` (``bias_correction2_sqrt``) in double precision, then calls this.
    :mod:`book.optim.compiled` compiles this very function (with ``torch.compile``) into one pass
    over a flat buffer of many parameters: the lines below are the only copy of Adam's arithmetic.
    The other arguments are :func:`adam`'s.
    """
    beta1, beta2 = betas
    grad = _negate_if(maximize, grad)
    if weight_decay != 0:
        if decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)  # AdamW: theta <- (1 - eta lambda) theta
        else:
            grad = grad.add(param, alpha=weight_decay)  # Adam: g <- g + lambda * theta
    exp_avg.lerp_(grad, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
    if amsgrad:
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)  # vhat <- max(vhat, v)
        denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)  # sqrt(vhat / (1 - beta2^t)) + eps
    else:
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)  # sqrt(v / (1 - beta2^t)) + eps
    param.addcdiv_(exp_avg, denom, value=-step_size)  # theta <- theta - eta mhat / (sqrt(vhat) + eps)


@torch.no_grad()
def adamw(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    step: Tensor,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
) -> None:
    r"""One step of AdamW on one tensor: :func:`adam` with ``decoupled_weight_decay=True``.

    The weights decay before the Adam step, :math:`\theta \leftarrow (1 - \eta\lambda)
    \theta`, and the gradient that enters the moments is the loss's alone. The default
    ``weight_decay`` is ``1e-2``, as in ``torch.optim.AdamW``. See :func:`adam` for the
    arguments and :class:`book.optim.AdamW` for the conventions.

    Example:
        >>> p, m, v, t = torch.tensor([1.0]), torch.zeros(1), torch.zeros(1), torch.tensor(0.0)
        >>> adamw(p, torch.tensor([0.0]), m, v, None, t, lr=0.1, weight_decay=0.5)
        >>> p                   # a zero gradient: only the decay, 1 * (1 - 0.1 * 0.5)
        tensor([0.9500])

    References:
        I. Loshchilov, F. Hutter, "Decoupled weight decay regularization", ICLR 2019,
        arXiv:1711.05101.
    """
    adam(
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        max_exp_avg_sq,
        step,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
    )


# ---------------------------------------------------------------------------
# Multi-tensor ("foreach") kernels: the same arithmetic on lists of tensors.
#
# ``torch._foreach_*`` ops apply one operation to every tensor of a list in one call (one
# fused launch per list on a GPU; one C++ loop without Python overhead on a CPU). Each
# kernel below applies, list-wide, exactly the operations of its single-tensor twin above,
# in the same order, so the results agree (bit for bit on a CPU, where a foreach op is a
# loop over the same tensor op). They allocate as little as possible: every state update
# is in place, the gradients are copied only when maximize or weight decay changes them
# (and then modified in place), and a parameter-sized temporary list is created only where
# the algorithm needs one (e.g. Adam's denominator). The lists should hold tensors of one
# device and dtype for speed (mixed lists are still correct: the ops fall back to a loop).


def _increment(steps: list[Tensor] | None) -> None:
    """Add one to every step counter (on the CPU, wrapping 1 in a tensor once is faster)."""
    if not steps:
        return
    if steps[0].is_cpu:
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)


def _directions(
    params: list[Tensor], grads: list[Tensor], maximize: bool, weight_decay: float
) -> tuple[list[Tensor], bool]:
    r"""The list of :math:`\pm\nabla f + \lambda\theta`, and whether it is a fresh list we may overwrite.

    Without ``maximize`` and weight decay it is ``grads`` itself (no copy; never written).
    """
    if maximize:
        grads = torch._foreach_neg(grads)  # g <- -grad (fresh)
        if weight_decay != 0:
            torch._foreach_add_(grads, params, alpha=weight_decay)  # g <- g + lambda theta, in place
        return grads, True
    if weight_decay != 0:
        return torch._foreach_add(grads, params, alpha=weight_decay), True  # g <- grad + lambda theta (fresh)
    return grads, False


def _decayed_directions(
    params: list[Tensor], grads: list[Tensor], maximize: bool, weight_decay: float, lr: float, decoupled: bool
) -> list[Tensor]:
    r"""Weight decay for Adam-like foreach kernels: decoupled (:math:`\theta \leftarrow (1 - \eta\lambda)\theta`,
    applied to ``params`` now, as AdamW) or coupled (:math:`g + \lambda\theta`); returns the directions."""
    if weight_decay != 0 and decoupled:
        torch._foreach_mul_(params, 1 - lr * weight_decay)  # theta <- (1 - eta lambda) theta
        return _directions(params, grads, maximize, 0.0)[0]
    return _directions(params, grads, maximize, weight_decay)[0]  # g + lambda theta


@torch.no_grad()
def sgd_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> list[Tensor | None]:
    r""":func:`sgd` on lists of tensors with ``torch._foreach_*`` ops.

    ``momentum_buffers[i]`` is the buffer of ``params[i]`` or ``None`` (its first step, or
    ``momentum=0``). Returns the new list of buffers (the same tensors, updated in place;
    a new buffer is the gradient's clone, as in :func:`sgd`). Unlike
    ``torch.optim.SGD``'s foreach path, the gradients are never modified (PyTorch's
    adds the Nesterov look-ahead into ``p.grad`` in place).

    Example:
        >>> ps, gs = [torch.ones(2), torch.zeros(3)], [torch.ones(2), torch.ones(3)]
        >>> bufs = sgd_foreach(ps, gs, [None, None], lr=0.1, momentum=0.9)
        >>> ps[0], bufs[1]
        (tensor([0.9000, 0.9000]), tensor([1., 1., 1.]))
    """
    momentum_buffers = list(momentum_buffers)
    if not params:
        return momentum_buffers
    grads, owned = _directions(params, grads, maximize, weight_decay)
    if momentum != 0:
        old = [i for i, b in enumerate(momentum_buffers) if b is not None]
        if old:
            bufs = [momentum_buffers[i] for i in old]
            torch._foreach_mul_(bufs, momentum)  # b <- mu b
            torch._foreach_add_(bufs, [grads[i] for i in old], alpha=1 - dampening)  # ... + (1 - tau) g
        for i, b in enumerate(momentum_buffers):
            if b is None:
                momentum_buffers[i] = grads[i].detach().clone()  # b_1 = g_1
        if nesterov:
            if owned:
                torch._foreach_add_(grads, momentum_buffers, alpha=momentum)  # g + mu b, in place
            else:
                grads = torch._foreach_add(grads, momentum_buffers, alpha=momentum)  # g + mu b (fresh)
        else:
            grads = momentum_buffers  # heavy ball: step along b
    torch._foreach_add_(params, grads, alpha=-lr)  # theta <- theta - lr d
    return momentum_buffers


@torch.no_grad()
def adagrad_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
) -> None:
    r""":func:`adagrad` on lists of tensors with ``torch._foreach_*`` ops.

    One temporary list: :math:`\sqrt{s} + \epsilon`.

    Example:
        >>> ps, ss, ts = [torch.ones(2)], [torch.zeros(2)], [torch.tensor(0.0)]
        >>> adagrad_foreach(ps, [torch.tensor([0.1, 10.0])], ss, ts, lr=0.5)
        >>> ps[0], ts[0]
        (tensor([0.5000, 0.5000]), tensor(1.))
    """
    if not params:
        return
    _increment(steps)  # t <- t + 1
    grads, _ = _directions(params, grads, maximize, weight_decay)
    minus_clr = [-float(lr) / (1 + (t.item() - 1) * lr_decay) for t in steps]  # -eta_t, per tensor (a 0-d lr too)
    torch._foreach_addcmul_(state_sums, grads, grads, value=1)  # s <- s + g^2
    std = torch._foreach_sqrt(state_sums)  # sqrt(s) (fresh)
    torch._foreach_add_(std, eps)  # ... + eps
    torch._foreach_addcdiv_(params, grads, std, minus_clr)  # theta <- theta - eta_t g / (sqrt(s) + eps)


@torch.no_grad()
def rmsprop_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor] | None,
    momentum_buffers: list[Tensor] | None,
    steps: list[Tensor] | None,
    *,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> None:
    r""":func:`rmsprop` on lists of tensors with ``torch._foreach_*`` ops (one temporary list: the denominator).

    ``grad_avgs`` is needed only with ``centered=True`` and ``momentum_buffers`` only with
    ``momentum > 0``; either may otherwise be ``None``, and so may ``steps``.

    Example:
        >>> ps, vs = [torch.ones(2)], [torch.zeros(2)]
        >>> rmsprop_foreach(ps, [torch.tensor([0.1, 10.0])], vs, None, None, None, lr=0.01)
        >>> ps[0]
        tensor([0.9000, 0.9000])
    """
    if not params:
        return
    _increment(steps)  # a counter only
    grads, _ = _directions(params, grads, maximize, weight_decay)
    torch._foreach_mul_(square_avgs, alpha)  # v <- alpha v
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)  # ... + (1 - alpha) g^2
    if centered:
        torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)  # gbar <- alpha gbar + (1 - alpha) g
        avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)  # v - gbar^2 (fresh)
        torch._foreach_sqrt_(avg)  # sqrt(v - gbar^2)
    else:
        avg = torch._foreach_sqrt(square_avgs)  # sqrt(v) (fresh)
    torch._foreach_add_(avg, eps)  # d = ... + eps
    if momentum > 0:
        torch._foreach_mul_(momentum_buffers, momentum)  # b <- mu b
        torch._foreach_addcdiv_(momentum_buffers, grads, avg)  # ... + g / d
        torch._foreach_add_(params, momentum_buffers, alpha=-lr)  # theta <- theta - eta b
    else:
        torch._foreach_addcdiv_(params, grads, avg, value=-lr)  # theta <- theta - eta g / d


@torch.no_grad()
def adadelta_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    steps: list[Tensor] | None,
    *,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r""":func:`adadelta` on lists of tensors with ``torch._foreach_*`` ops.

    Two temporary lists: :math:`\sqrt{v+\epsilon}` and :math:`\Delta`.

    Example:
        >>> ps, vs, us = [torch.ones(1)], [torch.zeros(1)], [torch.zeros(1)]
        >>> adadelta_foreach(ps, [torch.ones(1)], vs, us, None)
        >>> ps[0]
        tensor([0.9968])
    """
    if not params:
        return
    _increment(steps)  # a counter only
    grads, _ = _directions(params, grads, maximize, weight_decay)
    torch._foreach_mul_(square_avgs, rho)  # v <- rho v
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)  # ... + (1 - rho) g^2
    std = torch._foreach_add(square_avgs, eps)  # v + eps (fresh)
    torch._foreach_sqrt_(std)  # RMS[g]
    deltas = torch._foreach_add(acc_deltas, eps)  # u + eps (fresh)
    torch._foreach_sqrt_(deltas)  # RMS[Delta]
    torch._foreach_div_(deltas, std)  # RMS[Delta] / RMS[g]
    torch._foreach_mul_(deltas, grads)  # Delta = ... * g
    torch._foreach_mul_(acc_deltas, rho)  # u <- rho u
    torch._foreach_addcmul_(acc_deltas, deltas, deltas, value=1 - rho)  # ... + (1 - rho) Delta^2
    torch._foreach_add_(params, deltas, alpha=-lr)  # theta <- theta - eta Delta


@torch.no_grad()
def adam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> None:
    r""":func:`adam` (AdamW with ``decoupled_weight_decay=True``) on lists of tensors with ``torch._foreach_*`` ops.

    Temporaries: the denominator, and before it the negated or decayed gradients when
    ``maximize`` or a coupled ``weight_decay`` asks for them (freed before the denominator
    is made, so the allocator can reuse their memory; on a CPU this measured faster than
    copying into a kept buffer). Steps may differ between tensors (a parameter
    that had no gradient at some step): the bias corrections are per tensor.

    Example:
        >>> ps, ms, vs, ts = [torch.ones(2)], [torch.zeros(2)], [torch.zeros(2)], [torch.tensor(0.0)]
        >>> adam_foreach(ps, [torch.tensor([0.1, 10.0])], ms, vs, None, ts, lr=0.1)
        >>> ps[0]
        tensor([0.9000, 0.9000])
    """
    if not params:
        return
    beta1, beta2 = betas
    lr = float(lr)  # a 0-d tensor lr too: the foreach ops take lists of Python numbers
    _increment(steps)  # t <- t + 1
    grads = _decayed_directions(params, grads, maximize, weight_decay, lr, decoupled_weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    torch._foreach_mul_(exp_avg_sqs, beta2)  # v <- beta2 v
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)  # ... + (1 - beta2) g^2
    ts = [t.item() for t in steps]
    minus_step_sizes = [-(lr / (1 - beta1**t)) for t in ts]  # -eta / (1 - beta1^t), per tensor
    bias_corrections2_sqrt = [(1 - beta2**t) ** 0.5 for t in ts]  # sqrt(1 - beta2^t)
    if amsgrad:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)  # vhat <- max(vhat, v)
        second = max_exp_avg_sqs
    else:
        second = exp_avg_sqs
    del grads  # a negated/decayed copy is freed here, so the allocator can hand its memory to denom
    denom = torch._foreach_sqrt(second)  # sqrt(v) (fresh)
    torch._foreach_div_(denom, bias_corrections2_sqrt)  # sqrt(v) / sqrt(1 - beta2^t)
    torch._foreach_add_(denom, eps)  # ... + eps
    torch._foreach_addcdiv_(params, exp_avgs, denom, minus_step_sizes)  # theta <- theta - eta mhat / (...)


@torch.no_grad()
def adamw_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
) -> None:
    """:func:`adamw` on lists of tensors: :func:`adam_foreach` with ``decoupled_weight_decay=True``."""
    adam_foreach(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        steps,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
    )



# ---------------------------------------------------------------------------
# Layer-wise adaptive kernels for large batches (LARS, LAMB): one tensor = one "layer".
#
# Each step rescales a tensor's update by a *trust ratio* computed from two norms of that
# tensor, so unlike the kernels above these are not elementwise: the norms couple all the
# entries of one tensor (never two tensors). The ratio is computed with ``torch.where``, as a
# 0-dim tensor on the parameter's device, so a step never waits for the device to answer.


@torch.no_grad()
def lars(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    trust_coefficient: float = 1e-3,
    eps: float = 0.0,
    trust: bool = True,
) -> tuple[Tensor | None, Tensor]:
    r"""One step of LARS (layer-wise adaptive rate scaling) on one tensor, as You et al.'s Algorithm 1.

    With :math:`\gamma` = ``lr`` (the global rate), :math:`m` = ``momentum``, :math:`\beta` =
    ``weight_decay``, :math:`\eta` = ``trust_coefficient``, :math:`\epsilon` = ``eps``,
    :math:`w` = ``param``, :math:`g` = ``grad`` and :math:`v` = ``momentum_buffer``:

    .. math::

        \lambda &\leftarrow \begin{cases}
            \dfrac{\eta\, \|w\|}{\|g\| + \beta \|w\| + \epsilon}
                & \|w\| > 0 \text{ and } \|g\| > 0 \\
            1 & \text{otherwise, or with } \texttt{trust=False} \end{cases} \\
        v &\leftarrow m\, v + \gamma\, \lambda\, (g + \beta w)
            \qquad (v_0 = 0) \\
        w &\leftarrow w - v

    :math:`\|\cdot\|` is the Euclidean (Frobenius) norm of the whole tensor, and
    :math:`\lambda` is the tensor's *local learning rate*: the step's length relative to the
    weights, :math:`\|\gamma\lambda(g + \beta w)\| \le \gamma\eta\|w\|`, no longer depends on
    the gradient's scale. With ``momentum=0`` there is no buffer: :math:`w \leftarrow w -
    \gamma\lambda(g + \beta w)`.

    Note:
        **Conventions.** The paper's: the global rate :math:`\gamma` is inside the buffer, as
        in Algorithm 1 (:math:`v_{t+1} = m v_t + \gamma_{t+1}\lambda(g_t + \beta w_t)`), and the
        denominator is :math:`\|g\| + \beta\|w\|` (a bound on :math:`\|g + \beta w\|`),
        with no :math:`\epsilon` by default (the paper has none; ``torch-optimizer`` and timm
        add ``eps=1e-8``). Where either norm is zero the ratio is 1 and the step is
        :math:`\gamma(g + \beta w)`, as timm's ``Lars`` and SimCLR's LARS do (the paper's
        formula would freeze a zero tensor forever: :math:`\lambda = 0`). See
        :class:`book.optim.LARS` for how other implementations differ.

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        momentum_buffer: :math:`v` from the previous step, or ``None`` on the first step
            (then :math:`v_0 = 0`), or when ``momentum=0``.
        lr, momentum, weight_decay, trust_coefficient, eps: as in :class:`book.optim.LARS`.
        trust: compute the ratio; ``False`` fixes :math:`\lambda = 1`, which makes the step
            SGD with momentum (in the paper's form) and an L2 penalty.

    Returns:
        ``(momentum_buffer, ratio)``: the new buffer (``None`` when ``momentum=0``; the same
        tensor, updated in place, after the first step) and :math:`\lambda`, a 0-dim tensor
        of ``param``'s dtype and device.

    Example:
        >>> p = torch.tensor([3.0, 4.0])                      # ||w|| = 5
        >>> buf, ratio = lars(p, torch.tensor([0.0, 10.0]), None, lr=1.0, trust_coefficient=0.01)
        >>> ratio                                              # 0.01 * 5 / 10
        tensor(0.0050)
        >>> p                                                  # w - 1.0 * 0.005 * g
        tensor([3.0000, 3.9500])

    References:
        Y. You, I. Gitman, B. Ginsburg, "Large batch training of convolutional networks",
        arXiv:1708.03888, 2017 (Algorithm 1).
    """
    if trust:
        w_norm = torch.linalg.vector_norm(param)  # ||w||
        g_norm = torch.linalg.vector_norm(grad)  # ||g||
        ratio = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)  # eta ||w|| / (||g|| + beta ||w||)
        ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)  # 1 where a norm is zero
    else:
        ratio = torch.ones((), dtype=param.dtype, device=param.device)
    if weight_decay != 0:
        update = grad.add(param, alpha=weight_decay)  # g + beta w
    else:
        update = grad.clone()
    update.mul_(ratio * lr)  # gamma lambda (g + beta w)
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = update  # v_1 = m * 0 + gamma lambda (g + beta w)
        else:
            momentum_buffer.mul_(momentum).add_(update)  # v <- m v + gamma lambda (g + beta w)
        update = momentum_buffer
    param.sub_(update)  # w <- w - v
    return (momentum_buffer if momentum != 0 else None), ratio


@torch.no_grad()
def lamb(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Tensor,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    bias_correction: bool = True,
    clamp: tuple[float, float] | None = (0.0, 10.0),
    trust: bool = True,
) -> Tensor:
    r"""One step of LAMB (layer-wise adaptive moments) on one tensor, as You et al.'s Algorithm 2.

    With :math:`\eta` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\epsilon` =
    ``eps``, :math:`\lambda` = ``weight_decay``, :math:`m` = ``exp_avg``, :math:`v` =
    ``exp_avg_sq``, :math:`t` = ``step`` (after the increment), :math:`x` = ``param`` and
    :math:`g` = ``grad``:

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, g \odot g \\
        \hat m &= m / (1 - \beta_1^t), \qquad \hat v = v / (1 - \beta_2^t)
            \qquad (\hat m = m,\ \hat v = v \text{ with } \texttt{bias\_correction=False}) \\
        r &= \hat m \,/\, (\sqrt{\hat v} + \epsilon), \qquad u = r + \lambda x \\
        \rho &= \begin{cases} \phi(\|x\|) \,/\, \|u\| & \|x\| > 0 \text{ and } \|u\| > 0 \\
                              1 & \text{otherwise, or with } \texttt{trust=False} \end{cases}
            \qquad \phi(z) = \min(\max(z, \gamma_l), \gamma_u) \\
        x &\leftarrow x - \eta\, \rho\, u

    with :math:`(\gamma_l, \gamma_u)` = ``clamp`` (``clamp=None``: :math:`\phi(z) = z`).
    Away from the edge cases the step has length :math:`\eta\,\phi(\|x\|)` whatever the
    gradient's scale: Adam gives the direction, the weights' norm the length.

    Note:
        **Conventions.** The weight decay is *decoupled* (added to the Adam direction
        :math:`r`, not to the gradient) and *inside* the trust ratio, as in Algorithm 2.
        :math:`\epsilon` is added outside the square root, to the bias-corrected
        :math:`\sqrt{\hat v}`. Where :math:`\|x\| = 0` or :math:`\|u\| = 0` the ratio is 1
        (NVIDIA's FusedLAMB, timm and ``torch-optimizer`` do the same; with
        :math:`\gamma_l > 0` the paper's formula would give :math:`\gamma_l / \|u\|` at
        :math:`x = 0`). See :class:`book.optim.LAMB` for the defaults' sources and how other
        implementations differ.

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        exp_avg: :math:`m`, updated in place (starts at zero).
        exp_avg_sq: :math:`v`, updated in place (starts at zero).
        step: the number of steps taken so far, a 0-dim tensor incremented in place.
        lr, betas, eps, weight_decay, bias_correction, clamp: as in :class:`book.optim.LAMB`.
        trust: compute the ratio; ``False`` fixes :math:`\rho = 1`, which makes the step
            AdamW's (:math:`x \leftarrow x - \eta(r + \lambda x)`).

    Returns:
        :math:`\rho`, a 0-dim tensor of ``param``'s dtype and device.

    Example:
        >>> p, m, v, t = torch.tensor([3.0, 4.0]), torch.zeros(2), torch.zeros(2), torch.tensor(0.0)
        >>> ratio = lamb(p, torch.tensor([1.0, -1.0]), m, v, t, lr=0.1, weight_decay=0.0)
        >>> ratio                              # ||x|| / ||r|| = 5 / sqrt(2): r ~ sign(g) at t = 1
        tensor(3.5355)
        >>> p                                  # a step of length lr * ||x|| = 0.5
        tensor([2.6464, 4.3536])

    References:
        Y. You, J. Li, S. Reddi, J. Hseu, S. Kumar, S. Bhojanapalli, X. Song, J. Demmel,
        K. Keutzer, C.-J. Hsieh, "Large batch optimization for deep learning: training BERT
        in 76 minutes", ICLR 2020, arXiv:1904.00962 (Algorithm 2).
    """
    beta1, beta2 = betas
    step += 1  # t <- t + 1
    t = step.item()
    exp_avg.lerp_(grad, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
    if bias_correction:
        m_hat = exp_avg / (1 - beta1**t)  # m / (1 - beta1^t)
        v_hat = exp_avg_sq / (1 - beta2**t)  # v / (1 - beta2^t)
    else:
        m_hat, v_hat = exp_avg, exp_avg_sq
    update = m_hat / v_hat.sqrt().add_(eps)  # r = mhat / (sqrt(vhat) + eps)
    if weight_decay != 0:
        update.add_(param, alpha=weight_decay)  # u = r + lambda x
    if trust:
        w_norm = torch.linalg.vector_norm(param)  # ||x||
        u_norm = torch.linalg.vector_norm(update)  # ||u||
        phi = w_norm if clamp is None else w_norm.clamp(clamp[0], clamp[1])  # phi(||x||)
        ratio = torch.where((w_norm > 0) & (u_norm > 0), phi / u_norm, 1.0)  # 1 where a norm is zero
    else:
        ratio = torch.ones((), dtype=param.dtype, device=param.device)
    param.sub_(update.mul_(ratio * lr))  # x <- x - eta rho u
    return ratio


# ---------------------------------------------------------------------------
# Beyond Adam: NAdam, RAdam and Adamax (chapter 12), each a single-tensor kernel and its
# foreach twin, operation for operation ``torch.optim``'s single-tensor path.


@torch.no_grad()
def nadam(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    mu_product: Tensor,
    step: Tensor,
    *,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> None:
    r"""One step of NAdam (Adam with Nesterov momentum) on one tensor.

    With :math:`\eta` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\epsilon` =
    ``eps``, :math:`\lambda` = ``weight_decay``, :math:`\psi` = ``momentum_decay``,
    :math:`m` = ``exp_avg``, :math:`v` = ``exp_avg_sq``, :math:`\Pi` = ``mu_product`` and
    :math:`t` = ``step`` (after the increment):

    .. math::

        g &\leftarrow \pm\nabla f(\theta) + \lambda\theta
            \qquad \text{(or, with decoupled\_weight\_decay: }
            \theta \leftarrow (1 - \eta\lambda)\,\theta) \\
        \mu_t &= \beta_1\bigl(1 - \tfrac12\, 0.96^{\,t\psi}\bigr), \qquad
        \mu_{t+1} = \beta_1\bigl(1 - \tfrac12\, 0.96^{\,(t+1)\psi}\bigr) \\
        \Pi &\leftarrow \Pi\, \mu_t
            \qquad (\Pi_t = \textstyle\prod_{i=1}^t \mu_i,\ \Pi_0 = 1) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, g \odot g \\
        d &= \sqrt{v / (1 - \beta_2^t)} + \epsilon \\
        \theta &\leftarrow \theta
            - \eta\, \frac{1 - \mu_t}{1 - \Pi_t}\, \frac{g}{d}
            - \eta\, \frac{\mu_{t+1}}{1 - \Pi_t\, \mu_{t+1}}\, \frac{m}{d}

    Adam steps along the bias-corrected :math:`\hat m_t = (\beta_1 m_{t-1} + (1 - \beta_1)
    g_t) / (1 - \beta_1^t)`. Nesterov's idea, in Sutskever et al.'s form, is to apply the
    *next* step's momentum now: the step mixes the fresh gradient (weight :math:`1 -
    \mu_t`) with the already updated average :math:`m_t` (weight :math:`\mu_{t+1}`), each
    divided by its own bias correction. With a constant :math:`\mu_t = \beta_1` the
    corrections are :math:`1 - \beta_1^t` and :math:`1 - \beta_1^{t+1}`.

    Note:
        **The momentum schedule.** :math:`\mu_t` warms up from about :math:`\beta_1/2`
        towards :math:`\beta_1`, slowly: with the default :math:`\psi = 0.004` it reaches
        halfway, :math:`0.75\,\beta_1`, only at :math:`t \approx 4245`, so on a run of a
        few thousand steps NAdam's momentum stays well below :math:`\beta_1`.
        ``momentum_decay=0`` does not switch the schedule off: it fixes :math:`\mu_t =
        \beta_1/2`; a large :math:`\psi` makes :math:`\mu_t \to \beta_1` quickly. Dozat
        proposed the schedule :math:`\mu_t = \beta_1(1 - \frac12 0.96^{t/250})`, which
        is :math:`\psi = 1/250 = 0.004`, PyTorch's default (Keras's ``schedule_decay``).

        **Conventions** (PyTorch's, and Keras's ``Nadam``): the running average :math:`m`
        uses the constant :math:`\beta_1`; the schedule :math:`\mu_t` enters only the two
        weights and the bias corrections (through the product :math:`\Pi_t`, which
        PyTorch keeps in the state as ``mu_product``, a 0-dim CPU tensor of the default
        scalar dtype, like ``step``). :math:`\epsilon` is added outside the square root
        of the bias-corrected :math:`v`, as in Adam. ``decoupled_weight_decay=True``
        (NAdamW) decays the weights as AdamW does, :math:`\theta \leftarrow (1 -
        \eta\lambda)\theta`; that is Loshchilov & Hutter's decoupling, not part of
        Dozat's algorithm. The default ``lr`` is ``2e-3`` (Keras's too).

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        exp_avg: :math:`m`, updated in place (starts at zero).
        exp_avg_sq: :math:`v`, updated in place (starts at zero).
        mu_product: :math:`\Pi`, a 0-dim tensor multiplied in place by :math:`\mu_t`
            (starts at one).
        step: the number of steps taken so far, a 0-dim tensor incremented in place.
        lr, betas, eps, weight_decay, momentum_decay, maximize, decoupled_weight_decay:
            as in :class:`book.optim.NAdam`.

    Example:
        >>> p, m, v = torch.tensor([1.0, 1.0]), torch.zeros(2), torch.zeros(2)
        >>> mu_prod, t = torch.tensor(1.0), torch.tensor(0.0)
        >>> nadam(p, torch.tensor([0.1, 10.0]), m, v, mu_prod, t, lr=0.1)
        >>> p                   # step 1: 1.056 lr sign(g), Adam's lr sign(g) plus the look-ahead
        tensor([0.8944, 0.8944])
        >>> mu_prod             # mu_1 = 0.9 * (1 - 0.5 * 0.96^0.004)
        tensor(0.4501)

    References:
        T. Dozat, "Incorporating Nesterov momentum into Adam", ICLR 2016 workshop track,
        https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.
        I. Sutskever, J. Martens, G. Dahl, G. Hinton, "On the importance of initialization
        and momentum in deep learning", ICML 2013.
    """
    beta1, beta2 = betas
    step += 1  # t <- t + 1
    t = step.item()
    grad = _negate_if(maximize, grad)
    if weight_decay != 0:
        if decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)  # NAdamW: theta <- (1 - eta lambda) theta
        else:
            grad = grad.add(param, alpha=weight_decay)  # g <- g + lambda * theta
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))  # mu_t
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))  # mu_{t+1}
    mu_product.mul_(mu)  # Pi_t = Pi_{t-1} mu_t
    exp_avg.lerp_(grad, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
    denom = exp_avg_sq.div(1 - beta2**t).sqrt_().add_(eps)  # d = sqrt(v / (1 - beta2^t)) + eps
    pi = mu_product.item()
    param.addcdiv_(grad, denom, value=-lr * (1 - mu) / (1 - pi))  # - eta (1 - mu_t) / (1 - Pi_t) g / d
    param.addcdiv_(exp_avg, denom, value=-lr * mu_next / (1 - pi * mu_next))  # - eta mu_{t+1} / (1 - Pi_{t+1}) m / d


def radam_rectification(step: float, beta2: float) -> float | None:
    r"""RAdam's variance rectification :math:`r_t` at step :math:`t`, or ``None`` while :math:`\rho_t \le 5`.

    .. math::

        \rho_\infty = \frac{2}{1 - \beta_2} - 1, \qquad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \qquad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\,\rho_\infty}
                         {(\rho_\infty - 4)(\rho_\infty - 2)\,\rho_t}}

    :math:`\rho_t` approximates the number of gradients the average :math:`v_t` holds (the
    length of a simple moving average with the same spread); the adaptive step
    :math:`1/\sqrt{v_t}` has a finite variance only when :math:`\rho_t > 4`, and
    :math:`r_t` scales that variance down to its limit's, :math:`r_t \to 1` as
    :math:`t \to \infty`. With :math:`\beta_2 = 0.999`, :math:`\rho_t \approx t` for
    small :math:`t`: ``None`` for :math:`t \le 5`, then :math:`r_6 = 0.026`,
    :math:`r_{100} = 0.22`, :math:`r_{1000} = 0.65`, :math:`r_{10^4} = 0.9998`: a warmup
    of the learning rate that follows from :math:`\beta_2` alone.

    Example:
        >>> radam_rectification(5, 0.999) is None, round(radam_rectification(6, 0.999), 4)
        (True, 0.0258)
    """
    rho_inf = 2 / (1 - beta2) - 1  # rho_inf: the SMA length in the limit
    rho_t = rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)  # rho_t
    if not rho_t > 5.0:
        return None  # the variance is intractable: no adaptive step yet
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


@torch.no_grad()
def radam(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Tensor,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> None:
    r"""One step of RAdam (rectified Adam) on one tensor.

    With :math:`\eta` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\epsilon` =
    ``eps``, :math:`\lambda` = ``weight_decay``, :math:`m` = ``exp_avg``, :math:`v` =
    ``exp_avg_sq``, :math:`t` = ``step`` (after the increment), and :math:`\rho_t`, :math:`r_t`
    from :func:`radam_rectification`:

    .. math::

        g &\leftarrow \pm\nabla f(\theta) + \lambda\theta
            \qquad \text{(or, with decoupled\_weight\_decay: }
            \theta \leftarrow (1 - \eta\lambda)\,\theta) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, g \odot g, \qquad
        \hat m = m / (1 - \beta_1^t) \\
        \theta &\leftarrow \begin{cases}
            \theta - \eta\, \hat m\, r_t\, \dfrac{\sqrt{1 - \beta_2^t}}{\sqrt{v} + \epsilon}
                & \rho_t > 5 \quad \text{(Adam's step, rectified)} \\[1ex]
            \theta - \eta\, \hat m
                & \rho_t \le 5 \quad \text{(SGD with momentum)} \end{cases}

    Early on, :math:`v` averages too few squared gradients for :math:`1/\sqrt{\hat v}` to
    be trusted (its variance is unbounded while :math:`\rho_t \le 4`): Liu et al. blame
    this variance for Adam's need of a learning-rate warmup. RAdam takes plain momentum
    steps until :math:`\rho_t > 5`, then Adam's steps multiplied by :math:`r_t`, which
    rises from about 0 to 1: a warmup built in.

    Note:
        **Conventions.** Liu et al.'s Algorithm 2 switches at :math:`\rho_t > 4`;
        PyTorch, like the authors' released code, at :math:`\rho_t > 5` ("more
        conservative since it's an approximated value"): with :math:`\beta_2 = 0.999`
        steps 1 to 5 are momentum steps and step 6 the first adaptive one, with
        :math:`r_6 \approx 0.026`. Beware the units: a momentum step moves by
        :math:`\eta\,\hat m`, in the gradient's units, while an adaptive step is about
        :math:`\eta` per coordinate, so with large gradients the first five steps are
        the largest. (The authors' current code skips those steps altogether unless
        ``degenerated_to_sgd=True``; PyTorch takes them, as the paper does.) The paper's
        :math:`l_t = \sqrt{(1 - \beta_2^t)/v_t}` has no :math:`\epsilon`; PyTorch adds it
        to :math:`\sqrt{v}` *before* the bias correction, so it weighs
        :math:`1/\sqrt{1 - \beta_2^t}` times more than Adam's :math:`\epsilon` early on.
        ``decoupled_weight_decay=True`` decays the weights as AdamW does (the authors'
        code decays that way); the default adds :math:`\lambda\theta` to the gradient.

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        exp_avg: :math:`m`, updated in place (starts at zero).
        exp_avg_sq: :math:`v`, updated in place (starts at zero).
        step: the number of steps taken so far, a 0-dim tensor incremented in place.
        lr, betas, eps, weight_decay, maximize, decoupled_weight_decay: as in
            :class:`book.optim.RAdam`.

    Example:
        >>> p, m, v, t = torch.tensor([1.0, 1.0]), torch.zeros(2), torch.zeros(2), torch.tensor(0.0)
        >>> radam(p, torch.tensor([0.1, 10.0]), m, v, t, lr=0.1)
        >>> p                   # step 1 is a momentum step: lr * mhat = lr * g
        tensor([0.9900, 0.0000])

    References:
        L. Liu, H. Jiang, P. He, W. Chen, X. Liu, J. Gao, J. Han, "On the variance of the
        adaptive learning rate and beyond", ICLR 2020, arXiv:1908.03265 (Algorithm 2).
    """
    beta1, beta2 = betas
    step += 1  # t <- t + 1
    t = step.item()
    grad = _negate_if(maximize, grad)
    if weight_decay != 0:
        if decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)  # theta <- (1 - eta lambda) theta
        else:
            grad = grad.add(param, alpha=weight_decay)  # g <- g + lambda * theta
    exp_avg.lerp_(grad, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
    m_hat = exp_avg / (1 - beta1**t)  # mhat = m / (1 - beta1^t)
    rect = radam_rectification(t, beta2)  # r_t, or None while rho_t <= 5
    if rect is None:
        param.sub_(m_hat * lr)  # theta <- theta - eta mhat: SGD with momentum
    else:
        adaptive = (1 - beta2**t) ** 0.5 / exp_avg_sq.sqrt().add_(eps)  # l_t = sqrt(1 - beta2^t) / (sqrt(v) + eps)
        param.sub_(m_hat * lr * adaptive * rect)  # theta <- theta - eta mhat l_t r_t


@torch.no_grad()
def adamax(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_inf: Tensor,
    step: Tensor,
    *,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r"""One step of Adamax (Adam with the infinity norm) on one tensor.

    With :math:`\eta` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\epsilon` =
    ``eps``, :math:`\lambda` = ``weight_decay``, :math:`m` = ``exp_avg``, :math:`u` =
    ``exp_inf`` and :math:`t` = ``step`` (after the increment):

    .. math::

        g &\leftarrow \pm\nabla f(\theta) + \lambda\theta \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        u &\leftarrow \max\bigl(\beta_2 u,\ |g| + \epsilon\bigr) \\
        \theta &\leftarrow \theta - \frac{\eta}{1 - \beta_1^t}\, \frac{m}{u}

    Adam divides by :math:`v_t^{1/2}`, an :math:`L^2` norm of the past gradients with
    decaying weights. Kingma & Ba's section 7.1 lets :math:`L^2` become :math:`L^p` and
    :math:`p \to \infty`: :math:`v_t^{1/p}` tends to :math:`u_t = \max(\beta_2 u_{t-1},
    |g_t|)`, a decaying maximum that needs no bias correction and no square root.

    Note:
        **Conventions.** The paper has no :math:`\epsilon`; PyTorch adds it *inside* the
        maximum, to every :math:`|g|`, so :math:`u \ge \epsilon` and a coordinate that
        never had a gradient divides 0 by :math:`\epsilon`, not by 0. The defaults are the
        paper's (:math:`\eta = 0.002`, :math:`\beta = (0.9, 0.999)`). ``weight_decay`` is an
        L2 penalty in the gradient; PyTorch's Adamax has no decoupled form.

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        exp_avg: :math:`m`, updated in place (starts at zero).
        exp_inf: :math:`u`, the decaying maximum of :math:`|g|`, updated in place (starts
            at zero).
        step: the number of steps taken so far, a 0-dim tensor incremented in place.
        lr, betas, eps, weight_decay, maximize: as in :class:`book.optim.Adamax`.

    Example:
        >>> p, m, u, t = torch.tensor([1.0, 1.0]), torch.zeros(2), torch.zeros(2), torch.tensor(0.0)
        >>> adamax(p, torch.tensor([0.1, -10.0]), m, u, t, lr=0.1)
        >>> p, u                # first step: lr * g / (|g| + eps) = lr * sign(g)
        (tensor([0.9000, 1.1000]), tensor([ 0.1000, 10.0000]))

    References:
        D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015,
        arXiv:1412.6980 (section 7.1, Adamax).
    """
    beta1, beta2 = betas
    step += 1  # t <- t + 1
    t = step.item()
    grad = _negate_if(maximize, grad)
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)  # g <- g + lambda * theta
    exp_avg.lerp_(grad, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    exp_inf.mul_(beta2)  # beta2 u
    torch.maximum(exp_inf, grad.abs().add_(eps), out=exp_inf)  # u <- max(beta2 u, |g| + eps)
    param.addcdiv_(exp_avg, exp_inf, value=-(lr / (1 - beta1**t)))  # theta <- theta - eta / (1 - beta1^t) m / u


@torch.no_grad()
def nadam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> None:
    r""":func:`nadam` on lists of tensors with ``torch._foreach_*`` ops (one temporary list: the denominator).

    Steps (and so :math:`\mu_t` and :math:`\Pi_t`) may differ between tensors.

    Example:
        >>> ps, ms, vs = [torch.ones(2)], [torch.zeros(2)], [torch.zeros(2)]
        >>> pis, ts = [torch.tensor(1.0)], [torch.tensor(0.0)]
        >>> nadam_foreach(ps, [torch.tensor([0.1, 10.0])], ms, vs, pis, ts, lr=0.1)
        >>> ps[0]
        tensor([0.8944, 0.8944])
    """
    if not params:
        return
    beta1, beta2 = betas
    _increment(steps)  # t <- t + 1
    grads = _decayed_directions(params, grads, maximize, weight_decay, lr, decoupled_weight_decay)
    ts = [t.item() for t in steps]
    mus = [beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay)) for t in ts]  # mu_t, per tensor
    mu_nexts = [beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay)) for t in ts]  # mu_{t+1}
    torch._foreach_mul_(mu_products, mus)  # Pi_t = Pi_{t-1} mu_t
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    torch._foreach_mul_(exp_avg_sqs, beta2)  # v <- beta2 v
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)  # ... + (1 - beta2) g^2
    denom = torch._foreach_div(exp_avg_sqs, [1 - beta2**t for t in ts])  # v / (1 - beta2^t) (fresh)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)  # d = sqrt(...) + eps
    pis = [p.item() for p in mu_products]
    lr = float(lr)  # a 0-d tensor lr too: the foreach ops take lists of Python numbers
    grad_sizes = [-lr * (1 - mu) / (1 - pi) for mu, pi in zip(mus, pis)]  # -eta (1 - mu_t) / (1 - Pi_t)
    avg_sizes = [-lr * mu_next / (1 - pi * mu_next) for mu_next, pi in zip(mu_nexts, pis)]  # -eta mu_{t+1} / (...)
    torch._foreach_addcdiv_(params, grads, denom, grad_sizes)  # theta <- theta + ... g / d
    torch._foreach_addcdiv_(params, exp_avgs, denom, avg_sizes)  # theta <- theta + ... m / d


@torch.no_grad()
def radam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> None:
    r""":func:`radam` on lists of tensors with ``torch._foreach_*`` ops.

    Temporaries: the steps :math:`\eta\hat m` and, for the tensors past the switch
    (:math:`\rho_t > 5`; steps may differ between tensors), :math:`l_t`.

    Example:
        >>> ps, ms, vs, ts = [torch.ones(2)], [torch.zeros(2)], [torch.zeros(2)], [torch.tensor(0.0)]
        >>> radam_foreach(ps, [torch.tensor([0.1, 10.0])], ms, vs, ts, lr=0.1)
        >>> ps[0]
        tensor([0.9900, 0.0000])
    """
    if not params:
        return
    beta1, beta2 = betas
    _increment(steps)  # t <- t + 1
    grads = _decayed_directions(params, grads, maximize, weight_decay, lr, decoupled_weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    torch._foreach_mul_(exp_avg_sqs, beta2)  # v <- beta2 v
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)  # ... + (1 - beta2) g^2
    del grads
    ts = [t.item() for t in steps]
    updates = torch._foreach_div(exp_avgs, [1 - beta1**t for t in ts])  # mhat (fresh)
    torch._foreach_mul_(updates, lr)  # eta mhat
    rects = [radam_rectification(t, beta2) for t in ts]  # r_t, or None while rho_t <= 5
    rectified = [i for i, r in enumerate(rects) if r is not None]
    if rectified:
        adaptive = torch._foreach_sqrt([exp_avg_sqs[i] for i in rectified])  # sqrt(v) (fresh)
        torch._foreach_add_(adaptive, eps)
        torch._foreach_reciprocal_(adaptive)
        torch._foreach_mul_(adaptive, [(1 - beta2 ** ts[i]) ** 0.5 for i in rectified])  # l_t
        chosen = [updates[i] for i in rectified]
        torch._foreach_mul_(chosen, adaptive)  # eta mhat l_t
        torch._foreach_mul_(chosen, [rects[i] for i in rectified])  # eta mhat l_t r_t
    torch._foreach_sub_(params, updates)  # theta <- theta - (the step)


@torch.no_grad()
def adamax_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r""":func:`adamax` on lists of tensors with ``torch._foreach_*`` ops (one temporary list: :math:`|g| + \epsilon`).

    Example:
        >>> ps, ms, us, ts = [torch.ones(2)], [torch.zeros(2)], [torch.zeros(2)], [torch.tensor(0.0)]
        >>> adamax_foreach(ps, [torch.tensor([0.1, -10.0])], ms, us, ts, lr=0.1)
        >>> ps[0]
        tensor([0.9000, 1.1000])
    """
    if not params:
        return
    beta1, beta2 = betas
    _increment(steps)  # t <- t + 1
    grads, _ = _directions(params, grads, maximize, weight_decay)  # g + lambda theta
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    torch._foreach_mul_(exp_infs, beta2)  # beta2 u
    norms = torch._foreach_abs(grads)  # |g| (fresh)
    torch._foreach_add_(norms, eps)  # |g| + eps
    torch._foreach_maximum_(exp_infs, norms)  # u <- max(beta2 u, |g| + eps)
    step_sizes = [-(float(lr) / (1 - beta1 ** t.item())) for t in steps]  # -eta / (1 - beta1^t), per tensor (float: a 0-d tensor lr too)
    torch._foreach_addcdiv_(params, exp_avgs, exp_infs, step_sizes)  # theta <- theta - ... m / u


# ---------------------------------------------------------------------------
# Adafactor and Muon: torch.optim's twins whose state is not parameter-shaped. Adafactor keeps
# row and column statistics of a matrix's squared gradient instead of a full second moment;
# Muon keeps a momentum buffer but replaces its direction by the nearest semi-orthogonal matrix.
# Like LARS and LAMB, both couple all the entries of one tensor (norms, matrix products).

__all__ += ["adafactor", "newton_schulz", "muon_lr", "muon"]


@torch.no_grad()
def adafactor(
    param: Tensor,
    grad: Tensor,
    row_var: Tensor | None,
    col_var: Tensor | None,
    variance: Tensor | None,
    step: Tensor,
    *,
    lr: float = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r"""One step of Adafactor on one tensor, as ``torch.optim.Adafactor`` takes it.

    With :math:`\gamma` = ``lr``, :math:`\tau` = ``beta2_decay``, :math:`(\epsilon_1,
    \epsilon_2)` = ``eps``, :math:`d` = ``d``, :math:`\lambda` = ``weight_decay``, :math:`t` =
    ``step`` (after the increment) and, for a matrix :math:`G` of :math:`n` rows and :math:`m`
    columns, :math:`R` = ``row_var`` (:math:`n \times 1`) and :math:`C` = ``col_var``
    (:math:`1 \times m`):

    .. math::

        \hat\beta_{2,t} &= 1 - t^{\tau}, \qquad
        \rho_t = \min\bigl(\gamma, 1/\sqrt t\bigr), \qquad
        \alpha_t = \max\bigl(\epsilon_2, \mathrm{RMS}(\theta)\bigr)\, \rho_t \\
        \theta &\leftarrow (1 - \gamma\lambda)\, \theta \\
        R &\leftarrow \hat\beta_{2,t} R + (1 - \hat\beta_{2,t})\, \mathrm{mean}_j\, G_{ij}^2,
            \qquad
        C \leftarrow \hat\beta_{2,t} C + (1 - \hat\beta_{2,t})\, \mathrm{mean}_i\, G_{ij}^2 \\
        \hat V &= R\, C \,/\, \max\bigl(\mathrm{mean}_i R_i,\ \epsilon_1\bigr)
            \qquad (\text{a rank-one } n \times m \text{ estimate of } \mathbb{E}[G^2]) \\
        U &= G \,/\, \max\bigl(\sqrt{\hat V},\ \epsilon_1\bigr), \qquad
        \theta \leftarrow \theta - \frac{\alpha_t}{\max\bigl(1, \mathrm{RMS}(U) / d\bigr)}\, U

    :math:`\mathrm{RMS}(x) = \|x\|_2 / \sqrt{\mathrm{numel}(x)}`. A vector (or scalar) keeps
    the full average :math:`\hat V = v \leftarrow \hat\beta_{2,t} v + (1 -
    \hat\beta_{2,t})\, g^2` in ``variance`` instead. A tensor of more than two dimensions is
    factored over its last two, the leading ones acting as a batch of matrices: ``row_var``
    has shape ``(..., n, 1)`` and ``col_var`` ``(..., 1, m)``. :math:`\epsilon_1` = ``None``
    means the machine epsilon of ``param``'s dtype. At :math:`t = 1`,
    :math:`1 - \hat\beta_{2,1} = 1`: the averages start at the first squared gradient, so no
    bias correction is needed. See :class:`book.optim.Adafactor` for where this (PyTorch's)
    version departs from Shazeer & Stern's.

    The operations are ``torch.optim.Adafactor``'s single-tensor path, in its order (the
    row mean, for instance, is :math:`\|G_{i,:}\|^2 / m`, which avoids a squared copy of
    :math:`G`), so the results agree bit for bit on a CPU.

    Args:
        param: the parameter, updated in place.
        grad: its gradient (not modified).
        row_var: :math:`R`, shape ``(..., n, 1)``, updated in place (starts at zero); ``None``
            for a tensor of at most one dimension.
        col_var: :math:`C`, shape ``(..., 1, m)``, updated in place; ``None`` likewise.
        variance: :math:`v`, shaped like ``param``, updated in place, for a tensor of at most
            one dimension; ``None`` for a matrix.
        step: the number of steps taken so far, a 0-dim tensor incremented in place.
        lr, beta2_decay, eps, d, weight_decay, maximize: as in :class:`book.optim.Adafactor`.

    Example:
        >>> p = torch.full((2, 3), 0.5)
        >>> R, C, t = torch.zeros(2, 1), torch.zeros(1, 3), torch.tensor(0.0)
        >>> g = torch.tensor([[1.0, -2.0, 2.0], [0.1, -0.2, 0.2]])   # g^2 has rank one
        >>> adafactor(p, g, R, C, None, t)
        >>> R.flatten(), C.flatten()       # the mean of g^2 over each row, over each column
        (tensor([3.0000, 0.0300]), tensor([0.5050, 2.0200, 2.0200]))
        >>> torch.outer(R.flatten(), C.flatten()) / R.mean()   # V = R C / mean(R): here g^2 exactly
        tensor([[1.0000, 4.0000, 4.0000],
                [0.0100, 0.0400, 0.0400]])
        >>> p                              # U = sign(g); alpha = RMS(p) * min(lr, 1) = 0.005
        tensor([[0.4950, 0.5050, 0.4950],
                [0.4950, 0.5050, 0.4950]])

    References:
        N. Shazeer, M. Stern, "Adafactor: adaptive learning rates with sublinear memory cost",
        ICML 2018, arXiv:1804.04235.
    """
    eps1, eps2 = eps
    if eps1 is None:
        eps1 = torch.finfo(param.dtype).eps
    grad = _negate_if(maximize, grad)
    step += 1  # t <- t + 1
    t = step.item()
    one_minus_beta2 = t**beta2_decay  # 1 - beta2_t = t^tau (= 1 at t = 1)
    rho = min(lr, 1 / (t**0.5))  # relative step size, capped by lr
    alpha = max(eps2, param.norm(2).item() / (param.numel() ** 0.5)) * rho  # max(eps2, RMS(theta)) rho
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)  # theta <- (1 - lr lambda) theta
    if grad.dim() > 1:
        row_mean = torch.norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1))  # mean_j g^2, (..., n, 1)
        row_var.lerp_(row_mean, one_minus_beta2)  # R <- beta2 R + (1 - beta2) mean_j g^2
        col_mean = torch.norm(grad, dim=-2, keepdim=True).square_().div_(grad.size(-2))  # mean_i g^2, (..., 1, m)
        col_var.lerp_(col_mean, one_minus_beta2)  # C <- beta2 C + (1 - beta2) mean_i g^2
        var_estimate = row_var @ col_var  # the outer product R C, (..., n, m)
        var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))  # V = R C / max(mean(R), eps1)
    else:
        variance.lerp_(grad * grad, one_minus_beta2)  # v <- beta2 v + (1 - beta2) g^2
        var_estimate = variance.clone()  # V = v (a copy: the lines below work in place)
    update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad)  # U = g / max(sqrt(V), eps1)
    clip = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * d))  # max(1, RMS(U) / d)
    param.add_(update, alpha=-alpha / clip)  # theta <- theta - alpha U / max(1, RMS(U) / d)


MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""The quintic Newton–Schulz coefficients :math:`(a, b, c)` of Keller Jordan's Muon (and ``torch.optim.Muon``)."""


@torch.no_grad()
def newton_schulz(
    G: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Tensor:
    r"""Approximately orthogonalise a matrix: :math:`G = U S V^\top \mapsto U S' V^\top` with :math:`S' \approx I`.

    With :math:`(a, b, c)` = ``coefficients`` and :math:`k` = ``steps``:

    .. math::

        X_0 = G / \max(\|G\|_F, \epsilon), \qquad
        X_{j+1} = a X_j + b\, (X_j X_j^\top) X_j + c\, (X_j X_j^\top)^2 X_j
            \quad (j = 0, \dots, k - 1)

    Each step applies the odd polynomial :math:`p(\sigma) = a\sigma + b\sigma^3 + c\sigma^5`
    to every singular value and leaves the singular vectors alone: :math:`X_k = U\,
    p^{(k)}(S / \|G\|_F)\, V^\top`. Dividing by the Frobenius norm (which bounds the spectral
    norm) puts every :math:`\sigma` in :math:`[0, 1]`. Muon's coefficients trade exactness
    for speed: the slope at zero, :math:`a = 3.4445`, grows a small singular value
    :math:`3.4445^5 \approx 485` times in five steps, but the iteration does not converge to
    1: it settles in a band. Iterating the scalar map shows that five steps send every
    :math:`\sigma \in [0.0021, 1]` into :math:`[0.682, 1.202]` (into :math:`[0.682, 1.135]`
    from :math:`\sigma \ge 0.01`); smaller ones stay small. The result is not :math:`UV^\top`
    but close enough for an optimizer (Jordan et al. report no loss from it).

    For a tall :math:`G` (more rows than columns) the iteration runs on :math:`G^\top` and
    transposes back, so that :math:`X X^\top` is the smaller Gram matrix. Operation for
    operation this is ``torch.optim.Muon``'s iteration: ``dtype=torch.bfloat16`` (the
    default, as torch) casts :math:`G` to bfloat16 first and runs every product in it;
    ``dtype=None`` runs in :math:`G`'s own dtype, which is what the math above describes to
    the last digit (see :class:`book.optim.Muon` for what bfloat16 costs).

    Args:
        G: a 2-D tensor (not modified).
        steps: :math:`k`, fewer than 100 (default 5).
        coefficients: :math:`(a, b, c)` (default Jordan's ``(3.4445, -4.7750, 2.0315)``).
        eps: :math:`\epsilon`, the floor of the norm (default ``1e-7``).
        dtype: the dtype of the iteration (default ``torch.bfloat16``); ``None``: ``G``'s.

    Returns:
        :math:`X_k`, shaped like ``G``, in ``dtype`` (``G``'s dtype when ``None``).

    Raises:
        ValueError: for ``steps >= 100``, a ``G`` that is not 2-D, or not three coefficients
            (``torch.optim.Muon``'s messages, raised at its first step).

    Example:
        >>> G = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]])     # singular values 3 and 0.5
        >>> newton_schulz(G, dtype=None)                           # both driven into [0.68, 1.2]
        tensor([[0.7136, 0.0000, 0.0000],
                [0.0000, 1.0420, 0.0000]])

    References:
        K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein, "Muon: an
        optimizer for hidden layers in neural networks", blog post, 2024,
        https://kellerjordan.github.io/posts/muon/.
    """
    if steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if G.dim() != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = coefficients
    X = G if dtype is None else G.to(dtype)
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T  # wide: X X^T is the smaller Gram matrix
    X = X / X.norm().clamp(min=eps)  # X_0 = G / ||G||_F: every singular value in [0, 1]
    for _ in range(steps):
        A = X @ X.T  # A = X X^T
        B = torch.addmm(A, A, A, beta=b, alpha=c)  # B = b A + c A^2
        X = torch.addmm(X, B, X, beta=a)  # X <- a X + B X = a X + b (X X^T) X + c (X X^T)^2 X
    return X.T if tall else X


def muon_lr(lr: float, shape: torch.Size | tuple[int, ...], adjust_lr_fn: str | None = None) -> float:
    r"""The learning rate Muon applies to an :math:`A \times B` matrix (``torch.optim.Muon``'s ``adjust_lr_fn``).

    An orthogonalised update :math:`O` has all its singular values near 1, so its RMS is
    about :math:`1/\sqrt{\max(A, B)}`. The two rescalings:

    - ``None`` or ``"original"`` (Jordan's): :math:`\eta \sqrt{\max(1, A/B)}`, which gives
      tall and wide matrices the same RMS update per unit of :math:`\eta` (about
      :math:`\eta / \sqrt{B}`);
    - ``"match_rms_adamw"`` (Liu et al., Moonshot AI, 2025): :math:`0.2\,\eta \sqrt{\max(A, B)}`,
      an update of RMS about :math:`0.2\eta`, AdamW's typical RMS, so AdamW's :math:`\eta` and
      weight decay carry over.

    Raises:
        ValueError: for any other ``adjust_lr_fn`` (``torch.optim.Muon`` checks only its
            constructor's value and treats an unknown one set later in a group as "no
            adjustment"; here it is refused).

    Example:
        >>> muon_lr(0.02, (512, 128)), muon_lr(0.02, (128, 512))    # tall: x sqrt(4); wide: x 1
        (0.04, 0.02)
        >>> round(muon_lr(0.02, (128, 512), "match_rms_adamw"), 6)    # 0.2 * sqrt(512) * 0.02
        0.09051

    References:
        J. Liu et al., "Muon is scalable for LLM training", arXiv:2502.16982, 2025.
    """
    A, B = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, A / B))  # sqrt(max(1, A / B))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(A, B))  # 0.2 sqrt(max(A, B))
    else:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    return lr * ratio


@torch.no_grad()
def muon(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    ns_dtype: torch.dtype | None = torch.bfloat16,
) -> Tensor:
    r"""One step of Muon on one matrix, as ``torch.optim.Muon`` takes it.

    With :math:`\eta` = ``lr``, :math:`\lambda` = ``weight_decay``, :math:`\mu` =
    ``momentum`` and :math:`B` = ``momentum_buffer``:

    .. math::

        B &\leftarrow \mu B + (1 - \mu)\, g \\
        D &= \begin{cases} (1 - \mu)\, g + \mu B & \text{nesterov} \\
                           B & \text{otherwise} \end{cases} \\
        O &= \mathrm{NS}_k(D) \qquad (\text{see } \texttt{newton\_schulz}) \\
        \theta &\leftarrow (1 - \eta\lambda)\,\theta - \eta'\, O,
            \qquad \eta' = \texttt{muon\_lr}(\eta, \text{shape}, \texttt{adjust\_lr\_fn})

    The buffer is an exponential average (``lerp``), as in Jordan's code and torch's; torch's
    docstring writes :math:`B \leftarrow \mu B + g`, a buffer :math:`1/(1 - \mu)` times
    larger. Newton–Schulz divides by the norm first, so the scale of :math:`D` does not
    matter (up to the floor ``eps``). The decay uses :math:`\eta`, the update the adjusted
    :math:`\eta'`. ``ns_dtype`` is the dtype of the iteration: bfloat16 by default, as torch;
    ``None`` runs it in the buffer's dtype.

    Args:
        param: the matrix, updated in place.
        grad: its gradient (not modified), 2-D.
        momentum_buffer: :math:`B`, updated in place (starts at zero).
        lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn,
            ns_dtype: as in :class:`book.optim.Muon`.

    Returns:
        :math:`O`, the orthogonalised direction (in ``ns_dtype``).

    Raises:
        ValueError: for a gradient that is not 2-D ("Param gradient must be a 2D matrix"),
            and as :func:`newton_schulz` and :func:`muon_lr`.

    Example:
        >>> p, buf = torch.zeros(2, 2), torch.zeros(2, 2)
        >>> O = muon(p, torch.tensor([[4.0, 0.0], [0.0, 0.1]]), buf, lr=0.1, ns_dtype=None)
        >>> p           # both directions move by about lr, though the gradients differ 40-fold
        tensor([[-0.0697,  0.0000],
                [ 0.0000, -0.0933]])
    """
    if grad.dim() != 2:
        raise ValueError("Param gradient must be a 2D matrix")
    momentum_buffer.lerp_(grad, 1 - momentum)  # B <- mu B + (1 - mu) g
    direction = grad.lerp(momentum_buffer, momentum) if nesterov else momentum_buffer  # (1 - mu) g + mu B, or B
    update = newton_schulz(direction, ns_steps, ns_coefficients, eps, dtype=ns_dtype)  # O ~ U V^T
    adjusted_lr = muon_lr(lr, param.shape, adjust_lr_fn)  # eta'
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)  # theta <- (1 - eta lambda) theta
    param.add_(update, alpha=-adjusted_lr)  # theta <- theta - eta' O
    return update


# --- Lion and schedule-free training: twins of the lion-pytorch and schedulefree packages ---

__all__ += ["lion", "schedule_free_weights", "schedule_free_sgd", "schedule_free_adamw", "schedule_free_swap"]


@torch.no_grad()
def lion(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    *,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
) -> None:
    r"""One step of Lion (Chen et al. 2023) on one tensor, as ``lion_pytorch.Lion`` takes it.

    With :math:`\eta` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\lambda` =
    ``weight_decay`` and :math:`m` = ``exp_avg``:

    .. math::

        \theta &\leftarrow (1 - \eta\lambda)\,\theta \\
        \theta &\leftarrow \theta - \eta\, \mathrm{sign}\bigl(\beta_1 m + (1 - \beta_1)\, g\bigr) \\
        m &\leftarrow \beta_2 m + (1 - \beta_2)\, g

    The update is a sign: every coordinate moves by exactly :math:`\eta` (or not at all where
    the interpolation is exactly 0), whatever the size of its gradient. The direction
    interpolates with :math:`\beta_1`, the memory with the larger :math:`\beta_2`: two
    different averages of the same gradients.

    Args:
        param: the tensor, updated in place.
        grad: its gradient (not modified).
        exp_avg: :math:`m`, updated in place (starts at zero).
        lr, betas, weight_decay: as in :class:`book.optim.Lion`.

    Example:
        >>> p, m = torch.zeros(3), torch.zeros(3)
        >>> lion(p, torch.tensor([1e-6, -5.0, 0.0]), m, lr=0.1)
        >>> p           # the sizes of the gradients do not matter, only their signs
        tensor([-0.1000,  0.1000,  0.0000])
    """
    beta1, beta2 = betas
    param.mul_(1.0 - lr * weight_decay)  # theta <- (1 - eta lambda) theta (lion-pytorch multiplies even by 1)
    update = exp_avg.mul(beta1).add_(grad, alpha=1.0 - beta1).sign_()  # sign(beta1 m + (1 - beta1) g)
    param.add_(update, alpha=-lr)  # theta <- theta - eta sign(...)
    exp_avg.mul_(beta2).add_(grad, alpha=1.0 - beta2)  # m <- beta2 m + (1 - beta2) g


def schedule_free_weights(
    k: int,
    lr: float,
    *,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    lr_max: float = -1.0,
    weight_sum: float = 0.0,
) -> tuple[float, float, float, float]:
    r"""The scalars of schedule-free step :math:`t = k + 1`: the warmed-up lr and the averaging weight.

    .. math::

        \gamma_t &= \gamma \cdot \min(1, t / \text{warmup\_steps}), \qquad
        \gamma_{\max} \leftarrow \max(\gamma_{\max}, \gamma_t) \\
        w_t &= t^{r}\, \gamma_{\max}^{\,p}, \qquad W \leftarrow W + w_t, \qquad
        c_{t} = w_t / W

    :math:`c_t` (the package's ``ckp1``) is the weight of the newest iterate :math:`z_t` in the
    running average :math:`x`: with :math:`r = 0` and no warmup, :math:`c_t = 1/t`, the plain
    average of all the :math:`z`. During warmup the weights grow like :math:`\gamma_t^p`
    (``weight_lr_power`` :math:`p`), so the small early steps count for little.

    Returns:
        ``(scheduled_lr, lr_max, weight_sum, ckp1)``: the new values of the group's
        ``scheduled_lr``, ``lr_max`` and ``weight_sum`` and the weight :math:`c_t` (0 if
        :math:`W = 0`, as the package).

    Example:
        >>> [round(schedule_free_weights(k, 1.0, weight_sum=float(k))[3], 3) for k in range(4)]
        [1.0, 0.5, 0.333, 0.25]
    """
    sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
    lr = lr * sched  # gamma_t
    lr_max = max(lr, lr_max)
    weight = ((k + 1) ** r) * (lr_max**weight_lr_power)  # w_t = t^r gamma_max^p
    weight_sum = weight_sum + weight  # W
    ckp1 = weight / weight_sum if weight_sum != 0 else 0.0  # c_t = w_t / W
    return lr, lr_max, weight_sum, ckp1


@torch.no_grad()
def schedule_free_sgd(
    param: Tensor,
    grad: Tensor,
    z: Tensor,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    ckp1: float,
) -> None:
    r"""One step of schedule-free SGD (Defazio et al. 2024) on one tensor, in train mode.

    The parameter holds :math:`y`, the point where the gradient is taken; ``z`` is the SGD
    iterate; the average :math:`x` is not stored but recovered from the two
    (:func:`schedule_free_swap`). With :math:`\gamma` = ``lr`` (already warmed up),
    :math:`\beta` = ``momentum``, :math:`\lambda` = ``weight_decay`` and :math:`c` = ``ckp1``
    (:func:`schedule_free_weights`):

    .. math::

        g &\leftarrow \nabla f(y) + \lambda y \\
        z_{t} &= z_{t-1} - \gamma g, \qquad
        x_{t} = (1 - c)\, x_{t-1} + c\, z_{t}, \qquad
        y_{t} = (1 - \beta)\, z_{t} + \beta\, x_{t}

    written, as the package does, as two in-place updates of :math:`y` that never form
    :math:`x`: :math:`y \leftarrow y + c\,(z - y)`, then
    :math:`y \leftarrow y + \gamma(\beta(1 - c) - 1)\, g`, then :math:`z \leftarrow z - \gamma g`.

    Args:
        param: :math:`y`, updated in place.
        grad: its gradient (not modified; the package adds the decay to ``p.grad`` in place).
        z: the SGD iterate, updated in place (starts as a copy of the parameter).
        lr, momentum, weight_decay, ckp1: as above.
    """
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)  # g + lambda y
    param.lerp_(z, ckp1)  # y <- y + c (z - y)
    param.add_(grad, alpha=lr * (momentum * (1 - ckp1) - 1))  # y <- y + gamma (beta (1 - c) - 1) g
    z.sub_(grad, alpha=lr)  # z <- z - gamma g


@torch.no_grad()
def schedule_free_adamw(
    param: Tensor,
    grad: Tensor,
    z: Tensor,
    exp_avg_sq: Tensor,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    ckp1: float,
    step: int,
) -> None:
    r"""One step of schedule-free AdamW (Defazio et al. 2024) on one tensor, in train mode.

    :func:`schedule_free_sgd` with the gradient divided by Adam's denominator: with
    :math:`v` = ``exp_avg_sq`` and :math:`t` = ``step`` (the group's ``k + 1``),

    .. math::

        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g \odot g, \qquad
        \hat g = g / \bigl(\sqrt{v / (1 - \beta_2^t)} + \epsilon\bigr) + \lambda y \\
        y &\leftarrow y + c\,(z - y), \quad
        y \leftarrow y + \gamma(\beta_1(1 - c) - 1)\, \hat g, \quad
        z \leftarrow z - \gamma \hat g

    :math:`\beta_1` plays the part of the momentum (the interpolation between :math:`z` and
    :math:`x`); there is no first moment. The decay :math:`\lambda y` is added after the
    normalisation, so it is decoupled as in AdamW, and taken at :math:`y`.

    Args:
        param: :math:`y`, updated in place.
        grad: its gradient (not modified; the package divides ``p.grad`` in place).
        z: the iterate, updated in place; exp_avg_sq: :math:`v`, updated in place.
        lr, betas, eps, weight_decay, ckp1, step: as above.
    """
    beta1, beta2 = betas
    bias_correction2 = 1 - beta2**step
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
    denom = exp_avg_sq.div(bias_correction2).sqrt_().add_(eps)  # sqrt(v / (1 - beta2^t)) + eps
    grad = grad.div(denom)  # g / denom
    if weight_decay != 0:
        grad.add_(param, alpha=weight_decay)  # + lambda y
    param.lerp_(z, ckp1)  # y <- y + c (z - y)
    param.add_(grad, alpha=lr * (beta1 * (1 - ckp1) - 1))  # y <- y + gamma (beta1 (1 - c) - 1) g
    z.sub_(grad, alpha=lr)  # z <- z - gamma g


@torch.no_grad()
def schedule_free_swap(param: Tensor, z: Tensor, beta: float, *, to_eval: bool) -> None:
    r"""Move a schedule-free parameter between :math:`y` (train mode) and :math:`x` (eval mode).

    Since :math:`y = (1 - \beta) z + \beta x`:
    :math:`x = y + (1 - 1/\beta)(z - y)` (``to_eval=True``) and
    :math:`y = x + (1 - \beta)(z - x)` (``to_eval=False``). Both are ``lerp_`` calls, as in the
    package; they are inverses only up to rounding.
    """
    param.lerp_(z.to(param.device), 1 - 1 / beta if to_eval else 1 - beta)
