"""Shared fixtures: run device-dependent tests once per available device.

Also orders the session: unit tests, then the chapter notebooks (nbval), then the
book build, which reuses the notebooks nbval has just executed (see test_book.py).
"""

from __future__ import annotations

import pytest
import torch

from book.utils import available_devices

DEVICES = available_devices()


@pytest.fixture(params=DEVICES, ids=[d.type for d in DEVICES])
def device(request) -> torch.device:
    """Every device this machine has: CPU always, CUDA and MPS when present."""
    return request.param


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


def pytest_collection_modifyitems(session, config, items):
    """Move the book build after everything else, so it can reuse nbval's executions."""
    last = [item for item in items if item.get_closest_marker("book_build")]
    rest = [item for item in items if not item.get_closest_marker("book_build")]
    items[:] = rest + last
