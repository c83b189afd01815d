#!/bin/bash
# Calibrated layers against the periodic patterns, SmolLM2-135M-Instruct at 2k (docs/layer-selection.md).
# About 2 h 20 min on the 2-core dev machine (it shared the cores with other work for part of it).
set -e
python -m swaa_ext.recipes.eval --model smollm2 --lengths 2048 \
  --window-fractions 0.125 --sinks 64 --samples 40 --threads 2 \
  --tasks passkey,niah_multikey,library_notes \
  --configs fa,swa+sinks+fa_decode,swa+sinks+fa_decode+odd,swa+sinks+fa_decode+every_4th,swa+sinks+fa_decode+layers:4.7.8.14.17.18.20,swa+sinks+fa_decode+layers:7.14.18,swa+sinks+fa_decode+layers:0.7.11.14.17.18.20 \
  --out eval-smollm2-2k
# Prefill speed of the same choices beside the FLOP model:
python -m swaa_ext.recipes.prefill --lengths 2048,4096 --window-fractions 0.125 --sinks 64 --reps 3 --threads 2 \
  --configs fa,swa+sinks+fa_decode,swa+sinks+fa_decode+odd,swa+sinks+fa_decode+every_4th,swa+sinks+fa_decode+layers:4.7.8.14.17.18.20,swa+sinks+fa_decode+layers:7.14.18 \
  --out eval-smollm2-2k/prefill.json
