r"""A fair comparison of optimizers, in miniature: the same tuning budget, time to a target, several seeds.

Optimizer papers often compare a tuned new method with a baseline run at its defaults, on one seed, at
one point of a learning curve. The AlgoPerf benchmark (Dahl et al., 2023) fixed the rules instead: every
method is tuned with the same budget, each *workload* (a model, a dataset, a target on held-out data)
is timed until the target is reached, several seeds are run, and the results are reported with their
spread. This module applies those rules to workloads small enough for a laptop:

- :class:`Workload` and two of them, :func:`digits_mlp` (a tanh MLP on the 8 x 8 digits, flattened) and
  :func:`digits_cnn` (a small convolutional net on the same images), each with a validation-accuracy
  target and an epoch budget;
- :data:`METHODS`, the optimizers compared, each with a search space and the schedule it gets
  (linear warmup over 5 % of the steps then a cosine to zero, as a factor of the base rates, for all
  but schedule-free AdamW, which gets none: that is its point);
- :func:`run` trains once and records the epochs and seconds to the target; :func:`tune` searches a
  method's hyperparameters with Optuna's TPE sampler for a given number of trials, minimising the
  epochs to the target on the validation split; :func:`evaluate_tuned` reruns the chosen
  hyperparameters on fresh seeds and reports medians, spreads and the test accuracy;
- :func:`compare` does all of it for several workloads and methods and returns a JSON-ready dict,
  :func:`table` formats it; :func:`state_bytes` measures an optimizer's state;
- :func:`when` turns results into a "which optimizer when" table (rank per workload, state per parameter,
  tuning trials on target), and :func:`quick` reruns a few methods with the hyperparameters saved by the
  script (:func:`load_results`) on new seeds, without tuning.

The script ``benchmarks/compare_optimizers.py`` runs the full protocol and saves its results, labelled
with date, machine and command; the chapter reads that file and reruns a small part of it live.

    >>> w = digits_mlp()
    >>> record = run(w, "adamw", {"lr": 3e-3, "weight_decay": 1e-4}, seed=0)
    >>> record.reached, record.epochs_to_target <= w.epochs
    (True, True)

References:
    G. E. Dahl, F. Schneider, Z. Nado et al., "Benchmarking Neural Network Training Algorithms",
    arXiv:2306.07179 (2023).
    T. Akiba, S. Sano, T. Yanase, T. Ohta and M. Koyama, "Optuna: a next-generation hyperparameter
    optimization framework", KDD (2019).
"""

from __future__ import annotations

import math
import statistics
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from book import optim as O
from book.data import Dataset, digits
from book.distributed import mlp
from book.schedules import cosine_annealing, linear_warmup
from book.train import evaluate, fit
from book.utils import generator, method_seed

__all__ = ["Workload", "digits_mlp", "digits_cnn", "METHODS", "Method", "RunRecord", "run", "tune",
           "evaluate_tuned", "compare", "table", "state_bytes", "load_results", "quick",
           "state_floats_per_parameter", "when"]


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """The bytes of every tensor in ``optimizer.state`` (buffers, moments, step counters).

    Counts what the optimizer keeps between steps, not the parameters or their gradients. Zero before
    the first step, for optimizers that create their state lazily (all of torch.optim's).
    """
    return sum(v.nbytes for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))


# ---------------------------------------------------------------------------
# Workloads


@dataclass
class Workload:
    """A model, data, a target on the validation split, and a budget.

    Attributes:
        name: a short label.
        make_model: ``make_model(seed, device)`` returns a fresh network (initialised from ``seed``).
        data: the train/validation/test splits.
        target: the validation accuracy to reach.
        epochs: the budget; a run that has not reached the target by then has failed.
        batch_size: examples per step.
    """

    name: str
    make_model: Callable[[int, torch.device | None], torch.nn.Module]
    data: Dataset
    target: float
    epochs: int
    batch_size: int = 64

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train.y) / self.batch_size)


def digits_mlp(device=None) -> Workload:
    """A 64-128-128-10 tanh MLP on the flattened digits; target 97 % validation accuracy in 20 epochs."""
    data = digits(seed=0, device=device)  # the book's fixed split
    return Workload("digits MLP", lambda seed, dev=device: mlp((64, 128, 128, 10), seed=seed, device=dev),
                    data, target=0.97, epochs=20)


