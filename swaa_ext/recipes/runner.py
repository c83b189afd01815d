"""Runs every sample under every grid configuration, greedy, and records accuracy, prefill time,
decode time and memory. Configurations are interleaved per sample, so that the load of a shared
machine drifts into every configuration alike and per-sample time ratios stay fair."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import hf
from .grid import GridEntry
from .measure import PeakMemory, StepClock, cache_bytes
from .prompts import PromptStyle, encode
from .scoring import exact_match
from .tasks import Sample


@dataclass
class Record:
    """One (configuration, sample) run."""
    config: str
    task: str
    index: int
    target_tokens: int
    n_tokens: int
    depth: float
    answers: list[str]
    prediction: list[str]
    correct: bool
    completion: str
    window: int | None
    prefill_s: float
    decode_s: float
    new_tokens: int
    peak_mem_bytes: int | None
    kv_cache_bytes: int
    # An answer of the right form: as many answer-shaped tokens (the task's pattern, e.g. a
    # 5-digit number) as answers asked for, right or wrong. None: not recorded.
    well_formed: bool | None = None


class ConfigSwitch:
    """Puts the model into one grid configuration at a time (restore, then adapt)."""

    def __init__(self, model: PreTrainedModel):
        self.model, self.adapted = model, False

    def set(self, entry: GridEntry, context_tokens: int) -> int | None:
        if self.adapted:
            hf.restore(self.model)
            self.adapted = False
        config = entry.swaa_config(context_tokens)
        if config is not None:
            hf.adapt(self.model, config)
            self.adapted = True
        return None if config is None or entry.window_fraction is None else config.window

    def reset(self) -> None:
        if self.adapted:
            hf.restore(self.model)
            self.adapted = False


def timed_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   ids: torch.Tensor, max_new_tokens: int,
                   memory: PeakMemory) -> tuple[list[int], float, float, int]:
    """Greedy generation: (new token ids, prefill s, decode s, KV-cache bytes)."""
    clock = StepClock()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode(), memory.track():
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, logits_processor=[clock],
                             pad_token_id=pad, return_dict_in_generate=True,
                             temperature=None, top_p=None, top_k=None)
        if ids.device.type == "cuda":
            torch.cuda.synchronize(ids.device)
        end = time.perf_counter()
    first = clock.stamps[0] if clock.stamps else end
    return (out.sequences[0, ids.shape[1]:].tolist(), first - start, end - first,
            cache_bytes(out.past_key_values))


def run_grid(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, samples: Sequence[Sample],
             grid: Sequence[GridEntry], style: PromptStyle = PromptStyle(),
             warmup: bool = True, progress: bool = True) -> list[Record]:
    """Every sample under every configuration; the model is left as it was given."""
    device = next(model.parameters()).device
    memory, switch = PeakMemory(device), ConfigSwitch(model)
    records: list[Record] = []
    encoded = [torch.tensor([encode(tokenizer, style, s.prompt)], device=device) for s in samples]
    try:
        if warmup and samples:  # first calls pay for lazy initialisation: keep it out of the timings
            short = encoded[0][:, -min(64, encoded[0].shape[1]):]
            for entry in grid:
                switch.set(entry, short.shape[1])
                timed_generate(model, tokenizer, short, 2, memory)
        bar = tqdm(total=len(samples) * len(grid), desc="eval", disable=not progress)
        for sample, ids in zip(samples, encoded):
            for entry in grid:
                window = switch.set(entry, ids.shape[1])
                new, prefill, decode, kv = timed_generate(model, tokenizer, ids,
                                                          sample.max_new_tokens, memory)
                completion = tokenizer.decode(new, skip_special_tokens=True)
                correct, prediction = exact_match(completion, sample.answers, sample.pattern,
                                                  sample.exclude)
                records.append(Record(entry.name, sample.task, sample.index, sample.target_tokens,
                                      ids.shape[1], sample.depth, list(sample.answers), prediction,
                                      correct, completion, window, prefill, decode, len(new),
                                      memory.peak_bytes, kv,
                                      well_formed=len(prediction) == len(sample.answers)))
                bar.set_postfix_str(entry.name, refresh=False)
                bar.update()
        bar.close()
    finally:
        switch.reset()
    return records
