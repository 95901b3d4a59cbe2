"""book.optim's adaptive optimizers against torch.optim: parameters and state, step for step.

One table (``SPECS``) names each optimizer, its torch.optim twin, the option grid to sweep and
the hyperparameters of a second parameter group; every test below runs over it. Gradients
are set directly (a noisy quadratic), so a 100-step run costs a few milliseconds.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field

import pytest
import torch

import book.optim as optim
from book.optim import functional as F

from _twins import assert_states_close, groups, run, set_grads, tolerance  # tests/_twins.py


@dataclass
class Spec:
    ours: type
    theirs: type
    base: dict  # hyperparameters of every case
    grid: dict  # option -> values, swept as a product
    second: callable  # case -> the second group's overrides
    state_keys: callable  # case -> the state keys torch creates
    rich: dict = field(default_factory=dict)  # a case with every option on (resume, interop)


SPECS = {
    "Adam": Spec(
        optim.Adam,
        torch.optim.Adam,
        dict(lr=1e-2),
        dict(amsgrad=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True]),
        lambda c: dict(lr=c["lr"] / 2, betas=(0.8, 0.99), eps=1e-6, weight_decay=2 * c["weight_decay"]),
        lambda c: {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if c["amsgrad"] else set()),
        dict(lr=1e-2, amsgrad=True, weight_decay=0.1),
    ),
    "AdamW": Spec(
        optim.AdamW,
        torch.optim.AdamW,
        dict(lr=1e-2),
        dict(amsgrad=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True]),
        lambda c: dict(lr=c["lr"] / 2, betas=(0.8, 0.99), eps=1e-6, weight_decay=2 * c["weight_decay"]),
        lambda c: {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if c["amsgrad"] else set()),
        dict(lr=1e-2, amsgrad=True, weight_decay=0.1),
    ),
    "RMSprop": Spec(
        optim.RMSprop,
        torch.optim.RMSprop,
        dict(lr=1e-3),
        dict(centered=[False, True], momentum=[0.0, 0.9], weight_decay=[0.0, 0.1], maximize=[False, True]),
        lambda c: dict(
            lr=c["lr"] / 2, alpha=0.9, eps=1e-6, momentum=c["momentum"] / 2, weight_decay=2 * c["weight_decay"]
        ),
        lambda c: {"step", "square_avg"}
        | ({"momentum_buffer"} if c["momentum"] > 0 else set())
        | ({"grad_avg"} if c["centered"] else set()),
        dict(lr=1e-3, centered=True, momentum=0.9, weight_decay=0.1),
    ),
    "Adagrad": Spec(
        optim.Adagrad,
        torch.optim.Adagrad,
        dict(lr=5e-2),
        dict(
            lr_decay=[0.0, 0.01], initial_accumulator_value=[0.0, 0.1], weight_decay=[0.0, 0.1], maximize=[False, True]
        ),
        lambda c: dict(lr=c["lr"] / 2, lr_decay=2 * c["lr_decay"], eps=1e-8, weight_decay=2 * c["weight_decay"]),
        lambda c: {"step", "sum"},
        dict(lr=5e-2, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.1),
    ),
    "Adadelta": Spec(
        optim.Adadelta,
        torch.optim.Adadelta,
        dict(),
        dict(lr=[1.0, 0.5], weight_decay=[0.0, 0.1], maximize=[False, True]),
        lambda c: dict(lr=c.get("lr", 1.0) / 2, rho=0.8, eps=1e-5, weight_decay=2 * c["weight_decay"]),
        lambda c: {"step", "square_avg", "acc_delta"},
        dict(lr=1.0, weight_decay=0.1),
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


SHAPES = [(12, 20), (20,), (8, 25)]  # 460 numbers in 3 tensors


def make_params(device, dtype):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).to(device, dtype).requires_grad_(True) for s in SHAPES]




def build(name, case, device, dtype, **kw):
    """(ours single-tensor, ours foreach, torch): three optimizers on three copies of the same parameters."""
    spec = SPECS[name]
    runs = []
    for cls, extra in [(spec.ours, dict(foreach=False)), (spec.ours, dict(foreach=True)), (spec.theirs, {})]:
        params = make_params(device, dtype)
        runs.append((cls(groups(params, spec, case), **case, **extra, **kw), params))
    return runs


# ---------------------------------------------------------------------------
# Equal to torch.optim, on both paths


@pytest.mark.parametrize("name,case", cases())
def test_equals_torch(device, dtype, name, case):
    (single, p_single), (multi, p_multi), (theirs, p_theirs) = build(name, case, device, dtype)
    start = [p.detach().clone() for p in p_theirs]
    for opt, params in [(single, p_single), (multi, p_multi), (theirs, p_theirs)]:
        run(opt, params, 100)
    for p, q, r, p0 in zip(p_single, p_multi, p_theirs, start):
        assert p.dtype == dtype and p.device.type == device.type
        assert not torch.allclose(r, p0)  # it moved
        torch.testing.assert_close(p, r, **tolerance(dtype, device))  # single-tensor == torch
        torch.testing.assert_close(q, p, **tolerance(dtype, device))  # foreach == single-tensor
        if device.type == "cpu":  # a CPU foreach op is a loop over the same tensor op
            assert torch.equal(q, p)
    assert_states_close(single, theirs, **tolerance(dtype, device))
    assert_states_close(multi, single, **tolerance(dtype, device))
    expected_keys = SPECS[name].state_keys(case)
    for state in theirs.state.values():
        assert set(state) == expected_keys
    for g_ours, g_theirs in zip(single.param_groups, theirs.param_groups):
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
    (single, p_single), (multi, p_multi), (theirs, p_theirs) = runs
    for p, q, r in zip(p_single, p_multi, p_theirs):
        torch.testing.assert_close(p, r, **tolerance(dtype, device))
        torch.testing.assert_close(q, r, **tolerance(dtype, device))
    assert_states_close(single, theirs, **tolerance(dtype, device))
    assert_states_close(multi, theirs, **tolerance(dtype, device))
    if "step" in SPECS[name].state_keys(case):
        steps = [float(theirs.state[p]["step"]) for p in p_theirs]
        assert steps == [20.0, 30.0, 30.0]
        assert [float(single.state[p]["step"]) for p in p_single] == steps


# ---------------------------------------------------------------------------
# The Optimizer interface: state_dict round trips, closure, step counters


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("name", list(SPECS))
def test_resume_from_state_dict_is_exact(device, dtype, name, foreach):
    spec, case = SPECS[name], SPECS[name].rich
    reference = make_params(device, dtype)
    ref_opt = spec.ours(groups(reference, spec, case), **case, foreach=foreach)
    run(ref_opt, reference, 60)  # uninterrupted

    params = make_params(device, dtype)
    opt = spec.ours(groups(params, spec, case), **case, foreach=foreach)
    run(opt, params, 30)
    saved = copy.deepcopy(opt.state_dict())
    resumed = [p.detach().clone().requires_grad_(True) for p in params]  # fresh tensors, same values
    resumed_opt = spec.ours(groups(resumed, spec, {**case, "lr": 1.0}), **{**case, "lr": 1.0}, foreach=foreach)
    resumed_opt.load_state_dict(saved)  # restores the lr, the state and the step counters
    del params, opt
    run(resumed_opt, resumed, 30, start=30)
    for p, q in zip(resumed, reference):
        assert torch.equal(p, q)
    assert_states_close(resumed_opt, ref_opt, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(SPECS))
def test_state_dicts_interchange_with_torch(device, name):
    """Drop-in both ways: torch's state_dict continues in ours, and ours in torch's, with the same results."""
    spec, case, dtype = SPECS[name], SPECS[name].rich, torch.float64
    for first, second in [(spec.theirs, spec.ours), (spec.ours, spec.theirs)]:
        params = make_params(device, dtype)
        opt = first(groups(params, spec, case), **case)
        run(opt, params, 20)
        cont = [p.detach().clone().requires_grad_(True) for p in params]
        cont_opt = second(groups(cont, spec, case), **case)
        cont_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        run(opt, params, 20, start=20)
        run(cont_opt, cont, 20, start=20)
        for p, q in zip(cont, params):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        assert_states_close(cont_opt, opt, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(SPECS))
def test_step_counter_is_torchs(name):
    """``step`` is a 0-dim float32 tensor on the CPU, as in torch (float64 when that is the default dtype)."""
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
            if "step" in theirs.state[q]:
                a, b = ours.state[p]["step"], theirs.state[q]["step"]
                assert a.dtype == b.dtype == (torch.float64 if default == torch.float64 else torch.float32)
                assert a.shape == () and a.device.type == "cpu" and float(a) == float(b) == 3.0


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
    assert losses[-1] < losses[0]  # it descends
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


def test_adamw_is_adam_with_decoupled_decay(device, dtype):
    a, b = make_params(device, dtype), make_params(device, dtype)
    adamw = optim.AdamW(a, lr=1e-2, weight_decay=0.1)
    adam = optim.Adam(b, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
    run(adamw, a, 20)
    run(adam, b, 20)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    assert optim.AdamW(a).defaults["weight_decay"] == torch.optim.AdamW(b).defaults["weight_decay"] == 1e-2


# ---------------------------------------------------------------------------
# Validation, with torch.optim's messages

ERRORS = [
    ("Adam", dict(lr=-0.1), r"Invalid learning rate: -0.1"),
    ("Adam", dict(eps=-1e-8), r"Invalid epsilon value: -1e-08"),
    ("Adam", dict(betas=(1.0, 0.999)), r"Invalid beta parameter at index 0: 1.0"),
    ("Adam", dict(betas=(0.9, -0.1)), r"Invalid beta parameter at index 1: -0.1"),
    ("Adam", dict(weight_decay=-1e-2), r"Invalid weight_decay value: -0.01"),
    ("AdamW", dict(lr=-1.0), r"Invalid learning rate: -1.0"),
    ("AdamW", dict(betas=(0.9, 1.5)), r"Invalid beta parameter at index 1: 1.5"),
    ("AdamW", dict(weight_decay=-1.0), r"Invalid weight_decay value: -1.0"),
    ("RMSprop", dict(lr=-1e-3), r"Invalid learning rate: -0.001"),
    ("RMSprop", dict(eps=-1.0), r"Invalid epsilon value: -1.0"),
    ("RMSprop", dict(momentum=-0.9), r"Invalid momentum value: -0.9"),
    ("RMSprop", dict(weight_decay=-0.1), r"Invalid weight_decay value: -0.1"),
    ("RMSprop", dict(alpha=-0.99), r"Invalid alpha value: -0.99"),
    ("Adagrad", dict(lr=-1e-2), r"Invalid learning rate: -0.01"),
    ("Adagrad", dict(lr_decay=-0.1), r"Invalid lr_decay value: -0.1"),
    ("Adagrad", dict(weight_decay=-0.1), r"Invalid weight_decay value: -0.1"),
    ("Adagrad", dict(initial_accumulator_value=-0.1), r"Invalid initial_accumulator_value value: -0.1"),
    ("Adagrad", dict(eps=-1e-10), r"Invalid epsilon value: -1e-10"),
    ("Adadelta", dict(lr=-1.0), r"Invalid learning rate: -1.0"),
    ("Adadelta", dict(rho=1.5), r"Invalid rho value: 1.5"),
    ("Adadelta", dict(rho=-0.1), r"Invalid rho value: -0.1"),
    ("Adadelta", dict(eps=-1e-6), r"Invalid epsilon value: -1e-06"),
    ("Adadelta", dict(weight_decay=-0.1), r"Invalid weight_decay value: -0.1"),
]


@pytest.mark.parametrize("name,kwargs,match", [e for e in ERRORS if e[0] in SPECS])
def test_invalid_hyperparameters(name, kwargs, match):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        SPECS[name].ours([p], **kwargs)
    with pytest.raises(ValueError, match=match):  # torch refuses the same inputs with the same words
        SPECS[name].theirs([p], **kwargs)


@pytest.mark.parametrize("name", list(SPECS))
def test_nan_and_empty_are_refused(name):
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        SPECS[name].ours([torch.zeros(2, requires_grad=True)], lr=float("nan"))
    with pytest.raises(ValueError, match="empty parameter list"):
        SPECS[name].ours([])


@pytest.mark.parametrize("name", list(SPECS))
def test_sparse_gradients_are_refused(name):
    p = torch.zeros(3, requires_grad=True)
    opt = SPECS[name].ours([p], **SPECS[name].base)
    p.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


# ---------------------------------------------------------------------------
# Conventions the docstrings state


def test_adagrad_state_is_created_at_construction_as_torch_does(device):
    """Every parameter has a state before the first step, with the constructor's accumulator value
    (a group's own initial_accumulator_value is ignored, as in torch)."""
    ours_p, theirs_p = make_params(device, torch.float32), make_params(device, torch.float32)
    make = lambda cls, ps: cls(  # noqa: E731
        [{"params": ps[:2]}, {"params": ps[2:], "initial_accumulator_value": 5.0}], initial_accumulator_value=0.3
    )
    ours, theirs = make(optim.Adagrad, ours_p), make(torch.optim.Adagrad, theirs_p)
    assert_states_close(ours, theirs, rtol=0, atol=0)
    assert all(float(ours.state[p]["sum"].max()) == pytest.approx(0.3) for p in ours_p)


def test_adadelta_first_step_is_sqrt_eps_over_one_minus_rho(device):
    p = torch.tensor([2.0, -3.0], device=device, dtype=torch.float64, requires_grad=True)
    opt = optim.Adadelta([p], rho=0.9, eps=1e-6)
    p.grad = torch.tensor([5.0, -0.01], device=device, dtype=torch.float64)
    opt.step()
    g = torch.tensor([5.0, -0.01], dtype=torch.float64)
    expected = torch.tensor([2.0, -3.0], dtype=torch.float64) - (1e-6 / (0.1 * g**2 + 1e-6)).sqrt() * g
    torch.testing.assert_close(p.detach().cpu(), expected, rtol=1e-14, atol=0)


def test_adam_eps_is_outside_the_square_root():
    """On a tiny gradient the two eps conventions differ by orders of magnitude; ours (torch's) is outside."""
    g = torch.tensor([1e-9, 1.0], dtype=torch.float64)
    p, m, v = (torch.zeros(2, dtype=torch.float64) for _ in range(3))
    F.adam(p, g, m, v, None, torch.tensor(0.0), lr=1.0, eps=1e-8)
    outside = -g / (g.abs() + 1e-8)  # first step: mhat = g, vhat = g^2
    inside = -g / (g**2 + 1e-8).sqrt()
    torch.testing.assert_close(p, outside, rtol=1e-12, atol=0)
    assert float(p[0]) == pytest.approx(-1 / 11) and float(inside[0]) == pytest.approx(-1e-5)


def test_adamw_decay_is_multiplied_by_lr():
    """PyTorch's AdamW shrinks by (1 - lr * wd) per step, not by (1 - wd)."""
    for lr in (1e-1, 1e-3):
        w = torch.ones(4, dtype=torch.float64, requires_grad=True)
        opt = optim.AdamW([w], lr=lr, weight_decay=0.5)
        for _ in range(10):
            w.grad = torch.zeros(4, dtype=torch.float64)
            opt.step()
        torch.testing.assert_close(w.detach(), torch.full((4,), (1 - lr * 0.5) ** 10, dtype=torch.float64))


def test_rmsprop_first_step_and_centered_steps_are_larger():
    g = torch.tensor([0.3, -2.0])
    plain, centered = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    o1, o2 = optim.RMSprop([plain], lr=0.01), optim.RMSprop([centered], lr=0.01, centered=True)
    plain.grad, centered.grad = g.clone(), g.clone()
    o1.step(), o2.step()
    torch.testing.assert_close(plain.detach(), -0.01 / 0.1 * g.sign(), rtol=1e-6, atol=0)  # eta / sqrt(1 - alpha)
    assert bool((centered.detach().abs() > plain.detach().abs()).all())  # std < RMS


@pytest.mark.parametrize("name", list(SPECS))
def test_mixed_dtypes_in_one_group(device, name):
    """One group holding float32 and float64 tensors: the foreach path stays correct (each keeps its dtype)."""
    spec, case = SPECS[name], SPECS[name].rich
    results = []
    for cls, extra in [(spec.ours, dict(foreach=True)), (spec.theirs, {})]:
        dtypes = (torch.float32, torch.float64, torch.float32)
        params = [p.detach().to(dt).requires_grad_(True) for p, dt in zip(make_params(device, torch.float32), dtypes)]
        opt = cls(params, **case, **extra)
        run(opt, params, 20)
        results.append((params, opt))
    (ours, o), (theirs, t) = results
    for p, q in zip(ours, theirs):
        assert p.dtype == q.dtype
        torch.testing.assert_close(p, q, **tolerance(torch.float32))
    assert_states_close(o, t, **tolerance(torch.float32))


@pytest.mark.parametrize("name", list(SPECS))
def test_large_cpu_groups_default_to_the_loop(name):
    """foreach=None on the CPU: the loop once a group holds more than 4M elements (see use_foreach)."""
    from book.optim._base import FOREACH_CPU_MAX_NUMEL

    spec = SPECS[name]
    big = [torch.zeros(FOREACH_CPU_MAX_NUMEL // 2 + 1, requires_grad=True) for _ in range(2)]
    opt = spec.ours(big, **spec.base)
    assert opt._step_impl(opt.param_groups[0]).__name__.endswith("_loop")
    opt.param_groups[0]["foreach"] = True
    assert opt._step_impl(opt.param_groups[0]).__name__.endswith("_foreach")


@pytest.mark.parametrize("name", list(SPECS))
def test_cpu_groups_of_one_tensor_default_to_the_loop(name):
    """foreach=None on the CPU: the multi-tensor kernel for several small tensors, the loop for a single one."""
    spec = SPECS[name]
    one = spec.ours([torch.zeros(10, requires_grad=True)], **spec.base)
    assert one._step_impl(one.param_groups[0]).__name__.endswith("_loop")
    two = spec.ours([torch.zeros(10, requires_grad=True), torch.zeros(3, requires_grad=True)], **spec.base)
    assert two._step_impl(two.param_groups[0]).__name__.endswith("_foreach")
