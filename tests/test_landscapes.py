"""Tests of book.landscapes against closed forms: values, gradients, Hessians, depth."""

from __future__ import annotations

import math

import pytest
import torch

from book.landscapes import (
    LANDSCAPES,
    Landscape,
    beale,
    classify_critical_point,
    gradient,
    hessian,
    himmelblau,
    ill_conditioned_quadratic,
    layer_gradient_norms,
    quadratic,
    rosenbrock,
    saddle,
)

# Himmelblau's local maximum (to 6 decimals; not stored on the landscape).
HIMMELBLAU_MAX = (-0.270845, -0.923039)


def _tol(dtype):
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}


def _random_points(n, lo, hi, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(n, 2, generator=g, dtype=torch.float64)).to(device, dtype)


# ---------------------------------------------------------------------------
# Hand-derived gradients and Hessians (the closed forms the tests compare with)


def rosenbrock_grad(p):
    x, y = p[..., 0], p[..., 1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)], dim=-1)


def rosenbrock_hess(x, y):
    return torch.tensor([[2 - 400 * (y - x**2) + 800 * x**2, -400 * x], [-400 * x, 200.0]], dtype=torch.float64)


def beale_grad(p):
    x, y = p[..., 0], p[..., 1]
    t1 = 1.5 - x + x * y
    t2 = 2.25 - x + x * y**2
    t3 = 2.625 - x + x * y**3
    dx = 2 * t1 * (y - 1) + 2 * t2 * (y**2 - 1) + 2 * t3 * (y**3 - 1)
    dy = 2 * t1 * x + 2 * t2 * (2 * x * y) + 2 * t3 * (3 * x * y**2)
    return torch.stack([dx, dy], dim=-1)


def himmelblau_grad(p):
    x, y = p[..., 0], p[..., 1]
    u, v = x**2 + y - 11, x + y**2 - 7
    return torch.stack([4 * x * u + 2 * v, 2 * u + 4 * y * v], dim=-1)


def himmelblau_hess(x, y):
    return torch.tensor(
        [[12 * x**2 + 4 * y - 42, 4 * (x + y)], [4 * (x + y), 4 * x + 12 * y**2 - 26]], dtype=torch.float64
    )


def saddle_grad(p):
    return torch.stack([2 * p[..., 0], -2 * p[..., 1]], dim=-1)


GRADIENTS = [
    (rosenbrock, rosenbrock_grad, (-2.0, 2.0)),
    (beale, beale_grad, (-2.0, 2.0)),
    (himmelblau, himmelblau_grad, (-5.0, 5.0)),
    (saddle, saddle_grad, (-2.0, 2.0)),
]


# ---------------------------------------------------------------------------
# Values at the known minima


def test_exact_minima_are_zero(device, dtype):
    assert rosenbrock(torch.tensor([1.0, 1.0], device=device, dtype=dtype)).item() == 0.0
    assert beale(torch.tensor([3.0, 0.5], device=device, dtype=dtype)).item() == 0.0
    assert himmelblau(torch.tensor([3.0, 2.0], device=device, dtype=dtype)).item() == 0.0


@pytest.mark.parametrize("f", [rosenbrock, beale, himmelblau], ids=lambda f: f.name)
def test_stored_minima_have_min_value_and_zero_gradient(f, device):
    m = f.minima_tensor(device=device, dtype=torch.float64)  # (k, 2)
    assert m.device.type == device.type
    values = f(m)
    assert torch.allclose(values, torch.full_like(values, f.min_value), atol=1e-9)
    # The stored minima are rounded to 6 decimals, so the gradient is small, not zero.
    assert gradient(f, m).norm(dim=-1).max() < 1e-3


def test_himmelblau_has_four_distinct_minima(device):
    m = himmelblau.minima_tensor(device=device, dtype=torch.float64)
    assert m.shape == (4, 2)
    assert torch.cdist(m, m).add(torch.eye(4, device=device, dtype=torch.float64) * 10).min() > 1.0


def test_rosenbrock_is_not_minimal_next_to_its_minimum(device, dtype):
    p = torch.tensor([[1.01, 1.0], [0.99, 1.0], [1.0, 1.01], [1.0, 0.99]], device=device, dtype=dtype)
    assert (rosenbrock(p) > 0).all()


# ---------------------------------------------------------------------------
# Gradients: autograd equals the hand-derived formulas


