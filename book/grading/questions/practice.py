"""Questions for chapter 10, training in practice: gradient clipping by the global norm, He
initialization, gradient checking by central differences, successive halving, random search.

References: ``torch.nn.utils.clip_grad_norm_`` (Pascanu et al., 2013) and
``torch.nn.init.kaiming_normal_`` (He et al., 2015), called on the same inputs; the exact
gradients of closed-form test functions; the successive-halving rule of Jamieson & Talwalkar
(2016), as the inner loop of Hyperband (Li et al., 2018), and random search over a log-uniform
learning rate (Bergstra & Bengio, 2012), both written out here from the rule the exercise
states (there is no torch counterpart), and graded by the calls the answer makes to an
objective that records them (``Question.call``).
"""

from __future__ import annotations

import math

import torch

from book.grading.core import Case, Mistake, Question
from book.grading.harness import (BlackBox, LearningCurves, LRValley, random_search_call,
                                  successive_halving_call)

CHAPTER = "10_practice"
# The chapter's own helpers, and the grader (whose references an answer could import).
NOT_THE_LIBRARY = ("book.practice", "book.grading", "book.train")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# 1. Clipping a list of gradients by their global L2 norm


def _clip_cases(device):
    g = _gen(100)

    def t(*shape, scale=1.0, dtype=torch.float64):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    return [
        Case("three gradients of total norm about 6, max_norm = 1",
             ([t(4, 3), t(3), t(2, 2, 2)], 1.0)),
        Case("total norm below max_norm (nothing to clip)",
             ([t(5, scale=0.1), t(2, 3, scale=0.1)], 5.0)),
        Case("one large gradient among small ones, float32, max_norm = 2",
             ([t(8, 8, scale=3.0, dtype=torch.float32), t(8, scale=0.01, dtype=torch.float32),
               t(1, scale=0.5, dtype=torch.float32)], 2.0)),
        Case("a single gradient tensor, max_norm = 0.5", ([t(10)], 0.5)),
        Case("all gradients zero (total norm 0)", ([torch.zeros(3, dtype=torch.float64, device=device),
                                                     torch.zeros(2, 2, dtype=torch.float64, device=device)], 1.0)),
        Case("four gradients, total norm just above max_norm = 3",
             ([t(3, scale=0.9), t(2, 2, scale=0.9), t(4, scale=0.9), t(1, 5, scale=0.9)], 3.0)),
    ]


def _clip_ref(grads, max_norm):
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return total, [p.grad for p in params]


def _clip_generic(grads, max_norm, *, per_tensor=False, no_clamp=False, clipped_norm=False, sum_norms=False):
    norms = [g.norm() for g in grads]
    total = torch.stack(norms).sum() if sum_norms else torch.stack(norms).norm()
    if per_tensor:
        out = [g * torch.clamp(max_norm / (n + 1e-6), max=1.0) for g, n in zip(grads, norms)]
        return total, out
    coef = max_norm / (total + 1e-6)
    if not no_clamp:
        coef = torch.clamp(coef, max=1.0)
    out = [g * coef for g in grads]
    if clipped_norm:
        total = torch.stack([o.norm() for o in out]).norm()
    return total, out


clip_grad_norm = Question(
    id="clip_grad_norm",
    chapter=CHAPTER,
    function="clip_grad_norm",
    points=2,
    title="Clipping gradients by their global norm",
    cases=_clip_cases,
    reference=_clip_ref,
    rtol=1e-5,
    atol=1e-7,
    mistakes=(
        Mistake("each tensor clipped by its own norm",
                lambda grads, max_norm: _clip_generic(grads, max_norm, per_tensor=True),
                "the gradients of all parameters form ONE vector: compute one total norm "
                "sqrt(Σ ‖g_i‖²) and scale every tensor by the same factor, which keeps the "
                "direction of the whole step."),
        Mistake("small gradients scaled up",
                lambda grads, max_norm: _clip_generic(grads, max_norm, no_clamp=True),
                "clipping only ever shrinks: the factor max_norm / (total + 1e-6) is capped at 1, "
                "so a gradient whose norm is below max_norm is left as it is."),
        Mistake("the norm after clipping returned",
                lambda grads, max_norm: _clip_generic(grads, max_norm, clipped_norm=True),
                "return the total norm measured BEFORE clipping (as torch.nn.utils.clip_grad_norm_ "
                "does): it is what you log to see how often and how hard clipping acts."),
        Mistake("the sum of the tensors' norms",
                lambda grads, max_norm: _clip_generic(grads, max_norm, sum_norms=True),
                "the global L2 norm is sqrt(Σ_i ‖g_i‖²), the norm of the per-tensor norms, not "
                "their sum."),
    ),
    forbidden=NOT_THE_LIBRARY + ("torch.nn.utils",),
)


