"""The `modality-forcing` command line: thin argument parsing over library functions.

One module per group of subcommands (`data`, `train`, `infer`, `bench`); each command imports
what it needs lazily, so `--help` stays instant. Choices that mirror a registry (model families,
modes, budgets) are written out here for the same reason; tests/test_cli.py checks that they
match the registries.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import __version__
from .bench import add_bench
from .data import add_prepare_data, add_preview
from .infer import add_app, add_demo, add_eval, add_export, add_sample
from .train import add_memory, add_plot, add_presets, add_train

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_prepare_data,
    add_preview,
    add_bench,
    add_eval,
    add_train,
    add_presets,
    add_memory,
    add_plot,
    add_sample,
    add_demo,
    add_export,
    add_app,
]


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """`--debug` on every leaf command (the bench suites included)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        parser.add_argument(
            "--debug", action="store_true", help="show the full traceback of an error"
        )
    for sub in subs:
        for command in sub.choices.values():
            _add_debug(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modality-forcing",
        description="Joint image + depth generation with per-modality noise levels.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():
        _add_debug(command)
    return parser


# Failures a user can cause and fix (a bad file, path, value or a missing optional extra): one
# line naming what is wrong and exit code 2. Anything else is a bug and keeps its traceback.
ANTICIPATED = (ValueError, OSError, ImportError)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(2)
    try:
        args.func(args)
    except ANTICIPATED as err:
        if args.debug:
            raise
        parser.exit(2, f"modality-forcing {args.command}: error: {err}\n")
