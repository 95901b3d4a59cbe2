r"""Datasets as tensors, split into train / validation / test, and minibatches over them.

Everything here is offline: synthetic problems generated from a seed, and the
handwritten digits that scikit-learn ships (1,797 images of 8 x 8 pixels). A dataset is a
:class:`Dataset` holding three :class:`Split` s, each an ``(X, y)`` pair of tensors on the
device you ask for::

    >>> from book.data import digits, minibatches
    >>> ds = digits(seed=0)
    >>> ds
    Dataset('digits', train=1259, val=269, test=269, features=64, classes=10)
    >>> X, y = ds.train                      # a Split unpacks into its two tensors
    >>> X.shape, X.dtype, y.dtype
    (torch.Size([1259, 64]), torch.float32, torch.int64)
    >>> sum(len(yb) for _, yb in minibatches(X, y, batch_size=100))
    1259

Conventions:

- Features ``X`` are ``(n, dim)`` in the dtype you ask for (float32 by default).
  Classification labels ``y`` are ``(n,)`` int64 class indices (what
  ``torch.nn.functional.cross_entropy`` expects; use ``y.float()`` for a binary
  cross-entropy). Regression targets are ``(n, 1)``, the shape of an
  ``nn.Linear(dim, 1)`` output, so ``mse_loss(model(X), y)`` cannot broadcast by mistake.
- The data are drawn on the CPU from a ``torch.Generator`` seeded with ``seed`` and then
  moved to ``device``: the same seed gives the same numbers on every device.
- ``split=(train, val, test)`` are fractions summing to 1. The validation and test
  sizes are ``round(n * fraction)`` and the training set gets the rest. The split is a
  random permutation drawn from the same seed (stratified by class for the digits), so
  the three parts are disjoint and together hold every sample once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import Tensor

from book import checks

__all__ = [
    "Split",
    "Dataset",
    "linear_regression",
    "two_class",
    "two_moons",
    "spirals",
    "digits",
    "minibatches",
    "num_batches",
]

DEFAULT_SPLIT = (0.7, 0.15, 0.15)


# ---------------------------------------------------------------------------
# Containers


@dataclass
class Split:
    """One part of a dataset: features ``X`` (n, ...) and targets ``y`` (n, ...).

    A Split unpacks like a tuple (``X, y = split``) and has a length (the number of samples).
    """

    X: Tensor
    y: Tensor

    def __post_init__(self):
        if not isinstance(self.X, Tensor) or not isinstance(self.y, Tensor):
            raise TypeError(f"X and y must be tensors, got {type(self.X).__name__} and {type(self.y).__name__}")
        if len(self.X) != len(self.y):
            raise ValueError(f"X and y must have the same number of samples, got {len(self.X)} and {len(self.y)}")

    def __len__(self) -> int:
        return len(self.X)

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.X, self.y))

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Split":
        """A copy on ``device``; ``dtype`` converts floating tensors only (labels stay int64)."""
        y_dtype = dtype if self.y.is_floating_point() else None
        return Split(self.X.to(device=device, dtype=dtype), self.y.to(device=device, dtype=y_dtype))

    @property
    def device(self) -> torch.device:
        return self.X.device


@dataclass
class Dataset:
    """A named dataset with a train, a validation and a test :class:`Split`.

    Attributes:
        name: a short name, e.g. ``"digits"``.
        train, val, test: the three disjoint splits.
        num_classes: the number of classes, or ``None`` for regression.
        meta: what the generator knows about the data: the true weights of a regression,
            the Bayes-optimal classifier of two Gaussian blobs, the image shape of the
            digits ... (tensors in ``meta`` live on the same device as the data).
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return int(math.prod(self.train.X.shape[1:]))

    @property
    def device(self) -> torch.device:
        return self.train.device

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Dataset":
        """A copy of the dataset (splits and tensors in ``meta``) on ``device``."""

        def move(v):
            if isinstance(v, Tensor):
                return v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            return v

        return Dataset(
            self.name,
            self.train.to(device, dtype),
            self.val.to(device, dtype),
            self.test.to(device, dtype),
            self.num_classes,
            {k: move(v) for k, v in self.meta.items()},
        )

    def __repr__(self) -> str:
        classes = f", classes={self.num_classes}" if self.num_classes is not None else ""
        return (
            f"Dataset({self.name!r}, train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
            f"features={self.num_features}{classes})"
        )


