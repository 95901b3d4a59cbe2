import random

import numpy as np
import pytest
import torch

from book.utils import available_devices, device, seed_everything


def test_device_prefers_accelerator_then_cpu():
    d = device()
    if torch.cuda.is_available():
        assert d.type == "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        assert d.type == "mps"
    else:
        assert d.type == "cpu"


def test_device_by_name_and_environment(monkeypatch):
    assert device("cpu") == torch.device("cpu")
    monkeypatch.setenv("BOOK_DEVICE", "cpu")
    assert device() == torch.device("cpu")


def test_device_unavailable_raises():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            device("cuda")


def test_available_devices_start_with_cpu():
    devs = available_devices()
    assert devs[0] == torch.device("cpu")
    assert len(set(devs)) == len(devs)


def test_seed_everything_makes_every_generator_repeat():
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3))
    g = seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(123)))


def test_seed_everything_rejects_non_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything(1.5)
