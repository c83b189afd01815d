"""SWA fine-tuning (SWAA method 5; docs/finetune.md): light fine-tuning of an adapted model under
sink + sliding-window attention on self-distilled data, to close the gap that the training-free
recipes leave.

    python -m swaa_ext.recipes.finetune all --quick --out finetune_results

Steps, each a module with one job:
  distill.py   prompts (task generators or a JSONL file) -> the *unadapted* model's greedy answers,
               kept only when checked correct; resumable; saved as a `datasets` dataset.
  data.py      tokenised examples (loss on the response only) and the packing collator that gives
               each packed sequence its own FA decode boundary (`swaa_full_from`).
  train.py     LoRA through peft (or full fine-tuning) with transformers' Trainer on the adapted
               model; saves the adapter, the merged model and the loss curve.
  evaluate.py  the evaluation harness before and after, on held-out seeds, as one table.
"""
