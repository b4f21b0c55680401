"""`modality-forcing bench paper`: the paper's claims in miniature, on the procedural world, with
the same code that trains and samples at scale.

Runs (every one `steps` x `batch`, seed fixed, config saved in its folder, reused when unchanged):

| run | what | claims |
|---|---|---|
| `mf` | the project's MF recipe | all |
| `regressor` | the same network and loss as a deterministic image -> depth regressor | 1, 3 |
| `d2i-only` | depth-clean corner only: a dedicated depth -> image model | 1 |
| `joint-only` | both-noised corner only: a dedicated joint generator | 1 |
| `shared-t` | one t for image and depth (earlier joint models); image -> depth by replacement | 2 |
| `t2i-<size>`, `mf-<size>` | T2I pre-training then MF post-training, per model size | 4 |
| `t2i-data<N>`, `mf-data<N>` | the same at the main size with N distinct T2I scenes | 4 |
| `sparse-dense`, `sparse-<spec>`, `sparse-mixed` | dense vs sparsified vs 50/50 depth | 5 |

Claim 5's runs are scored on the full frame and in the LiDAR band (`sparsify.within_lidar_band`).

Claim 6 (schedules) needs no training: joint generation of `mf` at several tilts, and image ->
depth at several step counts, each scored on the val split and on the test split: the best
tilt and step count are chosen on val (`chosen_on_val`) and reported on test. Every other
measurement is on the test split with settings fixed in advance.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..metrics.bootstrap import verdict_word
from .common import REPLACEMENTS, Budget, prior_scores
from .depth import REGRESSOR_RATIO_TARGET, DepthBudget, recipe_config
from .paper_measure import JUDGES, PaperMeasures
from .progress import bench_bar
from .runs import RunPool, publish
from .score_cache import ScoreCache
from .seeds import IN_BAND, PRIOR
from .sparse import SPARSE_TARGET

JUDGE = "regressor"  # the judge of generated images in every verdict
CONSISTENCY = f"consistency_abs_rel[{JUDGE}]"
JOINT_ONLY = "joint-only (separate t, no clean-image training)"
SHARED_T = "shared-t (replacement)"


@dataclass(frozen=True, kw_only=True)
class PaperBudget(Budget):
    """A training budget (`Budget`: `steps` per MF run and every baseline) and what `bench
    paper` trains and scores beyond it."""

    num_eval: int  # test scenes per measurement
    sample_steps: int  # depth -> image, joint and replacement (shared-t) sampling steps
    t2i_steps: int  # T2I pre-training per scaling run
    # Scaling: (name, preset, model overrides) per size, smallest first.
    sizes: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    data_amounts: tuple[int, ...] = ()  # distinct T2I scenes at the main size (0: unlimited)
    sparse: str = "lidar:32"
    sensor_scale: int = 4
    alphas: tuple[float, ...] = (-3.0, 0.0, 3.0, 5.0)
    i2d_steps: tuple[int, ...] = (1, 4, 10, 50)
    # claim 6's image -> depth step sweep at this time shift: the native default, the best at
    # 2, 4 and 10 steps on val for three recipes (docs/depth_steps/README.md)
    i2d_shift: float = 2.0
    depth_steps: int = 1  # MF image -> depth steps (best on val for the L1 default, `bench depth`)


_TINY_SIZES = (
    ("h16", "tiny", {"hidden_size": 16, "num_heads": 2}),
    ("h32", "tiny", {}),
    ("h64", "tiny", {"hidden_size": 64, "num_heads": 4}),
)
_CPU_SIZES = (
    ("xs", "cpu-s", {"hidden_size": 128, "num_single_layers": 3, "num_heads": 2}),
    ("s", "cpu-s", {}),
    ("m", "cpu-m", {}),
)
BUDGETS: dict[str, PaperBudget] = {
    # CI smoke test: every section in well under 3 minutes on 2 cores; numbers mean little.
    "tiny": PaperBudget("tiny", (16, 16), steps=12, batch=8, num_eval=8, sample_steps=4,
                   t2i_steps=6, sizes=_TINY_SIZES, data_amounts=(16, 0), sensor_scale=2,
                   precision="fp32", lr=2e-3, warmup=3, i2d_steps=(1, 4)),
    # About 80 minutes on a 2-core CPU.
    "small": PaperBudget("cpu-s", (32, 32), steps=300, batch=32, num_eval=100, sample_steps=10,
                    t2i_steps=300, sizes=_CPU_SIZES, data_amounts=(256, 0)),
    # 4x small's training (1,200 x 32 per run): the smallest budget at which the MF recipe
    # reached image -> depth skill >= 0.3 over the mean-map prior on val (0.12 / 0.26 / 0.34 /
    # 0.41 after 300 / 600 / 900 / 1,200 steps, cpu-s 32x32; issue 20's rule). About 5 hours per
    # seed on a 2-core CPU; `--seeds 0 1 2` for the verdicts.
    "medium": PaperBudget("cpu-s", (32, 32), steps=1200, batch=32, num_eval=100,
                     sample_steps=10, t2i_steps=1200, sizes=_CPU_SIZES, data_amounts=(256, 0)),
}  # fmt: skip


def _depth_budget(b: PaperBudget) -> DepthBudget:
    return DepthBudget(**asdict(b.compute()), num_val=0, num_test=b.num_eval, curve_points=1)


def run_configs(b: PaperBudget, out: Path, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every run's training config (dicts for `resolve_train_config`), in training order."""
    from ..config import DataConfig
    from .sparse import SparseBudget
    from .sparse import run_config as sparse_config

    db = _depth_budget(b)
    runs = {
        "mf": recipe_config("mf", db, out / "mf", seed),
        # the same network and depth loss as `mf`, trained as a deterministic regressor
        "regressor": {**recipe_config("mf", db, out / "regressor", seed),
                      "forcing": {"policy": "regression"}},
    }  # fmt: skip
    corner = {"p_image_clean": 0.0, "p_depth_clean": 0.0, "p_both_noised": 0.0,
              "p_depth_absent": 0.0, "p_depth_readout": 0.0}  # fmt: skip
    for name, only in (("d2i-only", "p_depth_clean"), ("joint-only", "p_both_noised")):
        runs[name] = {**recipe_config("mf", db, out / name, seed),
                      "forcing": {**corner, only: 1.0}}  # fmt: skip
    runs["shared-t"] = {**recipe_config("mf", db, out / "shared-t", seed),
                        "forcing": {"policy": "shared"}}  # fmt: skip
    for name, preset, model in b.sizes:
        _pretrain_then_mf(runs, b, out, seed, name, preset, model, num_scenes=None)
    for n in b.data_amounts:
        if n:  # 0 (unlimited) at the main size is the size sweep's main entry
            _pretrain_then_mf(runs, b, out, seed, f"data{n}", b.preset, {}, num_scenes=n)
    sb = SparseBudget(**asdict(b.compute()), num_eval=b.num_eval, sample_steps=b.sample_steps,
                      sensor_scale=b.sensor_scale)  # fmt: skip
    fill = DataConfig().depth_fill  # the project's default (chosen on val: docs/sparse_depth.md)
    for name, setting in (("dense", "dense"), (b.sparse, b.sparse), ("mixed", f"mixed:{b.sparse}")):
        key = SPARSE_MIXED if name == "mixed" else f"sparse-{name.replace(':', '_')}"
        runs[key] = sparse_config(setting, fill, sb, out / key, seed)
    return runs


