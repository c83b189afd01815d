"""SWAAConfig: which layers slide, how far, with how many sinks, and whether generated tokens see the
whole context (docs/architecture.md, "The masking rule"). Plus the paper's recommended recipes as named presets."""

from __future__ import annotations

import json
import numbers
import operator
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

# Named interleaving patterns: layer index -> keeps full attention.
LAYER_PATTERNS = {
    "odd": lambda i: i % 2 == 1,
    "even": lambda i: i % 2 == 0,
    "every_4th": lambda i: i % 4 == 3,
    "every_8th": lambda i: i % 8 == 7,
}


# The settings, as a model's config keeps them (`config.swaa`: swaa_ext.adapt writes them,
# adapt(model), SWAACache and the vLLM plugin read them back through SWAAConfig.from_saved).
SETTINGS = ("window", "sinks", "full_attention_layers", "fa_decode")
# Kept beside them by swaa_ext.adapt: the attention implementation restore() goes back to.
ORIGINAL_ATTN_IMPLEMENTATION = "original_attn_implementation"


@dataclass(frozen=True)
class LayerRule:
    """What one attention layer computes: `window` keys (the query included) or None for full
    attention, the first `sinks` keys of each sequence always visible, and with `fa_decode`
    queries at or past the prompt's end see every earlier key."""

    window: int | None
    sinks: int = 0
    fa_decode: bool = False

    @property
    def window_only(self) -> bool:
        """The layer never reads past sinks + window: it slides, without FA decode."""
        return self.window is not None and not self.fa_decode

    @property
    def lookback(self) -> int:
        """Keys before a query that its window reaches: what a sink + window cache keeps."""
        return self.window - 1

    def window_start(self, end, queries=1):
        """For the queries at positions [end - queries, end), the first key their windows reach
        (0 or below: every key). A window-only layer reads exactly the keys below `sinks` and
        those from here to `end` (tests/test_hf_config.py checks it against the reference rule).
        Ints or integer tensors."""
        return end - queries - self.lookback


FULL = LayerRule(window=None)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_int(value: object) -> object:
    """numpy / torch integers (anything with __index__, bool excluded) -> int; others unchanged,
    so that validation names them."""
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:  # not integer-like (a float, a float tensor): left for validation to name
        return value


