"""book.optim.compiled: the compiled functional kernels, one tensor or a flat buffer of many, equal the kernels.

Compiling is slow (seconds per option set), so the cases are few and chosen so that every
option of the kernels is on in one case and off in another (checked by
``test_the_cases_cover_every_option``), the single tensors are just above
``compiled.MIN_NUMEL`` (smaller ones take the eager kernel), and the class tests reuse the
option sets of the kernel tests: one program serves every buffer length, so each option set
compiles once per process. It skips, with the reason, where ``torch.compile`` cannot work.
"""

from __future__ import annotations

import io

import pytest
import torch

from book.optim import compiled
from book.optim import functional as F

_OK, _WHY = compiled.available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"torch.compile unavailable: {_WHY}")

N = compiled.MIN_NUMEL + 5  # just large enough for the compiled path; odd, to exercise the loop's tail
STEPS = 20


@pytest.fixture(scope="module")
def compiles() -> None:
    """Compile the default Adam step once; skip the module if compilation itself fails here."""
    p = torch.zeros(N)
    try:
        compiled.adam(p, torch.ones(N), torch.zeros(N), torch.zeros(N), None, torch.tensor(0.0))
    except Exception as err:  # a missing header, an unsupported platform ...
        pytest.skip(f"torch.compile failed on this machine: {type(err).__name__}: {err}")


def _reference_adam():
    """The single-tensor kernel (book.optim.functional.adam), or torch's own single-tensor Adam."""
    if hasattr(F, "adam"):
        return F.adam

    def torch_adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, *, lr, betas, eps,
                   weight_decay, amsgrad, maximize, decoupled_weight_decay):
        fn = torch.optim.adamw.adamw if decoupled_weight_decay else torch.optim.adam.adam
        fn([param], [grad], [exp_avg], [exp_avg_sq], [max_exp_avg_sq] if amsgrad else [], [step],
           foreach=False, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
           amsgrad=amsgrad, maximize=maximize, capturable=False, differentiable=False)

    return torch_adam


ADAM_CASES = [
    pytest.param(dict(), id="adam"),
    pytest.param(dict(amsgrad=True, weight_decay=0.1, eps=1e-6), id="amsgrad-l2"),
    pytest.param(dict(weight_decay=0.05, decoupled_weight_decay=True, maximize=True, betas=(0.8, 0.99)),
                 id="adamw-maximize"),
    pytest.param(dict(amsgrad=True, weight_decay=0.01, decoupled_weight_decay=True), id="adamw-amsgrad"),
]


def _assert_close(actual, expected, what):
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("options", ADAM_CASES)
def test_adam_equals_kernel(compiles, device, options):
    gen = torch.Generator().manual_seed(0)
    param = torch.randn(N, generator=gen).to(device)
    grads = [torch.randn(N, generator=gen).to(device) for _ in range(STEPS)]
    amsgrad = options.get("amsgrad", False)
    states = []
    for _ in range(2):  # (compiled, kernel): params, exp_avg, exp_avg_sq, max_exp_avg_sq, step
        states.append([param.clone(), torch.zeros_like(param), torch.zeros_like(param),
                       torch.zeros_like(param) if amsgrad else None, torch.tensor(0.0)])
    kernel = _reference_adam()
    for k, grad in enumerate(grads):
        lr = 0.01 * (1 - k / STEPS)  # a schedule: new values must not recompile (checked below)
        compiled.adam(states[0][0], grad, *states[0][1:], lr=lr, **options)
        kernel(states[1][0], grad, *states[1][1:], lr=lr, **{"betas": (0.9, 0.999), "eps": 1e-8,
               "weight_decay": 0.0, "amsgrad": False, "maximize": False, "decoupled_weight_decay": False,
               **options})
    for name, a, b in zip(["param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"], states[0], states[1]):
        if b is not None:
            _assert_close(a, b, name)
    assert not torch.equal(states[0][0], param)  # it moved


