"""`bench paper --seeds S1 S2 ...`: the whole suite once per training seed (each seed's runs,
report and JSON in `OUT/seed<S>/`), then one report over the seeds: every compared pair's AbsRel
ratio with a bootstrap interval that covers the seeds and the test scenes together, and a
verdict worded as that interval supports it (holds / not resolved / does not hold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..metrics.bootstrap import seed_scene_ratio_ci, verdict_word
from .progress import bench_bar
from .runs import write_json

# The ratio below which each claim's comparison counts as "the first model is better": claim 3
# asks only that MF stays within 10% of the dedicated regressor.
TARGETS = {"3": 1.10}


def run_paper_seeds(
    out_dir: str | Path, budget: Any, seeds: list[int], precision: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run `bench paper` for every seed (finished runs are reused), combine, write
    `paper_seeds.json` and `REPORT_seeds.md` into `out_dir`, print the table."""
    from .paper import run_paper_benchmark

    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds must be distinct training seeds, got {seeds}")
    out = Path(out_dir)
    reports = {
        seed: run_paper_benchmark(out / f"seed{seed}", budget, seed=seed, precision=precision,
                                  device=device)
        for seed in bench_bar(seeds, "paper: seeds")
    }  # fmt: skip
    combined = combine(reports)
    write_json(out / "paper_seeds.json", combined)
    text = markdown(combined)
    (out / "REPORT_seeds.md").write_text(text + "\n")
    print(text)
    return combined


def combine(reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every comparison the per-seed reports share, over all seeds: the ratio of mean AbsRel,
    its seed-and-scene interval, the per-seed ratios and the verdict; claim 6's choices (made
    on val) per seed."""
    seeds = list(reports)
    names = [n for n in reports[seeds[0]]["intervals"]
             if all(n in r["intervals"] for r in reports.values())]  # fmt: skip
    comparisons = {}
    for name in names:
        a, c = (torch.tensor([reports[s]["intervals"][name]["per_image"][k] for s in seeds])
                for k in (0, 1))  # fmt: skip
        ci = seed_scene_ratio_ci(a, c)
        target = TARGETS.get(name.split(":")[0], 1.0)
        comparisons[name] = {**ci, "target": target, "verdict": verdict_word(ci, target)}
    choices = {key: [reports[s]["verdicts"][key] for s in seeds]
               for key in ("6_best_alpha", "6_best_steps")}  # fmt: skip
    skill = {s: reports[s]["verdicts"].get("1_skill", {}) for s in seeds}
    return {"seeds": seeds, "comparisons": comparisons, "claim_6_choices": choices,
            "skill_over_mean_depth": skill}  # fmt: skip


def markdown(combined: dict[str, Any]) -> str:
    seeds = combined["seeds"]
    lines = [
        f"# The paper's claims over {len(seeds)} training seeds ({', '.join(map(str, seeds))})",
        "",
        "AbsRel ratio of each comparison (below the target: the first model is better), the "
        "per-seed ratios, and a 95% bootstrap interval over seeds and test scenes together "
        "(each resample draws seeds and scenes with replacement). Verdict: `holds` when the "
        "interval lies below the target, `does not hold` when above, else `not resolved`.",
        "",
        "| claim: comparison | per seed | ratio [95% interval] | target | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, ci in combined["comparisons"].items():
        per_seed = " / ".join(f"{r:.3f}" for r in ci["per_seed"])
        lines.append(f"| {name} | {per_seed} | {ci['ratio']:.3f} [{ci['low']:.3f}, "
                     f"{ci['high']:.3f}] | {ci['target']:g} | **{ci['verdict']}** |")  # fmt: skip
    choices = combined["claim_6_choices"]
    lines += ["", "Claim 6, chosen on val per seed: tilt log2_alpha "
              + " / ".join(map(str, choices["6_best_alpha"])) + "; image -> depth steps "
              + " / ".join(map(str, choices["6_best_steps"])) + "."]  # fmt: skip
    return "\n".join(lines)
