"""book.practice's kernels against PyTorch: clipping, initializers, gradient checking, the monitor.

Clipping and initialization are compared with torch.nn.utils and torch.nn.init bit for bit;
gradient_check's verdicts with torch.autograd.gradcheck's and its Jacobians with
torch.autograd.functional.jacobian; the monitor's records with values computed by a
hand-written training loop and with closed forms.
"""

from __future__ import annotations

import doctest
import itertools
import math

import pytest
import torch
from torch import nn

import book.practice.clip as clip_module
import book.practice.gradcheck as gradcheck_module
import book.practice.init as init_module
import book.practice.monitor as monitor_module
from book.data import minibatches
from book.practice.clip import clip_grad_norm_, clip_grad_value_, grad_norm
from book.practice.gradcheck import GradientCheck, GradientCheckError, gradient_check
from book.practice.init import (
    calculate_gain,
    fans,
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    xavier_normal_,
    xavier_uniform_,
)
from book.practice.monitor import Monitor
from book.train import fit

INF = float("inf")


def gen(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------------------
# Gradient clipping


SHAPES = [(3, 4), (5,), (2, 3, 4), (1,), (6, 2)]


def params_with_grads(device, dtype, scale, seed=0, dtypes=None):
    """Two identical lists of parameters with random gradients of mixed shapes; the third has no grad."""
    g = gen(seed)
    ours, theirs = [], []
    for k, shape in enumerate(SHAPES):
        dt = dtypes[k] if dtypes else dtype
        p = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dt)
        grad = (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(device, dt)
        a, b = p.clone().requires_grad_(), p.clone().requires_grad_()
        if k != 2:  # one parameter without a gradient: skipped by both
            a.grad, b.grad = grad.clone(), grad.clone()
        ours.append(a)
        theirs.append(b)
    return ours, theirs


def assert_within_ulp(a, b, ulps=1):
    """|a - b| is at most `ulps` units in the last place of the larger one."""
    a, b = a.detach(), b.detach()
    assert a.dtype == b.dtype and a.shape == b.shape
    big = torch.maximum(a.abs(), b.abs())
    ulp = torch.nextafter(big, torch.full_like(big, INF)) - big
    assert bool(((a - b).abs() <= ulps * ulp).all()), (a, b)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, INF, 3.0], ids=["L1", "L2", "Linf", "L3"])
@pytest.mark.parametrize("foreach", [None, True, False], ids=["foreach-default", "foreach", "for-loop"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "no-clip"])
def test_clip_grad_norm_equals_torch(device, dtype, norm_type, foreach, max_norm):
    ours, theirs = params_with_grads(device, dtype, scale=2.0)
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type, foreach=foreach)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type, foreach=foreach)
    assert total.device == expected.device and total.dtype == expected.dtype
    assert torch.equal(total, expected)
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad)
    # The returned norm is the norm before clipping: the closed form on the concatenated gradient.
    grads = [p.grad for p in params_with_grads(device, torch.float64, 2.0)[0] if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    closed = flat.abs().max() if norm_type == INF else flat.abs().pow(norm_type).sum().pow(1 / norm_type)
    assert math.isclose(float(total), float(closed), rel_tol=1e-5)
    after = [p.grad.double().flatten() for p in ours if p.grad is not None]
    after_norm = torch.linalg.vector_norm(torch.cat(after), norm_type)
    assert float(after_norm) <= max_norm * (1 + 1e-5)


def test_clip_grad_norm_mixed_dtypes_within_one_ulp(device):
    """Several dtypes: torch orders the groups by a hash map, so allow one unit in the last place."""
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64, torch.float32]
    ours, theirs = params_with_grads(device, None, scale=3.0, dtypes=dtypes)
    total = clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert_within_ulp(total, expected)
    for a, b in zip(ours, theirs):  # a factor one ulp off can move a product by two
        if a.grad is not None:
            assert_within_ulp(a.grad, b.grad, ulps=2)


