"""Questions for chapter 1, loss landscapes: gradients, critical points, conditioning."""

from __future__ import annotations

import math

import torch

from book.grading.core import Case, Mistake, Question
from book.landscapes import classify_critical_point, himmelblau, quadratic, saddle

CHAPTER = "01_landscapes"


def _rotation(angle: float, dtype) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=dtype)


def _spd(d: int, kappa: float, g: torch.Generator, dtype) -> torch.Tensor:
    """A random symmetric positive definite matrix with condition number kappa."""
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(kappa), d, dtype=torch.float64)
    A = Q @ torch.diag(eig) @ Q.T
    return ((A + A.T) / 2).to(dtype)


# ---------------------------------------------------------------------------
# 1. The gradient of a quadratic


def _gradient_cases(device) -> list[Case]:
    g = torch.Generator().manual_seed(1)
    out = []
    A = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    out.append(Case("2-D diagonal A, float64", (A.to(device), torch.tensor([1.0, -2.0], dtype=torch.float64, device=device),
                                                torch.tensor([0.5, 0.25], dtype=torch.float64, device=device))))
    R = _rotation(0.4, torch.float64)
    A = R @ torch.diag(torch.tensor([10.0, 1.0], dtype=torch.float64)) @ R.T
    out.append(Case("2-D rotated A, b = 0", (A.to(device), torch.zeros(2, dtype=torch.float64, device=device),
                                             torch.tensor([-1.0, 2.0], dtype=torch.float64, device=device))))
    for d, dtype in [(5, torch.float32), (8, torch.float64)]:
        A = _spd(d, 50.0, g, dtype)
        b = torch.randn(d, generator=g, dtype=torch.float64).to(dtype)
        x = torch.randn(d, generator=g, dtype=torch.float64).to(dtype)
        out.append(Case(f"{d}-D random A, {str(dtype).replace('torch.', '')}", (A.to(device), b.to(device), x.to(device))))
    A = torch.tensor([[1.0, 2.0, 0.0], [2.0, -1.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)
    out.append(Case("3-D indefinite A", (A.to(device), torch.ones(3, dtype=torch.float64, device=device),
                                         torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64, device=device))))
    return out


def _gradient_ref(A, b, x):
    return A @ x - b


quadratic_gradient = Question(
    id="quadratic_gradient",
    chapter=CHAPTER,
    function="quadratic_gradient",
    points=2,
    title="Gradient of a quadratic",
    cases=_gradient_cases,
    reference=_gradient_ref,
    mistakes=(
        Mistake("the sign of b", lambda A, b, x: A @ x + b,
                "f(x) = ½ xᵀAx − bᵀx has the term −bᵀx, whose gradient is −b."),
        Mistake("a leftover ½", lambda A, b, x: 0.5 * (A @ x) - b,
                "the gradient of ½ xᵀAx is ½ (A + Aᵀ) x = Ax for symmetric A: the ½ cancels."),
        Mistake("a missing −b", lambda A, b, x: A @ x,
                "the linear term −bᵀx contributes −b to the gradient."),
    ),
    forbidden=("book.landscapes.gradient",),
)


# ---------------------------------------------------------------------------
# 2. What kind of critical point?


def _classify_cases(device) -> list[Case]:
    dt = torch.float64
    pts = [
        ("Himmelblau's minimum (3, 2)", himmelblau, (3.0, 2.0)),
        ("Himmelblau's minimum near (-3.78, -3.28)", himmelblau, himmelblau.minima[2]),
        ("Himmelblau's saddle near (0.09, 2.88)", himmelblau, himmelblau.saddles[0]),
        ("Himmelblau's saddle near (-3.07, -0.08)", himmelblau, himmelblau.saddles[1]),
        ("Himmelblau's maximum near (-0.27, -0.92)", himmelblau, (-0.270845, -0.923039)),
        ("the saddle x² − y² at 0", saddle, (0.0, 0.0)),
    ]
    # refine the rounded coordinates with a few Newton steps, so the gradient is ~0
    out = []
    for label, f, p in pts:
        x = torch.tensor(p, dtype=dt)
        for _ in range(5):
            H = torch.autograd.functional.hessian(f, x)
            gx = torch.autograd.functional.jacobian(f, x)
            x = x - torch.linalg.solve(H, gx)
        out.append(Case(label, (f, x.to(device))))
    A3 = torch.tensor([[-2.0, 0.3, 0.0], [0.3, -1.0, 0.2], [0.0, 0.2, -3.0]], dtype=dt)
    out.append(Case("3-D concave quadratic at its top", (quadratic(A3), torch.zeros(3, dtype=dt, device=device))))
    A2 = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=dt)  # eigenvalues 3 and -1
    out.append(Case("2-D saddle whose Hessian has a positive diagonal", (quadratic(A2), torch.zeros(2, dtype=dt, device=device))))
    A3s = torch.diag(torch.tensor([2.0, 1.0, -0.5], dtype=dt))
    out.append(Case("3-D quadratic with one negative curvature", (quadratic(A3s), torch.zeros(3, dtype=dt, device=device))))
    return out


def _classify_ref(f, x):
    return classify_critical_point(f, x)


def _hess(f, x):
    return torch.autograd.functional.hessian(f, x.detach())


def _by_determinant(f, x):
    return "minimum" if float(torch.linalg.det(_hess(f, x))) > 0 else "saddle"


def _by_trace(f, x):
    t = float(torch.trace(_hess(f, x)))
    return "minimum" if t > 0 else "maximum"


def _by_diagonal(f, x):
    d = torch.diagonal(_hess(f, x))
    if (d > 0).all():
        return "minimum"
    if (d < 0).all():
        return "maximum"
    return "saddle"


