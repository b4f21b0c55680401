#!/usr/bin/env bash
# The flagship run on CPU, every stage, resumable: run it again after an interruption and each
# stage continues from its latest checkpoint (a finished stage is skipped).
#   scripts/flagship_cpu.sh RUN_DIR [extra `train --set` overrides...]
# Stages (docs/flagship.md): t2i (35 training minutes), mf (to 185), then continuations, each
# forked from the last checkpoint of the one before (optimiser and step kept) with one change of
# recipe, chosen on val by an A/B of equal wall time; their budgets are steps, so a rerun on any
# machine takes the same steps.
set -euo pipefail
run=${1:?usage: scripts/flagship_cpu.sh RUN_DIR [KEY=VALUE ...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
stage() {  # name, config, fork-from stage ("" for none), overrides...
  local name=$1 config=$2 parent=$3
  shift 3
  if [ -f "$run/$name/final/model.safetensors" ]; then
    echo "[flagship] $name: done ($run/$name/final)"
    return
  fi
  local how=()
  if [ -f "$run/$name/checkpoints/latest" ]; then how=(--resume)
  elif [ -n "$parent" ]; then how=(--fork-from "$run/$parent"); fi
  echo "[flagship] $name -> $run/$name ${how[*]}"
  modality-forcing train --config "$here/configs/$config" --out "$run/$name" "${how[@]}" "$@"
}
stage t2i flagship-t2i.yaml "" ${1+--set "$@"}
init="init_from=$run/t2i/final"
stage mf flagship-mf.yaml "" --set "$init" "$@"
# Continuations (cumulative steps; max_minutes off): object pixels weighed 5x in the image loss;
# then a larger depth -> image share of the forcing corners (0.35 / 0.35 / 0.3); then object
# pixels weighed 10x, trained on to step 22,272 (mf4-mf6: one recipe, run in three sessions);
# then image-clean / depth-clean / both-noised 0.25 / 0.45 / 0.3 at half the learning rate
# (2e-4); then 1,100 more steps at 2e-4 and a linear cool-down to 0 over the last 1,100 (mf8,
# the shipped checkpoint: docs/flagship.md, "Continuations").
more=(max_minutes=null forcing.p_image_clean=0.35 forcing.p_depth_clean=0.35)
late=(max_minutes=null forcing.p_image_clean=0.25 forcing.p_depth_clean=0.45
  forcing.p_both_noised=0.3 loss.object_weight=10 optim.lr=2e-4)
stage mf2 flagship-mf.yaml mf --set "$init" max_minutes=null loss.object_weight=5 \
  max_steps=15325 "$@"
stage mf3 flagship-mf.yaml mf2 --set "$init" "${more[@]}" loss.object_weight=5 max_steps=17017 "$@"
stage mf4 flagship-mf.yaml mf3 --set "$init" "${more[@]}" loss.object_weight=10 \
  max_steps=18700 "$@"
stage mf5 flagship-mf.yaml mf4 --set "$init" "${more[@]}" loss.object_weight=10 \
  max_steps=20572 "$@"
stage mf6 flagship-mf.yaml mf5 --set "$init" "${more[@]}" loss.object_weight=10 \
  max_steps=22272 "$@"
stage mf7 flagship-mf.yaml mf6 --set "$init" "${late[@]}" max_steps=25672 "$@"
stage mf8 flagship-mf.yaml mf7 --set "$init" "${late[@]}" max_steps=27872 optim.schedule=wsd \
  optim.decay_steps=1100 optim.min_lr_ratio=0 "$@"
