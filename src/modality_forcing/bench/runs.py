"""Training runs that benchmarks can reuse: a run whose resolved config is unchanged is not
trained again, and one that was stopped part-way resumes from its last checkpoint, so a stopped
benchmark (a long one spread over several sittings) goes on where it stopped and a report can be
rebuilt without retraining. Given other folders to `reuse`, a run finished there by another
benchmark with the same training config (`REUSABLE` aside) is used instead of training it again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..config import resolve_train_config, to_dict
from ..training.run_dir import LATEST, read_latest

RUN_JSON = "bench_run.json"  # a finished run: its final checkpoint, steps, seconds, config
STARTED_JSON = "bench_run_started.json"  # the config a run was started with


def train_cached(config: dict[str, Any], reuse: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Train the run described by `config` (a dict for `resolve_train_config`) unless its
    `out_dir` already holds a finished run of the same resolved config, or a folder of `reuse`
    holds one that differs only in `REUSABLE` fields (`find_finished`).

    Returns:
        {"final": checkpoint dir, "steps": steps trained, "train_seconds": wall time,
        "config": the resolved config as a dict}, and `reused_from` (the run's folder) for a
        run found under `reuse`.
    """
    from ..training.checkpoint import read_meta
    from ..training.loop import train

    cfg = resolve_train_config(config)
    resolved = to_dict(cfg)  # before training, which fills in e.g. the model resolution
    run_dir = Path(cfg.out_dir)
    record_path = run_dir / RUN_JSON
    if record_path.is_file():
        old = json.loads(record_path.read_text())
        if same_config(old.get("config"), resolved) and Path(old["final"]).is_dir():
            return old
    found = find_finished(resolved, reuse)
    if found is not None:
        return found
    before = seconds_before_resume(run_dir, resolved)
    if before is None:  # afresh: a checkpoint left by another config must never be resumed
        (run_dir / "checkpoints" / LATEST).unlink(missing_ok=True)
    write_json(run_dir / STARTED_JSON, {"config": resolved})
    start = time.time()
    final = train(cfg, resume=before is not None)
    record = {
        "final": str(final), "steps": read_meta(final)["step"],
        "train_seconds": (before or 0.0) + time.time() - start, "config": resolved,
    }  # fmt: skip
    write_json(record_path, record)
    return record


def train_in_order(
    runs: Iterable[tuple[str, dict[str, Any]]], reuse: Sequence[str | Path] = ()
) -> dict[str, dict[str, Any]]:
    """`train_cached` each (name, config) in order (`RunPool.record`)."""
    pool = RunPool(dict(runs), reuse)
    return {name: pool.record(name) for name in pool.configs}


class RunPool:
    """A benchmark's runs ({name: config for `resolve_train_config`}), each trained (or found:
    `train_cached`) and loaded only when first asked for, so a measurement found in a score
    cache (`bench/score_cache.py`) needs no training at all. A run that starts from another
    run's final checkpoint (`init_from`, e.g. MF post-training after T2I) has that run
    trained first, and starts from wherever it was found: the folder of another benchmark
    when it was reused from there."""

    def __init__(self, configs: dict[str, dict[str, Any]], reuse: Sequence[str | Path] = ()
                 ) -> None:  # fmt: skip
        self.configs, self.reuse = configs, tuple(reuse)
        self._records: dict[str, dict[str, Any]] = {}
        self._models: dict[str, Any] = {}

    def parent(self, name: str) -> str | None:
        """The run of this pool whose final checkpoint `name` starts from, if any."""
        start = self.configs[name].get("init_from")
        if start is None:
            return None
        return next((other for other, c in self.configs.items()
                     if Path(start) == Path(c["out_dir"]) / "final"), None)  # fmt: skip

    def record(self, name: str) -> dict[str, Any]:
        """The run's `train_cached` record (training it now if it is neither finished here nor
        found under `reuse`)."""
        if name not in self._records:
            config, parent = self.configs[name], self.parent(name)
            if parent is not None and self.record(parent).get("reused_from"):
                config = {**config, "init_from": self.record(parent)["final"]}
            self._records[name] = train_cached(config, self.reuse)
        return self._records[name]

    def model(self, name: str) -> Any:
        """The run's final network, on the CPU (trained first if need be)."""
        if name not in self._models:
            from .depth import load_model

            self._models[name] = load_model(self.record(name)["final"])
        return self._models[name]