class _DigitsCNN(torch.nn.Module):
    """Two 3 x 3 convolutions (16 and 32 channels, the second with stride 2), a hidden linear layer of 64, ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.hidden = torch.nn.Linear(32 * 4 * 4, 64)
        self.out = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 1, 8, 8)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.out(F.relu(self.hidden(x.flatten(1))))


def _cnn(seed: int, device=None) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _DigitsCNN()
    return net.to(device)


def digits_cnn(device=None) -> Workload:
    """A small convolutional net on the 8 x 8 digit images; target 97.5 % validation accuracy in 15 epochs."""
    return Workload("digits CNN", lambda seed, dev=device: _cnn(seed, dev), digits(seed=0, device=device),
                    target=0.975, epochs=15)


# ---------------------------------------------------------------------------
# Methods


@dataclass
class Method:
    """An optimizer to compare: how to build it, what to tune, and whether it gets the schedule.

    ``space`` maps a hyperparameter to ``(low, high)``, searched on a log scale.
    """

    name: str
    build: Callable[[torch.nn.Module, dict], torch.optim.Optimizer]
    space: dict[str, tuple[float, float]]
    scheduled: bool = True


def _schedule_free(model, h, steps_per_epoch):
    return O.ScheduleFreeAdamW(model.parameters(), lr=h["lr"], weight_decay=h["weight_decay"],
                               warmup_steps=steps_per_epoch)


METHODS: dict[str, Method] = {
    "sgd": Method("sgd", lambda m, h: O.SGD(m.parameters(), lr=h["lr"], momentum=0.9, nesterov=True,
                                            weight_decay=h["weight_decay"]),
                  {"lr": (1e-3, 1.0), "weight_decay": (1e-6, 1e-2)}),
    "adamw": Method("adamw", lambda m, h: O.AdamW(m.parameters(), lr=h["lr"], weight_decay=h["weight_decay"]),
                    {"lr": (1e-4, 1e-1), "weight_decay": (1e-5, 1e-1)}),
    "nadam": Method("nadam", lambda m, h: O.NAdam(m.parameters(), lr=h["lr"], weight_decay=h["weight_decay"],
                                                  decoupled_weight_decay=True),
                    {"lr": (1e-4, 1e-1), "weight_decay": (1e-5, 1e-1)}),
    "lion": Method("lion", lambda m, h: O.Lion(m.parameters(), lr=h["lr"], weight_decay=h["weight_decay"]),
                   {"lr": (1e-5, 1e-2), "weight_decay": (1e-4, 1.0)}),
    "muon": Method("muon", lambda m, h: O.muon_with_adamw(m, lr=h["lr"], adamw_lr=h["adamw_lr"]),
                   {"lr": (1e-3, 1.0), "adamw_lr": (1e-4, 1e-1)}),
    "adafactor": Method("adafactor", lambda m, h: O.Adafactor(m.parameters(), lr=h["lr"],
                                                              weight_decay=h["weight_decay"]),
                        {"lr": (1e-3, 1.0), "weight_decay": (1e-5, 1e-1)}),
    "schedulefree": Method("schedulefree", None, {"lr": (1e-4, 1e-1), "weight_decay": (1e-5, 1e-1)},
                           scheduled=False),
}


def _method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def _check_hparams(method: Method, hparams: dict) -> dict:
    missing = set(method.space) - set(hparams)
    if missing:
        raise ValueError(f"{method.name} needs the hyperparameters {sorted(method.space)}; missing {sorted(missing)}")
    return {k: float(hparams[k]) for k in method.space}


# ---------------------------------------------------------------------------
# One run, tuning, evaluation


@dataclass
class RunRecord:
    """One training run: whether and when it reached the target, and where it ended."""

    method: str
    seed: int
    hparams: dict
    reached: bool
    epochs_to_target: int | None
    seconds_to_target: float | None
    val_acc: list[float] = field(default_factory=list)
    val_loss_end: float = float("nan")
    test_acc: float = float("nan")


def run(workload: Workload, method: str, hparams: dict, seed: int, stop_at_target: bool = False,
        device=None) -> RunRecord:
    """Train ``workload``'s model with ``method`` and ``hparams`` from ``seed``; time it to the target.

    The seed goes through :func:`book.utils.method_seed` (so ``BOOK_SEED`` shifts it) for the initial
    weights and :func:`book.utils.generator` for the order of the batches. The time to the target
    counts training only (``fit``'s per-epoch ``elapsed``), not the evaluations. With
    ``stop_at_target`` the run stops at the first epoch that reaches it (tuning does this). The model
    is made on ``device``, by default the device of the workload's data.
    """
    m = _method(method)
    h = _check_hparams(m, hparams)
    if device is None:
        device = workload.data.train.X.device  # the model goes where the data is
    model = workload.make_model(method_seed(seed), device)
    steps = workload.epochs * workload.steps_per_epoch
    if m.name == "schedulefree":
        opt = _schedule_free(model, h, workload.steps_per_epoch)
    else:
        opt = m.build(model, h)
    scheduler = None
    if m.scheduled:
        warm = max(1, steps // 20)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, linear_warmup(cosine_annealing(1.0, steps - warm), warm, start_factor=0.1))

    def at_target(epoch, history, model):
        return stop_at_target and history["val_acc"][-1] >= workload.target

    history = fit(model, opt, F.cross_entropy, workload.data.train, workload.epochs, workload.batch_size,
                  val=workload.data.val, scheduler=scheduler, progress=False,
                  generator=generator(1000 + seed), callbacks=at_target)
    accs = history["val_acc"]
    first = next((e for e, a in enumerate(accs, start=1) if a >= workload.target), None)
    if hasattr(opt, "eval"):
        opt.eval()  # schedule-free: evaluate at the average
    test_acc = evaluate(model, F.cross_entropy, workload.data.test)[1]
    return RunRecord(method, seed, h, first is not None, first,
                     history["elapsed"][first - 1] if first is not None else None,
                     accs, history["val_loss"][-1], test_acc)


def _objective_value(record: RunRecord, workload: Workload) -> float:
    # epochs to the target; a run that missed it scores the budget plus how far it ended from the target
    if record.reached:
        return float(record.epochs_to_target)
    return workload.epochs + 1 + (workload.target - max(record.val_acc))


def tune(workload: Workload, method: str, n_trials: int, seed: int = 0, progress: bool = False) -> dict:
    """Search ``method``'s space with Optuna's TPE sampler for ``n_trials`` runs (one seed each).

    The objective, minimised on the validation split, is the number of epochs to the target; a run
    that misses it scores more than the budget. The first quarter of the trials (at least 3) are random,
    the rest follow TPE's model; the sampler is seeded per workload and method. Returns ``{"hparams", "value", "reached_fraction",
    "trials"}``: the best hyperparameters, their objective, and the fraction of all trials that
    reached the target (how forgiving the method is to tune).
    """
    import optuna

    m = _method(method)
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TPE draws its first trials at random; a quarter of the budget (at least 3) leaves the rest to the model.
    # The sampler's seed differs per workload and method, so that methods sharing a search space do not all
    # start from the same random candidates.
    offset = zlib.crc32(f"{workload.name}/{method}".encode()) % 10_000
    sampler = optuna.samplers.TPESampler(seed=method_seed(seed) + offset, n_startup_trials=max(3, n_trials // 4))
    study = optuna.create_study(sampler=sampler)
    reached = []

    def objective(trial):
        h = {k: trial.suggest_float(k, lo, hi, log=True) for k, (lo, hi) in m.space.items()}
        record = run(workload, method, h, seed=seed + trial.number, stop_at_target=True)
        reached.append(record.reached)
        return _objective_value(record, workload)

    study.optimize(objective, n_trials=n_trials, show_progress_bar=progress)
    return {"hparams": dict(study.best_params), "value": study.best_value,
            "reached_fraction": sum(reached) / len(reached), "trials": n_trials}


def evaluate_tuned(workload: Workload, method: str, hparams: dict, seeds: Sequence[int],
                   stop_at_target: bool = False) -> dict:
    """Rerun ``hparams`` on ``seeds`` (not the tuning seeds): medians and spreads of the time to target.

    With ``stop_at_target`` each run stops at the first epoch that reaches the target (as :func:`run`
    does): the epochs and seconds to the target are the same (the schedule depends on the budget, not on
    where a run stops), the runs cost less, and ``test_acc`` is measured there instead of at the budget.
    """
    records = [run(workload, method, hparams, seed, stop_at_target=stop_at_target) for seed in seeds]
    hit = [r for r in records if r.reached]
    epochs = [r.epochs_to_target for r in hit]
    seconds = [r.seconds_to_target for r in hit]
    return {
        "hparams": hparams,
        "seeds": list(seeds),
        "reached": len(hit) / len(records),
        "epochs_to_target": epochs,
        "seconds_to_target": seconds,
        "median_epochs": statistics.median(epochs) if epochs else None,
        "median_seconds": statistics.median(seconds) if seconds else None,
        "test_acc": [r.test_acc for r in records],
    }


def compare(workloads: Sequence[Workload], methods: Sequence[str], n_trials: int, seeds: Sequence[int],
            progress: bool = True) -> dict:
    """Tune every method on every workload with the same budget, then time it on ``seeds``.

    Returns ``{"workloads": {name: {"target", "epochs", "methods": {method: {"tuning": ..., "evaluation":
    ...}}}}}``, JSON-ready; :func:`table` formats it.
    """
    for name in methods:
        _method(name)
    from tqdm.auto import tqdm

    out = {"n_trials": n_trials, "seeds": list(seeds), "workloads": {}}
    bar = tqdm(total=len(workloads) * len(methods), desc="compare", disable=not progress)
    for w in workloads:
        entry = {"target": w.target, "epochs": w.epochs, "methods": {}}
        for name in methods:
            bar.set_postfix_str(f"{w.name}: {name}")
            start = time.perf_counter()
            tuned = tune(w, name, n_trials, seed=0)
            evaluation = evaluate_tuned(w, name, tuned["hparams"], seeds)
            entry["methods"][name] = {"tuning": tuned, "evaluation": evaluation,
                                      "wall_seconds": time.perf_counter() - start}
            bar.update(1)
        out["workloads"][w.name] = entry
    bar.close()
    return out


def table(results: dict) -> str:
    """A markdown table: per workload and method, seeds reaching the target, median [min, max] epochs and
    seconds to it, test accuracy, and the share of tuning trials that reached it."""
    lines = ["| workload | method | reached | epochs to target | seconds to target | test accuracy | tuning trials on target |",
             "|---|---|---|---|---|---|---|"]

    def spread(values, fmt):
        if not values:
            return "—"
        return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"

    for wname, entry in results["workloads"].items():
        for name, r in entry["methods"].items():
            ev = r["evaluation"]
            n = len(ev["seeds"])
            lines.append(
                f"| {wname} | {name} | {round(ev['reached'] * n)}/{n} | {spread(ev['epochs_to_target'], 'g')} | "
                f"{spread(ev['seconds_to_target'], '.2f')} | {100 * statistics.mean(ev['test_acc']):.1f} % | "
                f"{100 * r['tuning']['reached_fraction']:.0f} % |")
    return "\n".join(lines)


def record_dict(record: RunRecord) -> dict:
    """A :class:`RunRecord` as a plain dict (for JSON)."""
    return asdict(record)


# ---------------------------------------------------------------------------
# Saved results, a quick rerun, and "which optimizer when"

RESULTS_PATH = "benchmarks/results/compare.json"  # relative to the repository root


def load_results(path=None) -> dict:
    """The results that ``benchmarks/compare_optimizers.py`` saved (by default the committed file)."""
    import json
    from pathlib import Path

    path = Path(path) if path is not None else Path(__file__).parents[1] / RESULTS_PATH
    if not path.exists():
        raise FileNotFoundError(f"no comparison results at {path}; run benchmarks/compare_optimizers.py first")
    return json.loads(path.read_text())


_WORKLOADS = {"digits MLP": digits_mlp, "digits CNN": digits_cnn}


def quick(results: dict | None = None, methods: Sequence[str] = ("sgd", "adamw", "muon", "schedulefree"),
          seeds: Sequence[int] = (200, 201, 202), workloads: Sequence[str] = ("digits MLP", "digits CNN")) -> dict:
    """A small live rerun of the comparison: no tuning, only the timing on fresh seeds.

    The hyperparameters come from ``results`` (by default :func:`load_results`, the committed output of
    ``benchmarks/compare_optimizers.py``, where they were chosen by :func:`tune`); what this function
    measures (reach, epochs and seconds to the target, test accuracy) comes from the runs it makes now,
    on ``seeds``, which differ from both the tuning seeds and the script's timing seeds. Returns a dict of
    the same shape as :func:`compare`'s, so :func:`table` and :func:`when` format it.
    """
    results = load_results() if results is None else results
    for name in methods:
        _method(name)
    out = {"n_trials": results["n_trials"], "seeds": list(seeds), "workloads": {},
           "hparams_from": results.get("label", {}).get("command", "given results")}
    for wname in workloads:
        if wname not in _WORKLOADS:
            raise ValueError(f"unknown workload {wname!r}; choose from {', '.join(_WORKLOADS)}")
        saved = results["workloads"][wname]
        w = _WORKLOADS[wname]()
        entry = {"target": w.target, "epochs": w.epochs, "methods": {}}
        for name in methods:
            tuned = saved["methods"][name]["tuning"]
            entry["methods"][name] = {"tuning": tuned,
                                      "evaluation": evaluate_tuned(w, name, tuned["hparams"], seeds)}
        out["workloads"][wname] = entry
    return out


def state_floats_per_parameter(workload: Workload, method: str, hparams: dict | None = None) -> float:
    """Bytes of optimizer state after one step on ``workload``'s model, per parameter, in float32 units.

    Measured with :func:`state_bytes` (for Muon with AdamW, both optimizers' state), so it counts step
    counters too: Adam's is a little over 2, SGD with momentum's 1, Adafactor's well under 1.
    """
    m = _method(method)
    h = hparams if hparams is not None else {k: math.sqrt(lo * hi) for k, (lo, hi) in m.space.items()}
    h = _check_hparams(m, h)
    model = workload.make_model(0, workload.data.train.X.device)
    opt = _schedule_free(model, h, 1) if m.name == "schedulefree" else m.build(model, h)
    X, y = workload.data.train.X[:workload.batch_size], workload.data.train.y[:workload.batch_size]
    if hasattr(opt, "train"):
        opt.train()
    F.cross_entropy(model(X), y).backward()
    opt.step()
    parts = getattr(opt, "optimizers", [opt])  # muon_with_adamw holds two
    n = sum(p.numel() for p in model.parameters())
    return sum(state_bytes(o) for o in parts) / (4 * n)


def when(results: dict, workloads: Sequence[Workload] | None = None) -> str:
    """A "which optimizer when" markdown table built from ``results`` (from :func:`compare` or :func:`quick`).

    One row per method: its rank on each workload (by median epochs to the target among the seeds that
    reached it; a method that missed on some seed ranks after every one that never missed), the state it
    keeps per parameter (measured by :func:`state_floats_per_parameter` on each workload's model) and its
    tuning sensitivity: the share of tuning trials that reached the target (higher is easier to tune).
    """
    names = list(results["workloads"])
    methods = list(next(iter(results["workloads"].values()))["methods"])
    by_name = {w.name: w for w in workloads} if workloads else {n: _WORKLOADS[n]() for n in names if n in _WORKLOADS}
    ranks = {}
    for wname in names:
        ms = results["workloads"][wname]["methods"]

        def key(name):
            ev = ms[name]["evaluation"]
            return (-ev["reached"], ev["median_epochs"] if ev["median_epochs"] is not None else math.inf,
                    ev["median_seconds"] if ev["median_seconds"] is not None else math.inf)

        ranks[wname] = {name: i for i, name in enumerate(sorted(ms, key=key), start=1)}
    head = "| method | " + " | ".join(f"rank on {n}" for n in names) + \
        " | state (floats per parameter) | tuning trials on target | best at |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for name in methods:
        floats = [state_floats_per_parameter(by_name[n], name, results["workloads"][n]["methods"][name]["tuning"]["hparams"])
                  for n in names if n in by_name]
        share = statistics.mean(results["workloads"][n]["methods"][name]["tuning"]["reached_fraction"] for n in names)
        best = [n for n in names if ranks[n][name] == 1]
        state = f"{min(floats):.2f}–{max(floats):.2f}" if floats and max(floats) - min(floats) >= 0.005 else \
            (f"{floats[0]:.2f}" if floats else "—")
        lines.append(f"| {name} | " + " | ".join(f"{ranks[n][name]}/{len(ranks[n])}" for n in names) +
                     f" | {state} | {100 * share:.0f} % | {', '.join(best) if best else '—'} |")
    return "\n".join(lines)
