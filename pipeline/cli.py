"""`pipeline` command line: the only module that prints. Heavy modules are imported per command,
so `pipeline train` works on a machine without decord or torchvision.

Exit status: 0 done; 1 stopped by an error it names (cache, weights, input, disk);
2 bad command line; 3 finished, but some input videos failed (listed, and kept in the cache's ledger).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_ERROR, EXIT_USAGE, EXIT_SOME_FAILED = 1, 2, 3


def _add_extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=float, default=30.0, help="output frames per second (default 30)")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet (torchvision's IMAGENET1K_V1, from $TORCH_HOME or downloaded), "
                        "random (random init, seeded), or a state-dict FILE")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per CNN batch (default 512 on GPU, 32 on CPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: every core but one; 0 decodes in the main process)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="CNN arithmetic on CUDA (default fp32 with TF32 matmuls)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored feature dtype")
    p.add_argument("--decoder", default="auto", choices=["auto", "pyav", "decord"],
                   help="auto/pyav: PyAV decodes every file (measured faster); decord: decord, except for MPEG "
                        "transport/program streams and files whose decord timestamps cannot be trusted")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline", description="Extract AlexNet features of every video frame at 30 fps once; train an LSTM on them.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="stage one: AlexNet features of every frame at 30 fps into a cache")
    p.add_argument("input", help="a folder of videos (label = parent folder) or a CSV with columns path,label")
    p.add_argument("--out", required=True, help="the cache folder (created, or resumed)")
    _add_extract_args(p)
    p.add_argument("--skip-failed", action="store_true", help="do not retry videos that failed in an earlier run")
    p.add_argument("--shard", metavar="i/N", default=None,
                   help="extract only shard i of N (0-based; e.g. a Slurm array task) into CACHE/shards/i-of-N; "
                        "under torchrun the shard is the rank")

    p = sub.add_parser("join", help="fold a cache's shards into the cache itself")
    p.add_argument("cache")

    p = sub.add_parser("info", help="summary of a cache")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true", help="one JSON object: settings and videos")

    _add_train_parsers(sub)

    p = sub.add_parser("predict", help="label new videos with a trained run")
    p.add_argument("run", help="the run folder made by `pipeline train`")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--json", action="store_true", help="one JSON list: per video its label and its windows")
    p.add_argument("--weights", default=None,
                   help="the CNN weights (default: those of the run's training cache: imagenet or random; "
                        "a weights FILE must be given again)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--features", default=None, metavar="DIR",
                   help="keep the new videos' features in this cache folder (default: a temporary one)")

    p = sub.add_parser("demo", help="the whole job on bundled sample data: extract, train, evaluate, compare")
    p.add_argument("--out", default="runs/demo", help="where the cache and the run go (default runs/demo)")
    p.add_argument("--data", default="data/sample", help="where the sample videos are made (default data/sample)")
    return parser


def _add_train_parsers(sub) -> None:
    # Options default to None so that `--resume` can tell the ones given from the run's own (train.TrainSettings).
    p = sub.add_parser("train", help="stage two: train the LSTM on windows of a cache's features")
    p.add_argument("cache", help="the feature cache made by `pipeline extract`")
    p.add_argument("--out", required=True, help="the run folder: checkpoints, metrics, split, plots")
    p.add_argument("--window", type=int, help="frames per window (default 30)")
    p.add_argument("--stride", type=int, help="frames between window starts (default 15)")
    p.add_argument("--epochs", type=int, help="epochs in all, also when resuming (default 30)")
    p.add_argument("--hidden", type=int, help="LSTM hidden size (default 256)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, help="windows per batch (default 64)")
    p.add_argument("--val-fraction", type=float, help="share of each label's videos for validation (default 0.2)")
    p.add_argument("--seed", type=int, help="fixes the split, initial weights, batch order (default 0)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--data", choices=["auto", "ram", "stream"],
                   help="hold features in RAM, or stream them from the cache (default auto: RAM if they fit)")
    p.add_argument("--workers", type=int,
                   help="processes reading the cache in stream mode (default: 0 on a CPU with few cores, "
                        "where reading between steps is faster; up to 4 with a GPU)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")

    p = sub.add_parser("evaluate", help="metrics of a run's best checkpoint")
    p.add_argument("run", help="the run folder of `pipeline train`")
    p.add_argument("cache", nargs="?",
                   help="evaluate on every video of this cache (default: the run's validation videos)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--json", action="store_true", help="one JSON object with the metrics")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"extract": cmd_extract, "info": cmd_info, "train": cmd_train, "evaluate": cmd_evaluate,
               "predict": cmd_predict, "demo": cmd_demo, "join": cmd_join}[args.command]
    try:
        return command(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything finished so far is kept", file=sys.stderr)
        return 130
    except _user_errors() as e:
        print(f"pipeline {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: printed as one message, never as a traceback."""
    from .cache import CacheError
    from .inputs import InputError
    from .train import TrainError

    errors = [CacheError, InputError, TrainError]
    try:  # features.py needs torchvision only when called; its error type is plain
        from .features import WeightsError
        errors.append(WeightsError)
    except ImportError:
        pass
    return tuple(errors)


