"""book.optim's Adafactor and Muon against torch.optim's, step for step, and against their papers' math.

Each optimizer runs beside its torch.optim twin on copies of the same parameters (two groups, a
noisy quadratic's gradients set directly), for 25 steps, in float32 and float64, on every
device. On a CPU the kernels repeat torch's operations in torch's order, so the parameters and
the state are equal bit for bit; on an accelerator a tolerance is allowed (stated at
``close``). Muon's Newton–Schulz iteration is also checked without torch: in float64 it must be
the scalar polynomial applied to the singular values, and its output's singular values must lie
in the band the iteration is known to reach.
"""

from __future__ import annotations

import copy
import doctest
import itertools

import numpy as np
import pytest
import torch

import book.optim as optim
import book.optim.frontier as frontier
from book.optim import functional as F

STEPS = 25


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny matrices: one CPU thread is as fast, and steadier on a shared machine (see conftest)."""


def make_params(shapes, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device, dtype).requires_grad_(True) for s in shapes]


def set_grads(params, t, skip=()):
    """The gradient of a noisy quadratic at step t: the same for every optimizer, different at each step."""
    g = torch.Generator().manual_seed(1000 + t)
    for i, p in enumerate(params):
        noise = torch.randn(p.shape, generator=g).to(p.device, p.dtype)
        p.grad = None if i in skip else (0.5 * (i + 1)) * p.detach() + noise


def run(opt, params, steps, start=0, skip=lambda t: ()):
    for t in range(start, start + steps):
        set_grads(params, t, skip(t))
        opt.step()


def max_diff(xs, ys) -> float:
    return max(float((x.detach() - y.detach()).abs().max()) if x.numel() else 0.0 for x, y in zip(xs, ys))


def close(xs, ys, device, dtype, atol=None):
    """Equal bit for bit on a CPU; elsewhere within float rounding (or ``atol``, for bfloat16 products)."""
    for x, y in zip(xs, ys):
        assert x.dtype == y.dtype and x.shape == y.shape and x.device == y.device
        if device.type == "cpu":
            assert torch.equal(x, y), float((x - y).abs().max())
        else:
            tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
            if atol is not None:
                tol = dict(rtol=0, atol=atol)
            torch.testing.assert_close(x, y, **tol)


def states(opt):
    """The per-parameter state as lists of (key, tensor), in parameter order."""
    s = opt.state_dict()["state"]
    return {i: sorted(s[i].items()) for i in s}


def assert_same_state(ours, theirs, device, dtype, atol=None):
    a, b = states(ours), states(theirs)
    assert a.keys() == b.keys()
    for i in a:
        assert [k for k, _ in a[i]] == [k for k, _ in b[i]], i
        close([v for _, v in a[i]], [v for _, v in b[i]], device, dtype, atol)


def assert_same_groups(ours, theirs):
    for g_ours, g_theirs in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert set(g_ours) == set(g_theirs)
        for key in g_ours:
            if key != "params":
                assert g_ours[key] == g_theirs[key], key


# ---------------------------------------------------------------------------
# Adafactor

ADAFACTOR_SHAPES = [(12, 20), (20,), (3, 4, 5), (8, 25), ()]  # a matrix, a vector, a 3-D tensor, a scalar
ADAFACTOR_CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(maximize=True),
    dict(lr=0.1, beta2_decay=-0.5, d=2.0),
    dict(lr=1e-3, eps=(1e-3, 1e-2), weight_decay=0.05),
    dict(eps=(0.0, 0.0)),
]


def adafactor_pair(case, device, dtype, shapes=ADAFACTOR_SHAPES):
    """Ours and torch's, each on its own copy of the parameters, in two groups (the second with other values)."""
    second = dict(lr=case.get("lr", 1e-2) / 2, beta2_decay=-0.6, d=1.5, weight_decay=case.get("weight_decay", 0) * 2)
    out = []
    for cls in (optim.Adafactor, torch.optim.Adafactor):
        params = make_params(shapes, device, dtype)
        out.append((cls([{"params": params[:3]}, {"params": params[3:], **second}], **case), params))
    return out


