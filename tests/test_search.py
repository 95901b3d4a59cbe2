"""book.practice.search and book.practice.benchmark: budgets, seeds, rungs, and the batched grid
against separate torch.optim.SGD runs; Optuna studies (pruning, samplers, parallel workers)."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from book.data import digits, minibatches
from book.practice.benchmark import (
    TabularBenchmark,
    epochs_used,
    make_sampler,
    run_parallel_study,
    train_grid,
)
from book.practice.search import (
    choice,
    grid_search,
    halving_schedule,
    log_uniform,
    random_search,
    successive_halving,
    uniform,
)

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def counting(objective):
    """Wrap an objective so that its calls (and their arguments) are recorded."""
    calls = []

    def wrapped(*args):
        calls.append(args)
        return objective(*args)

    wrapped.calls = calls
    return wrapped


def bowl(config):
    return (math.log10(config["lr"]) + 2) ** 2 + (config["momentum"] - 0.9) ** 2


SPACE = {"lr": log_uniform(1e-4, 1.0), "momentum": uniform(0.0, 0.99)}


# ---------------------------------------------------------------------------
# grid and random search


def test_grid_search_order_size_and_budget():
    f = counting(lambda c: c["a"] * (1 if c["opt"] == "sgd" else 2))
    r = grid_search(f, {"a": [3, 1, 2], "opt": ["sgd", "adam"]}, progress=False)
    expected = [{"a": a, "opt": o} for a in [3, 1, 2] for o in ["sgd", "adam"]]  # first key outermost
    assert [t.config for t in r.trials] == expected
    assert [c for (c,) in f.calls] == expected
    assert r.total_budget == len(f.calls) == 6
    assert [t.number for t in r.trials] == list(range(6))
    assert r.best.config == {"a": 1, "opt": "sgd"} and r.best.score == 1


def test_random_search_budget_and_best():
    f = counting(bowl)
    r = random_search(f, SPACE, n_trials=17, seed=0, progress=False)
    assert len(f.calls) == r.total_budget == len(r.trials) == 17
    scores = [bowl(c) for (c,) in f.calls]
    assert [t.score for t in r.trials] == scores
    assert r.best.score == min(scores) and r.best.number == scores.index(min(scores))
    assert r.best_so_far() == list(itertools.accumulate(scores, min))


def test_random_search_reproducible_and_private_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = random_search(bowl, SPACE, n_trials=10, seed=5, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    torch.manual_seed(999)  # ... and does not matter
    b = random_search(bowl, SPACE, n_trials=10, seed=5, progress=False)
    c = random_search(bowl, SPACE, n_trials=10, seed=6, progress=False)
    assert [t.config for t in a.trials] == [t.config for t in b.trials]
    assert all(x.config["lr"] != y.config["lr"] for x, y in zip(a.trials, c.trials))


def test_log_uniform_fills_every_decade_equally():
    seen = []
    random_search(lambda c: seen.append(c["lr"]) or 0.0, {"lr": log_uniform(1e-4, 1.0)}, 2000, progress=False)
    x = torch.tensor(seen, dtype=torch.float64)
    assert x.min() >= 1e-4 and x.max() < 1.0
    counts = torch.histc(x.log10(), bins=4, min=-4, max=0)
    # 500 expected per decade, binomial sd = sqrt(2000 * 0.25 * 0.75) = 19.4: 6 sd = 116
    assert (counts - 500).abs().max() < 116, counts
    # a uniform draw on [1e-4, 1) would put ~90 % in the top decade: this test tells them apart
    seen.clear()
    random_search(lambda c: seen.append(c["lr"]) or 0.0, {"lr": uniform(1e-4, 1.0)}, 2000, progress=False)
    assert torch.histc(torch.tensor(seen).log10(), bins=4, min=-4, max=0)[-1] > 1700


def test_choice_and_uniform_samples():
    g = torch.Generator().manual_seed(0)
    d = choice(["sgd", "adam", "rmsprop"])
    counts = {v: 0 for v in d.values}
    for _ in range(3000):
        counts[d.sample(g)] += 1
    assert all(abs(n - 1000) < 150 for n in counts.values()), counts  # sd 25.8
    u = uniform(-2.0, 3.0)
    xs = torch.tensor([u.sample(g) for _ in range(2000)])
    assert xs.min() >= -2 and xs.max() < 3 and abs(xs.mean() - 0.5) < 0.2  # sd of the mean 0.032
    assert repr(log_uniform(1e-4, 1.0)) == "log_uniform(0.0001, 1)" and repr(d) == "choice(['sgd', 'adam', 'rmsprop'])"


# ---------------------------------------------------------------------------
# successive halving


def halving_objective(config, budget):
    """Consistent ranking at every budget (lower x is better), scores falling with the budget."""
    return (config["x"] - 0.3) ** 2 + 1.0 / budget


def test_successive_halving_rungs_budget_and_best():
    f = counting(halving_objective)
    r = successive_halving(f, {"x": uniform(0, 1)}, n_configs=27, min_budget=1, eta=3, seed=0, progress=False)
    per_rung = [(rung, len(list(g))) for rung, g in itertools.groupby(r.trials, key=lambda t: t.rung)]
    assert per_rung == [(0, 27), (1, 9), (2, 3), (3, 1)]
    assert [t.budget for t in r.trials] == [1] * 27 + [3] * 9 + [9] * 3 + [27]
    assert [b for (_, b) in f.calls] == [t.budget for t in r.trials]
    assert r.total_budget == sum(b for (_, b) in f.calls) == 4 * 27
    # each rung holds the best third of the previous one, by an independent sort
    for rung in (1, 2, 3):
        prev = [t for t in r.trials if t.rung == rung - 1]
        keep = sorted(prev, key=lambda t: t.score)[: max(1, len(prev) // 3)]
        assert sorted(t.config_id for t in r.trials if t.rung == rung) == sorted(t.config_id for t in keep)
    first = [t.config["x"] for t in r.trials if t.rung == 0]
    best_x = min(first, key=lambda x: (x - 0.3) ** 2)
    assert r.best.rung == 3 and r.best.config["x"] == best_x
    assert r.best.score == pytest.approx((best_x - 0.3) ** 2 + 1 / 27)


def test_successive_halving_max_budget_rounding_and_ties():
    assert halving_schedule(27, 1, 3, max_budget=5) == [(27, 1), (9, 3), (3, 5)]
    assert halving_schedule(10, 2, 3) == [(10, 2), (3, 6), (1, 18)]  # floor(10/3) = 3, floor(3/3) = 1
    assert halving_schedule(2, 1, 3) == [(2, 1), (1, 3)]  # floor(2/3) = 0 -> at least one
    assert halving_schedule(5, 4, 2, max_budget=4) == [(5, 4)]
    r = successive_halving(halving_objective, {"x": uniform(0, 1)}, 27, 1, eta=3, max_budget=5, progress=False)
    assert [t.budget for t in r.trials] == [1] * 27 + [3] * 9 + [5] * 3
    last = [t for t in r.trials if t.budget == 5]
    assert r.best is min(last, key=lambda t: t.score)
    # ties: a constant objective keeps the earliest configurations
    configs = [{"i": i} for i in range(10)]
    t = successive_halving(lambda c, b: 1.0, configs, min_budget=1, eta=3, progress=False)
    assert [tr.config["i"] for tr in t.trials] == list(range(10)) + [0, 1, 2] + [0]
    assert t.best.config == {"i": 0}


def test_non_finite_scores_become_inf_and_the_search_goes_on():
    scores = {0.1: 1.0, 0.2: float("nan"), 0.3: float("inf"), 0.4: 0.5}
    r = grid_search(lambda c: scores[c["lr"]], {"lr": [0.1, 0.2, 0.3, 0.4]}, progress=False)
    assert [t.score for t in r.trials] == [1.0, math.inf, math.inf, 0.5]
    assert r.best.config == {"lr": 0.4}
    h = successive_halving(lambda c, b: math.nan if c["i"] == 0 else c["i"], [{"i": i} for i in range(9)],
                           min_budget=1, eta=3, progress=False)
    assert h.best.config == {"i": 1}


def test_table_and_repr():
    r = random_search(bowl, SPACE, n_trials=12, seed=1, progress=False)
    lines = r.table().splitlines()
    assert lines[0].split() == ["rank", "trial", "lr", "momentum", "score"]
    assert len(lines) == 13 and len(r.table(top=3).splitlines()) == 4
    shown = [float(line.split()[-1]) for line in lines[1:]]
    assert shown == sorted(shown) and int(lines[1].split()[1]) == r.best.number
    assert len({len(line) for line in lines}) <= 2  # aligned columns (rstrip only trims ragged text)
    assert "SearchResult(random: 12 trials" in repr(r)


def test_progress_bar_goes_to_stderr_only_when_asked(capsys):
    grid_search(lambda c: 0.0, {"a": [1, 2]}, progress=False)
    assert capsys.readouterr().err == ""
    grid_search(lambda c: 0.0, {"a": [1, 2]}, progress=True)
    assert "grid search" in capsys.readouterr().err


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: grid_search(bowl, {}), ValueError, "grid is empty"),
        (lambda: grid_search(bowl, {"lr": []}), ValueError, r"grid\['lr'\] is empty"),
        (lambda: grid_search(bowl, {"opt": "adam"}), TypeError, "sequence of values"),
        (lambda: random_search(bowl, SPACE, n_trials=0), ValueError, "n_trials must be >= 1"),
        (lambda: random_search(bowl, {}, n_trials=3), ValueError, "space is empty"),
        (lambda: random_search(bowl, {"lr": 0.1}, n_trials=3), TypeError, "choice"),
        (lambda: random_search(lambda c: "bad", SPACE, n_trials=3), TypeError, "must return a number"),
        (lambda: successive_halving(halving_objective, SPACE, 9, eta=1), ValueError, "eta must be >= 2"),
        (lambda: successive_halving(halving_objective, SPACE, None), ValueError, "n_configs is required"),
        (lambda: successive_halving(halving_objective, SPACE, 9, min_budget=0), ValueError, "min_budget must be > 0"),
        (lambda: successive_halving(halving_objective, SPACE, 9, min_budget=4, max_budget=2), ValueError, "max_budget"),
        (lambda: successive_halving(halving_objective, [], min_budget=1), ValueError, "empty"),
        (lambda: log_uniform(0.0, 1.0), ValueError, "low > 0"),
        (lambda: log_uniform(1.0, 1.0), ValueError, "low must be < high"),
        (lambda: uniform(2.0, 1.0), ValueError, "low must be < high"),
        (lambda: uniform(0.0, math.inf), ValueError, "high must be finite"),
        (lambda: choice([]), ValueError, "at least one value"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------
# the batched grid against separate torch.optim.SGD runs


@pytest.fixture(scope="module")
def data():
    ds = digits(seed=0)
    return ds.train.X[:300], ds.train.y[:300], ds.val.X, ds.val.y


def reference_run(Xt, yt, Xv, yv, lr, wd, epochs, batch_size, hidden, momentum, seed, dtype):
    """One network trained with torch.nn and torch.optim.SGD, drawn and shuffled as documented."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)).to(dtype)
    with torch.no_grad():  # W1, b1, W2, b2 in this order, uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), float64
        for p, fan_in in zip(net.parameters(), [64, 64, hidden, hidden]):
            p.copy_((2 * torch.rand(p.shape, generator=g, dtype=torch.float64) - 1) / math.sqrt(fan_in))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    Xt, Xv = Xt.to(dtype), Xv.to(dtype)
    out = {"val_loss": [], "val_acc": [], "train_loss": []}
    for _ in range(epochs):
        total = 0.0
        for xb, ybb in minibatches(Xt, yt, batch_size, generator=g):
            opt.zero_grad()
            loss = F.cross_entropy(net(xb), ybb)
            loss.backward()
            opt.step()
            total += loss.item() * len(ybb)
        with torch.no_grad():
            logits = net(Xv)
            out["val_loss"].append(F.cross_entropy(logits, yv).item())
            out["val_acc"].append((logits.argmax(1) == yv).double().mean().item())
            out["train_loss"].append(total / len(Xt))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["float64", "float32"])