classify = Question(
    id="classify_critical_point",
    chapter=CHAPTER,
    function="classify",
    points=3,
    title="Minimum, maximum or saddle",
    cases=_classify_cases,
    reference=_classify_ref,
    mistakes=(
        Mistake("the determinant test", _by_determinant,
                "det H > 0 holds for a maximum too (two negative eigenvalues), and in 3-D a "
                "positive determinant can hide two negative eigenvalues; look at the sign of every eigenvalue."),
        Mistake("the trace test", _by_trace,
                "a positive trace only says the eigenvalues sum to more than 0; a saddle can have "
                "a positive trace. Look at the sign of every eigenvalue."),
        Mistake("the diagonal of the Hessian", _by_diagonal,
                "the diagonal entries are the curvatures along the axes only; a saddle can have a "
                "positive diagonal when the Hessian is not diagonal. Use the eigenvalues."),
    ),
    forbidden=("book.landscapes.classify_critical_point",),
)


# ---------------------------------------------------------------------------
# 3. Condition number and the best fixed step


def _conditioning_cases(device) -> list[Case]:
    g = torch.Generator().manual_seed(3)
    out = [Case("diag(4, 1)", (torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)).to(device),))]
    R = _rotation(math.pi / 5, torch.float64)
    A = R @ torch.diag(torch.tensor([25.0, 0.5], dtype=torch.float64)) @ R.T
    out.append(Case("rotated 2-D, eigenvalues 25 and 0.5", (A.to(device),)))
    out.append(Case("identity (kappa = 1)", (torch.eye(3, dtype=torch.float64, device=device),)))
    out.append(Case("random 6-D, kappa = 1000", (_spd(6, 1000.0, g, torch.float64).to(device),)))
    out.append(Case("random 4-D, float32", (_spd(4, 20.0, g, torch.float32).to(device),)))
    return out


def _conditioning_ref(A):
    eig = torch.linalg.eigvalsh(A.to(torch.float64))
    mu, L = float(eig[0]), float(eig[-1])
    return (L / mu, 2.0 / (L + mu))


def _diag_conditioning(A):
    d = torch.diagonal(A).to(torch.float64)
    mu, L = float(d.min()), float(d.max())
    return (L / mu, 2.0 / (L + mu))


def _one_over_L(A):
    kappa, _ = _conditioning_ref(A)
    L = float(torch.linalg.eigvalsh(A.to(torch.float64))[-1])
    return (kappa, 1.0 / L)


def _inverted_kappa(A):
    kappa, lr = _conditioning_ref(A)
    return (1.0 / kappa, lr)


conditioning = Question(
    id="conditioning",
    chapter=CHAPTER,
    function="conditioning",
    points=2,
    title="Condition number and best fixed step",
    cases=_conditioning_cases,
    reference=_conditioning_ref,
    rtol=1e-4,
    mistakes=(
        Mistake("diagonal entries instead of eigenvalues", _diag_conditioning,
                "the curvatures of a rotated bowl are the eigenvalues of A, not its diagonal entries."),
        Mistake("the step 1/L", _one_over_L,
                "1/L is safe but not best: the step that balances the slowest and fastest "
                "directions is 2/(L + μ)."),
        Mistake("kappa upside down", _inverted_kappa,
                "the condition number is largest over smallest eigenvalue, L/μ ≥ 1."),
    ),
    forbidden=("book.landscapes.ill_conditioned_quadratic",),
)

# ---------------------------------------------------------------------------
# 4. Predict: the condition number of Himmelblau's function at its minimum (3, 2)


def _kappa_cases(device):
    return [Case("your prediction of the condition number at (3, 2)")]


def _kappa_ref():
    from book.landscapes import hessian

    H = hessian(himmelblau, torch.tensor([3.0, 2.0], dtype=torch.float64))
    lam = torch.linalg.eigvalsh(H)
    return float(lam[-1] / lam[0])


def _eigenvalues(H):
    return torch.linalg.eigvalsh(torch.tensor(H, dtype=torch.float64)).tolist()


def _kappa_of(H):
    lam = _eigenvalues(H)
    return lam[-1] / lam[0]


himmelblau_kappa = Question(
    id="himmelblau_kappa",
    chapter=CHAPTER,
    function="himmelblau_kappa",
    points=2,
    title="Predict: the condition number of Himmelblau's function at (3, 2)",
    kind="predict",
    cases=_kappa_cases,
    reference=_kappa_ref,
    rtol=0.03,
    atol=0.0,
    mistakes=(
        Mistake("the ratio of the diagonal entries", lambda: 74.0 / 34.0,
                "the diagonal of the Hessian is not its spectrum: the off-diagonal 20 pushes the eigenvalues "
                "apart. Solve λ² − (trace) λ + det = 0."),
        Mistake("the inverse ratio, mu / L", lambda: 1.0 / _kappa_ref(),
                "the condition number is the largest eigenvalue over the smallest, L/μ ≥ 1."),
        Mistake("the largest eigenvalue alone", lambda: _eigenvalues([[74.0, 20.0], [20.0, 34.0]])[-1],
                "κ is a ratio, L/μ: it has no units, and scaling f does not change it."),
        Mistake("each residual's own square left out of the other's curvature",
                lambda: _kappa_of([[72.0, 20.0], [20.0, 32.0]]),
                "both squared terms curve in both directions: ∂²/∂x² of (x + y² − 7)² adds 2, and "
                "∂²/∂y² of (x² + y − 11)² adds 2. At (3, 2) the Hessian is [[74, 20], [20, 34]]."),
    ),
    forbidden=("book.landscapes.hessian", "book.landscapes.gradient", "torch.autograd", "torch.func", "torch.linalg",
               "numpy.linalg", "scipy"),
)


QUESTIONS = [quadratic_gradient, classify, conditioning, himmelblau_kappa]