@pytest.mark.parametrize("case", ADAFACTOR_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()) or "defaults")
def test_adafactor_equals_torch(device, dtype, case):
    (ours, p_ours), (theirs, p_theirs) = adafactor_pair(case, device, dtype)
    start = [p.detach().clone() for p in p_theirs]
    run(ours, p_ours, STEPS)
    run(theirs, p_theirs, STEPS)
    assert all(not torch.equal(p, p0) for p, p0 in zip(p_theirs, start))  # every tensor moved
    close(p_ours, p_theirs, device, dtype)
    assert_same_state(ours, theirs, device, dtype)
    assert_same_groups(ours, theirs)


def test_adafactor_state_is_factored(device):
    """O(n + m) numbers for an n x m matrix (a batch of them for more dimensions); a full copy for a vector."""
    (ours, p_ours), (theirs, p_theirs) = adafactor_pair({}, device, torch.float32)
    run(ours, p_ours, 1)
    run(theirs, p_theirs, 1)
    expected = {
        (12, 20): {"row_var": (12, 1), "col_var": (1, 20)},
        (20,): {"variance": (20,)},
        (3, 4, 5): {"row_var": (3, 4, 1), "col_var": (3, 1, 5)},
        (8, 25): {"row_var": (8, 1), "col_var": (1, 25)},
        (): {"variance": ()},
    }
    for p, q in zip(p_ours, p_theirs):
        shapes = {k: tuple(v.shape) for k, v in ours.state[p].items() if k != "step"}
        assert shapes == expected[tuple(p.shape)]
        assert shapes == {k: tuple(v.shape) for k, v in theirs.state[q].items() if k != "step"}
    w = torch.zeros(300, 200, device=device, requires_grad=True)
    opt = optim.Adafactor([w])
    w.grad = torch.ones_like(w)
    opt.step()
    state_numbers = sum(v.numel() for k, v in opt.state[w].items() if k != "step")
    assert state_numbers == 300 + 200  # Adam would keep 2 * 60,000


def test_adafactor_factored_estimate_is_exact_for_rank_one_squares():
    """V = R C / mean(R) recovers g^2 when g^2 = u v^T: the first step is then alpha * sign(g)."""
    u, v = torch.tensor([1.0, 0.1, 3.0], dtype=torch.float64), torch.tensor([1.0, -2.0, 0.5, 4.0], dtype=torch.float64)
    g = torch.outer(u, v)
    p = torch.full((3, 4), 2.0, dtype=torch.float64)
    R, C, t = torch.zeros(3, 1, dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64), torch.tensor(0.0)
    F.adafactor(p, g, R, C, None, t, lr=1e-2)
    torch.testing.assert_close(R @ C / R.mean(), g**2, rtol=1e-14, atol=0)
    # alpha = max(eps2, RMS(p)) * min(lr, 1 / sqrt(1)) = 2 * 0.01; RMS(sign g) = 1, no clipping
    torch.testing.assert_close(p, 2.0 - 0.02 * g.sign(), rtol=1e-14, atol=0)


def test_adafactor_steps_are_relative_to_the_parameter_scale():
    """Scaling the parameters scales the steps; scaling the gradients does not change them (no floor reached)."""
    g = torch.Generator().manual_seed(3)
    p0 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    grads = [torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(10)]

    def trajectory(p_scale, g_scale):
        p = (p0 * p_scale).clone()
        R, C, t = torch.zeros(6, 1, dtype=torch.float64), torch.zeros(1, 5, dtype=torch.float64), torch.tensor(0.0)
        for grad in grads:
            F.adafactor(p, grad * g_scale, R, C, None, t, lr=0.1, eps=(1e-30, 1e-3))
        return p

    base = trajectory(1.0, 1.0)
    torch.testing.assert_close(trajectory(10.0, 1.0), 10.0 * base, rtol=1e-12, atol=0)
    torch.testing.assert_close(trajectory(1.0, 1e3), base, rtol=1e-12, atol=0)


