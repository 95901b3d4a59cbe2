"""book.checks: one wording for every argument error in the package."""

import math

import numpy as np
import pytest
import torch

from book import checks


@pytest.mark.parametrize("value", [3, 0.25, np.float32(0.25), np.float64(-1.5), torch.tensor(0.5), np.array(2.0)])
def test_number_accepts_reals_and_0d(value):
    out = checks.number(value, "x")
    assert type(out) is float and out == float(value)


@pytest.mark.parametrize(
    "value, error, message",
    [
        ("0.1", TypeError, "x must be a real number, got str"),
        (True, TypeError, "x must be a real number, got bool"),
        (None, TypeError, "x must be a real number, got NoneType"),
        (1 + 2j, TypeError, "x must be a real number, got complex"),
        (torch.ones(2), TypeError, "x must be a real number, got Tensor"),
        (math.nan, ValueError, "x must be finite, got nan"),
        (-math.inf, ValueError, "x must be finite, got -inf"),
    ],
)
def test_number_rejects(value, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        checks.number(value, "x")


def test_bounds_name_the_interval():
    assert checks.number(0, "p", low=0, high=1) == 0.0 and checks.number(1, "p", low=0, high=1) == 1.0
    with pytest.raises(ValueError, match=r"^p must be in \[0, 1\], got 1.5$"):
        checks.number(1.5, "p", low=0, high=1)
    with pytest.raises(ValueError, match=r"^p must be in \[0, 1\], got -0.5$"):
        checks.number(-0.5, "p", low=0, high=1)
    with pytest.raises(ValueError, match=r"^kappa must be >= 1, got 0.5$"):
        checks.number(0.5, "kappa", low=1)
    with pytest.raises(ValueError, match=r"^angle must be <= 180, got 181.0$"):
        checks.number(181, "angle", high=180)


def test_positive_and_nonnegative():
    assert checks.positive(1e-9, "lr") == 1e-9 and checks.nonnegative(0, "wd") == 0.0
    with pytest.raises(ValueError, match=r"^lr must be > 0, got 0.0$"):
        checks.positive(0, "lr")
    with pytest.raises(ValueError, match=r"^wd must be >= 0, got -0.1$"):
        checks.nonnegative(-0.1, "wd")


def test_integer():
    assert checks.integer(np.int64(4), "n", minimum=1) == 4
    with pytest.raises(TypeError, match="n must be an int, got float 2.0"):
        checks.integer(2.0, "n")
    with pytest.raises(TypeError, match="n must be an int, got bool"):
        checks.integer(True, "n")
    with pytest.raises(ValueError, match="^n must be >= 1, got 0$"):
        checks.integer(0, "n", minimum=1)


def test_optim_arg_passes_and_keeps_the_value():
    lr = torch.tensor(0.1)
    assert checks.optim_arg(lr, "learning rate") is lr
    assert checks.optim_arg(1.0, "rho value", high=1.0) == 1.0
    with pytest.raises(ValueError, match=r"^Invalid beta parameter at index 0: 1.0$"):
        checks.optim_arg(1.0, "beta parameter at index 0", high=1.0, high_inclusive=False)


BAD_ARGUMENTS = [
    ("SGD", dict(lr=-0.1)),
    ("SGD", dict(lr=0.1, momentum=-0.5)),
    ("SGD", dict(lr=0.1, weight_decay=-1)),
    ("Adam", dict(lr=float("nan"))),
    ("Adam", dict(eps=-1e-8)),
    ("Adam", dict(betas=(1.0, 0.999))),
    ("Adam", dict(betas=(0.9, -0.1))),
    ("Adam", dict(weight_decay=-0.1)),
    ("AdamW", dict(betas=(0.9, 1.5))),
    ("Adagrad", dict(lr_decay=-1)),
    ("Adagrad", dict(initial_accumulator_value=-1)),
    ("Adagrad", dict(eps=-1)),
    ("RMSprop", dict(alpha=-0.5)),
    ("RMSprop", dict(momentum=-0.5)),
    ("Adadelta", dict(rho=1.5)),
    ("Adadelta", dict(lr=-1)),
]


@pytest.mark.parametrize("name, kwargs", BAD_ARGUMENTS)
def test_optimizers_raise_torchs_words(name, kwargs):
    import book.optim

    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError) as theirs:
        getattr(torch.optim, name)(params, **kwargs)
    with pytest.raises(ValueError) as ours:
        getattr(book.optim, name)(params, **kwargs)
    assert str(ours.value) == str(theirs.value)
