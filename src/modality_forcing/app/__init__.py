"""`modality-forcing app`: a Gradio web UI for the four modes of one checkpoint.

Tabs text -> RGB + depth, image -> depth, depth -> image and image + known points -> metric depth
(depth completion) call `ModalityForcingPipeline`; every request writes its files with
`jobs.write_job` (as `modality-forcing sample` does) into its own folder (colour maps, 16-bit PNG,
PLY/GLB point cloud) and the UI shows them. Examples are procedural scenes rendered at startup.
The server trusts nothing a request sends: files must be ones Gradio received, sizes are checked
from file headers before decoding, every number is clamped, and one sampler runs at a time.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.procedural import SceneConfig, render_split
from ..demo import demo_checkpoint
from ..inference.jobs import write_job
from ..inference.pipeline import ModalityForcingPipeline
from ..sampling.config import sampling_record
from .requests import (  # noqa: F401 (the request checks are part of the app's API)
    BOUNDS,
    FILE_DATA,
    MAX_PIXELS,
    MAX_PROMPT_CHARS,
    MAX_SIDE,
    NUM_POINTS,
    Settings,
    _check_windows,
    _upload,
    _user_error,
    control_defaults,
    gr,
    read_depth_upload,
    read_image_upload,
    read_known_points,
    request_settings,
    sample_points,
)

MAX_FILE_SIZE = "20mb"  # per uploaded file, enforced by Gradio's upload route (HTTP 413)
QUEUE_SIZE = 16  # requests waiting beyond this are turned away ("queue is full")
CONCURRENCY_ID = "sampler"  # all tabs share one limit: the CPU threads are shared
PASSWORD_ENV = "MF_APP_PASSWORD"
NUM_EXAMPLES = 4
EXAMPLE_SCALE = 4  # examples are rendered at 4x the working resolution: crisper thumbnails
RESULT_MAX_AGE_S = 3600  # result folders older than this are removed on the next request
DOWNLOADS = ("depth", "depth16", "cloud_ply", "cloud_glb", "uncertainty", "metadata")
API_NAMES = {"joint": "text_to_rgbd", "image_to_depth": "image_to_depth",
             "depth_to_image": "depth_to_image",
             "depth_completion": "depth_completion"}  # fmt: skip


# --------------------------------------------------------------------------------------------
# examples and result folders
# --------------------------------------------------------------------------------------------


def render_examples(
    out_dir: Path, resolution: tuple[int, int], num: int = NUM_EXAMPLES
) -> dict[str, list[list[Any]]]:
    """Procedural example inputs: val captions, test-scene PNGs, .npy depth (metres) and .npy
    known points (NUM_POINTS rows of x, y, metres).

    Returns:
        rows for `gr.Examples`, keyed by mode: joint [[caption]], image_to_depth [[png]],
        depth_to_image [[npy, caption]], depth_completion [[png, points npy, None]] (no dense
        depth: an example replaces one the user gave).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = resolution
    captions = [s["caption"] for s in render_split("val", 0, num, SceneConfig(height=8, width=8))]
    scenes = render_split("test", 0, num, SceneConfig(EXAMPLE_SCALE * h, EXAMPLE_SCALE * w))
    rows: dict[str, list[list[Any]]] = {"joint": [[c] for c in captions], "image_to_depth": [],
                                        "depth_to_image": [], "depth_completion": []}  # fmt: skip
    for i, s in enumerate(scenes):
        png, npy = out_dir / f"{s['key']}.png", out_dir / f"{s['key']}_depth.npy"
        points = out_dir / f"{s['key']}_points.npy"
        depth = np.where(s["valid_mask"], s["depth"], 0).astype(np.float32)
        Image.fromarray(s["image"]).save(png)
        np.save(npy, depth)
        known = sample_points(depth, NUM_POINTS, seed=i)
        y, x = np.nonzero(known)
        np.save(points, np.stack([x, y, known[y, x]], axis=1).astype(np.float32))  # [N, 3]
        rows["image_to_depth"].append([str(png)])
        rows["depth_to_image"].append([str(npy), s["caption"]])
        rows["depth_completion"].append([str(png), str(points), None])
    return rows