def test_adafactor_relative_step_is_capped_by_lr_and_decay_uses_lr():
    """rho_t = min(lr, 1/sqrt(t)) (torch's departure: the paper caps at 0.01); decay theta *= 1 - lr * wd."""
    for lr, t_before, rho in [(1.0, 3, 0.5), (0.1, 3, 0.1), (1e-2, 0, 1e-2)]:
        p = torch.full((4, 4), 3.0, dtype=torch.float64)
        R, C = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64)
        F.adafactor(p, torch.ones(4, 4, dtype=torch.float64), R, C, None, torch.tensor(float(t_before)), lr=lr)
        torch.testing.assert_close(p, torch.full((4, 4), 3.0 - 3.0 * rho, dtype=torch.float64), rtol=1e-14, atol=0)
    p = torch.full((3,), 2.0, dtype=torch.float64)
    F.adafactor(p, torch.zeros(3, dtype=torch.float64), None, None, torch.zeros(3, dtype=torch.float64),
                torch.tensor(0.0), lr=0.1, weight_decay=0.5)
    # a zero gradient: the decay alone, by lr * weight_decay
    torch.testing.assert_close(p, torch.full((3,), 2.0 * (1 - 0.1 * 0.5), dtype=torch.float64))


def test_adafactor_update_clipping():
    """U = g / sqrt(v) is scaled down to RMS d when its RMS exceeds d (a stale, small v after 9 steps)."""
    alpha = 2.0 * (1 / 10**0.5)  # RMS(p) * min(lr = 1, 1 / sqrt(10)) at t = 10
    v_new = (1 - 10**-0.8) * 1e-4 + 10**-0.8 * 1.0  # beta2 v + (1 - beta2) g^2
    u = 1 / v_new**0.5  # RMS(U) = 2.51...
    for d, rms_step in [(1.0, alpha * 1.0), (2.0, alpha * 2.0), (3.0, alpha * u)]:
        p = torch.full((8,), 2.0, dtype=torch.float64)
        v = torch.full((8,), 1e-4, dtype=torch.float64)
        F.adafactor(p, torch.ones(8, dtype=torch.float64), None, None, v, torch.tensor(9.0), lr=1.0, d=d)
        assert float((2.0 - p).norm() / 8**0.5) == pytest.approx(rms_step, rel=1e-12)


def test_adafactor_parameters_without_grad_are_skipped(device):
    dtype = torch.float64
    runs = adafactor_pair(dict(weight_decay=0.1), device, dtype)
    skip = lambda t: (0,) if t % 3 == 0 else ()  # noqa: E731
    for opt, params in runs:
        frozen = torch.ones(3, device=device, dtype=dtype, requires_grad=True)
        opt.add_param_group({"params": [frozen]})
        run(opt, params, 12, skip=skip)
        assert frozen.grad is None and bool((frozen == 1).all())
    (ours, p_ours), (theirs, p_theirs) = runs
    close(p_ours, p_theirs, device, dtype)
    assert [float(ours.state[p]["step"]) for p in p_ours] == [8.0] + [12.0] * 4
    assert_same_state(ours, theirs, device, dtype)


