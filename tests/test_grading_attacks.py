"""The grader judges what ran, not what the source spells.

Answers that reach a forbidden implementation by names the static scan cannot read
(computed attribute names, ``vars()``/``__dict__`` chains, references saved in a set-up
line, ``operator`` helpers, ``gc``/``sys.modules`` walks), answers that return the
grader's own references, forged protocol streams and answers that switch the run-time
check off all score zero. Each attack is first shown to give the right outputs when
nothing watches it, so a zero here is the check's doing.
"""

from __future__ import annotations

import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from book.grading.core import judge, run_case
from book.grading.guard import Guard
from book.grading.questions import chapters, get_question, questions_for
from book.grading.runner import grade_notebook

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _answer_cell(nb: dict, question_id: str) -> dict:
    fn = get_question(question_id).function
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and f"def {fn}(" in _source(cell):
            return cell
    raise AssertionError(f"no answer cell defines {fn}")


def _notebook(tmp: Path, name: str, chapter: str, answers: dict[str, str]) -> Path:
    """The solutions notebook of ``chapter`` with some answer cells replaced."""
    nb = copy.deepcopy(json.loads((ROOT / "solutions" / f"{chapter}.ipynb").read_text()))
    for qid, code in answers.items():
        _answer_cell(nb, qid)["source"] = code
    path = tmp / f"{chapter}-{name}.ipynb"
    path.write_text(json.dumps(nb))
    return path


# ---------------------------------------------------------------------------
# Computed routes to the library's implementation

ADAGRAD = """import torch, operator, gc, sys
{top}
def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    A = {expr}
    p = param.detach().clone().requires_grad_(True)
    opt = A([p], lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
    opt.state[p]["sum"] = state_sum.detach().clone()
    opt.state[p]["step"] = torch.tensor(float(step - 1))
    p.grad = grad.detach().clone()
    opt.step()
    return p.detach(), opt.state[p]["sum"]
"""

BN = """import torch, operator, gc, sys
{top}
def bn_train_forward(x, running_mean, running_var, weight, bias, momentum=0.1, eps=1e-5):
    F = {expr}
    rm, rv = running_mean.clone(), running_var.clone()
    y = F(x, rm, rv, weight, bias, True, momentum, eps)
    return y, rm, rv
"""

CE = """import torch, operator, gc, sys
{top}
def cross_entropy(logits, target, label_smoothing=0.0):
    F = {expr}
    return F(logits, target, label_smoothing=label_smoothing)
"""

GD = """import torch, operator, gc, sys, book.gd
{top}
def gd_iterates(f, x0, lr, steps):
    G = {expr}
    return G(f, x0, lr, steps)
"""

CLASSIFY = """import torch, operator, gc, sys, book
{top}
def classify(f, x):
    C = {expr}
    return C(f, x)
"""

INDICES = """import torch, operator, gc, sys
{top}
def minibatch_indices(n, batch_size, seed, drop_last=False):
    B = {expr}
    sampler = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [torch.tensor(b, dtype=torch.int64) for b in B(sampler, batch_size, drop_last)]
"""

MOMENTUM = """import torch, operator, gc, sys
{top}
def momentum_step(param, grad, buf, lr, momentum, dampening=0.0, weight_decay=0.0):
    S = {expr}
    p = param.detach().clone().requires_grad_(True)
    opt = S([p], lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    if buf is not None:
        opt.state[p]["momentum_buffer"] = buf.detach().clone()
    p.grad = grad.detach().clone()
    opt.step()
    return p.detach(), opt.state[p]["momentum_buffer"]
"""

PLATEAU = """import torch, operator, gc, sys
{top}
def plateau_lrs(metrics, lr, factor=0.1, patience=10, threshold=1e-4, cooldown=0, min_lr=0.0):
    R = {expr}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = R(opt, mode="min", factor=factor, patience=patience, threshold=threshold, threshold_mode="rel",
              cooldown=cooldown, min_lr=min_lr)
    out = []
    for m in metrics:
        sched.step(m)
        out.append(float(opt.param_groups[0]["lr"]))
    return out
"""