def _new_result_dir(root: Path) -> Path:
    """A fresh folder per request; folders older than RESULT_MAX_AGE_S are pruned."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if time.time() - old.stat().st_mtime > RESULT_MAX_AGE_S:
            shutil.rmtree(old, ignore_errors=True)
    return root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class _Served:
    """What every tab's handler needs: the pipeline and the app's folders."""

    pipe: ModalityForcingPipeline
    results: Path
    examples: Path  # uploads may also come from here (the examples' own files)


def _inputs(app: _Served, mode: str, s: Settings, uploads: tuple[Any, ...]
            ) -> tuple[dict[str, Any], dict[str, Any], str]:  # fmt: skip
    """A request's pipeline inputs read from its uploads, with what they add to the metadata
    and to the info line."""
    roots = (app.examples,)
    if mode == "image_to_depth":
        image = read_image_upload(uploads[0], roots)
        _check_windows(app.pipe, image, s)
        return {"image": image}, {}, ""
    if mode == "depth_to_image":
        return {"prompt": s.prompt, "depth": read_depth_upload(uploads[0], roots)}, {}, ""
    if mode == "depth_completion":
        known = read_known_points(*uploads, s.num_points, s.seed, roots)
        note = f"; depth in metres, {known.count} known points from {known.source}"
        return ({"image": known.image, "sparse_depth": known.depth},
                {"known_points": known.count}, note)  # fmt: skip
    return {"prompt": s.prompt}, {}, ""


def _run(app: _Served, mode: str, progress: Any, *uploads: Any, **raw: Any) -> tuple[Any, ...]:
    """Clamp the settings, read the uploads, sample one mode, save its files (metric depth marked
    so by `write_job`), return the values of `_output_components`."""
    s = request_settings(app.pipe, mode, raw)
    sampling = app.pipe.sampling_for(mode, s.sampling(mode))
    call, meta, note = _inputs(app, mode, s, uploads)
    start = time.perf_counter()

    def step(k: int, n: int) -> None:
        progress((k, n), desc=f"sampling {mode.replace('_', ' ')}", unit="steps")

    progress(0, desc="starting")
    try:
        out = app.pipe(mode=mode, sampling=sampling, callback=step, **call)
        meta |= {"mode": mode, "prompt": s.prompt, **sampling_record(sampling)}
        files = write_job(_new_result_dir(app.results), mode, out, meta, s.fov)["files"]
    except ValueError as err:  # e.g. a depth map with no valid pixel after letterboxing
        raise _user_error(str(err)) from None
    h, w = out.depth[0].shape
    info = (f"**{mode.replace('_', ' ')}**: {w}x{h} px, {s.steps} steps, seed {s.seed}, "
            f"{time.perf_counter() - start:.1f} s{note}")  # fmt: skip
    if s.adjusted:
        info += f" ({', '.join(s.adjusted)} moved into the sliders' range)"
    get = lambda key: str(files[key]) if key in files else None  # noqa: E731
    downloads = [str(files[k]) for k in DOWNLOADS if k in files]
    return (get("rgb"), get("depth_color"), get("uncertainty_color"), get("cloud_glb"),
            downloads, info)  # fmt: skip


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------

# Every tab's button: raw payloads (preprocess=False: Gradio's image preprocessing would decode
# the whole upload before our header check, and clip 16-bit images), one shared queue slot.
EVENT = {"preprocess": False, "concurrency_id": CONCURRENCY_ID, "concurrency_limit": 1}


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


def _slider(name: str, default: float, label: str) -> Any:
    b = BOUNDS[name]
    return gr.Slider(b.lo, b.hi, value=default, step=b.step, label=label)


def _controls(pipe: ModalityForcingPipeline, mode: str) -> tuple[Any, Any, Any, Any]:
    """Steps, guidance, seed and field of view (the controls every tab shares); guidance is None
    for depth completion, which has no prompt to guide by (its sampler ignores the scale)."""
    d = control_defaults(pipe, mode)
    steps = _slider("steps", d["steps"], "steps")
    guidance = None
    if mode != "depth_completion":
        guidance = _slider("guidance", d["guidance"], "guidance scale (1 = off)")
    seed = gr.Number(value=d["seed"], precision=0, minimum=BOUNDS["seed"].lo,
                     maximum=BOUNDS["seed"].hi, label="seed")  # fmt: skip
    fov = _slider("fov", d["fov"], "vertical field of view (deg, point cloud)")
    return steps, guidance, seed, fov


def _prompt_box(placeholder: str) -> Any:
    return gr.Textbox(label="prompt", lines=2, placeholder=placeholder,
                      max_length=MAX_PROMPT_CHARS)  # fmt: skip


def _tab_joint(app: _Served, rows: list[list[Any]]) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            prompt = _prompt_box("a red sphere left of a blue box on a checkered floor")
            steps, guidance, seed, fov = _controls(app.pipe, "joint")
            d = control_defaults(app.pipe, "joint")
            alpha = _slider("log2_alpha", d["log2_alpha"],
                            "log2 alpha (keeps depth noisier for longer)")  # fmt: skip
            ensemble = _slider("ensemble", d["ensemble"], "depth ensemble (> 1: re-estimate "
                               "depth from the image, with uncertainty)")  # fmt: skip
            button = gr.Button("Generate", variant="primary", elem_id="run-joint")
            gr.Examples(rows, inputs=[prompt], label="captions of procedural scenes")
        outputs = _output_components()

    def fn(
        prompt: Any, steps: Any, guidance: Any, seed: Any, fov: Any, alpha: Any, ensemble: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:  # fmt: skip
        return _run(app, "joint", progress, prompt=prompt, steps=steps, guidance=guidance,
                    seed=seed, fov=fov, log2_alpha=alpha, ensemble=ensemble)  # fmt: skip

    button.click(fn, [prompt, steps, guidance, seed, fov, alpha, ensemble], outputs,
                 api_name=API_NAMES["joint"], **EVENT)  # fmt: skip


def _tab_image_to_depth(app: _Served, rows: list[list[Any]]) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="image (any size: letterboxed, never stretched)",
                             type="filepath", sources=["upload", "clipboard"])  # fmt: skip
            steps, guidance, seed, fov = _controls(app.pipe, "image_to_depth")
            d = control_defaults(app.pipe, "image_to_depth")
            ensemble = _slider("ensemble", d["ensemble"], "ensemble size (> 1: uncertainty)")
            button = gr.Button("Estimate depth", variant="primary", elem_id="run-image-to-depth")
            gr.Examples(rows, inputs=[image], label="procedural test scenes")
        outputs = _output_components()

    def fn(
        image: Any, steps: Any, guidance: Any, seed: Any, fov: Any, ensemble: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:  # fmt: skip
        return _run(app, "image_to_depth", progress, image, steps=steps, guidance=guidance,
                    seed=seed, fov=fov, ensemble=ensemble)  # fmt: skip

    button.click(fn, [image, steps, guidance, seed, fov, ensemble], outputs,
                 api_name=API_NAMES["image_to_depth"], **EVENT)  # fmt: skip


def _tab_depth_to_image(app: _Served, rows: list[list[Any]]) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            depth = gr.File(label="depth map: .npy (metres), 16-bit .png (mm) or .exr")
            prompt = _prompt_box("a green box")
            steps, guidance, seed, fov = _controls(app.pipe, "depth_to_image")
            button = gr.Button("Generate image", variant="primary", elem_id="run-depth-to-image")
            gr.Examples(rows, inputs=[depth, prompt], label="procedural test scenes")
        outputs = _output_components()

    def fn(
        depth: Any, prompt: Any, steps: Any, guidance: Any, seed: Any, fov: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:  # fmt: skip
        return _run(app, "depth_to_image", progress, depth, prompt=prompt, steps=steps,
                    guidance=guidance, seed=seed, fov=fov)  # fmt: skip

    button.click(fn, [depth, prompt, steps, guidance, seed, fov], outputs,
                 api_name=API_NAMES["depth_to_image"], **EVENT)  # fmt: skip


def _tab_depth_completion(app: _Served, rows: list[list[Any]]) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="image (any size: letterboxed, never stretched)",
                             type="filepath", sources=["upload", "clipboard"])  # fmt: skip
            gr.Markdown(
                "Known depth on the image's pixel grid, one of: a **points file** (.npy in metres "
                "with 0 = unknown, or [N, 3] rows of x, y, metres; 16-bit .png in millimetres; "
                ".npz with `depth` and `mask`), or a **dense depth map** (.npy metres, 16-bit .png "
                "mm, .exr) that points are drawn from at random (the seed picks them)."
            )
            sparse = gr.File(label="points file (.npy, .png, .npz)")
            dense = gr.File(label="or a dense depth map to sample (.npy, .png, .exr)")
            d = control_defaults(app.pipe, "depth_completion")
            num_points = gr.Number(value=d["num_points"], precision=0,
                                   minimum=BOUNDS["num_points"].lo,
                                   maximum=BOUNDS["num_points"].hi,
                                   label="points to sample from a dense depth file")  # fmt: skip
            steps, _, seed, fov = _controls(app.pipe, "depth_completion")
            button = gr.Button("Complete depth", variant="primary", elem_id="run-depth-completion")
            gr.Examples(rows, inputs=[image, sparse, dense], label="procedural test scenes, "
                        f"{NUM_POINTS} known points each")  # fmt: skip
        outputs = _output_components()

    def fn(
        image: Any, sparse: Any, dense: Any, num_points: Any, steps: Any, seed: Any, fov: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:  # fmt: skip
        return _run(app, "depth_completion", progress, image, sparse, dense,
                    num_points=num_points, steps=steps, seed=seed, fov=fov)  # fmt: skip

    button.click(fn, [image, sparse, dense, num_points, steps, seed, fov], outputs,
                 api_name=API_NAMES["depth_completion"], **EVENT)  # fmt: skip


def build_app(
    pipe_or_ckpt: ModalityForcingPipeline | str | Path | None = None,
    work_dir: str | Path | None = None,
    precision: str = "auto",
    device: str | None = None,
) -> gr.Blocks:
    """The Gradio app: four tabs over one pipeline (text -> RGB + depth, image -> depth,
    depth -> image, image + points -> metric depth), queued (one sampler at a time, at most
    QUEUE_SIZE waiting, no route around the queue).

    Args:
        pipe_or_ckpt: a loaded pipeline, a checkpoint directory, or None for the shipped one.
        work_dir: where examples and per-request results go (default: a new temp folder).
        precision, device: for a checkpoint loaded here (`precision.resolve_precision`).
    """
    pipe = pipe_or_ckpt
    if not isinstance(pipe, ModalityForcingPipeline):
        pipe = ModalityForcingPipeline.from_pretrained(
            demo_checkpoint(pipe_or_ckpt), torch_dtype=precision, device=device
        )
    print(f"precision {pipe.precision.precision} on {pipe.precision.device}: "
          f"{pipe.precision.reason}")  # fmt: skip
    root = Path(work_dir or tempfile.mkdtemp(prefix="modality-forcing-app-"))
    rows = render_examples(root / "examples", pipe.resolution)
    served = _Served(pipe, root / "results", root / "examples")
    h, w = pipe.resolution
    tabs: list[tuple[str, Callable[..., None], str]] = [
        ("Text -> RGB + Depth", _tab_joint, "joint"),
        ("Image -> Depth", _tab_image_to_depth, "image_to_depth"),
        ("Depth -> Image", _tab_depth_to_image, "depth_to_image"),
        ("Image + Points -> Depth", _tab_depth_completion, "depth_completion"),
    ]
    with gr.Blocks(title="Modality Forcing", delete_cache=(RESULT_MAX_AGE_S,) * 2) as app:
        gr.Markdown(
            "## Modality Forcing: one model for text -> image + depth, image -> depth, depth -> "
            "image and image + known points -> depth\nWorking resolution "
            f"{h}x{w}; inputs of any size are letterboxed and outputs cropped back. Depth is "
            "relative (unit mean), except from image + points: metres."
        )
        for label, make_tab, mode in tabs:
            with gr.Tab(label, id=mode):
                make_tab(served, rows[mode])
    # api_open=False: Gradio's /run/<api_name> REST route would otherwise skip the queue, and
    # with it the concurrency limit.
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1, api_open=False)
    return app


def warn_if_exposed(host: str, port: int, auth: tuple[str, str] | None) -> None:
    """Warn when `host` is reachable from other machines (not loopback) and no login is set."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume other machines can reach it
        loopback = False
    if auth is None and not loopback:
        warnings.warn(
            f"serving on {host} without a login: anyone who can reach port {port} can use the "
            f"app and its API; pass --auth USER (password in {PASSWORD_ENV})",
            stacklevel=3,
        )


