"""The `modality-forcing` command line: thin argument parsing over library functions.

Each subcommand imports what it needs lazily so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


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


def _add_hardware(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """`--precision` and `--device`, the same on every command that runs a model."""
    keeps = (
        " (default: the config's `precision`, itself auto by default)" if default is None else ""
    )
    p.add_argument(
        "--precision", choices=["auto", "bf16", "fp32"], default=default,
        help="compute precision; auto: bf16 only where the device computes it natively (CUDA "
        "with bf16, a CPU where a cached GEMM probe shows bf16 clearly faster), else fp32" + keeps,
    )  # fmt: skip
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, mps (default: cuda > mps > cpu)")  # fmt: skip


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
    elif args.suite == "throughput":
        from .bench.throughput import ThroughputConfig, run_throughput

        out = args.out if args.out != "bench_out/data.json" else "bench_out/throughput.json"
        compiled = tuple(c == "compiled" for c in args.vs_compile)
        cfg = ThroughputConfig(presets=args.presets, resolution=args.resolution,
                               batch=args.batch, steps=args.steps,
                               precision=args.precision or "auto", device=args.device,
                               compile_blocks=args.compile, profile=args.profile, vs=args.vs,
                               vs_compile=compiled)  # fmt: skip
        run_throughput(cfg, out)
    elif args.suite == "sparse":
        from .bench.sparse import run_sparse_benchmark
        from .config import apply_overrides

        out = args.out if args.out != "bench_out/data.json" else "bench_out/sparse"
        dense_scene = apply_overrides({}, args.dense_scene or [])  # values parsed as YAML
        run_sparse_benchmark(out, args.budget, args.fills, args.settings, args.train_steps,
                             args.minutes_per_run, args.num_eval, args.init_from,
                             sensor_scale=args.sensor_scale, crop=args.crop,
                             split=args.split, dense_scene=dense_scene,
                             precision=args.precision, device=args.device)  # fmt: skip
    elif args.suite == "depth":
        from .bench.depth import run_depth_benchmark

        out = args.out if args.out != "bench_out/data.json" else "bench_out/depth"
        run_depth_benchmark(out, args.budget, args.recipes, args.init_from,
                            steps=args.train_steps, precision=args.precision,
                            device=args.device)  # fmt: skip
    elif args.suite == "probe":
        from .bench.probe import train_probe

        train_probe(**({"out_dir": args.out} if args.out != "bench_out/data.json" else {}))
    elif args.suite == "flagship":
        from .bench.flagship import run_flagship_benchmark, score_run

        out = args.out if args.out != "bench_out/data.json" else "bench_out/flagship"
        if args.run is not None:
            runs = args.run if len(args.run) > 1 else args.run[0]
            score_run(runs, out, args.num_eval or 64, args.precision or "auto")
        else:
            run_flagship_benchmark(out, args.recipes, args.minutes, args.eval_minutes,
                                   args.num_eval or 64, precision=args.precision,
                                   device=args.device)  # fmt: skip
    elif args.suite == "paper":
        from .bench.paper import run_paper_benchmark

        out = args.out if args.out != "bench_out/data.json" else "bench_out/paper"
        run_paper_benchmark(out, args.budget, precision=args.precision, device=args.device)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks that print a table and write JSON",
        description="Benchmarks. `data`: procedural scene generation speed (samples/s). "
        "`throughput`: training samples/s, tokens/s, TFLOP/s and MFU against a GEMM peak "
        "measured in the same run, and the depth stream's cost per token (MF vs T2I). "
        "`sparse`: dense vs sparse vs mixed depth training at equal compute, per missing-pixel "
        "fill, scored image -> depth on dense test scenes (output: a folder, default "
        "bench_out/sparse). `depth`: image -> depth of the MF model vs a deterministic "
        "regressor of the same size and compute, every inference setting, curves vs training "
        "time (output: a folder with REPORT.md, depth.json and plots; default bench_out/depth). "
        "`paper`: the paper's six claims in miniature (REPORT.md, paper.json and plots; default "
        "bench_out/paper). `probe`: train the attribute probe of the fidelity metrics "
        "(default: into the package's assets/probe). `flagship`: candidate recipes trained for "
        "--minutes each on this machine, checkpoints scored on val with every fidelity metric "
        "every --eval-minutes; curves and the chosen recipe (default bench_out/flagship).",
    )
    p.add_argument("suite", choices=["data", "throughput", "sparse", "depth", "paper", "probe",
                                      "flagship"])  # fmt: skip
    p.add_argument("--sizes", type=_size, nargs="+", default=[(64, 64), (256, 256)])
    p.add_argument("--seconds", type=float, default=5.0, help="time budget per measurement")
    p.add_argument("--out", default="bench_out/data.json")
    p.add_argument("--presets", nargs="+", default=["cpu-s", "cpu-m"], help="throughput presets")
    p.add_argument("--resolution", type=_size, default=(32, 32), help="throughput image size")
    p.add_argument("--batch", type=int, default=32, help="throughput batch size")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per measurement")
    p.add_argument(
        "--vs",
        choices=["diffusers"],
        default=None,
        help="throughput: race our MM-DiT against a diffusers SD3Transformer2DModel of "
        "the same width, depth, heads and tokens, side by side (bench/peer.py)",
    )
    p.add_argument(
        "--vs-compile",
        choices=["eager", "compiled"],
        nargs="+",
        default=["eager", "compiled"],
        type=str,
        help="throughput --vs: with and/or without torch.compile for both",
    )
    p.add_argument("--compile", action="store_true", help="throughput with torch.compile blocks")
    p.add_argument(
        "--profile",
        action="store_true",
        help="throughput: also profile where a step's time goes (GEMM, attention, "
        "fused elementwise, optimizer) and the MFU if only the GEMMs took time",
    )
    p.add_argument("--budget", choices=["tiny", "small", "full"], default="small",
                   help="sparse, depth, paper: compute per run (bench/sparse.py, bench/depth.py "
                        "BUDGETS)")  # fmt: skip
    p.add_argument("--recipes", nargs="+", default=None,
                   help="depth: training recipes (bench/depth.py RECIPES; default regressor "
                        "mf-naive mf); flagship: bench/flagship.py RECIPES")  # fmt: skip
    p.add_argument("--fills", nargs="+", default=None, help="sparse: neutral noise nearest")
    p.add_argument(
        "--settings",
        nargs="+",
        default=None,
        help="sparse: dense lidar:32 lidar:64 random:0.01 random:0.05 mixed[:SPEC]",
    )
    p.add_argument("--train-steps", type=int, default=None,
                   help="sparse, depth: override the budget's steps")  # fmt: skip
    p.add_argument("--minutes-per-run", type=float, default=None, help="sparse: wall-time cap")
    p.add_argument("--minutes", type=float, default=20.0,
                   help="flagship: training minutes per recipe (T2I share included)")  # fmt: skip
    p.add_argument(
        "--run",
        nargs="+",
        default=None,
        help="flagship: score every checkpoint of an existing run folder (t2i/, mf/ and "
        "mf2/..., as scripts/flagship_cpu.sh writes) instead of training recipes; several: "
        "side by side (e.g. A/B arms), the best last checkpoint on val chosen",
    )
    p.add_argument("--eval-minutes", type=float, default=5.0,
                   help="flagship: a checkpoint scored on val every this many minutes")  # fmt: skip
    p.add_argument("--num-eval", type=int, default=None,
                   help="sparse: test scenes scored; flagship: val scenes (64)")  # fmt: skip
    p.add_argument("--init-from", default=None,
                   help="sparse, depth: start each run from a checkpoint")  # fmt: skip
    p.add_argument("--sensor-scale", type=int, default=None,
                   help="sparse: render + sparsify at this multiple of the size")  # fmt: skip
    p.add_argument("--crop", type=float, default=None,
                   help="sparse: random crop of sparse training samples, smallest side "
                        "fraction in (0, 1], 1: none (MixtureEntry.crop; default 0.7)")  # fmt: skip
    p.add_argument("--dense-scene", nargs="+", default=None, metavar="KEY=VALUE",
                   help="sparse: SceneConfig overrides for the dense members only, e.g. "
                        "back_wall_prob=0 max_objects=3 (a 'synthetic' world unlike the test "
                        "scenes)")  # fmt: skip
    p.add_argument(
        "--split",
        choices=["val", "test"],
        default="test",
        help="sparse: procedural split scored (val to choose, test to report)",
    )
    _add_hardware(p, default=None)
    p.set_defaults(func=_cmd_bench)


def _cmd_eval(args: argparse.Namespace) -> None:
    from .inference.evaluate import evaluate_benchmark

    predictions = args.predictions
    if args.ckpt is not None:
        from .inference.predict import DepthPredictor, PredictConfig

        cfg = PredictConfig(num_steps=args.steps, ensemble_size=args.ensemble, seed=args.seed,
                            frame=args.frame, precision=args.precision,
                            device=args.device)  # fmt: skip
        predictions = DepthPredictor(args.ckpt, cfg)
    summary = evaluate_benchmark(
        args.dataset, args.data_root, predictions, args.out,
        split=args.split, split_file=args.split_file, protocol=args.protocol, limit=args.limit,
        depth_range=args.depth_range, size=args.size, prediction_space=args.prediction_space,
        resize_predictions=args.resize_predictions,
    )  # fmt: skip
    print(summary.to_markdown() + f"\nwrote {args.out}/summary.md, summary.json, per_sample.csv")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score depth predictions on a benchmark",
        description="Score depth predictions on a benchmark under alignment protocols. Writes "
        "per_sample.csv, summary.json and summary.md. Predictions: <key>.npy (float [H, W]) or "
        "<key>.png (16-bit, /1000) at ground-truth resolution, keys as the reader yields them.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="folder of prediction files")
    src.add_argument("--ckpt", help="model checkpoint: predict image -> depth with it")
    p.add_argument(
        "--dataset", required=True,
        help="nyuv2, kitti, eth3d, scannet, diode, folder or procedural",
    )  # fmt: skip
    p.add_argument("--data-root", default=None, help="dataset root folder")
    p.add_argument("--split", default=None, help="split name (each dataset has a default)")
    p.add_argument("--split-file", default=None, help="split list (format: see the reader)")
    p.add_argument(
        "--protocol", default="all",
        help="least_squares, least_squares_disparity, median, robust, none, or all",
    )  # fmt: skip
    p.add_argument("--out", default="eval_out", help="report folder")
    p.add_argument("--limit", type=int, default=None, help="first N samples (procedural: N)")
    p.add_argument("--depth-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"))
    p.add_argument("--size", type=_size, default=(64, 64), help="procedural scene size")
    p.add_argument("--prediction-space", choices=["depth", "disparity"], default="depth")
    p.add_argument("--resize-predictions", action="store_true", help="resize bilinearly to GT")
    p.add_argument("--steps", type=int, default=10, help="sampling steps (with --ckpt)")
    p.add_argument("--ensemble", type=int, default=1, help="ensemble size (with --ckpt)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --ckpt)")
    p.add_argument("--frame", choices=["letterbox", "stretch"], default="letterbox",
                   help="with --ckpt: how images of another size reach the model's working "
                        "size (stretch did better for square-trained models: "
                        "docs/depth_quality.md)")  # fmt: skip
    _add_hardware(p)
    p.set_defaults(func=_cmd_eval)


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import load_train_config
    from .training.loop import train

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

        from .training.run_dir import LATEST, fork_run

        if not (Path(cfg.out_dir) / "checkpoints" / LATEST).exists():  # else: resume the fork
            print(f"forked {fork_run(args.fork_from, cfg.out_dir)} into {cfg.out_dir}")
        resume = True
    final = train(cfg, resume=resume)
    print(f"final checkpoint: {final}")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (T2I pre-training or Modality Forcing post-training)",
        description="Train with one loop for every stage and scale. Settings come from a YAML "
        "config (see configs/) plus dotted overrides, e.g. --set max_steps=200 optim.lr=1e-4.",
    )
    p.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
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
    p.add_argument("--backbone", choices=["native", "flux2", "flux", "sd3"], default=None,
                   help="model family, e.g. a diffusers backbone (sets model.family)")  # fmt: skip
    p.add_argument("--pretrained", default=None, metavar="DIR",
                   help="diffusers pipeline dir (sets model.backbone.pretrained)")  # fmt: skip
    _add_hardware(p, default=None)
    p.set_defaults(func=_cmd_train)


def _cmd_memory(args: argparse.Namespace) -> None:
    from .backbones.memory import memory_table

    print(memory_table(args.gpus, args.resolution, args.lora_rank, args.micro_batch))


def _add_memory(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "memory",
        help="parameters and training memory of the adapted real backbones",
        description="Parameters the depth stream adds to FLUX.2 / FLUX.1 / SD3.5 and training "
        "memory per GPU under FSDP2, from configs alone (meta device: nothing is allocated).",
    )
    p.add_argument("--gpus", type=int, default=8, help="FSDP2 world size")
    p.add_argument("--resolution", type=_size, default=(1024, 1024), help="N or HxW")
    p.add_argument("--lora-rank", type=int, default=64)
    p.add_argument("--micro-batch", type=int, default=1, help="samples per GPU per micro-step")
    p.set_defaults(func=_cmd_memory)


def _cmd_presets(args: argparse.Namespace) -> None:
    from .model.summary import preset_table

    print(preset_table())


def _add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets",
        help="list model size presets with parameters and FLOPs per token",
        description="Parameters and training FLOPs/token of every size preset, from configs "
        "alone (models are built on the meta device: nothing is allocated).",
    )
    p.set_defaults(func=_cmd_presets)


def _cmd_plot(args: argparse.Namespace) -> None:
    from .bench.plots import plot_training_curves

    print(f"wrote {plot_training_curves(args.runs, args.out)}")


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot training loss curves of one or more runs",
        description="Loss per modality vs step (runs concatenated in the given order, e.g. the "
        "T2I run then the MF run) and loss per noise-level bin, from metrics.jsonl.",
    )
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default="outputs/loss.png")
    p.set_defaults(func=_cmd_plot)


def _cmd_sample(args: argparse.Namespace) -> None:
    from .inference.jobs import SampleRequest, run_sample_jobs
    from .inference.pipeline import ModalityForcingPipeline

    official = args.format == "official"
    extra = {"text_encoder": args.text_encoder, "vae": args.vae} if official else {}
    pipe = ModalityForcingPipeline.from_pretrained(
        args.ckpt, torch_dtype=args.precision, device=args.device, format=args.format, **extra
    )
    print(f"precision {pipe.precision.precision} on {pipe.precision.device}: "
          f"{pipe.precision.reason}")  # fmt: skip
    steps = pipe.default_steps(args.mode) if args.steps is None else args.steps
    log2_alpha = pipe.defaults["log2_alpha"] if args.log2_alpha is None else args.log2_alpha
    req = SampleRequest(
        mode=args.mode, prompts=args.prompt or [], image=args.image, depth=args.depth,
        steps=steps, guidance=args.guidance, seeds=args.seeds, ensemble=args.ensemble,
        fov_deg=args.fov, log2_alpha=log2_alpha, refine=args.refine, size=args.size,
    )  # fmt: skip
    entries = run_sample_jobs(pipe, req, args.out)
    for entry in entries:
        print(f"{entry['title']}: {Path(entry['files']['metadata']).parent}")
    print(f"gallery: {Path(args.out) / 'index.html'}")


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="generate with a checkpoint: joint, image_to_depth, depth_to_image, marginal",
        description="Sample any mode of a trained checkpoint. Each input x seed gets a folder with "
        "rgb.png, depth.npy (relative depth, unit mean), depth16.png, colour maps, uncertainty, "
        "cloud.ply/.glb and metadata.json; all together get index.html and contact_sheet.png.",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint directory (e.g. runs/x/final)")
    p.add_argument("--mode", default="joint",
                   choices=["joint", "image_to_depth", "depth_to_image", "marginal"])  # fmt: skip
    p.add_argument("--prompt", action="append", help="text prompt (repeat for several)")
    p.add_argument("--image", default=None, help="image file or folder (image_to_depth)")
    p.add_argument("--depth", default=None, help="depth .npy (m) or 16-bit .png (mm)")
    p.add_argument("--out", default="outputs/samples", help="output folder")
    p.add_argument("--format", default="native", choices=["native", "official"],
                   help="official: a released flux_rgbd directory")  # fmt: skip
    p.add_argument("--text-encoder", default=None, help="official: local Qwen3-8B directory")
    p.add_argument("--vae", default=None,
                   help="official: diffusers FLUX.2 VAE dir (default: release AE)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default per format: 25 native, 50 official)")  # fmt: skip
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default per mode)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one result per seed")
    p.add_argument("--ensemble", type=int, default=1, help="depth samples to ensemble")
    p.add_argument("--fov", type=float, default=60.0, help="vertical FOV for point clouds (deg)")
    p.add_argument("--log2-alpha", type=float, default=None,
                   help="joint: depth lags image if > 0 (0 native, 5 official)")  # fmt: skip
    p.add_argument("--refine", action="store_true", help="joint: re-estimate depth from image")
    p.add_argument("--size", type=_size, default=None, help="output HxW for text modes")
    _add_hardware(p)
    p.set_defaults(func=_cmd_sample)


def _cmd_demo(args: argparse.Namespace) -> None:
    from .inference.demo import DemoConfig, demo_summary, run_demo

    cfg = DemoConfig(num_eval=args.num_eval, num_generate=args.num_generate, steps=args.steps,
                     ensemble=args.ensemble, depth_steps=args.depth_steps,
                     precision=args.precision, device=args.device)  # fmt: skip
    print(demo_summary(run_demo(args.ckpt, args.out, cfg)))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run every mode of the shipped checkpoint, write a gallery, score image->depth",
        description="The main job: text -> image + depth, image -> depth (ensemble + "
        "uncertainty) and depth -> image on procedural scenes with the checkpoint shipped in the "
        "package (or --ckpt), an HTML gallery with point clouds, and image->depth AbsRel/delta1 "
        "on the held-out procedural test split.",
    )
    p.add_argument("--ckpt", default=None, help="checkpoint dir (default: the shipped one)")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--num-eval", type=int, default=100,
                   help="test scenes to score image -> depth on")  # fmt: skip
    p.add_argument("--num-generate", type=int, default=32,
                   help="test scenes to score depth -> image and text -> image on")  # fmt: skip
    p.add_argument("--steps", type=int, default=10, help="joint / depth->image sampling steps")
    p.add_argument("--depth-steps", type=int, default=1,
                   help="image->depth steps of the scored prediction (1: best on val)")  # fmt: skip
    p.add_argument("--ensemble", type=int, default=3, help="image->depth ensemble size (gallery)")
    _add_hardware(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_export(args: argparse.Namespace) -> None:
    from .training.checkpoint import export_checkpoint

    sampling: dict[str, dict[str, float]] = {}
    for field, items, kind in (("guidance", args.guidance, float), ("steps", args.steps, int)):
        for item in items:
            mode, _, value = item.partition("=")
            try:
                sampling.setdefault(field, {})[mode] = kind(value)
            except ValueError:
                raise ValueError(f"--{field} '{item}' is not MODE=VALUE (e.g. joint=3)") from None
    out = export_checkpoint(args.ckpt, args.out, args.dtype, args.max_shard_mb, sampling)
    print(f"wrote {out}")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-checkpoint",
        help="copy inference weights (bf16 by default) + config, without training state",
        description="Make a compact inference checkpoint, e.g. the demo checkpoint shipped in "
        "src/modality_forcing/assets/demo.",
    )
    p.add_argument("ckpt", help="source checkpoint dir (e.g. runs/cpu-s-mf/final)")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--max-shard-mb", type=float, default=None,
                   help="split the weights into safetensors shards of at most this many MiB "
                        "(+ model.safetensors.index.json)")  # fmt: skip
    p.add_argument("--guidance", nargs="+", default=[], metavar="MODE=SCALE",
                   help="the checkpoint's own CFG scale per mode (joint, marginal, "
                        "depth_to_image), chosen on val with scripts/tune_sampling.py; "
                        "pipelines loading it use these as defaults")  # fmt: skip
    p.add_argument("--steps", nargs="+", default=[], metavar="MODE=N",
                   help="the checkpoint's own sampler steps per mode "
                        "(e.g. image_to_depth=1)")  # fmt: skip
    p.set_defaults(func=_cmd_export)


def _cmd_app(args: argparse.Namespace) -> None:
    try:
        from .app import launch, resolve_auth
    except ImportError as err:  # gradio is the optional `app` extra
        raise SystemExit(f"modality-forcing app: {err}") from None
    auth = resolve_auth(args.auth)
    print(f"serving http://{args.host}:{args.port} (Ctrl+C stops)")
    launch(args.ckpt, args.host, args.port, auth=auth, precision=args.precision,
           device=args.device)  # fmt: skip


def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="web UI (Gradio) for text -> RGB + depth, image -> depth and depth -> image",
        description="Serve a Gradio app with one tab per mode: colour maps, uncertainty, an "
        "interactive point cloud and depth .npy / 16-bit PNG / PLY / GLB downloads. Needs the "
        "`app` extra: pip install 'modality-forcing[app]'.",
    )
    p.add_argument("--ckpt", default=None, help="checkpoint dir (default: the shipped one)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves the local network")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", default=None, metavar="USER",
                   help="require a login as USER; the password comes from the MF_APP_PASSWORD "
                        "environment variable or a prompt (never the command line). Serving "
                        "0.0.0.0 without it warns")  # fmt: skip
    _add_hardware(p)
    p.set_defaults(func=_cmd_app)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_prepare_data,
    _add_preview,
    _add_bench,
    _add_eval,
    _add_train,
    _add_presets,
    _add_memory,
    _add_plot,
    _add_sample,
    _add_demo,
    _add_export,
    _add_app,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modality-forcing",
        description="Joint image + depth generation with per-modality noise levels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true",
                             help="show the full traceback of an error")  # fmt: skip
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