def seconds_before_resume(run_dir: Path, resolved: dict[str, Any]) -> float | None:
    """If `run_dir` holds a run started with this config that stopped part-way (a checkpoint,
    no finished record), the training seconds its latest checkpoint recorded; else None (the
    run starts afresh). The resume itself verifies the checkpoint's files."""
    from ..training.run_state import TRAINER_JSON

    started, pointer = run_dir / STARTED_JSON, run_dir / "checkpoints" / LATEST
    if not (started.is_file() and pointer.is_file()):
        return None
    if not same_config(json.loads(started.read_text()).get("config"), resolved):
        return None
    name, _ = read_latest(run_dir / "checkpoints")
    info = run_dir / "checkpoints" / name / TRAINER_JSON
    return float(json.loads(info.read_text())["train_state"]["seconds"]) if info.is_file() else 0.0


# Fields that change when or where a run reports, never what it trains: not compared.
BOOKKEEPING = ("ckpt_every_minutes", "report_to")
# Also never what it trains (tested: `ckpt_every` leaves the weights bit-identical), but they
# decide what a benchmark finds in the run's own folder, so only a run found in another
# benchmark's folder may differ in them.
REUSABLE = (*BOOKKEEPING, "out_dir", "ckpt_every", "keep_checkpoints")


def same_config(
    old: dict[str, Any] | None, new: dict[str, Any], ignore: Sequence[str] = BOOKKEEPING
) -> bool:
    """Whether a stored resolved config describes the same run as `new` (`ignore` fields
    aside). The stored one is resolved again first, so fields added to the configs since then
    take their defaults and do not invalidate finished runs."""
    if not old:
        return False
    try:
        again = to_dict(resolve_train_config(old))
    except (TypeError, ValueError):  # a field since removed or renamed: a different run
        return False
    return {k: v for k, v in again.items() if k not in ignore} == {
        k: v for k, v in new.items() if k not in ignore
    }


def find_finished(resolved: dict[str, Any], folders: Sequence[str | Path]) -> dict[str, Any] | None:
    """A finished benchmark run anywhere under `folders` (their `bench_run.json` records,
    searched recursively) whose config equals `resolved` apart from `REUSABLE` fields and
    whose final checkpoint still exists: its record, with `reused_from` its folder; else None.

    Raises:
        FileNotFoundError: a folder that does not exist (a mistyped `--reuse-runs`).
    """
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"--reuse-runs: '{folder}' is not a folder")
        for record_path in sorted(folder.rglob(RUN_JSON)):
            record = json.loads(record_path.read_text())
            if (same_config(record.get("config"), resolved, REUSABLE)
                    and Path(record["final"]).is_dir()):  # fmt: skip
                return {**record, "reused_from": str(record_path.parent)}
    return None


def publish(report: dict[str, Any], out: Path, json_name: str, markdown: Any, plot: Any) -> None:
    """Write a benchmark's JSON, REPORT.md (from `markdown(report)`) and plots
    (`plot(report, out)`) into `out`, and print the report."""
    write_json(out / json_name, report)
    text = markdown(report)
    (out / "REPORT.md").write_text(text + "\n")
    plot(report, out)
    print(text)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def reused_note(reused: dict[str, str | None]) -> list[str]:
    """Report lines naming the runs (name -> folder; None: trained here) that another
    benchmark trained and this one reused; none when every run was trained here."""
    where = "; ".join(f"{name} from `{folder}`" for name, folder in reused.items() if folder)
    if not where:
        return []
    return ["", "Trained by another benchmark with the same training config and reused here "
            f"(`--reuse-runs`): {where}."]  # fmt: skip
