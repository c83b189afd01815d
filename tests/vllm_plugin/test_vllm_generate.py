"""Greedy outputs of vLLM with the swaa_ext plugin equal those of the adapted transformers model
(SmolLM2-135M, ~300-token prompts, window 64, 4 sinks): FA decode on and off, interleaved full
layers, settings from hf_overrides or from a checkpoint saved after swaa_ext.adapt (the
fine-tuning recipe's merged model included), chunked
prefill forced small, prefix caching (and outputs that do not depend on it), preemption, two
models in one process; a model without settings is served by vLLM's own CPU attention. One
engine per configuration."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from conftest import (FA_DECODE, WINDOW_ONLY, Reference, assert_same,  # noqa: E402
                      continuations, engine, generate, scheduler_of)
from swaa_ext.vllm import hf_overrides  # noqa: E402



def test_the_window_slides(prompts, reference):
    """The settings change what the model generates (else equality below proves nothing)."""
    full = [c.tokens for c in reference(None, prompts)]
    for config in (FA_DECODE, WINDOW_ONLY):
        assert [c.tokens for c in reference(config, prompts)] != full
    assert min(map(len, prompts)) > 3 * FA_DECODE.window


def test_plugin_is_registered():
    """vLLM finds the entry point of the installed swaa_ext and the plugin takes CPU_ATTN."""
    from vllm.plugins import load_general_plugins
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    load_general_plugins()

    assert AttentionBackendEnum.CPU_ATTN.get_path() == "swaa_ext.vllm.backend.SWAACPUBackend"


def attention_impls(llm) -> set[type]:
    """The impl classes of the engine's attention layers (in-process engine)."""
    context = llm.llm_engine.vllm_config.compilation_config.static_forward_context
    return {type(layer.impl) for layer in context.values() if hasattr(layer, "impl")}


@pytest.fixture(scope="module")
def fa_decode_engine(model_dir):
    with engine(model_dir, hf_overrides=hf_overrides(FA_DECODE)) as llm:
        yield llm


def test_fa_decode_hf_overrides(fa_decode_engine, prompts, reference):
    assert_same(continuations(generate(fa_decode_engine, prompts)), reference(FA_DECODE, prompts))


def test_fa_decode_keeps_the_full_cache(fa_decode_engine):
    """FA decode reads every key: one KV-cache group, a full-attention spec (whose blocks are
    prefix-cached up to the prompt only), served by swaa_ext's impl."""
    from swaa_ext.vllm.backend import SWAAImpl
    from swaa_ext.vllm.kv_spec import PromptPrefixSpec

    scheduler = fa_decode_engine.llm_engine.engine_core.engine_core.scheduler
    groups = scheduler.kv_cache_manager.kv_cache_config.kv_cache_groups
    assert [type(g.kv_cache_spec) for g in groups] == [PromptPrefixSpec]
    assert attention_impls(fa_decode_engine) == {SWAAImpl}


def test_window_only_saved_checkpoint(saved_window_only, prompts, reference):
    """Served with no argument: the settings come from config.swaa, and the window-only (even)
    layers get the sink + window KV cache (the plugin's config parser marks them)."""
    from swaa_ext.vllm.kv_spec import SinkWindowSpec

    with engine(saved_window_only) as llm:
        assert_same(continuations(generate(llm, prompts)), reference(WINDOW_ONLY, prompts))
        groups = scheduler_of(llm).kv_cache_manager.kv_cache_config.kv_cache_groups
    sliding = [g for g in groups if isinstance(g.kv_cache_spec, SinkWindowSpec)]
    assert len(groups) == 2 and len(sliding) == 1
    assert (sliding[0].kv_cache_spec.sliding_window, sliding[0].kv_cache_spec.sinks) == (64, 4)
    assert all(int(name.split(".layers.")[1].split(".")[0]) % 2 == 0
               for name in sliding[0].layer_names)


def test_fine_tuned_merged_checkpoint(saved_merged, prompts, reference):
    """The fine-tuning recipe's merged/ (a LoRA merged in, save_merged's portable config.json:
    the base attention, the settings in `swaa`), served with no argument: greedy tokens and
    log-probabilities equal transformers' on the same checkpoint adapted with its saved
    settings, and differ from the base model's (the merged weights are what is served)."""
    import json

    saved = json.loads((saved_merged / "config.json").read_text())
    assert "attn_implementation" not in saved and saved["swaa"]["fa_decode"]
    expected = Reference(saved_merged)(FA_DECODE, prompts)
    assert [c.tokens for c in expected] != [c.tokens for c in reference(FA_DECODE, prompts)]
    with engine(saved_merged) as llm:
        assert_same(continuations(generate(llm, prompts)), expected)


