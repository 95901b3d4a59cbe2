"""NAdam, RAdam and Adamax (chapter 12) against torch.optim: parameters and state, step for step.

The pattern of tests/test_optim_adaptive.py: one table (``SPECS``) names each optimizer, its
torch.optim twin, the options to sweep and a second parameter group with other options; the
gradients are set directly (a noisy quadratic), so a 100-step run costs milliseconds. Each
run is compared with *both* of torch's paths, its single-tensor loop (``foreach=False``, the
arithmetic our kernels follow: bit for bit on a CPU) and its multi-tensor path
(``foreach=True``, torch's default on a GPU, which arranges the arithmetic differently).
Then: state_dict round trips with torch in both directions, exact resume, errors with torch's
words, and the conventions the docstrings state.
"""

from __future__ import annotations

import copy
import doctest
import inspect
import itertools
import math
from dataclasses import dataclass, field

import pytest
import torch

import book.optim as optim
from book.optim import adamax as adamax_module
from book.optim import functional as F
from book.optim import nadam as nadam_module
from book.optim import radam as radam_module

from _twins import assert_states_close, groups, run, set_grads, tolerance  # tests/_twins.py


@dataclass
class Spec:
    ours: type
    theirs: type
    base: dict  # hyperparameters of every case
    grid: dict  # option -> values, swept as a product
    second: callable  # case -> the second group's overrides
    state_keys: set  # the state keys torch creates
    rich: dict = field(default_factory=dict)  # a case with every option on (resume, interop)


SPECS = {
    "NAdam": Spec(
        optim.NAdam,
        torch.optim.NAdam,
        dict(lr=1e-2),
        dict(decoupled_weight_decay=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True],
             momentum_decay=[4e-3, 0.05]),
        lambda c: dict(lr=c["lr"] / 2, betas=(0.8, 0.99), eps=1e-6, weight_decay=2 * c["weight_decay"],
                       momentum_decay=2 * c.get("momentum_decay", 4e-3),
                       decoupled_weight_decay=not c.get("decoupled_weight_decay", False)),
        {"step", "exp_avg", "exp_avg_sq", "mu_product"},
        dict(lr=1e-2, weight_decay=0.1, momentum_decay=0.05, decoupled_weight_decay=True),
    ),
    "RAdam": Spec(
        optim.RAdam,
        torch.optim.RAdam,
        dict(lr=1e-2),
        dict(decoupled_weight_decay=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True]),
        # the second group: beta2 = 0.6 < 2/3, so rho_inf < 5 and every step is a momentum step,
        # while the first group (beta2 = 0.999) switches to rectified steps at step 6
        lambda c: dict(lr=c["lr"] / 2, betas=(0.8, 0.6), eps=1e-6, weight_decay=2 * c["weight_decay"],
                       decoupled_weight_decay=not c.get("decoupled_weight_decay", False)),
        {"step", "exp_avg", "exp_avg_sq"},
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    "Adamax": Spec(
        optim.Adamax,
        torch.optim.Adamax,
        dict(lr=1e-2),
        dict(weight_decay=[0.0, 0.1], maximize=[False, True], eps=[1e-8, 1e-3]),
        lambda c: dict(lr=c["lr"] / 2, betas=(0.8, 0.99), eps=1e-6, weight_decay=2 * c["weight_decay"],
                       maximize=not c.get("maximize", False)),
        {"step", "exp_avg", "exp_inf"},
        dict(lr=1e-2, weight_decay=0.1, eps=1e-3),
    ),
}


def cases():
    out = []
    for name, spec in SPECS.items():
        keys = list(spec.grid)
        for values in itertools.product(*spec.grid.values()):
            case = {**spec.base, **dict(zip(keys, values))}
            out.append(pytest.param(name, case, id=name + "-" + "-".join(f"{k}{v}" for k, v in zip(keys, values))))
    return out


SHAPES = [(12, 20), (20,), (8, 25), (3, 4, 5)]  # 520 numbers in 4 tensors of 1 to 3 dimensions


def make_params(device, dtype):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).to(device, dtype).requires_grad_(True) for s in SHAPES]




