"""book.train.fit and History: what is recorded, when, in which mode, and what happens when it blows up."""

from __future__ import annotations

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from book.data import Split, digits, linear_regression, minibatches, two_class  # noqa: E402
from book.optim import SGD  # noqa: E402
from book.train import DivergenceError, History, accuracy, evaluate, fit, lr_range_test  # noqa: E402


def small_classification(device, n=103, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long() + (X[:, 2] > 1).long()  # 3 classes
    return Split(X, y).to(device)


def mlp(device, seed=0, dims=(4, 16, 3)):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(dims[0], dims[1]), torch.nn.ReLU(), torch.nn.Linear(dims[1], dims[2])).to(device)


def test_history_lengths_and_keys(device):
    train = small_classification(device)
    model = mlp(device)
    h = fit(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, train, epochs=4, batch_size=10,
            val=small_classification(device, n=40, seed=1), progress=False)
    assert len(h) == len(h.epochs) == 4 and len(h.steps) == 4 * 11  # ceil(103 / 10) = 11 steps per epoch
    assert set(h.epochs[0]) == set(History.KEYS)
    assert h["epoch"] == [1, 2, 3, 4] and h["step"] == [11, 22, 33, 44]
    assert all(isinstance(v, float) and math.isfinite(v) for v in h.steps)
    assert all(0 <= a <= 1 for a in h["train_acc"] + h["val_acc"])
    assert all(t > 0 for t in h["time"])
    assert h["elapsed"] == pytest.approx(list(itertools.accumulate(h["time"])))
    assert h["lr"] == [0.1] * 4 and not h.stopped_early


def test_epoch_train_loss_is_batch_size_weighted_mean_of_step_losses(device):
    train = small_classification(device)
    model = mlp(device)
    h = fit(model, SGD(model.parameters(), lr=0.2), F.cross_entropy, train, epochs=3, batch_size=10, progress=False)
    sizes = torch.tensor([10.0] * 10 + [3.0], dtype=torch.float64)  # the last batch holds 3 samples
    for e in range(3):
        losses = torch.tensor(h.steps[11 * e : 11 * (e + 1)], dtype=torch.float64)
        weighted = float((losses * sizes).sum() / sizes.sum())
        assert h.epochs[e]["train_loss"] == pytest.approx(weighted, rel=1e-12)
        assert h.epochs[e]["train_loss"] != pytest.approx(float(losses.mean()), rel=1e-6)  # not the plain mean


def test_with_lr_zero_the_running_metrics_are_the_full_data_metrics(device):
    """With lr = 0 the weights never change, so the running train loss and accuracy are exact."""
    train = small_classification(device)
    model = mlp(device)
    h = fit(model, SGD(model.parameters(), lr=0.0), F.cross_entropy, train, epochs=2, batch_size=8, progress=False)
    with torch.no_grad():
        out = model(train.X)
        loss = float(F.cross_entropy(out, train.y))
        acc = float((out.argmax(1) == train.y).double().mean())
    assert h["train_loss"] == pytest.approx([loss, loss], rel=1e-5)
    assert h["train_acc"] == pytest.approx([acc, acc], abs=1e-12)


def test_val_metrics_equal_a_direct_computation(device):
    ds = digits(seed=0, device=device)
    model = mlp(device, dims=(64, 32, 10))
    h = fit(model, SGD(model.parameters(), lr=0.1, momentum=0.9), F.cross_entropy, ds.train, epochs=2,
            batch_size=64, val=ds.val, progress=False, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ds.val.X)
        assert h["val_loss"][-1] == pytest.approx(float(F.cross_entropy(out, ds.val.y)), rel=1e-5)
        assert h["val_acc"][-1] == pytest.approx(float((out.argmax(1) == ds.val.y).double().mean()), abs=1e-12)
    assert evaluate(model, F.cross_entropy, ds.val, batch_size=50)[0] == pytest.approx(h["val_loss"][-1], rel=1e-5)


