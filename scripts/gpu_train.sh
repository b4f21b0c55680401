#!/usr/bin/env bash
# The flagship recipe scaled up for one GPU (H100/H200): both stages in about 7.5 training
# minutes (under 9 of wall time), exported as safetensors shards of at most 16 MiB (5 files for
# the cpu-s model), so it can be carried back from a remote machine. Runs from a plain checkout:
# no install (PYTHONPATH=src), and the training path needs neither webdataset nor trimesh.
#   scripts/gpu_train.sh OUT_DIR [KEY=VALUE ...]      (overrides for both stages, last wins)
# Environment: RUN_DIR (training folders, default /tmp/mf-gpu-run), T2I_MINUTES (2.5),
# MF_MINUTES (5), THROUGHPUT=1 to also time `bench throughput` for mf-370m into OUT_DIR.
set -euo pipefail
out=${1:?usage: scripts/gpu_train.sh OUT_DIR [KEY=VALUE ...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
run=${RUN_DIR:-/tmp/mf-gpu-run}
py=${PYTHON:-python3}
scale=(batch_size=256 optim.lr=6.0e-4 data.num_workers=12 ckpt_every_minutes=2 sample_every=0)
mkdir -p "$out"
"$py" -m modality_forcing train --config "$here/configs/flagship-t2i.yaml" --out "$run/t2i" \
    --set "${scale[@]}" "max_minutes=${T2I_MINUTES:-2.5}" "$@"
"$py" -m modality_forcing train --config "$here/configs/flagship-mf.yaml" --out "$run/mf" \
    --set "${scale[@]}" "max_minutes=${MF_MINUTES:-5}" "init_from=$run/t2i/final" "$@"
"$py" -m modality_forcing export-checkpoint "$run/mf/final" --out "$out/checkpoint" \
    --max-shard-mb 16
cp "$run/t2i/metrics.jsonl" "$out/t2i_metrics.jsonl"
cp "$run/mf/metrics.jsonl" "$out/mf_metrics.jsonl"
if [ "${THROUGHPUT:-0}" = 1 ]; then
  "$py" -m modality_forcing bench throughput --presets mf-370m --resolution 256 --batch 32 \
      --steps 5 --out "$out/throughput_mf-370m.json"
fi
echo "[gpu_train] checkpoint: $out/checkpoint ($(ls "$out/checkpoint" | wc -l) files)"
