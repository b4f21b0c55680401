"""Per-modality flow loss with sparse depth supervision and per-t-bin logging.

Image: velocity MSE. Depth: x0 L1 (or MSE, `loss.depth_loss`) averaged over valid pixels only,
so sparse sensor depth (LiDAR, SfM points) trains the depth stream without inventing values. A
modality held clean (t = 0) or absent gets no loss. Optional self-distillation pulls the image
velocity toward a frozen T2I teacher, weighted by t_depth (the noisier the depth, the closer to
plain T2I the model must be).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import LossConfig
from ..modalities import get_modality
from .path import velocity_target


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar, the value to backpropagate
    per_modality: dict[str, torch.Tensor]  # scalar per modality (0 when no sample is active)
    per_sample: dict[str, torch.Tensor]  # [B] per modality, detached, NaN where inactive
    distill: torch.Tensor | None = None
    t_bins: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def _masked_mean(
    err: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean of err [B, C, H, W] over mask [B, 1, H, W], weighted per pixel by weight
    [B, 1, H, W] (a weighted mean: the weights' scale does not matter); also returns the valid
    pixel counts [B]."""
    m = None if mask is None else mask.expand_as(err)
    count = (
        torch.full(err.shape[:1], float(err[0].numel()), device=err.device)
        if m is None
        else m.flatten(1).sum(1).to(err.dtype)
    )
    if weight is None:
        total = err if m is None else torch.where(m, err, torch.zeros_like(err))
        return total.flatten(1).sum(1) / count.clamp_min(1), count
    w = weight.to(err.dtype).expand_as(err)
    if m is not None:
        w = torch.where(m, w, torch.zeros_like(w))
    return (err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-12), count


def object_weights(
    object_mask: torch.Tensor, weight: float, size: tuple[int, int] | torch.Size
) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, h, w]: `weight` on object pixels, 1 elsewhere, area-averaged
    down to the grid the loss is taken on (`size`, e.g. a latent's) when that is smaller."""
    w = 1.0 + (weight - 1.0) * object_mask.float()
    if tuple(w.shape[-2:]) != tuple(size):
        w = torch.nn.functional.adaptive_avg_pool2d(w, tuple(size))
    return w


def bin_losses(
    t: torch.Tensor, values: torch.Tensor, active: torch.Tensor, num_bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of `values` [B] per t-bin over active samples: ([num_bins], [num_bins])."""
    idx = (t.detach().float().clamp(0, 1 - 1e-6) * num_bins).long()
    w = active.float()
    sums = torch.zeros(num_bins).index_add_(0, idx.cpu(), (values.detach().float() * w).cpu())
    counts = torch.zeros(num_bins).index_add_(0, idx.cpu(), w.cpu())
    return sums, counts


def flow_loss(
    pred: dict[str, torch.Tensor],
    x0: dict[str, torch.Tensor],
    noise: dict[str, torch.Tensor],
    t: dict[str, torch.Tensor],
    active: dict[str, torch.Tensor],
    cfg: LossConfig,
    valid_mask: dict[str, torch.Tensor] | None = None,
    teacher_v: torch.Tensor | None = None,
    distill_key: str = "image",
    distill_weight_t: torch.Tensor | None = None,
    normalizer: dict[str, torch.Tensor] | None = None,
    prediction: dict[str, str] | None = None,
    pixel_weight: dict[str, torch.Tensor] | None = None,
) -> LossOutput:
    """Combine the per-modality objectives.

    Args:
        pred: modality -> network output ([B, C, H, W]): velocity or x0 per the modality registry.
        x0, noise: modality -> clean data and the noise used to build x_t (same shapes).
        t: modality -> [B] noise levels.
        active: modality -> [B] bool, False where the modality is held clean or absent.
        cfg: loss weights and t-bin count.
        valid_mask: modality -> [B, 1, H, W] bool for masked (sparse) modalities.
        teacher_v: optional [B, C, H, W] velocity of the frozen T2I teacher for `distill_key`.
        distill_weight_t: [B] per-sample distillation weights (normally t_depth).
        normalizer: modality -> number of active samples to divide by (default: this batch's).
            The trainer passes the count over the whole global batch (all ranks, all
            micro-batches), so summing these losses gives the global mean exactly.
        prediction: modality -> `x0` | `velocity`, overriding the registry's parametrisation
            (e.g. `model.depth_prediction`).
        pixel_weight: modality -> [B, 1, H, W] per-pixel weights of its error (a weighted mean
            per sample), e.g. object pixels weighed up (`loss.object_weight`).

    Returns:
        LossOutput with the total, per-modality scalars, per-sample values and t-bin sums.
    """
    if cfg.depth_loss not in ("mse", "l1"):
        raise ValueError(f"unknown loss.depth_loss '{cfg.depth_loss}'; choose from ['l1', 'mse']")
    valid_mask = valid_mask or {}
    total = torch.zeros((), device=next(iter(pred.values())).device)
    out = LossOutput(total=total, per_modality={}, per_sample={})
    for name, p in pred.items():
        spec = get_modality(name)
        kind = (prediction or {}).get(name, spec.prediction)
        if kind not in ("x0", "velocity"):
            raise ValueError(f"unknown prediction '{kind}' for '{name}'; choose x0 or velocity")
        target = x0[name] if kind == "x0" else velocity_target(x0[name], noise[name])
        mask = valid_mask.get(name) if spec.masked else None
        p, target = p.float(), target.float()
        if mask is not None:
            # Replace unmeasured pixels *before* the error: a where() after it would still pass
            # NaN gradients (0 * inf) back from garbage predictions there.
            p = torch.where(mask.expand_as(p), p, target)
        l1 = spec.masked and cfg.depth_loss == "l1"  # depth-like (x0, masked) modalities
        err = (p - target).abs() if l1 else (p - target).square()
        per_sample, count = _masked_mean(err, mask, (pixel_weight or {}).get(name))
        act = active[name] & (count > 0)  # a sample with no valid depth trains the image alone
        denom = act.sum() if normalizer is None else normalizer[name]
        loss = (per_sample * act).sum() / denom.clamp_min(1)
        out.per_modality[name] = loss
        out.per_sample[name] = torch.where(act, per_sample.detach(), float("nan"))
        out.t_bins[name] = bin_losses(t[name], per_sample, act, cfg.num_t_bins)
        out.total = out.total + cfg.weights.get(name, 1.0) * loss
    if teacher_v is not None and cfg.distill_weight > 0:
        err = (pred[distill_key].float() - teacher_v.float()).square().flatten(1).mean(1)
        w = distill_weight_t if distill_weight_t is not None else torch.ones_like(err)
        w = w.to(err.device) * active[distill_key]
        denom = active[distill_key].sum() if normalizer is None else normalizer[distill_key]
        out.distill = (err * w).sum() / denom.clamp_min(1)
        out.total = out.total + cfg.distill_weight * out.distill
    return out
