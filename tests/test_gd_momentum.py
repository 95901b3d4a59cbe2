"""Momentum on quadratics: book.gd's spectral radii and optimal tunings against closed forms,
against the eigenvalues of the iteration matrices, and against runs of momentum_descent."""

from __future__ import annotations

import math

import pytest
import torch

from book.gd import (
    gd_rate,
    momentum_descent,
    momentum_rate,
    momentum_spectral_radius,
    optimal_momentum,
)
from book.landscapes import quadratic

F64 = torch.float64


@pytest.fixture(autouse=True)
def _needs_float64(request):
    """These tests compute in float64, which Apple's MPS lacks."""
    if "device" in request.fixturenames and request.getfixturevalue("device").type == "mps":
        pytest.skip("MPS has no float64")


def iteration_matrices(lr, momentum, curvature, nesterov):
    """torch.optim.SGD's update on f = curvature/2 x^2 as a matrix acting on (x_k, b_k).

    b_{k+1} = mu b_k + lam x_k, and x_{k+1} = x_k - lr b_{k+1} (heavy ball) or
    x_{k+1} = x_k - lr (lam x_k + mu b_{k+1}) (Nesterov). Broadcasts; returns (..., 2, 2).
    """
    lr, mu, lam = torch.broadcast_tensors(*(torch.as_tensor(a, dtype=F64) for a in (lr, momentum, curvature)))
    if nesterov:
        top = torch.stack([1 - lr * lam * (1 + mu), -lr * mu * mu], -1)
    else:
        top = torch.stack([1 - lr * lam, -lr * mu], -1)
    bottom = torch.stack([lam, mu], -1)
    return torch.stack([top, bottom], -2)


def eig_radius(lr, momentum, curvature, nesterov):
    return torch.linalg.eigvals(iteration_matrices(lr, momentum, curvature, nesterov)).abs().amax(-1)


def rate_tolerating_k(xs, skip):
    """Fit log e_k = a + p log k + k log rho (the double root makes e_k ~ k rho^k); return (rho, p)."""
    e = xs.detach().cpu().norm(dim=1)
    k = torch.arange(len(e), dtype=F64)
    keep = (k >= skip) & (e > 1e-280)
    X = torch.stack([torch.ones_like(k[keep]), k[keep].log(), k[keep]], 1)
    coef = torch.linalg.lstsq(X, e[keep].log().unsqueeze(1)).solution.squeeze(1)
    return math.exp(float(coef[2])), float(coef[1])


# ---------------------------------------------------------------------------
# The iteration matrices describe momentum_descent (itself equal to torch.optim.SGD)


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
def test_iteration_matrix_reproduces_momentum_descent(device, nesterov):
    lam, lr, mu, steps = 3.0, 0.2, 0.7, 25
    f = lambda x: 0.5 * lam * (x**2).sum()  # noqa: E731
    xs = momentum_descent(f, torch.tensor([1.0], device=device, dtype=F64), lr, mu, steps, nesterov=nesterov)
    M = iteration_matrices(lr, mu, lam, nesterov).to(device)
    state, path = torch.tensor([1.0, 0.0], device=device, dtype=F64), [1.0]
    for _ in range(steps):
        state = M @ state
        path.append(float(state[0]))
    torch.testing.assert_close(xs[:, 0].cpu(), torch.tensor(path, dtype=F64), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------
# The spectral radius


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
def test_spectral_radius_equals_eigenvalues_of_iteration_matrix(device, nesterov):
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(4000, generator=g, dtype=F64) * 0.5
    mu = torch.rand(4000, generator=g, dtype=F64)
    lam = torch.rand(4000, generator=g, dtype=F64) * 12 - 1  # some negative curvature too
    ours = momentum_spectral_radius(lr.to(device), mu.to(device), lam.to(device), nesterov=nesterov)
    assert ours.device.type == device.type and ours.dtype == F64 and ours.shape == (4000,)
    torch.testing.assert_close(ours.cpu(), eig_radius(lr, mu, lam, nesterov), rtol=1e-7, atol=1e-7)


def test_spectral_radius_special_cases():
    # no momentum: gradient descent's |1 - lr lam|
    t = torch.linspace(-1, 3, 41, dtype=F64)
    torch.testing.assert_close(momentum_spectral_radius(1.0, 0.0, t), (1 - t).abs(), rtol=0, atol=1e-15)
    # complex roots: the heavy ball's radius is sqrt(beta) whatever the curvature in the band
    beta = 0.64  # band (1 - 0.8)^2 < t < (1 + 0.8)^2
    t = torch.linspace(0.05, 3.2, 50, dtype=F64)
    torch.testing.assert_close(momentum_spectral_radius(1.0, beta, t), torch.full_like(t, 0.8), rtol=0, atol=1e-15)
    # Nesterov at t = 1: both roots are zero
    assert float(momentum_spectral_radius(0.5, 0.9, 2.0, nesterov=True)) == 0.0
    # broadcasting: a grid of (lr, beta) against two curvatures
    r = momentum_spectral_radius(torch.rand(5, 1, 1, dtype=F64), torch.rand(1, 7, 1, dtype=F64), torch.tensor([1.0, 9.0]))
    assert r.shape == (5, 7, 2)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.9, 0.99])
