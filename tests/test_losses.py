"""book.losses against torch.nn.functional (values and input gradients), stability, errors, and the
chapter's central claims in small versions."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

import book.losses as L

REDUCTIONS = ["mean", "sum", "none"]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand(*shape, device, dtype, seed=0, scale=1.0):
    """Random normal numbers drawn on the CPU (the same on every device), moved to ``device``."""
    return (scale * torch.randn(*shape, generator=gen(seed), dtype=torch.float64)).to(device, dtype)


def value_and_grad(fn, x, *args, **kwargs):
    """fn(x, ...) and d(sum of the output * fixed random weights)/dx, for any reduction."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x, *args, **kwargs)
    w = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    return out.detach(), grad


def assert_same(ours, theirs, dtype):
    (v1, g1), (v2, g2) = ours, theirs
    assert v1.shape == v2.shape
    torch.testing.assert_close(v1, v2, **tol(dtype))
    torch.testing.assert_close(g1, g2, **tol(dtype))


# ---------------------------------------------------------------------------
# Equal to torch.nn.functional


REGRESSION = [
    ("mse", L.mse, F.mse_loss, {}),
    ("mae", L.mae, F.l1_loss, {}),
    ("huber", L.huber, F.huber_loss, {}),
    ("huber_delta_0.3", L.huber, F.huber_loss, {"delta": 0.3}),
    ("huber_delta_2.5", L.huber, F.huber_loss, {"delta": 2.5}),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,ours,theirs,kw", REGRESSION, ids=[r[0] for r in REGRESSION])
def test_regression_losses_equal_torch(name, ours, theirs, kw, reduction, device, dtype):
    x = rand(7, 5, device=device, dtype=dtype, seed=1, scale=2.0)
    y = rand(7, 5, device=device, dtype=dtype, seed=2)
    assert_same(value_and_grad(ours, x, y, reduction=reduction, **kw),
                value_and_grad(theirs, x, y, reduction=reduction, **kw), dtype)


def test_huber_gradient_is_the_clipped_residual(device, dtype):
    r = torch.linspace(-4, 4, 81, device=device, dtype=dtype)
    w = torch.linspace(0.5, 1.5, 81, dtype=dtype, device=device)
    _, g = value_and_grad(lambda x, t: L.huber(x, t, delta=1.5, reduction="none"), r, torch.zeros_like(r))
    # value_and_grad weights the outputs by linspace(0.5, 1.5): undo that
    torch.testing.assert_close(g / w, r.clamp(-1.5, 1.5), **tol(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_bce_with_logits_equals_torch(reduction, with_pos_weight, device, dtype):
    x = rand(6, 4, device=device, dtype=dtype, seed=3, scale=3.0)
    y = torch.rand(6, 4, generator=gen(4), dtype=torch.float64).round().to(device, dtype)
    y[0] = torch.tensor([0.2, 0.5, 0.9, 1.0])  # soft targets too
    kw = {"pos_weight": torch.tensor([1.0, 2.0, 5.0, 0.5], device=device, dtype=dtype)} if with_pos_weight else {}
    assert_same(value_and_grad(L.binary_cross_entropy_with_logits, x, y, reduction=reduction, **kw),
                value_and_grad(F.binary_cross_entropy_with_logits, x, y, reduction=reduction, **kw), dtype)


CE_CASES = [
    ("plain", {}),
    ("smoothing", {"label_smoothing": 0.1}),
    ("weight", {"weight": [0.5, 2.0, 1.0, 3.0, 0.25]}),
    ("weight_smoothing", {"weight": [0.5, 2.0, 1.0, 3.0, 0.25], "label_smoothing": 0.3}),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case,kw", CE_CASES, ids=[c[0] for c in CE_CASES])
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_cross_entropy_equals_torch(case, kw, targets, reduction, device, dtype):
    kw = {k: (torch.tensor(v, device=device, dtype=dtype) if k == "weight" else v) for k, v in kw.items()}
    x = rand(8, 5, device=device, dtype=dtype, seed=5, scale=3.0)
    if targets == "indices":
        y = torch.tensor([0, 1, 2, 3, 4, 4, 1, 0], device=device)
    else:
        y = torch.softmax(rand(8, 5, device=device, dtype=dtype, seed=6), dim=1)
    assert_same(value_and_grad(L.cross_entropy, x, y, reduction=reduction, **kw),
                value_and_grad(F.cross_entropy, x, y, reduction=reduction, **kw), dtype)


def test_cross_entropy_with_spatial_dimensions_equals_torch(device, dtype):
    x = rand(3, 4, 2, 5, device=device, dtype=dtype, seed=7)  # (N, C, d1, d2)
    y = torch.randint(0, 4, (3, 2, 5), generator=gen(8)).to(device)
    for reduction in REDUCTIONS:
        assert_same(value_and_grad(L.cross_entropy, x, y, label_smoothing=0.2, reduction=reduction),
                    value_and_grad(F.cross_entropy, x, y, label_smoothing=0.2, reduction=reduction), dtype)


def test_integer_targets_of_any_width(device):
    x = rand(5, 3, device=device, dtype=torch.float64, seed=19)
    y = torch.tensor([0, 2, 1, 1, 0], device=device)
    for dt in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(L.cross_entropy(x, y.to(dt)), F.cross_entropy(x, y))
        torch.testing.assert_close(L.hinge(x, y.to(dt)), F.multi_margin_loss(x, y))


def test_cross_entropy_gradient_is_softmax_minus_onehot(device, dtype):
    x = rand(4, 6, device=device, dtype=dtype, seed=9)
    y = torch.tensor([5, 0, 2, 2], device=device)
    x.requires_grad_(True)
    L.cross_entropy(x, y, reduction="sum").backward()
    torch.testing.assert_close(x.grad, torch.softmax(x.detach(), 1) - F.one_hot(y, 6).to(dtype), **tol(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("with_weight", [False, True])
def test_hinge_equals_multi_margin_loss(reduction, margin, with_weight, device, dtype):
    x = rand(9, 4, device=device, dtype=dtype, seed=10, scale=1.5)
    y = torch.randint(0, 4, (9,), generator=gen(11)).to(device)
    kw = {"weight": torch.tensor([1.0, 0.5, 2.0, 3.0], device=device, dtype=dtype)} if with_weight else {}
    assert_same(value_and_grad(L.hinge, x, y, margin=margin, reduction=reduction, **kw),
                value_and_grad(F.multi_margin_loss, x, y, p=1, margin=margin, reduction=reduction, **kw), dtype)


def focal_by_the_formula(z, y, alpha, gamma):
    """Lin et al. (2017), eqs. (1)-(5), written out: p_t, alpha_t, (1 - p_t)^gamma * CE."""
    p = 1 / (1 + torch.exp(-z))
    p_t = torch.where(y == 1, p, 1 - p)
    alpha_t = torch.where(y == 1, torch.full_like(z, alpha), torch.full_like(z, 1 - alpha)) if alpha >= 0 else 1.0
    return alpha_t * (1 - p_t) ** gamma * -torch.log(p_t)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.75, 0.0), (0.5, 0.5), (0.25, 5.0)])
def test_focal_equals_the_formula_of_lin_et_al(alpha, gamma, reduction, device):
    dtype = torch.float64
    z = rand(5, 6, device=device, dtype=dtype, seed=12, scale=3.0)
    y = torch.rand(5, 6, generator=gen(13), dtype=dtype).round().to(device)

    def reference(z, y, reduction):
        loss = focal_by_the_formula(z, y, alpha, gamma)
        return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]

    assert_same(value_and_grad(L.focal, z, y, alpha=alpha, gamma=gamma, reduction=reduction),
                value_and_grad(reference, z, y, reduction=reduction), dtype)


def test_focal_with_gamma_zero_is_alpha_weighted_bce(device, dtype):
    z = rand(20, device=device, dtype=dtype, seed=14, scale=3.0)
    y = torch.rand(20, generator=gen(15), dtype=torch.float64).to(device, dtype)  # soft targets
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    torch.testing.assert_close(L.focal(z, y, alpha=-1, gamma=0.0, reduction="none"), bce, **tol(dtype))
    torch.testing.assert_close(L.focal(z, y, alpha=0.3, gamma=0.0, reduction="none"),
                               (0.3 * y + 0.7 * (1 - y)) * bce, **tol(dtype))


def test_focal_soft_targets_match_torchvision_formula(device):
    """torchvision's formula (1 - p_t with p_t = p y + (1 - p)(1 - y)) also for soft targets, in float64."""
    z = rand(30, device=device, dtype=torch.float64, seed=16, scale=2.0)
    y = torch.rand(30, generator=gen(17), dtype=torch.float64).to(device)
    p = torch.sigmoid(z)
    p_t = p * y + (1 - p) * (1 - y)
    ref = F.binary_cross_entropy_with_logits(z, y, reduction="none") * (1 - p_t) ** 2 * (0.25 * y + 0.75 * (1 - y))
    torch.testing.assert_close(L.focal(z, y, reduction="none"), ref, rtol=1e-10, atol=1e-12)


def focal_torchvision_formula(z, y, alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss written out: BCE * (1 - p_t)^gamma * alpha_t, p_t = p y + (1 - p)(1 - y)."""
    p = torch.sigmoid(z)
    ce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * y + (1 - alpha) * (1 - y)) * loss if alpha >= 0 else loss


FOCAL_TARGET_CASES = [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.5), (0.75, 1.0), (0.25, 5.0), (0.25, 0.0)]


@pytest.mark.parametrize("alpha,gamma", FOCAL_TARGET_CASES)
def test_focal_gradient_with_respect_to_the_target(alpha, gamma, device):
    """A target that requires grad (a teacher's probabilities) gets the plain formula's gradient, also at 0 and 1."""
    dtype = torch.float64
    zs = torch.tensor([-6.0, -2.0, -0.3, 0.0, 0.4, 1.5, 6.0], dtype=dtype)
    ys = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=dtype)
    z, y = (t.reshape(-1).to(device) for t in torch.meshgrid(zs, ys, indexing="ij"))
    ours = value_and_grad(lambda t, x: L.focal(x, t, alpha=alpha, gamma=gamma, reduction="none"), y, z)
    # autograd through the straightforward float64 expression: it is linear in y inside every log
    # and power, so its gradient is finite at y = 0 and 1 for these moderate logits
    plain = value_and_grad(lambda t, x: focal_torchvision_formula(x, t, alpha, gamma), y, z)
    assert_same(ours, plain, dtype)
    # the same at 0 and 1 in closed form: d/dy [alpha_t M CE] with M = (1 - p_t)^gamma,
    # d alpha_t/dy = 2 alpha - 1, dM/dy = gamma (1 - p_t)^(gamma - 1) (sigma(-z) - sigma(z)), dCE/dy = -z
    hard = (y == 0) | (y == 1)
    zh, yh = z[hard], y[hard]
    p = torch.sigmoid(zh)
    one_m_pt = yh * (1 - p) + (1 - yh) * p
    ce = F.binary_cross_entropy_with_logits(zh, yh, reduction="none")
    M, dM = one_m_pt**gamma, gamma * one_m_pt ** (gamma - 1) * ((1 - p) - p)
    a_t, da = (alpha * yh + (1 - alpha) * (1 - yh), 2 * alpha - 1) if alpha >= 0 else (1.0, 0.0)
    closed = da * M * ce + a_t * dM * ce + a_t * M * -zh
    w = torch.linspace(0.5, 1.5, len(z), dtype=dtype, device=device)  # value_and_grad's weights
    torch.testing.assert_close(ours[1][hard] / w[hard], closed, rtol=1e-10, atol=1e-12)
    # and one-sided finite differences (second order) at 0 and 1, from inside [0, 1]
    h = 1e-6
    f = lambda t: L.focal(zh, t, alpha=alpha, gamma=gamma, reduction="none")  # noqa: E731
    s = torch.where(yh == 0, 1.0, -1.0).to(dtype)  # step into the interval
    fd = s * (-3 * f(yh) + 4 * f(yh + s * h) - f(yh + 2 * s * h)) / (2 * h)
    torch.testing.assert_close(fd, closed, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_focal_gradient_with_respect_to_hard_targets_is_finite(gamma, device, dtype):
    """The old log-space form gave NaN here (log 0 times 0); torch's BCE with logits is finite, and so is this."""
    big = [1e4, -1e4] if gamma >= 1 else []  # gamma < 1: d(1 - p_t)^gamma / dy overflows there, truly
    z = torch.tensor([-20.0, -3.0, 0.0, 3.0, 20.0] + big, dtype=dtype, device=device).repeat(2)
    y = torch.cat([torch.zeros(len(z) // 2), torch.ones(len(z) // 2)]).to(device, dtype)
    y.requires_grad_(True)
    z.requires_grad_(True)
    L.focal(z, y, gamma=gamma).backward()
    assert torch.isfinite(y.grad).all() and torch.isfinite(z.grad).all()
    y2 = y.detach().clone().requires_grad_(True)
    F.binary_cross_entropy_with_logits(z.detach(), y2).backward()
    assert torch.isfinite(y2.grad).all()  # the reference behaviour


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_passes_gradcheck_in_input_and_target(gamma):
    """The hand-written backward of (1 - p_t)^gamma, and its own gradient, by finite differences (soft targets)."""
    z = rand(8, device="cpu", dtype=torch.float64, seed=20, scale=2.0).requires_grad_(True)
    y = (0.1 + 0.8 * torch.rand(8, generator=gen(21), dtype=torch.float64)).requires_grad_(True)
    fn = lambda a, b: L.focal(a, b, alpha=0.25, gamma=gamma, reduction="none")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (z, y))
    assert torch.autograd.gradgradcheck(fn, (z, y))

def test_log_softmax_equals_torch(device, dtype):
    x = rand(4, 7, device=device, dtype=dtype, seed=18, scale=50.0)
    assert_same(value_and_grad(L.log_softmax, x, dim=1), value_and_grad(torch.log_softmax, x, dim=1), dtype)


# ---------------------------------------------------------------------------
# Stability at logits of +-1e4


def test_stable_at_huge_logits(device, dtype):
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [1e4, 1e4, -1e4]], device=device, dtype=dtype)
    y = torch.tensor([1, 0, 2], device=device)
    for reduction in REDUCTIONS:
        for kw in ({}, {"label_smoothing": 0.1}):
            ours = value_and_grad(L.cross_entropy, z, y, reduction=reduction, **kw)
            assert all(torch.isfinite(t).all() for t in ours)
            assert_same(ours, value_and_grad(F.cross_entropy, z, y, reduction=reduction, **kw), dtype)
        ours = value_and_grad(L.hinge, z, y, reduction=reduction)
        assert_same(ours, value_and_grad(F.multi_margin_loss, z, y, reduction=reduction), dtype)
    zb = torch.tensor([1e4, -1e4, 1e4, -1e4, 0.0], device=device, dtype=dtype)
    yb = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0], device=device, dtype=dtype)
    pw = torch.tensor(3.0, device=device, dtype=dtype)
    for reduction in REDUCTIONS:
        for kw in ({}, {"pos_weight": pw}):
            ours = value_and_grad(L.binary_cross_entropy_with_logits, zb, yb, reduction=reduction, **kw)
            assert all(torch.isfinite(t).all() for t in ours)
            assert_same(ours, value_and_grad(F.binary_cross_entropy_with_logits, zb, yb, reduction=reduction, **kw),
                        dtype)
        for gamma in (0.0, 0.5, 1.0, 2.0):
            v, g = value_and_grad(L.focal, zb, yb, gamma=gamma, reduction=reduction)
            assert torch.isfinite(v).all() and torch.isfinite(g).all(), gamma
    # the confidently wrong ones: loss = 0.75 * 1 * 1e4 (alpha_t (1 - p_t)^gamma CE), gradient alpha_t * (+-1)
    v, g = value_and_grad(lambda x, t: L.focal(x, t, reduction="none"), zb, yb)
    w = torch.linspace(0.5, 1.5, 5, dtype=dtype, device=device)
    torch.testing.assert_close(v[[1, 2]], torch.tensor([0.25e4, 0.75e4], device=device, dtype=dtype))
    torch.testing.assert_close((g / w)[[1, 2]], torch.tensor([-0.25, 0.75], device=device, dtype=dtype), **tol(dtype))
    torch.testing.assert_close(v[[0, 3]], torch.zeros(2, device=device, dtype=dtype))


def test_the_naive_formulas_overflow_and_the_stable_ones_do_not(device):
    z = torch.tensor([[1000.0, 999.0, 0.0]], device=device)
    y = torch.tensor([1], device=device)
    assert torch.isnan(L.naive_softmax_cross_entropy(z, y))
    stable = L.cross_entropy(z, y)
    assert math.isclose(float(stable), 1 + math.log1p(math.exp(-1) + math.exp(-1000)), rel_tol=1e-6)
    zb, yb = torch.tensor([20.0], device=device), torch.tensor([0.0], device=device)
    assert torch.isinf(L.naive_binary_cross_entropy_with_logits(zb, yb))
    assert math.isclose(float(L.binary_cross_entropy_with_logits(zb, yb)), 20 + math.log1p(math.exp(-20)), rel_tol=1e-6)
    # where nothing overflows the naive formulas agree
    z2 = torch.tensor([[1.0, -0.5, 2.0]], dtype=torch.float64, device=device)
    torch.testing.assert_close(L.naive_softmax_cross_entropy(z2, y), L.cross_entropy(z2, y))


# ---------------------------------------------------------------------------
# Errors


def test_shape_mismatch_names_both_shapes(device):
    x, y = torch.zeros(4, 1, device=device), torch.zeros(4, device=device)
    for fn in (L.mse, L.mae, L.huber, L.binary_cross_entropy_with_logits, L.focal):
        with pytest.raises(ValueError, match=r"input \(4, 1\) and target \(4,\)"):
            fn(x, y)
    with pytest.raises(ValueError, match=r"shape \(3,\) does not match input \(4, 5\): expected \(4,\)"):
        L.cross_entropy(torch.zeros(4, 5, device=device), torch.zeros(3, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match=r"target shape \(4, 3\) does not match input \(4, 5\)"):
        L.cross_entropy(torch.zeros(4, 5, device=device), torch.zeros(4, 3, device=device))


def test_wrong_target_dtype_or_range(device):
    x = torch.zeros(4, 5, device=device)
    with pytest.raises(TypeError, match="class-index targets must be an integer tensor.*float32"):
        L.cross_entropy(x, torch.zeros(4, device=device))
    with pytest.raises(ValueError, match="class index 5 is out of range for 5 classes"):
        L.cross_entropy(x, torch.tensor([0, 1, 5, 2], device=device))
    with pytest.raises(ValueError, match="class index -1 is out of range"):
        L.hinge(x, torch.tensor([0, -1, 1, 2], device=device))
    with pytest.raises(TypeError, match="hinge: target must be integer class indices"):
        L.hinge(x, torch.full((4, 5), 0.2, device=device))
    with pytest.raises(TypeError, match=r"target must be a floating-point tensor.*int64.*target.float\(\)"):
        L.binary_cross_entropy_with_logits(torch.zeros(3, device=device), torch.tensor([0, 1, 1], device=device))
    with pytest.raises(TypeError, match="input must be a floating-point tensor, got dtype torch.int64"):
        L.mse(torch.tensor([1, 2], device=device), torch.tensor([1.0, 2.0], device=device))
    with pytest.raises(ValueError, match=r"weight must have one entry per class, shape \(5,\), got \(3,\)"):
        L.cross_entropy(x, torch.zeros(4, dtype=torch.long, device=device), weight=torch.ones(3, device=device))


def test_invalid_arguments_are_named():
    x, y = torch.zeros(3), torch.zeros(3)
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        L.mse(x, y, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        L.cross_entropy(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), reduction="batchmean")
    with pytest.raises(ValueError, match="delta must be > 0, got -1.0"):
        L.huber(x, y, delta=-1)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        L.cross_entropy(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), label_smoothing=1.5)
    with pytest.raises(ValueError, match="gamma must be >= 0, got -2.0"):
        L.focal(x, y, gamma=-2)
    with pytest.raises(ValueError, match="alpha must be in"):
        L.focal(x, y, alpha=1.5)
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got list"):
        L.mae([1.0], y)
    with pytest.raises(ValueError, match=r"input must be \(N, C\).*got shape \(3,\)"):
        L.cross_entropy(torch.zeros(3), torch.tensor(1))


def test_expected_calibration_error(device):
    # 4 samples, confidences 0.95, 0.95 (one right), 0.6, 0.55 (both right): bins 0.9-1 and 0.5-0.6
    p = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.4, 0.6], [0.55, 0.45]], device=device)
    y = torch.tensor([0, 1, 1, 0], device=device)
    expected = 0.5 * abs(0.95 - 0.5) + 0.5 * abs((0.6 + 0.55) / 2 - 1.0)
    assert math.isclose(L.expected_calibration_error(p, y, n_bins=10), expected, rel_tol=1e-6)
    assert L.expected_calibration_error(F.one_hot(y, 2).float(), y) == 0.0
    with pytest.raises(ValueError, match="n_bins must be an int >= 1, got 0"):
        L.expected_calibration_error(p, y, n_bins=0)