# ---------------------------------------------------------------------------
# 2. He (Kaiming) normal initialization for a ReLU layer


def _he_cases(device):
    return [
        Case("a Linear(32, 64) weight, shape (64, 32)", ((64, 32), _gen(1))),
        Case("a Linear(784, 10) weight, shape (10, 784)", ((10, 784), _gen(2))),
        Case("a Conv2d(3, 16, 3) weight, shape (16, 3, 3, 3)", ((16, 3, 3, 3), _gen(3))),
        Case("a Conv1d(8, 4, 5) weight, shape (4, 8, 5)", ((4, 8, 5), _gen(4))),
        Case("a square (50, 50) weight", ((50, 50), _gen(5))),
        Case("a (3, 200) weight, seed 6", ((3, 200), _gen(6))),
    ]


def _he_ref(shape, generator):
    return torch.nn.init.kaiming_normal_(torch.empty(shape), mode="fan_in", nonlinearity="relu",
                                         generator=generator)


def _he_generic(shape, generator, *, fan_out=False, no_gain=False, variance=False, uniform=False,
                no_receptive=False, double=False):
    receptive = 1 if no_receptive else math.prod(shape[2:])
    fan = (shape[0] if fan_out else shape[1]) * receptive
    gain = 1.0 if no_gain else math.sqrt(2.0)
    std = gain / math.sqrt(fan)
    if variance:
        std = std * std
    if uniform:
        bound = math.sqrt(3.0) * std
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)
    return torch.empty(shape, dtype=torch.float64 if double else None).normal_(0.0, std, generator=generator)


he_init = Question(
    id="he_init",
    chapter=CHAPTER,
    function="he_init",
    points=2,
    title="He (Kaiming) normal initialization",
    cases=_he_cases,
    reference=_he_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("fan_out instead of fan_in",
                lambda shape, generator: _he_generic(shape, generator, fan_out=True),
                "a torch weight has shape (out_features, in_features, *kernel): fan_in = shape[1] "
                "times the kernel size. Scaling by fan_in keeps the variance of the activations "
                "constant on the forward pass."),
        Mistake("no ReLU gain (LeCun scaling)",
                lambda shape, generator: _he_generic(shape, generator, no_gain=True),
                "ReLU zeroes half of its inputs, halving the second moment; He et al. make up for it "
                "with the gain √2: std = √2 / √fan_in, i.e. variance 2 / fan_in."),
        Mistake("the variance used as the standard deviation",
                lambda shape, generator: _he_generic(shape, generator, variance=True),
                "2 / fan_in is the VARIANCE; normal_(0, std) takes the standard deviation "
                "std = √(2 / fan_in)."),
        Mistake("a uniform draw instead of a normal one",
                lambda shape, generator: _he_generic(shape, generator, uniform=True),
                "this is kaiming_uniform_; the question asks for the normal version: "
                "torch.empty(shape).normal_(0, std, generator=generator)."),
        Mistake("the kernel size left out of fan_in",
                lambda shape, generator: _he_generic(shape, generator, no_receptive=True),
                "for a convolution weight (out, in, k1, k2, ...) each output sums over "
                "in · k1 · k2 · ... inputs: fan_in = shape[1] · prod(shape[2:])."),
        Mistake("the draw made in float64",
                lambda shape, generator: _he_generic(shape, generator, double=True),
                "torch.empty(shape) is float32, and a float64 draw takes other random numbers from the "
                "generator: draw in the default float32."),
    ),
    forbidden=NOT_THE_LIBRARY + ("torch.nn.init", "torch.nn.Linear", "torch.nn.Conv1d",
                                 "torch.nn.Conv2d", "torch.nn.Conv3d"),
)


