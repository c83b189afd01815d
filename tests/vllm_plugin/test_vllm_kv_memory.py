"""KV memory of window-only layers (no FA decode) under vLLM: they keep only each request's sink
blocks and window blocks, counted from vLLM's own KV-cache manager and block pool; the freed
blocks go to other requests, and the outputs still equal the adapted transformers model's."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vllm")

from conftest import (WINDOW_ONLY, assert_same, continuations, engine, scheduler_of,  # noqa: E402
                      step_through)
from swaa_ext.vllm import hf_overrides  # noqa: E402

BLOCK = 32  # vLLM's CPU backend takes multiples of 32
# Sink blocks + the window of the next query; +2: the window's first block is partial and the
# block of the token being generated.
BOUND = math.ceil((WINDOW_ONLY.sinks + WINDOW_ONLY.window) / BLOCK) + 2


def held(manager, request_id: str) -> int:
    """Blocks the manager holds for the request (freed ones are vLLM's null block)."""
    return sum(not block.is_null for block in manager.req_to_blocks.get(request_id, ()))


def group_of(scheduler, layer: int):
    """vLLM's KV-cache group that holds decoder layer `layer`: (spec, manager)."""
    kv = scheduler.kv_cache_manager
    for group, manager in zip(kv.kv_cache_config.kv_cache_groups,
                              kv.coordinator.single_type_managers):
        if any(f".layers.{layer}." in name for name in group.layer_names):
            return group.kv_cache_spec, manager
    raise AssertionError(f"no KV-cache group holds layer {layer}")


@pytest.fixture(scope="module")
def window_only_engine(model_dir):
    with engine(model_dir, hf_overrides=hf_overrides(WINDOW_ONLY), block_size=BLOCK,
                max_model_len=1024, max_num_seqs=3) as llm:
        yield llm


def test_kv_cache_groups(window_only_engine):
    """Two KV-cache groups (vLLM's hybrid allocator): the window-only (even) layers with the
    sink + window spec, the full (odd) layers with vLLM's full-attention spec."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    from swaa_ext.vllm.kv_spec import SinkWindowSpec

    scheduler = scheduler_of(window_only_engine)
    groups = scheduler.kv_cache_manager.kv_cache_config.kv_cache_groups
    assert len(groups) == 2
    window_spec, _ = group_of(scheduler, 0)
    full_spec, _ = group_of(scheduler, 1)
    assert isinstance(window_spec, SinkWindowSpec)
    assert (window_spec.sliding_window, window_spec.sinks) == (64, 4)
    assert type(full_spec) is FullAttentionSpec
    for spec, parity in ((window_spec, 0), (full_spec, 1)):
        group = next(g for g in groups if g.kv_cache_spec is spec)
        assert sorted(int(n.split(".layers.")[1].split(".")[0]) for n in group.layer_names) == \
            list(range(parity, 30, 2))


def test_window_blocks_are_bounded(window_only_engine):
    """A 900-token prompt (14 windows): once it decodes, the window-only layers' group holds
    about (sinks + window) / block_size blocks, the full layers' group the whole sequence, and
    the block pool's free count agrees. (vLLM frees a step's out-of-window blocks before it
    allocates the next step's, so right after the prefill the group still holds the prompt.)"""
    prompt = [(i * 7919) % 30000 + 1000 for i in range(900)]
    steps = []

    def observe(scheduler):
        pool = scheduler.kv_cache_manager.block_pool
        for request_id, request in scheduler.requests.items():
            _, window_manager = group_of(scheduler, 0)
            _, full_manager = group_of(scheduler, 1)
            steps.append((request.num_computed_tokens, held(window_manager, request_id),
                          held(full_manager, request_id),
                          pool.num_gpu_blocks - 1 - pool.get_num_free_blocks()))

    step_through(window_only_engine, [prompt], observe, max_tokens=8)
    decoding = [s for s in steps if s[0] > len(prompt)]
    assert len(decoding) >= 6
    assert max(s[1] for s in steps) > 3 * BOUND  # the prefill step held the prompt
    for computed, window_blocks, full_blocks, used in decoding:
        assert window_blocks <= BOUND, (
            f"the window-only layers hold {window_blocks} KV blocks at {computed} tokens; "
            f"sinks + window need at most {BOUND}")
        assert full_blocks >= computed // BLOCK  # the full layers keep everything
        assert used == window_blocks + full_blocks  # freed blocks went back to the pool


def test_concurrent_requests_reuse_freed_blocks(model_dir, prompts, reference):
    """Three requests in 32-token chunks with a block pool too small for their block tables
    together (56 blocks of 32; two groups of about 33 blocks each once generated): all three run at once,
    with no preemption, because the window-only layers' blocks are freed and written by the
    other requests while their first owner still runs. Every output equals the transformers
    model's, so the attention read only blocks its request still held."""
    pool_blocks = 56
    running, preemptions, table_lengths = [], [], []
    last_owner: dict[int, str] = {}
    reused = set()  # blocks written by one request while the one that freed them still runs

    def observe(scheduler):
        alive = set(scheduler.requests)
        running.append(len(scheduler.running))
        preemptions.append(sum(r.num_preemptions for r in scheduler.requests.values()))
        managers = scheduler.kv_cache_manager.coordinator.single_type_managers
        table_lengths.append(sum(len(blocks) for m in managers
                                 for blocks in m.req_to_blocks.values()))
        for manager in managers:
            for request_id, blocks in manager.req_to_blocks.items():
                for block in blocks:
                    if block.is_null:
                        continue
                    previous = last_owner.get(block.block_id, request_id)
                    if previous != request_id and previous in alive:
                        reused.add(block.block_id)
                    last_owner[block.block_id] = request_id

    with engine(model_dir, hf_overrides=hf_overrides(WINDOW_ONLY), block_size=BLOCK,
                num_gpu_blocks_override=pool_blocks, max_model_len=512, max_num_seqs=3,
                enable_chunked_prefill=True, max_num_batched_tokens=32) as llm:
        outputs = step_through(llm, prompts, observe)
    assert max(table_lengths) > pool_blocks - 1, "the requests never needed the freed blocks"
    assert max(running) == 3
    assert max(preemptions) == 0
    assert reused, "no block freed by a running request was given to another one"
    assert_same(continuations(outputs), reference(WINDOW_ONLY, prompts))
