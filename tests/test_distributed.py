"""book.distributed: data-parallel training equals one process on the whole batch.

Two gloo processes on the CPU. Every equality is checked against an independent computation
written here (plain single-process training with torch.optim on the global batch, closed forms
for byte counts), never against the module's own code. Each launch starts two fresh
interpreters (~2-3 s), so one launch runs all training workers (``compare_methods``).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from book.distributed import (WorkerError, average_gradients, collectives_demo, compare_methods, launch, mlp,
                              shard, train_by_hand)

ROOT = Path(__file__).resolve().parent.parent
SIZES = (64, 64, 64, 10)  # the chapter's MLP on the digits; its tensors split ~53/47 over 2 ZeRO ranks
STEPS, BATCH, SEED, ACCUMULATE = 5, 64, 0, 2
LR, ADAM_LR = 0.5, 0.01  # large enough that the parameters move far from their start


# ---------------------------------------------------------------------------
# Workers for the launches (module level: the spawned processes import them by name)


def _everything(rank, world_size, X, y):
    """The chapter's workers and the collectives demo in one launch, plus this process's id."""
    return {"pid": os.getpid(),
            "demo": collectives_demo(rank, world_size),
            "methods": compare_methods(rank, world_size, X, y, SIZES, LR, STEPS, BATCH, SEED, ACCUMULATE,
                                       ADAM_LR, (1_000, 100_000))}


def _fail_on_rank_1(rank, world_size, folder):
    """Rank 1 raises once rank 0 is waiting in a barrier that rank 1 never enters."""
    folder = Path(folder)
    (folder / f"{rank}.pid").write_text(str(os.getpid()))
    if rank == 1:
        while not (folder / "0.pid").exists():
            time.sleep(0.01)
        raise ValueError("rank one is broken")
    dist.barrier()  # blocks until the parent stops it
    return rank


def _sleep(rank, world_size, folder, seconds):
    (Path(folder) / f"{rank}.pid").write_text(str(os.getpid()))
    time.sleep(seconds)
    return rank


def _assert_no_process_left(folder: Path) -> None:
    assert multiprocessing.active_children() == []
    for path in folder.glob("*.pid"):
        pid = int(path.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # no such process: terminated and reaped


# ---------------------------------------------------------------------------
# Independent references: one process, the whole global batch, torch.optim


def reference_model(dtype=torch.float64) -> nn.Sequential:
    """The model every rank of the workers starts from: nn.Linear's init under manual_seed(SEED)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    return model.to(dtype)