VARIANTS = [("ours", dict(foreach=False)), ("ours", dict(foreach=True)),
            ("torch", dict(foreach=False)), ("torch", dict(foreach=True))]


def build(name, case, device, dtype):
    """Ours (single-tensor, foreach) and torch's (loop, foreach): four optimizers on copies of the same parameters."""
    spec = SPECS[name]
    runs = []
    for who, extra in VARIANTS:
        params = make_params(device, dtype)
        cls = spec.ours if who == "ours" else spec.theirs
        runs.append((cls(groups(params, spec, case), **case, **extra), params))
    return runs


# ---------------------------------------------------------------------------
# Equal to torch.optim, on both paths

STEPS = 100


@pytest.mark.parametrize("name,case", cases())
def test_equals_torch(device, dtype, name, case):
    runs = build(name, case, device, dtype)
    start = [p.detach().clone() for p in runs[0][1]]
    for opt, params in runs:
        run(opt, params, STEPS)
    (single, p_single), (multi, p_multi), (loop, p_loop), (fore, p_fore) = runs
    for p, q, r, s, p0 in zip(p_single, p_multi, p_loop, p_fore, start):
        assert p.dtype == dtype and p.device.type == device.type
        assert not torch.allclose(r, p0)  # it moved
        torch.testing.assert_close(p, r, **tolerance(dtype, device))  # single-tensor == torch's loop
        torch.testing.assert_close(p, s, **tolerance(dtype, device))  # single-tensor == torch's foreach path
        torch.testing.assert_close(q, p, **tolerance(dtype, device))  # our foreach == our single-tensor
        if device.type == "cpu":  # the same tensor ops in the same order: the same bits
            assert torch.equal(p, r) and torch.equal(q, p)
    assert_states_close(single, loop, **tolerance(dtype, device))
    assert_states_close(single, fore, **tolerance(dtype, device))
    assert_states_close(multi, single, **tolerance(dtype, device))
    for state in loop.state.values():
        assert set(state) == SPECS[name].state_keys
    for g_ours, g_theirs in zip(single.param_groups, loop.param_groups):
        for key, value in g_ours.items():
            if key not in ("params", "foreach"):
                assert value == g_theirs[key], key


@pytest.mark.parametrize("name", list(SPECS))
def test_parameters_without_grad_are_skipped(device, name):
    """A frozen parameter is untouched; one with an intermittent gradient keeps its own step count."""
    dtype, case = torch.float64, SPECS[name].rich
    runs = build(name, case, device, dtype)
    skip = lambda t: (0,) if t % 3 == 0 else ()  # noqa: E731  (tensor 0 has a gradient 2 steps in 3)
    for opt, params in runs:
        frozen = torch.zeros(3, device=device, dtype=dtype, requires_grad=True)
        opt.add_param_group({"params": [frozen]})
        run(opt, params, 30, skip=skip)
        assert frozen.grad is None and not frozen.any()  # untouched, even by weight decay
    (single, p_single), (multi, p_multi), (loop, p_loop), _ = runs
    for p, q, r in zip(p_single, p_multi, p_loop):
        torch.testing.assert_close(p, r, **tolerance(dtype, device))
        torch.testing.assert_close(q, r, **tolerance(dtype, device))
    assert_states_close(single, loop, **tolerance(dtype, device))
    assert_states_close(multi, loop, **tolerance(dtype, device))
    steps = [float(loop.state[p]["step"]) for p in p_loop]
    assert steps == [20.0, 30.0, 30.0, 30.0]
    assert [float(single.state[p]["step"]) for p in p_single] == steps


