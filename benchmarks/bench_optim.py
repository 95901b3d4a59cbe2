"""Benchmark book.optim against torch.optim, and both against the machine's memory bandwidth.

For each optimizer of ``book.optim`` that has a ``torch.optim`` twin, each size and each
layout (one big tensor, or ~200 tensors of mixed shapes), this measures the median time of
one ``step()`` of

- ``book``          book.optim's class with its default arguments;
- ``book-loop``     book.optim with ``foreach=False`` (the single-tensor kernel per parameter);
- ``book-foreach``  book.optim with ``foreach=True`` (the multi-tensor kernel);
- ``book-compiled`` book.optim's opt-in one-pass path (``compiled=True``; Adam, AdamW, SGD);
- ``torch-loop``, ``torch-foreach``, ``torch-fused``: torch.optim with ``foreach=False``,
  ``foreach=True``, ``fused=True`` (where torch supports it on this device);

all in one process, the variants interleaved in a shuffled order in every repeat (so a
burst of load from other jobs hits them alike), after warm-up steps (the first step creates
the state; a compiled step compiles, and its compile time is reported apart). It prints
ratios to torch's default path (what ``torch.optim`` picks with ``foreach=None`` here) and
to torch's fused path, and the fraction of the memory bandwidth each step reaches: the
bandwidth is that of a multi-threaded STREAM triad ``a = b + s c`` measured in the same
process, and a step is charged the bytes its algorithm must move (Adam: read θ, g, m, v and
write θ, m, v, 7 float32 arrays, 28 bytes per parameter; see ``ARRAYS``).

    python benchmarks/bench_optim.py                    # the full run (a few minutes)
    python benchmarks/bench_optim.py --quick            # a smoke run (~30 s)
    python benchmarks/bench_optim.py --sizes 16M --layouts flat --optimizers adam --json out.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import book.optim as bo  # noqa: E402
from book.optim import compiled as bcompiled  # noqa: E402
# The measuring primitives live in book.speed (the appendix page on step speed uses them too).
from book.speed import StreamTriad, bytes_per_parameter, make_params, shapes, time_variants  # noqa: E402, F401
from book.speed import sync as _sync  # noqa: E402

# The arguments each optimizer is benchmarked with (the same for book and torch).
HYPER = {
    "sgd": dict(lr=1e-3, momentum=0.9),
    "adam": dict(lr=1e-3),
    "adamw": dict(lr=1e-3, weight_decay=1e-2),
    "rmsprop": dict(lr=1e-3),
    "adagrad": dict(lr=1e-2),
    "adadelta": dict(lr=1.0),
}
CLASS_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
               "adagrad": "Adagrad", "adadelta": "Adadelta"}
# float32 arrays a step must read and write per parameter, with the HYPER above, counted from what
# torch.optim's step touches (book.speed.trace_step):
#   sgd (momentum)  read θ, g, b         write θ, b        5
#   adam, adamw     read θ, g, m, v      write θ, m, v     7
#   rmsprop         read θ, g, v         write θ, v        5
#   adagrad         read θ, g, s         write θ, s        5
#   adadelta        read θ, g, v, u      write θ, v, u     7
ARRAYS = {name: bytes_per_parameter(getattr(torch.optim, CLASS_NAMES[name]), **hyper) // 4
          for name, hyper in HYPER.items()}
VARIANTS = ["book", "book-loop", "book-foreach", "book-compiled", "torch-loop", "torch-foreach", "torch-fused"]


# ---------------------------------------------------------------------------
# Machine and bandwidth


def machine_info(threads: int, device: torch.device = torch.device("cpu")) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda" else device.type),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1min": round(load, 2),
    }


# ---------------------------------------------------------------------------
# Parameters


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMG" else text
    return int(float(number) * scale)


def format_size(n: int) -> str:
    for unit, scale in (("M", 2**20), ("K", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


# ---------------------------------------------------------------------------
# Variants


def _accepts(cls, name: str) -> bool:
    try:
        return name in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


class _CompiledLoop:
    """book.optim.compiled's step over a list of parameters, for a class without ``compiled=``."""

    def __init__(self, name: str, params: list[torch.Tensor], hyper: dict) -> None:
        self.name, self.params, self.hyper, self.state = name, params, dict(hyper), {}

    def step(self) -> None:
        for p in self.params:
            st = self.state.setdefault(p, {})
            if self.name == "sgd":
                st["momentum_buffer"] = bcompiled.sgd(p, p.grad, st.get("momentum_buffer"), **self.hyper)
                continue
            if not st:
                st.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            fn = bcompiled.adamw if self.name == "adamw" else bcompiled.adam
            fn(p, p.grad, st["exp_avg"], st["exp_avg_sq"], None, st["step"], **self.hyper)


