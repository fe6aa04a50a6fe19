"""Memory of `pipeline extract`: peak RSS against video length, and RSS over a soak of many videos.

    python benchmarks/bench_memory.py long [--minutes 1 10] [--size 720p] [--keyint 250|0]
    python benchmarks/bench_memory.py soak [--videos 300]

`long` extracts one video of each length and prints the peak RSS of the extract process and of its
whole process tree (decode workers included). Decoding is sequential and streamed (video.VideoReader),
so the peak should differ between lengths only by the video's features,
held until the video is written (4 KB a frame in float32, twice while the file image is built: see
cache.VideoWriter).

`soak` extracts many short videos and samples RSS over time, of the main process and of the whole
process tree; it prints both at 20, 40, 60, 80 and 95% of the run and their growth from 40% to 95%
(a leak shows as steady growth).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_extract import _write_one, make_videos  # noqa: E402
from machine import machine  # noqa: E402
from rss import descendants, rss_kib  # noqa: E402

from pipeline.extract import resolve_device  # noqa: E402

SIZES = {"320x240": (320, 240), "720p": (1280, 720), "1080p": (1920, 1080)}


def sample_extract(folder: Path, cache: Path, interval: float = 0.25) -> tuple[list[tuple[float, int, int]], float]:
    """Run `pipeline extract` in a subprocess; (time, main KiB, tree KiB) samples and the seconds it took."""
    command = [sys.executable, "-m", "pipeline", "extract", str(folder), "--out", str(cache), "--weights", "random"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    while process.poll() is None:
        main = rss_kib(process.pid)
        samples.append((time.perf_counter() - start, main, main + sum(rss_kib(p) for p in descendants(process.pid))))
        time.sleep(interval)
    if process.returncode != 0:
        raise SystemExit(f"extract failed with exit status {process.returncode}")
    return samples, time.perf_counter() - start


def long_videos(minutes: list[float], size: str, keyint: int) -> None:
    width, height = SIZES[size]
    for length in minutes:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "in" / "x").mkdir(parents=True)
            frames = int(length * 60 * 30)
            _write_one((str(Path(tmp) / "in" / "x" / "long.mp4"), width, height, frames, 0, keyint))
            samples, seconds = sample_extract(Path(tmp) / "in", Path(tmp) / "cache")
        peak_main = max(s[1] for s in samples) / 1024
        peak_tree = max(s[2] for s in samples) / 1024
        keyframes = f"a keyframe every {keyint} frames" if keyint else "a single keyframe"
        print(f"{length:g} min of {size}, {keyframes} ({frames} frames, extracted in {seconds:.0f} s): "
              f"peak RSS main {peak_main:.0f} MiB, process tree {peak_tree:.0f} MiB")


def soak(videos: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        make_videos(Path(tmp) / "in", "320x240", videos, 1.0)
        samples, seconds = sample_extract(Path(tmp) / "in", Path(tmp) / "cache")
    # at 20, 40, 60, 80 and 95% of the run: the very last samples are the process shutting down
    points = [samples[int((len(samples) - 1) * f)] for f in (0.2, 0.4, 0.6, 0.8, 0.95)]
    main_mib, tree_mib = [p[1] / 1024 for p in points], [p[2] / 1024 for p in points]
    print(f"soak: {videos} videos of 1 s at 320x240 in {seconds:.0f} s; RSS at 20/40/60/80/95% of the run: "
          f"main {', '.join(f'{m:.0f}' for m in main_mib)} MiB; process tree {', '.join(f'{m:.0f}' for m in tree_mib)} MiB")
    print(f"soak_growth_mib={main_mib[-1] - main_mib[1]:.0f} tree_growth_mib={tree_mib[-1] - tree_mib[1]:.0f} "
          "(from 40% to 95% of the run)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("long")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    p.add_argument("--size", default="720p", choices=sorted(SIZES))
    p.add_argument("--keyint", type=int, default=250, help="frames between keyframes; 0: a single keyframe")
    p = sub.add_parser("soak")
    p.add_argument("--videos", type=int, default=300)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; device {resolve_device('auto')}")
    if args.mode == "long":
        long_videos(args.minutes, args.size, args.keyint)
    else:
        soak(args.videos)


if __name__ == "__main__":
    main()
