r"""Questions for chapter 12, beyond Adam: Muon's Newton–Schulz iteration, one Lion step,
Adafactor's factored second moment, and one step of sharpness-aware minimization.

References, none of them the code under test:

- ``newton_schulz``: K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein,
  "Muon: an optimizer for hidden layers in neural networks", blog post, 2024,
  https://kellerjordan.github.io/posts/muon/ (the quintic iteration with
  :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`, the coefficients of Jordan's ``muon.py`` and of
  ``torch.optim.Muon``, whose ``_zeropower_via_newtonschulz`` was read for the conventions:
  divide by :math:`\max(\|G\|_F, \epsilon)` with :math:`\epsilon = 10^{-7}`, transpose a tall
  matrix so that :math:`A = X X^\top` is the smaller Gram matrix). The reference iterates the
  formula in float64, written out term by term. The answer is asked for in float32 (torch and
  Jordan run it in bfloat16, which is fast on accelerators but agrees with float64 to only two or
  three digits); float32 against float64 differs by at most about 1e-5 on the check's matrices, so
  the tolerance is ``rtol=1e-4, atol=1e-4``. The check compares the matrix and also its singular
  values, which say in a clearer way what went wrong. A second reference, in the tests: the
  iteration is :math:`U\, p^{(k)}(S / \|G\|_F)\, V^\top` for :math:`G = U S V^\top`, with
  :math:`p(\sigma) = a\sigma + b\sigma^3 + c\sigma^5` iterated :math:`k` times on each singular
  value (``torch.linalg.svd`` in float64); the float64 iteration agrees with it to 1e-12.
- ``lion_step``: X. Chen, C. Liang, D. Huang, E. Real, K. Wang, Y. Liu, H. Pham, X. Dong, T. Luong,
  C.-J. Hsieh, Y. Lu, Q. V. Le, "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
  arXiv:2302.06675 (the Lion update of its pseudocode, with decoupled weight decay scaled by the
  learning rate, as in the ``lion-pytorch`` package that ``book.optim.Lion`` equals). Written out
  in float64. The sign makes the answer discontinuous where :math:`\beta_1 m + (1 - \beta_1) g`
  is near zero; the check's seeded inputs keep every such value at least 1e-4 away from zero, far
  more than float32's rounding, or exactly at zero, where the sign is 0 (a test of the references
  confirms it).
- ``adafactor_second_moment``: N. Shazeer, M. Stern, "Adafactor: Adaptive Learning Rates with
  Sublinear Memory Cost", ICML 2018, arXiv:1804.04235 (the factored second-moment estimate of
  its final algorithm for weight matrices), in ``torch.optim.Adafactor``'s convention, which
  departs from the paper in two ways (see ``book.optim.Adafactor``'s note): :math:`R` and
  :math:`C` are running *means* of :math:`G^2` over each row and each column, not sums, so the
  estimate divides by the mean of :math:`R`, not its sum (the same :math:`\hat V`); and
  :math:`\epsilon_1` floors that mean instead of being added to :math:`G^2`. Written out in
  float64 with explicit sums.
- ``sam_step``: P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware Minimization for
  Efficiently Improving Generalization", ICLR 2021, arXiv:2010.01412 (Algorithm 1 with plain SGD
  as the base step). The reference takes the two gradients with autograd in float64 and forms
  :math:`\epsilon = \rho g / \|g\|` with the norm of all the gradients as one vector. The
  authors' code adds ``1e-12`` to the norm; either way passes.

All answers work on tensors on any device and return new tensors, leaving their arguments as
given; for ``lion_step``, ``adafactor_second_moment`` and ``sam_step`` the check looks at the
arguments afterwards (``Question.call``), and for ``newton_schulz`` it adds the singular values
of the answer.
"""

from __future__ import annotations

import torch

from book.grading.core import Case, Mistake, Question
from book.grading.harness import Loss, adafactor_call, lion_call, newton_schulz_call, sam_call

CHAPTER = "12_frontiers"
# The chapter's own helpers, the grader (whose references an answer could import), and the
# packages that implement these optimizers.
NOT_THE_LIBRARY = ("book.optim", "book.sharpness", "book.grading", "torch.optim", "lion_pytorch", "schedulefree",
                   "torch_optimizer", "timm", "transformers", "optax")
