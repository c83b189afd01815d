"""Long-context tasks (RULER-style), generated locally and deterministically from a seed: passkey
retrieval, multi-key and multi-value needle-in-a-haystack, variable tracking, key-value
retrieval, and library notes (a shelf mark among archive records in running documentation
text: instruction, needle, question and answer form shared with no other family, so it can be
held out of fine-tuning entirely). Each sample is rendered with the model's tokenizer to a
requested token length. The haystacks are template sentences, or with TaskOptions.filler =
"natural" the prose of Python's reference documentation (natural.py)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from .haystack import Layout, cycle, fit
from .natural import documentation_text
from .prompts import PromptStyle

LEAD_IN_TOKENS = 24  # room for the model's own "The pass key is ..." without an answer prefix
PASSKEY_FILLER = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                  "There and back again."]
_ADJ = ["quiet", "golden", "bitter", "hollow", "ancient", "rapid", "gentle", "crimson", "frozen",
        "distant", "humble", "silver", "restless", "narrow", "brave", "pale"]
_NOUN = ["river", "lantern", "harbor", "meadow", "falcon", "engine", "garden", "mirror", "valley",
         "tower", "orchard", "compass", "glacier", "market", "violin", "bridge"]
_VERB = ["follows", "watches", "remembers", "crosses", "carries", "admires", "avoids", "shelters",
         "measures", "answers"]
_PLACE = ["old town", "northern coast", "village square", "mountain pass", "quiet library",
          "busy station", "eastern field", "harbor wall"]
_VOLUME = ["Orion", "Lyra", "Cygnus", "Perseus", "Andromeda", "Cassiopeia", "Draco", "Pegasus",
           "Aquila", "Hydra", "Phoenix", "Carina", "Vela", "Auriga", "Corvus", "Lupus"]
FILLERS = ("synthetic", "natural")
# Families with a haystack of their own, whatever TaskOptions.filler says (it chooses the others').
OWN_HAYSTACK = {"kv_retrieval": "key-value pairs", "library_notes": "natural"}


def haystack_of(task: str, filler: str) -> str:
    """What a task's haystack is made of under TaskOptions.filler = `filler`."""
    return OWN_HAYSTACK.get(task, filler)


@dataclass(frozen=True)
class TaskOptions:
    digits: int = 5      # length of numeric answers
    n_keys: int = 4      # multi-key NIAH: needles in the haystack, one asked for
    n_values: int = 3    # multi-value NIAH: values for the one key
    hops: int = 3        # variable tracking: assignments after the first
    # Haystack text of passkey, the NIAH families and variable tracking: their template
    # sentences, or "natural" documentation prose (kv_retrieval's haystack is always key-value
    # pairs, library_notes' always documentation prose).
    filler: str = "synthetic"

    def __post_init__(self):
        if self.filler not in FILLERS:
            raise ValueError(f"filler must be one of {FILLERS}, got {self.filler!r}")


@dataclass(frozen=True)
class Sample:
    task: str
    index: int
    target_tokens: int
    depth: float             # requested depth of the target needle
    measured_depth: float    # where it landed, in tokens
    prompt: str
    n_tokens: int
    answers: tuple[str, ...]
    pattern: str             # regular expression for one answer token
    exclude: tuple[str, ...]  # strings the question quotes, which are never an answer
    max_new_tokens: int


@dataclass(frozen=True)
class _Spec:
    layout: Layout
    answers: tuple[str, ...]
    pattern: str
    exclude: tuple[str, ...]
    max_new_tokens: int


def _number(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10 ** digits))


def _distinct(rng: random.Random, n: int, draw: Callable[[random.Random], str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        value = draw(rng)
        if value not in out:
            out.append(value)
    return out


def _essay(rng: random.Random) -> Iterator[str]:
    while True:
        yield (f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_VERB)} the "
               f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} near the {rng.choice(_PLACE)}.")


def _filler(rng: random.Random, opts: TaskOptions, synthetic: Iterator[str]) -> Iterator[str]:
    """The task's own filler, or documentation prose when the options ask for natural text."""
    return documentation_text(rng) if opts.filler == "natural" else synthetic


