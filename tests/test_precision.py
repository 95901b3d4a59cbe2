"""Mixed precision: the formats' limits against their closed forms, the casts' losses against the
thresholds that follow from them, and a step under autocast against float32 and against the
recipe in PyTorch's AMP documentation (``scaler.scale(loss).backward(); scaler.step(opt);
scaler.update()``), on every available device.
"""

from __future__ import annotations

import copy
import doctest

import pytest
import torch
import torch.nn.functional as F

import book.precision as P
from book.precision import (autocast_dtypes, cast_report, check_autocast, float_format, mixed_precision_step,
                            supported_autocast_dtypes, underflow_fraction)

# ---------------------------------------------------------------------------
# Formats

FORMATS = [  # dtype, exponent bits e, mantissa bits m; the largest exponent is 2^(e-1) - 1
    (torch.float16, 5, 10),
    (torch.bfloat16, 8, 7),
    (torch.float32, 8, 23),
]


@pytest.mark.parametrize("dtype, e, m", FORMATS, ids=[str(f[0]) for f in FORMATS])
def test_float_format_matches_the_closed_forms(dtype, e, m):
    f = float_format(dtype)
    top = 2 ** (e - 1) - 1  # 15 for float16, 127 for bfloat16 and float32
    assert (f.exponent_bits, f.mantissa_bits, f.bits) == (e, m, 1 + e + m)
    assert f.smallest_normal == 2.0 ** (1 - top) and f.smallest_subnormal == 2.0 ** (1 - top - m)
    assert f.max == (2 - 2.0**-m) * 2.0**top and f.eps == 2.0**-m
    assert f.underflow_below == 2.0 ** (-top - m) and f.overflow_from == (2 - 2.0 ** -(m + 1)) * 2.0**top
    if dtype == torch.float16:
        assert (f.smallest_subnormal, f.smallest_normal, f.max) == (2.0**-24, 2.0**-14, 65504.0)


def test_float16_thresholds_are_where_the_cast_changes():
    """The thresholds of float_format are exactly where PyTorch's cast flushes, goes subnormal, overflows."""
    f = float_format(torch.float16)
    below = lambda x: torch.nextafter(torch.tensor(x), torch.tensor(0.0))  # the float32 just below x
    above = lambda x: torch.nextafter(torch.tensor(x), torch.tensor(1e9))
    half = lambda x: torch.as_tensor(x).to(torch.float16)
    assert f.underflow_below == 2.0**-25 and f.overflow_from == 65520.0
    assert half(2.0**-25) == 0 and half(above(2.0**-25)) == 2.0**-24  # a tie rounds to even (zero)
    assert half(2.0**-24) == 2.0**-24 and half(2.0**-14) == 2.0**-14
    assert half(below(2.0**-14 - 2.0**-25)).abs() < 2.0**-14 <= half(2.0**-14 - 2.0**-25)  # a tie rounds up to 2^-14
    assert torch.isfinite(half(below(65520.0))) and torch.isinf(half(65520.0))


def test_float_format_refuses_non_float_dtypes():
    with pytest.raises(TypeError, match="floating-point torch.dtype"):
        float_format(torch.int32)


# ---------------------------------------------------------------------------
# What a cast loses


