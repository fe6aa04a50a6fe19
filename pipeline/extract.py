"""Stage one: videos -> AlexNet features at a fixed fps -> the cache.

Decoding runs in DataLoader worker processes, one video per worker at a time, in chunks of
bounded size; the main process batches chunks across video boundaries, runs the CNN and is the
cache's one writer. On a GPU box decoding is the bottleneck (see BENCHMARKS.md), so the workers
resize in the decoder and crop before anything is copied.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from . import __version__
from .cache import FORMAT_VERSION, CacheError, CacheWriter
from .features import (CROP_SIZE, FEATURE_DIM, LAYER, PRECISIONS, RESIZE_SHORT_SIDE, FeatureExtractor,
                       preprocessing_settings, resolve_weights)
from .inputs import VideoSource
from .video import VideoDecoder, VideoError, quiet_decoder

DTYPES = ("float32", "float16")
# A worker that cannot hand over its frames (a full /dev/shm, say) leaves the main process
# waiting forever; no chunk takes anywhere near this long to decode.
WORKER_TIMEOUT_S = 600


@dataclass
class ExtractOptions:
    fps: float = 30.0
    weights: str = "imagenet"  # imagenet | random | path to a state dict
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int | None = None  # frames per CNN batch; None: 512 on a GPU, 32 on a CPU
    workers: int | None = None  # decode processes; None: every core but one; 0: decode in this process
    dtype: str = "float32"  # stored feature dtype
    precision: str = "fp32"  # CNN arithmetic on CUDA; fp16/bf16 change features by about 1e-3 relative
    retry_failed: bool = True  # a later run retries videos that failed before
    progress: bool = True


@dataclass
class ExtractSummary:
    cache: str
    done: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (video id, reason)
    weights_name: str = ""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CacheError("--device cuda was asked for, but torch sees no CUDA device here")
    return device


def cache_settings(weights_identity: dict, options: ExtractOptions) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model": "torchvision alexnet",
        "weights": weights_identity,
        "layer": LAYER,
        "feature_dim": FEATURE_DIM,
        "preprocessing": preprocessing_settings(),
        "fps": float(options.fps),
        "dtype": options.dtype,
        "precision": options.precision,
    }


class DecodeJobs(IterableDataset):
    """Each worker decodes its share of the videos and yields chunks of cropped uint8 frames.
    A video that cannot be decoded yields one "failed" item; nothing is raised."""

    def __init__(self, sources: list[VideoSource], fps: float, chunk_frames: int):
        self.sources, self.fps, self.chunk_frames = sources, fps, chunk_frames

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        quiet_decoder()
        for number in range(worker, len(self.sources), workers):
            yield from self._decode(number)

    def _decode(self, number: int):
        source = self.sources[number]
        try:
            decoder = VideoDecoder(source.path, self.fps, RESIZE_SHORT_SIDE, CROP_SIZE)
            r = decoder.resampling
            chunks = decoder.chunks(self.chunk_frames)
            first = True
            total = len(r.times)
            sent = 0
            for times, source_index, frames in chunks:
                sent += len(times)
                yield {
                    "kind": "chunk", "video": number, "first": first, "last": sent == total,
                    "duration": r.duration, "source_fps": r.source_fps, "frames_total": total,
                    "times": torch.from_numpy(times), "source_index": torch.from_numpy(source_index),
                    "frames": torch.from_numpy(frames),
                }
                first = False
        except VideoError as e:
            yield {"kind": "failed", "video": number, "error": str(e)}
        except Exception as e:  # a bug or an unexpected library error: keep the run going, say what it was
            yield {"kind": "failed", "video": number, "error": f"unexpected {type(e).__name__}: {e}"[:300]}


def _init_decode_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)  # one process per core is the parallelism; threads would fight it
    _die_with_parent()


def _die_with_parent() -> None:
    """A worker blocked on a full queue outlives a `kill -9` of the main process, holding memory
    for good; on Linux, ask the kernel to kill it when its parent dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except OSError:  # not Linux: nothing to do
        pass
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


