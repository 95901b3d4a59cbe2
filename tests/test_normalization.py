"""book.normalization against torch.nn / torch.nn.functional: outputs, gradients, running statistics."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from book.normalization import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNormFunction,
    LayerNorm,
    LayerNormFunction,
    batch_norm,
    layer_norm,
)


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def close(a, b, dtype, what=""):
    torch.testing.assert_close(a, b, **tol(dtype), msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------
# Modules vs torch.nn, several steps, train then eval

BN_CASES = [
    # (ours, theirs, input shape, kwargs)
    (BatchNorm1d, torch.nn.BatchNorm1d, (16, 5), {}),
    (BatchNorm1d, torch.nn.BatchNorm1d, (8, 5, 7), {}),
    (BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 6), {}),
    (BatchNorm1d, torch.nn.BatchNorm1d, (16, 5), {"momentum": None}),
    (BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 6), {"momentum": None}),
    (BatchNorm1d, torch.nn.BatchNorm1d, (16, 5), {"momentum": 0.3, "eps": 1e-3}),
    (BatchNorm1d, torch.nn.BatchNorm1d, (8, 5, 7), {"affine": False}),
    (BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 6), {"affine": False, "momentum": None}),
    (BatchNorm1d, torch.nn.BatchNorm1d, (16, 5), {"track_running_stats": False}),
    (BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 6), {"track_running_stats": False, "affine": False}),
    (BatchNorm1d, torch.nn.BatchNorm1d, (2, 5), {}),  # the smallest batch: m = 2 values per channel
]
if "bias" in inspect.signature(torch.nn.BatchNorm1d).parameters:  # recent torch: a scale without a shift
    BN_CASES += [
        (BatchNorm1d, torch.nn.BatchNorm1d, (8, 5, 7), {"bias": False}),
        (BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 6), {"bias": False, "momentum": None}),
    ]


def _ids(case):
    ours, _, shape, kw = case
    return f"{ours.__name__}-{'x'.join(map(str, shape))}-" + (",".join(f"{k}={v}" for k, v in kw.items()) or "default")


@pytest.mark.parametrize("case", BN_CASES, ids=[_ids(c) for c in BN_CASES])
def test_batchnorm_module_matches_torch(case, device, dtype):
    ours_cls, theirs_cls, shape, kw = case
    C = shape[1]
    gen = torch.Generator().manual_seed(0)
    ours = ours_cls(C, device=device, dtype=dtype, **kw)
    theirs = theirs_cls(C, device=device, dtype=dtype, **kw)
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1] or "bias" not in repr(theirs)
    if ours.affine:  # non-trivial gamma and beta
        with torch.no_grad():
            w = torch.rand(C, generator=gen, dtype=dtype) + 0.5
            b = torch.randn(C, generator=gen, dtype=dtype)
            for m in (ours, theirs):
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.copy_(b)
    for step in range(4):  # training steps: the running statistics accumulate
        x = (torch.randn(shape, generator=gen, dtype=dtype) * (step + 1) + step).to(device)
        g = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ours(x1), theirs(x2)
        close(y1, y2, dtype, f"output, step {step}")
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        close(x1.grad, x2.grad, dtype, f"input gradient, step {step}")
        if ours.affine:
            close(ours.weight.grad, theirs.weight.grad, dtype, f"weight gradient, step {step}")
        if ours.bias is not None:
            close(ours.bias.grad, theirs.bias.grad, dtype, f"bias gradient, step {step}")
        if ours.track_running_stats:
            close(ours.running_mean, theirs.running_mean, dtype, f"running_mean, step {step}")
            close(ours.running_var, theirs.running_var, dtype, f"running_var, step {step}")
            assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == step + 1
        else:
            assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None
    ours.eval()
    theirs.eval()
    x = (torch.randn(shape, generator=gen, dtype=dtype) * 2 + 1).to(device).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y1, y2 = ours(x), theirs(x2)
    close(y1, y2, dtype, "eval output")
    y1.sum().backward()
    y2.sum().backward()
    close(x.grad, x2.grad, dtype, "eval input gradient")
    if ours.affine:
        close(ours.weight.grad, theirs.weight.grad, dtype, "weight gradient after eval")
    if ours.track_running_stats:  # eval mode leaves the running statistics alone
        close(ours.running_mean, theirs.running_mean, dtype, "running_mean after eval")
        assert int(ours.num_batches_tracked) == 4


def test_batchnorm_state_dict_interchange_with_torch(device):
    gen = torch.Generator().manual_seed(1)
    theirs = torch.nn.BatchNorm2d(3, momentum=0.2).to(device)
    for _ in range(3):
        theirs(torch.randn(4, 3, 5, 5, generator=gen).to(device) * 3 + 2)
    with torch.no_grad():
        theirs.weight.mul_(1.5)
        theirs.bias.add_(0.25)
    ours = BatchNorm2d(3, momentum=0.2, device=device)
    ours.load_state_dict(theirs.state_dict())  # strict: the same names
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, 5, 5, generator=gen).to(device)
    torch.testing.assert_close(ours(x), theirs(x))
    # ... and back, after training ours for a step
    ours.train()
    ours(torch.randn(4, 3, 5, 5, generator=gen).to(device))
    back = torch.nn.BatchNorm2d(3).to(device)
    back.load_state_dict(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert back.num_batches_tracked.dtype == torch.long


def test_layernorm_state_dict_interchange_with_torch(device):
    theirs = torch.nn.LayerNorm((3, 4)).to(device)
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    ours = LayerNorm((3, 4), device=device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 3, 4, device=device)
    torch.testing.assert_close(ours(x), theirs(x))


LN_CASES = [
    ((8, 6), 6, {}),
    ((4, 5, 6), (5, 6), {}),
    ((2, 3, 7), 7, {"eps": 1e-3}),
    ((8, 6), [6], {"elementwise_affine": False}),
    ((4, 5, 6), 6, {"bias": False}),
    ((1, 6), 6, {}),  # a batch of one is fine for layer norm
    ((6,), 6, {}),  # no batch dimension at all
]


@pytest.mark.parametrize("shape,normalized_shape,kw", LN_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in LN_CASES])
def test_layernorm_matches_torch(shape, normalized_shape, kw, device, dtype):
    gen = torch.Generator().manual_seed(0)
    ours = LayerNorm(normalized_shape, device=device, dtype=dtype, **kw)
    theirs = torch.nn.LayerNorm(normalized_shape, device=device, dtype=dtype, **kw)
    if "bias=" in repr(theirs):  # torch 2.11 printed no bias=; ours prints what the pinned torch prints
        assert repr(ours) == repr(theirs)
    with torch.no_grad():
        for name in ("weight", "bias"):
            if getattr(ours, name) is not None:
                v = torch.randn(getattr(ours, name).shape, generator=gen, dtype=dtype).to(device)
                getattr(ours, name).copy_(v)
                getattr(theirs, name).copy_(v)
    for mode in ("train", "eval"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = (torch.randn(shape, generator=gen, dtype=dtype) * 3 + 1).to(device)
        g = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ours(x1), theirs(x2)
        close(y1, y2, dtype, f"{mode} output")
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        close(x1.grad, x2.grad, dtype, f"{mode} input gradient")
        for name in ("weight", "bias"):
            if getattr(ours, name) is not None:
                close(getattr(ours, name).grad, getattr(theirs, name).grad, dtype, f"{mode} {name} gradient")
                getattr(ours, name).grad = None
                getattr(theirs, name).grad = None


# ---------------------------------------------------------------------------
# The functional form vs F.batch_norm


@pytest.mark.parametrize("shape", [(10, 4), (6, 4, 3), (3, 4, 2, 5)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_functional_batch_norm_matches_torch(shape, training, affine, device, dtype):
    gen = torch.Generator().manual_seed(2)
    C = shape[1]
    x = (torch.randn(shape, generator=gen, dtype=dtype) * 2 - 1).to(device)
    w = (torch.rand(C, generator=gen, dtype=dtype) + 0.5).to(device) if affine else None
    b = torch.randn(C, generator=gen, dtype=dtype).to(device) if affine else None
    rm1 = torch.randn(C, generator=gen, dtype=dtype).to(device)
    rv1 = (torch.rand(C, generator=gen, dtype=dtype) + 0.5).to(device)
    rm2, rv2 = rm1.clone(), rv1.clone()
    y1 = batch_norm(x, rm1, rv1, w, b, training=training, momentum=0.25, eps=1e-4)
    y2 = F.batch_norm(x, rm2, rv2, w, b, training=training, momentum=0.25, eps=1e-4)
    close(y1, y2, dtype, "output")
    close(rm1, rm2, dtype, "running_mean")
    close(rv1, rv2, dtype, "running_var")


def test_functional_batch_norm_training_without_running_stats(device, dtype):
    x = torch.randn(7, 3, 4, device=device, dtype=dtype)
    close(batch_norm(x, None, None, training=True), F.batch_norm(x, None, None, training=True), dtype)


def test_running_var_is_unbiased_and_momentum_weights_the_new_value(device):
    x = torch.tensor([[1.0], [2.0], [6.0]], device=device)  # mean 3, unbiased variance 7, biased 14/3
    rm, rv = torch.zeros(1, device=device), torch.ones(1, device=device)
    batch_norm(x, rm, rv, training=True, momentum=0.25)
    torch.testing.assert_close(rm, torch.tensor([0.75 * 0 + 0.25 * 3.0], device=device))
    torch.testing.assert_close(rv, torch.tensor([0.75 * 1 + 0.25 * 7.0], device=device))


# ---------------------------------------------------------------------------
# The hand-written backward passes: gradcheck in float64 and autograd of the naive forward


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2), (2, 3, 2, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_backward_gradcheck(shape, affine, device):
    gen = torch.Generator().manual_seed(3)
    C = shape[1]
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    inputs = [x]
    if affine:
        w = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.5).to(device).requires_grad_()
        b = torch.randn(C, generator=gen, dtype=torch.float64).to(device).requires_grad_()
        inputs += [w, b]
        fn = lambda x, w, b: BatchNormFunction.apply(x, w, b, 1e-5)[0]  # noqa: E731
    else:
        fn = lambda x: BatchNormFunction.apply(x, None, None, 1e-5)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(inputs))
    # the functional form, training mode with running statistics, too
    rm, rv = torch.zeros(C, dtype=torch.float64, device=device), torch.ones(C, dtype=torch.float64, device=device)
    assert torch.autograd.gradcheck(lambda x: batch_norm(x, rm, rv, training=True), (x,))


def test_batch_norm_backward_equals_autograd_of_naive_forward(device):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 4, 3, generator=gen, dtype=torch.float64).to(device)
    w = torch.randn(4, generator=gen, dtype=torch.float64).to(device)
    b = torch.randn(4, generator=gen, dtype=torch.float64).to(device)
    g = torch.randn(6, 4, 3, generator=gen, dtype=torch.float64).to(device)

    def naive(x, w, b):
        mu = x.mean(dim=(0, 2), keepdim=True)
        var = ((x - mu) ** 2).mean(dim=(0, 2), keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w.view(1, -1, 1) + b.view(1, -1, 1)

    a = [t.clone().requires_grad_() for t in (x, w, b)]
    c = [t.clone().requires_grad_() for t in (x, w, b)]
    (BatchNormFunction.apply(*a, 1e-5)[0] * g).sum().backward()
    (naive(*c) * g).sum().backward()
    for p, q, name in zip(a, c, ("x", "weight", "bias")):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_batch_norm_second_derivative_raises(device):
    x = torch.randn(4, 2, dtype=torch.float64, device=device, requires_grad=True)
    (gx,) = torch.autograd.grad(batch_norm(x, None, None, training=True).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|differentiable"):
        gx.sum().backward()


@pytest.mark.parametrize("shape,k", [((5, 4), 1), ((3, 2, 4), 2), ((4,), 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_backward_gradcheck(shape, k, affine, device):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    ns = shape[len(shape) - k :]
    if affine:
        w = torch.randn(ns, generator=gen, dtype=torch.float64).to(device).requires_grad_()
        b = torch.randn(ns, generator=gen, dtype=torch.float64).to(device).requires_grad_()
        assert torch.autograd.gradcheck(lambda x, w, b: LayerNormFunction.apply(x, k, w, b, 1e-5), (x, w, b))
    else:
        assert torch.autograd.gradcheck(lambda x: layer_norm(x, ns), (x,))


# ---------------------------------------------------------------------------
# Errors name the shapes


def test_errors(device):
    bn1, bn2 = BatchNorm1d(4, device=device), BatchNorm2d(4, device=device)
    with pytest.raises(ValueError, match=r"2D \(N, C\) or 3D .*shape \(2, 4, 3, 3\)"):
        bn1(torch.randn(2, 4, 3, 3, device=device))
    with pytest.raises(ValueError, match=r"4D .*shape \(2, 4\)"):
        bn2(torch.randn(2, 4, device=device))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\).*shape \(8, 3\) with 3 channels"):
        bn1(torch.randn(8, 3, device=device))
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training.*\(1, 4\)"):
        bn1(torch.randn(1, 4, device=device))
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training.*\(1, 4, 1, 1\)"):
        bn2(torch.randn(1, 4, 1, 1, device=device))
    bn1.eval()
    assert bn1(torch.randn(1, 4, device=device)).shape == (1, 4)  # eval mode: a batch of one is fine
    with pytest.raises(ValueError, match=r"running_mean has shape \(3,\).*\(5, 4\)"):
        batch_norm(torch.randn(5, 4, device=device), torch.zeros(3, device=device), torch.ones(4, device=device))
    with pytest.raises(ValueError, match=r"weight has shape \(2,\)"):
        batch_norm(torch.randn(5, 4, device=device), None, None, torch.ones(2, device=device), training=True)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        batch_norm(torch.randn(5, device=device), None, None, training=True)
    with pytest.raises(ValueError, match="needs running_mean"):
        batch_norm(torch.randn(5, 4, device=device), None, None, training=False)
    with pytest.raises(ValueError, match="momentum"):
        batch_norm(torch.randn(5, 4, device=device), None, None, training=True, momentum=1.5)
    with pytest.raises(ValueError, match=r"\(2, 5\) does not end with normalized_shape \(4,\)"):
        LayerNorm(4, device=device)(torch.randn(2, 5, device=device))
    with pytest.raises(ValueError, match="num_features"):
        BatchNorm1d(0)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm1d(3, momentum=-0.1)
    with pytest.raises(TypeError, match="normalized_shape"):
        LayerNorm("4")


# ---------------------------------------------------------------------------
# The chapter's claims, small


def _mlp(norm, depth=8, width=64, seed=0, device="cpu"):
    """The chapter's network: depth x (Linear -> [norm] -> ReLU) -> Linear, He-initialized."""
    torch.manual_seed(seed)
    layers, d = [], 64
    for _ in range(depth):
        linear = torch.nn.Linear(d, width)
        torch.nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        torch.nn.init.zeros_(linear.bias)
        layers += [linear] + ([norm(width)] if norm else []) + [torch.nn.ReLU()]
        d = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(d, 10)).to(device)