def test_no_settings_is_vllms_own_attention(model_dir, prompts, reference):
    """Installed but serving a model without `swaa`: vLLM's own CPU attention impl and metadata
    builder serve it (as without the plugin), with vLLM's KV specs; the output is the model's."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    with engine(model_dir) as llm:
        assert_same(continuations(generate(llm, prompts)), reference(None, prompts))
        assert attention_impls(llm) == {CPUAttentionBackendImpl}
        groups = scheduler_of(llm).kv_cache_manager.kv_cache_config.kv_cache_groups
        assert [type(g.kv_cache_spec) for g in groups] == [FullAttentionSpec]


def test_two_models_in_one_process(model_dir, prompts, reference):
    """Engines built one after another in one process each serve their own settings: the sink
    count of the second reaches its KV spec, and its output is its own."""
    from swaa_ext import SWAAConfig
    from swaa_ext.vllm.kv_spec import SinkWindowSpec

    more_sinks = SWAAConfig(window=64, sinks=40, full_attention_layers="odd")
    for config in (WINDOW_ONLY, more_sinks):
        with engine(model_dir, hf_overrides=hf_overrides(config)) as llm:
            got = continuations(generate(llm, prompts[:1]))
            groups = scheduler_of(llm).kv_cache_manager.kv_cache_config.kv_cache_groups
        specs = [g.kv_cache_spec for g in groups if isinstance(g.kv_cache_spec, SinkWindowSpec)]
        assert [s.sinks for s in specs] == [config.sinks]
        assert_same(got, reference(config, prompts[:1]))


def test_speculative_decoding_is_refused(model_dir):
    """A draft would share the target's SWAA KV settings: refused with a clear error. In a child
    process: an engine that fails while vLLM sets up speculative decoding on the CPU leaves
    vLLM's kernel dispatcher broken for later engines of its process."""
    import subprocess
    import sys

    script = (
        "import swaa_ext\n"
        "from vllm import LLM\n"
        "from swaa_ext.vllm import hf_overrides\n"
        f"LLM(model={str(model_dir)!r}, dtype='float32', max_model_len=512, enforce_eager=True,\n"
        "    hf_overrides=hf_overrides(swaa_ext.SWAAConfig(64, 4, fa_decode=True)),\n"
        "    speculative_config={'method': 'ngram', 'num_speculative_tokens': 2,\n"
        "                        'prompt_lookup_max': 3})\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=300, cwd="/")
    assert child.returncode != 0
    assert "does not support speculative decoding" in child.stderr


@pytest.mark.parametrize("config", [FA_DECODE, WINDOW_ONLY], ids=["fa_decode", "window_only"])
def test_chunked_prefill(model_dir, prompts, reference, config):
    """Prompts in 32-token chunks (less than the window): every chunk is still prompt."""
    with engine(model_dir, hf_overrides=hf_overrides(config), enable_chunked_prefill=True,
                max_num_batched_tokens=32, max_num_seqs=2) as llm:
        assert_same(continuations(generate(llm, prompts)), reference(config, prompts))


@pytest.mark.parametrize("config", [FA_DECODE, WINDOW_ONLY], ids=["fa_decode", "window_only"])
def test_prefix_caching(model_dir, prompts, reference, config):
    """The same prompt twice: the second run reads the first one's cached blocks (window only:
    the sink blocks and the window's, found by the sink + window KV manager)."""
    expected = reference(config, prompts[:1])
    with engine(model_dir, hf_overrides=hf_overrides(config), enable_prefix_caching=True,
                block_size=32) as llm:
        first = generate(llm, prompts[:1])
        second = generate(llm, prompts[:1])
    assert not first[0].num_cached_tokens
    assert second[0].num_cached_tokens >= 32 * (len(prompts[0]) // 32) - 32
    assert_same(continuations(first), expected)
    assert_same(continuations(second), expected)


def test_fa_decode_output_does_not_depend_on_the_prefix_cache(model_dir, prompts, tokenizer):
    """A follow-up request whose prompt holds an earlier request's prompt and answer: the
    answer's tokens were computed under full attention (FA decode) but are prompt now, so their
    cached blocks must not be reused. The follow-up gives the same tokens and log-probabilities
    with the earlier request's blocks in the cache and in an engine that never saw it; only the
    earlier prompt's blocks are reused."""
    from vllm import SamplingParams

    first_prompt = prompts[0]
    turn = tokenizer(" And on day 4?", add_special_tokens=False)["input_ids"]
    settings = dict(hf_overrides=hf_overrides(FA_DECODE), enable_prefix_caching=True,
                    block_size=32)
    # 64 answer tokens: whole 32-token blocks past the prompt, which vLLM would cache and offer
    # to the follow-up without the prompt-only rule (then num_cached_tokens > the prompt).
    answer = SamplingParams(temperature=0.0, max_tokens=64, min_tokens=64)
    assert (len(first_prompt) + 64) // 32 > -(-len(first_prompt) // 32)
    with engine(model_dir, **settings) as llm:
        first = llm.generate([{"prompt_token_ids": first_prompt}], answer, use_tqdm=False)[0]
        follow_up = first_prompt + list(first.outputs[0].token_ids) + turn
        warm = generate(llm, [follow_up])
    with engine(model_dir, **settings) as llm:
        cold = generate(llm, [follow_up])
    assert not cold[0].num_cached_tokens
    assert 0 < warm[0].num_cached_tokens <= len(first_prompt)
    assert_same(continuations(warm), continuations(cold))


def test_preemption(model_dir, prompts, reference):
    """A KV cache too small for all requests at once: vLLM preempts some and re-runs their
    prompt and generated tokens as one prefill; the prompt boundary must stay where it was."""
    with engine(model_dir, hf_overrides=hf_overrides(FA_DECODE), block_size=32,
                num_gpu_blocks_override=20, max_model_len=512, max_num_seqs=3,
                disable_log_stats=False) as llm:
        outputs = continuations(generate(llm, prompts))
        preempted = sum(m.value for m in llm.get_metrics() if m.name == "vllm:num_preemptions")
    assert preempted > 0
    assert_same(outputs, reference(FA_DECODE, prompts))


@pytest.mark.parametrize("config", [FA_DECODE, WINDOW_ONLY], ids=["fa_decode", "window_only"])
def test_non_cpu_path(model_dir, prompts, reference, config, monkeypatch):
    """What a CUDA cache takes, forced here on the CPU cache: the "rows" page layout whatever the
    CPU, and the tensor-indexing cache write (paged.write, no host sync) instead of the C++ one;
    the paged op reads the pages in place either way. Chunked prefill, so that chunks read the
    sinks and a window of earlier keys."""
    from swaa_ext.vllm import paged

    writes = []
    write = paged.write
    monkeypatch.setattr(paged, "uses_cpu_ops", lambda kv_cache: False)
    monkeypatch.setattr(paged, "write", lambda *a: writes.append(1) or write(*a))
    with engine(model_dir, hf_overrides=hf_overrides(config), enable_chunked_prefill=True,
                max_num_batched_tokens=32, max_num_seqs=2) as llm:
        assert_same(continuations(generate(llm, prompts)), reference(config, prompts))
    assert writes, "the forced indexing write was never taken"


_BF16_CHILD = """
import json, sys
import swaa_ext
from vllm import LLM, SamplingParams
from swaa_ext.vllm import hf_overrides
from swaa_ext.vllm.backend import SWAAImpl
llm = LLM(model=sys.argv[1], dtype="bfloat16", max_model_len=1024, max_num_seqs=4,
          enforce_eager=True, enable_prefix_caching=False, seed=0, block_size=32,
          hf_overrides=hf_overrides(swaa_ext.SWAAConfig(64, 4, fa_decode=True)))
prompts = json.loads(sys.argv[2])
params = SamplingParams(temperature=0.0, max_tokens=24, min_tokens=24, logprobs=0)
outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
context = llm.llm_engine.vllm_config.compilation_config.static_forward_context
layouts = sorted({layer.impl._cache_views[1].layout for layer in context.values()
                  if isinstance(getattr(layer, "impl", None), SWAAImpl)})
result = [[list(o.outputs[0].token_ids),
           [s[t].logprob for s, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)]]
          for o in outs]
print("RESULT" + json.dumps({"layouts": layouts, "outputs": result}))
"""


def test_bf16_serving_uses_the_amx_layout(model_dir, prompts):
    """bfloat16, vLLM's CPU default: on a CPU with AMX every SWAA layer's cache takes vLLM's AMX
    layout and every attention call runs on AMX tiles (probabilities rounded to bf16). The greedy
    tokens equal those of the same engine with swaa_ext's kernels capped at AVX-512 (row layout,
    attention in float32), and the log-probabilities agree to bf16 noise (the logits are bf16:
    steps of 0.0625-0.125 at their size here; measured differences up to 0.105). Child
    processes: the cap is read once per process."""
    import json
    import os
    import subprocess
    import sys

    import swaa_ext

    if not swaa_ext.cpu_has_amx():
        pytest.skip("needs a CPU with AMX-BF16")

    def serve(isa: str) -> dict:
        env = dict(os.environ, SWAA_CPU_ISA=isa)
        child = subprocess.run([sys.executable, "-c", _BF16_CHILD, str(model_dir),
                                json.dumps(prompts[:2])], capture_output=True, text=True,
                               timeout=600, cwd="/", env=env)
        assert child.returncode == 0, child.stderr[-3000:]
        line = [x for x in child.stdout.splitlines() if x.startswith("RESULT")][-1]
        return json.loads(line[len("RESULT"):])

    amx, rows = serve("amx"), serve("avx512")
    assert amx["layouts"] == ["amx"] and rows["layouts"] == ["rows"]
    for (tokens, logprobs), (row_tokens, row_logprobs) in zip(amx["outputs"], rows["outputs"]):
        assert tokens == row_tokens
        assert logprobs == pytest.approx(row_logprobs, abs=0.25)
