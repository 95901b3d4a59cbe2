"""book.gd against torch.optim.SGD and against the closed-form theory of quadratics."""

from __future__ import annotations

import math

import pytest
import torch

from book.gd import (
    backtracking_line_search,
    convergence_rate,
    gd_rate,
    gradient_descent,
    gradient_descent_backtracking,
    momentum_descent,
    newton,
    optimal_lr,
)
from book.landscapes import ill_conditioned_quadratic, quadratic, rosenbrock

F64 = torch.float64


@pytest.fixture(autouse=True)
def _needs_float64(request):
    """Tests without the dtype fixture compute in float64, which Apple's MPS lacks."""
    names = request.fixturenames
    if "device" in names and "dtype" not in names and request.getfixturevalue("device").type == "mps":
        pytest.skip("MPS has no float64")


def sgd_iterates(f, x0, steps, **sgd_kwargs):
    """Drive a parameter with torch.optim.SGD on the exact gradient of f; return the path."""
    p = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([p], **sgd_kwargs)
    path = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        f(p).backward()
        opt.step()
        path.append(p.detach().clone())
    return torch.stack(path)


def spd_quadratic(d, kappa, device, seed=0):
    """A random d-dim quadratic with eigenvalues from 1 to kappa and a random b."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    A = Q @ torch.diag(torch.logspace(0, math.log10(kappa), d, dtype=F64)) @ Q.T
    A = (A + A.T) / 2
    b = torch.randn(d, generator=g, dtype=F64)
    return quadratic(A, b), A.to(device), b.to(device)


# Problems for the torch.optim comparisons: (name, f, x0, lr). Rosenbrock with a step small
# enough to be stable from its usual start (its largest curvature there is about 2700).
QUAD = ill_conditioned_quadratic(20.0, angle=0.4)
PROBLEMS = [
    ("quadratic", QUAD, (-1.5, 1.0), 0.05),
    ("rosenbrock", rosenbrock, (-1.5, 2.0), 2e-4),
]


# ---------------------------------------------------------------------------
# Equal to torch.optim.SGD


@pytest.mark.parametrize("name,f,start,lr", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_gradient_descent_equals_torch_sgd(device, dtype, name, f, start, lr):
    x0 = torch.tensor(start, device=device, dtype=dtype)
    ours = gradient_descent(f, x0, lr=lr, steps=50)
    theirs = sgd_iterates(f, x0, 50, lr=lr)
    assert ours.shape == (51, 2) and ours.device == x0.device and ours.dtype == dtype
    assert torch.equal(ours[0], x0)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == F64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, theirs, **tol)


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
@pytest.mark.parametrize("momentum", [0.5, 0.9])
@pytest.mark.parametrize("name,f,start,lr", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_momentum_descent_equals_torch_sgd(device, dtype, name, f, start, lr, momentum, nesterov):
    x0 = torch.tensor(start, device=device, dtype=dtype)
    lr = lr * (1 - momentum)  # keep the heavy ball stable on Rosenbrock
    ours = momentum_descent(f, x0, lr=lr, momentum=momentum, steps=120, nesterov=nesterov)
    theirs = sgd_iterates(f, x0, 120, lr=lr, momentum=momentum, nesterov=nesterov)
    assert ours.shape == (121, 2) and ours.device == x0.device and ours.dtype == dtype
    assert not torch.allclose(ours[-1], ours[0])  # it moved
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == F64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, theirs, **tol)


def test_momentum_zero_is_gradient_descent(device):
    x0 = torch.tensor([-1.5, 1.0], device=device, dtype=F64)
    a = momentum_descent(QUAD, x0, lr=0.05, momentum=0.0, steps=30)
    torch.testing.assert_close(a, sgd_iterates(QUAD, x0, 30, lr=0.05), rtol=1e-12, atol=1e-12)


def test_higher_dimension_equals_torch_sgd(device):
    f, _, _ = spd_quadratic(6, 50.0, device)
    x0 = torch.linspace(-1, 1, 6, device=device, dtype=F64)
    ours = momentum_descent(f, x0, lr=0.02, momentum=0.8, steps=100, nesterov=True)
    theirs = sgd_iterates(f, x0, 100, lr=0.02, momentum=0.8, nesterov=True)
    assert ours.shape == (101, 6)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------
# Rates on quadratics: the closed forms


def diagonal_quadratic(mu, L):
    return quadratic(torch.diag(torch.tensor([mu, L], dtype=F64)))


@pytest.mark.parametrize("kappa", [2.0, 10.0, 50.0, 200.0])
def test_rate_at_optimal_lr_is_closed_form(device, kappa):
    mu, L = 1.0, kappa
    f = diagonal_quadratic(mu, L)
    lr = optimal_lr(mu, L)
    assert lr == pytest.approx(2 / (L + mu), rel=1e-15)
    xs = gradient_descent(f, torch.tensor([1.0, 1.0], device=device, dtype=F64), lr, steps=60)
    measured = convergence_rate(xs, torch.zeros(2))
    assert measured == pytest.approx((kappa - 1) / (kappa + 1), abs=1e-6)
    assert gd_rate(mu, L) == pytest.approx((kappa - 1) / (kappa + 1), abs=1e-15)


@pytest.mark.parametrize("kappa", [4.0, 25.0])
def test_rate_at_one_over_L(device, kappa):
    mu, L = 0.5, 0.5 * kappa
    f = diagonal_quadratic(mu, L)
    xs = gradient_descent(f, torch.tensor([0.7, -1.3], device=device, dtype=F64), 1 / L, steps=80)
    assert convergence_rate(xs, torch.zeros(2)) == pytest.approx(1 - 1 / kappa, abs=1e-6)
    assert gd_rate(mu, L, lr=1 / L) == pytest.approx(1 - 1 / kappa, abs=1e-15)


def test_rotated_bowl_matches_predicted_rate_for_many_steps(device):
    kappa = 10.0
    f = ill_conditioned_quadratic(kappa, mu=1.0, angle=0.7)
    x0 = torch.tensor([-1.5, 1.0], device=device, dtype=F64)
    for lr in [0.02, 0.1, 0.15, 0.19]:
        xs = gradient_descent(f, x0, lr, steps=200)
        assert convergence_rate(xs, torch.zeros(2)) == pytest.approx(gd_rate(1.0, kappa, lr), abs=1e-6)


def test_diverges_above_two_over_L_at_predicted_rate(device):
    mu, L = 1.0, 10.0
    f = diagonal_quadratic(mu, L)
    lr = 2.05 / L
    xs = gradient_descent(f, torch.tensor([1.0, 1.0], device=device, dtype=F64), lr, steps=120)
    errors = xs.norm(dim=1)
    assert bool((errors[-10:] > errors[-11:-1]).all())  # growing, every step
    assert errors[-1] > 1e2 * errors[0]
    assert convergence_rate(xs, torch.zeros(2)) == pytest.approx(abs(1 - lr * L), abs=1e-6)
    assert gd_rate(mu, L, lr) == pytest.approx(1.05, abs=1e-12)


def test_convergence_rate_ignores_errors_at_rounding_floor(device):
    # x* = A^{-1} b = (1, 1) is not zero, so the error stalls near 1e-16 after ~35 steps.
    f = quadratic(torch.diag(torch.tensor([1.0, 2.0], dtype=F64)), b=[1.0, 2.0])
    lr = optimal_lr(1.0, 2.0)
    xs = gradient_descent(f, torch.tensor([3.0, -2.0], device=device, dtype=F64), lr, steps=300)
    assert float((xs[-1] - 1).norm()) < 1e-12  # converged long ago
    assert convergence_rate(xs, torch.ones(2)) == pytest.approx(1 / 3, abs=1e-6)


def test_convergence_rate_when_error_hits_zero_and_on_overflow(device):
    xs = torch.tensor([[2.0, 0.0], [1.0, 1.0], [1.0, 1.0]], device=device, dtype=F64)
    assert convergence_rate(xs, torch.ones(2)) == 0.0
    xs = torch.tensor([[1.0], [2.0], [4.0], [8.0], [math.inf], [math.nan]], device=device)
    assert convergence_rate(xs, torch.zeros(1), skip=0) == pytest.approx(2.0, rel=1e-6)


def test_gd_rate_edges():
    assert gd_rate(1.0, 10.0, lr=0.0) == 1.0  # no step: no progress
    assert gd_rate(1.0, 10.0, lr=0.2) == pytest.approx(1.0, abs=1e-15)  # 2/L: on the edge
    assert gd_rate(0.0, 10.0, lr=0.1) == 1.0  # a flat direction never converges


# ---------------------------------------------------------------------------
# Newton


def test_newton_solves_a_quadratic_in_one_step(device):
    f, A, b = spd_quadratic(5, 1e4, device)
    x0 = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=F64).to(device)
    xs = newton(f, x0, steps=1)
    assert xs.shape == (2, 5) and xs.device == x0.device
    x_star = torch.linalg.solve(A, b)
    torch.testing.assert_close(xs[1], x_star, rtol=0, atol=1e-10)


def test_newton_converges_quadratically_near_rosenbrock_minimum(device):
    xs = newton(rosenbrock, torch.tensor([1.05, 1.1], device=device, dtype=F64), steps=6)
    e = (xs - 1).norm(dim=1).cpu()
    # e_{k+1} <= C e_k^2 while the error is above rounding; the digits roughly double
    for k in range(5):
        assert e[k + 1] <= 10 * e[k] ** 2, (k, e)
    assert e[4] < 1e-6 and e[5] < 1e-11


@pytest.mark.parametrize("kwargs", [{"lr": 0.5}, {"damping": 1.0}], ids=["lr", "damping"])
def test_damped_newton_converges_from_rosenbrock_start(device, kwargs):
    xs = newton(rosenbrock, rosenbrock.start_tensor(device, F64), steps=80, **kwargs)
    errors = (xs - 1).norm(dim=1)
    assert float(errors[-1]) < 1e-6
    assert float(errors[0]) > 2.5


def test_newton_singular_hessian_raises_and_damping_fixes_it(device):
    f = lambda x: (x**4).sum()  # Hessian 12 x^2 = 0 at the origin
    x0 = torch.zeros(2, device=device, dtype=F64)
    with pytest.raises(ValueError, match="singular"):
        newton(f, x0, steps=1)
    assert torch.equal(newton(f, x0, steps=2, damping=1.0)[-1], x0)


# ---------------------------------------------------------------------------
# Backtracking line search


def test_backtracking_satisfies_armijo_and_is_the_first_such_step(device):
    x = rosenbrock.start_tensor(device, F64)
    xr = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(rosenbrock(xr), xr)
    fx = float(rosenbrock(x))
    c, shrink = 1e-4, 0.5
    t = backtracking_line_search(rosenbrock, x, lr0=1.0, shrink=shrink, c=c)
    assert 0 < t < 1
    armijo = lambda s: float(rosenbrock(x - s * g)) <= fx - c * s * float(g @ g)
    assert armijo(t)
    assert not armijo(t / shrink)  # the step before was rejected
    assert math.log2(1.0 / t) == int(math.log2(1.0 / t))  # t = 0.5^k


def test_backtracking_accepts_full_step_when_fine(device):
    f = lambda x: 0.5 * (x**2).sum()  # the gradient step with t = 1 lands on the minimum
    x = torch.tensor([3.0, -4.0], device=device, dtype=F64)
    assert backtracking_line_search(f, x, lr0=1.0) == 1.0
    assert backtracking_line_search(f, x, lr0=0.3) == 0.3


def test_backtracking_with_direction_and_uphill_direction(device):
    f = lambda x: 0.5 * (x**2).sum()
    x = torch.tensor([1.0, 1.0], device=device, dtype=F64)
    assert backtracking_line_search(f, x, direction=-x, lr0=4.0) == 1.0  # 4 and 2 overshoot
    with pytest.raises(ValueError, match="not a descent direction"):
        backtracking_line_search(f, x, direction=x)


def test_backtracking_gd_converges_where_fixed_step_diverges(device):
    x0 = rosenbrock.start_tensor(device, F64)
    fixed = gradient_descent(rosenbrock, x0, lr=0.01, steps=50)
    assert not bool(torch.isfinite(rosenbrock(fixed[-1])))  # blew up
    xs, ts = gradient_descent_backtracking(rosenbrock, x0, steps=2500, lr0=0.01)
    assert xs.shape == (2501, 2) and ts.shape == (2500,) and xs.device == x0.device
    values = torch.stack([rosenbrock(x) for x in xs])
    assert bool((values[1:] <= values[:-1]).all())  # Armijo: monotone decrease
    assert float(values[-1]) < 1e-3
    assert float(ts.min()) < 0.01 and float(ts.max()) == 0.01


# ---------------------------------------------------------------------------
# Shapes, dtype, validation


def test_iterates_follow_x0_dtype_and_zero_steps(device, dtype):
    x0 = torch.tensor([0.5, -0.5], device=device, dtype=dtype)
    for xs in (
        gradient_descent(QUAD, x0, 0.1, 0),
        momentum_descent(QUAD, x0, 0.1, 0.9, 0),
        newton(QUAD, x0, 0),
    ):
        assert xs.shape == (1, 2) and xs.dtype == dtype and xs.device == x0.device
        assert torch.equal(xs[0], x0)
    assert gradient_descent(QUAD, x0, 0.1, 3).dtype == dtype


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x: gradient_descent(QUAD, x, lr=-0.1, steps=3), r"lr must be .*>= 0, got -0.1"),
        (lambda x: gradient_descent(QUAD, x, lr=0.1, steps=-1), r"steps must be >= 0, got -1"),
        (lambda x: momentum_descent(QUAD, x, 0.1, momentum=1.0, steps=3), r"momentum must be in \[0, 1\).*got 1.0"),
        (lambda x: momentum_descent(QUAD, x, 0.1, momentum=-0.1, steps=3), r"momentum must be in \[0, 1\)"),
        (lambda x: newton(QUAD, x, steps=2, damping=-1.0), r"damping must be .*got -1.0"),
        (lambda x: newton(QUAD, x, steps=2, lr=-1.0), r"lr must be"),
        (lambda x: gradient_descent(QUAD, x[None], lr=0.1, steps=3), r"1-D tensor .*got shape \(1, 2\)"),
        (lambda x: gradient_descent(lambda p: p * 2, x, lr=0.1, steps=3), r"scalar.*shape \(2,\)"),
        (lambda x: backtracking_line_search(QUAD, x, lr0=0.0), r"lr0 must be .*> 0"),
        (lambda x: backtracking_line_search(QUAD, x, shrink=1.0), r"shrink must be in \(0, 1\)"),
        (lambda x: backtracking_line_search(QUAD, x, c=1.5), r"c must be in \(0, 1\)"),
        (lambda x: gradient_descent_backtracking(QUAD, x, steps=2, shrink=0.0), r"shrink"),
        (lambda x: convergence_rate(x[None], torch.zeros(3)), r"3 coordinates"),
        (lambda x: convergence_rate(x[None], torch.zeros(2)), r"at least 2 iterates"),
        (lambda x: optimal_lr(2.0, 1.0), r"0 <= mu <= L.*mu=2.0, L=1.0"),
        (lambda x: gd_rate(1.0, 10.0, lr=-1.0), r"lr must be"),
    ],
)
def test_invalid_arguments_raise_value_error(device, call, match):
    x = torch.tensor([0.5, -0.5], device=device, dtype=F64)
    with pytest.raises(ValueError, match=match):
        call(x)


def test_type_errors(device):
    with pytest.raises(TypeError, match="torch.Tensor"):
        gradient_descent(QUAD, [0.5, 0.5], lr=0.1, steps=1)
    with pytest.raises(TypeError, match="floating-point"):
        gradient_descent(QUAD, torch.tensor([1, 2], device=device), lr=0.1, steps=1)
    with pytest.raises(TypeError, match="steps must be an int"):
        gradient_descent(QUAD, torch.zeros(2, device=device), lr=0.1, steps=2.5)