def test_clip_grad_norm_argument_forms(device):
    """A single tensor, a generator of parameters, no gradients at all, an empty list."""
    w = torch.zeros(4, device=device, requires_grad=True)
    w.grad = torch.tensor([3.0, 4.0, 0.0, 12.0], device=device)
    v = w.detach().clone().requires_grad_()
    v.grad = w.grad.clone()
    assert torch.equal(clip_grad_norm_(w, 1.0), torch.nn.utils.clip_grad_norm_(v, 1.0))
    assert torch.equal(w.grad, v.grad)

    model = nn.Linear(3, 2).to(device)
    twin = nn.Linear(3, 2).to(device)
    twin.load_state_dict(model.state_dict())
    for m in (model, twin):
        m(torch.ones(5, 3, device=device)).pow(2).sum().backward()
    assert torch.equal(clip_grad_norm_(model.parameters(), 0.1), torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.1))
    assert torch.equal(model.weight.grad, twin.weight.grad)

    no_grad = [torch.zeros(3, device=device, requires_grad=True)]
    for params in (no_grad, []):
        ours, theirs = clip_grad_norm_(params, 1.0), torch.nn.utils.clip_grad_norm_(params, 1.0)
        assert torch.equal(ours, theirs) and ours.device == theirs.device
    with pytest.warns(UserWarning, match="empty generator"):
        clip_grad_norm_((p for p in []), 1.0)


def test_clip_grad_norm_nonfinite(device):
    ours, theirs = params_with_grads(device, torch.float32, scale=1.0)
    ours[0].grad[1, 1] = INF
    theirs[0].grad[1, 1] = INF
    with pytest.raises(RuntimeError, match="non-finite") as ours_error:
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as torch_error:
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    assert str(ours_error.value) == str(torch_error.value)
    # Without the flag both scale by 1 / inf: the same NaNs and zeros.
    total = clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert torch.equal(total, expected) and math.isinf(float(total))
    for a, b in zip(ours, theirs):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)


def test_clip_grad_norm_invalid_max_norm():
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match="max_norm must be >= 0, got -1.0"):
        clip_grad_norm_(w, -1.0)
    with pytest.raises(ValueError, match="max_norm must not be NaN"):
        clip_grad_norm_(w, math.nan)
    with pytest.raises(TypeError, match="max_norm must be a real number, got str"):
        clip_grad_norm_(w, "1")
    # max_norm = inf measures without clipping, as in torch
    assert float(clip_grad_norm_(w, INF)) == pytest.approx(math.sqrt(2)) and torch.equal(w.grad, torch.ones(2))


@pytest.mark.parametrize("norm_type", [1.0, 2.0, INF, 3.0])
def test_grad_norm_is_torch_total_norm_and_modifies_nothing(device, dtype, norm_type):
    ours, _ = params_with_grads(device, dtype, scale=5.0)
    before = [p.grad.clone() if p.grad is not None else None for p in ours]
    expected = torch.nn.utils.get_total_norm([p.grad for p in ours if p.grad is not None], norm_type)
    assert torch.equal(grad_norm(ours, norm_type), expected)
    for p, b in zip(ours, before):
        assert (p.grad is None and b is None) or torch.equal(p.grad, b)
    assert torch.equal(grad_norm([]), torch.tensor(0.0))


@pytest.mark.parametrize("foreach", [None, True, False], ids=["foreach-default", "foreach", "for-loop"])
@pytest.mark.parametrize("clip_value", [0.0, 0.3, 10.0])
def test_clip_grad_value_equals_torch(device, dtype, foreach, clip_value):
    ours, theirs = params_with_grads(device, dtype, scale=1.0)
    ours[0].grad[0, 0] = math.nan
    theirs[0].grad[0, 0] = math.nan
    assert clip_grad_value_(ours, clip_value, foreach=foreach) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value, foreach=foreach)
    for a, b in zip(ours, theirs):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)
            finite = a.grad[~a.grad.isnan()]
            assert bool((finite.abs() <= clip_value).all())


def test_clip_grad_value_invalid():
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match="clip_value must be >= 0, got -0.5"):
        clip_grad_value_(w, -0.5)


# ---------------------------------------------------------------------------
# Initialization


INIT_SHAPES = [(7, 5), (16, 3, 5, 5), (4, 6, 3), (2, 3, 2, 2, 2)]


def test_fans_match_torch_and_the_layers():
    assert fans(nn.Linear(784, 10).weight) == (784, 10)
    assert fans(nn.Conv2d(3, 16, 5).weight) == (3 * 25, 16 * 25)
    assert fans(nn.Conv1d(4, 8, 3).weight) == (12, 24)
    for shape in INIT_SHAPES:
        assert fans(torch.empty(shape)) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def test_calculate_gain_equals_torch():
    names = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "sigmoid", "tanh", "relu", "selu"]
    for name in names:
        assert calculate_gain(name) == torch.nn.init.calculate_gain(name)
    for slope in (None, 0, 0.01, 0.2, math.sqrt(5), 3):
        assert calculate_gain("leaky_relu", slope) == torch.nn.init.calculate_gain("leaky_relu", slope)
    assert calculate_gain("relu") == math.sqrt(2) and calculate_gain("tanh") == 5 / 3


