"""How closely book.optim's newer optimizers follow their references: max |difference| after 100 steps.

Each optimizer and its reference (torch.optim's twin, or the authors' package) start from the same
parameters and take 100 steps on the same sequence of gradients (a noisy quadratic: the gradient of
parameter i at step t is (i + 1)/2 * p + noise_t), in float32 and float64, on the CPU and, when there is
one, on CUDA. The table gives the largest absolute difference of any parameter entry after the 100 steps,
and the largest of the parameters' magnitudes for scale.

    python benchmarks/agreement.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import book.optim as bo  # noqa: E402


def pairs():
    import lion_pytorch
    import schedulefree

    return {
        "NAdam": (lambda p: bo.NAdam(p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
                  lambda p: torch.optim.NAdam(p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
        "RAdam": (lambda p: bo.RAdam(p, lr=1e-2, weight_decay=0.1),
                  lambda p: torch.optim.RAdam(p, lr=1e-2, weight_decay=0.1)),
        "Adamax": (lambda p: bo.Adamax(p, lr=1e-2), lambda p: torch.optim.Adamax(p, lr=1e-2)),
        "Adafactor": (lambda p: bo.Adafactor(p, lr=1e-2), lambda p: torch.optim.Adafactor(p, lr=1e-2)),
        "Muon": (lambda p: bo.Muon([q for q in p if q.ndim == 2], lr=2e-2),
                 lambda p: torch.optim.Muon([q for q in p if q.ndim == 2], lr=2e-2)),
        "Lion": (lambda p: bo.Lion(p, lr=1e-3, weight_decay=0.1),
                 lambda p: lion_pytorch.Lion(p, lr=1e-3, weight_decay=0.1)),
        "ScheduleFreeSGD": (lambda p: bo.ScheduleFreeSGD(p, lr=0.1, warmup_steps=10),
                            lambda p: schedulefree.SGDScheduleFree(p, lr=0.1, warmup_steps=10)),
        "ScheduleFreeAdamW": (lambda p: bo.ScheduleFreeAdamW(p, lr=1e-2, warmup_steps=10, weight_decay=0.01),
                              lambda p: schedulefree.AdamWScheduleFree(p, lr=1e-2, warmup_steps=10, weight_decay=0.01)),
    }


def params(device, dtype):
    g = torch.Generator().manual_seed(0)
    shapes = [(12, 8), (8,), (5, 12), (5,)]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_(True) for s in shapes]


def run(make, device, dtype, steps=100):
    ps = params(device, dtype)
    opt = make(ps)
    if hasattr(opt, "train"):
        opt.train()
    for t in range(steps):
        g = torch.Generator().manual_seed(1000 + t)
        for i, p in enumerate(ps):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(device, dtype)
            p.grad = (0.5 * (i + 1)) * p.detach() + noise
        opt.step()
    if hasattr(opt, "eval"):
        opt.eval()  # schedule-free: compare the averages x
    return [p.detach() for p in ps]


def main() -> int:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}; 100 steps; max |ours - reference| over all entries (max |p| for scale)\n")
    print("| optimizer | reference | " + " | ".join(f"{d} {t}" for d in devices for t in ("float32", "float64")) + " |")
    print("|---|---|" + "---|" * (2 * len(devices)))
    refs = {"Lion": "lion-pytorch", "ScheduleFreeSGD": "schedulefree", "ScheduleFreeAdamW": "schedulefree"}
    for name, (ours, theirs) in pairs().items():
        cells = []
        for device in devices:
            for dtype in (torch.float32, torch.float64):
                a, b = run(ours, device, dtype), run(theirs, device, dtype)
                diff = max(float((x - y).abs().max()) for x, y in zip(a, b))
                scale = max(float(y.abs().max()) for y in b)
                cells.append(f"{diff:.1e} ({scale:.2g})" if diff else f"0 ({scale:.2g})")
        print(f"| {name} | {refs.get(name, 'torch.optim')} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
