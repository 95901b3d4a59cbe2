r"""A small, explicit training loop: :func:`fit` and the :class:`History` it returns.

:func:`fit` is the loop every chapter writes by hand once, packaged::

    for epoch in range(epochs):
        for Xb, yb in minibatches(X, y, batch_size, generator=generator):
            optimizer.zero_grad()
            loss = loss_fn(model(Xb), yb)
            loss.backward()
            optimizer.step()

plus what one wants around it: the loss of every step, per-epoch training and validation
loss and accuracy, timings, a progress bar, a learning-rate schedule, callbacks that can
stop training early, and a clear error when the loss blows up::

    >>> import torch
    >>> from book.data import digits
    >>> from book.optim import SGD
    >>> from book.train import fit
    >>> ds = digits(seed=0)
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(64, 10)
    >>> history = fit(model, SGD(model.parameters(), lr=0.5), torch.nn.functional.cross_entropy,
    ...               ds.train, epochs=5, batch_size=32, val=ds.val, progress=False,
    ...               generator=torch.Generator().manual_seed(0))
    >>> len(history.epochs), len(history.steps)
    (5, 200)
    >>> history["val_acc"][-1] > 0.9
    True
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor

from book import checks
from book.data import Split, minibatches

__all__ = ["fit", "evaluate", "accuracy", "History", "DivergenceError", "LRRangeResult", "lr_range_test"]

LossFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, "History", torch.nn.Module], "bool | None"]
StepCallback = Callable[[int, torch.nn.Module, float], None]


class DivergenceError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and the step.

    Attributes:
        epoch: the epoch (1-based) in which it happened.
        step: the step within that epoch (1-based).
        global_step: the step counted from the start of training (1-based).
        loss: the non-finite loss value.
    """

    def __init__(self, epoch: int, step: int, global_step: int, loss: float, lr: float | None):
        self.epoch, self.step, self.global_step, self.loss = epoch, step, global_step, loss
        at_lr = f" with lr = {lr:g}" if lr is not None else ""
        smaller = f" (e.g. lr = {lr / 10:g})" if lr else ""
        super().__init__(
            f"the training loss became {loss} at epoch {epoch}, step {step} (step {global_step} overall){at_lr}. "
            f"The optimizer diverged: try a smaller learning rate{smaller}; a loss that grows before it "
            f"becomes {loss} is the sign of a step size above the stable limit."
        )


