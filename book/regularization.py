r"""Regularization: penalties, (inverted) dropout, early stopping and digit-image augmentation.

Everything here makes a network fit its training set *less well* on purpose, so that it
generalizes better:

- :func:`l2_penalty` and :func:`l1_penalty` are terms added to the loss,
  :math:`\tfrac12\sum\|w\|_2^2` and :math:`\sum\|w\|_1`; :func:`soft_threshold` is the
  proximal operator of the L1 penalty (the step that makes weights exactly zero).
- :func:`dropout` and :class:`Dropout` zero random units during training and scale the
  others up, so that nothing changes at evaluation time.
- :class:`EarlyStopping` watches a validation metric and stops :func:`book.train.fit`
  (it is a ``fit`` callback), optionally restoring the best weights.
- :func:`random_shift`, :func:`random_rotation`, :func:`gaussian_noise`, :func:`augment` and
  the module :class:`Augment` make new training images from old ones
  (:func:`book.data.digits`: 8 x 8 images stored as rows of 64 pixels in :math:`[0, 1]`).

::

    >>> import torch
    >>> from book.regularization import dropout, l2_penalty
    >>> w = torch.tensor([3.0, 4.0], requires_grad=True)
    >>> l2_penalty([w])                       # 1/2 * (9 + 16)
    tensor(12.5000, grad_fn=<MulBackward0>)
    >>> g = torch.Generator().manual_seed(0)
    >>> dropout(torch.ones(6), p=0.5, generator=g)   # kept units are scaled by 1 / (1 - p)
    tensor([0., 2., 0., 0., 0., 2.])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from book import checks

__all__ = [
    "l1_penalty",
    "l2_penalty",
    "soft_threshold",
    "dropout",
    "Dropout",
    "EarlyStopping",
    "random_shift",
    "random_rotation",
    "gaussian_noise",
    "augment",
    "Augment",
]


# ---------------------------------------------------------------------------
# Validation helpers


def _check_float_tensor(x, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    return a.type == "cpu" or (a.index or 0) == (b.index or 0)


# ---------------------------------------------------------------------------
# Penalties


def _tensors(params, name: str = "params") -> list[Tensor]:
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    elif isinstance(params, Tensor):
        params = [params]
    try:
        tensors = list(params)
    except TypeError:
        raise TypeError(
            f"{name} must be a tensor, an iterable of tensors or an nn.Module, got {type(params).__name__}"
        ) from None
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}[{i}] must be a floating-point tensor, got dtype {t.dtype}")
    if not tensors:
        raise ValueError(f"{name} is empty: there is nothing to penalize")
    return tensors


def l2_penalty(params) -> Tensor:
    r"""The L2 penalty :math:`\tfrac12 \sum_w \|w\|_2^2` of some tensors (a differentiable scalar).

    .. math::

        \Omega_2(\theta) = \tfrac12 \sum_{w \in \theta} \sum_i w_i^2,
        \qquad \nabla_w \Omega_2 = w .

    Note:
        **Convention: the factor** :math:`\tfrac12`. With it the gradient of the penalty is
        the weight itself, so minimizing ``loss + lam * l2_penalty(model)`` with plain SGD
        is *exactly* ``torch.optim.SGD(..., weight_decay=lam)`` on ``loss``: both steps are
        :math:`w \leftarrow w - \eta(g + \lambda w) = (1 - \eta\lambda)\,w - \eta g`
        (weight decay, Krogh & Hertz 1992). For adaptive methods the two are not the same;
        see :class:`book.optim.AdamW` (Loshchilov & Hutter 2019). Some texts write
        :math:`\lambda\|w\|^2` without the half; their :math:`\lambda` is half of ours.

    Args:
        params: a tensor, an iterable of tensors, or an ``nn.Module`` (its
            ``parameters()``; biases included: pass a filtered list to leave them out).

    Returns:
        A 0-dim tensor on the first tensor's device, in the promoted dtype of the inputs.

    Raises:
        TypeError: for something that is not a floating-point tensor.
        ValueError: for an empty iterable.

    Example:
        >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> l2_penalty(w).backward(); w.grad
        tensor([ 1., -2.])

    References:
        A. Krogh, J. A. Hertz, "A simple weight decay can improve generalization", NIPS 1992.
    """
    tensors = _tensors(params)
    total = sum(t.pow(2).sum() for t in tensors)
    return 0.5 * total


def l1_penalty(params) -> Tensor:
    r"""The L1 penalty :math:`\sum_w \|w\|_1 = \sum |w_i|` of some tensors (a differentiable scalar).

    .. math::

        \Omega_1(\theta) = \sum_{w \in \theta} \sum_i |w_i|,
        \qquad \partial_{w_i} \Omega_1 = \operatorname{sign}(w_i)
        \ (\text{any value in } [-1, 1] \text{ at } w_i = 0;\ \text{autograd uses } 0).

    The gradient has the same size for every nonzero weight, however small, so the
    penalty pushes small weights all the way to zero: this is the lasso of Tibshirani
    (1996), which selects features. With (sub)gradient steps the weights only hover
    around zero; the proximal step :func:`soft_threshold` makes them exactly zero.

    Args:
        params: a tensor, an iterable of tensors, or an ``nn.Module``.

    Returns:
        A 0-dim tensor.

    Example:
        >>> l1_penalty([torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])])
        tensor(3.5000)

    References:
        R. Tibshirani, "Regression shrinkage and selection via the lasso", Journal of the
        Royal Statistical Society B 58(1), 1996.
    """
    tensors = _tensors(params)
    return sum(t.abs().sum() for t in tensors)


def soft_threshold(x: Tensor, threshold: float) -> Tensor:
    r"""Soft thresholding, the proximal operator of :math:`\tau\|\cdot\|_1`: shrink towards 0 by ``threshold``.

    .. math::

        \operatorname{prox}_{\tau\|\cdot\|_1}(x)_i
        = \arg\min_z \Bigl(\tfrac12 (z - x_i)^2 + \tau |z|\Bigr)
        = \operatorname{sign}(x_i)\,\max(|x_i| - \tau, 0).

    Proximal gradient descent for ``loss + lam * l1_penalty`` takes a gradient step on the
    loss alone and then applies ``soft_threshold(w, lr * lam)``; every weight with
    :math:`|w| \le \eta\lambda` becomes exactly zero (ISTA). Equals
    ``torch.nn.functional.softshrink(x, threshold)``.

    Args:
        x: a floating-point tensor.
        threshold: :math:`\tau \ge 0`.

    Example:
        >>> soft_threshold(torch.tensor([-2.0, -0.5, 0.2, 3.0]), 1.0)
        tensor([-1., -0.,  0.,  2.])
    """
    x = _check_float_tensor(x)
    threshold = checks.nonnegative(threshold, "threshold")
    return x.sign() * (x.abs() - threshold).clamp_min(0.0)


# ---------------------------------------------------------------------------
# Dropout


def _check_p(p) -> float:
    return checks.number(p, "dropout probability p", low=0, high=1)


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    r"""Inverted dropout: zero each element with probability ``p``, scale the others by :math:`1/(1-p)`.

    .. math::

        m_i \sim \operatorname{Bernoulli}(1 - p) \ \text{independently}, \qquad
        y_i = \frac{m_i\, x_i}{1 - p}, \qquad \mathbb{E}[y_i] = x_i .

    Dividing by the keep probability during training keeps the expected activation
    equal to ``x``, so at evaluation time (``training=False``) the layer is the identity
    and the network needs no rescaling. (The original paper instead multiplied the
    weights by :math:`1-p` at test time; the two are equivalent in expectation.) The
    gradient is :math:`\partial y_i / \partial x_i = m_i/(1-p)`: it flows only through
    the kept units, scaled by the same factor.

    Args:
        x: a floating-point tensor of any shape.
        p: the probability of **dropping** an element, in :math:`[0, 1]` (torch's
            convention). ``p = 0`` returns ``x`` unchanged; ``p = 1`` returns zeros.
        training: apply dropout (True) or return ``x`` unchanged (False).
        generator: a ``torch.Generator`` for the mask, on ``x``'s device (the mask is
            drawn there; a CUDA tensor needs ``torch.Generator(device="cuda")``). The same
            seed gives the same mask. ``None`` uses PyTorch's global generator.

    Returns:
        A tensor of ``x``'s shape, dtype and device.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor or ``p`` is not a number.
        ValueError: if ``p`` is outside :math:`[0, 1]`, or the generator is on another
            device than ``x``.

    Example:
        >>> x = torch.ones(10_000)
        >>> y = dropout(x, p=0.2, generator=torch.Generator().manual_seed(0))
        >>> sorted(set(y.tolist())), round(float(y.mean()), 2)     # 0 or 1/0.8, mean about 1
        ([0.0, 1.25], 1.0)

    References:
        N. Srivastava, G. Hinton, A. Krizhevsky, I. Sutskever, R. Salakhutdinov, "Dropout: a
        simple way to prevent neural networks from overfitting", JMLR 15, 2014.
    """
    x = _check_float_tensor(x)
    p = _check_p(p)
    _check_generator(generator)
    if generator is not None and not _same_device(generator.device, x.device):
        raise ValueError(
            f"the generator is on {generator.device} but x is on {x.device}: the mask is drawn on x's device, "
            f"so pass torch.Generator(device={str(x.device)!r}).manual_seed(...)"
        )
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p  # P(keep) = 1 - p
    if p == 1.0:
        return x * keep  # all zeros (and zero gradient)
    return x * keep / (1.0 - p)


class Dropout(torch.nn.Module):
    r"""Inverted dropout as a layer: :func:`dropout` in ``train()`` mode, the identity in ``eval()`` mode.

    A drop-in equal of ``torch.nn.Dropout(p)`` (same convention: ``p`` is the probability of
    dropping a unit), with an optional generator for reproducible masks.

    Args:
        p: the drop probability, in :math:`[0, 1]`.
        generator: a ``torch.Generator`` on the device of the inputs, or ``None``.

    Example:
        >>> layer = Dropout(0.5).eval()
        >>> layer(torch.ones(3))
        tensor([1., 1., 1.])

    References:
        N. Srivastava et al., "Dropout: a simple way to prevent neural networks from
        overfitting", JMLR 15, 2014.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        _check_generator(generator)
        self.p = _check_p(p)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---------------------------------------------------------------------------
