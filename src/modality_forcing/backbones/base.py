"""`BackboneModel`: a diffusers T2I backbone with the depth stream, behind the native model's API.

It loads the transformer, VAE and text encoders from a local pipeline directory, wraps the
transformer (`common.BackboneDiT`), optionally adds LoRA, and presents `cfg`, `codec`,
`text_encoder`, `dit`, `encode_batch`, `encode_text`, `grid_shape` and `forward` exactly like
`ModalityForcingModel`, so the trainer, checkpoints, sampler and pipeline run unchanged.

Checkpoints hold only what training changes: frozen tensors (the trunk under LoRA, frozen text
encoders) and buffers are left out of `state_dict()` and rebuilt from `backbone.pretrained` on
load, so a LoRA checkpoint is megabytes and the EMA covers trainable weights only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ModelConfig
from ..modalities import DEPTH, IMAGE, get_modality
from ..model.base import DenoiserBase
from ..model.codecs import ImageCodec, VAECodec, build_codec
from ..model.text import TextEncoder, TextTokens
from .common import BackboneDiT
from .text import PipelineTextEncoder, SmallBackboneText

TEXT_SOURCES = ("pipeline", "small")


def _dtype(name: str | None) -> torch.dtype | None:
    dtype = getattr(torch, name) if name else None
    if name and not isinstance(dtype, torch.dtype):
        raise ValueError(f"backbone.dtype '{name}' is not a torch dtype (e.g. bfloat16)")
    return dtype


def load_transformer(class_name: str, root: Path, subfolder: str | None,
                     dtype: torch.dtype | None = None) -> nn.Module:  # fmt: skip
    """A diffusers transformer from a local pipeline directory (or a transformer directory)."""
    import diffusers

    sub = subfolder if subfolder and (root / subfolder / "config.json").is_file() else None
    config_file = root / (sub or "") / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no transformer config.json in '{root}' (subfolder {subfolder!r})")
    found = json.loads(config_file.read_text()).get("_class_name")
    if found != class_name:
        raise ValueError(f"'{config_file.parent}' holds a {found}; the backbone needs {class_name}")
    kwargs: dict[str, Any] = {"subfolder": sub} if sub else {}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    cls = getattr(diffusers, class_name)
    return cls.from_pretrained(str(root), local_files_only=True, use_safetensors=True, **kwargs)


class BackboneModel(DenoiserBase):
    """Modality Forcing on a diffusers text-to-image backbone (see the module docstring).

    Subclasses set `dit_class` (the backbone's `BackboneDiT`), `transformer_class` (diffusers
    class name), `text_kind` (`PipelineTextEncoder` kind) and `pooled_key` (FLUX.1 / SD3).
    """

    dit_class: ClassVar[type[BackboneDiT]]
    transformer_class: ClassVar[str]
    text_kind: ClassVar[str]
    pooled_key: ClassVar[str | None] = None  # transformer config key of the pooled-text width

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg, bcfg = cfg, cfg.backbone
        if not bcfg.pretrained:
            raise ValueError(f"model family '{cfg.family}' needs model.backbone.pretrained: a "
                             "local diffusers pipeline directory")  # fmt: skip
        if bcfg.text_encoder not in TEXT_SOURCES:
            raise ValueError(f"unknown backbone.text_encoder '{bcfg.text_encoder}'; choose from "
                             f"{list(TEXT_SOURCES)}")  # fmt: skip
        root, dtype = Path(bcfg.pretrained), _dtype(bcfg.dtype)
        transformer = load_transformer(self.transformer_class, root, bcfg.subfolder,
                                       dtype if bcfg.lora_rank else None)  # fmt: skip
        # Frozen and possibly large: kept out of the module tree and the state dict.
        self._codec: list[ImageCodec] = [self._build_codec(root, dtype)]
        self._teacher: list[nn.Module] = []
        tcfg = transformer.config
        pooled = getattr(tcfg, self.pooled_key) if self.pooled_key else None
        self.text_encoder: TextEncoder = (
            PipelineTextEncoder(root, self.text_kind, tcfg.joint_attention_dim,
                                bcfg.text_max_length, dtype)
            if bcfg.text_encoder == "pipeline"
            else SmallBackboneText(cfg.text, tcfg.joint_attention_dim, pooled)
        )  # fmt: skip
        p = self.dit_class.image_patch_of(tcfg)
        depth_dim = (p * self.codec.downsample) ** 2 * get_modality(DEPTH).channels
        expected = self.dit_class.image_channels_of(tcfg)
        if self.codec.channels != expected:
            raise ValueError(f"{self.transformer_class} takes {expected}-channel latents but the "
                             f"codec gives {self.codec.channels}")  # fmt: skip
        self.dit = self.dit_class(transformer, bcfg, depth_dim)
        if bcfg.lora_rank > 0:
            freeze_for_lora(self.dit, bcfg.lora_rank, bcfg.lora_alpha, tuple(bcfg.lora_targets))
        self._reloadable = frozenset(  # every alias of a tied tensor too
            [n for n, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad]
            + [n for n, _ in self.named_buffers(remove_duplicate=False)]
        )
        self.register_state_dict_post_hook(_drop_reloadable)
        self.register_load_state_dict_post_hook(_allow_reloadable)

    def untracked_modules(self) -> list[nn.Module]:
        return [*self._codec, *self._teacher]  # the teacher copy exists under full fine-tuning

    def _build_codec(self, root: Path, dtype: torch.dtype | None) -> ImageCodec:
        sub = self.cfg.backbone.vae_subfolder
        if sub is None:
            return build_codec(self.cfg.codec)
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"no VAE at '{root / sub}'; set model.backbone.vae_subfolder "
                                    "(or null to use model.codec)")  # fmt: skip
        return VAECodec(root, subfolder=sub, dtype=dtype)

    def predict(
        self, xt: dict[str, torch.Tensor], t: dict[str, torch.Tensor], text: TextTokens
    ) -> dict[str, torch.Tensor]:
        """Image velocity (noise - x0) and depth x0 in fp32; image only = the original T2I."""
        if IMAGE not in xt:
            raise ValueError("backbone models need the image grid in every call")
        return self.dit(xt, t, text)

    # ------------------------------------------------------------------ self-distillation teacher
    @torch.no_grad()
    def teacher_forward(
        self,
        xt: dict[str, torch.Tensor],
        t: dict[str, torch.Tensor],
        text: TextTokens | list[str],
    ) -> dict[str, torch.Tensor]:
        """The original backbone's image velocity (same call signature as `forward`).

        Under LoRA this is the model itself with the adapters disabled and depth left out, so no
        second copy of the weights exists; under full fine-tuning a frozen copy of the pretrained
        transformer is loaded once (in `backbone.dtype`) and run through its own diffusers forward.
        """
        text = self.text_tokens(text)
        image = ({IMAGE: xt[IMAGE]}, {IMAGE: t[IMAGE]})
        if self.cfg.backbone.lora_rank > 0:
            with adapters_disabled(self.dit.transformer):
                return {IMAGE: self.dit(*image, text)[IMAGE]}
        if not self._teacher:
            bcfg = self.cfg.backbone
            original = load_transformer(self.transformer_class, Path(bcfg.pretrained),
                                        bcfg.subfolder, _dtype(bcfg.dtype))  # fmt: skip
            device = xt[IMAGE].device
            self._teacher.append(original.requires_grad_(False).eval().to(device))
        return {IMAGE: self.dit.original_forward(self._teacher[0], xt[IMAGE], t[IMAGE], text)}


def lora_target_names(transformer: nn.Module, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Full names of the trunk linears LoRA adapts: attention and MLP linears of the original
    blocks (never adaLN modulation, never the depth copies), optionally filtered by suffix."""
    names = []
    for name, module in transformer.named_modules():
        parts = name.split(".")
        if not isinstance(module, nn.Linear) or "block" not in parts:
            continue
        if any(p.startswith("norm") for p in parts):
            continue
        if not suffixes or any(name == s or name.endswith("." + s) for s in suffixes):
            names.append(name)
    if not names:
        raise ValueError(f"no trunk linear matches the LoRA targets {list(suffixes)}")
    return names


