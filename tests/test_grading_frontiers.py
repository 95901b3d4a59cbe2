"""The references of chapter 12's questions, against independent implementations.

The grader's registry-driven tests (test_grading.py) prove that the solutions pass, the stubs
fail and every known mistake is named; they trust the references. Here each reference is
compared, on the question's own inputs, with a maintained implementation of the same thing
(torch.optim, lion-pytorch, the book's tested kernels) or with a second derivation, which the
references themselves may not use.
"""

from __future__ import annotations

import copy

import pytest
import torch

from book.grading.questions import frontiers as fq

CPU = torch.device("cpu")


def cases(q):
    return copy.deepcopy(list(q.cases(CPU)))


# ---------------------------------------------------------------------------
# newton_schulz


def _scalar_map(s, steps):
    a, b, c = fq.MUON_ABC
    for _ in range(steps):
        s = a * s + b * s ** 3 + c * s ** 5
    return s


@pytest.mark.parametrize("i", range(len(fq._ns_cases(CPU))))
def test_newton_schulz_reference_is_u_p_of_s_v(i):
    """The iteration acts on singular values only: X_k = U p^(k)(S / ‖G‖_F) Vᵀ (an SVD in float64)."""
    case = cases(fq.newton_schulz)[i]
    G = case.args[0].to(torch.float64)
    steps = case.kwargs.get("steps", 5)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    scale = max(float(torch.linalg.matrix_norm(G)), 1e-7)
    want = U @ torch.diag(_scalar_map(S / scale, steps)) @ Vh
    torch.testing.assert_close(fq._ns_ref(*case.args, **case.kwargs), want, rtol=0, atol=1e-10)


def test_newton_schulz_singular_values_land_in_muons_band():
    """Five steps send every singular value of G / ‖G‖_F in [0.0021, 1] into [0.68, 1.21] (the kernel's docstring)."""
    for case in cases(fq.newton_schulz):
        if case.kwargs.get("steps", 5) != 5 or not case.args[0].any():
            continue
        G = case.args[0].to(torch.float64)
        s = torch.linalg.svdvals(G) / torch.linalg.matrix_norm(G)
        out = torch.linalg.svdvals(fq._ns_ref(*case.args))
        big = s >= 0.0021
        assert big.any()
        assert bool(((out[big] > 0.68) & (out[big] < 1.21)).all()), (case.label, out)


def test_newton_schulz_reference_equals_the_book_kernel_and_torch_muon():
    from book.optim.functional import newton_schulz as kernel

    for case in cases(fq.newton_schulz):
        G, steps = case.args[0], case.kwargs.get("steps", 5)
        ref = fq._ns_ref(G, steps)
        torch.testing.assert_close(kernel(G.to(torch.float64), steps, dtype=None), ref, rtol=0, atol=1e-12)
        s = torch.linalg.svdvals(G.double())
        if not G.any() or s.min() < 0.01 * s.max():
            continue  # bfloat16 rounding in a null space is amplified ~485 times: no two-digit agreement there
        # torch.optim.Muon's step from zero with lr 1, no decay and a wide matrix: p = -NS(momentum) in bfloat16
        p = torch.zeros(G.shape[1], G.shape[0]) if G.shape[0] > G.shape[1] else torch.zeros_like(G)
        p = p.T.contiguous() if G.shape[0] > G.shape[1] else p
        p.requires_grad_(True)
        p.grad = G.clone().float()
        opt = torch.optim.Muon([p], lr=1.0, weight_decay=0.0, momentum=0.9, nesterov=False, ns_steps=steps,
                               adjust_lr_fn="original")
        opt.step()
        lr_scale = max(1.0, G.shape[0] / G.shape[1]) ** 0.5  # 'original': sqrt(max(1, A/B))
        got = -p.detach().double() / lr_scale
        torch.testing.assert_close(got, ref, rtol=0, atol=6e-2)  # bfloat16 keeps 2-3 digits


# ---------------------------------------------------------------------------
# lion_step


@pytest.mark.parametrize("i", range(len(fq._lion_cases(CPU))))
def test_lion_reference_equals_lion_pytorch(i):
    from lion_pytorch import Lion

    param, grad, exp_avg, lr, betas, weight_decay = cases(fq.lion_step)[i].args
    new_p, new_m = fq._lion_ref(param, grad, exp_avg, lr, betas, weight_decay)
    p = param.clone().requires_grad_(True)
    p.grad = grad.clone()
    opt = Lion([p], lr=lr, betas=betas, weight_decay=weight_decay)
    opt.state[p]["exp_avg"] = exp_avg.clone()  # a step from this momentum, not from zero
    opt.step()
    tol = dict(rtol=1e-6, atol=1e-7) if param.dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(p.detach().double(), new_p, **tol)
    torch.testing.assert_close(opt.state[p]["exp_avg"].double(), new_m, **tol)


def test_lion_cases_keep_the_sign_away_from_rounding():
    """The sign is discontinuous: every interpolation is exactly 0 or far from it in float32."""
    for case in cases(fq.lion_step):
        param, grad, exp_avg, lr, (b1, b2), wd = case.args
        c = (b1 * exp_avg.double() + (1 - b1) * grad.double()).abs()
        assert bool(((c == 0) | (c > 1e-4)).all()), case.label