def global_batches(n, batch, steps, seed):
    """The documented batch order: slices of torch.randperm(n) per epoch, last partial batch dropped."""
    g, out = torch.Generator().manual_seed(seed), []
    while len(out) < steps:
        perm = torch.randperm(n, generator=g)
        out += [perm[i * batch:(i + 1) * batch] for i in range(n // batch)]
    return out[:steps]


def reference_train(X, y, optimizer, lr, steps=STEPS, batch=BATCH):
    model = reference_model(X.dtype)
    opt = optimizer(model.parameters(), lr=lr)
    for idx in global_batches(len(X), batch, steps, SEED):
        opt.zero_grad()
        F.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    return model, opt


@pytest.fixture(scope="module")
def digits64():
    from book.data import digits

    X, y = digits(seed=0).train
    return X.double(), y


@pytest.fixture(scope="module")
def launched(digits64):
    X, y = digits64
    start = time.perf_counter()
    results = launch(_everything, 2, X, y, timeout_s=120)
    return results, time.perf_counter() - start


@pytest.fixture(scope="module")
def sgd_reference(digits64):
    model, _ = reference_train(*digits64, torch.optim.SGD, LR)
    return [p.detach() for p in model.parameters()]


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------
# Sharding and the collectives


def test_shards_are_disjoint_equal_and_cover_the_batch():
    for strided in (False, True):
        parts = [shard(12, r, 3, strided=strided) for r in range(3)]
        assert [len(p) for p in parts] == [4, 4, 4]
        assert sorted(torch.cat(parts).tolist()) == list(range(12))
    assert shard(8, 1, 2).tolist() == [4, 5, 6, 7]
    assert shard(8, 1, 2, strided=True).tolist() == [1, 3, 5, 7]
    assert shard(10, 2, 3, drop_last=True).tolist() == [6, 7, 8]
    with pytest.raises(ValueError, match="drop_last"):
        shard(10, 0, 3)
    with pytest.raises(ValueError, match="rank"):
        shard(10, 2, 2)


def test_the_two_ranks_own_different_samples(launched, digits64):
    (r0, r1), _ = launched
    s0, s1 = r0["methods"]["shard"], r1["methods"]["shard"]
    assert set(s0.tolist()).isdisjoint(s1.tolist()) and len(s0) == len(s1) == BATCH // 2
    X, _ = digits64
    batch = X[global_batches(len(X), BATCH, 1, SEED)[0]]
    assert not torch.equal(batch[s0], batch[s1])  # the ranks' gradients really differ


def test_collectives(launched):
    (r0, r1), _ = launched
    for r in (r0, r1):
        assert r["demo"]["all_reduce_sum"] == 3.0  # 1 + 2
        assert r["demo"]["broadcast_from_0"] == 1.0
        assert r["demo"]["all_gather"] == [1.0, 2.0]


# ---------------------------------------------------------------------------
# Data parallel == one process on the global batch


@pytest.mark.parametrize("method", ["by_hand", "by_hand_flat", "ddp", "ddp_accumulate", "ddp_accumulate_sync"])
def test_data_parallel_sgd_equals_one_process_on_the_global_batch(launched, sgd_reference, method):
    (r0, r1), _ = launched
    start = [p.detach() for p in reference_model().parameters()]
    assert max_diff(sgd_reference, start) > 0.05  # the parameters moved: the equality is not trivial
    for r in (r0, r1):
        assert max_diff(r["methods"][method]["params"], sgd_reference) < 1e-12, method
    assert max_diff(r0["methods"][method]["params"], r1["methods"][method]["params"]) == 0.0  # ranks agree exactly


def test_the_ranks_start_from_rank_0s_weights_not_their_own_seed():
    """Rank 1 builds mlp(seed + 1); without the broadcast it would train another model."""
    assert max_diff(list(mlp(SIZES, SEED + 1).parameters()), list(reference_model(torch.float32).parameters())) > 0.01
    assert max_diff(list(mlp(SIZES, SEED).parameters()), list(reference_model(torch.float32).parameters())) == 0.0


def test_losses_are_the_global_batch_losses(launched, digits64):
    (r0, _), _ = launched
    X, y = digits64
    model, losses = reference_model(), []
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for idx in global_batches(len(X), BATCH, STEPS, SEED):
        opt.zero_grad()
        loss = F.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for method in ("by_hand", "ddp", "ddp_accumulate"):
        assert r0["methods"][method]["losses"] == pytest.approx(losses, rel=1e-12, abs=1e-12)
        assert r0["methods"][method]["final_loss"] == pytest.approx(F.cross_entropy(model(X), y).item(), rel=1e-12)


def test_bytes_and_calls_per_step(launched):
    (r0, _), _ = launched
    m = r0["methods"]
    numel = sum(p.numel() for p in reference_model().parameters())
    tensors = len(list(reference_model().parameters()))
    assert m["by_hand"]["bytes_per_step"] == 8 * numel  # float64 gradients, once per step
    assert m["by_hand"]["calls_per_step"] == tensors  # one all-reduce per tensor
    assert m["by_hand_flat"]["calls_per_step"] == 1
    assert m["ddp"]["bytes_per_step"] == 8 * numel and m["ddp"]["calls_per_step"] == 1  # one 25 MB bucket holds it
    assert m["ddp_accumulate"]["bytes_per_step"] == 8 * numel  # no_sync: one all-reduce per ACCUMULATE micro-batches
    assert m["ddp_accumulate_sync"]["bytes_per_step"] == ACCUMULATE * 8 * numel


def test_allreduce_timings_are_positive(launched):
    (r0, r1), _ = launched
    for r in (r0, r1):
        rows = r["methods"]["allreduce"]
        assert [row["numel"] for row in rows] == [1_000, 100_000]
        assert all(row["bytes"] == 4 * row["numel"] and 0 < row["seconds"] < 5 for row in rows)
        assert all(0 < row["min_seconds"] <= row["seconds"] for row in rows)


# ---------------------------------------------------------------------------
# Gradient accumulation in one process


def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(digits64):
    X, y = digits64
    X, y = X[:96], y[:96]
    big, small = reference_model(), reference_model()
    F.cross_entropy(big(X), y).backward()
    for Xm, ym in zip(X.chunk(4), y.chunk(4)):
        (F.cross_entropy(small(Xm), ym) / 4).backward()  # mean of 4 equal micro-batch means
    assert max_diff([p.grad for p in small.parameters()], [p.grad for p in big.parameters()]) < 1e-15


def test_train_by_hand_in_one_process_with_accumulation(digits64, sgd_reference):
    """With world_size=1 it needs no process group; accumulate=4 still equals the whole batch."""
    result = train_by_hand(0, 1, *digits64, SIZES, LR, STEPS, BATCH, SEED, accumulate=4)
    assert max_diff(result["params"], sgd_reference) < 1e-12
    assert result["bytes_per_step"] == 0 and result["calls_per_step"] == 0
    with pytest.raises(ValueError, match="divisible by accumulate"):
        train_by_hand(0, 1, *digits64, SIZES, LR, 1, BATCH, SEED, accumulate=5)
    with pytest.raises(RuntimeError, match="launch"):
        train_by_hand(0, 2, *digits64, SIZES, LR, 1, BATCH, SEED)
    with pytest.raises(RuntimeError, match="process group"):
        average_gradients(mlp((2, 2)))


# ---------------------------------------------------------------------------
# ZeRO


def test_zero_adam_equals_plain_adam_with_half_the_state_per_rank(launched, digits64):
    (r0, r1), _ = launched
    model, adam = reference_train(*digits64, torch.optim.Adam, ADAM_LR)
    params = [p.detach() for p in model.parameters()]
    assert max_diff(params, [p.detach() for p in reference_model().parameters()]) > 0.01
    for r in (r0, r1):
        assert max_diff(r["methods"]["zero"]["params"], params) < 1e-12
    full = sum(t.numel() * t.element_size() for s in adam.state.values() for t in s.values() if torch.is_tensor(t))
    z0, z1 = r0["methods"]["zero"], r1["methods"]["zero"]
    assert z0["state_bytes"] + z1["state_bytes"] == full == z0["total_state_bytes"]
    for z in (z0, z1):
        assert 0.4 * full < z["state_bytes"] < 0.6 * full  # whole tensors: 4096+640 vs 4096+64+64+10 floats
    assert z0["owned_numel"] + z1["owned_numel"] == z0["numel"] == sum(p.numel() for p in params)


# ---------------------------------------------------------------------------
# launch: failures, time-outs, what it refuses


def test_a_failing_rank_is_named_and_no_process_is_left(tmp_path):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"rank 1 raised ValueError: rank one is broken") as info:
        launch(_fail_on_rank_1, 2, str(tmp_path))
    assert time.perf_counter() - start < 30  # rank 0, stuck in a barrier, was stopped, not waited for
    err = info.value
    assert isinstance(err, WorkerError) and err.rank == 1 and err.exc_type == "ValueError"
    assert "Traceback" in str(err) and "_fail_on_rank_1" in str(err)  # the worker's own traceback
    assert len(list(tmp_path.glob("*.pid"))) == 2
    _assert_no_process_left(tmp_path)


def test_a_timeout_stops_every_rank(tmp_path):
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match="still running after 5 s"):
        launch(_sleep, 2, str(tmp_path), 120, timeout_s=5)
    assert time.perf_counter() - start < 25
    _assert_no_process_left(tmp_path)


