"""`pipeline` command line: the only module that prints. Heavy modules are imported per command,
so `pipeline train` works on a machine without decord or torchvision.

Every user mistake ends in one line on stderr and an exit status (EXIT_STATUSES below), never in a
traceback. Option values are checked by argparse itself (the `type=` functions below), so a bad
value is status 2 with the subcommand's usage, before anything is created.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_MISSING_PACKAGE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_STATUSES = (
    (EXIT_OK, "done"),
    (EXIT_ERROR, "stopped by an error it names (cache, run, weights, input, disk); nothing half-written is left"),
    (EXIT_USAGE, "bad command line: unknown option, invalid value (e.g. --window 0, --lr -1), --device not "
                 "available here, --out naming a file or a place no folder can be made; nothing was done"),
    (EXIT_SOME_FAILED, "finished, but some input videos failed (listed, and kept in the cache's ledger)"),
    (EXIT_MISSING_PACKAGE, 'a package the command needs is not installed (the extract extra: '
                           'pip install -e ".[extract]"); nothing was done'),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C); everything finished so far is kept, the message says how to go on"),
)

# The modules of the `extract` extra, with the pip package that installs each.
EXTRACT_MODULES = ("torchvision", "av", "decord")
EXTRACT_PACKAGES = {"torchvision": "torchvision", "av": "av", "decord": "decord2"}
NEEDS_EXTRA = "Needs the extract extra (decord, torchvision, PyAV): pip install -e \".[extract]\"."
STAGE_TWO = "Needs only the plain install (pip install -e .): no decord, no torchvision."


class CommandLineError(Exception):
    """A bad command line found after parsing (e.g. two options that exclude each other): status 2."""


class MissingPackage(Exception):
    """A package of the extract extra is not installed: status 4."""


def _require_extract_extra(command: str) -> None:
    """Raise MissingPackage naming what to install unless every module of the extract extra can be
    imported. Checked first thing, so a stage-two install creates nothing and prints nothing else."""
    import importlib.util

    missing = []
    for name in EXTRACT_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise MissingPackage(_missing_message(command, missing))


def _missing_message(command: str, missing: list[str]) -> str:
    packages = " ".join(EXTRACT_PACKAGES.get(m, m) for m in missing)
    return (f"this command needs the extract extra, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: run pip install -e \".[extract]\" "
            f"in the repository (or pip install {packages})")


# --- values checked by argparse (a bad one is status 2, with the subcommand's usage) ------------

def _int_at_least(low: int):
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value
    check.__name__ = f"integer >= {low}"
    return check


def _number(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, not {text}")
    return value


def _device(allow_mps: bool):
    def check(text: str) -> str:
        from . import devices

        try:
            devices.resolve_device(text, argparse.ArgumentTypeError, auto_mps=allow_mps)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{str(e).replace('--device ', '')}; use auto or cpu") from None
        if not allow_mps and text.startswith("mps"):
            raise argparse.ArgumentTypeError("extraction runs on cpu or cuda, not mps")
        return text
    check.__name__ = "device"
    return check


def _shard(text: str) -> str:
    from .inputs import InputError, parse_shard

    try:
        parse_shard(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _out_folder(text: str) -> str:
    """A folder that exists or can be made: not a file, not under a file, and writable."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder; name a folder (new or existing)")
    parent = path
    while not parent.exists():
        if parent.is_symlink():  # a link to nowhere
            raise argparse.ArgumentTypeError(f"{parent} is a broken link; no folder can be made there")
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make the folder {text}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write to {parent} (no permission); choose another place")
    return text


DEVICE_HELP = "auto, cpu, cuda or cuda:N (default auto: the first CUDA GPU, else the CPU)"
THREADS_HELP = ("CPU threads of torch in this process (default: one less than the cores, at least 1, or "
                "$OMP_NUM_THREADS when set; so a second busy process does not stall it). On a machine busy "
                "with other work, use 1")

