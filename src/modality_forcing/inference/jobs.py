"""Turn sampling requests into pipeline calls and files people can open (`modality-forcing sample`).

One job = one input (prompt, image or depth map) x one seed. Each job writes a result folder via
`export.save_result` (RGB, depth .npy / 16-bit PNG / colour maps, uncertainty, PLY/GLB point
cloud, metadata.json); all jobs together get an HTML gallery and a contact sheet.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data.decode import SkipCounter
from ..data.inputs import IMAGE_SUFFIXES, InputError, read_depth, read_image
from ..data.sparse_points import SPARSE_KINDS, read_sparse
from ..sampling.config import SamplingConfig, sampling_record
from .export import save_result
from .gallery import write_gallery
from .pipeline import ModalityForcingOutput, ModalityForcingPipeline


@dataclass
class SampleRequest:
    """What to sample (inputs, seeds, output size) and how (`sampling`, one record)."""

    mode: str = "joint"
    prompts: list[str] = field(default_factory=list)
    image: str | None = None  # a file or a directory of images (image_to_depth)
    depth: str | None = None  # a depth file (.npy metres / 16-bit .png millimetres)
    sparse: str | None = None  # depth_completion: known points (`data/sparse_points.py`)
    seeds: list[int] = field(default_factory=lambda: [0])
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    fov_deg: float = 60.0
    size: tuple[int, int] | None = None
    outputs: frozenset[str] | None = None  # file keys to write (`export.output_files`); all
    recursive: bool = False  # `image` a folder: its subfolders' images too


def slug(text: str, limit: int = 40) -> str:
    """Lower-case, non-alphanumerics collapsed to '_', trimmed (folder names)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "untitled"


def image_files(path: str | Path, recursive: bool = False) -> list[Path]:
    """An image file, or every image in a directory (sorted; with `recursive`, in its
    subdirectories too); nothing is decoded yet: each is read when its job runs."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--image '{path}' does not exist")
    if not path.is_dir():
        return [path]
    found = path.rglob("*") if recursive else path.iterdir()
    files = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--image '{path}' holds no {'/'.join(IMAGE_SUFFIXES)} files")
    return files


def _name(file: Path, root: Path) -> str:
    """A result name for an image: its path under the input folder, so equal file names in
    different subfolders stay apart."""
    rel = file.relative_to(root) if root.is_dir() else Path(file.name)
    return slug(str(rel.with_suffix("")), limit=60)


def _inputs(req: SampleRequest) -> list[dict[str, Any]]:
    """One dict per input: name, prompt, and the given image (a path, read when its job runs)
    or depth for the mode."""
    prompts = req.prompts or [""]
    if req.mode == "image_to_depth":
        if req.image is None:
            raise ValueError("--mode image_to_depth needs --image PATH|DIR")
        root = Path(req.image)
        return [
            {"name": _name(f, root), "prompt": prompts[0], "image": f}
            for f in image_files(req.image, req.recursive)
        ]
    if req.sparse is not None and req.mode != "depth_completion":
        raise ValueError(f"--sparse is for --mode depth_completion, not {req.mode}")
    if req.mode == "depth_completion":
        if req.image is None or req.sparse is None:
            raise ValueError("--mode depth_completion needs --image FILE and --sparse FILE "
                             f"(known depth points: {SPARSE_KINDS})")  # fmt: skip
        if Path(req.image).is_dir():
            raise ValueError("--mode depth_completion takes one --image file (its points in "
                             "--sparse), not a folder")  # fmt: skip
        files = image_files(req.image)
        read_sparse(req.sparse)  # a bad points file fails here, before any sampling
        return [{"name": _name(files[0], Path(req.image)), "prompt": prompts[0],
                 "image": files[0], "sparse": req.sparse}]  # fmt: skip
    if req.mode == "depth_to_image":
        if req.depth is None:
            raise ValueError("--mode depth_to_image needs --depth PATH")
        depth = read_depth(req.depth)
        return [{"name": slug(p), "prompt": p, "depth": depth} for p in prompts]
    return [{"name": slug(p), "prompt": p} for p in prompts]


def write_job(
    folder: Path, title: str, out: ModalityForcingOutput, meta: dict[str, Any], fov_deg: float,
    outputs: frozenset[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Save the first result of a pipeline output (np) and return its gallery entry."""
    space = "metric" if meta.get("mode") == "depth_completion" else "relative"
    files = save_result(
        folder,
        image=out.image[0] if out.image is not None else None,
        depth=out.depth[0] if out.depth is not None else None,
        uncertainty=out.uncertainty[0] if out.uncertainty is not None else None,
        fov_deg=fov_deg, outputs=outputs,
        metadata={"depth_space": space, **meta},
    )  # fmt: skip
    return {"title": title, "caption": meta.get("prompt", ""), "mode": meta.get("mode", ""),
            "files": files}  # fmt: skip


def run_sample_jobs(
    pipe: ModalityForcingPipeline, req: SampleRequest, out_dir: str | Path
) -> list[dict[str, Any]]:
    """Run every (input, seed) job, write its files, then the gallery. Returns gallery entries."""
    out_dir = Path(out_dir)
    settings = pipe.sampling_for(req.mode, req.sampling)  # resolved once: recorded as run
    jobs = [(item, seed) for item in _inputs(req) for seed in req.seeds]
    entries, skipped = [], SkipCounter()
    for i, (item, seed) in enumerate(tqdm(jobs, desc=f"sample[{req.mode}]", dynamic_ncols=True)):
        height, width = req.size or (None, None)
        image = item.get("image")
        if image is not None:  # read one image at a time; a bad file is skipped, not fatal
            try:
                image = read_image(image)
            except InputError as err:
                if len(jobs) == 1:  # a single input: its own error is the message
                    raise
                skipped.record("unreadable_image", str(item["image"]), str(err))
                continue
        run = dataclasses.replace(settings, seed=seed)
        extra = {"sparse_depth": item["sparse"]} if "sparse" in item else {}
        out = pipe(prompt=item["prompt"], image=image, depth=item.get("depth"), mode=req.mode,
                   sampling=run, height=height, width=width, **extra)  # fmt: skip
        meta = {"prompt": item["prompt"], "mode": req.mode, **sampling_record(run)}
        name = f"{i:03d}_{item['name']}_s{seed}"
        entries.append(write_job(out_dir / name, f"{item['name']} (seed {seed})", out, meta,
                                 req.fov_deg, req.outputs))  # fmt: skip
    if skipped.total:
        tqdm.write(f"skipped {skipped.total} of {len(jobs)} job(s) with unreadable inputs: "
                   f"{skipped.as_dict()}")  # fmt: skip
    if not entries:
        raise InputError(f"no input could be read ({skipped.total} skipped); nothing was written")
    write_gallery(out_dir, entries)
    return entries
