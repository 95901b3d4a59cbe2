r"""Hyperparameter search by hand: grid search, random search and successive halving.

Every search here **minimises** an ``objective`` (lower is better: a validation loss, an
error rate) and spends a **fixed budget** that is known before it starts:

- :func:`grid_search` evaluates every point of a Cartesian grid (``prod(len(values))`` calls);
- :func:`random_search` evaluates ``n_trials`` configurations drawn from a search space of
  distributions (:func:`log_uniform`, :func:`uniform`, :func:`choice`);
- :func:`successive_halving` starts many configurations on a small budget (a few epochs)
  and gives ever larger budgets to the best ``1/eta`` of them (Jamieson & Talwalkar, 2016;
  the inner loop of Hyperband, Li et al., 2017).

Each returns a :class:`SearchResult`: every :class:`Trial` in the order it was run, the best
one, the budget spent, the running minimum for a plot, and a plain-text table::

    >>> import math
    >>> from book.practice.search import random_search, log_uniform, uniform
    >>> def objective(config):   # a bowl with its minimum at lr = 0.01, momentum = 0.9
    ...     return (math.log10(config["lr"]) + 2) ** 2 + (config["momentum"] - 0.9) ** 2
    >>> space = {"lr": log_uniform(1e-4, 1.0), "momentum": uniform(0.0, 0.99)}
    >>> result = random_search(objective, space, n_trials=50, seed=0, progress=False)
    >>> result.total_budget, len(result.best_so_far())
    (50, 50)
    >>> result.best.score < 0.05
    True

Randomness comes from a ``torch.Generator`` of the search's own, seeded with ``seed``: a
search never touches (or depends on) the global random state, and the same seed gives the
same trials. (A chapter passes ``book.utils.method_seed(seed)`` so that ``BOOK_SEED`` moves it.)

References:
    J. Bergstra and Y. Bengio, "Random search for hyper-parameter optimization", JMLR 13 (2012).
    K. Jamieson and A. Talwalkar, "Non-stochastic best arm identification and hyperparameter
    optimization", AISTATS (2016), arXiv:1502.07943.
    L. Li, K. Jamieson, G. DeSalvo, A. Rostamizadeh and A. Talwalkar, "Hyperband: a novel
    bandit-based approach to hyperparameter optimization", JMLR 18 (2018), arXiv:1603.06560.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from book import checks

__all__ = [
    "LogUniform",
    "Uniform",
    "Choice",
    "log_uniform",
    "uniform",
    "choice",
    "sample_config",
    "Trial",
    "SearchResult",
    "grid_search",
    "random_search",
    "halving_schedule",
    "successive_halving",
]


# ---------------------------------------------------------------------------
# Search-space distributions


def _uniform01(generator: torch.Generator) -> float:
    """One draw of U[0, 1) in float64 from ``generator``."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return float(torch.rand((), generator=generator, dtype=torch.float64))