@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_"])
def test_xavier_bit_equal_to_torch(device, dtype, name):
    ours, theirs = getattr(init_module, name), getattr(torch.nn.init, name)
    for shape, gain in itertools.product(INIT_SHAPES, [1.0, 5 / 3, math.sqrt(2), 0.5]):
        a = torch.empty(shape, device=device, dtype=dtype)
        b = torch.empty(shape, device=device, dtype=dtype)
        assert ours(a, gain=gain, generator=gen(3, device)) is a
        theirs(b, gain=gain, generator=gen(3, device))
        assert torch.equal(a, b), (shape, gain)


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_bit_equal_to_torch(device, dtype, name):
    ours, theirs = getattr(init_module, name), getattr(torch.nn.init, name)
    nonlinearities = ["leaky_relu", "relu", "tanh", "linear", "selu", "sigmoid", "conv2d"]
    for shape, a_, mode, nl in itertools.product(INIT_SHAPES[:3], [0, 0.2, math.sqrt(5)], ["fan_in", "fan_out"],
                                                   nonlinearities):
        a = torch.empty(shape, device=device, dtype=dtype)
        b = torch.empty(shape, device=device, dtype=dtype)
        assert ours(a, a=a_, mode=mode, nonlinearity=nl, generator=gen(5, device)) is a
        theirs(b, a=a_, mode=mode, nonlinearity=nl, generator=gen(5, device))
        assert torch.equal(a, b), (shape, a_, mode, nl)


def test_initializers_use_the_global_generator_like_torch():
    """Without a generator both draw from torch's global one: same seed, same weights."""
    for ours, theirs in [(xavier_uniform_, torch.nn.init.xavier_uniform_),
                         (kaiming_normal_, torch.nn.init.kaiming_normal_)]:
        torch.manual_seed(11)
        a = ours(torch.empty(6, 9))
        torch.manual_seed(11)
        b = theirs(torch.empty(6, 9))
        assert torch.equal(a, b)


def test_initializers_on_parameters_build_no_graph():
    layer = nn.Conv2d(3, 8, 3)
    out = kaiming_uniform_(layer.weight, nonlinearity="relu", generator=gen(0))
    assert out is layer.weight and out.grad_fn is None and out.requires_grad
    assert torch.equal(out, torch.nn.init.kaiming_uniform_(torch.empty(8, 3, 3, 3), nonlinearity="relu",
                                                           generator=gen(0)))


def test_lecun_normal_against_torch_and_the_formula(device):
    a = lecun_normal_(torch.empty(1000, 1000, device=device), generator=gen(0, device))
    b = torch.nn.init.kaiming_normal_(torch.empty(1000, 1000, device=device), nonlinearity="linear",
                                      generator=gen(0, device))
    assert torch.equal(a, b)
    # std 1/sqrt(fan_in); the sample std of 1e6 normal draws is within 0.07% (one sd): 2% is ~28 sd.
    std = 1 / math.sqrt(1000)
    assert abs(a.std().item() / std - 1) < 0.02
    assert abs(a.mean().item()) < 5 * std / 1000  # 5 sd of the sample mean
    conv = lecun_normal_(torch.empty(64, 16, 3, 3), generator=gen(1))  # fan_in = 144, 9216 draws
    assert abs(conv.std().item() * math.sqrt(144) - 1) < 0.05  # sd of the ratio 0.74%: 5% is ~7 sd


def test_initializer_variances_match_the_papers():
    """The closed forms of the docstrings, on big tensors (2% is more than 20 sample sd)."""
    w = torch.empty(1000, 500)
    assert xavier_normal_(w, generator=gen(0)).var().item() == pytest.approx(2 / 1500, rel=0.02)
    assert xavier_uniform_(w, generator=gen(0)).var().item() == pytest.approx(2 / 1500, rel=0.02)
    assert bool(w.abs().max() <= math.sqrt(6 / 1500))
    assert kaiming_normal_(w, nonlinearity="relu", generator=gen(0)).var().item() == pytest.approx(2 / 500, rel=0.02)
    assert kaiming_uniform_(w, mode="fan_out", nonlinearity="relu",
                            generator=gen(0)).var().item() == pytest.approx(2 / 1000, rel=0.02)


