"""Choose a checkpoint's sampling defaults on **val** (never on test): classifier-free guidance
per generating mode, and the number of image -> depth steps.

    python scripts/tune_sampling.py CKPT [--guidance 1 2 3 4.5 6] [--steps 10]
        [--depth-steps 1 2 4] [--num-val 64] [--seeds 0 1] [--out docs/flagship/sampling_val.json]

scores depth -> image (region colour accuracy), joint and marginal text -> image (attribute
probe accuracy) at each scale, and image -> depth (least-squares AbsRel) at each step count,
with the same seeds throughout (common random numbers, so the differences between settings are
not sampling noise of different draws), and writes the tables, the choices and the scores to OUT
(JSON) and OUT with .md. Ship the choice with
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
from modality_forcing.inference.pipeline import ModalityForcingPipeline
from modality_forcing.sampling.config import SamplingConfig

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
# The column (a mean over seeds) each mode's scale is chosen by; higher is better.
CHOOSE_BY = {
    "depth_to_image": "d->i all",
    "joint": "joint attributes",
    "marginal": "marginal attributes",
}


def _get(scores: dict[str, Any], path: tuple[str, ...]) -> float:
    for key in path:
        scores = scores[key]
    return float(scores)  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.5, 6.0])
    p.add_argument("--steps", type=int, default=10, help="steps of the generating modes")
    p.add_argument("--depth-steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--num-val", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="take the lowest scale within this much of the best score: a gain "
        "smaller than the seed-to-seed spread is not worth stronger guidance",
    )
    p.add_argument("--out", default="docs/flagship/sampling_val.json")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="choose again from the scores already in OUT (no sampling)",
    )
    args = p.parse_args()
    if args.reuse:
        old = json.loads(Path(args.out).read_text())
        return publish(args, old["rows"], old["depth_rows"], old["precision"])
    pipe = ModalityForcingPipeline.from_pretrained(args.ckpt)
    scenes = load_fidelity_scenes("val", args.num_val, pipe.resolution)
    rows = []
    for scale in args.guidance:
        generation = SamplingConfig(steps=args.steps, guidance=scale)
        runs = [score_fidelity(pipe, scenes, generation=generation, seed=seed,
                               modes=("depth_to_image", "joint", "marginal"))
                for seed in args.seeds]  # fmt: skip
        row = {"guidance": scale,
               **{name: mean(_get(r, path) for r in runs) for name, path in COLUMNS.items()},
               "by_seed": runs}  # fmt: skip
        rows.append(row)
        print("  ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "by_seed"), flush=True)
    depth_rows = []
    for steps in args.depth_steps:
        runs = [score_fidelity(pipe, scenes, depth=SamplingConfig(steps=steps), seed=seed,
                               modes=("image_to_depth",))["image_to_depth"]
                for seed in args.seeds]  # fmt: skip
        depth_rows.append({"steps": steps,
                           **{k: mean(r[k] for r in runs) for k in ("abs_rel", "delta1", "skill")},
                           "by_seed": runs})  # fmt: skip
        print(f"image->depth {steps} step(s): AbsRel {depth_rows[-1]['abs_rel']:.4f}", flush=True)
    publish(args, rows, depth_rows, pipe.precision.precision)


def choose(rows: list, depth_rows: list, tolerance: float) -> dict[str, dict[str, Any]]:
    """Per mode, the lowest guidance scoring within `tolerance` of the best (mean over seeds),
    and the fewest image -> depth steps within `tolerance` (relative) of the lowest AbsRel."""
    guidance = {}
    for mode, column in CHOOSE_BY.items():
        score = {r["guidance"]: r[column] for r in rows}
        best = max(score.values())
        guidance[mode] = min(g for g, v in score.items() if v >= best - tolerance)
    lowest = min(r["abs_rel"] for r in depth_rows)
    steps = min(r["steps"] for r in depth_rows if r["abs_rel"] <= lowest * (1 + tolerance))
    return {"guidance": guidance, "steps": {"image_to_depth": steps}}


def publish(args: argparse.Namespace, rows: list, depth_rows: list, precision: str) -> None:
    """Choose from the scores; write OUT (.json and .md); print the export flags."""
    chosen = choose(rows, depth_rows, args.tolerance)
    guidance, depth_steps = chosen["guidance"], chosen["steps"]["image_to_depth"]
    report = {"checkpoint": str(args.ckpt), "split": "val", "num_scenes": args.num_val,
              "steps": args.steps, "seeds": args.seeds, "precision": precision,
              "tolerance": args.tolerance,
              "choose_by": {**{m: ".".join(COLUMNS[c]) for m, c in CHOOSE_BY.items()},
                            "image_to_depth steps": "lowest image_to_depth.abs_rel"},
              "chosen": chosen, "rows": rows, "depth_rows": depth_rows}  # fmt: skip
    out = Path(args.out)
    write_json(out, report)
    head = ["guidance", *COLUMNS]
    lines = [
        f"# Guidance per mode, chosen on val ({args.num_val} scenes, {args.steps} steps, "
        f"seeds {args.seeds}, {precision})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(f"{r[h]:.3f}" for h in head) + " |" for r in rows),
        "",
        "| image -> depth steps | AbsRel | delta1 | skill |",
        "|---|---|---|---|",
        *(
            f"| {r['steps']} | {r['abs_rel']:.4f} | {r['delta1']:.3f} | {r['skill']:.3f} |"
            for r in depth_rows
        ),
        "",
        f"Chosen: {json.dumps(chosen)} (by {json.dumps(report['choose_by'])}; the lowest "
        f"scale, and the fewest steps, within {args.tolerance:g} of the best).",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    flags = [f"--guidance {' '.join(f'{m}={v:g}' for m, v in guidance.items())}",
             f"--steps image_to_depth={depth_steps}"]  # fmt: skip
    print("chosen:", json.dumps(chosen), "\nexport with:", " ".join(flags))


if __name__ == "__main__":
    main()
