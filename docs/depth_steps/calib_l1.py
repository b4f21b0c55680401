"""Calibration for issue #20: how many steps until the paper bench's MF recipe (cpu-s, 32x32,
batch 32, from scratch) reaches image -> depth skill >= 0.3 on val? val_every logs skill."""

from dataclasses import replace
from pathlib import Path

from modality_forcing.bench.depth import recipe_config
from modality_forcing.bench.paper import BUDGETS, _depth_budget
from modality_forcing.bench.runs import train_cached

b = replace(BUDGETS["small"], steps=2400)
cfg = recipe_config("mf", _depth_budget(b), Path("/work/runs/calib20/mf"), 0)
cfg.update({"val_every": 300, "val_scenes": 64, "ckpt_every": 600, "keep_checkpoints": 0})
print(cfg)
print(train_cached(cfg))
