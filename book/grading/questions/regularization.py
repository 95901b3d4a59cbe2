"""Questions for chapter 8, regularization: inverted dropout with a given mask draw, SGD with
momentum and coupled (L2) or decoupled weight decay, the early-stopping rule.

References: the dropout rule of Srivastava et al. (2014) in its inverted form (what
torch.nn.functional.dropout computes, with the random draw made explicit so that the answer
is deterministic); torch.optim.SGD's own step for L2 decay, and for decoupled decay (the
SGDW of Loshchilov & Hutter, 2019) torch.optim.SGD's step after the shrink factor
1 - lr * weight_decay. That factor is PyTorch's convention (torch.optim.AdamW multiplies
weight_decay by lr); the paper shrinks by eta_t * lambda, with a schedule multiplier eta_t
kept separate from the step size alpha, so its lambda is not multiplied by the step size
(with a constant schedule, its lambda is lr * weight_decay here). The chapter's
``book.regularization.EarlyStopping``.
"""

from __future__ import annotations

import torch

from book.grading.core import Case, Mistake, Question
from book.grading.questions.momentum import _torch_sgd_step

CHAPTER = "08_regularization"
NOT_THE_LIBRARY = ("book.regularization", "book.optim", "book.train", "torch.optim",
                   "torch.nn.functional.dropout", "torch.nn.Dropout", "torch.dropout")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# 1. Inverted dropout with an explicit uniform draw


def _dropout_cases(device):
    g = _gen(80)

    def t(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)

    def u(*shape, dtype=torch.float64):
        return torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)

    return [
        Case("p = 0.5, training, 20 units", (t(20), u(20), 0.5, True)),
        Case("p = 0.2, training, a (4, 8) batch, float32", (t(4, 8, dtype=torch.float32),
                                                           u(4, 8, dtype=torch.float32), 0.2, True)),
        Case("p = 0.5 in eval mode (training=False)", (t(10), u(10), 0.5, False)),
        Case("p = 0 (nothing dropped)", (t(7), u(7), 0.0, True)),
        Case("p = 1 (everything dropped)", (t(7), u(7), 1.0, True)),
        Case("p = 0.8, training", (t(30), u(30), 0.8, True)),
    ]


def _dropout_ref(x, u, p, training):
    if not training or p == 0.0:
        return x.clone()
    if p == 1.0:
        return torch.zeros_like(x)
    return torch.where(u >= p, x / (1 - p), torch.zeros_like(x))


def _dropout_generic(x, u, p, training, *, rescale=True, always=False, times=False):
    if not (training or always) or p == 0.0:
        return x.clone()
    keep = u >= p
    if times:
        return torch.where(keep, x * (1 - p), torch.zeros_like(x))
    if not rescale:
        return torch.where(keep, x, torch.zeros_like(x))
    return torch.where(keep, x / (1 - p), torch.zeros_like(x)) if p < 1 else torch.zeros_like(x)


