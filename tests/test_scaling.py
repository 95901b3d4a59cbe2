"""book.scaling: the linear scaling rule, the noise-scale estimators against closed forms, the critical-batch fit,
and train_copies against torch.optim.SGD run copy by copy."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

import book.scaling as scaling
from book.distributed import mlp
from book.scaling import (CriticalBatch, NoiseScale, critical_batch_size, gradient_noise_scale, measure_noise_scale,
                          per_example_noise_scale, per_example_sq_norms, pool_noise_scales, scaled_lr,
                          train_copies)
from book.schedules import constant, linear_warmup


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is as fast and steadier on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_doctests():
    result = doctest.testmod(scaling, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------
# The linear scaling rule


@pytest.mark.parametrize("base_lr, base_batch, batch, expected", [
    (0.1, 256, 8192, 3.2),   # Goyal et al.'s ImageNet recipe: k = 32
    (0.1, 32, 32, 0.1),      # k = 1 changes nothing
    (0.4, 64, 16, 0.1),      # smaller batches scale down
    (0.05, 32, 48, 0.075),   # k need not be an integer
])
def test_scaled_lr(base_lr, base_batch, batch, expected):
    assert scaled_lr(base_lr, base_batch, batch) == pytest.approx(expected, rel=1e-14)


def test_goyal_warmup_is_linear_warmup_from_the_base_rate():
    k, warmup = 8, 5
    lr = scaled_lr(0.1, 32, 32 * k)
    sched = linear_warmup(constant(lr), warmup, start_factor=1 / k)
    assert sched(0) == pytest.approx(0.1) and sched(warmup) == pytest.approx(lr)
    steps = [sched(t + 1) - sched(t) for t in range(warmup)]
    assert max(steps) == pytest.approx(min(steps))  # a constant increment, as in the paper


@pytest.mark.parametrize("args, error, match", [
    ((-0.1, 32, 64), ValueError, "base_lr must be > 0"),
    ((0.1, 0, 64), ValueError, "base_batch must be >= 1"),
    ((0.1, 32, 64.0), TypeError, "batch must be an int"),
    ((float("nan"), 32, 64), ValueError, "base_lr must be finite"),
])
def test_scaled_lr_errors(args, error, match):
    with pytest.raises(error, match=match):
        scaled_lr(*args)


# ---------------------------------------------------------------------------
# The two-batch estimators


@pytest.mark.parametrize("grad_sq, trace, b_small, b_big", [(1.0, 100.0, 10, 1000), (0.02, 3.0, 1, 2),
                                                           (5.0, 0.5, 32, 33)])
def test_the_estimators_invert_the_expected_squared_norms(grad_sq, trace, b_small, b_big):
    est = gradient_noise_scale(grad_sq + trace / b_small, grad_sq + trace / b_big, b_small, b_big)
    assert est.grad_sq == pytest.approx(grad_sq, rel=1e-10)
    assert est.trace_cov == pytest.approx(trace, rel=1e-10)
    assert est.b_simple == pytest.approx(trace / grad_sq, rel=1e-10)


def test_b_simple_is_nan_when_the_gradient_estimate_is_not_positive():
    est = gradient_noise_scale(10.0, 1.0, 1, 2)  # |G|^2 estimate 2*1 - 10 < 0
    assert est.grad_sq < 0 and math.isnan(est.b_simple)


@pytest.mark.parametrize("args, error, match", [
    ((1.0, 0.5, 8, 8), ValueError, "b_small must be smaller than b_big"),
    ((1.0, 0.5, 64, 8), ValueError, "b_small must be smaller than b_big"),
    ((-1.0, 0.5, 8, 64), ValueError, "g_small_sq must be >= 0"),
    ((1.0, "0.5", 8, 64), TypeError, "g_big_sq must be a real number"),
    ((1.0, 0.5, 0, 64), ValueError, "b_small must be >= 1"),
])
def test_gradient_noise_scale_errors(args, error, match):
    with pytest.raises(error, match=match):
        gradient_noise_scale(*args)


def test_the_estimators_are_unbiased_on_gaussian_least_squares():
    """Per-example loss (x.w - y)^2 with x ~ N(0, I_d) and y = x.w* + sigma*eps. With delta = w - w*, the
    per-example gradient g = 2x(x.delta - sigma*eps) has mean G = 2 delta and E|g|^2 = 4((d+2)|delta|^2 + d sigma^2),
    so |G|^2 = 4|delta|^2 and tr(Sigma) = 4((d+1)|delta|^2 + d sigma^2): known exactly."""
    d, sigma, b_small, b_big, draws = 5, 0.5, 4, 64, 4000
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(d, generator=gen, dtype=torch.float64)
    delta /= delta.norm()
    true_grad_sq, true_trace = 4.0, 4 * ((d + 1) + d * sigma**2)
    X = torch.randn(draws, b_big, d, generator=gen, dtype=torch.float64)
    noise = sigma * torch.randn(draws, b_big, generator=gen, dtype=torch.float64)
    g = 2 * X * (X @ delta - noise)[..., None]  # (draws, b_big, d): per-example gradients
    big_sq = g.mean(1).pow(2).sum(-1)
    small_sq = g[:, :b_small].mean(1).pow(2).sum(-1)  # the small batch inside the big one, as measured in practice
    est = [gradient_noise_scale(float(s), float(b), b_small, b_big) for s, b in zip(small_sq, big_sq)]
    for field, truth in (("grad_sq", true_grad_sq), ("trace_cov", true_trace)):
        values = torch.tensor([getattr(e, field) for e in est], dtype=torch.float64)
        standard_error = float(values.std() / math.sqrt(draws))
        assert standard_error < 0.05 * truth  # the test can tell a 20 % bias from none
        assert abs(float(values.mean()) - truth) < 4 * standard_error, field
    pooled = pool_noise_scales(est)  # average first, divide last
    assert pooled.b_simple == pytest.approx(true_trace / true_grad_sq, rel=0.1)


# ---------------------------------------------------------------------------
# Measuring a model


def _linear_problem(n=50, d=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = X @ torch.randn(d, 1, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(n, 1, generator=gen,
                                                                                       dtype=torch.float64)
    model = torch.nn.Linear(d, 1).double()
    with torch.no_grad():  # away from the minimum: a gradient worth measuring
        model.weight.copy_(torch.randn(1, d, generator=gen, dtype=torch.float64))
        model.bias.fill_(0.5)
    return model, X, y


def _exact_linear(model, X, y):
    """Per-example gradients of (w.x + b - y)^2 by hand: r_i (x_i, 1) with r_i = 2 (w.x_i + b - y_i)."""
    r = 2 * (model(X) - y).detach()  # (n, 1)
    g = torch.cat([r * X, r], dim=1)  # (n, d + 1)
    mean = g.mean(0)
    return float(mean.pow(2).sum()), float((g - mean).pow(2).sum(1).mean())


def test_per_example_noise_scale_is_exact_on_a_linear_model():
    model, X, y = _linear_problem()
    grad_sq, trace = _exact_linear(model, X, y)
    for chunk_size in (None, 7):
        exact = per_example_noise_scale(model, F.mse_loss, X, y, chunk_size=chunk_size)
        assert exact.grad_sq == pytest.approx(grad_sq, rel=1e-12)
        assert exact.trace_cov == pytest.approx(trace, rel=1e-12)
        assert exact.b_simple == pytest.approx(trace / grad_sq, rel=1e-12)


def test_per_example_noise_scale_matches_a_loop_over_examples_on_a_network():
    model = mlp((6, 5, 4), seed=3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    X, y = torch.randn(20, 6, generator=gen, dtype=torch.float64), torch.randint(0, 4, (20,), generator=gen)
    grads = []
    for i in range(len(X)):
        g = torch.autograd.grad(F.cross_entropy(model(X[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        grads.append(torch.cat([t.reshape(-1) for t in g]))
    g = torch.stack(grads)
    full = torch.cat([t.reshape(-1) for t in torch.autograd.grad(F.cross_entropy(model(X), y),
                                                                 list(model.parameters()))])
    torch.testing.assert_close(per_example_sq_norms(model, F.cross_entropy, X, y, chunk_size=6), g.pow(2).sum(1),
                               rtol=1e-12, atol=0)
    exact = per_example_noise_scale(model, F.cross_entropy, X, y)
    assert exact.grad_sq == pytest.approx(float(full.pow(2).sum()), rel=1e-10)  # G is the full-batch gradient
    assert exact.trace_cov == pytest.approx(float((g - g.mean(0)).pow(2).sum(1).mean()), rel=1e-10)


def test_measure_noise_scale_is_unbiased_for_the_data_set_even_with_large_batches():
    """b_big = 40 of only 50 examples: sampling without replacement would shrink the noise term by
    (50 - 40) / 49 and bias both estimates badly; with replacement they are unbiased."""
    model, X, y = _linear_problem()
    grad_sq, trace = _exact_linear(model, X, y)
    gen = torch.Generator().manual_seed(5)
    draws = [measure_noise_scale(model, F.mse_loss, X, y, 5, 40, repeats=1, generator=gen) for _ in range(1500)]
    for field, truth in (("grad_sq", grad_sq), ("trace_cov", trace)):
        values = torch.tensor([getattr(e, field) for e in draws], dtype=torch.float64)
        standard_error = float(values.std() / math.sqrt(len(values)))
        assert standard_error < 0.06 * truth
        assert abs(float(values.mean()) - truth) < 4 * standard_error, field
    # repeats=R draws the same batches as R calls with one repeat each, and pools them before the ratio
    pooled = measure_noise_scale(model, F.mse_loss, X, y, 5, 40, repeats=1500,
                                 generator=torch.Generator().manual_seed(5))
    by_hand = pool_noise_scales(draws)
    for a, b in zip(pooled, by_hand):
        assert a == pytest.approx(b, rel=1e-9)
    assert all(p.grad is None for p in model.parameters())  # the model's .grad is left alone


def test_measure_noise_scale_errors():
    model, X, y = _linear_problem()
    with pytest.raises(ValueError, match="b_small must be smaller than b_big"):
        measure_noise_scale(model, F.mse_loss, X, y, 8, 8)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_noise_scale(model, F.mse_loss, X, y, 4, 8, repeats=0)
    with pytest.raises(ValueError, match="same, nonzero number of examples"):
        measure_noise_scale(model, F.mse_loss, X, y[:-1], 4, 8)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        measure_noise_scale(lambda x: x, F.mse_loss, X, y, 4, 8)
    frozen = torch.nn.Linear(3, 1).double().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter that requires a gradient"):
        per_example_noise_scale(frozen, F.mse_loss, X, y)


def test_pool_noise_scales():
    pooled = pool_noise_scales([NoiseScale(2.0, 10.0, 5.0), NoiseScale(0.0, 30.0, math.nan)])
    assert pooled == NoiseScale(1.0, 20.0, 20.0)
    with pytest.raises(ValueError, match="at least one"):
        pool_noise_scales([])
    with pytest.raises(TypeError, match="NoiseScale"):
        pool_noise_scales([(1.0, 2.0, 2.0)])


# ---------------------------------------------------------------------------
# The critical batch size

BATCHES = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


@pytest.mark.parametrize("b_crit", [50.0, 300.0, 2000.0])
@pytest.mark.parametrize("relative", [True, False])
def test_critical_batch_size_recovers_an_exact_curve(b_crit, relative):
    s_min = 40.0
    steps = [s_min * (1 + b_crit / b) for b in BATCHES]
    fit = critical_batch_size(BATCHES, steps, relative=relative)
    assert fit.b_crit == pytest.approx(b_crit, rel=1e-9)
    assert fit.s_min == pytest.approx(s_min, rel=1e-9)
    assert fit.e_min == pytest.approx(s_min * b_crit, rel=1e-9)


def test_the_fitted_curves_meet_the_definitions():
    fit = CriticalBatch(b_crit=200.0, s_min=10.0, e_min=2000.0)
    assert fit.steps(200.0) == pytest.approx(2 * fit.s_min)       # twice the fewest steps ...
    assert fit.examples(200.0) == pytest.approx(2 * fit.e_min)    # ... and twice the fewest examples at B_crit
    B = torch.tensor([1.0, 10.0, 1e4])
    assert torch.allclose(fit.examples(B), B * fit.steps(B))
    # the tradeoff (S/S_min - 1)(E/E_min - 1) = 1 holds along the curve
    assert torch.allclose((fit.steps(B) / fit.s_min - 1) * (fit.examples(B) / fit.e_min - 1), torch.ones(3))


def test_critical_batch_size_on_noisy_steps():
    gen = torch.Generator().manual_seed(0)
    truth = CriticalBatch(300.0, 12.0, 3600.0)
    errors = []
    for _ in range(20):
        noisy = [truth.steps(b) * math.exp(0.05 * float(torch.randn(1, generator=gen))) for b in BATCHES]
        errors.append(abs(critical_batch_size(BATCHES, noisy).b_crit / truth.b_crit - 1))
    assert max(errors) < 0.3 and sum(errors) / len(errors) < 0.12  # 5 % noise in the steps: B_crit to ~10 %


@pytest.mark.parametrize("batch_sizes, steps, error, match", [
    ([16, 32], [100.0], ValueError, "same length"),
    ([64, 64, 64], [10.0, 11.0, 9.0], ValueError, "two distinct batch sizes"),
    ([16, 32], [100.0, -1.0], ValueError, "steps must be finite and > 0"),
    ([0, 32], [100.0, 50.0], ValueError, "batch_sizes must be finite and > 0"),
    ([16, 32, 64, 128], [1000.0, 354.0, 125.0, 44.0], ValueError, "S_min"),   # falling faster than 1/B
    ([16, 32, 64, 128], [10.0, 11.0, 12.0, 13.0], ValueError, "E_min"),       # not falling at all
    (["a", "b"], [1.0, 2.0], TypeError, "batch_sizes must be a sequence of numbers"),
])
def test_critical_batch_size_errors(batch_sizes, steps, error, match):
    with pytest.raises(error, match=match):
        critical_batch_size(batch_sizes, steps)


# ---------------------------------------------------------------------------
# train_copies


def _data(n=37, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _one_by_one(model, X, y, batch_size, schedule, steps, momentum, seed):
    """The reference: torch.optim.SGD on one model, batches cut from permutations laid end to end."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=schedule(0), momentum=momentum)
    order = torch.empty(0, dtype=torch.long)
    with torch.no_grad():
        losses = [float(F.cross_entropy(model(X), y))]
    for t in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(X), generator=gen)])
        idx, order = order[:batch_size], order[batch_size:]
        for group in opt.param_groups:
            group["lr"] = schedule(t)
        opt.zero_grad()
        F.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        with torch.no_grad():
            losses.append(float(F.cross_entropy(model(X), y)))
    return model, losses