EARLY = """import torch, operator, gc, sys, book
{top}
def early_stopping(metrics, patience, min_delta=0.0, mode="min"):
    E = {expr}
    rule = E(patience=patience, min_delta=min_delta, mode=mode)
    for epoch, m in enumerate(metrics, start=1):
        if rule.step(m):
            return epoch
    return None
"""

CLIP = """import torch, operator, gc, sys
{top}
def clip_grad_norm(grads, max_norm):
    C = {expr}
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = C(params, max_norm)
    return total, [p.grad for p in params]
"""

NOISE = """import torch, operator, gc, sys, book
{top}
def gradient_noise_scale(g_small_sq, g_big_sq, b_small, b_big):
    N = {expr}
    s, b = g_small_sq.to(torch.float64), g_big_sq.to(torch.float64)
    rows = [N(x, y, b_small, b_big) for x, y in zip(s.reshape(-1).tolist(), b.reshape(-1).tolist())]
    g2, tr = (torch.tensor([r[i] for r in rows], dtype=torch.float64).reshape(s.shape) for i in range(2))
    return g2, tr, tr / g2
"""

LION = """import torch, operator, gc, sys, book
{top}
def lion_step(param, grad, exp_avg, lr, betas, weight_decay):
    L = {expr}
    p = param.detach().clone().requires_grad_(True)
    opt = L([p], lr=lr, betas=betas, weight_decay=weight_decay)
    opt.state[p]["exp_avg"] = exp_avg.detach().clone()
    p.grad = grad.detach().clone()
    opt.step()
    return p.detach(), opt.state[p]["exp_avg"]
"""


