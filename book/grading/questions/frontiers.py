r"""Questions for chapter 12, beyond Adam: Muon's Newton–Schulz iteration, one Lion step, Adafactor's
factored second moment, and one step of SAM.

References, none of them the code under test (each is written out here from its formula, in float64;
tests/test_grading_frontiers.py checks them against the maintained implementations):

- ``newton_schulz``: K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024),
  and ``torch.optim.Muon``'s ``_zeropower_via_newtonschulz``: divide by the Frobenius norm (floored at
  ``eps = 1e-7``), work on the transpose of a tall matrix, and repeat
  :math:`X \leftarrow aX + (bA + cA^2)X` with :math:`A = XX^\top` and :math:`(a, b, c) = (3.4445,
  -4.7750, 2.0315)`. The answer runs in the input's dtype (torch runs it in bfloat16; the exercise
  asks for the exact iteration so that it can be checked to float32's precision).
- ``lion_step``: X. Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
  Algorithm 2 with decoupled weight decay, in the convention of the ``lion-pytorch`` package:
  :math:`\theta \leftarrow \theta(1 - \eta\lambda)`, then :math:`\theta \leftarrow \theta - \eta\,
  \operatorname{sign}(\beta_1 m + (1-\beta_1) g)` and :math:`m \leftarrow \beta_2 m + (1-\beta_2) g`.
- ``adafactor_second_moment``: N. Shazeer and M. Stern, "Adafactor: Adaptive Learning Rates with
  Sublinear Memory Cost", ICML 2018, Algorithm 4's factored estimate, with running *means* over rows and
  columns as ``torch.optim.Adafactor`` keeps them (the paper keeps sums; the estimate is the same):
  :math:`R \leftarrow \hat\beta R + (1-\hat\beta)\,\mathrm{mean}_j G_{ij}^2`, :math:`C \leftarrow
  \hat\beta C + (1-\hat\beta)\,\mathrm{mean}_i G_{ij}^2`, :math:`\hat V = R C / \mathrm{mean}(R)`.
  (torch floors the denominator at its :math:`\epsilon_1`; the cases here keep it far above.)
- ``sam_step``: P. Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
  Generalization", ICLR 2021, Algorithm 1 with plain gradient descent as the base step and the norm of
  all parameters' gradients together: :math:`\epsilon = \rho g / \|g\|`, :math:`\theta \leftarrow
  \theta - \eta \nabla L(\theta + \epsilon)`. The reference differentiates with ``torch.autograd`` in
  float64; answers are expected to use autograd too.
"""

from __future__ import annotations

import torch

from book.grading.core import Case, Mistake, Question

CHAPTER = "12_frontiers"
# The chapter's own implementations, and the packages and grader that hold them.
NOT_THE_LIBRARY = ("book.optim", "book.sharpness", "book.compare", "book.grading", "torch.optim", "lion_pytorch",
                   "schedulefree", "torch_optimizer")
MUON = (3.4445, -4.7750, 2.0315)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(g, shape, dtype=torch.float64, device="cpu", scale=1.0):
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)


# ---------------------------------------------------------------------------
# 1. Newton–Schulz


def _ns_cases(device):
    g = _gen(1200)
    low_rank = _randn(g, (12, 3), device=device) @ _randn(g, (3, 10), device=device)  # rank 3
    return [
        Case("a square 8 x 8 matrix, 5 steps, float64", (_randn(g, (8, 8), device=device), 5)),
        Case("a wide 6 x 20 matrix, 5 steps, float32", (_randn(g, (6, 20), torch.float32, device), 5)),
        Case("a tall 30 x 7 matrix, 5 steps, float64", (_randn(g, (30, 7), device=device), 5)),
        Case("a rank-3 12 x 10 matrix, 5 steps, float64", (low_rank, 5)),
        Case("a 16 x 16 matrix of large entries (x 1000), 3 steps, float32",
             (_randn(g, (16, 16), torch.float32, device, scale=1000.0), 3)),
        Case("a tall 9 x 4 matrix, 1 step, float64", (_randn(g, (9, 4), device=device), 1)),
    ]