@pytest.mark.parametrize("name", ["Adafactor", "Muon"])
def test_resume_from_state_dict_is_exact(device, dtype, name):
    make = ADAFACTOR_MAKE if name == "Adafactor" else MUON_MAKE
    reference = make["params"](device, dtype)
    ref_opt = make["ours"](reference)
    run(ref_opt, reference, 2 * 12)  # uninterrupted

    params = make["params"](device, dtype)
    opt = make["ours"](params)
    run(opt, params, 12)
    saved = copy.deepcopy(opt.state_dict())
    resumed = [p.detach().clone().requires_grad_(True) for p in params]
    resumed_opt = make["ours"](resumed, lr=0.5)
    resumed_opt.load_state_dict(saved)  # restores the lr and the state
    run(resumed_opt, resumed, 12, start=12)
    for p, q in zip(resumed, reference):
        assert torch.equal(p, q)
    for (_, a), (_, b) in zip(states(resumed_opt).items(), states(ref_opt).items()):
        assert all(k1 == k2 and torch.equal(x, y) for (k1, x), (k2, y) in zip(a, b))


@pytest.mark.parametrize("name", ["Adafactor", "Muon"])
def test_state_dicts_interchange_with_torch(device, name):
    """torch's state_dict continues in ours and ours in torch's, with the same numbers."""
    make, dtype = (ADAFACTOR_MAKE if name == "Adafactor" else MUON_MAKE), torch.float64
    for first, second in [(make["theirs"], make["ours"]), (make["ours"], make["theirs"])]:
        params = make["params"](device, dtype)
        opt = first(params)
        run(opt, params, 12)
        cont = [p.detach().clone().requires_grad_(True) for p in params]
        cont_opt = second(cont)
        cont_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        run(opt, params, 12, start=12)
        run(cont_opt, cont, 12, start=12)
        close(cont, params, device, dtype)
        assert_same_state(cont_opt, opt, device, dtype)


def test_adafactor_step_counter_is_torchs():
    for default in (torch.float32, torch.float64):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            (ours, p_ours), (theirs, p_theirs) = adafactor_pair({}, torch.device("cpu"), torch.float32)
            run(ours, p_ours, 3)
            run(theirs, p_theirs, 3)
        finally:
            torch.set_default_dtype(previous)
        for p, q in zip(p_ours, p_theirs):
            a, b = ours.state[p]["step"], theirs.state[q]["step"]
            assert a.dtype == b.dtype == default and a.shape == () and a.device.type == "cpu" and float(a) == 3.0


def test_adafactor_tensor_lr_equals_torch():
    """A 0-dim tensor lr flows through the same Python expressions as torch's (tensor arithmetic included)."""
    (ours, p_ours), (theirs, p_theirs) = [
        (cls(ps, lr=torch.tensor(0.05), weight_decay=0.1), ps)
        for cls, ps in [(optim.Adafactor, make_params(ADAFACTOR_SHAPES, "cpu", torch.float32)),
                        (torch.optim.Adafactor, make_params(ADAFACTOR_SHAPES, "cpu", torch.float32))]
    ]
    run(ours, p_ours, 10)
    run(theirs, p_theirs, 10)
    close(p_ours, p_theirs, torch.device("cpu"), torch.float32)


def test_adafactor_foreach_runs_the_same_kernel():
    """foreach is kept in the groups as torch does, and either value runs the single-tensor kernel."""
    a, b = make_params(ADAFACTOR_SHAPES, "cpu", torch.float32), make_params(ADAFACTOR_SHAPES, "cpu", torch.float32)
    o1, o2 = optim.Adafactor(a, foreach=True), optim.Adafactor(b, foreach=False)
    assert o1.defaults["foreach"] is True and optim.Adafactor(a).defaults["foreach"] is None
    run(o1, a, 5)
    run(o2, b, 5)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


# ---------------------------------------------------------------------------
# Muon

MUON_SHAPES = [(12, 20), (20, 12), (16, 16)]  # wide, tall (transposed inside), square
MUON_CASES = [
    dict(momentum=m, nesterov=n, adjust_lr_fn=f, weight_decay=w)
    for (m, n), f, w in itertools.product(
        [(0.95, True), (0.9, False)], [None, "original", "match_rms_adamw"], [0.0, 0.1]
    )
]