@dataclass
class History:
    """What :func:`fit` records.

    Attributes:
        steps: the training loss of every step (the minibatch's mean loss, before the
            step's update), one float per step.
        epochs: one dict per epoch with keys ``epoch`` (1-based), ``step`` (steps taken so
            far), ``train_loss`` and ``train_acc`` (averages over the epoch's samples of the
            minibatch values, weighted by batch size: the running loss, not the loss of the
            final weights), ``val_loss`` and ``val_acc`` (on ``val`` with the weights at the
            end of the epoch, in eval mode; ``None`` without ``val``), ``lr`` (the first
            parameter group's at the end of the epoch), ``time`` (seconds of training in
            this epoch: the steps, not the evaluation) and ``elapsed`` (cumulative ``time``).
            Accuracies are ``None`` for regression.
        stopped_early: whether a callback stopped training.

    ``history["val_acc"]`` is the list of one key over the epochs.
    """

    steps: list[float] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    stopped_early: bool = False

    KEYS = ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time", "elapsed")

    def __getitem__(self, key: str) -> list:
        if key not in self.KEYS:
            raise KeyError(f"unknown history key {key!r}; the keys are {', '.join(self.KEYS)}")
        return [e[key] for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def plot(self, ax=None, metric: str = "loss", x: str = "epoch", logy: bool | None = None, label: str = ""):
        """Plot the training and validation ``metric`` (``"loss"`` or ``"acc"``); returns the Axes.

        Args:
            ax: Axes to draw on (a new figure when omitted).
            metric: ``"loss"`` or ``"acc"``.
            x: ``"epoch"``, ``"time"`` (cumulative training seconds) or ``"step"``
                (``metric="loss"`` only: the loss of every step, with the per-epoch
                averages on top).
            logy: logarithmic y axis (default: True for the loss).
            label: a prefix for the legend entries, to compare several runs on one Axes.
        """
        from book import plotting

        if metric not in ("loss", "acc"):
            raise ValueError(f"metric must be 'loss' or 'acc', got {metric!r}")
        if x not in ("epoch", "time", "step"):
            raise ValueError(f"x must be 'epoch', 'time' or 'step', got {x!r}")
        if metric == "acc" and self.epochs and self.epochs[0]["train_acc"] is None:
            raise ValueError("no accuracy recorded: accuracy needs integer class targets")
        logy = (metric == "loss") if logy is None else logy
        prefix = f"{label} " if label else ""
        ylabel = "loss" if metric == "loss" else "accuracy"
        if x == "step":
            if metric != "loss":
                raise ValueError("x='step' plots the step losses: use metric='loss'")
            ax = plotting.curves({f"{prefix}train loss (step)": self.steps}, ax=ax, x=range(1, len(self.steps) + 1),
                                 logy=logy, xlabel="step", ylabel=ylabel)
            ax.plot(self["step"], self["train_loss"], "o-", color=plotting.color(1), label=f"{prefix}train (epoch mean)")
            ax.legend()
            return ax
        ys = {f"{prefix}train": self[f"train_{metric}"]}
        if self.epochs and self.epochs[0]["val_loss"] is not None:
            ys[f"{prefix}validation"] = self[f"val_{metric}"]
        xs = self["epoch"] if x == "epoch" else self["elapsed"]
        ax = plotting.curves(ys, ax=ax, x=xs, logy=logy, ylabel=ylabel,
                             xlabel="epoch" if x == "epoch" else "training time (s)")
        if len(ys) == 1 and label:
            ax.legend()
        return ax

    def summary(self) -> str:
        """A table of the per-epoch values, one line per epoch."""
        def fmt(v, spec):
            return "-" if v is None else format(v, spec)

        lines = [f"{'epoch':>5s} {'train loss':>11s} {'train acc':>9s} {'val loss':>9s} {'val acc':>8s} {'time (s)':>9s}"]
        for e in self.epochs:
            lines.append(
                f"{e['epoch']:5d} {fmt(e['train_loss'], '11.4g')} {fmt(e['train_acc'], '9.4f')} "
                f"{fmt(e['val_loss'], '9.4g')} {fmt(e['val_acc'], '8.4f')} {e['elapsed']:9.2f}"
            )
        if self.stopped_early:
            lines.append("(stopped early by a callback)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(epochs=0)"
        last = self.epochs[-1]
        parts = [f"epochs={len(self.epochs)}", f"steps={len(self.steps)}", f"train_loss={last['train_loss']:.4g}"]
        for key in ("train_acc", "val_loss", "val_acc"):
            if last[key] is not None:
                parts.append(f"{key}={last[key]:.4g}")
        parts.append(f"time={last['elapsed']:.2f}s")
        if self.stopped_early:
            parts.append("stopped_early=True")
        return f"History({', '.join(parts)})"


# ---------------------------------------------------------------------------
# Metrics


def accuracy(output: Tensor, target: Tensor) -> float:
    """The fraction of correct predictions: arg-max over classes, or the sign of one logit.

    ``output`` is ``(n, C)`` scores for ``C >= 2`` classes, or ``(n,)`` / ``(n, 1)`` logits
    of a binary problem (predict class 1 where the logit is positive); ``target`` holds
    ``(n,)`` integer labels.
    """
    return _correct(output, target) / max(len(target), 1)


def _correct(output: Tensor, target: Tensor) -> int:
    if output.ndim == 2 and output.shape[1] >= 2:
        pred = output.argmax(dim=1)
    else:
        pred = (output.reshape(len(output)) > 0).long()
    return int((pred == target.reshape(len(target))).sum())


def _is_classification(y: Tensor) -> bool:
    return not (y.is_floating_point() or y.is_complex())


@torch.no_grad()
def evaluate(model: torch.nn.Module, loss_fn: LossFn, data, batch_size: int | None = 4096) -> tuple[float, float | None]:
    """Mean loss and accuracy of ``model`` on ``data``, in eval mode and without gradients.

    ``data`` is a :class:`~book.data.Split` or an ``(X, y)`` pair; it is evaluated in chunks of
    ``batch_size`` (all at once for ``None``) and the chunk losses are averaged weighted by
    their sizes, which equals the mean loss over all samples for a loss with
    ``reduction="mean"``. The accuracy is ``None`` unless ``y`` holds integer labels. The
    model's train/eval mode is restored afterwards.
    """
    X, y = _as_split(data, "data")
    was_training = model.training
    model.eval()
    try:
        chunk = len(X) if batch_size is None else batch_size
        total_loss, correct = 0.0, 0
        for Xb, yb in minibatches(X, y, max(chunk, 1), shuffle=False):
            out = model(Xb)
            total_loss += float(loss_fn(out, yb)) * len(yb)
            if _is_classification(y):
                correct += _correct(out, yb)
    finally:
        model.train(was_training)
    n = max(len(X), 1)
    return total_loss / n, (correct / n if _is_classification(y) else None)


# ---------------------------------------------------------------------------
# The loop


def _as_split(data, name: str) -> Split:
    if isinstance(data, Split):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return Split(data[0], data[1])
    raise TypeError(f"{name} must be a book.data.Split or an (X, y) pair of tensors, got {type(data).__name__}")


def _lr(optimizer) -> float | None:
    lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
    return float(lr) if lr is not None else None


def _needs_a_metric(scheduler) -> bool:
    """A reduce-on-plateau scheduler (torch's or book.schedules'): step() takes a metric."""
    if scheduler is None or not hasattr(scheduler, "step"):
        return False
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return True
    try:
        params = inspect.signature(scheduler.step).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in params)


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    train,
    epochs: int,
    batch_size: int | None = None,
    val=None,
    scheduler=None,
    callbacks: Iterable[Callback] | Callback = (),
    progress: bool = True,
    generator: torch.Generator | None = None,
    step_callbacks: Iterable[StepCallback] | StepCallback = (),
    closure: bool = False,
) -> History:
    r"""Train ``model`` with minibatch ``optimizer`` steps on ``loss_fn`` for ``epochs`` epochs.

    Each epoch visits the training samples once in a fresh random order
    (:func:`book.data.minibatches`, sampling without replacement; the last batch may be
    smaller). Each step does, in this order: ``optimizer.zero_grad()``, the forward pass,
    ``loss = loss_fn(model(Xb), yb)``, a check that the loss is finite,
    ``loss.backward()``, the ``step_callbacks``, ``optimizer.step()`` (or
    ``optimizer.step(closure)``), then ``scheduler.step()``. After each epoch the model is
    evaluated on ``val`` (eval mode, no gradients; an optimizer with ``train()``/``eval()``
    methods, such as a schedule-free one, is switched to ``eval()`` around it), the epoch is
    recorded, and the callbacks are called.

    Args:
        model: the network, already on the data's device.
        optimizer: any ``torch.optim.Optimizer`` over the model's parameters.
        loss_fn: ``loss_fn(output, target)`` returning the **mean** loss over the batch
            (``reduction="mean"``, as ``torch.nn.functional.cross_entropy``).
        train: the training data, a :class:`~book.data.Split` or an ``(X, y)`` pair.
        epochs: the number of passes over ``train`` (>= 1).
        batch_size: samples per step; ``None`` means the whole training set
            (full-batch gradient descent).
        val: validation data (Split or pair), evaluated after every epoch, or ``None``.
        scheduler: called once per **step**, after ``optimizer.step()``: either an object
            with a ``step()`` method (a ``torch.optim.lr_scheduler`` scheduler, stepped
            every minibatch, so its ``step_size``, ``T_max`` ... count steps, not epochs), or
            a plain function ``t -> lr`` (a :mod:`book.schedules` schedule) which sets every
            parameter group's ``lr`` to ``schedule(t)`` before step ``t = 0, 1, 2, ...``.
            Schedules that need a metric (reduce-on-plateau) belong in a callback.
        callbacks: functions ``callback(epoch, history, model)`` called at the end of
            every epoch (``epoch`` is 1-based, ``history`` already holds that epoch). A
            callback that returns ``True`` stops training after this epoch (every callback
            is still called for it) and sets ``history.stopped_early``; returning
            ``None`` or ``False`` continues. This is the protocol early stopping uses.
        step_callbacks: functions ``hook(step, model, loss)`` called at every step after
            ``loss.backward()`` and before ``optimizer.step()`` (``step`` counts from 1 over the
            whole run, ``loss`` is the step's loss as a float): gradient monitors, gradient
            clipping. Their return values are ignored.
        closure: call ``optimizer.step(closure)``, where ``closure()`` zeroes the gradients,
            recomputes the batch's loss, back-propagates it and returns it, for optimizers
            that evaluate the loss more than once per step (L-BFGS, SAM). The loss recorded is
            the first evaluation's, made by ``fit`` itself.
        progress: show a ``tqdm`` progress bar over the epochs (on stderr, or as a widget
            in a notebook); ``False`` prints nothing.
        generator: a ``torch.Generator`` for the order of the samples; with a seeded
            generator (and a seeded model) a run is reproducible. ``None`` uses PyTorch's
            global generator.

    Returns:
        A :class:`History`.

    Raises:
        DivergenceError: (a ``FloatingPointError``) as soon as a step's loss is NaN or
            infinite, naming the epoch and step and suggesting a smaller learning rate.
            The offending step's update is not applied.

    Example:
        >>> from book.data import linear_regression
        >>> from book.optim import SGD
        >>> ds = linear_regression(n=500, dim=3, noise=0.01)
        >>> model = torch.nn.Linear(3, 1)
        >>> h = fit(model, SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
        ...         ds.train, epochs=20, batch_size=16, progress=False)
        >>> h["train_loss"][-1] < 1e-3
        True
    """
    train, val, epochs, batch_size = _check_data(model, train, val, epochs, batch_size)
    callbacks, step_callbacks = _as_list(callbacks, "callbacks"), _as_list(step_callbacks, "step_callbacks")
    schedule_fn = _check_scheduler(scheduler)
    from tqdm.auto import tqdm

    history = History()
    bar = tqdm(total=epochs, desc="fit", unit="epoch", disable=not progress, leave=True)
    try:
        for epoch in range(1, epochs + 1):
            _set_mode(model, optimizer, training=True)
            start, totals = time.perf_counter(), [0.0, 0, 0]  # loss sum, correct, samples
            for k, (Xb, yb) in enumerate(minibatches(*train, batch_size, generator=generator), start=1):
                t = len(history.steps)  # steps taken so far
                if schedule_fn is not None:
                    for group in optimizer.param_groups:
                        group["lr"] = float(schedule_fn(t))
                value, out = _train_step(model, optimizer, loss_fn, Xb, yb, step_callbacks, closure,
                                         where=(epoch, k, t + 1))
                if scheduler is not None and schedule_fn is None:
                    scheduler.step()
                history.steps.append(value)
                _accumulate(totals, value, out, yb, _is_classification(train.y))
            record = _epoch_record(history, epoch, totals, time.perf_counter() - start, optimizer,
                                   _validate(model, optimizer, loss_fn, val), _is_classification(train.y))
            history.epochs.append(record)
            bar.set_postfix(_postfix(record), refresh=False)
            bar.update(1)
            if any([bool(cb(epoch, history, model)) for cb in callbacks]):  # every callback sees every epoch
                history.stopped_early = True
                break
    finally:
        bar.close()
    return history


