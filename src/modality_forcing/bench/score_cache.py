"""Measurements that outlive the checkpoints they were made with.

A long benchmark (`bench paper --budget medium`: ~16 runs per seed, hours each seed on a CPU)
may be spread over sittings on different machines, where only a repository carries over. Each
measurement (the scores of one run, or of a run judged by others, under fixed settings) is
stored as a small JSON file in a score folder, under a key naming what was measured: the
measurement, its settings, and a fingerprint of each run it used (the run's training config,
without where or how often it checkpoints). A later sitting with the same folder gets the
stored value back without training or loading anything; a run whose every measurement is stored
is never trained again. A changed training config or setting changes the key, so a stale value
is never used; `SCORES_VERSION` is raised when the measurement code changes what it returns
(`VERSIONS`: for one kind of measurement only, so the others stay found).

Values pass through JSON even when just measured, so a report is the same whether its numbers
were measured now or read back (dict keys are strings, tensors are lists).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import resolve_train_config, to_dict
from .runs import REUSABLE, RunPool, write_json

SCORES_VERSION = 1
# depth -> image and joint: per-image AbsRel and image counts added
VERSIONS = {"depth_to_image": 2, "joint": 2}


def run_fingerprint(pool: RunPool, name: str) -> dict[str, Any]:
    """What a run of `pool` trains: its resolved config without the `REUSABLE` fields (where
    and how often it checkpoints), the start checkpoint of a run of the pool replaced by that
    run's own fingerprint (folders differ between machines, the training does not)."""
    config = dict(pool.configs[name])
    parent = pool.parent(name)
    if parent is not None:
        config["init_from"] = None
    resolved = {k: v for k, v in to_dict(resolve_train_config(config)).items()
                if k not in REUSABLE}  # fmt: skip
    if parent is not None:
        resolved["init_from"] = {"run": parent, **run_fingerprint(pool, parent)}
    return resolved


class ScoreCache:
    """Measurements of `pool`'s runs stored in `folder` (None: measured every time, nothing
    stored). `measure(what, runs, settings, fn)` returns the stored value of that key, or calls
    `fn()` (which may train and load the runs through the pool) and stores what it returns."""

    def __init__(self, folder: str | Path | None, pool: RunPool) -> None:
        self.folder = None if folder is None else Path(folder)
        self.pool = pool
        self.hits = 0  # values read back from the folder (not those stored by this object)
        self._fingerprints: dict[str, dict[str, Any]] = {}
        self._values: dict[str, Any] = {}  # by key, so a value asked for again is not reread

    def key(self, what: str, runs: Sequence[str], settings: dict[str, Any]) -> dict[str, Any]:
        """The full description a stored value must match."""
        for run in runs:
            if run not in self._fingerprints:
                self._fingerprints[run] = run_fingerprint(self.pool, run)
        # through JSON, as the stored copy is (tuples become lists, keys strings)
        return json.loads(json.dumps({
            "version": VERSIONS.get(what, SCORES_VERSION), "what": what, "settings": settings,
            "runs": {run: self._fingerprints[run] for run in runs},
        }, default=str))  # fmt: skip

    def path(self, key: dict[str, Any], text: str) -> Path:
        """The file of `key` (`text`: its sorted JSON, which the name's digest is of)."""
        assert self.folder is not None
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        runs = "+".join(key["runs"])
        stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{key['what']}-{runs}")[:80]
        return self.folder / f"{stem}-{digest}.json"

    def summary(self) -> dict[str, Any]:
        """For a report: the folder, and how many values were read back from it."""
        return {"folder": None if self.folder is None else str(self.folder), "found": self.hits}

    def measure(
        self, what: str, runs: Sequence[str], settings: dict[str, Any], fn: Callable[[], Any]
    ) -> Any:
        key = self.key(what, runs, settings)
        text = json.dumps(key, sort_keys=True)
        if text in self._values:
            return self._values[text]
        path = None if self.folder is None else self.path(key, text)
        if path is not None and path.is_file():
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                self.hits += 1
                self._values[text] = stored["value"]
                return stored["value"]
        value = json.loads(json.dumps(fn(), default=_jsonable))
        if path is not None:
            write_json(path, {"key": key, "value": value})
        self._values[text] = value
        return value


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):  # tensors and numpy arrays
        return x.tolist()
    raise TypeError(f"a measurement returned {type(x).__name__}, which JSON cannot store")
