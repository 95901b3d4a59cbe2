"""book.data: the datasets' shapes, seeds, splits and statistics, and minibatches without replacement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from book.data import (
    Dataset,
    Split,
    digits,
    linear_regression,
    minibatches,
    num_batches,
    spirals,
    two_class,
    two_moons,
)

# name -> (generator with small sizes, features, classes)
GENERATORS = {
    "linear_regression": (lambda **kw: linear_regression(n=200, dim=6, condition_number=10.0, **kw), 6, None),
    "two_class": (lambda **kw: two_class(n=200, dim=3, **kw), 3, 2),
    "two_moons": (lambda **kw: two_moons(n=200, **kw), 2, 2),
    "spirals": (lambda **kw: spirals(n=200, num_classes=4, **kw), 2, 4),
    "digits": (lambda **kw: digits(**kw), 64, 10),
}
NAMES = list(GENERATORS)


def all_rows(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every sample of the three splits, as NumPy rows (features then target), sorted."""
    X = torch.cat([ds.train.X, ds.val.X, ds.test.X]).cpu().double()
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y]).cpu().double().reshape(len(X), -1)
    rows = torch.cat([X, y], dim=1).numpy()
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_devices(device, dtype, name):
    make, features, classes = GENERATORS[name]
    ds = make(device=device, dtype=dtype)
    assert ds.name == name and ds.num_classes == classes and ds.num_features == features
    for part in (ds.train, ds.val, ds.test):
        X, y = part  # a Split unpacks
        assert X.ndim == 2 and X.shape[1] == features and len(part) == len(X) == len(y)
        assert X.dtype == dtype and X.device.type == device.type and y.device.type == device.type
        if classes is None:
            assert y.shape == (len(X), 1) and y.dtype == dtype
        else:
            assert y.shape == (len(X),) and y.dtype == torch.int64
            assert int(y.min()) >= 0 and int(y.max()) < classes
    n = len(ds.train) + len(ds.val) + len(ds.test)
    assert len(ds.val) == pytest.approx(0.15 * n, abs=10) and len(ds.test) == pytest.approx(0.15 * n, abs=10)
    for value in ds.meta.values():
        if isinstance(value, torch.Tensor):
            assert value.device.type == device.type


@pytest.mark.parametrize("name", [n for n in NAMES])
def test_seeds_reproduce_and_differ(name):
    make = GENERATORS[name][0]
    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part).X, getattr(b, part).X)
        assert torch.equal(getattr(a, part).y, getattr(b, part).y)
    assert not torch.equal(a.train.X, c.train.X)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_data_on_every_device(device, name):
    make = GENERATORS[name][0]
    on_cpu, on_device = make(seed=3), make(seed=3, device=device)
    assert torch.equal(on_device.train.X.cpu(), on_cpu.train.X)
    assert torch.equal(on_device.test.y.cpu(), on_cpu.test.y)


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_disjoint_and_cover_the_data(name):
    make = GENERATORS[name][0]
    split = make(seed=4)
    whole = make(seed=4, split=(1.0, 0.0, 0.0))  # the same samples, all in train
    assert len(whole.val) == len(whole.test) == 0
    # the multiset of samples over the three splits is exactly the data: each sample in one split
    np.testing.assert_array_equal(all_rows(split), all_rows(whole))


def test_digits_are_sklearns_digits_scaled():
    from sklearn.datasets import load_digits

    raw = load_digits()
    ds = digits(seed=0, dtype=torch.float64)
    n = len(ds.train) + len(ds.val) + len(ds.test)
    assert n == 1797 and ds.num_features == 64 and ds.num_classes == 10
    assert ds.meta["image_shape"] == (8, 8)
    expected = np.concatenate([raw.data / 16.0, raw.target[:, None]], axis=1)
    np.testing.assert_array_equal(all_rows(ds), expected[np.lexsort(expected.T[::-1])])
    assert float(ds.train.X.min()) == 0.0 and float(ds.train.X.max()) == 1.0


