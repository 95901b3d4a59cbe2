"""LARS and LAMB against their papers' algorithms, step for step.

There is no ``torch.optim`` twin to compare with, so each paper's pseudo-code is written out
below in plain per-tensor torch (``lars_algorithm_1``, ``lamb_algorithm_2``), independently of
:mod:`book.optim.functional`, and the optimizers must follow it for 20 steps on a problem whose
tensors have very different sizes and gradient scales (the situation the trust ratio is for).
Where the conventions agree, the optimizers are also compared with ``torch.optim`` (an excluded
tensor steps like SGD or Adam; ``trust=False`` like SGD with weight decay or AdamW) and with
the ``torch-optimizer`` package's ``LARS`` and ``Lamb`` (skipped when it is not installed).
"""

from __future__ import annotations

import copy
import doctest
import itertools
import math
import re

import pytest
import torch

import book.optim as optim
import book.optim.large_batch as large_batch
from book.optim import functional as F

# ---------------------------------------------------------------------------
# The problem: five tensors of different shapes, norms and gradient scales

SHAPES = [(6, 5), (5,), (4, 3, 2), (4,), (3, 6)]
SCALES = [3.0, 0.5, 0.05, 1.0, 0.3]  # initial entries ~ N(0, scale^2): norms ~16, 1.1, 0.24, 2, 1.3
CURVATURES = [1.0, 10.0, 100.0, 0.1, 0.01]  # gradient scales differ by 10^4 across tensors


def initial_values(dtype, device="cpu"):
    g = torch.Generator().manual_seed(0)
    return [(s * torch.randn(shape, generator=g, dtype=torch.float64)).to(device, dtype) for shape, s in zip(SHAPES, SCALES)]


def gradients(values, t):
    """The gradient at step t of a noisy quadratic, sum_i c_i / 2 ||w_i - 1||^2 + noise: a function of the values."""
    g = torch.Generator().manual_seed(1000 + t)
    out = []
    for w, c in zip(values, CURVATURES):
        noise = torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.device, w.dtype)
        out.append(c * (w - 1.0) + 0.5 * c * noise)
    return out


def make_params(dtype, device="cpu"):
    return [w.clone().requires_grad_(True) for w in initial_values(dtype, device)]


def set_grads(params, t, skip=()):
    grads = gradients([p.detach() for p in params], t)
    for i, (p, g) in enumerate(zip(params, grads)):
        p.grad = None if i in skip else g


def run(opt, params, steps, start=0, skip=lambda t: ()):
    for t in range(start, start + steps):
        set_grads(params, t, skip(t))
        opt.step()


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)


GROUP_OF = [0, 0, 0, 1, 1]  # tensors 0-2 in the first group, 3-4 in the second


def two_groups(params, second):
    return [{"params": params[:3]}, {"params": params[3:], **second}]


# ---------------------------------------------------------------------------
# The papers' algorithms, written out from their pseudo-code (one tensor = one layer)


def lars_algorithm_1(values, steps, hyper):
    """You, Gitman & Ginsburg (2017), Algorithm 1; ``hyper[i]`` holds tensor i's hyperparameters.

    v_{t+1} = m v_t + gamma lambda (g_t + beta w_t), w_{t+1} = w_t - v_{t+1}, with the local
    rate lambda = eta ||w|| / (||g|| + beta ||w||); lambda = 1 where a norm is zero (the
    implementations' rule) and for excluded tensors, which also have no weight decay.
    """
    w = [x.clone() for x in values]
    v = [torch.zeros_like(x) for x in w]
    local = [None] * len(w)
    for t in range(steps):
        g = gradients(w, t)
        for i, h in enumerate(hyper):
            gamma, m, eta = h["lr"], h["momentum"], h["trust_coefficient"]
            excluded = h["exclude_1d"] and w[i].dim() <= 1
            beta = 0.0 if excluded else h["weight_decay"]
            w_norm, g_norm = float(torch.norm(w[i])), float(torch.norm(g[i]))
            if excluded or not h["trust"] or w_norm == 0 or g_norm == 0:
                local[i] = 1.0
            else:
                local[i] = eta * w_norm / (g_norm + beta * w_norm + h["eps"])
            v[i] = m * v[i] + gamma * local[i] * (g[i] + beta * w[i])
            w[i] = w[i] - v[i]
    return w, v, local


