"""`modality-forcing bench probe`: train the attribute probe once on real procedural renders and
write it (with its own train/val accuracy) to `assets/probe/`, where the fidelity metrics load it.

The probe learns from train-split renders (a fixed pool, flipped left-right at random: no
attribute depends on handedness) and is scored on renders it never saw: the val split, whose
accuracy is the ceiling generated images are compared against.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.attributes import MULTI, SINGLE, stack_attributes
from ..data.procedural import SceneConfig, render_split
from ..metrics.fidelity import attribute_scores
from ..metrics.probe import INPUT_SIZE, PROBE_DIR, AttributeProbe, read_attributes
from .progress import bench_bar


def render_labelled(split: str, num: int, start: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """uint8 [N, 32, 32, 3] renders of a split and their attribute labels."""
    samples = render_split(split, start, num, SceneConfig(INPUT_SIZE, INPUT_SIZE))
    images = np.stack([s["image"] for s in samples])
    return images, stack_attributes([s["scene"] for s in samples])


def probe_loss(out: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the softmax heads + binary cross-entropy of the multi-label ones."""
    loss = sum(F.cross_entropy(out[k], labels[k]) for k in SINGLE)
    return loss + sum(F.binary_cross_entropy_with_logits(out[k], labels[k]) for k in MULTI)


def train_probe(
    out_dir: str | Path = PROBE_DIR, num_train: int = 60000, num_val: int = 1000,
    steps: int = 8000, batch: int = 128, lr: float = 2e-3, width: int = 48, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Train, score on held-out train renders and on val, save; returns the report."""
    torch.manual_seed(seed)
    start = time.time()
    images, labels = render_labelled("train", num_train)
    held_images, held_labels = render_labelled("train", num_val, start=num_train)
    val_images, val_labels = render_labelled("val", num_val)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    y = {k: torch.from_numpy(v) for k, v in labels.items()}
    probe = AttributeProbe(SINGLE, MULTI, width)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    for _ in bench_bar(range(steps), "probe: training steps"):
        idx = torch.randint(len(x), (batch,), generator=g)
        xb = x[idx]
        flip = torch.rand(batch, generator=g) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        loss = probe_loss(probe(xb), {k: v[idx] for k, v in y.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probe.eval()
    fit = attribute_scores(read_attributes(probe, held_images)[0], held_labels)
    val = attribute_scores(read_attributes(probe, val_images)[0], val_labels)
    info = {"train_accuracy": fit, "val_accuracy": val, "num_train": num_train,
            "num_val": num_val, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
            "parameters": sum(p.numel() for p in probe.parameters()),
            "train_seconds": time.time() - start,
            "note": "train_accuracy: held-out train renders; val_accuracy: val split"}  # fmt: skip
    path = probe.save(out_dir, info)
    print(json.dumps({"train": fit, "val": val}, indent=1) + f"\nwrote {path}")
    return info
