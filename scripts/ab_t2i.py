"""Equal-wall-time text -> image A/B runs of the cpu-s preset, scored on val (exploration behind
the flagship recipe, docs/flagship.md). One run per call:

    python scripts/ab_t2i.py NAME MINUTES batch_size=16 model.image_prediction=x0 \
        [--out docs/flagship/ab] [--runs /work/runs/ab] [--threads 1]

trains stage-1 (text -> image) for MINUTES of training time with the overrides (as `train
--set`), then
scores its marginal text -> image samples on 64 val scenes with the fidelity metrics (attribute
probe accuracy, above-chance share of the real renders', probe-feature Frechet distance), and
writes OUT/NAME.json (scores) and OUT/NAME.yaml (the run's config).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from modality_forcing.bench.fidelity import load_fidelity_scenes, score_fidelity
from modality_forcing.config import resolve_train_config
from modality_forcing.inference.pipeline import ModalityForcingPipeline
from modality_forcing.training.loop import train

BASE = {
    "preset": "cpu-s", "stage": "t2i", "batch_size": 64, "max_steps": 10**9,
    "precision": "auto", "sample_every": 0, "log_every": 10, "ckpt_every": 10**9,
    "data": {"height": 32, "width": 32},
    "optim": {"lr": 4e-4, "warmup_steps": 50, "schedule": "constant"},
}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("minutes", type=float)
    p.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides, as train --set")
    p.add_argument("--out", default="docs/flagship/ab")
    p.add_argument("--runs", default="/work/runs/ab", help="training folders (outside the repo)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = {**BASE, "out_dir": str(Path(args.runs) / args.name), "max_minutes": args.minutes}
    final = train(resolve_train_config(run, args.overrides))
    scenes = load_fidelity_scenes("val", 64, (32, 32))
    pipe = ModalityForcingPipeline.from_pretrained(final, device="cpu")
    scores = score_fidelity(pipe, scenes, modes=("marginal",))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(scores, indent=1))
    shutil.copy(Path(run["out_dir"]) / "config.yaml", out / f"{args.name}.yaml")
    m = scores["marginal"]
    print(
        f"{args.name}: attributes {m['attributes']['mean']:.3f} (real "
        f"{m['real_attributes']['mean']:.3f}), above chance {m['relative']:.3f}, "
        f"FD {m['frechet']:.1f}"
    )


if __name__ == "__main__":
    main()