def _pretrain_then_mf(
    runs: dict[str, Any], b: PaperBudget, out: Path, seed: int, name: str, preset: str,
    model: dict[str, Any], num_scenes: int | None,
) -> None:  # fmt: skip
    height, width = b.size
    t2i_dir = out / f"t2i-{name}"
    runs[f"t2i-{name}"] = b.train_config(
        t2i_dir, seed, preset=preset, model=model, stage="t2i", max_steps=b.t2i_steps,
        ckpt_every=b.t2i_steps, data={"height": height, "width": width, "num_scenes": num_scenes},
    )  # fmt: skip
    runs[f"mf-{name}"] = b.train_config(
        out / f"mf-{name}", seed, preset=preset, model=model, ckpt_every=b.steps,
        init_from=str(t2i_dir / "final"),
    )  # fmt: skip


CLAIMS = ("1", "2", "3", "4", "5", "6")


def run_paper_benchmark(
    out_dir: str | Path = "bench_out/paper", budget: str | PaperBudget = "small", seed: int = 0,
    precision: str | None = None, device: str | None = None,
    reuse_runs: list[str] | tuple[str, ...] = (), scores_dir: str | Path | None = None,
    claims: list[str] | tuple[str, ...] = CLAIMS,
) -> dict[str, Any]:  # fmt: skip
    """Train the runs the claims need, measure them, write paper.json, REPORT.md and plots.
    `precision` and `device` override the budget's; `reuse_runs`: folders of other benchmarks
    whose finished runs of the same training config are used instead (`runs.find_finished`);
    `scores_dir` (default OUT/scores): where every measurement is stored, and found again by
    a later call (`score_cache`): a run whose measurements are all there is not trained.
    `claims`: which of the six to measure (claims 4 and 5 train 11 of the 16 runs, so the
    others can be finished over every seed first; a later call with all of them finds what
    this one stored)."""
    from .paper_report import markdown, plot

    if isinstance(budget, str) and budget not in BUDGETS:
        raise ValueError(f"unknown budget '{budget}'; choose from {list(BUDGETS)}")
    want = [c for c in CLAIMS if c in set(map(str, claims))]
    if not want or len(want) != len(set(map(str, claims))):
        raise ValueError(f"--claims must name claims among {list(CLAIMS)}, got {list(claims)}")
    b = BUDGETS[budget] if isinstance(budget, str) else budget
    b = replace(b, precision=precision or b.precision, device=device or b.device)
    out = Path(out_dir)
    configs = run_configs(b, out, seed)
    pool = RunPool(configs, reuse_runs)
    cache = ScoreCache(out / "scores" if scores_dir is None else scores_dir, pool)
    m = PaperMeasures(b, pool, cache, seed)
    report: dict[str, Any] = {"budget": asdict(b), "seed": seed, "claims": want}
    tuned: dict[str, Any] = {}
    bar = bench_bar(None, "paper: claims", total=len(want))
    # Claims in the order of the runs they train (judges first), so a sitting that stops
    # part-way has stored every measurement of the runs it trained.
    if "1" in want or "3" in want:
        # 1 and 3. Image -> depth of MF and of a dedicated regressor of the same size and
        # compute (one network evaluation per image each).
        own = {name: m.own_image_to_depth(name) for name in JUDGES}
        i2d = {
            "mf": own["mf"]["scores"],
            "regressor (dedicated)": own["regressor"]["scores"],
            PRIOR: {"least_squares": prior_scores(b.size, test=m.scenes("test"))["test"]},
        }
        report["permutations"] = {"image_to_depth": i2d}
        report["regressor"] = regressor_comparison(i2d)
        bar.update(int("3" in want))
    if "1" in want:
        # 1. One model, every permutation, against dedicated single-task models.
        report["permutations"] |= {
            "depth_to_image": {name: m.depth_to_image(name) for name in ("mf", "d2i-only")},
            "joint": {name: m.joint(name) for name in ("mf", "joint-only")},
        }
        bar.update()
    if "6" in want:
        # 6. Schedules: tilt and step count chosen on val, reported on test.
        report["schedules_val"] = _schedules(m, "val")
        report["schedules"] = _schedules(m, "test")
        bar.update()
    if "2" in want:
        # 2. Separate noise levels vs one shared t (image -> depth by replacement): each
        # model's sampler chosen on val over the same grid, the baseline's also over its
        # noise handling. `joint-only` has separate noise levels but was never trained with a
        # clean image: it separates "separate noise levels" from "dedicated training".
        tuned = {
            "mf": m.tuned_on_val("mf", ("image_to_depth",)),
            JOINT_ONLY: m.tuned_on_val("joint-only", ("image_to_depth",)),
            SHARED_T: m.tuned_on_val("shared-t", REPLACEMENTS),
        }  # fmt: skip
        report["shared_t"] = {name: t["test"]["scores"] for name, t in tuned.items()}
        report["shared_t_sweep"] = {name: {k: t[k] for k in ("val", "chosen")}
                                    for name, t in tuned.items()}  # fmt: skip
        bar.update()
    if "4" in want:
        # 4. Scaling with model size and with T2I data, with the prior scored the same way
        # (skill).
        report["scaling"] = {
            "size": [_scaling_row(m, name) for name, _, _ in b.sizes],
            "data": [_scaling_row(m, f"data{k}" if k else _main_size(b), k)
                     for k in b.data_amounts],
            "prior": prior_scores(b.size, test=m.scenes("test"))["test"],
        }  # fmt: skip
        bar.update()
    if "5" in want:
        # 5. Sparse depth: image -> depth on the full frame, and in the LiDAR's elevation band
        # (the pixels a LiDAR-trained model was ever supervised on, like KITTI's crops).
        # Each with the mean training depth map scored the same way (skill).
        sparse = [key for key in configs if key.startswith("sparse-")]
        prior = prior_scores(b.size, test=m.scenes("test"),
                             band=m.scenes("test", lidar_band=True))  # fmt: skip
        full = {key: m.own_image_to_depth(key)["scores"]["least_squares"] for key in sparse}
        band = {key: _in_band(m, key)["scores"]["least_squares"] for key in sparse}
        report["sparse"] = {PRIOR: prior["test"], **full}
        report["sparse_in_band"] = {PRIOR: prior["band"], **band}
        bar.update()
    bar.close()
    report["runs"] = {name: {**m.run_info(name), "config": str(Path(configs[name]["out_dir"]))}
                      for name in m.runs_used()}  # fmt: skip
    report["intervals"] = _intervals(_comparisons(b, m, report, tuned), seed)
    report["verdicts"] = verdicts(report)
    report["scores"] = cache.summary()
    publish(report, out, "paper.json", markdown, plot)
    return report


