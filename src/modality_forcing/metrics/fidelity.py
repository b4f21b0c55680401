"""Fidelity of generated images and depth, so "the model has learned" is a number.

- depth -> image: does each region (floor, walls, objects; by the instance map of the scene the
  depth came from) get the colour its caption names? A region counts as right when its mean
  generated colour is nearer to the scene re-rendered with the named colour than with any other
  palette colour (`data.attributes.palette_references`); its colour error is the distance to the
  real render's region mean.
- text -> image: what an attribute probe (`metrics/probe.py`) reads from generated images against
  the caption's attributes, and the Frechet distance between probe features of generated and
  real renders.
- image -> depth: skill over a trivial prior, 1 - AbsRel / AbsRel(prior), and AbsRel on object
  pixels alone (most pixels are floor, which even the prior gets roughly right).

Pure functions over arrays: the caller renders references and runs models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Instance ids of the procedural world (`data/scene_graph.py`): 1 floor, 2-4 walls, 5+ objects.
REGION_KINDS = {"floor": (1, 1), "walls": (2, 4), "objects": (5, 1 << 30)}


def region_kind(instance_id: int) -> str:
    """`floor`, `walls` or `objects` for an instance id of the procedural world."""
    for kind, (lo, hi) in REGION_KINDS.items():
        if lo <= instance_id <= hi:
            return kind
    raise ValueError(f"instance id {instance_id} is not a floor, wall or object (sky is 0)")


def region_colour_scores(
    image: np.ndarray,
    instance: np.ndarray,
    references: dict[int, np.ndarray],
    named: dict[int, int],
) -> list[dict[str, Any]]:
    """Score every referenced region of one generated image.

    Args:
        image: generated uint8 [H, W, 3] (or float in [0, 1]).
        instance: int [H, W] instance ids of the scene the conditioning depth came from.
        references: instance id -> float [K, 3] region means of the scene rendered with each of
            the K palette colours (in [0, 1]).
        named: instance id -> index (into the K colours) of the colour the caption names.

    Returns:
        One record per region: `instance`, `kind`, `correct` (nearest reference is the named
        colour), `colour_error` (Euclidean RGB distance in [0, 1] units to the real render's
        region mean, which is the named colour's reference).
    """
    rgb = np.asarray(image, np.float32)
    rgb = rgb / 255.0 if np.asarray(image).dtype == np.uint8 else rgb
    records = []
    for inst, refs in references.items():
        mask = np.asarray(instance) == inst
        if not mask.any():
            continue
        mean = rgb[mask].mean(0)
        dist = np.linalg.norm(np.asarray(refs) - mean, axis=1)
        records.append({
            "instance": int(inst),
            "kind": region_kind(int(inst)),
            "correct": bool(np.argmin(dist) == named[inst]),
            "colour_error": float(dist[named[inst]]),
        })  # fmt: skip
    return records


def summarise_regions(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and mean colour error per region kind, and over all regions (with counts)."""
    out: dict[str, Any] = {}
    for kind in (*REGION_KINDS, "all"):
        rows = [r for r in records if kind in ("all", r["kind"])]
        out[kind] = {
            "accuracy": float(np.mean([r["correct"] for r in rows])) if rows else float("nan"),
            "colour_error": float(np.mean([r["colour_error"] for r in rows]))
            if rows
            else float("nan"),
            "regions": len(rows),
        }
    return out


def skill(abs_rel: float, prior_abs_rel: float) -> float:
    """1 - AbsRel / AbsRel(prior): 0 for the prior itself, 1 for a perfect prediction."""
    return 1.0 - abs_rel / prior_abs_rel


def attribute_scores(
    predicted: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> dict[str, float]:
    """Per-attribute agreement of probe outputs with caption labels, averaged over images.

    Args:
        predicted: attribute -> probe output: class scores [N, K] for single-label attributes
            (compared by argmax with an int label [N]) and probabilities [N, K] for multi-label
            ones (a set: those above 0.5).
        labels: attribute -> int [N] or multi-hot [N, K] (`data.attributes.stack_attributes`).

    Returns:
        attribute -> accuracy (single-label) or mean Jaccard index of the sets (multi-label),
        and `mean` over the attributes.
    """
    scores = {}
    for name, pred in predicted.items():
        truth = np.asarray(labels[name])
        pred = np.asarray(pred)
        if truth.ndim == 1:
            scores[name] = float((pred.argmax(1) == truth).mean())
        else:
            p, t = pred > 0.5, truth > 0.5
            union = (p | t).sum(1)
            jaccard = np.where(union > 0, (p & t).sum(1) / np.maximum(union, 1), 1.0)
            scores[name] = float(jaccard.mean())
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def constant_prediction(labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The best answer that ignores the image: the most frequent class of each single-label
    attribute and the label frequencies of each multi-label one, repeated for every image
    (scored by `attribute_scores`, this is the chance level of the set)."""
    out = {}
    for name, truth in labels.items():
        truth = np.asarray(truth)
        if truth.ndim == 1:
            counts = np.bincount(truth, minlength=int(truth.max()) + 1)
            out[name] = np.tile(np.eye(len(counts))[counts.argmax()], (len(truth), 1))
        else:
            out[name] = np.tile(truth.mean(0), (len(truth), 1))
    return out


def above_chance(generated: float, real: float, chance: float) -> float:
    """How much of the real renders' margin over chance generated images reach:
    (generated - chance) / (real - chance); 1 matches real renders, 0 is chance, < 0 worse."""
    return (generated - chance) / (real - chance) if real > chance else float("nan")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D] and [M, D] (the FID
    formula: |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)))."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need feature sets [N >= 2, D] of one width, got {a.shape}, {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.real(linalg.sqrtm(cov_a @ cov_b))  # numerical noise leaves tiny imaginary parts
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
