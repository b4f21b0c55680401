"""`scripts/gpu_train.sh` on CPU with a tiny override: both stages train from a plain checkout
(PYTHONPATH=src) where webdataset and trimesh cannot be imported, as on the GPU image, and the
exported checkpoint is safetensors shards of at most 16 MiB, at most 6 files, that load."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_trains_both_stages_and_exports_small_shards(tmp_path):
    blocked = tmp_path / "blocked"  # modules that fail to import, as where they are missing
    blocked.mkdir()
    for name in ("webdataset", "trimesh"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('no {name} here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocked), "PYTHON": sys.executable,
           "RUN_DIR": str(tmp_path / "run"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    out = tmp_path / "out"
    tiny = ["preset=tiny", "batch_size=4", "max_steps=3", "data.height=16", "data.width=16",
            "data.num_workers=0", "model.refine_width=4", "precision=fp32"]  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh"), str(out), *tiny],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted((out / "checkpoint").iterdir())
    assert len(files) <= 6 and all(f.stat().st_size <= 16 * 2**20 for f in files)
    assert '"step": 3' in (out / "mf_metrics.jsonl").read_text()  # the last step
    from modality_forcing.inference.pipeline import ModalityForcingPipeline

    pipe = ModalityForcingPipeline.from_pretrained(out / "checkpoint", torch_dtype="fp32")
    assert pipe.model.cfg.image_prediction == "x0" and pipe.model.cfg.text_pooled
    depth = pipe(prompt="a red box", mode="joint", num_inference_steps=2).depth
    assert depth.shape[-2:] == (16, 16)
