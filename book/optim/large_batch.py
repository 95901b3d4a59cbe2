r"""LARS and LAMB, layer-wise adaptive optimizers for large batches: thin shells over
:func:`book.optim.functional.lars` and :func:`book.optim.functional.lamb`.

Both rescale each parameter tensor's step by a *trust ratio* built from the norm of that tensor
and the norm of its update, so that every "layer" (every tensor) moves by about the same
fraction of its own size, whatever the scale of its gradient. Both leave out of that scaling,
and out of weight decay, the tensors with at most one dimension (biases, and the weights and
biases of batch norm and layer norm) by default, as the large-batch recipes do.

    >>> import torch
    >>> from book.optim import LARS
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    >>> opt = LARS(model.parameters(), lr=1.0, momentum=0.9, weight_decay=5e-4)
    >>> model(torch.randn(16, 4)).pow(2).mean().backward()
    >>> opt.step()
    >>> [float(opt.state[p]["trust_ratio"]) == 1.0 for p in model.parameters()]  # 1-D: excluded
    [False, True, True, True, False, True]
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from book import checks
from book.optim import functional as F
from book.optim._base import evaluate_closure, step_counter

__all__ = ["LARS", "LAMB"]


def _grad(p: Tensor, name: str) -> Tensor:
    """``p.grad``, refusing sparse gradients (a trust ratio needs the whole tensor's norm)."""
    if p.grad.is_sparse:
        raise RuntimeError(f"book.optim.{name} does not support sparse gradients")
    return p.grad


def _excluded(p: Tensor, group: dict) -> bool:
    """Whether ``p`` is left out of the trust ratio and the weight decay: a 1-D (or 0-D) tensor under ``exclude_1d``."""
    return bool(group["exclude_1d"]) and p.ndim <= 1


class LARS(Optimizer):
    r"""LARS, layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017): SGD with momentum and one
    learning rate per tensor.

    .. math::

        \begin{aligned}
        &\textbf{input: } \gamma \text{ (lr)},\ m \text{ (momentum)},\ \beta \text{ (weight\_decay)},\
            \eta \text{ (trust\_coefficient)},\ \epsilon \text{ (eps)};\ v_0 = 0 \\
        &\textbf{for } t = 0, 1, \dots \textbf{ and each tensor } w \text{ with gradient } g: \\
        &\quad \lambda \leftarrow \begin{cases}
            \eta\, \|w_t\| \,/\, (\|g_t\| + \beta \|w_t\| + \epsilon)
                & \|w_t\| > 0 \text{ and } \|g_t\| > 0 \\
            1 & \text{otherwise} \end{cases} \\
        &\quad v_{t+1} \leftarrow m\, v_t + \gamma\, \lambda\, (g_t + \beta w_t) \\
        &\quad w_{t+1} \leftarrow w_t - v_{t+1}
        \end{aligned}

    This is Algorithm 1 of the paper, with :math:`\|\cdot\|` the Euclidean norm of the whole
    tensor (the paper's "layer" is one weight tensor; a layer's bias is a tensor of its own).
    :math:`\gamma` is the global learning rate, which a schedule changes (the paper uses a
    polynomial decay, :math:`\gamma_t = \gamma_0 (1 - t/T)^2`, with warmup); :math:`\lambda`
    is the tensor's local rate, so the step's length relative to the weights,
    :math:`\gamma\lambda\|g + \beta w\| / \|w\| \le \gamma\eta`, does not depend on the
    gradient's scale. The buffer :math:`v` is ``state[p]["momentum_buffer"]`` (none with
    ``momentum=0``) and the last :math:`\lambda` is ``state[p]["trust_ratio"]`` (a 0-dim
    tensor), kept to be looked at.

    **Excluded tensors.** A tensor with ``ndim <= 1`` (a bias, or the weight or bias of
    ``BatchNorm``/``LayerNorm``, which are 1-D) gets :math:`\lambda = 1` and no weight decay
    while ``exclude_1d=True`` (the default): its step is plain momentum SGD,
    :math:`v \leftarrow m v + \gamma g`, :math:`w \leftarrow w - v`. An optimizer sees
    tensors, not layer types, so this is the rule by shape; it is what the large-batch
    recipes do by name (SimCLR's LARS excludes "bias" and "batch_normalization" from both;
    Goyal et al. and the MLPerf ResNet LARS leave biases and batch-norm parameters
    undecayed; timm excludes every group with ``weight_decay=0``). A whole parameter group
    can drop the ratio with ``trust=False`` (its weight decay then stays as the group sets it).

    Note:
        **Conventions, and other implementations.**

        - *Where* :math:`\gamma` *goes.* As in the paper (and SimCLR's LARS), :math:`\gamma`
          multiplies each contribution to the buffer. timm's ``Lars`` and
          ``torch_optimizer.LARS`` (from PyTorch Lightning Bolts) keep it outside, as
          ``torch.optim.SGD`` does (:math:`b \leftarrow m b + \lambda(g + \beta w)`,
          :math:`w \leftarrow w - \gamma b`): the iterates are the same while :math:`\gamma` is
          constant (:math:`v = \gamma b`), and differ under a schedule, where the paper's form
          lets the rate change only the new gradients' weight (see :class:`book.optim.SGD`'s
          note on the three ways to write momentum).
        - *The denominator.* :math:`\|g\| + \beta\|w\|`, the paper's, also timm's and
          ``torch-optimizer``'s. SimCLR's LARS divides by :math:`\|g + \beta w\|` instead (no
          larger, so its ratios are at least as large). ``eps`` defaults to 0, as in the paper;
          timm and ``torch-optimizer`` add ``1e-8`` (pass ``eps=1e-8`` to match them).
        - *Zero norms.* Where :math:`\|w\| = 0` or :math:`\|g\| = 0` the ratio is 1 and the
          step is :math:`\gamma(g + \beta w)`, as in timm and SimCLR. (The paper's formula
          gives :math:`\lambda = 0` at :math:`w = 0`, which would keep a zero-initialized
          tensor at zero forever.) ``torch_optimizer.LARS`` takes the plain gradient, without
          weight decay, there.
        - *Which tensors are adapted.* timm and ``torch-optimizer`` adapt only the groups with
          ``weight_decay != 0``; here every tensor is adapted unless excluded as above.
        - The trust coefficient is :math:`\eta = 10^{-3}` by default, as in the paper (it
          reports values around 0.001); ``torch_optimizer.LARS``'s default is 0.01. timm's
          ``trust_clip`` (LARC: :math:`\lambda \leftarrow \min(\lambda/\gamma, 1)`), Nesterov
          momentum and dampening are not part of Algorithm 1 and are not offered here.

        Tested step for step against Algorithm 1 written out from the paper, and against
        ``torch_optimizer.LARS`` (where its conventions agree) when that package is installed.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the global learning rate :math:`\gamma \ge 0` (default 1.0, as timm's ``Lars``;
            the effective step is about :math:`\gamma\eta` of each tensor's norm).
        momentum: :math:`m \ge 0` (default 0.9, as in the paper's experiments).
        weight_decay: :math:`\beta \ge 0` (default 0): an L2 penalty, inside the ratio's
            denominator and added to the gradient.
        trust_coefficient: :math:`\eta \ge 0` (default ``1e-3``).
        eps: :math:`\epsilon \ge 0`, added to the ratio's denominator (default 0).
        exclude_1d: leave tensors with ``ndim <= 1`` out of the ratio and the weight decay
            (default True). A group option, like the others.
        trust: compute the ratio for this group's (non-excluded) tensors (default True);
            ``False`` makes the group plain SGD with momentum and an L2 penalty.

    Raises:
        ValueError: for a negative ``lr``, ``momentum``, ``weight_decay``,
            ``trust_coefficient`` or ``eps`` (in torch.optim's words:
            ``"Invalid learning rate: -1"``).

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        >>> X, y = torch.randn(256, 4), torch.randn(256, 1)
        >>> opt = LARS(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4, trust_coefficient=0.01)
        >>> first = torch.nn.functional.mse_loss(model(X), y).item()
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < first), sorted(opt.state[model[0].weight])
        (True, ['momentum_buffer', 'trust_ratio'])

    References:
        Y. You, I. Gitman, B. Ginsburg, "Large batch training of convolutional networks",
        arXiv:1708.03888, 2017 (Algorithm 1).
        P. Goyal et al., "Accurate, large minibatch SGD: training ImageNet in 1 hour",
        arXiv:1706.02677, 2017 (no weight decay on biases and batch-norm parameters).
        T. Chen, S. Kornblith, M. Norouzi, G. Hinton, "A simple framework for contrastive
        learning of visual representations" (SimCLR), ICML 2020, arXiv:2002.05709.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        eps: float = 0.0,
        *,
        exclude_1d: bool = True,
        trust: bool = True,
    ) -> None:
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(momentum, "momentum value")
        checks.optim_arg(weight_decay, "weight_decay value")
        checks.optim_arg(trust_coefficient, "trust_coefficient value")
        checks.optim_arg(eps, "epsilon value")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            exclude_1d=exclude_1d,
            trust=trust,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("exclude_1d", True)
            group.setdefault("trust", True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` (optional) re-evaluates the loss and returns it.

        Parameters whose ``.grad`` is ``None`` are skipped (their state is untouched).
        Returns the closure's loss, or ``None`` without a closure.
        """
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = _grad(p, "LARS")
                excluded = _excluded(p, group)
                state = self.state[p]
                buf, ratio = F.lars(
                    p,
                    grad,
                    state.get("momentum_buffer"),
                    lr=group["lr"],
                    momentum=group["momentum"],
                    weight_decay=0.0 if excluded else group["weight_decay"],
                    trust_coefficient=group["trust_coefficient"],
                    eps=group["eps"],
                    trust=bool(group["trust"]) and not excluded,
                )
                if buf is not None:
                    state["momentum_buffer"] = buf
                state["trust_ratio"] = ratio
        return loss


class LAMB(Optimizer):
    r"""LAMB, layer-wise adaptive moments for batch training (You et al., 2019): Adam's direction,
    with one step length per tensor.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \beta_1, \beta_2 \text{ (betas)},\
            \epsilon \text{ (eps)},\ \lambda \text{ (weight\_decay)},\
            (\gamma_l, \gamma_u) \text{ (clamp)};\ m_0 = v_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \textbf{ and each tensor } x \text{ with gradient } g: \\
        &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \quad
               v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        &\quad \hat m_t \leftarrow m_t / (1 - \beta_1^t), \quad
               \hat v_t \leftarrow v_t / (1 - \beta_2^t)
               \quad (\text{if bias\_correction}) \\
        &\quad r_t \leftarrow \hat m_t / (\sqrt{\hat v_t} + \epsilon), \quad
               u_t \leftarrow r_t + \lambda x_t \\
        &\quad \rho_t \leftarrow \begin{cases}
            \phi(\|x_t\|) \,/\, \|u_t\| & \|x_t\| > 0 \text{ and } \|u_t\| > 0 \\
            1 & \text{otherwise} \end{cases}, \quad
            \phi(z) = \min(\max(z, \gamma_l), \gamma_u) \\
        &\quad x_{t+1} \leftarrow x_t - \eta\, \rho_t\, u_t
        \end{aligned}

    This is Algorithm 2 of the paper, per tensor (its "layer" :math:`i`), with
    :math:`\|\cdot\|` the Euclidean norm of the whole tensor. The step has length
    :math:`\eta\,\phi(\|x\|)`: Adam chooses the direction within a tensor and the weights'
    norm sets how far it moves. :math:`m`, :math:`v` and :math:`t` are
    ``state[p]["exp_avg"]``, ``state[p]["exp_avg_sq"]`` and ``state[p]["step"]`` (Adam's
    keys, a 0-dim float32 CPU step counter as PyTorch keeps it) and the last :math:`\rho` is
    ``state[p]["trust_ratio"]`` (a 0-dim tensor), kept to be looked at.

    **Excluded tensors.** A tensor with ``ndim <= 1`` (a bias, or the weight or bias of
    ``BatchNorm``/``LayerNorm``) gets :math:`\rho = 1` and no weight decay while
    ``exclude_1d=True`` (the default): its step is Adam's,
    :math:`x \leftarrow x - \eta\,\hat m / (\sqrt{\hat v} + \epsilon)`. This is the rule by
    shape that BERT's LAMB applies by name ("LayerNorm", "bias": no weight decay, and timm
    and NVIDIA's FusedLAMB then skip the ratio for groups without weight decay). A whole
    group can drop the ratio with ``trust=False``: then its step is AdamW's,
    :math:`x \leftarrow x - \eta(r + \lambda x)`.

    Note:
        **Conventions, with their sources.**

        - *Bias correction* (``bias_correction=True``, default): Algorithm 2 of the paper
          (arXiv:1904.00962 v5, the ICLR 2020 version) corrects both moments, and so do
          NVIDIA's ``FusedLAMB`` and timm's ``Lamb`` by default.
          ``torch_optimizer.Lamb`` (0.3.0) does not by default (its code says "Paper v3 does
          not use debiasing"), and its ``debias=True`` is another thing: it multiplies the
          whole step by :math:`\sqrt{1 - \beta_2^t}/(1 - \beta_1^t)` and leaves
          :math:`m / (\sqrt v + \epsilon)` uncorrected.
        - *The scaling function* :math:`\phi`. Algorithm 2 takes :math:`\phi` as an input;
          the paper's analysis asks only that it be bounded,
          :math:`\alpha_l \le \phi(z) \le \alpha_u`, and writes the clamp
          :math:`\phi(z) = \min(\max(z, \gamma_l), \gamma_u)`. The default ``clamp=None``
          is :math:`\phi(z) = z`, no clamp, as in NVIDIA's ``FusedLAMB``, timm's ``Lamb`` and
          Google's TensorFlow LAMB. cybertronai's ``pytorch-lamb`` and ``torch_optimizer.Lamb``
          clamp :math:`\|x\|` to [0, 10] (``clamp_value=10``): pass ``clamp=(0.0, 10.0)`` for
          theirs. The difference is real for large tensors: a 1024 x 1024 matrix initialized
          with standard deviation 0.02 has norm 20, so that clamp halves its steps.
        - *Weight decay* is decoupled (added to :math:`r`, not to the gradient, so it never
          enters the moments) and inside the ratio's norm :math:`\|r + \lambda x\|`, as in
          the paper, ``torch-optimizer`` and timm's default (which calls it
          ``decoupled_decay=False``). Its ``max_grad_norm=1.0`` (a global gradient clipping
          before the moments, from NVIDIA's ``FusedLAMB``) is not part of Algorithm 2; use
          :func:`book.practice.clip_grad_norm_` before ``step`` for it.
        - :math:`\epsilon` is outside the square root, on the bias-corrected
          :math:`\sqrt{\hat v}` (default ``1e-6``, as in ``torch-optimizer``, timm and
          ``FusedLAMB``).
        - *Zero norms*: :math:`\rho = 1` where :math:`\|x\| = 0` or :math:`\|u\| = 0`, as in
          ``FusedLAMB``, timm and ``torch-optimizer``.

        With ``bias_correction=False``, ``clamp=(0, 10)`` and ``exclude_1d=False`` this is
        ``torch_optimizer.Lamb`` (``debias=False``); tested against it when that package is
        installed, and step for step against Algorithm 2 written out from the paper.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\eta \ge 0` (default ``1e-3``).
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)` (default ``(0.9, 0.999)``).
        eps: :math:`\epsilon \ge 0` (default ``1e-6``).
        weight_decay: :math:`\lambda \ge 0`, the decoupled decay (default ``0.01``, BERT's
            with LAMB, and timm's and FusedLAMB's default).
        bias_correction: divide the moments by :math:`1 - \beta^t` (default True).
        clamp: :math:`(\gamma_l, \gamma_u)` with :math:`0 \le \gamma_l \le \gamma_u`, the
            bounds of :math:`\phi`, or ``None`` for :math:`\phi(z) = z`, no clamp (default ``None``).
        exclude_1d: leave tensors with ``ndim <= 1`` out of the ratio and the weight decay
            (default True). A group option, like the others.
        trust: compute the ratio for this group's (non-excluded) tensors (default True).

    Raises:
        ValueError: for a negative ``lr``, ``eps`` or ``weight_decay``, a beta outside
            :math:`[0, 1)` (torch.optim's words), or a ``clamp`` that is not ``None`` nor a
            pair :math:`0 \le \gamma_l \le \gamma_u`.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        >>> X, y = torch.randn(256, 4), torch.randn(256, 1)
        >>> opt = LAMB(model.parameters(), lr=0.01)
        >>> first = torch.nn.functional.mse_loss(model(X), y).item()
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < first), sorted(opt.state[model[0].weight])
        (True, ['exp_avg', 'exp_avg_sq', 'step', 'trust_ratio'])

    References:
        Y. You, J. Li, S. Reddi, J. Hseu, S. Kumar, S. Bhojanapalli, X. Song, J. Demmel,
        K. Keutzer, C.-J. Hsieh, "Large batch optimization for deep learning: training BERT
        in 76 minutes", ICLR 2020, arXiv:1904.00962 (Algorithm 2).
        D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015,
        arXiv:1412.6980.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        *,
        bias_correction: bool = True,
        clamp: tuple[float, float] | None = None,
        exclude_1d: bool = True,
        trust: bool = True,
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
            bias_correction=bias_correction,
            clamp=_check_clamp(clamp),
            exclude_1d=exclude_1d,
            trust=trust,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("bias_correction", True)
            group.setdefault("clamp", None)
            group.setdefault("exclude_1d", True)
            group.setdefault("trust", True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` (optional) re-evaluates the loss and returns it.

        Parameters whose ``.grad`` is ``None`` are skipped (their state, step count included,
        is untouched). Returns the closure's loss, or ``None`` without a closure.
        """
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            clamp = _check_clamp(group["clamp"])  # a group may set its own
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = _grad(p, "LAMB")
                excluded = _excluded(p, group)
                state = self.state[p]
                if "step" not in state:
                    state["step"] = step_counter()
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["trust_ratio"] = F.lamb(
                    p,
                    grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state["step"],
                    lr=group["lr"],
                    betas=group["betas"],
                    eps=group["eps"],
                    weight_decay=0.0 if excluded else group["weight_decay"],
                    bias_correction=bool(group["bias_correction"]),
                    clamp=clamp,
                    trust=bool(group["trust"]) and not excluded,
                )
        return loss


def _check_clamp(clamp) -> tuple[float, float] | None:
    """``None`` or a pair ``(low, high)`` with ``0 <= low <= high``, as a tuple; else ``ValueError``."""
    if clamp is None:
        return None
    try:
        low, high = clamp
    except (TypeError, ValueError):
        raise ValueError(f"Invalid clamp: {clamp!r} (expected None or a pair (lower, upper))") from None
    checks.optim_arg(low, "clamp lower bound")
    checks.optim_arg(high, "clamp upper bound", low=low)
    return (low, high)
