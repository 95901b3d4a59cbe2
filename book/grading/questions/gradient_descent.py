"""Questions for chapter 2, gradient descent: the loop, Newton's step, line search."""

from __future__ import annotations

import math

import torch

from book.gd import backtracking_line_search, gradient_descent
from book.grading.core import Case, Mistake, Question
from book.landscapes import gradient as _grad
from book.landscapes import himmelblau, ill_conditioned_quadratic, quadratic, rosenbrock

CHAPTER = "02_gradient_descent"
NOT_THE_LIBRARY = ("book.gd", "torch.optim")


# ---------------------------------------------------------------------------
# 1. The gradient-descent loop


def _gd_cases(device) -> list[Case]:
    dt = torch.float64
    bowl = ill_conditioned_quadratic(10.0, angle=math.pi / 6)
    A5 = torch.diag(torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=dt))
    return [
        Case("rotated bowl, kappa = 10, lr = 0.15, 25 steps", (bowl, torch.tensor([-1.5, 1.0], dtype=dt, device=device), 0.15, 25)),
        Case("Rosenbrock from (-1.5, 2), lr = 1e-3, 40 steps", (rosenbrock, torch.tensor([-1.5, 2.0], dtype=dt, device=device), 1e-3, 40)),
        Case("5-D quadratic, float32, lr = 0.1, 10 steps", (quadratic(A5, b=torch.ones(5, dtype=dt)),
                                                          torch.ones(5, dtype=torch.float32, device=device), 0.1, 10)),
        Case("Himmelblau, lr = 0.01, 15 steps", (himmelblau, torch.tensor([0.0, 0.0], dtype=dt, device=device), 0.01, 15)),
        Case("zero steps returns just x0", (rosenbrock, torch.tensor([0.5, 0.5], dtype=dt, device=device), 0.1, 0)),
    ]


def _gd_missing_x0(f, x0, lr, steps):
    return gradient_descent(f, x0, lr, steps)[1:]


def _gd_ascent(f, x0, lr, steps):
    xs = [x0.detach().clone()]
    x = x0.detach().clone()
    for _ in range(steps):
        x = x + lr * _grad(f, x)
        xs.append(x)
    return torch.stack(xs)


def _gd_aliased(f, x0, lr, steps):
    final = gradient_descent(f, x0, lr, steps)[-1]
    return final.expand(steps + 1, -1).clone()


