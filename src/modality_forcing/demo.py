"""`modality-forcing demo`: every permutation of the shipped checkpoint, a gallery, and scores.

Runs joint text -> image + depth on validation captions, image -> depth (an ensemble, with its
uncertainty) and depth -> image on held-out procedural test scenes, writes one result folder per
sample plus `index.html` / `contact_sheet.png`, and scores every mode on the procedural test split
with the fidelity metrics (`bench/fidelity.py`): image -> depth AbsRel / delta1 (least squares)
and its skill over the mean training depth map, depth -> image region-colour accuracy, text ->
image caption-attribute accuracy (the shipped probe) next to real renders', and the joint
consistency. Everything is generated locally: no downloads.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .bench.fidelity import load_fidelity_scenes, score_fidelity
from .data.procedural import SceneConfig, render_split
from .inference.gallery import write_gallery
from .inference.jobs import write_job
from .inference.pipeline import ModalityForcingPipeline
from .precision import cpu_name
from .sampling.config import SamplingConfig, sampling_record
from .training.checkpoint import has_weights

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
    num_eval: int = 100  # test scenes scored for image -> depth
    num_generate: int = 32  # test scenes scored for depth -> image and text -> image
    # Joint and depth -> image (guidance: the checkpoint's per mode).
    generation: SamplingConfig = field(default_factory=lambda: SamplingConfig(steps=10))
    # Image -> depth: the scored prediction and the joint-consistency estimate use `depth`, the
    # checkpoint's own setting by default (1 step for the shipped one, best on val:
    # docs/flagship.md); the gallery's ensembles use `gallery_depth`, where samples differ
    # enough to show spread.
    depth: SamplingConfig = field(default_factory=SamplingConfig)
    gallery_depth: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(steps=4, ensemble=3)
    )
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
    joint = pipe.sampling_for("joint", cfg.generation)
    d2i = pipe.sampling_for("depth_to_image", cfg.generation)
    i2d = pipe.sampling_for("image_to_depth", cfg.depth)
    gallery_depth = pipe.sampling_for("image_to_depth", cfg.gallery_depth)
    entries = []
    for i, prompt in enumerate(bar(prompts, desc="[1/3] text -> image + depth")):
        out = pipe(prompt=prompt, mode="joint", generator=g(i), sampling=joint)
        meta = {"prompt": prompt, "mode": "joint", **sampling_record(joint), "seed": cfg.seed + i}
        entries.append(write_job(out_dir / f"joint_{i}", f"text -> image + depth #{i}", out,
                                 meta, cfg.fov_deg))  # fmt: skip
    for i, sample in enumerate(bar(tests, desc="[2/3] image -> depth, depth -> image")):
        out = pipe(image=sample["image"], mode="image_to_depth", generator=g(i),
                   sampling=gallery_depth)  # fmt: skip
        meta = {"prompt": "", "mode": "image_to_depth", "key": sample["key"],
                **sampling_record(gallery_depth), "seed": cfg.seed + i}  # fmt: skip
        entries.append(write_job(out_dir / f"i2d_{i}", f"image -> depth {sample['key']}", out,
                                 meta, cfg.fov_deg))  # fmt: skip
        out = pipe(prompt=sample["caption"], depth=sample["depth"], mode="depth_to_image",
                   generator=g(i), sampling=d2i)  # fmt: skip
        meta = {"prompt": sample["caption"], "mode": "depth_to_image", "key": sample["key"],
                **sampling_record(d2i), "seed": cfg.seed + i}  # fmt: skip
        entries.append(write_job(out_dir / f"d2i_{i}", f"depth -> image {sample['key']}", out,
                                 meta, cfg.fov_deg))  # fmt: skip
    gallery = write_gallery(out_dir, entries)

    say(f"[3/3] scoring every mode on held-out test scenes ({cfg.num_eval} image -> depth, "
        f"{cfg.num_generate} depth -> image and text -> image)")  # fmt: skip
    scored = {}
    for modes, num in ((("image_to_depth",), cfg.num_eval),
                       (("depth_to_image", "joint"), cfg.num_generate)):  # fmt: skip
        scenes = load_fidelity_scenes("test", num, (h, w))
        scored.update(score_fidelity(pipe, scenes, generation=cfg.generation, depth=cfg.depth,
                                     seed=cfg.seed, modes=modes))  # fmt: skip
    result = {
        "checkpoint": str(demo_checkpoint(ckpt)),
        "resolution": [h, w],
        "image_to_depth": {"num_scenes": cfg.num_eval, "protocol": "least_squares",
                           "steps": i2d.steps, "sampling": sampling_record(i2d),
                           **scored["image_to_depth"]},
        "depth_to_image": {"num_scenes": cfg.num_generate, "steps": d2i.steps,
                           "guidance": d2i.guidance, "sampling": sampling_record(d2i),
                           **scored["depth_to_image"]},
        "text_to_image": {"num_scenes": cfg.num_generate, "steps": joint.steps, "mode": "joint",
                          "guidance": joint.guidance, "sampling": sampling_record(joint),
                          **{k: v for k, v in scored["joint"].items()
                             if k != "consistency_abs_rel"}},
        "joint_consistency_abs_rel": scored["joint"]["consistency_abs_rel"],
        "gallery": str(gallery),
        "wall_seconds": time.time() - start,
        "precision": pipe.precision.as_dict(),
        "cpu": cpu_name(),
        "config": asdict(cfg),
    }  # fmt: skip
    (out_dir / "demo.json").write_text(json.dumps(result, indent=2))
    return result


def demo_summary(result: dict[str, Any]) -> str:
    """The demo's printed figures, one per line (README's table is made from these)."""
    i2d, d2i, t2i = result["image_to_depth"], result["depth_to_image"], result["text_to_image"]
    return "\n".join([
        f"image->depth on {i2d['num_scenes']} held-out procedural scenes ({i2d['protocol']}, "
        f"{i2d['steps']} step(s)): AbsRel {i2d['abs_rel']:.3f}, delta1 {i2d['delta1']:.3f} "
        f"(mean training depth map: AbsRel {i2d['prior_abs_rel']:.3f})",
        f"image->depth skill: {i2d['skill']:.2f}",
        f"depth->image region colour accuracy: floor {d2i['floor']['accuracy']:.0%}, "
        f"objects {d2i['objects']['accuracy']:.0%}",
        f"text->image attribute accuracy: {t2i['attributes']['mean']:.2f} (real renders: "
        f"{t2i['real_attributes']['mean']:.2f}, chance: {t2i['chance_attributes']['mean']:.2f})",
        f"joint consistency (AbsRel of joint depth vs own estimate): "
        f"{result['joint_consistency_abs_rel']:.3f}",
        f"gallery: {result['gallery']}",
        f"wall time: {result['wall_seconds']:.0f} s",
    ])  # fmt: skip
