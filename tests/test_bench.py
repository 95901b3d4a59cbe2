"""A smoke test of benchmarks/bench_optim.py: the core runs on tiny sizes and prints a table (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_optim.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_optim", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shapes(bench):
    assert bench.shapes(1000, "flat") == [(1000,)]
    mixed = bench.shapes(2**20, "mixed")
    assert 200 <= len(mixed) <= 201
    assert sum(__import__("math").prod(s) for s in mixed) == 2**20
    assert bench.parse_size("16M") == 16 * 2**20 and bench.parse_size("256K") == 2**18
    with pytest.raises(ValueError, match="layout 'ragged'"):
        bench.shapes(10, "ragged")


def test_run_and_table(bench, tmp_path):
    results = bench.run(sizes=[4096], layouts=["flat", "mixed"], optimizers=["sgd", "adam"], repeats=1,
                        use_compiled=False, triad_numel=2**16, target_s=1e-4)
    rows = [r for r in results["rows"] if "ms" in r]
    assert {r["variant"] for r in rows} >= {"book", "torch-loop", "torch-foreach"}
    assert {(r["optimizer"], r["layout"]) for r in rows} == {(o, l) for o in ("sgd", "adam") for l in ("flat", "mixed")}
    for r in rows:
        assert r["ms"] > 0 and r["gbps"] > 0
        if r["variant"] == r["torch_default"]:
            assert r["vs_default"] == 1.0
    assert results["machine"]["triad_gbps"] > 0
    table = bench.format_table(results)
    assert "torch-loop" in table and "STREAM triad" in table and "adam" in table
    path = tmp_path / "out.json"
    path.write_text(json.dumps(results, default=str))
    assert json.loads(path.read_text())["rows"]


def test_unknown_optimizer(bench):
    with pytest.raises(ValueError, match="Unknown optimizer 'lion'"):
        bench.run(sizes=[16], layouts=["flat"], optimizers=["lion"], repeats=1, triad_numel=2**10)
