"""`bench paper` output: REPORT.md (tables and a verdict per claim) and its plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..metrics.bootstrap import describe, verdict_word
from .common import (
    REPAINT_JUMPS,
    REPLACEMENT_FRESH,
    REPLACEMENT_REPAINT,
    failures_section,
)
from .depth import Setting
from .depth_report import save_figure
from .paper import CLAIM_TARGETS, COMPARISON_TARGETS, PAPER_SIZE_2
from .runs import reused_note
from .seeds import PRIOR


def _f(x: float, digits: int = 4) -> str:
    return "NaN (degenerate)" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _protocol_table(rows: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    protocols = list(next(iter(rows.values())))
    lines = ["| model | " + " | ".join(f"{p} AbsRel / δ1" for p in protocols) + " |",
             "|---|" + "---|" * len(protocols)]  # fmt: skip
    for name, per in rows.items():
        cells = [f"{_f(per[p]['abs_rel'])} / {_f(per[p]['delta1'], 3)}" if p in per else ""
                 for p in protocols]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


# image counts (reported under Failures) and per-image values (in paper.json): not columns
NOT_COLUMNS = ("images", "nan_images", "failures", "per_image")


def _dict_table(rows: dict[str, dict[str, Any]], first: str) -> list[str]:
    keys = [k for k in next(iter(rows.values())) if k not in NOT_COLUMNS]
    lines = [f"| {first} | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(_f(values[k]) for k in keys) + " |")
    return lines


def setting_text(chosen: dict[str, Any]) -> str:
    """`10 steps (10 network evaluations per image), shift 1.1, fresh noise`."""
    n, mode = chosen["steps"], chosen["mode"]
    # the setting `PaperMeasures.estimator` samples with; each RePaint jump adds a call per step
    jumps = REPAINT_JUMPS if mode == REPLACEMENT_REPAINT else 0
    calls = Setting(n, shift_mu=chosen["shift_mu"]).evaluations * (1 + jumps)
    noise = {
        REPLACEMENT_FRESH: ", fresh noise",
        REPLACEMENT_REPAINT: f", fresh noise, RePaint ({REPAINT_JUMPS} jumps back per step)",
    }
    return (f"{n} step{'s' * (n != 1)} ({calls} network evaluation{'s' * (calls != 1)} per "
            f"image), shift {chosen['shift_mu']:g}{noise.get(mode, '')}")  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    b = report["budget"]
    claims = report.get("claims", list(SECTIONS))
    lines = [
        "# The paper's claims in miniature",
        "",
        f"Preset {b['preset']} at {b['size'][0]}x{b['size'][1]}; every run {b['steps']} steps x "
        f"batch {b['batch']} (T2I pre-training {b['t2i_steps']} steps), seed {report['seed']}; "
        f"{b['num_eval']} procedural test scenes; image -> depth with {b['depth_steps']} Euler "
        f"steps (the regressor: 1), other modes {b['sample_steps']} steps; "
        "least-squares alignment unless a column says otherwise.",
    ]
    if len(claims) < len(SECTIONS):
        lines += ["", f"Claims measured here: {', '.join(claims)} (`--claims`)."]
    lines += ["", "## Runs", "", "| run | DiT params | steps | train s |", "|---|---|---|---|"]
    for name, r in report["runs"].items():
        lines.append(f"| {name} | {r['params'] / 1e6:.2f}M | {r['steps']} "
                     f"| {r['train_seconds']:.0f} |")  # fmt: skip
    lines += reused_note({name: r.get("reused_from") for name, r in report["runs"].items()})
    if report.get("scores", {}).get("found"):
        lines += ["", f"{report['scores']['found']} measurements were read back from the score "
                  f"folder `{report['scores']['folder']}` (made by an earlier sitting with the "
                  "same training configs and settings: `bench/score_cache.py`)."]  # fmt: skip
    for claim in claims:
        lines += SECTIONS[claim](report, report["verdicts"])
    lines += [
        "", "## How sure? Paired bootstrap over the test scenes", "",
        "Ratio of mean least-squares AbsRel (below the target: the first model is better; "
        "claims 1 and 3 ask only that MF stays within 10% of a dedicated model) with a 95% "
        "paired bootstrap interval over the test scenes (2000 resamples). It covers the choice "
        "of test scenes, not training noise (one seed per run: `--seeds` for that). Depth -> "
        "image and joint samples are judged by the regressor.", "",
        "| claim: comparison | AbsRel ratio [95% interval] | target | this seed |",
        "|---|---|---|---|",
        *(f"| {name} | {describe(ci, ci['target'])} | {ci['target']:g} | "
          f"{verdict_word(ci, ci['target'])} |" for name, ci in report["intervals"].items()),
    ]  # fmt: skip
    lines += failures_section(report)
    return "\n".join(lines)


def _claim_1(report: dict[str, Any], v: dict[str, Any]) -> list[str]:
    s1 = report["permutations"]
    r1 = v["1_mf_vs_dedicated"]
    return [
        "", "## 1. One model, every permutation", "", "Image -> depth:", "",
        *_protocol_table(s1["image_to_depth"]), "",
        "Depth -> image (cycle: depth estimated from the generated image vs the input depth; "
        "AbsRel, lower is better):", "",
        *_dict_table(s1["depth_to_image"], "model"), "",
        "Joint (consistency: depth estimated from the generated image vs the generated depth; "
        "`shuffled` pairs each image with another sample's depth):", "",
        *_dict_table(s1["joint"], "model"), "",
        f"Verdict: MF / dedicated AbsRel ratios: image -> depth {r1['image_to_depth']:.3f}, "
        f"depth -> image cycle {r1['depth_to_image_cycle']:.3f}, joint consistency "
        f"{r1['joint_consistency']:.3f} (below 1: MF is better). MF beats the mean training "
        f"depth map: {v['1_beats_mean_depth']}; skill over it (1 - AbsRel / its AbsRel): "
        + ", ".join(f"{k} {_f(x, 3)}" for k, x in v["1_skill"].items()) + "; on object pixels "
        "only: " + ", ".join(f"{k} {_f(x, 3)}" for k, x in v["1_object_skill"].items()) + ".",
    ]  # fmt: skip


def _claim_2(report: dict[str, Any], v: dict[str, Any]) -> list[str]:
    return [
        "", "## 2. Separate noise levels vs one shared t", "",
        *_protocol_table(report["shared_t"]), "",
        "Each model's image -> depth sampler was chosen on val over the same grid (steps, time "
        "shift; the baseline also with a fresh noise draw for the replaced image at every "
        "step): " + "; ".join(
            f"{name}: {setting_text(t['chosen'])}"
            for name, t in report.get("shared_t_sweep", {}).items()) + ".", "",
        f"Verdict: MF / shared-t AbsRel = {v['2_mf_over_shared']:.3f} (paper: about 0.43). "
        "Separate noise levels are better (ratio below 1): "
        f"**{v['2_verdict']['better']}**; by the paper's margin (ratio below "
        f"{COMPARISON_TARGETS[PAPER_SIZE_2]:g}): **{v['2_verdict']['paper_size']}** "
        "(paired intervals: last section).",
    ]  # fmt: skip


def _claim_3(report: dict[str, Any], v: dict[str, Any]) -> list[str]:
    r = report["regressor"]
    return [
        "", "## 3. Against a dedicated depth estimator", "",
        f"MF {_f(r['mf'])} vs regressor {_f(r['regressor'])}: ratio "
        f"{v['3_ratio_to_regressor']:.3f} (target <= {CLAIM_TARGETS['3']:.2f}): "
        f"**{v['3_verdict']}** (paired interval: last section).",
    ]  # fmt: skip


def _claim_4(report: dict[str, Any], v: dict[str, Any]) -> list[str]:
    sc = report["scaling"]
    prior = sc.get("prior", {}).get("abs_rel")  # (None in reports made before it was scored)

    def skill(abs_rel: float) -> str:
        return "not scored" if prior is None else _f(1 - abs_rel / prior, 3)

    lines = [
        "",
        "## 4. Scaling (T2I pre-training, then MF post-training)",
        "",
        "Image -> depth on test; skill over the mean training depth map (AbsRel "
        f"{'not scored' if prior is None else _f(prior)}):",
        "",
        "| model | DiT params | T2I scenes | AbsRel | δ1 | skill |",
        "|---|---|---|---|---|---|",
    ]
    for r in sc["size"] + sc["data"]:
        scenes = "unlimited" if not r["t2i_scenes"] else str(r["t2i_scenes"])
        lines.append(f"| mf-{r['name']} | {r['params'] / 1e6:.2f}M | {scenes} "
                     f"| {_f(r['abs_rel'])} | {_f(r['delta1'], 3)} "
                     f"| {skill(r['abs_rel'])} |")  # fmt: skip
    return [
        *lines,
        "", f"Verdict: bigger is better at this scale: **{v['4_bigger_is_better']}**; more T2I "
        f"data is better: **{v['4_more_data_is_better']}** (`holds` needs every step to be "
        "lower with a paired interval below 1, see the last section).",
    ]  # fmt: skip


def _claim_5(report: dict[str, Any], v: dict[str, Any]) -> list[str]:
    lines = ["", "## 5. Sparse depth", ""]
    for key, title in (
        ("sparse", "Full frame"),
        ("sparse_in_band", "In the LiDAR band (only the pixels between its lowest and highest "
         "beam, what a LiDAR-trained model was ever supervised on)"),
    ):  # fmt: skip
        if key not in report:  # (reports made before the band was scored)
            continue
        rows = report[key]
        prior = rows.get(PRIOR, {}).get("abs_rel", math.nan)
        lines += [
            f"{title}; skill over the mean training depth map scored the same way:", "",
            "| training depth | AbsRel | δ1 | skill |", "|---|---|---|---|",
            *(f"| {k} | {_f(r['abs_rel'])} | {_f(r['delta1'], 3)} "
              f"| {_f(1 - r['abs_rel'] / prior, 3)} |" for k, r in rows.items()), "",
        ]  # fmt: skip
    gaps = [("", "5_sparse_vs_dense"), (" in the band", "5_sparse_vs_dense_in_band")]
    return [
        *lines,
        "Verdict: AbsRel relative to dense: " + "; ".join(
            ", ".join(f"{k} {g:+.1%}" for k, g in v[key].items()) + where
            for where, key in gaps if key in v) + " (paired intervals: last section).",
    ]  # fmt: skip


def _claim_6(report: dict[str, Any], v: dict[str, Any]) -> list[str]:
    shift = report["budget"].get("i2d_shift", 0.0)
    return [
        "", "## 6. Schedules", "", "Joint generation per tilt (log2 alpha > 0: image first):", "",
        *_dict_table({f"log2_alpha={a}": r for a, r in report["schedules"]["joint"].items()},
                     "tilt"), "",
        f"Image -> depth per step count (Euler, time shift {shift:g}):", "",
        *_dict_table({f"{k} steps": r for k, r in
                      report["schedules"]["image_to_depth_steps"].items()}, "steps"), "",
        "Both tables are the test split; the choices below are made on the val split "
        "(`schedules_val` in paper.json) and only reported on test.", "",
        f"Verdict (chosen on val): most consistent tilt log2_alpha = {v['6_best_alpha']}; best "
        f"image -> depth step count {v['6_best_steps']}.",
    ]  # fmt: skip


SECTIONS = {"1": _claim_1, "2": _claim_2, "3": _claim_3, "4": _claim_4, "5": _claim_5,
            "6": _claim_6}  # fmt: skip


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    """scaling.png (AbsRel vs parameters and vs T2I scenes) and schedules.png, for the claims
    (4, 6) the report measured."""
    import matplotlib

    matplotlib.use("Agg")
    paths = []
    if "scaling" in report:
        paths.append(_plot_scaling(report["scaling"], out / "scaling.png"))
    if "schedules" in report:
        paths.append(_plot_schedules(report["schedules"], out / "schedules.png"))
    return paths


def scaling_over_seeds(reports: dict[int, dict[str, Any]], combined: dict[str, Any]
                       ) -> dict[str, Any]:  # fmt: skip
    """Claim 4 over the seeds, when every seed's report measured it, for `scaling.png` and the
    combined JSON: each run's name, parameters and T2I scenes with its scores over the seeds,
    which the combined image -> depth rows already hold (mean and per-seed AbsRel, skill), and
    the prior's."""
    if not all("scaling" in r for r in reports.values()):
        return {}
    first, rows = next(iter(reports.values()))["scaling"], combined["image_to_depth"]
    sc = {part: [{k: r[k] for k in ("name", "params", "t2i_scenes")} | rows[f"mf-{r['name']}"]
                 for r in first[part]]
          for part in ("size", "data")}  # fmt: skip
    return {"scaling": sc | ({"prior": rows[PRIOR]} if PRIOR in rows else {})}


