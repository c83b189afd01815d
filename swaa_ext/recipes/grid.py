"""The configurations an evaluation compares, named by a small recipe grammar.

A recipe is "+"-joined tokens:
  fa                   the model's own attention, unadapted (e.g. sdpa): the reference point;
  fa_kernel            adapted, but with a window covering everything: our kernel doing full attention;
  swa                  sliding window on every layer (naive SWA); the window comes from the grid;
  sinks | sinks<N>     keep the first N tokens visible (N defaults to the grid's `sinks`);
  fa_decode            generated tokens see the whole context;
  odd | even | every_4th | every_8th   these layers stay on full attention (interleaving);
  layers:<i>.<j>...    these layers stay on full attention, by index (e.g. a calibrated choice,
                       swaa_ext.recipes.select: "layers:4.7.8.14.17.18.20");
  preset:<name>        one of swaa_ext.PRESETS, with the grid's window in place of its own.
e.g. "swa+sinks64+fa_decode+odd". Windows are given as fractions of the context length, so the
same grid means the same thing at every length."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import LAYER_PATTERNS, PRESETS, SWAAConfig

FULL_WINDOW = 1 << 30  # a window no prompt reaches: the adapted model attends to everything
RECOMMENDED = "swa+sinks+fa_decode+odd"  # the paper's best training-free recipe
DEFAULT_RECIPES = ("fa", "fa_kernel", "swa", "swa+sinks", "swa+sinks+fa_decode", RECOMMENDED)


@dataclass(frozen=True)
class GridEntry:
    name: str                       # recipe, plus the window fraction for windowed ones
    recipe: str
    window_fraction: float | None   # None: no window (fa, fa_kernel)
    sinks: int
    full_attention_layers: str | tuple[int, ...]
    fa_decode: bool
    adapted: bool                   # False: the model's own attention implementation

    def swaa_config(self, context_tokens: int) -> SWAAConfig | None:
        """The adaptation for a prompt of `context_tokens` tokens (None: leave the model alone)."""
        if not self.adapted:
            return None
        window = (FULL_WINDOW if self.window_fraction is None
                  else max(1, round(self.window_fraction * context_tokens)))
        return SWAAConfig(window=window, sinks=self.sinks,
                          full_attention_layers=self.full_attention_layers, fa_decode=self.fa_decode)


def _from_preset(name: str, recipe: str, fraction: float) -> GridEntry:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} in recipe {recipe!r}; choose one of "
                         f"{sorted(PRESETS)}")
    cfg = PRESETS[name][1]
    layers = cfg.full_attention_layers
    return GridEntry(f"{recipe}@{fraction:g}", recipe, fraction, cfg.sinks,
                     layers if isinstance(layers, str) else tuple(layers), cfg.fa_decode, True)


def layers_token(layers: Sequence[int]) -> str:
    """The recipe token that keeps `layers` full: what select.py prints for its choice."""
    return "layers:" + ".".join(str(i) for i in sorted(layers))


def _layer_list(token: str, recipe: str) -> tuple[int, ...]:
    indices = token.removeprefix("layers:").split(".")
    if not all(re.fullmatch(r"\d+", i) for i in indices):
        raise ValueError(f"token {token!r} in recipe {recipe!r} must list layer indices joined by "
                         "'.', e.g. layers:4.7.8")
    # SWAAConfig checks them (duplicates; beyond the model's layers at adapt time).
    return tuple(int(i) for i in indices)


def parse_recipe(recipe: str, window_fraction: float, default_sinks: int) -> GridEntry:
    """One grid entry from a recipe string (see the module docstring)."""
    tokens = [t.strip() for t in recipe.split("+") if t.strip()]
    if tokens in (["fa"], ["fa_kernel"]):
        return GridEntry(recipe, recipe, None, 0, (), False, tokens == ["fa_kernel"])
    if len(tokens) == 1 and tokens[0].startswith("preset:"):
        return _from_preset(tokens[0].removeprefix("preset:"), recipe, window_fraction)
    if not tokens or tokens[0] != "swa":
        raise ValueError(f"recipe {recipe!r} must be 'fa', 'fa_kernel', 'preset:<name>' or start "
                         f"with 'swa' (e.g. 'swa+sinks+fa_decode+odd')")
    sinks, layers, fa_decode = 0, (), False
    for token in tokens[1:]:
        if (m := re.fullmatch(r"sinks(\d*)", token)):
            sinks = int(m.group(1)) if m.group(1) else default_sinks
        elif token == "fa_decode":
            fa_decode = True
        elif token in LAYER_PATTERNS:
            layers = token
        elif token.startswith("layers:"):
            layers = _layer_list(token, recipe)
        else:
            raise ValueError(f"unknown token {token!r} in recipe {recipe!r}; expected sinks[N], "
                             f"fa_decode, layers:<i>.<j>... or one of {sorted(LAYER_PATTERNS)}")
    if not 0.0 < window_fraction <= 1.0:
        raise ValueError(f"window fraction must be in (0, 1], got {window_fraction}")
    return GridEntry(f"{recipe}@{window_fraction:g}", recipe, window_fraction, sinks, layers,
                     fa_decode, True)


def build_grid(recipes: Sequence[str], window_fractions: Sequence[float],
               sinks: int) -> list[GridEntry]:
    """Every windowed recipe at every window fraction; unwindowed ones once."""
    grid: dict[str, GridEntry] = {}
    for recipe in recipes:
        for fraction in window_fractions:
            entry = parse_recipe(recipe, fraction, sinks)
            grid.setdefault(entry.name, entry)
    return list(grid.values())


def describe(entry: GridEntry) -> dict[str, object]:
    """JSON-friendly description of an entry."""
    out = dataclasses.asdict(entry)
    if not isinstance(out["full_attention_layers"], str):
        out["full_attention_layers"] = list(out["full_attention_layers"])
    return out
