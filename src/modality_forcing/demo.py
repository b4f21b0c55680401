"""`modality-forcing demo`: every permutation of the shipped checkpoint, a gallery, and a score.

Runs joint text -> image + depth on validation captions, image -> depth (an ensemble, with its
uncertainty) and depth -> image on held-out procedural test scenes, writes one result folder per
sample plus `index.html` / `contact_sheet.png`, and scores image -> depth on the procedural test
split (least-squares aligned AbsRel / delta1). Everything is generated locally: no downloads.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import has_weights
from .data.benchmarks import get_benchmark
from .data.procedural import SceneConfig, render_split
from .evaluate import score_predictions
from .gallery import write_gallery
from .jobs import write_job
from .metrics.alignment import align
from .metrics.depth import depth_metrics
from .pipeline import ModalityForcingPipeline
from .precision import cpu_name

DEMO_CHECKPOINT = Path(__file__).parent / "assets" / "demo"
TRAIN_HINT = (
    "train one (about an hour on 2 CPU cores) with\n"
    "  modality-forcing train --config configs/cpu-s-t2i.yaml\n"
    "  modality-forcing train --config configs/cpu-s-mf.yaml\n"
    "  modality-forcing export-checkpoint runs/cpu-s-mf/final \\\n"
    "      --out src/modality_forcing/assets/demo\n"
    "or pass --ckpt DIR"
)


@dataclass
class DemoConfig:
    num_prompts: int = 4
    num_images: int = 4
    num_eval: int = 100
    steps: int = 10  # joint and depth -> image
    # Image -> depth: the scored prediction and the joint-consistency estimate use `depth_steps`
    # (1 was best on the validation split for the shipped checkpoint: docs/depth_quality.md);
    # the gallery's ensembles use `ensemble_steps`, where samples differ enough to show spread.
    depth_steps: int = 1
    ensemble_steps: int = 4
    ensemble: int = 3
    seed: int = 0
    fov_deg: float = 60.0
    precision: str = "auto"  # `auto` | `bf16` | `fp32` (`precision.resolve_precision`)
    device: str | None = None  # None: cuda > mps > cpu
    progress: bool = True  # a bar per stage


def demo_checkpoint(ckpt: str | Path | None) -> Path:
    """The checkpoint to use: `ckpt`, else the one shipped inside the package."""
    path = Path(ckpt) if ckpt is not None else DEMO_CHECKPOINT
    if not has_weights(path):
        where = f"'{path}'" if ckpt is not None else "inside the package"
        raise FileNotFoundError(f"no checkpoint {where}; {TRAIN_HINT}")
    return path


def _consistency(joint_depth: np.ndarray, estimated: np.ndarray) -> float:
    """AbsRel of the joint depth against the model's own depth estimate of the joint image."""
    gt = torch.from_numpy(estimated)[None].double()
    pred = torch.from_numpy(joint_depth)[None].double()
    mask = gt > 0
    aligned = align(pred, gt, mask, "least_squares", (1e-3, 1e3)).aligned
    return float(depth_metrics(aligned, gt, mask)["abs_rel"][0])


def run_demo(
    ckpt: str | Path | None = None, out_dir: str | Path = "outputs/demo",
    cfg: DemoConfig | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run the demo; returns (and writes to `out_dir/demo.json`) the measured numbers."""
    cfg = cfg or DemoConfig()
    start = time.time()
    out_dir = Path(out_dir)
    pipe = ModalityForcingPipeline.from_pretrained(
        demo_checkpoint(ckpt), torch_dtype=cfg.precision, device=cfg.device
    )
    say = tqdm.write if cfg.progress else (lambda _: None)
    say(f"precision {pipe.precision.precision} on {pipe.precision.device}: "
        f"{pipe.precision.reason}")  # fmt: skip
    bar = partial(tqdm, disable=not cfg.progress, dynamic_ncols=True, leave=False)
    h, w = pipe.resolution
    scene = SceneConfig(height=h, width=w)
    prompts = [s["caption"] for s in render_split("val", 0, cfg.num_prompts, scene)]
    tests = render_split("test", 0, cfg.num_images, scene)
    g = lambda i: torch.Generator().manual_seed(cfg.seed + i)  # noqa: E731
    common = {"num_inference_steps": cfg.steps}
    entries, consistency = [], []
    for i, prompt in enumerate(bar(prompts, desc="[1/3] text -> image + depth")):
        out = pipe(prompt=prompt, mode="joint", generator=g(i), **common)
        est = pipe(image=out.image[0], mode="image_to_depth", generator=g(i),
                   num_inference_steps=cfg.depth_steps)  # fmt: skip
        consistency.append(_consistency(out.depth[0], est.depth[0]))
        meta = {"prompt": prompt, "mode": "joint", "seed": cfg.seed + i, "num_steps": cfg.steps}
        entries.append(write_job(out_dir / f"joint_{i}", f"text -> image + depth #{i}", out,
                                 meta, cfg.fov_deg))  # fmt: skip
    for i, sample in enumerate(bar(tests, desc="[2/3] image -> depth, depth -> image")):
        out = pipe(image=sample["image"], mode="image_to_depth", generator=g(i),
                   ensemble_size=cfg.ensemble, num_inference_steps=cfg.ensemble_steps)  # fmt: skip
        meta = {"prompt": "", "mode": "image_to_depth", "key": sample["key"],
                "ensemble_size": cfg.ensemble, "num_steps": cfg.ensemble_steps}  # fmt: skip
        entries.append(write_job(out_dir / f"i2d_{i}", f"image -> depth {sample['key']}", out,
                                 meta, cfg.fov_deg))  # fmt: skip
        out = pipe(prompt=sample["caption"], depth=sample["depth"], mode="depth_to_image",
                   generator=g(i), **common)  # fmt: skip
        meta = {"prompt": sample["caption"], "mode": "depth_to_image", "key": sample["key"]}
        entries.append(write_job(out_dir / f"d2i_{i}", f"depth -> image {sample['key']}", out,
                                 meta, cfg.fov_deg))  # fmt: skip
    gallery = write_gallery(out_dir, entries)

    def predict(sample: dict[str, Any]) -> np.ndarray:
        out = pipe(image=sample["image"], mode="image_to_depth", generator=g(0),
                   num_inference_steps=cfg.depth_steps)  # fmt: skip
        return out.depth[0]

    bench = get_benchmark("procedural", None, num=cfg.num_eval, height=h, width=w)
    say(f"[3/3] scoring image -> depth on {cfg.num_eval} held-out test scenes")
    summary = score_predictions(bench, predict, "least_squares", out_dir=out_dir / "eval",
                                progress=cfg.progress)  # fmt: skip
    scores = summary.metrics["least_squares"]
    result = {
        "checkpoint": str(demo_checkpoint(ckpt)),
        "resolution": [h, w],
        "image_to_depth": {"num_scenes": cfg.num_eval, "abs_rel": scores["abs_rel"],
                           "delta1": scores["delta1"], "protocol": "least_squares",
                           "steps": cfg.depth_steps},
        "joint_consistency_abs_rel": float(np.mean(consistency)),
        "gallery": str(gallery),
        "wall_seconds": time.time() - start,
        "precision": pipe.precision.as_dict(),
        "cpu": cpu_name(),
        "config": asdict(cfg),
    }  # fmt: skip
    (out_dir / "demo.json").write_text(json.dumps(result, indent=2))
    return result
