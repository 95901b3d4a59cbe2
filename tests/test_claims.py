"""The perturbation harness (``make claims``): runs, failing lines and their values."""

from __future__ import annotations

import json

import pytest

from book import _claims


def test_runs_are_parsed_and_described():
    assert _claims.parse_run("s3") == (3, None)
    assert _claims.parse_run("s0t1") == (0, 1)
    assert _claims.describe_run("s0t1") == "seed +0, 1 thr"
    assert set(_claims.DEFAULT_RUNS) == {"s1", "s2", "s3", "s4", "s5", "s0t1", "s0t2"}
    for bad in ("3", "s", "s1t0", "t1", "seed1"):
        with pytest.raises(ValueError, match="s<offset>|thread count"):
            _claims.parse_run(bad)


def test_chapters_are_chosen_by_number_or_slug():
    every = _claims.chapter_paths(None)
    numbered = [p for p in every if p.stem[:2].isdigit()]
    assert [p.stem[:2] for p in numbered] == sorted(p.stem[:2] for p in numbered) and len(numbered) >= 9
    assert every[-1].stem == "speed" and every[:len(numbered)] == numbered  # the appendix page, after the chapters
    assert [p.stem for p in _claims.chapter_paths("speed")] == ["speed"]
    chosen = _claims.chapter_paths("06, 8,01_landscapes")
    assert [p.stem for p in chosen] == ["06_schedules", "08_regularization", "01_landscapes"]
    with pytest.raises(SystemExit, match="no chapter '99'"):
        _claims.chapter_paths("99")


def test_the_operands_of_an_assert_are_found():
    line = "assert 4 < acc_gain[name] < 8 and (loss < 0.5 * base).all()  # five to six points"
    assert _claims._compared_expressions(line) == ["acc_gain[name]", "(loss < 0.5 * base).all()",
                                                   "loss", "0.5 * base"]
    assert _claims._compared_expressions("assert abs(a - b) < 1e-5") == ["abs(a - b)", "a - b"]
    assert _claims._compared_expressions("assert not ok") == ["ok"]
    assert _claims._compared_expressions("x = (") == []


def test_the_failing_line_comes_from_ipythons_marker():
    source = "a = 1\nb = 2\nassert a > b, (a, b)\n"
    traceback = "\x1b[0;31mAssertionError\x1b[0m\nCell \x1b[0;32mIn[3], line 3\x1b[0m\n----> 3 assert a > b"
    assert _claims._failing_line(source, traceback) == (3, "assert a > b, (a, b)")
    assert _claims._failing_line(source, "no marker") == (None, "")


def test_the_table_marks_failures_with_their_values():
    results = {("06_x", "s1"): {"status": "passed", "seconds": 12.0},
               ("06_x", "s0t1"): {"status": "failed", "cell": 4, "line_number": 2, "line": "assert g > 4",
                                  "error": "AssertionError", "values": {"g": "3.6"}, "seconds": 11.0}}
    table = _claims.format_table(["06_x"], ["s1", "s0t1"], results)
    assert "pass 12s" in table and "FAIL cell 4" in table
    assert "assert g > 4" in table and "g = 3.6" in table
    assert table.splitlines()[-1] == "1 passed, 1 failed"


def _notebook(tmp_path, cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    path = tmp_path / "99_toy.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_claim_that_leans_on_one_seed_fails_under_another(tmp_path):
    """End to end, in fresh kernels: the offset reaches the chapter through method_seed and
    BOOK_THREADS through seed_everything; the failing line and its values come back."""
    path = _notebook(tmp_path, [
        "import os\nimport torch\nfrom book.utils import method_seed, seed_everything\nseed_everything(0)\n"
        "draw = torch.rand(1, generator=torch.Generator().manual_seed(method_seed(0))).item()\n"
        "lucky = method_seed(0)\nthreads = torch.get_num_threads()",
        "assert threads == 1 or 'BOOK_THREADS' not in os.environ\nassert lucky < 1 and draw < 2, 'only seed 0'",
    ])
    assert _claims._run_in_child(path, "s0t1", 120)["status"] == "passed"
    failed = _claims._run_in_child(path, "s2", 120)
    assert failed["status"] == "failed" and failed["cell"] == 2 and failed["line_number"] == 2
    assert failed["line"].startswith("assert lucky < 1") and failed["error"].startswith("AssertionError")
    assert failed["values"]["lucky"] == "2" and float(failed["values"]["draw"]) < 1
    json.dumps(failed)  # what the JSON report holds
