"""Questions for chapter 7, loss functions: a numerically stable cross-entropy with label
smoothing, the Huber loss with its gradient, the sigmoid focal loss. References are
torch.nn.functional's losses (and autograd through them); the focal loss is the formula of
Lin et al. (2017) written with torch's stable binary cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from book.grading.core import Case, Mistake, Question

CHAPTER = "07_losses"
NOT_THE_LIBRARY = (
    "book.losses",
    "torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss", "torch.nn.functional.log_softmax",
    "torch.nn.functional.softmax", "torch.nn.functional.huber_loss", "torch.nn.functional.smooth_l1_loss",
    "torch.nn.functional.binary_cross_entropy", "torch.nn.functional.binary_cross_entropy_with_logits",
    "torch.nn.functional.kl_div",
    "torch.nn.CrossEntropyLoss", "torch.nn.NLLLoss", "torch.nn.HuberLoss", "torch.nn.SmoothL1Loss",
    "torch.nn.BCEWithLogitsLoss", "torch.nn.BCELoss",
    "torch.log_softmax", "torch.softmax", "torch.logsumexp", "torch.special.log_softmax",
    "torch.special.softmax", "torch.special.logsumexp", "torch.special.log_ndtr",
    "torch.autograd",
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# 1. Cross-entropy from logits, stable, with label smoothing


def _draws(g, device):
    """(logits(n, c, scale, dtype), labels(n, c)): seeded draws from ``g``, in the order they are asked for."""

    def logits(n, c, scale=1.0, dtype=torch.float64):
        return (scale * torch.randn(n, c, generator=g, dtype=torch.float64)).to(dtype).to(device)

    def labels(n, c):
        return torch.randint(0, c, (n,), generator=g).to(device)

    return logits, labels


def _ce_cases(device):
    logits, labels = _draws(_gen(70), device)

    return [
        Case("8 samples, 5 classes", (logits(8, 5), labels(8, 5))),
        Case("16 samples, 10 classes, float32", (logits(16, 10, dtype=torch.float32), labels(16, 10))),
        Case("logits of size ~1000 (float32)", (logits(6, 4, 1000.0, torch.float32), labels(6, 4))),
        Case("label_smoothing 0.1", (logits(8, 5), labels(8, 5)), {"label_smoothing": 0.1}),
        Case("label_smoothing 0.3, logits of size ~500", (logits(5, 3, 500.0), labels(5, 3)),
             {"label_smoothing": 0.3}),
        Case("one sample, 2 classes", (logits(1, 2), labels(1, 2))),
    ]


def _ce_ref(logits, target, label_smoothing=0.0):
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def _ce_generic(logits, target, label_smoothing=0.0, *, naive=False, smooth_others=False, total=False):
    n, c = logits.shape
    if naive:
        e = torch.exp(logits)
        logp = torch.log(e / e.sum(dim=1, keepdim=True))
    else:
        m = logits.max(dim=1, keepdim=True).values
        logp = logits - m - torch.log(torch.exp(logits - m).sum(dim=1, keepdim=True))
    onehot = F.one_hot(target, c).to(logits.dtype)
    if smooth_others:
        q = onehot * (1 - label_smoothing) + (1 - onehot) * label_smoothing / max(c - 1, 1)
    else:
        q = onehot * (1 - label_smoothing) + label_smoothing / c
    per = -(q * logp).sum(dim=1)
    return per.sum() if total else per.mean()


cross_entropy = Question(
    id="cross_entropy",
    chapter=CHAPTER,
    function="cross_entropy",
    points=3,
    title="Cross-entropy from logits, stable, with label smoothing",
    cases=_ce_cases,
    reference=_ce_ref,
    rtol=1e-5,
    atol=1e-6,
    mistakes=(
        Mistake("softmax computed naively",
                lambda z, y, label_smoothing=0.0: _ce_generic(z, y, label_smoothing, naive=True),
                "exp(1000) overflows to inf and inf / inf is nan: subtract the row's maximum before "
                "exponentiating (log-sum-exp), which changes nothing mathematically."),
        Mistake("label smoothing spread over the other classes only",
                lambda z, y, label_smoothing=0.0: _ce_generic(z, y, label_smoothing, smooth_others=True),
                "PyTorch mixes the one-hot target with the uniform distribution over ALL C classes: "
                "q = (1 − ε)·onehot + ε / C, so the true class gets 1 − ε + ε / C."),
        Mistake("summed instead of averaged",
                lambda z, y, label_smoothing=0.0: _ce_generic(z, y, label_smoothing, total=True),
                "reduction='mean' divides the sum of the per-sample losses by the number of samples."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 2. Huber loss and its gradient


def _huber_cases(device):
    g = _gen(71)

    def t(*shape, scale=1.0, dtype=torch.float64):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    return [
        Case("10 residuals around ±2, delta 1", (t(10, scale=2.0), t(10))),
        Case("a (4, 5) batch, delta 0.5", (t(4, 5, scale=2.0), t(4, 5)), {"delta": 0.5}),
        Case("large residuals (outliers), delta 2", (t(8, scale=10.0), t(8)), {"delta": 2.0}),
        Case("small residuals only (all quadratic), delta 5", (t(6, scale=0.5), t(6)), {"delta": 5.0}),
        Case("float32, delta 1.5", (t(12, scale=3.0, dtype=torch.float32), t(12, dtype=torch.float32)),
             {"delta": 1.5}),
    ]


def _huber_ref(input, target, delta=1.0):
    x = input.detach().clone().requires_grad_(True)
    loss = F.huber_loss(x, target, delta=delta)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def _huber_generic(input, target, delta=1.0, *, smooth_l1=False, grad_of_sum=False, no_offset=False):
    r = input - target
    a = r.abs()
    quad = 0.5 * r * r
    lin = delta * a if no_offset else delta * (a - 0.5 * delta)
    per = torch.where(a <= delta, quad, lin)
    grad = r.clamp(-delta, delta)
    if smooth_l1:
        per, grad = per / delta, grad / delta
    n = r.numel()
    return per.mean(), grad if grad_of_sum else grad / n


huber = Question(
    id="huber",
    chapter=CHAPTER,
    function="huber",
    points=3,
    title="The Huber loss and its gradient, as F.huber_loss",
    cases=_huber_cases,
    reference=_huber_ref,
    rtol=1e-5,
    atol=1e-7,
    mistakes=(
        Mistake("smooth L1 instead of Huber",
                lambda x, y, delta=1.0: _huber_generic(x, y, delta, smooth_l1=True),
                "that is F.smooth_l1_loss (Huber divided by delta); Huber's quadratic piece is ½r² "
                "with no division, and its linear piece is delta·(|r| − delta/2)."),
        Mistake("the gradient of the sum, not of the mean",
                lambda x, y, delta=1.0: _huber_generic(x, y, delta, grad_of_sum=True),
                "the loss is a mean over all N elements, so each element's gradient carries a factor 1/N."),
        Mistake("the linear piece without its offset",
                lambda x, y, delta=1.0: _huber_generic(x, y, delta, no_offset=True),
                "delta·|r| jumps at |r| = delta; subtract delta²/2 so the two pieces meet."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. Sigmoid focal loss (Lin et al. 2017)


def _focal_cases(device):
    g = _gen(72)

    def logits(*shape, scale=2.0, dtype=torch.float64):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    def targets(*shape, p=0.3, dtype=torch.float64):
        return (torch.rand(*shape, generator=g) < p).to(dtype).to(device)

    return [
        Case("12 logits, defaults (alpha 0.25, gamma 2)", (logits(12), targets(12))),
        Case("a (4, 6) batch, gamma 0 (weighted cross-entropy)", (logits(4, 6), targets(4, 6)), {"gamma": 0.0}),
        Case("alpha 0.75, gamma 1", (logits(10), targets(10, p=0.5)), {"alpha": 0.75, "gamma": 1.0}),
        Case("confident logits of ±100 (float32)", (logits(8, scale=100.0, dtype=torch.float32),
                                                   targets(8, p=0.5, dtype=torch.float32))),
        Case("alpha 0.5, gamma 5", (logits(9), targets(9)), {"alpha": 0.5, "gamma": 5.0}),
    ]


def _focal_ref(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * ce).mean()


def _focal_generic(logits, targets, alpha=0.25, gamma=2.0, *, naive_log=False, swap_alpha=False, p_t_power=False):
    p = torch.sigmoid(logits)
    if naive_log:
        ce = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    else:
        ce = torch.clamp(logits, min=0) - logits * targets + torch.log1p(torch.exp(-logits.abs()))
    p_t = p * targets + (1 - p) * (1 - targets)
    a = 1 - alpha if swap_alpha else alpha
    alpha_t = a * targets + (1 - a) * (1 - targets)
    mod = p_t ** gamma if p_t_power else (1 - p_t) ** gamma
    return (alpha_t * mod * ce).mean()


focal = Question(
    id="focal",
    chapter=CHAPTER,
    function="focal",
    points=3,
    title="The sigmoid focal loss of Lin et al. (2017)",
    cases=_focal_cases,
    reference=_focal_ref,
    rtol=1e-5,
    atol=1e-7,
    mistakes=(
        Mistake("log of the sigmoid computed naively",
                lambda z, y, alpha=0.25, gamma=2.0: _focal_generic(z, y, alpha, gamma, naive_log=True),
                "sigmoid(100) is exactly 1.0 in floating point, so log(1 − p) = −inf; write the "
                "cross-entropy from the logits: max(z, 0) − z·y + log(1 + exp(−|z|))."),
        Mistake("alpha weighting the wrong class",
                lambda z, y, alpha=0.25, gamma=2.0: _focal_generic(z, y, alpha, gamma, swap_alpha=True),
                "alpha multiplies the positive examples (y = 1) and 1 − alpha the negatives."),
        Mistake("p_t to the power gamma",
                lambda z, y, alpha=0.25, gamma=2.0: _focal_generic(z, y, alpha, gamma, p_t_power=True),
                "the modulating factor is (1 − p_t)^gamma: it is small for examples the model already "
                "gets right (p_t near 1), which is the point of the focal loss."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 4. Derive: the gradient of the mean softmax cross-entropy with respect to the logits


def _ce_grad_cases(device):
    logits, labels = _draws(_gen(740), device)

    return [
        Case("4 examples, 3 classes, float64", (logits(4, 3), labels(4, 3))),
        Case("one example, 5 classes", (logits(1, 5), labels(1, 5))),
        Case("16 examples, 10 classes, float32", (logits(16, 10, dtype=torch.float32), labels(16, 10))),
        Case("two classes, 8 examples", (logits(8, 2), labels(8, 2))),
        Case("large logits (scale 1e3): the softmax must not overflow", (logits(6, 4, scale=1e3), labels(6, 4))),
        Case("every example of the same class", (logits(5, 3), torch.zeros(5, dtype=torch.int64, device=device))),
    ]


def _ce_grad_ref(logits, target):
    z = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(z, target).backward()
    return z.grad


def _ce_grad_generic(logits, target, *, no_mean=False, sign=1.0, no_onehot=False, log=False):
    p = torch.log_softmax(logits, dim=1) if log else torch.softmax(logits, dim=1)
    y = torch.zeros_like(p).scatter_(1, target[:, None], 1.0)
    d = p if no_onehot else p - y
    return sign * d / (1 if no_mean else logits.shape[0])


cross_entropy_grad = Question(
    id="cross_entropy_grad",
    chapter=CHAPTER,
    function="cross_entropy_grad",
    points=3,
    title="Derive: the gradient of softmax cross-entropy",
    kind="derive",
    partial=True,
    cases=_ce_grad_cases,
    reference=_ce_grad_ref,
    rtol=1e-5,
    atol=1e-8,
    mistakes=(
        Mistake("the sum's gradient, not the mean's", lambda z, y: _ce_grad_generic(z, y, no_mean=True),
                "the loss is the MEAN over the N examples, so each row of the gradient carries a factor 1/N."),
        Mistake("the sign flipped", lambda z, y: _ce_grad_generic(z, y, sign=-1.0),
                "raising the right class's logit lowers the loss: ∂L/∂z_iy = (p_iy − 1)/N < 0, so the gradient "
                "is (softmax(z) − onehot(y)) / N, not its negative."),
        Mistake("the one-hot term missing", lambda z, y: _ce_grad_generic(z, y, no_onehot=True),
                "differentiate −z_iy as well as log Σ_c exp(z_ic): the first gives −1 at the true class, the "
                "second gives softmax(z_i)."),
        Mistake("log-softmax in place of softmax", lambda z, y: _ce_grad_generic(z, y, log=True),
                "the derivative of log Σ_c exp(z_c) with respect to z_k is exp(z_k) / Σ_c exp(z_c), the "
                "softmax itself, not its logarithm."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


QUESTIONS = [cross_entropy, huber, focal, cross_entropy_grad]
