"""book.optim.compiled: the one-pass compiled steps equal the single-tensor kernels.

Compiling is slow (seconds per option set), so the cases are few and chosen to cover every
branch of the compiled bodies (amsgrad, L2 and decoupled weight decay, maximize; SGD's
heavy ball with dampening and weight decay, and Nesterov), the tensors are just above
``compiled.MIN_NUMEL`` (smaller ones take the eager kernel), and each option set compiles
once per process (the compiled functions are cached). The whole file took 19 s on a
shared 2-core CPU with a cold TorchInductor cache, 8 s with a warm one; most of it is the
first compilation. It skips, with the reason, where
``torch.compile`` cannot work.
"""

from __future__ import annotations

import pytest
import torch

from book.optim import compiled
from book.optim import functional as F

_OK, _WHY = compiled.available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"torch.compile unavailable: {_WHY}")

N = compiled.MIN_NUMEL + 5  # just large enough for the compiled path; odd, to exercise the loop's tail
STEPS = 20


@pytest.fixture(scope="module")
def compiles() -> None:
    """Compile the default Adam step once; skip the module if compilation itself fails here."""
    p = torch.zeros(N)
    try:
        compiled.adam(p, torch.ones(N), torch.zeros(N), torch.zeros(N), None, torch.tensor(0.0))
    except Exception as err:  # a missing header, an unsupported platform ...
        pytest.skip(f"torch.compile failed on this machine: {type(err).__name__}: {err}")


def _reference_adam():
    """The single-tensor kernel (book.optim.functional.adam), or torch's own single-tensor Adam."""
    if hasattr(F, "adam"):
        return F.adam

    def torch_adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, *, lr, betas, eps,
                   weight_decay, amsgrad, maximize, decoupled_weight_decay):
        fn = torch.optim.adamw.adamw if decoupled_weight_decay else torch.optim.adam.adam
        fn([param], [grad], [exp_avg], [exp_avg_sq], [max_exp_avg_sq] if amsgrad else [], [step],
           foreach=False, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
           amsgrad=amsgrad, maximize=maximize, capturable=False, differentiable=False)

    return torch_adam


ADAM_CASES = [
    pytest.param(dict(), id="adam"),
    pytest.param(dict(amsgrad=True, weight_decay=0.1, eps=1e-6), id="amsgrad-l2"),
    pytest.param(dict(weight_decay=0.05, decoupled_weight_decay=True, maximize=True, betas=(0.8, 0.99)),
                 id="adamw-maximize"),
    pytest.param(dict(amsgrad=True, weight_decay=0.01, decoupled_weight_decay=True), id="adamw-amsgrad"),
]


def _assert_close(actual, expected, what):
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("options", ADAM_CASES)
def test_adam_equals_kernel(compiles, device, options):
    gen = torch.Generator().manual_seed(0)
    param = torch.randn(N, generator=gen).to(device)
    grads = [torch.randn(N, generator=gen).to(device) for _ in range(STEPS)]
    amsgrad = options.get("amsgrad", False)
    states = []
    for _ in range(2):  # (compiled, kernel): params, exp_avg, exp_avg_sq, max_exp_avg_sq, step
        states.append([param.clone(), torch.zeros_like(param), torch.zeros_like(param),
                       torch.zeros_like(param) if amsgrad else None, torch.tensor(0.0)])
    kernel = _reference_adam()
    for k, grad in enumerate(grads):
        lr = 0.01 * (1 - k / STEPS)  # a schedule: new values must not recompile (checked below)
        compiled.adam(states[0][0], grad, *states[0][1:], lr=lr, **options)
        kernel(states[1][0], grad, *states[1][1:], lr=lr, **{"betas": (0.9, 0.999), "eps": 1e-8,
               "weight_decay": 0.0, "amsgrad": False, "maximize": False, "decoupled_weight_decay": False,
               **options})
    for name, a, b in zip(["param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"], states[0], states[1]):
        if b is not None:
            _assert_close(a, b, name)
    assert not torch.equal(states[0][0], param)  # it moved


def test_adamw_is_decoupled_adam(compiles, device):
    gen = torch.Generator().manual_seed(1)
    p1 = torch.randn(N, generator=gen).to(device)
    p2 = p1.clone()
    s1 = [torch.zeros_like(p1), torch.zeros_like(p1), None, torch.tensor(0.0)]
    s2 = [torch.zeros_like(p1), torch.zeros_like(p1), None, torch.tensor(0.0)]
    for _ in range(3):
        grad = torch.randn(N, generator=gen).to(device)
        compiled.adamw(p1, grad, *s1, lr=0.01, weight_decay=0.05, maximize=True, betas=(0.8, 0.99))
        compiled.adam(p2, grad, *s2, lr=0.01, weight_decay=0.05, maximize=True, betas=(0.8, 0.99),
                      decoupled_weight_decay=True)
    torch.testing.assert_close(p1, p2, rtol=0, atol=0)


