"""Questions for chapter 3, stochastic and minibatch SGD: batches, gradients, an epoch."""

from __future__ import annotations

import torch

from book.grading.core import Case, Mistake, Question
from book.grading.harness import train_call

CHAPTER = "03_sgd"
NOT_THE_LIBRARY = ("book.data", "book.train", "book.optim", "torch.optim", "torch.utils.data")


# ---------------------------------------------------------------------------
# 1. Minibatch indices, sampled without replacement


def _indices_cases(device) -> list[Case]:
    return [
        Case("n = 10, batch 3 (a partial last batch)", (10, 3, 0)),
        Case("n = 10, batch 3, drop_last=True", (10, 3, 0), {"drop_last": True}),
        Case("n = 12, batch 4 (batches divide n)", (12, 4, 1)),
        Case("n = 100, batch 32, seed 7", (100, 32, 7)),
        Case("n = 5, batch 8 (one short batch)", (5, 8, 3)),
        Case("n = 5, batch 8, drop_last=True (no batch)", (5, 8, 3), {"drop_last": True}),
    ]


def _indices_ref(n, batch_size, seed, drop_last=False):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches = list(torch.split(perm, batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _indices_with_replacement(n, batch_size, seed, drop_last=False):
    idx = torch.randint(n, (n,), generator=torch.Generator().manual_seed(seed))
    batches = list(torch.split(idx, batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _indices_always_drop(n, batch_size, seed, drop_last=False):
    return _indices_ref(n, batch_size, seed, drop_last=True)


def _indices_no_shuffle(n, batch_size, seed, drop_last=False):
    batches = list(torch.split(torch.arange(n), batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


minibatch_indices = Question(
    id="minibatch_indices",
    chapter=CHAPTER,
    function="minibatch_indices",
    points=3,
    title="Minibatches without replacement",
    cases=_indices_cases,
    reference=_indices_ref,
    mistakes=(
        Mistake("sampling with replacement", _indices_with_replacement,
                "torch.randint draws each index independently, so some samples repeat and about 1/e of "
                "them are never seen; one torch.randperm(n) per epoch visits every sample exactly once."),
        Mistake("the last batch always dropped", _indices_always_drop,
                "keep the last, smaller batch unless drop_last=True."),
        Mistake("no shuffling", _indices_no_shuffle,
                "the batches must come from a random permutation, torch.randperm(n, generator=g)."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 2. The minibatch gradient of the mean squared error


def _lsq_cases(device) -> list[Case]:
    g = torch.Generator().manual_seed(11)
    out = []
    for B, d, dtype in [(8, 3, torch.float64), (32, 5, torch.float32), (1, 4, torch.float64), (100, 10, torch.float64)]:
        X = torch.randn(B, d, generator=g, dtype=torch.float64).to(dtype)
        y = torch.randn(B, generator=g, dtype=torch.float64).to(dtype)
        w = torch.randn(d, generator=g, dtype=torch.float64).to(dtype)
        out.append(Case(f"batch {B}, {d} features, {str(dtype).replace('torch.', '')}",
                        (X.to(device), y.to(device), w.to(device))))
    return out


def _lsq_ref(X, y, w):
    return 2.0 / X.shape[0] * X.T @ (X @ w - y)


minibatch_gradient = Question(
    id="minibatch_gradient",
    chapter=CHAPTER,
    function="minibatch_gradient",
    points=2,
    title="The gradient of a minibatch loss",
    cases=_lsq_cases,
    reference=_lsq_ref,
    rtol=1e-5,
    atol=1e-6,
    mistakes=(
        Mistake("a missing factor 2", lambda X, y, w: X.T @ (X @ w - y) / X.shape[0],
                "the derivative of r² is 2r."),
        Mistake("the sum instead of the mean", lambda X, y, w: 2.0 * X.T @ (X @ w - y),
                "the loss is the mean over the batch, so divide by the batch size B; otherwise the step "
                "size would have to change with B."),
        Mistake("the wrong sign", lambda X, y, w: 2.0 / X.shape[0] * X.T @ (y - X @ w),
                "the residual is Xw − y; with y − Xw the gradient points uphill."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. One epoch of minibatch SGD


def _epoch_cases(device) -> list[Case]:
    g = torch.Generator().manual_seed(5)
    out = []
    for n, d, B, lr, seed in [(20, 3, 4, 0.05, 0), (50, 5, 8, 0.02, 1), (10, 2, 3, 0.1, 2), (30, 4, 30, 0.05, 3)]:
        X = torch.randn(n, d, generator=g, dtype=torch.float64)
        w_true = torch.randn(d, generator=g, dtype=torch.float64)
        y = X @ w_true + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
        w0 = torch.zeros(d, dtype=torch.float64)
        out.append(Case(f"n = {n}, batch {B}, lr = {lr}, seed {seed}",
                        (X.to(device), y.to(device), w0.to(device), lr, B, seed)))
    return out


def _epoch_ref(X, y, w, lr, batch_size, seed):
    w = w.clone()
    for idx in _indices_ref(X.shape[0], batch_size, seed):
        idx = idx.to(X.device)
        w = w - lr * _lsq_ref(X[idx], y[idx], w)
    return w


def _epoch_stale(X, y, w, lr, batch_size, seed):
    w0 = w.clone()
    w = w.clone()
    for idx in _indices_ref(X.shape[0], batch_size, seed):
        idx = idx.to(X.device)
        w = w - lr * _lsq_ref(X[idx], y[idx], w0)
    return w


def _epoch_in_order(X, y, w, lr, batch_size, seed):
    w = w.clone()
    for idx in torch.split(torch.arange(X.shape[0], device=X.device), batch_size):
        w = w - lr * _lsq_ref(X[idx], y[idx], w)
    return w


def _epoch_full_batch(X, y, w, lr, batch_size, seed):
    w = w.clone()
    for _ in _indices_ref(X.shape[0], batch_size, seed):
        w = w - lr * _lsq_ref(X, y, w)
    return w


sgd_epoch = Question(
    id="sgd_epoch",
    chapter=CHAPTER,
    function="sgd_epoch",
    points=3,
    title="One epoch of minibatch SGD",
    cases=_epoch_cases,
    reference=_epoch_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("every gradient at the starting point", _epoch_stale,
                "each step must use the gradient at the current w, after the previous step's update."),
        Mistake("batches in data order", _epoch_in_order,
                "take the batches from minibatch_indices(n, batch_size, seed), a random permutation."),
        Mistake("the full-batch gradient", _epoch_full_batch,
                "each step uses only its batch, X[idx] and y[idx], not the whole data set."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 4. Build: a training loop


def _train_cases(device):
    g = torch.Generator().manual_seed(330)
    out = []
    for label, sizes, n, n_val, lr, epochs, batch, seed, dtype in [
        ("a 3-8-1 network, 50 examples in batches of 8, 3 epochs", (3, 8, 1), 50, 20, 0.1, 3, 8, 0, "float64"),
        ("a 2-16-16-1 network, 64 examples in batches of 16, 2 epochs", (2, 16, 16, 1), 64, 16, 0.05, 2, 16, 1,
         "float64"),
        ("one batch holding all 30 examples, 4 epochs", (4, 6, 1), 30, 10, 0.2, 4, 64, 2, "float64"),
        ("batches of one example, 1 epoch", (2, 5, 1), 12, 6, 0.05, 1, 1, 3, "float64"),
        ("a 5-10-2 network with two outputs, float32, 2 epochs", (5, 10, 2), 40, 12, 0.1, 2, 7, 4, "float32"),
    ]:
        d, k = sizes[0], sizes[-1]
        dt = getattr(torch, dtype)
        W = torch.randn(d, k, generator=g, dtype=torch.float64)
        X = torch.randn(n + n_val, d, generator=g, dtype=torch.float64)
        Y = torch.tanh(X @ W) + 0.1 * torch.randn(n + n_val, k, generator=g, dtype=torch.float64)
        X, Y = X.to(dt).to(device), Y.to(dt).to(device)
        spec = {"sizes": list(sizes), "seed": 500 + seed, "dtype": dtype}
        out.append(Case(label, (spec, X[:n], Y[:n], X[n:], Y[n:], lr, epochs, batch, seed)))
    return out


def _mse(model, X, y):
    return ((model(X) - y) ** 2).mean()


def _train_generic(model, X, y, X_val, y_val, lr, epochs, batch_size, seed, *, no_zero_grad=False, in_order=False,
                   last_batch=False, unweighted=False, one_generator=False, val_before=False):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = X.shape[0]
    train, val = [], []
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        if val_before:
            with torch.no_grad():
                val.append(_mse(model, X_val, y_val).item())
        if in_order:
            perm = torch.arange(n)
        else:
            perm = torch.randperm(n, generator=g if one_generator else torch.Generator().manual_seed(seed + epoch))
        total, losses = 0.0, []
        for idx in perm.to(X.device).split(batch_size):
            if not no_zero_grad:
                opt.zero_grad()
            loss = _mse(model, X[idx], y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            losses.append(loss.item())
        if last_batch:
            train.append(losses[-1])
        elif unweighted:
            train.append(sum(losses) / len(losses))
        else:
            train.append(total / n)
        if not val_before:
            with torch.no_grad():
                val.append(_mse(model, X_val, y_val).item())
    return train, val


def _train_ref(model, X, y, X_val, y_val, lr, epochs, batch_size, seed):
    return _train_generic(model, X, y, X_val, y_val, lr, epochs, batch_size, seed)


def _train_mistake(**kw):
    return lambda *args: _train_generic(*args, **kw)


train_loop = Question(
    id="train_loop",
    chapter=CHAPTER,
    function="train",
    points=4,
    title="Build: a training loop with minibatches and validation",
    kind="build",
    partial=True,
    cases=_train_cases,
    reference=_train_ref,
    call=train_call,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("the gradients never zeroed", _train_mistake(no_zero_grad=True),
                "loss.backward() ADDS to each parameter's .grad: call optimizer.zero_grad() before every "
                "backward, or each step uses the sum of all the gradients so far."),
        Mistake("batches in data order", _train_mistake(in_order=True),
                "draw each epoch's order with torch.randperm(n, generator=torch.Generator().manual_seed(seed + "
                "epoch)); without shuffling, every epoch repeats the same sequence of batches."),
        Mistake("one generator for every epoch", _train_mistake(one_generator=True),
                "the task seeds a new generator with seed + epoch at the start of each epoch, so that an epoch's "
                "order does not depend on how many numbers earlier epochs drew."),
        Mistake("the last batch's loss recorded", _train_mistake(last_batch=True),
                "record the epoch's mean training loss over all n examples: the sum of loss × batch size over "
                "the batches, divided by n."),
        Mistake("the mean of the batch losses", _train_mistake(unweighted=True),
                "a last, smaller batch must count less: weight each batch's mean loss by its size, then "
                "divide by n."),
        Mistake("validation measured before the epoch's training", _train_mistake(val_before=True),
                "evaluate on the validation set at the END of each epoch, after its last step."),
    ),
    forbidden=("book.train", "book.data", "book.optim", "torch.utils.data"),
)

QUESTIONS = [minibatch_indices, minibatch_gradient, sgd_epoch, train_loop]
