"""The run-time check: which forbidden implementations did an answer actually run?

The static scan (:mod:`book.grading.static`) reads what an answer's source spells; a
name built from strings at run time, a ``vars()`` lookup or a reference saved in a
set-up line slips past it. This module watches what executes instead, however it was
reached:

* **Python code** — a profile hook (``sys.setprofile``) sees every Python function
  that starts. A function counts as forbidden when its code object belongs to a
  forbidden callable (``torch.nn.functional.batch_norm``) or lives in a forbidden
  module's files (``torch.optim``, ``book.optim``, the grader's own questions), and
  the first frame that called into that region is not grader code (the harness, the
  question's ``call``, or the objects the grader passed in as arguments).
* **Built-in functions** — the same hook sees calls of C functions
  (``torch.batch_norm``, ``torch.var_mean``).
* **Native operators** — a ``TorchDispatchMode`` sees the ATen operators that run
  (``aten.native_batch_norm``, ``aten._fused_adam``), whichever Python name led there.

Tampering is itself recorded: an answer that calls ``sys.setprofile``, pops the
dispatch mode, reaches for the reply channel or the harness's frames (``sys._getframe``,
``os.write``, ``os._exit``, ...) while it is watched, or leaves the hook or the mode
removed, is reported as having tampered with the check. The child only reports; the
grader's process gives the verdict.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import threading
import types
from pathlib import Path
from typing import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# The genuine switches, kept before any answer runs (an answer that rebinds ``sys.setprofile``
# cannot change these; one that rebinds these is caught by ``_genuine``).
_setprofile, _getprofile, _thread_setprofile = sys.setprofile, sys.getprofile, threading.setprofile


def _genuine() -> bool:
    return (isinstance(_setprofile, types.BuiltinFunctionType) and _setprofile.__name__ == "setprofile"
            and isinstance(_getprofile, types.BuiltinFunctionType) and _getprofile.__name__ == "getprofile"
            and getattr(_setprofile, "__self__", None) is sys and getattr(_getprofile, "__self__", None) is sys)

GRADER_DIR = str(Path(__file__).resolve().parent)
QUESTIONS_DIR = os.path.join(GRADER_DIR, "questions")

# What an answer may never run, whatever the question: the grader's questions (their
# references, known mistakes and case generators).
ALWAYS = ("book.grading.questions",)
# The grader's harness (book.grading.harness): the objects it hands an answer and the ``call``
# wrappers run as the grader's code; an answer that calls into it directly is using the grader.
HARNESS_FILE = os.path.join(GRADER_DIR, "harness.py")

# Native operators behind forbidden Python names (the dispatch mode sees these).
_BN = ("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
       "_native_batch_norm_legit_functional", "_batch_norm_with_update", "_batch_norm_no_update",
       "cudnn_batch_norm", "miopen_batch_norm", "batch_norm", "_batch_norm_impl_index")
OPERATORS: dict[str, tuple[str, ...]] = {
    "torch.optim": ("_fused_adam", "_fused_adamw", "_fused_sgd", "_fused_adagrad"),
    "book.optim": ("_fused_adam", "_fused_adamw", "_fused_sgd", "_fused_adagrad"),
    "torch.nn.functional.batch_norm": _BN,
    "torch.batch_norm": _BN,
    "torch.native_batch_norm": _BN,
    "torch.nn.BatchNorm1d": _BN, "torch.nn.BatchNorm2d": _BN, "torch.nn.BatchNorm3d": _BN,
    "torch.nn.functional.instance_norm": _BN + ("instance_norm",),
    "torch.nn.functional.layer_norm": ("native_layer_norm", "layer_norm"),
    "torch.layer_norm": ("native_layer_norm", "layer_norm"),
    "torch.nn.LayerNorm": ("native_layer_norm", "layer_norm"),
    "torch.nn.functional.group_norm": ("native_group_norm", "group_norm"),
    "torch.var_mean": ("var_mean",),
    "torch.nn.functional.cross_entropy": ("cross_entropy_loss", "nll_loss_forward", "nll_loss2d_forward",
                                          "nll_loss", "nll_loss_nd"),
    "torch.nn.CrossEntropyLoss": ("cross_entropy_loss", "nll_loss_forward", "nll_loss2d_forward"),
    "torch.nn.functional.nll_loss": ("nll_loss_forward", "nll_loss2d_forward", "nll_loss", "nll_loss_nd"),
    "torch.nn.NLLLoss": ("nll_loss_forward", "nll_loss2d_forward"),
    "torch.nn.functional.log_softmax": ("_log_softmax", "log_softmax"),
    "torch.log_softmax": ("_log_softmax", "log_softmax"),
    "torch.special.log_softmax": ("_log_softmax", "log_softmax"),
    "torch.nn.functional.softmax": ("_softmax", "softmax"),
    "torch.softmax": ("_softmax", "softmax"),
    "torch.special.softmax": ("_softmax", "softmax"),
    "torch.logsumexp": ("logsumexp",),
    "torch.special.logsumexp": ("logsumexp",),
    "torch.nn.functional.huber_loss": ("huber_loss",),
    "torch.nn.HuberLoss": ("huber_loss",),
    "torch.nn.functional.smooth_l1_loss": ("smooth_l1_loss",),
    "torch.nn.SmoothL1Loss": ("smooth_l1_loss",),
    "torch.nn.functional.binary_cross_entropy": ("binary_cross_entropy",),
    "torch.nn.BCELoss": ("binary_cross_entropy",),
    "torch.nn.functional.binary_cross_entropy_with_logits": ("binary_cross_entropy_with_logits",),
    "torch.nn.BCEWithLogitsLoss": ("binary_cross_entropy_with_logits",),
    "torch.nn.functional.dropout": ("native_dropout", "dropout", "feature_dropout"),
    "torch.nn.Dropout": ("native_dropout", "dropout", "feature_dropout"),
    "torch.dropout": ("native_dropout", "dropout", "feature_dropout"),
}

# Where library code lives: a call of a switch (``os.write``, ``sys._getframe``) from there is
# the library's business, from anywhere else it is the answer's.
LIBRARY_PREFIXES = tuple(sorted({str(Path(p).resolve()) + os.sep for p in
                                 (sys.prefix, sys.base_prefix, sys.exec_prefix, Path(GRADER_DIR).parents[1])}
                                | {"<frozen "}))

# Files inside a forbidden package that an honest answer may run (``torch.no_grad()``).
ALLOWED_FILES = (os.path.join("torch", "autograd", "grad_mode.py"),)


def _resolve(name: str):
    """The object a dotted name refers to (None if it cannot be found without running
    anything a module would not run on import anyway)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod_name = ".".join(parts[:i])
        mod = sys.modules.get(mod_name)
        if mod is None:
            if not (mod_name == "torch" or mod_name.startswith(("torch.", "book."))):
                return None  # never import third-party packages just to watch them
            if mod_name.startswith("book.grading"):
                return None
            try:
                mod = importlib.import_module(mod_name)
            except Exception:  # noqa: BLE001
                continue
        obj = mod
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _module_region(name: str) -> str | None:
    """The file or folder that holds a module's code, without importing third-party code."""
    mod = sys.modules.get(name)
    if mod is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            spec = None
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or [])
        if locations:
            return str(Path(locations[0]).resolve()) + os.sep
        return str(Path(spec.origin).resolve()) if spec.origin else None
    path = getattr(mod, "__path__", None)
    if path:
        return str(Path(list(path)[0]).resolve()) + os.sep
    file = getattr(mod, "__file__", None)
    return str(Path(file).resolve()) if file else None


