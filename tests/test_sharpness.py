"""book.sharpness: HVPs and the top eigenvalue against torch.autograd.functional.hessian + eigvalsh, SAM against
its algorithm written out on a quadratic (and against the base optimizer at rho=0), and weight averaging against
torch.optim.swa_utils (AveragedModel with its default SWA average and get_ema_multi_avg_fn, update_bn)."""

from __future__ import annotations

import copy
import doctest

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import book.sharpness as sharpness
from book.normalization import BatchNorm1d
from book.sharpness import SAM, ema_update_, hvp, swa_update_, top_hessian_eigenvalue, update_bn


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is as fast and steadier on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_doctests():
    result = doctest.testmod(sharpness, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def _spd(n, gen, eigenvalues=None, dtype=torch.float64, device="cpu"):
    """A symmetric matrix with the given (or random positive) eigenvalues."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    lam = torch.rand(n, generator=gen, dtype=torch.float64) * 9 + 1 if eigenvalues is None else \
        torch.tensor(eigenvalues, dtype=torch.float64)
    return (q @ torch.diag(lam) @ q.T).to(device=device, dtype=dtype)


def _tiny_net(device, dtype, gen):
    """A 2-layer tanh net on fixed data: a non-quadratic loss with an indefinite Hessian."""
    x = torch.randn(16, 3, generator=gen, dtype=dtype).to(device)
    y = torch.randn(16, 1, generator=gen, dtype=dtype).to(device)
    w1 = torch.randn(3, 4, generator=gen, dtype=dtype).to(device).requires_grad_()
    w2 = torch.randn(4, 1, generator=gen, dtype=dtype).to(device).requires_grad_()

    def loss_of(a, b):
        return ((torch.tanh(x @ a) @ b - y) ** 2).mean()

    return [w1, w2], loss_of


def _full_hessian(loss_of, params):
    """The dense Hessian over all parameters flattened into one vector."""
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def flat_loss(theta):
        parts = [t.reshape(s) for t, s in zip(theta.split(sizes), shapes)]
        return loss_of(*parts)

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    return torch.autograd.functional.hessian(flat_loss, theta)


# ---------------------------------------------------------------------------
# Hessian-vector products


def test_hvp_of_a_quadratic_is_A_v(device, dtype):
    gen = torch.Generator().manual_seed(0)
    A = _spd(5, gen, dtype=dtype, device=device)
    x = torch.randn(5, generator=gen, dtype=dtype).to(device).requires_grad_()
    v = torch.randn(5, generator=gen, dtype=dtype).to(device)
    (hv,) = hvp(lambda: 0.5 * x @ A @ x, [x], [v])
    torch.testing.assert_close(hv, A @ v)


def test_hvp_of_a_network_equals_the_dense_hessian(device, dtype):
    gen = torch.Generator().manual_seed(1)
    params, loss_of = _tiny_net(device, dtype, gen)
    H = _full_hessian(loss_of, params)
    v = [torch.randn(p.shape, generator=gen, dtype=dtype).to(device) for p in params]
    hv = hvp(lambda: loss_of(*params), params, v)
    expected = H @ torch.cat([u.reshape(-1) for u in v])
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.cat([h.reshape(-1) for h in hv]), expected, **tol)


def test_hvp_of_a_linear_loss_is_zero():
    x = torch.ones(3, requires_grad=True)
    assert torch.equal(hvp(lambda: x.sum(), x, torch.ones(3))[0], torch.zeros(3))


@pytest.mark.parametrize("call, error, match", [
    (lambda x: hvp(lambda: (x ** 2).sum(), [x.detach()], [torch.ones(3)]), ValueError, "does not require grad"),
    (lambda x: hvp(lambda: (x ** 2).sum(), [x], [torch.ones(2)]), ValueError, r"v\[0\] has shape \(2,\)"),
    (lambda x: hvp(lambda: (x ** 2).sum(), [x], [torch.ones(3)] * 2), ValueError, "v has 2 tensors"),
    (lambda x: hvp(lambda: x ** 2, [x], [torch.ones(3)]), ValueError, "scalar"),
    (lambda x: hvp(lambda: (x ** 2).sum(), [], []), ValueError, "params is empty"),
    (lambda x: top_hessian_eigenvalue(lambda: (x ** 2).sum(), x, iters=0), ValueError, "iters must be >= 1"),
    (lambda x: top_hessian_eigenvalue(lambda: (x ** 2).sum(), x, tol=-1), ValueError, "tol must be >= 0"),
    (lambda x: top_hessian_eigenvalue(lambda: (x ** 2).sum(), x, generator=0), TypeError, "generator"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.ones(3, requires_grad=True))


# ---------------------------------------------------------------------------
# The top eigenvalue


@pytest.mark.parametrize("eigenvalues", [
    [1.0, 2.0, 5.0, 10.0],            # well separated: a few iterations
    [0.1, 3.0, 7.0, 7.5],             # close top pair: ratio 0.93, slower
    [-20.0, -1.0, 2.0, 4.0],          # dominant negative eigenvalue: needs the shift
    [-3.0, -2.0, -1.0, -0.5],         # negative definite: λ_max = -0.5
])
def test_top_eigenvalue_of_a_quadratic_is_the_largest_eigenvalue_of_A(device, eigenvalues):
    gen = torch.Generator().manual_seed(2)
    A = _spd(4, gen, eigenvalues, device=device)
    x = torch.randn(4, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    top = top_hessian_eigenvalue(lambda: 0.5 * x @ A @ x, [x], iters=2000, tol=1e-12,
                                 generator=torch.Generator().manual_seed(0))
    assert top.converged
    assert top.value == pytest.approx(max(eigenvalues), rel=1e-6)
    (v,) = top.vector
    assert torch.linalg.vector_norm(v).item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(A @ v, top.value * v, atol=1e-4, rtol=0)  # an eigenvector


def test_top_eigenvalue_of_a_network_equals_eigvalsh_of_the_dense_hessian(device, dtype):
    gen = torch.Generator().manual_seed(3)
    params, loss_of = _tiny_net(device, dtype, gen)
    expected = torch.linalg.eigvalsh(_full_hessian(loss_of, params).double())[-1].item()
    top = top_hessian_eigenvalue(lambda: loss_of(*params), params, iters=1000, tol=1e-10 if dtype == torch.float64
                                 else 1e-7, generator=torch.Generator().manual_seed(0))
    assert top.value == pytest.approx(expected, rel=1e-5 if dtype == torch.float64 else 1e-3)


def test_top_eigenvalue_is_reproducible_with_a_generator_and_reports_no_convergence():
    gen = torch.Generator().manual_seed(4)
    A = _spd(6, gen, [1.0, 2.0, 3.0, 4.0, 9.9, 10.0])  # ratio 0.99
    x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    runs = [top_hessian_eigenvalue(lambda: 0.5 * x @ A @ x, x, iters=5, tol=1e-12,
                                   generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert runs[0].value == runs[1].value and torch.equal(runs[0].vector[0], runs[1].vector[0])
    assert not runs[0].converged and runs[0].iterations == 5
    assert 9.9 < runs[0].value <= 10.0   # the Rayleigh quotient never overshoots λ_max


def test_top_eigenvalue_warm_started_from_an_eigenvector_converges_at_once_and_v0_is_checked():
    gen = torch.Generator().manual_seed(4)
    A = _spd(6, gen, [1.0, 2.0, 3.0, 4.0, 9.0, 10.0])
    x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    loss = lambda: 0.5 * x @ A @ x  # noqa: E731
    cold = top_hessian_eigenvalue(loss, x, iters=2000, tol=1e-12, generator=torch.Generator().manual_seed(0))
    warm = top_hessian_eigenvalue(loss, x, iters=2000, tol=1e-12, v0=[3.0 * cold.vector[0]])  # any norm
    assert warm.value == pytest.approx(10.0, rel=1e-9) and warm.iterations <= 3 < cold.iterations
    with pytest.raises(ValueError, match="shaped like"):
        top_hessian_eigenvalue(loss, x, v0=[torch.ones(5, dtype=torch.float64)])
    with pytest.raises(ValueError, match="zero vector"):
        top_hessian_eigenvalue(loss, x, v0=torch.zeros(6, dtype=torch.float64))


def test_sharpness_of_gd_on_a_quadratic_sets_its_stability_limit():
    """GD on ½xᵀAx converges iff lr < 2/λ_max: the measured sharpness predicts it."""
    A = _spd(3, torch.Generator().manual_seed(5), [0.5, 2.0, 8.0])
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    lam = top_hessian_eigenvalue(lambda: 0.5 * x @ A @ x, x, tol=1e-10,
                                 generator=torch.Generator().manual_seed(0)).value
    for lr, stable in [(0.99 * 2 / lam, True), (1.01 * 2 / lam, False)]:
        z = torch.ones(3, dtype=torch.float64)
        for _ in range(2000):
            z = z - lr * (A @ z)
        assert (z.norm() < 1).item() == stable


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_batch_gd_trains_at_the_edge_of_stability(seed):
    """Cohen et al. (2021) in miniature: full-batch GD (lr 0.25) on a 5-32-1 tanh MLP starts with sharpness
    below 2/lr (0.66-0.87 of it over seeds 0-5), rises to it, and hovers there (late mean 1.00-1.014 of 2/lr,
    every late value within 0.90-1.10) while the loss keeps falling, non-monotonically."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=gen)
    y = torch.sin(x @ torch.randn(5, 1, generator=gen))
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    params, lr = list(net.parameters()), 0.25

    def loss_fn():
        return ((net(x) - y) ** 2).mean()

    def sharpness():
        return top_hessian_eigenvalue(loss_fn, params, iters=100, tol=1e-4,
                                      generator=torch.Generator().manual_seed(0)).value

    first_loss, first_sharpness, late = loss_fn().item(), sharpness(), []
    for step in range(1, 801):
        net.zero_grad()
        loss_fn().backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        if step >= 500 and step % 20 == 0:
            late.append(sharpness() * lr / 2)
    assert first_sharpness * lr / 2 < 0.9
    assert sum(late) / len(late) == pytest.approx(1.0, abs=0.05)
    assert 0.85 < min(late) and max(late) < 1.15
    assert loss_fn().item() < first_loss / 5


# ---------------------------------------------------------------------------
# SAM


def _quadratic_problem(device, dtype, seed=6):
    gen = torch.Generator().manual_seed(seed)
    A = _spd(4, gen, dtype=dtype, device=device)
    b = torch.randn(4, generator=gen, dtype=dtype).to(device)
    w0 = torch.randn(4, generator=gen, dtype=dtype).to(device)
    return A, b, w0


def _sam_by_hand(A, b, w0, lr, rho, momentum, steps, adaptive=False):
    """Foret et al.'s Algorithm 1 on L(w) = ½wᵀAw - bᵀw (∇L = Aw - b), base SGD with torch's momentum."""
    w, buf = w0.clone(), None
    for _ in range(steps):
        g = A @ w - b
        if adaptive:  # ASAM: ε = ρ w² g / ‖|w| g‖
            eps = rho * w * w * g / ((w.abs() * g).norm() + 1e-12)
        else:         # SAM: ε = ρ g / ‖g‖
            eps = rho * g / (g.norm() + 1e-12)
        g_sam = A @ (w + eps) - b
        buf = g_sam.clone() if buf is None else momentum * buf + g_sam
        w = w - lr * (buf if momentum else g_sam)
    return w


def _run_sam(opt_factory, A, b, w0, steps):
    w = w0.clone().requires_grad_()
    opt = opt_factory([w])

    def closure():
        opt.zero_grad()
        loss = 0.5 * w @ A @ w - b @ w
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return w.detach(), opt


@pytest.mark.parametrize("momentum, adaptive", [(0.0, False), (0.9, False), (0.9, True)])
def test_sam_equals_its_algorithm_on_a_quadratic(device, dtype, momentum, adaptive):
    A, b, w0 = _quadratic_problem(device, dtype)
    # 20 steps, still far from the minimum: near it g/‖g‖ turns at every step and float32 rounding is amplified
    expected = _sam_by_hand(A, b, w0, lr=0.02, rho=0.1, momentum=momentum, steps=20, adaptive=adaptive)
    got, _ = _run_sam(lambda p: SAM(p, torch.optim.SGD, rho=0.1, adaptive=adaptive, lr=0.02, momentum=momentum),
                      A, b, w0, steps=20)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(got, expected, **tol)


def test_first_and_second_step_by_hand_equal_step_with_a_closure(device):
    A, b, w0 = _quadratic_problem(device, torch.float64)
    expected, _ = _run_sam(lambda p: SAM(p, torch.optim.SGD, rho=0.2, lr=0.1), A, b, w0, steps=3)
    w = w0.clone().requires_grad_()
    opt = SAM([w], torch.optim.SGD, rho=0.2, lr=0.1)
    for _ in range(3):
        (0.5 * w @ A @ w - b @ w).backward()
        opt.first_step(zero_grad=True)
        g = A @ w.detach() - b                                   # at w + ε now
        (0.5 * w @ A @ w - b @ w).backward()
        torch.testing.assert_close(w.grad, g)
        opt.second_step(zero_grad=True)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("base, kwargs", [
    (torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (torch.optim.Adam, dict(lr=0.01, weight_decay=0.01)),
])
def test_sam_with_rho_zero_is_the_base_optimizer(device, base, kwargs):
    A, b, w0 = _quadratic_problem(device, torch.float32)
    got, _ = _run_sam(lambda p: SAM(p, base, rho=0.0, **kwargs), A, b, w0, steps=30)
    expected, _ = _run_sam(lambda p: base(p, **kwargs), A, b, w0, steps=30)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_sam_state_dict_resume_reproduces_the_uninterrupted_run(device):
    A, b, w0 = _quadratic_problem(device, torch.float32)

    def make(p):
        return SAM(p, torch.optim.Adam, rho=0.05, lr=0.01)

    straight, _ = _run_sam(make, A, b, w0, steps=20)
    half, opt = _run_sam(make, A, b, w0, steps=10)
    state = copy.deepcopy(opt.state_dict())
    assert state["param_groups"][0]["rho"] == 0.05 and "exp_avg" in state["state"][0]
    resumed, _ = _run_sam(lambda p: (o := make(p)).load_state_dict(state) or o, A, b, half, steps=10)
    torch.testing.assert_close(resumed, straight, rtol=0, atol=0)


def test_sam_shares_param_groups_with_its_base_so_schedules_reach_it():
    w = torch.zeros(2, requires_grad=True)
    opt = SAM([w], torch.optim.SGD, lr=0.1)
    opt.param_groups[0]["lr"] = 0.01
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.01
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(lambda: (w.grad.zero_() if w.grad is not None else None, (w ** 2).sum().backward())[-1])
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_on_a_quadratic_the_sam_gradient_is_the_gradient_of_loss_plus_rho_gradient_norm(device):
    """On L = ½wᵀAw − bᵀw, ∇L(w + ρg/‖g‖) = g + ρAg/‖g‖ = ∇_w[L(w) + ρ‖∇L(w)‖] exactly:
    SAM descends the loss penalised by its gradient norm, which is what makes it prefer flat regions."""
    A, b, w0 = _quadratic_problem(device, torch.float64)
    rho = 0.3
    w = w0.clone().requires_grad_()
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=0.1)
    (0.5 * w @ A @ w - b @ w).backward()
    opt.first_step(zero_grad=True)
    (0.5 * w @ A @ w - b @ w).backward()                # the SAM gradient, at w + ε
    sam_grad = w.grad.clone()

    v = w0.clone().requires_grad_()
    loss = 0.5 * v @ A @ v - b @ v
    (g,) = torch.autograd.grad(loss, v, create_graph=True)
    (penalised,) = torch.autograd.grad(loss + rho * g.norm(), v)
    torch.testing.assert_close(sam_grad, penalised, rtol=1e-10, atol=1e-12)


def test_step_uses_gradients_already_computed_and_clears_them(device):
    """The authors' protocol: backward() at w first, then step(closure) evaluates only at w + ε."""
    A, b, w0 = _quadratic_problem(device, torch.float64)
    expected, _ = _run_sam(lambda p: SAM(p, torch.optim.SGD, rho=0.2, lr=0.1), A, b, w0, steps=3)
    w = w0.clone().requires_grad_()
    opt = SAM([w], torch.optim.SGD, rho=0.2, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = 0.5 * w @ A @ w - b @ w
        loss.backward()
        return loss

    for _ in range(3):
        (0.5 * w @ A @ w - b @ w).backward()
        assert opt.step(closure) is None and w.grad is None
    assert len(calls) == 3                                 # once per step: only at w + ε
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=0)


def test_sam_through_fit_with_closure_equals_the_two_step_loop(one_thread):
    from book.train import fit

    gen = torch.Generator().manual_seed(10)
    x, y = torch.randn(40, 3, generator=gen), torch.randn(40, 1, generator=gen)

    def make():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        return net, SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

    net, opt = make()
    fit(net, opt, torch.nn.functional.mse_loss, (x, y), epochs=5, batch_size=None, closure=True, progress=False)
    ref, ref_opt = make()
    for _ in range(5):
        torch.nn.functional.mse_loss(ref(x), y).backward()
        ref_opt.first_step(zero_grad=True)
        torch.nn.functional.mse_loss(ref(x), y).backward()
        ref_opt.second_step(zero_grad=True)
    # fit visits the samples in a shuffled order even in full batch: sums round differently (measured 3e-8)
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_sam_over_a_book_optimizer_equals_sam_over_torch_s(device):
    from book.optim import Adam

    A, b, w0 = _quadratic_problem(device, torch.float32)
    ours, _ = _run_sam(lambda p: SAM(p, Adam, rho=0.05, lr=0.01), A, b, w0, steps=20)
    theirs, _ = _run_sam(lambda p: SAM(p, torch.optim.Adam, rho=0.05, lr=0.01), A, b, w0, steps=20)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(base_optimizer=torch.optim.SGD, rho=-0.1, lr=0.1), ValueError, "rho must be >= 0"),
    (dict(base_optimizer=torch.optim.SGD(
        [torch.zeros(1, requires_grad=True)], lr=0.1), lr=0.1), TypeError, "must be a torch.optim.Optimizer class"),
    (dict(base_optimizer=torch.optim.SGD, adaptive=1, lr=0.1), TypeError, "adaptive must be a bool"),
    (dict(base_optimizer=torch.optim.SGD, lr=-1.0), ValueError, "Invalid learning rate"),
])
def test_sam_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SAM([torch.zeros(2, requires_grad=True)], **kwargs)


