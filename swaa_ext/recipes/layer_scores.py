"""Per-layer sensitivity for the layer selection (select.py; docs/layer-selection.md): how far the
model's answer distributions move when one layer alone slides.

For every calibration example and every layer L, with the model adapted by swaa_ext.adapt:
  kl[L]        KL(P_full || P_L), averaged over the example's scored target tokens, where P_full is
               the next-token distribution with every layer on full attention and P_L the one
               with layer L alone on sinks + window (the recipe's FA decode for the target);
  nll_rise[L]  the gold target tokens' mean NLL under P_L minus under P_full.
Plus the same two numbers with every layer sliding, for scale.

Two things keep it cheap. Resuming: layers before L compute the same in both runs, so the run
for L starts from the full run's input to layer L (captured with forward pre-hooks) and runs
layers L.. only, about (N + 1) / 2 whole forwards per example instead of N. The first batch checks
that a resumed forward gives the whole forward's logits; a model whose forward does not allow it
(one that transforms inputs_embeds) gets whole forwards. Caching: each example's numbers are
appended to a JSONL file under a key of everything they depend on (MeasurementCache), so a rerun
(another budget, an interrupted run) measures only what is new. Examples are packed into one
row per batch (the fine-tuning collator: one varlen kernel call per layer, each example with its
own sinks, window and FA decode boundary).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.utils import logging

from .. import __version__, hf
from ..config import SWAAConfig
from .calibration import Example
from .finetune.data import PackedCollator

logger = logging.get_logger(__name__)

METHOD = "kl-one-layer-slides/1"  # bump when what is measured changes: old cache lines then miss
RESUME_TOLERANCE = 1e-3  # max |log-prob| difference between a resumed and a whole forward


@dataclass(frozen=True)
class ExampleScores:
    kl: list[float]          # per layer
    nll_rise: list[float]    # per layer
    full_nll: float          # gold target NLL with every layer full
    all_sliding_kl: float
    all_sliding_nll_rise: float


def model_fingerprint(model: PreTrainedModel) -> str:
    """A digest of what the numbers depend on in the model: its weights, its config and the
    versions of the code that runs it."""
    digest = hashlib.sha256()
    config = model.config.to_dict()
    config.pop("swaa", None)
    digest.update(json.dumps([config, __version__, torch.__version__, transformers.__version__],
                             sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class MeasurementCache:
    """Per-example scores in a JSONL file, one line per example, keyed by model, recipe, device
    and the example's tokens. A None path caches nothing."""

    def __init__(self, path: Path | None):
        self.path, self.rows = path, {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError, KeyError):  # a cut last line
                    row = json.loads(line)
                    self.rows[row["key"]] = row

    @staticmethod
    def key(fingerprint: str, recipe: SWAAConfig, device: str, example: Example) -> str:
        payload = [METHOD, fingerprint, recipe.window, recipe.sinks, recipe.fa_decode, device,
                   list(example.prompt_ids), list(example.target_ids), example.score_from]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]

    def get(self, key: str) -> ExampleScores | None:
        row = self.rows.get(key)
        return None if row is None else ExampleScores(**row["scores"])

    def put(self, key: str, scores: ExampleScores) -> None:
        self.rows[key] = {"key": key, "scores": asdict(scores)}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(self.rows[key]) + "\n")


