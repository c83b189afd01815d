"""The plugin's parts without an engine: version range, settings, the paged-cache gather."""

from __future__ import annotations

import pytest
import torch

from swaa_ext import SWAAConfig
from swaa_ext.vllm import paged, settings, version


@pytest.mark.parametrize("ok", ["0.32.0", "0.32.0+cpu", "0.32.7", "0.32.1.dev3"])
def test_version_supported(ok):
    version.check(ok)


@pytest.mark.parametrize("bad", ["0.31.9", "0.33.0", "1.0.0", "0.33.0rc1"])
def test_version_refused(bad):
    with pytest.raises(RuntimeError, match=r"supports vllm >=0.32.0,<0.33.*" + bad.replace(".", r"\.")):
        version.check(bad)


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


def _cache(num_blocks=12, heads=2, block_size=4, dim=3):
    return torch.zeros(num_blocks, heads, block_size, 2 * dim)


def test_write_then_gather_roundtrip():
    cache = _cache()
    key, value = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    slots = torch.tensor([13, 2, -1, 47, 0])  # -1: a padding token, not written
    paged.write(cache, key, value, slots)
    k, v = paged.gather(cache, 3, torch.tensor([13, 2, 47, 0]))
    real = torch.tensor([0, 1, 3, 4])
    assert torch.equal(k, key[real]) and torch.equal(v, value[real])
    assert int((cache != 0).sum()) == 4 * 2 * 6  # four tokens, two heads, key + value


def test_key_slots_against_a_loop():
    block_size, sinks = 4, 2
    block_table = torch.tensor([[5, 1, 7, 3], [2, 8, 0, 0], [9, 6, 4, 10]])
    ends = torch.tensor([15, 6, 13])
    starts = torch.tensor([9, 0, 3])  # request 2: the tail starts at 3, just after the sinks
    slots, cu = paged.key_slots(block_table, block_size, starts, ends, sinks)
    expected, lengths = [], []
    for r in range(3):
        keep = list(range(ends[r])) if starts[r] <= sinks else (
            list(range(sinks)) + list(range(starts[r], ends[r])))
        expected += [int(block_table[r, p // block_size]) * block_size + p % block_size
                     for p in keep]
        lengths.append(len(keep))
    assert slots.tolist() == expected
    assert cu.tolist() == [0] + torch.tensor(lengths).cumsum(0).tolist()
    assert cu.dtype == torch.int32
