"""Helpers shared by the tests that compare book.optim's twins with torch.optim step by step."""

import torch


def groups(params, spec, case):
    """Two parameter groups: the first with the case's hyperparameters, the second with others."""
    return [{"params": params[:2]}, {"params": params[2:], **spec.second(case)}]


def set_grads(params, t, skip=()):
    """The gradient of a noisy quadratic at step t: the same for every optimizer, different at each step."""
    g = torch.Generator().manual_seed(1000 + t)
    for i, p in enumerate(params):
        noise = torch.randn(p.shape, generator=g).to(p.device, p.dtype)
        p.grad = None if i in skip else (0.5 * (i + 1)) * p.detach() + noise


def run(opt, params, steps, start=0, skip=lambda t: ()):
    for t in range(start, start + steps):
        set_grads(params, t, skip(t))
        opt.step()


def tolerance(dtype, device=None):
    """float32 within 1e-6 relative after the run (the contract), float64 within 1e-12. On CUDA,
    float32 gets 1e-5: its kernels fuse a*b + c into one rounding where the CPU's take two, and the
    difference grows over 100 steps (seen on an H200: 2.6e-6 relative, in one of 60 elements of
    NAdam's second moment, against torch's foreach path)."""
    if dtype != torch.float32:
        return dict(rtol=1e-12, atol=1e-14)
    if device is not None and torch.device(device).type == "cuda":
        return dict(rtol=1e-5, atol=1e-6)
    return dict(rtol=1e-6, atol=1e-7)


def assert_states_close(ours, theirs, **tol):
    """Same state, key by key: the same parameters, the same keys, the same tensors (dtype and device too)."""
    s_ours, s_theirs = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert s_ours.keys() == s_theirs.keys()
    for i in s_ours:
        assert s_ours[i].keys() == s_theirs[i].keys(), i
        for key in s_ours[i]:
            a, b = s_ours[i][key], s_theirs[i][key]
            assert a.dtype == b.dtype and a.device == b.device and a.shape == b.shape, (i, key)
            torch.testing.assert_close(a, b, **tol)