gd_iterates = Question(
    id="gd_iterates",
    chapter=CHAPTER,
    function="gd_iterates",
    points=3,
    title="The gradient-descent loop",
    cases=_gd_cases,
    reference=lambda f, x0, lr, steps: gradient_descent(f, x0, lr, steps),
    rtol=1e-5,
    atol=1e-6,
    mistakes=(
        Mistake("the starting point left out", _gd_missing_x0,
                "return steps + 1 rows: the first row is x0 itself, then one row per step."),
        Mistake("a step uphill", _gd_ascent,
                "descent moves against the gradient: x ← x − lr · ∇f(x)."),
        Mistake("every row the same tensor", _gd_aliased,
                "updating x in place (x -= ...) and appending x each time stores the same tensor "
                "again and again; append a new tensor (x = x − lr * g) or x.clone()."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 2. One Newton step


def _newton_cases(device) -> list[Case]:
    dt = torch.float64
    A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=dt)
    A3 = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=dt)
    return [
        Case("2-D quadratic (one step lands on the minimum)", (quadratic(A, b=torch.tensor([1.0, -1.0], dtype=dt)),
                                                              torch.tensor([2.0, 2.0], dtype=dt, device=device))),
        Case("3-D quadratic", (quadratic(A3, b=torch.tensor([1.0, 0.0, -2.0], dtype=dt)),
                               torch.tensor([0.5, -1.0, 1.5], dtype=dt, device=device))),
        Case("Rosenbrock at (-1.2, 1)", (rosenbrock, torch.tensor([-1.2, 1.0], dtype=dt, device=device))),
        Case("Rosenbrock at (0.5, 0.5)", (rosenbrock, torch.tensor([0.5, 0.5], dtype=dt, device=device))),
        Case("Himmelblau at (2.5, 2.5)", (himmelblau, torch.tensor([2.5, 2.5], dtype=dt, device=device))),
    ]


def _newton_ref(f, x):
    x = x.detach()
    H = torch.autograd.functional.hessian(f, x)
    return x - torch.linalg.solve(H, _grad(f, x))


def _newton_times_hessian(f, x):
    x = x.detach()
    H = torch.autograd.functional.hessian(f, x)
    return x - H @ _grad(f, x)


def _newton_gradient_step(f, x):
    return x.detach() - _grad(f, x)


def _newton_wrong_sign(f, x):
    x = x.detach()
    H = torch.autograd.functional.hessian(f, x)
    return x + torch.linalg.solve(H, _grad(f, x))


newton_step = Question(
    id="newton_step",
    chapter=CHAPTER,
    function="newton_step",
    points=3,
    title="One Newton step",
    cases=_newton_cases,
    reference=_newton_ref,
    rtol=1e-6,
    atol=1e-9,
    mistakes=(
        Mistake("multiplying by the Hessian", _newton_times_hessian,
                "Newton's step is −H⁻¹∇f: solve H d = ∇f (torch.linalg.solve) instead of multiplying H by ∇f."),
        Mistake("a plain gradient step", _newton_gradient_step,
                "that is gradient descent with lr = 1; Newton rescales the gradient by the inverse Hessian."),
        Mistake("the wrong sign", _newton_wrong_sign,
                "the step goes to the minimum of the quadratic model: x − H⁻¹∇f, not x + H⁻¹∇f."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


# ---------------------------------------------------------------------------
# 3. Backtracking line search


def _bt_cases(device) -> list[Case]:
    dt = torch.float64
    bowl = ill_conditioned_quadratic(10.0, angle=0.3)
    return [
        Case("Rosenbrock at (-1.5, 2), lr0 = 1, shrink = 0.5, c = 1e-4",
             (rosenbrock, torch.tensor([-1.5, 2.0], dtype=dt, device=device)), {"lr0": 1.0, "shrink": 0.5, "c": 1e-4}),
        Case("Rosenbrock at (0, 0), lr0 = 1, shrink = 0.5, c = 0.5",
             (rosenbrock, torch.tensor([0.0, 0.0], dtype=dt, device=device)), {"lr0": 1.0, "shrink": 0.5, "c": 0.5}),
        Case("bowl (kappa = 10) at (1, 1), lr0 = 1, shrink = 0.3, c = 0.4",
             (bowl, torch.tensor([1.0, 1.0], dtype=dt, device=device)), {"lr0": 1.0, "shrink": 0.3, "c": 0.4}),
        Case("bowl at (1, -1), lr0 = 0.05 (already small enough)",
             (bowl, torch.tensor([1.0, -1.0], dtype=dt, device=device)), {"lr0": 0.05, "shrink": 0.5, "c": 1e-4}),
        Case("Himmelblau at (1, 1), lr0 = 1, shrink = 0.7, c = 0.3",
             (himmelblau, torch.tensor([1.0, 1.0], dtype=dt, device=device)), {"lr0": 1.0, "shrink": 0.7, "c": 0.3}),
    ]


def _bt_ref(f, x, lr0=1.0, shrink=0.5, c=1e-4):
    return backtracking_line_search(f, x, None, lr0=lr0, shrink=shrink, c=c)


def _bt_generic(f, x, lr0, shrink, accept):
    x = x.detach()
    g = _grad(f, x)
    fx = float(f(x))
    t = lr0
    for _ in range(60):
        if accept(float(f(x - t * g)), fx, t, g):
            return t
        t *= shrink
    return 0.0


def _bt_plain_decrease(f, x, lr0=1.0, shrink=0.5, c=1e-4):
    return _bt_generic(f, x, lr0, shrink, lambda fn, fx, t, g: fn < fx)


def _bt_norm_not_squared(f, x, lr0=1.0, shrink=0.5, c=1e-4):
    return _bt_generic(f, x, lr0, shrink, lambda fn, fx, t, g: fn <= fx - c * t * float(g.norm()))


def _bt_one_shrink_too_many(f, x, lr0=1.0, shrink=0.5, c=1e-4):
    return _bt_ref(f, x, lr0, shrink, c) * shrink


backtracking = Question(
    id="backtracking",
    chapter=CHAPTER,
    function="backtracking",
    points=3,
    title="Backtracking (Armijo) line search",
    cases=_bt_cases,
    reference=_bt_ref,
    rtol=1e-9,
    atol=1e-12,
    mistakes=(
        Mistake("plain decrease instead of sufficient decrease", _bt_plain_decrease,
                "Armijo asks for f(x − t g) ≤ f(x) − c · t · ‖g‖², not just f(x − t g) < f(x)."),
        Mistake("‖g‖ instead of ‖g‖²", _bt_norm_not_squared,
                "along d = −g the slope is ∇fᵀd = −‖g‖², so the bound is f(x) − c · t · ‖g‖²."),
        Mistake("one shrink too many", _bt_one_shrink_too_many,
                "return the first step that satisfies the condition, before shrinking it again."),
    ),
    forbidden=NOT_THE_LIBRARY,
)

# ---------------------------------------------------------------------------
# 4. Predict: how many steps gradient descent needs at condition number 100

KAPPA, TOL = 100.0, 1e-6


def _steps_cases(device):
    return [Case("your prediction of the number of steps")]


def _steps_ref():
    # On f = ½(μ x1² + L x2²) with lr = 1/L, x2 is 0 after one step and x1 shrinks by exactly
    # (1 − μ/L) per step: the first k with (1 − 1/κ)^k ≤ 1e-6. Counted by running it in float64 too.
    x, k = 1.0, 0
    while abs(x) > TOL:
        x, k = x * (1.0 - 1.0 / KAPPA), k + 1
    return float(k)


gd_steps = Question(
    id="gd_steps",
    chapter=CHAPTER,
    function="gd_steps",
    points=2,
    title="Predict: steps to 1e-6 at condition number 100",
    kind="predict",
    cases=_steps_cases,
    reference=_steps_ref,
    rtol=0.05,
    atol=0.0,
    mistakes=(
        Mistake("the condition number squared", lambda: KAPPA ** 2 * math.log(1 / TOL),
                "each step shrinks the slow coordinate by the factor 1 − 1/κ, so the count grows like κ, "
                "not κ²: k ≈ κ · ln(1/ε)."),
        Mistake("the rate of the best fixed step, 2/(μ + L)", lambda: math.ceil(math.log(TOL) / math.log(
                (KAPPA - 1) / (KAPPA + 1))),
                "that rate, (κ − 1)/(κ + 1), belongs to the step 2/(μ + L); the question fixes lr = 1/L, "
                "whose factor on the slow coordinate is 1 − μ/L = 1 − 1/κ."),
        Mistake("the square root of the condition number", lambda: math.sqrt(KAPPA) * math.log(1 / TOL),
                "√κ · ln(1/ε) is what momentum reaches (chapter 4); plain gradient descent needs about "
                "κ · ln(1/ε)."),
        Mistake("the condition number left out", lambda: math.log(1 / TOL),
                "ln(1/ε) ≈ 14 would be the count if every step shrank the error by the factor e; here a "
                "step shrinks it only by 1 − 1/κ."),
    ),
    forbidden=NOT_THE_LIBRARY,
)


QUESTIONS = [gd_iterates, newton_step, backtracking, gd_steps]