def test_adamw_is_decoupled_adam(compiles, device):
    gen = torch.Generator().manual_seed(1)
    p1 = torch.randn(N, generator=gen).to(device)
    p2 = p1.clone()
    s1 = [torch.zeros_like(p1), torch.zeros_like(p1), None, torch.tensor(0.0)]
    s2 = [torch.zeros_like(p1), torch.zeros_like(p1), None, torch.tensor(0.0)]
    for _ in range(3):
        grad = torch.randn(N, generator=gen).to(device)
        compiled.adamw(p1, grad, *s1, lr=0.01, weight_decay=0.05, maximize=True, betas=(0.8, 0.99))
        compiled.adam(p2, grad, *s2, lr=0.01, weight_decay=0.05, maximize=True, betas=(0.8, 0.99),
                      decoupled_weight_decay=True)
    torch.testing.assert_close(p1, p2, rtol=0, atol=0)


def test_no_recompilation_across_steps_and_learning_rates(compiles):
    from torch._dynamo.utils import counters

    p, m, v, t = torch.randn(N), torch.zeros(N), torch.zeros(N), torch.tensor(0.0)
    compiled.adam(p, torch.randn(N), m, v, None, t, lr=0.1)
    before = counters["stats"]["unique_graphs"]
    for k in range(5):
        compiled.adam(p, torch.randn(N), m, v, None, t, lr=0.1 / (k + 2))
    assert counters["stats"]["unique_graphs"] == before
    assert t.item() == 6


def _dynamo_path_only(monkeypatch):
    """Make every call go through torch.compile's own wrapper (TorchDynamo's guards), never the direct call."""
    monkeypatch.setattr(compiled._Program, "accepts", lambda self, args: False)


@pytest.mark.parametrize("n", [2, 3, 17, N, 3 * N + 1])
@pytest.mark.parametrize("options", ADAM_CASES + [pytest.param("sgd", id="sgd-nesterov")])
def test_the_direct_call_runs_the_program_torch_compile_runs(compiles, monkeypatch, n, options):
    """Called without TorchDynamo, the built program gives bit for bit what torch.compile's own call gives,
    for buffer lengths from 2 up (the lengths compiled._Program.accepts)."""
    gen = torch.Generator().manual_seed(n)
    start = [torch.randn(n, generator=gen) for _ in range(2)] + [torch.rand(n, generator=gen) for _ in range(2)]
    grads = [torch.randn(n, generator=gen) for _ in range(3)]

    def run() -> list[torch.Tensor]:
        p, m, v, vmax = (t.clone() for t in start)
        for k, g in enumerate(grads):
            if options == "sgd":
                compiled._sgd_call(p, g, m, lr=0.05 / (k + 1), momentum=0.9, dampening=0.0, weight_decay=0.01,
                                   nesterov=True, maximize=False)
            else:
                hyper = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                             decoupled_weight_decay=False) | options
                compiled._adam_call(p, g, m, v, vmax, float(k + 1), **hyper)
        return [p, m, v, vmax]

    with torch.no_grad():
        run()  # the first call compiles (through TorchDynamo) and keeps the program
        calls, call = [], compiled._Program.__call__
        with monkeypatch.context() as patch:
            patch.setattr(compiled._Program, "__call__", lambda self, args: (calls.append(1), call(self, args))[1])
            direct = run()
        assert len(calls) == len(grads)  # every step called the program directly
        with monkeypatch.context() as patch:
            _dynamo_path_only(patch)
            through_dynamo = run()
    for a, b in zip(direct, through_dynamo):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_direct_call_declines_what_the_program_was_not_built_for(compiles):
    """A misaligned view, mixed dtypes, a length-1 buffer or gradients on: torch.compile's own call (and guards)."""
    program = next(program for key, program in compiled._programs.items() if key[0] == "adam")
    base, ok = torch.zeros(N + 1), torch.zeros(N)
    scalars = compiled._adam_scalars(1.0, 0.1, (0.9, 0.999), ok.device)
    args = lambda *buffers: (*buffers, None, scalars)  # noqa: E731
    with torch.no_grad():
        assert program.accepts(args(ok, ok.clone(), ok.clone(), ok.clone()))
        assert not program.accepts(args(base[1:], ok, ok.clone(), ok.clone()))  # 4 bytes off: not 16-byte aligned
        assert not program.accepts(args(ok, ok.double(), ok.clone(), ok.clone()))
        assert not program.accepts(args(ok[:1], ok[:1].clone(), ok[:1].clone(), ok[:1].clone()))
        assert not program.accepts(args(ok, ok[:-1].clone(), ok.clone(), ok.clone()))
        assert not program.accepts((ok, ok.clone(), ok.clone(), ok.clone(), None, scalars.clone()))  # not ours
    assert not program.accepts(args(ok, ok.clone(), ok.clone(), ok.clone()))  # gradients on
    # and the declined calls still step correctly, through torch.compile's own call
    p, g = base[1:], torch.full((N,), 0.5)
    p.copy_(torch.ones(N))
    m, v, t = torch.zeros(N), torch.zeros(N), torch.tensor(0.0)
    compiled.adam(p, g, m, v, None, t, lr=0.1)
    torch.testing.assert_close(p, torch.full((N,), 0.9))


