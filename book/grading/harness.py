"""What the grading process needs besides the answer itself, and nothing secret.

The grader's child process (``book.grading._child``) runs a submission's answer cells and
calls each answer on test inputs that the grader's own process makes and sends it, one
question at a time, when it asks for that answer. The child never imports the questions
(``book.grading.questions``): their references, known mistakes and case generators stay
in the grader's process, and an answer that imports them scores zero.

What does cross over lives here:

* the objects a case hands to an answer: test functions without autograd
  (:class:`BlackBox`), losses of a list of parameters (:class:`Loss`), objectives that
  record the calls made to them (:class:`LearningCurves`, :class:`LRValley`);
* the ``call`` wrappers of the questions whose answer is judged by more than what it returns
  (``Question.call``): what an objective saw, whether the arguments were left as given;
* :func:`pack` and :func:`unpack`, which carry a list of cases from the grader to the child as
  bytes. :func:`unpack` rebuilds only tensors, generators, plain Python data and the classes
  named in ``_ALLOWED``; anything else is refused, so a case that would need a question
  module in the child fails loudly in the grader's own tests instead of leaking it.

Everything here is what an answer is given anyway: knowing it earns no points.
"""

from __future__ import annotations

import base64
import io
import math
import pickle
from typing import Any

import torch