@pytest.mark.parametrize("f, grad_f, window", GRADIENTS, ids=[g[0].name for g in GRADIENTS])
def test_autograd_gradient_equals_closed_form(f, grad_f, window, device, dtype):
    p = _random_points(64, *window, device, dtype, seed=1)
    g = gradient(f, p)
    assert g.shape == p.shape and g.device.type == device.type and g.dtype == dtype
    expected = grad_f(p.double()).to(dtype)
    scale = expected.abs().max().item()
    assert torch.allclose(g, expected, rtol=_tol(dtype)["rtol"], atol=_tol(dtype)["atol"] * scale)


def test_quadratic_gradient_is_Ax_minus_b(device, dtype):
    g = torch.Generator().manual_seed(2)
    M = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A = M @ M.T + torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    f = quadratic(A, b)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    expected = x @ A.T - b  # (7, 5): one gradient A x - b per row
    got = gradient(f, x.to(device, dtype))
    assert torch.allclose(got.cpu().double(), expected, **_tol(dtype))
    # and the value is 1/2 x^T A x - b^T x
    values = 0.5 * torch.einsum("ni,ij,nj->n", x, A, x) - x @ b
    assert torch.allclose(f(x.to(device, dtype)).cpu().double(), values, **_tol(dtype))


# ---------------------------------------------------------------------------
# Batched evaluation


@pytest.mark.parametrize("f", list(LANDSCAPES.values()), ids=list(LANDSCAPES))
def test_batched_equals_point_by_point(f, device, dtype):
    p = _random_points(12, -2.0, 2.0, device, dtype, seed=3).reshape(3, 4, 2)
    batched = f(p)
    assert batched.shape == (3, 4)
    one_by_one = torch.stack([f(q) for q in p.reshape(-1, 2)]).reshape(3, 4)
    assert torch.allclose(batched, one_by_one, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)