class Spy(torch.nn.Module):
    """Identity that records (training, grad enabled, batch size) at every call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled(), len(x)))
        return x


def test_validation_runs_in_eval_mode_without_grad(device):
    train, val = small_classification(device, n=40), small_classification(device, n=7, seed=1)
    spy = Spy()
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5), spy).to(device)
    fit(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, train, epochs=2, batch_size=20, val=val, progress=False)
    train_calls = [c for c in spy.calls if c[2] == 20]
    val_calls = [c for c in spy.calls if c[2] == 7]
    assert len(train_calls) == 4 and all(c[:2] == (True, True) for c in train_calls)
    assert len(val_calls) == 2 and all(c[:2] == (False, False) for c in val_calls)
    assert model.training  # back in train mode afterwards


def test_callbacks_see_each_epoch_and_can_stop_training(device):
    train = small_classification(device)
    model = mlp(device)
    seen = []

    def record(epoch, history, m):
        assert m is model and len(history.epochs) == epoch
        seen.append(epoch)

    def stop_at_three(epoch, history, m):
        return epoch == 3

    h = fit(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, train, epochs=10, batch_size=25,
            callbacks=[stop_at_three, record], progress=False)
    assert h.stopped_early and len(h.epochs) == 3 and seen == [1, 2, 3]  # the later callback still ran
    assert len(h.steps) == 3 * 5
    h = fit(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, train, epochs=2, batch_size=25,
            callbacks=lambda *_: None, progress=False)  # a single callable, returning None: continue
    assert not h.stopped_early and len(h.epochs) == 2


def test_nan_loss_names_epoch_and_step_and_suggests_smaller_lr(device):
    train = small_classification(device, n=30)
    model = mlp(device)
    calls = {"n": 0}

    def loss_fn(out, y):  # becomes NaN at the 7th call: epoch 3, step 1 with 3 steps per epoch
        calls["n"] += 1
        loss = F.cross_entropy(out, y)
        return loss * float("nan") if calls["n"] == 7 else loss

    before = {}

    def snapshot(epoch, history, m):
        before.update({k: v.detach().clone() for k, v in m.state_dict().items()})

    with pytest.raises(DivergenceError, match=r"nan at epoch 3, step 1 \(step 7 overall\).*smaller learning rate") as err:
        fit(model, SGD(model.parameters(), lr=0.5), loss_fn, train, epochs=5, batch_size=10, progress=False,
            callbacks=[snapshot])
    assert isinstance(err.value, FloatingPointError)
    assert (err.value.epoch, err.value.step, err.value.global_step) == (3, 1, 7)
    assert "lr = 0.5" in str(err.value) and "lr = 0.05" in str(err.value)
    for k, v in model.state_dict().items():  # the bad step was not applied
        assert torch.equal(v, before[k])


def test_a_too_large_lr_diverges_with_a_clear_error(device):
    ds = linear_regression(n=200, dim=5, condition_number=10.0, device=device)
    model = torch.nn.Linear(5, 1).to(device)
    with pytest.raises(FloatingPointError, match=r"at epoch \d+, step \d+.*try a smaller learning rate"):
        fit(model, SGD(model.parameters(), lr=50.0), F.mse_loss, ds.train, epochs=50, batch_size=20, progress=False)


def test_progress_false_prints_nothing_and_true_shows_a_bar(capfd):
    train = small_classification(torch.device("cpu"), n=20)
    model = mlp(torch.device("cpu"))
    fit(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, train, epochs=2, batch_size=5, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    fit(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, train, epochs=2, batch_size=5, progress=True)
    out, err = capfd.readouterr()
    assert "2/2" in err and "epoch" in err


def test_same_seed_same_run_and_equal_to_the_loop_by_hand(device):
    ds = two_class(n=300, dim=3, device=device, dtype=torch.float64)
    loss_fn = lambda z, y: (F.softplus(z.squeeze(1)) - y * z.squeeze(1)).mean()  # noqa: E731  logistic loss

    def run_fit(seed):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1).to(device, torch.float64)
        opt = SGD(model.parameters(), lr=0.3, momentum=0.5)
        fit(model, opt, loss_fn, ds.train, epochs=3, batch_size=32, progress=False,
            generator=torch.Generator().manual_seed(seed))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).to(device, torch.float64)
    opt = SGD(model.parameters(), lr=0.3, momentum=0.5)
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        for Xb, yb in minibatches(*ds.train, batch_size=32, generator=g):
            opt.zero_grad()
            loss_fn(model(Xb), yb).backward()
            opt.step()
    by_hand = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(run_fit(7), by_hand)
    assert torch.equal(run_fit(7), run_fit(7))
    assert not torch.equal(run_fit(8), by_hand)


def test_converges_to_the_true_weights_of_a_linear_regression(device):
    ds = linear_regression(n=2000, dim=8, noise=0.01, condition_number=10.0, device=device, seed=3)
    model = torch.nn.Linear(8, 1, bias=False).to(device)
    torch.nn.init.zeros_(model.weight)
    h = fit(model, SGD(model.parameters(), lr=0.1, momentum=0.9), F.mse_loss, ds.train, epochs=30, batch_size=32,
            val=ds.val, progress=False, generator=torch.Generator().manual_seed(0))
    w = model.weight.detach().squeeze(0)
    assert float((w - ds.meta["weights"]).norm() / ds.meta["weights"].norm()) < 0.01
    assert h["val_loss"][-1] < 2 * 0.01**2  # the noise floor: sigma^2 = 1e-4
    assert h["train_acc"][-1] is None and h["val_acc"][-1] is None


def test_full_batch_and_schedulers(device):
    train = small_classification(device, n=40)
    model = mlp(device)
    opt = SGD(model.parameters(), lr=0.1)
    h = fit(model, opt, F.cross_entropy, train, epochs=3, progress=False)  # batch_size=None: full batch
    assert len(h.steps) == 3
    opt = SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)  # stepped every step
    h = fit(model, opt, F.cross_entropy, train, epochs=3, batch_size=10, scheduler=sched, progress=False)
    assert h["lr"] == pytest.approx([0.05, 0.025, 0.0125])  # after 4, 8, 12 steps
    opt = SGD(model.parameters(), lr=1.0)
    h = fit(model, opt, F.cross_entropy, train, epochs=2, batch_size=10, scheduler=lambda t: 0.1 / (1 + t),
            progress=False)
    assert h["lr"] == pytest.approx([0.1 / 4, 0.1 / 8])  # the lr of the last step of each epoch (t = 3, 7)


def test_a_plateau_scheduler_as_scheduler_says_to_use_a_callback(device):
    from book.schedules import ReduceLROnPlateau

    train = small_classification(device, n=20)
    model = mlp(device)
    opt = SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"needs a metric.*callbacks=\[scheduler.callback\(optimizer\)\]"):
        fit(model, opt, F.cross_entropy, train, epochs=1, scheduler=ReduceLROnPlateau(0.1), progress=False)
    torch_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    with pytest.raises(TypeError, match=r"needs a metric.*history\['val_loss'\]"):
        fit(model, opt, F.cross_entropy, train, epochs=1, scheduler=torch_plateau, progress=False)


def test_accuracy_helper():
    y = torch.tensor([0, 1, 2, 1])
    assert accuracy(torch.tensor([[3.0, 0, 0], [0, 1, 0], [0, 5, 1], [0, 2, 1]]), y) == 0.75
    logits = torch.tensor([[-1.0], [2.0], [0.5], [-0.1]])
    assert accuracy(logits, torch.tensor([0, 1, 0, 0])) == 0.75
    assert accuracy(logits.squeeze(1), torch.tensor([0, 1, 1, 0])) == 1.0


def test_history_plot_summary_repr(device):
    train = small_classification(device)
    model = mlp(device)
    h = fit(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, train, epochs=3, batch_size=20,
            val=small_classification(device, n=30, seed=2), progress=False)
    fig, axes = plt.subplots(1, 3)
    assert h.plot(ax=axes[0]) is axes[0] and len(axes[0].lines) == 2
    assert axes[0].get_yscale() == "log"
    h.plot(ax=axes[1], metric="acc", x="time")
    assert axes[1].get_xlabel() == "training time (s)" and axes[1].get_yscale() == "linear"
    h.plot(ax=axes[2], x="step")
    assert len(axes[2].lines[0].get_xdata()) == len(h.steps)
    plt.close(fig)
    assert len(h.summary().splitlines()) == 4
    assert repr(h).startswith("History(epochs=3, steps=18") and "val_acc=" in repr(h)
    with pytest.raises(ValueError, match="metric must be 'loss' or 'acc'"):
        h.plot(metric="f1")
    with pytest.raises(KeyError, match="unknown history key 'val_f1'"):
        h["val_f1"]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(epochs=0), ValueError, r"epochs must be >= 1, got 0"),
        (dict(batch_size=0), ValueError, r"batch_size must be >= 1, got 0"),
        (dict(batch_size=2.5), TypeError, r"batch_size must be an int"),
        (dict(train="data"), TypeError, r"train must be a book.data.Split or an \(X, y\) pair"),
        (dict(val=(torch.zeros(3, 4),)), TypeError, r"val must be"),
        (dict(scheduler=3), TypeError, r"scheduler must have a step\(\) method"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    model = mlp(torch.device("cpu"))
    args = dict(train=small_classification(torch.device("cpu"), n=10), epochs=1, batch_size=5, progress=False)
    with pytest.raises(error, match=match):
        fit(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, **{**args, **kwargs})


def test_model_and_data_on_different_devices():
    others = [d for d in (torch.device("cuda"),) if torch.cuda.is_available()]
    if not others:
        pytest.skip("needs a second device")
    model = mlp(others[0])
    with pytest.raises(ValueError, match="the model is on cuda"):
        fit(model, SGD(model.parameters()), F.cross_entropy, small_classification(torch.device("cpu")), 1, 10,
            progress=False)


# The LR range test (a training procedure: it lives beside fit)


def least_squares(device, n=256, seed=0):
    """y = X w + noise with feature scales 0.5 .. 3 (float64), and the curvature L of the mean squared error."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0, 0.7, 0.5], dtype=torch.float64)
    y = X @ torch.randn(5, 1, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    Xa = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], 1)  # the bias is a weight on a constant feature
    curvature = float(torch.linalg.eigvalsh(2 * Xa.T @ Xa / n).max())  # Hessian of mean((Xa w - y)^2)
    return Split(X, y).to(device), curvature


