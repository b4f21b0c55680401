"""Webdataset tar shards of RGB-D samples: an atomic, resumable writer and a fault-tolerant reader.

Per sample `KEY.rgb.png`, `KEY.depth.png` (16-bit millimetres, 0 invalid, > 65.535 m saturates to
invalid) or `KEY.depth.npy` (float32 metres), `KEY.mask.png` (0/255), `KEY.txt` (caption) and
`KEY.json` (key, depth_format, intrinsics, scene). `index.json` lists finished shards (with their
size and SHA-256) and the arguments that made them, so re-running a command skips what is done
and rewrites a shard that was truncated or altered since.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from webdataset import TarWriter
from webdataset.tariterators import group_by_keys, tar_file_iterator

from . import decode
from .batch import collate, sanitize_depth

INDEX_NAME = "index.json"
INDEX_FORMAT = "modality-forcing-shards/1"
DEPTH_FORMATS = ("png16", "npy")

# --------------------------------------------------------------------------------------------
# sample <-> tar record
# --------------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """json.dumps fallback for numpy scalars and arrays inside scene descriptions."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode_sample(sample: dict[str, Any], depth_format: str = "png16") -> dict[str, Any]:
    """Sample (see `data.batch`) -> tar record {`__key__`, `rgb.png`, `depth.*`, ...} of bytes."""
    if depth_format not in DEPTH_FORMATS:
        raise ValueError(
            f"unknown depth format '{depth_format}'; choose from {list(DEPTH_FORMATS)}"
        )
    key = str(sample["key"])
    depth, valid = sanitize_depth(sample["depth"], sample.get("valid_mask"))
    meta = {"key": key, "depth_format": depth_format, "scene": sample.get("scene")}
    if sample.get("intrinsics") is not None:
        meta["intrinsics"] = np.asarray(sample["intrinsics"], np.float64).tolist()
    record = {
        # webdataset splits a member name at its first dot, so the tar key must not contain one.
        "__key__": key.replace(".", "_"),
        "rgb.png": decode.encode_png(np.asarray(sample["image"], np.uint8)),
        "mask.png": decode.encode_mask(valid),
        "txt": str(sample.get("caption") or "").encode("utf-8"),
    }
    if depth_format == "png16":
        record["depth.png"] = decode.encode_depth_png16(depth, valid)
    else:
        record["depth.npy"] = decode.encode_npy(depth)
    meta["members"] = sorted(k for k in record if not k.startswith("_"))
    record["json"] = json.dumps(meta, default=_jsonable).encode("utf-8")
    return record


def decode_sample(
    record: dict[str, Any], stats: decode.SkipCounter | None = None
) -> dict[str, Any] | None:
    """Tar record -> sample, or None (counted in `stats`) when a member is missing or corrupt.

    Raises:
        ValueError: image and depth sizes disagree.
    """
    stats = stats if stats is not None else decode.SkipCounter()
    name = f"{record.get('__url__', '?')}:{record.get('__key__', '?')}"
    if "rgb.png" not in record:
        stats.record("missing_image", name)
        return None
    try:
        meta = json.loads(record["json"]) if "json" in record else {}
        meta = meta if isinstance(meta, dict) else {}  # foreign shards may store anything
        missing = sorted(set(meta.get("members", [])) - set(record))
        if missing:
            # Our writer lists every member it stores: a gap means a shard cut off mid-sample.
            stats.record("incomplete_sample", name, f"missing {', '.join(missing)}")
            return None
        image = decode.decode_image(record["rgb.png"], f"{name}.rgb.png")
        depth = None
        if "depth.png" in record:
            depth = decode.decode_depth_png(record["depth.png"], f"{name}.depth.png")
        elif "depth.npy" in record:
            depth = decode.decode_depth_npy(record["depth.npy"], f"{name}.depth.npy")
        mask = (
            decode.decode_mask(record["mask.png"], f"{name}.mask.png")
            if "mask.png" in record
            else None
        )
    except (decode.CorruptFileError, json.JSONDecodeError, UnicodeDecodeError) as err:
        stats.record("corrupt_file", name, str(err))
        return None
    extras: dict[str, Any] = {
        "key": meta.get("key", record.get("__key__")),
        "scene": meta.get("scene"),
    }
    if meta.get("intrinsics") is not None:
        extras["intrinsics"] = np.asarray(meta["intrinsics"], np.float32)
    caption = decode.decode_text(record["txt"]) if "txt" in record else None
    return decode.assemble_sample(name, image, depth, mask, caption, extras, stats)


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise(obj: Any) -> Any:
    """What `obj` looks like after a JSON round trip (tuples -> lists), to compare with an index."""
    return json.loads(json.dumps(obj, default=_jsonable))


