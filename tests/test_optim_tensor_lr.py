"""A 0-d tensor learning rate in the classic optimizers: the same steps as torch.optim's twin, or its refusal."""

import warnings

import pytest
import torch

import book.optim as optim

NAMES = ["SGD", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adagrad", "RMSprop", "Adadelta"]


def _run(module, name, lr, foreach):
    """Three steps from the same start with the same gradients; the weights, or the exception raised."""
    torch.manual_seed(0)
    w = torch.randn(4, 3).requires_grad_(True)
    grads = [torch.randn(4, 3) for _ in range(3)]
    extra = dict(momentum=0.9) if name == "SGD" else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = getattr(module, name)([w], lr=lr, foreach=foreach, **extra)
            for g in grads:
                w.grad = g.clone()
                opt.step()
    except Exception as exc:  # noqa: BLE001 - compared with torch's below
        return exc
    return w.detach()


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("name", NAMES)
def test_zero_dim_tensor_lr_matches_torch(name, foreach):
    ours, theirs = _run(optim, name, torch.tensor(0.01), foreach), _run(torch.optim, name, torch.tensor(0.01), foreach)
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs) and str(ours) == str(theirs)
    else:
        assert not isinstance(ours, Exception), f"torch steps with a tensor lr, book.optim.{name} raised {ours!r}"
        torch.testing.assert_close(ours, theirs)
        # and as the same lr given as a float
        torch.testing.assert_close(ours, _run(optim, name, 0.01, foreach), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr_of_several_elements_is_refused_as_torch_does(name):
    ours = _run(optim, name, torch.tensor([0.01, 0.02]), False)
    theirs = _run(torch.optim, name, torch.tensor([0.01, 0.02]), False)
    assert type(ours) is type(theirs) and str(ours) == str(theirs)


@pytest.mark.parametrize("foreach", [None, True])
def test_adam_refuses_a_bad_tensor_lr_in_torchs_order(foreach):
    w = torch.zeros(3, requires_grad=True)
    messages = []
    for module in (optim, torch.optim):
        with pytest.raises(ValueError) as info:
            module.Adam([w], lr=torch.tensor([0.1, 0.2]), foreach=foreach)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
