"""SWAAConfig: validation, layer patterns, presets."""

import pytest
import torch

import swaa_ext
from swaa_ext import PRESETS, SWAAConfig, preset


def test_defaults_and_dict_round_trip():
    config = SWAAConfig(window=128, sinks=4, full_attention_layers=[3, 1], fa_decode=True)
    assert config.full_attention_layers == (1, 3)
    assert SWAAConfig.from_dict(config.to_dict()) == config
    assert SWAAConfig(window=8).to_dict() == {"window": 8, "sinks": 0,
                                               "full_attention_layers": [], "fa_decode": False}


@pytest.mark.parametrize("pattern, layers", [
    ("odd", (1, 3, 5, 7, 9)), ("even", (0, 2, 4, 6, 8)), ("every_4th", (3, 7)),
    ("every_8th", (7,)),
])
def test_patterns(pattern, layers):
    assert SWAAConfig(window=4, full_attention_layers=pattern).full_layers(10) == layers


def test_indices_beyond_depth_are_an_error():
    config = SWAAConfig(window=4, full_attention_layers=[1, 4, 7])
    assert config.full_layers(8) == (1, 4, 7)
    with pytest.raises(ValueError, match=r"\[4, 7\] are beyond the model's 4 layers"):
        config.full_layers(4)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(window=0), ValueError, "window must be an int >= 1"),
    (dict(window=2.5), ValueError, "window must be an int >= 1"),
    (dict(window=True), ValueError, "window must be an int >= 1"),
    (dict(window=4, sinks=-1), ValueError, "sinks must be an int >= 0"),
    (dict(window=4, fa_decode=1), TypeError, "fa_decode must be a bool"),
    (dict(window=4, full_attention_layers="third"), ValueError, "pattern must be one of"),
    (dict(window=4, full_attention_layers=[1, "2"]), TypeError, "list of int layer indices"),
    (dict(window=4, full_attention_layers=[-1]), ValueError, "must be >= 0"),
    (dict(window=4, full_attention_layers=[1, 1]), ValueError, "duplicates"),
])
def test_bad_config_is_a_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        SWAAConfig(**kwargs)


def test_presets_have_descriptions_and_are_fresh_copies():
    assert set(PRESETS) >= {"swa", "swa_sinks_fa_decode_half", "fa_decode_half", "half_full"}
    for name, (description, config) in PRESETS.items():
        assert isinstance(description, str) and "\n" not in description and description
        assert preset(name) == config and preset(name) is not config
    best = preset("swa_sinks_fa_decode_half")
    assert (best.window, best.sinks, best.full_attention_layers, best.fa_decode) == (
        2048, 10, "odd", True)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")


def test_top_level_exports():
    assert swaa_ext.SWAAConfig is SWAAConfig
    assert callable(swaa_ext.adapt) and callable(swaa_ext.restore)


def test_saved_settings_round_trip_and_refuse_strangers():
    """resolved() is what a model's config keeps (explicit layers); from_saved reads it back,
    with adapt's own extra key, and names any other key."""
    config = SWAAConfig(window=8, sinks=2, full_attention_layers="odd", fa_decode=True)
    saved = config.resolved(4)
    assert saved["full_attention_layers"] == [1, 3]
    saved["original_attn_implementation"] = "sdpa"
    back = SWAAConfig.from_saved(saved)
    assert back.full_layers(4) == config.full_layers(4) and back.window == 8
    with pytest.raises(ValueError, match=r"config.swaa has unknown settings \['windows'\]"):
        SWAAConfig.from_saved({"windows": 8})
    with pytest.raises(TypeError, match="config.swaa must be a dict"):
        SWAAConfig.from_saved([8])


@pytest.mark.parametrize("fa_decode", [False, True])
def test_layer_rules_and_window_only_layers(fa_decode):
    config = SWAAConfig(window=8, sinks=2, full_attention_layers=[0, 3], fa_decode=fa_decode)
    rules = [config.layer_rule(i, 4) for i in range(4)]
    assert rules[0] == rules[3] == swaa_ext.config.FULL
    assert rules[1] == swaa_ext.config.LayerRule(8, 2, fa_decode)
    # Settings as a config keeps them (an explicit list) need no layer count.
    assert [config.layer_rule(i) for i in range(4)] == rules
    assert config.window_only_layers(4) == ([] if fa_decode else [1, 2])
    with pytest.raises(ValueError, match="beyond the model's 3 layers"):
        config.layer_rule(0, 3)


def test_window_start_is_the_rule_s_key_range():
    """A window-only layer's queries [end - queries, end) read exactly the keys below `sinks`
    and those from window_start(end, queries) on: the union of what the reference rule lets
    them see, for every small shape (the range the caches keep: hf/cache.py, vllm/)."""
    for window in (1, 2, 3, 7):
        for sinks in (0, 1, 4):
            rule = swaa_ext.config.LayerRule(window, sinks)
            for end in range(1, 14):
                for queries in range(1, end + 1):
                    seen = swaa_ext.reference.visible(queries, end, window, sinks)[0, 0].any(0)
                    start = rule.window_start(end, queries)
                    kept = [j < sinks or j >= start for j in range(end)]
                    assert seen.tolist() == kept, (window, sinks, end, queries)
    ends, queries = torch.tensor([10, 3]), torch.tensor([2, 3])
    assert rule.window_start(ends, queries).tolist() == [10 - 2 - 6, 3 - 3 - 6]  # tensors too
