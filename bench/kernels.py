"""Kernel benchmark: swaa_ext against SDPA (dense mask, full causal), compiled FlexAttention and
transformers' eager attention, side by side in one process.

    python -m bench.kernels            # full sweep (L = 2k..32k, windows, decode, bf16)
    python -m bench.kernels --quick    # about a minute

Prints a table (time, GFLOP/s on visible pairs, swaa_ext speedup), writes JSON, a PNG plot and
the same table as Markdown.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import report
from .baselines import METHODS, Method, Skip, prepare
from .problem import Case
from .timing import machine_info, matmul_gflops, median, time_calls


@dataclass
class Result:
    method: str
    mode: str
    len_q: int
    len_k: int
    window: int
    sinks: int
    dtype: str
    flops: int
    times_s: list[float] = field(default_factory=list)
    cpu_times_s: list[float] = field(default_factory=list)  # process CPU time, all threads
    skipped: str | None = None
    max_abs_diff: float | None = None  # against swaa_ext's output (forward and decode only)

    @property
    def seconds(self) -> float | None:
        return median(self.times_s) if self.times_s else None

    @property
    def gflops(self) -> float | None:
        return self.flops / self.seconds / 1e9 if self.times_s else None

    def gflops_cpu(self, threads: int) -> float | None:
        """GFLOP/s per CPU-second, times the thread count: what the run would reach with the
        cores to itself (the machine is shared; spin-waiting still counts against it)."""
        if not self.cpu_times_s:
            return None
        return self.flops / (median(self.cpu_times_s) / threads) / 1e9


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sweep, about a minute")
    ap.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default 2k..32k)")
    ap.add_argument("--window", type=int, default=1024, help="window of the length sweep")
    ap.add_argument("--sinks", type=int, default=64)
    ap.add_argument("--window-sweep", type=int, nargs="*",
                    help="windows of a forward sweep at --window-sweep-length")
    ap.add_argument("--window-sweep-length", type=int, default=8192)
    ap.add_argument("--decode-lengths", type=int, nargs="*", help="cache lengths for decode")
    ap.add_argument("--bf16-lengths", type=int, nargs="*", help="lengths of the bf16 vs fp32 check")
    ap.add_argument("--methods", nargs="+", default=[m.name for m in METHODS],
                    choices=[m.name for m in METHODS])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd", "decode"],
                    choices=["fwd", "fwd+bwd", "decode"])
    ap.add_argument("--repeats", type=int, help="timed calls per case (median), default 3")
    ap.add_argument("--max-case-seconds", type=float,
                    help="skip a baseline whose quadratic extrapolation from the previous length "
                         "exceeds this (default 150; quick: 10)")
    ap.add_argument("--memory-budget-gib", type=float, default=4.0,
                    help="skip baselines whose L x L masks/scores exceed this")
    ap.add_argument("--out", type=Path, help="output prefix for .json/.png "
                                             "(default bench/results/kernels[_quick])")
    args = ap.parse_args()
    quick = args.quick
    defaults = dict(
        lengths=[1024, 2048] if quick else [2048, 4096, 8192, 16384, 32768],
        window_sweep=[] if quick else [256, 4096],
        decode_lengths=[8192] if quick else [8192, 32768],
        bf16_lengths=[1024] if quick else [8192],
        repeats=2 if quick else 3,
        max_case_seconds=10.0 if quick else 150.0,
        out=Path("bench/results") / ("kernels_quick" if quick else "kernels"),
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def build_cases(args: argparse.Namespace) -> list[Case]:
    cases = []
    for mode in ("fwd", "fwd+bwd"):
        cases += [Case(mode, n, args.window, args.sinks) for n in args.lengths]
    # The window sweep is forward only: the backward's dependence on the window is the same.
    cases += [Case("fwd", args.window_sweep_length, w, args.sinks) for w in args.window_sweep
              if w != args.window]
    cases += [Case("decode", n, args.window, args.sinks) for n in args.decode_lengths]
    for mode in ("fwd", "fwd+bwd"):  # the bf16 check: swaa_ext only, beside its fp32 case
        cases += [Case(mode, n, args.window, args.sinks, dtype=torch.bfloat16)
                  for n in args.bf16_lengths]
    return [c for c in cases if c.mode in args.modes]


def timed_call(method: Method, case: Case, q, k, v, grad, kept: dict, budget_gib: float):
    """The callable timed for one (method, case): forward (no grad) or forward + backward."""
    attn = prepare(method, case, budget_gib)
    if case.mode == "fwd+bwd":
        def step() -> None:
            for t in (q, k, v):
                t.grad = None
            attn(q, k, v).backward(grad)
        return step

    def forward() -> None:
        with torch.no_grad():
            kept["out"] = attn(q, k, v)
    return forward


def estimated_seconds(history: dict, method: Method, case: Case) -> float | None:
    """The method's last time at a shorter length, scaled quadratically in L (an upper bound for
    swaa_ext, which is linear)."""
    last = history.get((method.name, case.mode, case.window, case.dtype))
    if last is None:
        return None
    prev_len, prev_s = last
    return prev_s * (case.len_k / prev_len) ** 2


def extrapolation_skip(estimate: float | None, method: Method, budget_s: float) -> None:
    """Skip a dense baseline whose estimated time is over budget."""
    if estimate is not None and estimate > budget_s and method.name != "swaa_ext":
        raise Skip(f"~{estimate:.0f} s estimated (> {budget_s:.0f} s budget)")


def run_case(case: Case, methods: list[Method], history: dict, bar: tqdm,
             args: argparse.Namespace) -> list[Result]:
    q, k, v = case.inputs(requires_grad=case.mode == "fwd+bwd")
    grad = torch.randn_like(q) if case.mode == "fwd+bwd" else None
    results, reference_out = [], None
    for method in methods:
        bar.set_postfix_str(f"{case.mode} L={case.len_k} w={case.window} {method.name}")
        res = Result(method.name, case.mode, case.len_q, case.len_k, case.window, case.sinks,
                     str(case.dtype).removeprefix("torch."), case.flops())
        kept: dict = {}
        try:
            estimate = estimated_seconds(history, method, case)
            extrapolation_skip(estimate, method, args.max_case_seconds)
            fn = timed_call(method, case, q, k, v, grad, kept, args.memory_budget_gib)
            # A run of many seconds without compilation needs no warm-up call.
            warmup = method.name == "flex_compiled" or estimate is None or estimate < 5.0
            res.times_s, res.cpu_times_s = time_calls(fn, args.repeats, warmup=warmup)
        except Skip as why:
            res.skipped = str(why)
        except (RuntimeError, MemoryError) as err:  # a baseline that cannot run this case
            if method.name == "swaa_ext":
                raise
            res.skipped = f"error: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
        if res.times_s:
            history[(method.name, case.mode, case.window, case.dtype)] = (case.len_k, res.seconds)
        if "out" in kept:
            if method.name == "swaa_ext":
                reference_out = kept["out"].float()
            elif reference_out is not None and method.name != "sdpa_causal":
                res.max_abs_diff = (kept["out"].float() - reference_out).abs().max().item()
        results.append(res)
        bar.update()
    return results


def main() -> None:
    args = parse_args()
    methods = [m for m in METHODS if m.name in args.methods]
    if methods[0].name != "swaa_ext":
        raise SystemExit("--methods must include swaa_ext (speedups are relative to it)")
    info = machine_info()
    info["matmul_fp32_gflops"], info["matmul_fp32_gflops_cpu_time"] = matmul_gflops()
    print(f"{info['cpu']} ({info['cpu_capability']}), {info['torch_threads']} torch threads, "
          f"load {info['load_average_1_5_15']}; fp32 matmul peak "
          f"{info['matmul_fp32_gflops']:.0f} GFLOP/s ({info['matmul_fp32_gflops_cpu_time']:.0f} "
          f"by CPU time)")
    cases = build_cases(args)
    jobs = sum(len(methods) if c.dtype == torch.float32 else 1 for c in cases)
    results: list[Result] = []
    history: dict = {}
    with tqdm(total=jobs, desc="bench", unit="run") as bar:
        for case in cases:
            use = methods if case.dtype == torch.float32 else methods[:1]
            results += run_case(case, use, history, bar, args)
    info["load_average_after"] = list(os.getloadavg())
    threads = torch.get_num_threads()
    rows = [asdict(r) | {"seconds": r.seconds, "gflops": r.gflops,
                         "gflops_cpu_time": r.gflops_cpu(threads)} for r in results]
    shape = {k: getattr(cases[0], k) for k in ("batch", "heads_q", "heads_kv", "head_dim")}
    run = {"machine": info, "shape": shape, "args": {k: str(v) for k, v in vars(args).items()},
           "results": rows}
    run["targets"] = report.targets(rows, args.window)
    report.print_table(rows, info, methods)
    report.print_targets(run["targets"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write_json(run, args.out.with_suffix(".json"))
    report.plot(rows, args.window, methods, args.out.with_suffix(".png"))
    labels = {m.name: m.label for m in methods}
    args.out.with_suffix(".md").write_text(report.markdown(run, labels))
    print(f"wrote {args.out}.json, .png and .md")


if __name__ == "__main__":
    main()