def test_initializer_errors():
    for f in (xavier_uniform_, xavier_normal_, kaiming_uniform_, kaiming_normal_, lecun_normal_, fans):
        with pytest.raises(ValueError, match="at least 2 dimensions.*got shape \\(5,\\)"):
            f(torch.empty(5))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan_avg'"):
        kaiming_normal_(torch.empty(3, 4), mode="fan_avg")
    with pytest.raises(ValueError, match="unknown nonlinearity 'swish'; use one of linear"):
        kaiming_uniform_(torch.empty(3, 4), nonlinearity="swish")
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        calculate_gain("softmax")
    with pytest.raises(ValueError, match="negative slope"):
        calculate_gain("leaky_relu", "0.1")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        xavier_normal_(torch.empty(3, 4), generator=0)
    with pytest.raises(TypeError, match="tensor must be a torch.Tensor"):
        fans([[1.0, 2.0]])
    # torch is case-insensitive about the mode: so are we
    a, b = torch.empty(4, 3), torch.empty(4, 3)
    kaiming_normal_(a, mode="FAN_OUT", generator=gen(0))
    torch.nn.init.kaiming_normal_(b, mode="FAN_OUT", generator=gen(0))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# Gradient checking


class Sin(torch.autograd.Function):
    """sin, with a correct backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.cos()


class SinWrongSign(Sin):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return -grad * x.cos()


class SinOneElement(Sin):
    """Correct except one entry of the input gradient, 50% too large."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        out = grad * x.cos()
        out[1, 2] = out[1, 2] * 1.5
        return out


class Square(torch.autograd.Function):
    """x^2; the buggy one forgets the factor 2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * grad * x


class SquareNoTwo(Square):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x


class MatMul(torch.autograd.Function):
    """A @ B with both gradients; the buggy one forgets a transpose."""

    transpose = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad @ b.T, a.T @ grad


class MatMulNoTranspose(MatMul):
    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad @ b, a.T @ grad  # dA should be grad @ B^T: wrong unless B is symmetric


def rand(*shape, seed=0, device="cpu", requires_grad=True):
    x = torch.randn(*shape, generator=gen(seed), dtype=torch.float64).to(device)
    return x.requires_grad_(requires_grad)


def mlp(x, w1, b1, w2):
    return torch.tanh(x @ w1.T + b1) @ w2.T


def correct_cases(device):
    x = rand(3, 4, device=device)
    return {
        "tanh": (torch.tanh, (x,)),
        "softmax": (lambda t: torch.softmax(t, dim=-1), (x,)),
        "softmax-int-arg": (torch.softmax, (x, 1)),
        "matmul": (torch.matmul, (rand(3, 4, seed=1, device=device), rand(4, 2, seed=2, device=device))),
        "mlp": (mlp, (rand(5, 3, seed=3, device=device), rand(4, 3, seed=4, device=device),
                      rand(4, seed=5, device=device), rand(2, 4, seed=6, device=device))),
        "two-outputs": (lambda a, b: (a.sin() * b, (a @ b.T).exp()),
                        (rand(2, 3, seed=7, device=device), rand(2, 3, seed=8, device=device))),
        "square-fn": (Square.apply, (x,)),
        "matmul-fn": (MatMul.apply, (rand(3, 3, seed=9, device=device), rand(3, 3, seed=10, device=device))),
        "sin-fn": (Sin.apply, (x,)),
        "only-some-inputs": (torch.matmul, (rand(3, 4, seed=1, device=device),
                                            rand(4, 2, seed=2, device=device, requires_grad=False))),
    }


def buggy_cases(device):
    x = rand(3, 4, device=device) + torch.sign(rand(3, 4, device=device)).detach()  # away from 0
    x = x.detach().requires_grad_()
    return {
        "wrong-sign": (SinWrongSign.apply, (x,)),
        "missing-2": (SquareNoTwo.apply, (x,)),
        "no-transpose": (MatMulNoTranspose.apply,
                         (rand(3, 3, seed=9, device=device), rand(3, 3, seed=10, device=device))),
        "one-element": (SinOneElement.apply, (x,)),
    }


def test_gradient_check_agrees_with_torch_on_correct_functions(device):
    for name, (f, inputs) in correct_cases(device).items():
        result = gradient_check(f, inputs)
        assert isinstance(result, GradientCheck)
        assert torch.autograd.gradcheck(f, inputs, raise_exception=False), name
        assert result.passed and bool(result), (name, result)
        assert gradient_check(f, inputs, raise_exception=True).passed  # no exception


def test_gradient_check_agrees_with_torch_on_buggy_functions(device):
    for name, (f, inputs) in buggy_cases(device).items():
        assert not torch.autograd.gradcheck(f, inputs, raise_exception=False), name
        result = gradient_check(f, inputs)
        assert not result.passed and not bool(result), name
        with pytest.raises(GradientCheckError):
            gradient_check(f, inputs, raise_exception=True)


def test_gradient_check_names_the_planted_element():
    x = (rand(3, 4) + 2).detach().requires_grad_()
    result = gradient_check(SinOneElement.apply, x)
    w = result.worst
    assert (w.input, w.index, w.output, w.output_index) == (0, (1, 2), 0, (1, 2))
    true = math.cos(x[1, 2].item())
    assert w.numerical == pytest.approx(true, rel=1e-8)
    assert w.analytical == pytest.approx(1.5 * true, rel=1e-12)
    with pytest.raises(GradientCheckError, match=r"d out\[1, 2\] / d x\[1, 2\]") as error:
        gradient_check(SinOneElement.apply, x, raise_exception=True)
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert f"{w.analytical:.10g}" in message and f"{w.numerical:.10g}" in message
    assert "FAILED" in message and error.value.result.worst == w


def test_gradient_check_names_input_and_output_positions():
    """A bug in the second output's gradient with respect to the second input."""
    a, b = rand(3, 3, seed=1), rand(3, 3, seed=2)
    f = lambda a, b: (a.tanh(), MatMulNoTranspose.apply(b, a))  # noqa: E731  d out[1] / d inputs[1] is wrong
    result = gradient_check(f, (a, b))
    assert not result.passed and result.worst.input == 1 and result.worst.output == 1
    assert result.errors[0] < 1e-6 and result.errors[1] > 0.01
    assert "d out[1][" in result.summary() and "/ d inputs[1][" in result.summary()


