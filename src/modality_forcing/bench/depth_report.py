"""The report of `modality-forcing bench depth` (`bench/depth.py`): the Markdown (recipes at
equal compute with skills, the inference sweep, framing, verdicts with intervals) and the plots
(accuracy vs steps and vs training time, x0 error vs t)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import failures_section
from .depth import FOUR_STEP_TARGET, REGRESSOR_RATIO_TARGET, scores_at
from .runs import reused_note


def markdown(report: dict[str, Any]) -> str:
    """The report: recipes, the inference sweep, non-square framing, verdicts."""
    from ..metrics.bootstrap import describe
    from ..metrics.fidelity import skill

    b = report["budget"]
    prior = report.get("prior")
    lines = [
        f"preset {b['preset']}, {b['size'][0]}x{b['size'][1]}, {b['steps']} steps x batch "
        f"{b['batch']} per recipe (seed {report['seed']}"
        + (f", init from {report['init_from']}" if report["init_from"] else ", from scratch")
        + f"); val {b['num_val']} / test {b['num_test']} procedural scenes, least-squares aligned.",
        "",
        "## Recipes at equal compute (image -> depth AbsRel / delta1, test)",
        "",
        "Skill: 1 - AbsRel / the prior's AbsRel; the prior predicts the mean training depth "
        "map for every image"
        + (f" (test AbsRel {prior['test']['abs_rel']:.4f}, object pixels "
           f"{prior['test']['object_abs_rel']:.4f}; val {prior['val']['abs_rel']:.4f})."
           if prior else "."),
        "",
        "| recipe | train s | 1 step | 4 steps | 10 steps | skill / object skill, 1 step "
        "| val 1 / 4 steps |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, r in report["recipes"].items():
        cells = []
        for s in (1, 4, 10):
            t = scores_at(r["test"], s)
            cells.append(f"{t['abs_rel']:.4f} / {t['delta1']:.3f}" if t else "")
        one = scores_at(r["test"], 1)
        cells.append(
            f"{skill(one['abs_rel'], prior['test']['abs_rel']):.3f} / "
            f"{skill(one['object_abs_rel'], prior['test']['object_abs_rel']):.3f}"
            if prior and one and "object_abs_rel" in one
            else ""
        )
        vals = [scores_at(r["val"], s) for s in (1, 4)]
        val = " / ".join(f"{v['abs_rel']:.4f}" for v in vals if v)
        lines.append(f"| {name} | {r['train_seconds']:.0f} | {' | '.join(cells)} | {val} |")
    lines += reused_note({n: r.get("reused_from") for n, r in report["recipes"].items()})
    lines += ["", "## Inference settings of the `mf` recipe", "",
              "| setting | frame | evals/image | val AbsRel | test AbsRel | test delta1 "
              "| test Spearman(unc, err) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["sweep"]:
        v = f"{r['val']['abs_rel']:.4f}" if r["val"] else ""
        rho = r["test"].get("spearman")
        lines.append(
            f"| {r['setting']} | {r['frame']} | {r['evaluations']} | {v} "
            f"| {r['test']['abs_rel']:.4f} | {r['test']['delta1']:.3f} "
            f"| {'' if rho is None else f'{rho:.3f}'} |"
        )
    v = report["verdict"]
    if v:
        yes = {True: "met", False: "missed"}
        gains = ", ".join(f"{g:+.1%}" for g in v["ensemble_gain"])
        lines += [
            "", "## Verdicts (test split; best setting chosen on val)", "",
            f"- against the regressor trained with the same depth loss ({v['depth_loss']}: "
            f"{v['regressor']}, test AbsRel {v['regressor_test_abs_rel']:.4f}) at the same "
            f"inference compute (1 network evaluation per image): MF's best such setting on "
            f"val, **{v['equal_compute_setting']}**, test AbsRel "
            f"{v['equal_compute_test_abs_rel']:.4f}: ratio {v['ratio_to_regressor']:.3f} "
            f"(target <= {REGRESSOR_RATIO_TARGET}: {yes[v['ratio_target_met']]})",
            f"- at any inference compute: best setting on val **{v['best_setting']}** "
            f"({v['best_evaluations']} evaluations per image), test AbsRel "
            f"{v['best_test_abs_rel']:.4f}: ratio {v['best_ratio_to_regressor']:.3f} to the "
            "regressor's one evaluation",
            f"- {v['four_step_setting']} vs best: {v['four_step_gap']:+.1%} (target <= "
            f"+{FOUR_STEP_TARGET:.0%}: {yes[v['four_step_target_met']]})",
            f"- ensemble of {b['ensemble']} (median) vs one sample: {gains} "
            f"({'helps' if v['ensemble_helps'] else 'does not help everywhere'})",
            f"- Spearman(uncertainty, error) per image, mean: {v['spearman_mean']:.3f}",
            f"- non-square (2:3) inputs, framing chosen on val: **{v.get('frame')}**",
        ]  # fmt: skip
        for name, ci in report.get("intervals", {}).items():
            lines.append(f"- {name} ({ci['setting']}), 95% paired bootstrap over the "
                         f"{ci['num_images']} test scenes: "
                         f"{describe(ci, REGRESSOR_RATIO_TARGET)}")  # fmt: skip
    curves = {n: r["x0_error_by_t"] for n, r in report["recipes"].items() if "x0_error_by_t" in r}
    if curves:
        levels = [r["t"] for r in next(iter(curves.values()))]
        lines += ["", "## One-call depth estimate vs noise level (val AbsRel; image clean, the "
                  "ground-truth depth noised to t; t = 1 is the 1-step readout)", "",
                  "| recipe | " + " | ".join(f"t={t:g}" for t in levels) + " |",
                  "|---|" + "---|" * len(levels)]  # fmt: skip
        for name, rows in curves.items():
            lines.append(f"| {name} | " + " | ".join(f"{r['abs_rel']:.4f}" for r in rows) + " |")
    lines += failures_section(report)
    return "\n".join(lines)


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    """accuracy_vs_steps.png and accuracy_vs_time.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    plain = [r for r in report["sweep"] if r["frame"] == "square" and r["ensemble"] == 1
             and not r["shift_mu"] and r["t_min"] is None]  # fmt: skip
    for solver in ("euler", "heun"):
        rows = sorted((r for r in plain if r["solver"] == solver), key=lambda r: r["evaluations"])
        if rows:
            ax.plot([r["evaluations"] for r in rows], [r["test"]["abs_rel"] for r in rows],
                    marker="o", label=f"MF, {solver}")  # fmt: skip
    ens = [r for r in report["sweep"] if r["ensemble"] > 1 and r["reduction"] == "median"]
    if ens:
        ax.scatter([r["evaluations"] for r in ens], [r["test"]["abs_rel"] for r in ens],
                   marker="s", color="C2", label="MF, ensemble (median)", zorder=3)  # fmt: skip
    regressors = [(n, r) for n, r in report["recipes"].items() if r["regressor"]]
    for (name, r), ls in zip(regressors, ("--", ":", "-."), strict=False):
        ax.axhline(scores_at(r["test"], 1)["abs_rel"], color="k", ls=ls, label=name)
    ax.set(xscale="log", xlabel="network evaluations per image", ylabel="test AbsRel",
           title="image -> depth accuracy vs sampling steps")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "accuracy_vs_steps.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, r) in enumerate(report["recipes"].items()):
        pts = r["curve"]
        for steps, style in ((1, "-"), (4, ":")):
            key = f"abs_rel@{steps}"
            if pts and key in pts[0]:
                ax.plot([p["seconds"] / 60 for p in pts], [p[key] for p in pts], style,
                        marker="o", color=f"C{i}", label=f"{name}, {steps} step(s)")  # fmt: skip
    ax.set(xlabel="training time (min)", ylabel="val AbsRel",
           title="image -> depth accuracy vs training time")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "accuracy_vs_time.png"))
    curves = {n: r["x0_error_by_t"] for n, r in report["recipes"].items() if "x0_error_by_t" in r}
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, rows in curves.items():
            ax.plot([r["t"] for r in rows], [r["abs_rel"] for r in rows], marker="o", label=name)
        ax.set(xlabel="depth noise level t (image clean)", ylabel="val AbsRel of x0 estimate",
               title="one-call depth estimate vs noise level")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(save_figure(fig, out / "x0_error_vs_t.png"))
    return paths


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG (creating the folder) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