SGD_CASES = [
    pytest.param(dict(momentum=0.9, dampening=0.1, weight_decay=0.01), id="momentum-dampening-l2"),
    pytest.param(dict(momentum=0.8, nesterov=True, maximize=True), id="nesterov-maximize"),
    pytest.param(dict(weight_decay=0.01, maximize=True), id="plain-l2-maximize"),
]


@pytest.mark.parametrize("options", SGD_CASES)
def test_sgd_equals_kernel(compiles, device, options):
    gen = torch.Generator().manual_seed(2)
    p1 = torch.randn(N, generator=gen).to(device)
    p2 = p1.clone()
    b1 = b2 = None
    for k in range(STEPS):
        grad = torch.randn(N, generator=gen).to(device)
        lr = 0.01 * (1 - k / STEPS)
        b1 = compiled.sgd(p1, grad, b1, lr=lr, **options)
        b2 = F.sgd(p2, grad, b2, lr=lr, **options)
    _assert_close(p1, p2, "param")
    if options.get("momentum", 0) == 0:
        assert b1 is None and b2 is None
    else:
        _assert_close(b1, b2, "momentum_buffer")
    assert any(key[0] == "sgd" for key in compiled.compile_seconds)  # the compiled path ran


def test_amsgrad_without_buffer_raises():
    p = torch.zeros(N)
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        compiled.adam(p, p, p.clone(), p.clone(), None, torch.tensor(0.0), amsgrad=True)


@pytest.mark.parametrize(
    "name, options",
    [
        pytest.param("Adam", dict(lr=0.01), id="Adam"),
        pytest.param("AdamW", dict(lr=0.01, weight_decay=0.05, maximize=True, betas=(0.8, 0.99)), id="AdamW"),
        pytest.param("SGD", dict(lr=0.01, momentum=0.8, nesterov=True, maximize=True), id="SGD"),
    ],
)
def test_class_compiled_equals_torch(compiles, device, name, options):
    import book.optim

    gen = torch.Generator().manual_seed(3)
    shapes = [(N,), (7, 3)]  # one tensor on the compiled path, one small one on the eager kernel
    ours = [torch.randn(s, generator=gen).to(device) for s in shapes]
    theirs = [p.clone() for p in ours]
    opt = getattr(book.optim, name)(ours, compiled=True, **options)
    ref = getattr(torch.optim, name)(theirs, foreach=False, **options)
    for _ in range(STEPS):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen).to(device)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        _assert_close(a, b, "param")
        assert set(opt.state[a]) == set(ref.state[b])
        for key in ref.state[b]:
            _assert_close(opt.state[a][key], ref.state[b][key], key)
    assert any(key[0] == name.lower().rstrip("w") for key in compiled.compile_seconds)  # compiled path ran


def _values(cases) -> dict[str, set]:
    values: dict[str, set] = {}
    for case in cases:
        for key, value in case.values[0].items():
            values.setdefault(key, set()).add(value if not isinstance(value, tuple) else value)
    return values


