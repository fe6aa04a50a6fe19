"""Stage one: videos -> AlexNet features at a fixed fps -> the cache.

Decoding runs in DataLoader worker processes, one video per worker at a time, in chunks of
bounded size; the main process batches chunks across video boundaries, runs the CNN and is the
cache's one writer. On a CPU box the workers convert, resize and crop, and hand over crops. On a GPU
box the CPU side is the bottleneck (BENCHMARKS.md), so the workers hand over only the YUV pixels the
crop is made of, written into shared page-locked slots (pinned_slots.py), and the GPU does the rest.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from . import __version__, devices, shared_memory
from .cache import (FORMAT_VERSION, SETTINGS_FILE, CacheError, CacheWriter, read_records, refuse_other_settings,
                    shard_dir, write_json_atomic)
from .features import (CROP_SIZE, FEATURE_DIM, LAYER, PRECISIONS, FeatureExtractor, cpu_lanes, default_batch_size,
                       preprocessing_settings, resolve_weights)
from .inputs import VideoSource, assign_shard
from .preprocess import to_crops
from .decord_video import DECODERS, open_video
from .pinned_slots import ALIGN, MAX_PLANES, PinnedSlots
from .video import MAX_CHUNK_BYTES, MAX_CHUNK_FRAMES, VideoError, quiet_decoder

DTYPES = ("float32", "float16")
# A worker that cannot hand over its frames (a full /dev/shm, say) leaves the main process
# waiting forever; no chunk takes anywhere near this long to decode.
WORKER_TIMEOUT_S = 600


@dataclass
class ExtractOptions:
    fps: float = 30.0
    weights: str = "imagenet"  # imagenet | random | path to a state dict
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int | None = None  # frames per CNN batch; None: features.default_batch_size
    workers: int | None = None  # decode processes; None: every core but one; 0: decode in this process
    dtype: str = "float32"  # stored feature dtype
    precision: str = "fp32"  # CNN arithmetic on CUDA; fp16/bf16 change features by about 1e-3 relative
    retry_failed: bool = True  # a later run retries videos that failed before
    shard: tuple[int, int] | None = None  # (i, N): extract only shard i of N into CACHE/shards/i-of-N
    decoder: str = "auto"  # auto | pyav | decord: see decord_video.open_video for the rule
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
    # seconds until the first CNN batch was started (queued on a GPU or in a CPU's lanes), and its
    # frames: the rate after it leaves out the start-up (forking the workers, building the model,
    # cuDNN's tuning), for benchmarks of short runs
    startup_seconds: float = 0.0
    startup_frames: int = 0

    def rate_after_startup(self) -> float:
        frames, seconds = self.frames - self.startup_frames, self.seconds - self.startup_seconds
        return frames / seconds if frames > 0 and seconds > 0 else 0.0


def resolve_device(name: str) -> torch.device:
    # auto never picks MPS here: the fast paths (pinned memory, channels_last, --precision) are CUDA's.
    return devices.resolve_device(name, CacheError)


def for_torchrun_rank(options: ExtractOptions) -> ExtractOptions:
    """Under torchrun (it sets WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE), each process is a
    shard: its rank's share of the videos, its own GPU, its share of the cores. The ranks never
    talk: the split is computed alike everywhere, and the cache reads all shards as one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or options.shard is not None:
        return options
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device = options.device
    if device == "auto" and torch.cuda.is_available():
        device = f"cuda:{local_rank % torch.cuda.device_count()}"
    workers = options.workers
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) // local_world - 1)
    return replace(options, shard=(rank, world), device=device, workers=workers)


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
    """Each worker decodes its share of the videos and yields chunks of their frames: crops ready for
    the CNN (`preprocess_in_worker`, a CPU box), or the decoded frames unresized, for the CNN's device
    to convert and resize (a GPU box, where decoding is the bottleneck and the GPU is idle).
    A video that cannot be decoded yields one "failed" item; nothing is raised. Every item of a video
    is numbered ("part", from 0), so that the main process can tell when one never came
    (`_ExtractLoop._in_order`)."""

    def __init__(self, sources: list[VideoSource], fps: float, chunk_frames: int, preprocess_in_worker: bool = True,
                 decoder: str = "auto", slots: PinnedSlots | None = None):
        self.sources, self.fps, self.chunk_frames = sources, fps, chunk_frames
        self.preprocess_in_worker, self.decoder, self.slots = preprocess_in_worker, decoder, slots

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        quiet_decoder()
        for number in range(worker, len(self.sources), workers):
            yield from self._decode(number)

    def _decode(self, number: int):
        source = self.sources[number]
        # swscale's RGB, resized here as it comes, where the CPU resizes anyway; YUV planes where the GPU converts them
        handover = "crop" if self.preprocess_in_worker else "yuv"
        part = 0
        try:
            with open_video(source.path, self.fps, handover, self.decoder) as reader:
                first = True
                # a chunk of decoded planes must fit a slot (all of them, where /dev/shm allowed only small ones)
                max_bytes = self.slots.chunk_bytes if self.slots and not self.preprocess_in_worker else MAX_CHUNK_BYTES
                for number_in_video, chunk in enumerate(reader.chunks(self.chunk_frames, max_bytes)):
                    if number_in_video % TRIM_EVERY == TRIM_EVERY - 1:
                        release_free_memory()  # decoding frees MB-sized buffers too
                    frames = chunk.frames.to_dict()
                    item = {"kind": "chunk", "video": number, "part": part, "first": first, "last": chunk.last,
                            "times": torch.from_numpy(chunk.times), "source_index": torch.from_numpy(chunk.source_index)}
                    if self.preprocess_in_worker:
                        item["frames"] = to_crops(frames)
                    else:
                        stored = self.slots.store(chunk.frames.planes) if self.slots else None
                        if stored:  # the planes wait in a pinned slot: only where they lie crosses
                            frames.update(planes=None, stored=stored)
                        elif self.slots:
                            frames = _crops_made_here(frames)
                        item["decoded"] = frames
                    if chunk.last:
                        item.update(duration=reader.duration, source_fps=reader.source_fps)
                    yield item
                    first, part = False, part + 1
        except VideoError as e:
            yield {"kind": "failed", "video": number, "part": part, "error": str(e)}
        except Exception as e:  # a bug or an unexpected library error: keep the run going, say what it was
            yield {"kind": "failed", "video": number, "part": part, "error": f"unexpected {type(e).__name__}: {e}"[:300]}