# Early stopping


_MONITORS = ("train_loss", "train_acc", "val_loss", "val_acc")


class EarlyStopping:
    r"""Stop training when a metric has stopped improving; a :func:`book.train.fit` callback.

    After each value :math:`m_t` (one per epoch), with :math:`b` the best value so far:

    .. math::

        \text{improved} \iff
        \begin{cases} m_t < b - \delta & \text{mode "min"} \\ m_t > b + \delta & \text{mode "max"}\end{cases}
        \qquad
        k \leftarrow \begin{cases} 0 & \text{improved (and } b \leftarrow m_t) \\ k + 1 & \text{otherwise}\end{cases}

    and training stops as soon as :math:`k \ge` ``patience``: ``patience`` consecutive
    values have not beaten the best by more than :math:`\delta` = ``min_delta``. (A small
    gain, below :math:`\delta`, neither resets the count nor moves the best.) A NaN is
    never an improvement. Early stopping limits how far the weights travel from their
    initialization, which for a quadratic loss acts much like an L2 penalty; Prechelt
    (1998) studies the stopping criteria and their cost.

    Use it with :meth:`step` by hand, or pass it to ``fit(..., callbacks=[stopper])``:
    called as ``stopper(epoch, history, model)`` it reads ``history`` 's last value of
    ``monitor``, and with ``restore_best_weights=True`` keeps a copy of the model's
    ``state_dict`` at the best epoch and loads it back when it stops training. (If
    training runs out of epochs first, call :meth:`restore` yourself.)

    Args:
        patience: how many epochs without improvement to tolerate (>= 1).
        min_delta: the smallest change that counts as an improvement (>= 0).
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        monitor: the :class:`book.train.History` key to watch when used as a callback:
            ``"val_loss"`` (default), ``"val_acc"``, ``"train_loss"`` or ``"train_acc"``.
        restore_best_weights: keep the best weights and load them when stopping.

    Attributes:
        best: the best value so far (``inf`` / ``-inf`` before the first step).
        best_epoch: the step (1-based; the epoch when used as a callback) of the best value, or ``None``.
        num_bad_epochs: :math:`k`, the consecutive steps without improvement.
        stopped_epoch: the step at which :meth:`step` first returned True, or ``None``.
        best_state: the copy of the best ``state_dict`` (``restore_best_weights=True`` only).

    Example:
        >>> stopper = EarlyStopping(patience=2)
        >>> [stopper.step(v) for v in [1.0, 0.8, 0.9, 0.85, 0.7]]
        [False, False, False, True, False]
        >>> stopper.best, stopper.best_epoch
        (0.7, 5)

    References:
        L. Prechelt, "Early stopping -- but when?", in Neural Networks: Tricks of the Trade,
        LNCS 1524, Springer, 1998.
    """

    def __init__(
        self,
        patience: int,
        min_delta: float = 0.0,
        mode: str = "min",
        monitor: str = "val_loss",
        restore_best_weights: bool = False,
    ):
        self.patience = checks.integer(patience, "patience", 1)
        self.min_delta = checks.nonnegative(min_delta, "min_delta")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if monitor not in _MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(_MONITORS)}, got {monitor!r}")
        self.mode, self.monitor = mode, monitor
        self.restore_best_weights = bool(restore_best_weights)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (to reuse the object for a new run)."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.num_bad_epochs = 0
        self.num_steps = 0
        self.stopped_epoch: int | None = None
        self.best_state: dict | None = None

    def is_improvement(self, metric: float) -> bool:
        """Whether ``metric`` beats the best value by more than ``min_delta``."""
        if self.mode == "min":
            return metric < self.best - self.min_delta
        return metric > self.best + self.min_delta

    def step(self, metric: float) -> bool:
        """Record one value of the metric; True when training should stop."""
        return self._step(metric, None)

    def _step(self, metric, epoch: int | None) -> bool:
        metric = float(metric)
        self.num_steps += 1
        epoch = self.num_steps if epoch is None else epoch
        if self.is_improvement(metric):  # False for NaN
            self.best, self.best_epoch, self.num_bad_epochs = metric, epoch, 0
            self._improved = True
        else:
            self.num_bad_epochs += 1
            self._improved = False
        stop = self.num_bad_epochs >= self.patience
        if stop and self.stopped_epoch is None:
            self.stopped_epoch = epoch
        return stop

    def __call__(self, epoch: int, history, model: torch.nn.Module | None = None) -> bool:
        """The :func:`book.train.fit` callback: step on ``history``'s last ``monitor`` value."""
        value = history.epochs[-1][self.monitor]
        if value is None:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r} but the history has no value for it: "
                "pass val=... to fit (or monitor a training metric)"
            )
        stop = self._step(value, epoch)
        if self.restore_best_weights:
            if model is None:
                raise ValueError("restore_best_weights=True needs the model: call stopper(epoch, history, model)")
            if self._improved:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if stop:
                self.restore(model)
        return stop

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best weights seen into ``model`` (``restore_best_weights=True`` only)."""
        if self.best_state is None:
            raise ValueError("no best weights stored: use restore_best_weights=True and train for an epoch")
        model.load_state_dict(self.best_state)

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta:g}, mode={self.mode!r}, "
            f"monitor={self.monitor!r}, best={self.best:.4g}, best_epoch={self.best_epoch})"
        )


# ---------------------------------------------------------------------------
# Augmentation of small square images (the digits: rows of 64 pixels)


def _as_images(x: Tensor) -> tuple[Tensor, torch.Size]:
    """``x`` as ``(N, H, W)`` images, and its original shape.

    Accepts one flattened square image ``(D,)``, a batch of them ``(N, D)`` (``D`` a perfect
    square, 64 for the digits), or images ``(N, H, W)``.
    """
    x = _check_float_tensor(x)
    shape = x.shape
    if x.ndim in (1, 2):
        side = math.isqrt(shape[-1])
        if side * side != shape[-1] or side == 0:
            raise ValueError(
                f"x must hold flattened square images (the last dimension a perfect square such as 64), "
                f"got shape {tuple(shape)}"
            )
        return x.reshape(-1, side, side), shape
    if x.ndim == 3:
        return x, shape
    raise ValueError(f"x must have shape (D,), (N, D) or (N, H, W), got {tuple(shape)}")


def _rand_device(generator) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def random_shift(x: Tensor, max_shift: int = 1, generator: torch.Generator | None = None) -> Tensor:
    r"""Translate each image by a random whole number of pixels, filling with zeros.

    Each image gets its own shift :math:`(d_r, d_c)`, both uniform on
    :math:`\{-s, \dots, s\}` with :math:`s` = ``max_shift``:

    .. math::

        y[r, c] = x[r - d_r,\ c - d_c] \quad (0 \text{ where that pixel is outside the image}).

    Zero is the background of the digits, so a shifted digit is still a digit.

    Args:
        x: flattened square images ``(N, 64)`` or ``(64,)``, or images ``(N, H, W)``.
        max_shift: the largest shift in pixels (>= 0, smaller than the image).
        generator: the shifts are drawn on this generator's device (the CPU for ``None``,
            using the global generator) and moved to ``x``'s device, so a seed gives the
            same shifts on every device.

    Returns:
        The shifted images, with ``x``'s shape, dtype and device.

    Example:
        >>> x = torch.zeros(1, 64); x[0, 27] = 1.0                 # one pixel at (3, 3)
        >>> y = random_shift(x, 2, generator=torch.Generator().manual_seed(0))
        >>> divmod(int(y.argmax()), 8)                              # moved by at most 2
        (5, 5)

    References:
        P. Y. Simard, D. Steinkraus, J. C. Platt, "Best practices for convolutional neural
        networks applied to visual document analysis", ICDAR 2003.
    """
    images, shape = _as_images(x)
    max_shift = checks.integer(max_shift, "max_shift", 0)
    _check_generator(generator)
    n, h, w = images.shape
    if max_shift >= min(h, w):
        raise ValueError(f"max_shift must be smaller than the image ({h} x {w}), got {max_shift}")
    if max_shift == 0 or n == 0:
        return x.clone()
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator,
                           device=_rand_device(generator)).to(x.device)  # (N, 2): rows, columns
    s = max_shift
    padded = F.pad(images, (s, s, s, s))  # (N, H + 2s, W + 2s), zeros around
    rows = torch.arange(h, device=x.device)[None, :] - shifts[:, :1] + s  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] - shifts[:, 1:] + s  # (N, W)
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded[idx, rows[:, :, None], cols[:, None, :]]  # (N, H, W)
    return out.reshape(shape)


def random_rotation(x: Tensor, max_degrees: float = 15.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Rotate each image about its centre by a random angle, with bilinear interpolation.

    Each image gets an angle :math:`\alpha` uniform on :math:`[-a, a]` degrees
    (:math:`a` = ``max_degrees``); output pixel :math:`u` (in coordinates from -1 to 1 about
    the centre) takes the input's value at :math:`R(\alpha)\,u`, interpolated bilinearly
    between the four nearest pixels, zero outside (``F.affine_grid`` and
    ``F.grid_sample``). An angle of 0 returns the image unchanged (up to rounding).

    Args:
        x: flattened square images ``(N, 64)`` or ``(64,)``, or images ``(N, H, W)``.
        max_degrees: the largest angle in degrees (>= 0, at most 180).
        generator: angles drawn on its device (CPU for ``None``), then moved to ``x``'s.

    Returns:
        The rotated images, with ``x``'s shape, dtype and device.

    Example:
        >>> x = torch.rand(5, 64)
        >>> torch.allclose(random_rotation(x, 0.0), x)
        True

    References:
        P. Y. Simard et al., "Best practices for convolutional neural networks applied to
        visual document analysis", ICDAR 2003.
    """
    images, shape = _as_images(x)
    max_degrees = checks.number(max_degrees, "max_degrees", low=0, high=180)
    _check_generator(generator)
    n = images.shape[0]
    if n == 0:
        return x.clone()
    where = _rand_device(generator)
    u = torch.rand(n, generator=generator, device=where,
                   dtype=torch.float32 if where.type == "mps" else torch.float64)  # MPS has no float64
    angles = ((2 * u - 1) * math.radians(max_degrees)).to(device=x.device, dtype=x.dtype)  # (N,)
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, [n, 1, *images.shape[1:]], align_corners=False)  # (N, H, W, 2)
    out = F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0].reshape(shape)


def gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None,
                   clip: tuple[float, float] | None = None) -> Tensor:
    r"""Add independent Gaussian noise to every pixel: :math:`y = x + \sigma z`, :math:`z \sim \mathcal N(0, I)`.

    Args:
        x: a floating-point tensor (any shape).
        std: :math:`\sigma \ge 0`.
        generator: noise drawn on its device (CPU for ``None``), then moved to ``x``'s.
        clip: ``(low, high)`` to clamp the result to, e.g. ``(0.0, 1.0)`` for the digits'
            pixel range; ``None`` leaves it unclamped.

    Example:
        >>> x = torch.zeros(10_000)
        >>> round(float(gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(0)).std()), 2)
        0.1

    References:
        C. M. Bishop, "Training with noise is equivalent to Tikhonov regularization",
        Neural Computation 7(1), 1995.
    """
    x = _check_float_tensor(x)
    std = checks.nonnegative(std, "std")
    _check_generator(generator)
    if clip is not None and (len(clip) != 2 or not clip[0] <= clip[1]):
        raise ValueError(f"clip must be a pair (low, high) with low <= high, got {clip!r}")
    if std == 0.0:
        out = x.clone()
    else:
        z = torch.randn(x.shape, generator=generator, device=_rand_device(generator), dtype=x.dtype)
        out = x + std * z.to(x.device)
    return out.clamp(*clip) if clip is not None else out