def test_no_recompilation_across_steps_and_learning_rates(compiles):
    from torch._dynamo.utils import counters

    p, m, v, t = torch.randn(N), torch.zeros(N), torch.zeros(N), torch.tensor(0.0)
    compiled.adam(p, torch.randn(N), m, v, None, t, lr=0.1)
    before = counters["stats"]["unique_graphs"]
    for k in range(5):
        compiled.adam(p, torch.randn(N), m, v, None, t, lr=0.1 / (k + 2))
    assert counters["stats"]["unique_graphs"] == before
    assert t.item() == 6


SGD_CASES = [
    pytest.param(dict(momentum=0.9, dampening=0.1, weight_decay=0.01), id="momentum-dampening-l2"),
    pytest.param(dict(momentum=0.8, nesterov=True, maximize=True), id="nesterov-maximize"),
]


@pytest.mark.parametrize("options", SGD_CASES)
def test_sgd_equals_kernel(compiles, device, options):
    gen = torch.Generator().manual_seed(2)
    p1 = torch.randn(N, generator=gen).to(device)
    p2 = p1.clone()
    b1 = b2 = None
    for k in range(STEPS):
        grad = torch.randn(N, generator=gen).to(device)
        lr = 0.01 * (1 - k / STEPS)
        b1 = compiled.sgd(p1, grad, b1, lr=lr, **options)
        b2 = F.sgd(p2, grad, b2, lr=lr, **options)
    _assert_close(p1, p2, "param")
    _assert_close(b1, b2, "momentum_buffer")
    assert any(key[0] == "sgd" for key in compiled.compile_seconds)  # the compiled path ran


def test_amsgrad_without_buffer_raises():
    p = torch.zeros(N)
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        compiled.adam(p, p, p.clone(), p.clone(), None, torch.tensor(0.0), amsgrad=True)


@pytest.mark.parametrize(
    "name, options",
    [
        pytest.param("Adam", dict(lr=0.01), id="Adam"),
        pytest.param("AdamW", dict(lr=0.01, weight_decay=0.05, maximize=True, betas=(0.8, 0.99)), id="AdamW"),
        pytest.param("SGD", dict(lr=0.01, momentum=0.8, nesterov=True, maximize=True), id="SGD"),
    ],
)
def test_class_compiled_equals_torch(compiles, device, name, options):
    import book.optim

    gen = torch.Generator().manual_seed(3)
    shapes = [(N,), (7, 3)]  # one tensor on the compiled path, one small one on the eager kernel
    ours = [torch.randn(s, generator=gen).to(device) for s in shapes]
    theirs = [p.clone() for p in ours]
    opt = getattr(book.optim, name)(ours, compiled=True, **options)
    ref = getattr(torch.optim, name)(theirs, foreach=False, **options)
    for _ in range(STEPS):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen).to(device)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        _assert_close(a, b, "param")
        assert set(opt.state[a]) == set(ref.state[b])
        for key in ref.state[b]:
            _assert_close(opt.state[a][key], ref.state[b][key], key)
    assert any(key[0] == name.lower().rstrip("w") for key in compiled.compile_seconds)  # compiled path ran


@pytest.mark.parametrize(
    "name, options",
    [
        pytest.param("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1), id="Adam"),
        pytest.param("SGD", dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01), id="SGD"),
    ],
)
def test_class_chunks_of_many_tensors_equal_torch(compiles, device, name, options):
    """More large tensors than compiled.CHUNK, of different sizes: chunked calls, the rest one by one."""
    import book.optim

    gen = torch.Generator().manual_seed(4)
    shapes = [(N + 3 * k,) for k in range(compiled.CHUNK + 1)] + [(5,)]
    ours = [torch.randn(s, generator=gen).to(device) for s in shapes]
    theirs = [p.clone() for p in ours]
    opt = getattr(book.optim, name)(ours, compiled=True, **options)
    ref = getattr(torch.optim, name)(theirs, foreach=False, **options)
    for _ in range(5):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen).to(device)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        _assert_close(a, b, "param")
        for key in ref.state[b]:
            _assert_close(opt.state[a][key], ref.state[b][key], key)
    assert any(key[0] == name.lower() + "_chunk" for key in compiled.compile_seconds)