def _codes(obj, out: set, depth: int = 0) -> None:
    """Every code object of a function, class or module-like object (nested ones too)."""
    if depth > 3:
        return
    if isinstance(obj, types.CodeType):
        if obj not in out:
            out.add(obj)
            for c in obj.co_consts:
                if isinstance(c, types.CodeType):
                    _codes(c, out, depth)
        return
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        for f in (obj.fget, obj.fset, obj.fdel):
            if f is not None:
                _codes(f, out, depth + 1)
        return
    code = getattr(obj, "__code__", None)
    if isinstance(code, types.CodeType):
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None:
            # A decorator's wrapper (contextlib's ``helper``, torch's ``decorate_context``) shares
            # its code with every function it decorates: only the wrapped function is this one's.
            _codes(wrapped, out, depth + 1)
        else:
            _codes(code, out, depth)
        return
    if isinstance(obj, type):
        # the class and its bases from the same module (torch.nn.BatchNorm1d, _BatchNorm, _NormBase),
        # not general bases from elsewhere (torch.nn.Module, torch's decorator context managers),
        # which every other class of their kind shares
        for klass in obj.__mro__:
            if klass is object or klass.__module__ != obj.__module__:
                continue
            for value in list(vars(klass).values()):
                _codes(value, out, depth + 1)


