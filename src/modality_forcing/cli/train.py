"""`train`, `memory`, `presets` and `plot`: training and what it costs."""

from __future__ import annotations

import argparse

from .common import add_hardware, size


def _cmd_train(args: argparse.Namespace) -> None:
    from ..config import load_train_config
    from ..training.loop import train

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out_dir={args.out}")
    if args.backbone:
        overrides.append(f"model.family={args.backbone}")
    if args.pretrained:
        overrides.append(f"model.backbone.pretrained={args.pretrained}")
    if args.precision:
        overrides.append(f"precision={args.precision}")
    if args.device:
        overrides.append(f"device={args.device}")
    cfg = load_train_config(args.config, overrides)
    resume = args.resume
    if args.fork_from:
        from pathlib import Path

        from ..training.run_dir import LATEST, fork_run

        if not (Path(cfg.out_dir) / "checkpoints" / LATEST).exists():  # else: resume the fork
            print(f"forked {fork_run(args.fork_from, cfg.out_dir)} into {cfg.out_dir}")
        resume = True
    final = train(cfg, resume=resume)
    print(f"final checkpoint: {final}")


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (T2I pre-training or Modality Forcing post-training)",
        description="Train with one loop for every stage and scale. Settings come from a YAML "
        "config (see configs/) plus dotted overrides, e.g. --set max_steps=200 optim.lr=1e-4.",
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML config file, or the name of a packaged one (cpu-s-t2i, cpu-s-mf, flagship-t2i, "
        "flagship-mf, tiny); default: built-in defaults",
    )
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--out", default=None, help="run directory (overrides out_dir)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the run's latest checkpoint"
    )
    p.add_argument(
        "--fork-from",
        default=None,
        metavar="RUN",
        help="continue run RUN's latest checkpoint (weights, optimiser, step) in --out under "
        "this config, leaving RUN as it is; run the same command again to resume the fork",
    )
    p.add_argument(
        "--backbone",
        choices=["native", "flux2", "flux", "sd3"],
        default=None,
        help="model family, e.g. a diffusers backbone (sets model.family)",
    )
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="DIR",
        help="diffusers pipeline dir (sets model.backbone.pretrained)",
    )
    add_hardware(p, default=None)
    p.set_defaults(func=_cmd_train)


def _cmd_memory(args: argparse.Namespace) -> None:
    from ..backbones.memory import memory_table

    print(memory_table(args.gpus, args.resolution, args.lora_rank, args.micro_batch))


def add_memory(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "memory",
        help="parameters and training memory of the adapted real backbones",
        description="Parameters the depth stream adds to FLUX.2 / FLUX.1 / SD3.5 and training "
        "memory per GPU under FSDP2, from configs alone (meta device: nothing is allocated).",
    )
    p.add_argument("--gpus", type=int, default=8, help="FSDP2 world size")
    p.add_argument("--resolution", type=size, default=(1024, 1024), help="N or HxW")
    p.add_argument("--lora-rank", type=int, default=64)
    p.add_argument("--micro-batch", type=int, default=1, help="samples per GPU per micro-step")
    p.set_defaults(func=_cmd_memory)


def _cmd_presets(args: argparse.Namespace) -> None:
    from ..model.summary import preset_table

    print(preset_table())


def add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets",
        help="list model size presets with parameters and FLOPs per token",
        description="Parameters and training FLOPs/token of every size preset, from configs "
        "alone (models are built on the meta device: nothing is allocated).",
    )
    p.set_defaults(func=_cmd_presets)


def _cmd_plot(args: argparse.Namespace) -> None:
    from ..training.curves import plot_training_curves

    print(f"wrote {plot_training_curves(args.runs, args.out)}")


def add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot training loss curves of one or more runs",
        description="Loss per modality vs step (runs concatenated in the given order, e.g. the "
        "T2I run then the MF run) and loss per noise-level bin, from metrics.jsonl.",
    )
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default="outputs/loss.png")
    p.set_defaults(func=_cmd_plot)