# ---------------------------------------------------------------------------
# The Optimizer interface: state_dict round trips, closure, step counters


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("name", list(SPECS))
def test_resume_from_state_dict_is_exact(device, dtype, name, foreach):
    spec, case = SPECS[name], SPECS[name].rich
    reference = make_params(device, dtype)
    ref_opt = spec.ours(groups(reference, spec, case), **case, foreach=foreach)
    run(ref_opt, reference, 40)  # uninterrupted

    params = make_params(device, dtype)
    opt = spec.ours(groups(params, spec, case), **case, foreach=foreach)
    run(opt, params, 3)  # early: RAdam still takes momentum steps, NAdam's product is far from 0
    saved = copy.deepcopy(opt.state_dict())
    resumed = [p.detach().clone().requires_grad_(True) for p in params]  # fresh tensors, same values
    resumed_opt = spec.ours(groups(resumed, spec, {**case, "lr": 1.0}), **{**case, "lr": 1.0}, foreach=foreach)
    resumed_opt.load_state_dict(saved)  # restores the lr, the state and the step counters
    del params, opt
    run(resumed_opt, resumed, 37, start=3)
    for p, q in zip(resumed, reference):
        assert torch.equal(p, q)
    assert_states_close(resumed_opt, ref_opt, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(SPECS))
def test_state_dicts_interchange_with_torch(device, dtype, name):
    """Drop-in both ways: torch's state_dict continues in ours as in torch's own run, and ours continues in torch's."""
    spec, case = SPECS[name], SPECS[name].rich
    for first, second in [(spec.theirs, spec.ours), (spec.ours, spec.theirs)]:
        params = make_params(device, dtype)
        opt = first(groups(params, spec, case), **case, foreach=False)
        run(opt, params, 20)
        cont = [p.detach().clone().requires_grad_(True) for p in params]
        cont_opt = second(groups(cont, spec, case), **case, foreach=False)
        cont_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        run(opt, params, 20, start=20)
        run(cont_opt, cont, 20, start=20)
        for p, q in zip(cont, params):
            torch.testing.assert_close(p, q, **tolerance(dtype, device))
            if device.type == "cpu" and second is spec.ours:  # torch's run, continued by ours: not a bit lost
                assert torch.equal(p, q)
        if second is spec.ours:
            assert_states_close(cont_opt, opt, rtol=0, atol=0)
        else:  # torch's load_state_dict casts NAdam's mu_product to the parameters' dtype and device
            s_cont, s_opt = cont_opt.state_dict()["state"], opt.state_dict()["state"]
            for i in s_opt:
                for key in s_opt[i]:
                    torch.testing.assert_close(s_cont[i][key].to(s_opt[i][key]), s_opt[i][key], **tolerance(dtype, device))


def test_nadam_resume_keeps_mu_product_where_torch_casts_it():
    """torch casts mu_product to float64 on load and drifts from its own run; ours resumes exactly (NAdam's note)."""
    kw, drift = dict(lr=1e-2, betas=(0.99, 0.999)), {}
    for cls in (torch.optim.NAdam, optim.NAdam):
        whole = make_params("cpu", torch.float64)
        whole_opt = cls(whole, **kw)
        run(whole_opt, whole, 30)
        part = make_params("cpu", torch.float64)
        part_opt = cls(part, **kw)
        run(part_opt, part, 1)
        resumed = [p.detach().clone().requires_grad_(True) for p in part]
        resumed_opt = cls(resumed, **kw)
        resumed_opt.load_state_dict(copy.deepcopy(part_opt.state_dict()))
        product = resumed_opt.state[resumed[0]]["mu_product"]
        drift[cls] = (product.dtype, product.device.type)
        run(resumed_opt, resumed, 29, start=1)
        diff = max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(resumed, whole))
        drift[cls] += (diff,)
    assert drift[optim.NAdam] == (torch.float32, "cpu", 0.0)
    dtype, _, diff = drift[torch.optim.NAdam]
    assert dtype == torch.float64 and 0 < diff < 1e-8  # 1.4e-10 when written


