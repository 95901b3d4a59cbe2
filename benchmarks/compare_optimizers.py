"""The fair comparison of chapter 12, in full: every optimizer tuned with the same budget, then timed to a target.

For each workload (``book.compare.digits_mlp``, ``digits_cnn``) and each method of ``book.compare.METHODS``:
Optuna's TPE sampler tunes the method's hyperparameters for ``--trials`` runs on the validation split
(objective: epochs to the target accuracy), then the best hyperparameters are rerun on ``--seeds`` fresh
seeds, timed to the target, and tested on the test split. The results are written as JSON and as a
markdown table, labelled with the date, the machine and the command line.

    python benchmarks/compare_optimizers.py                       # the default protocol (a few minutes)
    python benchmarks/compare_optimizers.py --methods adamw,muon --trials 8 --seeds 3 --out /tmp/cmp
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from book import compare  # noqa: E402

WORKLOADS = {"mlp": compare.digits_mlp, "cnn": compare.digits_cnn}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def render(results: dict) -> str:
    """The markdown report of saved results: label, the per-seed table and the "which optimizer when" table.

    The ranks and tuning shares come from ``results``; the state per parameter is measured when rendering
    (one optimizer step on each workload's model, which does not depend on the machine).
    """
    label = results["label"]
    m = label["machine"]
    return (f"# Optimizer comparison\n\n{label['date']} | {m['cpu']} | {m['cores']} cores, {m['threads']} thread(s) | "
            f"torch {m['torch']} | {label['wall_seconds']:.0f} s\n\n`{label['command']}`\n\n"
            f"Each method tuned with {results['n_trials']} TPE trials per workload (objective: epochs to the target on "
            f"validation), then run on {len(results['seeds'])} fresh seeds: medians [min, max] over the seeds that reached "
            f"the target; test accuracy averaged over all seeds.\n\n" + compare.table(results) + "\n\n"
            "## Which optimizer when\n\nRank by seeds on target, then median epochs to it; state is measured "
            "after one step (float32 numbers kept per parameter, step counters included); the share of tuning "
            "trials that reached the target says how forgiving a method is to tune.\n\n" + compare.when(results) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="mlp,cnn", help=f"from {','.join(WORKLOADS)}")
    parser.add_argument("--methods", default=",".join(compare.METHODS), help=f"from {','.join(compare.METHODS)}")
    parser.add_argument("--trials", type=int, default=20, help="tuning runs per method and workload (the budget)")
    parser.add_argument("--seeds", type=int, default=5, help="fresh seeds each tuned method is timed on")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steady timings)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compare",
                        help="path without suffix: writes .json and .md")
    parser.add_argument("--render", action="store_true",
                        help="train nothing: rewrite the .md from the existing .json (its label unchanged)")
    args = parser.parse_args(argv)
    if args.render:
        text = render(json.loads(args.out.with_suffix(".json").read_text()))
        args.out.with_suffix(".md").write_text(text)
        print(text)
        return 0
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    workloads = [WORKLOADS[name]() for name in args.workloads.split(",")]
    seeds = list(range(100, 100 + args.seeds))  # fresh: tuning uses seeds 0 .. trials - 1
    results = compare.compare(workloads, args.methods.split(","), args.trials, seeds, progress=True)
    results["label"] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    text = render(results)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