def test_batched_grid_equals_separate_torch_sgd_runs(data, dtype, rtol, one_thread):
    Xt, yt, Xv, yv = data
    lrs, wds = [0.01, 0.1, 0.5], [1e-5, 3e-2]
    kw = dict(epochs=4, batch_size=32, hidden=16, momentum=0.9, seed=3)
    bench = train_grid(Xt.to(dtype), yt, Xv.to(dtype), yv, lrs, wds, progress=False, **kw)
    assert bench.val_loss.shape == (3, 2, 4) and bench.n_params == 64 * 16 + 16 + 16 * 10 + 10
    for i, j in [(0, 0), (1, 1), (2, 0), (2, 1)]:
        ref = reference_run(Xt, yt, Xv, yv, lrs[i], wds[j], dtype=dtype, **kw)
        for key in ("val_loss", "train_loss"):
            torch.testing.assert_close(getattr(bench, key)[i, j], ref[key], rtol=rtol, atol=0, msg=f"{key} {i},{j}")
        mismatched = (bench.val_acc[i, j] - ref["val_acc"]).abs().max().item() * len(yv)
        assert mismatched <= (0 if dtype == torch.float64 else 1)  # a near-tie may flip one prediction
    # the curves are not all the same: the hyperparameters matter
    assert bench.val_loss[:, :, -1].std() > 0.01


