"""Plots of training runs: per-modality loss curves and per-t-bin losses from `metrics.jsonl`
(`modality-forcing plot`, and `loss.png` in every run folder, refreshed at each checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Records of a run's metrics.jsonl (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' has no metrics.jsonl (is it a training run dir?)")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_training_curves(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Loss per modality vs step (runs placed one after another, e.g. T2I then MF), and the
    per-t-bin loss of each run's last records. Writes a PNG and returns its path."""
    # a fixed layout: tight_layout measured every label and took most of the plot's time
    fig, (ax_loss, ax_bins) = plt.subplots(1, 2, figsize=(11, 4))
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.13, top=0.92, wspace=0.22)
    offset = 0
    for run in run_dirs:
        records = read_metrics(run)
        if not records:
            continue
        for modality in records[-1]["loss"]:
            steps = [offset + r["step"] for r in records if modality in r["loss"]]
            values = [r["loss"][modality] for r in records if modality in r["loss"]]
            ax_loss.plot(steps, values, label=f"{Path(run).name}: {modality}")
        for modality, bins in _mean_bins(records[-10:]).items():
            centres = [(i + 0.5) / len(bins) for i in range(len(bins))]
            ax_bins.plot(centres, bins, marker="o", label=f"{Path(run).name}: {modality}")
        offset += records[-1]["step"]
    ax_loss.set(xlabel="step (runs concatenated)", ylabel="loss", yscale="log", title="loss")
    ax_bins.set(xlabel="noise level t", ylabel="loss", title="loss per t-bin (last records)")
    for ax in (ax_loss, ax_bins):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _mean_bins(records: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    sums: dict[str, list[list[float]]] = {}
    for r in records:
        for modality, bins in r.get("loss_t_bins", {}).items():
            acc = sums.setdefault(modality, [[] for _ in bins])
            for i, v in enumerate(bins):
                if v is not None:
                    acc[i].append(v)
    return {m: [sum(v) / len(v) if v else None for v in acc] for m, acc in sums.items()}
