"""Text encoders of diffusers T2I pipelines, run (frozen) exactly as each pipeline runs them.

FLUX.2: a chat LM (Qwen3 for [klein], Mistral for [dev]); three hidden layers concatenated.
FLUX.1: CLIP-L pooled output + T5 last hidden state. SD3: CLIP-L and CLIP-G penultimate states
(concatenated along channels, zero-padded to T5's width) followed by T5's tokens; pooled = both
CLIP projections. None of them masks padding: the backbones attend to every position.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import TextConfig
from ..model.text import SmallTextEncoder, TextEncoder, TextTokens


@dataclass
class BackboneTextTokens(TextTokens):
    """`TextTokens` plus the pooled embedding FLUX.1 and SD3 condition their timestep on."""

    pooled: torch.Tensor | None = None  # [B, P]


# Hidden states the FLUX.2 pipelines take from their chat LM, by its `model_type`.
LM_LAYERS = {"qwen3": (9, 18, 27), "mistral3": (10, 20, 30)}


def _load(path: Path, dtype: torch.dtype | None) -> nn.Module:
    """The exact transformers class a pipeline subfolder names (`architectures[0]`), frozen."""
    import transformers

    config = json.loads((path / "config.json").read_text())
    name = (config.get("architectures") or ["AutoModel"])[0]
    cls = getattr(transformers, name)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True, **kwargs)
    return model.requires_grad_(False).eval()


class _Encoder(nn.Module):
    """One tokenizer + model pair of a pipeline (`tokenizer{_n}/`, `text_encoder{_n}/`)."""

    def __init__(self, root: Path, index: int, max_length: int | None,
                 dtype: torch.dtype | None) -> None:  # fmt: skip
        super().__init__()
        import transformers

        suffix = "" if index == 1 else f"_{index}"
        for sub in (f"tokenizer{suffix}", f"text_encoder{suffix}"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"pipeline directory '{root}' has no {sub}/")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(root / f"tokenizer{suffix}"), local_files_only=True
        )
        self.model = _load(root / f"text_encoder{suffix}", dtype)
        self.max_length = max_length or self.tokenizer.model_max_length

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", max_length=self.max_length,
                             truncation=True, return_tensors="pt")  # fmt: skip
        device = next(self.model.parameters()).device
        return enc["input_ids"].to(device), enc["attention_mask"].to(device).bool()


class PipelineTextEncoder(TextEncoder):
    """The frozen text encoders of a diffusers pipeline directory, combined as its pipeline does.

    Args:
        root: the pipeline directory (`tokenizer*/`, `text_encoder*/`).
        kind: `flux2`, `flux` or `sd3`.
        context_dim: the transformer's `joint_attention_dim` (SD3 without T5 pads to it).
        max_length: T5 / LM sequence length (None: the pipeline default, 512 or SD3's 256).
        dtype: load dtype of the encoders (None: the checkpoint's).
    """

    def __init__(self, root: Path, kind: str, context_dim: int, max_length: int | None = None,
                 dtype: torch.dtype | None = None) -> None:  # fmt: skip
        super().__init__()
        if kind not in ENCODE:
            raise ValueError(f"unknown pipeline text kind '{kind}'; choose from {sorted(ENCODE)}")
        self.kind, self.dim = kind, context_dim
        main = max_length or (256 if kind == "sd3" else 512)
        if kind == "flux2":
            self.encoders = nn.ModuleList([_Encoder(root, 1, main, dtype)])
        elif kind == "flux":
            self.encoders = nn.ModuleList(
                [_Encoder(root, 1, 77, dtype), _Encoder(root, 2, main, dtype)]
            )
        else:  # SD3 runs without T5 (zeros in its place) when `text_encoder_3/` is absent
            has_t5 = (root / "text_encoder_3").is_dir()
            self.encoders = nn.ModuleList(
                [_Encoder(root, i, 77, dtype) for i in (1, 2)]
                + ([_Encoder(root, 3, main, dtype)] if has_t5 else [])
            )
        self.max_length = main

    def train(self, mode: bool = True) -> PipelineTextEncoder:
        """The encoders are frozen and stay in eval mode whatever the parent does."""
        super().train(mode)
        self.encoders.eval()
        return self

    @torch.no_grad()
    def forward(self, captions: Sequence[str]) -> BackboneTextTokens:
        """Captions (B strings) -> tokens [B, L, context_dim] (+ pooled [B, P] for FLUX.1/SD3)."""
        return ENCODE[self.kind](self, list(captions))


def _encode_flux2(enc: PipelineTextEncoder, captions: list[str]) -> BackboneTextTokens:
    lm = enc.encoders[0]
    kind = lm.model.config.model_type
    layers = LM_LAYERS.get(kind, LM_LAYERS["qwen3"])
    if kind == "mistral3":  # Flux2Pipeline: system message, no generation prompt (untested here)
        from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

        msgs = [
            [
                {"role": "system", "content": [{"type": "text", "text": SYSTEM_MESSAGE}]},
                {"role": "user", "content": [{"type": "text", "text": c}]},
            ]
            for c in captions
        ]
        enc_ = lm.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=False, tokenize=True, return_dict=True,
            return_tensors="pt", padding="max_length", truncation=True, max_length=lm.max_length,
        )  # fmt: skip
        device = next(lm.model.parameters()).device
        ids, mask = enc_["input_ids"].to(device), enc_["attention_mask"].to(device).bool()
    else:  # Flux2KleinPipeline (Qwen3): chat template without thinking, then padded tokens
        texts = [
            lm.tokenizer.apply_chat_template([{"role": "user", "content": c}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False)
            for c in captions
        ]  # fmt: skip
        ids, mask = lm.tokenize(texts)
    out = lm.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True,
                   use_cache=False)  # fmt: skip
    tokens = torch.cat([out.hidden_states[k] for k in layers], dim=-1)  # [B, L, 3 H]
    return BackboneTextTokens(tokens=tokens.float(), mask=mask)


def _encode_flux(enc: PipelineTextEncoder, captions: list[str]) -> BackboneTextTokens:
    clip, t5 = enc.encoders
    pooled = clip.model(clip.tokenize(captions)[0], output_hidden_states=False).pooler_output
    ids, mask = t5.tokenize(captions)
    tokens = t5.model(ids, output_hidden_states=False)[0]  # [B, L, d_model]
    return BackboneTextTokens(tokens=tokens.float(), mask=mask, pooled=pooled.float())


def _encode_sd3(enc: PipelineTextEncoder, captions: list[str]) -> BackboneTextTokens:
    states, pooled = [], []
    for clip in enc.encoders[:2]:
        out = clip.model(clip.tokenize(captions)[0], output_hidden_states=True)
        states.append(out.hidden_states[-2].float())  # penultimate layer
        pooled.append(out[0].float())  # text_embeds of CLIPTextModelWithProjection
    clip_tokens = torch.cat(states, dim=-1)  # [B, 77, 768 + 1280]
    clip_tokens = nn.functional.pad(clip_tokens, (0, enc.dim - clip_tokens.shape[-1]))
    b = len(captions)
    if len(enc.encoders) == 3:
        t5 = enc.encoders[2]
        t5_tokens = t5.model(t5.tokenize(captions)[0])[0].float()
    else:
        t5_tokens = clip_tokens.new_zeros(b, enc.max_length, enc.dim)
    tokens = torch.cat([clip_tokens, t5_tokens], dim=1)
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return BackboneTextTokens(tokens=tokens, mask=mask, pooled=torch.cat(pooled, dim=-1))


ENCODE = {"flux2": _encode_flux2, "flux": _encode_flux, "sd3": _encode_sd3}


class SmallBackboneText(TextEncoder):
    """The small trainable encoder (`model.text`) at the backbone's text width, for tests and toy
    data; its pooled embedding (when the backbone needs one) is a projected masked mean."""

    def __init__(self, cfg: TextConfig, context_dim: int, pooled_dim: int | None) -> None:
        super().__init__()
        self.inner = SmallTextEncoder(dataclasses.replace(cfg, dim=context_dim))
        self.dim, self.max_length = context_dim, cfg.max_length
        self.pool = nn.Linear(context_dim, pooled_dim) if pooled_dim else None

    def forward(self, captions: Sequence[str]) -> BackboneTextTokens:
        out = self.inner(captions)
        pooled = None
        if self.pool is not None:
            m = out.mask[..., None].float()
            pooled = self.pool((out.tokens * m).sum(1) / m.sum(1).clamp_min(1))
        return BackboneTextTokens(tokens=out.tokens, mask=out.mask, pooled=pooled)