def test_a_diverged_config_does_not_touch_the_others(data, one_thread):
    Xt, yt, Xv, yv = data
    kw = dict(weight_decays=[1e-4, 1e-2], epochs=3, batch_size=50, hidden=8, progress=False)
    calm = train_grid(Xt, yt, Xv, yv, lrs=[0.01, 0.1], **kw)
    wild = train_grid(Xt, yt, Xv, yv, lrs=[0.01, 0.1, 1e4], **kw)
    assert wild.diverged.tolist() == [[False, False], [False, False], [True, True]]
    gone = torch.isinf(wild.val_loss[2])  # (2, epochs): inf from the epoch of divergence on
    assert gone[:, -1].all() and torch.equal(gone, gone.cummax(dim=1).values)
    assert torch.equal(torch.isnan(wild.val_acc[2]), gone) and torch.isinf(wild.train_loss[2][gone]).all()
    for key in ("val_loss", "val_acc", "train_loss"):
        assert torch.equal(getattr(wild, key)[:2], getattr(calm, key))


def test_shares_of_the_learning_rates_concatenate_to_the_grid_trained_at_once(data, one_thread):
    Xt, yt, Xv, yv = data
    kw = dict(weight_decays=[1e-4, 1e-2], epochs=3, batch_size=50, hidden=8, seed=5, progress=False)
    lrs = [0.01, 0.03, 0.1, 1e4]  # the last share holds a diverging row
    whole = train_grid(Xt, yt, Xv, yv, lrs, **kw)
    split = TabularBenchmark.concat([train_grid(Xt, yt, Xv, yv, lrs[:1], **kw), train_grid(Xt, yt, Xv, yv, lrs[1:], **kw)])
    assert split.diverged[-1].all() and not split.diverged[:-1].any()
    for key in ("val_loss", "val_acc", "train_loss"):  # bit for bit, NaN where the whole grid has NaN
        a, b = getattr(split, key), getattr(whole, key)
        assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(0), b.nan_to_num(0)), key
    assert torch.equal(split.lrs, whole.lrs) and split.n_params == whole.n_params and split.settings == whole.settings
    other = train_grid(Xt, yt, Xv, yv, lrs[1:], **{**kw, "epochs": 2})
    with pytest.raises(ValueError, match="not shares of one grid"):
        TabularBenchmark.concat([train_grid(Xt, yt, Xv, yv, lrs[:1], **kw), other])
    with pytest.raises(ValueError, match="must increase"):
        TabularBenchmark.concat([train_grid(Xt, yt, Xv, yv, lrs[1:], **kw), train_grid(Xt, yt, Xv, yv, lrs[:1], **kw)])
    with pytest.raises(ValueError, match="at least one"):
        TabularBenchmark.concat([])