@pytest.mark.parametrize("name", list(SPECS))
def test_step_counters_are_torchs(name):
    """``step`` and NAdam's ``mu_product``: 0-dim float32 CPU tensors, as torch's (float64 if that is the default)."""
    spec = SPECS[name]
    for default in (torch.float32, torch.float64):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            ours_p, theirs_p = make_params("cpu", torch.float32), make_params("cpu", torch.float32)
            ours, theirs = spec.ours(ours_p, **spec.base), spec.theirs(theirs_p, **spec.base)
            run(ours, ours_p, 3)
            run(theirs, theirs_p, 3)
        finally:
            torch.set_default_dtype(previous)
        for p, q in zip(ours_p, theirs_p):
            for key in ("step", "mu_product"):
                if key in theirs.state[q]:
                    a, b = ours.state[p][key], theirs.state[q][key]
                    assert a.dtype == b.dtype == (torch.float64 if default == torch.float64 else torch.float32)
                    assert a.shape == () and a.device.type == "cpu" and float(a) == float(b)
            assert float(ours.state[p]["step"]) == 3.0


@pytest.mark.parametrize("name", list(SPECS))
def test_closure_and_zero_grad(device, name):
    spec = SPECS[name]
    params = make_params(device, torch.float64)
    opt = spec.ours(params, **spec.base)
    target = [torch.ones_like(p) for p in params]

    def closure():
        opt.zero_grad()
        loss = sum(((p - c) ** 2).sum() for p, c in zip(params, target))
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(200)]
    assert losses[-1] < losses[0] / 2  # it descends
    assert opt.step() is None  # no closure, no loss
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("name", list(SPECS))
def test_foreach_is_the_default(name):
    spec = SPECS[name]
    opt = spec.ours(make_params("cpu", torch.float32), **spec.base)
    assert opt.defaults["foreach"] is None
    assert opt._step_impl(opt.param_groups[0]).__name__.endswith("_foreach")
    opt.param_groups[0]["foreach"] = False
    assert opt._step_impl(opt.param_groups[0]).__name__.endswith("_loop")


@pytest.mark.parametrize("name", list(SPECS))
def test_large_cpu_groups_default_to_the_loop(name):
    """foreach=None on the CPU: the loop once a group holds more than 4M elements (see use_foreach)."""
    from book.optim._base import FOREACH_CPU_MAX_NUMEL

    spec = SPECS[name]
    big = [torch.zeros(FOREACH_CPU_MAX_NUMEL // 2 + 1, requires_grad=True) for _ in range(2)]
    opt = spec.ours(big, **spec.base)
    assert opt._step_impl(opt.param_groups[0]).__name__.endswith("_loop")


@pytest.mark.parametrize("name", list(SPECS))
def test_mixed_dtypes_in_one_group(device, name):
    """One group holding float32 and float64 tensors: the foreach path stays correct (each keeps its dtype)."""
    spec, case = SPECS[name], SPECS[name].rich
    results = []
    for cls, extra in [(spec.ours, dict(foreach=True)), (spec.theirs, dict(foreach=False))]:
        dtypes = (torch.float32, torch.float64, torch.float32, torch.float64)
        params = [p.detach().to(dt).requires_grad_(True) for p, dt in zip(make_params(device, torch.float32), dtypes)]
        opt = cls(params, **case, **extra)
        run(opt, params, 20)
        results.append((params, opt))
    (ours, o), (theirs, t) = results
    for p, q in zip(ours, theirs):
        assert p.dtype == q.dtype
        torch.testing.assert_close(p, q, **tolerance(torch.float32))
    assert_states_close(o, t, **tolerance(torch.float32))


# ---------------------------------------------------------------------------
# The constructor: torch's signature, defaults and error messages


@pytest.mark.parametrize("name", list(SPECS))
def test_signature_is_torchs(name):
    """The same arguments in the same order, kinds and defaults, less torch's capturable and differentiable."""
    ours = inspect.signature(SPECS[name].ours).parameters
    theirs = {k: v for k, v in inspect.signature(SPECS[name].theirs).parameters.items()
              if k not in ("capturable", "differentiable")}
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].kind == theirs[key].kind, key
        assert ours[key].default == theirs[key].default, key
    p = [torch.zeros(2, requires_grad=True)]
    ours_defaults = dict(SPECS[name].ours(p).defaults)
    theirs_defaults = SPECS[name].theirs(p).defaults
    for key, value in ours_defaults.items():
        assert value == theirs_defaults[key], key


ERRORS = [
    ("NAdam", dict(lr=-0.1), r"Invalid learning rate: -0.1"),
    ("NAdam", dict(eps=-1e-8), r"Invalid epsilon value: -1e-08"),
    ("NAdam", dict(betas=(1.0, 0.999)), r"Invalid beta parameter at index 0: 1.0"),
    ("NAdam", dict(betas=(0.9, -0.1)), r"Invalid beta parameter at index 1: -0.1"),
    ("NAdam", dict(weight_decay=-1e-2), r"Invalid weight_decay value: -0.01"),
    ("NAdam", dict(momentum_decay=-4e-3), r"Invalid momentum_decay value: -0.004"),
    ("NAdam", dict(lr=-1.0, momentum_decay=-1.0), r"Invalid learning rate: -1.0"),  # the first check wins, as in torch
    ("RAdam", dict(lr=-1e-3), r"Invalid learning rate: -0.001"),
    ("RAdam", dict(eps=-1.0), r"Invalid epsilon value: -1.0"),
    ("RAdam", dict(betas=(-0.5, 0.999)), r"Invalid beta parameter at index 0: -0.5"),
    ("RAdam", dict(betas=(0.9, 1.0)), r"Invalid beta parameter at index 1: 1.0"),
    ("RAdam", dict(weight_decay=-0.1), r"Invalid weight_decay value: -0.1"),
    ("Adamax", dict(lr=-2e-3), r"Invalid learning rate: -0.002"),
    ("Adamax", dict(eps=-1e-8), r"Invalid epsilon value: -1e-08"),
    ("Adamax", dict(betas=(1.5, 0.999)), r"Invalid beta parameter at index 0: 1.5"),
    ("Adamax", dict(betas=(0.9, 1.0)), r"Invalid beta parameter at index 1: 1.0"),
    ("Adamax", dict(weight_decay=-0.1), r"Invalid weight_decay value: -0.1"),
]


@pytest.mark.parametrize("name,kwargs,match", ERRORS)
def test_invalid_hyperparameters(name, kwargs, match):
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=match) as ours:
        SPECS[name].ours(p, **kwargs)
    with pytest.raises(ValueError) as theirs:
        SPECS[name].theirs(p, **kwargs)
    assert str(ours.value) == str(theirs.value)  # torch's words, exactly