def log_uniform(n, low, high, device, seed=0):
    """n float32 values with log2 |x| uniform in [low, high] and random signs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.exp2(low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64))
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    return (sign * x).float().to(device)


def predicted(x, scale=1.0):
    """The fractions that follow from the float16 thresholds alone (no cast)."""
    a = x.double().abs() * scale
    flushed = a <= 2.0**-25
    subnormal = (a > 2.0**-25) & (a < 2.0**-14 - 2.0**-25)
    overflow = a >= 65520.0
    n = len(x)
    return flushed.sum().item() / n, subnormal.sum().item() / n, overflow.sum().item() / n


@pytest.mark.parametrize("scale", [1.0, 2.0**-3, 2.0**16])
def test_cast_report_agrees_with_the_closed_form_thresholds(device, scale):
    x = log_uniform(20_000, -30.0, 18.0, device)
    report = cast_report(x, torch.float16, scale=scale)
    assert report.nonzero == len(x)
    assert (report.underflow, report.subnormal, report.overflow) == pytest.approx(predicted(x, scale), abs=0)
    assert report.underflow == underflow_fraction(x, scale=scale)


def test_values_at_the_thresholds(device):
    """Entries built at and around 2^-25 (flush), 2^-24 (smallest subnormal) and 2^-14 (smallest normal)."""
    t = lambda *v: torch.tensor(v, device=device)
    assert underflow_fraction(t(2.0**-25, -(2.0**-25), 2.0**-26, 2.0**-40)) == 1.0
    assert underflow_fraction(t(2.0**-24, 1.5 * 2.0**-25, -(2.0**-20))) == 0.0
    assert cast_report(t(2.0**-24, 2.0**-15, 2.0**-14, 1.0)) == (4, 0.0, 0.5, 0.0)
    # four of eight flushed at scale 1; none at 2^16, where 2^-40 * 2^16 = 2^-24 is the smallest subnormal
    values = t(2.0**-40, 2.0**-30, 2.0**-26, 2.0**-25, 2.0**-24, 2.0**-20, 2.0**-10, 1.0)
    assert underflow_fraction(values) == 0.5
    assert underflow_fraction(values, scale=2.0**16) == 0.0
    assert underflow_fraction(values, scale=2.0**15) == 1 / 8  # 2^-40 * 2^15 = 2^-25: a tie, flushed


def test_bfloat16_keeps_float32s_range(device):
    x = log_uniform(5_000, -126.0, 127.0, device)
    report = cast_report(x, torch.bfloat16)
    assert report == (5_000, 0.0, 0.0, 0.0)
    assert cast_report(x, torch.float16).underflow > 0.3 and cast_report(x, torch.float16).overflow > 0.3


def test_zeros_infs_and_missing_gradients_do_not_count(device):
    a = torch.tensor([0.0, 0.0, 1e-9, float("inf"), float("nan")], device=device)
    assert cast_report([a, None, torch.zeros(3, device=device)]) == (1, 1.0, 0.0, 0.0)
    assert cast_report([None, torch.zeros(2, device=device)]) == (0, 0.0, 0.0, 0.0)
    assert underflow_fraction([]) == 0.0


def test_cast_report_of_a_models_gradients(device):
    model = torch.nn.Linear(3, 2).to(device)
    model(torch.randn(4, 3, device=device)).sum().backward()
    assert cast_report(p.grad for p in model.parameters()).nonzero == 8


@pytest.mark.parametrize("call, error, match", [
    (lambda: underflow_fraction(torch.ones(2), scale=0.0), ValueError, "scale must be > 0"),
    (lambda: underflow_fraction(torch.ones(2), scale=float("inf")), ValueError, "scale must be finite"),
    (lambda: underflow_fraction(torch.ones(2), dtype=torch.int8), TypeError, "floating-point torch.dtype"),
    (lambda: underflow_fraction(torch.ones(2, dtype=torch.int64)), TypeError, "floating-point tensors"),
    (lambda: underflow_fraction([torch.ones(2), 3.0]), TypeError, "expected tensors, got float"),
    (lambda: underflow_fraction(torch.nn.Linear(2, 2)), TypeError, r"p.grad for p in model.parameters\(\)"),
])
def test_cast_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------
# Autocast support


def test_supported_dtypes_on_the_cpu():
    supported = supported_autocast_dtypes("cpu")
    assert torch.bfloat16 in supported and set(supported) <= {torch.float16, torch.bfloat16}
    with torch.autocast("cpu", dtype=supported[-1]):  # what the probe says works, works
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == supported[-1]


def test_check_autocast_names_what_is_supported(device):
    with pytest.raises(ValueError, match=rf"on '{device.type}' does not run in torch.float64 here; it supports torch"):
        check_autocast(device.type, torch.float64)
    with pytest.raises(ValueError, match="no such device here"):
        check_autocast("no-such-device", torch.bfloat16)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' does not run in torch.bfloat16"):
            check_autocast("cuda", torch.bfloat16)


# ---------------------------------------------------------------------------
# One step under autocast


def problem(device, seed=0, widths=(16, 32, 32, 4), n=128):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.Tanh()] if i < len(widths) - 2 else [])
    model = torch.nn.Sequential(*layers).to(device)
    X = torch.randn(n, widths[0], generator=g).to(device)
    y = torch.randint(0, widths[-1], (n,), generator=g).to(device)
    return model, X, y


def needs(device, dtype):
    if dtype not in supported_autocast_dtypes(device.type):
        pytest.skip(f"autocast on {device.type} has no {dtype} here")


def flat(tensors):
    return torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors])


def test_a_bfloat16_step_keeps_float32_masters_and_matches_float32(device):
    """Parameters, gradients and Adam's state stay float32; the step is float32's within bfloat16's precision."""
    needs(device, torch.bfloat16)
    model, X, y = problem(device)
    twin = copy.deepcopy(model)
    before = flat(model.parameters())
    opt, opt32 = torch.optim.SGD(model.parameters(), lr=1.0), torch.optim.SGD(twin.parameters(), lr=1.0)
    result = mixed_precision_step(model, F.cross_entropy, X, y, opt, torch.bfloat16)
    opt32.zero_grad()
    loss32 = F.cross_entropy(twin(X), y)
    loss32.backward()
    opt32.step()
    assert result.skipped is False and result.scale is None
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    # with lr = 1 the update is the gradient: bfloat16's products (8 significant bits, unit roundoff
    # 2^-9 = 0.002) change it by about a percent, float32's by nothing visible
    update, update32 = before - flat(model.parameters()), before - flat(twin.parameters())
    rel = ((update - update32).norm() / update32.norm()).item()
    assert 1e-4 < rel < 0.03, rel  # not float32 (autocast did something) and not worse than bfloat16 allows
    assert result.loss == pytest.approx(loss32.item(), rel=0.01) and result.loss != loss32.item()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        mixed_precision_step(model, F.cross_entropy, X, y, adam, torch.bfloat16)
    state = adam.state[model[0].weight]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == model[0].weight.dtype == torch.float32