def test_digits_read_from_the_bundled_file_equal_load_digits(monkeypatch):
    """book.data reads scikit-learn's bundled CSV itself (no scikit-learn import); where it cannot find the
    file it calls load_digits. Both give load_digits' arrays."""
    import importlib.util

    from sklearn.datasets import load_digits

    from book.data import _digits_arrays

    raw = load_digits()
    from_file = _digits_arrays()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no file found: the fallback
    for pixels, labels in (from_file, _digits_arrays()):
        np.testing.assert_array_equal(pixels, raw.data)
        np.testing.assert_array_equal(labels, raw.target)


def test_digits_split_is_stratified():
    ds = digits(seed=5)
    y_all = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    totals = torch.bincount(y_all, minlength=10)
    for part, fraction in ((ds.train, 0.7), (ds.val, 0.15), (ds.test, 0.15)):
        counts = torch.bincount(part.y, minlength=10)
        assert bool(((counts - fraction * totals).abs() <= 1).all()), (fraction, counts)
    plain = digits(seed=5, stratify=False)
    assert (len(plain.train), len(plain.val), len(plain.test)) == (1257, 270, 270)


@pytest.mark.parametrize("kappa", [1.0, 10.0, 1000.0])
def test_regression_features_have_the_requested_condition_number(kappa):
    ds = linear_regression(n=2000, dim=8, condition_number=kappa, dtype=torch.float64, seed=1)
    X = torch.cat([ds.train.X, ds.val.X, ds.test.X])
    cov = X.T @ X / len(X)
    torch.testing.assert_close(cov, ds.meta["covariance"], rtol=0, atol=1e-12)  # exactly Sigma
    eig = torch.linalg.eigvalsh(cov)
    assert float(eig[-1] / eig[0]) == pytest.approx(kappa, rel=1e-9)
    assert float(eig[-1]) == pytest.approx(1.0, rel=1e-9)
    torch.testing.assert_close(X.mean(0), torch.zeros(8, dtype=torch.float64), rtol=0, atol=1e-12)
    train_eig = torch.linalg.eigvalsh(ds.train.X.T @ ds.train.X / len(ds.train))
    assert float(train_eig[-1] / train_eig[0]) == pytest.approx(kappa, rel=0.25)  # a subsample: close


def test_regression_targets_follow_the_true_weights():
    ds = linear_regression(n=5000, dim=5, noise=0.3, dtype=torch.float64)
    X, y = ds.train
    residual = y.squeeze(1) - X @ ds.meta["weights"]
    assert float(residual.std()) == pytest.approx(0.3, rel=0.05)
    w_ls = torch.linalg.lstsq(X, y).solution.squeeze(1)
    torch.testing.assert_close(w_ls, ds.meta["weights"], rtol=0, atol=0.03)
    noiseless = linear_regression(n=100, dim=5, noise=0.0, dtype=torch.float64)
    torch.testing.assert_close(noiseless.val.y.squeeze(1), noiseless.val.X @ noiseless.meta["weights"])


def test_two_class_bayes_classifier_is_logistic():
    ds = two_class(n=20000, dim=4, separation=2.0, dtype=torch.float64, seed=2)
    X, y = ds.train
    assert float(y.float().mean()) == pytest.approx(0.5, abs=0.02)
    accuracy = float(((X @ ds.meta["weights"] > 0).long() == y).double().mean())
    assert ds.meta["bayes_accuracy"] == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))), rel=1e-12)
    assert accuracy == pytest.approx(ds.meta["bayes_accuracy"], abs=0.01)
    torch.testing.assert_close(ds.meta["weights"].norm(), torch.tensor(2.0, dtype=torch.float64))


def test_moons_and_spirals_have_balanced_classes():
    for ds in (two_moons(n=300), spirals(n=300, num_classes=3)):
        y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
        counts = torch.bincount(y)
        assert int(counts.max() - counts.min()) == 0


def test_dataset_and_split_to(device):
    ds = linear_regression(n=100, dim=3).to(device, torch.float64)
    assert ds.train.X.dtype == torch.float64 and ds.train.X.device.type == device.type
    assert ds.meta["weights"].dtype == torch.float64 and ds.meta["weights"].device.type == device.type
    assert ds.val.y.dtype == torch.float64 and ds.val.y.device.type == device.type
    clf = digits().to(device, torch.float64)
    assert clf.train.y.dtype == torch.int64 and clf.train.y.device.type == device.type
    assert "train=1259" in repr(clf) and "classes=10" in repr(clf)