def lamb_algorithm_2(values, steps, hyper):
    """You et al. (2019/2020), Algorithm 2; ``hyper[i]`` holds tensor i's hyperparameters.

    m, v Adam's moments, bias-corrected (optionally); r = m / (sqrt(v) + eps);
    x <- x - eta phi(||x||) / ||r + lambda x|| (r + lambda x), phi(z) = min(max(z, lo), hi).
    """
    x = [w.clone() for w in values]
    m = [torch.zeros_like(w) for w in x]
    v = [torch.zeros_like(w) for w in x]
    ratios = [None] * len(x)
    for t in range(1, steps + 1):
        g = gradients(x, t - 1)
        for i, h in enumerate(hyper):
            beta1, beta2 = h["betas"]
            excluded = h["exclude_1d"] and x[i].dim() <= 1
            lam = 0.0 if excluded else h["weight_decay"]
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            if h["bias_correction"]:
                m_hat, v_hat = m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)
            else:
                m_hat, v_hat = m[i], v[i]
            r = m_hat / (torch.sqrt(v_hat) + h["eps"])
            u = r + lam * x[i]
            x_norm, u_norm = float(torch.norm(x[i])), float(torch.norm(u))
            if excluded or not h["trust"] or x_norm == 0 or u_norm == 0:
                ratios[i] = 1.0
            else:
                phi = x_norm if h["clamp"] is None else min(max(x_norm, h["clamp"][0]), h["clamp"][1])
                ratios[i] = phi / u_norm
            x[i] = x[i] - h["lr"] * ratios[i] * u
    return x, m, v, ratios


LARS_DEFAULTS = dict(lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0, exclude_1d=True, trust=True)
LAMB_DEFAULTS = dict(
    lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, bias_correction=True, clamp=(0.0, 10.0),
    exclude_1d=True, trust=True,
)


def per_tensor(defaults, case, second):
    """Each tensor's hyperparameters: the defaults, the case's, and the second group's overrides."""
    first = {**defaults, **case}
    return [first if GROUP_OF[i] == 0 else {**first, **second} for i in range(len(SHAPES))]


# ---------------------------------------------------------------------------
# Equal to the papers' algorithms


LARS_GRID = dict(momentum=[0.0, 0.9], weight_decay=[0.0, 0.01], exclude_1d=[True, False])
LAMB_GRID = dict(
    bias_correction=[True, False], clamp=[(0.0, 10.0), None, (0.5, 2.0)], weight_decay=[0.0, 0.1], exclude_1d=[True, False]
)


def grid(table):
    keys = list(table)
    return [
        pytest.param(dict(zip(keys, values)), id="-".join(f"{k}{v}" for k, v in zip(keys, values)))
        for values in itertools.product(*table.values())
    ]


@pytest.mark.parametrize("case", grid(LARS_GRID))
def test_lars_equals_algorithm_1(device, dtype, case):
    case = dict(case, lr=0.5, trust_coefficient=0.02)
    second = dict(lr=0.2, trust_coefficient=0.05, eps=1e-3)  # a second group with its own rates
    params = make_params(dtype, device)
    opt = optim.LARS(two_groups(params, second), **case)
    run(opt, params, 20)
    w, v, local = lars_algorithm_1(initial_values(dtype, device), 20, per_tensor(LARS_DEFAULTS, case, second))
    for i, p in enumerate(params):
        assert p.dtype == dtype and p.device.type == device.type
        assert not torch.allclose(p, initial_values(dtype, device)[i])  # it moved
        torch.testing.assert_close(p.detach(), w[i], **tolerance(dtype))
        state = opt.state[p]
        torch.testing.assert_close(float(state["trust_ratio"]), local[i], rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)
        if case["momentum"]:
            torch.testing.assert_close(state["momentum_buffer"], v[i], **tolerance(dtype))
        else:
            assert "momentum_buffer" not in state
    excluded_ratios = [float(opt.state[p]["trust_ratio"]) for p in params if p.dim() <= 1]
    assert (excluded_ratios == [1.0, 1.0]) == case["exclude_1d"]


