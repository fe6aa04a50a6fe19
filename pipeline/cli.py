"""`pipeline` command line: the only module that prints. Heavy modules are imported per command,
so `pipeline train` works on a machine without decord or torchvision.

Exit status: 0 done; 1 stopped by an error it names (cache, weights, input, disk);
2 bad command line; 3 finished, but some input videos failed (listed, and kept in the cache's ledger).
"""

from __future__ import annotations

import argparse
import json
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="stage one: AlexNet features of every frame at 30 fps into a cache")
    p.add_argument("input", help="a folder of videos (label = parent folder) or a CSV with columns path,label")
    p.add_argument("--out", required=True, help="the cache folder (created, or resumed)")
    _add_extract_args(p)
    p.add_argument("--skip-failed", action="store_true", help="do not retry videos that failed in an earlier run")

    p = sub.add_parser("info", help="summary of a cache")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true", help="one JSON object: settings and videos")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"extract": cmd_extract, "info": cmd_info}[args.command]
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

    errors = [CacheError, InputError]
    try:  # features.py needs torchvision only when called; its error type is plain
        from .features import WeightsError
        errors.append(WeightsError)
    except ImportError:
        pass
    return tuple(errors)


def cmd_extract(args) -> int:
    from .extract import ExtractOptions, extract
    from .inputs import InputError, find_videos

    sources = find_videos(args.input)
    if not sources:
        raise InputError(f"{args.input}: no video files found")
    options = ExtractOptions(
        fps=args.fps, weights=args.weights, device=args.device, batch_size=args.batch_size,
        workers=args.workers, dtype=args.dtype, precision=args.precision, retry_failed=not args.skip_failed,
    )
    if args.weights == "random":
        print("pipeline extract: using RANDOM-INIT AlexNet weights (--weights random): "
              "features are not ImageNet features", file=sys.stderr)
    summary = extract(sources, args.out, options)
    print(f"{summary.cache}: {summary.done} videos extracted ({summary.frames} frames in {summary.seconds:.1f} s), "
          f"{summary.skipped} already done, {len(summary.failures)} failed")
    for video_id, reason in summary.failures:
        print(f"  failed: {video_id}: {reason}")
    return EXIT_SOME_FAILED if summary.failures else 0


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


def _weights_text(w: dict) -> str:
    if w.get("name") == "random":
        return f"RANDOM INIT (seed {w.get('seed')})"
    return f"{w.get('name')} ({w.get('file')}, sha256 {w.get('sha256', '')[:12]})"
