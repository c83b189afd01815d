#!/bin/bash
# Calibrated layers against the periodic patterns on the fine-tuned SmolLM2 (docs/layer-selection.md):
# the merged model of the held-out fine-tuning run (docs/finetune-results/held-out-1k: trained at
# 512-1,024 tokens, window 1/8, 64 sinks, FA decode, odd layers full), evaluated at 2k like the
# untuned model (eval-smollm2-2k/run.sh) on the same prompts. MODEL is that run's merged/ folder.
set -e
MODEL=${MODEL:?set MODEL to the fine-tuned run\'s merged/ folder}
OUT=$(dirname "$0")
python -m swaa_ext.recipes.select --model "$MODEL" --budget 1/4 --metric nll_rise --threads 2 \
  --out "$OUT/../smollm2-finetuned-2k"
python -m swaa_ext.recipes.eval --model "$MODEL" --lengths 2048 \
  --window-fractions 0.125 --sinks 64 --samples 40 --threads 2 \
  --tasks passkey,niah_multikey,library_notes \
  --configs fa,swa+sinks+fa_decode+odd,swa+sinks+fa_decode+every_4th,swa+sinks+fa_decode+layers:3.7.11.14.17.18.20,swa+sinks+fa_decode+layers:0.7.8.14.17.18.20 \
  --out "$OUT"
# Added later: no full layer and the 1/8 selection (7, 14, 17: `select --budget 1/8`, from the
# cache), evaluated on the same prompts and joined to the results above.
python -m swaa_ext.recipes.eval --model "$MODEL" --lengths 2048 \
  --window-fractions 0.125 --sinks 64 --samples 40 --threads 2 \
  --tasks passkey,niah_multikey,library_notes \
  --configs swa+sinks+fa_decode,swa+sinks+fa_decode+layers:7.14.17 \
  --out "$OUT/more"
python -m swaa_ext.recipes.report "$OUT" --add "$OUT/more"
rm -r "$OUT/more"
