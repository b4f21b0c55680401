"""The web app's requests: the sliders' ranges enforced on the server, and uploads checked
before anything is decoded (files Gradio received, sizes from headers, EXR and NPZ headers,
tiling); depth completion's image and known points put on one pixel grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.inputs import DEPTH_KINDS, InputError, read_depth, read_image
from ..data.letterbox import MAX_ASPECT, aspect_excess, tile_windows
from ..data.sparse_points import (
    SPARSE_KINDS,
    point_mask,
    points_to_map,
    read_sparse,
    sparse_map,
)
from ..inference.pipeline import ModalityForcingPipeline
from ..sampling.config import SamplingConfig

try:
    import gradio as gr
    from gradio.utils import get_upload_folder
except ImportError as err:  # an optional extra: the rest of the package works without it
    raise ImportError("the web app needs gradio: pip install 'modality-forcing[app]'") from err
if tuple(int(x) for x in gr.__version__.split(".")[:2]) < (5, 31):  # see pyproject's `app` extra
    raise ImportError(
        f"the web app needs gradio >= 5.31 (upload path checks), not {gr.__version__}"
    )

# Outputs are upsampled from the model's working resolution (32x32 for the shipped checkpoint),
# so larger uploads only cost time and memory; they are shrunk (aspect kept) to this side.
MAX_SIDE = 1024
# Uploads above this are refused from their header, before decoding. Below the library's 50 MP:
# a 16 MP depth PNG already peaks near 350 MB while it is decoded and shrunk.
MAX_PIXELS = 16_000_000
MAX_PROMPT_CHARS = 1000
NUM_POINTS = 500  # depth completion: known points drawn from a dense depth upload by default
FILE_DATA = "gradio.FileData"  # the `meta._type` of a file Gradio has checked and cached


# --------------------------------------------------------------------------------------------
# settings: the sliders' ranges, enforced again on the server (API calls bypass the sliders)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """A control's range; `integer` controls are rounded."""

    lo: float
    hi: float
    step: float = 1.0
    integer: bool = True

    def clamp(self, value: Any, default: float) -> float | int:
        """`value` moved into [lo, hi]; NaN, None and non-numbers become `default`."""
        x = _as_float(value)
        x = min(max(float(default) if math.isnan(x) else x, self.lo), self.hi)
        return round(x) if self.integer else x


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):  # None, "abc", [1], 10**400
        return math.nan


BOUNDS = {
    "steps": Bound(1, 100),
    "guidance": Bound(1.0, 10.0, 0.5, integer=False),
    "log2_alpha": Bound(0.0, 8.0, 0.5, integer=False),
    "ensemble": Bound(1, 10),
    "fov": Bound(20, 120),
    "seed": Bound(0, 2**31 - 1),
    "num_points": Bound(1, MAX_PIXELS),
}
# The costliest ordinary request: image -> depth of an elongated image runs one sampler per
# window, so windows * ensemble * steps is capped at what the sliders allow for one window.
MAX_SAMPLER_RUNS = BOUNDS["steps"].hi * BOUNDS["ensemble"].hi


def control_defaults(pipe: ModalityForcingPipeline, mode: str) -> dict[str, float]:
    """Each control's starting value (the sliders' and the one NaN or junk is replaced by)."""
    d = pipe.defaults[mode]
    return {"steps": d.steps, "guidance": d.guidance, "log2_alpha": d.log2_alpha,
            "ensemble": 3 if mode == "image_to_depth" else 1, "fov": 60, "seed": 0,
            "num_points": NUM_POINTS}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """One request's controls after clamping; `adjusted` names the ones moved into range."""

    prompt: str
    steps: int
    guidance: float
    log2_alpha: float
    ensemble: int
    fov: float
    seed: int
    num_points: int
    adjusted: tuple[str, ...] = ()

    def sampling(self, mode: str) -> SamplingConfig:
        """The sampling settings of `mode` from the controls it shows."""
        fields: dict[str, Any] = {"steps": self.steps, "guidance": self.guidance, "seed": self.seed}
        if mode == "joint":
            fields |= {"log2_alpha": self.log2_alpha, "refine_depth": self.ensemble > 1}
        if mode in ("joint", "image_to_depth"):
            fields["ensemble"] = self.ensemble
        return SamplingConfig(**fields)


def request_settings(pipe: ModalityForcingPipeline, mode: str, raw: dict[str, Any]) -> Settings:
    """Clamp every number of a request to its slider's range; refuse a prompt that is not text
    or longer than MAX_PROMPT_CHARS (a list would become a batch of prompts)."""
    prompt = raw.get("prompt") or ""
    if not isinstance(prompt, str):
        raise _user_error("The prompt must be text.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _user_error(f"The prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}.")
    values = {name: BOUNDS[name].clamp(raw.get(name), default)
              for name, default in control_defaults(pipe, mode).items()}  # fmt: skip
    adjusted = tuple(n for n, v in values.items()
                     if raw.get(n) is not None and _as_float(raw[n]) != v)  # fmt: skip
    return Settings(prompt=prompt, adjusted=adjusted, **values)


