"""Checkpoints on the Hugging Face Hub: resolve a repo id to a local snapshot (through the
cache, honouring `HF_HUB_OFFLINE`), and share a pipeline as a repo with a model card.

`huggingface_hub` is optional (the `hub` extra); only these two functions import it.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from ..training.checkpoint import read_meta, read_model_config

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name"


def is_repo_id(path: str | Path) -> bool:
    """Whether `path` names a Hub repo ("org/name") rather than an existing local folder."""
    return not Path(path).exists() and bool(REPO_ID.match(str(path)))


def snapshot(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    token: str | None = None,
) -> Path:
    """The local folder of a Hub repo's snapshot: downloaded into the Hugging Face cache once,
    then read from it (`HF_HUB_OFFLINE=1` or `local_files_only=True`: the cache only).

    Raises:
        ImportError: huggingface_hub is missing (pip install 'modality-forcing[hub]').
        FileNotFoundError: offline and the repo is not in the cache, or no such repo.
    """
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as err:
        raise ImportError(
            f"'{repo_id}' is not a local folder; loading it from the Hugging Face Hub needs "
            "huggingface_hub: pip install 'modality-forcing[hub]'"
        ) from err
    options: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir, "token": token}
    if local_files_only is not None:
        options["local_files_only"] = local_files_only
    try:
        return Path(snapshot_download(repo_id, library_name="modality-forcing", **options))
    except (LocalEntryNotFoundError, RepositoryNotFoundError) as err:
        raise FileNotFoundError(
            f"'{repo_id}' is neither a local checkpoint folder nor a Hub repo that could be "
            f"fetched ({type(err).__name__}; offline, only the cache is searched)"
        ) from None


def model_card(folder: Path, repo_id: str, license: str = "apache-2.0") -> str:
    """A model card (README.md with Hub metadata) for a saved checkpoint folder: what it is,
    how it was made, what it measured, how to use it and what it is not for."""
    cfg = read_model_config(folder)
    meta = read_meta(folder)
    sampling = meta.get("sampling") or {}
    scores = meta.get("scores") or {}
    lines = [
        "---",
        f"license: {license}",
        "library_name: modality-forcing",
        "pipeline_tag: depth-estimation",
        "tags: [depth-estimation, text-to-image, diffusion, modality-forcing]",
        "---",
        "",
        f"# {repo_id}",
        "",
        "One diffusion transformer for joint image + depth generation with a noise level per "
        "modality (Modality Forcing): text -> image + depth, image -> depth, depth -> image.",
        "",
        "## Model",
        "",
        f"- family `{cfg.family}`, width {cfg.hidden_size}, {cfg.num_layers} joint + "
        f"{cfg.num_single_layers} single blocks, patch {cfg.patch_size}, modalities "
        f"{', '.join(cfg.modalities)}, working resolution {cfg.resolution}",
        f"- text encoder `{cfg.text.kind}`, image codec `{cfg.codec.kind}`",
    ]
    if meta.get("step") is not None:
        lines.append(f"- trained {meta['step']} steps (stage `{meta.get('stage', '?')}`)")
    if sampling:
        lines.append(f"- its own sampling defaults (chosen on val): `{json.dumps(sampling)}`")
    lines += ["", "## Measured", ""]
    if scores:
        lines += [f"- {k}: {v}" for k, v in scores.items()]
    else:
        lines.append(
            "No scores were stored with this checkpoint; measure it with "
            "`modality-forcing demo --ckpt` or `modality-forcing eval --ckpt`."
        )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from modality_forcing import ModalityForcingPipeline",
        "",
        f'pipe = ModalityForcingPipeline.from_pretrained("{repo_id}")',
        'out = pipe(prompt="a red sphere left of a blue box", mode="joint")',
        'depth = pipe(image=photo, mode="image_to_depth").depth',
        "```",
        "",
        "## Intended use and limits",
        "",
        "Research on joint image + depth generation. Depth is relative (unit mean), not metric. "
        "A model trained on the procedural world of modality-forcing has not seen real photos: "
        "measure it on your data before relying on it.",
        "",
    ]
    return "\n".join(lines)


def push_folder(
    folder: Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload modality-forcing checkpoint",
    api: Any = None,
) -> str:
    """Create (or reuse) the Hub repo and upload `folder` to it; returns the commit URL.
    `api` defaults to `huggingface_hub.HfApi()` (any object with its `create_repo` and
    `upload_folder` methods)."""
    if api is None:
        try:
            from huggingface_hub import HfApi
        except ImportError as err:
            raise ImportError(
                "push_to_hub needs huggingface_hub: pip install 'modality-forcing[hub]'"
            ) from err
        api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                             commit_message=commit_message)  # fmt: skip
    return str(getattr(info, "commit_url", info))


def save_for_hub(pipe: Any, repo_id: str, license: str = "apache-2.0") -> Path:
    """The pipeline saved into a temporary folder with its model card (README.md)."""
    folder = Path(tempfile.mkdtemp(prefix="mf-hub-")) / "checkpoint"
    pipe.save_pretrained(folder)
    (folder / "README.md").write_text(model_card(folder, repo_id, license))
    return folder