def cmd_extract(args) -> int:
    from .extract import ExtractOptions, extract, for_torchrun_rank
    from .inputs import InputError, find_videos, parse_shard

    sources = find_videos(args.input)
    if not sources:
        raise InputError(f"{args.input}: no video files found")
    options = ExtractOptions(
        fps=args.fps, weights=args.weights, device=args.device, batch_size=args.batch_size,
        workers=args.workers, dtype=args.dtype, precision=args.precision, retry_failed=not args.skip_failed,
        shard=parse_shard(args.shard) if args.shard else None, decoder=args.decoder,
    )
    options = for_torchrun_rank(options)
    if args.weights == "random":
        print("pipeline extract: using RANDOM-INIT AlexNet weights (--weights random): "
              "features are not ImageNet features", file=sys.stderr)
    summary = extract(sources, args.out, options)
    print(f"{summary.cache}: {summary.done} videos extracted ({summary.frames} frames in {summary.seconds:.1f} s), "
          f"{summary.skipped} already done, {len(summary.failures)} failed")
    for video_id, reason in summary.failures:
        print(f"  failed: {video_id}: {reason}")
    return EXIT_SOME_FAILED if summary.failures else 0


def cmd_join(args) -> int:
    from .cache import join_shards

    moved = join_shards(args.cache)
    print(f"{args.cache}: {moved} videos joined from its shards")
    return 0


def cmd_info(args) -> int:
    from .cache import open_cache

    with open_cache(args.cache) as cache:
        videos = [
            {"id": r.id, "label": r.label, "frames": r.frames, "status": r.status, "error": r.error,
             "source_path": r.source_path, "source_fps": r.source_fps, "duration": r.duration}
            for r in sorted(cache.records.values(), key=lambda r: r.id)
        ]
        if args.json:
            print(json.dumps({"settings": cache.settings, "videos": videos}, ensure_ascii=False))
            return 0
        s = cache.settings
        ok = [v for v in videos if v["status"] == "ok"]
        failed = [v for v in videos if v["status"] != "ok"]
        labels: dict[str, int] = {}
        for v in ok:
            labels[v["label"]] = labels.get(v["label"], 0) + 1
        print(f"cache      {cache.path}")
        print(f"model      {s['model']}, layer {s['layer']} ({s['feature_dim']}-d), weights {_weights_text(s['weights'])}")
        print(f"frames     {s['fps']:g} fps, stored as {s['dtype']}, format {s['format_version']}")
        print(f"videos     {len(ok)} ok ({sum(v['frames'] for v in ok)} frames), {len(failed)} failed")
        for label, count in sorted(labels.items()):
            print(f"  {label}: {count}")
        for v in failed:
            print(f"  failed: {v['id']}: {v['error']}")
    return 0


def cmd_predict(args) -> int:
    from .predict import predict

    results = predict(args.run, args.videos, weights=args.weights, device=args.device,
                      features_dir=args.features, progress=not args.json)
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    for r in results if not args.json else []:
        if "error" in r:
            print(f"{r['video']}: failed: {r['error']}")
            continue
        print(f"{r['video']}: {r['label']} ({r['probability']:.2f})")
        for w in r["windows"]:
            print(f"  {w['start']:7.2f} - {w['end']:7.2f} s  {w['label']} ({w['probability']:.2f})")
    return EXIT_SOME_FAILED if any("error" in r for r in results) else 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out, args.data, log=lambda line: print(line, flush=True))


def _weights_text(w: dict) -> str:
    if w.get("name") == "random":
        return f"RANDOM INIT (seed {w.get('seed')})"
    return f"{w.get('name')} ({w.get('file')}, sha256 {w.get('sha256', '')[:12]})"


def cmd_train(args) -> int:
    from dataclasses import fields

    from .train import TrainSettings, fit, resume_settings

    names = {f.name for f in fields(TrainSettings)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    settings = resume_settings(args.out, given) if args.resume else TrainSettings(**given)

    def log(line: str) -> None:
        print(line, flush=True)

    result = fit(settings, resume=args.resume, log=log)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return 0
    best = result.best
    if result.start_epoch >= settings.epochs:
        print(f"{result.out}: nothing to do: the run has {result.start_epoch} epochs (--epochs {settings.epochs})")
    if best is None:
        return 0
    if best.get("val_video_acc") is not None:
        print(f"{result.out}: best epoch {best['epoch']}: validation video accuracy {best['val_video_acc']:.3f}, "
              f"window accuracy {best['val_window_acc']:.3f} (best.pt)")
    else:
        print(f"{result.out}: trained {best['epoch']} epochs without validation videos (best.pt = last.pt)")
    return 0


def cmd_evaluate(args) -> int:
    from .train import evaluate_run

    report = evaluate_run(args.run, args.cache, device=args.device, progress=not args.json)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    labels = report["labels"]
    print(f"run        {report['run']} ({report['checkpoint']}, epoch {report['epoch']})")
    print(f"evaluated  {report['videos_evaluated']} of {report['cache']}: "
          f"{report['videos']} videos, {report['windows']} windows")
    print(f"accuracy   windows {report['window_accuracy']:.3f}, videos {report['video_accuracy']:.3f}")
    width = max(len(label) for label in labels)
    print(f"\nper class (videos)\n  {'label':<{width}}  precision  recall  support")
    for label in labels:
        c = report["per_class"][label]
        print(f"  {label:<{width}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['support']:7d}")
    print("\nconfusion (videos; rows: true, columns: predicted, in the order above)")
    cell = max(len(str(n)) for row in report["confusion"] for n in row)
    for label, row in zip(labels, report["confusion"]):
        print(f"  {label:<{width}}  " + " ".join(f"{n:>{cell}}" for n in row))
    return 0