def _local_function_holder():
    def local(rank, world_size):
        return rank
    return local


def test_functions_spawn_cannot_import_are_refused_with_the_fix():
    for fn in (lambda rank, world_size: rank, _local_function_holder()):
        with pytest.raises(TypeError, match="module level"):
            launch(fn, 2)
    with pytest.raises(TypeError, match="picklable"):
        launch(_sleep, 2, (x for x in range(3)), 0)  # a generator cannot be pickled
    with pytest.raises(ValueError, match="world_size"):
        launch(_sleep, 0)
    assert multiprocessing.active_children() == []


# ---------------------------------------------------------------------------
# torchrun


def test_the_torchrun_entry_point_trains_like_one_process():
    if importlib.util.find_spec("torch.distributed.run") is None:
        pytest.skip("torchrun (torch.distributed.run) is not available in this torch build")
    steps = 20
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOOK_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "book.distributed", "--steps", str(steps), "--lr", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = re.findall(r"final_loss=(\S+)", proc.stdout)
    assert len(found) == 1, proc.stdout  # printed by rank 0 only
    assert "rank 0 of 2 (gloo)" in proc.stdout  # two ranks really trained
    from book.data import digits

    X, y = digits(seed=0).train  # float32, as the entry point trains
    model, _ = reference_train(X, y, torch.optim.SGD, 0.5, steps=steps)
    with torch.no_grad():
        expected = F.cross_entropy(model(X), y).item()
    assert float(found[0]) == pytest.approx(expected, rel=1e-5)


def test_docstring_examples():
    import doctest

    import book.distributed

    result = doctest.testmod(book.distributed, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 3