def _crops_made_here(frames: dict) -> dict:
    """A GPU box's chunk that does not fit a slot (one frame bigger than a slot: a whole 4K frame of a
    deeper format, turned or from decord, 25 MB as RGB; or 8K), converted and cropped in the worker, as a
    CPU box's are: as tensors its frames would need /dev/shm room that the slots were sized not to need
    (in a small /dev/shm a dropped item then stalled the workers until the DataLoader's timeout).
    One crop per decoded frame; the CNN's device repeats them as shown."""
    crops = to_crops({**frames, "repeats": torch.ones_like(frames["repeats"])})
    return {"kind": "crop", "planes": (crops,), "repeats": frames["repeats"], "rotation": 0}


def _load_libc():
    """glibc, for malloc_trim and prctl; None elsewhere (macOS, musl), where both are skipped."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "prctl") else None
    except OSError:
        return None


_LIBC = _load_libc()
TRIM_EVERY = 8  # batches (or decoded chunks) between returns of free heap memory to the OS


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS. glibc raises its mmap threshold after each large
    free, so the MB-sized frame batches freed every step come from a heap that then only grows:
    1.1 -> 3 GB over ten minutes of 720p. Trimming every few batches keeps RSS flat for about 2% of
    speed (pinning the threshold instead cost 18%: every batch's pages faulted in anew)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _init_decode_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)  # one process per core is the parallelism; threads would fight it
    _die_with_parent()


def _die_with_parent() -> None:
    """A worker blocked on a full queue outlives a `kill -9` of the main process, holding memory
    for good; on Linux, ask the kernel to kill it when its parent dies."""
    if _LIBC is not None:  # Linux
        _LIBC.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


class _Batcher:
    """Collects chunks from any videos into CNN batches of exactly `batch_size` frames: cuDNN tunes
    its kernels anew for each batch shape it meets, and batches of varying size kept it tuning."""

    def __init__(self, batch_size: int):
        self.batch_size, self.chunks, self.frames = batch_size, deque(), 0

    def add(self, chunk: dict) -> None:
        self.chunks.append(chunk)
        self.frames += len(chunk["times"])

    def full(self) -> bool:
        return self.frames >= self.batch_size

    def drop_video(self, number: int) -> None:
        self.chunks = deque(c for c in self.chunks if c["video"] != number)
        self.frames = sum(len(c["times"]) for c in self.chunks)

    def take(self) -> list[dict]:
        """The next batch: `batch_size` frames, splitting a chunk if need be, or all that is left."""
        taken, count = [], 0
        while self.chunks and count < self.batch_size:
            chunk = self.chunks.popleft()
            room = self.batch_size - count
            if len(chunk["times"]) > room:
                self.chunks.appendleft(_part(chunk, slice(room, None), first=False))
                chunk = _part(chunk, slice(0, room), last=False)
            taken.append(chunk)
            count += len(chunk["times"])
        self.frames -= count
        return taken


def _part(chunk: dict, frames: slice, **flags) -> dict:
    return {**chunk, **flags, "times": chunk["times"][frames], "source_index": chunk["source_index"][frames],
            "frames": chunk["frames"][frames]}


def extract(sources: list[VideoSource], cache_path, options: ExtractOptions) -> ExtractSummary:
    """Extract every source not already done into the cache at `cache_path`.

    Raises CacheError or WeightsError for problems that stop the whole run; a bad video is
    recorded in the cache's failure ledger and in the summary instead.
    """
    if options.dtype not in DTYPES:
        raise CacheError(f"--dtype must be one of {', '.join(DTYPES)}")
    if options.precision not in PRECISIONS:
        raise CacheError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if options.decoder not in DECODERS:
        raise CacheError(f"--decoder must be one of {', '.join(DECODERS)}")
    device = resolve_device(options.device)
    state_dict, identity = resolve_weights(options.weights)
    settings = cache_settings(identity, options)
    started = time.perf_counter()
    summary = ExtractSummary(cache=str(cache_path), weights_name=identity["name"])
    done_elsewhere = set()
    if options.shard:
        done_elsewhere = _prepare_sharded_cache(Path(cache_path), settings)
        sources = assign_shard(sources, *options.shard)
        cache_path = shard_dir(cache_path, *options.shard)
    with CacheWriter(cache_path, settings) as cache:
        todo = [s for s in sources if s.id not in done_elsewhere and not cache.is_done(s.id, options.retry_failed)]
        summary.skipped = len(sources) - len(todo)
        if todo:
            batch_size = options.batch_size or default_batch_size(device, torch.get_num_threads())
            if device.type == "cuda" and device.index is not None:
                # Page-locking (the slots, or the DataLoader's pin-memory thread) works on the current
                # device: without this, every torchrun rank would open a context on cuda:0. CUDA is
                # then up before the workers fork; they never use it (the benchmarks run the CNN
                # before extract, alike).
                torch.cuda.set_device(device)
            decoding = Decoding(todo, options, batch_size, device)
            # The workers start (importing torch, opening videos) while the model loads.
            threads = torch.get_num_threads()
            extractor = None
            try:
                # On a CPU, forwards at once on shares of each batch (features.FeatureExtractor._lanes_start)
                extractor = FeatureExtractor.create(state_dict, device, options.precision,
                                                    lanes=cpu_lanes(threads, batch_size) if device.type == "cpu" else 1)
                if device.type == "cuda":
                    # The CNN runs on the GPU; host-side tensor copies would wake a spinning OpenMP thread
                    # per core and take those cores from the decode workers, the bottleneck.
                    torch.set_num_threads(1)
                _ExtractLoop(todo, cache, extractor, batch_size, summary, options.progress, started).run(decoding)
            finally:
                decoding.close()
                if extractor is not None:
                    extractor.close()
                torch.set_num_threads(threads)
    summary.seconds = time.perf_counter() - started
    return summary


def _prepare_sharded_cache(cache_path: Path, settings: dict) -> set[str]:
    """Make (or check) the cache that holds the shards; the ids it already has done."""
    if not (cache_path / SETTINGS_FILE).exists():
        cache_path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_path / SETTINGS_FILE, settings)  # shards racing here write the same bytes
    refuse_other_settings(cache_path, settings)
    return {vid for vid, r in read_records(cache_path).items() if r.status == "ok"}


def default_workers() -> int:
    """Decode processes: every core but one. With a GPU, decoding is the bottleneck; on a CPU the
    CNN is, and a decoder process beside it still beats decoding between batches (0.93 against 0.87
    of the CNN's speed on 2 cores, BENCHMARKS.md)."""
    return max(1, (os.cpu_count() or 2) - 1)


def worker_count(options: ExtractOptions, todo: list) -> int:
    return min(options.workers if options.workers is not None else default_workers(), len(todo))


def decode_loader(todo: list[VideoSource], options: ExtractOptions, batch_size: int, pin_memory: bool,
                  preprocess_in_worker: bool | None = None, slots: PinnedSlots | None = None) -> DataLoader:
    """Chunks of every video's frames, decoded in worker processes: resized and cropped there
    (`preprocess_in_worker`, the default off CUDA), or as decoded, for the GPU to convert and resize
    (their planes in `slots` where given)."""
    if preprocess_in_worker is None:
        preprocess_in_worker = not pin_memory
    workers = worker_count(options, todo)
    chunk_frames = min(batch_size, MAX_CHUNK_FRAMES)
    # What one chunk takes in /dev/shm on its way (tiny where it waits in a slot)
    item_bytes = (chunk_frames * 3 * CROP_SIZE * CROP_SIZE if preprocess_in_worker
                  else 1 << 20 if slots else MAX_CHUNK_BYTES)
    # The main process holds crops until the CNN is done with their batch (two batches: one being
    # made, one in the CNN); decoded frames only until they are converted, at once
    held = -(-batch_size // chunk_frames) * 2 + 1 if preprocess_in_worker else 1
    # Each worker prefetches 4 chunks, fewer where /dev/shm is small (a chunk that finds it full is
    # dropped: its video then fails, _ExtractLoop._in_order), none where not even one each fits
    workers, prefetch = shared_memory.fit_workers(workers, item_bytes, held, most=4, who="extract", instead="decoding")
    return DataLoader(
        DecodeJobs(todo, options.fps, chunk_frames=chunk_frames, preprocess_in_worker=preprocess_in_worker,
                   decoder=options.decoder, slots=slots),
        batch_size=None, num_workers=workers, pin_memory=pin_memory,
        # The platform's default start method: fork on Linux up to Python 3.13, which starts workers in
        # milliseconds instead of seconds (safe: the workers never use CUDA, and extract() makes them
        # before it opens HDF5 files or starts threads); forkserver from Python 3.14, and spawn on macOS.
        # The whole test suite passes with forkserver too (Python 3.14.10, 2026-11-29). Its workers
        # import torch first (5 s here), while the main process builds the model: `extract data/tiny`
        # took 9-14 s in all there, against 10-11 s with fork.
        prefetch_factor=prefetch, in_order=False,
        worker_init_fn=_init_decode_worker, timeout=WORKER_TIMEOUT_S if workers else 0,
    )


def gpu_box_slots(workers: int, device: torch.device) -> PinnedSlots | None:
    """The decode slots of a GPU box: one per worker, and 6 more (the up to 4 the GPU may still be
    copying from, pinned_slots.MAX_COPYING, and 2 to spare), each holding a chunk of MAX_CHUNK_BYTES;
    smaller ones where /dev/shm is small."""
    return PinnedSlots.fitting(workers + 6, MAX_CHUNK_BYTES + MAX_PLANES * ALIGN, device)


class Decoding:
    """The decode workers' chunks, in the order they come, for a CNN on `device`. On a GPU box the
    workers hand over decoded planes, through PinnedSlots where /dev/shm has room for them, and
    `crops` converts and resizes them on the GPU; elsewhere the workers send crops (or, given
    `slots`, decoded planes through them, as on a GPU box)."""

    def __init__(self, todo: list[VideoSource], options: ExtractOptions, batch_size: int, device: torch.device,
                 slots: PinnedSlots | None = None):
        self.device = device
        on_gpu = device.type == "cuda"
        workers = worker_count(options, todo)
        if slots is None and on_gpu and workers:
            slots = gpu_box_slots(workers, device)
        self.slots = slots
        self.items = iter(decode_loader(todo, options, batch_size, pin_memory=on_gpu and slots is None,
                                        preprocess_in_worker=not (on_gpu or slots), slots=slots))  # workers start here
        if slots:
            try:
                slots.pin()
            except BaseException:
                self.close()
                raise

    def __iter__(self):
        return self.items

    def crops(self, decoded: dict) -> torch.Tensor:
        """A chunk's decoded frames -> uint8 crops on the device (preprocess.to_crops)."""
        stored = decoded.pop("stored", None)
        if stored is None:
            return to_crops(decoded, self.device)
        try:
            return to_crops({**decoded, "planes": self.slots.planes(stored)}, self.device)
        finally:
            self.slots.release(stored["slot"])

    def discard(self, item: dict) -> None:
        """An item that will not be converted (the rest of a video that failed): give back its slot."""
        stored = item.get("decoded", {}).pop("stored", None)
        if stored is not None:
            self.slots.release(stored["slot"])

    def close(self) -> None:
        """Stop the workers now, not when the iterator is collected (a traceback can hold it for long),
        waking first any that wait for a slot."""
        if self.slots:
            self.slots.close()
        shutdown = getattr(self.items, "_shutdown_workers", None)  # torch's multi-process iterator
        if shutdown is not None:
            shutdown()


class _ExtractLoop:
    """Turns decoded chunks into committed videos: batches them for the CNN, fills each video's
    writer, and hands finished videos to one writer thread, so fsyncs never stall the GPU."""

    MAX_PENDING_COMMITS = 32  # bounds the memory held by finished videos waiting for the disk

    def __init__(self, todo, cache: CacheWriter, extractor: FeatureExtractor, batch_size: int,
                 summary: ExtractSummary, progress: bool, started: float | None = None):
        self.todo, self.cache, self.extractor, self.summary = todo, cache, extractor, summary
        # extract's start (perf_counter), for summary.startup_seconds
        self.started = time.perf_counter() if started is None else started
        self.batcher = _Batcher(batch_size)
        self.writers = {}  # video number -> VideoWriter, for videos in flight
        self.commits: deque[Future] = deque()
        self.committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")
        self.bar = tqdm(total=len(todo), unit="video", desc="extract", disable=not progress, dynamic_ncols=True)
        self.frames_seen = self.batches_run = 0
        self.in_flight = None  # (chunks, PendingFeatures): the batch the CNN is working on
        self.failed = set()  # videos failed here while their worker still sends chunks
        self.parts = {}  # video number -> the part expected next from its worker
        self.ended = set()  # videos whose last part (or failure) has come

    def run(self, decoding: Decoding) -> None:
        try:
            for item in decoding:
                if item["video"] in self.failed or not self._in_order(item):  # (the rest of) a video failed on this side
                    decoding.discard(item)
                    continue
                if item["kind"] == "failed" or item["last"]:
                    self.ended.add(item["video"])
                if item["kind"] == "failed":
                    self._fail(item["video"], item["error"])
                    continue
                if item["first"]:
                    source = self.todo[item["video"]]
                    self.writers[item["video"]] = self.cache.begin_video(source.id, source.label, str(source.path), 0.0, 0.0)
                if item["last"]:  # known once the last frame is decoded
                    self.writers[item["video"]].set_timing(item["duration"], item["source_fps"])
                if "decoded" in item:  # converted and resized on the CNN's device
                    try:
                        item["frames"] = decoding.crops(item.pop("decoded"))
                    except (RuntimeError, ValueError) as e:  # out of GPU memory, say: this video only
                        self._fail(item["video"], f"cannot convert its frames on {self.extractor.device}: "
                                                  f"{str(e).splitlines()[0][:200]}")
                        self.failed.add(item["video"])
                        continue
                self.batcher.add(item)
                while self.batcher.full():
                    self._run_batch()
                self._collect_commits(wait=len(self.commits) > self.MAX_PENDING_COMMITS)
            self._finish()
            for number in range(len(self.todo)):  # every video's items came, or it is failed
                if number not in self.ended and number not in self.failed:
                    self._fail(number, self._lost(self.parts.get(number, 0)))
        except RuntimeError as e:
            if "DataLoader" not in str(e):
                raise
            self._finish()  # the frames already here may end videos: keep those
            raise CacheError(
                f"the decoding workers stopped ({str(e).splitlines()[0]}); is /dev/shm full? Rerun with fewer "
                f"--workers or a smaller --batch-size; every video finished before this is kept") from None
        finally:
            self.committer.shutdown(wait=True, cancel_futures=True)
            self.bar.close()

    def _in_order(self, item: dict) -> bool:
        """Whether the item is the part of its video expected next; fails the video where one is
        missing. A worker's queue drops an item it cannot send: multiprocessing's feeder thread prints
        the error and goes on (seen when /dev/shm is full, as Docker's default 64 MB soon is), and the
        video would be stored without those frames."""
        expected = self.parts.get(item["video"], 0)
        if item.get("part", expected) == expected:
            self.parts[item["video"]] = expected + 1
            return True
        self._fail(item["video"], self._lost(expected))
        self.failed.add(item["video"])
        return False

    @staticmethod
    def _lost(part: int) -> str:
        return (f"part {part} of its frames never came from the decode worker (a worker drops what it cannot "
                f"send, as when /dev/shm is full: see `df -h /dev/shm`); rerun with more shared memory or "
                f"fewer --workers")

    def _finish(self) -> None:
        """Run the CNN on the frames left, file them, and wait for every commit."""
        while self.batcher.frames:
            self._run_batch()
        self._run_batch()  # files the batch in flight
        while self.commits:
            self._collect_commits(wait=True)

    def _fail(self, number: int, error: str) -> None:
        source = self.todo[number]
        if self.writers.pop(number, None) is not None:  # it failed midway: forget the frames it sent
            self.batcher.drop_video(number)
        self.cache.record_failure(source.id, source.label, str(source.path), error)
        self.summary.failures.append((source.id, error))
        self.bar.update(1)

    def _run_batch(self) -> None:
        """Start the CNN on the batched chunks, then file the previous batch while it runs."""
        chunks = self.batcher.take()
        started = None
        if chunks:
            started = (chunks, self.extractor.start([c.pop("frames") for c in chunks]))  # frames: no longer needed
            if not self.summary.startup_frames:  # the first batch is started
                self.summary.startup_seconds = time.perf_counter() - self.started
                self.summary.startup_frames = sum(len(c["times"]) for c in chunks)
        if self.in_flight:
            self._file(*self.in_flight)
        self.in_flight = started

    def _file(self, chunks: list[dict], pending) -> None:
        features = pending.numpy()
        offset = 0
        for c in chunks:
            n = len(c["times"])
            writer = self.writers.get(c["video"])
            if writer is not None:  # None: the video failed after this chunk was sent to the CNN
                writer.append(features[offset:offset + n], c["times"].numpy(), c["source_index"].numpy())
                if c["last"]:
                    self.commits.append(self.committer.submit(self.writers.pop(c["video"]).commit))
            offset += n
        self.frames_seen += len(features)
        self.batches_run += 1
        if self.batches_run % TRIM_EVERY == 0:
            release_free_memory()
        rate = self.frames_seen / max(self.bar.format_dict["elapsed"], 1e-9)
        self.bar.set_postfix_str(f"{rate:.0f} frames/s", refresh=False)

    def _collect_commits(self, wait: bool) -> None:
        """Count the videos the writer thread has committed; re-raise its error (a full disk)."""
        while self.commits and (wait or self.commits[0].done()):
            record = self.commits.popleft().result()
            self.summary.done += 1
            self.summary.frames += record.frames
            self.bar.update(1)
            wait = False