def _train(model, lr, data, epochs=5, batch_size=64):
    """Validation accuracy after SGD on the digits; 0 if the loss became NaN."""
    from book.optim import SGD
    from book.train import DivergenceError, evaluate, fit

    try:
        fit(model, SGD(model.parameters(), lr=lr), F.cross_entropy, data.train, epochs=epochs, batch_size=batch_size,
            progress=False, generator=torch.Generator().manual_seed(0))
    except DivergenceError:
        return 0.0
    return evaluate(model, F.cross_entropy, data.val)[1]


def test_eval_mode_makes_predictions_independent_of_the_batch(device):
    """Chapter 9: in train mode a sample's output depends on its batch mates; in eval mode it does not."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model = model.to(device)
    a, b = torch.randn(6, 5, device=device), torch.randn(6, 5, device=device) + 3
    first = torch.cat([a[:1], b[1:]])
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(a)[0], model(first)[0], atol=1e-3)
        model.eval()
        torch.testing.assert_close(model(a)[0], model(first)[0])


def test_layer_norm_is_independent_of_the_batch(device):
    ln = LayerNorm(8, device=device)
    a = torch.randn(5, 8, device=device)
    torch.testing.assert_close(ln(a)[:1], ln(a[:1]))
    ln.eval()
    torch.testing.assert_close(ln(a)[:1], ln(a[:1]))


def test_batch_norm_tolerates_a_larger_learning_rate_on_digits(device, one_thread):
    """Chapter 9's central claim: at lr 0.1 both 8-layer MLPs train; at lr 1 only the one with batch norm does.

    (The chapter sweeps six rates for 5 epochs; this is 3 epochs at two of them.)
    """
    from book.data import digits

    ds = digits(seed=0, device=device)
    acc = {(name, lr): _train(_mlp(norm, device=device), lr, ds, epochs=3)
           for name, norm in (("plain", None), ("bn", BatchNorm1d)) for lr in (0.1, 1.0)}
    assert acc["plain", 0.1] > 0.5 and acc["bn", 0.1] > 0.85, acc
    assert acc["plain", 1.0] < 0.3 and acc["bn", 1.0] > 0.85, acc


def test_forgetting_eval_mode_hurts_on_single_class_batches(device, one_thread):
    """Chapter 9: a trained batch-norm network evaluated in train mode on one-digit batches collapses."""
    from book.data import digits

    ds = digits(seed=0, device=device)
    model = _mlp(BatchNorm1d, depth=3, device=device)
    eval_acc = _train(model, 0.3, ds, epochs=3)
    X, y = ds.val.X, ds.val.y
    model.train()
    with torch.no_grad():
        correct = sum(int((model(X[y == k]).argmax(1) == k).sum()) for k in range(10))
    assert eval_acc > 0.9
    assert correct / len(y) < 0.5 * eval_acc


def test_batch_norm_fails_with_batches_of_two_where_layer_norm_does_not(device, one_thread):
    """Chapter 9: at batch size 2 batch norm trains far worse than layer norm (same steps, same rate)."""
    from book.data import Split, digits

    ds = digits(seed=0, device=device)
    ds.train = Split(ds.train.X[:400], ds.train.y[:400])
    acc = {name: _train(_mlp(norm, depth=3, device=device), 0.05, ds, epochs=1, batch_size=2)
           for name, norm in (("bn", BatchNorm1d), ("ln", LayerNorm))}
    assert acc["bn"] < acc["ln"] - 0.2, acc