def test_docstring_examples():
    result = doctest.testmod(L, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0


# ---------------------------------------------------------------------------
# The chapter's central claims, small


def test_outliers_drag_the_mse_fit_but_not_huber(device, one_thread):
    """A line fit with 5% gross outliers: the least-squares slope moves a lot, Huber's little."""
    g = gen(0)
    n = 100
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1
    y = 2.0 * x + 1.0 + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    out = torch.arange(n - 5, n)
    x[out] = 0.8 + 0.2 * torch.rand(5, 1, generator=g, dtype=torch.float64)
    y[out] = -8.0
    x, y = x.to(device), y.to(device)

    def fit(loss):
        w = torch.zeros(2, dtype=torch.float64, device=device, requires_grad=True)
        opt = torch.optim.LBFGS([w], lr=1, max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-12)

        def closure():
            opt.zero_grad()
            value = loss(x * w[0] + w[1], y)
            value.backward()
            return value

        opt.step(closure)
        return float(w[0].detach())

    slope_mse, slope_huber = fit(L.mse), fit(lambda a, b: L.huber(a, b, delta=0.5))
    assert abs(slope_mse - 2.0) > 1.0
    assert abs(slope_huber - 2.0) < 0.2


def test_mse_on_softmax_vanishes_when_confidently_wrong_and_cross_entropy_does_not(device):
    z = torch.tensor([[-8.0, 8.0]], device=device, dtype=torch.float64, requires_grad=True)  # class 1 predicted
    y = torch.tensor([0], device=device)
    (g_ce,) = torch.autograd.grad(L.cross_entropy(z, y), z)
    p = torch.softmax(z, dim=1)
    (g_mse,) = torch.autograd.grad(L.mse(p, F.one_hot(y, 2).double(), reduction="sum"), z)
    assert g_ce.abs().max() > 0.99
    assert g_mse.abs().max() < 1e-6


def test_hinge_ignores_examples_beyond_the_margin_cross_entropy_does_not(device):
    z = torch.tensor([[5.0, 0.0, 1.0], [0.2, 0.0, 0.1]], device=device, requires_grad=True)
    y = torch.tensor([0, 0], device=device)
    (g,) = torch.autograd.grad(L.hinge(z, y, reduction="sum"), z)
    assert (g[0] == 0).all() and (g[1] != 0).any()
    (g,) = torch.autograd.grad(L.cross_entropy(z, y, reduction="sum"), z)
    assert (g[0] != 0).all()


def test_focal_down_weights_easy_examples(device):
    z = torch.tensor([4.0, -1.0], device=device, dtype=torch.float64)  # an easy and a hard positive
    y = torch.ones(2, device=device, dtype=torch.float64)
    ce = L.binary_cross_entropy_with_logits(z, y, reduction="none")
    fl = L.focal(z, y, alpha=-1, gamma=2.0, reduction="none")
    ratio = fl / ce  # (1 - p_t)^2
    assert ratio[0] < 1e-3 and ratio[1] > 0.5


def test_cross_entropy_trains_softmax_regression_faster_than_squared_error_on_probabilities(device, one_thread):
    """Chapter 7: digits, linear model, SGD lr 0.3, same init and batches: CE ahead after one epoch."""
    from book.data import digits
    from book.optim import SGD
    from book.train import fit

    ds = digits(seed=0).to(device)

    def brier(out, target):
        return L.mse(torch.softmax(out, 1), F.one_hot(target, 10).to(out.dtype), reduction="none").sum(1).mean()

    acc = {}
    for name, loss_fn in {"ce": L.cross_entropy, "mse": brier}.items():
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 10).to(device)
        h = fit(model, SGD(model.parameters(), lr=0.3), loss_fn, ds.train, epochs=1, batch_size=32, val=ds.val,
                progress=False, generator=torch.Generator().manual_seed(0))
        acc[name] = h["val_acc"][-1]
    assert acc["ce"] > acc["mse"] + 0.1