@dataclass
class ShardWriter:
    """Writes numbered shards into `out_dir` atomically and keeps `index.json` current.

    Attributes:
        out_dir: directory for `PREFIX-000000.tar` ... and `index.json`.
        args: everything that determines the content (source, split, sizes, sparsifier, ...);
            an existing index with different args is an error, never silently mixed.
        depth_format: `png16` (millimetres) or `npy` (float32 metres).
        prefix: shard file name prefix.
    """

    out_dir: Path
    args: dict[str, Any]
    depth_format: str = "png16"
    prefix: str = "shard"
    index: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        if self.depth_format not in DEPTH_FORMATS:
            raise ValueError(
                f"unknown depth format '{self.depth_format}'; choose from {list(DEPTH_FORMATS)}"
            )
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.args = _normalise({**self.args, "depth_format": self.depth_format})
        path = self.out_dir / INDEX_NAME
        if path.exists():
            self.index = json.loads(path.read_text())
            old = self.index.get("args", {})
            if old != self.args:
                diff = sorted(
                    k for k in set(old) | set(self.args) if old.get(k) != self.args.get(k)
                )
                detail = ", ".join(f"{k}: {old.get(k)!r} -> {self.args.get(k)!r}" for k in diff)
                raise ValueError(
                    f"{self.out_dir} holds shards written with other arguments ({detail}); "
                    "use the same arguments to resume, or another output directory"
                )
        else:
            self.index = {
                "format": INDEX_FORMAT,
                "args": self.args,
                "complete": False,
                "shards": [],
            }
        # Leftovers of an interrupted write are never valid shards.
        for tmp in self.out_dir.glob(f"{self.prefix}-*.tar.tmp"):
            tmp.unlink()

    def shard_name(self, number: int) -> str:
        return f"{self.prefix}-{number:06d}.tar"

    def is_done(self, number: int) -> bool:
        """Whether shard `number` is listed in the index and its file still matches the size and
        SHA-256 recorded there (a mismatch is warned about; the caller writes the shard again).

        A shard listed by an older index without a hash is read through once: when every
        sample decodes, its size and hash are recorded; otherwise it counts as not done.
        """
        entry = next((s for s in self.index["shards"] if s["number"] == number), None)
        path = self.out_dir / entry["name"] if entry is not None else None
        if path is None or not path.is_file():
            return False
        if "sha256" not in entry:
            return self._adopt(entry, path)
        size = path.stat().st_size
        if size != entry.get("size"):
            problem = f"{size} bytes instead of {entry.get('size')}"
        elif _sha256(path) != entry["sha256"]:
            problem = "its SHA-256 differs"
        else:
            return True
        warnings.warn(
            f"{path} does not match {INDEX_NAME} ({problem}); writing it again",
            RuntimeWarning,
            stacklevel=2,
        )
        return False

    def _adopt(self, entry: dict[str, Any], path: Path) -> bool:
        """Verify a shard of an index without hashes by decoding it; record its hash if good."""
        stats = decode.SkipCounter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bad shard is written again, not reported
            count = sum(1 for _ in iter_shard_samples(path, stats))
        bad = sum(n for reason, n in stats.counts.items() if reason not in stats.QUIET)
        if bad or count != entry["count"]:
            return False
        entry.update(size=path.stat().st_size, sha256=_sha256(path))
        _atomic_write_json(self.out_dir / INDEX_NAME, self.index)
        return True

    def write(self, number: int, samples: Sequence[dict[str, Any]]) -> Path:
        """Write one shard (temp file, fsync, rename) and record it in the index."""
        path = self.out_dir / self.shard_name(number)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            # Fixed mtime so the same arguments give byte-identical shards.
            with TarWriter(f, encoder=False, mtime=0.0) as sink:
                for sample in samples:
                    sink.write(encode_sample(sample, self.depth_format))
            f.flush()
            os.fsync(f.fileno())
        size, sha256 = tmp.stat().st_size, _sha256(tmp)
        os.replace(tmp, path)
        entry = {
            "number": number,
            "name": path.name,
            "count": len(samples),
            "size": size,
            "sha256": sha256,
            "first_key": str(samples[0]["key"]) if samples else None,
            "last_key": str(samples[-1]["key"]) if samples else None,
        }
        shards = [s for s in self.index["shards"] if s["number"] != number] + [entry]
        self.index["shards"] = sorted(shards, key=lambda s: s["number"])
        self.index["num_samples"] = sum(s["count"] for s in self.index["shards"])
        _atomic_write_json(self.out_dir / INDEX_NAME, self.index)
        return path

    def finish(self) -> None:
        self.index["complete"] = True
        _atomic_write_json(self.out_dir / INDEX_NAME, self.index)


def write_shards(
    out_dir: str | Path,
    num: int,
    make_samples: Callable[[int, int], list[dict[str, Any]]],
    args: dict[str, Any],
    shard_size: int = 1000,
    depth_format: str = "png16",
    progress: bool = True,
) -> Path:
    """Write `num` samples as shards of `shard_size`, resuming after an interruption.

    Args:
        out_dir: output directory.
        num: total number of samples.
        make_samples: (start, count) -> that many samples; must be deterministic, because on
            resume only the missing shards are regenerated.
        args: generation arguments recorded in (and checked against) `index.json`.
        shard_size: samples per shard.
        depth_format: `png16` or `npy`.
        progress: show a tqdm bar.

    Returns:
        out_dir as a Path.
    """
    if num < 1 or shard_size < 1:
        raise ValueError(f"num and shard_size must be >= 1, got {num} and {shard_size}")
    args = {**args, "num": num, "shard_size": shard_size}
    writer = ShardWriter(Path(out_dir), args, depth_format)
    with tqdm(total=num, unit="sample", disable=not progress, desc="writing shards") as bar:
        for number in range(math.ceil(num / shard_size)):
            start = number * shard_size
            count = min(shard_size, num - start)
            if not writer.is_done(number):
                writer.write(number, make_samples(start, count))
            bar.update(count)
    writer.finish()
    return writer.out_dir


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------