@dataclass
class SWAAConfig:
    """Sink + sliding-window attention adaptation settings.

    window: keys each prompt query sees, the query itself included (HF `sliding_window` convention);
    sinks: the first `sinks` real tokens of each sequence stay visible to every query;
    full_attention_layers: layers kept on full attention, as indices or a pattern name
        ("odd", "even", "every_4th" = 3, 7, ..., "every_8th" = 7, 15, ...);
    fa_decode: generated tokens attend to the whole context (the prompt still slides).
    """

    window: int
    sinks: int = 0
    full_attention_layers: str | Sequence[int] = field(default_factory=tuple)
    fa_decode: bool = False

    def __post_init__(self) -> None:
        # Stored as plain ints, so the settings are JSON-serialisable (config.json).
        self.window, self.sinks = _as_int(self.window), _as_int(self.sinks)
        if isinstance(self.full_attention_layers, Sequence) and not isinstance(
                self.full_attention_layers, str):
            self.full_attention_layers = [_as_int(i) for i in self.full_attention_layers]
        if not _is_int(self.window) or self.window < 1:
            raise ValueError(f"window must be an int >= 1 (keys seen, the query included), "
                             f"got {self.window!r}")
        if not _is_int(self.sinks) or self.sinks < 0:
            raise ValueError(f"sinks must be an int >= 0, got {self.sinks!r}")
        if not isinstance(self.fa_decode, bool):
            raise TypeError(f"fa_decode must be a bool, got {type(self.fa_decode).__name__}")
        layers = self.full_attention_layers
        if isinstance(layers, str):
            if layers not in LAYER_PATTERNS:
                raise ValueError(f"full_attention_layers pattern must be one of "
                                 f"{sorted(LAYER_PATTERNS)} or a list of layer indices, got {layers!r}")
        else:
            if not isinstance(layers, Sequence) or not all(_is_int(i) for i in layers):
                raise TypeError(f"full_attention_layers must be a pattern name or a list of int "
                                f"layer indices, got {layers!r}")
            if any(i < 0 for i in layers):
                raise ValueError(f"full_attention_layers indices must be >= 0, got {list(layers)}")
            if len(set(layers)) != len(layers):
                raise ValueError(f"full_attention_layers has duplicates: {list(layers)}")
            self.full_attention_layers = tuple(sorted(int(i) for i in layers))

    def full_layers(self, num_layers: int) -> tuple[int, ...]:
        """The full-attention layer indices for a model with `num_layers` layers."""
        layers = self.full_attention_layers
        if isinstance(layers, str):
            return tuple(i for i in range(num_layers) if LAYER_PATTERNS[layers](i))
        beyond = [i for i in layers if i >= num_layers]
        if beyond:
            raise ValueError(f"full_attention_layers {beyond} are beyond the model's "
                             f"{num_layers} layers (valid: 0..{num_layers - 1})")
        return tuple(layers)

    def layer_rule(self, layer: int, num_layers: int | None = None) -> LayerRule:
        """The rule of decoder layer `layer` of a `num_layers`-layer model (which also checks the
        listed layers against it; settings as a model's config keeps them need no count)."""
        layers = self.full_attention_layers
        if num_layers is not None:
            full = layer in self.full_layers(num_layers)
        else:
            full = LAYER_PATTERNS[layers](layer) if isinstance(layers, str) else layer in layers
        if full:
            return FULL
        return LayerRule(window=self.window, sinks=self.sinks, fa_decode=self.fa_decode)

    def window_only_layers(self, num_layers: int) -> list[int]:
        """The layers that never read past sinks + window (sliding, no FA decode): their KV cache
        keeps only those keys (swaa_ext.hf.SWAACache, the vLLM plugin's sink + window spec)."""
        return [i for i in range(num_layers) if self.layer_rule(i, num_layers).window_only]

    def resolved(self, num_layers: int) -> dict[str, Any]:
        """The settings as a model's config keeps them (`config.swaa`): full_attention_layers as
        the explicit list for `num_layers` layers, so the saved form needs no pattern."""
        out = self.to_dict()
        out["full_attention_layers"] = list(self.full_layers(num_layers))
        return out

    @classmethod
    def from_saved(cls, saved: Any, where: str = "config.swaa") -> "SWAAConfig":
        """The settings kept in a model's config (a dict as `resolved` writes it, or a
        SWAAConfig); keys other than SETTINGS (and adapt's ORIGINAL_ATTN_IMPLEMENTATION) are
        refused, naming `where`."""
        if isinstance(saved, SWAAConfig):
            return saved
        if not isinstance(saved, dict):
            raise TypeError(f"{where} must be a dict of SWAAConfig fields (as swaa_ext.adapt "
                            f"saves it), got {type(saved).__name__}")
        unknown = set(saved) - set(SETTINGS) - {ORIGINAL_ATTN_IMPLEMENTATION}
        if unknown:
            raise ValueError(f"{where} has unknown settings {sorted(unknown)}; expected "
                             f"{list(SETTINGS)}")
        return cls.from_dict({k: saved[k] for k in SETTINGS if k in saved})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, stored in the model config as `swaa`."""
        out = asdict(self)
        if not isinstance(out["full_attention_layers"], str):
            out["full_attention_layers"] = list(out["full_attention_layers"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SWAAConfig":
        return cls(**data)

    @classmethod
    def native(cls, model_config: Any, sinks: int = 0, fa_decode: bool = False) -> "SWAAConfig":
        """The model's own sliding window as settings (gpt-oss, Mistral, Qwen2's sliding layers),
        read from its (text) config before `adapt` replaces it: `sliding_window`, and the layers
        whose `layer_types` entry is not "sliding_attention" kept full (with no `layer_types`,
        every layer slides). `sinks` and `fa_decode` are added on top; learned sinks (gpt-oss's
        `sinks` parameters) are honoured by the attention function either way."""
        text = model_config.get_text_config() if hasattr(model_config, "get_text_config") \
            else model_config
        window = getattr(text, "sliding_window", None)
        if window is None:
            raise ValueError(f"{type(text).__name__} has no native sliding window "
                             "(sliding_window is None): pass the settings explicitly")
        layer_types = getattr(text, "layer_types", None)
        full = [] if layer_types is None else [
            i for i, kind in enumerate(layer_types) if kind != "sliding_attention"]
        return cls(window=window, sinks=sinks, full_attention_layers=full, fa_decode=fa_decode)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "SWAAConfig":
        """The settings in a JSON file: the fields themselves, or a file that holds them under
        `config` (the layer selection's selection.json, docs/layer-selection.md)."""
        with open(path) as f:
            data = json.load(f)
        return cls.from_dict(data["config"] if isinstance(data, dict) and "config" in data
                             else data)


# The paper's recipes (arXiv 2512.10411, Qwen3-4B, window 2k), name -> (description, config).
PRESETS: dict[str, tuple[str, SWAAConfig]] = {
    "swa": ("naive SWA-2k on every layer: the fast baseline that loses long-context ability",
            SWAAConfig(window=2048)),
    "swa_sinks_fa_decode_half": ("SWA-2k + 10 sinks + FA decode + odd layers full: best "
                                 "training-free recipe (.65/.54 vs FA .73/.62)",
                                 SWAAConfig(window=2048, sinks=10, full_attention_layers="odd",
                                            fa_decode=True)),
    "fa_decode_half": ("SWA-2k + FA decode + odd layers full: the recipe to fine-tune with "
                       "(.73/.59 after LoRA)",
                       SWAAConfig(window=2048, full_attention_layers="odd", fa_decode=True)),
    "half_full": ("SWA-2k with odd layers full, no FA decode: fastest recipe that keeps "
                  "some long-context ability (1.8x on 128k prompts)",
                  SWAAConfig(window=2048, full_attention_layers="odd")),
}


def preset(name: str) -> SWAAConfig:
    """A fresh copy of a named recipe; `PRESETS[name][0]` describes it."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return SWAAConfig.from_dict(PRESETS[name][1].to_dict())
