"""Choose a checkpoint's classifier-free guidance per mode on **val** (never on test):

    python scripts/tune_sampling.py CKPT [--guidance 1 2 3 4.5 6] [--steps 10] [--num-val 64]
        [--seeds 0 1] [--out docs/flagship/sampling_val.json]

scores depth -> image (region colour accuracy), joint and marginal text -> image (attribute
probe accuracy) at each scale with the same seeds (common random numbers, so the differences
between scales are not sampling noise of different draws), and writes the table, the chosen
scale per mode and the scores to OUT (JSON) and OUT with .md. Ship the choice with
`modality-forcing export-checkpoint CKPT --out DIR --guidance MODE=SCALE ... [--steps MODE=N]`:
a pipeline loaded from DIR then uses them as its defaults.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean
from typing import Any

from modality_forcing.bench.fidelity import load_fidelity_scenes, score_fidelity
from modality_forcing.bench.runs import write_json
from modality_forcing.pipeline import ModalityForcingPipeline

# The figure each mode's scale is chosen by (higher is better).
CHOOSE_BY = {
    "depth_to_image": ("depth_to_image", "all", "accuracy"),
    "joint": ("joint", "attributes", "mean"),
    "marginal": ("marginal", "attributes", "mean"),
}
COLUMNS = {
    "d->i floor": ("depth_to_image", "floor", "accuracy"),
    "d->i walls": ("depth_to_image", "walls", "accuracy"),
    "d->i objects": ("depth_to_image", "objects", "accuracy"),
    "d->i all": ("depth_to_image", "all", "accuracy"),
    "joint attributes": ("joint", "attributes", "mean"),
    "joint colours": ("joint", "attributes", "colours"),
    "joint FD": ("joint", "frechet"),
    "joint consistency": ("joint", "consistency_abs_rel"),
    "marginal attributes": ("marginal", "attributes", "mean"),
}


def _get(scores: dict[str, Any], path: tuple[str, ...]) -> float:
    for key in path:
        scores = scores[key]
    return float(scores)  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.5, 6.0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--num-val", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="docs/flagship/sampling_val.json")
    args = p.parse_args()
    pipe = ModalityForcingPipeline.from_pretrained(args.ckpt)
    scenes = load_fidelity_scenes("val", args.num_val, pipe.resolution)
    rows = []
    for scale in args.guidance:
        runs = [score_fidelity(pipe, scenes, steps=args.steps, seed=seed, guidance=scale,
                               modes=("depth_to_image", "joint", "marginal"))
                for seed in args.seeds]  # fmt: skip
        row = {"guidance": scale,
               **{name: mean(_get(r, path) for r in runs) for name, path in COLUMNS.items()},
               "by_seed": runs}  # fmt: skip
        rows.append(row)
        print("  ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "by_seed"), flush=True)
    chosen = {}
    for mode, path in CHOOSE_BY.items():
        best = max(rows, key=lambda r: mean(_get(s, path) for s in r["by_seed"]))
        chosen[mode] = best["guidance"]
    report = {"checkpoint": str(args.ckpt), "split": "val", "num_scenes": args.num_val,
              "steps": args.steps, "seeds": args.seeds, "precision": pipe.precision.precision,
              "choose_by": {m: ".".join(p) for m, p in CHOOSE_BY.items()},
              "chosen": {"guidance": chosen}, "rows": rows}  # fmt: skip
    out = Path(args.out)
    write_json(out, report)
    head = ["guidance", *COLUMNS]
    lines = [
        f"# Guidance per mode, chosen on val ({args.num_val} scenes, {args.steps} steps, "
        f"seeds {args.seeds}, {pipe.precision.precision})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(f"{r[h]:.3f}" for h in head) + " |" for r in rows),
        "",
        f"Chosen: {json.dumps(chosen)} (by {json.dumps(report['choose_by'])}).",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("chosen:", json.dumps(chosen))


if __name__ == "__main__":
    main()