def _passkey(rng: random.Random, depth: float, opts: TaskOptions) -> _Spec:
    key = _number(rng, opts.digits)
    layout = Layout(
        instruction="There is an important piece of information hidden inside a lot of irrelevant "
                    "text. Find it and memorize it. I will quiz you about it.",
        question="What is the pass key?", answer_prefix="The pass key is",
        needles=((depth, f"The pass key is {key}. Remember it. {key} is the pass key."),),
        filler=_filler(rng, opts, cycle(PASSKEY_FILLER)))
    return _Spec(layout, (key,), rf"\d{{{opts.digits}}}", (), opts.digits + 6)


_MAGIC_INSTRUCTION = ("Some special magic numbers are hidden within the following text. Make sure "
                      "to memorize them. I will quiz you about the numbers afterwards.")


def _niah_multikey(rng: random.Random, depth: float, opts: TaskOptions) -> _Spec:
    keys = _distinct(rng, opts.n_keys, lambda r: f"{r.choice(_ADJ)}-{r.choice(_NOUN)}")
    values = _distinct(rng, opts.n_keys, lambda r: _number(r, opts.digits))
    depths = [depth] + [rng.random() for _ in keys[1:]]
    needles = tuple((d, f"One of the special magic numbers for {k} is: {v}.")
                    for d, k, v in zip(depths, keys, values))
    layout = Layout(
        instruction=_MAGIC_INSTRUCTION,
        question=f"What is the special magic number for {keys[0]} mentioned in the provided text?",
        answer_prefix=f"The special magic number for {keys[0]} mentioned in the provided text is",
        needles=needles, filler=_filler(rng, opts, _essay(rng)))
    return _Spec(layout, (values[0],), rf"\d{{{opts.digits}}}", (), opts.digits + 8)


def _niah_multivalue(rng: random.Random, depth: float, opts: TaskOptions) -> _Spec:
    key = f"{rng.choice(_ADJ)}-{rng.choice(_NOUN)}"
    values = _distinct(rng, opts.n_values, lambda r: _number(r, opts.digits))
    depths = [depth] + [rng.random() for _ in values[1:]]
    needles = tuple((d, f"One of the special magic numbers for {key} is: {v}.")
                    for d, v in zip(depths, values))
    layout = Layout(
        instruction=_MAGIC_INSTRUCTION,
        question=f"What are all the special magic numbers for {key} mentioned in the provided text?",
        answer_prefix=f"The special magic numbers for {key} mentioned in the provided text are",
        needles=needles, filler=_filler(rng, opts, _essay(rng)))
    return _Spec(layout, tuple(values), rf"\d{{{opts.digits}}}", (),
                 opts.n_values * (opts.digits + 3) + 8)


def _variable_tracking(rng: random.Random, depth: float, opts: TaskOptions) -> _Spec:
    names = _distinct(rng, opts.hops + 1, lambda r: "".join(r.choices(string.ascii_uppercase, k=5)))
    value = _number(rng, opts.digits)
    statements = [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in
                                                    zip(names, names[1:])]
    # The chain starts at `depth` and keeps its order through the rest of the haystack.
    depths = [depth + (1.0 - depth) * i / len(statements) for i in range(len(statements))]
    layout = Layout(
        instruction="Memorize and track the chain of variable assignments hidden in the following "
                    "text.",
        question=f"Find all variables that are assigned the value {value} in the text above.",
        answer_prefix=f"Answer: According to the chain of variable assignments in the text above, "
                      f"{len(names)} variables are assigned the value {value}, they are:",
        needles=tuple(zip(depths, statements)), filler=_filler(rng, opts, cycle(PASSKEY_FILLER)))
    return _Spec(layout, tuple(names), "[A-Z]{5}", (), 6 * len(names) + 8)


def _hex(rng: random.Random) -> str:
    return "".join(rng.choices("0123456789abcdef", k=8))