# Claims 1 and 3 ask that MF does as well as a dedicated model: within 10% of its AbsRel.
CLAIM_TARGETS = {"1": REGRESSOR_RATIO_TARGET, "3": REGRESSOR_RATIO_TARGET}
# Claim 2 at the paper's size: there separate noise levels cut AbsRel by 57% (ratio ~0.43); the
# same per-image AbsRel as claim 2's first comparison, asked for at least half.
PAPER_SIZE_2 = "2: mf (tuned) / shared-t, at the paper's size"
COMPARISON_TARGETS = {PAPER_SIZE_2: 0.5}


def claim_target(comparison: str) -> float:
    """The AbsRel ratio below which a comparison (`"<claim>: a / b ..."`) supports its claim.
    Claim 5 keeps `bench sparse`'s targets (issue #6): a sparse sensor alone within +15% of
    dense, the 50/50 mixture at most dense."""
    claim = comparison.split(":")[0]
    if claim == "5" and not comparison.startswith(f"5: {SPARSE_MIXED} "):
        return 1 + SPARSE_TARGET
    return COMPARISON_TARGETS.get(comparison, CLAIM_TARGETS.get(claim, 1.0))


PerImage = list[float]


def _comparisons(
    b: PaperBudget, m: PaperMeasures, report: dict[str, Any], tuned: dict[str, Any]
) -> list[tuple[str, PerImage, PerImage]]:
    """Every comparison a verdict rests on, fixed before anything is scored, for the claims
    the report measured: (name, the first model's least-squares AbsRel of each test image, the
    second's). Image -> depth, depth -> image cycles and joint consistency (both judged by the
    regressor), tilts and step counts."""
    tuned_test = {"mf (tuned)": tuned.get("mf"), "shared-t": tuned.get(SHARED_T),
                  "joint-only (tuned)": tuned.get(JOINT_ONLY)}  # fmt: skip

    def i2d(name: str) -> PerImage:
        if name in tuned_test:
            return tuned_test[name]["test"]["per_image"]
        return m.own_image_to_depth(name)["per_image"]

    out = []
    s1 = report.get("permutations", {})
    if "depth_to_image" in s1:
        cycle = {k: v["per_image"][f"cycle_abs_rel[{JUDGE}]"]
                 for k, v in s1["depth_to_image"].items()}  # fmt: skip
        joint = {k: v["per_image"][CONSISTENCY] for k, v in s1["joint"].items()}
        out += [
            ("1: mf / d2i-only (depth -> image cycle)", cycle["mf"], cycle["d2i-only"]),
            ("1: mf / joint-only (joint consistency)", joint["mf"], joint["joint-only"]),
        ]
    pairs = []
    if "shared_t" in report:
        pairs += [("2", "mf (tuned)", "shared-t"), ("2", "joint-only (tuned)", "shared-t"),
                  ("2", "mf (tuned)", "joint-only (tuned)")]  # fmt: skip
    if "regressor" in report:
        pairs.append(("3", "mf", "regressor"))
    if "scaling" in report:
        sizes = [f"mf-{name}" for name, _, _ in b.sizes]
        main = f"mf-{_main_size(b)}"
        pairs += [*(("4", big, small) for small, big in itertools.pairwise(sizes)),
                  *(("4", main, f"mf-data{n}") for n in b.data_amounts if n)]  # fmt: skip
    sparse = [key for key in report.get("sparse", {}) if key not in ("sparse-dense", PRIOR)]
    pairs += [("5", key, "sparse-dense") for key in sparse]
    out += [(f"{claim}: {a} / {c}", i2d(a), i2d(c)) for claim, a, c in pairs]
    if "sparse_in_band" in report:
        band = {key: _in_band(m, key)["per_image"] for key in [*sparse, "sparse-dense"]}
        out += [(f"5: {key} / sparse-dense, {IN_BAND}", band[key], band["sparse-dense"])
                for key in sparse]  # fmt: skip
    if "shared_t" in report:
        out.append((PAPER_SIZE_2, i2d("mf (tuned)"), i2d("shared-t")))
    if "schedules" in report:
        test = report["schedules"]
        tilt, few, many = max(b.alphas), min(b.i2d_steps), max(b.i2d_steps)

        def steps(k: int) -> PerImage:  # claim 6's measurement (`_schedules`), read again
            return m.image_to_depth("mf", k, b.i2d_shift,
                                    protocols=("least_squares",))["per_image"]  # fmt: skip

        out += [(f"6: log2_alpha {tilt:g} / 0 (joint consistency)",
                 test["joint"][tilt]["per_image"][CONSISTENCY],
                 test["joint"][0.0]["per_image"][CONSISTENCY]),
                (f"6: {few} / {many} image -> depth steps", steps(few), steps(many))]  # fmt: skip
    return sorted(out, key=lambda c: c[0].split(":")[0])  # by claim, in order within one