def _routes(module: str, attr: str) -> dict[str, tuple[str, str]]:
    """Ways to reach ``module.attr`` whose source never spells it: {route: (top, expr)}."""
    head, _, rest = module.partition(".")
    split = lambda s: " + ".join(repr(p) for p in (s[: len(s) // 2], s[len(s) // 2:]))  # noqa: E731
    chain = head
    path_attrs = (rest.split(".") if rest else []) + [attr]
    getattr_chain = chain
    for a in path_attrs:
        getattr_chain = f"getattr({getattr_chain}, {split(a)})"
    vars_chain = chain
    for a in path_attrs:
        vars_chain = f"vars({vars_chain})[{split(a)}]"
    dict_chain = chain
    for a in path_attrs:
        dict_chain = f"{dict_chain}.__dict__[{split(a)}]"
    dotted = ".".join(path_attrs)
    return {
        "computed_getattr": ("", getattr_chain),
        "vars_lookup": ("", vars_chain),
        "dict_chain": ("", dict_chain),
        "saved_at_the_top": (f"_saved = {getattr_chain}", "_saved"),
        "operator_attrgetter": ("", f"operator.attrgetter({split(dotted)})({head})"),
        "operator_methodcaller": (
            "", "operator.methodcaller('__getattribute__', " + split(attr) + ")("
            + f"getattr(sys, {split('modules')})[{split(module)}])"),
        "gc_walk": ("", f"next(o for o in getattr(gc, {split('get_objects')})() if isinstance(o, (type, type(gc.isenabled), "
                        f"type(lambda: 0))) and o.__name__ == {split(attr)} and "
                        f"str(getattr(o, '__module__', '')).startswith({split(module)}))"),
        "sys_modules_walk": ("", f"getattr(getattr(sys, {split('modules')})[{split(module)}], {split(attr)})"),
    }


TARGETS = {
    # question id: (chapter, template, module, attribute)
    "adagrad_step": ("05_adaptive", ADAGRAD, "torch.optim", "Adagrad"),
    "bn_train_forward": ("09_batch_norm", BN, "torch.nn.functional", "batch_norm"),
    "cross_entropy": ("07_losses", CE, "torch.nn.functional", "cross_entropy"),
    "gd_iterates": ("02_gradient_descent", GD, "book.gd", "gradient_descent"),
    "classify_critical_point": ("01_landscapes", CLASSIFY, "book.landscapes", "classify_critical_point"),
    "minibatch_indices": ("03_sgd", INDICES, "torch.utils.data", "BatchSampler"),
    "momentum_step": ("04_momentum", MOMENTUM, "torch.optim", "SGD"),
    "plateau_lrs": ("06_schedules", PLATEAU, "torch.optim.lr_scheduler", "ReduceLROnPlateau"),
    "early_stopping": ("08_regularization", EARLY, "book.regularization", "EarlyStopping"),
    "clip_grad_norm": ("10_practice", CLIP, "torch.nn.utils", "clip_grad_norm_"),
    "gradient_noise_scale": ("11_scaling", NOISE, "book.scaling", "gradient_noise_scale"),
    "lion_step": ("12_frontiers", LION, "book.optim", "Lion"),
}
ROUTES = list(_routes("torch.optim", "SGD"))
USES = {"minibatch_indices": {"sgd_epoch"}}  # questions whose solution calls another's answer

# Every route, for a question of every chapter that has exercises, is run in process under the
# same check the grading process uses (fast). Graded end to end (about a second a notebook): three
# routes per question, in turn, so that every route is graded in four or five chapters.
CASES = [(qid, route) for qid, (_, _, mod, attr) in TARGETS.items() for route in _routes(mod, attr)]
GRADED = [(qid, ROUTES[(3 * k + j) % len(ROUTES)]) for k, qid in enumerate(TARGETS) for j in range(3)]


def test_every_chapter_with_exercises_is_attacked():
    """A chapter added later needs its own target here (the routes are the same for all)."""
    assert {TARGETS[q][0] for q in TARGETS} == set(chapters())
    assert all(sum(r == route for _, r in GRADED) >= 4 for route in ROUTES)


def _attack_code(qid: str, route: str) -> str:
    _, template, mod, attr = TARGETS[qid]
    top, expr = _routes(mod, attr)[route]
    return template.format(top=top, expr=expr)


def _namespace(code: str) -> dict:
    ns: dict = {"__name__": "__main__"}
    exec(compile(code, "<attack>", "exec"), ns)
    return ns


@pytest.mark.parametrize("qid,route", CASES, ids=[f"{q}-{r}" for q, r in CASES])
def test_each_route_would_pass_unwatched_and_is_caught_in_process(qid, route):
    """The attack gives the right outputs (so only the check stands in its way), and the
    run-time check sees the forbidden implementation run."""
    q = get_question(qid)
    guard = Guard(q.forbidden, harness=(run_case,))  # made first, as in the grading process
    fn = _namespace(_attack_code(qid, route))[q.function]
    cases = list(q.cases(torch.device("cpu")))
    outputs = [run_case(q, fn, c) for c in q.cases(torch.device("cpu"))]
    assert judge(q, cases, outputs).passed, "the attack should be a working answer"
    for c in q.cases(torch.device("cpu")):
        guard.start(trusted=(q.call, c.args, c.kwargs))
        try:
            run_case(q, fn, c)
        finally:
            guard.stop()
    assert guard.ran, f"{route} ran the library's implementation unseen"
    assert not guard.tampered


@pytest.fixture(scope="module")
def route_reports(tmp_path_factory):
    """One notebook per question and route, graded several at a time."""
    folder = tmp_path_factory.mktemp("routes")
    paths = {(qid, route): _notebook(folder, f"{qid}-{route}", TARGETS[qid][0], {qid: _attack_code(qid, route)})
             for qid, route in GRADED}
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = pool.map(lambda k: grade_notebook(paths[k], timeout=TIMEOUT), paths)
        return dict(zip(paths, reports))


@pytest.mark.parametrize("qid,route", GRADED, ids=[f"{q}-{r}" for q, r in GRADED])
def test_each_route_scores_zero_when_graded(qid, route, route_reports):
    rep = route_reports[(qid, route)]
    result = next(r for r in rep.results if r.id == qid)
    assert result.points == 0, result
    assert "write the algorithm yourself" in result.message, result.message
    # the other questions of the notebook (solutions) keep their points, except one whose
    # solution calls the attacked answer (sgd_epoch draws its batches with minibatch_indices)
    users = USES.get(qid, set())
    others = [r for r in rep.results if r.id != qid and r.id not in users]
    assert all(r.passed for r in others), [r.to_dict() for r in others if not r.passed]
    for r in rep.results:
        if r.id in users:
            assert r.points == 0 and "write the algorithm yourself" in r.message, r


# ---------------------------------------------------------------------------
# The grader's references as answers, in every chapter (driven from the registry)

REFERENCE_ANSWER = """
def {fn}(*args, **kwargs):
    from book.grading.questions import get_question
    return get_question({qid!r}).reference(*args, **kwargs)
"""

REFERENCE_PRECOMPUTED = """
import copy, torch
from book.grading.questions import get_question as _get
_q = _get({qid!r})
_answers = [_q.reference(*copy.deepcopy(c.args), **copy.deepcopy(c.kwargs)) for c in _q.cases(torch.device('cpu'))]
_calls = iter(_answers)
def {fn}(*args, **kwargs):
    return next(_calls)
"""


@pytest.fixture(scope="module")
def reference_reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("references")
    paths = {}
    for chapter in chapters():
        qs = questions_for(chapter)
        paths[(chapter, "called")] = _notebook(
            folder, "called", chapter, {q.id: REFERENCE_ANSWER.format(fn=q.function, qid=q.id) for q in qs})
        first = qs[0]
        paths[(chapter, "precomputed")] = _notebook(
            folder, "precomputed", chapter, {first.id: REFERENCE_PRECOMPUTED.format(fn=first.function, qid=first.id)})
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = pool.map(lambda k: grade_notebook(paths[k], timeout=TIMEOUT), paths)
        return dict(zip(paths, reports))


@pytest.mark.parametrize("chapter", chapters())
def test_the_graders_references_as_answers_score_zero(chapter, reference_reports):
    rep = reference_reports[(chapter, "called")]
    assert rep.score == 0, rep.to_dict()
    for r in rep.results:
        assert "book.grading" in r.message, r.message


@pytest.mark.parametrize("chapter", chapters())
def test_references_computed_while_the_cells_run_score_zero(chapter, reference_reports):
    rep = reference_reports[(chapter, "precomputed")]
    assert rep.score == 0, rep.to_dict()


# ---------------------------------------------------------------------------
# Forged streams and tampering

FORGED = """
import json, os, torch
from book.grading.core import encode
from book.grading.questions import questions_for
_events = [{"event": "started"}, {"event": "ready", "names": []}]
for _q in questions_for(CHAPTER):
    _outs = [encode(_q.reference(*c.args, **c.kwargs)) for c in _q.cases(torch.device("cpu"))]
    _events += [{"event": "start", "id": _q.id},
                {"event": "result", "id": _q.id, "outputs": _outs, "errors": [None] * len(_outs)}]
_events.append({"event": "done"})
_text = "".join(json.dumps(e) + "\\n" for e in _events).encode()
for _fd in range(3, 12):
    try:
        os.write(_fd, _text)
    except OSError:
        pass
os._exit(0)
"""

FORGED_THROUGH_PROC = FORGED.replace(
    "        os.write(_fd, _text)",
    "        with open(f'/proc/self/fd/{_fd}', 'wb') as _f:\n            _f.write(_text)")

TAMPER = {
    "unset_the_hook": """import torch, sys
def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    getattr(sys, 'set' + 'profile')(None)
    A = getattr(getattr(torch, 'op' + 'tim'), 'Ada' + 'grad')
    p = param.detach().clone().requires_grad_(True)
    opt = A([p], lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
    opt.state[p]["sum"] = state_sum.detach().clone()
    opt.state[p]["step"] = torch.tensor(float(step - 1))
    p.grad = grad.detach().clone()
    opt.step()
    return p.detach(), opt.state[p]["sum"]
""",
    "replace_the_switch": """import torch
import book.grading.guard as _g
_g._setprofile = lambda hook: None
_g._getprofile = lambda: None
""" + ADAGRAD.format(top="", expr="getattr(getattr(torch, 'op' + 'tim'), 'Ada' + 'grad')"),
    "read_the_token_from_the_harness": """import sys
def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    frame = sys._getframe(1)
    while frame is not None and "token" not in frame.f_locals:
        frame = frame.f_back
    return param, state_sum
""",
    "close_the_reply_channel": """import os
def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    for fd in range(3, 12):
        try:
            getattr(os, 'cl' + 'ose')(fd)
        except OSError:
            pass
    return param, state_sum
""",
    "rebind_the_graders_helpers": """import book.grading.core as _core
_core.compare = lambda *a, **k: None
""" + ADAGRAD.format(top="", expr="getattr(getattr(torch, 'op' + 'tim'), 'Ada' + 'grad')"),
    "a_worker_thread_left_running": """import threading, queue, torch
_jobs, _done = queue.Queue(), queue.Queue()
def _worker():
    while True:
        args = _jobs.get()
        A = getattr(getattr(torch, 'op' + 'tim'), 'Ada' + 'grad')
        param, grad, state_sum, step, lr, lr_decay, weight_decay, eps = args
        p = param.detach().clone().requires_grad_(True)
        opt = A([p], lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
        opt.state[p]["sum"] = state_sum.detach().clone()
        opt.state[p]["step"] = torch.tensor(float(step - 1))
        p.grad = grad.detach().clone()
        opt.step()
        _done.put((p.detach(), opt.state[p]["sum"]))
threading.Thread(target=_worker, daemon=True).start()
def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    _jobs.put((param, grad, state_sum, step, lr, lr_decay, weight_decay, eps))
    return _done.get()
""",
    "another_process": """import subprocess, sys
def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    subprocess.run([sys.executable, '-c', 'pass'])
    return param, state_sum
""",
    "swap_the_hooks_code": """import gc
for _o in getattr(gc, 'get_' + 'objects')():
    if isinstance(_o, type) and _o.__name__ == 'Guard' and _o.__module__.startswith('book'):
        _o._hook.__code__ = (lambda self, frame, event, arg: None).__code__
""" + ADAGRAD.format(top="", expr="getattr(getattr(torch, 'op' + 'tim'), 'Ada' + 'grad')"),
    "code_with_a_librarys_file_name": """import torch, types
_b = vars(torch)['__bu' + 'iltins__']
_code = _b['com' + 'pile']("A = getattr(getattr(torch, 'op' + 'tim'), 'Ada' + 'grad')\\n"
    "p = param.detach().clone().requires_grad_(True)\\n"
    "opt = A([p], lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)\\n"
    "opt.state[p]['sum'] = state_sum.detach().clone()\\n"
    "opt.state[p]['step'] = torch.tensor(float(step - 1))\\n"
    "p.grad = grad.detach().clone()\\n"
    "opt.step()\\n"
    "result = (p.detach(), opt.state[p]['sum'])\\n", types.__file__, 'exec')
def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    ns = dict(torch=torch, param=param, grad=grad, state_sum=state_sum, step=step, lr=lr, lr_decay=lr_decay,
              weight_decay=weight_decay, eps=eps, __builtins__=_b)
    types.FunctionType(_code, ns)()
    return ns['result']
""",
    "exit_after_forging": """import os
def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    os._exit(0)
""",
}

TAMPER_BN = """import torch
def bn_train_forward(x, running_mean, running_var, weight, bias, momentum=0.1, eps=1e-5):
    import torch.utils._python_dispatch as pd
    getattr(pd, '_pop_' + 'mode')()
    F = getattr(torch, 'batch' + '_norm')
    rm, rv = running_mean.clone(), running_var.clone()
    y = F(x, weight, bias, rm, rv, True, momentum, eps, False)
    return y, rm, rv
"""


@pytest.fixture(scope="module")
def tamper_reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tamper")
    paths = {"forged_stream": _notebook(folder, "forged", "05_adaptive", {
                 q.id: (_forged("05_adaptive") if i == 0 else f"def {q.function}(*a, **k):\n    raise NotImplementedError()\n")
                 for i, q in enumerate(questions_for("05_adaptive"))}),
             "forged_stream_through_proc": _notebook(folder, "forged-proc", "05_adaptive", {
                 q.id: (_forged("05_adaptive", FORGED_THROUGH_PROC) if i == 0 else f"def {q.function}(*a, **k):\n    raise NotImplementedError()\n")
                 for i, q in enumerate(questions_for("05_adaptive"))}),
             "pop_the_operator_mode": _notebook(folder, "pop", "09_batch_norm", {"bn_train_forward": TAMPER_BN})}
    for name, code in TAMPER.items():
        paths[name] = _notebook(folder, name, "05_adaptive", {"adagrad_step": code})
    for chapter in chapters():  # a forged stream in every chapter with exercises
        qs = questions_for(chapter)
        paths[f"forged-{chapter}"] = _notebook(folder, "forged", chapter, {
            q.id: (_forged(chapter) if i == 0 else f"def {q.function}(*a, **k):\n    raise NotImplementedError()\n")
            for i, q in enumerate(qs)})
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = pool.map(lambda k: grade_notebook(paths[k], timeout=TIMEOUT), paths)
        return dict(zip(paths, reports))


def _forged(chapter: str, template: str = "") -> str:
    return (template or FORGED).replace("CHAPTER", repr(chapter))


@pytest.mark.parametrize("name", ["forged_stream", "forged_stream_through_proc"] + [f"forged-{c}" for c in chapters()])
def test_a_forged_stream_scores_zero(name, tamper_reports):
    rep = tamper_reports[name]
    assert rep.score == 0, rep.to_dict()


@pytest.mark.parametrize("name", list(TAMPER) + ["pop_the_operator_mode"])
def test_tampering_with_the_check_scores_zero_and_says_so(name, tamper_reports):
    rep = tamper_reports[name]
    qid = "bn_train_forward" if name == "pop_the_operator_mode" else "adagrad_step"
    result = next(r for r in rep.results if r.id == qid)
    assert result.points == 0, result
    assert "tampered with the grader's check" in result.message, result.message
    if name in ("replace_the_switch", "rebind_the_graders_helpers", "a_worker_thread_left_running",
                "swap_the_hooks_code", "code_with_a_librarys_file_name"):
        # done while the cells ran: every question was unwatched
        assert rep.score == 0 and all("tampered" in r.message for r in rep.results), rep.to_dict()
    else:  # the honest answers in the same notebook keep their points
        assert all(r.passed for r in rep.results if r.id != qid), rep.to_dict()


def test_events_without_the_requests_token_are_ignored(monkeypatch):
    """The exchange itself: a child that answers before it is asked is not believed."""
    import book.grading.runner as runner

    fake = ("import json, sys\n"
            "sys.stdin.readline()\n"
            "for e in [{'event': 'started'}, {'event': 'ready'}, {'event': 'start', 'id': 'adagrad_step'},\n"
            "          {'event': 'result', 'id': 'adagrad_step', 'outputs': [], 'errors': []}, {'event': 'done'}]:\n"
            "    print(json.dumps(e), flush=True)\n"
            "sys.stdin.readline()\n")
    monkeypatch.setattr(runner, "STARTUP_S", 5.0)
    real = runner.subprocess.Popen

    def popen(cmd, **kw):
        return real([cmd[0], "-c", fake], **kw)

    monkeypatch.setattr(runner.subprocess, "Popen", popen)
    q = get_question("adagrad_step")
    events = runner.run_answers(["pass"], [q], {q.id: list(q.cases(torch.device("cpu")))}, timeout=1.0,
                                memory_mb=1024)
    assert events["adagrad_step"]["status"] != "result", events


THREADED = ADAGRAD.replace("    A = {expr}\n", "").replace(
    "    opt.step()\n",
    "    t = threading.Thread(target=opt.step)\n    t.start()\n    t.join()\n").replace(
    "    opt = A(", "    opt = {expr}(").replace("import torch,", "import threading, torch,")


def test_a_forbidden_implementation_run_in_a_thread_is_seen():
    q = get_question("adagrad_step")
    code = THREADED.format(top="", expr="getattr(getattr(torch, 'op' + 'tim'), 'Ada' + 'grad')")
    fn = _namespace(code)[q.function]
    guard = Guard(q.forbidden, harness=(run_case,))
    for c in q.cases(torch.device("cpu"))[:2]:
        guard.start(trusted=(q.call, c.args, c.kwargs))
        try:
            run_case(q, fn, c)
        finally:
            guard.stop()
    assert "torch.optim" in guard.ran


# ---------------------------------------------------------------------------
# Every question's forbidden names are live for the run-time check (driven from the
# registry, so chapters added later are covered too)

def _python_callables(name: str):
    from book.grading.guard import _resolve

    obj = _resolve(name)
    if obj is None:
        return []
    if isinstance(obj, type(torch)):
        return [v for v in vars(obj).values() if callable(v) and getattr(v, "__module__", "") == obj.__name__][:5]
    return [obj]


QUESTIONS = [q for c in chapters() for q in questions_for(c)]


@pytest.mark.parametrize("q", QUESTIONS, ids=[q.id for q in QUESTIONS])
def test_every_forbidden_name_is_watched_at_run_time(q):
    """Each forbidden name that names Python code (a module's functions, a function, a
    class) is recognised by the check, and so are the grader's own questions."""
    import types

    from book.grading.guard import _codes

    guard = Guard(q.forbidden)
    for name in q.forbidden:
        if name.startswith("book.grading"):
            continue  # the grader's package is watched through its questions (below)
        for obj in _python_callables(name):
            if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
                assert id(obj) in guard.builtins or any(n == name for _, n in guard.builtins.values()), name
                continue
            codes: set = set()
            _codes(obj, codes)
            if codes:
                assert any(guard._classify(c) for c in codes), f"{name}: {obj!r} is not watched"
    assert guard._classify(q.reference.__code__) if hasattr(q.reference, "__code__") else True
    assert guard._classify(q.cases.__code__)


# ---------------------------------------------------------------------------
# The child gets each question's inputs with the request and never imports the questions


def test_the_child_never_imports_the_grader_questions():
    """An answer that lists the grader's modules loaded in its process sees the harness, and
    no question module: the references, mistakes and case generators are not there to reach."""
    import book.grading.runner as runner
    from book.grading.core import decode

    q = get_question("quadratic_gradient")
    code = (f"def {q.function}(*args, **kwargs):\n    import sys\n"
            "    return ','.join(sorted(m for m in sys.modules if m.startswith('book.grading')))\n")
    cases = list(q.cases(torch.device("cpu")))
    events = runner.run_answers([code], [q], {q.id: cases}, timeout=TIMEOUT, memory_mb=2048)
    ev = events[q.id]
    assert ev["status"] == "result", ev
    loaded = decode(ev["outputs"][0]).split(",")
    assert "book.grading.harness" in loaded and "book.grading.guard" in loaded, loaded
    assert not [m for m in loaded if m.startswith("book.grading.questions")], loaded


@pytest.mark.parametrize("q", QUESTIONS, ids=[q.id for q in QUESTIONS])
def test_every_case_reaches_the_child_intact(q):
    """Every question (driven from the registry) can be run without its module: its ``call`` is
    one of the harness's, and its cases survive the trip to the child bit for bit (the reference
    gives exactly the same outputs on the rebuilt inputs)."""
    from book.grading.core import compare
    from book.grading.harness import CALLS, call_name, pack, unpack

    name = call_name(q.call)
    assert name is None or CALLS[name] is q.call
    cases = list(q.cases(torch.device("cpu")))
    rebuilt = unpack(pack([(c.args, c.kwargs) for c in cases]))
    assert len(rebuilt) == len(cases)
    if q.kind == "tune":  # its reference trains with an answer's choices; the input is a prompt, not data
        return
    for case, (args, kwargs) in zip(cases, rebuilt):
        want = run_case(q, q.reference, copy.deepcopy(case))
        got = run_case(q, q.reference, type(case)(case.label, args, kwargs))
        assert compare(got, want, 0.0, 0.0) is None, (case.label, compare(got, want, 0.0, 0.0))


def test_the_child_refuses_inputs_that_would_need_a_question_module():
    import base64
    import pickle

    from book.grading.harness import unpack

    text = base64.b64encode(pickle.dumps(get_question("adagrad_step").reference)).decode()
    with pytest.raises(pickle.UnpicklingError, match="book.grading.questions"):
        unpack(text)


def test_an_answer_that_calls_the_graders_harness_is_seen():
    """The harness's helpers run as the grader's code only when the grader calls them."""
    fn = _namespace("import importlib\n"
                    "def f(x):\n"
                    "    h = importlib.import_module('book.grading.' + 'harness')\n"
                    "    return h.singular_values(x)\n")["f"]

    def grader():  # stands for the grader's harness, as run_case does in the other tests
        return fn(torch.eye(3))

    guard = Guard(())
    guard.start(trusted=(grader,))
    try:
        grader()
    finally:
        guard.stop()
    assert any("harness" in r for r in guard.ran), guard.ran


HONEST_DECORATED = '''import contextlib, torch

@contextlib.contextmanager
def _perturbed(flat, i, delta):
    old = flat[i].item()
    flat[i] = old + delta
    try:
        yield
    finally:
        flat[i] = old

@torch.no_grad()
def numerical_gradient(f, x, eps=1e-6):
    base = x.detach().to(torch.float64).clone()
    flat = base.reshape(-1)
    grad = torch.zeros(flat.numel(), dtype=torch.float64)
    for i in range(flat.numel()):
        with _perturbed(flat, i, eps):
            fp = float(f(base))
        with _perturbed(flat, i, -eps):
            fm = float(f(base))
        grad[i] = (fp - fm) / (2 * eps)
    return grad.reshape(x.shape).to(x.device)
'''


def test_an_honest_answer_using_decorators_is_not_taken_for_the_library(tmp_path):
    """``@torch.no_grad()`` and ``@contextlib.contextmanager`` run code that every function they
    decorate shares; using them is not using ``torch.autograd`` nor switching the check off."""
    from book.grading import check

    fn = _namespace(HONEST_DECORATED)["numerical_gradient"]
    feedback = check("numerical_gradient", fn=fn)
    assert feedback.passed, feedback.result.message
    rep = grade_notebook(_notebook(tmp_path, "decorated", "10_practice", {"numerical_gradient": HONEST_DECORATED}),
                         timeout=TIMEOUT)
    assert rep.score == rep.max_score, rep.to_dict()


CLEAR_THE_RECORD = ADAGRAD.format(top="", expr="getattr(getattr(torch, 'op' + 'tim'), 'Ada' + 'grad')").replace(
    '    return p.detach(), opt.state[p]["sum"]',
    "    for o in getattr(gc, 'get_' + 'objects')():\n"
    "        if type(o).__name__ == 'Guard' and type(o).__module__.startswith('book'):\n"
    "            o.ran.clear()\n"
    '    return p.detach(), opt.state[p]["sum"]')


def test_clearing_the_checks_record_afterwards_changes_nothing(tmp_path):
    """What the check sees is reported to the grader the moment it runs: an answer that then
    finds the check's objects and empties its record still scores zero."""
    rep = grade_notebook(_notebook(tmp_path, "clear", "05_adaptive", {"adagrad_step": CLEAR_THE_RECORD}),
                         timeout=TIMEOUT)
    result = next(r for r in rep.results if r.id == "adagrad_step")
    assert result.points == 0 and "torch.optim" in result.message, result
