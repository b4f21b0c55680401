"""Training-side hardening: a resume checks every state file before unpickling, crash-safe
checkpoint commits, metrics after a resume, skip counts in the log, typed config validation,
clear checkpoint-loading errors, and shards that are verified on a re-run."""

import hashlib
import json
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rgbd_samples import make_sample

from modality_forcing.backbones import build_model
from modality_forcing.config import (
    MixtureEntry,
    load_train_config,
    model_preset,
    resolve_train_config,
)
from modality_forcing.data.shards import iter_shard_samples, write_shards
from modality_forcing.data.stream import make_source
from modality_forcing.training.checkpoint import (
    load_model,
    read_meta,
    read_model_config,
    write_checkpoint,
)
from modality_forcing.training.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tmp_path, name="run", **extra):
    base = {
        "preset": "tiny", "out_dir": str(tmp_path / name), "batch_size": 4, "max_steps": 6,
        "precision": "fp32", "log_every": 1, "sample_every": 0, "ckpt_every": 100,
        "data": {"height": 16, "width": 16, "shadows": False},
        "optim": {"lr": 2e-3, "warmup_steps": 2, "ema_decay": 0.9},
    }  # fmt: skip
    return resolve_train_config(base, [f"{k}={v}" for k, v in extra.items()])


def _steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run stopped after step 2 (its checkpoint), copied fresh for each test."""
    root = tmp_path_factory.mktemp("trained")
    Trainer(_cfg(root)).run(stop_at=2)
    return root / "run"


@pytest.fixture
def run(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


# --------------------------------------------------------------------------------------------
# 1. resume verifies every file before anything is unpickled
# --------------------------------------------------------------------------------------------


class _Plant:
    """Unpickling this calls open(marker, "w"): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _ckpt(run: Path) -> Path:
    return run / "checkpoints" / "step_0000002"


def test_resume_refuses_an_edited_metadata_pickle_before_unpickling_it(run, tmp_path):
    meta = _ckpt(run) / "train_state" / ".metadata"
    planted = pickle.dumps(_Plant(tmp_path / "code_ran"))
    planted += b"\0" * (meta.stat().st_size - len(planted))  # same size: only the hash differs
    pickle.loads(planted)  # what DCP would do with it: run the planted call
    assert (tmp_path / "code_ran").exists()
    (tmp_path / "code_ran").unlink()
    meta.write_bytes(planted)
    with pytest.raises(ValueError, match=r"\.metadata' does not match its SHA-256 .* tampered"):
        Trainer(_cfg(tmp_path), resume=True)
    assert not (tmp_path / "code_ran").exists()


def test_resume_refuses_a_rewritten_manifest(run, tmp_path):
    """Edit the state and rewrite the manifest to match: the hash in `latest` still differs."""
    ckpt = _ckpt(run)
    meta = ckpt / "train_state" / ".metadata"
    meta.write_bytes(pickle.dumps(_Plant(tmp_path / "code_ran")))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    data = meta.read_bytes()
    manifest["files"]["train_state/.metadata"] = {
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest()
    }  # fmt: skip
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"manifest\.json' does not match the SHA-256 in"):
        Trainer(_cfg(tmp_path), resume=True)
    assert not (tmp_path / "code_ran").exists()


def test_resume_names_a_truncated_or_unlisted_state_file(run, tmp_path):
    shard = next((_ckpt(run) / "train_state").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match=rf"{shard.name}' has \d+ bytes, not \d+"):
        Trainer(_cfg(tmp_path), resume=True)
    (_ckpt(run) / "trainer.json.bak").write_text("{}")
    with pytest.raises(ValueError, match=r"trainer\.json\.bak' is not in the manifest"):
        Trainer(_cfg(tmp_path), resume=True)


def test_resume_refuses_a_pointer_without_a_manifest_hash(run, tmp_path):
    (run / "checkpoints" / "latest").write_text("step_0000002")
    with pytest.raises(ValueError, match=r"cannot be verified.*init_from="):
        Trainer(_cfg(tmp_path), resume=True)


def test_a_verified_checkpoint_resumes_and_continues(run, tmp_path):
    trainer = Trainer(_cfg(tmp_path), resume=True)
    assert trainer.state.step == 2
    name, digest = (run / "checkpoints" / "latest").read_text().split()
    manifest = (run / "checkpoints" / name / "manifest.json").read_bytes()
    assert name == "step_0000002" and hashlib.sha256(manifest).hexdigest() == digest
    assert set(json.loads(manifest)["files"]) >= {
        "train_state/.metadata", "trainer.json", "model.safetensors", "config.yaml"
    }  # fmt: skip
    trainer.run(stop_at=3)


