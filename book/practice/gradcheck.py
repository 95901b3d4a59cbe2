r"""Gradient checking: compare the gradients autograd computes with finite differences.

A hand-written backward (a ``torch.autograd.Function``) is code like any other and has bugs
like any other: a sign, a missing factor 2, a transposed matrix. The loss still goes down,
sometimes, and the bug hides. The check is old and simple (LeCun et al., 1998; the
"gradient checking" of every deep learning course): for a function
:math:`f: \mathbb{R}^n \to \mathbb{R}^m` compare, entry by entry, the Jacobian that the
backward pass computes with the one that central differences estimate,

.. math::
    J^\text{num}_{kj} = \frac{f_k(x + \epsilon e_j) - f_k(x - \epsilon e_j)}{2\epsilon}
    = \frac{\partial f_k}{\partial x_j} + O(\epsilon^2),

which needs only forward passes (two per input entry). In float64 with
:math:`\epsilon = 10^{-6}` the truncation error :math:`O(\epsilon^2)` and the rounding error
:math:`O(10^{-16}/\epsilon)` are both far below the tolerance; in float32 the rounding error
alone would be about :math:`10^{-7}/10^{-6} = 0.1`, which is why the check always runs in
float64.

::

    >>> import torch
    >>> x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    >>> gradient_check(torch.tanh, x).passed
    True

References:
    Y. LeCun, L. Bottou, G. B. Orr, K.-R. Müller, "Efficient BackProp", in *Neural Networks:
    Tricks of the Trade*, Springer 1998. ``torch.autograd.gradcheck``, whose verdict this
    function reproduces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from book import checks

__all__ = ["gradient_check", "GradientCheck", "GradientCheckError", "WorstElement"]


class GradientCheckError(ValueError):
    """A gradient check failed; the message names the worst element. ``.result`` holds the
    :class:`GradientCheck`."""

    def __init__(self, result: "GradientCheck"):
        self.result = result
        super().__init__(result.summary())


@dataclass
class WorstElement:
    r"""The Jacobian entry :math:`\partial\, \text{out}_k / \partial x_j` furthest outside its tolerance.

    Attributes:
        input: the position of the input in ``inputs`` (0 for a single tensor).
        index: the entry :math:`j` of that input, a tuple (``()`` for a 0-dim input).
        output: the position of the output among ``f``'s outputs (0 for a single tensor).
        output_index: the entry :math:`k` of that output, a tuple.
        analytical: :math:`J^\text{ana}_{kj}`, what the backward pass gives.
        numerical: :math:`J^\text{num}_{kj}`, the central difference.
        ratio: :math:`|J^\text{ana}_{kj} - J^\text{num}_{kj}| / (\text{atol} + \text{rtol}\,|J^\text{num}_{kj}|)`;
            the check fails where it is above 1.
    """

    input: int
    index: tuple
    output: int
    output_index: tuple
    analytical: float
    numerical: float
    ratio: float

    def describe(self, single_output: bool = True, single_input: bool = True) -> str:
        out = _element("out" if single_output else f"out[{self.output}]", self.output_index)
        x = _element("x" if single_input else f"inputs[{self.input}]", self.index)
        return (f"d {out} / d {x}: analytical {self.analytical:.10g}, numerical {self.numerical:.10g} "
                f"(difference {abs(self.analytical - self.numerical):.3g}, {self.ratio:.3g} x the tolerance)")


@dataclass(eq=False)
class GradientCheck:
    r"""The result of :func:`gradient_check`; true when the check passed.

    Attributes:
        passed: every Jacobian entry satisfied
            :math:`|J^\text{ana} - J^\text{num}| \le \text{atol} + \text{rtol}\,|J^\text{num}|`.
        errors: one entry per input (``None`` for those not checked): the largest **relative
            error** over that input's Jacobian entries,
            :math:`\max_{k,j} |J^\text{ana}_{kj} - J^\text{num}_{kj}| \,/\,
            \max(|J^\text{num}_{kj}|, \text{atol}/\text{rtol})`.
            The floor :math:`\text{atol}/\text{rtol}` (``1e-2`` by default) keeps entries whose
            derivative is about zero from showing their rounding noise as a huge relative
            error; with it, an error at most ``rtol`` passes and one above ``2 rtol`` fails.
            (With ``rtol = 0`` the floor is the smallest positive float64.)
        worst: the :class:`WorstElement`, the entry with the largest ratio of its difference to
            its tolerance (``None`` if every Jacobian is empty).
        numerical, analytical: one Jacobian per input (``None`` for those not checked), a float64
            tensor of shape ``(m, n)``: row :math:`k` is the entry :math:`k` of all differentiable
            outputs flattened and concatenated in order, column :math:`j` the entry :math:`j` of
            the flattened input.
        eps, atol, rtol: the settings used.
        notes: remarks, such as inputs that were cast to float64.
        single_input, single_output: whether ``inputs`` was one tensor and ``f`` returned one
            (only used to name elements in messages).
    """

    passed: bool
    errors: list
    worst: WorstElement | None
    numerical: list
    analytical: list
    eps: float
    atol: float
    rtol: float
    notes: list = field(default_factory=list)
    single_input: bool = True
    single_output: bool = True

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        """A few readable lines: the verdict, the error per input, the worst entry, the notes."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"gradient check {verdict} (eps={self.eps:g}, atol={self.atol:g}, rtol={self.rtol:g})"]
        for i, err in enumerate(self.errors):
            if err is not None:
                name = "x" if self.single_input else f"inputs[{i}]"
                lines.append(f"  {name}: max relative error {err:.3g}")
        if self.worst is not None:
            lines.append(f"  worst entry: {self.worst.describe(self.single_output, self.single_input)}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def _element(name: str, index: tuple) -> str:
    return name if index == () else f"{name}[{', '.join(str(i) for i in index)}]"


def _unravel(flat: int, shape: tuple) -> tuple:
    """The multi-index of entry ``flat`` of a row-major tensor of ``shape``."""
    index = []
    for size in reversed(shape):
        flat, r = divmod(flat, size)
        index.append(r)
    return tuple(reversed(index))


def _as_outputs(out) -> tuple[list[Tensor], bool]:
    """``f``'s result as a list of tensors, and whether it was a single tensor."""
    if isinstance(out, Tensor):
        return [out], True
    if isinstance(out, (tuple, list)) and all(isinstance(o, Tensor) for o in out):
        return list(out), False
    raise TypeError(f"f must return a tensor or a tuple of tensors, got {type(out).__name__}")


def gradient_check(
    f: Callable,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = False,
) -> GradientCheck:
    r"""Compare the Jacobian of ``f`` from autograd with central differences, in float64.

    For every input :math:`x` that requires grad, every entry :math:`j` of :math:`x` and every
    entry :math:`k` of every output that requires grad:

    .. math::
        J^\text{num}_{kj} = \frac{f_k(x + \epsilon e_j) - f_k(x - \epsilon e_j)}{2\epsilon},
        \qquad J^\text{ana}_{kj} = \frac{\partial f_k}{\partial x_j} \text{ (one backward pass per } k),

    and the check passes if and only if, for every entry,

    .. math::
        |J^\text{ana}_{kj} - J^\text{num}_{kj}| \le \text{atol} + \text{rtol}\, |J^\text{num}_{kj}| ,

    the rule (and the defaults) of ``torch.autograd.gradcheck``.

    Args:
        f: a function of the inputs, returning a tensor or a tuple of tensors of any shapes.
            It must compute in the dtype of its inputs: convert a module with ``.double()``.
        inputs: a tensor or a tuple of arguments; tensors with ``requires_grad=True`` are
            checked, the other arguments are passed as they are.
        eps: the step :math:`\epsilon` of the differences.
        atol, rtol: the tolerances.
        raise_exception: raise :class:`GradientCheckError` (a ``ValueError``) on failure,
            instead of returning a failed result.

    Returns:
        A :class:`GradientCheck` (true when passed) with the verdict, the relative errors, the
        worst entry and both Jacobians.

    Note:
        The check runs on float64 **copies** of the floating-point inputs, whatever their dtype:
        a float32 input is cast (and a note says so), so ``f`` is checked in float64; your
        tensors are never modified. Outputs that do not require grad are ignored, as in torch
        (a function that detaches everything raises ``ValueError``). Unlike
        ``torch.autograd.gradcheck``, it does not also test batched gradients, forward-mode AD
        or undefined output gradients: it compares Jacobians, which is what finds a wrong
        backward. It costs :math:`2n` forward passes and :math:`m` backward passes, so keep
        the inputs small (a few dozen entries).

    Raises:
        GradientCheckError: on failure with ``raise_exception=True``.
        ValueError: if no input requires grad or no output does.
        TypeError: for a complex input or an output that is not a tensor.

    Example:
        >>> class Square(torch.autograd.Function):        # x^2 with a planted bug
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         ctx.save_for_backward(x)
        ...         return x ** 2
        ...     @staticmethod
        ...     def backward(ctx, grad):
        ...         x, = ctx.saved_tensors
        ...         return grad * x                     # should be 2 x
        >>> x = torch.tensor([1.0, -3.0], dtype=torch.float64, requires_grad=True)
        >>> result = gradient_check(Square.apply, x)
        >>> result.passed, result.worst.index, result.worst.analytical, round(result.worst.numerical, 6)
        (False, (1,), -3.0, -6.0)
        >>> gradient_check(lambda x: x ** 2, x).passed
        True
    """
    if not callable(f):
        raise TypeError(f"f must be a function, got {type(f).__name__}")
    eps = checks.positive(eps, "eps")
    atol = checks.nonnegative(atol, "atol")
    rtol = checks.nonnegative(rtol, "rtol")
    single_input = isinstance(inputs, Tensor)
    inputs = (inputs,) if single_input else tuple(inputs)

    # float64 copies: the checked inputs become fresh leaves; user tensors are never touched.
    args, checked, notes = [], [], []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and (x.is_complex() and x.requires_grad):
            raise TypeError(f"inputs[{i}] is complex ({x.dtype}): only real inputs are supported")
        if isinstance(x, Tensor) and x.requires_grad and not x.is_floating_point():
            raise TypeError(f"inputs[{i}] requires grad but has dtype {x.dtype}")
        if isinstance(x, Tensor) and x.is_floating_point():
            if x.requires_grad:
                checked.append(i)
                if x.dtype != torch.float64:
                    notes.append(f"inputs[{i}] is {x.dtype}: it was checked on a float64 copy")
            x = x.detach().to(torch.float64).requires_grad_(x.requires_grad)
        args.append(x)
    if not checked:
        raise ValueError("no input requires grad: create the inputs to check with requires_grad=True")
    leaves = [args[i] for i in checked]

    # Analytical Jacobian: one backward pass per output entry, rows = output entries.
    with torch.enable_grad():
        outputs, single_output = _as_outputs(f(*args))
    which = [k for k, o in enumerate(outputs) if o.requires_grad]
    if not which:
        raise ValueError("no output of f requires grad: does f detach its result or run under no_grad?")
    for k in which:
        if outputs[k].dtype != torch.float64:
            notes.append(f"output {k} is {outputs[k].dtype}: f does not compute in float64 (call .double() "
                         "on its modules), so the check is only as precise as that dtype")
    shapes = [tuple(outputs[k].shape) for k in which]
    m = sum(math.prod(s) for s in shapes)
    analytical = [torch.zeros(m, x.numel(), dtype=torch.float64, device=x.device) for x in leaves]
    row = 0
    for k in which:
        flat = outputs[k].reshape(-1)
        for r in range(flat.numel()):
            grads = torch.autograd.grad(flat[r], leaves, retain_graph=True, allow_unused=True)
            for J, g in zip(analytical, grads):
                if g is not None:  # None: this entry does not depend on that input
                    J[row] = g.reshape(-1)
            row += 1
    del outputs, flat

    # Numerical Jacobian: perturb one entry at a time, columns = input entries.
    def evaluate(values) -> Tensor:
        outs, _ = _as_outputs(f(*values))
        for k, shape in zip(which, shapes):
            if tuple(outs[k].shape) != shape:
                raise ValueError(f"output {k} changed shape from {shape} to {tuple(outs[k].shape)} "
                                 "under a perturbation")
        return torch.cat([outs[k].detach().reshape(-1).to(torch.float64) for k in which])

    numerical = []
    with torch.no_grad():
        for i, x in zip(checked, leaves):
            J = torch.zeros(m, x.numel(), dtype=torch.float64, device=x.device)
            moved = x.detach().clone(memory_format=torch.contiguous_format)
            entries = moved.view(-1)
            values = list(args)
            values[i] = moved
            for j in range(entries.numel()):
                original = entries[j].clone()
                entries[j] = original + eps
                plus = evaluate(values)
                entries[j] = original - eps
                minus = evaluate(values)
                entries[j] = original
                J[:, j] = (plus - minus) / (2 * eps)
            numerical.append(J)

    # Verdict, relative errors and the worst entry.
    floor = atol / rtol if rtol > 0 else torch.finfo(torch.float64).tiny
    passed, worst = True, None
    errors, num_out, ana_out = [None] * len(inputs), [None] * len(inputs), [None] * len(inputs)
    for i, A, N in zip(checked, analytical, numerical):
        num_out[i], ana_out[i] = N, A
        if N.numel() == 0:
            errors[i] = 0.0
            continue
        diff = (A - N).abs()
        tolerance = atol + rtol * N.abs()
        passed = passed and bool((diff <= tolerance).all())  # NaN fails, as in torch.allclose
        errors[i] = float((diff / N.abs().clamp(min=floor)).max())
        ratio = torch.where(diff == 0, 0.0, diff / tolerance)  # x / 0 = inf where the tolerance is 0
        ratio = torch.nan_to_num(ratio, nan=math.inf)
        flat = int(ratio.argmax())
        value = float(ratio.view(-1)[flat])
        if worst is None or value > worst.ratio:
            r, j = divmod(flat, N.shape[1])  # (output entry, input entry)
            out_pos = 0
            while r >= math.prod(shapes[out_pos]):  # which output the row r belongs to
                r -= math.prod(shapes[out_pos])
                out_pos += 1
            worst = WorstElement(
                input=i, index=_unravel(j, tuple(inputs[i].shape)),
                output=which[out_pos], output_index=_unravel(r, shapes[out_pos]),
                analytical=float(A.view(-1)[flat]), numerical=float(N.view(-1)[flat]), ratio=value,
            )
    result = GradientCheck(passed, errors, worst, num_out, ana_out, eps, atol, rtol, notes,
                           single_input=single_input, single_output=single_output)
    if raise_exception and not passed:
        raise GradientCheckError(result)
    return result