__all__ = ["BlackBox", "Loss", "LearningCurves", "LRValley", "CALLS", "pack", "unpack", "call_name"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clone(x):
    return x.detach().clone() if isinstance(x, torch.Tensor) else [t.detach().clone() for t in x]


def untouched(now, was, name) -> str:
    """'<name> left as given', or which tensor of it was changed."""
    if isinstance(was, torch.Tensor):
        now, was = [now], [was]
    if len(now) != len(was):
        return f"{name} lost or gained tensors"
    for i, (t, t0) in enumerate(zip(now, was)):
        if not isinstance(t, torch.Tensor) or t.shape != t0.shape or not torch.equal(t.detach(), t0):
            return f"{name}[{i}] was changed" if len(was) > 1 else f"{name} was changed"
    return f"{name} left as given"


# ---------------------------------------------------------------------------
# Objects a case hands to an answer


class BlackBox:
    """A test function ``f(x) -> scalar`` that computes without autograd (under
    ``torch.no_grad()``, on a detached input), so an answer cannot differentiate it with
    ``.backward()`` or ``torch.func``. ``kind`` names the formula, ``data`` holds its tensors."""

    def __init__(self, kind: str, **data):
        if kind not in _BLACK_BOXES:
            raise ValueError(f"unknown test function {kind!r}")
        self.kind = kind
        self.data = data

    def __call__(self, x):
        with torch.no_grad():
            return _BLACK_BOXES[self.kind](x.detach(), **self.data)

    def __repr__(self) -> str:
        return f"<test function {self.kind}>"


def _bb_quadratic(x, A, b):
    a, v = A.to(x.dtype), b.to(x.dtype)
    return 0.5 * x @ a @ x + v @ x


def _bb_tanh_regression(W, X, Y):
    out = torch.tanh(X.to(W.dtype) @ W)
    return 0.5 * ((out - Y.to(W.dtype)) ** 2).sum() / X.shape[0]


_BLACK_BOXES = {
    "quadratic": _bb_quadratic,
    "logsumexp": lambda x: torch.logsumexp(x, 0),
    "tanh_regression": _bb_tanh_regression,
    "rosenbrock": lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(),
    "cubic": lambda x: x ** 3 - 2 * x,
}


class Loss:
    """A loss of a list of parameter tensors, ``loss_fn(params) -> scalar``, differentiable
    (the answer is meant to take its gradients). ``kind`` names the formula."""

    def __init__(self, kind: str, **data):
        if kind not in _LOSSES:
            raise ValueError(f"unknown loss {kind!r}")
        self.kind = kind
        self.data = data

    def __call__(self, params):
        return _LOSSES[self.kind](params, **self.data)

    def __repr__(self) -> str:
        return f"<loss {self.kind}>"


def _loss_quadratic(ps, a, b):
    u, v = ps
    return 0.5 * (a.to(u) * u ** 2).sum() + 0.5 * 0.01 * (v ** 2).sum() + (b.to(v) * v).sum()


def _loss_logistic(ps, X, y):
    W, b = ps
    z = X.to(W) @ W[0] + b
    return torch.nn.functional.binary_cross_entropy_with_logits(z, y.to(W))


def _loss_rosenbrock(ps):
    (w,) = ps
    return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2


def _loss_mlp(ps, X, Y):
    W1, b1, W2, b2 = ps
    x, y = X.to(W1), Y.to(W1)
    return ((torch.tanh(x @ W1.T + b1) @ W2.T + b2 - y) ** 2).mean()


_LOSSES = {"quadratic": _loss_quadratic, "logistic": _loss_logistic, "rosenbrock": _loss_rosenbrock,
           "mlp": _loss_mlp}


class LearningCurves:
    """``objective(config, budget) -> loss`` along a learning curve per configuration,
    recording every call as (index of the configuration in ``configs``, budget).

    loss_i(b) = a_i + c_i · b^(−r_i): configurations that learn fast but plateau high cross
    those that start slow and end low, so the ranking at a small budget is not the final one.
    """

    def __init__(self, configs, seed):
        g = _gen(seed)
        n = len(configs)
        self.configs = list(configs)  # its own list: an answer that edits `configs` cannot shift the indices
        self.floor = (0.05 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)).tolist()
        self.height = (0.5 + 1.5 * torch.rand(n, generator=g, dtype=torch.float64)).tolist()
        self.rate = (0.1 + 1.4 * torch.rand(n, generator=g, dtype=torch.float64)).tolist()
        self.calls = []

    def index(self, config):
        for i, c in enumerate(self.configs):
            if c is config or c == config:
                return i
        return None

    def __call__(self, config, budget):
        i = self.index(config)
        if i is None:
            raise ValueError(f"the objective was called with {config!r}, which is not one of the configurations")
        b = float(budget)
        if not b > 0:
            raise ValueError(f"the budget must be positive, got {budget!r}")
        self.calls.append((i, b))
        return self.floor[i] + self.height[i] * b ** (-self.rate[i])

    def transcript(self, start: int = 0) -> str:
        """The calls from the ``start``-th on, one run of equal budgets at a time (in any order
        within a run)."""
        runs: list[tuple[float, list[int]]] = []
        for i, b in self.calls[start:]:
            if runs and runs[-1][0] == b:
                runs[-1][1].append(i)
            else:
                runs.append((b, [i]))
        if not runs:
            return "no evaluations"
        return "; ".join(f"at budget {b:g}: configs {sorted(ids)}" for b, ids in runs)


class LRValley:
    """``objective(lr) -> loss``: a valley in log10(lr) with ripples; records every call."""

    def __init__(self, centre, seed):
        g = _gen(seed)
        self.centre = centre
        self.phase = float(2 * math.pi * torch.rand((), generator=g, dtype=torch.float64))
        self.calls = []

    def __call__(self, lr):
        lr = float(lr)
        self.calls.append(lr)
        if not lr > 0:
            return float("inf")
        z = math.log10(lr) - self.centre
        return z * z + 0.1 * math.sin(7 * z + self.phase) + 1.0


# ---------------------------------------------------------------------------
# The `call` wrappers: how an answer is run on one case, and what is compared


def successive_halving_call(fn, configs, objective, *args, **kwargs):
    """Run the answer; compare the calls it made (grouped by budget) and the configuration it returned."""
    start = len(objective.calls)
    best = fn(configs, objective, *args, **kwargs)
    i = objective.index(best)
    if i is not None:
        returned = f"configs[{i}]"
    elif isinstance(best, int) and not isinstance(best, bool):
        returned = f"the index {best}, not a configuration: return configs[i] itself"
    else:
        returned = f"not one of the configurations: {best!r}"[:200]
    return objective.transcript(start), returned


