"""Task generation: deterministic from the seed, the answer at the requested depth, the prompt at the
requested length (counted with the tokenizer), chat template and thinking prompts."""

from __future__ import annotations

import re

import pytest

from eval_fixtures import THINKING_TEMPLATE, byte_tokenizer
from swaa_ext.recipes.prompts import COT_INSTRUCTION, PromptStyle
from swaa_ext.recipes.natural import MAX_CHARS, documentation_sentences
from swaa_ext.recipes.tasks import PASSKEY_FILLER, TASKS, TaskOptions, make_sample, make_samples

TOKENIZER = byte_tokenizer()


def _haystack(prompt: str) -> tuple[int, int]:
    """Character span of the haystack: between the instruction's blank line and the question's
    (found independently of the generator; the byte tokenizer makes characters tokens)."""
    start = prompt.index("\n\n", prompt.index("<|im_start|>user")) + 2
    end = prompt.rindex("\n\n", 0, prompt.rindex("<|im_end|>"))
    return start, end


def test_same_seed_same_sample_and_other_seed_differs():
    for task in TASKS:
        a = make_sample(TOKENIZER, task, 600, 0.5, index=3, seed=7)
        b = make_sample(TOKENIZER, task, 600, 0.5, index=3, seed=7)
        c = make_sample(TOKENIZER, task, 600, 0.5, index=3, seed=8)
        assert a == b
        assert a.prompt != c.prompt and a.answers != c.answers


