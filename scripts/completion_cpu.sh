#!/usr/bin/env bash
# Depth completion fine-tune of the shipped checkpoint (configs/completion-mf.yaml), resumable:
# run it again after an interruption and it continues from its latest checkpoint.
#   scripts/completion_cpu.sh RUN_DIR [extra `train --set` overrides...]
set -euo pipefail
run=${1:?usage: scripts/completion_cpu.sh RUN_DIR [KEY=VALUE ...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$run/final/model.safetensors" ]; then echo "[completion] done ($run/final)"; exit 0; fi
shipped=$(python -c "from modality_forcing.demo import DEMO_CHECKPOINT; print(DEMO_CHECKPOINT)")
how=()
if [ -f "$run/checkpoints/latest" ]; then how=(--resume); fi
modality-forcing train --config "$here/configs/completion-mf.yaml" --out "$run" "${how[@]}" \
  --set "init_from=$shipped" "$@"
