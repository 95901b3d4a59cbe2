"""Questions for chapter 9, batch normalization: the training-mode forward with the
running-statistics update, the backward pass, the evaluation-mode forward. Every reference is
torch.nn.functional.batch_norm itself (and autograd through it for the backward)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from book.grading.core import Case, Mistake, Question

CHAPTER = "09_batch_norm"
NOT_THE_LIBRARY = (
    "book.normalization",
    "torch.nn.functional.batch_norm", "torch.nn.functional.layer_norm", "torch.nn.functional.instance_norm",
    "torch.nn.functional.group_norm", "torch.nn.functional.normalize",
    "torch.batch_norm", "torch.native_batch_norm", "torch.layer_norm", "torch.var_mean",
    "torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d", "torch.nn.LayerNorm",
    "torch.nn.modules", "torch.autograd", "torch.func",
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _axes(x):
    """Every axis but the channel axis 1."""
    return (0,) + tuple(range(2, x.ndim))


def _shape(x):
    """Shape that broadcasts a per-channel vector against x."""
    return (1, -1) + (1,) * (x.ndim - 2)


def _inputs(device, seed, shape, dtype=torch.float64, scale=1.0, shift=0.0):
    g = _gen(seed)
    c = shape[1]

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    x = (scale * r(*shape) + shift + r(c).reshape(_shape(torch.empty(shape)))).to(dtype).to(device)
    running_mean = (0.1 * r(c)).to(dtype).to(device)
    running_var = (0.5 + torch.rand(c, generator=g, dtype=torch.float64)).to(dtype).to(device)
    weight = (1 + 0.3 * r(c)).to(dtype).to(device)
    bias = (0.2 * r(c)).to(dtype).to(device)
    return x, running_mean, running_var, weight, bias


# ---------------------------------------------------------------------------
# 1. Training-mode forward and the running statistics


def _train_cases(device):
    cases = []
    for i, (label, shape, dtype, scale, kw) in enumerate([
        ("a (8, 3) batch", (8, 3), torch.float64, 1.0, {}),
        ("a (16, 5) batch, momentum 0.3", (16, 5), torch.float64, 2.0, {"momentum": 0.3}),
        ("a (4, 3, 6) batch (channels on axis 1)", (4, 3, 6), torch.float64, 1.0, {}),
        ("a (6, 4) batch, float32", (6, 4), torch.float32, 3.0, {}),
        ("tiny variance (1e-6): eps matters", (10, 2), torch.float64, 1e-3, {}),
        ("a (2, 3) batch, eps 0.1", (2, 3), torch.float64, 1.0, {"eps": 0.1}),
    ]):
        x, rm, rv, w, b = _inputs(device, 90 + i, shape, dtype, scale)
        cases.append(Case(label, (x, rm, rv, w, b), kw))
    return cases


def _train_ref(x, running_mean, running_var, weight, bias, momentum=0.1, eps=1e-5):
    rm, rv = running_mean.clone(), running_var.clone()
    y = F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=momentum, eps=eps)
    return y, rm, rv


def _train_generic(x, running_mean, running_var, weight, bias, momentum=0.1, eps=1e-5, *,
                   biased_running=False, inverted=False, wrong_axis=False, no_eps=False):
    axes = tuple(range(1, x.ndim)) if wrong_axis else _axes(x)
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    xhat = (x - mean) / torch.sqrt(var + (0.0 if no_eps else eps))
    y = xhat * weight.reshape(_shape(x)) + bias.reshape(_shape(x))
    # the running statistics, per channel (over the right axes, whatever the mistake above)
    ax = _axes(x)
    m = x.mean(dim=ax)
    n = x.numel() // x.shape[1]
    v = x.var(dim=ax, unbiased=False) * (1 if biased_running else n / (n - 1))
    a = 1 - momentum if inverted else momentum
    return y, (1 - a) * running_mean + a * m, (1 - a) * running_var + a * v


bn_train_forward = Question(
    id="bn_train_forward",
    chapter=CHAPTER,
    function="bn_train_forward",
    points=3,
    title="Batch norm in training mode, running statistics included",
    cases=_train_cases,
    reference=_train_ref,
    rtol=1e-5,
    atol=1e-6,
    mistakes=(
        Mistake("biased running variance",
                lambda *a, **k: _train_generic(*a, **k, biased_running=True),
                "the batch is normalised with the biased variance (divide by n), but the running "
                "estimate is updated with the unbiased one (divide by n − 1), as PyTorch does."),
        Mistake("momentum convention inverted",
                lambda *a, **k: _train_generic(*a, **k, inverted=True),
                "in PyTorch momentum is the weight of the NEW batch statistic: "
                "running ← (1 − momentum)·running + momentum·batch."),
        Mistake("normalised over the wrong axis",
                lambda *a, **k: _train_generic(*a, **k, wrong_axis=True),
                "batch norm takes statistics per channel (axis 1) over the batch and every other axis; "
                "normalising each sample over its features is layer norm."),
        Mistake("eps forgotten",
                lambda *a, **k: _train_generic(*a, **k, no_eps=True),
                "divide by √(var + eps): eps keeps the division safe when a channel barely varies."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 2. The backward pass


def _backward_cases(device):
    cases = []
    for i, (label, shape, dtype, kw) in enumerate([
        ("a (8, 3) batch", (8, 3), torch.float64, {}),
        ("a (5, 4, 3) batch", (5, 4, 3), torch.float64, {}),
        ("a (16, 2) batch, float32", (16, 2), torch.float32, {}),
        ("a (3, 6) batch, eps 0.5", (3, 6), torch.float64, {"eps": 0.5}),
        ("a (4, 2, 2, 3) batch (images)", (4, 2, 2, 3), torch.float64, {}),
    ]):
        x, _, _, w, _ = _inputs(device, 190 + i, shape, dtype, scale=2.0)
        dy = torch.randn(*shape, generator=_gen(290 + i), dtype=torch.float64).to(dtype).to(device)
        cases.append(Case(label, (dy, x, w), kw))
    return cases


def _backward_ref(dy, x, weight, eps=1e-5):
    x = x.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    b = torch.zeros_like(w, requires_grad=True)
    y = F.batch_norm(x, None, None, w, b, training=True, eps=eps)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), dy)
    return dx, dw, db


def _backward_generic(dy, x, weight, eps=1e-5, *, direct_only=False, no_xhat_term=False, swap=False,
                      unbiased=False):
    ax = _axes(x)
    n = x.numel() // x.shape[1]
    mean = x.mean(dim=ax, keepdim=True)
    var = ((x - mean) ** 2).sum(dim=ax, keepdim=True) / (n - 1 if unbiased else n)
    inv = 1 / torch.sqrt(var + eps)
    xhat = (x - mean) * inv
    g = weight.reshape(_shape(x))
    dgamma = (dy * xhat).sum(dim=ax)
    dbeta = dy.sum(dim=ax)
    if direct_only:
        dx = g * inv * dy
    else:
        s1 = dy.sum(dim=ax, keepdim=True)
        s2 = 0.0 if no_xhat_term else (dy * xhat).sum(dim=ax, keepdim=True)
        dx = g * inv / n * (n * dy - s1 - xhat * s2)
    if swap:
        dgamma, dbeta = dbeta, dgamma
    return dx, dgamma, dbeta


bn_backward = Question(
    id="bn_backward",
    chapter=CHAPTER,
    function="bn_backward",
    points=4,
    kind="derive",
    partial=True,
    title="Derive: the backward pass of batch norm in training mode",
    cases=_backward_cases,
    reference=_backward_ref,
    rtol=1e-5,
    atol=1e-6,
    mistakes=(
        Mistake("the batch statistics treated as constants",
                lambda *a, **k: _backward_generic(*a, **k, direct_only=True),
                "the mean and the variance depend on every x in the channel; their gradients add "
                "−Σdy/m and −x̂·Σ(dy·x̂)/m to the direct term (γ/σ)·dy."),
        Mistake("the variance's contribution missing",
                lambda *a, **k: _backward_generic(*a, **k, no_xhat_term=True),
                "dx = (γ/σ)/m · (m·dy − Σdy − x̂·Σ(dy·x̂)): the last term comes from the variance."),
        Mistake("dγ and dβ swapped",
                lambda *a, **k: _backward_generic(*a, **k, swap=True),
                "y = γ·x̂ + β, so dγ = Σ dy·x̂ and dβ = Σ dy."),
        Mistake("the unbiased variance in the normalisation",
                lambda *a, **k: _backward_generic(*a, **k, unbiased=True),
                "training mode normalises with the biased batch variance (divide by m)."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. Evaluation-mode forward


def _eval_cases(device):
    cases = []
    for i, (label, shape, dtype, kw) in enumerate([
        ("a (8, 3) batch", (8, 3), torch.float64, {}),
        ("a (4, 3, 5) batch", (4, 3, 5), torch.float64, {}),
        ("one sample, (1, 4)", (1, 4), torch.float64, {}),
        ("a (6, 2) batch, float32, eps 0.01", (6, 2), torch.float32, {"eps": 0.01}),
        ("a (5, 3) batch, tiny running variance", (5, 3), torch.float64, {}),
    ]):
        x, rm, rv, w, b = _inputs(device, 390 + i, shape, dtype, shift=1.5)
        if "tiny" in label:
            rv = rv * 1e-6
        cases.append(Case(label, (x, rm, rv, w, b), kw))
    return cases


def _eval_ref(x, running_mean, running_var, weight, bias, eps=1e-5):
    return F.batch_norm(x, running_mean.clone(), running_var.clone(), weight, bias, training=False, eps=eps)


def _eval_generic(x, running_mean, running_var, weight, bias, eps=1e-5, *, batch_stats=False,
                  eps_outside=False, var_as_std=False):
    s = _shape(x)
    if batch_stats:
        ax = _axes(x)
        mean = x.mean(dim=ax, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=ax, keepdim=True)
    else:
        mean, var = running_mean.reshape(s), running_var.reshape(s)
    if var_as_std:
        denom = var + eps
    elif eps_outside:
        denom = torch.sqrt(var) + eps
    else:
        denom = torch.sqrt(var + eps)
    return (x - mean) / denom * weight.reshape(s) + bias.reshape(s)


bn_eval_forward = Question(
    id="bn_eval_forward",
    chapter=CHAPTER,
    function="bn_eval_forward",
    points=2,
    title="Batch norm in evaluation mode",
    cases=_eval_cases,
    reference=_eval_ref,
    rtol=1e-5,
    atol=1e-6,
    mistakes=(
        Mistake("the batch's statistics in eval mode",
                lambda *a, **k: _eval_generic(*a, **k, batch_stats=True),
                "in evaluation batch norm uses the running mean and variance, so that a sample's output "
                "does not depend on the other samples in its batch (this is what model.eval() switches)."),
        Mistake("eps outside the square root",
                lambda *a, **k: _eval_generic(*a, **k, eps_outside=True),
                "divide by √(running_var + eps)."),
        Mistake("divided by the variance, not the standard deviation",
                lambda *a, **k: _eval_generic(*a, **k, var_as_std=True),
                "the running variance is σ²: take its square root (after adding eps)."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


QUESTIONS = [bn_train_forward, bn_backward, bn_eval_forward]
