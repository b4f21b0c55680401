"""`prepare-data` and `preview`: write and look at training data."""

from __future__ import annotations

import argparse

from .common import size


def _cmd_prepare_data(args: argparse.Namespace) -> None:
    from ..data.prepare import prepare_procedural

    height, width = args.size
    prepare_procedural(
        out_dir=args.out,
        split=args.split,
        num=args.num,
        height=height,
        width=width,
        sparsify=args.sparsify,
        shard_size=args.shard_size,
        depth_format=args.depth_format,
        shadows=not args.no_shadows,
    )


def add_prepare_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-data",
        help="write a dataset as webdataset tar shards",
        description="Render procedural RGB-D scenes into webdataset shards (resumable, atomic).",
    )
    p.add_argument("source", choices=["procedural"], help="data source to write")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--num", type=int, required=True, help="number of samples")
    p.add_argument("--size", type=size, default=(64, 64), help="N or HxW (default 64)")
    p.add_argument("--out", required=True, help="output directory for shards + index.json")
    p.add_argument(
        "--sparsify", default=None, help="sparse-depth simulator, e.g. lidar:32, random:0.05"
    )
    p.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard")
    p.add_argument(
        "--depth-format",
        choices=["png16", "npy"],
        default="png16",
        help="png16: 16-bit PNG in millimetres; npy: float32 metres",
    )
    p.add_argument("--no-shadows", action="store_true", help="render without cast shadows (faster)")
    p.set_defaults(func=_cmd_prepare_data)


def _cmd_preview(args: argparse.Namespace) -> None:
    from ..data.preview import write_preview

    height, width = args.size
    path = write_preview(
        args.out, shards=args.shards, split=args.split, num=args.num, height=height, width=width
    )
    print(f"wrote {path}")


def add_preview(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preview",
        help="contact sheet of RGB / depth / mask / caption",
        description="Write a PNG contact sheet of procedural samples, or of samples from shards.",
    )
    p.add_argument("--shards", default=None, help="shard directory from prepare-data (else render)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--size", type=size, default=(96, 128), help="N or HxW when rendering")
    p.add_argument("--out", default="outputs/preview.png")
    p.set_defaults(func=_cmd_preview)