# The pieces of fit, in the order a step and an epoch use them.


def _check_data(model, train, val, epochs, batch_size) -> tuple[Split, Split | None, int, int]:
    train = _as_split(train, "train")
    val = _as_split(val, "val") if val is not None else None
    epochs = checks.integer(epochs, "epochs", 1)
    batch_size = len(train) if batch_size is None else checks.integer(batch_size, "batch_size", 1)
    if len(train) == 0:
        raise ValueError("train is empty")
    params = list(model.parameters())
    if params and params[0].device != train.X.device:
        raise ValueError(
            f"the model is on {params[0].device} but the training data are on {train.X.device}: "
            f"move one of them, e.g. train.to({str(params[0].device)!r})"
        )
    return train, val, epochs, batch_size


def _as_list(functions, name: str) -> list:
    functions = [functions] if callable(functions) else list(functions)
    for f in functions:
        if not callable(f):
            raise TypeError(f"{name} must be functions (or one function), got {type(f).__name__}")
    return functions


def _check_scheduler(scheduler):
    """The schedule function ``t -> lr`` if ``scheduler`` is one, else ``None``; rejects plateau schedulers."""
    if scheduler is not None and not (hasattr(scheduler, "step") or callable(scheduler)):
        raise TypeError(f"scheduler must have a step() method or be a function step -> lr, got {type(scheduler).__name__}")
    if _needs_a_metric(scheduler):
        hint = (" Pass it as a callback instead: callbacks=[scheduler.callback(optimizer)]."
                if hasattr(scheduler, "callback") else
                " Step it in a callback with the validation loss: "
                "callbacks=[lambda epoch, history, model: scheduler.step(history['val_loss'][-1])].")
        raise TypeError(
            f"scheduler={type(scheduler).__name__}(...) needs a metric (it cuts the learning rate when the "
            f"validation loss stalls), but fit steps its scheduler after every minibatch without one.{hint}"
        )
    return scheduler if scheduler is not None and not hasattr(scheduler, "step") else None


