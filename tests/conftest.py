"""Shared fixtures: run device-dependent tests once per available device.

The session-wide hooks (test order, keeping nbval's results) are in ../conftest.py.
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



@pytest.fixture(autouse=True)
def _skip_float64_on_mps(request):
    """Apple's MPS backend has no float64: skip those combinations there."""
    names = request.fixturenames
    if "device" in names and "dtype" in names:
        if request.getfixturevalue("device").type == "mps" and request.getfixturevalue("dtype") == torch.float64:
            pytest.skip("MPS has no float64")


@pytest.fixture
def one_thread():
    """For tests that train tiny networks: one CPU thread is as fast as two for such small
    matrices, and far steadier when the machine is shared; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
