"""adapt / restore: switch a transformers model to SWAA attention and back, through the public
registries only (AttentionInterface, AttentionMaskInterface, set_attn_implementation)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from transformers.cache_utils import StaticCache
from transformers.utils import logging

from ..config import ORIGINAL_ATTN_IMPLEMENTATION, SWAAConfig
from .attention import ADAPTED, ATTN_IMPLEMENTATION, RULE, prompt_boundary
from .cache import SWAACache, window_only_layers
from .mask import left_padding
from .registration import register

logger = logging.get_logger(__name__)

_PREVIOUS = "_swaa_previous_attn_implementation"  # instance attribute: what restore() goes back to
_NATIVE = "_swaa_native_sliding"  # instance attribute: the model's own sliding-window fields
# Kept in config.swaa: what restore() goes back to after a reload (the live config then says
# "swaa", because config.json asks for it).
_ORIGINAL = ORIGINAL_ATTN_IMPLEMENTATION
# generate's cache_implementation values SWAA serves (with SWAACache), and the assisted
# decoding arguments whose draft tokens a cache must be able to roll back.
_CACHE_IMPLEMENTATIONS = ("dynamic", "static")
_ASSISTED = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit")


def _text_config(model: torch.nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "get_text_config"):
        raise TypeError(f"adapt expects a transformers PreTrainedModel, got {type(model).__name__}")
    return config.get_text_config(decoder=True)


def _attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's attention layers: the modules that say whether they are causal (every
    transformers attention class sets `is_causal`). Refuses models SWAA cannot serve exactly:
    a causal sliding window on an encoder (or any bidirectional / cross-attention layer) would
    silently change what it computes."""
    modules = [m for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    if not modules:
        raise TypeError(f"{type(model).__name__} cannot be adapted: none of its modules says "
                        "whether its attention is causal (is_causal), so SWAA cannot tell it is a "
                        "decoder")
    bidirectional = [name for name, m in model.named_modules()
                     if getattr(m, "is_causal", None) is False]
    if bidirectional or getattr(_text_config(model), "is_encoder_decoder", False):
        where = f" ({', '.join(bidirectional[:3])}{', ...' if len(bidirectional) > 3 else ''})"
        raise TypeError(f"{type(model).__name__} cannot be adapted: SWAA is causal attention and "
                        f"this model has non-causal attention layers{where if bidirectional else ''}"
                        "; only decoder-only models can be adapted")
    return modules


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
        config = SWAAConfig.from_saved(saved)
    if not isinstance(config, SWAAConfig):
        raise TypeError(f"config must be a swaa_ext.SWAAConfig, got {type(config).__name__}")
    if not getattr(model, "_supports_attention_backend", False):
        raise TypeError(f"{type(model).__name__} cannot be adapted: its attention does not go "
                        "through transformers' AttentionInterface")
    attention_modules = _attention_modules(model)

    settings = config.resolved(text_config.num_hidden_layers)
    register()
    if not hasattr(model, _PREVIOUS):
        previous = text_config._attn_implementation
        if previous == ATTN_IMPLEMENTATION:  # reloaded from a save made while adapted
            previous = (getattr(text_config, "swaa", None) or {}).get(_ORIGINAL) or "sdpa"
        setattr(model, _PREVIOUS, previous)
        setattr(model, _NATIVE, _disable_native_sliding(text_config))
    settings[_ORIGINAL] = getattr(model, _PREVIOUS)
    text_config.swaa = settings
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    if text_config._attn_implementation != ATTN_IMPLEMENTATION:
        restore(model)
        raise TypeError(f"{type(model).__name__} cannot be adapted: transformers refused to set "
                        f"attn_implementation={ATTN_IMPLEMENTATION!r}")
    for module in attention_modules:
        setattr(module, ADAPTED, True)  # what the attention function checks (see attention.py)
    # Instance attributes shadow the class's generate and save_pretrained (restore() deletes
    # them); the class methods themselves are untouched.
    model.generate = functools.partial(_generate_with_prompt_boundary, model)
    model.save_pretrained = functools.partial(_save_with_native_settings, model)
    return model


def is_adapted(model: torch.nn.Module) -> bool:
    """Whether `model` runs SWAA now (adapt() was called and not undone). A portable checkpoint
    loaded by plain transformers carries `config.swaa` but runs its own attention: not adapted."""
    return hasattr(model, _PREVIOUS)


def restore(model: torch.nn.Module) -> torch.nn.Module:
    """Undo adapt(): the previous attention implementation, no `swaa` settings, the class's
    generate. Weights are never touched, so logits are exactly the original ones."""
    if not is_adapted(model):
        raise ValueError(f"{type(model).__name__} was not adapted with swaa_ext.adapt")
    text_config = _text_config(model)
    model.set_attn_implementation(getattr(model, _PREVIOUS))
    delattr(model, _PREVIOUS)
    for module in model.modules():
        module.__dict__.pop(ADAPTED, None)
        module.__dict__.pop(RULE, None)  # the attention function's parsed settings
    for name, value in getattr(model, _NATIVE).items():
        setattr(text_config, name, value)
    delattr(model, _NATIVE)
    if hasattr(text_config, "swaa"):
        del text_config.swaa
    model.__dict__.pop("generate", None)
    model.__dict__.pop("save_pretrained", None)
    return model


def _save_with_native_settings(model: torch.nn.Module, *args, require_swaa: bool = True,
                               **kwargs):
    """The class's save_pretrained with the model's own sliding-window fields put back for the
    duration (so config.json describes the original model, SWAA's settings beside it in `swaa`)
    and `attn_implementation: "swaa"` in config.json, so a reload is never silently full
    attention: it needs swaa_ext imported, and then swaa_ext.adapt(model) to run.
    With require_swaa=False config.json keeps the model's own attention instead: a portable
    checkpoint that any transformers loads as the base architecture (full attention), with
    `swaa` for swaa_ext.adapt(model) and the vLLM plugin (the fine-tuning recipe's merged
    model)."""
    text_config = _text_config(model)
    disabled = {name: getattr(text_config, name) for name in getattr(model, _NATIVE)}
    for name, value in getattr(model, _NATIVE).items():
        setattr(text_config, name, value)
    if require_swaa:
        model.config.attn_implementation = ATTN_IMPLEMENTATION  # read back by PretrainedConfig
    try:
        return type(model).save_pretrained(model, *args, **kwargs)
    finally:
        if require_swaa:
            del model.config.attn_implementation
        for name, value in disabled.items():
            setattr(text_config, name, value)


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
    if isinstance(kwargs.get("past_key_values"), StaticCache):
        raise TypeError("an adapted model cannot use a StaticCache: its padded key slots would "
                        "count as real keys (the kernel takes no per-row key length yet); pass "
                        "swaa_ext.hf.SWAACache(model.config) or cache_implementation='static'")
    with _served_cache_implementation(model, kwargs), prompt_boundary(boundary):
        if (kwargs.get("past_key_values") is None and kwargs.get("use_cache", True)
                and window_only_layers(text_config)):
            mask = kwargs.get("attention_mask")
            pad = None if mask is None else left_padding(mask.to(torch.bool))
            kwargs["past_key_values"] = SWAACache(
                model.config, max_padding=0 if pad is None else int(pad.max()),
                rollback=_rollback(model, kwargs, boundary))
        return type(model).generate(model, inputs, *args, **kwargs)


@contextlib.contextmanager
def _served_cache_implementation(model: torch.nn.Module, kwargs: dict) -> Iterator[None]:
    """generate's `cache_implementation` (argument or generation config): "dynamic" and "static"
    are served by the caches above (a transformers StaticCache pads its keys to a fixed length,
    which the kernel would read as real keys: it has no per-row key length yet); others refuse.
    The model's own default is lifted for the duration of the call."""
    generation_config = kwargs.get("generation_config") or model.generation_config
    config_default = getattr(generation_config, "cache_implementation", None)
    implementation = kwargs.pop("cache_implementation", None) or config_default
    if implementation is not None and implementation not in _CACHE_IMPLEMENTATIONS:
        raise ValueError(f"cache_implementation={implementation!r} is not supported by an adapted "
                         f"model; use one of {_CACHE_IMPLEMENTATIONS} or pass past_key_values")
    if implementation == "static":
        logger.warning_once("cache_implementation='static' on a SWAA model: window-only layers "
                            "keep a bounded sink + window cache, the other layers a dynamic one")
    generation_config.cache_implementation = None
    try:
        yield
    finally:
        generation_config.cache_implementation = config_default


def _rollback(model: torch.nn.Module, kwargs: dict, prompt: int | None) -> int:
    """How many tokens the cache must be able to un-see: assisted and prompt-lookup decoding
    draft tokens and crop the rejected ones, never more than the tokens still to generate."""
    generation_config = kwargs.get("generation_config") or model.generation_config
    if not any(kwargs.get(name) is not None for name in _ASSISTED) and \
            getattr(generation_config, "prompt_lookup_num_tokens", None) is None:
        return 0
    new_tokens = kwargs.get("max_new_tokens") or generation_config.max_new_tokens
    if new_tokens is None:
        max_length = kwargs.get("max_length") or generation_config.max_length or 0
        new_tokens = max(max_length - (prompt or 0), 0)
    return int(new_tokens)