def _set_mode(model, optimizer, training: bool) -> None:
    """Train or eval mode for the model, and for an optimizer that has modes (schedule-free)."""
    model.train(training)
    switch = getattr(optimizer, "train" if training else "eval", None)
    if callable(switch):
        switch()


def _train_step(model, optimizer, loss_fn, Xb, yb, step_callbacks, closure: bool, where) -> tuple[float, Tensor]:
    """One step: gradients of the batch loss, the hooks, the update. Returns (loss, output)."""
    optimizer.zero_grad()
    out = model(Xb)
    loss = loss_fn(out, yb)
    value = loss.detach().item()
    if not math.isfinite(value):
        raise DivergenceError(*where, value, _lr(optimizer))
    loss.backward()
    for hook in step_callbacks:
        hook(where[2], model, value)

    def reevaluate():  # for optimizers that need the loss again (L-BFGS, SAM)
        optimizer.zero_grad()
        again = loss_fn(model(Xb), yb)
        again.backward()
        return again

    optimizer.step(reevaluate) if closure else optimizer.step()
    return value, out.detach()


def _accumulate(totals: list, value: float, out: Tensor, yb: Tensor, classification: bool) -> None:
    totals[0] += value * len(yb)
    totals[1] += _correct(out, yb) if classification else 0
    totals[2] += len(yb)