def _kv_retrieval(rng: random.Random, depth: float, opts: TaskOptions) -> _Spec:
    key, value = _hex(rng), _hex(rng)

    def pairs() -> Iterator[str]:  # the haystack is other key-value pairs
        while True:
            yield f"{_hex(rng)} -> {_hex(rng)}"

    layout = Layout(
        instruction="Below is a list of keys, each followed by its value. Find the value of the key "
                    "I ask about.",
        question=f"What is the value of key {key}?", answer_prefix=f"The value of key {key} is",
        needles=((depth, f"{key} -> {value}"),), filler=pairs(), separator="\n")
    return _Spec(layout, (value,), "[0-9a-f]{8}", (key,), 16)


def _shelf_mark(rng: random.Random) -> str:
    letters = "".join(rng.choices(string.ascii_uppercase, k=2))
    return f"{letters}-{rng.randrange(100, 1000)}"


def _library_notes(rng: random.Random, depth: float, opts: TaskOptions) -> _Spec:
    # Running documentation text with a few archive records in it, one asked for; the others
    # (opts.n_keys - 1 of them) are distractors of the same form.
    volumes = _distinct(rng, opts.n_keys, lambda r: r.choice(_VOLUME))
    marks = _distinct(rng, opts.n_keys, _shelf_mark)
    depths = [depth] + [rng.random() for _ in volumes[1:]]
    needles = tuple((d, f"(Archive record: the {v} volume is kept on shelf {m}.)")
                    for d, v, m in zip(depths, volumes, marks))
    layout = Layout(
        instruction="These pages of a technical manual were scanned together with a few archive "
                    "records. Read them carefully; a question follows.",
        question=f"According to the archive records, on which shelf is the {volumes[0]} volume "
                 "kept?",
        answer_prefix=f"The {volumes[0]} volume is kept on shelf",
        needles=needles, filler=documentation_text(rng))
    return _Spec(layout, (marks[0],), r"[A-Z]{2}-\d{3}", (), 12)


TASKS: dict[str, Callable[[random.Random, float, TaskOptions], _Spec]] = {
    "passkey": _passkey,
    "niah_multikey": _niah_multikey,
    "niah_multivalue": _niah_multivalue,
    "variable_tracking": _variable_tracking,
    "kv_retrieval": _kv_retrieval,
    "library_notes": _library_notes,
}


def sample_rng(seed: int, task: str, target_tokens: int, index: int) -> random.Random:
    """One independent stream per sample: the same seed gives the same sample on any machine
    (str seeds hash with SHA-512, not with Python's salted hash)."""
    return random.Random(f"{seed}/{task}/{target_tokens}/{index}")


def make_sample(tokenizer: PreTrainedTokenizerBase, task: str, target_tokens: int, depth: float,
                index: int = 0, seed: int = 0, options: TaskOptions = TaskOptions(),
                style: PromptStyle = PromptStyle(), tolerance: int | None = None) -> Sample:
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be a fraction in [0, 1], got {depth}")
    spec = TASKS[task](sample_rng(seed, task, target_tokens, index), depth, options)
    tol = max(8, target_tokens // 50) if tolerance is None else tolerance
    fitted = fit(spec.layout, tokenizer, style, target_tokens, tol)
    # The model writes the lead-in itself unless the prompt ends with it.
    new_tokens = spec.max_new_tokens + (0 if style.prefixed else LEAD_IN_TOKENS)
    new_tokens += style.thinking_budget if style.thinking else 0
    return Sample(task, index, target_tokens, depth, fitted.needle_depth, fitted.prompt,
                  fitted.n_tokens, spec.answers, spec.pattern, spec.exclude, new_tokens)


def make_samples(tokenizer: PreTrainedTokenizerBase, tasks: Sequence[str], lengths: Sequence[int],
                 depths: Sequence[float], n: int, seed: int = 0,
                 options: TaskOptions = TaskOptions(),
                 style: PromptStyle = PromptStyle()) -> list[Sample]:
    """`n` samples per (task, length); sample i puts its needle at depths[i % len(depths)]."""
    return [make_sample(tokenizer, task, length, depths[i % len(depths)], i, seed, options, style)
            for task in tasks for length in lengths for i in range(n)]
