"""`modality-forcing bench flagship`: which recipe learns the most per unit of compute here?

Every candidate recipe trains for the same wall-clock budget on this machine (optionally a share
of it as text -> image pre-training first), checkpoints every `eval_minutes`, and each checkpoint
is scored on **val** scenes with every fidelity metric (`bench/fidelity.py`). The curves (quality
vs minutes, and vs training samples) and the choice of the flagship recipe come from val only;
`progress` folds the targets of the flagship (image -> depth skill 0.5, depth -> image region
colour 90% floor / 60% objects, text -> image attributes 70% of real renders) into one number,
the mean fraction of each target reached (capped at 1).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import read_yaml_mapping
from .fidelity import FidelityScenes, load_fidelity_scenes, score_fidelity
from .progress import bench_bar
from .runs import publish, train_cached, write_json

TARGETS = {  # metric path -> target (the flagship issue's, on the test split)
    "image_to_depth.skill": 0.5,
    "depth_to_image.floor.accuracy": 0.9,
    "depth_to_image.objects.accuracy": 0.6,
    "joint.relative": 0.7,
}


@dataclass(frozen=True)
class Recipe:
    """One way to spend the budget: model, data size, batch, learning rate, stage split."""

    preset: str = "cpu-s"
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides
    size: tuple[int, int] = (32, 32)
    batch: int = 64
    lr: float = 4e-4
    t2i_share: float = 0.3  # of the minutes, text -> image pre-training first (0: MF only)
    extra: dict[str, Any] = field(default_factory=dict)  # more TrainConfig overrides (MF stage)
    note: str = ""


RECIPES: dict[str, Recipe] = {
    "s": Recipe(note="the shipped checkpoint's recipe: cpu-s, 32x32, T2I 30% then MF"),
    "s-mf": Recipe(t2i_share=0.0, note="no T2I stage: MF from scratch the whole time"),
    "s-lr1e-3": Recipe(lr=1e-3, note="2.5x the learning rate"),
    "s-b32": Recipe(batch=32, lr=3e-4, note="half the batch, twice the steps"),
    "xs": Recipe(
        model={"hidden_size": 192, "num_heads": 3},
        lr=6e-4,
        note="narrower (hidden 192): more samples per minute",
    ),
    "m": Recipe(preset="cpu-m", lr=3e-4, note="cpu-m (hidden 384, 8 blocks): fewer samples"),
    "s-b16": Recipe(batch=16, note="batch 16: four times the steps of batch 64"),
    "s-b16-x0": Recipe(
        batch=16, model={"image_prediction": "x0"}, note="batch 16, the image head predicts x0"
    ),
    # configs/flagship-{t2i,mf}.yaml at any budget (35 of 110 minutes text -> image there)
    "flagship": Recipe(
        batch=16,
        t2i_share=35 / 110,
        model={"image_prediction": "x0", "text_pooled": True, "refine_width": 32},
        note="batch 16, image x0, pooled caption in adaLN, pixel refiner",
    ),
    # smoke test (CI): seconds, the numbers mean nothing
    "tiny": Recipe(
        preset="tiny", size=(16, 16), batch=4, lr=2e-3, t2i_share=0.5, note="smoke test"
    ),
}
DEFAULT_RECIPES = ("s", "s-mf", "s-lr1e-3", "xs")


def stage_configs(
    name: str, recipe: Recipe, minutes: float, eval_minutes: float, out: Path, seed: int = 0,
    precision: str = "auto", device: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Training configs of a recipe's stages (T2I then MF, or MF alone) within `minutes`."""
    common = {
        "preset": recipe.preset, "model": dict(recipe.model), "batch_size": recipe.batch,
        "max_steps": 10**9, "precision": precision, "device": device, "seed": seed,
        "sample_every": 0, "log_every": 10, "ckpt_every": 10**9, "keep_checkpoints": 0,
        "ckpt_every_minutes": eval_minutes,
        "data": {"height": recipe.size[0], "width": recipe.size[1]},
        # constant after warmup: a time budget has no step count for a cosine to end at
        "optim": {"lr": recipe.lr, "warmup_steps": 50, "schedule": "constant"},
    }  # fmt: skip
    stages = []
    t2i_minutes = minutes * recipe.t2i_share
    if t2i_minutes > 0:
        stages.append({**common, "stage": "t2i", "max_minutes": t2i_minutes,
                       "out_dir": str(out / name / "t2i")})  # fmt: skip
    mf = {**common, **recipe.extra, "stage": "mf", "max_minutes": minutes - t2i_minutes,
          "out_dir": str(out / name / "mf")}  # fmt: skip
    if stages:
        mf["init_from"] = str(Path(stages[0]["out_dir"]) / "final")
    return [*stages, mf]