def test_gradient_check_relative_error_is_as_documented():
    """Missing factor 2: analytical x, numerical 2x, so the relative error is |x - 2x| / |2x| = 1/2."""
    x = torch.tensor([[1.5, -2.0], [0.5, 3.0]], dtype=torch.float64, requires_grad=True)
    result = gradient_check(SquareNoTwo.apply, x)
    assert result.errors == [pytest.approx(0.5, rel=1e-8)]
    assert gradient_check(Square.apply, x).errors[0] < 1e-8
    # the worst entry is the one furthest over its tolerance atol + rtol |n|: the largest |x|
    assert result.worst.index == (1, 1) and result.worst.ratio == pytest.approx(3 / (1e-5 + 1e-3 * 6), rel=1e-6)


def test_gradient_check_tolerances_decide_like_torch():
    """An error of 0.5% fails at rtol 1e-3 and passes at rtol 1e-2, for both."""
    class Scaled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 3 * x

        @staticmethod
        def backward(ctx, grad):
            return grad * 3 * 1.005

    x = rand(4)
    for rtol in (1e-3, 1e-2):
        ours = gradient_check(Scaled.apply, x, rtol=rtol).passed
        assert ours == torch.autograd.gradcheck(Scaled.apply, (x,), rtol=rtol, raise_exception=False)
    assert not gradient_check(Scaled.apply, x, rtol=1e-3) and gradient_check(Scaled.apply, x, rtol=1e-2)