def freeze_for_lora(dit: BackboneDiT, rank: int, alpha: float | None,
                    suffixes: tuple[str, ...]) -> None:  # fmt: skip
    """LoRA (peft) on the trunk; the trunk is frozen, every depth part stays fully trainable."""
    from peft import LoraConfig

    targets = lora_target_names(dit.transformer, suffixes)
    dit.transformer.requires_grad_(False)
    dit.transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets)
    )
    for layer in [*dit.joint_blocks, *dit.single_blocks]:
        for part in (getattr(layer, "depth", None), getattr(layer, "depth_mod", None)):
            if part is not None:
                part.requires_grad_(True)


@contextlib.contextmanager
def adapters_disabled(transformer: nn.Module) -> Iterator[None]:
    """Run a peft-adapted diffusers model as its base model for the duration of the block."""
    transformer.disable_adapters()
    try:
        yield
    finally:
        transformer.enable_adapters()


def _matches(key: str, names: frozenset[str]) -> bool:
    """`key` names a reloadable tensor, with or without a wrapper prefix (e.g. `module.`)."""
    return key in names or any(key.endswith("." + n) for n in names if len(n) < len(key))


def _drop_reloadable(module: BackboneModel, state: dict[str, Any], prefix: str,
                     local_metadata: Any) -> None:  # fmt: skip
    for name in module._reloadable:
        state.pop(prefix + name, None)


def _allow_reloadable(module: BackboneModel, incompatible: Any) -> None:
    missing = incompatible.missing_keys
    missing[:] = [k for k in missing if not _matches(k, module._reloadable)]
