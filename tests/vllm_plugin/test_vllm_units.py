"""The plugin's parts without an engine: version range (outside it the plugin registers nothing),
settings, the KV-cache specs of SWAA layers, vLLM's CPU cache layout and the cache writes."""

from __future__ import annotations

import pytest
import torch

import swaa_ext
from swaa_ext import SWAAConfig
from swaa_ext.vllm import paged, settings, version


@pytest.mark.parametrize("ok", ["0.32.0", "0.32.0+cpu", "0.32.7", "0.32.1.dev3"])
def test_version_supported(ok):
    assert version.supported(ok)


@pytest.mark.parametrize("bad", ["0.31.9", "0.33.0", "1.0.0", "0.33.0rc1"])
def test_version_refused(bad):
    assert not version.supported(bad)


def test_unsupported_vllm_registers_nothing(monkeypatch, caplog):
    """Outside the supported range the plugin warns once and leaves vLLM's registries alone,
    so vLLM keeps working with its own attention."""
    import logging

    import vllm
    from vllm.v1.attention.backends import registry

    import swaa_ext.vllm

    calls = []
    monkeypatch.setattr(vllm, "__version__", "0.99.0")
    monkeypatch.setattr(registry, "register_backend", lambda *a: calls.append(a))
    logger = logging.getLogger("swaa_ext.vllm")
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.WARNING, logger="swaa_ext.vllm"):
        swaa_ext.vllm.register()
    assert calls == []
    assert "supports vllm >=0.32.0,<0.33, but vllm 0.99.0 is installed" in caplog.text


class _Config:
    def __init__(self, swaa):
        self.swaa = swaa


def test_layer_rules():
    config = settings.swaa_config(_Config({"window": 64, "sinks": 4, "full_attention_layers":
                                           [1, 3], "fa_decode": True,
                                           "original_attn_implementation": "sdpa"}))
    assert config == SWAAConfig(64, 4, [1, 3], True)
    assert settings.layer_rule(config, 1, 4) == settings.FULL
    assert settings.layer_rule(config, 2, 4) == settings.LayerRule(64, 4, True)
    assert settings.layer_rule(None, 2, 4) == settings.FULL
    assert settings.layer_rule(None, 2, 4, native_window=32) == settings.LayerRule(32)
    assert settings.swaa_config(_Config(None)) is None
    assert settings.layer_index("model.layers.17.self_attn.attn") == 17


def test_bad_settings():
    with pytest.raises(ValueError, match="unknown settings.*'windows'"):
        settings.swaa_config(_Config({"windows": 64}))
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        settings.swaa_config(_Config({"window": 0}))
    with pytest.raises(TypeError, match="must be a dict"):
        settings.swaa_config(_Config([64]))
    with pytest.raises(ValueError, match="own sliding window"):
        settings.layer_rule(SWAAConfig(64), 0, 2, native_window=32)
    with pytest.raises(ValueError, match="beyond the model's 4 layers"):
        SWAAConfig(64, full_attention_layers=[5]).full_layers(4)
    with pytest.raises(ValueError, match="layer index"):
        settings.layer_index("lm_head")


def test_cache_layout_is_vllms_cpu_layout():
    """paged.split_cache gives the key and value views vLLM's own CPU backend takes of one
    layer's cache (cpu_attn.py: key rows of a block, then its value rows)."""
    cache = torch.randn(5, 2, 4, 2 * 3)
    keys, values = paged.split_cache(cache, 3)
    vllm_keys, vllm_values = cache.view(5, 2, 8, 3).chunk(2, dim=2)
    assert torch.equal(keys, vllm_keys) and torch.equal(values, vllm_values)
    assert keys.data_ptr() == vllm_keys.data_ptr() and values.data_ptr() == vllm_values.data_ptr()