# ---------------------------------------------------------------------------
# Minibatches


def test_minibatches_cover_each_sample_once_per_epoch(device):
    n = 103
    X, y = torch.arange(n, device=device, dtype=torch.float32)[:, None], torch.arange(n, device=device)
    g = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(3):  # three epochs
        seen = []
        for Xb, yb in minibatches(X, y, batch_size=10, generator=g):
            assert Xb.device.type == device.type and torch.equal(Xb[:, 0].long(), yb)  # rows stay paired
            seen.append(yb)
        seen = torch.cat(seen).cpu()
        assert torch.equal(seen.sort().values, torch.arange(n))  # every sample exactly once
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1])  # a fresh permutation each epoch


@pytest.mark.parametrize("n,batch_size,drop_last,sizes", [
    (103, 10, False, [10] * 10 + [3]),
    (103, 10, True, [10] * 10),
    (100, 10, True, [10] * 10),
    (5, 10, False, [5]),
    (5, 10, True, []),
    (7, 1, False, [1] * 7),
])
def test_minibatch_sizes(n, batch_size, drop_last, sizes):
    X, y = torch.randn(n, 2), torch.arange(n)
    got = [len(yb) for _, yb in minibatches(X, y, batch_size, drop_last=drop_last)]
    assert got == sizes
    assert num_batches(n, batch_size, drop_last) == len(sizes)


def test_minibatch_order_follows_the_generator(device):
    X, y = torch.randn(50, 2, device=device), torch.arange(50, device=device)
    order = lambda seed: torch.cat([yb for _, yb in minibatches(X, y, 8, generator=torch.Generator().manual_seed(seed))])  # noqa: E731
    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(1))  # one randperm per epoch
    assert torch.equal(order(1).cpu(), expected)
    in_order = torch.cat([yb for _, yb in minibatches(X, y, 8, shuffle=False)])
    assert torch.equal(in_order, y)


# ---------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: linear_regression(split=(0.8, 0.2)), ValueError, r"three fractions.*\(0.8, 0.2\)"),
        (lambda: linear_regression(split=(0.8, 0.3, -0.1)), ValueError, r"must be >= 0"),
        (lambda: linear_regression(split=(0.5, 0.2, 0.2)), ValueError, r"sum to 1.*sum 0.9"),
        (lambda: linear_regression(n=10, dim=2, split=(0.0, 0.5, 0.5)), ValueError, r"no training samples"),
        (lambda: linear_regression(n=5, dim=10), ValueError, r"n must be larger than dim.*n = 5, dim = 10"),
        (lambda: linear_regression(condition_number=0.5), ValueError, r"condition_number .*>= 1, got 0.5"),
        (lambda: linear_regression(noise=-1), ValueError, r"noise must be .*>= 0, got -1"),
        (lambda: linear_regression(n=100.0), TypeError, r"n must be an int"),
        (lambda: two_class(n=1), ValueError, r"n must be >= 2, got 1"),
        (lambda: two_class(separation=-2), ValueError, r"separation"),
        (lambda: spirals(num_classes=1), ValueError, r"num_classes must be >= 2"),
        (lambda: spirals(turns=0), ValueError, r"turns must be .*> 0"),
        (lambda: digits(split=(0.7, 0.3, 0.3)), ValueError, r"sum to 1"),
        (lambda: list(minibatches(torch.zeros(4, 2), torch.zeros(4), 0)), ValueError, r"batch_size must be >= 1, got 0"),
        (lambda: list(minibatches(torch.zeros(4, 2), torch.zeros(3), 2)), ValueError, r"same number of samples.*4 and 3"),
        (lambda: list(minibatches([[0.0]], torch.zeros(1), 1)), TypeError, r"must be tensors"),
        (lambda: Split(torch.zeros(4, 2), torch.zeros(5)), ValueError, r"same number of samples.*4 and 5"),
    ],
)
def test_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
