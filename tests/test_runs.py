"""book.runs.run_all: independent runs in worker processes give what running them one by one gives."""

import doctest
import sys

import pytest
import torch

from book import runs
from book.runs import run_all, workers


def _tiny_run(seed: int, lr: float):
    """A small seeded training run (top level: the workers find it by name)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 3, generator=gen, requires_grad=True)
    X, y = torch.randn(64, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    opt = torch.optim.SGD([w], lr=lr, momentum=0.9)
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(X @ w, y)
        loss.backward()
        opt.step()
    return w.detach(), float(loss.detach())


def _fails(x):
    raise ValueError(f"run {x} failed")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(sys.platform != "linux", reason="worker processes are forked on Linux only")
def test_runs_in_workers_equal_runs_one_by_one(one_thread):
    grid = [(seed, lr) for seed in range(3) for lr in (0.05, 0.2)]
    if workers(len(grid)) < 2:
        pytest.skip("one core here: run_all runs in this process")
    parallel = run_all(_tiny_run, grid)
    serial = [_tiny_run(*args) for args in grid]
    assert len(parallel) == len(grid)
    for (w1, l1), (w2, l2) in zip(parallel, serial):
        assert torch.equal(w1, w2) and l1 == l2  # bit for bit, in the order of the arguments


def test_when_the_runs_stay_in_this_process(one_thread):
    assert workers(1) == 1                      # one run: nothing to spread
    assert workers(5, limit=1) == 1
    torch.set_num_threads(2)
    assert workers(5) == 1                      # a thread pool does not survive a fork
    torch.set_num_threads(1)
    if sys.platform == "linux":
        assert 1 <= workers(5) <= 5 and workers(5, limit=2) <= 2


def test_a_failing_run_raises_here(one_thread):
    with pytest.raises(ValueError, match="run 2 failed"):
        run_all(_fails, [(2,), (2,)])


def test_docstring_examples():
    result = doctest.testmod(runs, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 1 and result.failed == 0


def test_a_progress_bar_counts_the_runs(one_thread, capsys):
    assert run_all(pow, [(2, 3), (3, 2), (2, 2)], progress="powers") == [8, 9, 4]
    err = capsys.readouterr().err
    assert "powers" in err and "3/3" in err
    run_all(pow, [(2, 3), (3, 2)])
    assert capsys.readouterr().err == ""  # no bar unless asked
