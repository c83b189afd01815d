"""Fixtures of the vLLM plugin tests (run by `make test-vllm`, in .venv-vllm; the main test run
does not collect this folder, tests/conftest.py). SmolLM2-135M-Instruct as safetensors, chat
prompts of ~300 tokens (so a 64-token window slides), and greedy references from the adapted
transformers model."""

from __future__ import annotations

import gc
import importlib.util
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# In-process engine (starts in seconds instead of about a minute), no network, a small KV cache.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import swaa_ext  # noqa: E402

# The two SWAA recipes served here: window 64 (it slides on every prompt), 4 sinks.
FA_DECODE = swaa_ext.SWAAConfig(window=64, sinks=4, full_attention_layers="every_4th",
                                fa_decode=True)
WINDOW_ONLY = swaa_ext.SWAAConfig(window=64, sinks=4, full_attention_layers="odd")

NEW_TOKENS = 24  # min = max: generation never stops early at EOS, in vLLM and transformers alike
LOGPROB_TOLERANCE = 5e-4  # measured: at most 5.3e-5 (fp32); a misplaced boundary: 0.38

@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The Makefile's checkpoint (SWAA_VLLM_MODEL), or one made here by the same tool."""
    root = Path(__file__).resolve().parents[2]
    folder = os.environ.get("SWAA_VLLM_MODEL")
    if folder is not None:
        return Path(folder)
    spec = importlib.util.spec_from_file_location("smollm2_checkpoint",
                                                  root / "tools" / "smollm2_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.smollm2_checkpoint(root / ".cache-vllm" / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def saved_window_only(model_dir, tmp_path_factory):
    """A checkpoint saved after swaa_ext.adapt(WINDOW_ONLY): its config.json carries `swaa`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("adapted")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    swaa_ext.adapt(model, WINDOW_ONLY)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def saved_merged(model_dir, tmp_path_factory):
    """What the fine-tuning recipe writes as merged/: SmolLM2 adapted with FA_DECODE, a LoRA
    (peft, random and non-zero) merged into it, saved by the recipe's save_merged."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from swaa_ext.recipes.finetune.train import save_merged

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("merged")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    swaa_ext.adapt(model, FA_DECODE)
    lora = LoraConfig(r=8, lora_alpha=4, target_modules=["q_proj", "v_proj", "up_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora).merge_and_unload().eval()
    save_merged(model, AutoTokenizer.from_pretrained(model_dir), folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def prompts(tokenizer) -> list[list[int]]:
    """Three chat prompts of different lengths (~250-370 tokens), as token ids."""
    out = []
    for days, step in ((18, 3), (22, 5), (26, 7)):
        story = " ".join(f"Day {i}: the robot counted {i * step} stars." for i in range(days))
        message = [{"role": "user", "content": f"{story} What did the robot count on day {step}?"}]
        text = tokenizer.apply_chat_template(message, add_generation_prompt=True, tokenize=False)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


@dataclass
class Continuation:
    """Greedy tokens and the log-probability each had when it was chosen (raw logits)."""

    tokens: list[int]
    logprobs: list[float]


def assert_same(got: list[Continuation], expected: list[Continuation]) -> None:
    """The same tokens, and log-probabilities within fp32 noise: a wrong mask on even a few
    positions moves them far more than that, even where the greedy tokens survive it."""
    assert [c.tokens for c in got] == [c.tokens for c in expected]
    for g, e in zip(got, expected):
        assert g.logprobs == pytest.approx(e.logprobs, abs=LOGPROB_TOLERANCE)


class Reference:
    """Greedy continuations from transformers (the model adapted with swaa_ext.adapt, or not),
    one prompt at a time, cached per settings."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.cache: dict = {}

    def __call__(self, config, prompts: list[list[int]]) -> list[Continuation]:
        key = (None if config is None else tuple(sorted(config.to_dict().items(), key=str)),
               tuple(map(tuple, prompts)))
        if key not in self.cache:
            if config is not None:
                swaa_ext.adapt(self.model, config)
            try:
                self.cache[key] = [self._generate(ids) for ids in prompts]
            finally:
                if config is not None:
                    swaa_ext.restore(self.model)
        return self.cache[key]

    def _generate(self, ids: list[int]) -> Continuation:
        torch = self.torch
        x = torch.tensor([ids])
        with torch.no_grad():
            out = self.model.generate(x, attention_mask=torch.ones_like(x),
                                      max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                      do_sample=False, output_logits=True,
                                      return_dict_in_generate=True)
        new = out.sequences[0, len(ids):].tolist()
        logprobs = [torch.log_softmax(step[0].double(), -1)[t].item()
                    for step, t in zip(out.logits, new)]
        return Continuation(new, logprobs)


@pytest.fixture(scope="session")
def reference(model_dir) -> Reference:
    return Reference(model_dir)


@contextmanager
def engine(model, **kwargs):
    """One vLLM engine (fp32, eager, in-process), closed afterwards so the next can start."""
    from vllm import LLM

    settings = dict(dtype="float32", max_model_len=1024, max_num_seqs=4, enforce_eager=True,
                    enable_prefix_caching=False, seed=0)
    llm = LLM(model=str(model), **{**settings, **kwargs})
    try:
        yield llm
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def generate(llm, prompts: list[list[int]]) -> list:
    """vLLM's greedy RequestOutputs for the prompts (token ids), in order."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS,
                            logprobs=0)
    return llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)


def continuations(outputs) -> list[Continuation]:
    """Tokens and their log-probabilities from vLLM's RequestOutputs."""
    out = []
    for request in outputs:
        tokens = list(request.outputs[0].token_ids)
        steps = request.outputs[0].logprobs
        out.append(Continuation(tokens, [step[t].logprob for step, t in zip(steps, tokens)]))
    return out


def scheduler_of(llm):
    """vLLM's scheduler inside an in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    return llm.llm_engine.engine_core.engine_core.scheduler


def step_through(llm, prompts: list[list[int]], observe, max_tokens: int = NEW_TOKENS) -> list:
    """Adds the prompts as requests "0", "1", ... and steps the engine until all are done,
    calling `observe(scheduler)` after every step; returns the finished RequestOutputs in
    prompt order (greedy, `max_tokens` tokens each, with their log-probabilities)."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, min_tokens=max_tokens,
                            logprobs=0)
    engine_ = llm.llm_engine
    for i, ids in enumerate(prompts):
        engine_.add_request(str(i), {"prompt_token_ids": ids}, params)
    done = {}
    while engine_.has_unfinished_requests():
        for out in engine_.step():
            if out.finished:
                done[out.request_id] = out
        observe(scheduler_of(llm))
    return [next(out for rid, out in done.items() if rid.split("-")[0] == str(i))
            for i in range(len(prompts))]