# Factorisations that would hand the answer its singular vectors (matrix products, powers and
# norms stay allowed).
DECOMPOSITIONS = ("torch.linalg.svd", "torch.linalg.svdvals", "torch.svd", "torch.svd_lowrank", "torch.pca_lowrank",
                  "torch.linalg.eigh", "torch.linalg.eigvalsh", "torch.linalg.eig", "torch.linalg.eigvals",
                  "numpy.linalg", "scipy.linalg")

MUON_ABC = (3.4445, -4.7750, 2.0315)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape, scale=1.0, dtype=torch.float32, device="cpu"):
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)


# ---------------------------------------------------------------------------
# 1. Muon's quintic Newton–Schulz iteration


def _ns_cases(device):
    g = _gen(1200)
    low_rank = _randn(g, 12, 2, dtype=torch.float64) @ _randn(g, 2, 7, dtype=torch.float64)
    graded = torch.diag(torch.tensor([3.0, 1.0, 0.3, 0.05, 0.01], dtype=torch.float64))
    q1, _ = torch.linalg.qr(_randn(g, 5, 5, dtype=torch.float64))
    q2, _ = torch.linalg.qr(_randn(g, 8, 5, dtype=torch.float64))
    spread = q1 @ graded @ q2.T  # singular values 3, 1, 0.3, 0.05, 0.01, then three zeros
    f32 = lambda t: t.to(torch.float32).to(device)  # noqa: E731
    return [
        Case("a wide (16, 32) gradient, 5 steps", (_randn(g, 16, 32, device=device),)),
        Case("a tall (48, 12) gradient, 5 steps", (_randn(g, 48, 12, device=device),)),
        Case("a square (20, 20) gradient of large norm (entries ~ 1e3), 5 steps",
             (_randn(g, 20, 20, scale=1e3, device=device),)),
        Case("a tall (30, 8) gradient of tiny norm (entries ~ 1e-4), 3 steps",
             (_randn(g, 30, 8, scale=1e-4, device=device),), {"steps": 3}),
        Case("a rank-2 (12, 7) gradient, 5 steps", (f32(low_rank),)),
        Case("a (5, 8) gradient with singular values from 3 to 0.01, 5 steps", (f32(spread),)),
        Case("a square (6, 6) gradient, 1 step", (_randn(g, 6, 6, device=device),), {"steps": 1}),
        Case("a zero (4, 9) gradient (a layer that got none), 5 steps",
             (torch.zeros(4, 9, dtype=torch.float32, device=device),)),
    ]


def _mm(P, Q):
    """P @ Q as sums of products (no BLAS call: small, exact to float64's rounding, and steady in time)."""
    return (P[:, :, None] * Q[None, :, :]).sum(dim=1)


def _ns_ref(G, steps=5):
    a, b, c = MUON_ABC
    G64 = G.detach().to(torch.float64).cpu()
    tall = G64.shape[0] > G64.shape[1]
    X = G64.T if tall else G64
    X = X / max(float(torch.sqrt((X * X).sum())), 1e-7)  # X_0 = G / max(||G||_F, eps)
    for _ in range(steps):
        A = _mm(X, X.T)
        AX = _mm(A, X)
        X = a * X + b * AX + c * _mm(A, AX)  # a X + b (X Xᵀ) X + c (X Xᵀ)² X
    return X.T if tall else X


def _ns_generic(G, steps=5, *, normalise=True, back=True, quintic="A2", swap_bc=False, dtype=torch.float32,
                every_step=False, fixed_steps=None):
    a, b, c = MUON_ABC
    if swap_bc:
        b, c = c, b
    X = G.to(dtype)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    if normalise:
        X = X / X.norm().clamp(min=1e-7)
    for _ in range(steps if fixed_steps is None else fixed_steps):
        if every_step:
            X = X / X.norm().clamp(min=1e-7)
        A = X @ X.T
        B = b * A + c * (A @ A if quintic == "A2" else A)
        X = a * X + B @ X
    if tall and back:
        X = X.T
    return X.to(G.dtype)


def _ns_mistake(**kw):
    def fn(G, steps=5):
        return _ns_generic(G, steps, **kw)
    return fn


