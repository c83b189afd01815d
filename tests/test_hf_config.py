"""SWAAConfig: validation, layer patterns, presets."""

import pytest

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
