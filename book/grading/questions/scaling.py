r"""Questions for chapter 11, scaling out: the data-parallel average, gradient accumulation over
unequal micro-batches, the gradient noise scale, and the LARS trust ratio.

References, none of them the code under test:

- ``average_gradients``: ``torch.stack(...).mean(0)`` per parameter, the number every rank holds
  after ``all_reduce(SUM)`` and a division by the world size :math:`P`. The check also looks at
  the argument afterwards (``Question.call``): the per-worker gradients must be left as given.
- ``accumulated_gradient``: the weighted sum :math:`\sum_j (n_j / N)\, g_j` as one
  ``torch.einsum``. The micro-batch gradients are real ones, of the mean loss of a small network
  on each micro-batch (autograd), so the reference is the gradient of the mean loss over the
  union batch (checked against autograd when this module was written: within 2e-15 in float64).
- ``gradient_noise_scale``: McCandlish, Kaplan, Amodei et al., "An Empirical Model of
  Large-Batch Training", arXiv:1812.06162, 2018. The simple noise scale (section 2.2) is
  :math:`B_\text{simple} = \operatorname{tr}(\Sigma) / |G|^2`; appendix A.1 estimates both
  parts from the squared norms of two batch gradients, using
  :math:`\mathbb{E}\,|G_B|^2 = |G|^2 + \operatorname{tr}(\Sigma) / B`:

  .. math::

      |G|^2 \approx \frac{B_\text{big} |G_{B_\text{big}}|^2 - B_\text{small} |G_{B_\text{small}}|^2}
                           {B_\text{big} - B_\text{small}}, \qquad
      \operatorname{tr}(\Sigma) \approx \frac{|G_{B_\text{small}}|^2 - |G_{B_\text{big}}|^2}
                           {1/B_\text{small} - 1/B_\text{big}} .

  These are the unique solution of that expectation written at the two batch sizes, so the
  reference solves that 2 × 2 linear system with ``torch.linalg.solve`` (in float64) instead of
  evaluating the two fractions. The two formulas were re-derived from the expectation above and
  checked against appendix A.1 as an implementation that cites it writes them out (EleutherAI's
  gpt-neox, ``megatron/gradient_noise_scale``); the paper's own text was not at hand, so no
  equation numbers are given.
- ``lars_trust_ratio``: You, Gitman & Ginsburg, "Large Batch Training of Convolutional
  Networks", arXiv:1708.03888, 2017 (the local learning rate of Algorithm 1), written out here
  from the formula in float64 with norms from their definition, with ``book.optim.LARS``'s
  convention at a zero norm (ratio 1) and no epsilon (its default).

All answers work on tensors on any device; the numbers asked for are returned as tensors (0-d
where a single number is asked for; plain Python numbers are accepted there too).
"""

from __future__ import annotations

import torch

from book.grading.core import Case, Mistake, Question
from book.grading.harness import average_gradients_call

CHAPTER = "11_scaling"
# The chapter's own helpers (and the grader, whose references an answer could import).
NOT_THE_LIBRARY = ("book.distributed", "book.optim", "book.grading", "book.scaling", "book.precision",
                   "torch.distributed")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------
# 1. The data-parallel average: what every rank holds after all_reduce(SUM) / P


def _avg_cases(device):
    g = _gen(1100)

    def workers(shapes, P, dtype=torch.float64, scales=None):
        scales = scales or [1.0] * len(shapes)
        return [[(s * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)
                 for shape, s in zip(shapes, scales)] for _ in range(P)]

    zero_grad = workers([(3, 2), (2,)], 3)
    for w in zero_grad:
        w[1] = torch.zeros(2, dtype=torch.float64, device=device)  # a parameter no worker's loss touched
    return [
        Case("2 workers, a Linear(5, 4): weight (4, 5) and bias (4,)", (workers([(4, 5), (4,)], 2),)),
        Case("3 workers, three tensors of different scales, float32",
             (workers([(8, 3), (3,), (2, 2, 2)], 3, torch.float32, [1.0, 0.01, 50.0]),)),
        Case("4 workers, a single conv weight (6, 3, 3, 3)", (workers([(6, 3, 3, 3)], 4),)),
        Case("8 workers, float32: a weight, a bias and a 0-d scale parameter",
             (workers([(5, 7), (5,), ()], 8, torch.float32),)),
        Case("3 workers, one gradient zero on every worker", (zero_grad,)),
        Case("2 workers, five small tensors", (workers([(2,), (3, 1), (1,), (4,), (2, 3)], 2),)),
    ]