@pytest.mark.parametrize("case", grid(LAMB_GRID))
def test_lamb_equals_algorithm_2(device, dtype, case):
    case = dict(case, lr=0.01)
    second = dict(lr=0.003, betas=(0.8, 0.99), eps=1e-4)
    params = make_params(dtype, device)
    opt = optim.LAMB(two_groups(params, second), **case)
    run(opt, params, 20)
    x, m, v, ratios = lamb_algorithm_2(initial_values(dtype, device), 20, per_tensor(LAMB_DEFAULTS, case, second))
    for i, p in enumerate(params):
        assert p.dtype == dtype and p.device.type == device.type
        assert not torch.allclose(p, initial_values(dtype, device)[i])
        torch.testing.assert_close(p.detach(), x[i], **tolerance(dtype))
        state = opt.state[p]
        assert set(state) == {"step", "exp_avg", "exp_avg_sq", "trust_ratio"}
        assert float(state["step"]) == 20.0 and state["step"].device.type == "cpu"
        torch.testing.assert_close(state["exp_avg"], m[i], **tolerance(dtype))
        torch.testing.assert_close(state["exp_avg_sq"], v[i], **tolerance(dtype))
        torch.testing.assert_close(float(state["trust_ratio"]), ratios[i], rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)


def test_the_clamp_binds_on_this_problem():
    """The LAMB grid above exercises phi: tensor 0's norm is above 10 and tensor 2's below 0.5."""
    norms = [float(w.norm()) for w in initial_values(torch.float64)]
    assert norms[0] > 10 and norms[2] < 0.5


# ---------------------------------------------------------------------------
# Excluded tensors and trust=False are torch.optim's SGD, Adam and AdamW


def test_excluded_and_untrusted_tensors_step_like_torch_optim():
    """LARS: a 1-D tensor steps as SGD(momentum) without decay; a trust=False group as SGD with
    weight decay (the paper's buffer is lr times torch's: the same iterates at a constant lr).
    LAMB: a 1-D tensor steps as Adam; a trust=False group as AdamW."""
    dtype = torch.float64
    for ours_kw, torch_1d, torch_2d in [
        (
            dict(cls=optim.LARS, lr=0.1, momentum=0.9, weight_decay=0.05),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.05),
        ),
        (
            dict(cls=optim.LAMB, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
            lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
            lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
        ),
    ]:
        kw = dict(ours_kw)
        cls = kw.pop("cls")
        ours = make_params(dtype)
        opt = cls([{"params": [ours[1], ours[3]]}, {"params": [ours[0], ours[2], ours[4]], "trust": False}], **kw)
        theirs = make_params(dtype)
        t1, t2 = torch_1d([theirs[1], theirs[3]]), torch_2d([theirs[0], theirs[2], theirs[4]])
        for t in range(20):
            set_grads(ours, t)
            opt.step()
            set_grads(theirs, t)
            t1.step()
            t2.step()
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
        assert all(float(s["trust_ratio"]) == 1.0 for s in opt.state.values())


def test_exclude_1d_false_adapts_1d_tensors():
    for cls in (optim.LARS, optim.LAMB):
        params = make_params(torch.float64)
        opt = cls(params, exclude_1d=False)
        run(opt, params, 3)
        assert all(float(opt.state[p]["trust_ratio"]) != 1.0 for p in params)


# ---------------------------------------------------------------------------
# Edge cases: zero weights, zero gradients


