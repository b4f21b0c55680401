"""`sample`, `demo`, `export-checkpoint`, `eval` and `app`: using a trained checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_hardware, add_sampling, sampling_from, size

LONG_RUN_STEPS = 20  # sampling runs this long get a per-step progress bar in `sample`
SAMPLE_FLAGS = (
    "steps",
    "guidance",
    "solver",
    "shift_mu",
    "log2_alpha",
    "ensemble",
    "reduction",
    "frame",
    "completion_post",
)


def _cmd_sample(args: argparse.Namespace) -> None:
    from ..demo import demo_checkpoint
    from ..inference.export import output_files
    from ..inference.jobs import SampleRequest, run_sample_jobs
    from ..inference.pipeline import ModalityForcingPipeline

    official = args.format == "official"
    extra = {"text_encoder": args.text_encoder, "vae": args.vae} if official else {}
    if args.ckpt is None and official:
        raise ValueError("--format official needs --ckpt RELEASE_DIR")
    ckpt = args.ckpt if args.ckpt is not None else demo_checkpoint(None)
    pipe = ModalityForcingPipeline.from_pretrained(
        ckpt, torch_dtype=args.precision, device=args.device, format=args.format, **extra
    )
    print(
        f"precision {pipe.precision.precision} on {pipe.precision.device}: {pipe.precision.reason}"
    )
    if pipe.sampling_for(args.mode, sampling_from(args)).steps >= LONG_RUN_STEPS:
        pipe.set_progress_bar_config(disable=False, leave=False)  # a bar per sampling run
    req = SampleRequest(
        mode=args.mode,
        prompts=args.prompt or [],
        image=args.image,
        depth=args.depth,
        sparse=args.sparse,
        seeds=args.seeds,
        sampling=sampling_from(args, refine_depth=args.refine),
        fov_deg=args.fov,
        size=args.size,
        outputs=output_files(args.outputs.split(",")) if args.outputs else None,
        recursive=args.recursive,
    )
    entries = run_sample_jobs(pipe, req, args.out)
    for entry in entries:
        print(f"{entry['title']}: {Path(entry['files']['metadata']).parent}")
    print(f"gallery: {Path(args.out) / 'index.html'}")


def add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="generate with a checkpoint: joint, image_to_depth, depth_to_image, marginal, "
        "depth_completion",
        description="Sample any mode of a trained checkpoint. Each input x seed gets a folder with "
        "rgb.png, depth.npy (relative depth, unit mean), depth16.png, colour maps, uncertainty, "
        "cloud.ply/.glb and metadata.json; all together get index.html and contact_sheet.png.",
    )
    p.add_argument(
        "--ckpt", default=None, help="checkpoint directory (default: the shipped checkpoint)"
    )
    p.add_argument(
        "--mode",
        default="joint",
        choices=["joint", "image_to_depth", "depth_to_image", "marginal", "depth_completion"],
        help="depth_completion: --image + --sparse known points -> depth in metres",
    )
    p.add_argument("--prompt", action="append", help="text prompt (repeat for several)")
    p.add_argument("--image", default=None, help="image file or folder (image_to_depth)")
    p.add_argument(
        "--recursive", action="store_true", help="--image FOLDER: its subfolders' images too"
    )
    p.add_argument("--depth", default=None, help="depth .npy (m) or 16-bit .png (mm)")
    p.add_argument(
        "--sparse",
        default=None,
        help="depth_completion: known depth points, a .npy map in metres (0 = unknown) or "
        "[N, 3] rows of x, y, metres; a 16-bit .png in millimetres; or an .npz with depth + mask",
    )
    p.add_argument("--out", default="outputs/samples", help="output folder")
    p.add_argument(
        "--format",
        default="native",
        choices=["native", "official"],
        help="official: a released flux_rgbd directory",
    )
    p.add_argument("--text-encoder", default=None, help="official: local Qwen3-8B directory")
    p.add_argument(
        "--vae", default=None, help="official: diffusers FLUX.2 VAE dir (default: release AE)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one result per seed")
    p.add_argument("--fov", type=float, default=60.0, help="vertical FOV for point clouds (deg)")
    p.add_argument(
        "--outputs",
        default=None,
        metavar="LIST",
        help="files per result, comma-separated from rgb, depth, depth16, color, disparity, "
        "uncertainty, ply, glb (default: all), e.g. --outputs depth,color",
    )
    p.add_argument("--refine", action="store_true", help="joint: re-estimate depth from image")
    p.add_argument("--size", type=size, default=None, help="output HxW for text modes")
    add_sampling(p, *SAMPLE_FLAGS)
    add_hardware(p)
    p.set_defaults(func=_cmd_sample)


def _cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import DemoConfig, demo_summary, run_demo

    base = DemoConfig()
    cfg = DemoConfig(
        num_eval=args.num_eval,
        num_generate=args.num_generate,
        generation=sampling_from(args, base=base.generation),
        depth=sampling_from(args, "depth_", base=base.depth),
        gallery_depth=base.gallery_depth.with_overrides(ensemble=args.ensemble),
        precision=args.precision,
        device=args.device,
    )
    print(demo_summary(run_demo(args.ckpt, args.out, cfg)))


def add_demo(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--num-eval", type=int, default=100, help="test scenes to score image -> depth on"
    )
    p.add_argument(
        "--num-generate",
        type=int,
        default=32,
        help="test scenes to score depth -> image and text -> image on",
    )
    add_sampling(p, "steps", "guidance")  # joint and depth -> image (default: 10 steps)
    add_sampling(p, "steps", prefix="depth-")  # the scored image -> depth
    p.add_argument("--ensemble", type=int, default=3, help="image->depth ensemble size (gallery)")
    add_hardware(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_export(args: argparse.Namespace) -> None:
    from ..training.checkpoint import export_checkpoint

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


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-checkpoint",
        help="copy inference weights (bf16 by default) + config, without training state",
        description="Make a compact inference checkpoint, e.g. the demo checkpoint shipped in "
        "src/modality_forcing/assets/demo.",
    )
    p.add_argument("ckpt", help="source checkpoint dir (e.g. runs/cpu-s-mf/final)")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument(
        "--max-shard-mb",
        type=float,
        default=None,
        help="split the weights into safetensors shards of at most this many MiB "
        "(+ model.safetensors.index.json)",
    )
    p.add_argument(
        "--guidance",
        nargs="+",
        default=[],
        metavar="MODE=SCALE",
        help="the checkpoint's own CFG scale per mode (joint, marginal, "
        "depth_to_image), chosen on val with scripts/tune_sampling.py; "
        "pipelines loading it use these as defaults",
    )
    p.add_argument(
        "--steps",
        nargs="+",
        default=[],
        metavar="MODE=N",
        help="the checkpoint's own sampler steps per mode (e.g. image_to_depth=1)",
    )
    p.set_defaults(func=_cmd_export)


def _cmd_app(args: argparse.Namespace) -> None:
    try:
        from ..app import launch, resolve_auth
    except ImportError as err:  # gradio is the optional `app` extra
        raise SystemExit(f"modality-forcing app: {err}") from None
    auth = resolve_auth(args.auth)
    print(f"serving http://{args.host}:{args.port} (Ctrl+C stops)")
    launch(args.ckpt, args.host, args.port, auth=auth, precision=args.precision, device=args.device)


def add_app(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--auth",
        default=None,
        metavar="USER",
        help="require a login as USER; the password comes from the MF_APP_PASSWORD "
        "environment variable or a prompt (never the command line). Serving "
        "0.0.0.0 without it warns",
    )
    add_hardware(p)
    p.set_defaults(func=_cmd_app)


def _cmd_eval(args: argparse.Namespace) -> None:
    from ..inference.evaluate import evaluate_benchmark, export_inputs

    if args.export_inputs is not None:
        keys = export_inputs(
            args.dataset, args.data_root, args.export_inputs, split=args.split,
            split_file=args.split_file, limit=args.limit, size=args.size,
        )  # fmt: skip
        print(f"wrote {len(keys)} input images and inputs.json to {args.export_inputs}; predict "
              "<key>.npy or <key>.png there, then: eval --predictions DIR")  # fmt: skip
        return

    predictions = args.predictions
    protocol = args.protocol
    if args.sparse is not None:
        if args.ckpt is None:
            raise ValueError("--sparse (depth completion) needs --ckpt")
        from ..inference.predict import CompletionPredictor

        predictions = CompletionPredictor(
            args.ckpt, args.sparse, sampling_from(args, seed=args.seed), args.precision,
            args.device,
        )  # fmt: skip
        protocol = ["none", "least_squares"] if protocol == "all" else protocol
    elif args.ckpt is not None:
        from ..inference.predict import DepthPredictor

        predictions = DepthPredictor(
            args.ckpt, sampling_from(args, seed=args.seed), args.precision, args.device
        )
    summary = evaluate_benchmark(
        args.dataset,
        args.data_root,
        predictions,
        args.out,
        split=args.split,
        split_file=args.split_file,
        protocol=protocol,
        limit=args.limit,
        depth_range=args.depth_range,
        size=args.size,
        prediction_space=args.prediction_space,
        resize_predictions=args.resize_predictions,
    )
    print(summary.to_markdown() + f"\nwrote {args.out}/summary.md, summary.json, per_sample.csv")


def add_eval(sub: argparse._SubParsersAction) -> None:
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
    src.add_argument(
        "--export-inputs",
        metavar="DIR",
        help="write the benchmark's input images as DIR/<key>.png (+ inputs.json) for another "
        "method to predict, instead of scoring",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="nyuv2, kitti, kitti_dc, eth3d, scannet, diode, folder or procedural",
    )
    p.add_argument("--data-root", default=None, help="dataset root folder")
    p.add_argument("--split", default=None, help="split name (each dataset has a default)")
    p.add_argument("--split-file", default=None, help="split list (format: see the reader)")
    p.add_argument(
        "--protocol",
        default="all",
        help="least_squares, least_squares_disparity, median, robust, none, or all",
    )
    p.add_argument(
        "--sparse",
        default=None,
        metavar="SPEC",
        help="with --ckpt: depth completion from known points, scored in metres: random:N (N "
        "random ground-truth pixels per image; NYUv2 with 500 is Marigold-DC's protocol), "
        "lidar:B (procedural), or given (the benchmark's own input: kitti_dc's LiDAR scan). "
        "--protocol all then means none (metric) and least_squares",
    )
    p.add_argument("--out", default="eval_out", help="report folder")
    p.add_argument("--limit", type=int, default=None, help="first N samples (procedural: N)")
    p.add_argument("--depth-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"))
    p.add_argument("--size", type=size, default=(64, 64), help="procedural scene size")
    p.add_argument("--prediction-space", choices=["depth", "disparity"], default="depth")
    p.add_argument("--resize-predictions", action="store_true", help="resize bilinearly to GT")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --ckpt)")
    add_sampling(p, "steps", "solver", "shift_mu", "ensemble", "reduction", "frame")
    add_hardware(p)
    p.set_defaults(func=_cmd_eval)