def test_the_cases_cover_every_option():
    """Every keyword of the functional kernels (but lr, which every case schedules) is set away from its
    default in some case of the tables above and left at it in another: the compiled path is compared
    with the kernel for every option."""
    import inspect

    for kernel, cases in ((F.adam, ADAM_CASES), (F.sgd, SGD_CASES)):
        options = {name: prm.default for name, prm in inspect.signature(kernel).parameters.items()
                   if prm.kind is prm.KEYWORD_ONLY and name != "lr"}
        for name, default in options.items():
            used = [case.values[0].get(name, default) for case in cases]
            assert any(v != default for v in used), f"no case of {kernel.__name__} sets {name}"
            assert any(v == default for v in used), f"every case of {kernel.__name__} sets {name}"


def test_the_kernel_is_written_once():
    """compiled.py compiles the functional kernels themselves: it has no update arithmetic of its own."""
    import inspect

    source = inspect.getsource(compiled)
    for op in ("lerp", "addcmul", "addcdiv", "sqrt(", "maximum", ".mul_(", "alpha=", "beta1**", "beta2**"):
        assert op not in source, f"book/optim/compiled.py contains {op!r}: a second copy of an update rule"
    assert "F.adam_update(" in inspect.getsource(compiled._adam_body)
    assert "F.sgd(" in inspect.getsource(compiled._sgd_body)


# ---------------------------------------------------------------------------
# The classes: a group's tensors as views into flat buffers, one compiled pass


def _pairs(shapes, gen, device):
    ours = [torch.randn(s, generator=gen).to(device).requires_grad_() for s in shapes]
    return ours, [p.detach().clone().requires_grad_() for p in ours]


def _compare(opt, ref, ours, theirs, exact=False):
    for a, b in zip(ours, theirs):
        if exact:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:
            _assert_close(a, b, "param")
        assert set(opt.state[a]) == set(ref.state[b])
        for key in ref.state[b]:
            if exact:
                torch.testing.assert_close(opt.state[a][key], ref.state[b][key], rtol=0, atol=0)
            else:
                _assert_close(opt.state[a][key], ref.state[b][key], key)


CLASS_CASES = [
    pytest.param("Adam", dict(lr=0.01), id="Adam"),
    pytest.param("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1, eps=1e-6), id="Adam-amsgrad-l2"),
    pytest.param("AdamW", dict(lr=0.01, weight_decay=0.05, maximize=True, betas=(0.8, 0.99)), id="AdamW"),
    pytest.param("SGD", dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01), id="SGD"),
    pytest.param("SGD", dict(lr=0.01, momentum=0.8, nesterov=True, maximize=True), id="SGD-nesterov"),
]


@pytest.mark.parametrize("name, options", CLASS_CASES)
def test_class_flat_step_equals_torch_on_a_model_of_many_tensors(compiles, device, name, options):
    """Tensors of mixed shapes (matrices, biases, a scalar), two groups, a frozen parameter, a
    non-contiguous one, a step where one parameter has no gradient, a learning-rate schedule:
    the flat compiled step equals torch's single-tensor step in parameters and state."""
    import book.optim

    gen = torch.Generator().manual_seed(4)
    shapes = [(N,), (40, 30), (30,), (), (5, 7), (7,), (3, 4)]
    ours, theirs = _pairs(shapes, gen, device)
    ours[-1] = torch.randn(4, 3, generator=gen).to(device).t().requires_grad_()  # non-contiguous
    theirs[-1] = ours[-1].detach().clone().requires_grad_()
    start = torch.randn(6, generator=gen).to(device)
    frozen = [start.clone().requires_grad_() for _ in range(2)]
    groups = lambda ps, f: [{"params": ps[:4] + [f]}, {"params": ps[4:], "lr": 0.02}]  # noqa: E731
    opt = getattr(book.optim, name)(groups(ours, frozen[0]), compiled=True, **options)
    ref = getattr(torch.optim, name)(groups(theirs, frozen[1]), foreach=False, **options)
    for k in range(STEPS):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if k == STEPS - 3 and i == 2:
                a.grad = b.grad = None  # one parameter without a gradient at one step: it is skipped
                continue
            a.grad = torch.randn(a.shape, generator=gen).to(device)
            b.grad = a.grad.clone()
        for group in opt.param_groups + ref.param_groups:
            group["lr"] *= 0.9  # a schedule: new values must not recompile
        opt.step()
        ref.step()
        if k == 2:  # the flat path ran: the group's contiguous parameters share one buffer
            storages = {p.untyped_storage().data_ptr() for p in ours[:3]}
            assert len(storages) == 1
            assert ours[0].grad.untyped_storage().data_ptr() != ours[0].untyped_storage().data_ptr()
        opt.zero_grad()  # gradients to None, as torch.optim
        assert all(p.grad is None for p in ours)
    _compare(opt, ref, ours, theirs)
    torch.testing.assert_close(frozen[0].detach(), start, rtol=0, atol=0)  # never stepped
    assert not opt.state[frozen[0]]


