"""`modality-forcing bench SUITE`: one subcommand per suite, each with its own flags and output."""

from __future__ import annotations

import argparse

from .common import add_hardware, size

SUITES_HELP = "benchmarks that print a table and write JSON (one subcommand per suite)"


def _data(args: argparse.Namespace) -> None:
    from ..bench.data_speed import run_data_benchmark

    run_data_benchmark(sizes=args.sizes, seconds=args.seconds, out=args.out)


def _throughput(args: argparse.Namespace) -> None:
    from ..bench.throughput import ThroughputConfig, run_throughput

    cfg = ThroughputConfig(
        presets=args.presets,
        resolution=args.resolution,
        batch=args.batch,
        steps=args.steps,
        precision=args.precision or "auto",
        device=args.device,
        compile_blocks=args.compile,
        profile=args.profile,
        vs=args.vs,
        vs_compile=tuple(c == "compiled" for c in args.vs_compile),
    )
    run_throughput(cfg, args.out)


def _sparse(args: argparse.Namespace) -> None:
    from ..bench.sparse import run_sparse_benchmark
    from ..config import apply_overrides

    dense_scene = apply_overrides({}, args.dense_scene or [])  # values parsed as YAML
    run_sparse_benchmark(
        args.out,
        args.budget,
        args.fills,
        args.settings,
        args.train_steps,
        args.minutes_per_run,
        args.num_eval,
        args.init_from,
        sensor_scale=args.sensor_scale,
        crop=args.crop,
        split=args.split,
        dense_scene=dense_scene,
        precision=args.precision,
        device=args.device,
        reuse_runs=args.reuse_runs,
    )


def _completion(args: argparse.Namespace) -> None:
    from ..bench.completion import PATTERNS, run_completion_benchmark
    from ..demo import demo_checkpoint

    shipped = demo_checkpoint(None)
    run_completion_benchmark(args.out, args.ckpt or shipped, args.reference or shipped, args.budget,
                             tuple(args.patterns or PATTERNS), args.precision or "auto",
                             args.device)  # fmt: skip


def _depth(args: argparse.Namespace) -> None:
    from ..bench.depth import run_depth_benchmark

    kwargs = {"recipes": args.recipes, "init_from": args.init_from, "steps": args.train_steps,
              "precision": args.precision, "device": args.device,
              "reuse_runs": args.reuse_runs, "scores_dir": args.scores}  # fmt: skip
    if args.seeds:
        from ..bench.seeds import run_depth_seeds

        run_depth_seeds(args.out, args.budget, args.seeds, **kwargs)
        return
    run_depth_benchmark(args.out, args.budget, **kwargs)


def _paper(args: argparse.Namespace) -> None:
    kwargs = {"precision": args.precision, "device": args.device, "reuse_runs": args.reuse_runs,
              "scores_dir": args.scores}  # fmt: skip
    if args.claims:
        kwargs["claims"] = args.claims
    if args.seeds:
        from ..bench.seeds import run_paper_seeds

        run_paper_seeds(args.out, args.budget, args.seeds, **kwargs)
        return
    from ..bench.paper import run_paper_benchmark

    run_paper_benchmark(args.out, args.budget, **kwargs)


def _probe(args: argparse.Namespace) -> None:
    from ..bench.probe import train_probe

    train_probe(**({"out_dir": args.out} if args.out is not None else {}))


def _flagship(args: argparse.Namespace) -> None:
    from ..bench.flagship import run_flagship_benchmark, score_run

    if args.run is not None:
        runs = args.run if len(args.run) > 1 else args.run[0]
        score_run(runs, args.out, args.num_eval, args.precision or "auto")
    else:
        run_flagship_benchmark(
            args.out,
            args.recipes,
            args.minutes,
            args.eval_minutes,
            args.num_eval,
            precision=args.precision,
            device=args.device,
        )


def _suite(
    suites: argparse._SubParsersAction, name: str, help: str, out: str | None, out_help: str
) -> argparse.ArgumentParser:
    p = suites.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    p.add_argument("--out", default=out, help=out_help)
    return p


def _add_reuse_runs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reuse-runs", nargs="+", default=(), metavar="DIR",
                   help="folders of other benchmarks (e.g. a `bench paper` or `bench sparse` "
                   "OUT) searched for finished runs with the same training config (checkpoint "
                   "cadence aside), used instead of training them again")  # fmt: skip


