"""Argument checks shared by every module, kernels included (it imports nothing of the book).

Each check returns the value in its canonical type or raises an error that names the
argument and the bad value, e.g. ``ValueError("lr must be > 0, got -0.1")``. Modules whose
messages follow torch's wording on purpose (the optimizers, ``F.batch_norm``'s arguments)
keep their own.

    >>> positive(0.1, "lr")
    0.1
    >>> integer(3, "steps", minimum=1)
    3
"""

from __future__ import annotations

import math
import operator

__all__ = ["number", "positive", "nonnegative", "integer"]


def number(value, name: str) -> float:
    """A finite real number (``bool`` is not one), as a ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def positive(value, name: str) -> float:
    """A finite number ``> 0``."""
    value = number(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def nonnegative(value, name: str) -> float:
    """A finite number ``>= 0``."""
    value = number(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


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