CNN_THREADS_HELP = ("CPU threads of the CNN process (default: torch's own, every core: on a CPU the CNN is the "
                    "bound, and runs several forwards at once, each on its share of each batch and threads; the "
                    "decoding workers use one each). On a machine busy with other work, use 1")


def _add_threads(p: argparse.ArgumentParser, help: str = THREADS_HELP) -> None:
    p.add_argument("--threads", type=_int_at_least(1), metavar="N", help=help)


def _add_extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=_positive, default=30.0, help="output frames per second (default 30)")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet (torchvision's IMAGENET1K_V1, from $TORCH_HOME or downloaded), "
                        "random (random init, seeded), or a state-dict FILE")
    p.add_argument("--device", type=_device(False), default="auto", help=DEVICE_HELP)
    p.add_argument("--batch-size", type=_int_at_least(1), default=None, metavar="N",
                   help="frames per CNN batch (default 512 on GPU; on CPU 32 for each forward run at once, at most 256: 64 on 2 cores)")
    p.add_argument("--workers", type=_int_at_least(0), default=None, metavar="N",
                   help="decoding processes (default: every core but one; 0 decodes in the main process)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="CNN arithmetic on CUDA (default fp32 with TF32 matmuls)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="stored feature dtype (default float32; float16 halves the cache)")
    p.add_argument("--decoder", default="auto", choices=["auto", "pyav", "decord"],
                   help="auto/pyav: PyAV decodes every file (measured faster); decord: decord, except for MPEG "
                        "transport/program streams and files decord cannot be trusted with (README)")
    _add_threads(p, CNN_THREADS_HELP)


def _epilog() -> str:
    lines = ["exit status:"] + [f"  {code:<4} {text}" for code, text in EXIT_STATUSES]
    lines += ["", "extract, predict and demo need the extract extra: pip install -e \".[extract]\"",
              "info, join, train and evaluate run on the plain install: pip install -e .",
              "", "`pipeline COMMAND --help` describes each command."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pipeline", epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Extract AlexNet features of every video frame at 30 fps once (stage one); "
                    "train an LSTM on them in seconds (stage two).")
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str, extra: bool) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help + (" [extract extra]" if extra else ""),
                              description=description + "\n\n" + (NEEDS_EXTRA if extra else STAGE_TWO),
                              epilog=textwrap.fill("exit status: " + "; ".join(
                                  f"{code} {text.split(' (')[0].split(':')[0]}" for code, text in EXIT_STATUSES)
                                  + " (pipeline --help says more)", 90),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("extract", "stage one: AlexNet features of every frame at 30 fps into a cache",
                "Stage one: decode every video, resample it to --fps by timestamp, run AlexNet on every\n"
                "frame and store the 1000-d features in a crash-safe HDF5 cache. Rerun to resume.", True)
    p.add_argument("input", metavar="INPUT",
                   help="a folder of videos (label = the folder holding each video) or a CSV with columns path,label")
    p.add_argument("--out", required=True, type=_out_folder, metavar="CACHE",
                   help="the cache folder (created, or resumed)")
    _add_extract_args(p)
    p.add_argument("--skip-failed", action="store_true", help="do not retry videos that failed in an earlier run")
    p.add_argument("--shard", metavar="i/N", default=None, type=_shard,
                   help="extract only shard i of N (0-based; e.g. a Slurm array task) into CACHE/shards/i-of-N; "
                        "under torchrun the shard is the rank")

    p = command("join", "fold a cache's shards into the cache itself",
                "Fold the shards of a cache (CACHE/shards/i-of-N, from extract --shard or torchrun) into\n"
                "the cache itself. Safe to interrupt and rerun.", False)
    p.add_argument("cache", metavar="CACHE", help="the cache folder that holds shards/")

    p = command("info", "summary of a cache: settings, videos per label, failures",
                "Summary of a feature cache: what made the features, videos per label, failures.", False)
    p.add_argument("cache", metavar="CACHE", help="the cache folder made by `pipeline extract`")
    p.add_argument("--json", action="store_true", help="print one JSON object: settings and videos")

    _add_train_parsers(command)

    p = command("predict", "label new videos with a trained run",
                "Run stage one on new videos with the training cache's feature settings, then the run's\n"
                "LSTM over their windows: a label per video and per window.", True)
    p.add_argument("run", metavar="RUN_DIR", help="the run folder made by `pipeline train`")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files to label, or folders or CSV "
                   "manifests of them (read as extract reads them)")
    p.add_argument("--json", action="store_true", help="one JSON list: per video its label and its windows")
    p.add_argument("--weights", default=None,
                   help="the CNN weights (default: those of the run's training cache: imagenet or random; "
                        "a weights FILE must be given again)")
    p.add_argument("--device", type=_device(False), default="auto", help=DEVICE_HELP)
    p.add_argument("--features", default=None, metavar="DIR", type=_out_folder,
                   help="keep the new videos' features in this cache folder (default: a temporary one)")
    _add_threads(p, CNN_THREADS_HELP)

    p = command("demo", "the whole job on generated sample videos: extract, train, evaluate, compare",
                "The main job on sample videos it generates (a square moving left or right: only the\n"
                "order of the frames tells them apart): extract, train, evaluate, and a comparison with an\n"
                "order-blind baseline.", True)
    p.add_argument("--out", default="runs/demo", type=_out_folder, metavar="DIR",
                   help="where the cache and the run go (default runs/demo)")
    p.add_argument("--data", default="data/sample", type=_out_folder, metavar="DIR",
                   help="where the sample videos are generated, unless there already (default data/sample)")
    _add_threads(p)
    return parser


