"""book.optim.SGD and its kernel against torch.optim.SGD: parameters and state, step for step."""

from __future__ import annotations

import copy
import importlib
import itertools

import pytest
import torch

from book.optim import SGD
from book.optim import functional as F

torch_sgd = importlib.import_module("torch.optim.sgd").sgd  # torch's functional API


def sgd_cases():
    """Every valid combination of the options (nesterov needs momentum and no dampening)."""
    cases = []
    for momentum, dampening, weight_decay, nesterov, maximize in itertools.product(
        [0.0, 0.9], [0.0, 0.5], [0.0, 1e-2], [False, True], [False, True]
    ):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        cases.append(
            dict(momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        )
    return cases


CASES = sgd_cases()
IDS = [
    f"mom{c['momentum']}-damp{c['dampening']}-wd{c['weight_decay']}"
    + ("-nesterov" if c["nesterov"] else "")
    + ("-maximize" if c["maximize"] else "")
    for c in CASES
]


def make_model(device, dtype, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    return model.to(device=device, dtype=dtype)


def batch(step, device, dtype):
    """The minibatch of a step: the same for both optimizers, different at every step."""
    g = torch.Generator().manual_seed(1000 + step)
    X, y = torch.randn(16, 5, generator=g), torch.randn(16, 3, generator=g)
    return X.to(device, dtype), y.to(device, dtype)


def loss_at(model, step, device, dtype):
    X, y = batch(step, device, dtype)
    return torch.nn.functional.mse_loss(model(X), y)


def two_groups(model, opt_class, lr, momentum, **kw):
    """Two parameter groups: the second with half the lr, half the momentum, more weight decay."""
    first, second = model[0], model[2]
    groups = [
        {"params": first.parameters()},
        {"params": second.parameters(), "lr": lr / 2, "momentum": momentum / 2, "weight_decay": 2 * kw["weight_decay"]},
    ]
    return opt_class(groups, lr=lr, momentum=momentum, **kw)


def train(model, opt, steps, device, dtype, start=0):
    for t in range(start, start + steps):
        opt.zero_grad()
        loss_at(model, t, device, dtype).backward()
        opt.step()


def assert_states_close(ours, theirs, **tol):
    """Same state, key by key: the same parameters, the same keys, the same tensors."""
    s_ours, s_theirs = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert s_ours.keys() == s_theirs.keys()
    for i in s_ours:
        assert s_ours[i].keys() == s_theirs[i].keys(), i
        for key in s_ours[i]:
            torch.testing.assert_close(s_ours[i][key], s_theirs[i][key], **tol)


def tolerance(dtype):
    return dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------
# Equal to torch.optim.SGD


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_equals_torch_sgd(device, dtype, case):
    lr = 0.05
    ours_model, torch_model = make_model(device, dtype), make_model(device, dtype)
    ours = two_groups(ours_model, SGD, lr, **case)
    theirs = two_groups(torch_model, torch.optim.SGD, lr, **case)
    start = [p.detach().clone() for p in ours_model.parameters()]
    train(ours_model, ours, 100, device, dtype)
    train(torch_model, theirs, 100, device, dtype)
    for p, q, p0 in zip(ours_model.parameters(), torch_model.parameters(), start):
        assert p.dtype == dtype and p.device.type == device.type
        assert not torch.allclose(p, p0)  # it moved
        torch.testing.assert_close(p, q, **tolerance(dtype))
    assert_states_close(ours, theirs, **tolerance(dtype))
    if case["momentum"] == 0:  # like torch: no state at all without momentum
        assert ours.state_dict()["state"] == {}
    else:
        assert len(ours.state_dict()["state"]) == 4
    for g_ours, g_theirs in zip(ours.param_groups, theirs.param_groups):
        for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"):
            assert g_ours[key] == g_theirs[key], key


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_foreach_path_equals_single_tensor_path(device, dtype, case):
    """foreach=True (the default) and foreach=False take the same steps, and both are torch's."""
    lr = 0.05
    models = [make_model(device, dtype) for _ in range(3)]
    single = two_groups(models[0], SGD, lr, foreach=False, **case)
    multi = two_groups(models[1], SGD, lr, foreach=True, **case)
    theirs = two_groups(models[2], torch.optim.SGD, lr, foreach=True, **case)
    for model, opt in zip(models, (single, multi, theirs)):
        train(model, opt, 100, device, dtype)
    for p, q, r in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(p, r, **tolerance(dtype))
        torch.testing.assert_close(q, p, **tolerance(dtype))
        if device.type == "cpu":  # a CPU foreach op is a loop over the same tensor op
            assert torch.equal(q, p)
    assert_states_close(multi, single, **tolerance(dtype))
    assert_states_close(single, theirs, **tolerance(dtype))


def test_foreach_is_the_default_and_leaves_gradients_alone(device):
    """Unlike torch's foreach path, ours never writes into p.grad (torch adds the Nesterov look-ahead there)."""
    model = make_model(device, torch.float64)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    assert opt.defaults["foreach"] is None and opt._step_impl(opt.param_groups[0]) is F.sgd_foreach
    for _ in range(3):
        opt.zero_grad()
        loss_at(model, 0, device, torch.float64).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        for p, g in zip(model.parameters(), grads):
            assert torch.equal(p.grad, g)


def test_foreach_kernel_with_mixed_first_steps(device, dtype):
    """Buffers that exist and buffers still None in one call: each follows the single-tensor kernel."""
    g = torch.Generator().manual_seed(5)
    params = [torch.randn(4, 3, generator=g).to(device, dtype) for _ in range(3)]
    grads = [torch.randn(4, 3, generator=g).to(device, dtype) for _ in range(3)]
    ref = [p.clone() for p in params]
    bufs = [grads[0].clone(), None, grads[2] * 2]
    ref_bufs = [None if b is None else b.clone() for b in bufs]
    kw = dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)
    new = F.sgd_foreach(params, grads, bufs, **kw)
    ref_new = [F.sgd(p, gr, b, **kw) for p, gr, b in zip(ref, grads, ref_bufs)]
    for p, q, b, c in zip(params, ref, new, ref_new):
        torch.testing.assert_close(p, q, **tolerance(dtype))
        torch.testing.assert_close(b, c, **tolerance(dtype))
    assert new[0] is bufs[0] and new[2] is bufs[2]  # updated in place


@pytest.mark.parametrize("case", [c for c in CASES if not c["maximize"]], ids=[i for i in IDS if "maximize" not in i])
def test_kernel_equals_torch_functional(device, dtype, case):
    """The single-tensor kernel against torch.optim's own functional sgd, 20 steps."""
    g = torch.Generator().manual_seed(3)
    p_ours = torch.randn(7, 4, generator=g).to(device, dtype)
    p_torch = p_ours.clone()
    buf_ours, bufs_torch = None, [None]
    for _ in range(20):
        grad = torch.randn(7, 4, generator=g).to(device, dtype) + p_ours
        buf_ours = F.sgd(p_ours, grad, buf_ours, lr=0.1, **case)
        torch_sgd([p_torch], [grad.clone()], bufs_torch, foreach=False, lr=0.1, **case)
    torch.testing.assert_close(p_ours, p_torch, **tolerance(dtype))
    if case["momentum"] == 0:
        assert buf_ours is None
    else:
        torch.testing.assert_close(buf_ours, bufs_torch[0], **tolerance(dtype))


# ---------------------------------------------------------------------------
# The Optimizer interface


def test_zero_grad(device):
    model = make_model(device, torch.float32)
    opt = SGD(model.parameters(), lr=0.1)
    loss_at(model, 0, device, torch.float32).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()  # PyTorch's default: set_to_none=True
    assert all(p.grad is None for p in model.parameters())


def test_step_with_closure_returns_its_loss(device, dtype):
    ours_model, torch_model = make_model(device, dtype), make_model(device, dtype)
    ours = SGD(ours_model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    theirs = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    for t in range(5):
        def closure(model=ours_model, opt=ours, t=t):
            opt.zero_grad()
            loss = loss_at(model, t, device, dtype)
            loss.backward()
            return loss

        def torch_closure(model=torch_model, opt=theirs, t=t):
            opt.zero_grad()
            loss = loss_at(model, t, device, dtype)
            loss.backward()
            return loss

        loss_ours, loss_theirs = ours.step(closure), theirs.step(torch_closure)
        assert isinstance(loss_ours, torch.Tensor) and loss_ours.requires_grad  # built with grad enabled
        torch.testing.assert_close(loss_ours, loss_theirs, **tolerance(dtype))
    for p, q in zip(ours_model.parameters(), torch_model.parameters()):
        torch.testing.assert_close(p, q, **tolerance(dtype))
    assert ours.step() is None  # no closure, no loss


def test_parameter_without_grad_is_skipped(device):
    ours_model, torch_model = make_model(device, torch.float64), make_model(device, torch.float64)
    frozen = torch.zeros(3, device=device, dtype=torch.float64, requires_grad=True)
    frozen_t = frozen.detach().clone().requires_grad_(True)
    ours = SGD([*ours_model.parameters(), frozen], lr=0.1, momentum=0.9, weight_decay=0.1)
    theirs = torch.optim.SGD([*torch_model.parameters(), frozen_t], lr=0.1, momentum=0.9, weight_decay=0.1)
    train(ours_model, ours, 10, device, torch.float64)
    train(torch_model, theirs, 10, device, torch.float64)
    assert frozen.grad is None and not frozen.any()  # untouched, even by weight decay
    assert frozen not in ours.state
    assert sorted(ours.state_dict()["state"]) == sorted(theirs.state_dict()["state"]) == [0, 1, 2, 3]
    assert_states_close(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs",
    [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2), dict(momentum=0.5, dampening=0.3), dict(momentum=0.0)],
    ids=["momentum", "nesterov-wd", "dampening", "plain"],
)
def test_resume_from_state_dict_is_exact(device, dtype, kwargs):
    model = make_model(device, dtype)
    opt = two_groups(model, SGD, 0.05, **{"weight_decay": 0.0, **kwargs})
    reference = copy.deepcopy(model)
    ref_opt = two_groups(reference, SGD, 0.05, **{"weight_decay": 0.0, **kwargs})
    train(reference, ref_opt, 100, device, dtype)  # uninterrupted

    train(model, opt, 50, device, dtype)
    saved = copy.deepcopy(opt.state_dict())
    resumed = copy.deepcopy(model)  # a fresh model holding the same weights
    resumed_opt = two_groups(resumed, SGD, 1.0, **{"weight_decay": 0.0, **kwargs})  # lr restored from the dict
    resumed_opt.load_state_dict(saved)
    del model, opt
    train(resumed, resumed_opt, 50, device, dtype, start=50)
    for p, q in zip(resumed.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert_states_close(resumed_opt, ref_opt, rtol=0, atol=0)


def test_loads_torch_state_dict_and_continues_like_torch(device):
    """Drop-in: a run started with torch.optim.SGD can be continued with book.optim.SGD."""
    dtype = torch.float64
    torch_model = make_model(device, dtype)
    theirs = torch.optim.SGD(torch_model.parameters(), lr=0.05, momentum=0.9)
    train(torch_model, theirs, 20, device, dtype)
    ours_model = copy.deepcopy(torch_model)
    ours = SGD(ours_model.parameters(), lr=0.05, momentum=0.9)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    train(torch_model, theirs, 20, device, dtype, start=20)
    train(ours_model, ours, 20, device, dtype, start=20)
    for p, q in zip(ours_model.parameters(), torch_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------
# The three momentum conventions of the docstring's note


def momentum_paths(lrs, beta=0.9):
    """Run the three forms of momentum on f(x) = 0.5 x^T A x with learning rates lrs[t]."""
    A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    grad = lambda x: A @ x  # noqa: E731
    x0 = torch.tensor([1.0, -1.0], dtype=torch.float64)
    p = x0.clone().requires_grad_(True)
    opt = SGD([p], lr=lrs[0], momentum=beta)
    x_ema, m = x0.clone(), torch.zeros(2, dtype=torch.float64)
    x_sut, v = x0.clone(), torch.zeros(2, dtype=torch.float64)
    ours, ema, sut = [], [], []
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        p.grad = grad(p.detach())
        opt.step()
        m = beta * m + (1 - beta) * grad(x_ema)  # EMA form with lr / (1 - beta)
        x_ema = x_ema - lr / (1 - beta) * m
        v = beta * v - lr * grad(x_sut)  # Sutskever's velocity
        x_sut = x_sut + v
        ours.append(p.detach().clone()), ema.append(x_ema), sut.append(x_sut)
    return torch.stack(ours), torch.stack(ema), torch.stack(sut)


def test_momentum_conventions_agree_with_constant_lr():
    ours, ema, sut = momentum_paths([0.05] * 60)
    torch.testing.assert_close(ema, ours, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sut, ours, rtol=1e-12, atol=1e-12)


def test_sutskever_differs_when_lr_changes_but_ema_does_not():
    lrs = [0.05 * 0.9**t for t in range(60)]  # an exponential schedule
    ours, ema, sut = momentum_paths(lrs)
    torch.testing.assert_close(ema, ours, rtol=1e-12, atol=1e-12)
    assert float((sut - ours).abs().max()) > 1e-3


def test_first_step_is_plain_gradient_step_even_with_dampening(device):
    p = torch.tensor([1.0, 2.0], device=device, requires_grad=True)
    opt = SGD([p], lr=0.5, momentum=0.9, dampening=0.9)
    p.grad = torch.tensor([1.0, -1.0], device=device)
    opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.tensor([1.0, -1.0], device=device))  # b_1 = g_1
    assert torch.equal(p.detach(), torch.tensor([0.5, 2.5], device=device))


# ---------------------------------------------------------------------------
# Validation, with torch.optim's messages


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-0.1), r"Invalid learning rate: -0.1"),
        (dict(lr=float("nan")), r"Invalid learning rate: nan"),
        (dict(lr=0.1, momentum=-0.5), r"Invalid momentum value: -0.5"),
        (dict(lr=0.1, weight_decay=-1e-4), r"Invalid weight_decay value: -0.0001"),
        (dict(lr=0.1, nesterov=True), r"Nesterov momentum requires a momentum and zero dampening"),
        (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), r"Nesterov momentum requires a momentum"),
    ],
)
def test_invalid_hyperparameters(kwargs, match):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        SGD([p], **kwargs)
    if "nan" not in match:  # the same inputs that torch refuses (torch lets a NaN lr through)
        with pytest.raises(ValueError, match=match):
            torch.optim.SGD([p], **kwargs)


def test_empty_parameter_list():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
