"""What the optimizer classes share: the step counter, the foreach choice, the single-tensor loop,
and the step itself (:class:`ListOptimizer`)."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer


def step_counter() -> Tensor:
    """A new step counter as PyTorch keeps it: a 0-dim CPU tensor, float32 (float64 if that is the default dtype)."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)


FOREACH_CPU_MAX_NUMEL = 2**22
"""Above this many elements in a group on the CPU, ``foreach=None`` takes the single-tensor loop."""


def use_foreach(group: dict) -> bool:
    """Whether a group takes the multi-tensor path when ``foreach`` is ``None`` (the default).

    On an accelerator: always (it saves a kernel launch per tensor and operation). On the
    CPU: while the group holds more than one tensor (for one, a list of one only adds the
    lists' handling: 1.05x torch's loop at 1M elements against 1.01x for our loop) and at
    most ``FOREACH_CPU_MAX_NUMEL`` (4M) elements. The
    benchmark (benchmarks/RESULTS.md) found foreach 1.1-1.7x faster than the loop for
    ~200 tensors with 1M parameters in all, but 1.2-2.7x *slower* for ~200 tensors with
    16M: a foreach op materialises its temporaries for the whole list at once (64 MB
    here), and mapping that much fresh memory every step costs more than the loop,
    which reuses one small temporary per tensor. ``foreach=True`` or ``False`` overrides.
    """
    if group["foreach"] is not None:
        return bool(group["foreach"])
    params = group["params"]
    if any(p.device.type != "cpu" for p in params):
        return True
    return len(params) > 1 and sum(p.numel() for p in params) <= FOREACH_CPU_MAX_NUMEL


def single_tensor_loop(kernel: Callable) -> Callable:
    """Turn a single-tensor kernel into a function of lists, with the foreach kernels' signature.

    ``loop(params, grads, *state_lists, **hyperparameters)`` calls ``kernel`` once per
    tensor (a state list may be ``None``: then ``None`` is passed) and returns the list of
    its results.
    """

    bare = inspect.unwrap(kernel)  # without its own no_grad: one for the whole list saves ~2 us per tensor

    def loop(*lists, **hyperparameters):
        with torch.no_grad():
            return [
                bare(*(None if lst is None else lst[i] for lst in lists), **hyperparameters)
                for i in range(len(lists[0]))
            ]

    loop.__name__ = f"{kernel.__name__}_loop"
    loop.__doc__ = f"``{kernel.__name__}`` applied to each tensor of the lists in turn."
    return loop


def dense_grad(p: Tensor, name: str) -> Tensor:
    """``p.grad``, refusing sparse gradients (as PyTorch's optimizers do, except SparseAdam and SGD)."""
    if p.grad.is_sparse:
        raise RuntimeError(f"book.optim.{name} does not support sparse gradients; use torch.optim.{name}")
    return p.grad


def evaluate_closure(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """The loss ``closure()`` returns, computed with gradients on (a step runs under ``no_grad``); ``None`` without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class ListOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` whose step hands each group's tensors, as lists, to one kernel.

    A subclass defines ``_init_group(group)`` (returns the lists ``params, grads, *state``,
    creating state lazily), ``_step_impl(group)`` (returns the kernel on lists: a foreach
    kernel or the single-tensor loop) and ``HYPERPARAMETERS``, the names of the group's
    entries passed to the kernel as keywords.
    """

    HYPERPARAMETERS: tuple[str, ...] = ()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` (optional) re-evaluates the loss and returns it.

        Parameters whose ``.grad`` is ``None`` are skipped (their state is untouched).
        Returns the closure's loss, or ``None`` without a closure.
        """
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            done = self._flat_step(group) if getattr(self, "compiled", False) else ()
            lists = self._init_group(group, done) if done else self._init_group(group)
            if not lists[0]:
                continue
            self._step_impl(group)(*lists, **{name: group[name] for name in self.HYPERPARAMETERS})
        return loss

    def _flat_step(self, group: dict) -> set[Tensor]:
        """With ``compiled=True``: step the group's parameters that live in flat buffers, return them
        (see :func:`book.optim.compiled.flat_step`). Here: none."""
        return set()

    def _gather(self, group: dict, keys: tuple[str, ...], new_state: Callable[[Tensor], dict],
                skip: set | tuple = ()) -> tuple[list, ...]:
        """``params, grads`` and one list per state entry in ``keys``, for the group's parameters that have a
        gradient (and are not in ``skip``: stepped already); a parameter's state is ``new_state(p)`` the first
        time it steps (the usual ``_init_group``)."""
        params, grads, lists = [], [], [[] for _ in keys]
        for p in group["params"]:
            if p.grad is None or p in skip:
                continue
            params.append(p)
            grads.append(dense_grad(p, type(self).__name__))
            state = self.state[p]
            if len(state) == 0:
                state.update(new_state(p))
            for values, key in zip(lists, keys):
                values.append(state[key])
        return (params, grads, *lists)


def zeros(p: Tensor) -> Tensor:
    """A zero buffer shaped, typed and laid out like ``p``: a fresh moment estimate."""
    return torch.zeros_like(p, memory_format=torch.preserve_format)