@pytest.mark.parametrize("slots", [[13, 2, -1, 47, 0, 5], [-1, -1, 7, 3, -1, 9],
                                   [-1, -1, -1, -1, -1, 9], [4, 8, 15, 16, 23]],
                         ids=["padding_inside", "padding_first", "all_padding", "no_padding"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cpu_cache_write_equals_the_indexing_write(dtype, slots):
    """The C++ write (CPU, do_kv_cache_update) and the torch-indexing write (other devices,
    without a host sync) store the same bytes, padding tokens (slot < 0, also the first ones,
    or all of them: slot_mapping may be longer than the tokens) writing nothing."""
    from swaa_ext import write_paged_cache

    key, value = torch.randn(5, 2, 3).to(dtype), torch.randn(5, 2, 3).to(dtype)
    slots = torch.tensor(slots)
    a = torch.randn(12, 2, 4, 6).to(dtype)
    b, before = a.clone(), a.clone()
    paged.write(*paged.split_cache(a, 3), key, value, slots)
    write_paged_cache(key, value, *paged.split_cache(b, 3), slots)
    assert torch.equal(a, b)
    written = int((slots[:5] >= 0).sum())
    for now, was in zip(paged.split_cache(a, 3), paged.split_cache(before, 3)):
        assert int((now != was).any(-1).sum()) == written * 2  # one row per token and KV head


def test_kv_specs_of_swaa_layers():
    """customize_spec: window-only layers carry their sinks, FA-decode layers cache only prompt
    blocks, models without settings keep vLLM's specs; the builder's check refuses a spec that
    does not carry its model's settings."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec

    from swaa_ext.vllm import kv_spec

    common = dict(block_size=16, num_kv_heads=3, head_size=64, dtype=torch.float32)
    sliding, full = SlidingWindowSpec(**common, sliding_window=64), FullAttentionSpec(**common)
    window_only, fa_decode = SWAAConfig(64, 4, "odd"), SWAAConfig(64, 4, fa_decode=True)
    try:
        kv_spec.record_model(window_only)
        spec = kv_spec.for_swaa(sliding)
        assert type(spec) is kv_spec.SinkWindowSpec and spec.sinks == 4 and spec.block_size == 16
        assert kv_spec.for_swaa(full) is full
        kv_spec.check_spec(spec, window_only)
        with pytest.raises(RuntimeError, match="sinks=40"):
            kv_spec.check_spec(spec, SWAAConfig(64, 40, "odd"))
        with pytest.raises(RuntimeError, match="SinkWindowSpec"):
            kv_spec.check_spec(sliding, window_only)
        kv_spec.record_model(fa_decode)
        assert type(kv_spec.for_swaa(full)) is kv_spec.PromptPrefixSpec
        with pytest.raises(RuntimeError, match="PromptPrefixSpec"):
            kv_spec.check_spec(full, fa_decode)
        kv_spec.record_model(None)
        assert kv_spec.for_swaa(sliding) is sliding and kv_spec.for_swaa(full) is full
        kv_spec.check_spec(sliding, None)
    finally:
        kv_spec.record_model(None)


def _llama_config(**extra):
    from transformers import LlamaConfig

    return LlamaConfig(num_hidden_layers=6, hidden_size=64, intermediate_size=128,
                       num_attention_heads=4, num_key_value_heads=2, **extra)


def test_marking_window_only_layers():
    """Window-only layers become vLLM sliding layers with the SWAA window; full layers and
    every layer of an FA decode model stay full attention."""
    from swaa_ext.vllm.overrides import mark_window_only_layers

    config = _llama_config(swaa={"window": 64, "sinks": 4, "full_attention_layers": [1, 4]})
    assert mark_window_only_layers(config)
    assert config.layer_types == ["sliding_attention", "full_attention", "sliding_attention",
                                  "sliding_attention", "full_attention", "sliding_attention"]
    assert config.sliding_window == 64

    fa_decode = _llama_config()
    assert mark_window_only_layers(fa_decode, SWAAConfig(64, 4, fa_decode=True).to_dict())
    assert getattr(fa_decode, "layer_types", None) is None
    assert getattr(fa_decode, "sliding_window", None) is None and fa_decode.swaa["fa_decode"]

    plain = _llama_config()
    assert not mark_window_only_layers(plain)  # no SWAA settings: untouched
    assert getattr(plain, "layer_types", None) is None and not hasattr(plain, "swaa")


def test_marking_refuses_a_models_own_sliding_layers():
    """...unless they are exactly SWAA's window-only layers with the SWAA window
    (SWAAConfig.native), which the marking then leaves as they are."""
    from swaa_ext.vllm.overrides import mark_window_only_layers

    config = _llama_config(swaa={"window": 64}, sliding_window=4096)
    with pytest.raises(ValueError, match="own sliding-window layers"):
        mark_window_only_layers(config)
    own = ["sliding_attention", "full_attention"] * 3
    native = SWAAConfig(64, 4, full_attention_layers="odd").to_dict()
    config = _llama_config(swaa=native, sliding_window=64, layer_types=list(own))
    assert mark_window_only_layers(config)
    assert config.layer_types == own and config.sliding_window == 64
    for other in ({"sliding_window": 128, "layer_types": list(own)},  # another window
                  {"sliding_window": 64, "layer_types": own[::-1]}):  # other layers
        with pytest.raises(ValueError, match="own sliding-window layers"):
            mark_window_only_layers(_llama_config(swaa=native, **other))


def test_hf_overrides_callable():
    from transformers import PretrainedConfig

    from swaa_ext.vllm import hf_overrides

    with pytest.raises(TypeError, match="swaa_ext.SWAAConfig"):
        hf_overrides({"window": 64})
    overrides = hf_overrides(SWAAConfig(32, 2, "odd"))
    placeholder = PretrainedConfig(architectures=[""], model_type="dummy_llama")
    assert overrides(placeholder) is placeholder  # vLLM's model_type probe passes through
    config = overrides(_llama_config())
    assert config.swaa == SWAAConfig(32, 2, "odd").to_dict()
    assert config.layer_types[:2] == ["sliding_attention", "full_attention"]
    with pytest.raises(ValueError, match="saved after swaa_ext.adapt"):
        hf_overrides()(_llama_config())  # no settings given, none saved


@pytest.fixture
def saved_config(tmp_path):
    """A config.json as swaa_ext.adapt + save_pretrained write it (settings in `swaa`)."""
    def save(**extra):
        folder = tmp_path / f"model{len(list(tmp_path.iterdir()))}"
        _llama_config(**extra).save_pretrained(folder)
        return folder
    return save


def test_config_parser_marks_an_adapted_checkpoint(saved_config):
    """vLLM's "hf" parser, as the plugin registers it: an adapted checkpoint comes out with its
    window-only layers marked; any other config exactly as vLLM's own parser reads it."""
    from vllm.transformers_utils.config import HFConfigParser

    from swaa_ext.vllm import hf_overrides
    from swaa_ext.vllm.config_parser import SWAAConfigParser

    adapted = saved_config(swaa={"window": 64, "sinks": 4, "full_attention_layers": "odd"})
    _, config = SWAAConfigParser().parse(adapted, trust_remote_code=False)
    assert config.layer_types == ["sliding_attention", "full_attention"] * 3
    assert config.sliding_window == 64

    # A dict override's settings are the ones vLLM will serve: marked for them.
    _, config = SWAAConfigParser().parse(adapted, False, hf_overrides={
        "swaa": {"window": 32, "full_attention_layers": [0]}})
    assert config.layer_types == ["full_attention"] + ["sliding_attention"] * 5
    assert config.sliding_window == 32
    # hf_overrides(...) marks by itself, after the parser: the parser leaves the config alone.
    _, config = SWAAConfigParser().parse(adapted, False, hf_overrides=hf_overrides())
    assert getattr(config, "layer_types", None) is None

    plain = saved_config()
    assert SWAAConfigParser().parse(plain, False)[1].to_dict() == \
        HFConfigParser().parse(plain, False)[1].to_dict()


def test_plugin_registers_the_config_parser():
    from vllm.transformers_utils.config import get_config_parser

    from swaa_ext.vllm import register
    from swaa_ext.vllm.config_parser import SWAAConfigParser

    register()
    register()  # vLLM may load plugins more than once per process
    assert isinstance(get_config_parser("hf"), SWAAConfigParser)


def _manager(sinks: int, window: int = 64, block_size: int = 16, num_blocks: int = 128):
    from vllm.v1.core.block_pool import BlockPool

    from swaa_ext.vllm.kv_spec import SinkWindowManager, SinkWindowSpec

    spec = SinkWindowSpec(block_size=block_size, num_kv_heads=2, head_size=8,
                          dtype=torch.float32, sliding_window=window, sinks=sinks)
    pool = BlockPool(num_gpu_blocks=num_blocks, enable_caching=False, hash_block_size=block_size)
    manager = SinkWindowManager(spec, block_pool=pool, enable_caching=False,
                                kv_cache_group_id=0, scheduler_block_size=block_size)
    return manager, pool


@pytest.mark.parametrize("sinks, sink_blocks", [(4, 1), (16, 1), (17, 2), (40, 3)])
def test_manager_keeps_sink_blocks_and_window(sinks, sink_blocks):
    """After 900 tokens, the next query (position 900) sees keys 837..900 and the sinks: the
    manager holds the sink blocks and blocks 52..56 and gives every block between to the pool."""
    manager, pool = _manager(sinks)
    free_before = pool.get_num_free_blocks()
    blocks = manager.allocate_new_blocks("r", 900, 900)
    assert len(blocks) == 57
    manager.remove_skipped_blocks("r", 900)
    table = manager.req_to_blocks["r"]
    held = [i for i, block in enumerate(table) if not block.is_null]
    assert held == list(range(sink_blocks)) + list(range(837 // 16, 57))
    assert [b.block_id for b in table[:sink_blocks]] == [b.block_id for b in blocks[:sink_blocks]]
    assert pool.get_num_free_blocks() == free_before - len(held)
    assert manager.get_num_skipped_tokens(900) == 0  # leading tokens are sinks: never skipped


def test_manager_without_sinks_is_vllms_sliding_window():
    from vllm.v1.core.single_type_kv_cache_manager import SlidingWindowManager

    ours, _ = _manager(sinks=0)
    ours.allocate_new_blocks("r", 900, 900)
    ours.remove_skipped_blocks("r", 900)
    theirs, _ = _manager(sinks=0)
    theirs.__class__ = SlidingWindowManager  # the same state, vLLM's own rule
    theirs.allocate_new_blocks("r", 900, 900)
    theirs.remove_skipped_blocks("r", 900)
    assert [b.is_null for b in ours.req_to_blocks["r"]] == \
        [b.is_null for b in theirs.req_to_blocks["r"]]
    assert ours.get_num_skipped_tokens(900) == theirs.get_num_skipped_tokens(900) > 0


@pytest.mark.skipif(not swaa_ext.cpu_has_amx(), reason="needs a CPU with AMX-BF16")
def test_amx_cache_write_equals_vllms_amx_write():
    """On a CPU with AMX, a bfloat16 cache of 32-token blocks takes the AMX layout, and the
    plugin's write stores exactly the bytes vLLM's own AMX cache write does (so what vLLM's
    AMX kernel, a KV connector or offloading would read is what we read)."""
    from vllm import _custom_ops as ops

    heads, dim, block_size = 2, 64, 32
    key = torch.randn(40, heads, dim).bfloat16()
    value = torch.randn(40, heads, dim).bfloat16()
    slots = torch.randperm(4 * block_size)[:40]
    slots[3] = -1  # padding
    ours, theirs = (torch.zeros(4, heads, block_size, 2 * dim, dtype=torch.bfloat16)
                    for _ in range(2))
    views = paged.cache_views(ours, dim)
    assert views.layout == "amx"
    swaa_ext.write_paged_cache(key, value, views.keys, views.values, slots, views.layout)
    k_half, v_half = theirs.view(4, heads, 2 * block_size, dim).chunk(2, dim=2)
    torch._C._cpu._init_amx()
    ops.cpu_attn_reshape_and_cache(key, value, k_half, v_half, slots, "amx")
    assert torch.equal(ours, theirs) and int((ours != 0).sum()) > 0
    assert paged.cache_views(ours.float(), dim).layout == "rows"
    assert paged.cache_views(torch.zeros(4, heads, 16, 2 * dim).bfloat16(), dim).layout == "rows"
