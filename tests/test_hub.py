"""The Hub: a repo id resolves through the Hugging Face cache (offline here: a cache filled the
way huggingface_hub fills it), and push_to_hub uploads the checkpoint with a model card."""

import shutil

import numpy as np
import pytest
import torch

from modality_forcing import ModalityForcingPipeline
from modality_forcing.config import model_preset
from modality_forcing.inference.hub import is_repo_id
from modality_forcing.model.denoiser import ModalityForcingModel

pytest.importorskip("huggingface_hub")

REPO = "mf-tests/tiny-rgbd"


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.resolution = (16, 16)
    return ModalityForcingPipeline(ModalityForcingModel(cfg))


def _fill_cache(folder, cache, repo=REPO, revision="0123456789abcdef0123456789abcdef01234567"):
    """Lay out `folder` as huggingface_hub's cache holds a downloaded snapshot."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / revision)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)


def test_a_repo_id_loads_from_the_cache_offline(pipe, tmp_path, monkeypatch):
    pipe.save_pretrained(tmp_path / "ckpt")
    cache = tmp_path / "hf-cache"
    _fill_cache(tmp_path / "ckpt", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "mf-tests/tiny-rgbd" is no local folder here
    assert is_repo_id(REPO) and not is_repo_id(tmp_path / "ckpt")
    again = ModalityForcingPipeline.from_pretrained(REPO, cache_dir=cache, device="cpu")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = pipe(prompt="a box", mode="joint", num_inference_steps=2, generator=g())
    b = again(prompt="a box", mode="joint", num_inference_steps=2, generator=g())
    np.testing.assert_array_equal(a.image, b.image)
    with pytest.raises(FileNotFoundError, match="neither a local checkpoint folder nor a Hub"):
        ModalityForcingPipeline.from_pretrained("mf-tests/absent", cache_dir=cache)


class FolderHub:
    """A Hub stand-in that keeps uploads in local folders (the HfApi methods push_to_hub uses)."""

    def __init__(self, root):
        self.root, self.calls = root, []

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private))
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, repo_id, folder_path, commit_message):
        self.calls.append(("upload_folder", repo_id, commit_message))
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return f"file://{self.root / repo_id}"


def test_push_to_hub_uploads_the_checkpoint_with_a_model_card(pipe, tmp_path):
    hub = FolderHub(tmp_path / "hub")
    url = pipe.push_to_hub(REPO, private=True, api=hub)
    repo = tmp_path / "hub" / REPO
    assert url.endswith(REPO) and [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    card = (repo / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0") and "library_name: modality-forcing" in card
    assert f'from_pretrained("{REPO}")' in card and "Intended use" in card
    again = ModalityForcingPipeline.from_pretrained(repo, device="cpu")  # what was uploaded loads
    assert again.defaults == pipe.defaults
