"""Data parallelism on CPU (gloo, 2 processes under torchrun): DDP and FSDP2 follow the same loss
trajectory as one process with the same global batch, and a sharded checkpoint resumes on a
different world size. Tolerance: 1e-4 relative (gradients are averaged over ranks in a different
summation order than one process sums its batch; fp32 throughout)."""

import json
import shutil
import subprocess

import pytest
import yaml

from modality_forcing.cli import main

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")

BASE = {
    "preset": "tiny", "batch_size": 8, "precision": "fp32", "log_every": 1, "sample_every": 0,
    "ckpt_every": 100, "data": {"height": 16, "width": 16, "shadows": False},
    "optim": {"lr": 2e-3, "warmup_steps": 1, "schedule": "constant", "ema_decay": 0.9},
}  # fmt: skip


def _run(tmp_path, name, nproc, max_steps, resume_from=None, **overrides):
    cfg = {**BASE, **overrides, "out_dir": str(tmp_path / name), "max_steps": max_steps}
    cfg_path = tmp_path / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    if resume_from is not None:
        shutil.copytree(tmp_path / resume_from, tmp_path / name, dirs_exist_ok=True)
    cmd = ["train", "--config", str(cfg_path)] + (["--resume"] if resume_from else [])
    if nproc == 1:  # one process: in this one (the same code path, without a second startup)
        main(cmd)
    else:
        argv = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "modality_forcing",
                *cmd]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines]


def _close(a, b):
    return all(abs(x[m] - y[m]) <= 1e-4 * abs(y[m]) + 1e-7 for x, y in zip(a, b, strict=True)
               for m in x)  # fmt: skip


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("single"), "one", 1, 4)


def test_two_ranks_match_one_process(tmp_path, single):
    two = _run(tmp_path, "ddp", 2, 4, parallel="ddp")
    assert len(two) == len(single) == 4 and _close(two, single), (two, single)


def test_grad_accumulation_matches_one_big_batch(tmp_path, single):
    accum = _run(tmp_path, "accum", 1, 4, grad_accum=2)
    assert _close(accum, single), (accum, single)


def test_fsdp2_matches_one_process_and_resumes_on_another_world_size(tmp_path, single):
    first = _run(tmp_path, "fsdp", 2, 2, parallel="fsdp2")  # two ranks, sharded: steps 1-2
    assert len(first) == 2 and _close(first, single[:2]), (first, single)
    rest = _run(tmp_path, "resumed", 1, 4, resume_from="fsdp")  # one process: steps 3-4
    assert _close(first + rest[len(first) :], single), (first, rest, single)


def test_ranks_with_different_configs_stop_with_a_clear_error(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(
        "import os, pathlib, sys\n"
        "from modality_forcing.training import distributed as D\n"
        "env = D.init_distributed()\n"
        "out = pathlib.Path(sys.argv[1]) / f'rank{env.rank}.txt'\n"
        "try:\n"
        "    D.check_same_config({'lr': 1e-3 * (1 + env.rank)}, env)\n"
        "    out.write_text('agreed')\n"
        "except ValueError as err:\n"
        "    out.write_text(str(err))\n"
        "D.shutdown()\n"
    )
    argv = ["torchrun", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)]
    subprocess.run(argv, capture_output=True, text=True, timeout=120)
    for rank in (0, 1):  # every rank stops, naming the rank that differs
        text = (tmp_path / f"rank{rank}.txt").read_text()
        assert text.startswith("ranks disagree on the training config (ranks [1] differ"), text