def test_lr_range_test_on_least_squares(device):
    data, curvature = least_squares(device)
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1).to(device=device, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lr_range_test(model, F.mse_loss, data, lambda p: torch.optim.SGD(p, lr=1.0), start_lr=1e-4, end_lr=10.0,
                          steps=100, batch_size=None)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored bit for bit
    assert res.diverged and len(res.lrs) < 100  # the sweep past 2/L blows up and stops early
    assert res.lrs[-1] > 2 / curvature  # ... only after it crossed the stable limit
    # the suggestion is stable (below 2/L) and within a factor 10 of 1/L, the best rate for the top curvature
    # (measured on the CPU: 1/L = 0.060, 2/L = 0.120, suggestion 0.077, minimum of the smoothed loss 0.77)
    assert res.suggested_lr < 2 / curvature
    assert 0.1 / curvature < res.suggested_lr < 10 / curvature
    assert res.min_loss_lr == pytest.approx(10 * res.suggested_lr)
    assert res.steepest_lr < res.min_loss_lr
    assert len(res.lrs) == len(res.losses) == len(res.raw_losses)
    ratio = (10 / 1e-4) ** (1 / 99)
    assert res.lrs[1] / res.lrs[0] == pytest.approx(ratio)  # an exponential sweep
    # bias-corrected smoothing: the first smoothed value is the first loss itself
    assert res.losses[0] == pytest.approx(res.raw_losses[0])
    ax = res.plot()
    assert ax.get_xscale() == "log"
    plt.close("all")


def test_lr_range_test_keeps_mode_and_leaves_no_state(device):
    data, _ = least_squares(device, n=64)
    model = torch.nn.Linear(5, 1).to(device=device, dtype=torch.float64).eval()
    res = lr_range_test(model, F.mse_loss, data, lambda p: torch.optim.SGD(p, lr=1.0, momentum=0.9),
                          start_lr=1e-3, end_lr=1e-2, steps=20, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert not model.training and not res.diverged and len(res.lrs) == 20  # 20 steps cycle through 4 batches 5 times


def test_lr_range_test_argument_errors(device):
    data, _ = least_squares(device, n=32)
    model = torch.nn.Linear(5, 1).to(device=device, dtype=torch.float64)
    factory = lambda p: torch.optim.SGD(p, lr=1.0)  # noqa: E731
    with pytest.raises(ValueError, match="end_lr must be > start_lr"):
        lr_range_test(model, F.mse_loss, data, factory, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="steps must be >= 2, got 1"):
        lr_range_test(model, F.mse_loss, data, factory, steps=1)
    with pytest.raises(ValueError, match=r"smoothing must be in \(0, 1\], got 0.0"):
        lr_range_test(model, F.mse_loss, data, factory, smoothing=0.0)
    with pytest.raises(ValueError, match="diverge_factor must be > 1, got 1.0"):
        lr_range_test(model, F.mse_loss, data, factory, diverge_factor=1.0)
    with pytest.raises(TypeError, match="data must be"):
        lr_range_test(model, F.mse_loss, data.X, factory)
    with pytest.raises(TypeError, match="must return a torch.optim.Optimizer"):
        lr_range_test(model, F.mse_loss, data, lambda p: None)


# The hooks fit gives the coming chapters: per-step callbacks, closures, optimizer modes


def _linear_problem(device):
    ds = linear_regression(n=200, dim=4, noise=0.1, device=device, dtype=torch.float64)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1).to(device, torch.float64)
    return ds, model


def test_step_callbacks_run_between_backward_and_step_and_can_clip(device):
    """Clipping in a step callback gives the parameters of the loop by hand that clips."""
    ds, model = _linear_problem(device)
    start = [p.detach().clone() for p in model.parameters()]
    seen = []

    def clip(step, m, loss):
        assert all(p.grad is not None for p in m.parameters())  # after backward ...
        seen.append((step, loss))
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05)  # ... and before the update

    opt = SGD(model.parameters(), lr=0.5)
    h = fit(model, opt, F.mse_loss, ds.train, epochs=2, batch_size=50, progress=False,
            generator=torch.Generator().manual_seed(3), step_callbacks=clip)
    assert [s for s, _ in seen] == list(range(1, len(h.steps) + 1)) and [v for _, v in seen] == h.steps

    by_hand = torch.nn.Linear(4, 1).to(device, torch.float64)
    with torch.no_grad():
        for p, p0 in zip(by_hand.parameters(), start):
            p.copy_(p0)
    opt = SGD(by_hand.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        for Xb, yb in minibatches(*ds.train, batch_size=50, generator=g):
            opt.zero_grad()
            F.mse_loss(by_hand(Xb), yb).backward()
            torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 0.05)
            opt.step()
    for a, b in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="step_callbacks must be functions"):
        fit(model, opt, F.mse_loss, ds.train, epochs=1, progress=False, step_callbacks=[3])


