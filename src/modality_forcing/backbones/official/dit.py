"""`FluxRGBDDiT`: the official Modality Forcing release's network (variants flux_rgbd_9b_v1/v2).

Written from the release specification (`official_release.md`, sections 1-3): a FLUX.2 [klein]
9B backbone with a third (depth) stream in the double blocks, per-stream modulation in the single
blocks, a depth decoder and an fp32 x0 depth head. Parameter names and shapes match the published
`model.safetensors` (every key prefixed `dit.`), so the released weights load 1:1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import (
    LastLayer,
    MLPEmbedder,
    Modulation,
    SingleStreamBlock,
    TripleStreamBlock,
    rope_tables,
    timestep_embedding,
)

TIME_DIM = 256  # sinusoidal timestep features fed to the MLPEmbedders


@dataclass(frozen=True)
class FluxRGBDConfig:
    """Constructor arguments of `FluxRGBDDiT` (reference table 1a; names as in the release)."""

    in_channels: int = 128  # RGB latent channels per token (FLUX.2 AE 32 ch x 2 x 2)
    depth_channels: int = 256  # depth pixels per token (16 x 16 patch, 1 channel)
    context_in_dim: int = 12288  # Qwen3-8B hidden states 9/18/27 concatenated (3 x 4096)
    hidden_size: int = 4096
    num_heads: int = 32
    depth_double: int = 8  # triple-stream ("double") blocks
    depth_single: int = 24  # single-stream blocks
    depth_decoder_num_layers: int = 4
    axes_dim: tuple[int, ...] = (32, 32, 32, 32)  # RoPE axes (time, row, col, text index)
    theta: float = 2000.0
    mlp_ratio: float = 3.0
    cross_stream_timestep_mixing: bool = False  # v2: gated cross-modality timestep embeddings

    def __post_init__(self) -> None:
        head_dim, rem = divmod(self.hidden_size, self.num_heads)
        if rem or sum(self.axes_dim) != head_dim or any(d % 2 for d in self.axes_dim):
            raise ValueError(
                f"axes_dim {self.axes_dim} must be even and sum to the head dim "
                f"{self.hidden_size}/{self.num_heads}"
            )


def tiny_config(cross_stream_timestep_mixing: bool = True) -> FluxRGBDConfig:
    """A few-thousand-parameter config in the release format, for tests (never released)."""
    return FluxRGBDConfig(
        in_channels=8, depth_channels=16, context_in_dim=24, hidden_size=64, num_heads=2,
        depth_double=1, depth_single=1, depth_decoder_num_layers=1, axes_dim=(8, 8, 8, 8),
        cross_stream_timestep_mixing=cross_stream_timestep_mixing,
    )  # fmt: skip


# The `"variant"` key of a release `config.json` selects one of these (reference section 1).
VARIANTS: dict[str, FluxRGBDConfig] = {
    "flux_rgbd_9b_v1": FluxRGBDConfig(),
    "flux_rgbd_9b_v2": FluxRGBDConfig(cross_stream_timestep_mixing=True),
    # Test-only variants with the same naming scheme (tiny shapes).
    "flux_rgbd_tiny_v1": tiny_config(cross_stream_timestep_mixing=False),
    "flux_rgbd_tiny_v2": tiny_config(cross_stream_timestep_mixing=True),
}


def get_variant(name: str) -> FluxRGBDConfig:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant '{name}'; choose from {sorted(VARIANTS)}")
    return VARIANTS[name]


def position_ids(
    batch: int, height: int, width: int, txt_len: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4-axis float ids (time, row, col, text index) of an h x w token grid (reference 3.5).

    Returns:
        img_ids [B, N, 4] = (0, r, c, 0), depth_ids [B, N, 4] = (1, r, c, 0), both row-major,
        and ctx_ids [B, txt_len, 4] = (0, 0, 0, n).
    """
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    zeros = torch.zeros_like(rows)
    img = torch.stack([zeros, rows, cols, zeros], dim=-1).reshape(-1, 4)  # [N, 4]
    depth = torch.stack([zeros + 1, rows, cols, zeros], dim=-1).reshape(-1, 4)
    seq = torch.arange(txt_len)
    ctx = torch.stack([seq * 0, seq * 0, seq * 0, seq], dim=-1)  # [L, 4]
    return tuple(
        x.float().to(device)[None].expand(batch, -1, -1).contiguous() for x in (img, depth, ctx)
    )  # type: ignore[return-value]