newton_schulz = Question(
    id="newton_schulz",
    chapter=CHAPTER,
    function="newton_schulz",
    points=3,
    title="Muon's Newton–Schulz orthogonalisation",
    cases=_ns_cases,
    reference=_ns_ref,
    call=newton_schulz_call,
    rtol=1e-4,
    atol=1e-4,
    mistakes=(
        Mistake("no normalisation", _ns_mistake(normalise=False),
                "the polynomial only pushes singular values in [0, 1] towards 1; larger ones blow up "
                "(σ ↦ 3.4σ − 4.8σ³ + 2σ⁵ grows like σ⁵). Start from X = G / ‖G‖_F (the Frobenius norm "
                "bounds the largest singular value), with the norm floored at 1e-7 for a zero gradient."),
        Mistake("A instead of A² in the quintic term", _ns_mistake(quintic="A"),
                "the update is X ← aX + bAX + cA²X with A = XXᵀ: the c term is (XXᵀ)²X, of degree five in X, "
                "so B = bA + c(A @ A), not bA + cA."),
        Mistake("b and c swapped", _ns_mistake(swap_bc=True),
                "(a, b, c) = (3.4445, −4.7750, 2.0315) multiply X, (XXᵀ)X and (XXᵀ)²X in that order: "
                "b = −4.7750 goes with the cubic term A X, c = 2.0315 with the quintic term A²X."),
        Mistake("a tall matrix not transposed back", _ns_mistake(back=False),
                "iterating on Gᵀ for a tall G is right (A = XXᵀ is then the smaller Gram matrix), "
                "but the answer must have G's shape: transpose the result back at the end."),
        Mistake("normalised at every step", _ns_mistake(every_step=True),
                "divide by the Frobenius norm once, before the loop. The iteration needs the singular values in "
                "[0, 1] only at the start; afterwards most of them sit near 1, ‖X‖_F is about √rank, and "
                "dividing by it again pushes them back towards 0."),
        Mistake("the steps argument ignored", _ns_mistake(fixed_steps=5),
                "loop `for _ in range(steps)`: the check asks for 1, 3 and 5 steps."),
        Mistake("computed in bfloat16", _ns_mistake(dtype=torch.bfloat16),
                "torch.optim.Muon runs the iteration in bfloat16 for speed on accelerators, which keeps "
                "only two to three significant digits. This question asks for float32: work in G.float()."),
    ),
    forbidden=NOT_THE_LIBRARY + DECOMPOSITIONS,
)


# ---------------------------------------------------------------------------
# 2. One Lion step


def _lion_cases(device):
    g = _gen(1201)

    def state(shape, dtype, m_scale=0.1, p_scale=1.0):
        return (_randn(g, *shape, scale=p_scale, dtype=dtype, device=device),
                _randn(g, *shape, dtype=dtype, device=device),
                _randn(g, *shape, scale=m_scale, dtype=dtype, device=device))

    f32, f64 = torch.float32, torch.float64
    p, gr, m = state((5,), f32)
    fresh = (p, gr, torch.zeros_like(m))
    p, gr, m = state((3, 4), f64)
    gr[0, :2] = 0.0  # coordinates with no gradient and no momentum: sign 0, no step
    m[0, :2] = 0.0
    zeros = (p, gr, m)
    return [
        Case("a (16, 8) weight, lr 1e-4, betas (0.9, 0.99), weight_decay 0.1, float32",
             (*state((16, 8), f32), 1e-4, (0.9, 0.99), 0.1)),
        Case("a first step from exp_avg = 0, lr 0.01, no weight decay, float32",
             (*fresh, 0.01, (0.9, 0.99), 0.0)),
        Case("a momentum larger than the gradient, lr 3e-4, betas (0.95, 0.98), weight_decay 1.0, float64",
             (*state((7, 3), f64, m_scale=5.0), 3e-4, (0.95, 0.98), 1.0)),
        Case("a conv weight (4, 3, 3, 3), lr 0.05, betas (0.9, 0.99), weight_decay 0.5, float32",
             (*state((4, 3, 3, 3), f32, m_scale=1.0), 0.05, (0.9, 0.99), 0.5)),
        Case("coordinates with zero gradient and zero momentum, lr 0.1, weight_decay 0.2, float64",
             (*zeros, 0.1, (0.9, 0.99), 0.2)),
        Case("a 0-d scale parameter, lr 0.02, betas (0.5, 0.9), weight_decay 0.3, float64",
             (*state((), f64), 0.02, (0.5, 0.9), 0.3)),
    ]