def _plot_scaling(sc: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)  # one scale for both
    params = [r["params"] / 1e6 for r in sc["size"]]
    a1.plot(params, [r["abs_rel"] for r in sc["size"]], "o-")
    for r in sc["size"]:  # each seed's, when the rows are means over seeds
        a1.plot([r["params"] / 1e6] * len(r.get("per_seed", [])), r.get("per_seed", []), ".",
                color="C0", alpha=0.4)  # fmt: skip
    for r in sc["size"]:
        a1.annotate(f" {r['name']}", (r["params"] / 1e6, r["abs_rel"]))
    a1.set(xscale="log", xlabel="DiT parameters (M)", ylabel="image -> depth AbsRel",
           title="model size")  # fmt: skip
    a1.set_xticks(params, [f"{p:.1f}" for p in params])
    a1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    labels = ["unlimited" if not r["t2i_scenes"] else str(r["t2i_scenes"]) for r in sc["data"]]
    a2.plot(labels, [r["abs_rel"] for r in sc["data"]], "o", color="C1", markersize=9)
    for label, r in zip(labels, sc["data"], strict=True):
        a2.plot([label] * len(r.get("per_seed", [])), r.get("per_seed", []), ".", color="C1",
                alpha=0.4)  # fmt: skip
    a2.margins(x=0.4)
    a2.set(xlabel="distinct T2I training scenes", ylabel="image -> depth AbsRel",
           title="T2I data")  # fmt: skip
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        if "prior" in sc:
            ax.axhline(sc["prior"]["abs_rel"], color="grey", linestyle="--",
                       label="mean training depth map")  # fmt: skip
    if "prior" in sc:
        a2.legend()  # (where it hides the least)
    return save_figure(fig, path)


def _plot_schedules(schedules: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    joint, steps = schedules["joint"], schedules["image_to_depth_steps"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    alphas = [float(a) for a in joint]
    for key in (k for k in next(iter(joint.values())) if k not in NOT_COLUMNS):
        a1.plot(alphas, [r[key] for r in joint.values()], "o-", label=key)
    a1.set(xlabel="log2 alpha (image first >)", ylabel="AbsRel", title="joint consistency")
    a1.legend(fontsize=7)
    a2.plot([int(k) for k in steps], [r["abs_rel"] for r in steps.values()], "o-")
    a2.set(xscale="log", xlabel="sampling steps", ylabel="AbsRel", title="image -> depth")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
