"""The references of chapter 12's questions against the maintained implementations they restate.

The questions' references are written out from the papers' formulas (book/grading/questions/frontiers.py);
these tests check them against torch.optim.Muon's and book.optim's Newton–Schulz, the lion-pytorch package,
torch.optim.Adafactor's state, and book.sharpness.SAM, so a wrong reference cannot grade students.
"""

import lion_pytorch
import torch

from book.grading.questions import frontiers as q
from book.optim.functional import newton_schulz
from book.sharpness import SAM


def test_newton_schulz_reference_is_the_iteration_torch_runs():
    for case in q._ns_cases("cpu"):
        G, steps = case.args
        ref = q._ns_ref(G.double(), steps)
        ours = newton_schulz(G.double(), steps=steps, dtype=None)
        torch.testing.assert_close(ref, ours, rtol=1e-10, atol=1e-12)
        # torch's own, in bfloat16: within what bfloat16's 8 bits allow, on full-rank matrices (on the rank-3
        # one its rounding gives the null directions singular values that the exact iteration leaves at 0)
        from torch.optim._muon import _zeropower_via_newtonschulz

        if "rank-3" in case.label:
            continue

        torch_out = _zeropower_via_newtonschulz(G.float(), q.MUON, steps, 1e-7).double()
        assert (torch_out - ref).norm() / ref.norm() < 0.05, case.label


def test_lion_reference_equals_the_lion_pytorch_package():
    for case in q._lion_cases("cpu"):
        param, grad, exp_avg, lr, betas, wd = case.args
        p = param.clone().requires_grad_(True)
        p.grad = grad.clone()
        opt = lion_pytorch.Lion([p], lr=lr, betas=betas, weight_decay=wd)
        opt.state[p]["exp_avg"] = exp_avg.clone()
        opt.step()
        new_p, new_m = q._lion_ref(param, grad, exp_avg, lr, betas, wd)
        tol = dict(rtol=1e-6, atol=1e-7) if param.dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(new_p, p.detach(), **tol)
        torch.testing.assert_close(new_m, opt.state[p]["exp_avg"], **tol)


def test_adafactor_reference_equals_torch_adafactors_state_over_two_steps():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adafactor([w], lr=1e-2)
    row = torch.zeros(7, 1, dtype=torch.float64)
    col = torch.zeros(1, 5, dtype=torch.float64)
    for t in (1, 2, 3):
        w.grad = torch.randn(7, 5, generator=g, dtype=torch.float64)
        beta2 = 1 - t ** -0.8  # torch's schedule with beta2_decay = -0.8
        row, col, V = q._ada_ref(w.grad, row, col, beta2)
        opt.step()
        torch.testing.assert_close(row, opt.state[w]["row_var"], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(col, opt.state[w]["col_var"], rtol=1e-12, atol=1e-14)
        # torch's estimate: R C / max(mean(R), eps1)
        torch.testing.assert_close(V, row @ col / row.mean().clamp(min=1e-3), rtol=1e-12, atol=1e-14)


def test_sam_reference_equals_book_sharpness_sam():
    for case in q._sam_cases("cpu"):
        params, loss_fn, lr, rho = case.args
        ref = q._sam_ref(params, loss_fn, lr, rho)
        leaves = [p.detach().clone().requires_grad_(True) for p in params]
        opt = SAM(leaves, torch.optim.SGD, rho=rho, lr=lr)

        def closure():
            opt.zero_grad()
            loss = loss_fn(leaves)
            loss.backward()
            return loss

        opt.step(closure)
        for r, p in zip(ref, leaves):
            torch.testing.assert_close(r, p.detach(), rtol=1e-5, atol=1e-7)