def random_search_call(fn, objective, *args, **kwargs):
    """Run the answer; compare the learning rates it tried (in order) and the one it returned."""
    start = len(objective.calls)
    best = fn(objective, *args, **kwargs)
    return torch.tensor(objective.calls[start:], dtype=torch.float64), best


def average_gradients_call(fn, worker_grads):
    """Run the answer; compare (its list, the state of worker_grads afterwards)."""
    before = [[t.detach().clone() for t in w] for w in worker_grads]
    out = fn(worker_grads)
    return out, _workers_untouched(worker_grads, before)


def _workers_untouched(worker_grads, before) -> str:
    if len(worker_grads) != len(before):
        return "worker_grads lost or gained workers"
    for r, (now, was) in enumerate(zip(worker_grads, before)):
        if len(now) != len(was):
            return f"worker_grads[{r}] lost or gained tensors"
        for i, (t, t0) in enumerate(zip(now, was)):
            if not isinstance(t, torch.Tensor) or t.shape != t0.shape or not torch.equal(t.detach(), t0):
                return f"worker_grads[{r}][{i}] was changed"
    return "worker_grads left as given"


def singular_values(out):
    """The singular values of an answer's output (largest first), or NaNs if it has none."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return None
    k = min(out.shape)
    x = out.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        return torch.full((k,), float("nan"), dtype=torch.float64)
    return torch.linalg.svdvals(x.cpu())


def newton_schulz_call(fn, G, steps=5):
    """Run the answer; compare (its matrix, that matrix's singular values)."""
    out = fn(G) if steps == 5 else fn(G, steps=steps)
    return out, singular_values(out)


def _status(args, before, names) -> str:
    changed = [n for n in (untouched(t, t0, name) for t, t0, name in zip(args, before, names)) if "changed" in n]
    return "; ".join(changed) if changed else "the arguments were left as given"


def lion_call(fn, param, grad, exp_avg, lr, betas, weight_decay):
    """Run the answer; compare (new param, new exp_avg, whether the arguments were left as given)."""
    before = [_clone(param), _clone(grad), _clone(exp_avg)]
    out = fn(param, grad, exp_avg, lr, betas, weight_decay)
    status = _status((param, grad, exp_avg), before, ("param", "grad", "exp_avg"))
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return out[0], out[1], status
    return out, None, status


def adafactor_call(fn, grad, row_var, col_var, beta2, eps1):
    """Run the answer; compare (new R, new C, V̂, whether the arguments were left as given)."""
    before = [_clone(grad), _clone(row_var), _clone(col_var)]
    out = fn(grad, row_var, col_var, beta2, eps1)
    status = _status((grad, row_var, col_var), before, ("grad", "row_var", "col_var"))
    if isinstance(out, (tuple, list)) and len(out) == 3:
        return out[0], out[1], out[2], status
    return out, None, None, status


def sam_call(fn, loss_fn, params, rho, lr):
    """Run the answer; compare (its new parameters, whether params was left as given)."""
    before = _clone(params)
    out = fn(loss_fn, params, rho, lr)
    return out, untouched(params, before, "params")


def make_mlp(spec: dict) -> torch.nn.Module:
    """A small tanh network ``Linear → Tanh → ... → Linear`` of the widths ``spec["sizes"]``, in
    ``spec["dtype"]``, its weights drawn from ``spec["seed"]`` (the same network in every process)."""
    g = _gen(int(spec["seed"]))
    dtype = getattr(torch, spec.get("dtype", "float64"))
    sizes = [int(n) for n in spec["sizes"]]
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.Linear(a, b, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g, dtype=torch.float64) / math.sqrt(a))
            lin.bias.copy_(0.1 * torch.randn(b, generator=g, dtype=torch.float64))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def train_call(fn, spec, X, y, X_val, y_val, lr, epochs, batch_size, seed):
    """Build the case's network, run the answer's training loop on it; compare (the parameters
    after training, the training losses, the validation losses)."""
    model = make_mlp(spec)
    out = fn(model, X, y, X_val, y_val, lr, epochs, batch_size, seed)
    params = [p.detach().clone() for p in model.parameters()]
    if isinstance(out, (tuple, list)) and len(out) == 2:
        train, val = out
        as_tensor = lambda h: torch.tensor([float(v) for v in h], dtype=torch.float64)  # noqa: E731
        try:
            return params, as_tensor(train), as_tensor(val)
        except (TypeError, ValueError):
            return params, train, val
    return params, out, None


