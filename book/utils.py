"""Device selection and seeding, shared by every chapter.

Every notebook starts with::

    from book.utils import device, seed_everything
    seed_everything(0)
    dev = device()   # CUDA if present, else Apple's MPS, else the CPU
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["device", "available_devices", "seed_everything"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def device(name: str | None = None) -> torch.device:
    """Return the device to compute on: CUDA, then MPS, then CPU.

    Args:
        name: force a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``). When
            omitted, the environment variable ``BOOK_DEVICE`` is honoured if set, so
            ``BOOK_DEVICE=cpu make book`` builds the book on the CPU of a GPU machine.

    Raises:
        ValueError: if the requested device is not available here.

    Example:
        >>> device("cpu")
        device(type='cpu')
    """
    name = name or os.environ.get("BOOK_DEVICE") or None
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {name!r} requested but MPS is not available on this machine")
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"unsupported device {name!r}: use 'cpu', 'cuda' or 'mps'")
    return dev


def available_devices() -> list[torch.device]:
    """Every device this machine can compute on: the CPU always, then CUDA and MPS if present.

    The test suite runs each kernel test once per entry of this list.
    """
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if _mps_available():
        devices.append(torch.device("mps"))
    return devices


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's random number generators (all devices).

    Returns a fresh ``torch.Generator`` seeded with ``seed`` for code that prefers an
    explicit generator to global state.

    Example:
        >>> g = seed_everything(0)
        >>> a = torch.rand(3); _ = seed_everything(0); b = torch.rand(3)
        >>> torch.equal(a, b)
        True
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)
