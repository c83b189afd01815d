#!/bin/bash
# Chain-of-thought, the fourth SWAA method, on the original SmolLM2-135M-Instruct at 2k tokens:
# the same 24 task instances (8 per family, evaluation seed 0) with thinking prompts (a budget
# of 1,024 new tokens, the answer read after </think>) and without, under full attention, sinks
# + window (every token slides, decode too) and the recommended recipe. About 45 minutes on 2
# cores (the thinking run ~38 of them).
set -e
cd "$(dirname "$0")/../../.."
OUT=${OUT:-docs/finetune-results/cot-2k}
python -m swaa_ext.recipes.eval --lengths 2048 --window-fractions 0.125 --sinks 64 --samples 8 \
  --threads 2 --tasks passkey,niah_multikey,library_notes --thinking --thinking-budget 1024 \
  --configs fa,swa+sinks,swa+sinks+fa_decode+odd --out "$OUT/thinking"
python -m swaa_ext.recipes.eval --lengths 2048 --window-fractions 0.125 --sinks 64 --samples 8 \
  --threads 2 --tasks passkey,niah_multikey,library_notes \
  --configs fa,swa+sinks,swa+sinks+fa_decode+odd --out "$OUT/direct"
