"""What the flat compiled path pays in a training loop that sets gradients to ``None``.

``bench_optim.py`` never calls ``zero_grad``, so after the first step ``book.optim``'s
``compiled=True`` path finds the gradients already in its flat buffer. In training,
``zero_grad()`` sets them to ``None`` and backward makes fresh tensors, which the next step copies
into the buffer (one more read and write of the gradients). This times that case: before every
step each parameter gets a fresh gradient tensor (two sets, alternated, so nothing is allocated
inside the timing), for ``book.optim`` compiled and torch's fused step, interleaved; it also
times ``zero_grad(set_to_none=False)``-style in-place gradients for comparison.

    python benchmarks/fresh_grads.py --size 16M --layout mixed --optimizer adam
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import book.optim as bo  # noqa: E402
from bench_optim import CLASS_NAMES, HYPER, make_params, parse_size  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="16M")
    parser.add_argument("--layout", default="mixed")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="steps per sample")
    args = parser.parse_args(argv)
    name, hyper = CLASS_NAMES[args.optimizer], HYPER[args.optimizer]
    runs = {}
    for variant in ("book-compiled", "torch-fused"):
        params = make_params(parse_size(args.size), args.layout)
        sets = [[p.grad.clone() for p in params], [p.grad.clone() for p in params]]
        opt = (getattr(bo, name)(params, **hyper, compiled=True) if variant == "book-compiled"
               else getattr(torch.optim, name)(params, **hyper, fused=True))
        runs[variant] = (opt, params, sets)
        for k in range(3):  # state, compilation
            for p, g in zip(params, sets[k % 2]):
                p.grad = g
            opt.step()
    samples = {(v, mode): [] for v in runs for mode in ("fresh", "in place")}
    order = list(samples)
    rng = random.Random(0)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for variant, mode in order:
            opt, params, sets = runs[variant]
            total = 0.0
            for k in range(args.steps):
                if mode == "fresh":  # what backward after zero_grad() hands the step: new tensors
                    for p, g in zip(params, sets[k % 2]):
                        p.grad = g
                start = time.perf_counter()
                opt.step()
                total += time.perf_counter() - start
            samples[(variant, mode)].append(total / args.steps)
    fused = {mode: statistics.median(samples[("torch-fused", mode)]) for mode in ("fresh", "in place")}
    print(f"{args.optimizer} {args.size} {args.layout}: median ms per step (ratio to torch fused, same gradients)")
    for (variant, mode), s in samples.items():
        med = statistics.median(s)
        print(f"  {variant:14s} {mode:9s} {1e3 * med:8.2f} ms  {med / fused[mode]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
