"""`modality-forcing app`: a Gradio web UI for the three modes of one checkpoint.

Tabs text -> RGB + depth, image -> depth and depth -> image call `ModalityForcingPipeline`; every
request writes its files with `export.save_result` into its own folder (colour maps, 16-bit PNG,
PLY/GLB point cloud) and the UI shows them. Examples are procedural scenes rendered at startup.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .data.decode import CorruptFileError
from .data.folder import read_depth_file
from .data.procedural import SceneConfig, render_split
from .demo import demo_checkpoint
from .export import save_result
from .pipeline import ModalityForcingPipeline

try:
    import gradio as gr
except ImportError as err:  # an optional extra: the rest of the package works without it
    raise ImportError("the web app needs gradio: pip install 'modality-forcing[app]'") from err

# Outputs are upsampled from the model's working resolution (32x32 for the shipped checkpoint),
# so larger uploads only cost time and memory; they are shrunk (aspect kept) to this side.
MAX_SIDE = 1024
DEPTH_SUFFIXES = (".npy", ".png", ".exr")
NUM_EXAMPLES = 4
EXAMPLE_SCALE = 4  # examples are rendered at 4x the working resolution: crisper thumbnails
RESULT_MAX_AGE_S = 3600  # result folders older than this are removed on the next request
DOWNLOADS = ("depth", "depth16", "cloud_ply", "cloud_glb", "uncertainty", "metadata")
API_NAMES = {"joint": "text_to_rgbd", "image_to_depth": "image_to_depth",
             "depth_to_image": "depth_to_image"}  # fmt: skip


# --------------------------------------------------------------------------------------------
# inputs: uploads are read here so a bad file becomes a message in the UI, not a traceback
# --------------------------------------------------------------------------------------------


def _user_error(message: str) -> gr.Error:
    """A message for the UI (a toast); the user's mistake, so no traceback on the console."""
    return gr.Error(message, print_exception=False)


def _upload(payload: Any, what: str) -> tuple[Path, str]:
    """(path, name shown to the user) of an uploaded file (events run with preprocess=False)."""
    if payload is None:
        raise _user_error(f"Upload {what} first, or pick one of the examples below.")
    if isinstance(payload, dict):
        path = Path(payload["path"])
        return path, payload.get("orig_name") or path.name
    return Path(payload), Path(payload).name


def read_image_upload(payload: Any) -> np.ndarray:
    """Uploaded image -> uint8 [H, W, 3] (EXIF rotation applied, at most MAX_SIDE a side)."""
    path, name = _upload(payload, "an image")
    try:
        with Image.open(path) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise _user_error(
            f"'{name}' is not an image this app can read: upload a PNG, JPEG or WebP photo."
        ) from None
    rgb.thumbnail((MAX_SIDE, MAX_SIDE))  # keeps the aspect ratio; the pipeline letterboxes
    return np.asarray(rgb)


def read_depth_upload(payload: Any) -> np.ndarray:
    """Uploaded depth map -> float32 [H, W] (.npy metres, 16-bit .png millimetres, .exr)."""
    path, name = _upload(payload, "a depth map (.npy, 16-bit .png or .exr)")
    kinds = ".npy (float array), 16-bit single-channel .png (millimetres) or .exr"
    if path.suffix.lower() not in DEPTH_SUFFIXES:
        raise _user_error(f"'{name}' is not a depth file: upload a {kinds}.")
    try:
        depth = read_depth_file(path)
    except (CorruptFileError, OSError, ImportError) as err:
        detail = str(err).replace(str(path), name)  # the user's file name, not the temp path
        message = f"Cannot read depth from '{name}': {detail}. Expected a {kinds}."
        raise _user_error(message) from None
    if not (np.isfinite(depth) & (depth > 0)).any():
        raise _user_error(f"'{name}' holds no valid depth: every pixel is 0, negative or NaN.")
    return depth


# --------------------------------------------------------------------------------------------
# examples and result folders
# --------------------------------------------------------------------------------------------


