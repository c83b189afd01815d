#!/bin/bash
# The held-out experiment's seed-0 model (held-out-1k/run.sh: trained on 512-1,024-token prompts)
# at 2k, on 40 prompts per task: its evaluation (layer-selection/eval-smollm2-finetuned-2k) paired
# with the original model's on the same prompts (layer-selection/eval-smollm2-2k), over the
# recipes both ran. Reads only the committed results; their run.sh files hold the evaluations.
set -e
cd "$(dirname "$0")/../../.."
python -m swaa_ext.recipes.finetune.experiment \
  --before docs/layer-selection/eval-smollm2-2k \
  --after docs/layer-selection/eval-smollm2-finetuned-2k \
  --trained-tasks passkey,niah_multivalue,variable_tracking,kv_retrieval \
  --out docs/finetune-results/seed0-2k
