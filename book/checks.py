"""Argument checks shared by every module, kernels included (it imports nothing of the book).

Each check returns the value in its canonical type or raises an error that names the
argument and the bad value, in one wording across the package::

    TypeError("lr must be a real number, got str")
    ValueError("lr must be finite, got inf")
    ValueError("lr must be > 0, got -0.1")
    ValueError("momentum must be in [0, 1], got 1.5")

The optimizers raise what ``torch.optim`` raises, word for word (``"Invalid learning rate: -0.1"``),
through :func:`optim_arg`, so code that catches torch's errors catches the book's.

    >>> positive(0.1, "lr")
    0.1
    >>> number(0.5, "p", low=0, high=1)
    0.5
    >>> integer(3, "steps", minimum=1)
    3
"""

from __future__ import annotations

import math
import numbers
import operator

__all__ = ["number", "positive", "nonnegative", "integer", "optim_arg", "tensor_lr"]


def number(value, name: str, low: float | None = None, high: float | None = None) -> float:
    """A finite real number in ``[low, high]`` (either bound optional), as a ``float``.

    Accepts Python and NumPy reals and 0-dim tensors or arrays; ``bool`` is not a number here.
    """
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or getattr(value, "ndim", None) == 0):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except (TypeError, ValueError):  # a 0-dim complex or string array
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low, too_high = low is not None and value < low, high is not None and value > high
    if (too_low or too_high) and low is not None and high is not None:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value}")
    if too_low:
        raise ValueError(f"{name} must be >= {low:g}, got {value}")
    if too_high:
        raise ValueError(f"{name} must be <= {high:g}, got {value}")
    return value


def positive(value, name: str) -> float:
    """A finite number ``> 0``."""
    value = number(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def nonnegative(value, name: str) -> float:
    """A finite number ``>= 0``."""
    return number(value, name, low=0)


def integer(value, name: str, minimum: int | None = None) -> int:
    """An integer (anything with ``__index__`` but ``bool``), at least ``minimum`` if given."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def optim_arg(
    value,
    what: str,
    low: float | None = 0.0,
    high: float | None = None,
    high_inclusive: bool = True,
    message: str | None = None,
):
    """The check ``torch.optim``'s constructors make, in their words: ``ValueError(f"Invalid {what}: {value}")``.

    Passes when ``low <= value`` (no lower bound when ``low`` is ``None``) and ``value <= high``
    (or ``< high`` when ``high_inclusive`` is false); NaN fails. The value is returned unchanged,
    so a tensor learning rate stays one. ``message`` replaces the wording for the optimizers whose
    torch twin words it otherwise (Adafactor, Muon): a format string with a ``{value}`` field.

        >>> optim_arg(0.9, "beta parameter at index 0", high=1.0, high_inclusive=False)
        0.9
        >>> optim_arg(-0.1, "learning rate", message="Learning rate should be >= 0 but is: {value}")
        Traceback (most recent call last):
        ...
        ValueError: Learning rate should be >= 0 but is: -0.1
    """
    if what == "learning rate":
        tensor_lr(value)  # torch refuses a tensor lr of several elements before it compares it
    ok = True if low is None else low <= value
    if high is not None:
        ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        raise ValueError(f"Invalid {what}: {value}" if message is None else message.format(value=value))
    return value


def tensor_lr(lr) -> None:
    """Refuse a tensor learning rate of more than one element, as ``torch.optim``'s constructors do."""
    if hasattr(lr, "numel") and lr.numel() != 1:  # a tensor (this module does not import torch)
        raise ValueError("Tensor lr must be 1-element")