# --------------------------------------------------------------------------------------------
# 2. a crash between commit_dir's renames leaves a loadable checkpoint
# --------------------------------------------------------------------------------------------


def test_crash_while_replacing_final_keeps_it_loadable(run, tmp_path, monkeypatch):
    final = run / "final"
    before = load_model(final).state_dict()
    rename = os.rename

    def crash_on_second(src, dst):
        if Path(src).name == "final.tmp":
            raise OSError("simulated crash between the two renames")
        rename(src, dst)

    trainer = Trainer(_cfg(tmp_path), resume=True)
    monkeypatch.setattr(os, "rename", crash_on_second)
    with pytest.raises(OSError, match="simulated crash"):
        trainer.run(stop_at=3)  # the step-3 checkpoint commits, then `final` is replaced
    monkeypatch.undo()
    assert not final.exists() and (run / "final.old").is_dir()
    after = load_model(final).state_dict()  # what `sample --ckpt runs/x/final` does
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert read_meta(final)["step"] == 2 and read_model_config(final).hidden_size == 32

    resumed = Trainer(_cfg(tmp_path), resume=True)  # the step-3 checkpoint did commit
    assert resumed.state.step == 3
    resumed.save()  # the next save cleans up
    assert read_meta(final)["step"] == 3
    assert not list(run.glob("final.*")) and not list(run.rglob("*.tmp"))


# --------------------------------------------------------------------------------------------
# 3. a resume trims metrics.jsonl back to the resumed step
# --------------------------------------------------------------------------------------------


def test_resume_trims_the_metrics_log(run, tmp_path):
    trainer = Trainer(_cfg(tmp_path), resume=True)
    trainer.save = lambda: None  # steps 3-4 are logged but never checkpointed (a crash)
    trainer.run(stop_at=4)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # torn by the crash
    resumed = Trainer(_cfg(tmp_path), resume=True)
    assert resumed.state.step == 2 and _steps(run) == [1, 2]
    resumed.run()
    assert _steps(run) == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------------------------
# 4. skip counts of the data source go into every metrics record
# --------------------------------------------------------------------------------------------


def _corrupt_one_image(shard: Path, key: str) -> None:
    """Overwrite the middle of one sample's rgb.png in place (the tar stays readable)."""
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{key}.rgb.png")
    data = bytearray(shard.read_bytes())
    start = member.offset_data + member.size // 2
    data[start : start + 16] = b"\xff" * 16
    shard.write_bytes(bytes(data))


def test_bad_shard_samples_are_skipped_and_logged_across_a_resume(tmp_path):
    shards = tmp_path / "shards"
    write_shards(shards, 8, lambda s, c: [make_sample(i, 16, 16) for i in range(s, s + c)],
                 {"source": "test"}, 8, progress=False)  # fmt: skip
    _corrupt_one_image(shards / "shard-000000.tar", "seed-000000003")
    extra = {"data.source": "shards", "data.shards": f"[{shards}]"}
    with pytest.warns(RuntimeWarning, match="corrupt_file"):
        Trainer(_cfg(tmp_path, "straight", **extra)).run(stop_at=3)
        Trainer(_cfg(tmp_path, "resumed", **extra)).run(stop_at=1)
        Trainer(_cfg(tmp_path, "resumed", **extra), resume=True).run(stop_at=3)
    for name in ("straight", "resumed"):
        records = [
            json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        ]
        # 7 good samples per pass, 4 per step: step 2 starts the second pass over the bad one
        assert [r["skipped"] for r in records] == [
            {"corrupt_file": 1}, {"corrupt_file": 2}, {"corrupt_file": 2}
        ], name  # fmt: skip


