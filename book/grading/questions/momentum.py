"""Questions for chapter 4, momentum: PyTorch's momentum step, Nesterov's step, the
optimal heavy-ball parameters of a quadratic. References come from torch.optim.SGD."""

from __future__ import annotations

import math

import torch

from book.grading.core import Case, Mistake, Question

CHAPTER = "04_momentum"
NOT_THE_LIBRARY = ("book.optim", "book.gd", "torch.optim")


def _torch_sgd_step(param, grad, buf, lr, momentum, dampening=0.0, weight_decay=0.0, nesterov=False):
    """One step of torch.optim.SGD from the given state; returns (param, momentum_buffer)."""
    p = param.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, dampening=dampening,
                          weight_decay=weight_decay, nesterov=nesterov)
    if buf is not None:
        opt.state[p]["momentum_buffer"] = buf.detach().clone()
    p.grad = grad.detach().clone()
    opt.step()
    return p.detach(), opt.state[p]["momentum_buffer"].detach()


def _step_cases(device, nesterov: bool) -> list[Case]:
    g = torch.Generator().manual_seed(21 if nesterov else 20)

    def t(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)

    cases = [
        Case("first step (no buffer yet), momentum 0.9", (t(5), t(5), None, 0.1, 0.9)),
        Case("later step, momentum 0.9", (t(5), t(5), t(5), 0.1, 0.9)),
        Case("a (3, 4) matrix, float32, momentum 0.5", (t(3, 4, dtype=torch.float32), t(3, 4, dtype=torch.float32),
                                                      t(3, 4, dtype=torch.float32), 0.01, 0.5)),
        Case("with weight decay 0.01", (t(6), t(6), t(6), 0.05, 0.9), {"weight_decay": 0.01}),
        Case("first step with weight decay", (t(4), t(4), None, 0.05, 0.8), {"weight_decay": 0.1}),
    ]
    if not nesterov:
        cases += [
            Case("later step with dampening 0.3", (t(5), t(5), t(5), 0.1, 0.9), {"dampening": 0.3}),
            Case("first step with dampening 0.3 (not applied on the first step)", (t(5), t(5), None, 0.1, 0.9),
                 {"dampening": 0.3}),
        ]
    return cases


def _momentum_ref(param, grad, buf, lr, momentum, dampening=0.0, weight_decay=0.0):
    return _torch_sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay)


def _momentum_generic(param, grad, buf, lr, momentum, dampening, weight_decay, first, update, decay_in_grad=True):
    g = grad + weight_decay * param if decay_in_grad else grad
    new_buf = first(g) if buf is None else update(buf, g)
    p = param - lr * new_buf
    if not decay_in_grad:
        p = p - lr * weight_decay * param
    return p, new_buf


def _dampened_first(param, grad, buf, lr, momentum, dampening=0.0, weight_decay=0.0):
    return _momentum_generic(param, grad, buf, lr, momentum, dampening, weight_decay,
                             first=lambda g: (1 - dampening) * g,
                             update=lambda b, g: momentum * b + (1 - dampening) * g)


def _ema_form(param, grad, buf, lr, momentum, dampening=0.0, weight_decay=0.0):
    return _momentum_generic(param, grad, buf, lr, momentum, dampening, weight_decay,
                             first=lambda g: (1 - momentum) * g,
                             update=lambda b, g: momentum * b + (1 - momentum) * g)


def _decay_outside(param, grad, buf, lr, momentum, dampening=0.0, weight_decay=0.0):
    return _momentum_generic(param, grad, buf, lr, momentum, dampening, weight_decay,
                             first=lambda g: g.clone(),
                             update=lambda b, g: momentum * b + (1 - dampening) * g,
                             decay_in_grad=False)


