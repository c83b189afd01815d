"""The calibration set of the layer selection (select.py): prompts with a teacher-forced answer.

An example is prompt tokens, target tokens after them, and which target tokens are scored. The
synthetic task families (tasks.py) give prompt = the task's prompt as the evaluation renders it
(no answer prefix), target = the task's lead-in and the gold answer ("The pass key is 12345"),
scored on the answer tokens only: those are the ones that need the distant needle, while the
lead-in is predictable from the question. "natural" is plain documentation prose (natural.py): the
first `length` tokens are the prompt and the next CONTINUATION tokens, all scored, the target.
Under FA decode the whole target sees the whole context, as generated tokens would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from .natural import documentation_text
from .prompts import PromptStyle, encode
from .tasks import TASKS, TaskOptions, make_sample, sample_rng

NATURAL = "natural"
FAMILIES = (*TASKS, NATURAL)
DEFAULT_FAMILIES = ("passkey", "niah_multikey", "variable_tracking", "kv_retrieval",
                    "library_notes", NATURAL)
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)  # example i of a family puts its needle at DEPTHS[i % 5]
CONTINUATION = 32


@dataclass(frozen=True)
class Example:
    family: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    score_from: int  # target_ids[score_from:] are scored

    def __post_init__(self):
        if not self.prompt_ids or not 0 <= self.score_from < len(self.target_ids):
            raise ValueError(f"{self.family} example: needs prompt tokens and at least one scored "
                             f"target token (score_from={self.score_from}, "
                             f"{len(self.target_ids)} target tokens)")


def _tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def task_example(tokenizer: PreTrainedTokenizerBase, task: str, length: int, index: int,
                 seed: int, options: TaskOptions, style: PromptStyle) -> Example:
    depth = DEPTHS[index % len(DEPTHS)]
    sample = make_sample(tokenizer, task, length, depth, index, seed, options, style)
    # The sample keeps its answers but not its lead-in: the same draw as make_sample's gives it.
    spec = TASKS[task](sample_rng(seed, task, length, index), depth, options)
    lead_in = spec.layout.answer_prefix
    head, answer = _tokens(tokenizer, lead_in), _tokens(tokenizer, " " + ", ".join(sample.answers))
    return Example(task, tuple(encode(tokenizer, style, sample.prompt)), head + answer, len(head))


def natural_example(tokenizer: PreTrainedTokenizerBase, length: int, index: int,
                    seed: int) -> Example:
    stream = documentation_text(random.Random(f"{seed}/{NATURAL}/{length}/{index}"))
    need, text, ids, chars = length + CONTINUATION, "", [], 4 * (length + CONTINUATION)
    while len(ids) < need:  # tokenised once per doubling of the text, not once per sentence
        while len(text) < chars:
            text += (" " if text else "") + next(stream)
        ids, chars = tokenizer(text)["input_ids"], 2 * chars
    return Example(NATURAL, tuple(ids[:length]), tuple(ids[length:need]), 0)


def calibration_set(tokenizer: PreTrainedTokenizerBase, families: Sequence[str], length: int,
                    samples: int, seed: int, options: TaskOptions = TaskOptions(),
                    style: PromptStyle = PromptStyle()) -> list[Example]:
    """`samples` examples of each family at about `length` prompt tokens."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown calibration families {unknown}; choose from {list(FAMILIES)}")
    if style.thinking or style.answer_prefix:
        raise ValueError("the calibration teacher-forces the lead-in itself: use a PromptStyle "
                         "without thinking or answer_prefix")
    return [natural_example(tokenizer, length, i, seed) if family == NATURAL
            else task_example(tokenizer, family, length, i, seed, options, style)
            for family in families for i in range(samples)]
