"""Answer extraction and exact-match scoring, and the Wilson score interval for accuracies."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def strip_thinking(text: str) -> str:
    """The part of a completion that holds the answer: after the last reasoning block.

    An unclosed `<think>` means the model never finished reasoning, so there is no answer."""
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in text:
        return ""
    return text


def extract_candidates(text: str, pattern: str, exclude: Sequence[str] = ()) -> list[str]:
    """Distinct whole-token matches of `pattern` in order of appearance, minus `exclude`
    (e.g. the key that the question itself quotes)."""
    seen: list[str] = []
    for match in re.finditer(rf"(?<![0-9A-Za-z]){pattern}(?![0-9A-Za-z])", text):
        value = match.group(0)
        if value not in seen and value not in exclude:
            seen.append(value)
    return seen


def exact_match(completion: str, answers: Sequence[str], pattern: str,
                exclude: Sequence[str] = ()) -> tuple[bool, list[str]]:
    """Exact match on the extracted answer: the first len(answers) distinct candidates after the
    reasoning block must be exactly the expected set. Returns (correct, prediction)."""
    candidates = extract_candidates(strip_thinking(completion), pattern, exclude)
    prediction = candidates[:len(answers)]
    return sorted(prediction) == sorted(answers), prediction


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well behaved at 0 and n, unlike Wald)."""
    if n <= 0:
        raise ValueError(f"n must be a positive sample count, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact ends at 0 and n (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value for paired right/wrong outcomes: the probability, under
    "either of the two is equally likely to be the one that is right" on a discordant pair, of
    a split of the discordant pairs at least this uneven. 1.0 with no discordant pair."""
    if only_first < 0 or only_second < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_first}, {only_second}")
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)