def shard_paths(source: str | Path | Iterable[str | Path]) -> list[Path]:
    """Shard files of a directory (ordered by its index.json, else `*.tar`), a .tar, or a list.

    Raises:
        FileNotFoundError: a path does not exist, or a directory holds no shards.
    """
    if not isinstance(source, (str, Path)):
        return [p for item in source for p in shard_paths(item)]
    path = Path(source)
    if path.is_dir():
        index = path / INDEX_NAME
        if index.exists():
            return [path / s["name"] for s in json.loads(index.read_text())["shards"]]
        paths = sorted(path.glob("*.tar"))
        if not paths:
            raise FileNotFoundError(f"no index.json or *.tar shards in {path}")
        return paths
    if not path.exists():
        raise FileNotFoundError(f"shard {path} does not exist")
    return [path]


def _tar_records(path: Path, stats: decode.SkipCounter) -> Iterator[dict[str, Any]]:
    """Members of one tar as {fname, data, __url__}; a truncated or corrupt tar ends, warned."""

    def on_member_error(err: Exception) -> bool:
        stats.record("corrupt_member", str(path), str(err))
        return True

    try:
        with open(path, "rb") as f:
            for member in tar_file_iterator(f, handler=on_member_error):
                member["__url__"] = str(path)
                yield member
    except Exception as err:  # tarfile raises ReadError / EOFError / OSError on truncation
        stats.record("corrupt_shard", str(path), f"{type(err).__name__}: {err}")


def iter_shard_samples(
    source: str | Path | Iterable[str | Path], stats: decode.SkipCounter | None = None
) -> Iterator[dict[str, Any]]:
    """Decode every sample of the shards in order; bad members are skipped and counted.

    Args:
        source: see `shard_paths`.
        stats: counter of skipped/repaired samples (a fresh one when None).

    Yields:
        samples in the `data.batch` convention (`image`, `depth`, `valid_mask`, `caption`,
        `key`, `scene`, `intrinsics`).
    """
    stats = stats if stats is not None else decode.SkipCounter()

    def on_group_error(err: Exception) -> bool:  # e.g. a member name repeated inside one tar
        stats.record("corrupt_member", str(err.args[0]) if err.args else "?", "")
        return True

    for path in shard_paths(source):
        records = _tar_records(path, stats)
        for record in group_by_keys(records, handler=on_group_error):
            sample = decode_sample(record, stats)
            if sample is not None:
                yield sample


def iter_batches(
    samples: Iterable[dict[str, Any]], batch_size: int, drop_last: bool = False
) -> Iterator[dict[str, Any]]:
    """Group samples into collated batches (`data.batch.collate`)."""
    chunk: list[dict[str, Any]] = []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == batch_size:
            yield collate(chunk)
            chunk = []
    if chunk and not drop_last:
        yield collate(chunk)


class ShardDataset(torch.utils.data.IterableDataset):
    """Streams collated batches (or samples) from shards; shards are split over ranks and workers.

    Each DataLoader worker (and each rank under torch.distributed) reads a disjoint subset of the
    shards, so use at least as many shards as ranks x workers. Use with `DataLoader(ds,
    batch_size=None)` since batching happens here. `stats` counts skips in this process only.

    Args:
        source: shard directory, one .tar, or a list of paths.
        batch_size: samples per batch; None yields single samples.
        shuffle_buffer: size of the sample shuffle buffer (0 = keep shard order).
        seed: base seed for shard-order and buffer shuffling; mixed with the epoch.
        drop_last: drop the last incomplete batch.
        stats: where to count skipped samples (a fresh counter when None), e.g. one shared over
            epochs.
    """

    def __init__(
        self,
        source: str | Path | Iterable[str | Path],
        batch_size: int | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        stats: decode.SkipCounter | None = None,
    ) -> None:
        super().__init__()
        self.paths = shard_paths(source)
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.stats = stats if stats is not None else decode.SkipCounter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_paths(self) -> list[Path]:
        """This rank's and worker's share of the shards (shuffled per epoch when shuffling)."""
        paths = list(self.paths)
        if self.shuffle_buffer > 0:
            random.Random(self.seed * 100_003 + self.epoch).shuffle(paths)
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return paths[rank * workers + worker :: world * workers]

    def _shuffled(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed * 100_003 + self.epoch + 1)
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        samples = iter_shard_samples(self._my_paths(), self.stats)
        if self.shuffle_buffer > 0:
            samples = self._shuffled(samples)
        if self.batch_size is None:
            yield from samples
        else:
            yield from iter_batches(samples, self.batch_size, self.drop_last)