def _ns_generic(G, steps=5, coefficients=MUON, normalise="frobenius", transpose_back=True):
    a, b, c = coefficients
    X = G.to(torch.float64)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    if normalise == "frobenius":
        X = X / X.norm().clamp(min=1e-7)
    elif normalise == "squared":
        X = X / X.norm() ** 2
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    if tall and transpose_back:
        X = X.T
    return X.to(G.dtype)


def _ns_ref(G, steps=5):
    return _ns_generic(G, steps)


newton_schulz = Question(
    id="newton_schulz",
    chapter=CHAPTER,
    function="newton_schulz",
    points=3,
    title="Muon's Newton–Schulz orthogonalisation",
    cases=_ns_cases,
    reference=_ns_ref,
    rtol=1e-4,
    atol=1e-5,
    mistakes=(
        Mistake("no normalisation", lambda G, steps=5: _ns_generic(G, steps, normalise="none"),
                "divide G by its Frobenius norm first, X = G / max(‖G‖_F, 1e-7): the polynomial maps singular "
                "values in [0, 1] into a band near 1, and only there; larger ones blow up."),
        Mistake("divided by the squared norm", lambda G, steps=5: _ns_generic(G, steps, normalise="squared"),
                "the norm of a matrix is the square root of the sum of its squared entries (G.norm()); dividing "
                "by ‖G‖² puts the singular values far below 1, where five steps cannot lift them."),
        Mistake("the classic cubic coefficients", lambda G, steps=5: _ns_generic(G, steps, (1.5, -0.5, 0.0)),
                "Muon's quintic uses (a, b, c) = (3.4445, -4.7750, 2.0315); (1.5, -0.5, 0) is the classic cubic "
                "iteration, which converges to exactly 1 but far more slowly from small singular values."),
        Mistake("a tall matrix returned transposed",
                lambda G, steps=5: _ns_generic(G, steps, transpose_back=False),
                "for a tall G (more rows than columns) the iteration runs on Gᵀ, so that A = XXᵀ is the small "
                "Gram matrix; transpose the result back, so that it has G's shape."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 2. One Lion step


def _lion_cases(device):
    g = _gen(1210)

    def case(label, shape, lr, betas, wd, dtype=torch.float64, zero_grad_entries=False):
        p = _randn(g, shape, dtype, device)
        grad = _randn(g, shape, dtype, device)
        if zero_grad_entries:
            grad.view(-1)[::3] = 0.0
        m = _randn(g, shape, dtype, device, scale=0.5)
        return Case(label, (p, grad, m, lr, betas, wd))

    return [
        case("a (5, 4) weight, the default betas, no weight decay", (5, 4), 1e-3, (0.9, 0.99), 0.0),
        case("a vector of 7, weight decay 0.1, float32", (7,), 3e-4, (0.9, 0.99), 0.1, torch.float32),
        case("a (3, 3, 2) tensor, betas (0.95, 0.98), weight decay 1.0", (3, 3, 2), 1e-2, (0.95, 0.98), 1.0),
        case("a (6,) vector with some zero gradients, betas (0.5, 0.9)", (6,), 0.1, (0.5, 0.9), 0.01,
             zero_grad_entries=True),
        case("a (8, 2) weight, lr 0.5, weight decay 0.5, float32", (8, 2), 0.5, (0.9, 0.99), 0.5, torch.float32),
    ]


def _lion_generic(param, grad, exp_avg, lr, betas, weight_decay, *, beta_for_sign=0, update_first=False,
                  coupled=False, decay_without_lr=False):
    b1, b2 = betas
    p, g, m = (t.to(torch.float64) for t in (param, grad, exp_avg))
    if coupled:
        g = g + weight_decay * p
    else:
        p = p * (1 - (weight_decay if decay_without_lr else lr * weight_decay))
    new_m = b2 * m + (1 - b2) * g
    beta = (b1, b2)[beta_for_sign]
    c = beta * (new_m if update_first else m) + (1 - beta) * g
    p = p - lr * torch.sign(c)
    return p.to(param.dtype), new_m.to(exp_avg.dtype)


def _lion_ref(param, grad, exp_avg, lr, betas, weight_decay):
    return _lion_generic(param, grad, exp_avg, lr, betas, weight_decay)


def _untouched(tensors, before, names) -> str:
    for t, t0, name in zip(tensors, before, names):
        if not isinstance(t, torch.Tensor) or t.shape != t0.shape or not torch.equal(t, t0):
            return f"{name} was changed"
    return "arguments left as given"


def _lion_call(fn, param, grad, exp_avg, lr, betas, weight_decay):
    before = [t.clone() for t in (param, grad, exp_avg)]
    out = fn(param, grad, exp_avg, lr, betas, weight_decay)
    return out, _untouched((param, grad, exp_avg), before, ("param", "grad", "exp_avg"))


lion_step = Question(
    id="lion_step",
    chapter=CHAPTER,
    function="lion_step",
    points=2,
    title="One step of Lion",
    cases=_lion_cases,
    reference=_lion_ref,
    call=_lion_call,
    rtol=1e-6,
    atol=1e-7,
    mistakes=(
        Mistake("β₂ in the update's interpolation",
                lambda *a: _lion_generic(*a, beta_for_sign=1),
                "the direction is sign(β₁ m + (1 − β₁) g), with β₁ = betas[0]; β₂ = betas[1] is only for "
                "updating the buffer, m ← β₂ m + (1 − β₂) g."),
        Mistake("the buffer updated before the sign", lambda *a: _lion_generic(*a, update_first=True),
                "take the sign of β₁ m + (1 − β₁) g with the OLD m, then update m ← β₂ m + (1 − β₂) g; "
                "that order is what lets the step react faster (β₁) than the memory (β₂)."),
        Mistake("weight decay added to the gradient", lambda *a: _lion_generic(*a, coupled=True),
                "Lion's weight decay is decoupled, as in AdamW: θ ← θ (1 − lr λ) before the signed step. "
                "Added to the gradient it would disappear inside the sign."),
        Mistake("weight decay without the learning rate", lambda *a: _lion_generic(*a, decay_without_lr=True),
                "the decay factor is (1 − lr · weight_decay), not (1 − weight_decay)."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. Adafactor's factored second moment


def _ada_cases(device):
    g = _gen(1220)

    def case(label, n, m, beta2, fresh=False, dtype=torch.float64, scale=1.0):
        grad = _randn(g, (n, m), dtype, device, scale)
        if fresh:
            row = torch.zeros(n, 1, dtype=dtype, device=device)
            col = torch.zeros(1, m, dtype=dtype, device=device)
        else:
            row = _randn(g, (n, 1), dtype, device).square().add(0.1)
            col = _randn(g, (1, m), dtype, device).square().add(0.1)
        return Case(label, (grad, row, col, beta2))

    return [
        case("a 6 x 4 gradient, fresh state, beta2 0 (the first step)", 6, 4, 0.0, fresh=True),
        case("a 5 x 9 gradient, running averages, beta2 0.9", 5, 9, 0.9),
        case("a 12 x 3 gradient, beta2 0.999, float32", 12, 3, 0.999, dtype=torch.float32),
        case("a 1 x 7 gradient (a single row), beta2 0.5", 1, 7, 0.5),
        case("an 8 x 8 gradient of small entries (x 0.01), beta2 0.8", 8, 8, 0.8, scale=0.01),
    ]


def _ada_generic(grad, row_var, col_var, beta2, *, normaliser="mean", swap=False, full=False, sums=False):
    G2 = grad.to(torch.float64).square()
    R, C = row_var.to(torch.float64), col_var.to(torch.float64)
    row_new = G2.sum(1, keepdim=True) if sums else G2.mean(1, keepdim=True)
    col_new = G2.sum(0, keepdim=True) if sums else G2.mean(0, keepdim=True)
    keep = 1 - beta2 if swap else beta2
    R = keep * R + (1 - keep) * row_new
    C = keep * C + (1 - keep) * col_new
    if full:
        V = G2
    elif normaliser == "mean":
        V = R @ C / R.mean()
    elif normaliser == "sum":
        V = R @ C / R.sum()
    else:
        V = R @ C
    dt = grad.dtype
    return R.to(dt), C.to(dt), V.to(dt)


def _ada_ref(grad, row_var, col_var, beta2):
    return _ada_generic(grad, row_var, col_var, beta2)


def _ada_call(fn, grad, row_var, col_var, beta2):
    before = [t.clone() for t in (grad, row_var, col_var)]
    out = fn(grad, row_var, col_var, beta2)
    return out, _untouched((grad, row_var, col_var), before, ("grad", "row_var", "col_var"))


adafactor_second_moment = Question(
    id="adafactor_second_moment",
    chapter=CHAPTER,
    function="adafactor_second_moment",
    points=3,
    title="Adafactor's factored second moment",
    cases=_ada_cases,
    reference=_ada_ref,
    call=_ada_call,
    rtol=1e-5,
    atol=1e-9,
    mistakes=(
        Mistake("divided by the sum of R", lambda *a: _ada_generic(*a, normaliser="sum"),
                "R and C are running means (over the columns and over the rows of G²), so the rank-one "
                "estimate is R Cᵀ divided by the mean of R, not its sum: with sums for R and C the "
                "denominator would be the sum, with means it is the mean."),
        Mistake("not normalised", lambda *a: _ada_generic(*a, normaliser="none"),
                "the outer product R C counts the overall scale of G² twice; divide it by the mean of R "
                "(the mean of all of G²'s running average) once."),
        Mistake("the full G² instead of the factored estimate", lambda *a: _ada_generic(*a, full=True),
                "the point of Adafactor is not to keep an n x m second moment: V̂ must be rebuilt from the "
                "updated R (n x 1) and C (1 x m) alone."),
        Mistake("β₂ and 1 − β₂ swapped", lambda *a: _ada_generic(*a, swap=True),
                "the running averages keep β₂ of the old value and add 1 − β₂ of the new one: "
                "R ← β₂ R + (1 − β₂) mean(G², columns)."),
        Mistake("sums over rows and columns", lambda *a: _ada_generic(*a, sums=True),
                "keep means, as PyTorch's Adafactor does: R is the mean of G² over each row's m entries "
                "(G.square().mean(dim=1, keepdim=True)), C over each column's n entries."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 4. One SAM step


class Loss:
    """A loss of a list of parameter tensors (a callable the cases pass to the answer)."""

    def __init__(self, kind: str, data: tuple):
        self.kind, self.data = kind, data

    def __call__(self, params):
        if self.kind == "quadratic":
            A, b = self.data
            (w,) = params
            return 0.5 * w @ A.to(w.dtype) @ w - b.to(w.dtype) @ w
        if self.kind == "mlp":
            X, Y = (t.to(params[0].dtype) for t in self.data)
            W1, b1, W2, b2 = params
            return ((torch.tanh(X @ W1.T + b1) @ W2.T + b2 - Y) ** 2).sum(1).mean()
        if self.kind == "logistic":
            X, y = self.data
            w, bias = params
            z = X.to(w.dtype) @ w + bias
            return torch.nn.functional.softplus(-y.to(w.dtype) * z).mean()
        raise ValueError(self.kind)

    def __repr__(self) -> str:
        return f"Loss({self.kind!r})"


def _sam_cases(device):
    g = _gen(1230)
    M = _randn(g, (4, 4))
    A = (M @ M.T + torch.eye(4, dtype=torch.float64)).to(device)
    quad = Loss("quadratic", (A, _randn(g, (4,), device=device)))
    X, Y = _randn(g, (16, 3), device=device), _randn(g, (16, 2), device=device)
    mlp = Loss("mlp", (X, Y))
    mlp_params = [_randn(g, (5, 3), device=device, scale=0.5), _randn(g, (5,), device=device, scale=0.1),
                  _randn(g, (2, 5), device=device, scale=0.5), _randn(g, (2,), device=device, scale=0.1)]
    Xl = _randn(g, (20, 6), device=device)
    yl = torch.where(_randn(g, (20,)) > 0, 1.0, -1.0).to(torch.float64).to(device)
    logistic = Loss("logistic", (Xl, yl))
    return [
        Case("a quadratic in 4 variables, rho 0.05, lr 0.1", ([_randn(g, (4,), device=device)], quad, 0.1, 0.05)),
        Case("a tanh network with four parameter tensors, rho 0.1, lr 0.05", (mlp_params, mlp, 0.05, 0.1)),
        Case("logistic regression (a weight and a 0-d bias), rho 0.5, lr 1.0",
             ([_randn(g, (6,), device=device), torch.zeros((), dtype=torch.float64, device=device)],
              logistic, 1.0, 0.5)),
        Case("the tanh network in float32, rho 0.02, lr 0.2",
             ([p.to(torch.float32) for p in mlp_params], mlp, 0.2, 0.02)),
    ]


def _grads(loss_fn, params):
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    return torch.autograd.grad(loss_fn(leaves), leaves)


def _sam_generic(params, loss_fn, lr, rho, *, per_tensor=False, minus=False, from_perturbed=False,
                 plain_sgd=False, unnormalised=False):
    w = [p.detach().to(torch.float64) for p in params]
    g = _grads(loss_fn, w)
    if plain_sgd:
        g_sam = g
        eps = [torch.zeros_like(t) for t in w]
    else:
        if unnormalised:
            eps = [rho * t for t in g]
        elif per_tensor:
            eps = [rho * t / t.norm() for t in g]
        else:
            norm = torch.sqrt(sum(t.square().sum() for t in g))
            eps = [rho * t / norm for t in g]
        sign = -1.0 if minus else 1.0
        g_sam = _grads(loss_fn, [t + sign * e for t, e in zip(w, eps)])
    start = [t + e for t, e in zip(w, eps)] if from_perturbed else w
    return [(t - lr * gs).to(p.dtype) for t, gs, p in zip(start, g_sam, params)]


def _sam_ref(params, loss_fn, lr, rho):
    return _sam_generic(params, loss_fn, lr, rho)


sam_step = Question(
    id="sam_step",
    chapter=CHAPTER,
    function="sam_step",
    points=3,
    title="One step of sharpness-aware minimization",
    cases=_sam_cases,
    reference=_sam_ref,
    rtol=1e-5,
    atol=1e-7,
    mistakes=(
        Mistake("normalised tensor by tensor", lambda *a: _sam_generic(*a, per_tensor=True),
                "‖g‖ is the norm of ALL the gradients together, as one long vector: "
                "sqrt(sum of every tensor's squared entries). A norm per tensor gives each tensor its own ball."),
        Mistake("the perturbation subtracted", lambda *a: _sam_generic(*a, minus=True),
                "SAM looks for the WORST nearby point, uphill: θ + ε with ε = ρ g / ‖g‖ (plus, not minus)."),
        Mistake("the step taken from the perturbed point", lambda *a: _sam_generic(*a, from_perturbed=True),
                "the perturbation is only where the second gradient is taken; the step starts from the "
                "original weights: θ ← θ − lr ∇L(θ + ε)."),
        Mistake("the gradient at θ (plain gradient descent)", lambda *a: _sam_generic(*a, plain_sgd=True),
                "SAM takes a second gradient at the perturbed weights θ + ε and steps with that one."),
        Mistake("ε = ρ g, not normalised", lambda *a: _sam_generic(*a, unnormalised=True),
                "divide by the gradient's norm: ε = ρ g / ‖g‖ has length ρ whatever the gradient's size."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


QUESTIONS = [newton_schulz, lion_step, adafactor_second_moment, sam_step]