# --------------------------------------------------------------------------------------------
# inputs: uploads are read here so a bad file becomes a message in the UI, not a traceback
# --------------------------------------------------------------------------------------------


def _user_error(message: str) -> gr.Error:
    """A message for the UI (a toast); the user's mistake, so no traceback on the console."""
    return gr.Error(message, print_exception=False)


def _upload(payload: Any, what: str, roots: tuple[Path, ...]) -> tuple[Path, str]:
    """(resolved path, name shown to the user) of a file Gradio received for this request.

    Events run with preprocess=False, so the payload is the request's own JSON. Gradio (>= 5.31)
    checks that a FileData payload (meta `gradio.FileData`) lies in its upload folder; an image
    payload without that meta skips Gradio's check, so it is refused here, and the path is
    checked again after resolving symlinks and `..`: inside Gradio's upload folder or `roots`.
    Nothing is opened before both checks pass.
    """
    if payload is None:
        raise _user_error(f"Upload {what} first, or pick one of the examples below.")
    refused = _user_error(f"Upload {what} through this app: that file was not uploaded to it.")
    if not isinstance(payload, dict) or not isinstance(payload.get("path"), str):
        raise refused
    if not isinstance(payload.get("meta"), dict) or payload["meta"].get("_type") != FILE_DATA:
        raise refused
    path = Path(payload["path"]).resolve()  # follows symlinks, removes `..`
    folders = (Path(get_upload_folder()).resolve(), *(r.resolve() for r in roots))
    if not any(path.is_relative_to(folder) for folder in folders):
        raise refused
    name = Path(str(payload.get("orig_name") or path.name)).name[:200]  # display only
    return path, name


def _message(err: Exception, path: Path, name: str) -> str:
    """The library's message with the server path replaced by the user's file name."""
    return str(err).replace(str(path), name).rstrip(".")


def read_image_upload(
    payload: Any, roots: tuple[Path, ...] = (), max_side: int | None = MAX_SIDE
) -> np.ndarray:
    """Uploaded image -> uint8 [H, W, 3] (EXIF rotation applied, 16-bit scaled, at most `max_side`
    a side; more than MAX_PIXELS refused from the header, before decoding)."""
    path, name = _upload(payload, "an image", roots)
    try:
        return read_image(path, max_pixels=MAX_PIXELS, max_side=max_side)
    except InputError as err:
        hint = "Upload a PNG, JPEG or WebP image."
        raise _user_error(f"{_message(err, path, name)}. {hint}") from None


def read_depth_upload(
    payload: Any, roots: tuple[Path, ...] = (), max_side: int | None = MAX_SIDE
) -> np.ndarray:
    """Uploaded depth map -> float32 [H, W] (.npy metres, 16-bit .png millimetres, .exr), at
    most `max_side` a side; more than MAX_PIXELS refused from the header, before decoding."""
    path, name = _upload(payload, f"a depth map ({DEPTH_KINDS})", roots)
    try:
        if path.suffix.lower() == ".exr":
            _check_exr_header(path)
        return read_depth(path, max_pixels=MAX_PIXELS, max_side=max_side)
    except (InputError, ImportError) as err:  # ImportError: .exr without OpenEXR installed
        raise _user_error(f"{_message(err, path, name)}. Expected a {DEPTH_KINDS}.") from None


def _check_exr_header(path: Path) -> None:
    """Refuse an EXR whose header declares a part above MAX_PIXELS, or more than 4 * MAX_PIXELS
    samples over all parts and channels: `read_depth` checks EXR sizes only after decoding."""
    try:
        import OpenEXR
    except ImportError:
        return  # read_depth raises the install hint
    try:
        with OpenEXR.File(str(path), header_only=True) as exr:  # headers are cleared on exit
            headers = [part.header for part in exr.parts]
            sizes = [(int(x1 - x0 + 1) * int(y1 - y0 + 1), len(h.get("channels", [])) or 1)
                     for h in headers for (x0, y0), (x1, y1) in [h["dataWindow"]]]  # fmt: skip
    except Exception as err:  # OpenEXR raises plain RuntimeErrors for broken files
        raise InputError(f"'{path}' is not a readable EXR file ({err})") from None
    largest, samples = max(p for p, _ in sizes), sum(p * c for p, c in sizes)
    if largest > MAX_PIXELS or samples > 4 * MAX_PIXELS:
        raise InputError(
            f"'{path}' declares {largest / 1e6:.1f} MP ({samples / 1e6:.0f} M samples in "
            f"{len(sizes)} parts), above the limit of {MAX_PIXELS / 1e6:.0f} MP; downsize it first"
        )


