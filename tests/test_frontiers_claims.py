"""Chapter 12's claims in small versions: each on a problem that trains in about a second, over seeds.

The chapter asserts the full versions over three seeds, and `make claims` reruns it under other seeds and
thread counts; these keep the claims under test in `make test` without the chapter's run time.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from book.data import digits
from book.distributed import mlp
from book.optim import SGD, AdamW, ScheduleFreeAdamW, muon_with_adamw
from book.schedules import cosine_annealing, linear_warmup
from book.sharpness import SAM, top_hessian_eigenvalue
from book.train import evaluate, fit

DATA = digits(seed=0)
X, Y = DATA.train.X, DATA.train.y


def _train(make, seed, epochs, schedule=True, closure=False, sizes=(64, 128, 128, 10)):
    net = mlp(sizes, seed=seed)
    opt = make(net)
    steps = epochs * math.ceil(len(Y) / 64)
    sched = None
    if schedule:
        warm = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup(cosine_annealing(1.0, steps - warm), warm, 0.1))
    fit(net, opt, F.cross_entropy, (X, Y), epochs, 64, scheduler=sched, progress=False,
        generator=torch.Generator().manual_seed(100 + seed), closure=closure)
    if hasattr(opt, "eval"):
        opt.eval()
    return net, evaluate(net, F.cross_entropy, (X, Y))[0]


@pytest.mark.usefixtures("one_thread")
def test_muon_needs_fewer_steps_than_adamw_for_the_same_training_loss():
    """Per step, Muon with AdamW for the rest ends far lower than AdamW at the better of two rates, on every seed."""
    for seed in range(3):
        _, muon = _train(lambda n: muon_with_adamw(n, lr=0.1, adamw_lr=1e-2), seed, epochs=5)
        adamw = min(_train(lambda n, lr=lr: AdamW(n.parameters(), lr=lr, weight_decay=0.0), seed, epochs=5)[1]
                    for lr in (3e-3, 1e-2))
        assert muon < 0.5 * adamw, (seed, muon, adamw)  # 0.05-0.10 over seeds 0-5


@pytest.mark.usefixtures("one_thread")
def test_schedule_free_needs_no_horizon():
    """Schedule-free runs, evaluated at their average, beat cosine runs planned for 2 and 6 epochs (training loss)."""
    for seed in range(3):
        for horizon in (2, 6):
            _, cosine = _train(lambda n: AdamW(n.parameters(), lr=1e-2, weight_decay=0.0), seed, horizon)
            _, free = _train(lambda n: ScheduleFreeAdamW(n.parameters(), lr=1e-2, warmup_steps=8, weight_decay=0.0),
                             seed, horizon, schedule=False)
            assert free < 0.95 * cosine, (seed, horizon, free, cosine)  # 0.67-0.84 over seeds 0-5


@pytest.mark.usefixtures("one_thread")
def test_sam_ends_flatter_than_sgd():
    """SAM (rho 0.2) ends with a top Hessian eigenvalue below 0.75 times SGD's, same rate and steps, every seed."""
    def sharpness(net):
        return top_hessian_eigenvalue(lambda: F.cross_entropy(net(X), Y), list(net.parameters()), iters=30,
                                      tol=1e-3, generator=torch.Generator().manual_seed(0)).value

    for seed in range(3):
        sgd, _ = _train(lambda n: SGD(n.parameters(), lr=0.05, momentum=0.9), seed, 12, schedule=False)
        sam, _ = _train(lambda n: SAM(n.parameters(), SGD, rho=0.2, lr=0.05, momentum=0.9), seed, 12,
                        schedule=False, closure=True)
        assert sharpness(sam) < 0.75 * sharpness(sgd), seed  # 0.48-0.60 over seeds 0-5


def test_adamw_steps_are_a_fraction_of_its_rate_and_lions_are_all_of_it():
    """The measurement behind Lion's smaller rate: after the first steps AdamW moves the weights by far less
    than lr (RMS below 0.5 lr); Lion moves every weight by exactly lr, or not at all where its momentum and
    gradient are both zero (the pixels that are blank in every image)."""
    from book.optim import Lion

    for name, make in [("AdamW", lambda p: AdamW(p, lr=1e-3, weight_decay=0.0)),
                       ("Lion", lambda p: Lion(p, lr=1e-3, weight_decay=0.0))]:
        net = mlp((64, 32, 10), seed=0)
        opt = make(net.parameters())
        ratios = []
        for step in range(30):
            xb, yb = X[step * 16:(step + 1) * 16], Y[step * 16:(step + 1) * 16]
            before = [p.detach().clone() for p in net.parameters()]
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
            change = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)]).abs()
            if name == "Lion":
                moved = change[change > 0]
                torch.testing.assert_close(moved, torch.full_like(moved, 1e-3), rtol=1e-3, atol=0)
                assert len(moved) > 0.6 * len(change)
            ratios.append(float(change.pow(2).mean().sqrt()) / 1e-3)
        if name == "AdamW":
            assert np.median(ratios[5:]) < 0.5, ratios[:8]
