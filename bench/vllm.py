"""Serving benchmark on vLLM (CPU build, .venv-vllm): SmolLM2-135M, the same random prompts under
matched attention configurations, each compared with stock vLLM full attention.

    stock_full             vLLM without the plugin (VLLM_PLUGINS=""), full attention
    stock_sliding          vLLM without the plugin, its own sliding window on every layer (no sinks)
    plugin_window          swaa_ext plugin, window + sinks on every layer
    plugin_fa_decode       swaa_ext plugin, window + sinks + FA decode on every layer
    stock_sliding_half     vLLM's own sliding window on the even layers, odd layers full
    plugin_window_half     plugin, window + sinks, odd layers full
    plugin_fa_decode_half  plugin, window + sinks + FA decode, odd layers full

    python -m bench.vllm            # bf16 + fp32, 2000- and 8000-token prompts, 3 repetitions
    python -m bench.vllm --quick    # smoke run: fp32, 2 prompts x 512 tokens, 1 repetition

Window = prompt length // 8 unless --window; 64 sinks. vLLM's sliding window counts the query
itself, as SWAAConfig's does, so stock_sliding* and plugin_* see the same window of keys (the
plugin's rows also see the sinks).

How it runs. Every (configuration, dtype, prompt length, repetition) is a child process of its
own: the plugin, once loaded, serves every engine of its process, and stock rows must run
without it. The runs are interleaved: repetition 1 of every dtype, length and configuration,
then repetition 2, ...; within a repetition the configuration order rotates by one each time, so
no configuration always runs first after a length change. Slow drifts of a shared machine thus
reach every configuration alike, and each ratio to stock_full is taken within one round (same
repetition, dtype and length: runs a few minutes apart at most).

An untimed run of the first configuration comes before them all. What one run measures, after a
warm-up request:
  prompt tokens/s    one `generate` of all prompts with 1 new token;
  generated tokens/s a second run of --new-tokens stepped by hand: the tokens and time of its
                     decode-only steps (no request still in its prompt; prefix caching off);
  KV per request     bytes one request holds at its last step in that run, from vLLM's KV-cache
                     manager (blocks held per KV-cache group x page bytes x layers of the group);
  max concurrency    vLLM's own estimate of concurrent max-model-len-token requests.
Reported: median over repetitions [min-max], and the ratio to stock_full of the same dtype and
length, per repetition, then its median [min-max]. Beside prompt throughput, a FLOP model's
predicted ratio (linear layers + attention FLOPs, shapes from the model's config.json). Each run
also records its CPU share (process CPU time / (threads x wall time) of the timed calls): runs
under 0.8, whose cores other jobs took, are named in a warning.
Prints a table per dtype x length, writes JSON (every run's row and the settings) and a PNG."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

# Run from the checkout (`python -m bench.vllm`), whose swaa_ext has no extension built against
# this venv's torch: take the checkout off the path, so `import swaa_ext` (and vLLM's plugin
# loader) find the wheel installed into .venv-vllm.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

MODEL = _ROOT / ".cache-vllm" / "smollm2-135m-instruct"
OUT = _ROOT / "docs" / "bench"
BASE = "stock_full"
MIN_REPS = 3  # fewer only for smoke runs (--quick, or written elsewhere with --out)
PLUGIN_PACKAGE = "swaa_ext."  # where the plugin's attention backends live


@dataclass(frozen=True)
class Setup:
    """One configuration. full: which layers keep full attention ("all", "none" or "odd", the
    SWAAConfig pattern name); the other layers slide over `window` keys, plus the sinks where
    `sinks` (the plugin's), and with `fa_decode` generated tokens see the whole context."""

    label: str
    plugin: bool
    full: str
    sinks: bool = False
    fa_decode: bool = False

    def is_full(self, layer: int) -> bool:
        return self.full == "all" or (self.full == "odd" and layer % 2 == 1)


CONFIGS = {
    "stock_full": Setup("stock vLLM, full attention", plugin=False, full="all"),
    "stock_sliding": Setup("stock vLLM, own sliding window, all layers", plugin=False,
                           full="none"),
    "plugin_window": Setup("plugin, window + sinks, all layers", plugin=True, full="none",
                           sinks=True),
    "plugin_fa_decode": Setup("plugin, window + sinks + FA decode, all layers", plugin=True,
                              full="none", sinks=True, fa_decode=True),
    "stock_sliding_half": Setup("stock vLLM, own sliding window, odd layers full",
                                plugin=False, full="odd"),
    "plugin_window_half": Setup("plugin, window + sinks, odd layers full", plugin=True,
                                full="odd", sinks=True),
    "plugin_fa_decode_half": Setup("plugin, window + sinks + FA decode, odd layers full",
                                   plugin=True, full="odd", sinks=True, fa_decode=True),
}
DTYPES = ("bfloat16", "float32")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run, about 2-3 minutes")
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--dtypes", nargs="+", choices=DTYPES)
    ap.add_argument("--lengths", nargs="+", type=int, help="prompt tokens (default 2000 8000)")
    ap.add_argument("--prompts", nargs="+", type=int,
                    help="prompts per run: one value, or one per length (default 4 at 2000, "
                         "2 at 8000: max(2, min(8, 8000 // length)))")
    ap.add_argument("--new-tokens", type=int, help="generated per prompt (default 64)")
    ap.add_argument("--window", type=int, help="default: each length // 8")
    ap.add_argument("--sinks", type=int, default=64)
    ap.add_argument("--reps", type=int, help=f"repetitions (default {MIN_REPS})")
    ap.add_argument("--max-model-len", nargs="+", type=int,
                    help="one value, or one per length (default: the power of two at or above "
                         "twice the prompt length, at most the model's positions)")
    ap.add_argument("--block-size", type=int, default=32, help="the CPU backend's smallest")
    ap.add_argument("--max-num-batched-tokens", type=int, default=512,
                    help="prefill chunk; bounds what a window-only group holds in flight")
    ap.add_argument("--out", type=Path, help="path stem of the .json and .png "
                                             "(default docs/bench/vllm, quick: vllm_quick)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: its run, as JSON
    args = ap.parse_args(argv)
    if args.one:
        return args
    quick = dict(dtypes=["float32"], lengths=[512], prompts=[2], new_tokens=16, reps=1)
    full = dict(dtypes=list(DTYPES), lengths=[2000, 8000], prompts=None, new_tokens=64,
                reps=MIN_REPS)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    default_out = OUT / ("vllm_quick" if args.quick else "vllm")
    published = (args.out or default_out).resolve() == default_out
    if args.reps < MIN_REPS and not args.quick and published:
        ap.error(f"--reps {args.reps}: the published result takes at least {MIN_REPS}; "
                 f"a smoke run needs --quick or its own --out")
    args.out = args.out or default_out
    for name in ("prompts", "max_model_len"):
        values = getattr(args, name)
        if values is not None and len(values) not in (1, len(args.lengths)):
            ap.error(f"--{name.replace('_', '-')}: one value or one per length")
    return args


def per_length(values: list[int] | None, index: int) -> int | None:
    return None if values is None else values[index if len(values) > 1 else 0]


def model_config(model: Path) -> dict:
    path = model / "config.json"
    if not path.is_file():
        raise SystemExit(f"{path} missing: `make {MODEL.relative_to(_ROOT)}/config.json`")
    return json.loads(path.read_text())


def plan(args, hf: dict) -> list[dict]:
    """Every child run, in the interleaved order they run in."""
    shapes = []
    for i, length in enumerate(args.lengths):
        positions = hf["max_position_embeddings"]
        prompts = per_length(args.prompts, i) or max(2, min(8, 8000 // length))
        # Room for requests twice as long as the prompts, as far as the model's positions go;
        # vLLM's max concurrency is reported for requests of this length.
        need = max(2 * length, length + args.new_tokens)
        max_len = per_length(args.max_model_len, i) or min(positions,
                                                           2 ** math.ceil(math.log2(need)))
        if max_len < length + args.new_tokens or max_len > positions:
            raise SystemExit(f"max model length {max_len} for {length}-token prompts + "
                             f"{args.new_tokens} new: needs >= {length + args.new_tokens} and "
                             f"<= the model's {positions} positions")
        shapes.append(dict(length=length, prompts=prompts, max_model_len=max_len,
                           window=args.window or length // 8))
    runs = []
    for rep in range(args.reps):
        for dtype in args.dtypes:
            for shape in shapes:
                shift = rep % len(args.configs)
                for config in args.configs[shift:] + args.configs[:shift]:
                    runs.append(dict(config=config, dtype=dtype, rep=rep, **shape,
                                     sinks=args.sinks, new_tokens=args.new_tokens,
                                     block_size=args.block_size,
                                     max_num_batched_tokens=args.max_num_batched_tokens,
                                     model=str(args.model)))
    return runs


# --- FLOP model --------------------------------------------------------------------------------

def prompt_flops(hf: dict, setup: Setup, length: int, window: int, sinks: int) -> float:
    """FLOPs of one prompt under `setup` (swaa_ext.recipes.cost's FLOP model; vLLM computes
    logits at the last position only, as it counts)."""
    from swaa_ext import SWAAConfig
    from swaa_ext.recipes.cost import prompt_flops as flops_of

    layers = hf["num_hidden_layers"]
    if setup.full == "all":
        return flops_of(hf, length, None)
    full = [i for i in range(layers) if setup.is_full(i)]
    return flops_of(hf, length, SWAAConfig(window, sinks if setup.sinks else 0, full))


def flop_model(hf: dict, runs: list[dict]) -> dict[tuple[int, str], float]:
    """(length, config) -> predicted prompt-throughput ratio to full attention."""
    out = {}
    for run in runs:
        key = run["length"], run["config"]
        if key not in out:
            shape = (run["length"], run["window"], run["sinks"])
            out[key] = (prompt_flops(hf, CONFIGS[BASE], *shape)
                        / prompt_flops(hf, CONFIGS[run["config"]], *shape))
    return out


# --- one run (child process) --------------------------------------------------------------------

def engine_kwargs(run: dict, num_layers: int) -> dict:
    setup = CONFIGS[run["config"]]
    if setup.plugin:
        import swaa_ext
        from swaa_ext.vllm import hf_overrides
        config = swaa_ext.SWAAConfig(run["window"], run["sinks"],
                                     () if setup.full == "none" else setup.full,
                                     fa_decode=setup.fa_decode)
        full = [i for i in range(num_layers) if setup.is_full(i)]
        assert list(config.full_layers(num_layers)) == full, "layer pattern differs from stock's"
        return {"hf_overrides": hf_overrides(config)}
    if setup.full == "all":
        return {}
    return {"hf_overrides": {"sliding_window": run["window"], "layer_types": [
        "full_attention" if setup.is_full(i) else "sliding_attention"
        for i in range(num_layers)]}}


def kv_bytes_held(scheduler, request_id: str) -> int:
    kv = scheduler.kv_cache_manager
    total = 0
    for group, manager in zip(kv.kv_cache_config.kv_cache_groups,
                              kv.coordinator.single_type_managers):
        blocks = sum(not b.is_null for b in manager.req_to_blocks.get(request_id, ()))
        total += blocks * group.kv_cache_spec.page_size_bytes * len(group.layer_names)
    return total


def decode_phase(engine, scheduler, prompts, params) -> dict:
    """Runs the prompts to completion step by step; returns the tokens generated in the steps
    where no request was still in its prompt (decode-only steps), the wall and CPU time those
    steps took, the whole run's time, and the KV bytes the first request held at its last step
    (read between steps, outside the timed calls). Timing decode on its own steps keeps the
    prefill (seconds, against a decode phase of a few) and its noise out of the generation
    throughput."""
    # vLLM appends a suffix to the id given; the scheduler knows the request by the one returned.
    first = [engine.add_request(f"gen{i}", prompt, params) for i, prompt in enumerate(prompts)][0]
    produced: dict[str, int] = {}
    decode_tokens, decode_s, decode_cpu_s, held = 0, 0.0, 0.0, 0
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        prefilling = any(r.num_computed_tokens < r.num_prompt_tokens
                         for r in scheduler.requests.values())
        step_start, cpu_start = time.perf_counter(), time.process_time()
        outputs = engine.step()
        step_s, step_cpu_s = time.perf_counter() - step_start, time.process_time() - cpu_start
        new = 0
        for out in outputs:
            count = len(out.outputs[0].token_ids)
            new += count - produced.get(out.request_id, 0)
            produced[out.request_id] = count
        if not prefilling:
            decode_tokens, decode_s = decode_tokens + new, decode_s + step_s
            decode_cpu_s += step_cpu_s
        if first in scheduler.requests:  # finished requests leave it, with their blocks
            held = kv_bytes_held(scheduler, first)
    return {"decode_tokens": decode_tokens, "decode_s": decode_s, "decode_cpu_s": decode_cpu_s,
            "generate_run_s": time.perf_counter() - start, "kv_bytes_per_request": held}


def backend_path(setup: Setup) -> str:
    """The class serving CPU_ATTN in this process; fails when a row would measure the wrong
    attention (plugin loaded for a stock row, or missing for a plugin row)."""
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    path = AttentionBackendEnum.CPU_ATTN.get_path()
    if path.startswith(PLUGIN_PACKAGE) != setup.plugin:
        raise RuntimeError(f"attention backend {path} for a {'plugin' if setup.plugin else 'stock'}"
                           f" configuration")
    return path


def run_one(run: dict) -> dict:
    """One run, in this process; returns its row (the run's settings plus what it measured)."""
    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.v1.core.kv_cache_utils import get_max_concurrency_for_kv_cache_config

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    hf = model_config(Path(run["model"]))
    llm = LLM(model=run["model"], dtype=run["dtype"], max_model_len=run["max_model_len"],
              max_num_seqs=run["prompts"], enforce_eager=True, enable_prefix_caching=False,
              block_size=run["block_size"], enable_chunked_prefill=True,
              max_num_batched_tokens=run["max_num_batched_tokens"], seed=0,
              **engine_kwargs(run, hf["num_hidden_layers"]))
    core = llm.llm_engine.engine_core.engine_core
    generator = torch.Generator().manual_seed(0)  # the same prompts in every run
    prompts = [{"prompt_token_ids": torch.randint(1000, 40000, (run["length"],),
                                                  generator=generator).tolist()}
               for _ in range(run["prompts"])]

    def params(n):
        return SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True)

    # Warm-up: long enough that whole prefill chunks lie past sinks + window, so the sliding
    # paths have run once too; short of the full prompt, which would cost as much as the timing.
    warm = min(run["length"], run["window"] + run["sinks"] + 2 * run["max_num_batched_tokens"])
    llm.generate([{"prompt_token_ids": prompts[0]["prompt_token_ids"][:warm]}], params(2),
                 use_tqdm=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    llm.generate(prompts, params(1), use_tqdm=False)
    prefill_s, prefill_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    decode = decode_phase(llm.llm_engine, core.scheduler, prompts, params(run["new_tokens"]))
    threads = torch.get_num_threads()
    kv_config = core.scheduler.kv_cache_manager.kv_cache_config
    row = dict(run)
    row.update({
        "prompt_tokens_per_s": run["prompts"] * run["length"] / prefill_s,
        "generated_tokens_per_s": decode["decode_tokens"] / max(decode["decode_s"], 1e-9),
        "max_concurrency": get_max_concurrency_for_kv_cache_config(core.vllm_config, kv_config),
        **decode,
        "prefill_s": prefill_s, "prefill_cpu_s": prefill_cpu_s,
        # CPU seconds of this process (all threads) per thread per second timed: near 1 on idle
        # cores, well under 1 when other jobs took them (the throughputs then mean little).
        "cpu_share": min([prefill_cpu_s / prefill_s] + [
            decode["decode_cpu_s"] / decode["decode_s"]] * (decode["decode_s"] > 0)) / threads,
        "kv_blocks": kv_config.num_blocks,
        "kv_groups": [{"spec": type(g.kv_cache_spec).__name__, "layers": len(g.layer_names),
                       "block_size": g.kv_cache_spec.block_size}
                      for g in kv_config.kv_cache_groups],
        "attention_backend": backend_path(CONFIGS[run["config"]]),
        "torch_threads": threads,
        "vllm_version": vllm.__version__,
        "load_avg_1m_before": load_before,
        "child_s": time.perf_counter() - started,
    })
    core.shutdown()
    return row


# --- driver --------------------------------------------------------------------------------------

def run_child(run: dict) -> dict:
    env = dict(os.environ)
    if not CONFIGS[run["config"]].plugin:
        env["VLLM_PLUGINS"] = ""  # vLLM loads no general plugin: its own CPU attention
    env["PYTHONPATH"] = str(_ROOT)  # for `-m bench.vllm`; the child drops it again
    child = subprocess.run([sys.executable, "-m", "bench.vllm", "--one", json.dumps(run)],
                           env=env, capture_output=True, text=True, cwd="/")
    found = [line for line in child.stdout.splitlines() if line.startswith("BENCH_ROW ")]
    if child.returncode or not found:
        tail = child.stderr[-3000:] or child.stdout[-3000:]
        raise RuntimeError(f"{describe(run)} failed (exit {child.returncode}):\n{tail}")
    return json.loads(found[-1].removeprefix("BENCH_ROW "))


def describe(run: dict) -> str:
    return f"{run['config']:<22} {run['dtype']:<8} L={run['length']:<5} rep {run['rep'] + 1}"


def settings(args, hf: dict, runs: list[dict], rows: list[dict], began: str) -> dict:
    shapes = {r["length"]: {k: r[k] for k in ("prompts", "window", "max_model_len")}
              for r in runs}
    return {
        "configs": {name: asdict(CONFIGS[name]) for name in args.configs},
        "dtypes": args.dtypes, "lengths": args.lengths, "per_length": shapes,
        "sinks": args.sinks, "new_tokens": args.new_tokens, "reps": args.reps,
        "block_size": args.block_size, "max_num_batched_tokens": args.max_num_batched_tokens,
        "kv_cache_space_gib": os.environ["VLLM_CPU_KVCACHE_SPACE"],
        "prefix_caching": False, "enforce_eager": True, "quick": args.quick,
        "order": "interleaved: rep, then dtype, then length, then configs (rotated by rep)",
        "torch_threads": sorted({r["torch_threads"] for r in rows}),
        "vllm_version": sorted({r["vllm_version"] for r in rows}),
        "cpu_count": os.cpu_count(),
        "model": str(args.model),
        "model_shapes": {k: hf.get(k) for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings")},
        "started": began, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache, the same for all
    if args.one:
        print("BENCH_ROW " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return
    hf = model_config(args.model)
    runs = plan(args, hf)
    began = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(f"{len(runs)} runs: {len(args.configs)} configs x {len(args.dtypes)} dtypes x "
          f"{len(args.lengths)} lengths x {args.reps} reps", flush=True)
    # An untimed first run pays what only the first process after an install or build pays
    # (bytecode, page cache), so that no configuration's first repetition does.
    warm = time.perf_counter()
    run_child(runs[0])
    print(f"[warm-up] {describe(runs[0])}: {time.perf_counter() - warm:6.1f} s, discarded",
          flush=True)
    rows, start = [], time.perf_counter()
    for index, run in enumerate(runs, 1):
        run_start = time.perf_counter()
        row = run_child(run)
        rows.append(row)
        spent = time.perf_counter() - start
        print(f"[{index:>3}/{len(runs)}] {describe(run)}/{args.reps}: "
              f"{time.perf_counter() - run_start:6.1f} s  prompt "
              f"{row['prompt_tokens_per_s']:7.1f} tok/s  gen {row['generated_tokens_per_s']:6.1f}"
              f" tok/s  CPU share {row['cpu_share']:.2f}  (elapsed {spent / 60:.1f} min, left ~"
              f"{spent / index * (len(runs) - index) / 60:.1f} min)", flush=True)
    from .vllm_report import report
    report(rows, settings(args, hf, runs, rows, began), flop_model(hf, runs), args.out)


if __name__ == "__main__":
    main()