@contextlib.contextmanager
def _capture_layer_inputs(layers: torch.nn.ModuleList) -> Iterator[list]:
    inputs: list = [None] * len(layers)

    def hook(index):
        def grab(module, args, kwargs):
            inputs[index] = args[0] if args else kwargs["hidden_states"]
        return grab

    handles = [layer.register_forward_pre_hook(hook(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _only_layers_from(decoder: torch.nn.Module, start: int) -> Iterator[None]:
    """The decoder runs layers start.. only (each keeps its layer_idx, so its SWAA setting)."""
    layers = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(layers)[start:])
    try:
        yield
    finally:
        decoder.layers = layers


class _Runner:
    """One packed batch: its forwards under a given set of full layers, as log-probabilities at
    the positions that predict the scored target tokens."""

    def __init__(self, model: PreTrainedModel, recipe: SWAAConfig, examples: Sequence[Example]):
        self.model, self.recipe = model, recipe
        self.decoder = model.get_decoder()
        self.num_layers = len(self.decoder.layers)
        device = next(model.parameters()).device
        ids = [[*e.prompt_ids, *e.target_ids] for e in examples]
        features = [{"input_ids": x, "labels": x, "prompt_len": len(e.prompt_ids)}
                    for x, e in zip(ids, examples)]
        batch = PackedCollator(recipe.fa_decode)(features)
        batch.pop("labels")
        self.batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        positions, gold, self.spans, offset = [], [], [], 0
        for e in examples:
            start = len(positions)
            for j in range(e.score_from, len(e.target_ids)):
                positions.append(offset + len(e.prompt_ids) + j - 1)  # predicts target token j
                gold.append(e.target_ids[j])
            self.spans.append((start, len(positions)))
            offset += len(e.prompt_ids) + len(e.target_ids)
        self.keep = torch.tensor(positions, device=device)
        self.gold = torch.tensor(gold, device=device)
        self.layer_inputs: list | None = None

    def _adapt(self, full: Sequence[int]) -> None:
        hf.adapt(self.model, SWAAConfig(window=self.recipe.window, sinks=self.recipe.sinks,
                                        full_attention_layers=list(full),
                                        fa_decode=self.recipe.fa_decode))

    def _logprobs(self, **inputs) -> torch.Tensor:
        logits = self.model(**inputs, logits_to_keep=self.keep, use_cache=False).logits[0]
        return torch.log_softmax(logits.double(), dim=-1)

    def full(self) -> torch.Tensor:
        """Every layer full; keeps each layer's input for resumed()."""
        self._adapt(range(self.num_layers))
        with _capture_layer_inputs(self.decoder.layers) as inputs:
            out = self._logprobs(**self.batch)
        self.layer_inputs = inputs
        return out

    def sliding(self, layer: int | None, resume: bool) -> torch.Tensor:
        """Layer `layer` alone slides (None: every layer slides); with `resume`, from the full
        run's input to that layer."""
        self._adapt([i for i in range(self.num_layers) if layer is not None and i != layer])
        return self.whole() if not resume or layer is None else self.resumed(layer)

    def whole(self) -> torch.Tensor:
        return self._logprobs(**self.batch)

    def resumed(self, layer: int) -> torch.Tensor:
        inputs = {k: v for k, v in self.batch.items() if k != "input_ids"}
        with _only_layers_from(self.decoder, layer):
            return self._logprobs(inputs_embeds=self.layer_inputs[layer], **inputs)

    def resume_matches(self, full: torch.Tensor) -> bool:
        """Whether a forward resumed halfway, under the full config, gives the full logits."""
        self._adapt(range(self.num_layers))
        try:
            difference = (self.resumed(self.num_layers // 2) - full).abs().max().item()
        except Exception as e:  # a decoder that cannot start from a layer's input: whole runs
            logger.warning(f"layer scores: resuming from a layer failed ({e!r}); every run is a "
                           "whole forward")
            return False
        if not difference <= RESUME_TOLERANCE:
            logger.warning(f"layer scores: a resumed forward differs from the whole one by "
                           f"{difference:.3g} in log-probability; every run is a whole forward")
        return difference <= RESUME_TOLERANCE

    def per_example(self, full: torch.Tensor, other: torch.Tensor) -> list[tuple[float, float]]:
        """(KL(full || other), NLL rise) of each example, averaged over its scored tokens."""
        kl = (full.exp() * (full - other)).sum(-1)
        rise = (full - other).gather(-1, self.gold[:, None])[:, 0]  # nll(other) - nll(full)
        return [(kl[a:b].mean().item(), rise[a:b].mean().item()) for a, b in self.spans]

    def nll(self, full: torch.Tensor) -> list[float]:
        nll = -full.gather(-1, self.gold[:, None])[:, 0]
        return [nll[a:b].mean().item() for a, b in self.spans]


@dataclass
class Measurement:
    scores: list[ExampleScores]  # in the order of the examples
    measured: int                # examples measured now (the rest came from the cache)
    resumed: bool | None         # whether resumed forwards were used (None: nothing measured)


def measure(model: PreTrainedModel, examples: Sequence[Example], recipe: SWAAConfig,
            cache: MeasurementCache | None = None, batch_size: int = 1,
            progress: bool = True) -> Measurement:
    """Each example's per-layer scores under `recipe` (its window, sinks and fa_decode; its
    full_attention_layers are ignored). The model must be unadapted; it is left so. A portable
    checkpoint's saved settings (`config.swaa` of a model that runs its own attention, as the
    fine-tuning recipe's merged model loads) are set aside while measuring and put back."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if hf.is_adapted(model):
        raise ValueError("measure needs the unadapted model (it adapts it layer by layer): "
                         "call swaa_ext.restore(model) first")
    text_config = model.config.get_text_config(decoder=True)
    saved = getattr(text_config, "swaa", None)
    if saved is not None:
        del text_config.swaa
    cache = cache or MeasurementCache(None)
    device = next(model.parameters()).device.type
    fingerprint = model_fingerprint(model)
    keys = [MeasurementCache.key(fingerprint, recipe, device, e) for e in examples]
    todo = [i for i, k in enumerate(keys) if cache.get(k) is None]
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    num_layers = len(model.get_decoder().layers)
    resume = None
    bar = tqdm(total=len(batches) * (num_layers + 2), desc="layer scores", disable=not progress)
    try:
        with torch.inference_mode():
            for batch in batches:
                runner = _Runner(model, recipe, [examples[i] for i in batch])
                full = runner.full()
                if resume is None:
                    resume = runner.resume_matches(full)
                bar.update()
                per_layer = []
                for layer in range(num_layers):
                    per_layer.append(runner.per_example(full, runner.sliding(layer, resume)))
                    bar.set_postfix_str(f"layer {layer}", refresh=False)
                    bar.update()
                everything = runner.per_example(full, runner.sliding(None, resume))
                bar.update()
                for j, (i, nll) in enumerate(zip(batch, runner.nll(full))):
                    cache.put(keys[i], ExampleScores(
                        kl=[per_layer[layer][j][0] for layer in range(num_layers)],
                        nll_rise=[per_layer[layer][j][1] for layer in range(num_layers)],
                        full_nll=nll, all_sliding_kl=everything[j][0],
                        all_sliding_nll_rise=everything[j][1]))
    finally:
        bar.close()
        if hf.is_adapted(model):
            hf.restore(model)
        if saved is not None:
            text_config.swaa = saved
    scores = [cache.get(k) for k in keys]
    if any(len(s.kl) != num_layers for s in scores):
        raise RuntimeError("cached scores do not have one value per layer of this model")
    return Measurement(scores, len(todo), resume)


def mean_over(scores: Sequence[ExampleScores], field: str) -> list[float]:
    """A per-layer field averaged over examples (each example weighs the same)."""
    values = [getattr(s, field) for s in scores]
    return [math.fsum(column) / len(values) for column in zip(*values)]
