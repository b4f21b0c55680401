"""`bench paper|depth --seeds S1 S2 ...`: a bench once per training seed (each seed's runs,
report and JSON in `OUT/seed<S>/`), then one report over the seeds: every comparison the
per-seed reports share (their `intervals`, each with both models' per-image AbsRel) as a ratio
of mean AbsRel with a bootstrap interval that covers the seeds and the test scenes together,
and a verdict worded as that interval supports it (holds / not resolved / does not hold);
and each model's test image -> depth over the seeds, with its skill over the mean-depth prior
and its AbsRel on object pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..metrics.bootstrap import seed_scene_ratio_ci, verdict_word
from .progress import bench_bar
from .runs import write_json

PRIOR = "mean training depth"  # the prior's row among a report's image -> depth rows
# A row scored only in the LiDAR band is named "<model>, in the LiDAR band"; its skill is over
# the prior scored there, the row "mean training depth, in the LiDAR band".
IN_BAND = "in the LiDAR band"

Rows = dict[str, dict[str, Any]]  # model -> its test image -> depth scores (least squares)


def run_over_seeds(
    bench: str, out_dir: str | Path, seeds: list[int], run_one: Callable[[Path, int], Any],
    target_of: Callable[[str], float], choices: Callable[[dict[str, Any]], dict[str, Any]],
    rows: Callable[[dict[str, Any]], Rows],
    extra: Callable[[dict[int, dict[str, Any]], dict[str, Any]], dict[str, Any]] = (
        lambda reports, combined: {}),
    plot: Callable[[dict[str, Any], Path], list[Path]] = lambda combined, out: [],
) -> dict[str, Any]:  # fmt: skip
    """Run `run_one(OUT/seed<S>, S)` for every seed (finished runs are reused by the benches),
    combine, write `<bench>_seeds.json` and `REPORT_seeds.md` into `out_dir`, print the table.
    `choices(report)`: what one seed's report chose on val, listed per seed; `rows(report)`:
    its models' test image -> depth scores, the prior's under `PRIOR`; `extra(reports,
    combined)`: more entries of the combined JSON; `plot(combined, out_dir)`: the figures it
    draws from them."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds must be distinct training seeds, got {seeds}")
    out = Path(out_dir)
    reports = {seed: run_one(out / f"seed{seed}", seed)
               for seed in bench_bar(seeds, f"{bench}: seeds")}  # fmt: skip
    combined = {**combine(reports, target_of), "bench": bench,
                "image_to_depth": over_seeds({s: rows(r) for s, r in reports.items()}),
                "chosen_on_val": {s: choices(r) for s, r in reports.items()}}  # fmt: skip
    combined |= extra(reports, combined)
    combined["figures"] = [p.name for p in plot(combined, out)]
    write_json(out / f"{bench}_seeds.json", combined)
    text = markdown(combined)
    (out / "REPORT_seeds.md").write_text(text + "\n")
    print(text)
    return combined


def combine(reports: dict[int, dict[str, Any]], target_of: Callable[[str], float]
            ) -> dict[str, Any]:  # fmt: skip
    """Every comparison the per-seed reports share, over all seeds: the ratio of mean AbsRel,
    its seed-and-scene interval, the per-seed ratios, the target and the verdict."""
    seeds = list(reports)
    names = [n for n in reports[seeds[0]]["intervals"]
             if all(n in r["intervals"] for r in reports.values())]  # fmt: skip
    comparisons = {}
    for name in names:
        a, c = (torch.tensor([reports[s]["intervals"][name]["per_image"][k] for s in seeds])
                for k in (0, 1))  # fmt: skip
        ci = seed_scene_ratio_ci(a, c)
        target = target_of(name)
        comparisons[name] = {**ci, "target": target, "verdict": verdict_word(ci, target)}
    return {"seeds": seeds, "comparisons": comparisons}


