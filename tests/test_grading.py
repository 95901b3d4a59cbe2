"""The grader is trusted only as far as these tests go.

Driven by the question registry, so a chapter that adds questions is covered here
without touching this file: every solution scores full marks, every untouched exercise
zero, every known mistake less than full marks with its name in the message, and no
attack on the grader scores more than the untouched stub.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from book.grading import check, check_all
from book.grading.__main__ import main as grade_main
from book.grading.core import AUTOGRAD, KINDS, decode, encode, judge, run_case
from book.grading.questions import all_questions, chapters, questions_for
from book.grading.runner import grade_notebook

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = all_questions()
CHAPTERS = chapters()
TIMEOUT = 3.0  # seconds per answer cell / question for the attack notebooks


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def save(nb: dict, path: Path) -> Path:
    path.write_text(json.dumps(nb))
    return path


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def answer_cell(nb: dict, question_id: str) -> dict:
    """The solution cell that defines the function of a question."""
    fn = next(q.function for q in QUESTIONS if q.id == question_id)
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and f"def {fn}(" in source(cell):
            return cell
    raise AssertionError(f"no answer cell defines {fn}")


def solution_namespace(chapter: str) -> dict:
    """Execute a solutions notebook's set-up and answer cells in a fresh namespace."""
    nb = load(ROOT / "solutions" / f"{chapter}.ipynb")
    ns: dict = {"__name__": "__main__"}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell["cell_type"] == "code" and (meta.get("solution") or (meta.get("locked") and not meta.get("grade"))):
            exec(compile(source(cell), f"<{chapter}>", "exec"), ns)
    return ns


# ---------------------------------------------------------------------------
# The registry and the verdicts, in process


def test_registry_is_well_formed():
    assert QUESTIONS, "no questions registered"
    for q in QUESTIONS:
        assert q.points > 0 and q.function.isidentifier() and q.id
        assert len(q.mistakes) >= 2, f"{q.id}: at least two known mistakes per question"
        assert q.kind in KINDS
        if q.kind not in ("predict", "tune"):  # a prediction, or a choice of hyperparameters, is asked once
            assert len(q.cases(torch.device("cpu"))) >= 3, f"{q.id}: several test inputs"
    for chapter in CHAPTERS:
        assert (ROOT / "solutions" / f"{chapter}.ipynb").exists(), f"no solutions notebook for {chapter}"
        assert len(questions_for(chapter)) >= 3


@pytest.mark.parametrize("q", QUESTIONS, ids=[q.id for q in QUESTIONS])
def test_every_known_mistake_fails_and_is_named(q, device):
    cases = list(q.cases(device))
    for m in q.mistakes:
        outputs = [run_case(q, m.fn, c) for c in copy.deepcopy(cases)]  # a fresh copy, as in a notebook
        result = judge(q, cases, outputs)
        assert not result.passed and result.points < q.points, f"{q.id}: mistake {m.name!r} passes"
        assert m.name in result.message, f"{q.id}: the message does not name {m.name!r}: {result.message}"


@pytest.mark.parametrize("q", QUESTIONS, ids=[q.id for q in QUESTIONS])
def test_solution_passes_in_notebook_check_within_a_second(q, device, monkeypatch):
    monkeypatch.setenv("BOOK_DEVICE", device.type)
    ns = solution_namespace(q.chapter)
    start = time.perf_counter()
    feedback = check(q.id, fn=ns[q.function])
    elapsed = time.perf_counter() - start
    assert feedback.passed, feedback.result.message
    assert feedback.result.points == q.points
    # a tune question trains in a fresh process (starting Python and torch is most of it)
    limit = 10.0 if q.kind == "tune" else 1.0
    assert elapsed < limit, f"{q.id}: feedback took {elapsed:.2f} s"
    assert "passed" in feedback._repr_html_() and "PASS" in repr(feedback)


