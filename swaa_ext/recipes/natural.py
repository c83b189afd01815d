"""Natural filler text that needs no download: the prose of the Python language reference that
every CPython installation ships (`pydoc_data.topics`, the text `help("assignment")` shows).

The synthetic tasks fill their haystacks with template sentences; a model tuned only on those
learns the templates. This text gives the same tasks (TaskOptions.filler = "natural") and the
held-out `library_notes` family haystacks of real, varied English. Only plain prose is used:
paragraphs without indented lines (code, grammar rules, lists), split into sentences of
MIN_CHARS..MAX_CHARS characters; sentences with a run of four digits or five capitals are left
out, so no filler sentence looks like a numeric or variable-name answer. The sentences depend on
the Python minor version (its documentation), not on anything else.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterator

MIN_CHARS, MAX_CHARS = 20, 240
_EMPHASIS = re.compile(r"\*+([^*\s][^*]*?)\*+")  # *word* / **word** markup -> word
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_LOOKS_LIKE_AN_ANSWER = re.compile(r"\d{4}|[A-Z]{5}")


@functools.cache
def documentation_sentences() -> tuple[str, ...]:
    """The prose sentences of the reference topics, in topic order (sorted by name)."""
    from pydoc_data.topics import topics

    sentences = []
    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            lines = paragraph.splitlines()
            if not lines or any(line.startswith((" ", "\t")) for line in lines):
                continue
            text = _EMPHASIS.sub(r"\1", " ".join(line.strip() for line in lines))
            for sentence in _SENTENCE_END.split(text):
                if (MIN_CHARS <= len(sentence) <= MAX_CHARS and sentence.endswith(".")
                        and "*" not in sentence and "::" not in sentence
                        and not _LOOKS_LIKE_AN_ANSWER.search(sentence)):
                    sentences.append(sentence)
    if not sentences:  # (a Python built without its documentation topics)
        raise RuntimeError("pydoc_data.topics holds no prose: natural filler is unavailable")
    return tuple(sentences)


def documentation_text(rng: random.Random) -> Iterator[str]:
    """An endless stream of consecutive documentation sentences from a start drawn from `rng`
    (wrapping around at the end), so a haystack reads as running text."""
    sentences = documentation_sentences()
    i = rng.randrange(len(sentences))
    while True:
        yield sentences[i]
        i = (i + 1) % len(sentences)
