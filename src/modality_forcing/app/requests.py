"""The web app's requests: the sliders' ranges enforced on the server, and uploads checked
before anything is decoded (files Gradio received, sizes from headers, EXR headers, tiling)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.inputs import DEPTH_KINDS, InputError, read_depth, read_image
from ..data.letterbox import MAX_ASPECT, aspect_excess, tile_windows
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
}
# The costliest ordinary request: image -> depth of an elongated image runs one sampler per
# window, so windows * ensemble * steps is capped at what the sliders allow for one window.
MAX_SAMPLER_RUNS = BOUNDS["steps"].hi * BOUNDS["ensemble"].hi


def control_defaults(pipe: ModalityForcingPipeline, mode: str) -> dict[str, float]:
    """Each control's starting value (the sliders' and the one NaN or junk is replaced by)."""
    d = pipe.defaults[mode]
    return {"steps": d.steps, "guidance": d.guidance, "log2_alpha": d.log2_alpha,
            "ensemble": 3 if mode == "image_to_depth" else 1, "fov": 60, "seed": 0}  # fmt: skip


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
    adjusted: tuple[str, ...] = ()

    def sampling(self, mode: str) -> SamplingConfig:
        """The sampling settings of `mode` from the controls it shows."""
        fields: dict[str, Any] = {"steps": self.steps, "guidance": self.guidance, "seed": self.seed}
        if mode == "joint":
            fields |= {"log2_alpha": self.log2_alpha, "refine_depth": self.ensemble > 1}
        if mode != "depth_to_image":
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


def read_image_upload(payload: Any, roots: tuple[Path, ...] = ()) -> np.ndarray:
    """Uploaded image -> uint8 [H, W, 3] (EXIF rotation applied, 16-bit scaled, at most MAX_SIDE a
    side; more than MAX_PIXELS refused from the header, before decoding)."""
    path, name = _upload(payload, "an image", roots)
    try:
        return read_image(path, max_pixels=MAX_PIXELS, max_side=MAX_SIDE)
    except InputError as err:
        hint = "Upload a PNG, JPEG or WebP image."
        raise _user_error(f"{_message(err, path, name)}. {hint}") from None


def read_depth_upload(payload: Any, roots: tuple[Path, ...] = ()) -> np.ndarray:
    """Uploaded depth map -> float32 [H, W] (.npy metres, 16-bit .png millimetres, .exr), at
    most MAX_SIDE a side; more than MAX_PIXELS refused from the header, before decoding."""
    path, name = _upload(payload, f"a depth map ({DEPTH_KINDS})", roots)
    try:
        if path.suffix.lower() == ".exr":
            _check_exr_header(path)
        return read_depth(path, max_pixels=MAX_PIXELS, max_side=MAX_SIDE)
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