@pytest.mark.parametrize("name", list(SPECS))
def test_nan_empty_and_sparse_are_refused(name):
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        SPECS[name].ours([torch.zeros(2, requires_grad=True)], lr=float("nan"))
    with pytest.raises(ValueError, match="empty parameter list"):
        SPECS[name].ours([])
    p = torch.zeros(3, requires_grad=True)
    opt = SPECS[name].ours([p], **SPECS[name].base)
    p.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


# ---------------------------------------------------------------------------
# Conventions the docstrings state


def test_radam_switches_after_rho_exceeds_5_not_4(device):
    """beta2 = 0.999: steps 1-5 are momentum steps theta -= lr * mhat (rho_5 = 4.996 > 4, the paper's threshold),
    step 6 is the first rectified one, with r_6 = 0.0258."""
    beta1, beta2, lr, dtype = 0.9, 0.999, 0.1, torch.float64
    rho_inf = 2 / (1 - beta2) - 1
    rho = lambda t: rho_inf - 2 * t * beta2**t / (1 - beta2**t)  # noqa: E731
    assert 4 < rho(5) < 5 < rho(6)
    assert [F.radam_rectification(t, beta2) for t in range(1, 6)] == [None] * 5
    p = torch.tensor([1.0, -2.0], device=device, dtype=dtype, requires_grad=True)
    opt = optim.RAdam([p], lr=lr, betas=(beta1, beta2))
    m = v = torch.zeros(2, dtype=dtype)
    expected = torch.tensor([1.0, -2.0], dtype=dtype)
    for t in range(1, 9):
        g = torch.tensor([0.5 * t, -3.0 + t], dtype=dtype)
        p.grad = g.to(device)
        opt.step()
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        r = F.radam_rectification(t, beta2)
        if t <= 5:
            expected = expected - lr * m_hat  # SGD with momentum
        else:
            expected = expected - lr * m_hat * r * (1 - beta2**t) ** 0.5 / (v.sqrt() + 1e-8)
        torch.testing.assert_close(p.detach().cpu(), expected, rtol=1e-13, atol=1e-15)