class _Batcher:
    """Collects chunks from any videos until a CNN batch is full."""

    def __init__(self, batch_size: int):
        self.batch_size, self.chunks, self.frames = batch_size, [], 0

    def add(self, chunk: dict) -> bool:
        self.chunks.append(chunk)
        self.frames += len(chunk["times"])
        return self.frames >= self.batch_size

    def drop_video(self, number: int) -> None:
        self.chunks = [c for c in self.chunks if c["video"] != number]
        self.frames = sum(len(c["times"]) for c in self.chunks)

    def take(self) -> list[dict]:
        chunks, self.chunks, self.frames = self.chunks, [], 0
        return chunks


def extract(sources: list[VideoSource], cache_path, options: ExtractOptions) -> ExtractSummary:
    """Extract every source not already done into the cache at `cache_path`.

    Raises CacheError or WeightsError for problems that stop the whole run; a bad video is
    recorded in the cache's failure ledger and in the summary instead.
    """
    if options.dtype not in DTYPES:
        raise CacheError(f"--dtype must be one of {', '.join(DTYPES)}")
    if options.precision not in PRECISIONS:
        raise CacheError(f"--precision must be one of {', '.join(PRECISIONS)}")
    device = resolve_device(options.device)
    state_dict, identity = resolve_weights(options.weights)
    settings = cache_settings(identity, options)
    started = time.perf_counter()
    summary = ExtractSummary(cache=str(cache_path), weights_name=identity["name"])
    with CacheWriter(cache_path, settings) as cache:
        todo = [s for s in sources if not cache.is_done(s.id, options.retry_failed)]
        summary.skipped = len(sources) - len(todo)
        if todo:
            extractor = FeatureExtractor.create(state_dict, device, options.precision)
            _run(todo, cache, extractor, options, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _run(todo, cache: CacheWriter, extractor: FeatureExtractor, options: ExtractOptions, summary: ExtractSummary):
    on_gpu = extractor.device.type == "cuda"
    batch_size = options.batch_size or (512 if on_gpu else 32)
    workers = options.workers if options.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    workers = min(workers, len(todo))
    loader = DataLoader(
        DecodeJobs(todo, options.fps, chunk_frames=min(batch_size, 128)),
        batch_size=None, num_workers=workers, pin_memory=on_gpu,
        multiprocessing_context="spawn" if workers else None,  # no fork of a process holding CUDA or threads
        prefetch_factor=4 if workers else None, in_order=False,
        worker_init_fn=_init_decode_worker, timeout=WORKER_TIMEOUT_S if workers else 0,
    )
    writers = {}  # video number -> VideoWriter, for videos in flight
    batcher = _Batcher(batch_size)
    bar = tqdm(total=len(todo), unit="video", desc="extract", disable=not options.progress, dynamic_ncols=True)
    frames_done = 0

    def run_batch():
        nonlocal frames_done
        chunks = batcher.take()
        if not chunks:
            return
        features = extractor(torch.cat([c["frames"] for c in chunks])).cpu().numpy()
        offset = 0
        for c in chunks:
            n = len(c["times"])
            writer = writers[c["video"]]
            writer.append(features[offset:offset + n], c["times"].numpy(), c["source_index"].numpy())
            offset += n
            if c["last"]:
                record = writers.pop(c["video"]).commit()
                summary.done += 1
                summary.frames += record.frames
                bar.update(1)
        frames_done += len(features)
        bar.set_postfix_str(f"{frames_done / max(bar.format_dict['elapsed'], 1e-9):.0f} frames/s", refresh=False)

    try:
        for item in loader:
            number = item["video"]
            source = todo[number]
            if item["kind"] == "failed":
                if writers.pop(number, None):
                    batcher.drop_video(number)
                cache.record_failure(source.id, source.label, str(source.path), item["error"])
                summary.failures.append((source.id, item["error"]))
                bar.update(1)
                continue
            if item["first"]:
                writers[number] = cache.begin_video(
                    source.id, source.label, str(source.path), item["source_fps"], item["duration"], item["frames_total"])
            if batcher.add(item):
                run_batch()
        run_batch()
    except RuntimeError as e:
        if "DataLoader" not in str(e):
            raise
        raise CacheError(f"the decoding workers stopped ({str(e).splitlines()[0]}); is /dev/shm full? "
                         f"Rerun with fewer --workers or --batch-size; every video finished before this is kept") from None
    finally:
        bar.close()