@pytest.fixture(scope="module")
def bench(data):
    Xt, yt, Xv, yv = data
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and steadier on a shared machine
    yield train_grid(Xt, yt, Xv, yv, torch.logspace(-3, 0, 7), torch.logspace(-5, -1, 5),
                     epochs=8, batch_size=50, hidden=16, seed=0, progress=False)
    torch.set_num_threads(before)


def test_lookup_snaps_to_the_nearest_grid_point_in_log_space(bench):
    # lrs = 1e-3, 3.16e-3, 1e-2, ...; weight decays = 1e-5, 1e-4, ...
    assert bench.index(1.7e-3, 1e-5) == (0, 0)  # log10: -2.77 is nearer -3 than -2.5
    assert bench.index(1.8e-3, 1e-5) == (1, 0)  # log10: -2.74 is nearer -2.5
    assert bench.index(1e-9, 1.0) == (0, 4)  # outside the grid: the end points
    assert bench.snap(0.9, 4e-4) == (pytest.approx(1.0), pytest.approx(1e-3))
    assert bench.lookup(0.02, 2e-5) == bench.val_loss[3, 0, -1].item()  # 0.02: nearer 10**-1.5 than 10**-2
    assert bench.lookup(0.02, 2e-5, epoch=1) == bench.val_loss[3, 0, 0].item()
    assert bench.lookup(0.02, 2e-5, epoch=3, metric="val_acc") == bench.val_acc[3, 0, 2].item()
    with pytest.raises(ValueError, match="epoch must be in 1..8"):
        bench.lookup(0.02, 2e-5, epoch=9)