# ---------------------------------------------------------------------------
# Validation and splitting


def _split_sizes(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    """Sizes of (train, val, test) for ``n`` samples and fractions ``split``."""
    if len(split) != 3:
        raise ValueError(f"split must be three fractions (train, val, test), got {tuple(split)}")
    fractions = [float(f) for f in split]
    if any(not f >= 0.0 for f in fractions):
        raise ValueError(f"split fractions must be >= 0, got {tuple(split)}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {tuple(split)} (sum {sum(fractions):g})")
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"split {tuple(split)} leaves no training samples out of n = {n}")
    return n_train, n_val, n_test


def _resolve(device) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def _make_dataset(name, X, y, split, gen, device, dtype, num_classes=None, meta=None) -> Dataset:
    """Split (X, y) (made on the CPU) by a random permutation and move the parts to ``device``."""
    counts = _split_sizes(len(X), split)
    return _assemble(name, X, y, torch.randperm(len(X), generator=gen), counts, device, dtype, num_classes, meta)


def _assemble(name, X, y, order, counts, device, dtype, num_classes, meta) -> Dataset:
    """Train = the first counts[0] samples of ``order``, then val, then test; on ``device``."""
    dev = _resolve(device)
    bounds = [0, counts[0], counts[0] + counts[1], len(X)]
    y_dtype = dtype if y.is_floating_point() else None  # regression targets follow dtype; labels stay int64
    parts = [
        Split(X[order[a:b]].to(dev, dtype), y[order[a:b]].to(dev, y_dtype)) for a, b in zip(bounds, bounds[1:])
    ]
    meta = {
        k: (v.to(device=dev, dtype=dtype if v.is_floating_point() else None) if isinstance(v, Tensor) else v)
        for k, v in (meta or {}).items()
    }
    return Dataset(name, *parts, num_classes=num_classes, meta=meta)


# ---------------------------------------------------------------------------
# Synthetic problems


def linear_regression(
    n: int = 1000,
    dim: int = 10,
    noise: float = 0.1,
    condition_number: float = 1.0,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
    split: Sequence[float] = DEFAULT_SPLIT,
) -> Dataset:
    r"""A linear regression :math:`y = x^\top w^\star + \varepsilon` with features of a chosen conditioning.

    The features have covariance :math:`\Sigma = Q \operatorname{diag}(\lambda) Q^\top` with a
    random rotation :math:`Q` and eigenvalues spaced geometrically from 1 down to
    :math:`1/\kappa`, so :math:`\kappa` (``condition_number``) is the condition number of
    :math:`\Sigma`, and of the Hessian :math:`2\Sigma` of the mean squared error. The
    samples are whitened before they are rotated and scaled, so the sample covariance of
    all ``n`` samples, :math:`\tfrac1n X^\top X`, equals :math:`\Sigma` exactly (and the
    features have mean zero); each split's covariance is close to it. The true weights
    :math:`w^\star` have independent standard normal entries, and :math:`\varepsilon \sim
    \mathcal{N}(0, \sigma^2)` with :math:`\sigma` = ``noise``, which is also the smallest
    root-mean-square error any predictor can reach on new data.

    Args:
        n: the number of samples (more than ``dim``).
        dim: the number of features.
        noise: the standard deviation :math:`\sigma \ge 0` of the label noise.
        condition_number: :math:`\kappa \ge 1`.
        seed: the random seed; the same seed gives the same data on every device.
        device, dtype: where the tensors live and the features' dtype.
        split: the (train, val, test) fractions.

    Returns:
        A :class:`Dataset` with ``X`` of shape ``(n_split, dim)``, ``y`` of shape
        ``(n_split, 1)``, ``num_classes=None`` and ``meta`` holding ``weights``
        (:math:`w^\star`, shape ``(dim,)``), ``covariance`` (:math:`\Sigma`),
        ``eigenvalues`` (:math:`\lambda`, descending), ``noise`` and ``condition_number``.

    Example:
        >>> ds = linear_regression(n=500, dim=5, condition_number=100.0)
        >>> X, y = ds.train
        >>> X.shape, y.shape, ds.meta["weights"].shape
        (torch.Size([350, 5]), torch.Size([350, 1]), torch.Size([5]))
    """
    n, dim = checks.integer(n, "n", 2), checks.integer(dim, "dim", 1)
    if n <= dim:
        raise ValueError(f"n must be larger than dim to whiten the features, got n = {n}, dim = {dim}")
    noise = checks.nonnegative(noise, "noise")
    kappa = checks.number(condition_number, "condition_number", low=1)
    _split_sizes(n, split)
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    Z = torch.randn(n, dim, generator=gen, dtype=f64)  # (n, dim)
    Z = Z - Z.mean(0)
    evals, evecs = torch.linalg.eigh(Z.T @ Z / n)
    Z = Z @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T  # whitened: Z^T Z / n = I
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=f64))  # a random rotation
    lam = kappa ** -(torch.arange(dim, dtype=f64) / max(dim - 1, 1))  # 1 ... 1/kappa
    X = Z @ torch.diag(lam.sqrt()) @ Q.T  # (n, dim), X^T X / n = Q diag(lam) Q^T
    w = torch.randn(dim, generator=gen, dtype=f64)
    y = (X @ w + noise * torch.randn(n, generator=gen, dtype=f64)).unsqueeze(1)  # (n, 1)
    meta = dict(
        weights=w,
        covariance=Q @ torch.diag(lam) @ Q.T,
        eigenvalues=lam,
        noise=noise,
        condition_number=kappa,
    )
    return _make_dataset("linear_regression", X, y, split, gen, device, dtype, None, meta)