def _add_train_parsers(command) -> None:
    # Options default to None so that `--resume` can tell the ones given from the run's own (train.TrainSettings).
    p = command("train", "stage two: train the LSTM on windows of a cache's features",
                "Stage two: train the LSTM on 1-second windows of a cache's features; checkpoints,\n"
                "metrics, split and plots go to the run folder. Ctrl-C, then --resume, continues.", False)
    p.add_argument("cache", metavar="CACHE", help="the feature cache made by `pipeline extract`")
    p.add_argument("--out", required=True, type=_out_folder, metavar="RUN_DIR",
                   help="the run folder: checkpoints, metrics, split, plots")
    p.add_argument("--window", type=_int_at_least(1), metavar="N", help="frames per window (default 30)")
    p.add_argument("--stride", type=_int_at_least(1), metavar="N", help="frames between window starts (default 15)")
    p.add_argument("--jitter", action=argparse.BooleanOptionalAction, default=None,
                   help="each epoch, start every training window a random 0 to stride-1 frames later: other "
                        "crops of the videos every epoch, at the same cost (default on)")
    p.add_argument("--epochs", type=_int_at_least(0), metavar="N", help="epochs in all, also when resuming (default 20)")
    p.add_argument("--hidden", type=_int_at_least(1), metavar="N", help="LSTM hidden size (default 64)")
    p.add_argument("--inputs", choices=["deltas+centered", "deltas+centered+mean", "deltas", "features", "both"],
                   help="what the LSTM reads: the features' frame-to-frame differences, which cancel what stays "
                        "put (the scene) and generalise across scenes, beside the features less their window "
                        "mean at 0.3 weight (default deltas+centered); that, with the classifier also reading the "
                        "window's mean features at 0.3 weight (deltas+centered+mean; the default's scene head sees "
                        "what stays put without costing order tasks, see --scene-head); the differences alone "
                        "(deltas); the features themselves (features); or features and differences (both)")
    p.add_argument("--scene-head", action=argparse.BooleanOptionalAction, default=None,
                   help="also train a second classifier that reads the window's mean features (what stays put, "
                        "such as the scene), which predicts only where validation finds it clearly better (by "
                        "0.15 window accuracy); the LSTM trains as without it (default on)")
    p.add_argument("--feature-dropout", type=_fraction, metavar="P",
                   help="while training, drop each of the LSTM's inputs for a whole window with probability P, "
                        "so that no few features (such as a training clip's colours) decide; in [0, 1) "
                        "(default 0: see the README)")
    p.add_argument("--lr", type=_positive, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=_int_at_least(1), metavar="N", help="windows per batch (default 64)")
    p.add_argument("--val-fraction", type=_fraction, metavar="F",
                   help="share of each label's videos for validation, in [0, 1) (default 0.2)")
    p.add_argument("--seed", type=int, help="fixes the split, initial weights, batch order (default 0)")
    p.add_argument("--device", type=_device(True), help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--data", choices=["auto", "ram", "stream"],
                   help="hold features in RAM, or stream them from the cache (default auto: RAM if they fit)")
    p.add_argument("--workers", type=_int_at_least(0), metavar="N",
                   help="processes reading the cache in stream mode (default: 0 on a CPU with few cores, "
                        "where reading between steps is faster; up to 4 with a GPU)")
    _add_threads(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")

    p = command("evaluate", "metrics of a run's best checkpoint",
                "Metrics of a run's best checkpoint (best.pt): window and video accuracy, per-class\n"
                "precision and recall, confusion matrix. By default on the run's validation videos.", False)
    p.add_argument("run", metavar="RUN_DIR", help="the run folder of `pipeline train`")
    p.add_argument("cache", nargs="?", metavar="CACHE",
                   help="evaluate on EVERY video of this cache (default: the run's validation videos)")
    p.add_argument("--cache", dest="moved_cache", metavar="NEWPATH", type=str,
                   help="the run's training cache, moved here: evaluate the run's validation videos from it")
    p.add_argument("--device", type=_device(True), default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--json", action="store_true", help="one JSON object with the metrics")
    _add_threads(p)


# --- running a command --------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top-level one
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = {"extract": cmd_extract, "info": cmd_info, "train": cmd_train, "evaluate": cmd_evaluate,
               "predict": cmd_predict, "demo": cmd_demo, "join": cmd_join}[args.command]

    def fail(message: str, status: int) -> int:
        print(f"pipeline {args.command}: error: {message}", file=sys.stderr)
        return status

    try:
        if args.command in ("extract", "predict", "demo"):
            _require_extract_extra(args.command)
        _set_threads(args)
        return command(args)
    except KeyboardInterrupt:
        print(f"\npipeline {args.command}: interrupted; {_how_to_go_on(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MissingPackage as e:
        return fail(str(e), EXIT_MISSING_PACKAGE)
    except ModuleNotFoundError as e:  # found by find_spec, yet it does not import
        if (e.name or "").split(".")[0] in EXTRACT_MODULES:
            return fail(_missing_message(args.command, [e.name.split(".")[0]]), EXIT_MISSING_PACKAGE)
        raise
    except CommandLineError as e:
        return fail(str(e), EXIT_USAGE)
    except _user_errors() as e:
        return fail(str(e), EXIT_ERROR)
    except OSError as e:  # a disk or a path the checks above could not foresee: still one line
        return fail(f"{e.filename + ': ' if getattr(e, 'filename', None) else ''}{e.strerror or e}", EXIT_ERROR)


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


def default_threads(command: str) -> int | None:
    """torch threads for a command when --threads is not given; None leaves torch's own.

    Stage two: one less than the cores, at least 1. The LSTM's many small parallel regions make
    every thread wait for the slowest, so one thread that another process preempts stalls them all
    (on 2 cores shared with other jobs: 2 threads 17-42 windows/s, 1 thread 195-454;
    benchmarks/bench_threads.sh, README). $OMP_NUM_THREADS, when set, wins. Extract and predict
    keep torch's own: their CNN is the bound on a CPU, and its convolutions use every core.
    """
    if "OMP_NUM_THREADS" in os.environ or command in ("extract", "predict", "join", "info"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    import torch

    return max(1, min(cores - 1, torch.get_num_threads()))


def _set_threads(args) -> None:
    threads = getattr(args, "threads", None) or default_threads(args.command)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _how_to_go_on(args) -> str:
    if args.command == "train":
        if (Path(args.out) / "last.pt").exists():
            return (f"the epochs finished so far are kept; resume with: pipeline train {shlex.quote(args.cache)} "
                    f"--out {shlex.quote(args.out)} --resume")
        return "no epoch had finished, so nothing is kept; run the same command again"
    if args.command in ("extract", "demo"):
        return "every video finished so far is kept; run the same command again to do the rest"
    return "nothing was changed"


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
        print(f"model      {s.get('model', '?')}, layer {s.get('layer', '?')} ({s.get('feature_dim', '?')}-d), "
              f"weights {_weights_text(s.get('weights'))}")
        print(f"frames     {s.get('fps', 0):g} fps, stored as {s.get('dtype', '?')}, format {s.get('format_version')}")
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


def _weights_text(w) -> str:
    if not isinstance(w, dict):
        return "not recorded"
    if w.get("name") == "random":
        return f"RANDOM INIT (seed {w.get('seed')})"
    return f"{w.get('name')} ({w.get('file')}, sha256 {(w.get('sha256') or '')[:12]})"


def _warn_if_windows_longer_than_videos(settings) -> None:
    """One line when --window is longer than every video: each then gives one padded window."""
    from .cache import CacheError, open_cache

    try:
        with open_cache(settings.cache) as cache:
            longest = max((cache.num_frames(v) for v in cache.video_ids), default=0)
    except CacheError:
        return  # fit says what is wrong with the cache
    if 0 < longest < settings.window:
        print(f"pipeline train: warning: --window {settings.window} is longer than every video (the longest has "
              f"{longest} frames): each video gives one window, padded by repeating its last frame; "
              f"consider --window {longest} or less", file=sys.stderr)


def _remove_unfinished_run(out: Path) -> None:
    """After a failed first `train` into a new folder: remove the folder unless an epoch finished."""
    import shutil

    if out.is_dir() and not (out / "last.pt").exists():
        shutil.rmtree(out, ignore_errors=True)


def cmd_train(args) -> int:
    from dataclasses import fields

    from .train import TrainSettings, fit, resume_settings

    names = {f.name for f in fields(TrainSettings)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    settings = resume_settings(args.out, given) if args.resume else TrainSettings(**given)
    _warn_if_windows_longer_than_videos(settings)

    def log(line: str) -> None:
        print(line, flush=True)

    new_folder = not Path(args.out).exists()
    try:
        result = fit(settings, resume=args.resume, log=log)
    except BaseException:
        if new_folder and int(os.environ.get("RANK", "0")) == 0:
            _remove_unfinished_run(Path(args.out))
        raise
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return 0
    best = result.best
    if result.start_epoch >= settings.epochs:
        print(f"{result.out}: nothing to do: the run has {result.start_epoch} epochs (--epochs {settings.epochs})")
    if best is None:
        return 0
    if best.get("val_video_acc") is not None:
        print(f"{result.out}: best epoch {best['epoch']}: validation video accuracy {best['val_video_acc']:.3f}, "
              f"window accuracy {best['val_window_acc']:.3f} (best.pt"
              + ("; the scene head predicts: on the validation videos, what stays put told the classes apart "
                 "better than the order did" if best.get("head") == "scene" else "")
              + ")")
    else:
        print(f"{result.out}: trained {best['epoch']} epochs without validation videos (best.pt = last.pt)")
    return 0


def cmd_evaluate(args) -> int:
    from .train import evaluate_run

    if args.cache and args.moved_cache:
        raise CommandLineError("give CACHE (every video of it) or --cache NEWPATH (the run's validation videos "
                               "from its moved cache), not both")
    report = evaluate_run(args.run, args.cache, device=args.device, progress=not args.json,
                          moved_cache=args.moved_cache)
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
