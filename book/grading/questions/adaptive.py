"""Questions for chapter 5, adaptive methods: AdaGrad, RMSprop, Adam, AdamW.

Every reference is one step of the torch.optim class itself, started from the state
the question gives, so a correct answer is a drop-in equal of torch.optim's update.
"""

from __future__ import annotations

import math

import torch

from book.grading.core import Case, Mistake, Question

CHAPTER = "05_adaptive"
NOT_THE_LIBRARY = ("book.optim", "torch.optim")


def _torch_step(cls, param, grad, state: dict, **hyper):
    """One step of a torch.optim class from the given state; returns (param, state)."""
    p = param.detach().clone().requires_grad_(True)
    opt = cls([p], **hyper)
    for key, value in state.items():
        opt.state[p][key] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    p.grad = grad.detach().clone()
    opt.step()
    return p.detach(), opt.state[p]


def _tensors(device, seed, shape=(5,), dtype=torch.float64, positive=0):
    """`positive` non-negative tensors (running squares) after param and grad."""
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(2)]
    out += [torch.rand(*shape, generator=g, dtype=torch.float64) * 0.5 for _ in range(positive)]
    return [t.to(dtype).to(device) for t in out]


# ---------------------------------------------------------------------------
# 1. AdaGrad


def _adagrad_cases(device):
    cases = []
    for i, (shape, dtype, step, kw) in enumerate([
        ((5,), torch.float64, 1, {}),
        ((5,), torch.float64, 7, {}),
        ((3, 4), torch.float32, 3, {"lr": 0.05}),
        ((6,), torch.float64, 10, {"lr_decay": 0.01}),
        ((4,), torch.float64, 2, {"weight_decay": 0.1}),
        ((5,), torch.float64, 4, {"eps": 1e-3}),
    ]):
        p, g, s = _tensors(device, 100 + i, shape, dtype, positive=1)
        if step == 1:
            s = torch.zeros_like(s)
        label = f"step {step}, shape {tuple(shape)}, {str(dtype).replace('torch.', '')}" + "".join(f", {k}={v}" for k, v in kw.items())
        cases.append(Case(label, (p, g, s, step), kw))
    return cases


