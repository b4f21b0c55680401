"""`modality-forcing bench depth`: is image -> depth from one Modality Forcing model as accurate as
a dedicated depth regressor of the same size and compute, and which settings decide it?

On the procedural world it trains, at equal compute (same preset, steps, batch, seed, data order),
one model per *recipe*: the deterministic regressor (image clean, depth input pure noise, x0 loss
at t_depth = 1 only), the naive MF recipe of the calibration prototype, the project's MF default,
and optional ablations (`RECIPES`). Every run keeps a checkpoint at `curve_points` evenly spaced
steps, scored on the validation split (accuracy vs training time). Then the MF default's final
weights go through every inference setting (`SETTINGS`: steps, Euler vs Heun, time shift,
ensembles of N with their uncertainty, letterboxed vs stretched non-square inputs) on the
validation split, where the best setting is chosen, and on the held-out test split, which is
reported. Metrics: per-image least-squares scale-and-shift alignment (AbsRel, delta1). The
report and plots: `bench/depth_report.py`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..sampling.config import SamplingConfig
from .common import Budget, Scenes, Scorer, load_scenes, prior_scores
from .progress import bench_bar
from .runs import RunPool, publish, train_cached
from .score_cache import ScoreCache
from .x0_error import x0_error_by_t

# Targets (issue #11): MF's best setting within 1.1x the regressor's AbsRel; 4 steps within 5% of
# MF's best; an ensemble of 5 better than one sample; uncertainty that correlates with the error.
REGRESSOR_RATIO_TARGET = 1.10
FOUR_STEP_TARGET = 0.05


@dataclass(frozen=True, kw_only=True)
class DepthBudget(Budget):
    """A training budget (`Budget`) and what `bench depth` scores per run."""

    num_val: int  # validation scenes: curves and the choice of the best setting
    num_test: int  # held-out test scenes: the reported numbers
    curve_points: int  # checkpoints per run scored for the accuracy-vs-time curve
    ensemble: int = 5
    full_sweep: bool = True  # False: a handful of settings (smoke tests)


BUDGETS: dict[str, DepthBudget] = {
    # Smoke test (CI): seconds; the numbers mean nothing.
    "tiny": DepthBudget("tiny", (16, 16), steps=6, batch=4, num_val=3, num_test=3, curve_points=2,
                   ensemble=3, precision="fp32", lr=1e-3, warmup=1, full_sweep=False),
    # ~8 min per run on 2 CPU cores (cpu-s, 32x32); default recipes + sweep in about an hour.
    "small": DepthBudget("cpu-s", (32, 32), steps=600, batch=32, num_val=100, num_test=200,
                    curve_points=4),
    # 2x small (1,200 x 32 per run, ~25 min per run on 2 cores): the smallest budget at which
    # the MF recipe reached image -> depth skill >= 0.3 over the mean-depth prior on val
    # (issue #20's rule; `bench paper --budget medium` trains the same); `--seeds 0 1 2`.
    "medium": DepthBudget("cpu-s", (32, 32), steps=1200, batch=32, num_val=100, num_test=200,
                     curve_points=4),
}  # fmt: skip

# The verdict's comparisons with the regressor trained with MF's depth loss (test AbsRel ratios,
# paired over the test scenes; over seeds too in `bench depth --seeds`).
EQUAL_COMPUTE = "mf (1 evaluation, chosen on val) / regressor"
ANY_COMPUTE = "mf (best on val, any compute) / regressor"

# One-change ablations. They were measured against `mf-mse` (docs/depth_quality.md), so they keep
# its MSE depth loss and stay reproducible.
_MSE = {"loss": {"depth_loss": "mse"}}
_ABLATIONS: dict[str, dict[str, Any]] = {
    "mf-ic20": {"forcing": {"p_image_clean": 0.2, "p_depth_clean": 0.2, "p_both_noised": 0.6}},
    "mf-ic80": {"forcing": {"p_image_clean": 0.8, "p_depth_clean": 0.1, "p_both_noised": 0.1}},
    "mf-no-readout": {"forcing": {"p_depth_readout": 0.0}},
    "mf-no-ema": {"optim": {"ema_decay": 0.0}},
    "mf-dec2": {"model": {"decoder_layers": 2}},
    "mf-velocity": {"model": {"depth_prediction": "velocity"}},
    "mf-from-t2i": {"init_from": "runs/cpu-s-t2i/final"},  # needs that stage-1 run (cpu-s)
}

# Recipes: overrides on top of the project's training defaults (config.py), applied per run.
RECIPES: dict[str, dict[str, Any]] = {
    # The same network as a deterministic image -> depth regressor.
    "regressor": {"forcing": {"policy": "regression"}, **_MSE},
    "regressor-l1": {"forcing": {"policy": "regression"}, "loss": {"depth_loss": "l1"}},
    # The calibration prototype's recipe: 20% image-clean, no EMA, constant learning rate.
    "mf-naive": {
        "forcing": {
            "p_image_clean": 0.2,
            "p_depth_clean": 0.2,
            "p_both_noised": 0.6,
            "p_depth_readout": 0.0,
        },
        "optim": {"schedule": "constant", "ema_decay": 0.0},
        **_MSE,
    },
    # The project default (whatever `ForcingConfig` / `OptimConfig` / `LossConfig` say now).
    "mf": {},
    "mf-mse": _MSE,  # the default before the L1 switch
    "mf-l1": {"loss": {"depth_loss": "l1"}},
    # Issue 20's step-count question: the default with depth noise levels that reach small t
    # (logit-normal mean -0.5: median t_depth 0.38 instead of 0.75), so image-clean samples near
    # the end of a multi-step trajectory are trained, not only the pure-noise readout.
    "mf-small-t": {"forcing": {"depth_shift_mu": -0.5}},
    **{name: {**change, **_MSE} for name, change in _ABLATIONS.items()},
}

# The regressor with the default (L1) depth loss: the verdict compares MF with the regressor
# trained with MF's own depth loss (`same_loss_regressor`), added to any recipe list.
DEFAULT_RECIPES = ("regressor-l1", "mf-naive", "mf")
MAIN = "mf"  # the recipe whose final weights get the full inference sweep


def Setting(steps: int = 1, solver: str = "euler", **fields: Any) -> SamplingConfig:
    """An image -> depth setting of these benches: `SamplingConfig` with the time shift at 0
    unless given (the benches' protocol since issue #11)."""
    return SamplingConfig(steps=steps, solver=solver, **{"shift_mu": 0.0, **fields})


def sweep_settings(budget: DepthBudget) -> list[SamplingConfig]:
    """Inference settings of the sweep (square test scenes)."""
    n = budget.ensemble
    if not budget.full_sweep:
        settings = [Setting(1), Setting(2), Setting(2, "heun"), Setting(2, ensemble=n)]
    else:
        settings = [
            *(Setting(s) for s in (1, 2, 4, 10, 25, 50)),
            *(Setting(s, "heun") for s in (2, 4, 10)),
            *(Setting(s, shift_mu=mu) for s in (4, 10) for mu in (-1.0, 1.0, 1.1, 2.0)),
            *(Setting(10, t_min=t) for t in (0.01, 0.2)),
            *(Setting(s, ensemble=n, reduction=r) for s in (1, 4, 10) for r in ("median", "mean")),
        ]
    return settings


# ---------------------------------------------------------------------------------- training


def recipe_config(recipe: str, budget: DepthBudget, run_dir: Path, seed: int = 0,
                  init_from: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Training config (a dict for `resolve_train_config`) of one recipe under a budget."""
    from ..config import apply_overrides

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe '{recipe}'; choose from {list(RECIPES)}")
    base = budget.train_config(
        run_dir, seed, log_points=30, init_from=init_from, keep_checkpoints=0,
        ckpt_every=max(1, budget.steps // budget.curve_points),
    )  # fmt: skip
    overrides = [f"{k}={json.dumps(v)}" for k, v in _flatten(RECIPES[recipe]).items()]
    return apply_overrides(base, overrides)


def depth_loss(config: dict[str, Any]) -> str:
    """The depth loss a recipe config trains with (the project default where it says none)."""
    from ..config import resolve_train_config

    return resolve_train_config(config).loss.depth_loss


def same_loss_regressor(loss: str, spec: DepthBudget, out: Path, seed: int,
                        init_from: str | None) -> str:  # fmt: skip
    """The regressor recipe trained with the depth loss `loss`."""
    for name, change in RECIPES.items():
        if change.get("forcing", {}).get("policy") != "regression":
            continue
        if depth_loss(recipe_config(name, spec, out / name, seed, init_from)) == loss:
            return name
    raise ValueError(f"no regressor recipe trains with the depth loss '{loss}'")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _elapsed_at(records: list[dict[str, Any]], step: int, train_seconds: float,
                total_steps: int) -> float:  # fmt: skip
    """Training wall time at `step` from the run's metrics records (pro rata when not logged)."""
    logged = [r for r in records if r["step"] <= step and "elapsed_s" in r]
    if logged:
        last = logged[-1]
        return last["elapsed_s"] * step / max(1, last["step"])
    return train_seconds * step / max(1, total_steps)


def curve(run: dict[str, Any], out: Path, scenes: Scenes, budget: DepthBudget,
          regressor: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Validation AbsRel of every planned checkpoint of `run` (in its own folder, which is
    another benchmark's for a reused run; a reused run may have fewer): 1-step readout (and 4
    steps for MF). Scores are cached in `out`."""
    from ..training.curves import read_metrics

    run_dir = Path(run["final"]).parent
    records = read_metrics(run_dir)
    points = []
    every = max(1, budget.steps // budget.curve_points)  # not the 10-minute resume checkpoints
    ckpts = sorted(p for p in (run_dir / "checkpoints").glob("step_???????")
                   if int(p.name.split("_")[1]) % every == 0)  # fmt: skip
    for ckpt in bench_bar(ckpts, f"depth: {out.name} checkpoints", inner=True):
        step = int(ckpt.name.split("_")[1])
        scorer = Scorer(ckpt, scenes, budget.size, out / f"scores_curve_{ckpt.name}.json",
                        budget.precision)  # fmt: skip
        seconds = _elapsed_at(records, step, run["train_seconds"], run["steps"])
        row = {"step": step, "seconds": seconds}
        for steps in (1,) if regressor else (1, 4):
            row[f"abs_rel@{steps}"] = scorer(Setting(steps))["abs_rel"]
        points.append(row)
    return points


# ------------------------------------------------------------------------------------ suite


def run_depth_benchmark(
    out_dir: str | Path = "bench_out/depth",
    budget: str | DepthBudget = "small",
    recipes: list[str] | tuple[str, ...] | None = None,
    init_from: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    precision: str | None = None,
    device: str | None = None,
    reuse_runs: list[str] | tuple[str, ...] = (),
    scores_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train every recipe, score curves and the inference sweep; write depth.json, REPORT.md and
    plots into `out_dir`; print the report. Finished runs and scores are reused (resumable).
    `precision` and `device` override the budget's. `reuse_runs`: folders of other benchmarks
    (e.g. `bench paper`'s) whose finished runs with the same training config are used instead
    of training (`runs.find_finished`). `scores_dir`: where the finished report is stored and
    found again (`score_cache`: keyed by every run's training config, the budget and seed), so
    a finished bench is rebuilt on another machine with no run folders."""
    if isinstance(budget, str) and budget not in BUDGETS:
        raise ValueError(f"unknown budget '{budget}'; choose from {list(BUDGETS)}")
    spec = BUDGETS[budget] if isinstance(budget, str) else budget
    spec = replace(spec, steps=steps or spec.steps, precision=precision or spec.precision,
                   device=device or spec.device)  # fmt: skip
    recipes = list(recipes or DEFAULT_RECIPES)
    out = Path(out_dir)
    # the verdict's pair: the main recipe and the regressor trained with the same depth loss
    main_loss = depth_loss(recipe_config(MAIN, spec, out / MAIN, seed, init_from))
    for name in (same_loss_regressor(main_loss, spec, out, seed, init_from), MAIN):
        if name not in recipes:
            recipes.append(name)
    configs = {r: recipe_config(r, spec, out / r, seed, init_from) for r in recipes}  # fail early
    cache = ScoreCache(scores_dir, RunPool(configs, reuse_runs))
    settings = {"budget": asdict(spec), "seed": seed, "init_from": init_from}
    report = cache.measure(
        "depth report",
        list(configs),
        settings,
        lambda: _measure(spec, configs, out, seed, init_from, reuse_runs),
    )
    report["scores"] = cache.summary()
    from .depth_report import markdown, plot

    publish(report, out, "depth.json", markdown, plot)
    return report


def _measure(spec: DepthBudget, configs: dict[str, dict[str, Any]], out: Path, seed: int,
             init_from: str | None, reuse_runs: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """Every run trained and scored: the report of `run_depth_benchmark`."""
    recipes = list(configs)
    height, width = spec.size
    val = load_scenes("val", spec.num_val, height, width)
    test = load_scenes("test", spec.num_test, height, width)
    # 2:3, non-square: the framing (letterbox or stretch) is chosen on val, reported on test
    wide = {split: load_scenes(split, n, height, width * 3 // 2)
            for split, n in (("val", spec.num_val), ("test", spec.num_test))}  # fmt: skip
    report: dict[str, Any] = {"budget": asdict(spec), "seed": seed, "init_from": init_from,
                              "recipes": {}, "sweep": [],
                              "prior": prior_scores(spec.size, val=val, test=test)}  # fmt: skip
    for name in bench_bar(recipes, "depth: recipes"):
        run = train_cached(configs[name], reuse_runs)
        run_dir = out / name
        is_reg = RECIPES[name].get("forcing", {}).get("policy") == "regression"
        val_scorer = Scorer(run["final"], val, spec.size, run_dir / "scores_val.json",
                            spec.precision)  # fmt: skip
        test_scorer = Scorer(run["final"], test, spec.size, run_dir / "scores_test.json",
                             spec.precision)  # fmt: skip
        readouts = (1,) if is_reg else (1, 4, 10)
        report["recipes"][name] = {
            "overrides": RECIPES[name], "steps": run["steps"], "final": run["final"],
            "reused_from": run.get("reused_from"),
            "train_seconds": run["train_seconds"], "regressor": is_reg,
            "depth_loss": depth_loss(configs[name]),
            "val": {s: val_scorer(Setting(s)) for s in readouts},
            "test": {s: test_scorer(Setting(s)) for s in readouts},
            "curve": curve(run, run_dir, val, spec, is_reg),
        }  # fmt: skip
        if not is_reg:  # the step-count diagnostic, on val (`bench/x0_error.py`)
            report["recipes"][name]["x0_error_by_t"] = x0_error_by_t(
                load_model(run["final"]), val, precision=spec.precision
            )
        if name == MAIN:
            report["sweep"] = sweep(run["final"], spec, val, test, wide, run_dir)
    report["verdict"] = verdict(report)
    report["intervals"] = intervals(report, out, spec, test)
    return report


def intervals(report: dict[str, Any], out: Path, spec: DepthBudget, test: Scenes
              ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The verdict's two comparisons (`EQUAL_COMPUTE`, `ANY_COMPUTE`) as test AbsRel ratios with
    paired bootstrap intervals over the scenes, and each image's AbsRel of both models (kept
    for the combination over training seeds)."""
    import torch

    from ..metrics.bootstrap import paired_ratio_ci

    v = report["verdict"]
    if not v:
        return {}
    settings = {s.name: s for s in sweep_settings(spec)}

    def per_image(recipe: str, setting: SamplingConfig) -> torch.Tensor:
        final = report["recipes"][recipe]["final"]
        scorer = Scorer(final, test, spec.size, out / recipe / "scores_test.json", spec.precision)
        return torch.tensor(scorer.per_image(setting), dtype=torch.float64)

    reg = per_image(v["regressor"], Setting(1))
    result = {}
    for name, setting in ((EQUAL_COMPUTE, v["equal_compute_setting"]),
                          (ANY_COMPUTE, v["best_setting"])):  # fmt: skip
        mf = per_image(MAIN, settings[setting])
        result[name] = {**paired_ratio_ci(mf, reg, seed=report["seed"]), "setting": setting,
                        "per_image": [mf.tolist(), reg.tolist()]}  # fmt: skip
    return result


def sweep(ckpt: str, spec: DepthBudget, val: Scenes, test: Scenes, wide: dict[str, Scenes],
          run_dir: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Every inference setting on val and test; then the best val setting on the non-square
    scenes (`wide`: val and test), letterboxed and stretched, each framing on both splits."""
    val_scorer = Scorer(ckpt, val, spec.size, run_dir / "scores_val.json", spec.precision)
    test_scorer = Scorer(ckpt, test, spec.size, run_dir / "scores_test.json", spec.precision)
    rows, chosen = [], {}
    for s in bench_bar(sweep_settings(spec), "depth: inference settings", inner=True):
        scores = {"val": val_scorer(s), "test": test_scorer(s)}
        rows.append({**asdict(s), "precision": spec.precision, "setting": s.name,
                     "frame": "square", "evaluations": s.evaluations, **scores})  # fmt: skip
        chosen[s.name] = s
    best = chosen[min(rows, key=lambda r: r["val"]["abs_rel"])["setting"]]
    scorers = {split: Scorer(ckpt, scenes, spec.size, run_dir / f"scores_wide_{split}.json",
                             spec.precision) for split, scenes in wide.items()}  # fmt: skip
    for frame in ("letterbox", "stretch"):
        s = replace(best, frame=frame)
        rows.append({**asdict(s), "precision": spec.precision, "setting": s.name,
                     "evaluations": s.evaluations,
                     **{split: scorer(s) for split, scorer in scorers.items()}})  # fmt: skip
    return rows


def chosen_frame(report: dict[str, Any]) -> str:
    """The framing of non-square inputs with the lower val AbsRel (test never enters)."""
    framed = [r for r in report["sweep"] if r["frame"] != "square"]
    return min(framed, key=lambda r: r["val"]["abs_rel"])["frame"]


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """The targets of issue #11, on the test split, with the best setting chosen on val."""
    square = [r for r in report["sweep"] if r["frame"] == "square"]
    if not square:
        return {}
    best = min(square, key=lambda r: r["val"]["abs_rel"])  # at any inference compute
    # The comparison with the regressor: the same depth loss, the same inference compute (one
    # network evaluation per image, as the regressor), the MF setting chosen on val.
    equal = min((r for r in square if r["evaluations"] == 1), key=lambda r: r["val"]["abs_rel"])
    by_name = {r["setting"]: r for r in square}
    main_loss = report["recipes"][MAIN]["depth_loss"]
    regs = [n for n, r in report["recipes"].items()
            if r["regressor"] and r["depth_loss"] == main_loss]  # fmt: skip
    reg_name = min(regs, key=lambda n: scores_at(report["recipes"][n]["val"], 1)["abs_rel"])
    reg_abs = scores_at(report["recipes"][reg_name]["test"], 1)["abs_rel"]
    mf_best = best["test"]["abs_rel"]
    mf_equal = equal["test"]["abs_rel"]
    four = by_name.get("euler-4", by_name.get("euler-2"))
    singles = {(r["steps"], r["solver"]): r for r in square if r["ensemble"] == 1
               and not r["shift_mu"] and r["t_min"] is None}  # fmt: skip
    ensembles = [r for r in square if r["ensemble"] > 1 and r["reduction"] == "median"]
    ens_gain = [
        r["test"]["abs_rel"] / singles[(r["steps"], r["solver"])]["test"]["abs_rel"] - 1
        for r in ensembles if (r["steps"], r["solver"]) in singles
    ]  # fmt: skip
    rhos = [r["test"]["spearman"] for r in ensembles if "spearman" in r["test"]]
    return {
        "best_setting": best["setting"], "best_test_abs_rel": mf_best,
        "best_evaluations": best["evaluations"],
        "equal_compute_setting": equal["setting"], "equal_compute_test_abs_rel": mf_equal,
        "depth_loss": main_loss, "regressor": reg_name, "regressor_test_abs_rel": reg_abs,
        "ratio_to_regressor": mf_equal / reg_abs,
        "ratio_target_met": mf_equal / reg_abs <= REGRESSOR_RATIO_TARGET,
        "best_ratio_to_regressor": mf_best / reg_abs,
        "four_step_setting": four["setting"],
        "four_step_gap": four["test"]["abs_rel"] / mf_best - 1,
        "four_step_target_met": four["test"]["abs_rel"] / mf_best - 1 <= FOUR_STEP_TARGET,
        "ensemble_gain": ens_gain, "ensemble_helps": bool(ens_gain) and max(ens_gain) < 0,
        "spearman": rhos, "spearman_mean": float(np.mean(rhos)) if rhos else math.nan,
        "frame": chosen_frame(report) if len(report["sweep"]) > len(square) else None,
    }  # fmt: skip


def image_to_depth_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The test image -> depth scores of a report (for the report over seeds): the prior, each
    recipe at one step, and MF at the verdict's two settings, each chosen on val (named by
    their role: the setting may differ between seeds)."""
    from .seeds import PRIOR

    v = report["verdict"]
    rows = {PRIOR: report["prior"]["test"],
            **{f"{name}, 1 step": scores_at(r["test"], 1)
               for name, r in report["recipes"].items()}}  # fmt: skip
    if v:
        square = {r["setting"]: r["test"] for r in report["sweep"] if r["frame"] == "square"}
        rows[f"{MAIN}, 1 evaluation (chosen on val)"] = square[v["equal_compute_setting"]]
        rows[f"{MAIN}, any compute (chosen on val)"] = square[v["best_setting"]]
    return rows


# ---------------------------------------------------------------- helpers (also for the report)


def scores_at(scores: dict[Any, Any], steps: int) -> dict[str, float] | None:
    """Scores by readout steps (int keys in memory, str keys after a JSON round trip)."""
    return scores.get(steps, scores.get(str(steps)))


def load_model(ckpt: str | Path) -> Any:
    """The network of a checkpoint, on the CPU."""
    from ..inference.pipeline import ModalityForcingPipeline

    return ModalityForcingPipeline.from_pretrained(ckpt, device="cpu").model
