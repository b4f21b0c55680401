#!/usr/bin/env bash
# The flagship run on CPU, both stages, resumable: run it again after an interruption and each
# stage continues from its latest checkpoint (a finished stage is skipped).
#   scripts/flagship_cpu.sh RUN_DIR [extra `train --set` overrides...]
# Budgets are training minutes (configs/flagship-*.yaml, max_minutes), kept over resumes.
set -euo pipefail
run=${1:?usage: scripts/flagship_cpu.sh RUN_DIR [KEY=VALUE ...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
stage() {  # name, config, extra overrides
  local name=$1 config=$2
  shift 2
  if [ -f "$run/$name/final/model.safetensors" ]; then
    echo "[flagship] $name: done ($run/$name/final)"
    return
  fi
  local resume=()
  [ -f "$run/$name/checkpoints/latest" ] && resume=(--resume)
  echo "[flagship] $name -> $run/$name ${resume[*]}"
  modality-forcing train --config "$here/configs/$config" --out "$run/$name" "${resume[@]}" "$@"
}
stage t2i flagship-t2i.yaml ${1+--set "$@"}
stage mf flagship-mf.yaml --set "init_from=$run/t2i/final" "$@"