# Where each forbidden implementation seen is reported the moment it runs (the grading process
# sets it to its reply channel's descriptor): a record made outside this process cannot be undone
# by an answer that later reaches the guard's own objects.
_REPORT_FD: int | None = None
_write = os.write


def report_to(fd: int | None) -> None:
    """Report each forbidden implementation, as it is first seen, as one JSON line on ``fd``."""
    global _REPORT_FD
    _REPORT_FD = fd


def _record(guard: "Guard", label: str) -> None:
    if label in guard.ran:
        return
    guard.ran.add(label)
    if _REPORT_FD is not None:
        try:
            _write(_REPORT_FD, (json.dumps({"event": "ran", "label": label}) + "\n").encode())
        except OSError:
            pass


def _label(name: str) -> str:
    return "the grader's own questions (book.grading)" if name.startswith("book.grading") else name


class _Ops(TorchDispatchMode):
    """Record forbidden ATen operators by name."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never compiled; wrapping it would import torch._dynamo (seconds) on first use

    def __init__(self, guard: "Guard"):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        label = self.guard.ops.get(func.overloadpacket.__name__)
        if label is not None and self.guard._blamed(sys._getframe(1)):
            _record(self.guard, label)
        return func(*args, **(kwargs or {}))


class Guard:
    """Watch one question's cases: ``with guard.watching(trusted, report):`` around each.

    ``forbidden`` are the question's dotted names (modules, callables); ``operators``
    extra ATen operator names (``{"_fused_adam": "torch.optim"}``). What ran is in
    ``ran`` (labels), tampering in ``tampered`` (sentences).
    """

    def __init__(self, forbidden: Iterable[str], operators: dict[str, str] | None = None,
                 harness: Iterable = (), reply=None):
        self.ran: set[str] = set()
        self.tampered: list[str] = []
        self.regions: list[tuple[str, str]] = []  # (path prefix, label)
        self.code_labels: dict[types.CodeType, str] = {}
        self.builtins: dict[int, tuple[object, str]] = {}
        if operators is not None and not isinstance(operators, dict):
            operators = {op: f"aten.{op}" for op in operators}
        self.ops: dict[str, str] = dict(operators or {})
        for name in list(forbidden) + list(ALWAYS):
            label = _label(name)
            for op in OPERATORS.get(name, ()):
                self.ops.setdefault(op, label)
            obj = _resolve(name) if not name.startswith("book.grading") else None
            if isinstance(obj, types.ModuleType) or obj is None:
                region = QUESTIONS_DIR + os.sep if name.startswith("book.grading") else _module_region(name)
                if region:
                    self.regions.append((region, label))
                if isinstance(obj, types.ModuleType):
                    # what the module re-exports from elsewhere (torch.func.grad lives in torch._functorch)
                    for value in list(vars(obj).values()):
                        if callable(value) and str(getattr(value, "__module__", "")).startswith(name):
                            if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
                                self.builtins.setdefault(id(value), (value, label))
                                continue
                            codes: set = set()
                            _codes(value, codes)
                            for c in codes:
                                if not c.co_filename.endswith(ALLOWED_FILES):
                                    self.code_labels.setdefault(c, label)
                continue
            if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
                self.builtins[id(obj)] = (obj, label)
                continue
            codes: set = set()
            _codes(obj, codes)
            for c in codes:
                self.code_labels.setdefault(c, label)
        self.regions.append((HARNESS_FILE, "the grader's own harness (book.grading.harness)"))
        self.regions.sort(key=lambda r: -len(r[0]))
        self.harness: set = set()
        for h in harness:
            _codes(h, self.harness)
        _codes(Guard, self.harness)
        _codes(_Ops, self.harness)
        self._cache: dict[types.CodeType, str] = {}
        self.reply = reply
        self.report = None
        tamper = [sys.setprofile, sys.settrace, sys._getframe, os.write, os._exit, os.dup2, os.close,
                  os.fdopen, os.kill, os.killpg, os.fork, open]
        import signal
        tamper += [signal.signal, signal.alarm, signal.setitimer, threading.setprofile]
        # another process would inherit the reply channel and run unwatched
        # code made at run time can carry any file name and any code name (a library's "<module>"):
        # answers have no use for it, and the static scan already refuses these names when spelled
        import builtins
        import marshal

        tamper += [builtins.compile, builtins.exec, builtins.eval, marshal.loads, types.CodeType.replace]
        spawn = [getattr(os, n) for n in ("fork", "posix_spawn", "posix_spawnp", "system", "execv", "execve", "forkpty")
                 if hasattr(os, n)]
        try:
            import _posixsubprocess

            spawn.append(_posixsubprocess.fork_exec)
        except ImportError:  # pragma: no cover - not on this platform
            pass
        tamper += spawn
        for name in ("_pop_torch_dispatch_mode", "_set_dispatch_mode", "_unset_dispatch_mode",
                     "_push_on_torch_dispatch_stack"):
            f = getattr(torch._C, name, None)
            if f is not None:
                tamper.append(f)
        self.tamper = {id(f): f for f in tamper}
        self.spawn = {id(f) for f in spawn}  # caught whoever calls them for the answer (subprocess does)
        import torch.utils._python_dispatch as pd
        for name in ("_pop_mode", "_pop_mode_temporarily", "_disable_current_modes"):
            f = getattr(pd, name, None)
            if f is not None:
                _codes(f, codes := set())
                for c in codes:
                    self.code_labels[c] = "tamper"

    # -- classification -------------------------------------------------------
    def _classify(self, code: types.CodeType) -> str:
        label = self.code_labels.get(code)
        if label is None:
            label = ""
            fname = code.co_filename
            if fname.startswith(os.sep) and not fname.endswith(ALLOWED_FILES):
                for prefix, lab in self.regions:
                    if fname == prefix or fname.startswith(prefix):
                        label = lab
                        break
        self._cache[code] = label
        return label

    def _hook(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            label = self._cache.get(code)
            if label is None:
                label = self._classify(code)
            if not label or code in self.trusted:
                return
            if self._blamed(frame.f_back):
                if label == "tamper":
                    self._tamper("it switched off the operator check")
                else:
                    _record(self, label)
        elif event == "c_call":
            key = id(arg)
            hit = self.builtins.get(key)
            if hit is not None and hit[0] is arg:
                if self._blamed(frame):
                    _record(self, hit[1])
                return
            t = self.tamper.get(key)
            if t is not None and t is arg and (self._answer_code(frame)
                                               or (key in self.spawn and self._blamed(frame))):
                self._tamper(f"it called {getattr(arg, '__qualname__', None) or getattr(arg, '__name__', '?')}")
                return
            owner = getattr(arg, "__self__", None)
            if owner is not None and self.reply and any(owner is r for r in self.reply):
                self._tamper("it wrote to the grader's reply channel")

    def _blamed(self, caller) -> bool:
        """Whether the answer is to blame for a forbidden function that ``caller`` called:
        the first frame outside the forbidden code is neither the grader's nor a library
        module being imported."""
        while caller is not None:
            c = caller.f_code
            if c in self.trusted:
                return False
            lab = self._cache.get(c)
            if lab is None:
                lab = self._classify(c)
            if not lab:
                break
            caller = caller.f_back
        # A library module being imported (lazily, by torch itself) is not the answer's doing: the
        # frame runs a module's top level in that module's own namespace, from that module's file.
        while caller is not None:
            c = caller.f_code
            if c in self.trusted:
                break
            if c.co_name == "<module>" and c.co_filename.startswith(LIBRARY_PREFIXES):
                module = sys.modules.get(str(caller.f_globals.get("__name__")))
                if module is not None and vars(module) is caller.f_globals and \
                        getattr(module, "__file__", None) == c.co_filename:
                    return False
            caller = caller.f_back
        return True

    def _answer_code(self, frame) -> bool:
        """Whether the frame that made a call is the answer's (not a library's, not ours)."""
        code = frame.f_code
        if code in self.trusted:
            return False
        return not code.co_filename.startswith(LIBRARY_PREFIXES)

    def _tamper(self, why: str) -> None:
        if why not in self.tampered:
            self.tampered.append(why)
            if self.report is not None:
                self.report(self)

    # -- watching -------------------------------------------------------------
    def start(self, trusted: Iterable = (), report=None) -> None:
        self.trusted = set(self.harness)
        for t in trusted:
            _trusted_codes(t, self.trusted)
        self.report = report
        self.mode = _Ops(self) if self.ops else None
        if self.mode is not None:
            self.mode.__enter__()
        if not _genuine():
            self._tamper("the check's switches were replaced")
        self._previous = _getprofile()
        _thread_setprofile(self._hook)
        _setprofile(self._hook)

    def stop(self, expired: bool = False) -> None:
        """Stop watching. ``expired``: the time limit interrupted the answer, possibly inside the
        hook (which Python then unsets), so a missing hook is not held against it."""
        hook = _getprofile()
        _setprofile(self._previous)
        _thread_setprofile(None)
        self._previous = None
        if not expired and (getattr(hook, "__func__", None) is not Guard._hook
                            or getattr(hook, "__self__", None) is not self):
            self._tamper("the check's profile hook was removed or replaced")
        if self.mode is not None:
            from torch.utils._python_dispatch import _get_current_dispatch_mode

            if _get_current_dispatch_mode() is not self.mode:
                self._tamper("the check's operator mode was removed or replaced")
                while torch._C._len_torch_dispatch_mode() > 0:
                    torch._C._pop_torch_dispatch_mode()
            else:
                self.mode.__exit__(None, None, None)
        self.report = None


def _trusted_codes(obj, out: set, depth: int = 0) -> None:
    """The grader's objects among a case's arguments: their code is the grader's, so what
    they run is not the answer's doing (an objective that records calls, a loss)."""
    if depth > 4:
        return
    if isinstance(obj, (list, tuple)):
        for o in obj:
            _trusted_codes(o, out, depth + 1)
    elif isinstance(obj, dict):
        for o in obj.values():
            _trusted_codes(o, out, depth + 1)
    elif isinstance(obj, types.FunctionType):
        _codes(obj, out)
    elif callable(obj) and not isinstance(obj, (torch.Tensor, type, types.BuiltinFunctionType)):
        mod = type(obj).__module__ or ""
        if mod.startswith("book.grading"):
            _codes(type(obj), out)