def render_examples(
    out_dir: Path, resolution: tuple[int, int], num: int = NUM_EXAMPLES
) -> dict[str, list[list[Any]]]:
    """Procedural example inputs: val captions, test-scene PNGs and .npy depth (metres).

    Returns:
        rows for `gr.Examples`, keyed by mode: joint [[caption]], image_to_depth [[png]],
        depth_to_image [[npy, caption]].
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = resolution
    captions = [s["caption"] for s in render_split("val", 0, num, SceneConfig(height=8, width=8))]
    scenes = render_split("test", 0, num, SceneConfig(EXAMPLE_SCALE * h, EXAMPLE_SCALE * w))
    rows: dict[str, list[list[Any]]] = {"joint": [[c] for c in captions],
                                        "image_to_depth": [], "depth_to_image": []}  # fmt: skip
    for s in scenes:
        png, npy = out_dir / f"{s['key']}.png", out_dir / f"{s['key']}_depth.npy"
        Image.fromarray(s["image"]).save(png)
        np.save(npy, np.where(s["valid_mask"], s["depth"], 0).astype(np.float32))
        rows["image_to_depth"].append([str(png)])
        rows["depth_to_image"].append([str(npy), s["caption"]])
    return rows


def _new_result_dir(root: Path) -> Path:
    """A fresh folder per request; folders older than RESULT_MAX_AGE_S are pruned."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if time.time() - old.stat().st_mtime > RESULT_MAX_AGE_S:
            shutil.rmtree(old, ignore_errors=True)
    return root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def _run(
    pipe: ModalityForcingPipeline, root: Path, mode: str, progress: Any, fov_deg: float,
    seed: float, **call: Any,
) -> tuple[Any, ...]:  # fmt: skip
    """Sample one mode, save its files, return the values of `_output_components`."""
    seed = int(seed or 0)
    start = time.perf_counter()

    def step(k: int, n: int) -> None:
        progress((k, n), desc=f"sampling {mode.replace('_', ' ')}", unit="steps")

    progress(0, desc="starting")
    try:
        out = pipe(mode=mode, generator=torch.Generator().manual_seed(seed), callback=step, **call)
        settings = {k: v for k, v in call.items() if k not in ("image", "depth")}
        files = save_result(
            _new_result_dir(root), image=out.image[0], depth=out.depth[0],
            uncertainty=None if out.uncertainty is None else out.uncertainty[0],
            fov_deg=float(fov_deg), metadata={"mode": mode, "seed": seed, **settings},
        )  # fmt: skip
    except ValueError as err:  # e.g. a depth map with no valid pixel after letterboxing
        raise _user_error(str(err)) from None
    h, w = out.depth[0].shape
    info = (f"**{mode.replace('_', ' ')}**: {w}x{h} px, {call['num_inference_steps']} steps, "
            f"seed {seed}, {time.perf_counter() - start:.1f} s")  # fmt: skip
    get = lambda key: str(files[key]) if key in files else None  # noqa: E731
    downloads = [str(files[k]) for k in DOWNLOADS if k in files]
    return (get("rgb"), get("depth_color"), get("uncertainty_color"), get("cloud_glb"),
            downloads, info)  # fmt: skip


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------


def _output_components() -> list[Any]:
    """RGB, depth colour map, uncertainty, point cloud, downloads, info (one set per tab)."""
    with gr.Column():
        with gr.Row():
            rgb = gr.Image(label="RGB", type="filepath", interactive=False)
            depth = gr.Image(label="depth (near = red)", type="filepath", interactive=False)
            unc = gr.Image(label="uncertainty (ensemble std)", type="filepath",
                           interactive=False)  # fmt: skip
        cloud = gr.Model3D(label="point cloud (drag to orbit)", display_mode="point_cloud",
                           clear_color=(0.1, 0.1, 0.1, 1.0), height=360,
                           camera_position=(65, 70, None))  # fmt: skip
        files = gr.File(label="downloads: depth .npy, 16-bit PNG, PLY, GLB",
                        file_count="multiple", interactive=False)  # fmt: skip
        info = gr.Markdown()
    return [rgb, depth, unc, cloud, files, info]


def _sliders(pipe: ModalityForcingPipeline, mode: str) -> tuple[Any, Any, Any, Any]:
    """Steps, guidance, seed and field of view (the controls every tab shares)."""
    steps = gr.Slider(1, 100, value=pipe.defaults["num_inference_steps"], step=1, label="steps")
    guidance = gr.Slider(1.0, 10.0, value=pipe.defaults["guidance"][mode], step=0.5,
                         label="guidance scale (1 = off)")  # fmt: skip
    seed = gr.Number(value=0, precision=0, label="seed")
    fov = gr.Slider(20, 120, value=60, step=1, label="vertical field of view (deg, point cloud)")
    return steps, guidance, seed, fov


