"""adapt / restore: switch a transformers model to SWAA attention and back, through the public
registries only (AttentionInterface, AttentionMaskInterface, set_attn_implementation)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from ..config import SWAAConfig
from .attention import prompt_boundary, swaa_attention_forward
from .cache import SWAACache, window_only_layers
from .mask import left_padding, swaa_mask

ATTN_IMPLEMENTATION = "swaa"
_PREVIOUS = "_swaa_previous_attn_implementation"  # instance attribute: what restore() goes back to
_NATIVE = "_swaa_native_sliding"  # instance attribute: the model's own sliding-window fields


def _register() -> None:
    # Both registries are global and keyed by name; registering again just rebinds the same name.
    AttentionInterface.register(ATTN_IMPLEMENTATION, swaa_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, swaa_mask)


def _text_config(model: torch.nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "get_text_config"):
        raise TypeError(f"adapt expects a transformers PreTrainedModel, got {type(model).__name__}")
    return config.get_text_config(decoder=True)


def adapt(model: torch.nn.Module, config: SWAAConfig | None = None) -> torch.nn.Module:
    """Switch `model` (in place) to sink + sliding-window attention as `config` says, and return it.

    With no config, the settings saved in `model.config.swaa` are used (a reloaded adapted model).
    The settings are stored in the model config, so they round-trip through save_pretrained.
    `model.generate` marks the prompt boundary for FA decode by itself."""
    text_config = _text_config(model)
    if config is None:
        saved = getattr(text_config, "swaa", None)
        if saved is None:
            raise ValueError("adapt(model) without a config needs a model saved after adapt "
                             "(model.config.swaa); pass a swaa_ext.SWAAConfig")
        config = SWAAConfig.from_dict(saved)
    if not isinstance(config, SWAAConfig):
        raise TypeError(f"config must be a swaa_ext.SWAAConfig, got {type(config).__name__}")
    if not getattr(model, "_supports_attention_backend", False):
        raise TypeError(f"{type(model).__name__} cannot be adapted: its attention does not go "
                        "through transformers' AttentionInterface")

    settings = config.to_dict()
    settings["full_attention_layers"] = list(config.full_layers(text_config.num_hidden_layers))
    _register()
    if not hasattr(model, _PREVIOUS):
        setattr(model, _PREVIOUS, text_config._attn_implementation)
        setattr(model, _NATIVE, _disable_native_sliding(text_config))
    text_config.swaa = settings
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    if text_config._attn_implementation != ATTN_IMPLEMENTATION:
        restore(model)
        raise TypeError(f"{type(model).__name__} cannot be adapted: transformers refused to set "
                        f"attn_implementation={ATTN_IMPLEMENTATION!r}")
    # An instance attribute shadows the class's generate (restore() deletes it); the class
    # method itself is untouched.
    model.generate = functools.partial(_generate_with_prompt_boundary, model)
    return model


def restore(model: torch.nn.Module) -> torch.nn.Module:
    """Undo adapt(): the previous attention implementation, no `swaa` settings, the class's
    generate. Weights are never touched, so logits are exactly the original ones."""
    if not hasattr(model, _PREVIOUS):
        raise ValueError(f"{type(model).__name__} was not adapted with swaa_ext.adapt")
    text_config = _text_config(model)
    model.set_attn_implementation(getattr(model, _PREVIOUS))
    delattr(model, _PREVIOUS)
    for name, value in getattr(model, _NATIVE).items():
        setattr(text_config, name, value)
    delattr(model, _NATIVE)
    if hasattr(text_config, "swaa"):
        del text_config.swaa
    model.__dict__.pop("generate", None)
    return model


def _disable_native_sliding(text_config: Any) -> dict[str, Any]:
    """SWAA decides every layer's window, so the model's own sliding window (Mistral's
    `sliding_window`, Qwen2's sliding `layer_types`) must not shape its default cache: a native
    sliding cache layer would drop sinks and keys our window needs. Returns the old values."""
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is not None:
        if "sliding_attention" not in layer_types:
            return {}
        text_config.layer_types = ["full_attention"] * len(layer_types)
        return {"layer_types": layer_types}
    if getattr(text_config, "sliding_window", None) is not None:
        old = text_config.sliding_window
        text_config.sliding_window = None
        return {"sliding_window": old}
    return {}


def prompt_length(inputs: torch.Tensor, attention_mask: torch.Tensor | None,
                  past_key_values: Any) -> int:
    """Where the prompt ends in the (left-padded) sequence that generate will build: the length of
    everything given to generate. transformers' convention for a reused cache is that the inputs
    (or at least the attention mask) cover the whole conversation; if only the new tokens are given,
    without a mask, they follow the cached ones."""
    length = inputs.shape[1]
    if attention_mask is not None:
        return max(length, attention_mask.shape[1])
    past = past_key_values.get_seq_length() if past_key_values is not None else 0
    return length + past if 0 < past and length <= past else length


def _generate_with_prompt_boundary(model: torch.nn.Module, inputs: torch.Tensor | None = None,
                                   *args, **kwargs):
    """The class's generate inside `prompt_boundary(prompt length)`, so that every prompt token
    (however the prefill is chunked) slides and every generated token sees the whole context.
    (generate rejects unknown forward kwargs, hence a context rather than `swaa_full_from`.)
    Unless the caller brings a cache, window-only layers get a sink + window one (SWAACache)."""
    tokens = inputs
    for name in ("input_ids", "inputs_embeds"):
        tokens = kwargs.get(name) if tokens is None else tokens
    boundary = None if tokens is None else prompt_length(tokens, kwargs.get("attention_mask"),
                                                         kwargs.get("past_key_values"))
    text_config = _text_config(model)
    if (kwargs.get("past_key_values") is None and kwargs.get("use_cache", True)
            and window_only_layers(text_config)):
        mask = kwargs.get("attention_mask")
        pad = None if mask is None else left_padding(mask.to(torch.bool))
        kwargs["past_key_values"] = SWAACache(model.config,
                                              max_padding=0 if pad is None else int(pad.max()))
    with prompt_boundary(boundary):
        return type(model).generate(model, inputs, *args, **kwargs)
