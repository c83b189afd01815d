"""Fitting a haystack to a token budget: filler sentences up to the requested prompt length,
needles inserted at requested depths (fractions of the haystack, measured in tokens)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from .prompts import PromptStyle, count_tokens, render

MAX_REFITS = 4


@dataclass(frozen=True)
class Layout:
    """What a task contributes before fitting: the question around a haystack of filler with needles."""
    instruction: str
    question: str
    answer_prefix: str
    needles: tuple[tuple[float, str], ...]  # (depth in [0, 1], text); the first one is the target
    filler: Iterator[str]                   # endless, deterministic stream of filler sentences
    separator: str = " "


@dataclass(frozen=True)
class Fitted:
    prompt: str
    n_tokens: int
    needle_depth: float  # measured: tokens before the target needle / haystack tokens


def _user_text(layout: Layout, context: str) -> str:
    return f"{layout.instruction}\n\n{context}\n\n{layout.question}"


class _FillerCounts:
    """Filler sentences drawn once from the stream, with their token counts, grown on demand."""

    def __init__(self, layout: Layout, count: Callable[[str], int]):
        self._stream, self._count, self._sep = layout.filler, count, layout.separator
        self.sentences: list[str] = []
        self.cumulative: list[int] = [0]
        self._cache: dict[str, int] = {}

    def prefix_for(self, budget: int) -> int:
        """The number of leading sentences whose tokens fit best into `budget`."""
        while self.cumulative[-1] < budget:
            sentence = next(self._stream)
            if sentence not in self._cache:  # repeated filler is counted once
                self._cache[sentence] = self._count(self._sep + sentence)
            self.sentences.append(sentence)
            self.cumulative.append(self.cumulative[-1] + self._cache[sentence])
        n = bisect.bisect_right(self.cumulative, max(budget, 0)) - 1  # fits under the budget
        over = n + 1 < len(self.cumulative) and \
            self.cumulative[n + 1] - budget < budget - self.cumulative[n]
        return n + 1 if over else n  # whichever is nearer


def _slots(layout: Layout, filler: _FillerCounts, n: int, sizes: list[int]) -> list[int]:
    """For each needle, the filler index it goes before, so that the tokens ahead of it (filler and
    earlier needles) are `depth` of the haystack without it."""
    total = filler.cumulative[n] + sum(sizes)
    slots, ahead = [0] * len(sizes), 0
    for k in sorted(range(len(sizes)), key=lambda k: (layout.needles[k][0], k)):
        target = layout.needles[k][0] * (total - sizes[k]) - ahead
        slots[k] = min(range(n + 1), key=lambda i: abs(filler.cumulative[i] - target))
        ahead += sizes[k]
    return slots


def _assemble(layout: Layout, filler: _FillerCounts, n: int, sizes: list[int]) -> tuple[str, int]:
    """Haystack text of `n` filler sentences with the needles placed at their depths, and the
    character offset of the target needle."""
    slots = _slots(layout, filler, n, sizes)
    order = iter(sorted(range(len(slots)), key=lambda k: (slots[k], layout.needles[k][0], k)))
    pending = next(order, None)
    pieces: list[str] = []
    target_offset = 0
    for i in range(n + 1):
        while pending is not None and slots[pending] == i:
            if pending == 0:
                target_offset = sum(len(p) + len(layout.separator) for p in pieces)
            pieces.append(layout.needles[pending][1])
            pending = next(order, None)
        if i < n:
            pieces.append(filler.sentences[i])
    return layout.separator.join(pieces), target_offset


def fit(layout: Layout, tokenizer: PreTrainedTokenizerBase, style: PromptStyle,
        target_tokens: int, tolerance: int) -> Fitted:
    """Prompt of about `target_tokens` tokens (within `tolerance` when the budget allows it)."""
    def count(text: str) -> int:
        return count_tokens(tokenizer, style, text)

    def raw(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    filler = _FillerCounts(layout, raw)
    sizes = [raw(layout.separator + text) for _, text in layout.needles]
    empty, _ = _assemble(layout, filler, 0, sizes)
    minimum = count(render(tokenizer, style, _user_text(layout, empty), layout.answer_prefix))
    if minimum > target_tokens:
        raise ValueError(f"target_tokens={target_tokens} is too short: the question and needles "
                         f"alone take {minimum} tokens")
    budget, best = target_tokens - minimum, None
    for _ in range(MAX_REFITS):
        n = filler.prefix_for(budget)
        context, needle_offset = _assemble(layout, filler, n, sizes)
        prompt = render(tokenizer, style, _user_text(layout, context), layout.answer_prefix)
        n_tokens = count(prompt)
        if best is None or abs(n_tokens - target_tokens) < abs(best[0] - target_tokens):
            best = (n_tokens, prompt, context, needle_offset)
        if abs(n_tokens - target_tokens) <= tolerance:
            break
        budget += target_tokens - n_tokens  # tokenisation is not quite additive: correct and refit
    n_tokens, prompt, context, needle_offset = best
    start = prompt.index(context)
    before = count(prompt[:start])
    haystack = count(prompt[:start + len(context)]) - before
    needle = count(prompt[:start + needle_offset]) - before
    return Fitted(prompt, n_tokens, needle / max(haystack, 1))


def cycle(sentences: list[str]) -> Iterator[str]:
    return itertools.cycle(sentences)