def training_seconds(run_dir: Path) -> float:
    """A run's training time so far (kept over resumes), on the clock its checkpoints carry: the
    latest checkpoint's `seconds` (written at save time, after the last log line, so the next
    stage's points never start before this stage's last one); without a checkpoint, the last
    logged `elapsed_s`."""
    pointer = run_dir / "checkpoints" / "latest"
    if pointer.is_file():
        trainer = run_dir / "checkpoints" / pointer.read_text().split()[0] / "trainer.json"
        if trainer.is_file():
            return float(json.loads(trainer.read_text())["train_state"]["seconds"])
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["elapsed_s"]) if lines else 0.0


def get_path(report: dict[str, Any], path: str) -> float:
    """A nested value by dotted path (NaN when absent)."""
    node: Any = report
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return math.nan
        node = node[part]
    return float(node)


def progress(scores: dict[str, Any]) -> float:
    """Mean over TARGETS of min(1, value / target); a missing mode counts as 0."""
    parts = []
    for path, target in TARGETS.items():
        value = get_path(scores, path)
        parts.append(0.0 if not math.isfinite(value) else min(1.0, max(0.0, value) / target))
    return sum(parts) / len(parts)


def score_checkpoints(
    run_dir: Path, scenes: FidelityScenes, stage: str, offset_seconds: float, precision: str,
    after: int = -1,
) -> list[dict[str, Any]]:  # fmt: skip
    """Fidelity of every kept checkpoint of one stage past step `after`, with its cumulative
    training time and samples. Scores are cached in `checkpoints/fidelity/`, never inside a
    checkpoint directory: its manifest must list exactly its files for the run to resume."""
    from ..inference.pipeline import ModalityForcingPipeline

    modes = ("marginal",) if stage == "t2i" else ("image_to_depth", "depth_to_image", "joint",
                                                  "marginal")  # fmt: skip
    batch = read_yaml_mapping(run_dir / "config.yaml", "run config")["batch_size"]
    points = []
    ckpts = sorted((run_dir / "checkpoints").glob("step_???????"))
    for ckpt in bench_bar(ckpts, f"flagship: score {run_dir.name} checkpoints", inner=True):
        info = json.loads((ckpt / "trainer.json").read_text())["train_state"]
        if info["step"] <= after:
            continue
        cache, scores = cached_scores(run_dir, ckpt.name, scenes)
        if scores is None:
            pipe = ModalityForcingPipeline.from_pretrained(ckpt, torch_dtype=precision,
                                                           device="cpu")  # fmt: skip
            scores = score_fidelity(pipe, scenes, modes=modes)
            write_json(cache, scores)
        points.append({
            "stage": stage, "step": info["step"],
            "minutes": (offset_seconds + info["seconds"]) / 60,
            "samples": info["step"] * batch,
            "progress": progress(scores), "scores": scores,
        })  # fmt: skip
    return points


def cached_scores(run_dir: Path, ckpt: str, scenes: FidelityScenes
                  ) -> tuple[Path, dict[str, Any] | None]:  # fmt: skip
    """Where a checkpoint's scores on `scenes` are cached, and the scores if they are: one file
    per split and scene count (`step_N_val_64.json`). A file of the older naming without the
    count (`step_N_val.json`) is used only if it holds the same number of scenes."""
    folder = run_dir / "checkpoints" / "fidelity"
    n = len(scenes.captions)
    cache = folder / f"{ckpt}_{scenes.split}_{n}.json"
    for path in (cache, folder / f"{ckpt}_{scenes.split}.json"):
        if path.is_file():
            scores = json.loads(path.read_text())
            if scores.get("num_scenes") == n:
                return cache, scores
    return cache, None


