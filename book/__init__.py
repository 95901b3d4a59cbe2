"""Helpers for *Optimization for Deep Learning*, an executable textbook.

Each chapter has a module (``book.landscapes``, ``book.gd``, ...) whose kernels are
plain PyTorch code that runs on CPU or GPU and is tested against PyTorch's own
implementations. Shared pieces: ``book.utils`` (device, seeding), ``book.plotting``
(one figure style), ``book.widgets`` (interactive explorers with a static fallback).

Importing ``book`` is cheap: submodules are imported when you ask for them::

    from book.utils import device, seed_everything
    from book import landscapes
"""

__version__ = "0.1.0"
