"""How close `pipeline extract` runs to its ceilings, measured in one run on the same videos.

    python benchmarks/bench_extract.py [--size 320x240|720p|1080p] [--videos N] [--seconds S]
                                       [--folder DIR] [--device auto] [--batch-size N] [--workers N]
                                       [--old-tree DIR [--decode-rounds N]]

Three figures, in frames/s of 30 fps output:
  decode ceiling  the same decode workers (and, on CUDA, the conversion and resize on the GPU), no CNN
  cnn ceiling     the fastest of: AlexNet alone in NCHW, in channels_last (same device, batch size,
                  precision, on a ready float batch), on a CPU also one single-threaded channels_last
                  forward per core at once (on the lanes' rows and on 32, the faster), and the
                  pipeline's extractor on crops in memory
  extract         pipeline's extract() end to end into a new cache (worker start-up included)
Under the decode ceiling and extract, a line says how many cores each part kept busy. On a CPU the
two fastest forms (one forward per core, the pipeline's extractor) are timed once more after extract,
and the fastest of all the timings is the ceiling.
Last line: extract_ratio = extract / the lower ceiling. Targets: >= 0.85 on a 2-core CPU
(bound by the CNN), >= 0.9 on a GPU box (bound by decoding).

--shards N (CPU): also extract as N shards at once (`--shard i/N --threads 1 --workers 0` each: one
single-threaded CNN per core, decoding between its own batches), timed from a common start, after
imports, to the last shard's end; extract_ratio_shards compares it with the same ceiling.

--old-tree DIR: then also the decode side per core, this code and the checkout in DIR (e.g. `git
worktree add ../old e103401`) side by side on the same clips: frames per CPU-second of one decode worker,
rounds alternating (bench_decode.py's comparison, which says what each handover is), and
decode_speedup lines, the new code's rate over the old's (issue 10's target: at least 1.5).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from cpu_use import CpuUse
from machine import machine
from pipeline.extract import Decoding, ExtractOptions, extract, resolve_device
from pipeline.features import (CPU_ROWS_PER_LANE, CROP_SIZE, FeatureExtractor, build_alexnet, cpu_lanes,
                               default_batch_size, resolve_weights)
from pipeline.inputs import find_videos

SIZES = {"320x240": (320, 240), "720p": (1280, 720), "1080p": (1920, 1080)}


def _write_one(job):
    """One H.264 clip of a texture panning under a moving light: cheap to make, not trivial to code."""
    import av

    path, width, height, frames, seed, *rest = job
    keyint = rest[0] if rest else 250  # x264's default; 0: a single keyframe (keyint=infinite)
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), np.uint8))  # 8x8 blocks: like real footage, not noise
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23",
                          "x264-params": f"keyint={keyint or 'infinite'}:scenecut={0 if keyint == 0 else 40}"}
        for i in range(frames):
            dy, dx = i % 8, (2 * i) % 8
            image = texture[dy:dy + height, dx:dx + width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_videos(folder: Path, size: str, count: int, seconds: float) -> None:
    width, height = SIZES[size]
    jobs = [(str(folder / f"class{i % 2}" / f"clip{i:04d}.mp4"), width, height, int(seconds * 30), i)
            for i in range(count)]
    for c in range(2):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_one, jobs)


def decode_ceiling(sources, options: ExtractOptions, batch_size: int, device: torch.device) -> tuple[int, float]:
    """Decoding as extract does it, with no CNN: on CUDA the frames are also converted and resized on the GPU."""
    start, frames = time.perf_counter(), 0
    decoding = Decoding(sources, options, batch_size, device)
    try:
        for item in decoding:
            if item["kind"] == "chunk":
                if "decoded" in item:
                    decoding.crops(item["decoded"])
                frames += len(item["times"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        slots = decoding.slots
        if slots is not None:
            print(f"  decoded frames crossed through {len(slots.buffer)} shared slots of {slots.slot_bytes >> 20} MB, "
                  f"{'page-locked' if slots.pinned else 'NOT page-locked'}")
    finally:
        decoding.close()
    return frames, time.perf_counter() - start


def fastest_forward(device: torch.device, batch_size: int, seconds: float, precision: str) -> dict[str, float]:
    """The CNN's ceiling in its fastest forms: frames/s of AlexNet alone on a ready float batch, in
    NCHW and in channels_last (on this project's CPU channels_last is 1.3x faster; GPUs prefer it too)."""
    from torchvision.models import alexnet

    model = alexnet(weights=None).eval().to(device)
    x = torch.randn(batch_size, 3, CROP_SIZE, CROP_SIZE, device=device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    rates = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        m, inp = model.to(memory_format=layout), x.contiguous(memory_format=layout)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            for _ in range(3):
                m(inp).float().cpu()
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 2:
                m(inp).float().cpu()
                done += batch_size
        rates["channels_last" if layout == torch.channels_last else "NCHW"] = done / (time.perf_counter() - start)
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1:
        # The lanes' rows, and CPU_ROWS_PER_LANE if that differs: the ceiling is the faster of the two
        rows = sorted({max(1, batch_size // threads), CPU_ROWS_PER_LANE})
        rates["one per core"] = max(
            _one_forward_per_core(model, torch.randn(n, 3, CROP_SIZE, CROP_SIZE).contiguous(memory_format=torch.channels_last),
                                  seconds / 2) for n in rows)
    return rates


def _one_forward_per_core(model, x, seconds: float) -> float:
    """Frames/s of as many single-threaded forwards at once as torch has threads (channels_last):
    one CNN per core, with no threads waiting for each other at every layer (what --shards runs)."""
    import threading

    threads = torch.get_num_threads()
    done = [0] * threads

    def run(i):
        with torch.inference_mode():
            model(x)  # warm-up
            started[i] = time.perf_counter()
            while time.perf_counter() < started[i] + seconds:
                model(x)
                done[i] += len(x)

    started = [0.0] * threads
    torch.set_num_threads(1)
    try:
        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        torch.set_num_threads(threads)
    return sum(done) / (time.perf_counter() - min(started))


def cnn_ceiling(state_dict: dict, device: torch.device, precision: str, lanes: int, batch_size: int,
                seconds: float) -> float:
    """Frames/s of the pipeline's own extractor (with extract's lanes) on uint8 crops in memory."""
    extractor = FeatureExtractor.create(state_dict, device, precision, lanes=lanes)
    try:
        frames = torch.randint(0, 256, (batch_size, CROP_SIZE, CROP_SIZE, 3), dtype=torch.uint8)
        if device.type == "cuda":
            frames = frames.pin_memory()
        for _ in range(3):  # warm-up: cudnn autotuning, allocator
            extractor(frames).cpu()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            extractor(frames).cpu()  # the same host round trip extract makes
            done += batch_size
        return done / (time.perf_counter() - start)
    finally:
        extractor.close()


def _shard(job):
    """One shard of `extract_in_shards`, in a process of its own: waits for the others, then extracts."""
    folder, cache, i, count, options, ready, finished = job
    torch.set_num_threads(1)
    sources = find_videos(folder)
    ready.wait()  # every shard has imported torch and found its videos: the clock starts for all at once
    summary = extract(sources, cache, replace(options, workers=0, shard=(i, count)))
    finished.put((summary.frames, time.perf_counter(), len(summary.failures)))


def extract_in_shards(folder: Path, cache: Path, options: ExtractOptions, count: int) -> tuple[int, float, int]:
    """(frames, seconds, failures) of `count` single-threaded shards extracting at once."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready, finished = context.Barrier(count + 1), context.Queue()
    processes = [context.Process(target=_shard, args=((folder, cache, i, count, options, ready, finished),))
                 for i in range(count)]
    for p in processes:
        p.start()
    ready.wait()
    start = time.perf_counter()
    results = [finished.get() for _ in processes]
    for p in processes:
        p.join()
    return sum(r[0] for r in results), max(r[1] for r in results) - start, sum(r[2] for r in results)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="320x240", choices=sorted(SIZES))
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each generated video")
    parser.add_argument("--folder", help="use the videos in this folder; if it does not exist, make them there "
                        "(to run other settings on the same videos later)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--cnn-seconds", type=float, default=15.0, help="how long to time the CNN alone")
    parser.add_argument("--shards", type=int, default=0, help="also extract as this many single-threaded shards at once")
    parser.add_argument("--old-tree", help="also the decode side per worker, this code against the checkout here "
                        "(e.g. e103401), on the same clips: bench_decode.py's comparison")
    parser.add_argument("--decode-rounds", type=int, default=3, help="alternating rounds of that comparison")
    args = parser.parse_args(argv)
    if args.old_tree and not (Path(args.old_tree) / "pipeline").is_dir():
        parser.error(f"--old-tree {args.old_tree}: no pipeline/ there (make one: git worktree add DIR e103401)")

    device = resolve_device(args.device)
    batch_size = args.batch_size or default_batch_size(device, torch.get_num_threads())  # as extract's
    options = ExtractOptions(weights="random", device=args.device, batch_size=batch_size, workers=args.workers,
                             precision=args.precision, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "videos"
        if not folder.exists():
            started = time.perf_counter()
            make_videos(folder, args.size, args.videos, args.seconds)
            print(f"made {args.videos} videos of {args.seconds:g} s at {args.size} in {time.perf_counter() - started:.1f} s")
        sources = find_videos(folder)
        print(f"machine: {machine()}; torch {torch.__version__}; device {device}, batch {batch_size}, "
              f"precision {args.precision}, workers {args.workers if args.workers is not None else 'default'}")

        with CpuUse() as use:
            frames, seconds = decode_ceiling(sources, options, batch_size, device)
        decode_fps = frames / seconds
        print(f"decode ceiling: {decode_fps:9.1f} frames/s ({frames} frames in {seconds:.1f} s)")
        print(f"  {use.report()}")

        forward = fastest_forward(device, batch_size, args.cnn_seconds, args.precision)
        state_dict, _ = resolve_weights("random")
        lanes = cpu_lanes(torch.get_num_threads(), batch_size) if device.type == "cpu" else 1  # as extract runs it
        pipeline_cnn = cnn_ceiling(state_dict, device, args.precision, lanes, batch_size, args.cnn_seconds / 2)
        cnn_fps = max(*forward.values(), pipeline_cnn)
        per_core = f", one single-threaded forward per core {forward['one per core']:.1f}" if "one per core" in forward else ""
        print(f"cnn ceiling:    {cnn_fps:9.1f} frames/s (AlexNet alone: NCHW {forward['NCHW']:.1f}, channels_last "
              f"{forward['channels_last']:.1f}{per_core}; pipeline's extractor on uint8 crops {pipeline_cnn:.1f})")
        if device.type == "cuda":
            torch.cuda.empty_cache()

        with CpuUse() as use:
            summary = extract(sources, Path(tmp) / "cache", options)
        extract_fps = summary.frames / summary.seconds
        print(f"extract:        {extract_fps:9.1f} frames/s ({summary.frames} frames in {summary.seconds:.1f} s, "
              f"{len(summary.failures)} failed)")
        print(f"  after its start-up ({summary.startup_seconds:.1f} s to the first batch): "
              f"{summary.rate_after_startup():.1f} frames/s")
        print(f"  {use.report()}")
        if device.type == "cpu" and torch.get_num_threads() > 1:
            # A CPU's speed drifts (this project's VM: the ceiling moved 22% between runs minutes apart,
            # BENCHMARKS.md): time its two fastest forms once more after extract and keep the fastest, so
            # a slow moment before extract cannot flatter the ratio
            per_core = _one_forward_per_core(
                build_alexnet(state_dict).to(memory_format=torch.channels_last),
                torch.randn(CPU_ROWS_PER_LANE, 3, CROP_SIZE, CROP_SIZE).contiguous(memory_format=torch.channels_last),
                args.cnn_seconds / 2)
            pipeline_again = cnn_ceiling(state_dict, device, args.precision, lanes, batch_size, args.cnn_seconds / 2)
            again = max(per_core, pipeline_again)
            print(f"cnn ceiling after extract: one single-threaded forward per core {per_core:.1f}, pipeline's "
                  f"extractor {pipeline_again:.1f} frames/s{' (the ceiling now)' if again > cnn_fps else ''}")
            cnn_fps = max(cnn_fps, again)
        if args.shards:
            frames, seconds, failed = extract_in_shards(folder, Path(tmp) / "shards", options, args.shards)
            shards_fps = frames / seconds
            print(f"extract, {args.shards} single-threaded shards at once: {shards_fps:9.1f} frames/s "
                  f"({frames} frames in {seconds:.1f} s, {failed} failed)")
        if args.old_tree:
            from bench_decode import compare

            print(f"the decode side per worker, this code against {args.old_tree} "
                  f"(median of {args.decode_rounds} alternating rounds):")
            compare(folder, args.old_tree, args.decode_rounds)
    bound = "decode" if decode_fps < cnn_fps else "cnn"
    print(f"bound by {bound}; extract_ratio = extract / min(decode, cnn)")
    print(f"extract_ratio={extract_fps / min(decode_fps, cnn_fps):.3f}")
    if args.shards:
        print(f"extract_ratio_shards={shards_fps / min(decode_fps, cnn_fps):.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