def run_flagship_benchmark(
    out_dir: str | Path = "bench_out/flagship", recipes: list[str] | None = None,
    minutes: float = 20.0, eval_minutes: float = 5.0, num_val: int = 64, seed: int = 0,
    precision: str | None = None, device: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train every recipe for `minutes`, score its checkpoints on val, choose the best; write
    flagship.json, REPORT.md and curves into `out_dir`. Finished runs and scores are reused."""
    names = list(recipes or DEFAULT_RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipe(s) {unknown}; choose from {sorted(RECIPES)}")
    out = Path(out_dir)
    report: dict[str, Any] = {"minutes": minutes, "eval_minutes": eval_minutes,
                              "num_val": num_val, "seed": seed, "targets": TARGETS,
                              "recipes": {}}  # fmt: skip
    scenes_by_size: dict[tuple[int, int], FidelityScenes] = {}
    for name in bench_bar(names, "flagship: recipes"):
        recipe = RECIPES[name]
        configs = stage_configs(name, recipe, minutes, eval_minutes, out, seed,
                                precision or "auto", device)  # fmt: skip
        if recipe.size not in scenes_by_size:
            scenes_by_size[recipe.size] = load_fidelity_scenes("val", num_val, recipe.size)
        points, offset = [], 0.0
        for config in configs:
            run = train_cached(config)
            points += score_checkpoints(Path(config["out_dir"]), scenes_by_size[recipe.size],
                                        config["stage"], offset, precision or "auto")  # fmt: skip
            offset += training_seconds(Path(run["final"]).parent)
        report["recipes"][name] = {"recipe": asdict(recipe), "curve": points,
                                   "final": points[-1] if points else None}  # fmt: skip
        write_json(out / "flagship.json", report)  # partial results survive an interruption
    finals = {n: r["final"]["progress"] for n, r in report["recipes"].items() if r["final"]}
    report["chosen"] = max(finals, key=finals.get) if finals else None
    publish(report, out, "flagship.json", markdown, plot)
    return report


def run_stages(run: Path) -> list[str]:
    """The stages of a flagship run in order: `t2i`, `mf`, then continuations `mf2`, `mf3`, ...
    (each forked from the last checkpoint of the one before, `scripts/flagship_cpu.sh`)."""
    more = sorted((int(m.group(1)), p.name) for p in run.glob("mf*")
                  if (m := re.fullmatch(r"mf(\d+)", p.name)))  # fmt: skip
    names = ["t2i", "mf", *(name for _, name in more)]
    return [s for s in names if (run / s / "checkpoints").is_dir()]


def _run_curve(run: Path, num_val: int, precision: str) -> tuple[list[dict[str, Any]], str]:
    """The scored checkpoints of one run, in order, and a one-line note of its settings."""
    stages = run_stages(run)
    if not stages:
        raise FileNotFoundError(f"'{run}' has no t2i/ or mf/ run with checkpoints")
    cfg = read_yaml_mapping(run / stages[-1] / "config.yaml", "run config")
    scenes = load_fidelity_scenes("val", num_val, (cfg["data"]["height"], cfg["data"]["width"]))
    points: list[dict[str, Any]] = []
    offset = 0.0
    for stage in stages:
        last = max((p["step"] for p in points if p["stage"] != "t2i"), default=-1)
        skip = last if stage not in ("t2i", "mf") else -1
        points += score_checkpoints(run / stage, scenes, stage, offset, precision, after=skip)
        if stage == "t2i":  # the MF stages count on from the text -> image minutes
            offset += training_seconds(run / stage)
    f, opt = cfg["forcing"], cfg["optim"]
    note = (f"{run}: {', '.join(stages)}; batch {cfg['batch_size']}; last stage: object weight "
            f"{cfg['loss'].get('object_weight', 1.0):g}, forcing corners image-clean / "
            f"depth-clean / both-noised {f['p_image_clean']:g} / {f['p_depth_clean']:g} / "
            f"{f['p_both_noised']:g}, lr {opt['lr']:g} {opt['schedule']}")  # fmt: skip
    return points, note


def score_run(
    run_dir: str | Path | list[str | Path], out_dir: str | Path, num_val: int = 64,
    precision: str = "auto", name: str = "flagship",
) -> dict[str, Any]:  # fmt: skip
    """Score every checkpoint of a finished or running flagship run (`RUN/t2i`, `RUN/mf` and its
    continuations `RUN/mf2`, ..., as `scripts/flagship_cpu.sh` writes) on val: the flagship's
    quality-vs-minutes curve, written as flagship.json, REPORT.md and curves.png into `out_dir`.
    Scores are cached per checkpoint. A continuation carries the training time and steps of the
    stage it was forked from, so its points follow on; its copy of the fork point is not repeated.

    Several runs (e.g. the arms of an A/B forked from one checkpoint) are scored side by side,
    each named by its folder, and the one whose last checkpoint has the highest progress is
    reported as chosen.
    """
    runs = [Path(r) for r in (run_dir if isinstance(run_dir, list) else [run_dir])]
    names = [name] if len(runs) == 1 else [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs to compare need distinct folder names, got {names}")
    recipes = {}
    for label, run in bench_bar(list(zip(names, runs, strict=True)), "flagship: runs"):
        points, note = _run_curve(run, num_val, precision)
        recipes[label] = {"recipe": {"note": note}, "curve": points,
                          "final": points[-1] if points else None}  # fmt: skip
    finals = {n: r["final"]["progress"] for n, r in recipes.items() if r["final"]}
    report = {"minutes": max((r["final"] or {}).get("minutes", 0.0) for r in recipes.values()),
              "eval_minutes": None, "num_val": num_val, "targets": TARGETS,
              "run": [str(r) for r in runs] if len(runs) > 1 else str(runs[0]),
              "recipes": recipes,
              "chosen": max(finals, key=finals.__getitem__) if finals else None}  # fmt: skip
    publish(report, Path(out_dir), "flagship.json", markdown, plot)
    return report


ROWS = (  # (label, dotted path, format) of the report table
    ("progress", "progress", "{:.3f}"),
    ("i->d AbsRel", "scores.image_to_depth.abs_rel", "{:.3f}"),
    ("i->d skill", "scores.image_to_depth.skill", "{:.3f}"),
    ("i->d object skill", "scores.image_to_depth.object_skill", "{:.3f}"),
    ("d->i floor", "scores.depth_to_image.floor.accuracy", "{:.0%}"),
    ("d->i objects", "scores.depth_to_image.objects.accuracy", "{:.0%}"),
    ("t->i attributes (joint)", "scores.joint.attributes.mean", "{:.3f}"),
    ("t->i vs real (joint)", "scores.joint.relative", "{:.0%}"),
    ("t->i vs real (marginal)", "scores.marginal.relative", "{:.0%}"),
    ("probe FD (joint)", "scores.joint.frechet", "{:.2f}"),
    ("joint consistency", "scores.joint.consistency_abs_rel", "{:.3f}"),
)


def markdown(report: dict[str, Any]) -> str:
    """The final val point of every recipe, and the choice."""
    names = list(report["recipes"])
    every = (
        f"every {report['eval_minutes']:g} min"
        if report.get("eval_minutes")
        else "at each checkpoint"
    )
    lines = [
        f"# Flagship recipe search: {report['minutes']:g} min per recipe, scored {every} on "
        f"{report['num_val']} val scenes",
        "",
        "| metric (val, last checkpoint) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    finals = {n: report["recipes"][n]["final"] or {} for n in names}
    for label, path, fmt in (("minutes", "minutes", "{:.1f}"), ("samples", "samples", "{:.0f}"),
                             *ROWS):  # fmt: skip
        cells = []
        for n in names:
            v = get_path(finals[n], path)
            cells.append(fmt.format(v) if math.isfinite(v) else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Chosen on val (highest progress): **{report.get('chosen')}**.", ""]
    lines += [f"- `{n}`: {report['recipes'][n]['recipe']['note']}" for n in names]
    return "\n".join(lines)


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    """Curves of progress and of each target metric against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("progress", "progress (val)"), *[(f"scores.{p}", p) for p in TARGETS]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (path, title) in zip(axes, panels, strict=True):
        for name, entry in report["recipes"].items():
            pts = [(p["minutes"], get_path(p, path)) for p in entry["curve"]]
            pts = [(m, v) for m, v in pts if math.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training minutes (this CPU)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