def test_lars_zero_weights_and_zero_gradients_take_ratio_one():
    w0 = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)  # a zero-initialized layer
    w1 = torch.full((3, 4), 2.0, dtype=torch.float64, requires_grad=True)  # one with no gradient signal
    opt = optim.LARS([w0, w1], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    g = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
    w0.grad, w1.grad = g.clone(), torch.zeros(3, 4, dtype=torch.float64)
    opt.step()
    assert float(opt.state[w0]["trust_ratio"]) == 1.0 and float(opt.state[w1]["trust_ratio"]) == 1.0
    torch.testing.assert_close(w0.detach(), -0.5 * g)  # w - gamma * 1 * (g + beta * 0)
    torch.testing.assert_close(w1.detach(), torch.full((3, 4), 2.0 - 0.5 * 0.1 * 2.0, dtype=torch.float64))
    w0.grad.zero_()  # now w0 != 0 and its gradient is zero: ratio 1 again, and nothing blows up
    opt.step()
    assert float(opt.state[w0]["trust_ratio"]) == 1.0
    assert all(torch.isfinite(p).all() for p in (w0, w1))
    both_zero = torch.zeros(5, 2, requires_grad=True)
    opt = optim.LARS([both_zero], lr=0.5, weight_decay=0.0, eps=0.0)  # 0 / 0 must not appear
    both_zero.grad = torch.zeros(5, 2)
    opt.step()
    assert float(opt.state[both_zero]["trust_ratio"]) == 1.0 and not both_zero.any()


def test_lamb_zero_weights_and_zero_updates_take_ratio_one():
    x0 = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    opt = optim.LAMB([x0], lr=0.1, weight_decay=0.1, clamp=(0.5, 10.0))  # phi(0) = 0.5 would say otherwise
    g = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
    x0.grad = g
    opt.step()
    assert float(opt.state[x0]["trust_ratio"]) == 1.0
    torch.testing.assert_close(x0.detach(), -0.1 * g / (g.abs() + 1e-6))  # r = mhat / (sqrt(vhat) + eps) at t = 1
    # a zero gradient and no weight decay: u = 0, ratio 1, nothing moves
    x1 = torch.full((2, 3), 2.0, dtype=torch.float64, requires_grad=True)
    opt = optim.LAMB([x1], lr=0.1, weight_decay=0.0)
    x1.grad = torch.zeros(2, 3, dtype=torch.float64)
    opt.step()
    assert float(opt.state[x1]["trust_ratio"]) == 1.0 and torch.equal(x1.detach(), torch.full((2, 3), 2.0, dtype=torch.float64))
    # a zero gradient with weight decay: u = lambda x, a step of length lr * phi(||x||) towards 0
    opt = optim.LAMB([x1], lr=0.1, weight_decay=0.5, clamp=None)
    opt.step()
    norm = math.sqrt(6) * 2.0
    torch.testing.assert_close(float(opt.state[x1]["trust_ratio"]), norm / (0.5 * norm))
    torch.testing.assert_close(float(x1.detach().norm()), norm * (1 - 0.1))


# ---------------------------------------------------------------------------
# The Optimizer interface: resume, closure, skipped parameters, errors


RICH = {
    "LARS": (optim.LARS, dict(lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02), dict(lr=0.2)),
    "LAMB": (optim.LAMB, dict(lr=0.01, weight_decay=0.1, clamp=(0.1, 5.0)), dict(lr=0.003, betas=(0.8, 0.99))),
}


@pytest.mark.parametrize("name", list(RICH))
def test_resume_from_state_dict_is_exact(dtype, name):
    cls, case, second = RICH[name]
    reference = make_params(dtype)
    ref_opt = cls(two_groups(reference, second), **case)
    run(ref_opt, reference, 40)  # uninterrupted

    params = make_params(dtype)
    opt = cls(two_groups(params, second), **case)
    run(opt, params, 20)
    saved = copy.deepcopy(opt.state_dict())
    resumed = [p.detach().clone().requires_grad_(True) for p in params]
    resumed_opt = cls(two_groups(resumed, {}), lr=1.0)  # other hyperparameters: the state_dict restores them
    resumed_opt.load_state_dict(saved)
    del params, opt
    run(resumed_opt, resumed, 20, start=20)
    for p, q in zip(resumed, reference):
        assert torch.equal(p, q)
    s1, s2 = resumed_opt.state_dict(), ref_opt.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i in s2["state"]:
        assert s1["state"][i].keys() == s2["state"][i].keys()
        for key in s2["state"][i]:
            assert torch.equal(s1["state"][i][key], s2["state"][i][key]), (i, key)


@pytest.mark.parametrize("name", list(RICH))
def test_step_with_closure(name):
    cls, case, _ = RICH[name]
    params = make_params(torch.float64)
    twin = make_params(torch.float64)
    opt, twin_opt = cls(params, **case), cls(twin, **case)
    target = [torch.ones_like(p) for p in params]

    def closure():
        opt.zero_grad()
        loss = sum(((p - t) ** 2).sum() for p, t in zip(params, target))
        loss.backward()
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(5)]
    for _ in range(5):
        twin_opt.zero_grad()
        sum(((p - t) ** 2).sum() for p, t in zip(twin, target)).backward()
        assert twin_opt.step() is None
    assert losses[-1] < losses[0]
    for p, q in zip(params, twin):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", list(RICH))