def muon_pair(case, device, dtype, shapes=MUON_SHAPES, lr=0.02, **ours_kw):
    second = dict(lr=lr / 2, momentum=0.8, weight_decay=case.get("weight_decay", 0.1) * 2)
    out = []
    for cls, kw in [(optim.Muon, ours_kw), (torch.optim.Muon, {})]:
        params = make_params(shapes, device, dtype)
        out.append((cls([{"params": params[:2]}, {"params": params[2:], **second}], lr=lr, **case, **kw), params))
    return out


def muon_step_size(lr, shapes=MUON_SHAPES, fn="match_rms_adamw"):
    """The largest adjusted learning rate eta' among the shapes (an upper bound for either rule)."""
    return max(max(F.muon_lr(lr, s, None), F.muon_lr(lr, s, fn)) for s in shapes)


def bf16_atol(steps, lr):
    """On an accelerator, allow one bfloat16 rounding (2^-8 relative) of every update entry per step."""
    return steps * muon_step_size(lr) * 2.0**-8


@pytest.mark.parametrize("case", MUON_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_muon_equals_torch(device, dtype, case):
    (ours, p_ours), (theirs, p_theirs) = muon_pair(case, device, dtype)
    start = [p.detach().clone() for p in p_theirs]
    run(ours, p_ours, STEPS)
    run(theirs, p_theirs, STEPS)
    assert all(not torch.equal(p, p0) for p, p0 in zip(p_theirs, start))
    atol = bf16_atol(STEPS, 0.02)
    close(p_ours, p_theirs, device, dtype, atol=atol)
    assert_same_state(ours, theirs, device, dtype, atol=atol)
    assert_same_groups(ours, theirs)
    assert all(set(s) == {"momentum_buffer"} for s in theirs.state.values())


def test_muon_in_full_precision_differs_from_torch_by_bfloat16_rounding(device, dtype):
    """ns_dtype=None: the iteration in the parameters' dtype. It departs from torch's bfloat16 iteration
    by about 1-2% of each update: after 25 steps, by less than 5% of one step per step."""
    case = dict(weight_decay=0.1)
    (ours, p_ours), (theirs, p_theirs) = muon_pair(case, device, dtype, ns_dtype=None)
    run(ours, p_ours, STEPS)
    run(theirs, p_theirs, STEPS)
    diff, step = max_diff(p_ours, p_theirs), muon_step_size(0.02)
    assert 0 < diff < 0.05 * step * STEPS
    assert diff > 1e-4 * step  # not float rounding: bfloat16's


def test_newton_schulz_bfloat16_error_is_one_to_two_percent():
    """The measured size of torch's bfloat16 rounding, relative to the same iteration in float64."""
    g = torch.Generator().manual_seed(5)
    for shape in [(12, 20), (20, 12), (64, 128)]:
        G = torch.randn(shape, generator=g, dtype=torch.float64)
        exact = F.newton_schulz(G, dtype=None)
        rounded = F.newton_schulz(G)
        assert rounded.dtype == torch.bfloat16 and exact.dtype == torch.float64
        rel = float((rounded.double() - exact).norm() / exact.norm())
        assert 0.003 < rel < 0.03, rel


def quintic(x, steps=5, coefficients=F.MUON_COEFFICIENTS):
    a, b, c = coefficients
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (16, 16), (5, 40)])
def test_newton_schulz_is_the_polynomial_of_the_singular_values(device, shape):
    """In float64, NS_5(G) = U p^(5)(S / ||G||_F) V^T with p(s) = a s + b s^3 + c s^5: the math, not torch."""
    G = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(device)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    expected = U @ torch.diag(quintic(S / G.norm())) @ Vh
    torch.testing.assert_close(F.newton_schulz(G, dtype=None), expected, rtol=0, atol=1e-12)


def test_quintic_band():
    """Five steps of p send every s in [0.0021, 1] into [0.682, 1.202] (the band the docstrings quote)."""
    s = np.linspace(0.0021, 1.0, 200_001)
    y = quintic(s)
    assert 0.6818 < y.min() < 0.682 and 1.2023 < y.max() < 1.2024
    assert quintic(np.linspace(0.01, 1.0, 100_001)).max() < 1.135
    assert quintic(np.array([1e-4]))[0] < 0.05  # too small a singular value stays small