@pytest.mark.parametrize("q", QUESTIONS, ids=[q.id for q in QUESTIONS])
def test_known_mistakes_fail_in_notebook_check(q):
    for m in q.mistakes:
        feedback = check(q.id, fn=m.fn)
        assert not feedback.passed and m.name in feedback.result.message


def test_check_finds_the_function_in_the_callers_namespace():
    ns = solution_namespace(CHAPTERS[0])
    q = questions_for(CHAPTERS[0])[0]
    ns["check"] = check
    exec(f"result = check({q.id!r})", ns)
    assert ns["result"].passed
    summary = eval("check_all()", {**ns, "check_all": check_all})
    assert summary.score == summary.max_score == sum(x.points for x in questions_for(CHAPTERS[0]))


def test_check_on_a_stub_is_helpful_and_raises_under_nbgrader(monkeypatch):
    q = QUESTIONS[0]

    def stub(*args, **kwargs):
        raise NotImplementedError()

    feedback = check(q.id, fn=stub)
    assert not feedback.passed and "not answered yet" in feedback.result.message
    assert "not yet" in feedback._repr_html_()
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="not answered"):
        check(q.id, fn=stub)


def test_check_names_the_first_mismatch():
    q = next(q for q in QUESTIONS if q.id == "quadratic_gradient")
    feedback = check(q.id, fn=lambda A, b, x: A @ x - b + (x.abs() > 10).to(x.dtype) * 0 + 1e-3 * (x == x.max()))
    msg = feedback.result.message
    assert not feedback.passed and "on input" in msg and "index" in msg and "expected" in msg


def test_adam_without_bias_correction_is_told_its_steps_are_too_large():
    """Chapter 5 measures it: without the correction Adam's first step is (1 - β1)/√(1 - β2) ≈ 3.2 times too long."""
    q = next(q for q in QUESTIONS if q.id == "adam_step")
    mistake = next(m for m in q.mistakes if m.name == "no bias correction")
    cases = list(q.cases(torch.device("cpu")))
    result = judge(q, cases, [mistake.fn(*c.args, **c.kwargs) for c in cases])
    assert not result.passed and "no bias correction" in result.message
    assert "too large" in result.message and "too small" not in result.message
    first = cases[0]  # step 1 from zero moments, the default betas
    assert first.args[4] == 1 and not first.kwargs
    param = first.args[0]
    wrong = mistake.fn(*first.args, **first.kwargs)[0] - param
    right = q.reference(*first.args, **first.kwargs)[0] - param
    torch.testing.assert_close(wrong, right * (1 - 0.9) / (1 - 0.999) ** 0.5, rtol=1e-4, atol=0)  # up to eps


def test_check_unknown_question_lists_the_known_ones():
    with pytest.raises(KeyError, match="quadratic_gradient"):
        check("no_such_question")


def test_check_refuses_the_librarys_own_implementation():
    from book.gd import gradient_descent as library_gd

    def gd_iterates(f, x0, lr, steps):
        import book.gd

        return book.gd.gradient_descent(f, x0, lr, steps)

    assert library_gd is not None
    feedback = check("gd_iterates", fn=gd_iterates)
    assert not feedback.passed and "book.gd" in feedback.result.message


def test_encode_decode_round_trip_gives_plain_tensors():
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

    value = (torch.arange(6.0).reshape(2, 3).as_subclass(Liar), 3, 2.5, [True, None, "s"])
    back = decode(json.loads(json.dumps(encode(value))))
    assert type(back[0]) is torch.Tensor and torch.equal(back[0], torch.arange(6.0).reshape(2, 3))
    assert back[1:] == (3, 2.5, [True, None, "s"])
    with pytest.raises(ValueError):
        decode({"type": "tensor", "dtype": "float32", "shape": [10], "data": ""})


def test_encode_decode_keeps_the_shape_of_scalars_and_views():
    """A loss is a 0-d tensor: it must come back 0-d (not (1,)); a transposed view keeps its values."""
    for value in (torch.tensor(2.5), torch.tensor(3, dtype=torch.int64), torch.arange(6.0).reshape(2, 3).t()):
        back = decode(json.loads(json.dumps(encode(value))))
        assert back.shape == value.shape and torch.equal(back, value)