def _intervals(comparisons: list[tuple[str, PerImage, PerImage]], seed: int
               ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each comparison's AbsRel ratio with a paired bootstrap interval over the test scenes: is
    a difference larger than the choice of test scenes explains?"""
    import torch

    from ..metrics.bootstrap import paired_ratio_ci

    out = {}
    for name, a, c in comparisons:
        x, y = (torch.tensor(v, dtype=torch.float64) for v in (a, c))
        out[name] = {**paired_ratio_ci(x, y, seed=seed), "target": claim_target(name),
                     "per_image": [a, c]}  # fmt: skip
    return out


SPARSE_MIXED = "sparse-mixed"  # the run trained on a 50/50 mix of dense and sparse depth


def _in_band(m: PaperMeasures, run: str) -> dict[str, Any]:
    """A sparse-depth run's image -> depth on test, only in the LiDAR's elevation band."""
    return m.own_image_to_depth(run, ("least_squares",), lidar_band=True)


def _main_size(b: PaperBudget) -> str:
    """The size-sweep entry trained on the main preset without model overrides."""
    return next(name for name, preset, model in b.sizes if preset == b.preset and not model)


def _scaling_row(m: PaperMeasures, name: str, num_scenes: int | None = None) -> dict[str, Any]:
    run = f"mf-{name}"
    scores = m.own_image_to_depth(run)["scores"]["least_squares"]
    return {"name": name, "params": m.run_info(run)["params"], "t2i_scenes": num_scenes,
            **scores}  # fmt: skip


def _schedules(m: PaperMeasures, split: str) -> dict[str, Any]:
    """Claim 6 on one split: joint consistency per tilt (judged by the regressor), image ->
    depth per step count at the budget's shift."""
    b = m.budget
    return {
        "joint": {a: m.joint("mf", split, a, ("regressor",)) for a in b.alphas},
        "image_to_depth_steps": {
            k: m.image_to_depth("mf", k, b.i2d_shift, split=split,
                                protocols=("least_squares",))["scores"]["least_squares"]
            for k in b.i2d_steps},
    }  # fmt: skip


def image_to_depth_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every test image -> depth score (least squares) of a report, by the name its tables
    use: claim 1's models and the prior, claim 2's tuned samplers, the scaling and sparse runs,
    claim 6's step counts (for the report over seeds); claim 5's also in the LiDAR band."""
    sc, shift = report.get("scaling", {}), report["budget"].get("i2d_shift", 0.0)
    i2d = report.get("permutations", {}).get("image_to_depth", {})
    steps = report.get("schedules", {}).get("image_to_depth_steps", {})
    return {
        **({PRIOR: sc["prior"]} if "prior" in sc else {}),  # (claim 4's: the same as claim 1's)
        **{k: v["least_squares"] for k, v in i2d.items()},
        **{f"{k}, tuned on val": v["least_squares"]
           for k, v in report.get("shared_t", {}).items()},
        **{f"mf-{r['name']}": r for r in sc.get("size", []) + sc.get("data", [])},
        **report.get("sparse", {}),
        **{f"{k}, {IN_BAND}": v for k, v in report.get("sparse_in_band", {}).items()},
        **{f"mf, {k} steps at shift {shift:g}": v for k, v in steps.items()},
    }  # fmt: skip


def regressor_comparison(image_to_depth_scores: dict[str, Any]) -> dict[str, float]:
    """Claim 3's numbers from claim 1's image -> depth scores: MF's and the regressor's
    least-squares AbsRel and their ratio (both one network evaluation per image)."""
    mf = image_to_depth_scores["mf"]["least_squares"]["abs_rel"]
    reg = image_to_depth_scores["regressor (dedicated)"]["least_squares"]["abs_rel"]
    return {"mf": mf, "regressor": reg, "ratio": mf / reg}


def chosen_on_val(report: dict[str, Any]) -> dict[str, Any]:
    """Claim 6's choices, made on the val split only: the tilt with the lowest joint
    consistency AbsRel and the step count with the lowest image -> depth AbsRel. The test
    scores never enter (a test asserts it)."""
    val = report["schedules_val"]
    return {
        "alpha": min(val["joint"], key=lambda a: val["joint"][a][CONSISTENCY]),
        "steps": min(val["image_to_depth_steps"],
                     key=lambda k: val["image_to_depth_steps"][k]["abs_rel"]),
    }  # fmt: skip


def verdicts(report: dict[str, Any]) -> dict[str, Any]:
    """One honest line of evidence per claim the report measured (the report words them)."""
    v: dict[str, Any] = {}
    s1 = report.get("permutations")
    if s1:
        i2d = {k: r["least_squares"]["abs_rel"] for k, r in s1["image_to_depth"].items()}
        obj = {k: r["least_squares"].get("object_abs_rel", math.nan)
               for k, r in s1["image_to_depth"].items()}  # fmt: skip
        v["1_mf_vs_dedicated"] = {"image_to_depth": i2d["mf"] / i2d["regressor (dedicated)"]}
        if "depth_to_image" in s1:
            d2i = {k: r[f"cycle_abs_rel[{JUDGE}]"] for k, r in s1["depth_to_image"].items()}
            jnt = {k: r[CONSISTENCY] for k, r in s1["joint"].items()}
            v["1_mf_vs_dedicated"] |= {
                "depth_to_image_cycle": d2i["mf"] / d2i["d2i-only"],
                "joint_consistency": jnt["mf"] / jnt["joint-only"],
            }
        v["1_skill"] = {k: 1 - i2d[k] / i2d[PRIOR] for k in i2d if k != PRIOR}
        v["1_object_skill"] = {k: 1 - obj[k] / obj[PRIOR] for k in obj if k != PRIOR}
        v["1_beats_mean_depth"] = _lt(i2d["mf"], i2d[PRIOR])
    if "shared_t" in report:
        shared = report["shared_t"]
        mf_abs = shared["mf"]["least_squares"]["abs_rel"]
        sh_abs = shared[SHARED_T]["least_squares"]["abs_rel"]
        v["2_mf_over_shared"] = mf_abs / sh_abs
        v["2_verdict"] = {"better": _word(report, "2: mf (tuned) / shared-t"),
                          "paper_size": _word(report, PAPER_SIZE_2)}  # fmt: skip
    if "regressor" in report:
        v["3_ratio_to_regressor"] = report["regressor"]["ratio"]
        v["3_verdict"] = _word(report, "3: mf / regressor")
    if "scaling" in report:
        scaling = {k: ci for k, ci in report.get("intervals", {}).items() if k.startswith("4:")}
        for key, rows, cis in (
            ("4_bigger_is_better", report["scaling"]["size"],
             [ci for k, ci in scaling.items() if "-data" not in k]),
            ("4_more_data_is_better", report["scaling"]["data"],
             [ci for k, ci in scaling.items() if "-data" in k]),
        ):  # fmt: skip
            v[key] = _trend([r["abs_rel"] for r in rows], cis)
    for key, where in (("sparse", ""), ("sparse_in_band", "_in_band")):
        if key in report:  # each sparse run's AbsRel relative to dense
            rows = report[key]
            dense = rows.get("sparse-dense", {}).get("abs_rel", math.nan)
            v[f"5_sparse_vs_dense{where}"] = {k: r["abs_rel"] / dense - 1 for k, r in rows.items()
                                              if k not in ("sparse-dense", PRIOR)}  # fmt: skip
    if "schedules_val" in report:
        chosen = chosen_on_val(report)
        v["6_best_alpha"], v["6_best_steps"] = chosen["alpha"], chosen["steps"]
    return v


def _word(report: dict[str, Any], comparison: str) -> str:
    """A comparison's verdict as its paired interval over this seed's test scenes supports it."""
    ci = report["intervals"][comparison]
    return verdict_word(ci, ci["target"])


def _lt(a: float, b: float) -> bool:
    """a < b, where a NaN b (a degenerate, e.g. constant, prediction) counts as worst."""
    return not math.isnan(a) and (math.isnan(b) or a < b)


def _trend(values: list[float], intervals: list[dict[str, float]]) -> str:
    """`holds`: lower at every step along the list and every step's paired interval lies below
    1; `not resolved`: lower at every step, but some interval includes 1; else `does not hold`.
    """
    if not all(b < a for a, b in itertools.pairwise(values)):
        return "does not hold"
    return "holds" if all(ci["high"] < 1 for ci in intervals) else "not resolved"