def test_samples_differ_by_index_and_cycle_depths():
    samples = make_samples(TOKENIZER, ["passkey"], [400], [0.2, 0.8], n=4, seed=1)
    assert [s.depth for s in samples] == [0.2, 0.8, 0.2, 0.8]
    assert len({s.answers for s in samples}) == 4


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_answer_present_at_requested_depth(task, depth):
    sample = make_sample(TOKENIZER, task, 3000, depth, index=1, seed=2)
    start, end = _haystack(sample.prompt)
    haystack = sample.prompt[start:end]
    for answer in sample.answers:
        assert answer in haystack
    found = haystack.index(sample.answers[0])
    needle = max(haystack.rfind(". ", 0, found) + 2, haystack.rfind("\n", 0, found) + 1)
    where = needle / len(haystack)
    assert abs(where - depth) <= 0.05, (task, depth, where)
    assert abs(sample.measured_depth - depth) <= 0.05


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("length", [700, 1000, 3000])
def test_length_within_tolerance(task, length):
    sample = make_sample(TOKENIZER, task, length, 0.5, seed=4)
    n = len(TOKENIZER(sample.prompt, add_special_tokens=False)["input_ids"])
    assert n == sample.n_tokens
    # Filler comes in whole sentences: one byte-level essay sentence is up to ~80 tokens, so the
    # nearest fit can be ~40 off here (a real tokenizer packs ~4 characters per token); a
    # documentation sentence is up to MAX_CHARS.
    slack = MAX_CHARS // 2 if task == "library_notes" else 40
    assert abs(n - length) <= max(slack, length // 50), (n, length)


@pytest.mark.parametrize("task", ["passkey", "niah_multikey", "niah_multivalue",
                                  "variable_tracking"])
def test_natural_filler_is_documentation_prose_around_the_same_needles(task):
    natural = make_sample(TOKENIZER, task, 1500, 0.4, index=2, seed=3,
                          options=TaskOptions(filler="natural"))
    synthetic = make_sample(TOKENIZER, task, 1500, 0.4, index=2, seed=3)
    assert natural.answers == synthetic.answers  # the same draw of needles, other haystack
    start, end = _haystack(natural.prompt)
    haystack = natural.prompt[start:end]
    prose = [s for s in documentation_sentences() if s in haystack]
    assert sum(map(len, prose)) > 0.7 * len(haystack)
    assert not any(s in haystack for s in PASSKEY_FILLER)
    assert abs(natural.measured_depth - 0.4) <= 0.05
    assert abs(natural.n_tokens - 1500) <= MAX_CHARS // 2
    assert natural == make_sample(TOKENIZER, task, 1500, 0.4, index=2, seed=3,
                                  options=TaskOptions(filler="natural"))
    with pytest.raises(ValueError, match="filler"):
        TaskOptions(filler="poetry")


def test_library_notes_shares_no_template_with_the_other_families():
    sample = make_sample(TOKENIZER, "library_notes", 1200, 0.5, index=0, seed=1)
    assert re.fullmatch(sample.pattern, sample.answers[0])
    assert sample.prompt.count("(Archive record:") == TaskOptions().n_keys  # distractors
    others = [make_sample(TOKENIZER, t, 1200, 0.5, index=0, seed=1) for t in TASKS
              if t != "library_notes"]
    user = sample.prompt[sample.prompt.index("<|im_start|>user"):]
    instruction, question = user.split("\n")[1], user.rsplit("\n\n", 1)[1]
    for other in others:
        assert instruction not in other.prompt and question.split(",")[0] not in other.prompt
        assert not re.search(sample.pattern, other.prompt)


def test_too_short_a_length_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        make_sample(TOKENIZER, "niah_multikey", 200, 0.5)


def test_chat_template_and_answer_prefix():
    prefixed = PromptStyle(answer_prefix=True)
    sample = make_sample(TOKENIZER, "passkey", 300, 0.5, style=prefixed)
    assert sample.prompt.startswith("<|im_start|>user\n")
    assert sample.prompt.endswith("<|im_start|>assistant\nThe pass key is")
    plain = make_sample(TOKENIZER, "passkey", 300, 0.5,
                        style=PromptStyle(chat_template=False, answer_prefix=True))
    assert "<|im_start|>" not in plain.prompt and plain.prompt.endswith("\nThe pass key is")
    bare = make_sample(TOKENIZER, "passkey", 300, 0.5)
    assert bare.prompt.endswith("<|im_start|>assistant\n")
    assert bare.max_new_tokens > sample.max_new_tokens


def test_thinking_prompt_without_native_support_asks_for_a_think_block():
    sample = make_sample(TOKENIZER, "passkey", 400, 0.5,
                         style=PromptStyle(thinking=True, answer_prefix=True))
    assert COT_INSTRUCTION in sample.prompt
    assert sample.prompt.endswith("<|im_start|>assistant\n")  # reasoning comes before any answer
    plain = make_sample(TOKENIZER, "passkey", 400, 0.5)
    # The thinking budget comes on top of what the answer itself may take.
    assert sample.max_new_tokens == plain.max_new_tokens + PromptStyle.thinking_budget == \
        plain.max_new_tokens + 1024
    short = make_sample(TOKENIZER, "passkey", 400, 0.5,
                        style=PromptStyle(thinking=True, thinking_budget=300))
    assert short.max_new_tokens == plain.max_new_tokens + 300
    with pytest.raises(ValueError, match="thinking_budget"):
        PromptStyle(thinking=True, thinking_budget=0)


def test_thinking_switch_goes_to_a_template_that_supports_it():
    tokenizer = byte_tokenizer(THINKING_TEMPLATE)
    on = make_sample(tokenizer, "passkey", 400, 0.5, style=PromptStyle(thinking=True))
    off = make_sample(tokenizer, "passkey", 400, 0.5)
    assert COT_INSTRUCTION not in on.prompt and "<think>" not in on.prompt
    assert "<think>\n\n</think>" in off.prompt  # thinking disabled through the template


def test_eval_refuses_a_thinking_budget_below_one_token():
    from swaa_ext.recipes.eval import build_parser, run
    with pytest.raises(SystemExit, match="--thinking-budget must be >= 1"):
        run(build_parser().parse_args(["--thinking", "--thinking-budget", "0"]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        make_sample(TOKENIZER, "nope", 300, 0.5)
    with pytest.raises(ValueError, match="depth"):
        make_sample(TOKENIZER, "passkey", 300, 1.5)