def _validate(model, optimizer, loss_fn, val) -> tuple[float | None, float | None]:
    if val is None:
        return None, None
    _set_mode(model, optimizer, training=False)
    try:
        return evaluate(model, loss_fn, val)
    finally:
        _set_mode(model, optimizer, training=True)


def _epoch_record(history, epoch, totals, seconds, optimizer, validation, classification) -> dict:
    loss_sum, correct, seen = totals
    elapsed = (history.epochs[-1]["elapsed"] if history.epochs else 0.0) + seconds
    return dict(epoch=epoch, step=len(history.steps), train_loss=loss_sum / seen,
                train_acc=correct / seen if classification else None, val_loss=validation[0],
                val_acc=validation[1], lr=_lr(optimizer), time=seconds, elapsed=elapsed)


def _postfix(record: dict) -> dict:
    postfix = {"loss": f"{record['train_loss']:.4g}"}
    if record["val_acc"] is not None:
        postfix["val_acc"] = f"{record['val_acc']:.3f}"
    elif record["val_loss"] is not None:
        postfix["val_loss"] = f"{record['val_loss']:.4g}"
    return postfix


# ---------------------------------------------------------------------------
# The LR range test


@dataclass
class LRRangeResult:
    r"""What :func:`lr_range_test` measured.

    Attributes:
        lrs: the learning rate of every step taken.
        losses: the smoothed (bias-corrected exponential average) minibatch loss at each step.
        raw_losses: the minibatch losses themselves.
        suggested_lr: ``min_loss_lr / 10`` (see :func:`lr_range_test` for why).
        min_loss_lr: the rate at the minimum of the smoothed loss.
        steepest_lr: the rate where the smoothed loss falls fastest per decade of lr (before
            its minimum), an alternative suggestion.
        diverged: whether the sweep stopped early because the loss blew up.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)
    suggested_lr: float = math.nan
    min_loss_lr: float = math.nan
    steepest_lr: float = math.nan
    diverged: bool = False

    def plot(self, ax=None, raw: bool = True, label: str = "smoothed loss"):
        """The loss against the learning rate (log axis), with the suggestion marked; returns the Axes."""
        import matplotlib.pyplot as plt

        from book import plotting

        if ax is None:
            _, ax = plt.subplots()
        if raw:
            ax.plot(self.lrs, self.raw_losses, color=plotting.color(0), alpha=0.3, lw=0.8, label="minibatch loss")
        ax.plot(self.lrs, self.losses, color=plotting.color(0), lw=1.8, label=label)
        finite = [v for v in self.losses + (self.raw_losses if raw else []) if math.isfinite(v)]
        if finite:
            lo, hi = min(finite), max(self.losses[0], min(finite))  # clip the blow-up at the end
            span = max(hi - lo, 1e-12)
            ax.set_ylim(lo - 0.1 * span, hi + 0.4 * span)
        ax.axvline(self.min_loss_lr, color="gray", ls=":", lw=1.0,
                   label=f"min of smoothed loss ({self.min_loss_lr:.2g})")
        ax.axvline(self.suggested_lr, color=plotting.color(1), ls="--", lw=1.3,
                   label=f"suggestion ({self.suggested_lr:.2g})")
        ax.set_xscale("log")
        ax.set(xlabel="learning rate", ylabel="training loss")
        ax.legend()
        return ax


def lr_range_test(
    model: torch.nn.Module,
    loss_fn,
    data,
    optimizer_factory: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.05,
    diverge_factor: float = 4.0,
    batch_size: int | None = 32,
    generator: torch.Generator | None = None,
) -> LRRangeResult:
    r"""The LR range test ("LR finder"): train briefly while the rate grows exponentially; watch the loss.

    Step :math:`i = 0, \dots, n-1` (:math:`n` = ``steps``) trains one minibatch at

    .. math::
        \eta_i = \eta_{\text{start}} \left(\eta_{\text{end}} / \eta_{\text{start}}\right)^{i/(n-1)},

    and records the minibatch loss :math:`\ell_i` (computed before that step's update) and
    its bias-corrected exponential average with weight :math:`s` = ``smoothing``:

    .. math::
        a_i = (1 - s)\, a_{i-1} + s\, \ell_i, \qquad \bar\ell_i = \frac{a_i}{1 - (1 - s)^{i+1}}, \qquad a_{-1} = 0 .

    The sweep stops early when :math:`\bar\ell_i > c \min_{j \le i} \bar\ell_j` (:math:`c` =
    ``diverge_factor``) or the loss is not finite. At small rates the loss barely moves, at
    good rates it falls quickly, and past the stable limit it explodes; Smith (2017) picks
    the bounds of a cyclical schedule from this curve.

    The suggestion is **the rate at the minimum of the smoothed loss, divided by 10**
    (fast.ai's original rule). On a quadratic with curvature :math:`L`, gradient descent
    diverges for :math:`\eta > 2/L`; the raw loss starts to grow there, and the smoothed
    loss, which lags by about :math:`1/s` steps, bottoms out somewhat later, once the growth
    has pulled the average up. One decade below that minimum is a rate that is still fast
    but stable: on the least-squares problem of the tests (100 steps from 1e-4 to 10, full
    batch) the minimum is at :math:`6.4 \times 2/L` and the suggestion at :math:`1.3/L`.
    The minimum is a robust feature of a noisy curve; the steepest point
    (:attr:`LRRangeResult.steepest_lr`, also returned) depends on a numerical derivative of
    it and moves more from run to run.

    The model's parameters and buffers are restored bit for bit afterwards, and its
    train/eval mode too. The optimizer is built fresh by ``optimizer_factory(params)``
    (so your own optimizer's state is untouched); its ``lr`` is overwritten at every step.

    Args:
        model: the network (on the data's device).
        loss_fn: ``loss_fn(model(X), y)`` -> mean loss.
        data: a :class:`book.data.Split` or an ``(X, y)`` pair.
        optimizer_factory: ``params -> optimizer``, e.g. ``lambda p: SGD(p, lr=1.0, momentum=0.9)``.
        start_lr, end_lr: the sweep's range, ``0 < start_lr < end_lr``.
        steps: the number of steps (>= 2); the data are cycled through as needed.
        smoothing: the weight :math:`s \in (0, 1]` of the newest loss in the average.
        diverge_factor: :math:`c > 1`.
        batch_size: samples per step, or ``None`` for the whole data (gradient descent).
        generator: a ``torch.Generator`` for the minibatch order.

    References:
        L. N. Smith, "Cyclical learning rates for training neural networks", WACV 2017,
        arXiv:1506.01186, section 3.3.

    Example:
        >>> from book.data import linear_regression
        >>> ds = linear_regression(n=200, dim=3, noise=0.1)
        >>> model = torch.nn.Linear(3, 1)
        >>> res = lr_range_test(model, torch.nn.functional.mse_loss, ds.train,
        ...                     lambda p: torch.optim.SGD(p, lr=1.0), start_lr=1e-4, end_lr=10, steps=60)
        >>> 1e-3 < res.suggested_lr < 1
        True
    """

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(optimizer_factory):
        raise TypeError(f"optimizer_factory must be a function params -> optimizer, got {type(optimizer_factory).__name__}")
    if isinstance(data, Split):
        X, y = data.X, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        X, y = data
    else:
        raise TypeError(f"data must be a book.data.Split or an (X, y) pair, got {type(data).__name__}")
    start_lr = checks.positive(start_lr, "start_lr")
    end_lr = checks.positive(end_lr, "end_lr")
    if end_lr <= start_lr:
        raise ValueError(f"end_lr must be > start_lr, got end_lr={end_lr} <= start_lr={start_lr}")
    steps = checks.integer(steps, "steps", 2)
    smoothing = checks.number(smoothing, "smoothing")
    if not 0 < smoothing <= 1:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    diverge_factor = checks.number(diverge_factor, "diverge_factor")
    if diverge_factor <= 1:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor}")
    batch_size = len(X) if batch_size is None else checks.integer(batch_size, "batch_size", 1)

    saved = copy.deepcopy(model.state_dict())  # parameters and buffers, restored at the end
    was_training = model.training
    optimizer = optimizer_factory(model.parameters())
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer_factory must return a torch.optim.Optimizer, got {type(optimizer).__name__}")
    result = LRRangeResult()
    ratio = end_lr / start_lr
    avg, best = 0.0, math.inf
    batches = iter(())
    model.train()
    try:
        for i in range(steps):
            lr = start_lr * ratio ** (i / (steps - 1))
            try:
                Xb, yb = next(batches)
            except StopIteration:  # the next epoch
                batches = minibatches(X, y, batch_size, generator=generator)
                Xb, yb = next(batches)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss = loss_fn(model(Xb), yb)
            value = float(loss.detach())
            if not math.isfinite(value):
                result.diverged = True
                break
            loss.backward()
            optimizer.step()
            avg = (1 - smoothing) * avg + smoothing * value
            smoothed = avg / (1 - (1 - smoothing) ** (i + 1))
            result.lrs.append(lr)
            result.raw_losses.append(value)
            result.losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > diverge_factor * best:
                result.diverged = True
                break
    finally:
        model.load_state_dict(saved)
        model.train(was_training)

    if result.losses:
        k = min(range(len(result.losses)), key=result.losses.__getitem__)
        result.min_loss_lr = result.lrs[k]
        result.suggested_lr = result.min_loss_lr / 10
        L = result.losses
        if k >= 2:  # the most negative central difference before the minimum (equal log-lr spacing)
            j = min(range(1, k), key=lambda i: L[i + 1] - L[i - 1])
            result.steepest_lr = result.lrs[j]
        else:
            result.steepest_lr = result.lrs[k]
    return result
