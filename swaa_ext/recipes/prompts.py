"""Turning a task's text into the exact prompt the model sees: chat template (when the tokenizer
has one), thinking-style prompting, the answer prefix, and token counting with the model's tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

COT_INSTRUCTION = ("First think step by step inside <think> and </think>, "
                   "then give the final answer after </think>.")


@dataclass(frozen=True)
class PromptStyle:
    chat_template: bool = True  # use the tokenizer's chat template when it has one
    thinking: bool = False      # chain-of-thought: reason first, answer after the reasoning block
    # Start the assistant turn with the task's answer prefix (RULER-style). Off by default: then
    # the model writes the lead-in itself, and the answer tokens are generated ones (which see the
    # whole context under FA decode). With it, the first answer token is predicted by the last
    # prompt token, which always slides.
    answer_prefix: bool = False
    # With thinking: new tokens the model may spend reasoning, on top of the task's answer allowance.
    thinking_budget: int = 1024

    def __post_init__(self) -> None:
        if self.thinking_budget < 1:
            raise ValueError(f"thinking_budget must be >= 1 token, got {self.thinking_budget}")

    @property
    def prefixed(self) -> bool:
        """Whether the prompt ends with the answer prefix: never after thinking, which comes
        first (the model then writes the lead-in itself)."""
        return self.answer_prefix and not self.thinking


def uses_template(tokenizer: PreTrainedTokenizerBase, style: PromptStyle) -> bool:
    return style.chat_template and bool(getattr(tokenizer, "chat_template", None))


def template_supports_thinking(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Qwen3-style templates take an `enable_thinking` switch and open the reasoning block themselves."""
    return "enable_thinking" in (getattr(tokenizer, "chat_template", None) or "")


def render(tokenizer: PreTrainedTokenizerBase, style: PromptStyle, user: str,
           answer_prefix: str) -> str:
    """The full prompt text. With thinking the model must reason before any answer prefix."""
    native_thinking = style.thinking and template_supports_thinking(tokenizer)
    if style.thinking and not native_thinking:
        user = f"{user}\n{COT_INSTRUCTION}"
    if uses_template(tokenizer, style):
        extra = {"enable_thinking": style.thinking} if template_supports_thinking(tokenizer) else {}
        text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True, **extra)
    else:
        text = f"{user}\n"
    return text + answer_prefix if style.prefixed else text


def encode(tokenizer: PreTrainedTokenizerBase, style: PromptStyle, text: str) -> list[int]:
    """Token ids of a rendered prompt: a chat template already holds its special tokens."""
    return tokenizer(text, add_special_tokens=not uses_template(tokenizer, style))["input_ids"]


def count_tokens(tokenizer: PreTrainedTokenizerBase, style: PromptStyle, text: str) -> int:
    return len(encode(tokenizer, style, text))