def test_sam_step_needs_a_closure_and_first_step_needs_gradients():
    opt = SAM([torch.zeros(2, requires_grad=True)], torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="no parameter has a gradient"):
        opt.first_step()


# ---------------------------------------------------------------------------
# Weight averaging against torch.optim.swa_utils


def _net(device, dtype, bn=torch.nn.BatchNorm1d):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), bn(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).to(device, dtype)


def _train_and_average(device, dtype, averaged, fold):
    """Ten SGD steps; after each, the book's average folds the weights in and torch's AveragedModel updates."""
    gen = torch.Generator().manual_seed(8)
    model = _net(device, dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ours, n = None, 0
    for _ in range(10):
        x = torch.randn(32, 5, generator=gen, dtype=dtype).to(device)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        averaged.update_parameters(model)
        if ours is None:   # AveragedModel copies at its first update
            ours = [p.detach().clone() for p in model.parameters()]
        else:
            fold(ours, list(model.parameters()), n)
        n += 1
    return ours, [p.detach() for p in averaged.module.parameters()]


def test_swa_update_equals_averaged_model_default(device, dtype):
    ours, theirs = _train_and_average(device, dtype, AveragedModel(_net(device, dtype)),
                                      lambda avg, ps, n: swa_update_(avg, ps, num_averaged=n))
    # bit for bit on the CPU (torch's get_swa_avg_fn); on CUDA torch lerps with a float32 weight 1/(n+1)
    tol = dict(rtol=0, atol=0) if device.type == "cpu" else dict(rtol=1e-6, atol=1e-6)
    for a, t in zip(ours, theirs):
        torch.testing.assert_close(a, t, **tol)


def test_ema_update_equals_averaged_model_with_get_ema_multi_avg_fn(device, dtype):
    torch_ema = AveragedModel(_net(device, dtype), multi_avg_fn=get_ema_multi_avg_fn(0.9))
    ours, theirs = _train_and_average(device, dtype, torch_ema, lambda avg, ps, n: ema_update_(avg, ps, decay=0.9))
    for a, t in zip(ours, theirs):
        torch.testing.assert_close(a, t, rtol=0, atol=0)


def test_swa_is_the_mean_and_ema_the_weighted_sum():
    ws = [torch.tensor([float(k)], dtype=torch.float64) for k in (1, 2, 6)]
    swa, ema = [ws[0].clone()], [ws[0].clone()]
    for n, w in enumerate(ws[1:], start=1):
        swa_update_(swa, [w], n)
        ema_update_(ema, [w], 0.5)
    assert swa[0].item() == pytest.approx(3.0)                      # (1 + 2 + 6) / 3
    assert ema[0].item() == pytest.approx(0.25 * 1 + 0.25 * 2 + 0.5 * 6)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ema_update_([torch.zeros(2)], [torch.zeros(2)], decay=1.5), ValueError, r"decay must be in \[0, 1\]"),
    (lambda: swa_update_([torch.zeros(2)], [torch.zeros(2)], num_averaged=-1), ValueError, "num_averaged must be >= 0"),
    (lambda: ema_update_([torch.zeros(2)], [torch.zeros(3)], 0.9), ValueError, r"avg_params\[0\] has shape \(2,\)"),
    (lambda: swa_update_([torch.zeros(2)], [], 1), ValueError, "params is empty"),
])
def test_averaging_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("bn", [torch.nn.BatchNorm1d, BatchNorm1d], ids=["torch.nn", "book"])
def test_update_bn_equals_torch_update_bn(device, bn):
    gen = torch.Generator().manual_seed(9)
    batches = [(torch.randn(16, 5, generator=gen).to(device) * 3 + 1, torch.zeros(16)) for _ in range(4)]
    ours, reference = _net(device, torch.float32, bn), _net(device, torch.float32, torch.nn.BatchNorm1d)
    ours.eval(), reference.eval()
    update_bn(batches, ours)
    torch.optim.swa_utils.update_bn(batches, reference)
    assert not ours.training and ours[1].momentum == 0.1   # mode and momentum restored
    torch.testing.assert_close(ours[1].running_mean, reference[1].running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours[1].running_var, reference[1].running_var, rtol=1e-6, atol=1e-6)
    # the cumulative average is the plain mean of the four batches' statistics
    with torch.no_grad():
        h = [reference[0](x) for x, _ in batches]
    torch.testing.assert_close(reference[1].running_mean, torch.stack([t.mean(0) for t in h]).mean(0))


def test_torch_update_bn_skips_the_books_batch_norm_but_ours_does_not():
    """Why the book has its own update_bn: torch's only recognises torch.nn's _BatchNorm."""
    batches = [torch.randn(16, 5) * 3 + 1 for _ in range(2)]
    net = _net("cpu", torch.float32, BatchNorm1d)
    torch.optim.swa_utils.update_bn(batches, net)
    assert torch.equal(net[1].running_mean, torch.zeros(8))
    update_bn(batches, net)
    assert not torch.equal(net[1].running_mean, torch.zeros(8))


def test_averages_in_float32_of_low_precision_weights():
    # a float32 average of bfloat16 weights (a common way to keep an EMA): cast, as swa_update_ does
    w = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    ema, swa = [torch.zeros(2)], [torch.zeros(2)]
    ema_update_(ema, [w], decay=0.5)
    swa_update_(swa, [w], num_averaged=1)
    torch.testing.assert_close(ema[0], torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(swa[0], torch.tensor([0.5, 1.0]))
    assert ema[0].dtype == swa[0].dtype == torch.float32