def build_variants(name: str, params: list[torch.Tensor], use_compiled: bool) -> tuple[dict, dict]:
    """``{variant: optimizer}`` for the variants that exist here, and ``{variant: reason}`` for the rest."""
    hyper = HYPER[name]
    tcls = getattr(torch.optim, CLASS_NAMES[name])
    bcls = getattr(bo, CLASS_NAMES[name], None)
    made, missing = {}, {}

    def attempt(variant, factory):
        try:
            made[variant] = factory()
        except (TypeError, ValueError, RuntimeError) as err:
            missing[variant] = f"{type(err).__name__}: {err}".splitlines()[0][:80]

    if bcls is not None:
        attempt("book", lambda: bcls(params, **hyper))
        if _accepts(bcls, "foreach"):
            attempt("book-loop", lambda: bcls(params, **hyper, foreach=False))
            attempt("book-foreach", lambda: bcls(params, **hyper, foreach=True))
        else:
            missing["book-loop"] = missing["book-foreach"] = "no foreach argument"
        if name in ("sgd", "adam", "adamw"):
            if not use_compiled:
                missing["book-compiled"] = "not requested"
            elif _accepts(bcls, "compiled"):
                attempt("book-compiled", lambda: bcls(params, **hyper, compiled=True))
            else:
                made["book-compiled"] = _CompiledLoop(name, params, hyper)
        else:
            missing["book-compiled"] = "no compiled path"
    attempt("torch-loop", lambda: tcls(params, **hyper, foreach=False))
    attempt("torch-foreach", lambda: tcls(params, **hyper, foreach=True))
    if _accepts(tcls, "fused"):
        def fused():
            opt = tcls(params, **hyper, fused=True)
            opt.step()  # some devices refuse only at the first step
            return opt
        attempt("torch-fused", fused)
    else:
        missing["torch-fused"] = "torch has no fused path"
    return made, missing


def torch_default(name: str, params: list[torch.Tensor]) -> str:
    """The variant torch.optim picks with ``foreach=None, fused=None`` for these parameters."""
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach

        fused, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
        return "torch-fused" if fused else "torch-foreach" if foreach else "torch-loop"
    except Exception:  # a private helper: fall back to the documented rule
        return "torch-foreach" if all(p.is_cuda for p in params) else "torch-loop"


# ---------------------------------------------------------------------------
# Timing


def run(
    sizes: list[int],
    layouts: list[str],
    optimizers: list[str],
    repeats: int = 7,
    threads: int | None = None,
    use_compiled: bool = True,
    triad_numel: int = 2**25,
    target_s: float = 0.1,
    progress: bool = False,
    device: str | torch.device = "cpu",
    variants: list[str] | None = None,
) -> dict:
    """Run the benchmark and return its results as a JSON-ready dict (see ``format_table``).
    On ``device="cuda"`` the parameters, gradients, state and the triad's arrays live on the GPU."""
    device = torch.device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    info = machine_info(torch.get_num_threads(), device)
    triad = StreamTriad(triad_numel, device)
    triad.sample(10)
    rows = []
    for name in optimizers:
        if name not in HYPER:
            raise ValueError(f"Unknown optimizer {name!r}: choose from {', '.join(HYPER)}")
        if not hasattr(bo, CLASS_NAMES[name]):
            rows.append(dict(optimizer=name, skipped=f"book.optim has no {CLASS_NAMES[name]}"))
            continue
        for numel in sizes:
            for layout in layouts:
                started = time.perf_counter()
                params = make_params(numel, layout, device=device)
                made, missing = build_variants(name, params, use_compiled)
                if variants is not None:  # only these (the rest are reported as not requested)
                    for variant in [v for v in made if v not in variants]:
                        del made[variant]
                        missing[variant] = "not requested"
                compile_before = dict(bcompiled.compile_seconds)
                triad.sample(3)  # again between cells: keep the best pass of the whole run
                timings, first = time_variants(made, repeats, target_s=target_s, device=device)
                medians = {v: med for v, (med, _) in timings.items()}
                compile_new = {str(k): s for k, s in bcompiled.compile_seconds.items() if k not in compile_before}
                default = torch_default(name, params)
                n_bytes = ARRAYS[name] * 4 * numel
                for variant in VARIANTS:
                    row = dict(optimizer=name, numel=numel, layout=layout, tensors=len(params),
                               variant=variant, torch_default=default)
                    if variant in medians:
                        t = medians[variant]
                        row.update(
                            ms=t * 1e3,
                            best_ms=timings[variant][1] * 1e3,
                            first_step_s=first[variant],
                            vs_default=t / medians[default] if default in medians else None,
                            vs_fused=t / medians["torch-fused"] if "torch-fused" in medians else None,
                            gbps=n_bytes / t / 1e9,
                            best_vs_default=(timings[variant][1] / timings[default][1]
                                             if default in timings else None),
                            best_vs_fused=(timings[variant][1] / timings["torch-fused"][1]
                                           if "torch-fused" in timings else None),
                        )
                        if variant == "book-compiled":
                            row["compile_s"] = sum(compile_new.values())
                    else:
                        row["missing"] = missing.get(variant, "n/a")
                    rows.append(row)
                del made, params
                if progress:
                    print(f"  {name} {format_size(numel)} {layout}: {time.perf_counter() - started:.1f} s",
                          file=sys.stderr, flush=True)
    triad.sample(3)
    info["triad_gbps"], info["triad_samples"] = triad.best, triad.samples
    for row in rows:
        if "gbps" in row:
            row["of_triad"] = row["gbps"] / triad.best
    return {"machine": info, "repeats": repeats, "sample_s": target_s, "rows": rows}