def test_gradient_check_jacobians_equal_torch():
    a, b = rand(2, 3, seed=1), rand(3, 2, seed=2)
    result = gradient_check(lambda a, b: (a @ b).sin(), (a, b))
    expected = torch.autograd.functional.jacobian(lambda a, b: (a @ b).sin(), (a, b))
    for i, (J, shape) in enumerate(zip(expected, [(2, 3), (3, 2)])):
        J = J.reshape(4, math.prod(shape))  # (output entries, input entries)
        torch.testing.assert_close(result.analytical[i], J, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(result.numerical[i], J, rtol=1e-6, atol=1e-8)


def test_gradient_check_casts_to_float64_and_leaves_inputs_alone():
    x32 = torch.randn(3, 2, generator=gen(0)).requires_grad_()
    before = x32.detach().clone()
    result = gradient_check(torch.tanh, x32)
    assert result.passed and any("float32" in n for n in result.notes)
    assert result.numerical[0].dtype == torch.float64
    assert x32.dtype == torch.float32 and torch.equal(x32.detach(), before) and x32.grad is None


def test_gradient_check_errors():
    x = torch.randn(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="no input requires grad"):
        gradient_check(torch.sin, x)
    with pytest.raises(ValueError, match="no output of f requires grad"):
        gradient_check(lambda t: t.detach() * 2, x.requires_grad_())
    with pytest.raises(TypeError, match="f must return a tensor"):
        gradient_check(lambda t: 1.0, x)
    with pytest.raises(ValueError, match="eps must be > 0"):
        gradient_check(torch.sin, x, eps=0)
    with pytest.raises(TypeError, match="f must be a function"):
        gradient_check(3, x)


# ---------------------------------------------------------------------------
# Monitor


def classification_data(n=64, dim=8, classes=3, seed=0):
    g = gen(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


def small_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def test_monitor_records_what_a_hand_written_loop_computes(device, one_thread):
    X, y = classification_data()
    X, y = X.to(device), y.to(device)
    loss_fn = nn.functional.cross_entropy

    model = small_mlp().to(device)
    monitor = Monitor(model)
    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.2), loss_fn, (X, y), epochs=2, batch_size=16,
                  val=(X[:20], y[:20]), step_callbacks=[monitor], progress=False, generator=gen(1))
    monitor.remove()

    # The same training by hand, recording with plain torch.
    ref = small_mlp().to(device)
    opt = torch.optim.SGD(ref.parameters(), lr=0.2)
    g = gen(1)
    expected = {"grad0": [], "grad2": [], "w0": [], "mean": [], "std": [], "dead": [], "loss": []}
    for _ in range(2):
        for Xb, yb in minibatches(X, y, 16, generator=g):
            opt.zero_grad()
            h = torch.tanh(ref[0](Xb))
            loss = loss_fn(ref[2](h), yb)
            loss.backward()
            expected["grad0"].append(ref[0].weight.grad.pow(2).sum().sqrt().item())
            expected["grad2"].append(ref[2].weight.grad.pow(2).sum().sqrt().item())
            expected["w0"].append(ref[0].weight.detach().pow(2).sum().sqrt().item())
            expected["mean"].append(h.mean().item())
            expected["std"].append(((h - h.mean()) ** 2).mean().sqrt().item())
            expected["dead"].append((h <= 0).all(dim=0).float().mean().item())
            expected["loss"].append(loss.item())
            opt.step()

    assert monitor.steps == list(range(1, 9)) and len(history.steps) == 8
    assert monitor.losses == pytest.approx(expected["loss"], rel=1e-6) == history.steps
    assert monitor.grad_norms["0"] == pytest.approx(expected["grad0"], rel=1e-5)
    assert monitor.grad_norms["2"] == pytest.approx(expected["grad2"], rel=1e-5)
    assert monitor.weight_norms["0"] == pytest.approx(expected["w0"], rel=1e-5)
    assert monitor.output_means["1"] == pytest.approx(expected["mean"], rel=1e-4, abs=1e-6)
    assert monitor.output_stds["1"] == pytest.approx(expected["std"], rel=1e-5)
    assert monitor.dead_fractions["1"] == expected["dead"]
    assert set(monitor.grad_norms) == {"0", "2"} and set(monitor.output_means) == {"0", "1", "2"}
    for values in [*monitor.grad_norms.values(), *monitor.output_stds.values(), monitor.losses]:
        assert all(type(v) is float for v in values)


def test_monitor_every_and_table(one_thread):
    X, y = classification_data()
    model = small_mlp()
    with Monitor(model, every=3) as monitor:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.functional.cross_entropy, (X, y), epochs=2,
            batch_size=16, step_callbacks=[monitor], progress=False, generator=gen(0))
    assert monitor.steps == [1, 4, 7] and len(monitor.grad_norms["0"]) == 3
    table = monitor.table()
    assert table.splitlines()[0].startswith("step 7") and "Tanh" in table and "Linear" in table
    assert "step 4" in monitor.table(step=4) and "3 steps recorded" in monitor.summary()
    with pytest.raises(ValueError, match="step 5 was not recorded"):
        monitor.table(step=5)
    with pytest.raises(ValueError, match="every must be >= 1, got 0"):
        Monitor(model, every=0)


