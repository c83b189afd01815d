"""Serving benchmark on vLLM (CPU build, .venv-vllm): SmolLM2-135M, the same random prompts under

    plugin_window_only   swaa_ext plugin, window + sinks, odd layers full (two KV-cache groups)
    plugin_fa_decode     swaa_ext plugin, window + sinks + FA decode, every 4th layer full
    stock_full           vLLM without the plugin (VLLM_PLUGINS=""), full attention
    stock_sliding        vLLM without the plugin, its own sliding window on the even layers
                         (hf_overrides layer_types + sliding_window; no sinks)

    python -m bench.vllm            # 8 prompts x 2000 tokens + 64 generated, window 256
    python -m bench.vllm --quick    # 4 prompts x 512 tokens + 32 generated, window 64

Each configuration runs in its own process (the plugin, once loaded, serves every engine of a
process). Prompt throughput: one `generate` with 1 new token; generation: a second run of
`--new-tokens` stepped by hand, the tokens and time of its decode-only steps (no request still in
its prompt; prefix caching off). KV memory, from vLLM's own state: KV bytes a
request holds at its last step (blocks held per KV-cache group x page bytes x layers of the
group) and vLLM's maximum concurrency for `--max-model-len`-token requests. Ratios are against
stock_full, in the same run. Prints a table, writes JSON and a PNG."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Run from the checkout (`python -m bench.vllm`), whose swaa_ext has no extension built against
# this venv's torch: take the checkout off the path, so `import swaa_ext` (and vLLM's plugin
# loader) find the wheel installed into .venv-vllm.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

CONFIGS = ("plugin_window_only", "plugin_fa_decode", "stock_full", "stock_sliding")
MODEL = _ROOT / ".cache-vllm" / "smollm2-135m-instruct"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--prompt-len", type=int)
    ap.add_argument("--new-tokens", type=int)
    ap.add_argument("--window", type=int)
    ap.add_argument("--sinks", type=int)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--block-size", type=int, default=32, help="the CPU backend's smallest")
    ap.add_argument("--max-num-batched-tokens", type=int, default=512,
                    help="prefill chunk; bounds what a window-only group holds in flight")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)  # child process
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    quick = dict(prompts=4, prompt_len=512, new_tokens=32, window=64, sinks=4)
    full = dict(prompts=8, prompt_len=2000, new_tokens=64, window=256, sinks=16)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = Path("bench/results") / ("vllm_quick" if args.quick else "vllm")
    return args


def engine_kwargs(name: str, args) -> dict:
    import swaa_ext
    layers = 30  # SmolLM2-135M
    if name == "plugin_window_only":
        from swaa_ext.vllm import hf_overrides
        return {"hf_overrides": hf_overrides(swaa_ext.SWAAConfig(args.window, args.sinks, "odd"))}
    if name == "plugin_fa_decode":
        from swaa_ext.vllm import hf_overrides
        return {"hf_overrides": hf_overrides(swaa_ext.SWAAConfig(
            args.window, args.sinks, "every_4th", fa_decode=True))}
    if name == "stock_sliding":
        return {"hf_overrides": {"layer_types": [
            "full_attention" if i % 2 else "sliding_attention" for i in range(layers)],
            "sliding_window": args.window}}
    return {}


def kv_bytes_held(scheduler, request_id: str) -> int:
    kv = scheduler.kv_cache_manager
    total = 0
    for group, manager in zip(kv.kv_cache_config.kv_cache_groups,
                              kv.coordinator.single_type_managers):
        blocks = sum(not b.is_null for b in manager.req_to_blocks.get(request_id, ()))
        total += blocks * group.kv_cache_spec.page_size_bytes * len(group.layer_names)
    return total


def decode_phase(engine, scheduler, prompts, params) -> tuple[int, float, float]:
    """Runs the prompts to completion step by step; returns the tokens generated in the steps
    where no request was still in its prompt (decode-only steps), the time those steps took, and
    the whole run's time. Timing decode on its own steps keeps the prefill (seconds, against a
    decode phase of a few) and its noise out of the generation throughput."""
    for i, prompt in enumerate(prompts):
        engine.add_request(f"gen{i}", prompt, params)
    produced: dict[str, int] = {}
    decode_tokens, decode_s = 0, 0.0
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        prefilling = any(r.num_computed_tokens < r.num_prompt_tokens
                         for r in scheduler.requests.values())
        step_start = time.perf_counter()
        outputs = engine.step()
        step_s = time.perf_counter() - step_start
        new = 0
        for out in outputs:
            count = len(out.outputs[0].token_ids)
            new += count - produced.get(out.request_id, 0)
            produced[out.request_id] = count
        if not prefilling:
            decode_tokens, decode_s = decode_tokens + new, decode_s + step_s
    return decode_tokens, decode_s, time.perf_counter() - start


def run_one(name: str, args) -> dict:
    """One configuration, in this process; returns its row."""
    import torch
    from vllm import LLM, SamplingParams
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.v1.core.kv_cache_utils import get_max_concurrency_for_kv_cache_config

    llm = LLM(model=str(args.model), dtype="float32", max_model_len=args.max_model_len,
              max_num_seqs=args.prompts, enforce_eager=True, enable_prefix_caching=False,
              block_size=args.block_size, enable_chunked_prefill=True,
              max_num_batched_tokens=args.max_num_batched_tokens, seed=0,
              **engine_kwargs(name, args))
    core = llm.llm_engine.engine_core.engine_core
    generator = torch.Generator().manual_seed(0)
    prompts = [{"prompt_token_ids": torch.randint(1000, 40000, (args.prompt_len,),
                                                  generator=generator).tolist()}
               for _ in range(args.prompts)]

    def params(n):
        return SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True)

    llm.generate(prompts[:1], params(2), use_tqdm=False)  # warm-up
    start = time.perf_counter()
    llm.generate(prompts, params(1), use_tqdm=False)
    prefill_s = time.perf_counter() - start
    engine = llm.llm_engine
    decode_tokens, decode_s, total_s = decode_phase(engine, core.scheduler, prompts,
                                                    params(args.new_tokens))

    # KV bytes of one request at its last step, from vLLM's KV-cache manager.
    engine.add_request("kv", prompts[0], params(args.new_tokens))
    held = 0
    while engine.has_unfinished_requests():
        engine.step()
        for request_id in core.scheduler.requests:
            held = kv_bytes_held(core.scheduler, request_id)
    kv_config = core.scheduler.kv_cache_manager.kv_cache_config
    row = {
        "config": name,
        "prompt_tokens_per_s": args.prompts * args.prompt_len / prefill_s,
        "generated_tokens_per_s": decode_tokens / max(decode_s, 1e-9),
        "prefill_s": prefill_s, "total_s": total_s, "decode_s": decode_s,
        "decode_tokens": decode_tokens,
        "kv_bytes_per_request": held,
        "kv_blocks": kv_config.num_blocks,
        "max_concurrency": get_max_concurrency_for_kv_cache_config(core.vllm_config, kv_config),
        "kv_groups": [{"spec": type(g.kv_cache_spec).__name__, "layers": len(g.layer_names),
                       "block_size": g.kv_cache_spec.block_size}
                      for g in kv_config.kv_cache_groups],
        "torch_threads": torch.get_num_threads(),
        "attention_backend": AttentionBackendEnum.CPU_ATTN.get_path(),  # stock: vLLM's own
    }
    core.shutdown()
    return row


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache, the same for all
    if args.one:
        print("BENCH_ROW " + json.dumps(run_one(args.one, args)), flush=True)
        return
    rows = []
    for name in args.configs:
        env = dict(os.environ)
        if name.startswith("stock"):
            env["VLLM_PLUGINS"] = ""  # vLLM loads no general plugin: its own CPU attention
        env["PYTHONPATH"] = str(_ROOT)  # for `-m bench.vllm`; the child drops it again
        child = subprocess.run([sys.executable, "-m", "bench.vllm", *(argv or sys.argv[1:]),
                                "--one", name], env=env, capture_output=True, text=True,
                               cwd="/")
        found = [line for line in child.stdout.splitlines() if line.startswith("BENCH_ROW ")]
        if child.returncode or not found:
            raise RuntimeError(f"{name} failed:\n{child.stderr[-3000:]}")
        rows.append(json.loads(found[-1].removeprefix("BENCH_ROW ")))
        print(f"{name}: done", flush=True)
    from .vllm_report import report
    report(rows, args)


if __name__ == "__main__":
    main()