# ---------------------------------------------------------------------------
# The command-line grader, in a child process


@pytest.fixture(scope="module")
def gradebook(tmp_path_factory, attack_folder):
    """The command-line grader run once over a class folder: every chapter's solutions and untouched
    exercises, a file that is not JSON, and three attacks. Returns (exit code, CSV rows, JSON records
    by file name, printed output); the tests below read their verdicts from it."""
    tmp = tmp_path_factory.mktemp("gradebook")
    folder = tmp / "class"
    folder.mkdir()
    for chapter in CHAPTERS:
        (folder / f"{chapter}-solution.ipynb").write_text((ROOT / "solutions" / f"{chapter}.ipynb").read_text())
        (folder / f"{chapter}-untouched.ipynb").write_text((ROOT / "exercises" / f"{chapter}.ipynb").read_text())
    (folder / f"{GD}-broken.ipynb").write_text("{ not json")
    for name in ("print_passed", "monkeypatch_torch_and_book", "os_exit_in_cell"):
        (folder / f"{GD}-{name}.ipynb").write_text((attack_folder / f"{GD}-{name}.ipynb").read_text())
    out_csv, out_json = tmp / "grades.csv", tmp / "grades.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = grade_main([str(folder), "--csv", str(out_csv), "--json", str(out_json), "--timeout", str(TIMEOUT)])
    records = {Path(r["notebook"]).name: r for r in json.loads(out_json.read_text())}
    return code, list(csv.DictReader(out_csv.open())), records, printed.getvalue()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solutions_score_full_marks(chapter, gradebook):
    rep = gradebook[2][f"{chapter}-solution.ipynb"]
    assert rep["score"] == rep["max_score"] == sum(q.points for q in questions_for(chapter)), rep
    assert {r["id"] for r in rep["questions"]} == {q.id for q in questions_for(chapter)}
    assert all(r["passed"] for r in rep["questions"]), rep


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_untouched_exercises_score_zero(chapter, gradebook):
    rep = gradebook[2][f"{chapter}-untouched.ipynb"]
    assert rep["score"] == 0 and rep["max_score"] > 0
    assert rep["questions"] and all("not answered yet" in r["message"] for r in rep["questions"]), rep


def test_exercises_are_generated_from_solutions():
    from book.grading.exercises import main as exercises_main

    assert exercises_main(["--check"]) == 0, "exercises/ is out of date: run `make exercises`"


def test_exercise_notebooks_have_stubs_and_no_answers():
    for chapter in CHAPTERS:
        nb = load(ROOT / "exercises" / f"{chapter}.ipynb")
        text = "".join(source(c) for c in nb["cells"])
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text


def _attack(tmp_path: Path, chapter: str, name: str, edit) -> Path:
    """An exercise notebook (untouched stubs) with one attack written into it."""
    nb = load(ROOT / "exercises" / f"{chapter}.ipynb")
    nb = copy.deepcopy(nb)
    edit(nb)
    return save(nb, tmp_path / f"{chapter}-{name}.ipynb")


