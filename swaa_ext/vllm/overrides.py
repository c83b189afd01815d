"""The window-only layers of a SWAA model marked as vLLM sliding-window layers, so that their KV
blocks outside sinks + window are freed (kv_spec.py): through `hf_overrides`, or automatically for
a checkpoint saved after swaa_ext.adapt (config_parser.py).

vLLM applies a callable `hf_overrides` to the checkpoint's config before it builds the model.
Llama-style models in vLLM read `layer_types` ("sliding_attention" / "full_attention") and one
`sliding_window`; a sliding layer gets a sliding-window KV spec, which the backend extends with
the sinks. Layers with FA decode and full layers are left as full attention (full KV cache)."""

from __future__ import annotations

from typing import Any

from .settings import swaa_config, window_only_layers

def mark_window_only_layers(hf_config, settings: dict[str, Any] | None = None) -> bool:
    """Sets `config.swaa` to `settings` (when given; else the config's own are used) and marks
    the window-only layers `sliding_attention` in `layer_types`, with `sliding_window` = the SWAA
    window. Returns False, changing nothing, when the config has no SWAA settings. Raises
    ValueError when the model has sliding-window layers of its own other than exactly the
    window-only layers with the SWAA window (SWAA replaces them)."""
    text_config = hf_config.get_text_config()
    if settings is not None:
        text_config.swaa = dict(settings)
    config = swaa_config(text_config)
    if config is None:
        return False
    num_layers = text_config.num_hidden_layers
    layers = window_only_layers(config, num_layers)
    if not layers:
        return True
    own = [i for i, t in enumerate(getattr(text_config, "layer_types", None) or [])
           if t not in ("full_attention", "attention")]
    own_window = getattr(text_config, "sliding_window", None)
    # A model's own sliding layers are fine where SWAA marks exactly those layers with the same
    # window (SWAAConfig.native, e.g. gpt-oss); any other own window would be applied by vLLM's
    # model code on top of the SWAA rule.
    same = own == layers and own_window == config.window
    if (own or own_window is not None) and not same:
        raise ValueError("the model has its own sliding-window layers; SWAA settings replace "
                         "them, so serve the config saved by swaa_ext.adapt or override "
                         "sliding_window / layer_types to full attention (or adapt with "
                         "SWAAConfig.native, whose window-only layers are the model's own)")
    text_config.layer_types = ["sliding_attention" if i in layers else "full_attention"
                               for i in range(num_layers)]
    text_config.sliding_window = config.window
    return True


class SWAAOverrides:
    """Callable `hf_overrides` (swaa_ext.vllm.hf_overrides): the SWAA settings given, or the
    checkpoint's own (saved by swaa_ext.adapt), with the window-only layers marked. Picklable, so
    vLLM can hand it to its engine process."""

    def __init__(self, settings: dict[str, Any] | None) -> None:
        self.settings = settings

    def __call__(self, hf_config):
        if not hasattr(hf_config.get_text_config(), "num_hidden_layers"):
            return hf_config  # vLLM's placeholder config (it checks if we change model_type)
        if not mark_window_only_layers(hf_config, self.settings):
            raise ValueError("swaa_ext.vllm.hf_overrides() without settings needs a checkpoint "
                             "saved after swaa_ext.adapt (config.json with `swaa`); pass "
                             "hf_overrides(SWAAConfig(...)) for any other checkpoint")
        return hf_config

    def __repr__(self) -> str:
        return f"swaa_ext.vllm.hf_overrides({self.settings!r})"