# ---------------------------------------------------------------------------
# adafactor_second_moment


@pytest.mark.parametrize("i", range(len(fq._ada_cases(CPU))))
def test_adafactor_reference_equals_torch_adafactor(i):
    """One torch.optim.Adafactor step from the case's state: the same R and C, and the update that V̂ gives."""
    grad, row_var, col_var, beta2, eps1 = (a.double() if isinstance(a, torch.Tensor) else a
                                           for a in cases(fq.adafactor_second_moment)[i].args)
    R, C, V = fq._ada_ref(grad, row_var, col_var, beta2, eps1)
    # the step t whose decay is this beta2 (1 - beta2 = t^-0.8); a fixed beta2: tau = log(1 - beta2) / log 2 at t = 2,
    # exact up to the rounding of that logarithm (hence rtol 1e-9)
    if beta2 == 0.0:
        t, tau = 1, -0.8
    elif beta2 == 0.999:
        t, tau = 2, float(torch.log(torch.tensor(1 - beta2, dtype=torch.float64)) / torch.log(torch.tensor(2.0)))
    else:
        t, tau = round((1 - beta2) ** (-1 / 0.8)), -0.8
        assert abs(1 - t ** -0.8 - beta2) < 1e-12
    p = (0.5 + torch.arange(grad.numel(), dtype=torch.float64).reshape(grad.shape) / grad.numel()).requires_grad_(True)
    p0 = p.detach().clone()
    p.grad = grad.clone()
    opt = torch.optim.Adafactor([p], lr=1.0, beta2_decay=tau, eps=(eps1, 1e-3), d=1e30)
    opt.state[p].update(step=torch.tensor(float(t - 1)), row_var=row_var[:, None].clone(),
                        col_var=col_var[None, :].clone())
    opt.step()
    torch.testing.assert_close(opt.state[p]["row_var"][:, 0], R, rtol=1e-9, atol=1e-300)
    torch.testing.assert_close(opt.state[p]["col_var"][0], C, rtol=1e-9, atol=1e-300)
    alpha = max(1e-3, float(p0.pow(2).mean().sqrt())) * min(1.0, t ** -0.5)
    update = grad / V.clamp(min=eps1 * eps1).sqrt()  # no clipping: d is huge
    torch.testing.assert_close(p.detach(), p0 - alpha * update, rtol=1e-9, atol=1e-15)


def test_adafactor_rank_one_case_is_exact():
    case = next(c for c in cases(fq.adafactor_second_moment) if "rank-one" in c.label)
    grad = case.args[0]
    torch.testing.assert_close(fq._ada_ref(*case.args)[2], grad * grad, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------
# sam_step


@pytest.mark.parametrize("i", range(len(fq._sam_cases(CPU))))
def test_sam_reference_equals_book_sharpness_sam(i):
    from book.sharpness import SAM

    loss_fn, params, rho, lr = cases(fq.sam_step)[i].args
    want = fq._sam_ref(loss_fn, params, rho, lr)
    ws = [p.detach().double().clone().requires_grad_(True) for p in params]
    opt = SAM(ws, torch.optim.SGD, rho=rho, lr=lr)

    def closure():
        opt.zero_grad()
        loss = loss_fn(ws)
        loss.backward()
        return loss

    opt.step(closure)
    for got, w in zip(ws, want):
        torch.testing.assert_close(got.detach(), w, rtol=1e-9, atol=1e-12)  # SAM adds 1e-12 to the norm


# ---------------------------------------------------------------------------
# Answers that hand the work to a library


@pytest.mark.parametrize("qid, src, name", [
    ("newton_schulz", "import torch\ndef newton_schulz(G, steps=5):\n    U, S, Vh = torch.linalg.svd(G)\n"
                      "    return U @ Vh\n", "torch.linalg.svd"),
    ("newton_schulz", "from book.optim.functional import newton_schulz as ns\n"
                      "def newton_schulz(G, steps=5):\n    return ns(G, steps, dtype=None)\n", "book.optim"),
    ("lion_step", "import lion_pytorch\ndef lion_step(p, g, m, lr, betas, wd):\n    return lion_pytorch.Lion\n",
     "lion_pytorch"),
    ("adafactor_second_moment", "import torch\ndef adafactor_second_moment(g, r, c, b, e):\n"
                                "    return torch.optim.Adafactor\n", "torch.optim"),
    ("sam_step", "from book.sharpness import SAM\ndef sam_step(loss_fn, params, rho, lr):\n    return SAM\n",
     "book.sharpness"),
], ids=["newton_schulz-svd", "newton_schulz-kernel", "lion_step", "adafactor_second_moment", "sam_step"])
def test_library_answers_are_refused(qid, src, name):
    """What the command-line grader and check() test before running an answer (test_grading.py runs them)."""
    from book.grading.questions import get_question
    from book.grading.static import forbidden_uses

    q = get_question(qid)
    assert name in forbidden_uses([src], q.forbidden, q.function)