def _lion_ref(param, grad, exp_avg, lr, betas, weight_decay):
    b1, b2 = betas
    p, g, m = (t.detach().to(torch.float64) for t in (param, grad, exp_avg))
    c = b1 * m + (1 - b1) * g  # the interpolation with β1
    u = (c > 0).to(torch.float64) - (c < 0).to(torch.float64)  # sign(c), 0 where c = 0
    new_p = p * (1 - lr * weight_decay) - lr * u  # decoupled decay, scaled by lr
    new_m = b2 * m + (1 - b2) * g  # the memory, with β2
    return new_p, new_m


def _lion_generic(param, grad, exp_avg, lr, betas, weight_decay, *, interp_beta=0, m_first=False, coupled=False,
                  decay_no_lr=False, no_sign=False, in_place=False, keep_m=False):
    b1, b2 = betas
    if coupled:
        grad = grad + weight_decay * param
    m = exp_avg
    if m_first:
        m = b2 * m + (1 - b2) * grad
    beta = betas[interp_beta]
    c = beta * m + (1 - beta) * grad
    u = c if no_sign else torch.sign(c)
    decay = 0.0 if coupled else (weight_decay if decay_no_lr else lr * weight_decay)
    new_p = param * (1 - decay) - lr * u
    new_m = m if m_first else b2 * exp_avg + (1 - b2) * grad
    if keep_m:
        new_m = exp_avg.clone()
    if in_place:
        param.copy_(new_p)
        exp_avg.copy_(new_m)
        return param, exp_avg
    return new_p, new_m


def _lion_mistake(**kw):
    def fn(param, grad, exp_avg, lr, betas, weight_decay):
        return _lion_generic(param, grad, exp_avg, lr, betas, weight_decay, **kw)
    return fn