def format_table(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"book.optim vs torch.optim: median step time over {results['repeats']} interleaved repeats"
        + (f" (each: as many steps as take ~{results['sample_s']:g} s, 1 to 50)" if "sample_s" in results else ""),
        f"date {m['date']} | CPU {m['cpu']} | {m['cores']} cores | torch {m['torch']} | "
        f"{m['threads']} threads | device {m.get('device', 'cpu')} | load average {m['load_average_1min']}",
        f"memory bandwidth (STREAM triad a = b + s*c, 12 B/element, best of {m['triad_samples']} passes "
        f"spread over the run): {m['triad_gbps']:.1f} GB/s",
        "ms/step: median over the repeats; best: the fastest repeat. "
        "ratios (of medians): time / torch default (torch's foreach=None pick, marked *) and time / torch fused; "
        "<1 is faster. %BW: bytes the algorithm must move / time / triad bandwidth. It can pass 100 %: the "
        "triad's store to a fresh array first reads the line (write-allocate: 16 B move per 12 B counted), while "
        "a step writes back lines it has just read; at 1M the arrays also fit in the cache.",
        "",
        f"{'optimizer':<9} {'size':>5} {'layout':<6} {'variant':<14} {'ms/step':>9} {'best':>8} {'/default':>8} "
        f"{'/fused':>7} {'GB/s':>6} {'%BW':>5}  note",
    ]
    lines.append("-" * len(lines[-1]))
    last = None
    for r in results["rows"]:
        if "skipped" in r:
            lines.append(f"{r['optimizer']:<9} skipped: {r['skipped']}")
            continue
        key = (r["optimizer"], r["numel"], r["layout"])
        if last is not None and key != last:
            lines.append("")
        last = key
        head = f"{r['optimizer']:<9} {format_size(r['numel']):>5} {r['layout']:<6} "
        star = "*" if r["variant"] == r["torch_default"] else ""
        name = (r["variant"] + star)[:14]
        if "ms" not in r:
            lines.append(f"{head}{name:<14} {'—':>9} {'':>8} {'':>8} {'':>7} {'':>6} {'':>5}  {r['missing']}")
            continue

        def ratio(x):
            return f"{x:.2f}" if x is not None else "—"

        note = f"compile {r['compile_s']:.1f} s" if r.get("compile_s") else ""
        lines.append(
            f"{head}{name:<14} {r['ms']:>9.2f} {r['best_ms']:>8.2f} {ratio(r['vs_default']):>8} {ratio(r['vs_fused']):>7} "
            f"{r['gbps']:>6.1f} {100 * r['of_triad']:>4.0f}%  {note}".rstrip()
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,16M", help="parameter counts, e.g. 1M,16M (K, M suffixes)")
    parser.add_argument("--layouts", default="flat,mixed", help="flat (one tensor), mixed (~200 tensors)")
    parser.add_argument("--optimizers", default=",".join(HYPER), help=f"from {','.join(HYPER)}")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved samples per variant (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--sample-seconds", type=float, default=0.1,
                        help="steps per sample: as many as take about this long (1 to 50 steps; at 16M parameters "
                             "a step takes ~10 ms, and a sample of 0.02 s, two steps, made medians move by 5 %%)")
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled path (no compile time)")
    parser.add_argument("--quick", action="store_true",
                        help="a fast smoke run: 256K parameters, SGD and Adam, 3 repeats, no compiled path")
    parser.add_argument("--warm-cache", action="store_true",
                        help="reuse TorchInductor's on-disk cache (default: a fresh one, so compile times are cold)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (parameters, state and triad on that device)")
    parser.add_argument("--variants", default=None,
                        help=f"only these variants, e.g. book,book-compiled,torch-loop,torch-fused "
                             f"(from {','.join(VARIANTS)}; the ratios need torch's default and fused ones)")
    parser.add_argument("--json", type=Path, default=None, help="also save the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.optimizers, args.repeats, args.no_compiled = "256K", "sgd,adam", 3, True
    if not args.warm_cache and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        import tempfile

        # a fresh cache: the reported compile time is what a first run pays, C++ build included
        import atexit
        import shutil

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_optim_inductor_")
        atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    results = run(
        sizes=[parse_size(s) for s in args.sizes.split(",")],
        layouts=args.layouts.split(","),
        optimizers=args.optimizers.split(","),
        repeats=args.repeats,
        threads=args.threads,
        target_s=args.sample_seconds,
        use_compiled=not args.no_compiled,
        triad_numel=2**24 if args.quick else 2**25,
        progress=True,
        device=args.device,
        variants=None if args.variants is None else args.variants.split(","),
    )
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
