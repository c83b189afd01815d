"""Per-layer SWAA settings for vLLM, read from the served model's config: `config.swaa` as
written by swaa_ext.adapt + save_pretrained, or passed as `hf_overrides={"swaa": {...}}`.
The rule itself is SWAAConfig's (swaa_ext/config.py); this file only maps a layer to it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config import SWAAConfig

_SETTINGS = ("window", "sinks", "full_attention_layers", "fa_decode")
_LAYER_INDEX = re.compile(r"\.(\d+)\.")  # "model.layers.12.self_attn.attn" -> 12


@dataclass(frozen=True)
class LayerRule:
    """What one attention layer computes: `window` keys (the query included) or None for full
    attention, the first `sinks` keys of each request always visible, and with `fa_decode`
    queries at or past the request's prompt length see every key."""

    window: int | None
    sinks: int = 0
    fa_decode: bool = False


FULL = LayerRule(window=None)


def swaa_config(hf_text_config: Any) -> SWAAConfig | None:
    """The model's SWAAConfig, or None when the model was not adapted."""
    saved = getattr(hf_text_config, "swaa", None)
    if saved is None:
        return None
    if isinstance(saved, SWAAConfig):
        return saved
    if not isinstance(saved, dict):
        raise TypeError(f"config.swaa must be a dict of SWAAConfig fields (as swaa_ext.adapt "
                        f"saves it), got {type(saved).__name__}")
    unknown = set(saved) - set(_SETTINGS) - {"original_attn_implementation"}
    if unknown:
        raise ValueError(f"config.swaa has unknown settings {sorted(unknown)}; expected "
                         f"{list(_SETTINGS)}")
    return SWAAConfig.from_dict({k: saved[k] for k in _SETTINGS if k in saved})


def layer_index(layer_name: str) -> int:
    """The decoder layer index in a vLLM layer name (the last number between dots)."""
    found = _LAYER_INDEX.findall(layer_name + ".")
    if not found:
        raise ValueError(f"cannot tell the layer index of attention layer {layer_name!r}")
    return int(found[-1])


def window_only_layers(config: SWAAConfig | None, num_layers: int) -> list[int]:
    """The layers that never read past sinks + window: sliding layers without FA decode. vLLM
    serves them as sliding-window layers (layer_types), whose KV blocks outside sinks + window
    are freed (kv_spec.py)."""
    if config is None or config.fa_decode:
        return []
    full = set(config.full_layers(num_layers))
    return [i for i in range(num_layers) if i not in full]


def layer_rule(config: SWAAConfig | None, layer: int, num_layers: int,
               native_window: int | None = None) -> LayerRule:
    """The rule of decoder layer `layer`. Without SWAA settings, the model's own attention:
    its native sliding window if it has one, else full. With them, a native window is allowed
    only where swaa_ext.vllm.hf_overrides put it: the SWAA window on a window-only layer."""
    if config is None:
        return FULL if native_window is None else LayerRule(window=native_window)
    window_only = layer in window_only_layers(config, num_layers)
    if native_window is not None and not (window_only and native_window == config.window):
        raise ValueError(f"layer {layer} has the model's own sliding window ({native_window}) and "
                         "SWAA settings: SWAA replaces it, so serve the config saved by "
                         "swaa_ext.adapt or override sliding_window / layer_types to full attention")
    if layer in config.full_layers(num_layers):
        return FULL
    return LayerRule(window=config.window, sinks=config.sinks, fa_decode=config.fa_decode)
