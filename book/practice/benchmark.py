r"""A tabular benchmark: train a grid of configurations once, let search methods query it.

Comparing hyperparameter optimizers fairly takes many repetitions (many seeds of each
sampler), and every repetition would retrain networks. A *tabular benchmark* trains every
configuration of a grid once, records its learning curves, and answers each "training run" of
a search with a table lookup (Klein & Hutter, 2019; Ying et al., NAS-Bench-101, 2019). Here:

- :func:`train_grid` trains a one-hidden-layer ReLU network for every pair (learning rate,
  weight decay) of a grid, **all at once**, as one batched model, and records the validation
  loss and accuracy after every epoch;
- :class:`TabularBenchmark` holds the curves, answers :meth:`~TabularBenchmark.lookup` at the
  nearest grid point, and offers Optuna objectives (:meth:`~TabularBenchmark.objective` with
  pruning, :meth:`~TabularBenchmark.objective_multi` for loss vs cost);
- :func:`epochs_used` counts the epochs a study consumed, :func:`make_sampler` names Optuna's
  samplers, and :func:`run_parallel_study` / :func:`optuna_worker` run one study in several
  processes that share a journal file.

::

    >>> import optuna, torch
    >>> from book.data import digits
    >>> ds = digits(seed=0)
    >>> bench = train_grid(*ds.train, *ds.val, lrs=torch.logspace(-3, 0, 4),
    ...                    weight_decays=torch.logspace(-5, -2, 4), epochs=5, progress=False)
    >>> bench.val_loss.shape                      # (lr, weight decay, epoch)
    torch.Size([4, 4, 5])
    >>> config, loss = bench.best()               # the best cell of the table
    >>> study = optuna.create_study(sampler=make_sampler("tpe", seed=0))
    >>> study.optimize(bench.objective, n_trials=10)
    >>> study.best_value >= loss                  # a search can only find the table's cells
    True

A 16 x 16 grid trained for 30 epochs on the digits takes a few seconds on two CPU cores.

The table answers only at its grid points: a sampler's continuous suggestion is snapped to
the nearest one (in log space), so samplers compete on a 16 x 16 landscape, not a continuous
one; two suggestions in the same cell cost two trials but give the same value.

References:
    A. Klein and F. Hutter, "Tabular benchmarks for joint architecture and hyperparameter
    optimization", arXiv:1905.04970 (2019).
    C. Ying et al., "NAS-Bench-101: towards reproducible neural architecture search", ICML
    (2019), arXiv:1902.09635.
    T. Akiba, S. Sano, T. Yanase, T. Ohta and M. Koyama, "Optuna: a next-generation
    hyperparameter optimization framework", KDD (2019), arXiv:1907.10902.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from book import checks

__all__ = [
    "initial_weights",
    "train_grid",
    "TabularBenchmark",
    "epochs_used",
    "make_sampler",
    "optuna_worker",
    "run_parallel_study",
]


# ---------------------------------------------------------------------------
# Training every configuration of a grid at once


def initial_weights(
    in_features: int, hidden: int, num_classes: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The initial ``(W1, b1, W2, b2)`` of the network, in ``torch.nn.Linear``'s layout.

    Every entry is uniform in :math:`[-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}}]`
    (the distribution ``nn.Linear`` uses), drawn in float64 on the CPU from ``generator``,
    in this order: ``W1`` ``(hidden, in_features)``, ``b1`` ``(hidden,)``, ``W2``
    ``(num_classes, hidden)``, ``b2`` ``(num_classes,)``; each as
    ``(2 * torch.rand(shape, generator=generator, dtype=torch.float64) - 1) * bound``.

    Example:
        >>> W1, b1, W2, b2 = initial_weights(64, 32, 10, torch.Generator().manual_seed(0))
        >>> W1.shape, b2.shape, bool(W1.abs().max() <= 1 / 8)
        (torch.Size([32, 64]), torch.Size([10]), True)
    """
    shapes = [((hidden, in_features), in_features), ((hidden,), in_features),
              ((num_classes, hidden), hidden), ((num_classes,), hidden)]
    return tuple(
        (2 * torch.rand(shape, generator=generator, dtype=torch.float64) - 1) / math.sqrt(fan_in)
        for shape, fan_in in shapes
    )