def augment(
    x: Tensor,
    max_shift: int = 1,
    max_degrees: float = 10.0,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Random rotation, then random shift, then (optionally) noise clipped to :math:`[0, 1]`.

    .. math::

        y = \operatorname{clip}_{[0,1]}\bigl(\operatorname{shift}_{d}(\operatorname{rot}_\alpha(x))
        + \sigma z\bigr), \quad \alpha \sim U[-a, a],\ d \sim U\{-s..s\}^2,\ z \sim \mathcal N(0, I)

    (no clipping when ``noise_std`` is 0). Every image gets its own draw; a seeded
    generator makes the result reproducible. Small rotations and shifts are changes a
    digit's label does not care about, so the network sees "new" training images for free
    (Simard et al. 2003 used elastic distortions the same way).

    Args:
        x: flattened square images ``(N, 64)`` or ``(64,)``, or images ``(N, H, W)``.
        max_shift: see :func:`random_shift` (0 for none).
        max_degrees: see :func:`random_rotation` (0 for none).
        noise_std: see :func:`gaussian_noise` (0 for none).
        generator: one generator for all three draws.

    Returns:
        Augmented images of ``x``'s shape, dtype and device.

    Example:
        >>> x = torch.rand(4, 64)
        >>> g = lambda: torch.Generator().manual_seed(0)
        >>> torch.equal(augment(x, generator=g()), augment(x, generator=g()))
        True
    """
    _as_images(x)  # validates the shape early
    checks.integer(max_shift, "max_shift", 0)
    checks.number(max_degrees, "max_degrees", low=0, high=180)
    checks.nonnegative(noise_std, "noise_std")
    out = x
    if max_degrees != 0:
        out = random_rotation(out, max_degrees, generator)
    if max_shift != 0:
        out = random_shift(out, max_shift, generator)
    if noise_std != 0:
        out = gaussian_noise(out, noise_std, generator, clip=(0.0, 1.0))
    return out.clone() if out is x else out


class Augment(torch.nn.Module):
    r"""Augmentation as the first layer of a model: :func:`augment` in ``train()`` mode, identity in ``eval()``.

    Put it in front of a network to get freshly augmented images at every training step
    from :func:`book.train.fit` (which evaluates in eval mode, so validation sees the
    original images): ``nn.Sequential(Augment(max_shift=1, max_degrees=10), mlp)``.

    Args:
        max_shift, max_degrees, noise_std: as in :func:`augment`.
        generator: a generator for the draws (on the CPU or the data's device), or ``None``.

    Example:
        >>> layer = Augment(max_shift=1).eval()
        >>> x = torch.rand(2, 64)
        >>> torch.equal(layer(x), x)
        True
    """

    def __init__(self, max_shift: int = 1, max_degrees: float = 10.0, noise_std: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        checks.integer(max_shift, "max_shift", 0)
        checks.number(max_degrees, "max_degrees", low=0, high=180)
        checks.nonnegative(noise_std, "noise_std")
        _check_generator(generator)
        self.max_shift, self.max_degrees, self.noise_std = max_shift, max_degrees, noise_std
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return augment(x, self.max_shift, self.max_degrees, self.noise_std, self.generator)

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}, max_degrees={self.max_degrees}, noise_std={self.noise_std}"
