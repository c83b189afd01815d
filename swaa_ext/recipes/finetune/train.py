"""Fine-tuning the adapted model with transformers' Trainer: LoRA through peft (the paper's
defaults: rank 16, alpha 32, rsLoRA, dropout 0.1, on the q/k/v projections) or full fine-tuning.

The Trainer brings the engines (DDP / FSDP / DeepSpeed through `accelerate launch` or torchrun,
bf16 autocast, gradient checkpointing); nothing here is distributed code of ours. The model is
adapted before training, so every forward runs the SWAA attention with the inference mask.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments,
                          set_seed)
from transformers.trainer_utils import get_last_checkpoint

from ... import hf
from ...config import SWAAConfig
from .data import PackedCollator, to_features


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    rslora: bool = True
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class TrainSettings:
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # None: full fine-tuning
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int = -1                # > 0 overrides epochs
    examples_per_batch: int = 4        # packed into one row per step (per device)
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    warmup_ratio: float = 0.05         # a fraction of the steps (warmup_arguments)
    seed: int = 0
    save_steps: int = 50               # a checkpoint every so many steps (the last one kept)
    shuffle: bool = True               # False: examples in dataset order (sampling_arguments)


@dataclass
class TrainResult:
    model: PreTrainedModel     # merged, still adapted (saved as out_dir/merged)
    log_history: list[dict]
    paths: dict[str, str]


def _bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _checkpointing(settings: TrainSettings) -> dict:
    """Gradient checkpointing's TrainingArguments, by the name this transformers uses (5.x
    renamed it activation checkpointing)."""
    if not settings.gradient_checkpointing:
        return {}
    fields = TrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in fields else \
        "gradient_checkpointing"
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def warmup_arguments(ratio: float) -> dict:
    """Warmup over `ratio` of the training steps, in the TrainingArguments of this transformers:
    4.x has `warmup_ratio` (its `warmup_steps` is a count: 0.05 would mean none); 5.x dropped
    it and reads a `warmup_steps` below 1 as the fraction."""
    if not 0 <= ratio < 1:
        raise ValueError(f"warmup ratio must be in [0, 1), got {ratio}")
    if "warmup_ratio" in TrainingArguments.__dataclass_fields__:
        return {"warmup_ratio": ratio}
    return {"warmup_steps": ratio}


def sampling_arguments(shuffle: bool) -> dict:
    """Shuffled batches (the Trainer's default), or the dataset's order, where the global batch
    of a step is the same however many processes share it (transformers 5's
    `train_sampling_strategy`; 4.57 has no such option)."""
    if shuffle:
        return {}
    if "train_sampling_strategy" not in TrainingArguments.__dataclass_fields__:
        raise ValueError("training in dataset order (shuffle=False) needs transformers 5")
    return {"train_sampling_strategy": "sequential"}


def _check_lora_targets(model: PreTrainedModel, lora: LoraSettings) -> None:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in lora.targets if t not in names]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not modules of {type(model).__name__}; "
                         f"its linear layers include "
                         f"{sorted(n for n in names if n.endswith('proj'))[:12]}")


def save_merged(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """The merged (adapted) model and its tokenizer as a portable checkpoint: config.json keeps
    the base model's attention, so plain transformers loads it as its base architecture (full
    attention, swaa_ext not needed), and carries the SWAA settings in `swaa`, which
    swaa_ext.adapt(model) and the vLLM plugin apply (docs/finetune.md)."""
    model.save_pretrained(folder, require_swaa=False)
    tokenizer.save_pretrained(folder)


def train(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: list[dict],
          swaa: SWAAConfig, out_dir: Path, settings: TrainSettings = TrainSettings(),
          progress: bool = True) -> TrainResult:
    """Adapts `model` with `swaa`, fine-tunes it on the distilled `records` (dicts with
    prompt_ids / response_ids), saves the adapter, the merged model and the training log under
    `out_dir`, and returns the merged model (adapted, in eval mode)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model

    if len(records) == 0:
        raise ValueError("the training dataset is empty: distil first (only checked-correct "
                         "answers are kept)")
    max_context = int(getattr(model.config, "max_position_embeddings", 1 << 30))
    features = Dataset.from_list([to_features(r, max_context) for r in records])
    hf.adapt(model, swaa)  # raises for a model that cannot be adapted
    out_dir.mkdir(parents=True, exist_ok=True)
    if settings.lora is not None:
        _check_lora_targets(model, settings.lora)
        lora = settings.lora
        set_seed(settings.seed)  # the adapter's random initialisation comes from the seed too
        model = get_peft_model(model, LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            use_rslora=lora.rslora, target_modules=list(lora.targets), task_type="CAUSAL_LM"))
    model.train()
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=settings.examples_per_batch,
        gradient_accumulation_steps=settings.gradient_accumulation,
        learning_rate=settings.learning_rate, num_train_epochs=settings.epochs,
        max_steps=settings.max_steps, lr_scheduler_type="cosine", **warmup_arguments(
            settings.warmup_ratio), logging_steps=1, save_strategy="steps",
        save_steps=settings.save_steps, save_total_limit=1, report_to=[], seed=settings.seed,
        bf16=_bf16_supported(), remove_unused_columns=False,  # the collator needs prompt_len
        disable_tqdm=not progress, dataloader_num_workers=0, **_checkpointing(settings),
        **sampling_arguments(settings.shuffle),
        # A model on the CPU trains there; under torchrun that is also what makes the Trainer
        # run distributed (gloo) instead of one independent copy per process.
        use_cpu=next(model.parameters()).device.type == "cpu")
    trainer = Trainer(model=model, args=args, train_dataset=features,
                      data_collator=PackedCollator(swaa.fa_decode))
    # An interrupted run of the same settings goes on from its last checkpoint (the caller
    # clears out_dir/trainer when the settings change: __main__'s stage records).
    checkpoint = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=checkpoint)

    paths = {"train_log": str(out_dir / "train_log.json"), "loss_plot": str(out_dir / "loss.png"),
             "merged": str(out_dir / "merged")}
    if settings.lora is not None:
        paths["adapter"] = str(out_dir / "adapter")
        model.save_pretrained(paths["adapter"])
        model = model.merge_and_unload()
    model.eval()
    save_merged(model, tokenizer, Path(paths["merged"]))
    history = trainer.state.log_history
    Path(paths["train_log"]).write_text(json.dumps(
        {"settings": asdict(settings), "swaa": swaa.to_dict(), "examples": len(records),
         "log_history": history}, indent=1, default=str) + "\n")
    plot_loss(history, Path(paths["loss_plot"]))
    return TrainResult(model, history, paths)


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(h["step"], h["loss"]) for h in history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if points:
        ax.plot(*zip(*points), marker=".")
    ax.set(xlabel="step", ylabel="training loss (response tokens)", title="SWA fine-tuning")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
