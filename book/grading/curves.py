"""Training curves with known faults, for the diagnose exercise of chapter 6 (and for you).

:func:`training_run` trains a small network the way it goes wrong in practice: a learning rate far
too small, one far too large, a model that memorises a small noisy training set, or all well. The
grader draws such runs with seeds of its own when it checks a ``diagnose`` answer; call it yourself
to see what each cause looks like, with any seed.
"""

from __future__ import annotations

import math

import torch

__all__ = ["CAUSES", "training_run", "SCHEDULES", "noisy_regression"]

CAUSES = ("well tuned", "lr too low", "lr too high", "overfitting")
EPOCHS = 60


def training_run(cause: str, seed: int, epochs: int = EPOCHS) -> dict:
    """One real, seeded training run of a small tanh network on a 3-class problem, with the fault
    ``cause`` (one of :data:`CAUSES`).

    Returns ``{"train_loss": [...], "val_loss": [...]}``: the mean cross-entropy on the whole
    training and validation sets before training and after each of the ``epochs`` epochs.

    Example:
        >>> run = training_run("lr too low", seed=0, epochs=5)
        >>> len(run["train_loss"]), run["train_loss"][-1] > 0.9 * run["train_loss"][0]
        (6, True)
    """
    if cause not in CAUSES:
        raise ValueError(f"cause must be one of {CAUSES}, got {cause!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a network this small only loses time to more threads (ten times, on a busy machine)
    try:
        return _run(cause, seed, epochs)
    finally:
        torch.set_num_threads(threads)


def _run(cause: str, seed: int, epochs: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    d, k = 10, 3
    teacher = torch.randn(d, k, generator=g)
    n = 40 if cause == "overfitting" else 300  # overfitting: few examples, a third relabelled at random
    X = torch.randn(n + 400, d, generator=g)
    Y = (X @ teacher + 0.3 * torch.randn(n + 400, k, generator=g)).argmax(1)
    if cause == "overfitting":
        flip = torch.rand(n, generator=g) < 0.3
        Y[:n][flip] = torch.randint(0, k, (int(flip.sum()),), generator=g)
    Xtr, Ytr, Xva, Yva = X[:n], Y[:n], X[n:], Y[n:]
    width = 256 if cause == "overfitting" else 32
    model = torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.Tanh(), torch.nn.Linear(width, k))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1 / math.sqrt(p.shape[-1]) if p.ndim == 2 else 0.1))
    params = list(model.parameters())
    # the updates written out (torch.optim's SGD with momentum and Adam, without importing them: the
    # first torch.optim step imports torch._dynamo, a second and a half the check should not spend)
    lr = {"well tuned": 0.02, "lr too low": 1e-5, "lr too high": 40.0, "overfitting": 1e-2}[cause]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        train, val = [loss(model(Xtr), Ytr).item()], [loss(model(Xva), Yva).item()]
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(50):
            grads = torch.autograd.grad(loss(model(Xtr[idx]), Ytr[idx]), params)
            step += 1
            with torch.no_grad():
                for p, gr, mi, vi in zip(params, grads, m, v):
                    if cause == "overfitting":  # Adam, betas (0.9, 0.999), eps 1e-8
                        mi.mul_(0.9).add_(gr, alpha=0.1)
                        vi.mul_(0.999).addcmul_(gr, gr, value=0.001)
                        p.sub_(lr * (mi / (1 - 0.9 ** step)) / ((vi / (1 - 0.999 ** step)).sqrt() + 1e-8))
                    else:  # SGD with momentum 0.9
                        mi.mul_(0.9).add_(gr)
                        p.sub_(lr * mi)
        with torch.no_grad():
            train.append(loss(model(Xtr), Ytr).item())
            val.append(loss(model(Xva), Yva).item())
    return {"train_loss": train, "val_loss": val}


# ---------------------------------------------------------------------------
# A schedule to tune: minibatch SGD on a noisy least-squares problem

SCHEDULES = ("constant", "cosine", "step")
TUNE_STEPS = 600


def noisy_regression(lr: float, schedule: str = "constant", warmup_steps: int = 0, seed: int = 0,
                     steps: int = TUNE_STEPS, batch_size: int = 8) -> float:
    r"""Train a linear model by minibatch SGD and return its excess loss :math:`L(w) - L(w^\star)`.

    The problem: least squares on :math:`n = 1000` examples in 20 dimensions with feature scales from
    0.3 to 3 and label noise of standard deviation 1, drawn from ``seed``; :math:`w^\star` is the
    least-squares solution. SGD starts at zero and takes ``steps`` steps on batches of ``batch_size``
    examples drawn with replacement, at the rate of step :math:`t`

    * during the first ``warmup_steps`` steps: ``lr * (t + 1) / warmup_steps``;
    * then ``schedule``: ``"constant"`` (``lr``), ``"cosine"`` (from ``lr`` down to 0 at the last step)
      or ``"step"`` (``lr``, divided by 10 after each third of the remaining steps).

    A diverged run returns ``inf``. The gradient noise sets a floor that a constant rate cannot go
    below in the budget: that is what a schedule is for.

    Example:
        >>> noisy_regression(0.01, "constant", seed=0) > noisy_regression(0.1, "cosine", seed=0)
        True
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    warmup_steps, steps = int(warmup_steps), int(steps)
    if not 0 <= warmup_steps < steps:
        raise ValueError(f"warmup_steps must be in [0, steps), got {warmup_steps}")
    g = torch.Generator().manual_seed(seed)
    d, n = 20, 1000
    f64 = torch.float64
    X = torch.randn(n, d, generator=g, dtype=f64) * torch.logspace(-0.5, 0.5, d, dtype=f64)
    y = X @ torch.randn(d, generator=g, dtype=f64) + torch.randn(n, generator=g, dtype=f64)
    w_star = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]

    def loss(w):
        return 0.5 * float(((X @ w - y) ** 2).mean())

    rest = steps - warmup_steps
    w = torch.zeros(d, dtype=f64)
    for t in range(steps):
        if t < warmup_steps:
            eta = lr * (t + 1) / warmup_steps
        elif schedule == "cosine":
            eta = lr * 0.5 * (1 + math.cos(math.pi * (t - warmup_steps) / rest))
        elif schedule == "step":
            eta = lr * 0.1 ** ((t - warmup_steps) // (rest // 3 + 1))
        else:
            eta = lr
        idx = torch.randint(0, n, (batch_size,), generator=g)
        w = w - eta * (X[idx].T @ (X[idx] @ w - y[idx])) / batch_size
        if not torch.isfinite(w).all():
            return math.inf
    excess = loss(w) - loss(w_star)
    return excess if math.isfinite(excess) else math.inf