def _check_grid(values, name: str) -> Tensor:
    """A 1-d float64 CPU tensor of positive, strictly increasing values."""
    try:
        t = torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: give at least one value")
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(
            f"{name} must be finite and > 0 (the table is searched in log space; use a tiny value such "
            f"as 1e-6 for 'almost none'), got {t.tolist()}"
        )
    if (t[1:] <= t[:-1]).any():
        raise ValueError(f"{name} must be strictly increasing, got {t.tolist()}")
    return t


def _batched_logits(params: list[Tensor], X: Tensor) -> Tensor:
    """Logits of K networks on the same inputs: ``X`` (n, d) -> (K, n, C)."""
    W1, b1, W2, b2 = params  # (K, d, h), (K, 1, h), (K, h, C), (K, 1, C)
    H = torch.relu(torch.matmul(X, W1) + b1)  # (K, n, h): X @ W1[k] for every k
    return torch.bmm(H, W2) + b2  # (K, n, C)


def _batched_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of each of K networks: logits (K, n, C), y (n,) -> (K,)."""
    K, n, _ = logits.shape
    # cross_entropy wants the classes in dim 1: (K, C, n) against targets (K, n)
    return F.cross_entropy(logits.transpose(1, 2), y.expand(K, n), reduction="none").mean(1)


def train_grid(
    X_train: Tensor,
    y_train: Tensor,
    X_val: Tensor,
    y_val: Tensor,
    lrs,
    weight_decays,
    epochs: int = 30,
    batch_size: int = 64,
    hidden: int = 32,
    momentum: float = 0.9,
    seed: int = 0,
    num_classes: int | None = None,
    progress: bool = True,
) -> "TabularBenchmark":
    r"""Train a small classifier for every (learning rate, weight decay) of a grid, all at once.

    The network is ``Linear(d, hidden) -> ReLU -> Linear(hidden, C)`` with the mean
    cross-entropy loss, trained by minibatch SGD with momentum :math:`\mu` and coupled weight
    decay :math:`\lambda`, in ``torch.optim.SGD``'s convention (every parameter, biases too):

    .. math::
        b_t = \mu\, b_{t-1} + \bigl(\nabla L(\theta_{t-1}) + \lambda\, \theta_{t-1}\bigr), \quad
        \theta_t = \theta_{t-1} - \eta\, b_t, \quad b_0 = 0.

    The :math:`K = |\text{lrs}| \cdot |\text{weight\_decays}|` networks are one batched model:
    their weights are stacked along a leading dimension (``W1`` is ``(K, d, hidden)``), the
    forward pass is a batched matrix product, and the loss is the **sum** of the K networks'
    losses. The networks share no parameter, so the gradient of the sum with respect to
    network k's weights is the gradient of network k's own loss; the update above then runs
    on the stacks with :math:`\eta` and :math:`\lambda` as ``(K, 1, 1)`` tensors. One
    batched step costs about what one step of a K-times wider network costs, far less than
    K separate small steps.

    A fair grid: every configuration starts from **the same initial weights** and sees **the
    same minibatches in the same order**, so the table differs only by the hyperparameters.
    One ``torch.Generator`` seeded with ``seed`` draws the initial weights
    (:func:`initial_weights`), then one ``torch.randperm`` of the training set per epoch,
    cut into consecutive batches of ``batch_size`` (the last one smaller), the order
    :func:`book.data.minibatches` gives with that generator.

    A configuration that diverges (a NaN or infinite batch or validation loss) is stopped: its
    weights are zeroed and frozen, so they cannot produce NaNs, and its losses are ``inf``
    (its accuracy NaN) from the epoch in which it diverged on. The others do not notice: the
    summed loss only adds the finite ones.

    Args:
        X_train, y_train: training features ``(n, d)`` (their dtype and device are the
            model's) and int64 labels ``(n,)``.
        X_val, y_val: validation features and labels.
        lrs: the learning rates :math:`\eta` of the grid (positive, increasing).
        weight_decays: the weight decays :math:`\lambda` (positive, increasing: the table is
            searched in log space; use e.g. 1e-6 for "almost none").
        epochs: passes over the training set (>= 1).
        batch_size: samples per minibatch (>= 1).
        hidden: hidden units (>= 1).
        momentum: :math:`\mu \in [0, 1)`.
        seed: seeds the initial weights and the minibatch order (not the global generator).
        num_classes: C; inferred from the labels (largest + 1) when ``None``.
        progress: show a ``tqdm`` progress bar over the epochs.

    Returns:
        A :class:`TabularBenchmark` whose ``val_loss[i, j, e]`` is the validation loss of
        ``lrs[i]``, ``weight_decays[j]`` after ``e + 1`` epochs (tensors on the CPU).

    Example:
        >>> from book.data import digits
        >>> ds = digits(seed=0)
        >>> bench = train_grid(*ds.train, *ds.val, lrs=[0.01, 0.1], weight_decays=[1e-5, 1e-3],
        ...                    epochs=5, progress=False)
        >>> bench.val_loss.shape, bench.n_params
        (torch.Size([2, 2, 5]), 2410)
    """
    for name, t in (("X_train", X_train), ("y_train", y_train), ("X_val", X_val), ("y_val", y_val)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if X_train.ndim != 2 or X_val.ndim != 2 or X_val.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_train and X_val must be (n, d) with the same d, got {tuple(X_train.shape)} "
                         f"and {tuple(X_val.shape)}")
    if not X_train.is_floating_point():
        raise TypeError(f"X_train must be floating point, got {X_train.dtype}")
    if len(y_train) != len(X_train) or len(y_val) != len(X_val) or len(X_train) == 0 or len(X_val) == 0:
        raise ValueError(f"X and y must be non-empty with one label per sample, got {len(X_train)}/"
                         f"{len(y_train)} training and {len(X_val)}/{len(y_val)} validation samples")
    lr_grid, wd_grid = _check_grid(lrs, "lrs"), _check_grid(weight_decays, "weight_decays")
    epochs = checks.integer(epochs, "epochs", 1)
    batch_size = checks.integer(batch_size, "batch_size", 1)
    hidden = checks.integer(hidden, "hidden", 1)
    momentum = checks.number(momentum, "momentum", low=0)
    if momentum >= 1:
        raise ValueError(f"momentum must be < 1, got {momentum}")
    seed = checks.integer(seed, "seed")
    if num_classes is None:
        num_classes = int(max(y_train.max(), y_val.max())) + 1
    num_classes = checks.integer(num_classes, "num_classes", 2)

    dev, dtype = X_train.device, X_train.dtype
    X_val, y_train, y_val = X_val.to(dev, dtype), y_train.to(dev), y_val.to(dev)
    n, d = X_train.shape
    A, B = len(lr_grid), len(wd_grid)
    K = A * B  # config k = i * B + j  <->  (lrs[i], weight_decays[j])

    gen = torch.Generator().manual_seed(seed)
    W1, b1, W2, b2 = initial_weights(d, hidden, num_classes, gen)
    one = [W1.T, b1[None], W2.T, b2[None]]  # (d, h), (1, h), (h, C), (1, C): x @ W + b
    params = [p.to(dev, dtype).expand(K, *p.shape).clone().requires_grad_() for p in one]  # the same start for all K
    bufs = [torch.zeros_like(p) for p in params]  # momentum buffers b
    lr = lr_grid.repeat_interleave(B).to(dev, dtype).view(K, 1, 1)  # (K, 1, 1)
    wd = wd_grid.repeat(A).to(dev, dtype).view(K, 1, 1)  # (K, 1, 1)
    alive = torch.ones(K, dtype=torch.bool, device=dev)
    died = torch.full((K,), epochs, dtype=torch.long)  # the epoch index (0-based) of divergence

    val_loss = torch.empty(K, epochs, dtype=torch.float64)
    val_acc = torch.empty(K, epochs, dtype=torch.float64)
    train_loss = torch.empty(K, epochs, dtype=torch.float64)

    def kill(bad: Tensor, epoch: int) -> None:
        """Stop the networks in ``bad`` (K,) that are still alive: their learning rate becomes 0, and
        after the update their weights and buffers are zeroed (not now: backward still needs them)."""
        new = bad & alive
        if new.any():
            died[new.cpu()] = epoch
            alive.logical_and_(~new)
            lr.masked_fill_(~alive.view(K, 1, 1), 0.0)

    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, desc=f"train {K} configs", unit="epoch", disable=not progress, leave=True)
    try:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            loss_sum = torch.zeros(K, dtype=torch.float64, device=dev)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                losses = _batched_losses(_batched_logits(params, X_train[idx]), y_train[idx])  # (K,)
                kill(~torch.isfinite(losses.detach()), epoch)
                total = torch.where(alive, losses, torch.zeros_like(losses)).sum()  # only finite terms
                grads = torch.autograd.grad(total, params)
                with torch.no_grad():
                    for p, g, b in zip(params, grads, bufs):
                        b.mul_(momentum).add_(g + wd * p)  # b = mu b + (g + wd p)
                        p.sub_(lr * b)  # p = p - lr b
                    if not alive.all():  # a frozen network's NaN gradient must not stay in it
                        for t in params + bufs:
                            t[~alive] = 0.0
                loss_sum += losses.detach().to(torch.float64) * len(idx)
            with torch.no_grad():
                logits = _batched_logits(params, X_val)  # (K, n_val, C)
                vl = _batched_losses(logits, y_val)
                kill(~torch.isfinite(vl), epoch)
                val_loss[:, epoch] = vl.double().cpu()
                val_acc[:, epoch] = (logits.argmax(-1) == y_val).double().mean(1).cpu()
                train_loss[:, epoch] = (loss_sum / n).cpu()
            best = val_loss[alive.cpu(), epoch].min().item() if alive.any() else math.inf
            bar.set_postfix(best_val_loss=f"{best:.4g}", diverged=int((~alive).sum()), refresh=False)
            bar.update(1)
    finally:
        bar.close()

    gone = torch.arange(epochs)[None, :] >= died[:, None]  # (K, epochs): at or after divergence
    val_loss[gone], train_loss[gone], val_acc[gone] = math.inf, math.inf, math.nan
    shape = (A, B, epochs)
    return TabularBenchmark(
        lrs=lr_grid,
        weight_decays=wd_grid,
        epochs=epochs,
        val_loss=val_loss.view(shape),
        val_acc=val_acc.view(shape),
        train_loss=train_loss.view(shape),
        n_params=sum(p[0].numel() for p in params),
        settings=dict(batch_size=batch_size, hidden=hidden, momentum=momentum, seed=seed,
                      num_classes=num_classes, n_train=n, n_val=len(X_val), dtype=str(dtype).replace("torch.", "")),
    )


# ---------------------------------------------------------------------------
# The table


_METRICS = ("val_loss", "val_acc", "train_loss")


@dataclass(repr=False)
class TabularBenchmark:
    r"""Learning curves of a grid of (learning rate, weight decay), for searches to query.

    Attributes:
        lrs: the learning rates, ``(A,)`` float64, increasing.
        weight_decays: the weight decays, ``(B,)`` float64, increasing.
        epochs: E, the epochs each configuration was trained.
        val_loss: ``(A, B, E)``: ``val_loss[i, j, e]`` is the validation loss of ``lrs[i]``,
            ``weight_decays[j]`` after ``e + 1`` epochs; ``inf`` once a run diverged.
        val_acc: ``(A, B, E)``, the validation accuracy (NaN once a run diverged).
        train_loss: ``(A, B, E)``, the mean training loss over each epoch's minibatches.
        n_params: the number of parameters of one network.
        settings: how the table was made (batch size, hidden units, momentum, seed, ...).

    Epochs are counted from 1 in the methods (``epoch=3`` means after three epochs, i.e.
    index 2 of the tensors), as Optuna's ``trial.report(value, step=epoch)`` counts them.
    """

    lrs: Tensor
    weight_decays: Tensor
    epochs: int
    val_loss: Tensor
    val_acc: Tensor
    train_loss: Tensor
    n_params: int
    settings: dict = field(default_factory=dict)

    @classmethod
    def concat(cls, parts: list["TabularBenchmark"]) -> "TabularBenchmark":
        """One table from tables of consecutive shares of the learning rates, in order.

        The networks of :func:`train_grid` share nothing (each has its own weights, and all see the same
        initial weights and minibatches), so training the rows of a grid in several calls, for example in
        several processes, gives the rows of the grid trained at once. The parts must agree on everything
        else: the weight decays, the epochs and the settings.

        Example:
            >>> from book.data import digits
            >>> ds = digits(seed=0)
            >>> parts = [train_grid(*ds.train, *ds.val, lrs=lrs, weight_decays=[1e-5, 1e-3], epochs=2,
            ...                     progress=False) for lrs in ([0.01, 0.03], [0.1])]
            >>> TabularBenchmark.concat(parts).val_loss.shape
            torch.Size([3, 2, 2])
        """
        if not parts:
            raise ValueError("concat needs at least one table")
        first = parts[0]
        for part in parts[1:]:
            if (not torch.equal(part.weight_decays, first.weight_decays) or part.epochs != first.epochs
                    or part.settings != first.settings or part.n_params != first.n_params):
                raise ValueError("the tables differ in more than their learning rates (weight decays, epochs or "
                                 "settings): they are not shares of one grid")
        lrs = torch.cat([part.lrs for part in parts])
        if (lrs[1:] <= lrs[:-1]).any():
            raise ValueError(f"the learning rates must increase from one table to the next, got {lrs.tolist()}")
        return cls(lrs=lrs, weight_decays=first.weight_decays, epochs=first.epochs,
                   **{m: torch.cat([getattr(part, m) for part in parts]) for m in _METRICS},
                   n_params=first.n_params, settings=dict(first.settings))

    # -- lookups ------------------------------------------------------------

    def index(self, lr: float, weight_decay: float) -> tuple[int, int]:
        r"""The grid indices ``(i, j)`` nearest to ``(lr, weight_decay)`` in log space:
        :math:`i = \arg\min_i |\log \eta_i - \log \eta|`; a tie goes to the smaller value."""
        lr, weight_decay = checks.positive(lr, "lr"), checks.positive(weight_decay, "weight_decay")
        i = int(torch.argmin((self.lrs.log() - math.log(lr)).abs()))  # argmin: the first of ties
        j = int(torch.argmin((self.weight_decays.log() - math.log(weight_decay)).abs()))
        return i, j

    def snap(self, lr: float, weight_decay: float) -> tuple[float, float]:
        """The grid point nearest to ``(lr, weight_decay)`` in log space."""
        i, j = self.index(lr, weight_decay)
        return float(self.lrs[i]), float(self.weight_decays[j])

    def _epoch(self, epoch) -> int:
        if epoch is None:
            return self.epochs
        epoch = checks.integer(epoch, "epoch", 1)
        if epoch > self.epochs:
            raise ValueError(f"epoch must be in 1..{self.epochs}, got {epoch}")
        return epoch

    def _metric(self, metric: str) -> Tensor:
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
        return getattr(self, metric)

    def lookup(self, lr: float, weight_decay: float, epoch: int | None = None, metric: str = "val_loss") -> float:
        """The ``metric`` after ``epoch`` epochs (1..E; ``None``: the last) at the grid point
        nearest to ``(lr, weight_decay)`` in log space.

        Example:
            >>> i, j = bench.index(0.1, 1e-4)
            >>> bench.lookup(0.1, 1e-4, epoch=2) == bench.val_loss[i, j, 1].item()
            True
        """
        i, j = self.index(lr, weight_decay)
        return float(self._metric(metric)[i, j, self._epoch(epoch) - 1])

    def best(self, metric: str = "val_loss", epoch: int | None = None) -> tuple[dict, float]:
        """The best grid point after ``epoch`` epochs (``None``: the last) and its value: the
        lowest loss, or the highest accuracy for ``"val_acc"``; ties go to the first in
        (lr, weight decay) order.

        Returns:
            ``({"lr": ..., "weight_decay": ...}, value)``.

        Example:
            >>> config, value = bench.best()
            >>> value == bench.val_loss[:, :, -1].min().item() == bench.lookup(**config)
            True
        """
        values = self._metric(metric)[:, :, self._epoch(epoch) - 1].reshape(-1)
        if metric == "val_acc":
            values = -torch.nan_to_num(values, nan=-math.inf)
        k = int(torch.argmin(values))
        i, j = divmod(k, len(self.weight_decays))
        value = float(self._metric(metric)[i, j, self._epoch(epoch) - 1])
        return {"lr": float(self.lrs[i]), "weight_decay": float(self.weight_decays[j])}, value

    @property
    def diverged(self) -> Tensor:
        """``(A, B)`` bool: the configurations whose training diverged."""
        return ~torch.isfinite(self.val_loss[:, :, -1])

    def cost(self, epochs: int) -> int:
        """A deterministic cost of training one configuration for ``epochs`` epochs:
        ``n_params * epochs`` (wall-clock time is not repeatable)."""
        return self.n_params * checks.integer(epochs, "epochs", 0)

    # -- Optuna glue --------------------------------------------------------

    def _suggest(self, trial) -> tuple[int, int]:
        lr = trial.suggest_float("lr", float(self.lrs[0]), float(self.lrs[-1]), log=True)
        wd = trial.suggest_float("weight_decay", float(self.weight_decays[0]), float(self.weight_decays[-1]), log=True)
        i, j = self.index(lr, wd)
        trial.set_user_attr("snapped_lr", float(self.lrs[i]))
        trial.set_user_attr("snapped_weight_decay", float(self.weight_decays[j]))
        return i, j

    def objective(self, trial, prune: bool = False) -> float:
        """An Optuna objective: "train" the suggested configuration, return its last validation loss.

        Suggests ``lr`` and ``weight_decay`` log-uniformly over the grid's range
        (``trial.suggest_float(..., log=True)``), snaps them to the nearest grid point (stored as
        the user attributes ``snapped_lr`` and ``snapped_weight_decay``) and reports the
        validation loss after every epoch (``trial.report(value, epoch)``, epochs from 1). With
        ``prune=True`` it asks the study's pruner after every report but the last (a trial that
        has trained all E epochs is complete: pruning it would save nothing) and, if told to, stops:
        the user attribute ``epochs`` records how many epochs the trial used (E when it ran to
        the end) and ``optuna.TrialPruned`` is raised. Use it as ``study.optimize(bench.objective)``
        or, pruning, ``study.optimize(functools.partial(bench.objective, prune=True))``.

        Example:
            >>> import functools, optuna
            >>> study = optuna.create_study(sampler=make_sampler("random", seed=0),
            ...                             pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
            >>> study.optimize(functools.partial(bench.objective, prune=True), n_trials=12)
            >>> epochs_used(study) <= 12 * bench.epochs
            True
        """
        import optuna

        i, j = self._suggest(trial)
        curve = self.val_loss[i, j].tolist()  # the validation loss after each epoch, as Python floats
        for epoch in range(1, self.epochs + 1):
            value = curve[epoch - 1]
            trial.report(value, epoch)
            if prune and epoch < self.epochs and trial.should_prune():  # the last epoch is paid for
                trial.set_user_attr("epochs", epoch)
                raise optuna.TrialPruned()
        trial.set_user_attr("epochs", self.epochs)
        return value

    def objective_multi(self, trial) -> tuple[float, int]:
        """A two-objective Optuna objective: (validation loss, cost), both to minimise.

        Suggests ``lr`` and ``weight_decay`` as :meth:`objective` does and ``epochs`` (an
        int in 1..E), and returns the validation loss after that many epochs and
        :meth:`cost` ``(epochs)``. Create the study with ``directions=["minimize", "minimize"]``
        (NSGA-II: ``make_sampler("nsga2")``); its Pareto front (``study.best_trials``) is the
        trade-off between a good network and a cheap one.

        Example:
            >>> import optuna
            >>> study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler("nsga2"))
            >>> study.optimize(bench.objective_multi, n_trials=10)
            >>> all(t.values[1] == bench.cost(t.params["epochs"]) for t in study.best_trials)
            True
        """
        i, j = self._suggest(trial)
        epochs = trial.suggest_int("epochs", 1, self.epochs)
        trial.set_user_attr("epochs", epochs)
        return float(self.val_loss[i, j, epochs - 1]), self.cost(epochs)

    # -- saving -------------------------------------------------------------

    def save(self, path) -> None:
        """Write the table to ``path`` with ``torch.save`` (tensors, numbers and strings only)."""
        torch.save(
            dict(lrs=self.lrs, weight_decays=self.weight_decays, epochs=self.epochs, val_loss=self.val_loss,
                 val_acc=self.val_acc, train_loss=self.train_loss, n_params=self.n_params,
                 settings=dict(self.settings)),
            path,
        )

    @classmethod
    def load(cls, path) -> "TabularBenchmark":
        """Read a table written by :meth:`save` (with ``weights_only=True``: no code is run)."""
        return cls(**torch.load(path, weights_only=True))

    def __repr__(self) -> str:
        (config, loss) = self.best()
        return (
            f"TabularBenchmark({len(self.lrs)} lrs in [{self.lrs[0]:.3g}, {self.lrs[-1]:.3g}] x "
            f"{len(self.weight_decays)} weight decays in [{self.weight_decays[0]:.3g}, {self.weight_decays[-1]:.3g}], "
            f"{self.epochs} epochs, {self.n_params} parameters, {int(self.diverged.sum())} diverged; best val_loss "
            f"{loss:.4g} at lr={config['lr']:.3g}, weight_decay={config['weight_decay']:.3g})"
        )


# ---------------------------------------------------------------------------
# Studies


def epochs_used(study) -> int:
    """The epochs a study consumed: the sum over its finished trials (complete, pruned or
    failed) of the epochs each trained, read from the trial's user attribute ``epochs`` (set by
    :meth:`TabularBenchmark.objective` and :meth:`~TabularBenchmark.objective_multi`) or, where
    that is missing, the number of values it reported. A pruned trial counts only the epochs
    it reported, which is what pruning saves.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(sampler=make_sampler("random", seed=0))
        >>> study.optimize(bench.objective, n_trials=3)
        >>> epochs_used(study) == 3 * bench.epochs
        True
    """
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    total = 0
    for t in study.get_trials(deepcopy=False, states=finished):
        total += int(t.user_attrs.get("epochs", len(t.intermediate_values)))
    return total


_SAMPLERS = {
    "random": "RandomSampler",
    "tpe": "TPESampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "nsga2": "NSGAIISampler",
    "qmc": "QMCSampler",
}


def make_sampler(name: str, seed: int | None = 0, **kwargs):
    """An Optuna sampler by a short name, seeded: ``"random"``, ``"tpe"`` (the default of
    ``optuna.create_study``), ``"gp"`` (Gaussian-process Bayesian optimization; needs scipy),
    ``"cmaes"`` (needs ``cmaes``), ``"nsga2"`` (multi-objective) or ``"qmc"``. ``kwargs`` go
    to the sampler's constructor (e.g. ``n_startup_trials=5``). A name is what a worker
    process receives: it pickles, and each process builds its own sampler.

    Example:
        >>> type(make_sampler("gp", seed=0, n_startup_trials=5)).__name__
        'GPSampler'
    """
    import optuna

    if name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: use one of {sorted(_SAMPLERS)}")
    return getattr(optuna.samplers, _SAMPLERS[name])(seed=seed, **kwargs)


def _journal(path):
    import optuna

    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def optuna_worker(
    storage_path: str,
    study_name: str,
    n_trials: int,
    seed: int,
    benchmark_path: str,
    sampler: str = "tpe",
    prune: bool = False,
) -> None:
    """One worker of a parallel study: run ``n_trials`` trials of a study shared through a file.

    It loads the benchmark saved at ``benchmark_path`` (:meth:`TabularBenchmark.save`), opens
    the study ``study_name`` in the journal file ``storage_path``
    (``optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))``,
    created if missing, so several processes and machines with a shared disk can join), and
    runs ``study.optimize(benchmark.objective, n_trials)`` with its own sampler seeded with
    ``seed`` (give every worker a different seed, or they propose the same points). Every
    trial is read from and written to the journal, so workers see each other's results and
    trial numbers are unique across workers. A top-level function with plain arguments: it
    pickles, as ``multiprocessing``'s spawn start method needs. Runs with one torch thread.
    """
    import functools

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bench = TabularBenchmark.load(benchmark_path)
    study = optuna.create_study(
        study_name=study_name,
        storage=_journal(storage_path),
        sampler=make_sampler(sampler, seed=seed),
        pruner=optuna.pruners.MedianPruner() if prune else optuna.pruners.NopPruner(),
        direction="minimize",
        load_if_exists=True,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # table lookups and the samplers' small linear algebra: one thread each
    try:
        objective = functools.partial(bench.objective, prune=prune)
        study.optimize(objective, n_trials=checks.integer(n_trials, "n_trials", 1))
    finally:
        torch.set_num_threads(threads)


def _worker_entry(error_path: str, environ: dict, *args) -> None:
    """Run :func:`optuna_worker`; on an error, write its traceback where the parent reads it."""
    try:
        os.environ.clear()  # the parent's environment now, not the forkserver's at its start
        os.environ.update(environ)
        optuna_worker(*args)
    except BaseException:
        with open(error_path, "w") as f:
            f.write(traceback.format_exc())
        raise


def run_parallel_study(
    benchmark: TabularBenchmark,
    n_workers: int = 2,
    n_trials_per_worker: int = 10,
    sampler: str = "tpe",
    sampler_seed: int = 0,
    prune: bool = False,
    directory=None,
    study_name: str = "parallel",
    timeout: float = 600.0,
):
    """Run one Optuna study in ``n_workers`` processes that share a journal file, and return it.

    The parent saves the benchmark and creates the study in ``directory`` (``benchmark.pt`` and
    ``journal.log``), starts :func:`optuna_worker` in ``n_workers`` processes
    (each starts clean, safe with threads and notebooks: forked from a *forkserver* that imported torch and
    Optuna once, where the platform has one, or a fresh interpreter with the *spawn* start method) and waits. **Worker i uses the sampler seed** ``sampler_seed + i``: distinct
    seeds, so the workers do not propose the same points. TPE's "constant liar" (running trials
    count as bad, so a worker does not sample next to a trial another worker is still running)
    is on by default in Optuna 5; older versions need ``TPESampler(constant_liar=True)``. The result is still not reproducible run to run: which
    worker reads which results first depends on timing.

    Starting the processes costs a second or two (the forkserver, at its first use, or each spawned
    interpreter imports torch and Optuna), so this pays only when trials are slow; on the tabular benchmark it demonstrates the mechanics. In a
    script, call it under ``if __name__ == "__main__":`` (spawn re-imports the main module).

    Args:
        benchmark: the table the workers query.
        n_workers: processes (>= 1).
        n_trials_per_worker: trials each runs; the study ends with ``n_workers *
            n_trials_per_worker`` trials.
        sampler: a :func:`make_sampler` name.
        sampler_seed: the first worker's sampler seed.
        prune: use :meth:`TabularBenchmark.objective` with pruning and a ``MedianPruner``.
        directory: where the journal and the saved table go (kept); ``None``: a temporary
            directory, removed after the study is copied into memory.
        study_name: the study's name in the journal (an existing study of that name is extended).
        timeout: seconds to wait for all workers.

    Returns:
        The ``optuna.Study``, loaded from the journal (or its in-memory copy).

    Raises:
        TimeoutError: if the workers are not done within ``timeout`` (they are terminated).
        RuntimeError: if a worker fails, with its traceback.
    """
    import optuna

    from book._processes import worker_context

    if not isinstance(benchmark, TabularBenchmark):
        raise TypeError(f"benchmark must be a TabularBenchmark, got {type(benchmark).__name__}")
    n_workers = checks.integer(n_workers, "n_workers", 1)
    n_trials = checks.integer(n_trials_per_worker, "n_trials_per_worker", 1)
    sampler_seed = checks.integer(sampler_seed, "sampler_seed")
    timeout = checks.positive(timeout, "timeout")
    make_sampler(sampler)  # fail here, not in the workers, on an unknown name

    tmp = tempfile.TemporaryDirectory(prefix="optuna-study-") if directory is None else None
    folder = tmp.name if tmp is not None else os.fspath(directory)
    try:
        os.makedirs(folder, exist_ok=True)
        bench_path, journal_path = os.path.join(folder, "benchmark.pt"), os.path.join(folder, "journal.log")
        benchmark.save(bench_path)
        storage = _journal(journal_path)
        optuna.create_study(study_name=study_name, storage=storage, direction="minimize", load_if_exists=True)

        ctx = worker_context([__name__, "optuna"])  # each worker forks with this module and Optuna loaded
        procs = []
        for i in range(n_workers):
            err = os.path.join(folder, f"worker-{i}.err")
            if os.path.exists(err):
                os.remove(err)
            args = (err, dict(os.environ), journal_path, study_name, n_trials, sampler_seed + i, bench_path, sampler, prune)
            procs.append(ctx.Process(target=_worker_entry, args=args, name=f"optuna-worker-{i}"))
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        late = [p for p in procs if p.is_alive()]
        for p in late:  # only the processes this call started
            p.terminate()
            p.join()
        if late:
            raise TimeoutError(f"{len(late)} of {n_workers} workers were not done after {timeout:g} s "
                               f"and were stopped; raise timeout= or lower n_trials_per_worker=")
        for i, p in enumerate(procs):
            if p.exitcode != 0:
                err = os.path.join(folder, f"worker-{i}.err")
                detail = open(err).read() if os.path.exists(err) else (
                    "no traceback was written: the worker died before it ran (in a script, is the call "
                    "under `if __name__ == \"__main__\":`? spawn re-imports the main module) or was killed"
                )
                raise RuntimeError(f"worker {i} failed with exit code {p.exitcode}:\n{detail}")
        if tmp is None:
            return optuna.load_study(study_name=study_name, storage=storage)
        memory = optuna.storages.InMemoryStorage()
        optuna.copy_study(from_study_name=study_name, from_storage=storage, to_storage=memory)
        return optuna.load_study(study_name=study_name, storage=memory)
    finally:
        if tmp is not None:
            tmp.cleanup()
