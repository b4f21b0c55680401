"""The attribute probe: a small CNN that reads caption attributes from a 32x32 procedural image.

Trained once on real renders (`modality-forcing bench probe`, `bench/probe.py`) and shipped in
`assets/probe/` (safetensors + JSON with its train/val accuracy), it turns "does the generated
image show what the caption says?" into numbers (`metrics/fidelity.attribute_scores`), and its
pooled features give a Frechet distance between generated and real images.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PROBE_DIR = Path(__file__).resolve().parents[1] / "assets" / "probe"
INPUT_SIZE = 32  # images of any size are resized (area) to this before the probe reads them


class AttributeProbe(nn.Module):
    """Four conv stages (32 -> 4 px) + global pooling -> one head per attribute.

    Args:
        single: attribute -> number of classes (softmax heads).
        multi: attribute -> number of labels (sigmoid heads).
        width: channels of the first stage (doubling twice).
    """

    def __init__(self, single: dict[str, int], multi: dict[str, int], width: int = 32) -> None:
        super().__init__()
        self.single, self.multi, self.width = dict(single), dict(multi), width
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(itertools.pairwise(chans)):
            layers += [nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1),
                       nn.GroupNorm(8, cout), nn.SiLU()]  # fmt: skip
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = chans[-1]
        self.heads = nn.ModuleDict(
            {k: nn.Linear(self.feature_dim, n) for k, n in {**self.single, **self.multi}.items()}
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> pooled features [B, D]."""
        x = images.float()
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        return self.trunk(x * 2 - 1).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, 3, H, W] in [0, 1] -> attribute -> logits [B, K]."""
        feats = self.features(images)
        return {k: head(feats) for k, head in self.heads.items()}

    def save(self, path: str | Path, info: dict[str, Any]) -> Path:
        """Weights (fp16 safetensors, to stay small) + `probe.json` (heads, width, `info`)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().half().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        meta = {"single": self.single, "multi": self.multi, "width": self.width, **info}
        (path / "probe.json").write_text(json.dumps(meta, indent=2))
        return path


def load_probe(path: str | Path = PROBE_DIR) -> tuple[AttributeProbe, dict[str, Any]]:
    """The shipped (or a given) probe in eval mode, and its `probe.json`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "probe.json").is_file():
        raise FileNotFoundError(
            f"no attribute probe in '{path}'; train one with `modality-forcing bench probe`"
        )
    meta = json.loads((path / "probe.json").read_text())
    probe = AttributeProbe(meta["single"], meta["multi"], meta["width"])
    weights = load_file(str(path / "model.safetensors"))
    probe.load_state_dict({k: v.float() for k, v in weights.items()})
    return probe.eval(), meta


@torch.no_grad()
def read_attributes(
    probe: AttributeProbe, images: np.ndarray | torch.Tensor, batch: int = 256
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Probe outputs for images uint8 [N, H, W, 3] (or float [N, 3, H, W] in [0, 1]).

    Returns:
        (attribute -> class probabilities [N, K] (softmax or sigmoid), features [N, D]).
    """
    x = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    if x.dtype == torch.uint8:
        x = x.permute(0, 3, 1, 2).float() / 255.0
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in probe.heads}
    feats = []
    for part in x.split(batch):
        f = probe.features(part)
        feats.append(f)
        for k, head in probe.heads.items():
            logits = head(f)
            outs[k].append(logits.softmax(1) if k in probe.single else logits.sigmoid())
    probs = {k: torch.cat(v).numpy() for k, v in outs.items()}
    return probs, torch.cat(feats).numpy()
