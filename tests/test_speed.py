"""book.speed: the traced byte counts against what torch.optim keeps, the layouts, the timers.

The count of arrays a step moves is checked against an independent source: the state tensors
``torch.optim`` itself creates for a parameter. A step reads the parameter, its gradient and
every state array, and writes the parameter and every state array, so it moves
``3 + 2 * len(state arrays)`` arrays per parameter.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import book.optim as bo
from book import speed

CASES = [  # (torch.optim class, arguments)
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("Adam", dict(lr=1e-3)),
    ("AdamW", dict(lr=1e-3, weight_decay=1e-2)),
    ("Adam", dict(lr=1e-3, amsgrad=True)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True)),
    ("Adagrad", dict(lr=1e-2)),
    ("Adadelta", dict(lr=1.0)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in hyper.items())}" for name, hyper in CASES]


def torch_state_arrays(name: str, hyper: dict, numel: int = 10) -> int:
    """Parameter-sized tensors in torch.optim's state after two steps (0-d counters are not arrays)."""
    p = torch.zeros(numel, requires_grad=True)
    p.grad = torch.ones(numel)
    opt = getattr(torch.optim, name)([p], **hyper)
    opt.step()
    opt.step()
    return sum(isinstance(v, torch.Tensor) and v.numel() == numel for v in opt.state[p].values())


@pytest.mark.parametrize("name, hyper", CASES, ids=IDS)
@pytest.mark.parametrize("source", ["torch", "book"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_bytes_per_parameter_match_the_state_torch_keeps(name, hyper, source, dtype):
    cls = getattr(torch.optim, name) if source == "torch" else getattr(bo, name)
    arrays = 3 + 2 * torch_state_arrays(name, hyper)
    itemsize = torch.empty((), dtype=dtype).element_size()
    assert speed.bytes_per_parameter(cls, dtype=dtype, **hyper) == arrays * itemsize
    trace = speed.trace_step(cls, dtype=dtype, **hyper)
    assert trace.read[:2] == ["param", "grad"] and "param" in trace.written and "grad" not in trace.written
    assert set(trace.written) | {"grad"} == set(trace.read)  # every state array is read and written
    assert trace.unfused_bytes_per_parameter >= trace.bytes_per_parameter
    assert len(trace.ops) >= 1


def test_known_counts_and_names():
    adam = speed.trace_step("adam", lr=1e-3)
    assert (adam.read, adam.written) == (["param", "grad", "exp_avg", "exp_avg_sq"], ["param", "exp_avg", "exp_avg_sq"])
    assert speed.bytes_per_parameter("Adam") == 28 and speed.bytes_per_parameter(torch.optim.SGD, lr=0.1) == 12
    assert speed.bytes_per_parameter("SGD", lr=0.1, momentum=0.9) == 20
    assert speed.bytes_per_parameter("Adam", amsgrad=True) == 36
    assert speed.bytes_per_parameter("Adam", dtype=torch.float16) == 14
    # torch's for-loop Adam: lerp_ (3 arrays), mul_ (2), addcmul_ (3), sqrt (2), div (2), add_ (2), addcdiv_ (4)
    assert adam.unfused_bytes_per_parameter == 18 * 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown optimizer 'lion2'"):
        speed.bytes_per_parameter("lion2")
    with pytest.raises(ValueError, match="numel must be at least 2"):
        speed.trace_step("Adam", numel=1)
    with pytest.raises(ValueError, match="numel and repeats must be positive"):
        speed.triad_bandwidth(0)
    with pytest.raises(ValueError, match="blocks must be positive"):
        speed.block_shapes(100, 0)
    with pytest.raises(ValueError, match="layout 'ragged'"):
        speed.shapes(10, "ragged")


@pytest.mark.parametrize("numel, blocks", [(2**18, 1), (2**18, 16), (2**20, 50), (10**6, 128), (2000, 100)])
def test_block_shapes_add_up(numel, blocks):
    out = speed.block_shapes(numel, blocks)
    assert sum(math.prod(s) for s in out) == numel
    assert 4 * blocks <= len(out) <= 4 * blocks + 1
    assert speed.shapes(2**20, "mixed") == speed.block_shapes(2**20, 50)
    assert speed.shapes(1000, "flat") == [(1000,)]


def test_make_params_is_seeded_and_on_the_device(device):
    a = speed.make_params([(3, 4), (5,)], seed=1, device=device)
    b = speed.make_params([(3, 4), (5,)], seed=1, device=device)
    assert [p.shape for p in a] == [(3, 4), (5,)] and all(p.device.type == device.type for p in a)
    assert all(torch.equal(x, y) and torch.equal(x.grad, y.grad) for x, y in zip(a, b))


def test_bandwidth_and_flops_are_positive(device):
    assert speed.triad_bandwidth(2**16, device, repeats=2) > 0
    assert speed.matmul_flops(32, device, repeats=2) > 0


def test_time_variants_interleaves_and_counts_steps():
    calls = {"a": 0, "b": 0}

    def step(name):
        def run():
            calls[name] += 1
        return run

    times, first = speed.time_variants({"a": step("a"), "b": step("b")}, repeats=4, target_s=1e-4, warmup=2)
    assert set(times) == set(first) == {"a", "b"}
    assert all(best <= median for median, best in times.values())
    assert calls["a"] >= 2 + 1 + 4  # warm-up, the calibration step, one sample per repeat
    assert speed.time_step(step("a"), repeats=2) >= 0


def test_doctests():
    result = doctest.testmod(speed, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 5