def test_mixture_source_reports_its_skips(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        np.savez(tmp_path / f"{i}.npz", uv=rng.uniform(0, 16, (30, 2)), depth=np.ones(30))
    (tmp_path / "1.npz").write_bytes(b"not a zip file")
    data = {"source": "mixture", "height": 16, "width": 16, "mixture": [
        {"name": "points", "root": str(tmp_path), "crop": 1.0}]}  # fmt: skip
    source = make_source(resolve_train_config({"data": data}).data, 8, 8)
    assert source.skipped() == {}
    with pytest.warns(RuntimeWarning, match="skipping bad data"):
        source.get(step=0, micro=0)
    assert sum(source.skipped().values()) >= 1
    assert make_source(resolve_train_config({}).data, 8, 8).skipped() == {}  # procedural


# --------------------------------------------------------------------------------------------
# 5. config values are checked by type and range, naming the key (and the file)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("compile=maybe", r"'compile': expected true or false, got 'maybe'"),
        ("compile=1", r"'compile': expected true or false, got 1"),
        ("max_steps=2.9", r"'max_steps': expected an integer, got 2.9"),
        ("max_steps=true", r"'max_steps': expected an integer, got True"),
        ("log_every=0", r"'log_every': must be >= 1, got 0"),
        ("ckpt_every=0", r"'ckpt_every': must be >= 1, got 0"),
        ("data=5", r"config key 'data': expected a mapping, got 5"),
        ("model=5", r"config key 'model': expected a mapping, got 5"),
        ("optim.betas=[0.9]", r"'optim.betas': expected a list of 2 items"),
        ("optim.lr=fast", r"'optim.lr': expected a number, got 'fast'"),
        ("optim.lr=.nan", r"'optim.lr': must be a finite number > 0"),
        ("forcing.p_image_clean=1.5", r"'forcing.p_image_clean': must be in \[0, 1\]"),
        ("data.mixture=[{weight: x}]", r"'data.mixture\[0\].weight': expected a number"),
        ("stage=2", r"'stage': expected a string, got 2"),
        ("optim.lrr=1", r"unknown field\(s\) \['optim.lrr'\]"),
        ("max_steps=[", r"override 'max_steps=\[': the value is not valid YAML"),
    ],
)
def test_bad_values_raise_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        resolve_train_config({}, [override])


def test_values_of_the_right_type_are_accepted():
    cfg = resolve_train_config(
        {"max_steps": 3.0, "optim": {"lr": "3e-4"}},  # YAML reads 3e-4 as a string
        ["compile='False'", "activation_checkpointing=true", "sample_every=0"],
    )
    assert cfg.max_steps == 3 and isinstance(cfg.max_steps, int) and cfg.optim.lr == 3e-4
    assert cfg.compile is False and cfg.activation_checkpointing is True
    entry = resolve_train_config({"data": {"mixture": [{"name": "procedural"}]}}).data.mixture[0]
    assert isinstance(entry, MixtureEntry)


def test_config_files_name_the_file_and_line(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("max_steps: 10\ndata:\n  height: [16\n")
    with pytest.raises(ValueError, match=r"config file '.*bad\.yaml' is not valid YAML \(line 4\)"):
        load_train_config(bad_yaml)
    listed = tmp_path / "list.yaml"
    listed.write_text("- max_steps\n- 10\n")
    with pytest.raises(ValueError, match=r"'.*list\.yaml' must hold a mapping .* got list"):
        load_train_config(listed)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("data: 5\n")
    with pytest.raises(ValueError, match=r"'data': expected a mapping, got 5 \(config file '.*sc"):
        load_train_config(scalar)


def test_trainer_validates_configs_built_in_code(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.log_every = 0
    with pytest.raises(ValueError, match="'log_every': must be >= 1"):
        Trainer(cfg)


# --------------------------------------------------------------------------------------------
# 6. unreadable checkpoint files raise a ValueError naming the file
# --------------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    model = build_model(model_preset("tiny"))
    return write_checkpoint(tmp_path / "ckpt", model.cfg, model.state_dict(), {"step": 1})


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_unreadable_weights_name_the_file(checkpoint, damage):
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {"truncate": data[:-100], "garbage": b"PK\x03\x04 zip?", "empty": b""}[damage]
    )
    with pytest.raises(ValueError, match=r"model\.safetensors' is not a readable safetensors file"):
        load_model(checkpoint)


def test_bad_checkpoint_config_names_the_file(checkpoint):
    config = checkpoint / "config.yaml"
    config.write_text("hidden_size: 32\nnum_heads: [2\n")
    with pytest.raises(ValueError, match=r"checkpoint config '.*config\.yaml' is not valid YAML"):
        load_model(checkpoint)
    config.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"config\.yaml' must hold a mapping"):
        load_model(checkpoint)
    config.write_text("hidden_size: big\n")
    with pytest.raises(ValueError, match=r"'hidden_size': expected an integer.*config\.yaml"):
        read_model_config(checkpoint)