@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (64, 128), (128, 64)])
def test_newton_schulz_output_is_nearly_orthogonal(device, shape):
    """torch's default (bfloat16) output: singular values within the quintic's band, widened by bfloat16."""
    G = torch.randn(shape, generator=torch.Generator().manual_seed(11)).to(device)
    S = torch.linalg.svdvals(G.double())
    assert float(S.min() / G.double().norm()) > 0.0021  # every singular value is in the band's domain
    O = F.newton_schulz(G)
    s = torch.linalg.svdvals(O.double())
    assert O.shape == G.shape
    assert 0.66 < float(s.min()) and float(s.max()) < 1.22, (float(s.min()), float(s.max()))
    # the singular vectors are G's: O^T G is symmetric positive definite (O = U S' V^T, G = U S V^T)
    M = O.double().T @ G.double() if shape[0] >= shape[1] else G.double() @ O.double().T
    torch.testing.assert_close(M, M.T, rtol=0, atol=0.03 * float(M.abs().max()))
    assert float(torch.linalg.eigvalsh((M + M.T) / 2).min()) > 0


@pytest.mark.parametrize("ns_dtype", [torch.bfloat16, None], ids=["bfloat16", "full"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_kernel_first_step(ns_dtype, nesterov):
    """B_1 = (1 - mu) g (an average, not mu B + g), untouched by Newton-Schulz; the step is lr' * NS(direction)."""
    g = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    p, buf = torch.zeros(6, 3, dtype=torch.float64), torch.zeros(6, 3, dtype=torch.float64)
    O = F.muon(p, g, buf, lr=0.1, weight_decay=0.5, momentum=0.9, nesterov=nesterov, ns_dtype=ns_dtype)
    torch.testing.assert_close(buf, 0.1 * g, rtol=1e-15, atol=0)
    direction = g.lerp(buf, 0.9) if nesterov else buf  # (1 - mu) g + mu B = 0.19 g, or B = 0.1 g
    torch.testing.assert_close(O, F.newton_schulz(direction, dtype=ns_dtype), rtol=0, atol=0)
    torch.testing.assert_close(p, -F.muon_lr(0.1, (6, 3)) * O.double(), rtol=1e-15, atol=0)  # tall: lr * sqrt(2)


def test_muon_lr_adjustments():
    assert F.muon_lr(0.1, (40, 10)) == pytest.approx(0.2) and F.muon_lr(0.1, (10, 40)) == 0.1
    assert F.muon_lr(0.1, (40, 10), "original") == F.muon_lr(0.1, (40, 10))
    assert F.muon_lr(0.1, (10, 400), "match_rms_adamw") == pytest.approx(0.1 * 0.2 * 20)
    with pytest.raises(ValueError, match="Adjust learning rate function foo is not supported"):
        F.muon_lr(0.1, (3, 3), "foo")


def test_muon_state_and_options():
    (ours, p_ours), _ = muon_pair(dict(), torch.device("cpu"), torch.float32)
    run(ours, p_ours, 1)
    assert all(list(ours.state[p]) == ["momentum_buffer"] and ours.state[p]["momentum_buffer"].shape == p.shape
               for p in p_ours)
    assert ours.ns_dtype == torch.bfloat16 and "ns_dtype" not in ours.param_groups[0]
    assert "ns_dtype" not in ours.state_dict()["param_groups"][0]
    assert optim.Muon(p_ours, ns_dtype=None).ns_dtype is None
    with pytest.raises(TypeError, match="ns_dtype must be a floating torch.dtype or None"):
        optim.Muon(p_ours, ns_dtype="bfloat16")
    defaults = {k: v for k, v in optim.Muon(p_ours).defaults.items()}
    assert defaults == torch.optim.Muon(p_ours).defaults


def test_muon_parameters_without_grad_are_skipped(device):
    dtype = torch.float64
    runs = muon_pair(dict(weight_decay=0.1), device, dtype)
    skip = lambda t: (0,) if t % 3 == 0 else ()  # noqa: E731
    for opt, params in runs:
        frozen = torch.ones(3, 3, device=device, dtype=dtype, requires_grad=True)
        opt.add_param_group({"params": [frozen]})
        run(opt, params, 12, skip=skip)
        assert frozen.grad is None and bool((frozen == 1).all())
    (ours, p_ours), (theirs, p_theirs) = runs
    close(p_ours, p_theirs, device, dtype, atol=bf16_atol(12, 0.02))


def test_muon_tensor_lr_equals_torch():
    runs = [(cls(ps, lr=torch.tensor(0.02)), ps)
            for cls, ps in [(optim.Muon, make_params(MUON_SHAPES, "cpu", torch.float32)),
                            (torch.optim.Muon, make_params(MUON_SHAPES, "cpu", torch.float32))]]
    for opt, ps in runs:
        run(opt, ps, 5)
    close(runs[0][1], runs[1][1], torch.device("cpu"), torch.float32)


def test_muon_descends_with_a_closure(device):
    params = make_params(MUON_SHAPES, device, torch.float64)
    opt = optim.Muon(params, lr=0.2, weight_decay=0.0)
    target = [torch.ones_like(p) for p in params]

    def closure():
        opt.zero_grad()
        loss = sum(((p - c) ** 2).sum() for p, c in zip(params, target))
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert opt.step() is None
    opt.zero_grad()
    assert all(p.grad is None for p in params)


# makers for the shared resume and interchange tests
ADAFACTOR_MAKE = dict(
    params=lambda device, dtype: make_params(ADAFACTOR_SHAPES, device, dtype),
    ours=lambda ps, lr=0.05: optim.Adafactor(
        [{"params": ps[:3]}, {"params": ps[3:], "d": 1.5}], lr=lr, weight_decay=0.1
    ),
    theirs=lambda ps, lr=0.05: torch.optim.Adafactor(
        [{"params": ps[:3]}, {"params": ps[3:], "d": 1.5}], lr=lr, weight_decay=0.1
    ),
)
MUON_MAKE = dict(
    params=lambda device, dtype: make_params(MUON_SHAPES, device, dtype),
    ours=lambda ps, lr=0.02: optim.Muon([{"params": ps[:2]}, {"params": ps[2:], "momentum": 0.9}], lr=lr),
    theirs=lambda ps, lr=0.02: torch.optim.Muon([{"params": ps[:2]}, {"params": ps[2:], "momentum": 0.9}], lr=lr),
)


# ---------------------------------------------------------------------------
# Validation, in torch's words

ERRORS = [
    ("Adafactor", dict(lr=-1.0), r"^Learning rate should be >= 0 but is: -1.0$"),
    ("Adafactor", dict(lr=float("nan")), r"^Learning rate should be >= 0 but is: nan$"),
    ("Adafactor", dict(lr=torch.tensor([0.1, 0.2])), r"^Tensor lr must be 1-element$"),
    ("Adafactor", dict(beta2_decay=0.5), r"^beta2_decay should be <= 0 but is: 0.5$"),
    ("Adafactor", dict(eps=(-1e-3, 1e-3)), r"^epsilon1 should be >= 0 but is: -0.001$"),
    ("Adafactor", dict(eps=(None, -1.0)), r"^epsilon2 should be >= 0 but is: -1.0$"),
    ("Adafactor", dict(d=0.5), r"^Clipping threshold d should be >= 1 but is: 0.5$"),
    ("Adafactor", dict(weight_decay=-0.1), r"^weight_decay should be >= 0 but is: -0.1$"),
    ("Muon", dict(lr=-0.02), r"^Learning rate should be >= 0 but is: -0.02$"),
    ("Muon", dict(lr=torch.tensor([0.1, 0.2])), r"^Tensor lr must be 1-element$"),
    ("Muon", dict(momentum=-0.9), r"^momentum should be >= 0 but is: -0.9$"),
    ("Muon", dict(weight_decay=-0.1), r"^weight decay should be >= 0 but is: -0.1$"),
    ("Muon", dict(adjust_lr_fn="spectral"), r"^Adjust learning rate function spectral is not supported$"),
]
CLASSES = {"Adafactor": (optim.Adafactor, torch.optim.Adafactor), "Muon": (optim.Muon, torch.optim.Muon)}


@pytest.mark.parametrize("name,kwargs,match", ERRORS)
def test_invalid_hyperparameters(name, kwargs, match):
    for cls in CLASSES[name]:  # ours first, then torch's: the same words
        with pytest.raises(ValueError, match=match):
            cls([torch.zeros(2, 2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("name", list(CLASSES))
def test_empty_sparse_and_complex_are_refused(name):
    for cls in CLASSES[name]:
        with pytest.raises(ValueError, match="empty parameter list"):
            cls([])
        p = torch.zeros(3, 3, requires_grad=True)
        opt = cls([p])
        p.grad = torch.zeros(3, 3).to_sparse()
        with pytest.raises(RuntimeError, match=f"^{name} does not support sparse gradients$"):
            opt.step()
        z = torch.zeros(3, 3, dtype=torch.complex64, requires_grad=True)
        opt = cls([z])
        z.grad = torch.zeros_like(z)
        with pytest.raises(RuntimeError, match=f"^{name} does not support complex parameters$"):
            opt.step()


def test_muon_refuses_tensors_that_are_not_matrices():
    message = r"^Muon only supports 2D parameters whereas we found a parameter with size: torch.Size\(\[3\]\)$"
    for cls in CLASSES["Muon"]:
        with pytest.raises(ValueError, match=message):
            cls([torch.zeros(2, 2, requires_grad=True), torch.zeros(3, requires_grad=True)])
    # a group added later: ours refuses it at once (and keeps its groups); torch fails at the next step
    ours = optim.Muon([torch.zeros(2, 2, requires_grad=True)])
    theirs = torch.optim.Muon([torch.zeros(2, 2, requires_grad=True)])
    v = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=message):
        ours.add_param_group({"params": [v]})
    assert len(ours.param_groups) == 1
    theirs.add_param_group({"params": [v]})
    v.grad = torch.zeros(3)
    with pytest.raises(ValueError, match="^Param gradient must be a 2D matrix$"):
        theirs.step()


@pytest.mark.parametrize("kwargs,match", [
    (dict(ns_steps=100), r"^Number of steps must be less than 100 for computational efficiency$"),
    (dict(ns_coefficients=(3.0, -3.0)), r"^Coefficients must be a tuple of exactly 3 values$"),
])
def test_muon_newton_schulz_settings_are_checked_at_the_step(kwargs, match):
    for cls in CLASSES["Muon"]:
        p = torch.zeros(2, 3, requires_grad=True)
        opt = cls([p], **kwargs)  # accepted at construction, as torch
        p.grad = torch.ones(2, 3)
        with pytest.raises(ValueError, match=match):
            opt.step()
    with pytest.raises(ValueError, match="^Input tensor gradient must be a 2D matrix$"):
        F.newton_schulz(torch.ones(2, 2, 2))


# ---------------------------------------------------------------------------
# The docstrings' examples run


def test_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    names = {"adafactor", "newton_schulz", "muon_lr", "muon"}
    for module, keep in [(frontier, lambda name: True), (F, lambda name: name in names)]:
        for test in finder.find(module, globs={"torch": torch, **vars(module)}):
            if keep(test.name.rsplit(".", 1)[-1]):
                runner.run(test)
    assert runner.failures == 0 and runner.tries >= 20