def _prepend_to_answer(code: str, which: int = 0):
    def edit(nb):
        cells = [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
        cells[which]["source"] = code + "\n" + source(cells[which])
    return edit


def _replace_answer(question_id: str, code: str):
    def edit(nb):
        answer_cell(nb, question_id)["source"] = code
    return edit


GD = "02_gradient_descent"

ATTACKS = {
    "infinite_loop_in_function": _replace_answer(
        "gd_iterates", "def gd_iterates(f, x0, lr, steps):\n    while True:\n        pass\n"),
    "infinite_loop_catching_the_alarm": _replace_answer(
        "gd_iterates",
        "def gd_iterates(f, x0, lr, steps):\n    while True:\n        try:\n            while True:\n"
        "                pass\n        except BaseException:\n            pass\n"),
    "os_exit_in_cell": _prepend_to_answer("import os\nos._exit(0)"),
    "os_exit_in_function": _replace_answer(
        "newton_step", "import os\ndef newton_step(f, x):\n    os._exit(0)\n"),
    "sys_exit": _prepend_to_answer("import sys\nsys.exit()"),
    "print_passed": _prepend_to_answer(
        "print('PASS passed 100 %'); print('{\"event\": \"result\", \"id\": \"gd_iterates\"}')"),
    "redefine_check_and_grader": _prepend_to_answer(
        "import book.grading, book.grading.core\n"
        "def check(*a, **k):\n    print('passed')\n    return True\n"
        "book.grading.check = check\n"
        "book.grading.core.judge = lambda *a, **k: None\n"
        "book.grading.core.compare = lambda *a, **k: None\n"),
    "monkeypatch_torch_and_book": _prepend_to_answer(
        "import torch, torch.testing, book, book.gd\n"
        "torch.allclose = lambda *a, **k: True\n"
        "torch.isclose = lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)\n"
        "torch.testing.assert_close = lambda *a, **k: None\n"
        "torch.Tensor.__eq__ = lambda *a: True\n"
        "book.gd.gradient_descent = lambda *a, **k: torch.zeros(1)\n"),
    "fake_result_files": _prepend_to_answer(
        "import json, os, tempfile\n"
        "for p in ['grades.json', 'results.json', os.path.join(tempfile.gettempdir(), 'grades.json')]:\n"
        "    open(p, 'w').write(json.dumps({'score': 9, 'max_score': 9}))\n"
        "os.write(3, b'{\"event\": \"result\", \"id\": \"gd_iterates\", \"outputs\": [], \"errors\": []}\\n')\n"),
    "tensor_equal_to_anything": _replace_answer(
        "gd_iterates",
        "import torch\nclass Anything(torch.Tensor):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        return torch.ones(1).as_subclass(torch.Tensor)\n"
        "def gd_iterates(f, x0, lr, steps):\n    return torch.zeros(steps + 1, x0.numel()).as_subclass(Anything)\n"),
    "five_gigabytes": _replace_answer(
        "gd_iterates",
        "import torch\nbig = None\ndef gd_iterates(f, x0, lr, steps):\n"
        "    global big\n    big = torch.ones(5 * 2**30, dtype=torch.uint8)\n    return big\n"),
    "five_gigabytes_in_cell": _prepend_to_answer("import torch\nblob = torch.ones(5 * 2**30, dtype=torch.uint8)\n"),
    "calls_the_library": _replace_answer(
        "gd_iterates",
        "from book.gd import gradient_descent as _g\n"
        "def gd_iterates(f, x0, lr, steps):\n    return _g(f, x0, lr, steps)\n"),
    "calls_torch_optim": _replace_answer(
        "gd_iterates",
        "import torch\ndef gd_iterates(f, x0, lr, steps):\n"
        "    x = x0.clone().requires_grad_(True)\n    opt = torch.optim.SGD([x], lr=lr)\n"
        "    xs = [x.detach().clone()]\n    for _ in range(steps):\n"
        "        opt.zero_grad(); f(x).backward(); opt.step(); xs.append(x.detach().clone())\n"
        "    return torch.stack(xs)\n"),
    "dynamic_import": _replace_answer(
        "gd_iterates",
        "m = __import__('book.gd', fromlist=['x'])\n"
        "def gd_iterates(f, x0, lr, steps):\n    return m.gradient_descent(f, x0, lr, steps)\n"),
}


@pytest.fixture(scope="module")
def attack_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    for name, edit in ATTACKS.items():
        _attack(folder, GD, name, edit)
    return folder


@pytest.fixture(scope="module")
def attack_reports(attack_folder):
    """Grade every attack notebook once, several at a time (each grading is mostly a
    child process starting up or waiting out a time limit)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = pool.map(lambda n: grade_notebook(attack_folder / f"{GD}-{n}.ipynb", timeout=TIMEOUT), ATTACKS)
        return dict(zip(ATTACKS, reports))


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_score_no_more_than_the_stub(name, attack_reports):
    rep = attack_reports[name]
    assert rep.max_score == sum(q.points for q in questions_for(GD))
    assert rep.score == 0, rep.to_dict()
    assert len(rep.results) == len(questions_for(GD)), "every question gets a verdict"


def test_attacks_leave_other_questions_graded(tmp_path):
    """A hanging or exiting answer loses its own question; the others are still graded."""
    sol = load(ROOT / "solutions" / f"{GD}.ipynb")
    hang = copy.deepcopy(sol)
    answer_cell(hang, "gd_iterates")["source"] = (
        "def gd_iterates(f, x0, lr, steps):\n    while True:\n        try:\n            while True:\n"
        "                pass\n        except BaseException:\n            pass\n")
    answer_cell(hang, "newton_step")["source"] = "import os\ndef newton_step(f, x):\n    os._exit(0)\n"
    rep = grade_notebook(save(hang, tmp_path / f"{GD}-mixed.ipynb"), timeout=TIMEOUT)
    by_id = {r.id: r for r in rep.results}
    assert not by_id["gd_iterates"].passed and "did not finish" in by_id["gd_iterates"].message
    assert not by_id["newton_step"].passed and "exit" in by_id["newton_step"].message
    assert by_id["backtracking"].passed
    assert rep.score == sum(q.points for q in questions_for(GD) if q.id not in ("gd_iterates", "newton_step"))


def test_library_call_message_says_why(attack_reports):
    rep = attack_reports["calls_the_library"]
    msg = next(r.message for r in rep.results if r.id == "gd_iterates")
    assert "book.gd" in msg and "yourself" in msg


@pytest.mark.parametrize(
    "name, content, expect",
    [
        ("not_json", "this is { not json", "not valid notebook JSON"),
        ("no_cells", json.dumps({"metadata": {}}), "no list of cells"),
        ("binary", b"\x89PNG\x00\xff\xfe", "not text"),
    ],
)
def test_malformed_notebooks_get_a_message_and_zero(tmp_path, name, content, expect):
    path = tmp_path / f"{GD}-{name}.ipynb"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    rep = grade_notebook(path)
    assert rep.score == 0 and expect in (rep.error or "")
    assert [r.id for r in rep.results] == [q.id for q in questions_for(GD)]


def test_renamed_function_and_missing_cell(tmp_path):
    sol = load(ROOT / "solutions" / f"{GD}.ipynb")
    nb = copy.deepcopy(sol)
    cell = answer_cell(nb, "newton_step")
    cell["source"] = source(cell).replace("def newton_step(", "def my_newton(")
    nb["cells"].remove(answer_cell(nb, "backtracking"))
    rep = grade_notebook(save(nb, tmp_path / f"{GD}-renamed.ipynb"))
    by_id = {r.id: r for r in rep.results}
    assert by_id["gd_iterates"].passed
    assert not by_id["newton_step"].passed and "no function named `newton_step`" in by_id["newton_step"].message
    assert not by_id["backtracking"].passed and "no function named `backtracking`" in by_id["backtracking"].message


def test_gradebook_for_a_folder(gradebook):
    code, rows, data, printed = gradebook
    assert code == 0
    assert len(rows) == 2 * len(CHAPTERS) + 4
    kinds = sorted({q.kind for q in QUESTIONS})
    for row in rows:  # a column per kind: the points earned on questions of that kind
        assert all(f"{k} (points)" in row for k in kinds), list(row)
        if row["notebook"].endswith("-solution.ipynb"):
            for k in kinds:
                want = sum(q.points for q in questions_for(row["chapter"]) if q.kind == k)
                assert float(row[f"{k} (points)"]) == want, (row["notebook"], k)
    for row in rows:
        expected_full = row["notebook"].endswith("-solution.ipynb")
        assert float(row["score"]) == (float(row["max_score"]) if expected_full else 0), row
    first = next(iter(data.values()))
    assert {"notebook", "score", "max_score", "questions"} <= set(first)
    assert {"id", "points", "max_points", "passed", "message"} <= set(first["questions"][0])
    assert "PASS" in printed


def test_console_script_runs(tmp_path):
    exe = Path(sys.executable).with_name("book-grade")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    out = tmp_path / "one.json"
    proc = subprocess.run([str(exe), str(ROOT / "solutions" / f"{CHAPTERS[0]}.ipynb"), "--json", str(out)],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["score"] == data["max_score"] > 0


# ---------------------------------------------------------------------------
# Chapter 10: questions graded by what the answer does to its arguments


def test_successive_halving_is_graded_by_its_calls_not_only_its_winner():
    """The objective records every call (Question.call): an answer that returns the right
    configuration but runs one configuration once more does not pass."""
    q = next(q for q in QUESTIONS if q.id == "successive_halving")

    def one_call_too_many(configs, objective, min_budget, eta):
        alive, budget = list(range(len(configs))), min_budget
        while len(alive) > 1:
            losses = [objective(configs[i], budget) for i in alive]
            order = sorted(range(len(alive)), key=lambda k: (losses[k], k))
            alive = sorted(alive[k] for k in order[:max(1, len(alive) // eta)])
            budget *= eta
        best = configs[alive[0]]
        objective(best, min_budget)
        return best

    feedback = check(q.id, fn=one_call_too_many)
    assert not feedback.passed and "at budget" in feedback.result.message


def test_numerical_gradient_test_functions_hide_from_autograd():
    """The test functions are black boxes: differentiating them with autograd raises, so the
    answer has to take differences. The static check cannot forbid a `.backward()` method
    call; the run-time check sees it run autograd."""

    def by_autograd(f, x, eps=1e-6):
        x = x.detach().to(torch.float64).requires_grad_(True)
        f(x).backward()
        return x.grad

    feedback = check("numerical_gradient", fn=by_autograd)
    message = feedback.result.message
    assert not feedback.passed and ("does not require grad" in message or "torch.autograd" in message), message


# ---------------------------------------------------------------------------
# The kinds of question beyond "implement" (driven from the registry)

DERIVE = [q for q in QUESTIONS if q.kind == "derive"]
PREDICT = [q for q in QUESTIONS if q.kind == "predict"]
PARTIAL = [q for q in QUESTIONS if q.partial and q.kind != "tune"]  # tune: a share of the seeds (below)


@pytest.mark.parametrize("q", DERIVE, ids=[q.id for q in DERIVE])
def test_a_derivation_done_by_autograd_scores_zero(q):
    """The solution, with one use of autograd on the side, scores zero: a derive question is
    about the closed form."""
    assert set(AUTOGRAD) <= set(q.forbidden)
    solution = solution_namespace(q.chapter)[q.function]
    for route in ("x = torch.ones(2, requires_grad=True)\n    (x * x).sum().backward()",
                  "x = torch.ones(2, requires_grad=True)\n    getattr(torch, 'auto' + 'grad').grad((x * x).sum(), x)"):
        ns = {"torch": torch, "solution": solution}
        exec(f"def answer(*args, **kwargs):\n    {route}\n    return solution(*args, **kwargs)\n", ns)
        feedback = check(q.id, fn=ns["answer"])
        assert feedback.result.points == 0, (route, feedback.result.message)
        assert "autograd" in feedback.result.message or "backward" in feedback.result.message, feedback.result.message


@pytest.mark.parametrize("q", PREDICT, ids=[q.id for q in PREDICT])
def test_a_wrong_prediction_is_not_told_the_answer(q):
    """The check says a prediction is off, never what the right value is (else one check would
    hand it over)."""
    want = q.reference()
    values = [float(v) for v in (want if isinstance(want, tuple) else (want,))]
    wrong = tuple(2.0 * v for v in values) if isinstance(want, tuple) else 2.0 * values[0]
    result = check(q.id, fn=lambda: wrong).result
    assert result.points == 0 and "tolerance" in result.message
    for v in values:
        for text in (f"{v:g}", f"{v:.6g}", f"{v:.4g}", f"{v:.3g}", repr(v)):
            assert text not in result.message, (text, result.message)


@pytest.mark.parametrize("q", PARTIAL, ids=[q.id for q in PARTIAL])
def test_partial_credit_is_a_share_of_the_inputs(q):
    """An answer right on some inputs only earns that share of the points: the solution on
    every input but the last."""
    solution = solution_namespace(q.chapter)[q.function]
    cases = list(q.cases(torch.device("cpu")))
    outputs = [run_case(q, solution, c) for c in cases]
    outputs[-1] = None  # nothing on the last input
    result = judge(q, cases, outputs)
    assert not result.passed
    assert result.points == round(q.points * (len(cases) - 1) / len(cases), 2), result
    assert f"right on {len(cases) - 1} of {len(cases)}" in result.message, result.message


TUNE = [q for q in QUESTIONS if q.kind == "tune"]


@pytest.mark.parametrize("q", TUNE, ids=[q.id for q in TUNE])
def test_a_tune_answer_is_validated_before_anything_trains(q):
    """Only a dict that fits the question's space is trained with; anything else scores zero
    with a message, and so do NaN and values out of range."""
    from book.grading.tune import validate

    good = solution_namespace(q.chapter)[q.function]()
    assert validate(q.space, good) == (good, None)
    name = next(n for n, spec in q.space.items() if isinstance(spec, tuple) and spec[0] != "int")
    low, high = q.space[name]
    for bad, why in [(None, "dict"), ({**good, "extra": 1}, "unknown"), ({k: v for k, v in good.items() if k != name},
                                                                         "missing"),
                     ({**good, name: float("nan")}, "finite"), ({**good, name: high * 10}, "lie in"),
                     ({**good, name: "0.1"}, "number"), ({**good, name: torch.tensor(0.1)}, "number")]:
        result = check(q.id, fn=lambda bad=bad: bad).result
        assert result.points == 0 and why in result.message, (bad, result.message)


@pytest.mark.parametrize("q", TUNE, ids=[q.id for q in TUNE])
def test_a_tune_answer_that_hangs_scores_zero(q, tmp_path):
    nb = copy.deepcopy(load(ROOT / "solutions" / f"{q.chapter}.ipynb"))
    answer_cell(nb, q.id)["source"] = f"def {q.function}():\n    while True:\n        pass\n"
    report = grade_notebook(save(nb, tmp_path / f"{q.chapter}-hangs.ipynb"), timeout=2.0)
    result = next(r for r in report.results if r.id == q.id)
    assert result.points == 0 and "did not finish" in result.message, result
    assert all(r.passed for r in report.results if r.id != q.id), report.to_dict()


@pytest.mark.parametrize("q", TUNE, ids=[q.id for q in TUNE])
def test_a_tune_answer_earns_the_share_of_seeds_that_reach_the_target(q, monkeypatch):
    import book.grading.tune as tune

    good = solution_namespace(q.chapter)[q.function]()
    monkeypatch.setattr(tune, "train_seeds", lambda qid, params, seeds, time_limit=0: [
        (True, 0.01), (False, 0.5), (True, 0.01)])
    result = check(q.id, fn=lambda: good).result
    assert result.points == round(q.points * 2 / 3, 2) and "2 of 3" in result.message, result


def test_nbgrader_autograde_gives_the_new_kinds_their_points_and_partial_credit(tmp_path):
    """nbgrader's own autograder, on a course built from a solutions notebook with questions of
    the new kinds (diagnose, tune): the solutions score full marks, and an answer right on some of
    its inputs gets that share of the points, as in the book's grader."""
    pytest.importorskip("nbgrader")
    chapter = "06_schedules"
    q = next(x for x in questions_for(chapter) if x.kind == "diagnose")
    course = tmp_path / "course"
    (course / "source" / "ps").mkdir(parents=True)
    nb = load(ROOT / "solutions" / f"{chapter}.ipynb")
    save(nb, course / "source" / "ps" / f"{chapter}.ipynb")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'optdl'\nc.ExecutePreprocessor.timeout = 300\n")
    # a submission whose diagnosis never says "overfitting": right on the runs of the other causes
    sub = copy.deepcopy(nb)
    answer_cell(sub, q.id)["source"] = (
        "def diagnose(history):\n    import math\n    train = history['train_loss']\n"
        "    if not all(math.isfinite(v) for v in train) or train[-1] > train[0]:\n        return 'lr too high'\n"
        "    if train[-1] > 0.9 * train[0]:\n        return 'lr too low'\n    return 'well tuned'\n")
    for student, book in (("solution", nb), ("partial", sub)):
        save(book, (course / "submitted" / student / "ps").mkdir(parents=True) or
             course / "submitted" / student / "ps" / f"{chapter}.ipynb")
    exe = Path(sys.executable).with_name("nbgrader")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for args in (["db", "assignment", "add", "ps"], ["db", "student", "add", "solution"],
                 ["db", "student", "add", "partial"], ["generate_assignment", "ps", "--force"],
                 ["autograde", "ps", "--force"]):
        done = subprocess.run([str(exe), *args], cwd=course, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        full = {g.name: g.score for nb_ in gb.find_submission("ps", "solution").notebooks for g in nb_.grades}
        part = {g.name: g.score for nb_ in gb.find_submission("ps", "partial").notebooks for g in nb_.grades}
    for x in questions_for(chapter):
        assert full[x.id] == x.points, (x.id, full)
        if x.id != q.id:
            assert part[x.id] == x.points, (x.id, part)
    assert 0 < part[q.id] < q.points, part  # the runs that overfit were misread, the others not


def test_guessing_a_diagnosis_through_the_check_does_not_pay():
    """The answers that were right on one draw of runs (as a student could find them by trying
    names through check()) are replayed on another draw: they earn no more than chance, and the
    draws differ in their runs as well as in their order."""
    from book.grading.questions.schedules import _diagnose_cases

    q = next(x for x in QUESTIONS if x.kind == "diagnose")
    first = _diagnose_cases(torch.device("cpu"), seed=11)
    learnt = [q.reference(*c.args) for c in first]  # what perfect feedback would reveal
    assert judge(q, first, learnt).passed
    for seed in (12, 13, 14):
        second = _diagnose_cases(torch.device("cpu"), seed=seed)
        assert [c.args[0]["train_loss"] for c in second] != [c.args[0]["train_loss"] for c in first]
        result = judge(q, second, learnt)
        assert not result.passed and result.points < q.points, (seed, result)


def test_a_diagnose_draw_shows_its_cause_with_room_to_spare(monkeypatch):
    """A real run can happen to hide its cause (an overfitting run whose validation loss barely turns
    up); the grader redraws such a run instead of asking an unfair question. Seed 189 is such an
    overfitting run: its validation loss ends only 1.31 times above its minimum."""
    from book.grading.curves import training_run
    from book.grading.questions import schedules

    hidden = training_run("overfitting", 189)
    assert not schedules._is_clear("overfitting", hidden)
    assert schedules._rules(hidden) == "overfitting"  # a good answer's rule still reads it, barely
    drawn = []
    monkeypatch.setattr(schedules, "training_run", lambda cause, seed: drawn.append(seed) or training_run(cause, seed))
    run = schedules._clear_run("overfitting", 189)
    assert drawn[0] == 189 and len(drawn) >= 2 and run["val_loss"] != hidden["val_loss"]
    assert schedules._is_clear("overfitting", run)
    for cause in ("well tuned", "lr too low", "lr too high", "overfitting"):  # typical runs are clear
        assert schedules._is_clear(cause, training_run(cause, 0)), cause
    assert not schedules._is_clear("well tuned", training_run("overfitting", 0))
    assert not schedules._is_clear("lr too low", training_run("well tuned", 0))
