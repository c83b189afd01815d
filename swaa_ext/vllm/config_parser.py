"""KV memory of a checkpoint saved after swaa_ext.adapt, served without `hf_overrides`: vLLM's
config parser for the "hf" format (the one vLLM picks for any config.json) with the window-only
layers marked, as swaa_ext.vllm.hf_overrides() would mark them (overrides.py).

It is vLLM's own HFConfigParser, registered again for "hf" through vLLM's public
`register_config_parser` (vllm/transformers_utils/config.py), so `vllm serve adapted-checkpoint`
and `LLM("adapted-checkpoint")` free the window-only layers' blocks with no extra argument. A
config without `swaa` is returned exactly as vLLM's parser returns it."""

from __future__ import annotations

from vllm.transformers_utils.config import (HFConfigParser, get_config_parser,
                                            register_config_parser)

from .overrides import SWAAOverrides, mark_window_only_layers


class SWAAConfigParser(HFConfigParser):
    def parse(self, model, trust_remote_code, revision=None, code_revision=None, **kwargs):
        overrides = kwargs.get("hf_overrides")
        config_dict, config = super().parse(model, trust_remote_code, revision, code_revision,
                                            **kwargs)
        if isinstance(overrides, SWAAOverrides):
            return config_dict, config  # vLLM applies it next, with its own settings
        # A dict override's `swaa` replaces the checkpoint's once vLLM applies it: mark for it.
        settings = overrides.get("swaa") if isinstance(overrides, dict) else None
        mark_window_only_layers(config, settings)
        return config_dict, config


def register() -> None:
    if not isinstance(get_config_parser("hf"), SWAAConfigParser):
        register_config_parser("hf")(SWAAConfigParser)