SCHEDULES = [constant(0.3), linear_warmup(constant(0.5), 4, start_factor=0.25), constant(0.05)]


def test_train_copies_equals_torch_sgd_copy_by_copy():
    X, y = _data()
    seeds = [0, 0, 1]  # the first two copies share their batches
    models = [mlp((4, 6, 3), seed=10 + k, dtype=torch.float64) for k in range(3)]
    run = train_copies(models, F.cross_entropy, X, y, batch_size=8, lrs=SCHEDULES, steps=13, momentum=0.9,
                       generators=[torch.Generator().manual_seed(s) for s in seeds])
    assert run.steps == 13 and all(a is b for a, b in zip(run.models, models))  # trained in place
    assert torch.isnan(run.steps_to_target).all()  # no target
    for k in range(3):
        reference, _ = _one_by_one(mlp((4, 6, 3), seed=10 + k, dtype=torch.float64), X, y, 8, SCHEDULES[k], 13, 0.9,
                                   seeds[k])
        for p, q in zip(models[k].parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_train_copies_finds_the_step_that_reaches_the_target():
    X, y = _data()
    target = 0.9
    models = [mlp((4, 6, 3), seed=20 + k, dtype=torch.float64) for k in range(2)]
    rates = [0.3, 0.1]
    run = train_copies(models, F.cross_entropy, X, y, batch_size=8, lrs=rates, steps=400, momentum=0.5,
                       generators=[torch.Generator().manual_seed(3) for _ in range(2)], target=target)
    for k in range(2):
        _, losses = _one_by_one(mlp((4, 6, 3), seed=20 + k, dtype=torch.float64), X, y, 8, constant(rates[k]), 400,
                                0.5, 3)
        first = next(t for t, value in enumerate(losses) if value <= target)
        assert first - 1 < float(run.steps_to_target[k]) <= first  # interpolated between the two evaluations
    assert run.steps == math.ceil(float(run.steps_to_target.max()))  # it stops once both got there


def test_train_copies_patience_stops_early_and_divergence_stays_contained():
    X, y = _data()
    target = 0.7
    make = lambda: [mlp((4, 6, 3), seed=30 + k, dtype=torch.float64) for k in range(3)]  # noqa: E731
    gens = lambda: [torch.Generator().manual_seed(4) for _ in range(3)]  # noqa: E731
    run = train_copies(make(), F.cross_entropy, X, y, 8, [0.3, 0.003, 0.3], steps=2000, momentum=0.5,
                       generators=gens(), target=target, patience=2)
    fastest = float(run.steps_to_target.nan_to_num(math.inf).min())
    assert math.isnan(float(run.steps_to_target[1]))  # the slow copy is abandoned ...
    assert run.steps == math.ceil(2 * fastest)        # ... at twice the fastest copy's steps

    # a copy that blows up does not disturb the others
    alone = train_copies(make()[:2], F.cross_entropy, X, y, 8, [0.3, 0.1], steps=30, generators=gens()[:2])
    together = train_copies(make()[:2] + [mlp((4, 6, 3), seed=99, dtype=torch.float64)], F.cross_entropy, X, y, 8,
                            [0.3, 0.1, 1e6], steps=30, generators=gens())
    for a, b in zip(alone.models, together.models[:2]):
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_train_copies_errors():
    X, y = _data()
    two = [mlp((4, 6, 3), seed=k) for k in range(2)]
    X32 = X.float()
    with pytest.raises(ValueError, match="same architecture"):
        train_copies([mlp((4, 6, 3)), mlp((4, 5, 3))], F.cross_entropy, X32, y, 8, [0.1, 0.1], 5)
    with pytest.raises(ValueError, match="one learning rate"):
        train_copies(two, F.cross_entropy, X32, y, 8, [0.1], 5)
    with pytest.raises(ValueError, match="at most the number of examples"):
        train_copies(two, F.cross_entropy, X32, y, 64, [0.1, 0.1], 5)
    with pytest.raises(ValueError, match="momentum must be < 1"):
        train_copies(two, F.cross_entropy, X32, y, 8, [0.1, 0.1], 5, momentum=1.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        train_copies(two, F.cross_entropy, X32, y, 8, [0.1, -0.1], 5)
    with pytest.raises(ValueError, match="patience must be >= 1"):
        train_copies(two, F.cross_entropy, X32, y, 8, [0.1, 0.1], 5, target=0.5, patience=0.5)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        train_copies([], F.cross_entropy, X32, y, 8, [], 5)