def _tab_joint(pipe: ModalityForcingPipeline, root: Path, rows: list[list[Any]]) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="prompt", lines=2, placeholder="a red sphere left of a "
                                "blue box on a checkered floor")  # fmt: skip
            steps, guidance, seed, fov = _sliders(pipe, "joint")
            alpha = gr.Slider(0.0, 8.0, value=pipe.defaults["log2_alpha"], step=0.5,
                              label="log2 alpha (keeps depth noisier for longer)")  # fmt: skip
            ensemble = gr.Slider(1, 10, value=1, step=1, label="depth ensemble (> 1: re-estimate "
                                 "depth from the image, with uncertainty)")  # fmt: skip
            button = gr.Button("Generate", variant="primary")
            gr.Examples(rows, inputs=[prompt], label="captions of procedural scenes")
        outputs = _output_components()

    def fn(
        prompt: str | None, steps: float, guidance: float, seed: float, fov: float, alpha: float,
        ensemble: float, progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:  # fmt: skip
        return _run(pipe, root, "joint", progress, fov, seed, prompt=prompt or "",
                    num_inference_steps=int(steps), guidance_scale=float(guidance),
                    log2_alpha=float(alpha), ensemble_size=int(ensemble),
                    refine_depth=int(ensemble) > 1)  # fmt: skip

    button.click(fn, [prompt, steps, guidance, seed, fov, alpha, ensemble], outputs,
                 api_name=API_NAMES["joint"], preprocess=False)  # fmt: skip


def _tab_image_to_depth(pipe: ModalityForcingPipeline, root: Path, rows: list[list[Any]]) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="image (any size: letterboxed, never stretched)",
                             type="filepath", sources=["upload", "clipboard"])  # fmt: skip
            steps, guidance, seed, fov = _sliders(pipe, "image_to_depth")
            ensemble = gr.Slider(1, 10, value=3, step=1, label="ensemble size (> 1: uncertainty)")
            button = gr.Button("Estimate depth", variant="primary", elem_id="run-image-to-depth")
            gr.Examples(rows, inputs=[image], label="procedural test scenes")
        outputs = _output_components()

    def fn(
        image: Any, steps: float, guidance: float, seed: float, fov: float, ensemble: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:  # fmt: skip
        return _run(pipe, root, "image_to_depth", progress, fov, seed,
                    image=read_image_upload(image), num_inference_steps=int(steps),
                    guidance_scale=float(guidance), ensemble_size=int(ensemble))  # fmt: skip

    button.click(fn, [image, steps, guidance, seed, fov, ensemble], outputs,
                 api_name=API_NAMES["image_to_depth"], preprocess=False)  # fmt: skip


def _tab_depth_to_image(pipe: ModalityForcingPipeline, root: Path, rows: list[list[Any]]) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            depth = gr.File(label="depth map: .npy (metres), 16-bit .png (mm) or .exr")
            prompt = gr.Textbox(label="prompt", lines=2, placeholder="a green box")
            steps, guidance, seed, fov = _sliders(pipe, "depth_to_image")
            button = gr.Button("Generate image", variant="primary")
            gr.Examples(rows, inputs=[depth, prompt], label="procedural test scenes")
        outputs = _output_components()

    def fn(
        depth: Any, prompt: str | None, steps: float, guidance: float, seed: float, fov: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:  # fmt: skip
        return _run(pipe, root, "depth_to_image", progress, fov, seed,
                    depth=read_depth_upload(depth), prompt=prompt or "",
                    num_inference_steps=int(steps), guidance_scale=float(guidance))  # fmt: skip

    button.click(fn, [depth, prompt, steps, guidance, seed, fov], outputs,
                 api_name=API_NAMES["depth_to_image"], preprocess=False)  # fmt: skip


def build_app(
    pipe_or_ckpt: ModalityForcingPipeline | str | Path | None = None,
    work_dir: str | Path | None = None,
) -> gr.Blocks:
    """The Gradio app: three tabs over one pipeline.

    Args:
        pipe_or_ckpt: a loaded pipeline, a checkpoint directory, or None for the shipped one.
        work_dir: where examples and per-request results go (default: a new temp folder).
    """
    pipe = pipe_or_ckpt
    if not isinstance(pipe, ModalityForcingPipeline):
        pipe = ModalityForcingPipeline.from_pretrained(demo_checkpoint(pipe_or_ckpt))
    root = Path(work_dir or tempfile.mkdtemp(prefix="modality-forcing-app-"))
    rows = render_examples(root / "examples", pipe.resolution)
    h, w = pipe.resolution
    tabs: list[tuple[str, Callable[..., None], str]] = [
        ("Text -> RGB + Depth", _tab_joint, "joint"),
        ("Image -> Depth", _tab_image_to_depth, "image_to_depth"),
        ("Depth -> Image", _tab_depth_to_image, "depth_to_image"),
    ]
    with gr.Blocks(title="Modality Forcing", delete_cache=(RESULT_MAX_AGE_S,) * 2) as app:
        gr.Markdown(
            "## Modality Forcing: one model for text -> image + depth, image -> depth and "
            f"depth -> image\nWorking resolution {h}x{w}; inputs of any size are letterboxed and "
            "outputs cropped back. Depth is relative (unit mean)."
        )
        for label, make_tab, mode in tabs:
            with gr.Tab(label, id=mode):
                make_tab(pipe, root / "results", rows[mode])
    return app


def launch(
    ckpt: str | Path | None = None, host: str = "127.0.0.1", port: int = 7860,
    prevent_thread_lock: bool = False,
) -> gr.Blocks:  # fmt: skip
    """Build the app on `ckpt` (default: the shipped checkpoint) and serve it on host:port."""
    work_dir = Path(tempfile.mkdtemp(prefix="modality-forcing-app-"))
    app = build_app(ckpt, work_dir)
    app.queue(default_concurrency_limit=1)  # one sampler at a time: CPU threads are shared
    # Gradio serves only files under allowed paths; show_error=False: unexpected errors show a
    # short notice, never a traceback (gr.Error messages are always shown).
    app.launch(server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock,
               allowed_paths=[str(work_dir)], show_error=False, quiet=True)  # fmt: skip
    return app
