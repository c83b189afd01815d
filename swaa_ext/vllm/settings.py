"""Per-layer SWAA settings for vLLM, read from the served model's config: `config.swaa` as
written by swaa_ext.adapt + save_pretrained, or passed as `hf_overrides={"swaa": {...}}`.
The rule itself is SWAAConfig's (swaa_ext/config.py); this file only maps a layer to it."""

from __future__ import annotations

import re
from typing import Any

from ..config import FULL, LayerRule, SWAAConfig

__all__ = ["FULL", "LayerRule", "layer_index", "layer_rule", "swaa_config", "window_only_layers"]

_LAYER_INDEX = re.compile(r"\.(\d+)\.")  # "model.layers.12.self_attn.attn" -> 12


def swaa_config(hf_text_config: Any) -> SWAAConfig | None:
    """The model's SWAAConfig, or None when the model was not adapted."""
    saved = getattr(hf_text_config, "swaa", None)
    return None if saved is None else SWAAConfig.from_saved(saved)


def layer_index(layer_name: str) -> int:
    """The decoder layer index in a vLLM layer name (the last number between dots)."""
    found = _LAYER_INDEX.findall(layer_name + ".")
    if not found:
        raise ValueError(f"cannot tell the layer index of attention layer {layer_name!r}")
    return int(found[-1])


def window_only_layers(config: SWAAConfig | None, num_layers: int) -> list[int]:
    """The layers that never read past sinks + window (SWAAConfig's). vLLM serves them as
    sliding-window layers (layer_types), whose KV blocks outside sinks + window are freed
    (kv_spec.py)."""
    return [] if config is None else config.window_only_layers(num_layers)


def layer_rule(config: SWAAConfig | None, layer: int, num_layers: int,
               native_window: int | None = None) -> LayerRule:
    """The rule of decoder layer `layer`. Without SWAA settings, the model's own attention:
    its native sliding window if it has one, else full. With them, a native window is allowed
    only where swaa_ext.vllm.hf_overrides put it: the SWAA window on a window-only layer."""
    if config is None:
        return FULL if native_window is None else LayerRule(window=native_window)
    rule = config.layer_rule(layer, num_layers)
    if native_window is not None and not (rule.window_only and native_window == config.window):
        raise ValueError(f"layer {layer} has the model's own sliding window ({native_window}) and "
                         "SWAA settings: SWAA replaces it, so serve the config saved by "
                         "swaa_ext.adapt or override sliding_window / layer_types to full attention")
    return rule