CALLS = {f.__name__: f for f in (successive_halving_call, random_search_call, average_gradients_call,
                                 newton_schulz_call, lion_call, adafactor_call, sam_call, train_call)}


def call_name(call) -> str | None:
    """The name under which the child finds a question's ``call`` (None for a plain call).

    Raises ``ValueError`` for a ``call`` that does not live here: the child could not run it
    without importing the question's module."""
    if call is None:
        return None
    name = getattr(call, "__name__", None)
    if CALLS.get(name) is not call:
        raise ValueError(f"a question's call must be one of book.grading.harness.CALLS, got {call!r}")
    return name


# ---------------------------------------------------------------------------
# Cases across the process boundary (grader -> child only)


def _tensor(dtype: str, shape: list, raw: bytes, requires_grad: bool, parameter: bool):
    dt = getattr(torch, dtype)
    if not isinstance(dt, torch.dtype):
        raise pickle.UnpicklingError(f"not a dtype: {dtype}")
    if len(raw) == 0:
        t = torch.empty(shape, dtype=dt)
    else:
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dt).reshape(shape).clone()
    if parameter:
        return torch.nn.Parameter(t, requires_grad=requires_grad)
    return t.requires_grad_(requires_grad) if requires_grad else t


def _generator(state: bytes):
    g = torch.Generator()
    g.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8).clone())
    return g


def _dtype(name: str):
    dt = getattr(torch, name)
    if not isinstance(dt, torch.dtype):
        raise pickle.UnpicklingError(f"not a dtype: {name}")
    return dt


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor):
            if type(obj) not in (torch.Tensor, torch.nn.Parameter):
                raise pickle.PicklingError(f"a case holds a {type(obj).__name__}; only plain tensors cross over")
            if obj.grad is not None:
                raise pickle.PicklingError("a case holds a tensor with .grad set; pass the gradient as an argument")
            t = obj.detach().to("cpu").contiguous()
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            return _tensor, (str(t.dtype).removeprefix("torch."), list(t.shape), raw, obj.requires_grad,
                             isinstance(obj, torch.nn.Parameter))
        if isinstance(obj, torch.Generator):
            if obj.device.type != "cpu":
                raise pickle.PicklingError("only CPU generators cross over")
            return _generator, (obj.get_state().numpy().tobytes(),)
        if isinstance(obj, torch.dtype):
            return _dtype, (str(obj).removeprefix("torch."),)
        if isinstance(obj, torch.device):
            return torch.device, (str(obj),)
        return NotImplemented


# What the child may rebuild: (module, name) pairs. Nothing from book.grading.questions.
_ALLOWED = {
    (__name__, "_tensor"), (__name__, "_generator"), (__name__, "_dtype"),
    (__name__, "BlackBox"), (__name__, "Loss"), (__name__, "LearningCurves"), (__name__, "LRValley"),
    ("torch", "device"),
    ("book.landscapes", "Landscape"), ("book.landscapes", "QuadraticForm"),
    ("book.landscapes", "_himmelblau"), ("book.landscapes", "_rosenbrock"), ("book.landscapes", "_saddle"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("builtins", "range"),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"a case may not hold {module}.{name}")
        return super().find_class(module, name)


def pack(value: Any) -> str:
    """``value`` (cases: tuples of arguments) as text for the child (see :func:`unpack`)."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=4).dump(value)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def unpack(text: str) -> Any:
    """Rebuild what :func:`pack` wrote: fresh objects, on the CPU."""
    return _Unpickler(io.BytesIO(base64.b64decode(text, validate=True))).load()
