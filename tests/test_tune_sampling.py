"""The choice rule of scripts/tune_sampling.py: the lowest guidance (and the fewest image ->
depth steps) whose val score is within the tolerance of the best."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune_sampling.py"


def _choose():
    spec = importlib.util.spec_from_file_location("tune_sampling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.choose


def _row(scale, d2i, joint, marginal):  # the mean-over-seeds columns the choice reads
    return {"guidance": scale, "d->i all": d2i, "joint attributes": joint,
            "marginal attributes": marginal}  # fmt: skip


def test_lowest_scale_within_the_tolerance_and_fewest_steps():
    choose = _choose()
    rows = [_row(1.0, 0.20, 0.40, 0.37), _row(3.0, 0.23, 0.454, 0.45), _row(4.5, 0.22, 0.459, 0.47)]
    depth = [{"steps": 1, "abs_rel": 0.0611}, {"steps": 2, "abs_rel": 0.0605},
             {"steps": 4, "abs_rel": 0.0677}]  # fmt: skip
    chosen = choose(rows, depth, tolerance=0.01)
    assert chosen["guidance"] == {"depth_to_image": 3.0, "joint": 3.0, "marginal": 4.5}
    assert chosen["steps"] == {"image_to_depth": 1}  # 0.0611 is within 1% of 0.0605
    strict = choose(rows, depth, tolerance=0.0)  # no tolerance: the plain best
    assert strict["guidance"]["joint"] == 4.5 and strict["steps"]["image_to_depth"] == 2