@dataclass(frozen=True)
class LogUniform:
    r"""A number whose logarithm is uniform: :math:`x = \exp(u)`, :math:`u \sim U[\log a, \log b)`.

    Every decade of ``[low, high]`` gets the same share of the samples (between 1e-4 and 1,
    a quarter land in each of [1e-4, 1e-3), [1e-3, 1e-2), ...), which is what a learning
    rate or a weight decay needs: their effect depends on the ratio, not the difference.
    Build it with :func:`log_uniform`.
    """

    low: float
    high: float

    def __post_init__(self):
        low, high = checks.number(self.low, "low"), checks.number(self.high, "high")
        if low <= 0:
            raise ValueError(f"log_uniform needs low > 0 (a logarithm is taken), got low = {low}")
        if low >= high:
            raise ValueError(f"low must be < high, got low = {low}, high = {high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def sample(self, generator: torch.Generator) -> float:
        """One draw, from ``generator`` (one float64 uniform number per draw)."""
        log_low, log_high = math.log(self.low), math.log(self.high)
        return math.exp(log_low + (log_high - log_low) * _uniform01(generator))

    def __repr__(self) -> str:
        return f"log_uniform({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Uniform:
    r"""A number drawn uniformly from ``[low, high)``: :math:`x = a + (b - a)\,u`, :math:`u \sim U[0, 1)`.

    Build it with :func:`uniform`.
    """

    low: float
    high: float

    def __post_init__(self):
        low, high = checks.number(self.low, "low"), checks.number(self.high, "high")
        if low >= high:
            raise ValueError(f"low must be < high, got low = {low}, high = {high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def sample(self, generator: torch.Generator) -> float:
        """One draw, from ``generator`` (one float64 uniform number per draw)."""
        return self.low + (self.high - self.low) * _uniform01(generator)

    def __repr__(self) -> str:
        return f"uniform({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Choice:
    """One of a few values, each with probability ``1 / len(values)``. Build it with :func:`choice`."""

    values: tuple

    def __post_init__(self):
        if isinstance(self.values, (str, bytes)) or not isinstance(self.values, Sequence):
            raise TypeError(f"choice needs a sequence of values, got {type(self.values).__name__}")
        if len(self.values) == 0:
            raise ValueError("choice needs at least one value, got an empty sequence")
        object.__setattr__(self, "values", tuple(self.values))

    def sample(self, generator: torch.Generator):
        """One of ``values``, drawn from ``generator`` (one float64 uniform number per draw)."""
        return self.values[min(int(_uniform01(generator) * len(self.values)), len(self.values) - 1)]

    def __repr__(self) -> str:
        return f"choice({list(self.values)!r})"


def log_uniform(low: float, high: float) -> LogUniform:
    r"""A log-uniform distribution on ``[low, high)``, for learning rates and weight decays.

    .. math:: x = \exp\bigl(\log a + (\log b - \log a)\,u\bigr), \qquad u \sim U[0, 1),

    with :math:`a` = ``low`` :math:`> 0` and :math:`b` = ``high``.

    Raises:
        ValueError: if ``low <= 0`` or ``low >= high``.

    Example:
        >>> d = log_uniform(1e-4, 1.0)
        >>> d
        log_uniform(0.0001, 1)
        >>> 1e-4 <= d.sample(torch.Generator().manual_seed(0)) < 1.0
        True
    """
    return LogUniform(low, high)


def uniform(low: float, high: float) -> Uniform:
    r"""A uniform distribution on ``[low, high)``, for momentum, dropout rates, ...

    Raises:
        ValueError: if ``low >= high``.

    Example:
        >>> uniform(0.0, 0.99)
        uniform(0, 0.99)
    """
    return Uniform(low, high)


def choice(values: Sequence) -> Choice:
    """A uniform choice among ``values`` (numbers, strings, anything), for categorical settings.

    Raises:
        ValueError: if ``values`` is empty.

    Example:
        >>> choice(["sgd", "adam"]).sample(torch.Generator().manual_seed(0)) in ("sgd", "adam")
        True
    """
    return Choice(values)


def _check_space(space) -> dict:
    if not isinstance(space, Mapping):
        raise TypeError(f"space must be a dict of name -> distribution, got {type(space).__name__}")
    if len(space) == 0:
        raise ValueError("space is empty: give at least one hyperparameter, e.g. {'lr': log_uniform(1e-4, 1)}")
    for name, dist in space.items():
        if not callable(getattr(dist, "sample", None)):
            raise TypeError(
                f"space[{name!r}] must be a distribution with a sample(generator) method "
                f"(log_uniform, uniform, choice), got {type(dist).__name__}; for a fixed value use choice([value])"
            )
    return dict(space)


def sample_config(space: Mapping[str, Any], generator: torch.Generator) -> dict:
    """One configuration: a draw of each distribution in ``space``, in the dict's order.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sorted(sample_config({"lr": log_uniform(1e-3, 1), "opt": choice(["sgd"])}, g))
        ['lr', 'opt']
    """
    return {name: dist.sample(generator) for name, dist in space.items()}


# ---------------------------------------------------------------------------
# Results


@dataclass
class Trial:
    """One evaluation of the objective.

    Attributes:
        number: its position in the order of evaluation, from 0.
        config: the hyperparameters, a dict.
        score: the objective's value (``inf`` where it returned NaN or an infinity).
        budget: the budget it was given (successive halving); ``None`` for a grid or random
            search, where each trial is one full evaluation.
        rung: the round of successive halving (0 for the smallest budget); ``None`` otherwise.
        config_id: which configuration this is: the same config evaluated at several rungs
            keeps its id (its index among the sampled configs); equal to ``number`` for a
            grid or random search.
    """

    number: int
    config: dict
    score: float
    budget: float | None = None
    rung: int | None = None
    config_id: int | None = None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class SearchResult:
    """What a search did: every trial, the best one and the budget spent.

    Attributes:
        trials: every :class:`Trial`, in the order they were run.
        best: the best trial: the lowest score (for successive halving, the lowest score among
            the trials at the largest budget reached); ties go to the earlier trial.
        total_budget: what the search spent: the number of objective calls for a grid or random
            search, the sum of the budgets of all calls for successive halving.
        method: ``"grid"``, ``"random"`` or ``"successive_halving"``.
    """

    trials: list[Trial]
    best: Trial
    total_budget: float
    method: str = ""

    def best_so_far(self) -> list[float]:
        """The running minimum of the scores in the order the trials were run (one per trial),
        the curve "best score found after n trials" to plot against n. For successive halving
        it mixes budgets: plot ``score`` per ``rung`` instead to compare like with like."""
        out, best = [], math.inf
        for t in self.trials:
            best = min(best, t.score)
            out.append(best)
        return out

    def scores(self) -> list[float]:
        """Every trial's score, in the order they were run."""
        return [t.score for t in self.trials]

    def _ranked(self) -> list[Trial]:
        # Highest rung first (successive halving), then the score; ties by trial number (stable sort).
        return sorted(self.trials, key=lambda t: (-(t.rung or 0), t.score))

    def table(self, top: int | None = None) -> str:
        """An aligned plain-text table of the trials, best first.

        Sorted by score (for successive halving: by rung, the largest budget first, then by
        score), ties in the order the trials ran; ``top`` keeps the first ``top`` rows.

        Example:
            >>> r = grid_search(lambda c: (c["x"] - 1) ** 2, {"x": [0, 1, 2]}, progress=False)
            >>> print(r.table())
            rank  trial  x  score
               1      1  1      0
               2      0  0      1
               3      2  2      1
        """
        rows = self._ranked()
        if top is not None:
            rows = rows[: checks.integer(top, "top", 1)]
        keys = list(dict.fromkeys(k for t in self.trials for k in t.config))
        halving = any(t.rung is not None for t in self.trials)
        header = ["rank", "trial"] + keys + (["rung", "budget"] if halving else []) + ["score"]
        body = []
        for rank, t in enumerate(rows, start=1):
            row = [str(rank), str(t.number)] + [_fmt(t.config.get(k, "")) for k in keys]
            if halving:
                row += [str(t.rung), _fmt(t.budget)]
            body.append(row + [_fmt(t.score)])
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        right = [True, True] + [all(_is_number(t.config.get(k)) for t in rows) for k in keys]
        right += [True, True] * halving + [True]

        def line(cells):
            return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

        return "\n".join([line(header)] + [line(r) for r in body])

    def __repr__(self) -> str:
        head = (
            f"SearchResult({self.method or 'search'}: {len(self.trials)} trials, "
            f"total_budget={_fmt(self.total_budget)}, best score {_fmt(self.best.score)} "
            f"at {self.best.config})"
        )
        return head + "\n" + self.table(top=5)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _score(value, where: str) -> float:
    """The objective's value as a float; NaN and infinities become ``inf`` (the worst score)."""
    try:
        value = float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several numbers
        raise TypeError(f"the objective must return a number, got {type(value).__name__} at {where}") from None
    return value if math.isfinite(value) else math.inf


def _best(trials: list[Trial]) -> Trial:
    return min(trials, key=lambda t: t.score)  # min keeps the first of equal scores


def _check_objective(objective) -> None:
    if not callable(objective):
        raise TypeError(f"objective must be a function, got {type(objective).__name__}")


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="trial", disable=not progress, leave=True)


# ---------------------------------------------------------------------------
# Grid and random search


def grid_search(
    objective: Callable[[dict], float],
    grid: Mapping[str, Sequence],
    progress: bool = True,
) -> SearchResult:
    r"""Evaluate ``objective(config)`` at every point of the Cartesian product of ``grid``.

    .. math:: \mathcal{C} = V_1 \times V_2 \times \dots \times V_d, \qquad
              \hat c = \arg\min_{c \in \mathcal{C}} f(c),

    with :math:`V_i` = ``grid[name_i]``. The order is that of nested ``for`` loops over the
    grid's keys in the dict's order, the **first key outermost** and the last varying
    fastest (``itertools.product``). The budget is fixed: :math:`\prod_i |V_i|` calls.
    With :math:`d` hyperparameters of which only one matters, a grid of :math:`n^d` points
    tries only :math:`n` distinct values of it (Bergstra & Bengio, 2012): random search
    does not have this problem.

    Args:
        objective: ``config -> score``, lower is better. A NaN or infinite score (a diverged
            run) is recorded as ``inf`` and the search goes on.
        grid: ``{name: values}``, each a non-empty sequence (not a string).
        progress: show a ``tqdm`` progress bar.

    Returns:
        A :class:`SearchResult` with ``total_budget`` = the number of grid points.

    Raises:
        ValueError: if the grid or one of its value lists is empty.
        TypeError: if the objective returns something that is not a number.

    Example:
        >>> r = grid_search(lambda c: (c["lr"] - 0.1) ** 2 + c["wd"],
        ...                 {"lr": [0.01, 0.1, 1.0], "wd": [0.0, 1e-4]}, progress=False)
        >>> [t.config for t in r.trials[:3]]
        [{'lr': 0.01, 'wd': 0.0}, {'lr': 0.01, 'wd': 0.0001}, {'lr': 0.1, 'wd': 0.0}]
        >>> r.best.config, r.total_budget
        ({'lr': 0.1, 'wd': 0.0}, 6)
    """
    _check_objective(objective)
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a dict of name -> values, got {type(grid).__name__}")
    if len(grid) == 0:
        raise ValueError("grid is empty: give at least one hyperparameter, e.g. {'lr': [0.01, 0.1]}")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"grid[{name!r}] must be a sequence of values, got {type(values).__name__}")
        if len(values) == 0:
            raise ValueError(f"grid[{name!r}] is empty: every hyperparameter needs at least one value")
    names = list(grid)
    total = math.prod(len(v) for v in grid.values())
    trials: list[Trial] = []
    bar = _bar(total, "grid search", progress)
    try:
        for number, values in enumerate(itertools.product(*grid.values())):
            config = dict(zip(names, values))
            score = _score(objective(dict(config)), f"trial {number} ({config})")
            trials.append(Trial(number, config, score, config_id=number))
            bar.set_postfix(best=f"{min(t.score for t in trials):.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return SearchResult(trials, _best(trials), len(trials), "grid")


def random_search(
    objective: Callable[[dict], float],
    space: Mapping[str, Any],
    n_trials: int,
    seed: int = 0,
    progress: bool = True,
) -> SearchResult:
    r"""Evaluate ``objective`` at ``n_trials`` configurations drawn independently from ``space``.

    .. math:: c_1, \dots, c_n \overset{\text{iid}}{\sim} p_1 \otimes \dots \otimes p_d, \qquad
              \hat c = \arg\min_{i \le n} f(c_i).

    Each hyperparameter gets ``n_trials`` distinct values (a grid of the same budget gives
    it only :math:`n^{1/d}`), and if the best 5 % of the space is what you want, 59 trials
    find a point in it with probability :math:`1 - 0.95^{59} > 0.95` (Bergstra & Bengio, 2012).

    Args:
        objective: ``config -> score``, lower is better. A NaN or infinite score is recorded
            as ``inf`` and the search goes on.
        space: ``{name: distribution}``: :func:`log_uniform` for rates, :func:`uniform`,
            :func:`choice`, or anything with a ``sample(generator)`` method.
        n_trials: the budget, the number of objective calls (>= 1).
        seed: seeds the search's own ``torch.Generator``; configs are drawn trial by trial, each
            in the order of ``space``'s keys. The global random state is not used.
        progress: show a ``tqdm`` progress bar.

    Returns:
        A :class:`SearchResult` with ``total_budget = n_trials``.

    Raises:
        ValueError: if ``n_trials < 1`` or ``space`` is empty.
        TypeError: if a value of ``space`` is not a distribution.

    Example:
        >>> r = random_search(lambda c: abs(math.log10(c["lr"]) + 2), {"lr": log_uniform(1e-4, 1)},
        ...                   n_trials=20, seed=0, progress=False)
        >>> len(r.trials), 1e-3 < r.best.config["lr"] < 1e-1
        (20, True)
    """
    _check_objective(objective)
    space = _check_space(space)
    n_trials = checks.integer(n_trials, "n_trials", 1)
    generator = torch.Generator().manual_seed(checks.integer(seed, "seed"))
    trials: list[Trial] = []
    bar = _bar(n_trials, "random search", progress)
    try:
        for number in range(n_trials):
            config = sample_config(space, generator)
            score = _score(objective(dict(config)), f"trial {number} ({config})")
            trials.append(Trial(number, config, score, config_id=number))
            bar.set_postfix(best=f"{min(t.score for t in trials):.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return SearchResult(trials, _best(trials), len(trials), "random")


# ---------------------------------------------------------------------------
# Successive halving


def halving_schedule(
    n_configs: int, min_budget: float, eta: int = 3, max_budget: float | None = None
) -> list[tuple[int, float]]:
    r"""The rungs of successive halving: a list of ``(configs, budget)``, one per rung.

    .. math:: n_{r+1} = \max\bigl(1, \lfloor n_r / \eta \rfloor\bigr), \qquad
              b_{r+1} = \min(\eta\, b_r, b_{\max}),

    from :math:`n_0` = ``n_configs`` and :math:`b_0` = ``min_budget``, stopping after the rung
    with a single configuration or the rung at :math:`b_{\max}` = ``max_budget``.

    Example:
        >>> halving_schedule(27, 1, eta=3)
        [(27, 1), (9, 3), (3, 9), (1, 27)]
        >>> halving_schedule(27, 1, eta=3, max_budget=5)
        [(27, 1), (9, 3), (3, 5)]
    """
    n = checks.integer(n_configs, "n_configs", 1)
    eta = checks.integer(eta, "eta")
    if eta < 2:
        raise ValueError(f"eta must be >= 2 (keep the best 1/eta of the configs), got {eta}")
    budget = checks.positive(min_budget, "min_budget")
    budget = int(budget) if _is_int(min_budget) else budget  # integer budgets (epochs) stay integers
    if max_budget is not None:
        cap = checks.positive(max_budget, "max_budget")
        if cap < budget:
            raise ValueError(f"max_budget must be >= min_budget, got max_budget = {cap:g}, min_budget = {budget:g}")
        max_budget = int(cap) if _is_int(max_budget) else cap
    rungs = [(n, budget)]
    while n > 1 and (max_budget is None or budget < max_budget):
        n = max(1, n // eta)
        budget = budget * eta if max_budget is None else min(budget * eta, max_budget)
        rungs.append((n, budget))
    return rungs


def _is_int(v) -> bool:
    """An int (not a bool), e.g. a number of epochs."""
    return isinstance(v, int) and not isinstance(v, bool)


def successive_halving(
    objective: Callable[[dict, float], float],
    space: Mapping[str, Any] | Sequence[dict],
    n_configs: int | None = None,
    min_budget: float = 1,
    eta: int = 3,
    max_budget: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SearchResult:
    r"""Successive halving: train many configurations a little, and the best ones longer.

    Rung :math:`r = 0, 1, \dots` evaluates :math:`n_r` configurations at budget :math:`b_r`
    (epochs, steps, samples) and keeps the best :math:`n_{r+1}` of them:

    .. math:: n_{r+1} = \max\bigl(1, \lfloor n_r / \eta \rfloor\bigr), \qquad
              b_{r+1} = \eta\, b_r \;(\text{capped at } b_{\max}),

    until a single configuration remains (it is evaluated at its rung's budget too) or the
    rung at ``max_budget`` is done. With :math:`n_0 = \eta^k` each rung costs the same,
    :math:`n_0 b_0`, and the whole search :math:`(k + 1)\, n_0 b_0`: for ``n_configs=27``,
    ``eta=3``, ``min_budget=1`` the rungs are 27 @ 1, 9 @ 3, 3 @ 9 and 1 @ 27, 108 in all,
    where training all 27 to 27 costs 729. The gamble: a configuration that is bad after a
    little training stays bad (false for a small learning rate that starts slowly).
    :func:`halving_schedule` lists the rungs without running anything.

    Rounding and ties: the number kept is the floor of :math:`n_r/\eta`, but at least one.
    The ranking is a stable sort by score, so of two equal scores the configuration sampled
    (or listed) earlier survives. A NaN or infinite score is recorded as ``inf`` (ranked last)
    and the search goes on. Each call starts from scratch: the objective gets the
    configuration and the budget, and the search counts the full budget of every call (an
    objective that resumes from a checkpoint would pay only the difference).

    Args:
        objective: ``(config, budget) -> score``, lower is better.
        space: ``{name: distribution}`` to sample ``n_configs`` configurations from, or a list
            of configuration dicts to start from (then ``n_configs`` is its length).
        n_configs: :math:`n_0` (>= 1); required with a ``space`` of distributions.
        min_budget: :math:`b_0 > 0`. Integer budgets stay integers (epochs).
        eta: :math:`\eta \ge 2`, an integer: keep the best :math:`1/\eta`, give them :math:`\eta`
            times the budget.
        max_budget: :math:`b_{\max}` (>= ``min_budget``), or ``None`` for no cap.
        seed: seeds the search's own ``torch.Generator`` that samples the configurations.
        progress: show a ``tqdm`` progress bar.

    Returns:
        A :class:`SearchResult`; each :class:`Trial` has its ``budget``, ``rung`` and
        ``config_id``; ``best`` is the lowest score at the largest budget reached;
        ``total_budget`` is the sum of the budgets of all calls.

    Raises:
        ValueError: for ``n_configs < 1``, ``eta < 2``, ``min_budget <= 0``, ``max_budget <
            min_budget``, an empty space or list, or ``n_configs`` disagreeing with the list.

    References:
        K. Jamieson and A. Talwalkar, "Non-stochastic best arm identification and
        hyperparameter optimization", AISTATS (2016), arXiv:1502.07943.
        L. Li et al., "Hyperband: a novel bandit-based approach to hyperparameter
        optimization", JMLR 18 (2018), arXiv:1603.06560.

    Example:
        >>> def objective(config, budget):   # a loss that falls with the budget
        ...     return (config["lr"] - 0.1) ** 2 + 1 / budget
        >>> r = successive_halving(objective, {"lr": uniform(0, 1)}, n_configs=27, min_budget=1,
        ...                        eta=3, seed=0, progress=False)
        >>> [(t.rung, t.budget) for t in r.trials][::9], r.total_budget
        ([(0, 1), (0, 1), (0, 1), (1, 3), (2, 9)], 108)
    """
    _check_objective(objective)
    if isinstance(space, Mapping):
        space = _check_space(space)
        if n_configs is None:
            raise ValueError("n_configs is required when space is a dict of distributions")
        n_configs = checks.integer(n_configs, "n_configs", 1)
        generator = torch.Generator().manual_seed(checks.integer(seed, "seed"))
        configs = [sample_config(space, generator) for _ in range(n_configs)]
    elif isinstance(space, Sequence) and not isinstance(space, (str, bytes)):
        configs = [dict(c) for c in space]
        if not configs:
            raise ValueError("the list of configurations is empty")
        if n_configs is not None and checks.integer(n_configs, "n_configs", 1) != len(configs):
            raise ValueError(f"n_configs = {n_configs} disagrees with the {len(configs)} configurations given")
    else:
        raise TypeError(f"space must be a dict of distributions or a list of configs, got {type(space).__name__}")
    schedule = halving_schedule(len(configs), min_budget, eta, max_budget)

    trials: list[Trial] = []
    alive = list(range(len(configs)))  # config ids, in the order they were sampled
    bar = _bar(sum(n for n, _ in schedule), "successive halving", progress)
    try:
        for rung, (n_keep, budget) in enumerate(schedule):
            scores = {}
            for cid in alive:
                where = f"rung {rung}, budget {budget}, config {cid} ({configs[cid]})"
                scores[cid] = _score(objective(dict(configs[cid]), budget), where)
                trials.append(Trial(len(trials), dict(configs[cid]), scores[cid], budget, rung, cid))
                bar.set_postfix(rung=rung, budget=_fmt(budget), refresh=False)
                bar.update(1)
            if rung + 1 < len(schedule):
                n_next = schedule[rung + 1][0]
                ranked = sorted(alive, key=lambda c: scores[c])  # stable: ties keep the earlier config
                alive = sorted(ranked[:n_next])  # the survivors, back in sampling order
    finally:
        bar.close()
    last = [t for t in trials if t.rung == len(schedule) - 1]
    return SearchResult(trials, _best(last), sum(t.budget for t in trials), "successive_halving")