def _balanced_labels(n: int, num_classes: int, gen) -> Tensor:
    """``n`` labels, as equal in number per class as possible, in random order."""
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]


def two_class(
    n: int = 1000,
    dim: int = 2,
    separation: float = 3.0,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
    split: Sequence[float] = DEFAULT_SPLIT,
) -> Dataset:
    r"""Two Gaussian blobs: a binary classification problem whose best classifier is logistic.

    Class :math:`k \in \{0, 1\}` is :math:`\mathcal{N}(\pm\tfrac{s}{2} u, I)` (minus for
    class 0) with a random unit direction :math:`u` and :math:`s` = ``separation``; the
    classes are balanced. For two Gaussians with the same covariance the posterior is
    exactly logistic, :math:`P(y = 1 \mid x) = \sigma(x^\top w^\star)` with
    :math:`w^\star = s\,u` and no bias, so logistic regression is the right model, and the
    best possible accuracy is :math:`\Phi(s/2)` (:math:`\Phi` the standard normal CDF).

    Args:
        n: the number of samples.
        dim: the number of features.
        separation: the distance :math:`s \ge 0` between the two means.
        seed, device, dtype, split: as in :func:`linear_regression`.

    Returns:
        A :class:`Dataset` with int64 labels in {0, 1}, ``num_classes=2`` and ``meta``
        holding ``weights`` (:math:`w^\star`, the Bayes-optimal logistic weights),
        ``means`` (shape ``(2, dim)``) and ``bayes_accuracy``.

    Example:
        >>> ds = two_class(n=200, separation=4.0)
        >>> ds.train.y[:8]
        tensor([0, 0, 1, 0, 1, 1, 0, 0])
        >>> round(ds.meta["bayes_accuracy"], 4)
        0.9772
    """
    n, dim = checks.integer(n, "n", 2), checks.integer(dim, "dim", 1)
    s = checks.nonnegative(separation, "separation")
    _split_sizes(n, split)
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    u = torch.randn(dim, generator=gen, dtype=f64)
    u = u / u.norm()
    y = _balanced_labels(n, 2, gen)
    means = torch.stack([-s / 2 * u, s / 2 * u])  # (2, dim)
    X = means[y] + torch.randn(n, dim, generator=gen, dtype=f64)  # (n, dim)
    bayes = 0.5 * (1 + math.erf(s / 2 / math.sqrt(2)))
    meta = dict(weights=s * u, means=means, bayes_accuracy=bayes)
    return _make_dataset("two_class", X, y, split, gen, device, dtype, 2, meta)


