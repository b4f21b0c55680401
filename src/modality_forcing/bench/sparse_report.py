"""The Markdown report of `modality-forcing bench sparse` (`bench/sparse.py`): one row per run
(full frame and in the LiDAR band, object pixels, skills, gaps to dense with their intervals),
then the verdicts per fill and the winning fill."""

from __future__ import annotations

from typing import Any

from .runs import reused_note
from .sparse import SPARSE_TARGET


def sparse_table(report: dict[str, Any]) -> str:
    """Markdown: one row per run, then the verdicts per fill and the winning fill."""
    b = report["budget"]
    lines = [
        f"preset {b['preset']}, {b['size'][0]}x{b['size'][1]}, {b['steps']} steps x batch "
        f"{b['batch']} per run; scenes rendered at {b['sensor_scale']}x and sparsified there; "
        f"image -> depth on {b['num_eval']} dense procedural {report.get('split', 'test')} "
        f"scenes, least-squares aligned; sparse members {_crop(b.get('crop', 1.0))}; "
        + _dense_world(b.get("dense_scene"))
        + f"{b['sample_steps']} sampling steps. In band: only the pixels between the LiDAR's "
        "lowest and highest beam (what a LiDAR-trained model was ever supervised on). Brackets: "
        "95% paired bootstrap interval over the scenes.",
        "",
        "| setting | fill | steps | depth px | train s | AbsRel | delta1 | skill | objects: "
        "AbsRel | skill | AbsRel vs dense | in band: AbsRel | delta1 | skill | objects: AbsRel "
        "| skill | vs dense |",
        "|---" * 17 + "|",
    ]
    for r in report["rows"]:
        band = (f"{r['abs_rel_in_band']:.4f} | {r['delta1_in_band']:.4f} "
                f"| {_num(r.get('skill_in_band'))} | {_objects(r, '_in_band')} "
                f"| {_gap(r, '_in_band')}"
                if "abs_rel_in_band" in r else " | | | | | ")  # fmt: skip
        lines.append(
            f"| {r['setting']} | {r['fill']} | {r['steps']} | {r['depth_density']:.1%} "
            f"| {r['train_seconds']:.0f} | {r['abs_rel']:.4f} | {r['delta1']:.4f} "
            f"| {_num(r.get('skill'))} | {_objects(r)} | {_gap(r)} | {band} |"
        )
    lines += reused_note({f"{r['setting']} ({r['fill']})": r.get("reused_from")
                          for r in report["rows"]})  # fmt: skip
    prior = report.get("prior")
    if prior:
        lines += ["", f"Skill: 1 - AbsRel / the prior's, the prior predicting the mean training "
                  f"depth map for every scene (AbsRel {prior['abs_rel']:.4f}, in band "
                  f"{prior['abs_rel_in_band']:.4f}; on object pixels "
                  f"{_num(prior.get('object_abs_rel'), 4)}, in band "
                  f"{_num(prior.get('object_abs_rel_in_band'), 4)}). Objects: AbsRel over the "
                  "object pixels alone, same alignment."]  # fmt: skip
    summary = report["summary"]
    lines.append("")
    for fill, v in summary["verdicts"].items():
        worst = v["worst_sparse_gap"]
        lines.append(
            f"- {fill}: worst sparse gap {'n/a' if worst is None else f'{worst:+.1%}'} "
            f"(target <= +{SPARSE_TARGET:.0%}: {_word(v['sparse_within_target'], 'met', 'missed')})"
            f"; mixed <= dense: {_word(v['mixed_at_least_dense'])}"
            f"; worst sparse gap in the LiDAR band {_pct(v.get('worst_sparse_gap_in_band'))}"
        )
    means = ", ".join(f"{k} {v:.4f}" for k, v in summary["mean_abs_rel"].items())
    lines.append(f"- mean AbsRel per fill: {means}; lowest: **{summary['best_fill']}**")
    return "\n".join(lines)


def _gap(r: dict[str, Any], part: str = "") -> str:
    """'+22.9% [+15.0%, +31.2%]': the gap to dense and its bootstrap interval when known."""
    text = _pct(r.get(f"abs_rel{part}_vs_dense"))
    ci = r.get(f"abs_rel{part}_vs_dense_ci")
    if ci:
        text += f" [{_pct(ci['low'] - 1)}, {_pct(ci['high'] - 1)}]"
    return text


def _objects(r: dict[str, Any], part: str = "") -> str:
    """'0.1234 | 0.210': AbsRel on object pixels and its skill (n/a for rows scored before)."""
    return f"{_num(r.get(f'object_abs_rel{part}'), 4)} | {_num(r.get(f'object_skill{part}'))}"


def _dense_world(scene: dict[str, Any] | None) -> str:
    if not scene:
        return ""
    return (
        "dense members from another world ("
        + ", ".join(f"{k}={v}" for k, v in scene.items())
        + "); "
    )


def _crop(crop: float | None) -> str:
    from ..data.training_sets.mixture import SPARSE_CROP

    crop = SPARSE_CROP if crop is None else crop
    return "not cropped" if crop == 1 else f"randomly cropped to >= {crop:g} of each side"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(gap: float | None) -> str:
    return "n/a" if gap is None else f"{gap:+.1%}"


def _word(flag: bool | None, yes: str = "yes", no: str = "no") -> str:
    """A verdict flag in words; `n/a` when nothing was there to judge."""
    return "n/a" if flag is None else (yes if flag else no)