def torch_amp_recipe(model, X, y, opt, scaler, dtype, device_type):
    """The loop of PyTorch's AMP documentation, written out."""
    opt.zero_grad()
    with torch.autocast(device_type, dtype=dtype):
        loss = F.cross_entropy(model(X), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def test_float16_with_a_scaler_equals_torchs_recipe_step_for_step(device):
    needs(device, torch.float16)
    model, X, y = problem(device)
    twin = copy.deepcopy(model)
    opt, opt_t = torch.optim.Adam(model.parameters(), lr=1e-2), torch.optim.Adam(twin.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10, growth_interval=2)
    scaler_t = torch.amp.GradScaler(device.type, init_scale=2.0**10, growth_interval=2)
    scales = []
    for _ in range(6):
        result = mixed_precision_step(model, F.cross_entropy, X, y, opt, torch.float16, scaler)
        torch_amp_recipe(twin, X, y, opt_t, scaler_t, torch.float16, device.type)
        scales.append(result.scale)
        assert result.scale == scaler_t.get_scale() and not result.skipped
        assert torch.equal(flat(model.parameters()), flat(twin.parameters()))
    assert scales == [2.0**10, 2.0**11, 2.0**11, 2.0**12, 2.0**12, 2.0**13]  # doubled every 2 good steps


def test_an_inf_gradient_skips_the_step_and_halves_the_scale(device):
    """torch.amp's documented behaviour: the step is skipped, the scale multiplied by backoff_factor (0.5)."""
    needs(device, torch.float16)
    model, X, y = problem(device)
    twin = copy.deepcopy(model)
    opt, opt_t = torch.optim.Adam(model.parameters(), lr=1e-2), torch.optim.Adam(twin.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16)
    scaler_t = torch.amp.GradScaler(device.type, init_scale=2.0**16)
    poison = lambda g: g.index_fill(0, torch.tensor([0], device=g.device), float("inf"))
    handles = [model[0].weight.register_hook(poison), twin[0].weight.register_hook(poison)]
    before = flat(model.parameters())
    result = mixed_precision_step(model, F.cross_entropy, X, y, opt, torch.float16, scaler)
    torch_amp_recipe(twin, X, y, opt_t, scaler_t, torch.float16, device.type)
    assert result.skipped is True and result.scale == scaler_t.get_scale() == 2.0**15
    assert torch.equal(flat(model.parameters()), before) and torch.equal(flat(twin.parameters()), before)
    assert len(opt.state) == 0 and len(opt_t.state) == 0  # Adam never stepped: no state, no step count
    for h in handles:
        h.remove()
    result = mixed_precision_step(model, F.cross_entropy, X, y, opt, torch.float16, scaler)
    assert result.skipped is False and result.scale == 2.0**15 and not torch.equal(flat(model.parameters()), before)


def test_float16_without_a_scale_loses_what_the_scale_keeps(device):
    """A loss 2^-20 times smaller: its float16 activation gradients underflow unless the scaler lifts them."""
    needs(device, torch.float16)
    model, X, y = problem(device)
    tiny = lambda out, y: 2.0**-20 * F.cross_entropy(out, y)
    plain, scaled = copy.deepcopy(model), copy.deepcopy(model)
    mixed_precision_step(plain, tiny, X, y, torch.optim.SGD(plain.parameters(), lr=1.0), torch.float16)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16)
    mixed_precision_step(scaled, tiny, X, y, torch.optim.SGD(scaled.parameters(), lr=1.0), torch.float16, scaler)
    zero_plain = sum(int((p.grad == 0).sum()) for p in plain.parameters())
    zero_scaled = sum(int((p.grad == 0).sum()) for p in scaled.parameters())
    assert zero_plain > 0.5 * sum(p.numel() for p in model.parameters()) and zero_scaled == 0