def test_stability_boundaries(beta):
    hb, nag = 2 * (1 + beta), 2 * (1 + beta) / (1 + 2 * beta)
    below = torch.tensor([hb * (1 - 1e-6), 1e-4], dtype=F64)
    assert bool((momentum_spectral_radius(1.0, beta, below) < 1).all())
    assert float(momentum_spectral_radius(1.0, beta, hb * (1 + 1e-6))) > 1
    assert float(momentum_spectral_radius(1.0, beta, nag * (1 - 1e-6), nesterov=True)) < 1
    assert float(momentum_spectral_radius(1.0, beta, nag * (1 + 1e-6), nesterov=True)) > 1
    assert float(eig_radius(1.0, beta, nag * (1 + 1e-3), True)) > 1  # the matrices agree


def test_nesterov_diverges_where_gradient_descent_converges(device):
    f = quadratic(torch.diag(torch.tensor([1.0, 10.0], dtype=F64)))
    x0 = torch.tensor([1.0, 1.0], device=device, dtype=F64)
    lr = 0.19  # lr L = 1.9 < 2: fine for gradient descent
    gd = momentum_descent(f, x0, lr, 0.0, 300)
    hb = momentum_descent(f, x0, lr, 0.9, 300)
    nag = momentum_descent(f, x0, lr, 0.9, 300, nesterov=True)  # limit 2 (1.9) / 2.8 = 1.357
    assert float(gd[-1].norm()) < 1e-10 and float(hb[-1].norm()) < 1e-3
    assert float(nag[-1].norm()) > 1e10


# ---------------------------------------------------------------------------
# Optimal tunings and rates


def test_optimal_momentum_closed_forms():
    assert optimal_momentum(1.0, 9.0) == (0.25, 0.25)  # sqrt(kappa) = 3
    assert momentum_rate(1.0, 9.0) == 0.5
    lr, beta = optimal_momentum(1.0, 8.0, nesterov=True)  # sqrt(3 kappa + 1) = 5
    assert lr == pytest.approx(0.16, rel=1e-15) and beta == pytest.approx(3 / 7, rel=1e-15)
    assert momentum_rate(1.0, 8.0, nesterov=True) == pytest.approx(0.6, rel=1e-15)
    # scale invariance: only kappa matters for the rate and lr * L
    lr2, beta2 = optimal_momentum(3.0, 27.0)
    assert lr2 * 27.0 == pytest.approx(0.25 * 9.0) and beta2 == pytest.approx(0.25)
    # kappa = 1: no momentum, and the step 1/L lands on the minimum
    lr1, beta1 = optimal_momentum(2.0, 2.0)
    assert lr1 == pytest.approx(0.5, rel=1e-15) and beta1 == 0.0 and momentum_rate(2.0, 2.0) == 0.0
    # mu = 0: no linear rate
    assert optimal_momentum(0.0, 4.0) == (1.0, 1.0) and momentum_rate(0.0, 4.0) == 1.0


@pytest.mark.parametrize("kappa", [4.0, 25.0, 100.0, 1000.0])
def test_rates_at_the_optimum(kappa):
    s = math.sqrt(kappa)
    assert momentum_rate(1.0, kappa) == pytest.approx((s - 1) / (s + 1), rel=1e-14)
    assert momentum_rate(1.0, kappa, nesterov=True) == pytest.approx(1 - 2 / math.sqrt(3 * kappa + 1), rel=1e-14)
    # the radius at the rounded optimal pair, from the iteration matrices: a double root, so ~1e-8
    for nesterov in (False, True):
        lr, beta = optimal_momentum(1.0, kappa, nesterov)
        radii = eig_radius(lr, beta, torch.tensor([1.0, kappa]), nesterov)
        assert float(radii.max()) == pytest.approx(momentum_rate(1.0, kappa, nesterov=nesterov), abs=1e-6)
    # Nesterov's textbook tuning (1/L, (sqrt(kappa) - 1)/(sqrt(kappa) + 1)): 1 - 1/sqrt(kappa)
    r = momentum_rate(1.0, kappa, lr=1 / kappa, momentum=(s - 1) / (s + 1), nesterov=True)
    assert r == pytest.approx(1 - 1 / s, abs=1e-7)
    # the ordering: heavy ball < Nesterov < gradient descent
    assert momentum_rate(1.0, kappa) < momentum_rate(1.0, kappa, nesterov=True) < gd_rate(1.0, kappa)


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_optimum_beats_a_grid_search(nesterov, kappa):
    lr = torch.linspace(0.01, 4.5, 400, dtype=F64).view(-1, 1, 1) / kappa
    beta = torch.linspace(0.0, 0.999, 400, dtype=F64).view(1, -1, 1)
    worst = eig_radius(lr, beta, torch.tensor([1.0, kappa], dtype=F64), nesterov).amax(-1)  # (400, 400)
    best = momentum_rate(1.0, kappa, nesterov=nesterov)
    assert float(worst.min()) >= best - 1e-6  # nothing on the grid is faster
    assert float(worst.min()) <= best + 5e-3  # and the grid gets close to it


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
def test_worst_curvature_is_at_an_end_of_the_interval(nesterov):
    g = torch.Generator().manual_seed(1)
    lam = torch.linspace(1.0, 50.0, 2001, dtype=F64)
    for lr, beta in zip(torch.rand(30, generator=g, dtype=F64) * 0.1, torch.rand(30, generator=g, dtype=F64)):
        dense = float(eig_radius(lr, beta, lam, nesterov).max())
        assert momentum_rate(1.0, 50.0, lr=float(lr), momentum=float(beta), nesterov=nesterov) == pytest.approx(
            dense, abs=1e-7
        )


