"""`hf_overrides` for vLLM: the SWAA settings, and the window-only layers marked as vLLM
sliding-window layers so that their KV blocks outside sinks + window are freed (kv_spec.py).

vLLM applies a callable `hf_overrides` to the checkpoint's config before it builds the model.
Llama-style models in vLLM read `layer_types` ("sliding_attention" / "full_attention") and one
`sliding_window`; a sliding layer gets a sliding-window KV spec, which the backend extends with
the sinks. Layers with FA decode and full layers are left as full attention (full KV cache)."""

from __future__ import annotations

from typing import Any

from .settings import swaa_config, window_only_layers


class SWAAOverrides:
    """Callable `hf_overrides`: sets `config.swaa` (when given settings; else the checkpoint's
    own, saved by swaa_ext.adapt, are used) and `layer_types` / `sliding_window` for the
    window-only layers. Picklable, so vLLM can hand it to its engine process."""

    def __init__(self, settings: dict[str, Any] | None) -> None:
        self.settings = settings

    def __call__(self, hf_config):
        text_config = hf_config.get_text_config()
        if self.settings is not None:
            text_config.swaa = dict(self.settings)
        if not hasattr(text_config, "num_hidden_layers"):
            return hf_config  # vLLM's placeholder config (it checks if we change model_type)
        config = swaa_config(text_config)
        if config is None:
            raise ValueError("swaa_ext.vllm.hf_overrides() without settings needs a checkpoint "
                             "saved after swaa_ext.adapt (config.json with `swaa`); pass "
                             "hf_overrides(SWAAConfig(...)) for any other checkpoint")
        layers = window_only_layers(config, text_config.num_hidden_layers)
        if layers:
            own = [t for t in getattr(text_config, "layer_types", None) or []
                   if t not in ("full_attention", "attention")]
            if own or getattr(text_config, "sliding_window", None) is not None:
                raise ValueError("the model has its own sliding-window layers; SWAA settings "
                                 "replace them, so serve the config saved by swaa_ext.adapt "
                                 "or override sliding_window / layer_types to full attention")
            text_config.layer_types = [
                "sliding_attention" if i in layers else "full_attention"
                for i in range(text_config.num_hidden_layers)]
            text_config.sliding_window = config.window
        return hf_config

    def __repr__(self) -> str:
        return f"swaa_ext.vllm.hf_overrides({self.settings!r})"