lion_step = Question(
    id="lion_step",
    chapter=CHAPTER,
    function="lion_step",
    points=2,
    title="One Lion step",
    cases=_lion_cases,
    reference=_lion_ref,
    call=lion_call,
    rtol=1e-5,
    atol=1e-7,
    mistakes=(
        Mistake("β2 in the update's interpolation", _lion_mistake(interp_beta=1),
                "Lion uses two different averages: the update is sign(β1·m + (1 − β1)·g), with β1; only "
                "the stored momentum m ← β2·m + (1 − β2)·g uses β2."),
        Mistake("momentum updated before the sign", _lion_mistake(m_first=True),
                "the sign is taken of the interpolation with the OLD m; m is updated with β2 only after the "
                "update has been computed (unlike Adam, whose step uses the new average)."),
        Mistake("coupled weight decay", _lion_mistake(coupled=True),
                "adding λ·p to the gradient puts the decay inside the sign, where its size is lost. Lion's "
                "decay is decoupled, as in AdamW: p ← p·(1 − lr·λ), then p ← p − lr·sign(...)."),
        Mistake("weight decay not scaled by lr", _lion_mistake(decay_no_lr=True),
                "the decay factor is 1 − lr·λ, not 1 − λ: with λ = 0.1 the weights would shrink by 10% per step."),
        Mistake("momentum not updated", _lion_mistake(keep_m=True),
                "return the NEW momentum as well, m ← β2·m + (1 − β2)·g: the next step's sign depends on it."),
        Mistake("the sign left out", _lion_mistake(no_sign=True),
                "Lion's update is the SIGN of the interpolation: every coordinate moves by exactly lr "
                "(or not at all where the interpolation is 0), whatever the gradient's size."),
        Mistake("the arguments updated in place", _lion_mistake(in_place=True),
                "the values are right, but this question asks for new tensors: leave param and exp_avg as "
                "they were (write p * (1 - lr * wd) - lr * u, not param.mul_(...), and likewise for m)."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. Adafactor's factored second moment


def _ada_cases(device):
    g = _gen(1202)
    f32, f64 = torch.float32, torch.float64
    eps32, eps64 = torch.finfo(f32).eps, torch.finfo(f64).eps

    def running(n, m, dtype, steps, scale=1.0):
        """(grad, row_var, col_var) after `steps` earlier steps of torch's schedule β̂_t = 1 − t^-0.8."""
        R, C = torch.zeros(n, dtype=f64), torch.zeros(m, dtype=f64)
        for t in range(1, steps + 1):
            G = _randn(g, n, m, scale=scale, dtype=f64)
            w = t ** -0.8
            R = (1 - w) * R + w * (G * G).mean(dim=1)
            C = (1 - w) * C + w * (G * G).mean(dim=0)
        G = _randn(g, n, m, scale=scale, dtype=f64)
        return tuple(x.to(dtype).to(device) for x in (G, R, C))

    def beta(t):
        return 1 - t ** -0.8

    rank_one = (torch.tensor([1.0, 0.1, 3.0], dtype=f64)[:, None]
                * torch.tensor([2.0, -1.0, 0.5, 4.0], dtype=f64)[None, :])
    return [
        Case("the first step (β̂ = 0) of an (8, 5) weight, float32",
             (*running(8, 5, f32, 0), beta(1), eps32)),
        Case("step 10 of a (6, 12) weight, float32", (*running(6, 12, f32, 9), beta(10), eps32)),
        Case("step 3 of a (16, 4) weight with large gradients (~ 1e2), float64",
             (*running(16, 4, f64, 2, scale=1e2), beta(3), eps64)),
        Case("a fixed β̂ = 0.999 on a (3, 7) weight after 5 steps, float64",
             (*running(3, 7, f64, 5), 0.999, eps64)),
        Case("a first step with a rank-one g² (3, 4): the estimate is exact, float64",
             (rank_one.to(device), torch.zeros(3, dtype=f64, device=device),
              torch.zeros(4, dtype=f64, device=device), 0.0, eps64)),
        Case("a first step with a zero gradient (10, 3): the floor ε1, float32",
             (torch.zeros(10, 3, dtype=f32, device=device), torch.zeros(10, dtype=f32, device=device),
              torch.zeros(3, dtype=f32, device=device), 0.0, eps32)),
    ]


def _ada_ref(grad, row_var, col_var, beta2, eps1):
    G, R, C = (t.detach().to(torch.float64) for t in (grad, row_var, col_var))
    n, m = G.shape
    sq = G * G
    R = beta2 * R + (1 - beta2) * sq.sum(dim=1) / m  # running mean of g² over each row, (n,)
    C = beta2 * C + (1 - beta2) * sq.sum(dim=0) / n  # over each column, (m,)
    V = R[:, None] * C[None, :] / max(float(R.sum()) / n, eps1)  # R Cᵀ / max(mean(R), ε1)
    return R, C, V


def _ada_generic(grad, row_var, col_var, beta2, eps1, *, norm="mean", full=False, swapped_beta=False,
                 sums=False, no_floor=False):
    sq = grad * grad
    w = beta2 if swapped_beta else 1 - beta2
    row_new = sq.sum(dim=1) if sums else sq.mean(dim=1)
    col_new = sq.sum(dim=0) if sums else sq.mean(dim=0)
    R = (1 - w) * row_var + w * row_new
    C = (1 - w) * col_var + w * col_new
    denom = R.sum() if norm == "sum" else (R.mean() if norm == "mean" else torch.ones_like(R[0]))
    if not no_floor:
        denom = denom.clamp(min=eps1)
    V = sq.clone() if full else torch.outer(R, C) / denom
    return R, C, V


def _ada_mistake(**kw):
    def fn(grad, row_var, col_var, beta2, eps1):
        return _ada_generic(grad, row_var, col_var, beta2, eps1, **kw)
    return fn


adafactor_second_moment = Question(
    id="adafactor_second_moment",
    chapter=CHAPTER,
    function="adafactor_second_moment",
    points=3,
    title="Adafactor's factored second moment",
    cases=_ada_cases,
    reference=_ada_ref,
    call=adafactor_call,
    rtol=1e-5,
    atol=1e-10,
    mistakes=(
        Mistake("divided by the sum of R", _ada_mistake(norm="sum"),
                "with R and C stored as MEANS over rows and columns, the rank-one estimate is R Cᵀ / mean(R); "
                "the paper's R Cᵀ / sum(R) is for row and column SUMS. Dividing means by a sum makes V̂ n times "
                "too small."),
        Mistake("the full g², not the factored estimate", _ada_mistake(full=True),
                "V̂ is rebuilt from the two factors only, V̂ᵢⱼ = Rᵢ Cⱼ / mean(R): that is what saves memory "
                "(n + m numbers instead of n·m), and it averages over the steps; g² alone is one step's "
                "unfactored square."),
        Mistake("β̂₂ on the wrong side of the average", _ada_mistake(swapped_beta=True),
                "β̂₂ weighs the OLD average: R ← β̂₂ R + (1 − β̂₂) mean_j g²; β̂₂ close to 1 means a long memory."),
        Mistake("row and column sums (the paper's convention)", _ada_mistake(sums=True, norm="sum"),
                "this question (and torch.optim.Adafactor) keeps running MEANS of g² over each row and column, "
                "not the paper's sums: divide the sums by m (for R) and n (for C). V̂ is the same either way, "
                "but the stored state, and where the floor ε1 acts, differ."),
        Mistake("no floor on mean(R)", _ada_mistake(no_floor=True),
                "where the gradient has been zero so far, mean(R) = 0 and R Cᵀ / mean(R) is 0/0 = NaN; "
                "torch floors the divisor at ε1: max(mean(R), ε1)."),
        Mistake("R Cᵀ not divided by mean(R)", _ada_mistake(norm="none"),
                "the outer product R Cᵀ counts the overall scale of g² twice (once in R, once in C): "
                "Rᵢ Cⱼ / mean(R) is the estimate, exact when the averaged g² has rank one."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 4. One step of sharpness-aware minimization


def _mlp_loss(seed, d=4, h=6, n=20, dtype=torch.float64, device="cpu"):
    g = _gen(seed)
    X, Y = _randn(g, n, d, dtype=torch.float64), _randn(g, n, 1, dtype=torch.float64)
    params = [_randn(g, h, d, scale=d ** -0.5, dtype=torch.float64), _randn(g, h, scale=0.1, dtype=torch.float64),
              _randn(g, 1, h, scale=h ** -0.5, dtype=torch.float64), _randn(g, 1, scale=0.1, dtype=torch.float64)]

    return Loss("mlp", X=X, Y=Y), [p.to(dtype).to(device) for p in params]


def _sam_cases(device):
    g = _gen(1203)
    f32, f64 = torch.float32, torch.float64
    # an ill-conditioned quadratic in two tensors of very different gradient sizes
    a = torch.tensor([10.0, 1.0, 0.1], dtype=f64)
    bvec = torch.tensor([0.5, -1.0], dtype=f64)

    quad = Loss("quadratic", a=a, b=bvec)

    quad_params = [torch.tensor([1.0, -2.0, 3.0], dtype=f64, device=device),
                   torch.tensor([0.3, 0.7], dtype=f64, device=device)]

    # logistic regression: a weight matrix and a bias
    X = _randn(g, 30, 5, dtype=f64)
    y = (torch.rand(30, generator=g, dtype=f64) < 0.5).to(f64)

    logistic = Loss("logistic", X=X, y=y)

    logistic_params = [_randn(g, 1, 5, dtype=f32, device=device), torch.zeros(1, dtype=f32, device=device)]

    # a single tensor: the Rosenbrock function
    rosen = Loss("rosenbrock")

    mlp64, mlp64_params = _mlp_loss(1210, device=device)
    mlp32, mlp32_params = _mlp_loss(1211, d=3, h=5, dtype=f32, device=device)
    return [
        Case("a tanh network's mean squared error, four tensors, rho 0.05, lr 0.1, float64",
             (mlp64, mlp64_params, 0.05, 0.1)),
        Case("an ill-conditioned quadratic in two tensors, rho 0.5, lr 0.05, float64",
             (quad, quad_params, 0.5, 0.05)),
        Case("logistic regression, weight (1, 5) and bias, rho 0.1, lr 0.5, float32",
             (logistic, logistic_params, 0.1, 0.5)),
        Case("the Rosenbrock function at (-1, 1), one tensor, rho 0.05, lr 1e-3, float64",
             (rosen, [torch.tensor([-1.0, 1.0], dtype=f64, device=device)], 0.05, 1e-3)),
        Case("a tanh network, four tensors, rho 0.2, lr 0.01, float32", (mlp32, mlp32_params, 0.2, 0.01)),
    ]


def _grad64(loss_fn, ws):
    ws = [w.detach().clone().requires_grad_(True) for w in ws]
    return [t.detach() for t in torch.autograd.grad(loss_fn(ws), ws)]


def _sam_ref(loss_fn, params, rho, lr):
    w = [p.detach().to(torch.float64) for p in params]
    g = _grad64(loss_fn, w)  # ∇L(w)
    norm = torch.sqrt(sum((t * t).sum() for t in g))  # ‖g‖ over all tensors as one vector
    eps = [rho * t / norm for t in g]  # ε = ρ g / ‖g‖
    g_sam = _grad64(loss_fn, [wi + ei for wi, ei in zip(w, eps)])  # ∇L(w + ε)
    return [wi - lr * gi for wi, gi in zip(w, g_sam)]  # the SGD step, from w


def _grads(loss_fn, ws):
    ws = [w.detach().clone().requires_grad_(True) for w in ws]
    return list(torch.autograd.grad(loss_fn(ws), ws))


def _sam_generic(loss_fn, params, rho, lr, *, per_tensor=False, from_perturbed=False, grad_at_w=False, sign=1.0,
                 unnormalised=False, in_place=False):
    g = _grads(loss_fn, params)
    norm = torch.sqrt(sum((t * t).sum() for t in g))
    if unnormalised:
        eps = [rho * t for t in g]
    elif per_tensor:
        eps = [rho * t / t.norm() for t in g]
    else:
        eps = [rho * t / norm for t in g]
    perturbed = [p + sign * e for p, e in zip(params, eps)]
    g_sam = g if grad_at_w else _grads(loss_fn, perturbed)
    start = perturbed if from_perturbed else params
    new = [s.detach() - lr * gs for s, gs in zip(start, g_sam)]
    if in_place:
        with torch.no_grad():
            for p, n in zip(params, new):
                p.copy_(n)
        return params
    return new


def _sam_mistake(**kw):
    def fn(loss_fn, params, rho, lr):
        return _sam_generic(loss_fn, params, rho, lr, **kw)
    return fn


sam_step = Question(
    id="sam_step",
    chapter=CHAPTER,
    function="sam_step",
    points=3,
    title="One step of sharpness-aware minimization",
    cases=_sam_cases,
    reference=_sam_ref,
    call=sam_call,
    rtol=1e-5,
    atol=1e-7,
    mistakes=(
        Mistake("one norm per tensor", _sam_mistake(per_tensor=True),
                "‖g‖ is the norm of ALL the gradients as one vector, √(Σ over tensors of Σ g²), so that ε is a "
                "point on the sphere of radius ρ around w in the space of all parameters. A norm per tensor "
                "moves every tensor by ρ, which moves w by ρ·√(number of tensors)."),
        Mistake("stepped from w + ε", _sam_mistake(from_perturbed=True),
                "w + ε is only where the gradient is measured; the step starts from the ORIGINAL w: "
                "w_new = w − lr·∇L(w + ε)."),
        Mistake("the gradient at w (plain SGD)", _sam_mistake(grad_at_w=True),
                "the first gradient, at w, only says where to perturb; the step uses the SECOND gradient, "
                "taken at w + ε. Recompute the loss at the perturbed point and differentiate it there."),
        Mistake("ε with the wrong sign", _sam_mistake(sign=-1.0),
                "SAM perturbs UPHILL, w + ρ g/‖g‖: towards the worst loss in the neighbourhood, which is what "
                "makes it seek flat regions. w − ε is a step of gradient descent."),
        Mistake("ε not normalised", _sam_mistake(unnormalised=True),
                "ε = ρ·g/‖g‖ has length exactly ρ, whatever the gradient's size; ρ·g shrinks to nothing near a "
                "minimum and explodes on steep slopes."),
        Mistake("the parameters updated in place", _sam_mistake(in_place=True),
                "the values are right, but this question asks for new tensors: leave params as given "
                "(build w + ε and w − lr·g as new tensors from detached copies)."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


QUESTIONS = [newton_schulz, lion_step, adafactor_second_moment, sam_step]
