r"""Weight initialization: draw the first weights so that signals neither explode nor vanish.

A layer :math:`y = W x` with independent zero-mean weights of variance :math:`\sigma^2` and
inputs of variance :math:`v` gives outputs of variance :math:`n_\text{in}\, \sigma^2 v`
(:math:`n_\text{in}` = fan-in). Through :math:`L` layers the variance is multiplied by
:math:`(n_\text{in} \sigma^2)^L`: it explodes or vanishes exponentially unless
:math:`n_\text{in}\sigma^2 \approx 1`. The backward pass multiplies gradients by
:math:`W^\top`, which asks for :math:`n_\text{out}\sigma^2 \approx 1`. The classic schemes
choose :math:`\sigma^2`:

- LeCun (:func:`lecun_normal_`): :math:`\sigma^2 = 1 / n_\text{in}`, for linear, SELU and
  scaled-tanh units;
- Glorot / Xavier (:func:`xavier_normal_`, :func:`xavier_uniform_`):
  :math:`\sigma^2 = \text{gain}^2 \cdot 2 / (n_\text{in} + n_\text{out})`, for tanh and sigmoid;
- He / Kaiming (:func:`kaiming_normal_`, :func:`kaiming_uniform_`):
  :math:`\sigma^2 = \text{gain}^2 / n_\text{mode}` with gain :math:`\sqrt 2` for ReLU.

A uniform distribution on :math:`[-b, b]` has variance :math:`b^2/3`, so each scheme has a
uniform version with :math:`b = \sqrt{3}\,\sigma`. The *gain* corrects for what the
nonlinearity does to the variance (:func:`calculate_gain`): a ReLU zeroes half of its
inputs, halving the second moment, hence gain :math:`\sqrt 2`.

Every function fills its tensor in place and returns it, with ``torch.nn.init``'s names,
arguments and results (bit for bit under the same ``generator``)::

    >>> import torch
    >>> w = torch.empty(256, 512)
    >>> _ = kaiming_normal_(w, nonlinearity="relu", generator=torch.Generator().manual_seed(0))
    >>> round(w.std().item() * 512 ** 0.5, 1)          # std = sqrt(2 / fan_in)
    1.4

References:
    Y. LeCun, L. Bottou, G. B. Orr, K.-R. Müller, "Efficient BackProp", in *Neural
    Networks: Tricks of the Trade*, Springer 1998 (section 4.6).
    X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward neural
    networks", AISTATS 2010.
    K. He, X. Zhang, S. Ren, J. Sun, "Delving deep into rectifiers: surpassing human-level
    performance on ImageNet classification", ICCV 2015, arXiv:1502.01852.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = [
    "fans",
    "calculate_gain",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "lecun_normal_",
]

# Layers that do not change the variance of a signal (the names torch.nn.functional uses).
_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_NONLINEARITIES = _LINEAR + ("sigmoid", "tanh", "relu", "leaky_relu", "selu")


def _check_tensor(tensor) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise ValueError(
            f"fan in and fan out need a tensor with at least 2 dimensions (a weight of shape "
            f"(out_features, in_features, *kernel_size)), got shape {tuple(tensor.shape)}"
        )
    return tensor


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def fans(tensor: Tensor) -> tuple[int, int]:
    r"""The fan-in and fan-out of a weight tensor, with PyTorch's layout conventions.

    A ``Linear`` weight has shape ``(out_features, in_features)``; a convolution's
    ``(out_channels, in_channels, *kernel_size)``. Each output unit of a convolution sees
    ``in_channels`` times the receptive field (the product of the kernel sizes) inputs:

    .. math::
        n_\text{in} = \text{shape}[1] \cdot r, \qquad n_\text{out} = \text{shape}[0] \cdot r,
        \qquad r = \prod_{k \ge 2} \text{shape}[k].

    Note:
        Grouped convolutions store ``in_channels / groups`` in ``shape[1]``, so their fan-in
        is right; their fan-out counts one group's outputs too (as torch does). For a
        transposed convolution, whose weight is ``(in_channels, out_channels / groups, *k)``,
        the two are swapped, as in torch. The same holds for ``x @ W`` with
        ``W`` of shape ``(in, out)``: pass ``W.T``.

    Raises:
        ValueError: for a tensor with fewer than 2 dimensions (a bias has no fan-in).

    Example:
        >>> fans(torch.empty(10, 784))            # nn.Linear(784, 10).weight
        (784, 10)
        >>> fans(torch.empty(16, 3, 5, 5))        # nn.Conv2d(3, 16, 5).weight
        (75, 400)
    """
    shape = _check_tensor(tensor).shape
    receptive_field = math.prod(shape[2:])  # 1 for a matrix
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    r"""The gain recommended for weights followed by ``nonlinearity``.

    - ``"linear"``, ``"conv1d"`` ... ``"conv_transpose3d"``, ``"sigmoid"``: :math:`1`
    - ``"tanh"``: :math:`5/3`
    - ``"relu"``: :math:`\sqrt{2}`
    - ``"leaky_relu"``: :math:`\sqrt{2 / (1 + a^2)}`, :math:`a` = ``param`` (default 0.01)
    - ``"selu"``: :math:`3/4`

    The ReLU value follows from :math:`E[\text{relu}(z)^2] = \tfrac12 E[z^2]` for a symmetric
    :math:`z` (He et al., 2015); the leaky ReLU keeps :math:`a^2` of the negative half. The
    tanh and SELU values are PyTorch's empirical choices. For a self-normalizing SELU network
    use ``"linear"`` (variance :math:`1/n_\text{in}`, :func:`lecun_normal_`).

    Args:
        nonlinearity: the name of the function, as in ``torch.nn.functional``.
        param: the negative slope of ``"leaky_relu"`` (ignored otherwise).

    Returns:
        The gain, equal to ``torch.nn.init.calculate_gain``'s (a float; torch returns the
        int ``1`` for the linear ones).

    Raises:
        ValueError: for an unknown nonlinearity or a slope that is not a number.

    Example:
        >>> calculate_gain("relu")
        1.4142135623730951
        >>> calculate_gain("leaky_relu", 0.2)
        1.3867504905630728
    """
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"the negative slope of leaky_relu must be a number, got {param!r}")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}; use one of {', '.join(_NONLINEARITIES)}")


def _fan(tensor: Tensor, mode: str) -> int:
    if not isinstance(mode, str) or mode.lower() not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fans(tensor)
    return fan_in if mode.lower() == "fan_in" else fan_out


def _fill_uniform(tensor: Tensor, bound: float, generator) -> Tensor:
    with torch.no_grad():  # initialization is not part of any graph
        return tensor.uniform_(-bound, bound, generator=generator)


def _fill_normal(tensor: Tensor, std: float, generator) -> Tensor:
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Glorot (Xavier) uniform initialization, in place.

    .. math::
        W_{ij} \sim \mathcal{U}(-b, b), \qquad
        b = \sqrt{3}\,\sigma, \qquad
        \sigma = \text{gain}\sqrt{\frac{2}{n_\text{in} + n_\text{out}}},

    i.e. :math:`b = \text{gain}\sqrt{6/(n_\text{in} + n_\text{out})}` and variance
    :math:`\sigma^2`: the compromise between keeping the forward variance
    (:math:`n_\text{in}\sigma^2 = 1`) and the backward one (:math:`n_\text{out}\sigma^2 = 1`).
    Fans as in :func:`fans`.

    Args:
        tensor: the weight, at least 2-dimensional.
        gain: a scale for the nonlinearity that follows (:func:`calculate_gain`).
        generator: a ``torch.Generator`` to draw from (the global one if ``None``).

    Note:
        Equal to ``torch.nn.init.xavier_uniform_`` bit for bit under the same generator:
        :math:`b` is computed as :math:`\sqrt{3}\,\sigma`, in torch's order of operations.

    References:
        X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward
        neural networks", AISTATS 2010, eq. (16).

    Example:
        >>> w = xavier_uniform_(torch.empty(300, 100), generator=torch.Generator().manual_seed(0))
        >>> bool(w.abs().max() <= (6 / 400) ** 0.5)
        True
    """
    fan_in, fan_out = fans(tensor)
    _check_generator(generator)
    if tensor.numel() == 0:
        return tensor
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _fill_uniform(tensor, math.sqrt(3.0) * std, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Glorot (Xavier) normal initialization, in place.

    .. math::
        W_{ij} \sim \mathcal{N}(0, \sigma^2), \qquad
        \sigma = \text{gain}\sqrt{\frac{2}{n_\text{in} + n_\text{out}}} .

    Args:
        tensor: the weight, at least 2-dimensional.
        gain: a scale for the nonlinearity that follows (:func:`calculate_gain`).
        generator: a ``torch.Generator`` to draw from (the global one if ``None``).

    Note:
        Equal to ``torch.nn.init.xavier_normal_`` bit for bit under the same generator.

    References:
        X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward
        neural networks", AISTATS 2010.

    Example:
        >>> w = xavier_normal_(torch.empty(500, 500), generator=torch.Generator().manual_seed(0))
        >>> round(w.var().item() * 1000, 2)          # variance 2 / (500 + 500)
        2.0
    """
    fan_in, fan_out = fans(tensor)
    _check_generator(generator)
    if tensor.numel() == 0:
        return tensor
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _fill_normal(tensor, std, generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""He (Kaiming) uniform initialization, in place.

    .. math::
        W_{ij} \sim \mathcal{U}(-b, b), \qquad b = \sqrt{3}\,\sigma, \qquad
        \sigma = \frac{\text{gain}}{\sqrt{n_\text{mode}}},

    with gain = ``calculate_gain(nonlinearity, a)`` and :math:`n_\text{mode}` the fan-in
    (keeps the variance of the activations in the forward pass) or the fan-out (keeps the
    variance of the gradients in the backward pass).

    Args:
        tensor: the weight, at least 2-dimensional.
        a: the negative slope of the leaky ReLU after this layer (used only with
            ``nonlinearity="leaky_relu"``; the default 0 makes it a ReLU, gain :math:`\sqrt2`).
        mode: ``"fan_in"`` or ``"fan_out"``.
        nonlinearity: the function after this layer, see :func:`calculate_gain`.
        generator: a ``torch.Generator`` to draw from (the global one if ``None``).

    Note:
        Equal to ``torch.nn.init.kaiming_uniform_`` bit for bit under the same generator.
        ``torch.nn.Linear`` initializes its own weight with ``a = sqrt(5)``, which gives
        :math:`b = 1/\sqrt{n_\text{in}}`, not He's scheme.

    References:
        K. He, X. Zhang, S. Ren, J. Sun, "Delving deep into rectifiers", ICCV 2015,
        arXiv:1502.01852, eq. (10) and (14).

    Example:
        >>> w = kaiming_uniform_(torch.empty(64, 50), nonlinearity="relu",
        ...                      generator=torch.Generator().manual_seed(0))
        >>> bool(w.abs().max() <= (6 / 50) ** 0.5)     # b = sqrt(2) * sqrt(3 / fan_in)
        True
    """
    fan = _fan(_check_tensor(tensor), mode)
    gain = calculate_gain(nonlinearity, a)
    _check_generator(generator)
    if tensor.numel() == 0:
        return tensor
    std = gain / math.sqrt(fan)
    return _fill_uniform(tensor, math.sqrt(3.0) * std, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""He (Kaiming) normal initialization, in place.

    .. math::
        W_{ij} \sim \mathcal{N}(0, \sigma^2), \qquad \sigma = \frac{\text{gain}}{\sqrt{n_\text{mode}}} .

    For a ReLU (gain :math:`\sqrt 2`) and ``mode="fan_in"`` this is He et al.'s
    :math:`\sigma^2 = 2/n_\text{in}`, which keeps the second moment of the activations
    constant through any number of ReLU layers.

    Args:
        tensor: the weight, at least 2-dimensional.
        a: the negative slope of the leaky ReLU after this layer (only with
            ``nonlinearity="leaky_relu"``).
        mode: ``"fan_in"`` or ``"fan_out"``.
        nonlinearity: the function after this layer, see :func:`calculate_gain`.
        generator: a ``torch.Generator`` to draw from (the global one if ``None``).

    Note:
        Equal to ``torch.nn.init.kaiming_normal_`` bit for bit under the same generator.

    References:
        K. He, X. Zhang, S. Ren, J. Sun, "Delving deep into rectifiers", ICCV 2015,
        arXiv:1502.01852, eq. (10).

    Example:
        >>> w = kaiming_normal_(torch.empty(400, 200), nonlinearity="relu",
        ...                     generator=torch.Generator().manual_seed(0))
        >>> round(w.var().item() * 200, 1)          # variance 2 / fan_in
        2.0
    """
    fan = _fan(_check_tensor(tensor), mode)
    gain = calculate_gain(nonlinearity, a)
    _check_generator(generator)
    if tensor.numel() == 0:
        return tensor
    return _fill_normal(tensor, gain / math.sqrt(fan), generator)


def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""LeCun normal initialization, in place: variance one over the fan-in.

    .. math::
        W_{ij} \sim \mathcal{N}\!\Big(0, \frac{1}{n_\text{in}}\Big),

    so that a linear layer keeps the variance of its inputs (:math:`n_\text{in}\sigma^2 = 1`).
    LeCun et al. recommend it with a scaled tanh; it is also the initialization
    self-normalizing (SELU) networks need. Identical to
    ``kaiming_normal_(tensor, nonlinearity="linear")`` (and so to
    ``torch.nn.init.kaiming_normal_(tensor, nonlinearity="linear")``, bit for bit); torch has
    no function of this name.

    Args:
        tensor: the weight, at least 2-dimensional.
        generator: a ``torch.Generator`` to draw from (the global one if ``None``).

    Note:
        JAX/Flax's ``lecun_normal`` draws from a normal **truncated** at two standard
        deviations (rescaled to keep the variance :math:`1/n_\text{in}`), so its values differ
        from these even in distribution; the variances agree.

    References:
        Y. LeCun, L. Bottou, G. B. Orr, K.-R. Müller, "Efficient BackProp", in *Neural
        Networks: Tricks of the Trade*, Springer 1998, section 4.6.
        G. Klambauer, T. Unterthiner, A. Mayr, S. Hochreiter, "Self-normalizing neural
        networks", NeurIPS 2017, arXiv:1706.02515.

    Example:
        >>> w = lecun_normal_(torch.empty(400, 100), generator=torch.Generator().manual_seed(0))
        >>> round(w.var().item() * 100, 1)          # variance 1 / fan_in
        1.0
    """
    return kaiming_normal_(tensor, mode="fan_in", nonlinearity="linear", generator=generator)