dropout = Question(
    id="dropout",
    chapter=CHAPTER,
    function="dropout",
    points=2,
    title="Inverted dropout",
    cases=_dropout_cases,
    reference=_dropout_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("kept units not rescaled",
                lambda x, u, p, training: _dropout_generic(x, u, p, training, rescale=False),
                "inverted dropout divides the kept units by 1 − p, so that the expected activation "
                "is the same in training and in evaluation."),
        Mistake("dropout active in eval mode",
                lambda x, u, p, training: _dropout_generic(x, u, p, training, always=True),
                "with training=False dropout is the identity: the rescaling in training already "
                "made the expected activation right."),
        Mistake("scaled by 1 − p instead of divided",
                lambda x, u, p, training: _dropout_generic(x, u, p, training, times=True),
                "multiplying by 1 − p is the original (non-inverted) test-time rule; in training "
                "the kept units are divided by 1 − p."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 2. SGD with momentum: L2 penalty (coupled) or decoupled weight decay


def _decay_cases(device):
    g = _gen(81)

    def t(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)

    return [
        Case("coupled (L2), later step", (t(5), t(5), t(5), 0.1, 0.9, 0.01, False)),
        Case("decoupled, later step", (t(5), t(5), t(5), 0.1, 0.9, 0.01, True)),
        Case("coupled, first step (no buffer)", (t(6), t(6), None, 0.05, 0.9, 0.1, False)),
        Case("decoupled, first step (no buffer)", (t(6), t(6), None, 0.05, 0.9, 0.1, True)),
        Case("decoupled, a (3, 4) matrix, float32, strong decay 0.5",
             (t(3, 4, dtype=torch.float32), t(3, 4, dtype=torch.float32), t(3, 4, dtype=torch.float32),
              0.2, 0.5, 0.5, True)),
        Case("coupled, float32, momentum 0.5", (t(4, dtype=torch.float32), t(4, dtype=torch.float32),
                                                t(4, dtype=torch.float32), 0.3, 0.5, 0.2, False)),
    ]


def _decay_ref(param, grad, buf, lr, momentum, weight_decay, decoupled):
    """One step; decoupled decay in PyTorch's convention: the shrink factor is 1 - lr * weight_decay."""
    if not decoupled:
        return _torch_sgd_step(param, grad, buf, lr, momentum, weight_decay=weight_decay)
    shrunk = param * (1 - lr * weight_decay)
    return _torch_sgd_step(shrunk, grad, buf, lr, momentum)


def _decay_generic(param, grad, buf, lr, momentum, weight_decay, decoupled, *,
                   twice=False, always_coupled=False, unscaled=False):
    coupled = not decoupled or always_coupled or twice
    g = grad + weight_decay * param if coupled else grad
    new_buf = g.clone() if buf is None else momentum * buf + g
    p = param
    if decoupled and not always_coupled:
        p = param - (weight_decay if unscaled else lr * weight_decay) * param
    return p - lr * new_buf, new_buf


sgd_weight_decay = Question(
    id="sgd_weight_decay",
    chapter=CHAPTER,
    function="sgd_weight_decay",
    points=3,
    title="SGD with momentum: L2 penalty or decoupled weight decay",
    cases=_decay_cases,
    reference=_decay_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("weight decay applied twice",
                lambda *a: _decay_generic(*a, twice=True),
                "decoupled decay replaces the L2 term in the gradient; it is not added on top of it."),
        Mistake("decoupled decay sent through the momentum buffer",
                lambda *a: _decay_generic(*a, always_coupled=True),
                "with decoupled=True the buffer sees only the loss gradient; the weights are shrunk "
                "by (1 − lr·weight_decay) directly."),
        Mistake("decoupled decay not scaled by the learning rate",
                lambda *a: _decay_generic(*a, unscaled=True),
                "this exercise uses PyTorch's convention (as torch.optim.AdamW): the shrink factor is "
                "1 − lr·weight_decay. Shrinking by 1 − weight_decay is the paper's SGDW with a constant "
                "schedule multiplier, whose λ is not multiplied by the step size: another meaning of λ."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. Early stopping


def _stop_cases(device):
    return [
        Case("a loss that improves, then rises; patience 3",
             ([1.0, 0.8, 0.7, 0.72, 0.75, 0.71, 0.74, 0.8, 0.9], 3)),
        Case("tiny improvements below min_delta 0.01; patience 2",
             ([1.0, 0.9, 0.895, 0.893, 0.891, 0.85, 0.849, 0.848, 0.847], 2), {"min_delta": 0.01}),
        Case("accuracy (mode 'max'), patience 2",
             ([0.5, 0.7, 0.8, 0.79, 0.81, 0.80, 0.80, 0.78], 2), {"mode": "max"}),
        Case("never stops: always improving", ([5.0, 4.0, 3.0, 2.0, 1.0], 1)),
        Case("patience 1, stops at the first bad epoch", ([1.0, 1.2, 0.5], 1)),
        Case("improvements smaller than min_delta slowly add up; patience 3",
             ([1.0, 0.96, 0.93, 0.90, 0.87, 0.84, 0.81, 0.78], 3), {"min_delta": 0.05}),
    ]


def _stop_ref(metrics, patience, min_delta=0.0, mode="min"):
    from book.regularization import EarlyStopping

    rule = EarlyStopping(patience=patience, min_delta=min_delta, mode=mode)
    for epoch, m in enumerate(metrics, start=1):
        if rule.step(m):
            return epoch
    return None


def _stop_generic(metrics, patience, min_delta=0.0, mode="min", *, no_delta=False, early=False,
                  creep=False, no_reset=False):
    sign = 1.0 if mode == "min" else -1.0
    best, bad = None, 0
    for epoch, m in enumerate(metrics, start=1):
        v = sign * m
        delta = 0.0 if no_delta else min_delta
        if best is None or v < best - delta:
            best = v
            if not no_reset:
                bad = 0
            else:
                bad += 0
        else:
            bad += 1
            if creep and v < best:
                best = v
        if bad >= (patience - 1 if early else patience) and bad > 0:
            return epoch
    return None


early_stopping = Question(
    id="early_stopping",
    chapter=CHAPTER,
    function="early_stopping",
    points=2,
    title="When does early stopping stop?",
    cases=_stop_cases,
    reference=_stop_ref,
    rtol=0.0,
    atol=0.0,
    mistakes=(
        Mistake("min_delta ignored",
                lambda *a, **k: _stop_generic(*a, **k, no_delta=True),
                "an epoch improves only when it beats the best value by MORE than min_delta."),
        Mistake("stopping one epoch too early",
                lambda *a, **k: _stop_generic(*a, **k, early=True),
                "stop when patience epochs IN A ROW have failed to improve (patience 3: the third "
                "bad epoch stops training, not the second)."),
        Mistake("the best value creeps with small improvements",
                lambda *a, **k: _stop_generic(*a, **k, creep=True),
                "only an improvement by more than min_delta updates the best value; otherwise slow "
                "drifts reset the reference point and training never stops."),
        Mistake("the counter not reset by an improvement",
                lambda *a, **k: _stop_generic(*a, **k, no_reset=True),
                "bad epochs must be CONSECUTIVE: an improvement sets the count back to zero."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 4. Predict: L2 inside Adam against AdamW's decoupled decay, on a weight the loss ignores

DECAY_STEPS, DECAY_LR, DECAY_LAMBDA = 100, 1e-3, 0.1


def _decay_cases(device):
    return [Case("your predictions (AdamW, Adam with the L2 term) after 100 steps")]


def _decay_run(cls):
    p = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = cls([p], lr=DECAY_LR, weight_decay=DECAY_LAMBDA)
    for _ in range(DECAY_STEPS):
        p.grad = torch.zeros(1, dtype=torch.float64)  # the loss does not depend on this weight
        opt.step()
    return float(p.detach())


def _decay_ref():
    return (_decay_run(torch.optim.AdamW), _decay_run(torch.optim.Adam))


_SHRINK = (1 - DECAY_LR * DECAY_LAMBDA) ** DECAY_STEPS  # AdamW's factor
_LINEAR = 1 - DECAY_STEPS * DECAY_LR  # about lr per step while Adam normalises the L2 gradient


decay_prediction = Question(
    id="decay_prediction",
    chapter=CHAPTER,
    function="decay_prediction",
    points=2,
    title="Predict: L2 in Adam against AdamW's weight decay",
    kind="predict",
    cases=_decay_cases,
    reference=_decay_ref,
    rtol=0.005,
    atol=0.0,
    mistakes=(
        Mistake("the two optimizers swapped", lambda: (_LINEAR, _SHRINK),
                "AdamW multiplies the weight by 1 − lr·λ each step, outside Adam's normalisation; it is the L2 "
                "term inside Adam that gets normalised into steps of about lr each."),
        Mistake("L2 inside Adam taken for weight decay", lambda: (_SHRINK, _SHRINK),
                "for SGD an L2 term and weight decay are the same update, but Adam divides the L2 gradient λw "
                "by its own root mean square: each step moves the weight by about lr, not lr·λ·w."),
        Mistake("Adam's normalised step taken for AdamW's decay too", lambda: (_LINEAR, _LINEAR),
                "AdamW's decay is not divided by anything: with a zero loss gradient it is the factor "
                "(1 − lr·λ) per step, and nothing else moves the weight."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


QUESTIONS = [dropout, sgd_weight_decay, early_stopping, decay_prediction]
