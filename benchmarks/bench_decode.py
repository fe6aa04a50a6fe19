"""The decode side of stage one, per core: what one decode worker turns out per second of its CPU.

    python benchmarks/bench_decode.py [--size 320x240|720p|1080p] [--videos N] [--seconds S]
                                      [--folder DIR] [--old-tree DIR] [--rounds N] [--shm-mb MB]

On a GPU box decoding bounds `extract` (BENCHMARKS.md), so frames per CPU-second of a decode worker
is what sets its speed: a box with C cores does about C - 1 times that. Each configuration runs one
decode worker (DataLoader, as `extract` does) over the same clips, in a subprocess of its own, and
reports frames/s of wall time and frames per CPU-second of the worker:

  gpu-box handover, slots
                    this tree: the worker decodes and writes the decoded frames (the YUV of the crop's
                    region) into shared slots, as on a GPU box (pinned_slots.py; here not page-locked,
                    which costs the main process, not the worker); the GPU would convert and resize
  gpu-box handover  the same through the DataLoader's own transfer (a GPU box without room for the
                    slots in /dev/shm): a fresh shared-memory segment per chunk
  cpu-box handover  this tree: the worker also converts (swscale) and resizes (torch) to 224x224 crops
  decord            this tree with --decoder decord: decord's full-size RGB, resized as above
  old               the tree at --old-tree (e.g. `git worktree add ../old e103401`): decord resizing
                    in the decoder, then cropping, in the worker (what both boxes ran before)

Rounds alternate between configurations, and the median is reported: the machine is shared.

`--shm-mb 64` runs each configuration with a /dev/shm of that size, as in a Docker container that was
not given more (Linux, as root: a mount namespace of its own). Where the items do not fit, `extract`
decodes in its main process instead; that is then reported, with the main process's CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Run in a subprocess with PYTHONPATH set to the tree under test: decode every clip with one worker.
MEASURE = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["BENCH_DIR"])
import pipeline
assert pipeline.__file__.startswith(os.environ["PYTHONPATH"]), (pipeline.__file__, "is not the tree under test")
from cpu_use import CpuUse
from pipeline.extract import ExtractOptions, decode_loader
from pipeline.inputs import find_videos
sources = find_videos(sys.argv[1])
mode = sys.argv[2]
options = ExtractOptions(weights="random", device="cpu", workers=1, progress=False)
if mode == "decord":
    options.decoder = "decord"
kwargs = {} if mode == "old" else {"preprocess_in_worker": not mode.startswith("gpu-box")}
slots = None
if mode == "gpu-box-slots":  # as Decoding makes them on a GPU box (here shared, not page-locked)
    import torch
    from pipeline.extract import gpu_box_slots
    slots = kwargs["slots"] = gpu_box_slots(1, torch.device("cpu"))
    print("slots:", slots and f"{slots.buffer.shape[0]} of {slots.slot_bytes / 2**20:.1f} MB", file=sys.stderr)
loader = decode_loader(sources, options, 512, False, **kwargs)
frames = 0
main_cpu = time.process_time()
with CpuUse() as use:
    for item in loader:
        if item["kind"] == "chunk":
            frames += len(item["times"])
            stored = item.get("decoded", {}).get("stored")
            if stored is not None:
                slots.release(stored["slot"])
worker_seconds = sum(s - use.workers_before.get(pid, 0.0) for pid, s in use.workers.items())
in_process = loader.num_workers == 0  # /dev/shm too small for the items: decoded here
print(json.dumps({"frames": frames, "wall": use.seconds, "in_process": in_process,
                  "worker_cpu": time.process_time() - main_cpu if in_process else worker_seconds}))
"""


def measure(tree: Path, folder: Path, mode: str, shm_mb: int | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_DIR": str(HERE)}
    command = [sys.executable, "-c", MEASURE, str(folder.resolve()), mode]
    if shm_mb:
        command = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size={shm_mb}m tmpfs /dev/shm && exec "$@"',
                   "sh", *command]
    # (run in the tree: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH, so
    # run from another checkout it would import that checkout's pipeline, as this did before 2026-11-29)
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tree)
    if run.returncode != 0:
        sys.exit(f"{mode} in {tree}: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    sys.path.insert(0, str(HERE))
    from bench_extract import SIZES, make_videos
    from machine import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="720p", choices=sorted(SIZES))
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--folder", help="reuse (or make) the clips here")
    parser.add_argument("--old-tree", help="a checkout of the code to compare with, e.g. e103401")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shm-mb", type=int, help="a /dev/shm of this size (as Docker's default 64); Linux, root")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "videos"
        if folder.exists():
            clips = f"the {sum(1 for p in folder.rglob('*') if p.is_file())} files in {folder}"
        else:
            make_videos(folder, args.size, args.videos, args.seconds)
            clips = f"{args.videos} clips of {args.seconds:g} s at {args.size}"
        shm = f"; /dev/shm of {args.shm_mb} MB" if args.shm_mb else ""
        print(f"machine: {machine()}; {clips}; one decode worker{shm}; median of {args.rounds} alternating rounds")
        compare(folder, args.old_tree, args.rounds, args.shm_mb)


def compare(folder: Path, old_tree: str | None, rounds: int, shm_mb: int | None = None) -> dict[str, float]:
    """Every configuration (and the old tree's, if given) over the clips in `folder`, rounds alternating;
    prints each one's median frames per worker CPU-second, and the speedups over the old tree."""
    configs = [("gpu-box handover, slots", HERE.parent, "gpu-box-slots"), ("gpu-box handover", HERE.parent, "gpu-box"),
               ("cpu-box handover", HERE.parent, "cpu-box"),
               ("decord", HERE.parent, "decord")]
    if old_tree:
        configs.append(("old (" + Path(old_tree).name + ")", Path(old_tree).resolve(), "old"))
    results = {name: [] for name, _, _ in configs}
    for _ in range(rounds):
        for name, tree, mode in configs:
            results[name].append(measure(tree, folder, mode, shm_mb))
    rates = {}
    for name, runs in results.items():
        per_cpu = statistics.median(r["frames"] / r["worker_cpu"] for r in runs)
        wall = statistics.median(r["frames"] / r["wall"] for r in runs)
        rates[name] = per_cpu
        where = " (decoded in the main process: no room in /dev/shm)" if runs[0].get("in_process") else ""
        print(f"{name:28s} {per_cpu:8.0f} frames per worker CPU-second   {wall:8.0f} frames/s wall "
              f"({runs[0]['frames']} frames){where}")
    old = [v for k, v in rates.items() if k.startswith("old")]
    if old:
        print(f"decode_speedup (gpu-box handover, slots / old) = {rates['gpu-box handover, slots'] / old[0]:.2f}")
        print(f"decode_speedup (gpu-box handover / old) = {rates['gpu-box handover'] / old[0]:.2f}")
        print(f"decode_speedup (cpu-box handover / old) = {rates['cpu-box handover'] / old[0]:.2f}")
    return rates


if __name__ == "__main__":
    main()