def _check_windows(pipe: ModalityForcingPipeline, image: np.ndarray, s: Settings) -> None:
    """Refuse an image -> depth request whose tiling would cost more than MAX_SAMPLER_RUNS: an
    input far more elongated than the frame runs one sampler per window (a 1024x2 strip: 1023)."""
    (h, w), size = image.shape[:2], pipe.resolution
    windows = len(tile_windows(h, w, size)) if aspect_excess(h, w, size) > MAX_ASPECT else 1
    if windows * s.ensemble * s.steps > MAX_SAMPLER_RUNS:
        raise _user_error(
            f"This {w}x{h} image is far more elongated than the model's {size[1]}x{size[0]} "
            f"frame: depth is predicted in {windows} windows, and {windows} windows x ensemble "
            f"{s.ensemble} x {s.steps} steps is above the limit of {MAX_SAMPLER_RUNS:.0f}. Lower "
            "the steps or ensemble size, or crop the image."
        )


# --------------------------------------------------------------------------------------------
# depth completion: an image and its known depth points, on one pixel grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownPoints:
    """Depth completion's inputs on the image's pixel grid (at most MAX_SIDE a side)."""

    image: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W] metres, 0 where unknown
    source: str  # where the points came from, for the info line

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.depth))


def read_known_points(
    image: Any, sparse: Any, dense: Any, num_points: int, seed: int, roots: tuple[Path, ...] = ()
) -> KnownPoints:
    """An uploaded image and its known depth points: a points file (`sparse`, any file form of
    `data/sparse_points.py`) or `num_points` valid pixels drawn with `seed` from a dense depth map
    (`dense`), exactly one of the two. Points are checked on the image's full pixel grid; an
    image above MAX_SIDE is then shrunk as `read_image_upload` shrinks it, and the points move
    with it (points landing on one pixel are averaged)."""
    if (sparse is None) == (dense is None):
        given = "both were given" if sparse is not None else "neither was given"
        raise _user_error(
            f"Give known depth points one way ({given}): a points file ({SPARSE_KINDS}), or a "
            "dense depth map to sample points from."
        )
    full = read_image_upload(image, roots, max_side=None)
    size = full.shape[:2]
    if sparse is not None:
        path, name = _upload(sparse, "a points file", roots)
        depth, source = _read_points(path, name, size), f"'{name}'"
    else:
        dense_depth = read_depth_upload(dense, roots, max_side=None)
        if dense_depth.shape != size:
            (dh, dw), (h, w) = dense_depth.shape, size
            raise _user_error(f"The dense depth map is {dw}x{dh} pixels but the image is {w}x{h}; "
                              "give depth on the image's own pixel grid.")  # fmt: skip
        depth, source = sample_points(dense_depth, num_points, seed), "the dense depth map"
    small, depth = _shrink(full, depth)
    if small.shape != full.shape:
        source += f", shrunk with the image from {size[1]}x{size[0]}"
    return KnownPoints(small, depth, source)


def sample_points(depth: np.ndarray, num: int, seed: int) -> np.ndarray:
    """`num` valid pixels (all of them, when fewer) of a dense depth map [H, W] (0 = invalid),
    drawn with `seed`: the same map with every other pixel 0 (unknown)."""
    mask = point_mask(f"random:{num}", depth, depth > 0, np.random.default_rng(seed))
    return np.where(mask, depth, 0.0).astype(np.float32)


def _read_points(path: Path, name: str, size: tuple[int, int]) -> np.ndarray:
    """A checked points upload -> known depth [H, W] metres on the image grid `size`."""
    try:
        sparse, mask = read_sparse(path, max_pixels=MAX_PIXELS)
        return sparse_map(sparse, mask, size, f"'{name}'")[0]
    except InputError as err:
        raise _user_error(f"{_message(err, path, name)}.") from None


def _shrink(image: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An image above MAX_SIDE a side shrunk (aspect kept, as `read_image` does) and its known
    depth [H, W] moved onto the smaller grid: pixel centres scaled, points on one pixel averaged."""
    h, w = image.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return image, depth
    small = Image.fromarray(image)
    small.thumbnail((MAX_SIDE, MAX_SIDE))
    rows, cols = np.nonzero(depth)
    points = np.stack([(cols + 0.5) * (small.width / w), (rows + 0.5) * (small.height / h),
                       depth[rows, cols]], axis=1)  # fmt: skip  # [N, 3] x, y, metres
    return np.asarray(small), points_to_map(points, (small.height, small.width), "points")[0]