def _add_scores(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--scores",
        default=None,
        metavar="DIR",
        help=f"where {what} (with --seeds: DIR/seed<S>; bench/score_cache.py)",
    )


def _add_seeds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train and score every run once per seed (OUT/seed<S>/), then report "
                   "each comparison over seeds and scenes (REPORT_seeds.md); default: seed 0 "
                   "only, into OUT")  # fmt: skip


def _add_budget(p: argparse.ArgumentParser, where: str, names: tuple[str, ...]) -> None:
    p.add_argument(
        "--budget",
        choices=names,
        default="small",
        help=f"compute per run ({where} BUDGETS)",
    )


def add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help=SUITES_HELP,
        description="Benchmarks: each suite prints a table and writes JSON (and a report where "
        "it has one). `modality-forcing bench SUITE --help` lists a suite's flags.",
    )
    suites = bench.add_subparsers(dest="suite", metavar="SUITE", required=True)

    p = _suite(suites, "data", "procedural scene generation speed (samples/s)",
               "bench_out/data.json", "JSON report")  # fmt: skip
    p.add_argument("--sizes", type=size, nargs="+", default=[(64, 64), (256, 256)])
    p.add_argument("--seconds", type=float, default=5.0, help="time budget per measurement")
    p.set_defaults(func=_data)

    p = _suite(
        suites,
        "throughput",
        "training samples/s, tokens/s, TFLOP/s and MFU against a GEMM peak measured in the same "
        "run, and the depth stream's cost per token (MF vs T2I)",
        "bench_out/throughput.json",
        "JSON report",
    )
    p.add_argument("--presets", nargs="+", default=["cpu-s", "cpu-m"], help="model presets")
    p.add_argument("--resolution", type=size, default=(32, 32), help="image size, N or HxW")
    p.add_argument("--batch", type=int, default=32, help="batch size")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per measurement")
    p.add_argument(
        "--vs",
        choices=["diffusers"],
        default=None,
        help="race our MM-DiT against a diffusers SD3Transformer2DModel of the same width, "
        "depth, heads and tokens, side by side (bench/peer.py)",
    )
    p.add_argument(
        "--vs-compile",
        choices=["eager", "compiled"],
        nargs="+",
        default=["eager", "compiled"],
        help="with --vs: with and/or without torch.compile for both",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the blocks")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile where a step's time goes (GEMM, attention, fused elementwise, "
        "optimizer) and the MFU if only the GEMMs took time",
    )
    add_hardware(p, default=None)
    p.set_defaults(func=_throughput)

    p = _suite(
        suites,
        "sparse",
        "dense vs sparse vs mixed depth training at equal compute, per missing-pixel fill, "
        "scored image -> depth on dense scenes",
        "bench_out/sparse",
        "report folder",
    )
    _add_budget(p, "bench/sparse.py", ("tiny", "small", "medium", "full"))
    p.add_argument("--fills", nargs="+", default=None, help="neutral noise nearest")
    p.add_argument(
        "--settings",
        nargs="+",
        default=None,
        help="dense lidar:32 lidar:64 random:0.01 random:0.05 mixed[:SPEC]",
    )
    p.add_argument("--train-steps", type=int, default=None, help="override the budget's steps")
    p.add_argument("--minutes-per-run", type=float, default=None, help="wall-time cap per run")
    p.add_argument("--num-eval", type=int, default=None, help="scenes scored")
    p.add_argument("--init-from", default=None, help="start each run from a checkpoint")
    p.add_argument(
        "--sensor-scale",
        type=int,
        default=None,
        help="render + sparsify at this multiple of the size",
    )
    p.add_argument(
        "--crop",
        type=float,
        default=None,
        help="random crop of sparse training samples, smallest side fraction in (0, 1], 1: "
        "none (MixtureEntry.crop; default 0.7)",
    )
    p.add_argument(
        "--dense-scene",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="SceneConfig overrides for the dense members only, e.g. back_wall_prob=0 "
        "max_objects=3 (a 'synthetic' world unlike the test scenes)",
    )
    p.add_argument(
        "--split",
        choices=["val", "test"],
        default="test",
        help="procedural split scored (val to choose, test to report)",
    )
    _add_reuse_runs(p)
    add_hardware(p, default=None)
    p.set_defaults(func=_sparse)

    p = _suite(
        suites,
        "completion",
        "depth completion from known points in metres (random points, LiDAR) against image -> "
        "depth + a least-squares fit, guidance toward the points and interpolation; settings "
        "chosen on val, reported on test",
        "bench_out/completion",
        "report folder (REPORT.md, completion.json)",
    )
    p.add_argument(
        "--ckpt", default=None, help="checkpoint with a depth-hint input (default: the shipped one)"
    )
    p.add_argument(
        "--reference",
        default=None,
        help="a checkpoint never trained for completion, for the paste-only design row (its "
        "hint input, if any, unused; default: the shipped one)",
    )
    p.add_argument(
        "--budget",
        choices=["tiny", "default"],
        default="default",
        help="scenes and sweeps (bench/completion.py BUDGETS; tiny: a smoke test)",
    )
    p.add_argument(
        "--patterns",
        nargs="+",
        default=None,
        help="known-point patterns: random:N (N random pixels) or lidar:B (B beams); default "
        "random:100 random:500 lidar:32 lidar:64",
    )
    add_hardware(p, default=None)
    p.set_defaults(func=_completion)

    p = _suite(
        suites,
        "depth",
        "image -> depth of the MF model vs a deterministic regressor of the same size and "
        "compute, every inference setting, curves vs training time",
        "bench_out/depth",
        "report folder (REPORT.md, depth.json, plots)",
    )
    _add_budget(p, "bench/depth.py", ("tiny", "small", "medium"))
    p.add_argument(
        "--recipes",
        nargs="+",
        default=None,
        help="training recipes (bench/depth.py RECIPES; default regressor mf-naive mf)",
    )
    p.add_argument("--train-steps", type=int, default=None, help="override the budget's steps")
    p.add_argument("--init-from", default=None, help="start each run from a checkpoint")
    _add_scores(p, "the finished report is stored, and found again by the same bench on any "
                "machine without retraining (default: not stored)")  # fmt: skip
    _add_reuse_runs(p)
    _add_seeds(p)
    add_hardware(p, default=None)
    p.set_defaults(func=_depth)

    p = _suite(suites, "paper", "the paper's six claims in miniature", "bench_out/paper",
               "report folder (REPORT.md, paper.json, plots)")  # fmt: skip
    _add_budget(p, "bench/paper.py", ("tiny", "small", "medium"))
    _add_scores(p, "every measurement is stored and found again (default OUT/scores): a run "
                "whose measurements are all there is not trained again, so a bench stopped on "
                "one machine goes on from this folder on another")  # fmt: skip
    p.add_argument(
        "--claims", nargs="+", default=None, choices=[str(n) for n in range(1, 7)], metavar="N",
        help="measure only these claims (default: all six). Claims 4 and 5 train 11 of the 16 "
        "runs: `--claims 1 2 3 6 --seeds 0 1 2` finishes the others over every seed first, and "
        "a later call with all claims finds those measurements in the score folder",
    )  # fmt: skip
    _add_reuse_runs(p)
    _add_seeds(p)
    add_hardware(p, default=None)
    p.set_defaults(func=_paper)

    p = _suite(suites, "probe", "train the attribute probe of the fidelity metrics", None,
               "output folder (default: the package's assets/probe)")  # fmt: skip
    p.set_defaults(func=_probe)

    p = _suite(
        suites,
        "flagship",
        "candidate recipes trained for --minutes each on this machine, checkpoints scored on "
        "val with every fidelity metric every --eval-minutes; curves and the chosen recipe",
        "bench_out/flagship",
        "report folder",
    )
    p.add_argument(
        "--recipes", nargs="+", default=None, help="training recipes (bench/flagship.py RECIPES)"
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=20.0,
        help="training minutes per recipe (T2I share included)",
    )
    p.add_argument(
        "--eval-minutes",
        type=float,
        default=5.0,
        help="a checkpoint scored on val every this many minutes",
    )
    p.add_argument(
        "--run",
        nargs="+",
        default=None,
        help="score every checkpoint of an existing run folder (t2i/, mf/ and mf2/..., as "
        "scripts/flagship_cpu.sh writes) instead of training recipes; several: side by side "
        "(e.g. A/B arms), the best last checkpoint on val chosen",
    )
    p.add_argument("--num-eval", type=int, default=64, help="val scenes scored")
    add_hardware(p, default=None)
    p.set_defaults(func=_flagship)
