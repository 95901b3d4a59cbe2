"""Device selection and seeding, shared by every chapter.

Every notebook starts with::

    from book.utils import device, generator, method_seed, seed_everything
    seed_everything(0)
    dev = device()   # CUDA if present, else Apple's MPS, else the CPU

Seeds of a method's randomness (initial weights, minibatch order, dropout masks,
augmentations, search samplers) go through :func:`method_seed` (or :func:`generator`),
which adds the offset ``BOOK_SEED`` (an integer, default 0) from the environment. Running a
chapter under ``BOOK_SEED=3`` therefore trains other networks on other batches, which is
how ``make claims`` checks that a chapter's claims are not one seed's luck. Seeds of a
*problem instance* (a synthetic data set whose numbers the text discusses, the digits'
split) are plain integers and stay fixed. ``BOOK_THREADS`` sets torch's CPU thread count
wherever :func:`seed_everything` runs.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["device", "available_devices", "seed_everything", "seed_offset", "method_seed", "generator"]


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


def _env_int(name: str) -> int | None:
    """The integer in environment variable ``name``, ``None`` when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def seed_offset() -> int:
    """The seed offset ``BOOK_SEED`` from the environment (0 when unset).

    Raises:
        ValueError: if ``BOOK_SEED`` is set to something that is not an integer.
    """
    return _env_int("BOOK_SEED") or 0


def method_seed(seed: int = 0) -> int:
    """The seed to use for a method's randomness: ``seed + BOOK_SEED``.

    Use it for every seed that a claim about a method should not depend on: initial
    weights, minibatch order, dropout masks, augmentations, samplers. ``make claims`` runs
    each chapter under several offsets; a claim that holds for one offset only fails there.

    Example:
        >>> import os; os.environ.pop("BOOK_SEED", None) and None
        >>> method_seed(2)
        2
        >>> os.environ["BOOK_SEED"] = "10"; method_seed(2)
        12
        >>> del os.environ["BOOK_SEED"]
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return seed + seed_offset()


def generator(seed: int = 0, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`method_seed(seed) <method_seed>`.

    Example:
        >>> torch.equal(torch.rand(2, generator=generator(5)),
        ...             torch.rand(2, generator=torch.Generator().manual_seed(method_seed(5))))
        True
    """
    g = torch.Generator(device=device) if device is not None else torch.Generator()
    return g.manual_seed(method_seed(seed))


def _limit_blas_threads(n: int) -> None:
    """Cap NumPy's and SciPy's BLAS thread pools (OpenBLAS, MKL, BLIS) at ``n``, for the rest of the process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")  # the libraries loaded so far; not a context manager: it stays
    os.environ["OPENBLAS_NUM_THREADS"] = str(n)  # and those loaded later (SciPy brings its own OpenBLAS)


def seed_everything(seed: int = 0, threads: int | None = None) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's random number generators (all devices).

    The seed used is :func:`method_seed(seed) <method_seed>`, i.e. shifted by ``BOOK_SEED``.
    Torch's CPU thread count is set to ``BOOK_THREADS`` when that is set (``make claims`` runs
    every chapter with one thread and with two, where rounding differs), else to ``threads``
    when given: a chapter whose networks are tiny passes ``threads=1``, since more threads only
    add overhead there and make timings erratic on a busy machine. The same count then caps the
    threads of NumPy's and SciPy's BLAS (through ``threadpoolctl``): their problems in the chapters
    are tinier still (Optuna's Gaussian-process sampler, L-BFGS-B), and an OpenBLAS thread that
    spins waiting for a busy core made a GP sampler's trials several times slower.

    Returns a fresh ``torch.Generator`` seeded with the same seed, for code that prefers an
    explicit generator to global state.

    Example:
        >>> g = seed_everything(0)
        >>> a = torch.rand(3); _ = seed_everything(0); b = torch.rand(3)
        >>> torch.equal(a, b)
        True
    """
    seed = method_seed(seed)
    asked = _env_int("BOOK_THREADS")
    if asked is not None and asked < 1:
        raise ValueError(f"BOOK_THREADS must be a positive integer, got {asked}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if asked is not None or threads is not None:
        torch.set_num_threads(asked if asked is not None else threads)
        _limit_blas_threads(asked if asked is not None else threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)
