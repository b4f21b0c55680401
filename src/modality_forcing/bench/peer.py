"""`bench throughput --vs diffusers`: our MM-DiT raced against a diffusers `SD3Transformer2DModel`
of the same width, heads, depth and token count, trained side by side in one run.

How the race is kept fair: both train on the same tokens with the same optimiser
(`optim.build_optimizer`), loss (mean square of the prediction), precision, batch and compile
policy (every transformer block compiled alone, as the trainer does). SD3 has joint blocks only;
by default it gets one per block an image token passes through in ours (trunk + decoder; for
cpu-s 7, ~10% more training FLOPs than ours, since its text stream runs through one block more),
or `vs_layers`. Both models' training FLOPs per sample are counted (`torch.utils.flop_counter`,
attention included) and every ratio is also given per FLOP. SD3's text encoders are frozen and
their outputs precomputed in practice, so the headline compares our DiT on precomputed text
tokens with SD3 on precomputed `encoder_hidden_states`; ours with its trainable text encoder
(captions as long as the text tokens, so the DiT sees the same sequence) is a line of its own.
MF (image + depth tokens) races SD3 on an image twice as tall: the same token count.
Steps of all contestants are interleaved, and each ratio is the median of per-round ratios, so
the load of a shared machine cancels.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from ..backbones import build_model
from ..config import ModelConfig
from ..data.scene_graph import CAPTION_VOCAB
from ..modalities import DEPTH, IMAGE
from ..model.mmdit import count_parameters, transformer_blocks
from ..model.text import TextTokens
from ..precision import PrecisionChoice
from .step_timing import TrainStep, profile_step, step_peak_memory_mb, sync
from .throughput import ThroughputConfig, bench_model_config, compile_blocks, profile_table

PEERS = ("diffusers",)

# (label, our contestant, the peer's contestant): one ratio line per matchup and setting
MATCHUPS = (
    ("t2i (DiT, precomputed text)", "ours t2i", "peer t2i"),
    ("t2i, ours + its text encoder", "ours t2i + text encoder", "peer t2i"),
    ("mf (image + depth tokens)", "ours mf", "peer mf"),
)


def sd3_like(cfg: ModelConfig, channels: int, max_grid: int, layers: int | None = None
             ) -> nn.Module:  # fmt: skip
    """A diffusers SD3 transformer of our width, heads, patch, MLP ratio 4 and QK RMSNorm, with
    `layers` joint blocks (default: one per block an image token of ours passes through)."""
    from diffusers import SD3Transformer2DModel

    d, heads = cfg.hidden_size, cfg.num_heads
    layers = layers or cfg.num_layers + cfg.num_single_layers + cfg.decoder_layers
    return SD3Transformer2DModel(
        sample_size=max_grid * cfg.patch_size, patch_size=cfg.patch_size, in_channels=channels,
        num_layers=layers,
        attention_head_dim=d // heads, num_attention_heads=heads,
        joint_attention_dim=cfg.text.dim, caption_projection_dim=d,
        pooled_projection_dim=cfg.text.dim, out_channels=channels, pos_embed_max_size=max_grid,
        qk_norm="rms_norm",
    )  # fmt: skip


def caption_of(num_tokens: int) -> str:
    """A procedural-vocabulary caption of `num_tokens - 1` words: BOS + words = `num_tokens`."""
    words = [w for w in CAPTION_VOCAB if w.isalpha()]
    return " ".join(words[i % len(words)] for i in range(num_tokens - 1))


def count_flops(step: TrainStep) -> float:
    """Training FLOPs of one call of `step` (matmuls and attention, forward and backward)."""
    from torch.utils.flop_counter import (
        FlopCounterMode,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    def cpu_sdpa(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
        return sdpa_flop_count(q, k, v)

    def cpu_sdpa_backward(grad: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None,
                          **kw: Any) -> int:  # fmt: skip
        return sdpa_backward_flop_count(grad, q, k, v)

    def inplace_addmm(y: Any, a: Any, b: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
        return 2 * a[0] * a[1] * b[1]

    # The counter knows the CUDA attention kernels, not the CPU one, nor in-place addmm_.
    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_sdpa_backward,
               aten.addmm_: inplace_addmm}  # fmt: skip
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step()
    return float(counter.get_total_flops())


def contestants(
    cfg: ModelConfig, run: ThroughputConfig, choice: PrecisionChoice, device: torch.device
) -> tuple[dict[str, TrainStep], dict[str, nn.Module]]:
    """Training steps of ours and the peer on identical synthetic inputs, and the two models."""
    torch.manual_seed(0)
    ours = build_model(cfg).to(device)
    c, gh, gw = ours.grid_shape(IMAGE, *run.resolution)
    p, b, length = cfg.patch_size, run.batch, cfg.text.max_length
    peer = sd3_like(cfg, c, max(2 * gh, gw) // p, run.vs_layers).to(device)
    x = torch.randn(b, c, gh, gw, device=device)
    depth = torch.randn(b, *ours.grid_shape(DEPTH, *run.resolution), device=device)
    tall = torch.randn(b, c, 2 * gh, gw, device=device)  # as many tokens as image + depth
    t = torch.rand(b, device=device)
    txt = torch.randn(b, length, cfg.text.dim, device=device)
    pooled = torch.randn(b, cfg.text.dim, device=device)
    text = TextTokens(tokens=txt, mask=None)
    captions = [caption_of(length)] * b

    def sd3(image: torch.Tensor) -> torch.Tensor:
        return peer(hidden_states=image, encoder_hidden_states=txt, pooled_projections=pooled,
                    timestep=1000 * t, return_dict=False)[0]  # fmt: skip

    steps = {
        "ours t2i": lambda: ours({IMAGE: x}, {IMAGE: t}, text),
        "ours t2i + text encoder": lambda: ours({IMAGE: x}, {IMAGE: t}, captions),
        "ours mf": lambda: ours({IMAGE: x, DEPTH: depth}, {IMAGE: t, DEPTH: 1 - t}, text),
        "peer t2i": lambda: sd3(x),
        "peer mf": lambda: sd3(tall),
    }
    models = {"ours": ours, "peer": peer}
    return {
        k: TrainStep(models[k.split()[0]], f, choice.autocast) for k, f in steps.items()
    }, models


def interleaved_times(steps: dict[str, TrainStep], rounds: int, device: torch.device
                      ) -> dict[str, list[float]]:  # fmt: skip
    """Seconds per step of every contestant over `rounds` rounds (after two warm-up rounds), the
    order rotating each round so no contestant always follows the same one."""
    names, times = list(steps), {k: [] for k in steps}
    for r in range(rounds + 2):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            start = time.perf_counter()
            steps[name]()
            sync(device)
            if r >= 2:
                times[name].append(time.perf_counter() - start)
    return times


def race(
    preset: str, run: ThroughputConfig, choice: PrecisionChoice, device: torch.device
) -> dict[str, Any]:
    """Race ours against `run.vs` for one preset in every `run.vs_compile` setting.

    Returns:
        {"preset", "params": {...}, "flops_per_sample": {...}, "settings": [per compile setting:
        {"compiled", "precision", "samples_per_s": {contestant: median}, "peak_memory_mb",
        "ratios": [{"matchup", "samples_per_s", "flop_normalised", "peak_memory"}], ...}]}
    """
    if run.vs not in PEERS:
        raise ValueError(f"unknown peer '{run.vs}'; choose from {list(PEERS)}")
    cfg = bench_model_config(preset, run.resolution)
    out: dict[str, Any] = {"preset": preset, "batch": run.batch, "settings": []}
    flops: dict[str, float] = {}
    for compiled in run.vs_compile:
        steps, models = contestants(cfg, run, choice, device)
        if not flops:  # counted eagerly once: compiling changes kernels, not FLOPs
            flops = {k: count_flops(s) / run.batch for k, s in steps.items()}
            out["flops_per_sample"] = flops
            out["params"] = {"ours": count_parameters(models["ours"]),
                             "ours_dit": count_parameters(models["ours"].dit),
                             "peer": count_parameters(models["peer"])}  # fmt: skip
            out["peer_num_layers"] = len(models["peer"].transformer_blocks)
        if compiled:
            compile_blocks(transformer_blocks(models["ours"].dit))
            compile_blocks(list(models["peer"].transformer_blocks))
        times = interleaved_times(steps, run.steps, device)
        setting: dict[str, Any] = {
            "compiled": compiled, "precision": choice.precision,
            "samples_per_s": {k: run.batch / statistics.median(v) for k, v in times.items()},
            "peak_memory_mb": {k: step_peak_memory_mb(s, device) for k, s in steps.items()},
        }  # fmt: skip
        setting["ratios"] = [_ratio(label, a, b, times, flops, setting["peak_memory_mb"])
                             for label, a, b in MATCHUPS]  # fmt: skip
        if run.profile:
            setting["profile"] = {k: {"profile": profile_step(s, device)} for k, s in steps.items()}
        out["settings"].append(setting)
        del steps, models
    return out


def _ratio(label: str, ours: str, peer: str, times: dict[str, list[float]],
           flops: dict[str, float], memory: dict[str, float | None]) -> dict[str, Any]:  # fmt: skip
    """ours / peer samples/s (median of per-round ratios), FLOP-normalised and peak memory."""
    per_round = sorted(p / o for o, p in zip(times[ours], times[peer], strict=True))
    speed = statistics.median(per_round)
    mem_o, mem_p = memory[ours], memory[peer]
    return {
        "matchup": label, "ours": ours, "peer": peer, "samples_per_s": speed,
        "round_ratio_range": [per_round[0], per_round[-1]],
        "flop_normalised": speed * flops[ours] / flops[peer],
        "peak_memory": mem_o / mem_p if mem_o and mem_p else None,
    }  # fmt: skip


def race_table(report: dict[str, Any]) -> str:
    """The race in text: per preset the models, then one ratio line per matchup and setting."""
    peer = report["vs"]["peer"]
    lines = []
    for r in report["vs"]["results"]:
        p, f = r["params"], r["flops_per_sample"]
        lines += [
            f"{r['preset']} vs {peer} SD3Transformer2DModel ({r['peer_num_layers']} joint blocks), "
            f"batch {r['batch']}: params ours {p['ours_dit'] / 1e6:.1f}M DiT "
            f"(+ text encoder: {p['ours'] / 1e6:.1f}M), {peer} {p['peer'] / 1e6:.1f}M; "
            "training GFLOP/sample " + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in f.items()),
            "",
        ]
        for s in r["settings"]:
            tag = f"{s['precision']} {'compiled' if s['compiled'] else 'eager'}"
            for q in s["ratios"]:
                sps = s["samples_per_s"]
                mem = q["peak_memory"]
                lines.append(
                    f"{tag:13s} {q['matchup']:30s} ours/{peer} samples/s: "
                    f"{q['samples_per_s']:.2f}  (ours {sps[q['ours']]:.1f}, {peer} "
                    f"{sps[q['peer']]:.1f}; per FLOP {q['flop_normalised']:.2f}; peak memory "
                    f"ours/{peer}: {'n/a' if mem is None else f'{mem:.2f}'})"
                )
            if "profile" in s:
                lines += ["", f"{tag}: where a step's time goes (profiler self time)", ""]
                lines += profile_table([(k.replace("peer", peer), tag, v)
                                        for k, v in s["profile"].items()])  # fmt: skip
                lines.append("")
        lines.append("")
    return "\n".join(lines).rstrip()