def test_radam_rectification_values_and_a_small_beta2():
    r = lambda t: F.radam_rectification(t, 0.999)  # noqa: E731
    assert [round(r(t), 4) for t in (6, 100, 1000)] == [0.0258, 0.2153, 0.6453]
    assert r(10_000) == pytest.approx(0.99977, abs=1e-5)
    assert all(r(t) < r(t + 1) for t in range(6, 3000, 50))  # a warmup: it only grows
    assert all(F.radam_rectification(t, 2 / 3) is None for t in range(1, 500))  # rho_inf = 5: never rectified


def test_radam_with_small_beta2_is_sgd_with_bias_corrected_momentum(device):
    p = torch.tensor([1.0, -2.0, 0.5], device=device, dtype=torch.float64, requires_grad=True)
    opt = optim.RAdam([p], lr=0.05, betas=(0.8, 0.5))
    m, expected = torch.zeros(3, dtype=torch.float64), p.detach().cpu().clone()
    for t in range(1, 31):
        g = torch.tensor([math.sin(t), math.cos(t), 0.1 * t], dtype=torch.float64)
        p.grad = g.to(device)
        opt.step()
        m = 0.8 * m + 0.2 * g
        expected -= 0.05 * m / (1 - 0.8**t)
    torch.testing.assert_close(p.detach().cpu(), expected, rtol=1e-13, atol=1e-15)


def test_nadam_with_constant_momentum_is_nesterovs_adam():
    """A huge momentum_decay makes mu_t = beta1 for all t: the step is Adam's with Nesterov's look-ahead."""
    beta1, beta2, lr, eps, dtype = 0.9, 0.999, 0.1, 1e-8, torch.float64
    p = torch.tensor([1.0, -2.0], dtype=dtype, requires_grad=True)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # a float64 product (it follows the default dtype, as step does)
    try:
        opt = optim.NAdam([p], lr=lr, betas=(beta1, beta2), eps=eps, momentum_decay=1e6)
        m = v = torch.zeros(2, dtype=dtype)
        expected = p.detach().clone()
        for t in range(1, 21):
            g = torch.tensor([math.sin(t), 0.3 * t], dtype=dtype)
            p.grad = g.clone()
            opt.step()
            m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
            m_bar = (1 - beta1) * g / (1 - beta1**t) + beta1 * m / (1 - beta1 ** (t + 1))
            expected -= lr * m_bar / ((v / (1 - beta2**t)).sqrt() + eps)
            assert float(opt.state[p]["mu_product"]) == pytest.approx(beta1**t, rel=1e-14)
    finally:
        torch.set_default_dtype(previous)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-13, atol=1e-15)


def test_nadam_first_step_is_longer_than_adams():
    """The look-ahead counts the first gradient twice: step 1 is 1.056 lr sign(g) with the default schedule."""
    p, m, v = torch.ones(2, dtype=torch.float64), *torch.zeros(2, 2, dtype=torch.float64)
    F.nadam(p, torch.tensor([0.1, -10.0], dtype=torch.float64), m, v, torch.tensor(1.0), torch.tensor(0.0), lr=0.1)
    mu1, mu2 = (0.9 * (1 - 0.5 * 0.96 ** (k * 0.004)) for k in (1, 2))
    factor = 1 + 0.1 * mu2 / (1 - mu1 * mu2)  # (1 - mu1)/(1 - mu1) for g, and mu2 (1 - beta1)/(1 - mu1 mu2) for m
    torch.testing.assert_close(1 - p, 0.1 * factor * torch.tensor([1.0, -1.0], dtype=torch.float64), rtol=1e-6, atol=0)
    assert round(factor, 3) == 1.056