def test_best_cost_and_save_load(bench, tmp_path):
    last = bench.val_loss[:, :, -1]
    i, j = min(itertools.product(range(7), range(5)), key=lambda ij: last[ij].item())
    config, value = bench.best()
    assert config == {"lr": bench.lrs[i].item(), "weight_decay": bench.weight_decays[j].item()}
    assert value == last[i, j].item()
    acc = bench.val_acc[:, :, -1].nan_to_num(-1.0)
    assert bench.best("val_acc")[1] == acc.max().item()
    assert bench.cost(5) == 5 * (64 * 16 + 16 + 16 * 10 + 10)
    bench.save(tmp_path / "b.pt")
    loaded = TabularBenchmark.load(tmp_path / "b.pt")
    assert torch.equal(loaded.val_loss, bench.val_loss) and loaded.settings == bench.settings
    assert repr(loaded) == repr(bench)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(lrs=[]), ValueError, "lrs is empty"),
        (dict(lrs=[0.1, 0.01]), ValueError, "strictly increasing"),
        (dict(weight_decays=[0.0, 1e-3]), ValueError, "> 0"),
        (dict(epochs=0), ValueError, "epochs must be >= 1"),
        (dict(momentum=1.0), ValueError, "momentum must be < 1"),
    ],
)
def test_train_grid_bad_input(data, kwargs, error, match):
    args = dict(lrs=[0.1], weight_decays=[1e-4], epochs=1, progress=False) | kwargs
    with pytest.raises(error, match=match):
        train_grid(*data, **args)


# ---------------------------------------------------------------------------
# Optuna on the table


def test_pruned_study_reports_epochs_and_counts_them(bench):
    study = optuna.create_study(sampler=make_sampler("random", seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    study.optimize(functools.partial(bench.objective, prune=True), n_trials=25)
    states = [t.state for t in study.trials]
    n_pruned = states.count(optuna.trial.TrialState.PRUNED)
    assert n_pruned >= 3 and states.count(optuna.trial.TrialState.COMPLETE) + n_pruned == 25
    total = 0
    for t in study.trials:
        i = int(torch.argmin((bench.lrs.log() - math.log(t.params["lr"])).abs()))
        j = int(torch.argmin((bench.weight_decays.log() - math.log(t.params["weight_decay"])).abs()))
        assert t.user_attrs["snapped_lr"] == bench.lrs[i].item()
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))
        assert [t.intermediate_values[s] for s in steps] == bench.val_loss[i, j, : len(steps)].tolist()
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert len(steps) == 8 and t.value == bench.val_loss[i, j, -1].item()
        else:
            assert len(steps) < 8  # a trial that reached the last epoch is complete, not pruned
        total += len(steps)
    assert epochs_used(study) == total < 25 * 8


@pytest.mark.parametrize("name", ["tpe", "gp", "cmaes"])
def test_samplers_run_on_the_table(bench, name):
    kwargs = {"n_startup_trials": 3} if name in ("tpe", "gp") else {}
    study = optuna.create_study(sampler=make_sampler(name, seed=0, **kwargs))
    study.optimize(bench.objective, n_trials=8)
    assert len(study.trials) == 8
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.best_value == min(t.value for t in study.trials)
    assert epochs_used(study) == 8 * 8


def test_nsga2_trades_loss_for_cost(bench):
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=make_sampler("nsga2", seed=0, population_size=6))
    study.optimize(bench.objective_multi, n_trials=12)
    for t in study.trials:
        e = t.params["epochs"]
        i, j = bench.index(t.params["lr"], t.params["weight_decay"])
        assert t.values == [bench.val_loss[i, j, e - 1].item(), bench.n_params * e]
    front = study.best_trials
    assert front and all(not (u.values[0] <= v.values[0] and u.values[1] < v.values[1])
                         for u in study.trials for v in front)


def test_two_worker_processes_share_one_study(bench, tmp_path):
    study = run_parallel_study(bench, n_workers=2, n_trials_per_worker=4, sampler="tpe", directory=tmp_path,
                               timeout=120)
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log")))
    again = optuna.load_study(study_name="parallel", storage=journal)
    for s in (study, again):
        numbers = [t.number for t in s.trials]
        assert sorted(numbers) == list(range(8))  # all trials, no duplicate numbers
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in s.trials)
    assert epochs_used(again) == 8 * 8


def test_docstring_examples(bench):
    import doctest

    from book.practice import benchmark, search

    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    for module, globs in [(search, None), (benchmark, {"bench": bench})]:
        result = doctest.testmod(module, extraglobs=globs, optionflags=flags)
        assert result.attempted >= 10 and result.failed == 0, module.__name__
