#!/bin/bash
# Issue 23 held-out experiment: 3 training seeds, shared distillation and "before" evaluation.
set -e
cd "$(dirname "$0")/../../.."  # the checkout (the run used a clone of main at 4c27eb9)
export PYTHONPATH=$PWD
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/held-out-1k}
ARGS="--eval-length 1024 --min-tokens 512 --max-tokens 1024 --eval-samples 20 --distill-samples 240 --kept-per-cell 3 --examples-per-batch 4 --lr 2e-4 --epochs 2 --threads 2 --quiet"
date
$PY -m swaa_ext.recipes.finetune all --out $OUT/seed0 --train-seed 0 $ARGS
for s in 1 2; do
  date
  mkdir -p $OUT/seed$s
  cp -r $OUT/seed0/distill $OUT/seed0/eval_before.json $OUT/seed$s/
  $PY -m swaa_ext.recipes.finetune all --out $OUT/seed$s --train-seed $s $ARGS
done
date
$PY -m swaa_ext.recipes.finetune.experiment $OUT/seed0 $OUT/seed1 $OUT/seed2 --out $OUT/pooled
date