@pytest.mark.parametrize("name, options", [CLASS_CASES[1], CLASS_CASES[3]])
def test_class_flat_state_dict_is_torchs_and_resumes_exactly(compiles, name, options):
    """Save after some flat steps, load into torch.optim and into a fresh compiled optimizer: torch continues
    as the flat path does (within rounding), the fresh optimizer exactly as the uninterrupted one."""
    import book.optim

    gen = torch.Generator().manual_seed(5)
    shapes = [(N,), (20, 10), (10,)]
    ours, theirs = _pairs(shapes, gen, "cpu")
    resumed = [p.detach().clone().requires_grad_() for p in ours]
    opt = getattr(book.optim, name)(ours, compiled=True, **options)
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(6)]
    for gs in grads[:3]:
        for p, g in zip(ours, gs):
            p.grad = g.clone()
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # a checkpoint on disk
    ref = getattr(torch.optim, name)(theirs, foreach=False, **options)
    again = getattr(book.optim, name)(resumed, compiled=True, **options)
    for loader in (ref, again):
        buffer.seek(0)
        loader.load_state_dict(torch.load(buffer))  # each its own copy, as from disk
    with torch.no_grad():
        for a, b, c in zip(ours, theirs, resumed):
            b.copy_(a)
            c.copy_(a)
    for gs in grads[3:]:
        for p, q, r, g in zip(ours, theirs, resumed, gs):
            p.grad, q.grad, r.grad = g.clone(), g.clone(), g.clone()
        opt.step()
        ref.step()
        again.step()
    _compare(opt, ref, ours, theirs)
    _compare(opt, again, ours, resumed, exact=True)
    mine, torchs = opt.state_dict(), ref.state_dict()
    assert mine["param_groups"] == torchs["param_groups"] or all(
        set(a) <= set(b) | {"compiled"} for a, b in zip(mine["param_groups"], torchs["param_groups"]))
    for i, st in mine["state"].items():
        assert set(st) == set(torchs["state"][i])
        for key, value in st.items():
            assert value.shape == torchs["state"][i][key].shape and value.dtype == torchs["state"][i][key].dtype


def _ddp_and_zero(rank, world_size, steps):
    """DDP + book.optim.Adam(compiled=True), and ZeroRedundancyOptimizer over book.optim.AdamW(compiled=True),
    each beside the same training with torch.optim: the largest parameter differences."""
    from torch import nn
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    import book.optim

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))

    gen = torch.Generator().manual_seed(rank)
    data = [(torch.randn(16, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)) for _ in range(steps)]
    diffs = {}
    for kind in ("ddp", "zero"):
        runs = []
        for ours in (True, False):
            net = DDP(model())
            if kind == "ddp":
                opt = book.optim.Adam(net.parameters(), lr=0.05, compiled=True) if ours else \
                    torch.optim.Adam(net.parameters(), lr=0.05, foreach=False)
            else:
                cls, extra = (book.optim.AdamW, dict(compiled=True)) if ours else (torch.optim.AdamW, {})
                opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=cls, lr=0.05, weight_decay=0.1,
                                              **extra)
            for X, y in data:
                opt.zero_grad()
                nn.functional.cross_entropy(net(X), y).backward()
                opt.step()
            runs.append([p.detach().clone() for p in net.parameters()])
        diffs[kind] = max((a - b).abs().max().item() for a, b in zip(*runs))
    return diffs


