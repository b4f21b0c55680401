"""One record of sampling settings for every entry point, and the per-mode defaults behind it.

`SamplingConfig` is built once at the edge (the CLI, the app, a bench, a Python caller) and passed
whole to the pipeline, which fills the settings left at None from `ModeDefaults`: the checkpoint
format's, overlaid with the checkpoint's own per-mode choices from its `meta.json` (`sampling`:
what was measured best for that model on val, `scripts/tune_sampling.py`). So image -> depth runs
with the steps chosen for that model in `sample`, `eval`, `demo`, the app and the benches alike.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

MODES = ("joint", "marginal", "depth_to_image", "image_to_depth", "depth_completion")
SOLVERS = ("euler", "heun")
REDUCTIONS = ("median", "mean")  # sampling/ensemble.py
FRAMES = ("letterbox", "stretch")  # inputs of another size: keep the aspect ratio, or resize
# depth completion: how the known points shape the result (`inference/completion.finish`)
COMPLETION_POSTS = ("paste", "fit", "residual")


@dataclass(frozen=True)
class ModeDefaults:
    """What one mode of one checkpoint samples with when the caller does not say."""

    steps: int
    guidance: float  # classifier-free guidance scale on the text; 1 = off
    shift_mu: float  # time shift of the schedule (1.1, as in training)
    log2_alpha: float  # joint: depth lags the image if > 0 (the tilt)


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample one mode. None: the mode's default (`ModeDefaults`, or the model's own
    `depth_t_min` for `t_min`; `seed` None draws from the global RNG)."""

    steps: int | None = None
    solver: str = "euler"  # `euler` | `heun`
    guidance: float | None = None
    shift_mu: float | None = None
    log2_alpha: float | None = None
    t_min: float | None = None  # clamp of the x0 -> velocity conversion
    ensemble: int = 1  # image -> depth samples per input, reduced per pixel
    reduction: str = "median"  # of an ensemble (after scale alignment): `median` | `mean`
    frame: str = "letterbox"  # given inputs of another size: `letterbox` | `stretch`
    seed: int | None = None
    refine_depth: bool = False  # generation modes: re-estimate depth from the generated image
    # depth completion: paste | fit | residual (residual: best on val over random:100 / 500 and
    # lidar:32 / 64 points, `bench completion`, docs/completion.md)
    completion_post: str = "residual"

    def __post_init__(self) -> None:
        for name, allowed in (("solver", SOLVERS), ("reduction", REDUCTIONS), ("frame", FRAMES),
                              ("completion_post", COMPLETION_POSTS)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"unknown {name} '{getattr(self, name)}'; choose from {list(allowed)}"
                )
        if self.steps is not None and (isinstance(self.steps, bool) or self.steps < 1):
            raise ValueError(f"sampling steps must be >= 1, got {self.steps}")
        if self.ensemble < 1:
            raise ValueError(f"sampling ensemble must be >= 1, got {self.ensemble}")
        for name in ("guidance", "shift_mu", "log2_alpha", "t_min"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"sampling {name} must be a finite number, got {value}")
        if self.guidance is not None and self.guidance < 0:
            raise ValueError(f"sampling guidance must be >= 0, got {self.guidance}")

    def resolved(self, defaults: ModeDefaults) -> SamplingConfig:
        """These settings with every None that `defaults` covers filled in."""
        fill = {k: v for k, v in dataclasses.asdict(defaults).items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fill)

    def with_overrides(self, **changes: Any) -> SamplingConfig:
        """A copy with the given settings changed; None values leave a setting as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def name(self) -> str:
        """A short label for tables, e.g. `euler-4 shift+1.1 ens5-median`."""
        parts = [f"{self.solver}-{self.steps}"]
        if self.shift_mu:
            parts.append(f"shift{self.shift_mu:+g}")
        if self.t_min is not None:
            parts.append(f"tmin{self.t_min:g}")
        if self.ensemble > 1:
            parts.append(f"ens{self.ensemble}-{self.reduction}")
        return " ".join(parts)

    @property
    def evaluations(self) -> int:
        """Network evaluations per image (Heun: 2 per step but the last; no guidance)."""
        steps = self.steps or 0
        per_sample = steps if self.solver == "euler" else 2 * steps - 1
        return per_sample * self.ensemble


def sampling_record(cfg: SamplingConfig) -> dict[str, Any]:
    """The settings a result was sampled with, for its metadata.json (one naming scheme)."""
    return dataclasses.asdict(cfg)


def _per_mode(steps: int, guidance: float, shift_mu: float, log2_alpha: float, **by_mode: Any
              ) -> dict[str, ModeDefaults]:  # fmt: skip
    base = ModeDefaults(steps, guidance, shift_mu, log2_alpha)
    return {m: dataclasses.replace(base, **by_mode.get(m, {})) for m in MODES}


# Per checkpoint format. `official` follows the release's joint script and app
# (docs/official_format.md): 50 Euler steps, shift 1.1, tilt log2_alpha 5 in joint mode, CFG 4
# with the empty prompt as the unconditional, no CFG for image -> depth.
FORMAT_DEFAULTS: dict[str, dict[str, ModeDefaults]] = {
    # Image -> depth in 1 step: the x0 readout the recipe trains for (`p_depth_readout`); more
    # steps lose accuracy, least with time shift 2 (steps bunched near t = 1), the best shift at
    # 2, 4 and 10 steps on val for the L1, MSE and small-t recipes (docs/depth_steps/README.md).
    # Depth completion: no text guidance either, steps as chosen on val by `bench completion`.
    "native": _per_mode(
        25,
        3.0,
        1.1,
        0.0,
        image_to_depth={"guidance": 1.0, "steps": 1, "shift_mu": 2.0},
        depth_completion={"guidance": 1.0, "steps": 1},
    ),
    "official": _per_mode(
        50, 4.0, 1.1, 5.0, image_to_depth={"guidance": 1.0}, depth_completion={"guidance": 1.0}
    ),
}

# A checkpoint's own defaults (meta.json `sampling`): {field: {mode: value}}, {field: (type, min)}.
CHECKPOINT_FIELDS = {"guidance": (float, 0.0), "steps": (int, 1)}


def checked_sampling(sampling: Any, where: str) -> dict[str, dict[str, Any]]:
    """{"guidance": {mode: scale >= 0}, "steps": {mode: int >= 1}} (either part optional),
    checked: a ValueError names `where`, the field and the mode otherwise."""
    if not isinstance(sampling, dict):
        raise ValueError(f"{where}: expected a mapping, got {sampling!r}")
    out: dict[str, dict[str, Any]] = {}
    for field, per_mode in sampling.items():
        if field not in CHECKPOINT_FIELDS:
            known = list(CHECKPOINT_FIELDS)
            raise ValueError(f"{where}: unknown field '{field}'; choose from {known}")
        kind, low = CHECKPOINT_FIELDS[field]
        if not isinstance(per_mode, dict):
            raise ValueError(
                f"{where}.{field}: expected a mapping of mode to value, got {per_mode!r}"
            )
        out[field] = {}
        for mode, value in per_mode.items():
            if mode not in MODES:
                raise ValueError(
                    f"{where}.{field}: unknown mode '{mode}'; choose from {list(MODES)}"
                )
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < low or kind(value) != value:
                raise ValueError(
                    f"{where}.{field}: '{mode}' must be {kind.__name__} >= {low:g}, got {value!r}"
                )
            out[field][mode] = kind(value)
    return out


def mode_defaults(format: str, own: dict[str, dict[str, Any]] | None = None
                  ) -> dict[str, ModeDefaults]:  # fmt: skip
    """Every mode's defaults: the format's, overlaid with a checkpoint's own (`checked_sampling`
    form, e.g. {"steps": {"image_to_depth": 1}})."""
    if format not in FORMAT_DEFAULTS:
        raise ValueError(f"unknown format '{format}'; choose from {sorted(FORMAT_DEFAULTS)}")
    own = checked_sampling(own or {}, "sampling")
    return {
        mode: dataclasses.replace(
            base, **{field: own[field][mode] for field in own if mode in own[field]}
        )
        for mode, base in FORMAT_DEFAULTS[format].items()
    }


def own_sampling(defaults: dict[str, ModeDefaults], format: str) -> dict[str, dict[str, Any]]:
    """The per-mode choices in `defaults` that differ from the format's (for a meta.json)."""
    out: dict[str, dict[str, Any]] = {}
    for mode, d in defaults.items():
        base = FORMAT_DEFAULTS[format][mode]
        for field in CHECKPOINT_FIELDS:
            if getattr(d, field) != getattr(base, field):
                out.setdefault(field, {})[mode] = getattr(d, field)
    return out