def resolve_auth(user: str | None) -> tuple[str, str] | None:
    """(user, password) for `launch(auth=...)`: None without a user; the password from the
    MF_APP_PASSWORD environment variable, else asked for on the terminal (so it never sits on
    a command line or in shell history).

    Raises:
        ValueError: an empty user or password.
    """
    if user is None:
        return None
    password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for '{user}': ")
    if not user or not password:
        raise ValueError(f"--auth needs a user name and a password (set {PASSWORD_ENV})")
    return user, password


def launch(
    ckpt: str | Path | None = None, host: str = "127.0.0.1", port: int = 7860,
    prevent_thread_lock: bool = False, auth: tuple[str, str] | None = None,
    precision: str = "auto", device: str | None = None,
) -> gr.Blocks:  # fmt: skip
    """Build the app on `ckpt` (default: the shipped checkpoint) and serve it on host:port.

    Args:
        auth: (user, password) to require a login for the page and its API (Gradio's `auth=`);
            clients then pass it too (`gradio_client.Client(url, auth=(user, password))`). The
            CLI: `modality-forcing app --auth USER`, password from MF_APP_PASSWORD or a prompt
            (`resolve_auth`). Serving a non-loopback host (e.g. 0.0.0.0) without it warns:
            anyone who can reach the port can run the sampler. Plain HTTP sends the password
            unencrypted: beyond a trusted network, put a TLS proxy in front.
    """
    warn_if_exposed(host, port, auth)
    work_dir = Path(tempfile.mkdtemp(prefix="modality-forcing-app-"))
    app = build_app(ckpt, work_dir, precision, device)
    # Gradio serves only files under allowed paths; show_error=False: unexpected errors show a
    # short notice, never a traceback (gr.Error messages are always shown).
    app.launch(server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock,
               allowed_paths=[str(work_dir)], show_error=False, quiet=True, auth=auth,
               max_file_size=MAX_FILE_SIZE)  # fmt: skip
    return app