def two_moons(
    n: int = 1000,
    noise: float = 0.1,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
    split: Sequence[float] = DEFAULT_SPLIT,
) -> Dataset:
    r"""Two interleaving half circles in the plane: a binary problem no linear model solves.

    Class 0 lies on :math:`(\cos t, \sin t)` and class 1 on :math:`(1 - \cos t, \tfrac12 -
    \sin t)`, :math:`t` uniform in :math:`[0, \pi]`, plus Gaussian noise of standard deviation
    ``noise`` (the shape of scikit-learn's ``make_moons``).

    Args:
        n: the number of samples; noise: the noise's standard deviation (>= 0);
        seed, device, dtype, split: as in :func:`linear_regression`.

    Returns:
        A :class:`Dataset` with ``X`` of shape ``(n_split, 2)``, int64 labels in {0, 1},
        ``num_classes=2``.

    Example:
        >>> two_moons(n=300).train.X.shape
        torch.Size([210, 2])
    """
    n = checks.integer(n, "n", 2)
    noise = checks.nonnegative(noise, "noise")
    _split_sizes(n, split)
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    y = _balanced_labels(n, 2, gen)
    t = math.pi * torch.rand(n, generator=gen, dtype=f64)
    outer = torch.stack([t.cos(), t.sin()], dim=1)
    inner = torch.stack([1 - t.cos(), 0.5 - t.sin()], dim=1)
    X = torch.where(y[:, None] == 0, outer, inner) + noise * torch.randn(n, 2, generator=gen, dtype=f64)
    return _make_dataset("two_moons", X, y, split, gen, device, dtype, 2, {"noise": noise})


def spirals(
    n: int = 1000,
    num_classes: int = 3,
    turns: float = 1.0,
    noise: float = 0.05,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
    split: Sequence[float] = DEFAULT_SPLIT,
) -> Dataset:
    r"""Interleaved spiral arms in the plane, one per class: a small problem that needs a network.

    A point of class :math:`k` at position :math:`t \in [0, 1]` along its arm is
    :math:`t\,(\cos\phi, \sin\phi)` with :math:`\phi = 2\pi(\text{turns}\cdot t + k/K)`,
    plus Gaussian noise of standard deviation ``noise``.

    Args:
        n: the number of samples; num_classes: :math:`K \ge 2` arms; turns: how many times
            each arm winds around (> 0); noise: the noise's standard deviation (>= 0);
        seed, device, dtype, split: as in :func:`linear_regression`.

    Returns:
        A :class:`Dataset` with ``X`` of shape ``(n_split, 2)`` and int64 labels.

    Example:
        >>> spirals(n=300, num_classes=3).num_classes
        3
    """
    n = checks.integer(n, "n", 2)
    num_classes = checks.integer(num_classes, "num_classes", 2)
    turns = checks.positive(turns, "turns")
    noise = checks.nonnegative(noise, "noise")
    _split_sizes(n, split)
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    y = _balanced_labels(n, num_classes, gen)
    t = torch.rand(n, generator=gen, dtype=f64)
    phi = 2 * math.pi * (turns * t + y.to(f64) / num_classes)
    X = t[:, None] * torch.stack([phi.cos(), phi.sin()], dim=1) + noise * torch.randn(n, 2, generator=gen, dtype=f64)
    return _make_dataset("spirals", X, y, split, gen, device, dtype, num_classes, {"noise": noise, "turns": turns})


# ---------------------------------------------------------------------------
# Real data: scikit-learn's bundled digits


def _stratified_order(y: Tensor, split, gen) -> tuple[Tensor, tuple[int, int, int]]:
    """A permutation whose first n_train entries are the training set, then val, then test,
    each with (up to rounding) the class proportions of the whole data, in random order;
    and the three sizes."""
    parts = {"train": [], "val": [], "test": []}
    for c in torch.unique(y):
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_train, n_val, _ = _split_sizes(len(idx), split)
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train : n_train + n_val])
        parts["test"].append(idx[n_train + n_val :])
    order = []
    for key in ("train", "val", "test"):
        idx = torch.cat(parts[key])
        order.append(idx[torch.randperm(len(idx), generator=gen)])  # classes mixed, not in blocks
    return torch.cat(order), tuple(len(o) for o in order)


def _digits_arrays():
    """The 1,797 digits as scikit-learn ships them: ``(pixels (1797, 64) float64 in 0..16, labels (1797,))``.

    Read from scikit-learn's bundled ``datasets/data/digits.csv.gz`` (each row: 64 pixels, then the label), as
    ``sklearn.datasets.load_digits`` reads it, but without importing scikit-learn, whose import (SciPy with it)
    took 0.7 s of every chapter that uses the digits. Where the file is not found, ``load_digits`` itself.
    A test checks that both give the same arrays.
    """
    import gzip
    import importlib.util
    import os

    import numpy as np

    for folder in getattr(importlib.util.find_spec("sklearn"), "submodule_search_locations", None) or []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.exists(path):
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",")
            return table[:, :-1], table[:, -1].astype(int)
    from sklearn.datasets import load_digits  # imported only here: only the digits need scikit-learn

    raw = load_digits()
    return raw.data, raw.target