def test_landscape_rejects_bad_inputs():
    with pytest.raises(TypeError, match="expects a torch.Tensor"):
        rosenbrock([1.0, 1.0])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        rosenbrock(torch.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        rosenbrock(torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating-point"):
        rosenbrock(torch.tensor([1, 1]))


def test_minima_and_start_tensors(device):
    assert rosenbrock.minima_tensor(device=device).shape == (1, 2)
    s = himmelblau.start_tensor(device=device, dtype=torch.float64)
    assert s.shape == (2,) and s.dtype == torch.float64 and s.device.type == device.type
    assert saddle.minima_tensor().shape == (0, 2)


# ---------------------------------------------------------------------------
# Hessians


def test_rosenbrock_hessian_at_minimum(device):
    H = hessian(rosenbrock, torch.tensor([1.0, 1.0], device=device, dtype=torch.float64))
    assert torch.equal(H.cpu(), torch.tensor([[802.0, -400.0], [-400.0, 200.0]], dtype=torch.float64))


@pytest.mark.parametrize("f, hess_f", [(rosenbrock, rosenbrock_hess), (himmelblau, himmelblau_hess)], ids=["Rosenbrock", "Himmelblau"])
def test_hessian_equals_closed_form_at_random_points(f, hess_f, device, dtype):
    for q in _random_points(5, -3.0, 3.0, "cpu", torch.float64, seed=4):
        H = hessian(f, q.to(device, dtype))
        assert H.shape == (2, 2) and H.dtype == dtype
        expected = hess_f(float(q[0]), float(q[1]))
        scale = expected.abs().max().item()
        assert torch.allclose(H.cpu().double(), expected, rtol=0, atol=1e-5 * scale if dtype == torch.float32 else 1e-9 * scale)


def test_quadratic_and_saddle_hessians(device, dtype):
    A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64)
    f = quadratic(A, b=[1.0, -1.0, 2.0])
    x = torch.tensor([0.3, -0.7, 1.1], device=device, dtype=dtype)
    assert torch.allclose(hessian(f, x).cpu().double(), A, atol=1e-6)
    Hs = hessian(saddle, torch.tensor([0.4, -1.2], device=device, dtype=dtype))
    assert torch.allclose(Hs.cpu().double(), torch.diag(torch.tensor([2.0, -2.0], dtype=torch.float64)))


def test_hessian_rejects_batches():
    with pytest.raises(ValueError, match=r"one point of shape \(d,\)"):
        hessian(rosenbrock, torch.zeros(3, 2))


# ---------------------------------------------------------------------------
# Classifying critical points


@pytest.mark.parametrize("f", [rosenbrock, beale, himmelblau], ids=lambda f: f.name)
def test_minima_are_classified_as_minima(f, device, dtype):
    for m in f.minima_tensor(device=device, dtype=dtype):
        assert classify_critical_point(f, m) == "minimum"


def test_saddles_and_maximum_are_classified(device, dtype):
    origin = torch.zeros(2, device=device, dtype=dtype)
    assert classify_critical_point(saddle, origin) == "saddle"
    assert classify_critical_point(LANDSCAPES["ill-conditioned bowl"], origin) == "minimum"
    assert len(himmelblau.saddles) == 4
    for s in himmelblau.saddles:
        assert classify_critical_point(himmelblau, torch.tensor(s, device=device, dtype=dtype)) == "saddle"
    peak = torch.tensor(HIMMELBLAU_MAX, device=device, dtype=dtype)
    assert classify_critical_point(himmelblau, peak) == "maximum"
    assert himmelblau(peak.double()).item() == pytest.approx(181.6165, abs=1e-3)


def test_degenerate_critical_point():
    f = Landscape(name="quartic", fn=lambda p: p[..., 0] ** 4 + p[..., 1] ** 2)
    assert classify_critical_point(f, torch.zeros(2, dtype=torch.float64)) == "degenerate"


def test_classify_raises_away_from_critical_points(device):
    with pytest.raises(ValueError, match="not a critical point"):
        classify_critical_point(himmelblau, torch.tensor([0.0, 0.0], device=device))
    with pytest.raises(ValueError, match="not a critical point"):
        classify_critical_point(rosenbrock, torch.tensor([-1.5, 2.0], device=device, dtype=torch.float64))


# ---------------------------------------------------------------------------
# Quadratics


def test_quadratic_minimum_is_the_linear_solve(device):
    g = torch.Generator().manual_seed(5)
    M = torch.randn(4, 4, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(4, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    f = quadratic(A, b)
    x_star = torch.linalg.solve(A, b)
    assert torch.allclose(torch.tensor(f.minima[0], dtype=torch.float64), x_star, atol=1e-12)
    assert f.min_value == pytest.approx(float(-0.5 * b @ x_star), abs=1e-12)
    assert f(x_star.to(device)).item() == pytest.approx(f.min_value, abs=1e-12)
    assert gradient(f, x_star.to(device)).abs().max() < 1e-12
    assert f.dim == 4 and len(f.start) == 4


def test_indefinite_quadratic_has_no_minimum():
    f = quadratic([[1.0, 0.0], [0.0, -1.0]])
    assert f.minima == () and f.min_value is None and f.saddles == ((0.0, 0.0),)


def test_quadratic_validation():
    with pytest.raises(ValueError, match=r"square \(d, d\) matrix, got shape \(2, 3\)"):
        quadratic(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"square.*got shape \(4,\)"):
        quadratic(torch.zeros(4))
    with pytest.raises(ValueError, match="symmetric"):
        quadratic([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"b must have shape \(2,\) to match A, got \(3,\)"):
        quadratic(torch.eye(2), b=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"got \(2, 1\)"):
        quadratic(torch.eye(2), b=[[1.0], [2.0]])


@pytest.mark.parametrize("angle", [0.0, math.pi / 6, math.pi / 4, 1.0, math.pi / 2])
@pytest.mark.parametrize("kappa, mu", [(1.0, 1.0), (10.0, 1.0), (100.0, 0.5)])
def test_ill_conditioned_quadratic_eigenvalues(kappa, mu, angle, device):
    f = ill_conditioned_quadratic(kappa, mu=mu, angle=angle)
    H = hessian(f, torch.tensor([0.2, -0.3], device=device, dtype=torch.float64))
    eig, vec = torch.linalg.eigh(H.cpu())
    assert torch.allclose(eig, torch.tensor([mu, kappa * mu], dtype=torch.float64), atol=1e-10)
    assert f.minima == ((0.0, 0.0),)
    if kappa > 1:  # the stiff direction (eigenvalue kappa * mu) is rotated by `angle`
        stiff = vec[:, 1]
        assert abs(float(stiff @ torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64))) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("kappa", [0.5, 0.0, -3.0, float("nan")])
def test_ill_conditioned_quadratic_rejects_bad_kappa(kappa):
    with pytest.raises(ValueError, match="kappa must be (>= 1|finite)"):
        ill_conditioned_quadratic(kappa)


def test_ill_conditioned_quadratic_rejects_bad_mu():
    with pytest.raises(ValueError, match="mu must be > 0, got 0"):
        ill_conditioned_quadratic(10.0, mu=0.0)


# ---------------------------------------------------------------------------
# Gradients through depth


def test_layer_gradient_norms_shape_and_device(device):
    norms = layer_gradient_norms(depth=7, width=16, activation="tanh", batch_size=8, device=device)
    assert norms.shape == (7,) and norms.device.type == "cpu" and norms.dtype == torch.float32
    assert torch.isfinite(norms).all() and (norms > 0).all()
    again = layer_gradient_norms(depth=7, width=16, activation="tanh", batch_size=8, device=device)
    assert torch.equal(norms, again)  # seeded: the same numbers every time
    f64 = layer_gradient_norms(depth=7, width=16, activation="tanh", batch_size=8, device=device, dtype=torch.float64)
    assert f64.dtype == torch.float64
    assert torch.allclose(f64.float(), norms, rtol=1e-4)


def test_layer_gradient_norms_same_on_every_device(device):
    cpu = layer_gradient_norms(depth=10, width=32, activation="relu", dtype=torch.float64)
    here = layer_gradient_norms(depth=10, width=32, activation="relu", dtype=torch.float64, device=device)
    assert torch.allclose(cpu, here, rtol=1e-9)


def test_layer_gradient_norms_matches_an_nn_sequential():
    """The same chain built from torch.nn layers gives the same gradients."""
    depth, width, std = 6, 20, 0.3
    g = torch.Generator().manual_seed(11)
    ws = [torch.randn(width, width, generator=g, dtype=torch.float64) * std for _ in range(depth)]
    x = torch.randn(32, width, generator=g, dtype=torch.float64)
    layers = []
    for w in ws:
        lin = torch.nn.Linear(width, width, bias=False, dtype=torch.float64)
        lin.weight.data.copy_(w)
        layers += [lin, torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers)
    loss = 0.5 * net(x).pow(2).sum(dim=1).mean()
    loss.backward()
    expected = torch.stack([m.weight.grad.norm() for m in net if isinstance(m, torch.nn.Linear)])
    got = layer_gradient_norms(depth, width, "tanh", weight_std=std, batch_size=32, seed=11, dtype=torch.float64)
    assert torch.allclose(got, expected, rtol=1e-10)


def test_sigmoid_gradients_vanish_with_depth(device):
    norms = layer_gradient_norms(depth=20, width=64, activation="sigmoid", device=device)
    assert norms[0] < 1e-3 * norms[-1]
    # and the decay is monotone from the output back to the input
    assert (norms[1:] > norms[:-1]).all()


@pytest.mark.parametrize("depth", [10, 30])
def test_relu_with_he_init_keeps_gradients_level(depth, device):
    width = 128
    norms = layer_gradient_norms(depth=depth, width=width, activation="relu", weight_std=math.sqrt(2 / width), device=device)
    ratio = float(norms[0] / norms[-1])
    assert 0.1 < ratio < 10
    assert 0.1 < float(norms.max() / norms.min()) < 10


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_homogeneous_chains_scale_like_c_to_the_2depth_minus_1(activation, device):
    """phi(c z) = c phi(z) for c > 0, and the loss is quadratic in the output, so
    multiplying every weight by c multiplies every gradient by exactly c^(2 depth - 1)."""
    depth, width = 12, 32
    base = 1 / math.sqrt(width)
    n1 = layer_gradient_norms(depth, width, activation, weight_std=base, device=device, dtype=torch.float64)
    for c in (0.5, 1.5, 3.0):
        nc = layer_gradient_norms(depth, width, activation, weight_std=c * base, device=device, dtype=torch.float64)
        assert torch.allclose(nc, n1 * c ** (2 * depth - 1), rtol=1e-9)


def test_large_init_tanh_explodes_backwards(device):
    width = 128
    norms = layer_gradient_norms(depth=30, width=width, activation="tanh", weight_std=3 / math.sqrt(width), device=device)
    assert norms[0] > 100 * norms[-1]


def test_layer_gradient_norms_validation():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        layer_gradient_norms(activation="gelu")
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        layer_gradient_norms(depth=0)
    with pytest.raises(ValueError, match="width must be >= 1, got -1"):
        layer_gradient_norms(width=-1)
    with pytest.raises(ValueError, match="must be >= 1"):
        layer_gradient_norms(width=-1)