def test_momentum_zero_is_gd_rate():
    for lr in [0.01, 0.1, 0.18, 0.25]:
        assert momentum_rate(1.0, 10.0, lr=lr, momentum=0.0) == pytest.approx(gd_rate(1.0, 10.0, lr), abs=1e-15)


# ---------------------------------------------------------------------------
# Runs: the measured rate is the predicted one


@pytest.mark.parametrize("kappa", [10.0, 100.0, 1000.0])
def test_measured_rate_at_optimal_heavy_ball(device, kappa):
    """At the optimum the error is (a + b k) rho^k: fit the k, and the rate is the closed form."""
    f = quadratic(torch.diag(torch.tensor([1.0, kappa], dtype=F64)))
    lr, beta = optimal_momentum(1.0, kappa)
    xs = momentum_descent(f, torch.tensor([1.0, 1.0], device=device, dtype=F64), lr, beta, 600)
    rho, p = rate_tolerating_k(xs, skip=50)
    expected = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    assert rho == pytest.approx(expected, rel=1e-4)
    assert p == pytest.approx(1.0, abs=0.02)  # the polynomial factor is k
    assert rho < gd_rate(1.0, kappa)


def test_measured_rate_on_a_random_quadratic(device):
    """Eigenvalues spread over [1, 100]: the inner ones spiral at sqrt(beta) = rho, the ends set k rho^k."""
    g = torch.Generator().manual_seed(0)
    d, kappa = 10, 100.0
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    eig = torch.cat([torch.tensor([1.0, kappa], dtype=F64), 1 + (kappa - 1) * torch.rand(d - 2, generator=g, dtype=F64)])
    A = Q @ torch.diag(eig) @ Q.T
    f = quadratic((A + A.T) / 2)
    lr, beta = optimal_momentum(1.0, kappa)
    xs = momentum_descent(f, torch.ones(d, device=device, dtype=F64), lr, beta, 600)
    rho, _ = rate_tolerating_k(xs, skip=100)
    assert rho == pytest.approx(momentum_rate(1.0, kappa), rel=1e-3)


@pytest.mark.parametrize("beta", [0.9, 0.97])
def test_measured_rate_above_the_optimal_momentum_is_sqrt_beta(device, beta):
    """lr = 1/L and beta above (1 - sqrt(lr mu))^2 = 0.81: every root is complex, rho = sqrt(beta)."""
    f = quadratic(torch.diag(torch.tensor([1.0, 100.0], dtype=F64)))
    xs = momentum_descent(f, torch.tensor([1.0, 1.0], device=device, dtype=F64), 0.01, beta, 3000)
    assert momentum_rate(1.0, 100.0, lr=0.01, momentum=beta) == pytest.approx(math.sqrt(beta), rel=1e-14)
    e = xs.cpu().norm(dim=1)
    # over whole multiples of the slowest oscillation the cosines average out: a ratio over 2000 steps
    measured = float((e[2800:3000].max() / e[800:1000].max()) ** (1 / 2000))
    assert measured == pytest.approx(math.sqrt(beta), rel=2e-4)


# ---------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: momentum_spectral_radius(-0.1, 0.5, 1.0), r"lr must be >= 0, got -0.1"),
        (lambda: momentum_spectral_radius(0.1, 1.5, 1.0), r"momentum must be in \[0, 1\], got 1.5"),
        (lambda: momentum_spectral_radius(0.1, 0.5, float("nan")), r"curvature must be finite"),
        (lambda: optimal_momentum(2.0, 1.0), r"0 <= mu <= L.*mu=2.0, L=1.0"),
        (lambda: momentum_rate(1.0, 10.0, lr=0.1), r"give both lr and momentum, or neither"),
        (lambda: momentum_rate(1.0, 10.0, lr=0.1, momentum=-0.5), r"momentum must be in \[0, 1\], got -0.5"),
        (lambda: momentum_rate(1.0, 10.0, lr=float("inf"), momentum=0.5), r"lr must be"),
    ],
)
def test_invalid_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