def test_autocast_dtypes_reports_what_stays_float32(device):
    needs(device, torch.bfloat16)
    model, X, y = problem(device)
    model[0].weight.grad = marker = torch.ones_like(model[0].weight)
    stages = autocast_dtypes(model, X, y, F.cross_entropy, torch.bfloat16)
    assert list(stages)[:3] == ["parameters", "input", "output of 0 (Linear)"]
    assert stages["parameters"] == stages["input"] == stages["loss"] == stages["parameter gradients"] == torch.float32
    assert stages["output of 0 (Linear)"] == stages["output of 4 (Linear)"] == stages["logits"] == torch.bfloat16
    assert stages["gradient at the logits"] == torch.bfloat16
    assert model[0].weight.grad is marker and model[2].weight.grad is None  # the gradients were restored


@pytest.mark.parametrize("change, error, match", [
    (dict(dtype=torch.float64), ValueError, "does not run in torch.float64"),
    (dict(dtype=torch.int32), TypeError, "floating-point torch.dtype"),
    (dict(device_type="no-such-device"), ValueError, "does not match the data's device"),
    (dict(scaler="yes"), TypeError, "torch.amp.GradScaler"),
    (dict(half=True), ValueError, "float32 master weights, but the model has torch.float16 parameters"),
])
def test_step_errors(change, error, match):
    model, X, y = problem("cpu")
    if change.pop("half", False):
        model.half()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = dict(dtype=torch.bfloat16, scaler=None, device_type=None) | change
    with pytest.raises(error, match=match):
        mixed_precision_step(model, F.cross_entropy, X, y, opt, **kwargs)


def test_docstring_examples():
    result = doctest.testmod(P, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 5