def _avg_ref(worker_grads):
    n = len(worker_grads[0])
    return [torch.stack([w[i] for w in worker_grads]).mean(dim=0) for i in range(n)]


def _avg_generic(worker_grads, *, divide_by_params=False, no_divide=False, first=False, in_place=False):
    P, n = len(worker_grads), len(worker_grads[0])
    if first:
        return [t.clone() for t in worker_grads[0]]
    if in_place:  # accumulate into worker 0's tensors, as all_reduce does into each rank's buffer
        out = worker_grads[0]
        for w in worker_grads[1:]:
            for i in range(n):
                out[i] += w[i]
        for i in range(n):
            out[i] /= P
        return out
    sums = [sum(w[i] for w in worker_grads) for i in range(n)]
    if no_divide:
        return sums
    return [s / (n if divide_by_params else P) for s in sums]


average_gradients = Question(
    id="average_gradients",
    chapter=CHAPTER,
    function="average_gradients",
    points=2,
    title="The data-parallel gradient average",
    cases=_avg_cases,
    reference=_avg_ref,
    call=average_gradients_call,
    rtol=1e-5,
    atol=1e-6,
    mistakes=(
        Mistake("summed, not averaged", lambda wg: _avg_generic(wg, no_divide=True),
                "all_reduce(SUM) leaves every rank with the SUM of the P gradients; data parallelism "
                "needs their mean (the gradient of the mean loss over the whole global batch), so divide "
                "by the number of workers P = len(worker_grads). Without it the step is P times too long."),
        Mistake("divided by the number of parameters", lambda wg: _avg_generic(wg, divide_by_params=True),
                "the average runs over the workers, one tensor at a time: divide by P = len(worker_grads), "
                "not by the number of tensors len(worker_grads[0])."),
        Mistake("worker 0's gradients returned", lambda wg: _avg_generic(wg, first=True),
                "every worker saw a different slice of the batch, so each holds a different gradient; "
                "all of them enter the average, (g⁽⁰⁾ + ... + g⁽ᴾ⁻¹⁾) / P."),
        Mistake("averaged in place into worker 0's tensors", lambda wg: _avg_generic(wg, in_place=True),
                "the values are right, but `total = worker_grads[0][i]` is not a copy: `total += ...` then "
                "overwrites worker 0's gradient. Start each sum from a new tensor (torch.zeros_like, "
                ".clone(), or torch.stack(...).sum(0)) and leave worker_grads as it was."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 2. Gradient accumulation over micro-batches of unequal sizes


def _micro_gradients(seed, sizes, widths=(4, 6, 3), scale_param=False, dtype=torch.float64, device="cpu"):
    """Gradients of the mean squared error of a small tanh network, one list per micro-batch."""
    g = _gen(seed)
    d, h, o = widths
    params = [torch.randn(h, d, generator=g, dtype=torch.float64) / d ** 0.5,
              0.1 * torch.randn(h, generator=g, dtype=torch.float64),
              torch.randn(o, h, generator=g, dtype=torch.float64) / h ** 0.5,
              0.1 * torch.randn(o, generator=g, dtype=torch.float64)]
    if scale_param:
        params.append(torch.tensor(1.5, dtype=torch.float64))  # a 0-d output scale
    params = [p.requires_grad_(True) for p in params]
    N = sum(sizes)
    X = torch.randn(N, d, generator=g, dtype=torch.float64)
    Y = torch.randn(N, o, generator=g, dtype=torch.float64)

    def mean_loss(x, y):
        out = torch.tanh(x @ params[0].T + params[1]) @ params[2].T + params[3]
        if scale_param:
            out = params[4] * out
        return ((out - y) ** 2).sum(dim=1).mean()

    grads, start = [], 0
    for n in sizes:
        loss = mean_loss(X[start:start + n], Y[start:start + n])
        grads.append([t.detach().to(dtype).to(device) for t in torch.autograd.grad(loss, params)])
        start += n
    return grads


def _acc_cases(device):
    rows = [
        ("4 equal micro-batches of 8", 1200, [8, 8, 8, 8], {}, torch.float32),
        ("3 micro-batches of 32, 32 and a remainder of 17", 1201, [32, 32, 17], {}, torch.float64),
        ("2 micro-batches of 5 and 3", 1202, [5, 3], {"widths": (3, 5, 2)}, torch.float64),
        ("a single micro-batch of 10 (nothing to accumulate)", 1203, [10], {}, torch.float64),
        ("5 micro-batches of 1, 7, 3, 12 and 4, float32", 1204, [1, 7, 3, 12, 4], {"widths": (5, 4, 2)},
         torch.float32),
        ("3 micro-batches of 6, 2 and 9, with a 0-d scale parameter", 1205, [6, 2, 9], {"scale_param": True},
         torch.float64),
    ]
    return [Case(f"{label} ({_name(dtype)})",
                 (_micro_gradients(seed, sizes, dtype=dtype, device=device, **kw), list(sizes)))
            for label, seed, sizes, kw, dtype in rows]


def _acc_ref(micro_grads, micro_sizes):
    N = sum(micro_sizes)
    out = []
    for i in range(len(micro_grads[0])):
        stacked = torch.stack([mg[i] for mg in micro_grads])  # (k, *shape)
        weights = torch.tensor([n / N for n in micro_sizes], dtype=stacked.dtype, device=stacked.device)
        out.append(torch.einsum("k,k...->...", weights, stacked))
    return out


def _acc_generic(micro_grads, micro_sizes, weight):
    k = len(micro_grads)
    return [sum(weight(n, k, sum(micro_sizes)) * mg[i] for mg, n in zip(micro_grads, micro_sizes))
            for i in range(len(micro_grads[0]))]


accumulated_gradient = Question(
    id="accumulated_gradient",
    chapter=CHAPTER,
    function="accumulated_gradient",
    points=2,
    title="Gradient accumulation over unequal micro-batches",
    cases=_acc_cases,
    reference=_acc_ref,
    rtol=1e-5,
    atol=1e-6,
    mistakes=(
        Mistake("micro-batch gradients summed without scaling",
                lambda mg, ns: _acc_generic(mg, ns, lambda n, k, N: 1.0),
                "each g_j is already the gradient of a MEAN over its micro-batch, so adding k of them "
                "gives about k times the gradient (the classic missing 1/k of loss.backward() called k "
                "times). Weight each g_j by n_j / N."),
        Mistake("divided by the number of micro-batches",
                lambda mg, ns: _acc_generic(mg, ns, lambda n, k, N: 1.0 / k),
                "dividing by k is right only when every micro-batch has the same size. With a shorter "
                "last micro-batch its examples would count for more than the others: weight g_j by "
                "n_j / N, where N = n_1 + ... + n_k."),
        Mistake("weighted by 1/n_j",
                lambda mg, ns: _acc_generic(mg, ns, lambda n, k, N: 1.0 / n),
                "a micro-batch with more examples carries more of the union batch, so its weight grows "
                "with n_j: the weight is n_j / N, not 1 / n_j."),
        Mistake("the gradient of the summed loss",
                lambda mg, ns: _acc_generic(mg, ns, lambda n, k, N: float(n)),
                "n_j g_j is the gradient of the SUM of micro-batch j's losses; the question asks for the "
                "MEAN over all N examples: divide by N = n_1 + ... + n_k as well."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. The gradient noise scale from two batch sizes (McCandlish et al., 2018, appendix A.1)


def _measure(g, shape, g2, trace, b_small, b_big, dim=40):
    """Squared norms of batch gradients G + noise with E|G_B|² = |G|² + tr(Σ)/B, `shape` of them."""
    G = torch.randn(dim, generator=g, dtype=torch.float64)
    G = G * (g2 / (G @ G)) ** 0.5
    n = int(torch.Size(shape).numel())
    std = (trace / dim) ** 0.5  # Σ = (tr/dim) I

    def sq(B):
        batch = G + std / B ** 0.5 * torch.randn(n, dim, generator=g, dtype=torch.float64)
        return (batch ** 2).sum(dim=1).reshape(shape)

    return sq(b_small), sq(b_big)


def _gns_cases(device):
    g = _gen(1300)
    rows = [
        ("one measurement, B_small = 32, B_big = 256", (), 1.0, 60.0, 32, 256, torch.float64),
        ("one measurement, 8 workers of 64 (B_big = 512)", (), 0.2, 30.0, 64, 512, torch.float32),
        ("per-example gradients, B_small = 1, B_big = 128", (), 2.0, 40.0, 1, 128, torch.float64),
        ("8 steps, B_big = 2 B_small = 64", (8,), 0.5, 10.0, 32, 64, torch.float64),
        ("3 runs × 5 steps, B_small = 16, B_big = 64", (3, 5), 0.3, 20.0, 16, 64, torch.float32),
    ]
    cases = []
    for label, shape, g2, trace, bs, bb, dtype in rows:
        small, big = _measure(g, shape, g2, trace, bs, bb)
        cases.append(Case(f"{label} ({_name(dtype)})", (small.to(dtype).to(device), big.to(dtype).to(device), bs, bb)))
    t = lambda v: torch.tensor(v, dtype=torch.float64, device=device)  # noqa: E731
    cases.append(Case("no noise: both squared norms equal (tr Σ = 0), B 8 and 32", (t(0.7), t(0.7), 8, 32)))
    cases.append(Case("a noisy step where the |G|² estimate comes out negative, B 16 and 32",
                      (t(1.0), t(0.45), 16, 32)))
    return cases


def _gns_ref(g_small_sq, g_big_sq, b_small, b_big):
    # E|G_B|² = |G|² + tr(Σ)/B at B = b_small and b_big: two equations in (|G|², tr Σ)
    A = torch.tensor([[1.0, 1.0 / b_small], [1.0, 1.0 / b_big]], dtype=torch.float64)
    rhs = torch.stack([g_small_sq.detach().cpu().to(torch.float64).reshape(-1),
                       g_big_sq.detach().cpu().to(torch.float64).reshape(-1)])  # (2, m)
    g2, trace = torch.linalg.solve(A, rhs).reshape(2, *g_small_sq.shape)
    return g2, trace, trace / g2


def _gns_formula(small, big, bs, bb, *, g2_of=None):
    g2 = (bb * big - bs * small) / (bb - bs) if g2_of is None else g2_of(small, big, bs, bb)
    trace = (small - big) / (1.0 / bs - 1.0 / bb)
    return g2, trace, trace / g2


def _gns_inverted(small, big, bs, bb):
    g2, trace, _ = _gns_formula(small, big, bs, bb)
    return g2, trace, g2 / trace


gradient_noise_scale = Question(
    id="gradient_noise_scale",
    chapter=CHAPTER,
    function="gradient_noise_scale",
    points=3,
    title="The gradient noise scale from two batch sizes",
    cases=_gns_cases,
    reference=_gns_ref,
    # float32 inputs computed on in float32: within 1e-7 relative of the float64 solve here
    rtol=1e-5,
    atol=1e-7,
    mistakes=(
        Mistake("the small and the big batch swapped",
                lambda s, b, bs, bb: _gns_formula(b, s, bs, bb),
                "the SMALL batch has the noisier gradient and so the LARGER squared norm: "
                "|G_small|² − |G_big|² > 0 on average, and tr(Σ) comes out negative when the two are swapped. "
                "Pair each squared norm with its own batch size."),
        Mistake("B_simple inverted", _gns_inverted,
                "the noise scale is noise over signal, B_simple = tr(Σ) / |G|²: a batch size, large when "
                "the gradient is noisy."),
        Mistake("|G_big|² taken as |G|²",
                lambda s, b, bs, bb: _gns_formula(s, b, bs, bb, g2_of=lambda s_, b_, bs_, bb_: b_),
                "even the big batch's gradient is noisy: E|G_big|² = |G|² + tr(Σ)/B_big, too large by "
                "tr(Σ)/B_big. The unbiased estimate combines both batches, "
                "(B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)."),
        Mistake("the batch sizes left out of the |G|² numerator",
                lambda s, b, bs, bb: _gns_formula(s, b, bs, bb,
                                                  g2_of=lambda s_, b_, bs_, bb_: (b_ - s_) / (bb_ - bs_)),
                "weight each squared norm by its batch size, B_big |G_big|² − B_small |G_small|²: "
                "B |G_B|² = B |G|² + tr(Σ), so the weights make the two tr(Σ) terms cancel."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 4. The LARS trust ratio (You, Gitman & Ginsburg, 2017)


def _lars_cases(device):
    g = _gen(1400)

    def t(*shape, scale=1.0, dtype=torch.float64):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    f32 = torch.float32
    return [
        Case("a (64, 32) weight, eta = 1e-3, weight_decay = 5e-4, float32",
             (t(64, 32, scale=0.2, dtype=f32), t(64, 32, scale=0.01, dtype=f32), 1e-3, 5e-4)),
        Case("a conv weight (16, 3, 3, 3), eta = 1e-3, weight_decay = 1e-4",
             (t(16, 3, 3, 3, scale=0.3), t(16, 3, 3, 3, scale=0.05), 1e-3, 1e-4)),
        Case("a (20, 50) weight, eta = 0.02, no weight decay, float32",
             (t(20, 50, scale=0.1, dtype=f32), t(20, 50, scale=0.02, dtype=f32), 0.02, 0.0)),
        Case("a 1-D (128,) tensor with a large gradient, eta = 1e-3, weight_decay = 5e-4",
             (t(128, scale=0.05), t(128, scale=20.0), 1e-3, 5e-4)),
        Case("a tiny gradient, eta = 1, weight_decay = 0.1 (a ratio above 1)",
             (t(10, 10), t(10, 10, scale=1e-3), 1.0, 0.1)),
        Case("a zero-initialized weight (8, 4): ratio 1",
             (torch.zeros(8, 4, dtype=torch.float64, device=device), t(8, 4, scale=0.1), 1e-3, 5e-4)),
        Case("a weight that got no gradient (zeros): ratio 1, float32",
             (t(6, 5, dtype=f32), torch.zeros(6, 5, dtype=f32, device=device), 1e-3, 5e-4)),
        Case("weight and gradient both zero: ratio 1",
             (torch.zeros(3, 3, dtype=torch.float64, device=device),
              torch.zeros(3, 3, dtype=torch.float64, device=device), 0.01, 0.0)),
    ]


def _norm64(x):
    x = x.detach().to(torch.float64)
    return torch.sqrt((x * x).sum())  # ‖x‖ = √(Σ x²), the whole tensor as one vector


def _lars_ref(weight, grad, trust_coefficient, weight_decay):
    w, g = _norm64(weight), _norm64(grad)
    if w == 0 or g == 0:
        return torch.tensor(1.0, dtype=torch.float64)
    return trust_coefficient * w / (g + weight_decay * w)


def _lars_generic(weight, grad, eta, beta, *, no_decay=False, no_eta=False, squared=False, decayed_grad=False,
                  no_zero_rule=False):
    w, g = torch.linalg.vector_norm(weight), torch.linalg.vector_norm(grad)
    if not no_zero_rule and (w == 0 or g == 0):
        return torch.ones((), dtype=weight.dtype, device=weight.device)
    coef = 1.0 if no_eta else eta
    if squared:
        return coef * w ** 2 / (g ** 2 + beta * w ** 2)
    if decayed_grad:
        return coef * w / torch.linalg.vector_norm(grad + beta * weight)
    return coef * w / (g if no_decay else g + beta * w)


lars_trust_ratio = Question(
    id="lars_trust_ratio",
    chapter=CHAPTER,
    function="lars_trust_ratio",
    points=3,
    title="The LARS trust ratio",
    cases=_lars_cases,
    reference=_lars_ref,
    rtol=1e-5,
    atol=1e-10,
    mistakes=(
        Mistake("weight decay left out of the denominator",
                lambda w, g, eta, beta: _lars_generic(w, g, eta, beta, no_decay=True),
                "the update LARS scales is g + βw, so its denominator bounds that update's norm: "
                "‖g‖ + β‖w‖, with β = weight_decay."),
        Mistake("the trust coefficient left out",
                lambda w, g, eta, beta: _lars_generic(w, g, eta, beta, no_eta=True),
                "multiply by η = trust_coefficient: it says how far, relative to ‖w‖, one step may move "
                "the weights (about 1e-3 in the paper)."),
        Mistake("squared norms",
                lambda w, g, eta, beta: _lars_generic(w, g, eta, beta, squared=True),
                "‖w‖ and ‖g‖ are Euclidean norms, √(Σ w²), not sums of squares; with squares the ratio "
                "no longer compares lengths."),
        Mistake("the norm of g + βw in the denominator",
                lambda w, g, eta, beta: _lars_generic(w, g, eta, beta, decayed_grad=True),
                "that is the variant of SimCLR's LARS. The paper's Algorithm 1 (and book.optim.LARS) divides "
                "by ‖g‖ + β‖w‖, the sum of the two norms."),
        Mistake("no rule for a zero norm",
                lambda w, g, eta, beta: _lars_generic(w, g, eta, beta, no_zero_rule=True),
                "where ‖w‖ = 0 (a zero-initialized layer) the formula gives 0 and the layer would never "
                "move; where ‖g‖ = 0 it gives η/β or 0/0. The convention is a ratio of 1 whenever either "
                "norm is zero."),
    ),
    forbidden=NOT_THE_LIBRARY + ("torch_optimizer", "timm"),
)


QUESTIONS = [average_gradients, accumulated_gradient, gradient_noise_scale, lars_trust_ratio]
