"""Loss landscapes: classic test functions, curvature, and gradients through depth.

The test functions take points as a tensor of shape ``(..., 2)`` (``(..., d)`` for
quadratics) and return values of shape ``(...)``, so one call evaluates a whole grid
for a contour plot and autograd gives the gradient at every point. Each is a
:class:`Landscape` that knows its minima, a good plotting window and a start point::

    >>> import torch
    >>> from book.landscapes import rosenbrock
    >>> rosenbrock(torch.tensor([1.0, 1.0]))
    tensor(0.)
    >>> rosenbrock.minima
    ((1.0, 1.0),)

Curvature helpers (:func:`hessian`, :func:`classify_critical_point`) use autograd, and
:func:`layer_gradient_norms` measures vanishing and exploding gradients in a deep chain
of layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from book import checks

__all__ = [
    "Landscape",
    "rosenbrock",
    "beale",
    "himmelblau",
    "saddle",
    "quadratic",
    "ill_conditioned_quadratic",
    "LANDSCAPES",
    "gradient",
    "hessian",
    "classify_critical_point",
    "layer_gradient_norms",
]


@dataclass(frozen=True)
class Landscape:
    """A function of ``(..., d)`` points with what we know about it.

    Attributes:
        name: a short name for titles and menus.
        fn: the function itself, ``(..., d) -> (...)``.
        dim: the number of coordinates ``d``.
        minima: the global minima (each a tuple of ``d`` floats).
        min_value: the value at the minima.
        xlim, ylim: a window that shows the interesting part (2-D only).
        start: a start point that makes optimization interesting.
        saddles: known saddle points, if any.
        formula: the function in LaTeX, for captions.
    """

    name: str
    fn: Callable[[Tensor], Tensor] = field(repr=False)
    dim: int = 2
    minima: tuple[tuple[float, ...], ...] = ()
    min_value: float | None = None
    xlim: tuple[float, float] = (-2.0, 2.0)
    ylim: tuple[float, float] = (-2.0, 2.0)
    start: tuple[float, ...] = (0.0, 0.0)
    saddles: tuple[tuple[float, ...], ...] = ()
    formula: str = ""

    def __call__(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.name} expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name} expects points of shape (..., {self.dim}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{self.name} expects a floating-point tensor, got {x.dtype}")
        return self.fn(x)

    def minima_tensor(self, device=None, dtype=torch.float32) -> Tensor:
        """The minima as a ``(k, d)`` tensor."""
        return torch.tensor(self.minima, device=device, dtype=dtype).reshape(-1, self.dim)

    def start_tensor(self, device=None, dtype=torch.float32) -> Tensor:
        """The suggested start point as a ``(d,)`` tensor."""
        return torch.tensor(self.start, device=device, dtype=dtype)


# ---------------------------------------------------------------------------
# The classic 2-D test functions


def _rosenbrock(p: Tensor, a: float = 1.0, b: float = 100.0) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return (a - x) ** 2 + b * (y - x**2) ** 2


def _beale(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _himmelblau(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def _saddle(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return x**2 - y**2


rosenbrock = Landscape(
    name="Rosenbrock",
    fn=_rosenbrock,
    minima=((1.0, 1.0),),
    min_value=0.0,
    xlim=(-2.0, 2.0),
    ylim=(-1.0, 3.0),
    start=(-1.5, 2.0),
    formula=r"f(x, y) = (1 - x)^2 + 100\,(y - x^2)^2",
)
"""Rosenbrock's banana valley (Rosenbrock, 1960): a curved, flat-bottomed valley with the
minimum at (1, 1). Easy to find the valley, hard to follow it."""

beale = Landscape(
    name="Beale",
    fn=_beale,
    minima=((3.0, 0.5),),
    min_value=0.0,
    xlim=(-4.5, 4.5),
    ylim=(-4.5, 4.5),
    start=(1.0, 1.5),
    formula=(
        r"f(x, y) = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2"
    ),
)
"""Beale's function: flat plateaus and steep walls, minimum at (3, 0.5)."""

# The four minima of Himmelblau's function; (3, 2) is exact, the others are roots of a
# polynomial system and are given to 6 decimals.
himmelblau = Landscape(
    name="Himmelblau",
    fn=_himmelblau,
    minima=(
        (3.0, 2.0),
        (-2.805118, 3.131313),
        (-3.779310, -3.283186),
        (3.584428, -1.848127),
    ),
    min_value=0.0,
    xlim=(-5.0, 5.0),
    ylim=(-5.0, 5.0),
    start=(-0.5, -0.5),
    saddles=(
        (0.086678, 2.884255),
        (-3.073026, -0.081353),
        (3.385154, 0.073852),
        (-0.127961, -1.953715),
    ),
    formula=r"f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2",
)
"""Himmelblau's function: four global minima (all with value 0), four saddles and one
local maximum near (-0.2708, -0.9230). Where you end up depends on where you start."""