def test_flat_step_under_ddp_and_zero_equals_torch(compiles):
    from book.distributed import launch

    results = launch(_ddp_and_zero, 2, 4, timeout_s=300)
    for rank, diffs in enumerate(results):
        for kind, diff in diffs.items():
            assert diff < 1e-5, f"rank {rank}, {kind}: {diff}"


def test_flat_layout_follows_the_model(compiles):
    """The flat buffers follow what happens to the parameters and the optimizer: a torch.optim state_dict
    loaded in, a parameter re-pointed by hand (``p.data = ...``), a group added later, float64 beside
    float32 in one group (one buffer per dtype). Throughout, the flat step equals torch's."""
    import book.optim

    gen = torch.Generator().manual_seed(6)
    shapes = [(30, 20), (20,), (7,)]
    ours, theirs = _pairs(shapes, gen, "cpu")
    ours[2].data = ours[2].data.double()
    theirs[2].data = theirs[2].data.double()
    opt = book.optim.Adam(ours, lr=0.01, compiled=True)
    ref = torch.optim.Adam(theirs, lr=0.01, foreach=False)

    def steps(k):
        for _ in range(k):
            for a, b in zip(ours, theirs):
                a.grad = torch.randn(a.shape, generator=gen, dtype=a.dtype)
                b.grad = a.grad.clone()
            opt.step()
            ref.step()

    steps(2)
    assert len(opt._flat_groups[0][3]) == 2  # float32 and float64 buffers
    opt.load_state_dict(ref.state_dict())  # torch's state in, copied into the buffers at the next step
    steps(2)
    _compare(opt, ref, ours, theirs)
    with torch.no_grad():
        fresh = ours[0].detach().clone() + 1
        ours[0].data = fresh  # out of the buffer: the layout is rebuilt from the parameter's new values
        theirs[0].add_(1)
    steps(2)
    _compare(opt, ref, ours, theirs)
    extra, extra_ref = _pairs([(5, 5)], gen, "cpu")
    opt.add_param_group({"params": extra, "lr": 0.02})
    ref.add_param_group({"params": extra_ref, "lr": 0.02})
    ours, theirs = ours + extra, theirs + extra_ref
    steps(2)
    _compare(opt, ref, ours, theirs)
    assert set(opt._flat_groups) == {0, 1}


def test_a_new_constant_hyperparameter_compiles_again_and_stays_right(compiles):
    """betas, eps, momentum and weight decay are constants of the compiled program: a new value compiles
    once more (under the flag that captures .item()), and the results still equal the kernel's."""
    gen = torch.Generator().manual_seed(7)
    p = torch.randn(N, generator=gen)
    ours = [p.clone(), torch.zeros(N), torch.zeros(N), None, torch.tensor(0.0)]
    kernel = [p.clone(), torch.zeros(N), torch.zeros(N), None, torch.tensor(0.0)]
    for betas in [(0.9, 0.999), (0.85, 0.99), (0.9, 0.999)]:
        grad = torch.randn(N, generator=gen)
        compiled.adam(ours[0], grad, *ours[1:], lr=0.01, betas=betas)
        F.adam(kernel[0], grad, *kernel[1:], lr=0.01, betas=betas)
    for name, a, b in zip(["param", "exp_avg", "exp_avg_sq"], ours, kernel):
        _assert_close(a, b, name)


def test_vector_width_is_torchs_own_on_x86_and_a_users_choice_is_kept(monkeypatch):
    import platform

    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "simdlen", None)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    with compiled._vector_width():
        assert inductor_config.cpp.simdlen == 256  # AVX2, as ATen's _fused_adam_ runs on an AVX-512 CPU
    assert inductor_config.cpp.simdlen is None  # restored after the compile
    monkeypatch.setattr(inductor_config.cpp, "simdlen", 512)
    with compiled._vector_width():
        assert inductor_config.cpp.simdlen == 512  # the user's setting wins
    monkeypatch.setattr(inductor_config.cpp, "simdlen", None)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with compiled._vector_width():
        assert inductor_config.cpp.simdlen is None  # other CPUs keep TorchInductor's pick
