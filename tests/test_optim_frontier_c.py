"""book.optim's Lion and schedule-free optimizers against their reference packages, step for step.

``Lion`` is compared with ``lion_pytorch.Lion`` (lion-pytorch), ``ScheduleFreeSGD`` and
``ScheduleFreeAdamW`` with ``schedulefree.SGDScheduleFree`` and ``AdamWScheduleFree`` (both
pinned in constraints.txt). Each pair runs on copies of the same parameters (two groups, a noisy
quadratic's gradients set directly, some parameters without a gradient at some steps) for 30
steps, in float32 and float64, on every device. The kernels repeat the packages' operations in
their order, so on a CPU parameters and state are equal bit for bit; elsewhere float rounding is
allowed. The schedule-free pairs are also switched to eval mode and back mid-run, and their
state_dicts are exchanged.
"""

from __future__ import annotations

import copy
import doctest

import lion_pytorch
import pytest
import schedulefree
import torch

import book.optim as optim
import book.optim.lion as lion_module
import book.optim.schedulefree as schedulefree_module
from book.optim import functional as F

STEPS = 30
SHAPES = [(5, 4), (4,), (3, 2, 2), (6,)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one CPU thread is as fast, and steadier on a shared machine (see conftest)."""


def make_params(device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device, dtype).requires_grad_(True) for s in SHAPES]


def set_grads(params, t):
    """The gradient of a noisy quadratic at step t; parameter 3 has none at every third step."""
    g = torch.Generator().manual_seed(1000 + t)
    for i, p in enumerate(params):
        noise = torch.randn(p.shape, generator=g).to(p.device, p.dtype)
        p.grad = None if (i == 3 and t % 3 == 0) else (0.5 * (i + 1)) * p.detach() + noise


def groups(params, first: dict, second: dict):
    return [dict(params=params[:2], **first), dict(params=params[2:], **second)]


def close(xs, ys, device, dtype):
    """Equal bit for bit on a CPU; elsewhere within float rounding."""
    for x, y in zip(xs, ys):
        assert x.dtype == y.dtype and x.shape == y.shape and x.device == y.device
        if device.type == "cpu":
            assert torch.equal(x, y), float((x - y).abs().max())
        else:
            tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
            torch.testing.assert_close(x, y, **tol)


def assert_same_state(ours, theirs, device, dtype, group_keys=()):
    a, b = ours.state_dict(), theirs.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert sorted(a["state"][i]) == sorted(b["state"][i]), i
        keys = sorted(a["state"][i])
        close([a["state"][i][k] for k in keys], [b["state"][i][k] for k in keys], device, dtype)
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        for key in group_keys:
            assert ga[key] == gb[key], key


def run_pair(ours, theirs, p_ours, p_theirs, steps, start=0, switch_at=()):
    for t in range(start, start + steps):
        if t in switch_at:  # evaluate at x, then carry on training
            ours.eval(), theirs.eval()
            yield t
            ours.train(), theirs.train()
        set_grads(p_ours, t)
        set_grads(p_theirs, t)
        ours.step()
        theirs.step()


# ---------------------------------------------------------------------------
# Lion

LION_CASES = [
    dict(),  # the defaults: lr 1e-4, betas (0.9, 0.99), no decay
    dict(lr=3e-3, betas=(0.95, 0.98), weight_decay=0.5),
    dict(lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True),
    dict(lr=1e-3, betas=(0.0, 1.0)),  # the inclusive ends of the betas' range
]


@pytest.mark.parametrize("kwargs", LION_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_lion_equals_lion_pytorch(kwargs, device, dtype):
    p_ours = make_params(device, dtype)
    p_theirs = [p.detach().clone().requires_grad_(True) for p in p_ours]
    second = dict(lr=2e-3, weight_decay=0.2)  # a second group with its own lr and decay
    ours = optim.Lion(groups(p_ours, {}, second), **kwargs)
    theirs = lion_pytorch.Lion(groups(p_theirs, {}, second), **kwargs)
    for t in range(STEPS):
        if t == 15:  # change a group's lr mid-run (as a scheduler would)
            for g in ours.param_groups + theirs.param_groups:
                g["lr"] *= 0.5
        set_grads(p_ours, t), set_grads(p_theirs, t)
        ours.step(), theirs.step()
    close(p_ours, p_theirs, device, dtype)
    assert_same_state(ours, theirs, device, dtype, group_keys=("lr", "weight_decay"))
    assert sorted(ours.state[p_ours[0]]) == ["exp_avg"]


def test_lion_moves_every_coordinate_by_lr():
    """The sign update: with no decay and a zero momentum, each coordinate moves by exactly lr."""
    p = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = optim.Lion([p], lr=0.25)
    p.grad = torch.tensor([1e-9, -1e3, 5.0], dtype=torch.float64)
    opt.step()
    assert p.tolist() == [0.75, 2.25, 2.75]


def test_lion_exact_resume_and_interchange(dtype):
    p_full = make_params("cpu", dtype)
    p_half = [p.detach().clone().requires_grad_(True) for p in p_full]
    full = optim.Lion(p_full, lr=1e-2, weight_decay=0.1)
    half = lion_pytorch.Lion(p_half, lr=1e-2, weight_decay=0.1)  # saved by the package ...
    for t in range(STEPS):
        set_grads(p_full, t)
        full.step()
        if t < 12:
            set_grads(p_half, t)
            half.step()
    saved = copy.deepcopy(half.state_dict())
    resumed = optim.Lion(p_half, lr=1e-2, weight_decay=0.1)  # ... resumed by book.optim
    resumed.load_state_dict(saved)
    for t in range(12, STEPS):
        set_grads(p_half, t)
        resumed.step()
    close(p_full, p_half, torch.device("cpu"), dtype)
    assert_same_state(full, resumed, torch.device("cpu"), dtype)


# ---------------------------------------------------------------------------
# Schedule-free SGD and AdamW

SF_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict()),  # the defaults: lr 1.0, momentum 0.9
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.1, warmup_steps=7, r=1.0, weight_lr_power=1.0)),
    ("AdamW", dict()),  # the defaults: lr 0.0025, betas (0.9, 0.999)
    ("AdamW", dict(lr=0.02, betas=(0.95, 0.99), eps=1e-6, weight_decay=0.05, warmup_steps=7, r=0.5)),
    ("AdamW", dict(lr=0.01, warmup_steps=40, weight_lr_power=0.0)),  # still warming up at the end
]
PAIRS = {"SGD": (optim.ScheduleFreeSGD, "SGDScheduleFree"), "AdamW": (optim.ScheduleFreeAdamW, "AdamWScheduleFree")}
GROUP_KEYS = ("k", "train_mode", "weight_sum", "lr_max", "scheduled_lr")


def sf_pair(name, kwargs, device, dtype, foreach=True):
    ours_cls, theirs_name = PAIRS[name]
    p_ours = make_params(device, dtype)
    p_theirs = [p.detach().clone().requires_grad_(True) for p in p_ours]
    second = dict(lr=0.03, weight_decay=0.01)
    ours = ours_cls(groups(p_ours, {}, second), **kwargs)
    theirs = getattr(schedulefree, theirs_name)(groups(p_theirs, {}, second), foreach=foreach, **kwargs)
    return ours, theirs, p_ours, p_theirs


@pytest.mark.parametrize("foreach", [True, False], ids=["pkg-foreach", "pkg-loop"])
@pytest.mark.parametrize("name,kwargs", SF_CASES, ids=lambda c: c if isinstance(c, str) else
                         (",".join(f"{a}={b}" for a, b in c.items()) or "defaults"))
def test_schedule_free_equals_package(name, kwargs, foreach, device, dtype):
    ours, theirs, p_ours, p_theirs = sf_pair(name, kwargs, device, dtype, foreach)
    ours.train(), theirs.train()
    for _ in run_pair(ours, theirs, p_ours, p_theirs, STEPS, switch_at=(10, 20)):
        close(p_ours, p_theirs, device, dtype)  # at x, in eval mode
        assert_same_state(ours, theirs, device, dtype, GROUP_KEYS)
    close(p_ours, p_theirs, device, dtype)  # at y
    ours.eval(), theirs.eval()
    close(p_ours, p_theirs, device, dtype)  # at x
    assert_same_state(ours, theirs, device, dtype, GROUP_KEYS)
    assert ours.param_groups[0]["k"] == STEPS
    assert ours.state_dict()["param_groups"][0].keys() == theirs.state_dict()["param_groups"][0].keys()


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_schedule_free_exact_resume_and_interchange(name, dtype):
    """Saved in eval mode after 12 steps (by the package, or by book.optim), resumed by the other: the same run."""
    cpu = torch.device("cpu")
    kwargs = dict(lr=0.05, warmup_steps=5, weight_decay=0.01)
    for saver in ("theirs", "ours"):
        full, _, p_full, _ = sf_pair(name, kwargs, cpu, dtype)
        ours, theirs, p_ours, p_theirs = sf_pair(name, kwargs, cpu, dtype)
        first, first_params = (theirs, p_theirs) if saver == "theirs" else (ours, p_ours)
        full.train(), first.train()
        for t in range(12):
            set_grads(p_full, t), set_grads(first_params, t)
            full.step(), first.step()
        full.eval(), first.eval()
        saved = copy.deepcopy(first.state_dict())
        fresh_params = [p.detach().clone().requires_grad_(True) for p in first_params]
        cls = type(ours) if saver == "theirs" else type(theirs)
        resumed = cls(groups(fresh_params, {}, dict(lr=0.03, weight_decay=0.01)), **kwargs)
        resumed.load_state_dict(saved)
        assert resumed.param_groups[0]["k"] == 12 and not resumed.param_groups[0]["train_mode"]
        full.train(), resumed.train()
        for t in range(12, STEPS):
            set_grads(p_full, t), set_grads(fresh_params, t)
            full.step(), resumed.step()
        full.eval(), resumed.eval()
        close(p_full, fresh_params, cpu, dtype)
        assert_same_state(full, resumed, cpu, dtype, GROUP_KEYS)


def test_schedule_free_leaves_the_gradient_alone():
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    for opt in (optim.ScheduleFreeSGD([p], lr=0.1, weight_decay=0.5), optim.ScheduleFreeAdamW([p], weight_decay=0.5)):
        opt.train()
        p.grad = torch.tensor([0.3, 0.4])
        opt.step()
        assert p.grad.tolist() == pytest.approx([0.3, 0.4])


def test_schedule_free_average_is_uniform_without_warmup():
    """With r = 0 and no warmup the weight of z_t in x is 1/t: x is the plain average of z_1..z_t."""
    lr_max, weight_sum = -1.0, 0.0
    for k in range(10):
        lr, lr_max, weight_sum, ckp1 = F.schedule_free_weights(k, 0.5, lr_max=lr_max, weight_sum=weight_sum)
        assert lr == 0.5 and ckp1 == pytest.approx(1 / (k + 1))
    # x = y + (1 - 1/beta)(z - y) and y = x + (1 - beta)(z - x) undo each other
    z, y = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    x = y.clone()
    F.schedule_free_swap(x, z, 0.9, to_eval=True)
    torch.testing.assert_close(x, y + (1 - 1 / 0.9) * (z - y))
    F.schedule_free_swap(x, z, 0.9, to_eval=False)
    torch.testing.assert_close(x, y)


def test_schedule_free_sgd_matches_its_definition():
    """y is (1 - beta) z + beta x with x the average of the z: checked against the three sequences computed directly."""
    beta, lr = 0.8, 0.1
    w = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    opt = optim.ScheduleFreeSGD([w], lr=lr, momentum=beta)
    opt.train()
    z, x, y, zs = w.detach().clone(), w.detach().clone(), w.detach().clone(), []
    for t in range(1, 8):
        g = 2 * y + 1  # the gradient of |y|^2 + sum(y)
        w.grad = 2 * w.detach() + 1
        opt.step()
        z = z - lr * g
        zs.append(z)
        x = torch.stack(zs).mean(0)
        y = (1 - beta) * z + beta * x
        torch.testing.assert_close(w.detach(), y)
    opt.eval()
    torch.testing.assert_close(w.detach(), x)


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("make,match", [
    (lambda p: optim.Lion(p, lr=0.0), "Invalid learning rate: 0.0"),
    (lambda p: optim.Lion(p, betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    (lambda p: optim.Lion(p, weight_decay=-1), "Invalid weight_decay value: -1"),
    (lambda p: optim.ScheduleFreeSGD(p, lr=-1.0), "Invalid learning rate: -1.0"),
    (lambda p: optim.ScheduleFreeSGD(p, momentum=1.0), "Momentum must be between 0 and 1 exclusive: 1.0"),
    (lambda p: optim.ScheduleFreeSGD(p, weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    (lambda p: optim.ScheduleFreeAdamW(p, betas=(0.0, 0.999)), "Invalid beta parameter at index 0: 0.0"),
    (lambda p: optim.ScheduleFreeAdamW(p, betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    (lambda p: optim.ScheduleFreeAdamW(p, eps=-1e-8), "Invalid epsilon value: -1e-08"),
])
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make([torch.zeros(2, requires_grad=True)])


@pytest.mark.parametrize("cls", [optim.ScheduleFreeSGD, optim.ScheduleFreeAdamW])
def test_schedule_free_step_needs_train_mode(cls):
    p = torch.zeros(2, requires_grad=True)
    opt = cls([p])
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="not in train mode"):
        opt.step()  # starts in eval mode, as the package
    opt.train()
    opt.step()
    opt.eval()
    with pytest.raises(RuntimeError, match="not in train mode"):
        opt.step()


def test_sparse_gradients_are_refused():
    for opt_cls in (optim.Lion, optim.ScheduleFreeSGD, optim.ScheduleFreeAdamW):
        p = torch.zeros(3, requires_grad=True)
        opt = opt_cls([p])
        if hasattr(opt, "train"):
            opt.train()
        p.grad = torch.zeros(3).to_sparse()
        with pytest.raises(RuntimeError, match="sparse"):
            opt.step()


# ---------------------------------------------------------------------------
# The docstrings' examples run


def test_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    names = {"lion", "schedule_free_weights", "schedule_free_sgd", "schedule_free_adamw", "schedule_free_swap"}
    for module, keep in [(lion_module, lambda name: True), (schedulefree_module, lambda name: True),
                         (F, lambda name: name in names)]:
        for test in finder.find(module, globs={"torch": torch, **vars(module)}):
            if keep(test.name.rsplit(".", 1)[-1]):
                runner.run(test)
    assert runner.failures == 0 and runner.tries >= 30


@pytest.mark.parametrize("cls", ["ScheduleFreeSGD", "ScheduleFreeAdamW"])
@pytest.mark.parametrize("bad, error", [
    (dict(warmup_steps=-1), ValueError), (dict(warmup_steps=1.5), TypeError), (dict(r=float("nan")), ValueError),
    (dict(weight_lr_power=float("inf")), ValueError), (dict(weight_lr_power="2"), TypeError),
])
def test_schedule_free_refuses_a_bad_warmup_or_power(cls, bad, error):
    w = torch.zeros(3, requires_grad=True)
    with pytest.raises(error, match=next(iter(bad))):
        getattr(optim, cls)([w], **bad)
    getattr(optim, cls)([w], warmup_steps=3, r=1, weight_lr_power=2)  # whole and finite: accepted