def test_monitor_detects_dead_relus():
    """Units whose bias is -100 never fire on standard normal inputs: exactly those are dead."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 1))
    with torch.no_grad():
        model[0].bias[:5] = -100.0  # |w . x| < 1 * 10 * 5 << 100 for these inputs
    X = torch.randn(128, 10, generator=gen(0)).clamp(-5, 5)
    with Monitor(model) as monitor:
        loss = model(X).pow(2).mean()
        loss.backward()
        monitor(1, model, loss.item())
        assert monitor.dead_fractions["1"] == [pytest.approx(5 / 20)]
        # a dead unit passes no gradient to its weights: the row of grad is exactly 0
        assert torch.equal(model[0].weight.grad[:5], torch.zeros(5, 10))
        with torch.no_grad():
            model[0].bias.fill_(-100.0)
        model.zero_grad()
        loss = model(X).pow(2).mean()
        loss.backward()
        monitor(2, model, loss.item())
    assert monitor.dead_fractions["1"][-1] == 1.0 and monitor.grad_norms["0"][-1] == 0.0
    assert monitor.output_means["1"][-1] == 0.0 and monitor.output_stds["1"][-1] == 0.0


@pytest.mark.parametrize("activation", [nn.Sigmoid, nn.Tanh])
def test_monitor_shows_vanishing_gradients_in_deep_saturating_nets(activation):
    """20 layers of sigmoid (slope <= 1/4) or tanh with torch's default init: the gradient
    norms shrink from the last layer to the first, by orders of magnitude overall."""
    torch.manual_seed(0)
    layers = []
    for _ in range(20):
        layers += [nn.Linear(32, 32), activation()]
    model = nn.Sequential(*layers, nn.Linear(32, 1))
    with Monitor(model) as monitor:
        X = torch.randn(64, 32, generator=gen(0))
        loss = model(X).pow(2).mean()
        loss.backward()
        monitor(1, model, loss.item())
    norms = [monitor.grad_norms[str(2 * k)][0] for k in range(20)]  # Linear layers, first to last
    assert norms[0] < 1e-4 * norms[-1]
    assert norms[0] < norms[5] < norms[10] < norms[15] < norms[-1]
    # the hand-computed gradient of the first layer agrees
    assert norms[0] == pytest.approx(model[0].weight.grad.norm().item(), rel=1e-6)


def test_monitor_hooks_are_removed_and_evaluation_is_ignored():
    model = small_mlp()
    monitor = Monitor(model, modules=["1", model[2]])
    assert list(monitor.watched) == ["1", "2"] and monitor.layers == ["2"]
    assert all(len(m._forward_hooks) == 1 for m in (model[1], model[2])) and not model[0]._forward_hooks
    with torch.no_grad():  # an evaluation pass: not recorded
        model(torch.randn(4, 8))
    model.zero_grad()
    model(torch.randn(4, 8)).sum().backward()
    monitor(1, model, 0.0)
    assert not math.isnan(monitor.output_means["1"][0])
    with torch.no_grad():
        model(torch.randn(4, 8))
    monitor(2, model, 0.0)
    assert math.isnan(monitor.output_means["1"][1])  # no training forward pass since the last step
    monitor.remove()
    monitor.remove()  # harmless twice
    assert not any(m._forward_hooks for m in model.modules())
    assert "hooks removed" in repr(monitor)


def test_monitor_conv_net_and_errors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with Monitor(model) as monitor:
        out = model(torch.randn(8, 1, 8, 8))
        out.sum().backward()
        monitor(1, model)
    assert set(monitor.grad_norms) == {"0", "3"} and "2" not in monitor.watched
    assert monitor.grad_norms["0"][0] == pytest.approx(model[0].weight.grad.norm().item(), rel=1e-6)
    assert math.isnan(monitor.losses[0])
    with pytest.raises(ValueError, match="no module named 'fc'"):
        Monitor(model, modules=["fc"])
    with pytest.raises(ValueError, match="not part of the model"):
        Monitor(model, modules=[nn.ReLU()])
    with pytest.raises(ValueError, match="no Linear, Conv or activation"):
        Monitor(nn.Sequential(nn.Flatten()))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        Monitor("model")


# ---------------------------------------------------------------------------
# Docstrings


@pytest.mark.parametrize("module", [clip_module, init_module, gradcheck_module, monitor_module],
                         ids=["clip", "init", "gradcheck", "monitor"])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
