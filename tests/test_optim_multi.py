"""MultiOptimizer and muon_with_adamw: equal to stepping the member optimizers by hand."""

import copy

import pytest
import torch

from book.optim import AdamW, Muon, ScheduleFreeAdamW
from book.optim.multi import MultiOptimizer, muon_with_adamw
from book.train import fit


def _net(device, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 3)).to(device)


def _data(device):
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=g).to(device), torch.randint(0, 3, (32,), generator=g).to(device)


def _train(net, optimizers, schedulers, x, y, steps):
    for _ in range(steps):
        for opt in optimizers:
            opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        for opt in optimizers:
            opt.step()
        for s in schedulers:
            s.step()


def test_muon_with_adamw_equals_the_two_optimizers_by_hand_under_one_scheduler(device):
    x, y = _data(device)
    ours, ref = _net(device), _net(device)
    opt = muon_with_adamw(ours, lr=0.02, momentum=0.9, adamw_lr=1e-2, adamw_weight_decay=0.01)
    assert [type(o) for o in opt.optimizers] == [Muon, AdamW]
    muon = Muon([ref[0].weight, ref[2].weight], lr=0.02, momentum=0.9, weight_decay=0.0)
    adamw = AdamW([ref[0].bias, ref[2].bias, ref[4].weight, ref[4].bias], lr=1e-2, weight_decay=0.01)
    decay = lambda t: 1 / (1 + t)  # noqa: E731
    _train(ours, [opt], [torch.optim.lr_scheduler.LambdaLR(opt, decay)], x, y, 6)
    _train(ref, [muon, adamw], [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (muon, adamw)], x, y, 6)
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    # each group kept its own base rate under the one scheduler
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02 / 7, 1e-2 / 7])


def test_state_dict_resumes_exactly():
    x, y = _data("cpu")
    a = _net("cpu")
    opt = muon_with_adamw(a, lr=0.02)
    _train(a, [opt], [], x, y, 3)
    b = copy.deepcopy(a)
    opt_b = muon_with_adamw(b, lr=0.02)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch.optim shares the tensors otherwise
    _train(a, [opt], [], x, y, 3)
    _train(b, [opt_b], [], x, y, 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert set(opt.state) == {p for p in a.parameters()}  # every parameter has state, in its member
    with pytest.raises(ValueError, match="2 state dicts"):
        opt_b.load_state_dict({"optimizers": [opt.state_dict()["optimizers"][0]]})


def test_errors_are_clear():
    net = _net("cpu")
    with pytest.raises(ValueError, match="at least one"):
        MultiOptimizer()
    with pytest.raises(TypeError, match="argument 1 is a list"):
        MultiOptimizer(AdamW(net.parameters()), [])
    with pytest.raises(ValueError, match="belongs to two"):
        MultiOptimizer(AdamW(net.parameters()), AdamW([net[0].weight]))
    with pytest.raises(ValueError, match="no 2-D weight matrix"):
        muon_with_adamw(torch.nn.Linear(3, 2))  # its only matrix is the output layer


def test_runs_through_fit_with_a_closure_and_switches_schedule_free_members():
    x, y = _data("cpu")
    net = _net("cpu")
    sf = ScheduleFreeAdamW([p for p in net.parameters() if p.ndim != 2], lr=1e-2)
    opt = MultiOptimizer(Muon([net[0].weight, net[2].weight, net[4].weight], lr=0.02), sf)
    before = torch.nn.functional.cross_entropy(net(x), y).item()
    h = fit(net, opt, torch.nn.functional.cross_entropy, (x, y), epochs=5, batch_size=8, val=(x, y),
            progress=False, closure=True)
    assert h["train_loss"][-1] < before
    opt.eval()
    assert not sf.param_groups[0]["train_mode"]
    opt.train()
    assert sf.param_groups[0]["train_mode"]


def test_docstring_examples_run():
    import doctest

    import book.optim.multi as module

    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0
