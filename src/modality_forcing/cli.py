"""The `modality-forcing` command line: thin argument parsing over library functions.

Each subcommand imports what it needs lazily so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _size(text: str) -> tuple[int, int]:
    """Parse `64` or `48x64` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size '{text}' must be N or HxW, e.g. 64 or 48x64"
        ) from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"size '{text}' must be N or HxW with sides >= 8")
    return parts[0], parts[1]


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------


def _cmd_prepare_data(args: argparse.Namespace) -> None:
    from .data.prepare import prepare_procedural

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


def _add_prepare_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-data",
        help="write a dataset as webdataset tar shards",
        description="Render procedural RGB-D scenes into webdataset shards (resumable, atomic).",
    )
    p.add_argument("source", choices=["procedural"], help="data source to write")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--num", type=int, required=True, help="number of samples")
    p.add_argument("--size", type=_size, default=(64, 64), help="N or HxW (default 64)")
    p.add_argument("--out", required=True, help="output directory for shards + index.json")
    p.add_argument(
        "--sparsify", default=None, help="sparse-depth simulator, e.g. lidar:32, random:0.05"
    )
    p.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard")
    p.add_argument(
        "--depth-format", choices=["png16", "npy"], default="png16",
        help="png16: 16-bit PNG in millimetres; npy: float32 metres",
    )  # fmt: skip
    p.add_argument("--no-shadows", action="store_true", help="render without cast shadows (faster)")
    p.set_defaults(func=_cmd_prepare_data)


def _cmd_preview(args: argparse.Namespace) -> None:
    from .data.preview import write_preview

    height, width = args.size
    path = write_preview(
        args.out, shards=args.shards, split=args.split, num=args.num, height=height, width=width
    )
    print(f"wrote {path}")


def _add_preview(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preview",
        help="contact sheet of RGB / depth / mask / caption",
        description="Write a PNG contact sheet of procedural samples, or of samples from shards.",
    )
    p.add_argument("--shards", default=None, help="shard directory from prepare-data (else render)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--size", type=_size, default=(96, 128), help="N or HxW when rendering")
    p.add_argument("--out", default="outputs/preview.png")
    p.set_defaults(func=_cmd_preview)


def _cmd_bench(args: argparse.Namespace) -> None:
    if args.suite == "data":
        from .bench.data_speed import run_data_benchmark

        run_data_benchmark(sizes=args.sizes, seconds=args.seconds, out=args.out)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks that print a table and write JSON",
        description="Benchmarks. `data`: procedural scene generation speed (samples/s).",
    )
    p.add_argument("suite", choices=["data"])
    p.add_argument("--sizes", type=_size, nargs="+", default=[(64, 64), (256, 256)])
    p.add_argument("--seconds", type=float, default=5.0, help="time budget per measurement")
    p.add_argument("--out", default="bench_out/data.json")
    p.set_defaults(func=_cmd_bench)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_prepare_data,
    _add_preview,
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modality-forcing",
        description="Joint image + depth generation with per-modality noise levels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(2)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"modality-forcing {args.command}: error: {err}\n")