def over_seeds(rows: dict[int, Rows]) -> Rows:
    """Each model's test image -> depth over the seeds (those every seed has): AbsRel and
    object-pixel AbsRel averaged over seeds, the per-seed AbsRel, NaN images summed, and the
    skill over the prior (1 - AbsRel / the prior's, scored on the same pixels), when the rows
    have the prior."""
    seeds = list(rows)
    names = [n for n in rows[seeds[0]] if all(n in r for r in rows.values())]
    out: Rows = {}
    for name in names:
        per = [rows[s][name] for s in seeds]
        out[name] = {
            "abs_rel": _mean([r["abs_rel"] for r in per]),
            "per_seed": [r["abs_rel"] for r in per],
            "object_abs_rel": _mean([r.get("object_abs_rel", math.nan) for r in per]),
            "nan_images": sum(r.get("nan_images", 0) for r in per),
            "images": sum(r.get("images", 0) for r in per),
        }  # fmt: skip
    for name, row in out.items():
        prior = out.get(f"{PRIOR}, {IN_BAND}" if name.endswith(f", {IN_BAND}") else PRIOR)
        for key, skill in (("abs_rel", "skill"), ("object_abs_rel", "object_skill")):
            row[skill] = 1 - row[key] / prior[key] if prior else math.nan
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def markdown(combined: dict[str, Any]) -> str:
    seeds = combined["seeds"]
    lines = [
        f"# bench {combined['bench']} over {len(seeds)} training seeds "
        f"({', '.join(map(str, seeds))})",
        "",
        "AbsRel ratio of each comparison (below the target: the first model is better), the "
        "per-seed ratios, and a 95% bootstrap interval over seeds and test scenes together "
        "(each resample draws seeds and scenes with replacement). Verdict: `holds` when the "
        "interval lies below the target, `does not hold` when above, else `not resolved`.",
        "",
        "| comparison | per seed | ratio [95% interval] | target | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, ci in combined["comparisons"].items():
        per_seed = " / ".join(f"{r:.3f}" for r in ci["per_seed"])
        lines.append(f"| {name} | {per_seed} | {ci['ratio']:.3f} [{ci['low']:.3f}, "
                     f"{ci['high']:.3f}] | {ci['target']:g} | **{ci['verdict']}** |")  # fmt: skip
    lines += [
        "", "Image -> depth on the test scenes, averaged over the seeds (least squares; skill: "
        "1 - AbsRel / the mean training depth map's; object: pixels of objects only, the same "
        "alignment):", "",
        "| model | AbsRel | per seed | skill | object AbsRel | object skill | NaN images |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, r in combined["image_to_depth"].items():
        per_seed = " / ".join(f"{x:.4f}" for x in r["per_seed"])
        lines.append(f"| {name} | {r['abs_rel']:.4f} | {per_seed} | {r['skill']:.3f} | "
                     f"{r['object_abs_rel']:.4f} | {r['object_skill']:.3f} | "
                     f"{r['nan_images']} of {r['images']} |")  # fmt: skip
    if any(combined["chosen_on_val"].values()):  # (claims 4 and 5 choose nothing on val)
        lines += ["", "Chosen on val, per seed:", ""]
        for seed, chosen in combined["chosen_on_val"].items():
            lines.append(f"- seed {seed}: " + "; ".join(f"{k} {v}" for k, v in chosen.items()))
    for name in combined.get("figures", []):
        lines += ["", f"![{Path(name).stem}]({name})"]
    return "\n".join(lines)


def run_paper_seeds(out_dir: str | Path, budget: Any, seeds: list[int], **kwargs: Any
                    ) -> dict[str, Any]:  # fmt: skip
    """`bench paper` once per seed (`kwargs`: `run_paper_benchmark`'s; a `scores_dir` holds
    one folder per seed, `seed<S>`), then its comparisons over the seeds."""
    from .paper import claim_target, image_to_depth_rows, run_paper_benchmark
    from .paper_report import plot, scaling_over_seeds

    scores = kwargs.pop("scores_dir", None)

    def run_one(out: Path, seed: int) -> dict[str, Any]:
        return run_paper_benchmark(out, budget, seed=seed, scores_dir=_per_seed(scores, seed),
                                   **kwargs)  # fmt: skip

    return run_over_seeds("paper", out_dir, seeds, run_one, claim_target, paper_choices,
                          image_to_depth_rows, scaling_over_seeds, plot)  # fmt: skip


def paper_choices(report: dict[str, Any]) -> dict[str, Any]:
    """What one seed's `bench paper` report chose on val, for the claims it measured: claim
    2's samplers (with their network evaluations), claim 6's tilt and step count."""
    from .paper_report import setting_text

    v = report["verdicts"]
    out = {f"claim 2 {name}": setting_text(t["chosen"])
           for name, t in report.get("shared_t_sweep", {}).items()}  # fmt: skip
    if "6_best_alpha" in v:
        out |= {"claim 6 tilt log2_alpha": v["6_best_alpha"],
                "claim 6 image -> depth steps": v["6_best_steps"]}  # fmt: skip
    return out


def run_depth_seeds(out_dir: str | Path, budget: Any, seeds: list[int], **kwargs: Any
                    ) -> dict[str, Any]:  # fmt: skip
    """`bench depth` once per seed (`kwargs`: `run_depth_benchmark`'s; a `scores_dir` holds
    one folder per seed, `seed<S>`), then MF against the same-loss regressor over the seeds
    (target: within 10%)."""
    from .depth import REGRESSOR_RATIO_TARGET, image_to_depth_rows, run_depth_benchmark

    scores = kwargs.pop("scores_dir", None)

    def run_one(out: Path, seed: int) -> dict[str, Any]:
        return run_depth_benchmark(out, budget, seed=seed, scores_dir=_per_seed(scores, seed),
                                   **kwargs)  # fmt: skip

    def choices(report: dict[str, Any]) -> dict[str, Any]:
        v = report["verdict"]
        return {"MF at 1 evaluation": v["equal_compute_setting"],
                "MF at any compute": v["best_setting"], "framing": v["frame"]}  # fmt: skip

    return run_over_seeds("depth", out_dir, seeds, run_one,
                          lambda name: REGRESSOR_RATIO_TARGET, choices,
                          image_to_depth_rows)  # fmt: skip


def _per_seed(scores_dir: str | Path | None, seed: int) -> Path | None:
    """One seed's folder of a suite's score folder."""
    return None if scores_dir is None else Path(scores_dir) / f"seed{seed}"