def _adagrad_ref(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    p, st = _torch_step(torch.optim.Adagrad, param, grad,
                        {"sum": state_sum, "step": torch.tensor(float(step - 1))},
                        lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
    return p, st["sum"]


def _adagrad_generic(param, grad, state_sum, step, lr, lr_decay, weight_decay, eps, *, inside=False,
                     old_sum=False, decay=True):
    g = grad + weight_decay * param
    new_sum = state_sum + g * g
    clr = lr / (1 + (step - 1) * lr_decay) if decay else lr
    acc = state_sum if old_sum else new_sum
    denom = torch.sqrt(acc + eps) if inside else torch.sqrt(acc) + eps
    return param - clr * g / denom, new_sum


adagrad_step = Question(
    id="adagrad_step",
    chapter=CHAPTER,
    function="adagrad_step",
    points=2,
    title="AdaGrad, as torch.optim.Adagrad",
    cases=_adagrad_cases,
    reference=_adagrad_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("eps inside the square root",
                lambda p, g, s, t, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10:
                _adagrad_generic(p, g, s, t, lr, lr_decay, weight_decay, eps, inside=True),
                "torch.optim.Adagrad divides by √(sum) + eps, with eps outside the root."),
        Mistake("the sum before this step's gradient",
                lambda p, g, s, t, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10:
                _adagrad_generic(p, g, s, t, lr, lr_decay, weight_decay, eps, old_sum=True),
                "add g² to the sum first, then divide by the root of the updated sum."),
        Mistake("lr_decay ignored",
                lambda p, g, s, t, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10:
                _adagrad_generic(p, g, s, t, lr, lr_decay, weight_decay, eps, decay=False),
                "the step uses lr / (1 + (step − 1) · lr_decay)."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 2. RMSprop


def _rmsprop_cases(device):
    cases = []
    for i, (shape, dtype, kw) in enumerate([
        ((5,), torch.float64, {}),
        ((3, 4), torch.float32, {"lr": 0.001}),
        ((6,), torch.float64, {"alpha": 0.9}),
        ((4,), torch.float64, {"eps": 1e-2}),
        ((5,), torch.float64, {"alpha": 0.5, "lr": 0.1}),
    ]):
        p, g, v = _tensors(device, 200 + i, shape, dtype, positive=1)
        label = f"shape {tuple(shape)}, {str(dtype).replace('torch.', '')}" + "".join(f", {k}={v_}" for k, v_ in kw.items())
        cases.append(Case(label, (p, g, v), kw))
    p, g, v = _tensors(device, 299, (5,), torch.float64, positive=1)
    cases.append(Case("first step (square_avg = 0)", (p, g, torch.zeros_like(v)), {}))
    return cases


def _rmsprop_ref(param, grad, square_avg, lr=0.01, alpha=0.99, eps=1e-8):
    p, st = _torch_step(torch.optim.RMSprop, param, grad,
                        {"square_avg": square_avg, "step": torch.tensor(0.0)}, lr=lr, alpha=alpha, eps=eps)
    return p, st["square_avg"]


def _rms_generic(param, grad, square_avg, lr, alpha, eps, *, inside=False, swapped=False, unsquared=False):
    g2 = grad.abs() if unsquared else grad * grad
    v = alpha * g2 + (1 - alpha) * square_avg if swapped else alpha * square_avg + (1 - alpha) * g2
    denom = torch.sqrt(v + eps) if inside else torch.sqrt(v) + eps
    return param - lr * grad / denom, v


rmsprop_step = Question(
    id="rmsprop_step",
    chapter=CHAPTER,
    function="rmsprop_step",
    points=2,
    title="RMSprop, as torch.optim.RMSprop",
    cases=_rmsprop_cases,
    reference=_rmsprop_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("eps inside the square root",
                lambda p, g, v, lr=0.01, alpha=0.99, eps=1e-8: _rms_generic(p, g, v, lr, alpha, eps, inside=True),
                "torch.optim.RMSprop divides by √v + eps, with eps outside the root."),
        Mistake("alpha on the wrong term",
                lambda p, g, v, lr=0.01, alpha=0.99, eps=1e-8: _rms_generic(p, g, v, lr, alpha, eps, swapped=True),
                "alpha weights the old average: v ← α v + (1 − α) g²."),
        Mistake("|g| instead of g²",
                lambda p, g, v, lr=0.01, alpha=0.99, eps=1e-8: _rms_generic(p, g, v, lr, alpha, eps, unsquared=True),
                "the running average is of the squared gradient."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. Adam with bias correction, and 4. AdamW


def _adam_cases(device, with_decay: bool):
    cases = []
    rows = [
        ((5,), torch.float64, 1, {}),
        ((5,), torch.float64, 2, {}),
        ((3, 4), torch.float32, 10, {"lr": 0.01}),
        ((6,), torch.float64, 5, {"betas": (0.8, 0.9)}),
        ((4,), torch.float64, 100, {"eps": 1e-3}),
    ]
    for i, (shape, dtype, step, kw) in enumerate(rows):
        if with_decay:
            kw = {**kw, "weight_decay": 0.1 if i % 2 == 0 else 0.01}
        p, g, m, v = _tensors(device, (400 if with_decay else 300) + i, shape, dtype, positive=2)
        m = m - 0.25
        if step == 1:
            m, v = torch.zeros_like(m), torch.zeros_like(v)
        label = f"step {step}, shape {tuple(shape)}, {str(dtype).replace('torch.', '')}" + "".join(f", {k}={x}" for k, x in kw.items())
        cases.append(Case(label, (p, g, m, v, step), kw))
    # a tiny second moment, where it matters on which side of the root eps sits
    p, g, m, v = _tensors(device, 499 if with_decay else 399, (5,), torch.float64, positive=2)
    kw = {"eps": 1e-3, **({"weight_decay": 0.05} if with_decay else {})}
    cases.append(Case("step 20, tiny gradients (v ~ 1e-8), eps = 1e-3", (p, 1e-4 * g, 1e-4 * (m - 0.25), 1e-8 * v, 20), kw))
    return cases


def _adam_ref(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    p, st = _torch_step(torch.optim.Adam, param, grad,
                        {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "step": torch.tensor(float(step - 1))},
                        lr=lr, betas=betas, eps=eps)
    return p, st["exp_avg"], st["exp_avg_sq"]


def _adamw_ref(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    p, st = _torch_step(torch.optim.AdamW, param, grad,
                        {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "step": torch.tensor(float(step - 1))},
                        lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return p, st["exp_avg"], st["exp_avg_sq"]


def _adam_generic(param, grad, m, v, step, lr, betas, eps, *, correct=True, inside=False, t_shift=0,
                  l2=0.0, decoupled=0.0, decay_lr=True):
    b1, b2 = betas
    g = grad + l2 * param
    if decoupled:
        param = param * (1 - (lr if decay_lr else 1.0) * decoupled)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    t = step + t_shift
    m_hat = m / (1 - b1**t) if correct else m
    v_hat = v / (1 - b2**t) if correct else v
    denom = torch.sqrt(v_hat + eps) if inside else torch.sqrt(v_hat) + eps
    return param - lr * m_hat / denom, m, v


def _adam_mistake(**how):
    def fn(param, grad, m, v, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        return _adam_generic(param, grad, m, v, step, lr, betas, eps, **how)
    return fn


adam_step = Question(
    id="adam_step",
    chapter=CHAPTER,
    function="adam_step",
    points=3,
    title="Adam with bias correction, as torch.optim.Adam",
    cases=lambda device: _adam_cases(device, with_decay=False),
    reference=_adam_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("no bias correction", _adam_mistake(correct=False),
                "divide m by 1 − β1ᵗ and v by 1 − β2ᵗ (both start at zero). Without the correction each step is "
                "(1 − β1ᵗ)/√(1 − β2ᵗ) times the corrected one: with the default betas (0.9, 0.999) the first "
                "step is 3.2 times too large, and up to 6.6 times by step 12."),
        Mistake("eps inside the square root", _adam_mistake(inside=True),
                "torch.optim.Adam divides by √v̂ + eps, with eps outside the root."),
        Mistake("an off-by-one step count", _adam_mistake(t_shift=1),
                "the bias corrections use this step's number t (1 on the first step), not t + 1."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


def _adamw_mistake(**how):
    def fn(param, grad, m, v, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        how2 = dict(how)
        for key in ("l2", "decoupled"):
            if how2.get(key) == "wd":
                how2[key] = weight_decay
        return _adam_generic(param, grad, m, v, step, lr, betas, eps, **how2)
    return fn


def _adamw_decay_after(param, grad, m, v, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    p, m, v = _adam_generic(param, grad, m, v, step, lr, betas, eps)
    return p * (1 - lr * weight_decay), m, v


adamw_step = Question(
    id="adamw_step",
    chapter=CHAPTER,
    function="adamw_step",
    points=3,
    title="AdamW's decoupled weight decay, as torch.optim.AdamW",
    cases=lambda device: _adam_cases(device, with_decay=True),
    reference=_adamw_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("decay added to the gradient", _adamw_mistake(l2="wd"),
                "that is Adam with an L2 penalty: the decay then passes through Adam's normalisation. "
                "AdamW shrinks the weights directly: p ← p (1 − lr · weight_decay), then the Adam step."),
        Mistake("decay not scaled by lr", _adamw_mistake(decoupled="wd", decay_lr=False),
                "PyTorch multiplies the decay by the learning rate: p ← p (1 − lr · weight_decay)."),
        Mistake("decay applied after the Adam step", _adamw_decay_after,
                "shrink the weights before the Adam update, as torch.optim.AdamW does."),
    ),
    forbidden=NOT_THE_LIBRARY,
)

# ---------------------------------------------------------------------------
# 5. Predict: the size of Adam's first step

FIRST_GRADS = (0.02, -5.0, 1e-9)


def _first_cases(device):
    return [Case("your predictions for the gradients 0.02, -5 and 1e-9")]


def _first_ref():
    out = []
    for g in FIRST_GRADS:
        p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([p], lr=1e-3)
        p.grad = torch.full((1,), g, dtype=torch.float64)
        opt.step()
        out.append(float(p.detach()))
    return tuple(out)


def _first_generic(*, bias=True, eps=1e-8, sgd=False):
    out = []
    for g in FIRST_GRADS:
        if sgd:
            out.append(-1e-3 * g)
            continue
        m, v = 0.1 * g, 0.001 * g * g
        if bias:
            m, v = m / 0.1, v / 0.001
        out.append(-1e-3 * m / (math.sqrt(v) + eps))
    return tuple(out)


adam_first_step = Question(
    id="adam_first_step",
    chapter=CHAPTER,
    function="adam_first_step",
    points=2,
    title="Predict: the size of Adam's first step",
    kind="predict",
    cases=_first_cases,
    reference=_first_ref,
    rtol=0.02,
    atol=0.0,
    mistakes=(
        Mistake("no bias correction", lambda: _first_generic(bias=False),
                "after one step m = (1 − β1) g and v = (1 − β2) g²; dividing by 1 − β1 and 1 − β2 undoes that "
                "shrinkage, so m̂ = g and v̂ = g² exactly."),
        Mistake("eps left out", lambda: _first_generic(eps=0.0),
                "with m̂ = g and √v̂ = |g| the step is lr · g / (|g| + eps): lr itself while |g| ≫ eps, but "
                "much smaller once |g| is comparable to eps = 1e-8."),
        Mistake("the step of plain SGD", lambda: _first_generic(sgd=True),
                "Adam divides by the root of the second moment: its first step does not scale with g."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


QUESTIONS = [adagrad_step, rmsprop_step, adam_step, adamw_step, adam_first_step]