# ---------------------------------------------------------------------------
# 3. Gradient checking: central differences in float64
#
# The test functions are black boxes (book.grading.harness.BlackBox): they compute without
# autograd (under torch.no_grad(), on a detached input), so an answer cannot differentiate them
# with .backward() or torch.func. Their exact gradients are kept here, by the box's kind, where
# the grading process (which never imports this module) cannot reach them.


def _quadratic(n, g, device):
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = (M @ M.T / n + torch.eye(n, dtype=torch.float64)).to(device)
    b = torch.randn(n, generator=g, dtype=torch.float64).to(device)
    return BlackBox("quadratic", A=A, b=b)


def _tanh_regression(g, device):
    X = torch.randn(8, 3, generator=g, dtype=torch.float64).to(device)
    Y = torch.randn(8, 4, generator=g, dtype=torch.float64).to(device)
    return BlackBox("tanh_regression", X=X, Y=Y)


def _tanh_regression_gradient(W, X, Y):
    out = torch.tanh(X @ W)
    return X.T @ ((out - Y) * (1 - out ** 2)) / X.shape[0]


def _rosenbrock_gradient(x):
    grad = torch.zeros_like(x)
    grad[:-1] += -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    grad[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return grad


_EXACT = {  # kind -> the exact gradient, (x, **data) -> tensor
    "quadratic": lambda x, A, b: A @ x + b,
    "logsumexp": lambda x: torch.softmax(x, 0),
    "tanh_regression": _tanh_regression_gradient,
    "rosenbrock": _rosenbrock_gradient,
    "cubic": lambda x: 3 * x ** 2 - 2,
}


def _numgrad_cases(device):
    g = _gen(102)

    def point(*shape, scale=1.0, dtype=torch.float64):
        return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    quad = _quadratic(5, g, device)
    return [
        Case("a quadratic ½xᵀAx + bᵀx in 5-D, eps = 1e-5", (quad, point(5), 1e-5)),
        Case("log-sum-exp in 6-D, default eps", (BlackBox("logsumexp"), point(6, scale=2.0))),
        Case("a tanh regression loss of a (3, 4) weight matrix, eps = 1e-5",
             (_tanh_regression(g, device), point(3, 4), 1e-5)),
        Case("the Rosenbrock function in 4-D, eps = 1e-6", (BlackBox("rosenbrock"), point(4, scale=0.7), 1e-6)),
        Case("the quadratic at a float32 point (compute in float64)",
             (quad, point(5, dtype=torch.float32), 1e-5)),
        Case("x³ − 2x at a scalar (0-d) float32 point", (BlackBox("cubic"), point(dtype=torch.float32), 1e-5)),
    ]


def _numgrad_ref(f, x, eps=1e-6):
    return _EXACT[f.kind](x.to(torch.float64), **f.data)


def _numgrad_generic(f, x, eps=1e-6, *, forward=False, one_eps=False, no_restore=False, keep_dtype=False):
    base = x.detach().clone() if keep_dtype else x.detach().to(torch.float64).clone()
    flat = base.reshape(-1)  # a view: perturbing flat perturbs base
    grad = torch.zeros(flat.numel(), dtype=torch.float64, device=x.device)
    f0 = f(base) if forward else None
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        fp = f(base)
        if forward:
            grad[i] = (fp - f0) / eps
        else:
            flat[i] = old - eps
            fm = f(base)
            grad[i] = (fp - fm) / (eps if one_eps else 2 * eps)
        if not no_restore:
            flat[i] = old
    return grad.reshape(x.shape)


numerical_gradient = Question(
    id="numerical_gradient",
    chapter=CHAPTER,
    function="numerical_gradient",
    points=3,
    title="Gradient checking by central differences",
    cases=_numgrad_cases,
    reference=_numgrad_ref,
    # Central differences in float64 are within ~1e-9 here; a forward difference is off by
    # about eps/2 · f'' (5e-6 at eps = 1e-5), and a float32 one by ~1e-2.
    rtol=1e-6,
    atol=1e-7,
    mistakes=(
        Mistake("a forward difference",
                lambda f, x, eps=1e-6: _numgrad_generic(f, x, eps, forward=True),
                "(f(x + εe_i) − f(x)) / ε has an error of about ε/2 · f''; the central difference "
                "(f(x + εe_i) − f(x − εe_i)) / (2ε) cancels that term, leaving an error of order ε²."),
        Mistake("divided by ε instead of 2ε",
                lambda f, x, eps=1e-6: _numgrad_generic(f, x, eps, one_eps=True),
                "x + εe_i and x − εe_i are 2ε apart: divide the difference by 2ε."),
        Mistake("the perturbed element not restored",
                lambda f, x, eps=1e-6: _numgrad_generic(f, x, eps, no_restore=True),
                "put x_i back to its original value after evaluating f(x ± εe_i); otherwise the "
                "later coordinates are differentiated at a shifted point."),
        Mistake("computed in float32",
                lambda f, x, eps=1e-6: _numgrad_generic(f, x, eps, keep_dtype=True),
                "with ε = 1e-5 the difference f(x + εe_i) − f(x − εe_i) is about 1e-5 · f, and "
                "float32 rounds f to about 1e-7 of its size: most of the difference is rounding "
                "noise. Convert x to float64 first (x.to(torch.float64))."),
    ),
    forbidden=NOT_THE_LIBRARY + ("torch.autograd", "torch.func", "functorch"),
)


# ---------------------------------------------------------------------------
# 4. Successive halving, graded by the calls made to a recording objective


def _sh_configs(n, seed):
    g = _gen(seed)
    lrs = 10 ** (-4 + 3 * torch.rand(n, generator=g, dtype=torch.float64))
    widths = torch.randint(0, 4, (n,), generator=g)
    return [{"lr": float(f"{lr:.3g}"), "width": 32 * 2 ** int(w), "trial": k}
            for k, (lr, w) in enumerate(zip(lrs, widths))]


def _sh_cases(device):
    out = []
    for n, min_budget, eta, seed in [(9, 1, 3, 0), (8, 1, 2, 1), (27, 1, 3, 2), (10, 2, 3, 3),
                                     (16, 1, 4, 4), (5, 3, 2, 5), (1, 1, 3, 6)]:
        configs = _sh_configs(n, 200 + seed)
        label = (f"{n} configurations, min_budget = {min_budget}, eta = {eta}"
                 + (" (nothing to compare)" if n == 1 else ""))
        out.append(Case(label, (configs, LearningCurves(configs, 300 + seed), min_budget, eta)))
    return out


def _sh_generic(configs, objective, min_budget, eta, *, keep_half=False, fixed_budget=False,
                maximise=False, all_again=False):
    alive = list(range(len(configs)))
    budget = min_budget
    while len(alive) > 1:
        pool = list(range(len(configs))) if all_again else alive
        losses = {i: objective(configs[i], budget) for i in pool}
        ranked = sorted(pool, key=lambda i: -losses[i] if maximise else losses[i])
        keep = max(1, len(alive) // (2 if keep_half else eta))
        alive = sorted(ranked[:keep])
        if not fixed_budget:
            budget = budget * eta
    return configs[alive[0]]


def _sh_ref(configs, objective, min_budget, eta):
    alive = list(range(len(configs)))
    budget = min_budget
    while len(alive) > 1:
        losses = [objective(configs[i], budget) for i in alive]
        order = sorted(range(len(alive)), key=lambda k: (losses[k], k))
        alive = sorted(alive[k] for k in order[:max(1, len(alive) // eta)])
        budget *= eta
    return configs[alive[0]]


successive_halving = Question(
    id="successive_halving",
    chapter=CHAPTER,
    function="successive_halving",
    points=3,
    title="Successive halving",
    cases=_sh_cases,
    reference=_sh_ref,
    call=successive_halving_call,
    rtol=0.0,
    atol=0.0,
    mistakes=(
        Mistake("the top half kept instead of the top 1/eta", lambda *a: _sh_generic(*a, keep_half=True),
                "each round keeps the best ⌊n/η⌋ survivors (at least one): with η = 3, one third."),
        Mistake("the budget not multiplied", lambda *a: _sh_generic(*a, fixed_budget=True),
                "after each round the budget grows by the factor η: min_budget, η·min_budget, "
                "η²·min_budget, ... The survivors earn a longer run."),
        Mistake("the worst configurations kept", lambda *a: _sh_generic(*a, maximise=True),
                "the objective returns a loss: keep the configurations with the SMALLEST values."),
        Mistake("eliminated configurations evaluated again", lambda *a: _sh_generic(*a, all_again=True),
                "only the survivors of the previous round are evaluated (and compared); a configuration "
                "that was eliminated is never run again. That is where the savings come from."),
    ),
    forbidden=NOT_THE_LIBRARY + ("optuna", "sklearn"),
)


# ---------------------------------------------------------------------------
# 5. Random search over a log-uniform learning rate


def _rs_cases(device):
    return [
        Case("20 trials in [1e-5, 1], seed 0", (LRValley(-2.3, 400), 1e-5, 1.0, 20, _gen(0))),
        Case("10 trials in [1e-4, 1e-1], seed 1", (LRValley(-3.2, 401), 1e-4, 1e-1, 10, _gen(1))),
        Case("50 trials in [1e-6, 10], seed 2", (LRValley(-1.0, 402), 1e-6, 10.0, 50, _gen(2))),
        Case("one trial in [1e-3, 1e-2], seed 3", (LRValley(-2.5, 403), 1e-3, 1e-2, 1, _gen(3))),
        Case("8 trials in [0.01, 0.5], seed 4", (LRValley(-0.9, 404), 0.01, 0.5, 8, _gen(4))),
    ]


def _rs_generic(objective, low, high, n_trials, generator, *, linear=False, maximise=False, mixed_bases=False,
                single=False):
    if single:
        u = torch.rand(n_trials, generator=generator).to(torch.float64)
    else:
        u = torch.rand(n_trials, generator=generator, dtype=torch.float64)
    if linear:
        lrs = low + u * (high - low)
    elif mixed_bases:
        lrs = torch.exp(math.log10(low) + u * (math.log10(high) - math.log10(low)))
    else:
        lrs = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    losses = [objective(float(lr)) for lr in lrs]
    pick = max if maximise else min
    k = pick(range(n_trials), key=lambda j: losses[j])
    return float(lrs[k])


def _rs_ref(objective, low, high, n_trials, generator):
    u = torch.rand(n_trials, generator=generator, dtype=torch.float64)
    lrs = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    losses = [objective(float(lr)) for lr in lrs]
    return float(lrs[min(range(n_trials), key=lambda j: (losses[j], j))])


random_search = Question(
    id="random_search",
    chapter=CHAPTER,
    function="random_search",
    points=2,
    title="Random search over a log-uniform learning rate",
    cases=_rs_cases,
    reference=_rs_ref,
    call=random_search_call,
    rtol=1e-9,
    atol=0.0,
    mistakes=(
        Mistake("the learning rate drawn uniformly", lambda *a: _rs_generic(*a, linear=True),
                "a uniform draw in [low, high] spends almost every trial in the top decade (in "
                "[1e-5, 1], 90 % of the draws are above 0.1). Draw the LOGARITHM uniformly: "
                "lr = exp(log low + u · (log high − log low))."),
        Mistake("the worst learning rate returned", lambda *a: _rs_generic(*a, maximise=True),
                "the objective returns a loss: return the learning rate with the smallest loss."),
        Mistake("mixed logarithm bases", lambda *a: _rs_generic(*a, mixed_bases=True),
                "a log10 exponent must be undone with 10 ** (...), a natural log with exp(...); "
                "mixing them draws from the wrong interval."),
        Mistake("the uniform numbers drawn in float32", lambda *a: _rs_generic(*a, single=True),
                "torch.rand draws different numbers in float32 than in float64 (from different "
                "random bits), so the trials are not the ones asked for: "
                "torch.rand(n_trials, generator=generator, dtype=torch.float64)."),
    ),
    forbidden=NOT_THE_LIBRARY + ("optuna", "sklearn", "scipy.stats"),
)


QUESTIONS = [clip_grad_norm, he_init, numerical_gradient, successive_halving, random_search]
