"""Every measurement `bench paper` makes, each stored in its score cache (`score_cache`): a run
is trained and loaded only when a measurement of it is not stored yet, so a bench spread over
sittings on different machines needs only the score folder to go on where it stopped.

The judges of other runs' depth -> image and joint samples are the `mf` run's own image ->
depth and the `regressor`'s, both of the same seed. A judged measurement not stored yet needs
the judges' networks too: on a machine without their checkpoints they are trained again (the
same config and seed; the weights may differ in the last bits across CPUs). The suite measures
the judged runs right after the judges, so that is rare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .common import Scenes, load_scenes
from .depth import Setting
from .paper_eval import PROTOCOLS, Estimator, abs_rel_per_image, depth_to_image, image_to_depth
from .paper_eval import joint as joint_scores
from .runs import RunPool
from .score_cache import ScoreCache

JUDGES = ("mf", "regressor")


@dataclass
class PaperMeasures:
    """The measurements of one seed's runs under a budget (`paper.PaperBudget`)."""

    budget: Any
    pool: RunPool
    cache: ScoreCache
    seed: int
    _scenes: dict[tuple[str, bool], Scenes] = field(default_factory=dict)
    _estimators: dict[tuple[Any, ...], Estimator] = field(default_factory=dict)
    _used: set[str] = field(default_factory=set)  # runs a measurement was asked of

    def _measure(self, what: str, runs: list[str], settings: dict[str, Any],
                 fn: Callable[[], Any]) -> Any:  # fmt: skip
        self._used.update(runs)
        return self.cache.measure(what, runs, settings, fn)

    def runs_used(self) -> list[str]:
        """The runs measured so far and the runs they start from, in training order."""
        used = set(self._used)
        for name in self._used:
            while (name := self.pool.parent(name)) is not None:
                used.add(name)
        return [name for name in self.pool.configs if name in used]

    def scenes(self, split: str, lidar_band: bool = False) -> Scenes:
        """The budget's scenes of `split`; `lidar_band`: scored only in the LiDAR's band."""
        key = (split, lidar_band)
        if key not in self._scenes:
            self._scenes[key] = load_scenes(split, self.budget.num_eval, *self.budget.size,
                                            lidar_band=lidar_band)  # fmt: skip
        return self._scenes[key]

    def _settings(self, **extra: Any) -> dict[str, Any]:
        b = self.budget
        return {"size": b.size, "num_eval": b.num_eval, "precision": b.precision, **extra}

    def model(self, name: str) -> Any:
        """The run's network (trained first if need be); its run facts are stored at once."""
        model = self.pool.model(name)
        self.run_info(name)
        return model

    def run_info(self, name: str) -> dict[str, Any]:
        """Steps, training seconds, DiT parameters and where it was reused from, if it was."""
        from ..model.mmdit import count_parameters

        def fn() -> dict[str, Any]:
            record = self.pool.record(name)
            return {"steps": record["steps"], "train_seconds": record["train_seconds"],
                    "params": count_parameters(self.pool.model(name).dit),
                    "reused_from": record.get("reused_from")}  # fmt: skip

        return self._measure("run", [name], {}, fn)

    def estimator(self, name: str, steps: int, shift_mu: float = 0.0,
                  mode: str = "image_to_depth") -> Estimator:  # fmt: skip
        """Image -> depth of a run with one setting (kept: its predictions are reused)."""
        spec = (name, steps, shift_mu, mode)
        if spec not in self._estimators:
            self._estimators[spec] = Estimator(
                self.model(name), Setting(steps, shift_mu=shift_mu), self.budget.size,
                mode=mode, precision=self.budget.precision)  # fmt: skip
        return self._estimators[spec]

    def judges(self, names: tuple[str, ...] = JUDGES) -> dict[str, Estimator]:
        """The yardsticks of generated images: `mf` at its own steps, the regressor at 1."""
        steps = {"mf": self.budget.depth_steps, "regressor": 1}
        return {name: self.estimator(name, steps[name]) for name in names}

    def image_to_depth(
        self, name: str, steps: int, shift_mu: float = 0.0, mode: str = "image_to_depth",
        split: str = "test", protocols: tuple[str, ...] = PROTOCOLS, lidar_band: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """{"scores": per protocol, "per_image": least-squares AbsRel of each image};
        `lidar_band`: only the pixels in the LiDAR's elevation band are scored."""

        def fn() -> dict[str, Any]:
            est = self.estimator(name, steps, shift_mu, mode)
            scenes = self.scenes(split, lidar_band)
            return {"scores": image_to_depth(est, scenes, protocols),
                    "per_image": abs_rel_per_image(est, scenes)}  # fmt: skip

        # the full frame keeps its settings, so the measurements stored before stay found
        band = {"lidar_band": True} if lidar_band else {}
        settings = self._settings(steps=steps, shift_mu=shift_mu, mode=mode, split=split,
                                  protocols=protocols, **band)  # fmt: skip
        return self._measure("image_to_depth", [name], settings, fn)

    def own_image_to_depth(self, name: str, protocols: tuple[str, ...] = PROTOCOLS,
                           lidar_band: bool = False) -> dict[str, Any]:  # fmt: skip
        """A run's image -> depth at the budget's MF steps (the regressor: 1), on test."""
        steps = 1 if name == "regressor" else self.budget.depth_steps
        return self.image_to_depth(name, steps, protocols=protocols, lidar_band=lidar_band)

    def depth_to_image(self, name: str) -> dict[str, float]:
        b = self.budget

        def fn() -> dict[str, float]:
            return depth_to_image(self.model(name), self.scenes("test"), b.sample_steps,
                                  self.judges(), self.seed, precision=b.precision)  # fmt: skip

        settings = self._settings(steps=b.sample_steps, seed=self.seed, judges=JUDGES)
        return self._measure("depth_to_image", _runs(name, *JUDGES), settings, fn)

    def joint(self, name: str, split: str = "test", log2_alpha: float = 0.0,
              judges: tuple[str, ...] = JUDGES) -> dict[str, float]:  # fmt: skip
        b = self.budget

        def fn() -> dict[str, float]:
            return joint_scores(self.model(name), self.scenes(split).captions, b.size,
                                b.sample_steps, self.judges(judges), log2_alpha=log2_alpha,
                                seed=self.seed, precision=b.precision)  # fmt: skip

        settings = self._settings(steps=b.sample_steps, seed=self.seed, split=split,
                                  log2_alpha=log2_alpha, judges=judges)  # fmt: skip
        return self._measure("joint", _runs(name, *judges), settings, fn)

    def tuned_on_val(self, name: str, modes: tuple[str, ...]) -> dict[str, Any]:
        """Image -> depth of a run over a grid of sampler settings (each of `modes`; 1, the MF
        default, the generation step count and claim 6's step counts; time shift 0, 1.1 and
        2), scored on val; the setting with the lowest val AbsRel is chosen (an image that
        scores NaN ranks last).
        {"val": rows, "chosen": {mode, steps, shift_mu}, "test": its test `image_to_depth`}."""
        b = self.budget
        grid = [
            (mode, steps, shift)
            for mode in modes
            for steps in sorted({1, b.depth_steps, b.sample_steps, *b.i2d_steps})
            for shift in ((0.0,) if steps == 1 else (0.0, 1.1, 2.0))  # 1 step: no shift to tune
        ]
        rows = []
        for mode, steps, shift in grid:
            scored = self.image_to_depth(name, steps, shift, mode, "val", ("least_squares",))
            rows.append({"mode": mode, "steps": steps, "shift_mu": shift,
                         **scored["scores"]["least_squares"]})  # fmt: skip
        best = min(rows, key=lambda r: (r["nan_images"], r["abs_rel"]))
        chosen = {k: best[k] for k in ("mode", "steps", "shift_mu")}
        test = self.image_to_depth(name, chosen["steps"], chosen["shift_mu"], chosen["mode"])
        return {"val": rows, "chosen": chosen, "test": test}


def _runs(*names: str) -> list[str]:
    """Distinct run names, in order."""
    return list(dict.fromkeys(names))