def test_nadam_momentum_schedule():
    """mu_1 = 0.4501 (about beta1/2); momentum_decay=0 fixes mu_t = beta1/2; mu_t reaches 0.75 beta1 at t ~ 4245."""
    def mu(t, momentum_decay=4e-3):  # mu_t, read off the product: one step from step t - 1 with the product at 1
        p, m, v = torch.zeros(1), torch.zeros(1), torch.zeros(1)
        product, step = torch.tensor(1.0, dtype=torch.float64), torch.tensor(float(t - 1))
        F.nadam(p, torch.ones(1), m, v, product, step, momentum_decay=momentum_decay)
        return float(product)

    assert mu(1) == pytest.approx(0.9 * (1 - 0.5 * 0.96**0.004)) and round(mu(1), 4) == 0.4501
    assert all(mu(t, 0.0) == pytest.approx(0.45) for t in (1, 10, 1000))
    assert mu(4244) < 0.75 * 0.9 < mu(4246)
    assert round(mu(10_000), 3) == 0.812  # still below beta1 = 0.9 after ten thousand steps


def test_adamax_first_step_and_bound(device):
    """Step 1 is lr * sign(g); every later step stays within lr (1 - beta1) / (1 - beta1 / beta2) per coordinate."""
    lr, beta1, beta2 = 0.01, 0.9, 0.999
    p = torch.zeros(50, device=device, dtype=torch.float64, requires_grad=True)
    opt = optim.Adamax([p], lr=lr, betas=(beta1, beta2))
    g = torch.Generator().manual_seed(0)
    bound = lr * (1 - beta1) / (1 - beta1 / beta2)
    for t in range(300):
        scale = 10.0 ** torch.randint(-6, 6, (50,), generator=g)  # sizes over 12 decades
        p.grad = (torch.randn(50, generator=g, dtype=torch.float64) * scale).to(device)
        before = p.detach().clone()
        opt.step()
        step = (p.detach() - before).abs()
        if t == 0:
            big = p.grad.abs() > 1e-4  # |g| >> eps
            torch.testing.assert_close(step[big], torch.full_like(step[big], lr), rtol=1e-4, atol=0)
        assert float(step.max()) <= bound * (1 + 1e-12)
    assert bound == pytest.approx(1.009 * lr, rel=1e-3)


def test_adamax_eps_is_inside_the_maximum():
    """A coordinate that never had a gradient: u = eps after one step (the paper's u would be 0)."""
    p, m, u, t = torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.tensor(0.0)
    F.adamax(p, torch.tensor([0.0, 2.0]), m, u, t, eps=1e-3)
    torch.testing.assert_close(u, torch.tensor([1e-3, 2.001]))
    assert torch.isfinite(p).all() and p[0] == 0


@pytest.mark.parametrize("module", [nadam_module, radam_module, adamax_module, F],
                         ids=["nadam", "radam", "adamax", "functional"])
def test_docstring_examples(module):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    names = {"nadam", "radam", "adamax", "radam_rectification", "nadam_foreach", "radam_foreach", "adamax_foreach"}
    for test in finder.find(module, globs={"torch": torch, **vars(module)}):
        if module is not F or test.name.rsplit(".", 1)[-1] in names:
            runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax"])
def test_tensor_lr_of_several_elements_is_refused_in_torchs_words(name):
    w = torch.zeros(3, requires_grad=True)
    for cls in (getattr(optim, name), getattr(torch.optim, name)):
        with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
            cls([w], lr=torch.tensor([1e-3, 2e-3]))


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax"])
@pytest.mark.parametrize("foreach", [False, True])
def test_zero_dim_tensor_lr_steps_as_the_float_does(name, foreach):
    # torch.optim accepts a 0-d tensor lr (as for a learning-rate schedule held in a tensor)
    torch.manual_seed(0)
    start, grad = torch.randn(4, 3), torch.randn(4, 3)
    results = []
    for lr in (0.01, torch.tensor(0.01)):
        w = start.clone().requires_grad_(True)
        opt = getattr(optim, name)([w], lr=lr, foreach=foreach)
        for _ in range(7):  # past RAdam's switch at rho_t > 5
            w.grad = grad.clone()
            opt.step()
        results.append(w.detach())
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)
