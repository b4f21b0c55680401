"""The pipeline's input and output conventions: what images and depth maps it accepts (and how
they are checked), and the output record in `np`, `pt` or `pil` form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..data.colormap import colorize_depth, colorize_uncertainty
from ..data.decode import CorruptFileError, image_to_rgb8
from ..data.inputs import InputError, image_array_to_unit
from ..data.letterbox import Box

OUTPUT_TYPES = ("np", "pt", "pil")


@dataclass
class ModalityForcingOutput:
    """Pipeline results (B = batch size).

    image: np uint8 [B, H, W, 3] | pt float [B, 3, H, W] in [0, 1] | list of PIL images.
    depth: np float32 [B, H, W] | pt [B, 1, H, W] relative depth (unit mean) | list of PIL
        colour maps (Spectral, near = red) for `pil`.
    uncertainty: like depth (per-pixel std of an ensemble), or None for single samples.
    """

    image: Any
    depth: Any
    uncertainty: Any = None


def image_tensor(image: Any, name: str = "image") -> torch.Tensor:
    """PIL / np [H, W, 3] (uint8, uint16 or float in [0, 1]) / torch [3, H, W] or [B, 3, H, W]
    in [0, 1] (the `pt` output's convention, so an output can be passed back in) / a list of
    any of these, one size -> float [B, 3, H, W] in [-1, 1] (the model's range).

    Raises:
        InputError: an unusable shape, dtype or value range, or a list of different sizes
            (names the argument).
    """
    if isinstance(image, list | tuple):
        if not image:
            raise InputError(f"`{name}` is an empty list")
        parts = [image_tensor(x, f"{name}[{i}]") for i, x in enumerate(image)]
        sizes = sorted({tuple(x.shape[-2:]) for x in parts})
        if len(sizes) > 1:
            raise InputError(
                f"`{name}` holds images of different sizes {sizes}; pass them one call each"
            )
        return torch.cat(parts)
    if isinstance(image, Image.Image):
        try:  # a phone photo's EXIF orientation applied, as every reader here does
            image = image_to_rgb8(ImageOps.exif_transpose(image), f"`{name}`")
        except CorruptFileError as err:
            raise InputError(str(err)) from None
    if isinstance(image, np.ndarray):
        unit = image_array_to_unit(image, name)
        return torch.from_numpy(unit * 2 - 1).permute(2, 0, 1)[None]
    if torch.is_tensor(image):
        x = image[None] if image.dim() == 3 else image
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"`{name}` tensor must be [3, H, W] or [B, 3, H, W], got {x.shape}")
        x = x.float()
        if not torch.isfinite(x).all():
            raise InputError(f"`{name}` tensor holds NaN or infinite values")
        if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise InputError(
                f"`{name}` tensor must lie in [0, 1] (as the `pt` output), got "
                f"[{x.min():.3g}, {x.max():.3g}]; map a [-1, 1] tensor with (x + 1) / 2"
            )
        return x.clamp(0, 1) * 2 - 1
    raise TypeError(
        f"`{name}` must be a PIL image, numpy array, torch tensor or a list of them, got "
        f"{type(image)}"
    )


def depth_tensor(depth: Any) -> torch.Tensor:
    """np / torch [H, W], [1, H, W] or [B, 1, H, W] depth (any scale, <= 0 invalid)."""
    if isinstance(depth, np.ndarray):
        depth = torch.from_numpy(np.asarray(depth, dtype=np.float32))
    if not torch.is_tensor(depth):
        raise TypeError(f"`depth` must be a numpy array or torch tensor, got {type(depth)}")
    x = depth.float()
    x = x[None, None] if x.dim() == 2 else (x[None] if x.dim() == 3 else x)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"`depth` must be [H, W] or [B, 1, H, W], got {tuple(depth.shape)}")
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def format_output(
    img: torch.Tensor | None, dep: torch.Tensor | None, unc: torch.Tensor | None, kind: str
) -> ModalityForcingOutput:
    """Model-range tensors (image in [-1, 1], depth [B, 1, H, W]) -> the output of `kind`."""
    img01 = ((img.float().clamp(-1, 1) + 1) / 2).cpu() if img is not None else None
    if kind == "pt":
        return ModalityForcingOutput(img01, maybe(dep, lambda x: x.float().cpu()),
                                     maybe(unc, lambda x: x.float().cpu()))  # fmt: skip
    images = maybe(img01, lambda x: (x.permute(0, 2, 3, 1) * 255).round().byte().numpy())
    depths = maybe(dep, lambda x: x[:, 0].float().cpu().numpy())
    uncs = maybe(unc, lambda x: x[:, 0].float().cpu().numpy())
    if kind == "np":
        return ModalityForcingOutput(images, depths, uncs)
    return ModalityForcingOutput(
        maybe(images, lambda xs: [Image.fromarray(x) for x in xs]),
        maybe(depths, lambda xs: [Image.fromarray(colorize_depth(x)) for x in xs]),
        maybe(uncs, lambda xs: [Image.fromarray(colorize_uncertainty(x)) for x in xs]),
    )


def maybe(x: Any, fn: Any) -> Any:
    return None if x is None else fn(x)


def content(x: torch.Tensor | None, box: Box) -> torch.Tensor | None:
    """The content of a framed tensor, unpadded, at the working size."""
    if x is None:
        return None
    return x[..., box.top : box.top + box.height, box.left : box.left + box.width]


def concat(outs: list[ModalityForcingOutput], kind: str) -> ModalityForcingOutput:
    """One output from the outputs of consecutive chunks of a batch."""

    def join(parts: list[Any]) -> Any:
        if parts[0] is None:
            return None
        if kind == "pil":
            return [x for part in parts for x in part]
        return torch.cat(parts) if kind == "pt" else np.concatenate(parts)

    return ModalityForcingOutput(*(join([getattr(o, f) for o in outs])
                                   for f in ("image", "depth", "uncertainty")))  # fmt: skip


def split_inputs(prompt: Any, image: Any, depth: Any, size: int) -> list[tuple[Any, Any, Any]]:
    """(prompt, image, depth) per chunk of `size` inputs (one chunk when there are fewer)."""
    given = image if image is not None else depth
    if given is not None:
        x = image_tensor(image) if image is not None else depth_tensor(depth)
        n = x.shape[0]
        if n <= size:
            return [(prompt, image, depth)]
        prompts = prompt if isinstance(prompt, list | tuple) and len(prompt) == n else None
        return [
            (prompts[i : i + size] if prompts else prompt,
             (x[i : i + size] + 1) / 2 if image is not None else None,
             x[i : i + size] if depth is not None else None)
            for i in range(0, n, size)
        ]  # fmt: skip
    prompts = [prompt] if isinstance(prompt, str) or prompt is None else list(prompt)
    if len(prompts) <= size:
        return [(prompt, None, None)]
    return [(prompts[i : i + size], None, None) for i in range(0, len(prompts), size)]