def test_label_smoothing_lowers_confidence_on_digits(device, one_thread):
    """Chapter 7: smoothing with eps = 0.1 lowers the mean confidence by ~0.1 at about the same accuracy."""
    from book.data import digits
    from book.optim import Adam
    from book.train import fit

    ds = digits(seed=0).to(device)
    result = {}
    for eps in (0.0, 0.1):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).to(device)
        fit(net, Adam(net.parameters(), lr=3e-3), lambda o, t, eps=eps: L.cross_entropy(o, t, label_smoothing=eps),
            ds.train, epochs=8, batch_size=64, progress=False, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            p = torch.softmax(net(ds.val.X), 1)
        conf, pred = p.max(1)
        result[eps] = float(conf.mean()), float((pred == ds.val.y).float().mean())
    (c0, a0), (c1, a1) = result[0.0], result[0.1]
    assert c1 < c0 - 0.05 and c1 < a1 - 0.05  # lower confidence, below the accuracy
    assert abs(a1 - a0) < 0.03


def test_class_weights_move_the_threshold_not_the_ranking(device, one_thread):
    """Chapter 7: 1:20 imbalance, logistic regression: pos_weight raises minority recall at 0.5, the
    paper's focal alpha = 0.25 lowers it, and the threshold-free average precision barely moves."""
    from book.optim import Adam
    from book.train import fit

    def data(n_neg, n_pos, seed):
        g = gen(seed)
        X = torch.cat([torch.randn(n_neg, 2, generator=g), torch.randn(n_pos, 2, generator=g) + torch.tensor([2.5, 0.0])])
        return X.to(device), torch.cat([torch.zeros(n_neg), torch.ones(n_pos)]).to(device)

    (X, y), (Xt, yt) = data(2000, 100, 0), data(10000, 500, 1)

    def ap(s, y):
        hits = y[s.argsort(descending=True)]
        return float((hits.cumsum(0) / torch.arange(1, len(hits) + 1, device=device) * hits).sum() / hits.sum())

    out = {}
    pw = torch.tensor(20.0, device=device)
    for name, loss_fn in {
        "ce": lambda o, t: L.binary_cross_entropy_with_logits(o.squeeze(1), t),
        "weighted": lambda o, t: L.binary_cross_entropy_with_logits(o.squeeze(1), t, pos_weight=pw),
        "focal": lambda o, t: L.focal(o.squeeze(1), t),
    }.items():
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1).to(device)
        fit(model, Adam(model.parameters(), lr=0.05), loss_fn, (X, y), epochs=200, progress=False)
        with torch.no_grad():
            s = model(Xt).squeeze(1)
        out[name] = float(((s > 0) & (yt == 1)).sum() / (yt == 1).sum()), ap(s, yt)
    assert out["weighted"][0] > out["ce"][0] + 0.3
    assert out["focal"][0] < out["ce"][0]
    aps = [v[1] for v in out.values()]
    assert max(aps) - min(aps) < 0.02
