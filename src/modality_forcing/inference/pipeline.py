"""`ModalityForcingPipeline`: every mode of a trained model behind one diffusers-style call.

    pipe = ModalityForcingPipeline.from_pretrained("runs/cpu-s-mf/final")
    out = pipe(prompt="a red sphere left of a blue box", mode="joint")
    out = pipe(image=photo, mode="image_to_depth", ensemble_size=5)   # + out.uncertainty
    out = pipe(prompt="...", depth=depth_map, mode="depth_to_image")

Inputs of any size are letterboxed to the model's working resolution (or, with `frame="stretch"`,
resized to it) and the outputs mapped back. Depth outputs are relative depth: unit mean, not
contracted.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.inputs import InputError
from ..data.letterbox import (
    MAX_ASPECT,
    Box,
    aspect_excess,
    blend_weights,
    tile_windows,
    unletterbox,
)
from ..data.letterbox import frame as fit_frame
from ..modalities import valid_mean
from ..precision import pick_device, precision_of, resolve_precision
from ..sampling.config import ModeDefaults, SamplingConfig, mode_defaults, own_sampling
from ..sampling.ensemble import ensemble_depth
from ..sampling.generate import GIVEN_BY_MODE, generate
from ..training.checkpoint import load_model, read_sampling, write_checkpoint
from .completion import complete, frame_points, sparse_batch
from .conventions import (
    OUTPUT_TYPES,
    ModalityForcingOutput,
    concat,
    content,
    depth_tensor,
    format_output,
    image_tensor,
    split_inputs,
)
from .hub import is_repo_id, push_folder, save_for_hub, snapshot

# diffusers' callback_on_step_end(pipe, step, t, {"latents": state}) -> optional {"latents": ...}
StepEndCallback = Callable[[Any, int, dict[str, torch.Tensor], dict[str, Any]], Any]


def _load_official(path: str | Path, device: str | torch.device, **kwargs: Any) -> Any:
    from ..backbones.official.model import load_official

    return load_official(path, device, **kwargs)


# `from_pretrained(path, format=...)`: our checkpoint directories, or a release directory.
FORMAT_LOADERS = {"native": load_model, "official": _load_official}


class ModalityForcingPipeline:
    """Joint image + depth generation, image -> depth and depth -> image with one model."""

    def __init__(
        self, model: torch.nn.Module, format: str = "native", precision: str = "auto",
        sampling: dict[str, dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        """`sampling`: per-mode defaults over the format's, {"guidance": {mode: scale},
        "steps": {mode: n}} (a checkpoint's own, from its meta.json, in `from_pretrained`)."""
        self.format = format
        # mode -> what a call samples with for settings it leaves at None
        self.defaults: dict[str, ModeDefaults] = mode_defaults(format, sampling)
        self.model = model.eval()
        res = model.cfg.resolution or (32, 32)
        self.resolution = (int(res[0]), int(res[1]))
        self.requested_precision = precision  # `auto` is decided again after a move
        self._progress_bar: dict[str, Any] = {"disable": True}
        self.precision = resolve_precision(precision, self.device)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        format: str = "native",
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> ModalityForcingPipeline:
        """Load a checkpoint directory, or a Hub repo ("org/name", through the Hugging Face
        cache; `HF_HUB_OFFLINE=1` or `local_files_only=True` reads the cache only).

        Args:
            path: `format="native"`: our `model.safetensors` + `config.yaml` (+ `meta.json`,
                whose `sampling` holds the checkpoint's per-mode guidance and steps);
                `"official"`: a release directory (`config.json` + `model.safetensors` + AE files).
                Either may be a Hub repo id instead of a folder.
            revision, cache_dir, local_files_only, token: for a Hub repo (`snapshot_download`).
            torch_dtype: compute precision: `torch.bfloat16` (autocast) or `torch.float32`;
                None picks per device (`precision.resolve_precision("auto")`). Weights stay
                float32 either way, and the depth head always computes in float32.
            device: where to run; None picks cuda > mps > cpu.
            format: `native` or `official`.
            kwargs: for `native`, `base_models={"backbone" | "codec" | "text": folder or Hub
                id}` overrides where the frozen base models are (a checkpoint stores them as Hub
                ids or paths relative to itself, never absolute); for `official`, passed to
                `backbones.official.model.load_official` (`text_encoder=` a local Qwen3-8B
                directory, optional `vae=`).
        """
        if format not in FORMAT_LOADERS:
            raise ValueError(f"unknown format '{format}'; choose from {sorted(FORMAT_LOADERS)}")
        hub = {"revision": None, "cache_dir": cache_dir, "local_files_only": local_files_only,
               "token": token}  # fmt: skip
        if is_repo_id(path):
            path = snapshot(str(path), **{**hub, "revision": revision})
        dev = pick_device(device)
        if format == "native":  # base models: overridden, relative to `path`, or Hub ids
            kwargs.setdefault("resolve", lambda repo: str(snapshot(repo, **hub)))
        model = FORMAT_LOADERS[format](path, dev, **kwargs)
        sampling = read_sampling(path) if format == "native" else None
        return cls(model, format=format, precision=precision_of(torch_dtype), sampling=sampling)

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> ModalityForcingPipeline:
        """Move the model to `device` and/or set the compute precision (`dtype` as in
        `from_pretrained`'s `torch_dtype`); returns the pipeline."""
        if device is not None:
            self.model.to(pick_device(device))
        if dtype is not None:
            self.requested_precision = precision_of(dtype)
        self.precision = resolve_precision(self.requested_precision, self.device)
        return self

    def save_pretrained(self, path: str | Path) -> Path:
        """Write safetensors weights + YAML config (atomically), with the per-mode guidance."""
        own = own_sampling(self.defaults, self.format)
        meta = {"weights": "pipeline", "format": "modality-forcing", "sampling": own}
        return write_checkpoint(path, self.model.cfg, self.model.state_dict(), meta)

    def push_to_hub(
        self, repo_id: str, private: bool = False, token: str | None = None,
        commit_message: str = "Upload modality-forcing checkpoint", license: str = "apache-2.0",
        api: Any = None,
    ) -> str:  # fmt: skip
        """Share this pipeline as the Hub repo `repo_id`: the checkpoint (`save_pretrained`) with
        a model card (README.md: the model, its sampling defaults, what it measured, use and
        limits). Returns the commit URL. `api`: a `huggingface_hub.HfApi` (default: a new one)."""
        folder = save_for_hub(self, repo_id, license)
        try:
            return push_folder(folder, repo_id, private, token, commit_message, api)
        finally:
            shutil.rmtree(folder.parent, ignore_errors=True)

    def sampling_for(self, mode: str, sampling: SamplingConfig | None = None) -> SamplingConfig:
        """`sampling` (default: all defaults) with its None settings filled from `mode`'s
        defaults: exactly what a call of that mode runs with."""
        if mode not in self.defaults:
            raise ValueError(f"unknown mode '{mode}'; choose from {sorted(self.defaults)}")
        return (sampling or SamplingConfig()).resolved(self.defaults[mode])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: Any = None,
        depth: Any = None,
        mode: str = "joint",
        sampling: SamplingConfig | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        ensemble_size: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        log2_alpha: float | None = None,
        shift_mu: float | None = None,
        solver: str | None = None,
        refine_depth: bool | None = None,
        height: int | None = None,
        width: int | None = None,
        callback: Callable[[int, int], None] | None = None,
        frame: str | None = None,
        return_dict: bool = True,
        batch_size: int | None = None,
        processing_resolution: int | tuple[int, int] | None = None,
        match_input_resolution: bool = True,
        ensembling_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        latents: dict[str, torch.Tensor] | None = None,
        sparse_depth: Any = None,
        sparse_mask: Any = None,
    ) -> ModalityForcingOutput | tuple[Any, Any, Any]:
        """Run one mode. `sampling` holds every sampler setting (`SamplingConfig`); the
        diffusers-style keywords (`num_inference_steps`, `guidance_scale`, `ensemble_size`, ...)
        override single settings of it. Settings left at None take `self.defaults[mode]` (the
        format's, overlaid with the checkpoint's own). `generator` wins over `sampling.seed`.
        `callback(step, num_steps)` is called after every sampler step (once per sampling run:
        an ensemble is one run per image). `frame`: how given inputs of another size reach the
        working size, `letterbox` (keeps the aspect ratio) or `stretch`; outputs come back at the
        input size either way. `depth_completion`: `image` plus known depth points
        `sparse_depth` (a file, an [H, W] map in metres with 0 where unknown, or [N, 3] rows of
        x, y, metres; optional `sparse_mask`; a list, one per image) -> dense depth in metres,
        the known points kept (`data/sparse_points.py`, `inference/completion.py`)."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output_type '{output_type}'; choose from {OUTPUT_TYPES}")
        unknown = sorted(set(ensembling_kwargs or {}) - {"reduction"})
        if unknown:
            raise ValueError(f"unknown ensembling_kwargs {unknown}; supported: ['reduction']")
        cfg = (sampling or SamplingConfig()).with_overrides(
            steps=num_inference_steps, guidance=guidance_scale, ensemble=ensemble_size,
            log2_alpha=log2_alpha, shift_mu=shift_mu, solver=solver, refine_depth=refine_depth,
            frame=frame, reduction=(ensembling_kwargs or {}).get("reduction"),
        )  # fmt: skip
        if mode == "depth_completion":
            if batch_size is not None or cfg.ensemble > 1:
                raise ValueError("depth_completion runs one sample per image: no batch_size "
                                 "or ensemble_size")  # fmt: skip
            cfg = self.sampling_for(mode, cfg)
            if generator is None and cfg.seed is not None:
                generator = torch.Generator().manual_seed(cfg.seed)
            out = self._completion(prompt, image, sparse_depth, sparse_mask, cfg, generator,
                                   processing_resolution, match_input_resolution, callback,
                                   callback_on_step_end, output_type)  # fmt: skip
            return out if return_dict else (out.image, out.depth, out.uncertainty)
        if sparse_depth is not None:
            raise ValueError(f"`sparse_depth` is for mode 'depth_completion', not '{mode}'")
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            chunks = split_inputs(prompt, image, depth, batch_size)
            if len(chunks) > 1:  # every setting travels in `cfg`; the inputs and latents split
                call = dict(mode=mode, sampling=cfg, generator=generator, output_type=output_type,
                            height=height, width=width, callback=callback,
                            processing_resolution=processing_resolution,
                            match_input_resolution=match_input_resolution,
                            callback_on_step_end=callback_on_step_end)  # fmt: skip
                outs, start = [], 0
                for p, i, d in chunks:
                    n = len(p) if i is None and d is None else len(i if i is not None else d)
                    mine = None if latents is None else {
                        m: x[start : start + n] for m, x in latents.items()}  # fmt: skip
                    outs.append(self(prompt=p, image=i, depth=d, latents=mine, **call))
                    start += n
                joined = concat(outs, output_type)
                return joined if return_dict else (joined.image, joined.depth, joined.uncertainty)
        cfg = self.sampling_for(mode, cfg)
        if generator is None and cfg.seed is not None:
            generator = torch.Generator().manual_seed(cfg.seed)
        given = self._givens(mode, image, depth)
        batch = next((x.shape[0] for x in given.values()), None)
        prompts = self._prompts(prompt, batch)
        opts = {
            "num_steps": cfg.steps, "shift_mu": cfg.shift_mu, "solver": cfg.solver,
            "t_min": cfg.t_min, "generator": generator,
            "autocast_dtype": self.precision.autocast_dtype,
            "progress": self._progress(callback, cfg.steps, mode),
            "after_step": self._step_end(callback_on_step_end),
        }  # fmt: skip
        ensemble_size, frame = cfg.ensemble, cfg.frame
        resolution = self._working_size(processing_resolution)
        size = resolution
        if not given:  # generation from text: any size the patch grid allows
            size = (height or size[0], width or size[1])
        in_h, in_w = next(iter(given.values())).shape[-2:] if given else size
        elongated = aspect_excess(in_h, in_w, size)
        if mode != "image_to_depth":  # image -> depth tiles an elongated input instead
            self._check_aspect(in_h, in_w, size, mode)
        img, dep, unc = None, None, None
        box = None
        if latents is not None and (
            ensemble_size > 1 or (mode == "image_to_depth" and elongated > MAX_ASPECT)
        ):
            raise ValueError("`latents` give one sample per input: not with an ensemble or a "
                             "tiled (elongated) image")  # fmt: skip
        opts["latents"] = latents
        if mode == "image_to_depth" and elongated > MAX_ASPECT:
            img = given["image"]
            dep, unc = self._tiled_depth(prompts, img, ensemble_size, opts, frame, cfg.reduction,
                                         resolution)  # fmt: skip
        elif mode == "image_to_depth":
            img = given["image"]
            framed, box = self._frame(given, size, frame)
            dep, unc = self._depth_ensemble(prompts, framed["image"], ensemble_size, opts,
                                            cfg.reduction)  # fmt: skip
        else:
            framed, box = self._frame(given, size, frame)
            out = generate(
                self.model, mode, prompts, *size, image=None,
                depth=framed.get("depth"), guidance_scale=cfg.guidance, log2_alpha=cfg.log2_alpha,
                **opts,
            )  # fmt: skip
            img, dep = out.image, out.depth
            if mode == "depth_to_image":
                dep = None
            if cfg.refine_depth and img is not None:
                plain = {**opts, "latents": None}
                dep, unc = self._depth_ensemble(prompts, img, ensemble_size, plain, cfg.reduction)
        if box is not None and not match_input_resolution:  # at the working size, unpadded
            img = content(img, box) if mode != "image_to_depth" else content(framed["image"],
                                                                                  box)  # fmt: skip
            dep, unc = content(dep, box), content(unc, box)
            given = {k: content(framed[k], box) for k in given}
        elif box is not None:
            img = unletterbox(img, box) if mode != "image_to_depth" else img
            dep = unletterbox(dep, box) if dep is not None else None
            unc = unletterbox(unc, box) if unc is not None else None
        if mode == "depth_to_image":  # return the given depth in the output convention
            dep = given["depth"] / valid_mean(given["depth"], given["depth"] > 0).view(-1, 1, 1, 1)
        out = format_output(img, dep, unc, output_type)
        return out if return_dict else (out.image, out.depth, out.uncertainty)

    def _completion(
        self, prompt: Any, image: Any, sparse: Any, sparse_mask: Any, cfg: SamplingConfig,
        generator: torch.Generator | None, processing_resolution: Any,
        match_input_resolution: bool, callback: Any, callback_on_step_end: Any, output_type: str,
    ) -> ModalityForcingOutput:  # fmt: skip
        """Image + known points -> metric depth (`__call__` with mode `depth_completion`)."""
        img = self._givens("depth_completion", image, None)["image"]
        if sparse is None:
            raise ValueError("mode 'depth_completion' needs `sparse_depth` (known depth points)")
        depth, known = sparse_batch(sparse, sparse_mask, img.shape[0], tuple(img.shape[-2:]))
        depth, known = depth.to(self.device), known.to(self.device)
        size = self._working_size(processing_resolution)
        self._check_aspect(*img.shape[-2:], size, "depth_completion")
        framed, box = fit_frame(img, size, cfg.frame, pad_value=-1.0)
        points, hit, _ = frame_points(depth, known, size, cfg.frame)
        pred = complete(
            self.model, framed, points, hit, cfg.steps, cfg.completion_post, generator,
            self.precision.autocast_dtype, self._prompts(prompt, img.shape[0]),
            shift_mu=cfg.shift_mu, solver=cfg.solver, t_min=cfg.t_min,
            progress=self._progress(callback, cfg.steps, "depth_completion"),
            after_step=self._step_end(callback_on_step_end),
        )  # fmt: skip
        if match_input_resolution:  # at the input size, every known point exactly as given
            dep = torch.where(known, depth, unletterbox(pred.float(), box))
            img_out = img
        else:
            dep, img_out = content(pred, box), content(framed, box)
        return format_output(img_out, dep, None, output_type)

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """tqdm options of the per-step progress bar (e.g. `disable=False` to show it; it is off
        by default, so library and bench calls stay quiet)."""
        self._progress_bar = {**self._progress_bar, **kwargs}

    def _progress(
        self, callback: Callable[[int, int], None] | None, steps: int, mode: str
    ) -> Callable[[int, int], None] | None:
        """The per-step callback: the caller's, and a tqdm bar when enabled."""
        if self._progress_bar.get("disable", True):
            return callback
        bar = tqdm(
            total=steps,
            desc=mode.replace("_", " "),
            **{"leave": False, **{k: v for k, v in self._progress_bar.items() if k != "disable"}},
        )

        def step(k: int, n: int) -> None:
            bar.update(1)
            if k >= n:
                bar.close()
            if callback is not None:
                callback(k, n)

        return step

    def _step_end(self, callback: StepEndCallback | None) -> Any:
        """diffusers' `callback_on_step_end` as a sampler hook."""
        if callback is None:
            return None

        def hook(k: int, state: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> None:
            out = callback(self, k, t, {"latents": state})
            if isinstance(out, dict) and "latents" in out:
                state.update(out["latents"])

        return hook

    # ------------------------------------------------------------------------------ helpers
    def _working_size(self, processing_resolution: int | tuple[int, int] | None
                      ) -> tuple[int, int]:  # fmt: skip
        """(H, W) the model works at: `processing_resolution` (N or (H, W)), else its own."""
        if isinstance(processing_resolution, int):
            processing_resolution = (processing_resolution, processing_resolution)
        return tuple(processing_resolution or self.resolution)

    @staticmethod
    def _check_aspect(in_h: int, in_w: int, size: tuple[int, int], mode: str) -> None:
        """Refuse an input far more elongated than the working frame (a mode that cannot tile)."""
        elongated = aspect_excess(in_h, in_w, size)
        if elongated > MAX_ASPECT:
            raise InputError(
                f"the input is {in_w}x{in_h} pixels, {elongated:.1f}x more elongated than the "
                f"model's {size[1]}x{size[0]} frame (at most {MAX_ASPECT:g}x for {mode}); crop "
                "it closer to the frame's aspect ratio"
            )

    def _givens(self, mode: str, image: Any, depth: Any) -> dict[str, torch.Tensor]:
        needs = GIVEN_BY_MODE[mode]
        given = {}
        if "image" in needs:
            if image is None:
                raise ValueError(f"mode '{mode}' needs `image`")
            given["image"] = image_tensor(image).to(self.device)
        if "depth" in needs:
            if depth is None:
                raise ValueError(f"mode '{mode}' needs `depth`")
            given["depth"] = depth_tensor(depth).to(self.device)
            valid = given["depth"] > 0
            if not valid.flatten(1).any(1).all():
                raise InputError("`depth` has no valid (positive, finite) pixel")
            if not torch.isfinite(valid_mean(given["depth"], valid)).all():
                raise InputError("`depth` values are too large to average; rescale them")
        return given

    @staticmethod
    def _prompts(prompt: str | list[str] | None, batch: int | None) -> list[str]:
        if prompt is None:
            prompts = [""]
        elif isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list | tuple) and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        else:
            raise TypeError(f"`prompt` must be a string or a list of strings, got {type(prompt)}")
        if batch is not None and len(prompts) == 1:
            prompts = prompts * batch
        if batch is not None and len(prompts) != batch:
            raise ValueError(f"got {len(prompts)} prompts for a batch of {batch} inputs")
        return prompts

    def _frame(
        self, given: dict[str, torch.Tensor], size: tuple[int, int], how: str = "letterbox"
    ) -> tuple[dict[str, torch.Tensor], Box | None]:
        """Fit the given inputs to the working size (one box: inputs share a size)."""
        framed, box = {}, None
        for name, x in given.items():
            pad = -1.0 if name == "image" else 0.0  # black bars; padded depth is invalid (0)
            mode = "bilinear" if name == "image" else "nearest"
            framed[name], box = fit_frame(x, size, how, pad_value=pad, mode=mode)
        return framed, box

    def _depth_ensemble(
        self, prompts: list[str], image: torch.Tensor, n: int, opts: dict[str, Any],
        reduction: str = "median",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """Image -> depth for each image, n samples each, ensembled. [B, 1, H, W] x 2."""
        h, w = image.shape[-2:]
        depths, uncs = [], []
        latents = opts.get("latents")
        for i, prompt in enumerate(prompts):
            mine = None if latents is None else {m: x[i : i + 1] for m, x in latents.items()}
            out = generate(
                self.model, "image_to_depth", [prompt] * n, h, w,
                image=image[i : i + 1].expand(n, -1, -1, -1), **{**opts, "latents": mine},
            )  # fmt: skip
            d, u = ensemble_depth(out.depth, reduction)
            depths.append(d)
            uncs.append(u)
        return torch.cat(depths), (torch.cat(uncs) if n > 1 else None)

    def _tiled_depth(
        self, prompts: list[str], image: torch.Tensor, n: int, opts: dict[str, Any], how: str,
        reduction: str = "median", resolution: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """Image -> depth of an input far more elongated than the frame, window by window.

        Each window (the frame's aspect ratio, overlapping its neighbours by a quarter) is
        predicted on its own; its relative depth is scaled to the mosaic on the overlap (least
        squares) and blended in with weights that ramp down towards its borders.
        """
        b, _, height, width = image.shape
        resolution = resolution or self.resolution
        windows = tile_windows(height, width, resolution)
        warnings.warn(
            f"image is {width}x{height} pixels, more than {MAX_ASPECT:g}x as elongated as the "
            f"{resolution[1]}x{resolution[0]} frame: predicting depth in "
            f"{len(windows)} overlapping windows instead of shrinking it into a strip",
            stacklevel=4,  # the caller of __call__ (under torch.no_grad's wrapper)
        )
        depth = image.new_zeros(b, 1, height, width)
        unc = torch.zeros_like(depth)
        weight = torch.zeros_like(depth)
        for top, left, h, w in windows:
            framed, box = self._frame({"image": image[..., top : top + h, left : left + w]},
                                      resolution, how)  # fmt: skip
            d, u = self._depth_ensemble(prompts, framed["image"], n, opts, reduction)
            d = unletterbox(d, box).float()
            u = unletterbox(u, box).float() if u is not None else torch.zeros_like(d)
            region = (..., slice(top, top + h), slice(left, left + w))
            seen = weight[region] > 0
            if seen.any():  # match this window's scale to the mosaic where they overlap
                mosaic = depth[region] / weight[region].clamp_min(1e-12)
                num = (mosaic * d * seen).flatten(1).sum(1)
                den = (d * d * seen).flatten(1).sum(1).clamp_min(1e-12)
                scale = (num / den).view(-1, 1, 1, 1)
                d, u = d * scale, u * scale
            ramp = blend_weights(h, w, max(1, min(h, w) // 4)).to(d.device)
            depth[region] += ramp * d
            unc[region] += ramp * u
            weight[region] += ramp
        depth, unc = depth / weight, unc / weight
        mean = depth.flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return depth / mean, (unc / mean if n > 1 else None)
