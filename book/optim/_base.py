"""What the optimizer classes share: the step counter, the foreach choice, the single-tensor loop."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def step_counter() -> Tensor:
    """A new step counter as PyTorch keeps it: a 0-dim CPU tensor, float32 (float64 if that is the default dtype)."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)


def use_foreach(group: dict) -> bool:
    """Whether a group takes the multi-tensor path: ``foreach=None`` (the default) means yes.

    The foreach kernels were faster than the single-tensor loop for every optimizer on a
    200-tensor, one-million-parameter model on a CPU (and on a GPU they save one kernel
    launch per tensor and operation), so ``None`` chooses them.
    """
    return True if group["foreach"] is None else bool(group["foreach"])


def single_tensor_loop(kernel: Callable) -> Callable:
    """Turn a single-tensor kernel into a function of lists, with the foreach kernels' signature.

    ``loop(params, grads, *state_lists, **hyperparameters)`` calls ``kernel`` once per
    tensor (a state list may be ``None``: then ``None`` is passed) and returns the list of
    its results.
    """

    def loop(*lists, **hyperparameters):
        return [
            kernel(*(None if lst is None else lst[i] for lst in lists), **hyperparameters)
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
