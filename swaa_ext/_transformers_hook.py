"""Registers the "swaa" attention with transformers as soon as transformers' modeling code is
imported, without importing transformers ourselves (it costs seconds that kernel-only users
should not pay). A post-import hook: a meta-path finder that runs `register` right after
`transformers.modeling_utils` executes, or at once if it already has."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

_TARGET = "transformers.modeling_utils"


def _register() -> None:
    if "swaa_ext.hf" in sys.modules:  # importing swaa_ext.hf loaded transformers: it registers
        return
    try:
        from .hf.registration import register
        register()
    except Exception as error:  # never break the user's transformers import
        warnings.warn(f"swaa_ext could not register its 'swaa' attention with transformers: "
                      f"{error!r}", RuntimeWarning, stacklevel=2)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)  # one shot: find the real spec, wrap its loader
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    if _TARGET in sys.modules:
        _register()
    elif importlib.util.find_spec("transformers") is not None and not any(
            isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
