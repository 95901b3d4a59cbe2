import os
import random

import numpy as np
import pytest
import torch

from book.utils import available_devices, device, generator, method_seed, seed_everything, seed_offset


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


def test_method_seed_adds_the_offset(monkeypatch):
    monkeypatch.delenv("BOOK_SEED", raising=False)
    assert method_seed() == 0 and method_seed(3) == 3 and seed_offset() == 0
    monkeypatch.setenv("BOOK_SEED", "5")
    assert seed_offset() == 5 and method_seed(3) == 8
    monkeypatch.setenv("BOOK_SEED", "-2")
    assert method_seed(3) == 1


def test_generator_and_seed_everything_follow_the_offset(monkeypatch):
    monkeypatch.setenv("BOOK_SEED", "7")
    expected = torch.rand(4, generator=torch.Generator().manual_seed(9))
    assert torch.equal(torch.rand(4, generator=generator(2)), expected)
    seed_everything(2)
    assert torch.equal(torch.rand(4), expected)  # the global generator was seeded with 2 + 7
    monkeypatch.setenv("BOOK_SEED", "0")
    assert not torch.equal(torch.rand(4, generator=generator(2)), expected)


def test_bad_offsets_and_thread_counts_are_named(monkeypatch):
    monkeypatch.setenv("BOOK_SEED", "one")
    with pytest.raises(ValueError, match="BOOK_SEED must be an integer, got 'one'"):
        method_seed(0)
    monkeypatch.delenv("BOOK_SEED")
    with pytest.raises(TypeError, match="seed must be an int"):
        method_seed(0.5)
    monkeypatch.setenv("BOOK_THREADS", "0")
    with pytest.raises(ValueError, match="BOOK_THREADS must be a positive integer"):
        seed_everything(0)


def test_book_threads_sets_the_thread_count(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("BOOK_THREADS", "1")
        seed_everything(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_chapter_thread_count_yields_to_book_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("BOOK_THREADS", raising=False)
        seed_everything(0, threads=1)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("BOOK_THREADS", "2")
        seed_everything(0, threads=1)
        assert torch.get_num_threads() == 2  # the harness's choice wins over the chapter's default
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            seed_everything(0, threads=0)
    finally:
        torch.set_num_threads(before)


def test_the_thread_count_also_caps_numpy_and_scipy_blas(monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    blas = lambda: [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]  # noqa: E731
    before, keep = torch.get_num_threads(), threadpool_limits(limits=None, user_api="blas")
    try:
        monkeypatch.delenv("BOOK_THREADS", raising=False)
        monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)  # restored after the test
        seed_everything(0, threads=1)
        assert blas() and set(blas()) == {1}  # the libraries loaded so far ...
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"  # ... and an OpenBLAS loaded later
    finally:
        torch.set_num_threads(before)
        keep.restore_original_limits()
