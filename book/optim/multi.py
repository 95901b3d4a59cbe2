r"""Several optimizers stepped as one: Muon for the matrices, AdamW for the rest.

Muon only updates 2-D weight matrices, so a network is trained with two optimizers at once: Muon
for the hidden layers' matrices and AdamW (with its own, smaller learning rate) for the biases,
gains, embeddings and output layer. :class:`MultiOptimizer` holds any number of optimizers over
disjoint parameters and behaves as one ``torch.optim.Optimizer``: one ``step``, one
``zero_grad``, one ``state_dict``, and one list ``param_groups`` made of the members' own group
dicts (not copies), so a ``torch.optim.lr_scheduler`` scheduler such as ``LambdaLR`` scales every
group's learning rate by the same factor while each keeps its own base rate.
:func:`muon_with_adamw` builds the usual pairing for a model.

    >>> import torch
    >>> from book.optim import AdamW, Muon
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> opt = muon_with_adamw(model, lr=0.02, adamw_lr=1e-3)
    >>> [type(o).__name__ for o in opt.optimizers], [len(g["params"]) for g in opt.param_groups]
    (['Muon', 'AdamW'], [1, 3])
    >>> model(torch.ones(2, 4)).sum().backward()
    >>> opt.step()
    >>> opt.zero_grad()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from book.optim.adam import AdamW
from book.optim.frontier import Muon

__all__ = ["MultiOptimizer", "muon_with_adamw"]


class MultiOptimizer(Optimizer):
    """Optimizers over disjoint parameters, stepped, zeroed, saved and scheduled as one.

    ``param_groups`` is the concatenation of the members' groups, the same dicts: a change of
    ``group["lr"]`` there is a change in the member. ``state`` maps each parameter to its state in
    the member that owns it. ``step(closure)`` evaluates the closure once (for the loss it returns)
    and then steps every member without it, in order; ``train()``/``eval()`` are passed to the
    members that have them (schedule-free optimizers). ``state_dict()`` is
    ``{"optimizers": [member.state_dict(), ...]}``.

    Args:
        *optimizers: ``torch.optim.Optimizer`` objects; no parameter may belong to two of them.

    Raises:
        TypeError: if an argument is not an optimizer.
        ValueError: if none is given, or two share a parameter.
    """

    def __init__(self, *optimizers: Optimizer) -> None:
        if not optimizers:
            raise ValueError("MultiOptimizer needs at least one optimizer")
        seen: set[int] = set()
        for i, opt in enumerate(optimizers):
            if not isinstance(opt, Optimizer):
                raise TypeError(f"MultiOptimizer takes torch.optim.Optimizer objects; argument {i} is a "
                                f"{type(opt).__name__}")
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError(f"a parameter of shape {tuple(p.shape)} belongs to two of the optimizers; "
                                         "each parameter must have exactly one")
                    seen.add(id(p))
        # Optimizer.__init__ would copy the groups; the members keep theirs, this class only delegates.
        self.optimizers = list(optimizers)
        self.defaults: dict[str, Any] = {}
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def add_param_group(self, param_group: dict) -> None:
        raise TypeError("add the group to one of the members (MultiOptimizer.optimizers[i].add_param_group)")

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Step every member in order; ``closure`` (optional) is evaluated once, for the loss returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def train(self) -> None:
        for opt in self.optimizers:
            if hasattr(opt, "train"):
                opt.train()

    def eval(self) -> None:
        for opt in self.optimizers:
            if hasattr(opt, "eval"):
                opt.eval()

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        states = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if not isinstance(states, list) or len(states) != len(self.optimizers):
            raise ValueError(f"expected {{'optimizers': [...]}} with {len(self.optimizers)} state dicts, "
                             f"as MultiOptimizer.state_dict() makes")
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)

    def __repr__(self) -> str:
        inner = "\n".join("  " + line for opt in self.optimizers for line in repr(opt).splitlines())
        return f"MultiOptimizer(\n{inner}\n)"

    def __getstate__(self) -> dict:
        return self.__dict__

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def muon_with_adamw(
    model: torch.nn.Module | Iterable[tuple[str, Tensor]],
    lr: float = 0.02,
    momentum: float = 0.95,
    weight_decay: float = 0.0,
    adamw_lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    adamw_weight_decay: float = 0.0,
    output_to_adamw: bool = True,
    **muon_kwargs,
) -> MultiOptimizer:
    """Muon for the hidden layers' weight matrices, AdamW for every other parameter (Jordan et al., 2024).

    The matrices are the 2-D parameters of ``model``, except the last one in registration order
    when ``output_to_adamw`` (the output layer, which Jordan's recipe leaves to AdamW as it does the
    embeddings; a network whose first layer is an embedding should pass its parameters through
    its own split). Higher-dimensional weights (convolution kernels) go to AdamW: torch's Muon
    takes 2-D parameters only.

    Args:
        model: a module, or ``(name, parameter)`` pairs such as ``model.named_parameters()``.
        lr, momentum, weight_decay: Muon's (``nesterov=True`` and the rest from ``muon_kwargs``).
        adamw_lr, betas, adamw_weight_decay: AdamW's.
        output_to_adamw: give the last 2-D parameter to AdamW.

    Returns:
        ``MultiOptimizer(Muon(matrices, ...), AdamW(rest, ...))``.

    Raises:
        ValueError: if there is no matrix for Muon.
    """
    named = list(model.named_parameters() if isinstance(model, torch.nn.Module) else model)
    named = [(n, p) for n, p in named if p.requires_grad]
    matrices = [i for i, (_, p) in enumerate(named) if p.ndim == 2]
    if output_to_adamw and matrices:
        matrices = matrices[:-1]
    if not matrices:
        raise ValueError("no 2-D weight matrix for Muon (with output_to_adamw=True the last one goes to AdamW)")
    chosen = set(matrices)
    muon = Muon([named[i][1] for i in matrices], lr=lr, momentum=momentum, weight_decay=weight_decay,
                **muon_kwargs)
    rest = [p for i, (_, p) in enumerate(named) if i not in chosen]
    if not rest:
        return MultiOptimizer(muon)
    return MultiOptimizer(muon, AdamW(rest, lr=adamw_lr, betas=betas, weight_decay=adamw_weight_decay))