def digits(
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
    split: Sequence[float] = DEFAULT_SPLIT,
    stratify: bool = True,
) -> Dataset:
    r"""The handwritten digits bundled with scikit-learn: 1,797 images of 8 x 8 pixels, 10 classes.

    Each image is flattened to 64 features and its pixel values (0 to 16 in the original)
    are scaled to :math:`[0, 1]`. Nothing is downloaded: the data ship with scikit-learn.
    With ``stratify=True`` (the default) every split has the class proportions of the
    whole set (up to rounding); the split sizes are then within a few samples of
    ``round(n * fraction)``.

    Args:
        seed: the seed of the split (the images themselves are fixed).
        device, dtype, split: as in :func:`linear_regression`.
        stratify: split each class separately.

    Returns:
        A :class:`Dataset` with ``X`` of shape ``(n_split, 64)`` in :math:`[0, 1]`, int64
        labels 0-9, ``num_classes=10`` and ``meta["image_shape"] = (8, 8)``.

    Example:
        >>> ds = digits()
        >>> ds.train.X.shape[1], ds.num_classes, float(ds.train.X.max())
        (64, 10, 1.0)

    References:
        E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
        Learning Repository (1998); scikit-learn's ``sklearn.datasets.load_digits``.
    """
    pixels, labels = _digits_arrays()
    X = torch.as_tensor(pixels, dtype=torch.float64) / 16.0  # (1797, 64), pixels in [0, 1]
    y = torch.as_tensor(labels, dtype=torch.int64)  # (1797,)
    gen = torch.Generator().manual_seed(seed)
    if stratify:
        order, counts = _stratified_order(y, split, gen)
    else:
        order, counts = torch.randperm(len(X), generator=gen), _split_sizes(len(X), split)
    return _assemble("digits", X, y, order, counts, device, dtype, 10, {"image_shape": (8, 8)})


# ---------------------------------------------------------------------------
# Minibatches


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many minibatches :func:`minibatches` yields for ``n`` samples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def minibatches(
    X: Tensor,
    y: Tensor,
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    r"""One epoch of minibatches ``(Xb, yb)``, sampled without replacement.

    With ``shuffle=True`` the samples are put in a random order (one ``torch.randperm``
    per call, drawn from ``generator``) and cut into consecutive batches of
    ``batch_size``, so every sample appears exactly once per epoch. The last batch holds
    the remaining ``n mod batch_size`` samples unless ``drop_last=True``. Call the
    function again for the next epoch: with the same generator it continues its random
    stream, so epochs differ; re-seeding the generator repeats the order.

    The permutation is drawn on the generator's device (the CPU for ``None``, using
    PyTorch's global generator) and then moved to the data's device, so a CPU generator
    gives the same batches on every device.

    Args:
        X: features, ``(n, ...)``.
        y: targets, ``(n, ...)``.
        batch_size: samples per batch (>= 1).
        shuffle: random order (True) or the stored order (False).
        generator: a ``torch.Generator`` for the order; the global one if ``None``.
        drop_last: drop the last batch if it is smaller than ``batch_size``.

    Yields:
        ``(Xb, yb)``: ``X[idx]`` and ``y[idx]`` for the batch's indices.

    Example:
        >>> X, y = torch.arange(10.0)[:, None], torch.arange(10)
        >>> g = torch.Generator().manual_seed(0)
        >>> [yb.tolist() for _, yb in minibatches(X, y, batch_size=4, generator=g)]
        [[4, 1, 7, 5], [3, 9, 0, 8], [6, 2]]
    """
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"X and y must be tensors, got {type(X).__name__} and {type(y).__name__}")
    if len(X) != len(y):
        raise ValueError(f"X and y must have the same number of samples, got {len(X)} and {len(y)}")
    batch_size = checks.integer(batch_size, "batch_size", 1)
    n = len(X)
    if shuffle:
        perm_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=perm_device).to(X.device)
    else:
        order = torch.arange(n, device=X.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield X[idx], y[idx]