saddle = Landscape(
    name="Saddle",
    fn=_saddle,
    minima=(),
    min_value=None,
    xlim=(-2.0, 2.0),
    ylim=(-2.0, 2.0),
    start=(1.5, 1e-3),
    saddles=((0.0, 0.0),),
    formula=r"f(x, y) = x^2 - y^2",
)
"""The simplest saddle: a minimum along x, a maximum along y, unbounded below."""


class QuadraticForm:
    r""":math:`x \mapsto \tfrac12 x^\top A x - b^\top x` on ``(..., d)`` points, with ``A`` and ``b``
    moved to the input's device and dtype at each call (the function of :func:`quadratic`; a
    class rather than a closure, so that a landscape can be pickled)."""

    def __init__(self, A: Tensor, b: Tensor):
        self.A, self.b = A, b

    def __call__(self, x: Tensor) -> Tensor:
        Ax = self.A.to(x) @ x.unsqueeze(-1)  # (..., d, 1)
        return 0.5 * (x.unsqueeze(-2) @ Ax).squeeze(-1).squeeze(-1) - x @ self.b.to(x)


def quadratic(A, b=None, name: str = "Quadratic") -> Landscape:
    r"""The quadratic :math:`f(x) = \tfrac12 x^\top A x - b^\top x` in any dimension.

    Its gradient is :math:`Ax - b` and its Hessian is :math:`A` everywhere. When ``A`` is
    symmetric positive definite the unique minimum is :math:`x^\star = A^{-1} b`, and
    the eigenvalues :math:`\mu \le \dots \le L` of ``A`` set how hard the problem is
    for gradient methods through the condition number :math:`\kappa = L/\mu`.

    Args:
        A: a symmetric ``(d, d)`` matrix (tensor or nested lists).
        b: a ``(d,)`` vector; zero when omitted.
        name: used in titles.

    Returns:
        A :class:`Landscape` of dimension ``d``; ``minima`` is filled in when ``A`` is
        positive definite. The matrix and vector are moved to the input's device and
        dtype at each call.

    Example:
        >>> f = quadratic([[2.0, 0.0], [0.0, 1.0]], b=[2.0, 1.0])
        >>> f.minima
        ((1.0, 1.0),)
        >>> f(torch.tensor([1.0, 1.0]))
        tensor(-1.5000)
    """
    A = torch.as_tensor(A, dtype=torch.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (d, d) matrix, got shape {tuple(A.shape)}")
    if not torch.allclose(A, A.T, atol=1e-10, rtol=1e-8):
        raise ValueError("A must be symmetric (a quadratic form only sees (A + A^T) / 2)")
    d = A.shape[0]
    b = torch.zeros(d, dtype=torch.float64) if b is None else torch.as_tensor(b, dtype=torch.float64)
    if b.shape != (d,):
        raise ValueError(f"b must have shape ({d},) to match A, got {tuple(b.shape)}")

    fn = QuadraticForm(A, b)
    eig = torch.linalg.eigvalsh(A)
    minima: tuple[tuple[float, ...], ...] = ()
    min_value = None
    if eig.min() > 0:
        x_star = torch.linalg.solve(A, b)
        minima = (tuple(float(v) for v in x_star),)
        min_value = float(-0.5 * b @ x_star)
    saddles = ((0.0,) * d,) if (eig.min() < 0 < eig.max() and not b.any()) else ()
    return Landscape(
        name=name,
        fn=fn,
        dim=d,
        minima=minima,
        min_value=min_value,
        xlim=(-2.0, 2.0),
        ylim=(-2.0, 2.0),
        start=tuple([-1.5] + [1.0] * (d - 1)),
        saddles=saddles,
        formula=r"f(x) = \tfrac12 x^\top A x - b^\top x",
    )


def ill_conditioned_quadratic(kappa: float, mu: float = 1.0, angle: float = 0.0) -> Landscape:
    r"""A 2-D quadratic bowl with eigenvalues ``mu`` and ``L = kappa * mu``.

    The axes of the ellipses are rotated by ``angle`` radians, so that for
    ``angle != 0`` the hard direction is not aligned with a coordinate. The minimum is
    at the origin.

    Example:
        >>> f = ill_conditioned_quadratic(10.0)
        >>> torch.linalg.eigvalsh(hessian(f, torch.zeros(2, dtype=torch.float64)))
        tensor([ 1., 10.], dtype=torch.float64)
    """
    kappa, mu = checks.number(kappa, "kappa", low=1), checks.positive(mu, "mu")
    angle = checks.number(angle, "angle")
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    A = R @ torch.diag(torch.tensor([kappa * mu, mu], dtype=torch.float64)) @ R.T
    A = (A + A.T) / 2
    return quadratic(A, name=f"Quadratic (kappa = {kappa:g})")


LANDSCAPES: dict[str, Landscape] = {
    "rosenbrock": rosenbrock,
    "beale": beale,
    "himmelblau": himmelblau,
    "saddle": saddle,
    "ill-conditioned bowl": ill_conditioned_quadratic(10.0, angle=math.pi / 6),
}
"""The 2-D landscapes by name, for menus in the explorers."""


# ---------------------------------------------------------------------------
# Derivatives with autograd


def gradient(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The gradient of ``f`` at every point of a batch ``x`` of shape ``(..., d)``.

    Works because the landscapes are evaluated point by point: the gradient of
    ``f(x).sum()`` with respect to each point is the gradient of ``f`` there.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(x).sum(), x)
    return g


def hessian(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The ``(d, d)`` Hessian matrix of ``f`` at one point ``x`` of shape ``(d,)``."""
    if x.ndim != 1:
        raise ValueError(f"hessian expects one point of shape (d,), got {tuple(x.shape)}")
    return torch.autograd.functional.hessian(f, x.detach())


def classify_critical_point(f: Callable[[Tensor], Tensor], x: Tensor, tol: float = 1e-6) -> str:
    """Say what kind of critical point ``x`` is from the signs of the Hessian's eigenvalues.

    Returns ``"minimum"`` (all eigenvalues > tol), ``"maximum"`` (all < -tol),
    ``"saddle"`` (some of each sign) or ``"degenerate"`` (an eigenvalue within ``tol``
    of zero, so second derivatives cannot decide). Raises ``ValueError`` if the gradient
    at ``x`` is not (close to) zero, since then ``x`` is no critical point.
    """
    g = gradient(f, x)
    scale = max(1.0, float(hessian(f, x).abs().max()))
    if float(g.norm()) > 1e-4 * scale:
        raise ValueError(f"x = {x.tolist()} is not a critical point: |grad f(x)| = {float(g.norm()):.3g}")
    eig = torch.linalg.eigvalsh(hessian(f, x))
    if (eig.abs() <= tol).any():
        return "degenerate"
    if (eig > 0).all():
        return "minimum"
    if (eig < 0).all():
        return "maximum"
    return "saddle"


# ---------------------------------------------------------------------------
# Gradients through depth

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "linear": lambda t: t,
}


def layer_gradient_norms(
    depth: int = 30,
    width: int = 128,
    activation: str = "sigmoid",
    weight_std: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device=None,
    dtype=torch.float32,
) -> Tensor:
    r"""Measure :math:`\|\partial L / \partial W_\ell\|` for every layer of a deep chain.

    Builds ``depth`` fully connected layers :math:`h_\ell = \phi(W_\ell h_{\ell-1})` of
    ``width`` units (no biases, so only the weights and the activation matter), feeds a
    batch of standard-normal inputs, takes :math:`L = \tfrac12\,\mathrm{mean}\,\|h_{\mathrm{depth}}\|^2`
    as a stand-in loss, and returns the Frobenius norm of each weight's gradient.

    Args:
        depth: number of layers.
        width: units per layer.
        activation: ``"sigmoid"``, ``"tanh"``, ``"relu"`` or ``"linear"``.
        weight_std: standard deviation of the Gaussian weights. ``None`` means
            :math:`1/\sqrt{\text{width}}` (LeCun-style, variance preserving for linear
            layers); try ``0.5 / sqrt(width)`` (small) or ``3 / sqrt(width)`` (large).
        batch_size: inputs per batch.
        seed: seeds the weights and the inputs, so runs are repeatable.
        device, dtype: where and in what precision to compute.

    Returns:
        A ``(depth,)`` CPU tensor; entry 0 is the first layer (nearest the input).

    Example:
        >>> norms = layer_gradient_norms(depth=20, activation="sigmoid")
        >>> bool(norms[0] < 1e-3 * norms[-1])   # the early layers barely learn
        True
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}")
    depth, width = checks.integer(depth, "depth", 1), checks.integer(width, "width", 1)
    batch_size = checks.integer(batch_size, "batch_size", 1)
    phi = _ACTIVATIONS[activation]
    std = 1.0 / math.sqrt(width) if weight_std is None else float(weight_std)
    # Draw in float64 on the CPU, then cast: the same seed gives the same network in
    # every dtype and on every device.
    g = torch.Generator(device="cpu").manual_seed(seed)
    weights = [
        (torch.randn(width, width, generator=g, dtype=torch.float64) * std).to(device, dtype).requires_grad_(True)
        for _ in range(depth)
    ]
    h = torch.randn(batch_size, width, generator=g, dtype=torch.float64).to(device, dtype)  # (B, width)
    for W in weights:
        h = phi(h @ W.T)
    loss = 0.5 * (h**2).sum(dim=1).mean()
    grads = torch.autograd.grad(loss, weights)
    return torch.stack([gr.norm() for gr in grads]).detach().cpu()

