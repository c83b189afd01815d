"""A few steps of the fine-tuning recipe's training on a tiny random Llama, in dataset order,
writing this process's logged losses to OUT/losses_rank{R}.json. Run by test_finetune.py's
multi-process test as one process (`python tests/ddp_train.py OUT 4`) and under
`torchrun --nproc_per_node 2 tests/ddp_train.py OUT 2`: the same global batch of 4 examples."""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from hf_models import tiny_model  # noqa: E402
from test_finetune import RECIPE, records  # noqa: E402

from swaa_ext.recipes.finetune.train import LoraSettings, TrainSettings, train  # noqa: E402


class NoTokenizer:
    """What train() asks of a tokenizer when the records are token ids already."""

    def save_pretrained(self, path: str) -> None:
        pass


def main() -> None:
    out, per_device = Path(sys.argv[1]), int(sys.argv[2])
    settings = TrainSettings(lora=LoraSettings(rank=4, dropout=0.0), learning_rate=3e-3,
                             max_steps=4, examples_per_batch=per_device, warmup_ratio=0.0,
                             shuffle=False)
    result = train(tiny_model("llama"), NoTokenizer(), records(16), RECIPE, out, settings,
                   progress=False)
    rank = int(os.environ.get("RANK", "0"))
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    (out / f"losses_rank{rank}.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