momentum_step = Question(
    id="momentum_step",
    chapter=CHAPTER,
    function="momentum_step",
    points=3,
    title="SGD with momentum, as torch.optim.SGD",
    cases=lambda device: _step_cases(device, nesterov=False),
    reference=_momentum_ref,
    rtol=1e-6,
    atol=1e-7,
    mistakes=(
        Mistake("dampening on the first step", _dampened_first,
                "PyTorch starts the buffer as the gradient itself: b = g on the first step, and only later "
                "b = μ b + (1 − dampening) g."),
        Mistake("the averaging (EMA) convention", _ema_form,
                "torch.optim.SGD accumulates b = μ b + g, not the average μ b + (1 − μ) g; the two agree "
                "only after rescaling the learning rate by 1/(1 − μ)."),
        Mistake("weight decay outside the momentum", _decay_outside,
                "torch.optim.SGD adds weight_decay · p to the gradient before it enters the buffer."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


def _nesterov_ref(param, grad, buf, lr, momentum, weight_decay=0.0):
    return _torch_sgd_step(param, grad, buf, lr, momentum, 0.0, weight_decay, nesterov=True)


def _nesterov_heavy_ball(param, grad, buf, lr, momentum, weight_decay=0.0):
    return _torch_sgd_step(param, grad, buf, lr, momentum, 0.0, weight_decay, nesterov=False)


def _nesterov_old_buffer(param, grad, buf, lr, momentum, weight_decay=0.0):
    g = grad + weight_decay * param
    new_buf = g.clone() if buf is None else momentum * buf + g
    old = g if buf is None else buf
    return param - lr * (g + momentum * old), new_buf


def _nesterov_buffer_only(param, grad, buf, lr, momentum, weight_decay=0.0):
    g = grad + weight_decay * param
    new_buf = g.clone() if buf is None else momentum * buf + g
    return param - lr * momentum * new_buf, new_buf


nesterov_step = Question(
    id="nesterov_step",
    chapter=CHAPTER,
    function="nesterov_step",
    points=3,
    title="Nesterov's step, as torch.optim.SGD(nesterov=True)",
    cases=lambda device: _step_cases(device, nesterov=True),
    reference=_nesterov_ref,
    rtol=1e-6,
    atol=1e-7,
    mistakes=(
        Mistake("the heavy-ball update", _nesterov_heavy_ball,
                "that is plain momentum; Nesterov's step in PyTorch's form is p − lr · (g + μ b) with the "
                "updated buffer b."),
        Mistake("the look-ahead with the old buffer", _nesterov_old_buffer,
                "update the buffer first (b = μ b + g), then step along g + μ b with the new b."),
        Mistake("a missing gradient term", _nesterov_buffer_only,
                "the step is g + μ b: the current gradient plus the momentum look-ahead, not μ b alone."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


def _opt_cases(device) -> list[Case]:
    g = torch.Generator().manual_seed(4)
    out = [Case("diag(10, 1)", (torch.diag(torch.tensor([10.0, 1.0], dtype=torch.float64)).to(device),)),
           Case("identity (kappa = 1)", (torch.eye(2, dtype=torch.float64, device=device),))]
    for d, kappa in [(4, 100.0), (6, 1e4)]:
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        A = Q @ torch.diag(torch.logspace(0, math.log10(kappa), d, dtype=torch.float64)) @ Q.T
        out.append(Case(f"random {d}-D, kappa = {kappa:g}", (((A + A.T) / 2).to(device),)))
    return out


def _eig(A):
    e = torch.linalg.eigvalsh(A.to(torch.float64))
    return float(e[0]), float(e[-1])


def _opt_ref(A):
    mu, L = _eig(A)
    rate = (math.sqrt(L) - math.sqrt(mu)) / (math.sqrt(L) + math.sqrt(mu))
    return (4.0 / (math.sqrt(L) + math.sqrt(mu)) ** 2, rate**2, rate)


def _opt_unsquared(A):
    lr, _, rate = _opt_ref(A)
    return (lr, rate, rate)


def _opt_gd_lr(A):
    mu, L = _eig(A)
    _, beta, rate = _opt_ref(A)
    return (2.0 / (L + mu), beta, rate)


def _opt_gd_rate(A):
    mu, L = _eig(A)
    lr, beta, _ = _opt_ref(A)
    return (lr, beta, (L - mu) / (L + mu))


optimal_momentum = Question(
    id="optimal_momentum",
    chapter=CHAPTER,
    function="optimal_momentum",
    points=2,
    title="The best heavy-ball parameters for a quadratic",
    cases=_opt_cases,
    reference=_opt_ref,
    rtol=1e-6,
    atol=1e-12,
    mistakes=(
        Mistake("momentum not squared", _opt_unsquared,
                "the optimal β is the square of (√κ − 1)/(√κ + 1); the rate itself is the unsquared value."),
        Mistake("gradient descent's step", _opt_gd_lr,
                "with momentum the best step is 4/(√L + √μ)², larger than gradient descent's 2/(L + μ)."),
        Mistake("gradient descent's rate", _opt_gd_rate,
                "with optimal momentum the rate is (√κ − 1)/(√κ + 1), not GD's (κ − 1)/(κ + 1)."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 4. Derive: the rate of heavy ball on one curvature


def _rate_cases(device) -> list[Case]:
    mu, L = 1.0, 100.0
    lr_opt = 4.0 / (math.sqrt(L) + math.sqrt(mu)) ** 2
    beta_opt = ((math.sqrt(L) - math.sqrt(mu)) / (math.sqrt(L) + math.sqrt(mu))) ** 2
    return [
        Case("lr 0.5, beta 0.81, h 1 (complex roots)", (0.5, 0.81, 1.0)),
        Case("lr 0.1, beta 0.1, h 1 (real roots)", (0.1, 0.1, 1.0)),
        Case("lr 0.3, beta 0, h 2 (gradient descent)", (0.3, 0.0, 2.0)),
        Case("lr 3.9, beta 0.9, h 1 (diverges)", (3.9, 0.9, 1.0)),
        Case("the optimal lr and beta for [1, 100], at h = mu", (lr_opt, beta_opt, mu)),
        Case("the optimal lr and beta for [1, 100], at h = L", (lr_opt, beta_opt, L)),
        Case("a double root: lr 0.25, beta 0.25, h 1", (0.25, 0.25, 1.0)),
        Case("lr 1.2, beta 0.05, h 1 (a negative real root)", (1.2, 0.05, 1.0)),
    ]


def _rate_ref(lr, beta, h):
    T = torch.tensor([[1.0 + beta - lr * h, -beta], [1.0, 0.0]], dtype=torch.float64)
    return float(torch.linalg.eigvals(T).abs().max())


def _rate_real_part(lr, beta, h):
    t = 1.0 + beta - lr * h
    disc = t * t - 4 * beta
    if disc < 0:
        return abs(t) / 2
    return max(abs((t + math.sqrt(disc)) / 2), abs((t - math.sqrt(disc)) / 2))


def _rate_no_abs(lr, beta, h):
    t = 1.0 + beta - lr * h
    disc = t * t - 4 * beta
    if disc < 0:
        return math.sqrt(beta)
    return max((t + math.sqrt(disc)) / 2, (t - math.sqrt(disc)) / 2)


heavy_ball_rate = Question(
    id="heavy_ball_rate",
    chapter=CHAPTER,
    function="heavy_ball_rate",
    points=3,
    title="Derive: the rate of heavy ball on one curvature",
    kind="derive",
    partial=True,
    cases=_rate_cases,
    reference=_rate_ref,
    # at a double root (the optimal parameters put one there) an eigenvalue routine loses half the
    # digits: agreement to about 1e-8 is all float64 allows
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("always the square root of beta", lambda lr, beta, h: math.sqrt(beta),
                "|z| = √β holds only when the two roots are complex (a negative discriminant); with real "
                "roots the larger |root| is bigger than √β."),
        Mistake("the rate of gradient descent", lambda lr, beta, h: abs(1.0 - lr * h),
                "momentum changes the iteration: its matrix [[1 + β − ηh, −β], [1, 0]] has the characteristic "
                "polynomial z² − (1 + β − ηh) z + β."),
        Mistake("the real part of complex roots", _rate_real_part,
                "complex roots z = (t ± i√(4β − t²))/2 have modulus √(t² + 4β − t²)/2 = √β, not |t|/2."),
        Mistake("the largest root instead of the largest modulus", _rate_no_abs,
                "the rate is the spectral radius, max |z|: a negative root of large size makes the "
                "iterates alternate in sign and counts as much as a positive one."),
    ),
    forbidden=NOT_THE_LIBRARY + ("torch.linalg", "numpy.linalg", "numpy.roots", "numpy.polynomial", "scipy"),
)

QUESTIONS = [momentum_step, nesterov_step, optimal_momentum, heavy_ball_rate]