def test_parameters_without_grad_are_skipped(name):
    cls, case, _ = RICH[name]
    params = make_params(torch.float64)
    frozen = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    opt = cls([{"params": params}, {"params": [frozen]}], **case)
    run(opt, params, 12, skip=lambda t: (0,) if t % 3 == 0 else ())
    assert frozen.grad is None and not frozen.any() and frozen not in opt.state
    if name == "LAMB":
        assert [float(opt.state[p]["step"]) for p in params] == [8.0, 12.0, 12.0, 12.0, 12.0]


@pytest.mark.parametrize("name", list(RICH))
def test_sparse_gradients_are_refused(name):
    cls, case, _ = RICH[name]
    p = torch.ones(4, 2, requires_grad=True)
    opt = cls([p], **case)
    p.grad = torch.ones(4, 2).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


INVALID = [
    (optim.LARS, dict(lr=-0.1), "Invalid learning rate: -0.1"),
    (optim.LARS, dict(momentum=-0.5), "Invalid momentum value: -0.5"),
    (optim.LARS, dict(weight_decay=-1e-4), "Invalid weight_decay value: -0.0001"),
    (optim.LARS, dict(trust_coefficient=-1e-3), "Invalid trust_coefficient value: -0.001"),
    (optim.LARS, dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
    (optim.LAMB, dict(lr=-1e-3), "Invalid learning rate: -0.001"),
    (optim.LAMB, dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    (optim.LAMB, dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (optim.LAMB, dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (optim.LAMB, dict(weight_decay=-0.01), "Invalid weight_decay value: -0.01"),
    (optim.LAMB, dict(clamp=(-1.0, 10.0)), "Invalid clamp lower bound: -1.0"),
    (optim.LAMB, dict(clamp=(2.0, 1.0)), "Invalid clamp upper bound: 1.0"),
    (optim.LAMB, dict(clamp=10.0), "Invalid clamp: 10.0"),
]


@pytest.mark.parametrize("cls,kwargs,message", INVALID, ids=[f"{c.__name__}-{m}" for c, _, m in INVALID])
def test_invalid_hyperparameters(cls, kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


def test_invalid_group_clamp_is_refused_at_step():
    p = torch.ones(2, 2, requires_grad=True)
    opt = optim.LAMB([{"params": [p], "clamp": (3.0, 1.0)}])
    p.grad = torch.ones(2, 2)
    with pytest.raises(ValueError, match="Invalid clamp upper bound"):
        opt.step()


def test_the_papers_momentum_form_differs_from_torchs_under_a_schedule():
    """The paper's buffer holds gamma * lambda * (g + beta w); with a constant lr that is torch's form
    times lr (tested against torch_optimizer below), but when the lr changes the two part ways."""
    lrs = [0.5, 0.5, 0.05, 0.05]
    ours, theirs = make_params(torch.float64), make_params(torch.float64)
    opt = optim.LARS(ours, lr=lrs[0], momentum=0.9, trust=False, exclude_1d=False)
    torch_opt = torch.optim.SGD(theirs, lr=lrs[0], momentum=0.9)  # the same step in torch's form
    for t, lr in enumerate(lrs):
        for o in (opt, torch_opt):
            o.param_groups[0]["lr"] = lr
        set_grads(ours, t)
        set_grads(theirs, t)
        opt.step()
        torch_opt.step()
        if t == 1:
            for p, q in zip(ours, theirs):
                torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(ours[0], theirs[0], rtol=1e-6)


# ---------------------------------------------------------------------------
# The torch-optimizer package's LARS and Lamb, where the conventions agree


def test_lamb_equals_torch_optimizer_lamb():
    """torch_optimizer.Lamb (debias=False): no bias correction, ||x|| clamped to [0, clamp_value], no exclusions."""
    torch_optimizer = pytest.importorskip("torch_optimizer")
    ours, theirs = make_params(torch.float64), make_params(torch.float64)
    kw = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05)
    opt = optim.LAMB(ours, **kw, bias_correction=False, clamp=(0.0, 10.0), exclude_1d=False)
    their_opt = torch_optimizer.Lamb(theirs, **kw, clamp_value=10.0, debias=False)
    for t in range(20):
        set_grads(ours, t)
        opt.step()
        set_grads(theirs, t)
        their_opt.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(opt.state[p]["exp_avg"], their_opt.state[q]["exp_avg"], rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(float(opt.state[p]["trust_ratio"]), float(their_opt.state[q]["trust_ratio"]), rtol=1e-10, atol=0)


def test_lars_equals_torch_optimizer_lars():
    """torch_optimizer.LARS with weight decay, both norms non-zero and a constant lr: torch's momentum form, eps=1e-8."""
    torch_optimizer = pytest.importorskip("torch_optimizer")
    ours, theirs = make_params(torch.float64), make_params(torch.float64)
    kw = dict(lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02, eps=1e-8)
    opt = optim.LARS(ours, **kw, exclude_1d=False)
    their_opt = torch_optimizer.LARS(theirs, **kw)
    for t in range(20):
        set_grads(ours, t)
        opt.step()
        set_grads(theirs, t)
        their_opt.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], 0.5 * their_opt.state[q]["momentum_buffer"], rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------------------
# The kernels on their own, and the docstrings' examples


def test_kernels_return_their_ratio_and_buffer():
    p, g = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 10.0]])
    buf, ratio = F.lars(p, g, None, lr=1.0, momentum=0.0, trust_coefficient=0.01)
    assert buf is None and ratio.shape == () and ratio.dtype == p.dtype
    torch.testing.assert_close(ratio, torch.tensor(0.005))
    p = torch.tensor([[3.0, 4.0]])  # the first call moved p
    buf, _ = F.lars(p, g, None, lr=1.0, momentum=0.9, trust_coefficient=0.01)
    torch.testing.assert_close(buf, 0.005 * g)  # v_1 = gamma lambda g
    assert buf is not g


@pytest.mark.parametrize("module", [large_batch, F], ids=["large_batch", "functional"])
def test_docstring_examples(module):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    names = None if module is large_batch else {"lars", "lamb"}
    for test in finder.find(module, globs={"torch": torch, **vars(module)}):
        if names is None or test.name.rsplit(".", 1)[-1] in names:
            runner.run(test)
    assert runner.failures == 0 and runner.tries > 0