class FluxRGBDDiT(nn.Module):
    """Joint RGB + depth denoiser over token sequences (reference section 3).

    Inputs are RGB latent tokens, depth tokens and text features; outputs the RGB flow velocity
    and the depth x0 estimate. All Linears are bias-free; no module owns a buffer.
    """

    def __init__(self, cfg: FluxRGBDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.img_in = nn.Linear(cfg.in_channels, h, bias=False)
        self.txt_in = nn.Linear(cfg.context_in_dim, h, bias=False)
        self.depth_in = nn.Linear(cfg.depth_channels, h, bias=False)
        self.time_in = MLPEmbedder(TIME_DIM, h)
        self.time_in_depth = MLPEmbedder(TIME_DIM, h)
        if cfg.cross_stream_timestep_mixing:
            self.time_in_depth_to_img = MLPEmbedder(TIME_DIM, h)
            self.time_in_rgb_to_depth = MLPEmbedder(TIME_DIM, h)
            # Zero gates: training starts from v1 behaviour; the release stores learned values.
            self.cross_alpha_img = nn.Parameter(torch.zeros(1))
            self.cross_alpha_depth = nn.Parameter(torch.zeros(1))
        self.double_stream_modulation_img = Modulation(h, 6)
        self.double_stream_modulation_txt = Modulation(h, 6)
        self.double_stream_modulation_depth = Modulation(h, 6)
        self.single_stream_modulation = Modulation(h, 3)
        self.single_stream_modulation_depth = Modulation(h, 3)
        block_args = (h, cfg.num_heads, cfg.mlp_ratio)
        self.double_blocks = nn.ModuleList(
            TripleStreamBlock(*block_args) for _ in range(cfg.depth_double)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(*block_args) for _ in range(cfg.depth_single)
        )
        if cfg.depth_decoder_num_layers > 0:
            self.depth_decoder_modulation = Modulation(h, 3)
        self.depth_decoder_blocks = nn.ModuleList(
            SingleStreamBlock(*block_args) for _ in range(cfg.depth_decoder_num_layers)
        )
        self.final_layer = LastLayer(h, cfg.in_channels)
        self.depth_final_layer = LastLayer(h, cfg.depth_channels)

    def _vectors(
        self, t_rgb: torch.Tensor, t_dep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning vectors (vec_img, vec_depth), each [B, H] (reference 3.2)."""
        e_rgb, e_dep = timestep_embedding(t_rgb, TIME_DIM), timestep_embedding(t_dep, TIME_DIM)
        vec_img, vec_depth = self.time_in(e_rgb), self.time_in_depth(e_dep)
        if self.cfg.cross_stream_timestep_mixing:
            # Both mixing terms come from the un-mixed embeddings.
            vec_img = vec_img + self.cross_alpha_img * self.time_in_depth_to_img(e_dep)
            vec_depth = vec_depth + self.cross_alpha_depth * self.time_in_rgb_to_depth(e_rgb)
        return vec_img, vec_depth

    def forward(
        self,
        img: torch.Tensor,
        depth: torch.Tensor,
        ctx: torch.Tensor,
        timesteps: torch.Tensor,
        depth_timesteps: torch.Tensor,
        img_ids: torch.Tensor,
        depth_ids: torch.Tensor,
        ctx_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoiser call.

        Args:
            img: [B, N, in_channels] noisy RGB latent tokens.
            depth: [B, N, depth_channels] noisy depth tokens.
            ctx: [B, L_t, context_in_dim] text features (padding included, no mask).
            timesteps, depth_timesteps: [B] noise levels (t = 1 noise, t = 0 clean).
            img_ids, depth_ids, ctx_ids: [B, N | L_t, 4] position ids (`position_ids`).

        Returns:
            (rgb velocity [B, N, in_channels] in the body dtype, depth x0 [B, N, depth_channels]
            in the depth head's dtype).
        """
        # Everything enters in the body dtype, timesteps included (reference 3.0).
        body = self.img_in.weight.dtype
        img, depth, ctx = img.to(body), depth.to(body), ctx.to(body)
        vec_img, vec_depth = self._vectors(timesteps.to(body), depth_timesteps.to(body))
        # Modulations are computed once and shared by every block of a stack (reference 3.3).
        mods = {
            "img": self.double_stream_modulation_img(vec_img),
            "txt": self.double_stream_modulation_txt(vec_img),
            "depth": self.double_stream_modulation_depth(vec_depth),
        }
        x = {"img": self.img_in(img), "txt": self.txt_in(ctx), "depth": self.depth_in(depth)}
        axes, theta = self.cfg.axes_dim, self.cfg.theta
        pe = rope_tables(torch.cat([ctx_ids, img_ids, depth_ids], dim=1), axes, theta)
        for block in self.double_blocks:
            x = block(x, mods, pe)

        n_txt, n_img, n_dep = (x[s].shape[1] for s in ("txt", "img", "depth"))
        joint = torch.cat([x["txt"], x["img"], x["depth"]], dim=1)  # [B, L_t + 2N, H]
        main = self.single_stream_modulation(vec_img)
        dep = self.single_stream_modulation_depth(vec_depth)
        # Per-token (shift, scale, gate): txt + img tokens use vec_img, depth tokens vec_depth.
        mod = [
            torch.cat([m.expand(-1, n_txt + n_img, -1), d.expand(-1, n_dep, -1)], dim=1)
            for m, d in zip(main, dep, strict=True)
        ]
        for block in self.single_blocks:
            joint = block(joint, mod, pe)
        img_tokens = joint[:, n_txt : n_txt + n_img]
        depth_tokens = joint[:, n_txt + n_img :]

        if self.cfg.depth_decoder_num_layers > 0:
            pe_depth = rope_tables(depth_ids, axes, theta)
            dmod = self.depth_decoder_modulation(vec_depth)
            for block in self.depth_decoder_blocks:
                depth_tokens = block(depth_tokens, dmod, pe_depth)
        rgb = self.final_layer(img_tokens, vec_img)
        return rgb, self.depth_final_layer(depth_tokens, vec_depth)

    def apply_dtype_policy(
        self, body: torch.dtype = torch.bfloat16, head: torch.dtype = torch.float32
    ) -> FluxRGBDDiT:
        """The release's runtime dtypes: everything in `body`, `depth_final_layer` in `head`."""
        self.to(body)
        self.depth_final_layer.to(head)
        return self