# --------------------------------------------------------------------------------------------
# 7. prepare-data verifies its shards on a re-run and rewrites damaged ones
# --------------------------------------------------------------------------------------------

ARGS = {"source": "test", "height": 24, "width": 32}


def _samples(start: int, count: int) -> list[dict]:
    return [make_sample(i) for i in range(start, start + count)]


def test_a_truncated_shard_is_rewritten_on_a_re_run(tmp_path):
    pytest.importorskip("modality_forcing.data.procedural")
    from modality_forcing.data.prepare import prepare_procedural

    kw = {"split": "val", "num": 4, "height": 16, "width": 16, "shard_size": 2}
    out = prepare_procedural(tmp_path, **kw)
    index = json.loads((out / "index.json").read_text())
    shard = out / index["shards"][1]["name"]
    good = shard.read_bytes()
    assert index["shards"][1]["sha256"] == hashlib.sha256(good).hexdigest()
    assert index["shards"][1]["size"] == len(good)
    shard.write_bytes(good[:3000])
    with pytest.warns(RuntimeWarning, match=r"shard-000001\.tar does not match index\.json"):
        prepare_procedural(tmp_path, **kw)
    assert shard.read_bytes() == good and len(list(iter_shard_samples(out))) == 4
    data = bytearray(good)  # same size, one byte changed: caught by the hash
    data[1000] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="SHA-256 differs"):
        prepare_procedural(tmp_path, **kw)
    assert shard.read_bytes() == good


def test_shards_of_an_index_without_hashes_are_read_through(tmp_path):
    write_shards(tmp_path, 4, _samples, ARGS, 2, progress=False)
    index = json.loads((tmp_path / "index.json").read_text())
    for entry in index["shards"]:
        del entry["size"], entry["sha256"]
    (tmp_path / "index.json").write_text(json.dumps(index))  # as an older version wrote it
    good = (tmp_path / "shard-000001.tar").read_bytes()
    (tmp_path / "shard-000001.tar").write_bytes(good[:3000])
    calls: list[int] = []
    write_shards(tmp_path, 4, lambda s, c: calls.append(s) or _samples(s, c), ARGS, 2,
                 progress=False)  # fmt: skip
    assert calls == [2]  # the intact shard is kept, the truncated one rewritten
    assert (tmp_path / "shard-000001.tar").read_bytes() == good
    index = json.loads((tmp_path / "index.json").read_text())
    assert all(len(entry["sha256"]) == 64 for entry in index["shards"])


# --------------------------------------------------------------------------------------------
# the ranks of a distributed resume split the hashing and all stop on a mismatch
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_ranks_train_bf16_and_verify_a_resume_together(tmp_path):
    import subprocess

    import yaml

    cfg = {"preset": "tiny", "batch_size": 4, "precision": "bf16", "log_every": 1,
           "sample_every": 2, "ckpt_every": 100, "parallel": "fsdp2",
           "out_dir": str(tmp_path / "r"),
           "data": {"height": 16, "width": 16, "shadows": False}}  # fmt: skip

    def launch(max_steps: int, resume: bool) -> subprocess.CompletedProcess:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({**cfg, "max_steps": max_steps}))
        argv = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "modality_forcing",
                "train", "--config", str(path)] + (["--resume"] if resume else [])  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=300)

    # bf16 blocks with the fp32 depth head as its own FSDP unit: trains, previews on every rank
    # and saves (a good two-rank resume: test_distributed.py)
    first = launch(2, resume=False)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _steps(tmp_path / "r") == [1, 2]
    assert (tmp_path / "r" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "r" / "samples" / "step_0000002.png").is_file()
    # `.metadata` is checked by rank 1 (every other file of the sorted list): both ranks stop.
    meta = tmp_path / "r" / "checkpoints" / "step_0000002" / "train_state" / ".metadata"
    data = bytearray(meta.read_bytes())
    data[-1] ^= 1
    meta.write_bytes(bytes(data))
    failed = launch(3, resume=True)
    assert failed.returncode != 0
    assert failed.stderr.count(".metadata' does not match its SHA-256") >= 2, failed.stderr[-3000:]