def test_closure_drives_lbfgs_like_the_loop_by_hand(device):
    ds, model = _linear_problem(device)
    start = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=5)
    h = fit(model, opt, F.mse_loss, ds.train, epochs=3, batch_size=None, progress=False, closure=True)

    by_hand = torch.nn.Linear(4, 1).to(device, torch.float64)
    with torch.no_grad():
        for p, p0 in zip(by_hand.parameters(), start):
            p.copy_(p0)
    opt = torch.optim.LBFGS(by_hand.parameters(), lr=1.0, max_iter=5)
    X, y = ds.train

    def closure():
        opt.zero_grad()
        loss = F.mse_loss(by_hand(X), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    for a, b in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert h["train_loss"][-1] < 0.1 * h["train_loss"][0]
    with pytest.raises(TypeError):  # without the closure, L-BFGS cannot step
        fit(model, opt, F.mse_loss, ds.train, epochs=1, progress=False)


def test_an_optimizer_with_modes_is_in_eval_mode_while_validating(device):
    ds, model = _linear_problem(device)
    calls = []

    class ModalSGD(SGD):  # stands in for a schedule-free optimizer
        def train(self):
            calls.append("train")

        def eval(self):
            calls.append("eval")

    def check_mode(epoch, history, m):
        calls.append("callback")

    fit(model, ModalSGD(model.parameters(), lr=0.1), F.mse_loss, ds.train, epochs=2, batch_size=50,
        val=ds.val, progress=False, callbacks=check_mode)
    assert calls == ["train", "eval", "train", "callback"] * 2


def test_fit_reads_on_one_screen():
    """Its body (docstring aside) is at most 60 lines: the rest lives in small named pieces."""
    import ast
    import inspect

    import book.train

    node = ast.parse(inspect.getsource(book.train.fit)).body[0]
    body = node.body[1:]  # after the docstring
    assert body[-1].end_lineno - body[0].lineno + 1 <= 60
