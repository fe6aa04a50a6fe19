"""Windows of cached features: the window index, the split by video, normalisation statistics, and
the two ways to feed batches of windows to the model.

- RAM: every video's features in ONE contiguous float32 tensor; a batch is gathered with one
  index_select of (window first row + 0..window-1) rows, so there is no per-window Python call.
- Stream: a Dataset whose items are whole batches, read window by window from the cache's HDF5
  files by DataLoader workers (the FeatureCache opens its files lazily in each worker), or by the
  training process itself where that is faster (see default_workers).

Both are driven by EpochBatches, whose shuffle depends only on (seed, epoch): a resumed run sees
the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from . import shared_memory
from .cache import FeatureCache

RAM_FRACTION = 0.4  # --data auto holds features in RAM when they take under this share of the free memory
GPU_FRACTION = 0.5  # in RAM mode on CUDA, features move to the GPU when they take under this share of its free memory
STD_FLOOR = 1e-3  # a feature (nearly) constant on the training frames would blow up on any other frame


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """First frame of every window of one video.

    Windows of `window` frames start every `stride` frames and lie wholly inside the video, so no
    window crosses into another video; the frames after the last window start + window (fewer
    than `stride`) are in no window. A video shorter than one window, with at least one frame,
    yields ONE window at frame 0, padded by repeating its last frame: even a 1-frame video counts.
    A video with no frames yields no window.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be at least 1")
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if num_frames < window:
        return np.zeros(1, dtype=np.int64)
    return np.arange(0, num_frames - window + 1, stride, dtype=np.int64)


@dataclass
class Windows:
    """The windows of a list of videos: which video each window is from, where it starts, its class."""

    ids: list[str]  # the videos, in this order
    lengths: np.ndarray  # (V,) frames per video
    video_labels: np.ndarray  # (V,) class index per video
    video: np.ndarray  # (N,) position in `ids` of each window's video
    start: np.ndarray  # (N,) first frame of each window within its video
    window: int
    stride: int = 1  # frames between the starts of a video's windows

    def __len__(self) -> int:
        return len(self.video)

    @property
    def targets(self) -> np.ndarray:
        """(N,) class index of every window: its video's label."""
        return self.video_labels[self.video]


def build_windows(ids: list[str], lengths, video_labels, window: int, stride: int) -> Windows:
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = [window_starts(int(n), window, stride) for n in lengths]
    video = np.repeat(np.arange(len(ids), dtype=np.int64), [len(s) for s in starts])
    start = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    return Windows(list(ids), lengths, np.asarray(video_labels, dtype=np.int64), video, start, window, stride)


def cache_windows(cache: FeatureCache, ids: list[str], label_index: dict[str, int], window: int,
                  stride: int) -> Windows:
    lengths = [cache.num_frames(v) for v in ids]
    labels = [label_index[cache.label(v)] for v in ids]
    return build_windows(ids, lengths, labels, window, stride)


def split_by_video(ids: list[str], labels: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train ids, validation ids): split by video, never by window, stratified by label.

    Each label's videos are shuffled with a generator seeded by `seed`, and round(n * val_fraction)
    of them go to validation, but at least one when the label has two or more videos (so every
    class is validated) and never all of them (every class keeps a training video).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    by_label: dict[str, list[str]] = {}
    for vid, label in sorted(zip(ids, labels)):
        by_label.setdefault(label, []).append(vid)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        n_val = round(len(group) * val_fraction)
        if val_fraction > 0 and len(group) >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(group) - 1)
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return sorted(train), sorted(val)


def feature_stats(arrays) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per feature over all frames of an iterable of (T, D) arrays, in float64."""
    count, total, total_sq = 0, None, None
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        if total is None:
            total, total_sq = np.zeros(a.shape[1]), np.zeros(a.shape[1])
        count += len(a)
        total += a.sum(0)
        total_sq += np.square(a).sum(0)
    if not count:
        raise ValueError("no frames to compute normalisation statistics from")
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    return mean, np.maximum(np.sqrt(var), STD_FLOOR)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation, or None when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    for name, share in (("SC_AVPHYS_PAGES", 1.0), ("SC_PHYS_PAGES", 0.5)):  # macOS has only the second
        try:
            return int(os.sysconf(name) * os.sysconf("SC_PAGE_SIZE") * share)
        except (ValueError, OSError, AttributeError):
            continue
    return None


def choose_data_mode(mode: str, num_frames: int, feature_dim: int) -> str:
    """'ram' or 'stream' for --data auto|ram|stream: auto holds features in RAM when they fit easily."""
    if mode in ("ram", "stream"):
        return mode
    if mode != "auto":
        raise ValueError(f"data mode must be auto, ram or stream, not {mode!r}")
    free = available_memory()
    return "ram" if free is None or num_frames * feature_dim * 4 < RAM_FRACTION * free else "stream"


def load_features(cache: FeatureCache, ids: list[str], progress: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """(features, offsets): the videos' features, one after the other, in one float32 tensor;
    video i is rows offsets[i] : offsets[i] + its length."""
    from tqdm import tqdm

    lengths = np.array([cache.num_frames(v) for v in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(ids) else lengths
    features = torch.empty(int(lengths.sum()), cache.settings["feature_dim"], dtype=torch.float32)
    target = features.numpy()
    for vid, off, n in tqdm(list(zip(ids, offsets, lengths)), desc="read features", unit="video",
                            disable=not progress, leave=False, dynamic_ncols=True):
        if n:
            target[off:off + n] = cache.features(vid)
    return features, offsets


class EpochBatches:
    """Batches of windows, each as (positions in the Windows, first frame of each window); shuffled
    by (seed, epoch) alone, so resuming repeats them.

    jitter: each epoch, every window starts a random 0 to stride-1 frames after its place on the
    grid, never past its video's last whole window (a move past it is clamped there, so the last
    window of a video moves less). Over the epochs the model sees one-second crops at every offset
    of the training videos, not the same few, for the same cost per epoch: random temporal
    cropping, as video training recipes do (torchvision's video references sample random clips).
    On the task suite it took held-out video accuracy on the order-only tasks from 0.81 to 0.88,
    and from 0.83 to 0.90 on caches of the current stage one (BENCHMARKS.md, "Stage two: choosing
    the model")."""

    def __init__(self, windows: Windows, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world: int = 1, jitter: bool = False):
        self.n, self.batch_size, self.shuffle, self.seed, self.epoch = len(windows), batch_size, shuffle, seed, 0
        self.rank, self.world = rank, world  # data-parallel training: this process's share of the batches
        self.start, self.stride = torch.as_tensor(windows.start), windows.stride
        self.latest = None  # each window's latest start, where jittering
        if jitter and windows.stride > 1 and len(windows):
            self.latest = torch.as_tensor(np.maximum(windows.lengths[windows.video] - windows.window, 0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        batches = math.ceil(self.n / self.batch_size)
        return batches // self.world if self.world > 1 else batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        start = self.start
        if self.latest is not None:
            start = torch.minimum(start + torch.randint(0, self.stride, (self.n,), generator=g), self.latest)
        batches = order.split(self.batch_size)
        if self.world > 1:  # every process the same number of steps, as gradient averaging needs
            batches = batches[: len(batches) // self.world * self.world][self.rank::self.world]
        for idx in batches:
            yield idx, start[idx]


class RamBatches:
    """Iterable of (x (B, window, D), y (B,)) batches gathered from features held in memory: in RAM,
    or in GPU memory (then batches are gathered there, and nothing is copied per batch)."""

    def __init__(self, features: torch.Tensor, offsets: np.ndarray, windows: Windows, batches: EpochBatches):
        self.features, self.batches, self.window = features, batches, windows.window
        offsets = torch.as_tensor(offsets[windows.video] if len(windows) else np.zeros(0, np.int64))
        device = features.device
        self.offsets = offsets.to(device)  # (N,) row of the first frame of each window's video
        self.last = (offsets + torch.as_tensor(windows.lengths[windows.video] - 1)).to(device)  # its video's last row
        self.targets = torch.as_tensor(windows.targets).to(device)
        self.steps = torch.arange(self.window, device=device)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for idx, start in self.batches:
            idx, start = idx.to(self.features.device), start.to(self.features.device)
            # rows past a short video's end repeat its last frame (the padding policy of window_starts)
            rows = torch.minimum((self.offsets[idx] + start)[:, None] + self.steps, self.last[idx, None])
            x = self.features.index_select(0, rows.view(-1)).view(len(idx), self.window, -1)
            yield x, self.targets[idx]


class StreamWindows(Dataset):
    """Dataset whose item is a whole batch: dataset[(window positions, their first frames)] -> (x, y).
    Reads each window's rows from the cache; one item per batch keeps the inter-process traffic low."""

    def __init__(self, cache: FeatureCache, windows: Windows):
        self.cache, self.windows = cache, windows

    def __getitem__(self, batch):
        w = self.windows
        idx, starts = (np.asarray(t, dtype=np.int64) for t in batch)
        shape = (len(idx), w.window, self.cache.settings["feature_dim"])
        if get_worker_info() is not None:
            # allocated in shared memory, as default_collate does: handing it over copies nothing
            storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
            x = torch.empty(0, dtype=torch.float32).set_(storage, 0, shape)
        else:
            x = torch.empty(shape, dtype=torch.float32)
        out = x.numpy()
        for j, (vid, start) in enumerate(zip(w.video[idx].tolist(), starts.tolist())):
            stop = min(start + w.window, int(w.lengths[vid]))
            rows = self.cache.features(w.ids[vid], start, stop)
            out[j, : stop - start] = rows
            out[j, stop - start:] = rows[-1]  # a short video: repeat its last frame
        return x, torch.as_tensor(w.targets[idx])


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # readers: leave the cores to the training process


class StreamBatches:
    """Iterable of (x, y) batches read from the cache by `workers` DataLoader processes."""

    def __init__(self, cache: FeatureCache, windows: Windows, batches: EpochBatches, workers: int, pin_memory=False):
        self.batches = batches
        # Each reader has 2 batches on their way (torch's default), fewer where /dev/shm is small;
        # none fit: read here (a batch found /dev/shm full and stopped the run with a traceback)
        batch_bytes = batches.batch_size * windows.window * cache.settings["feature_dim"] * 4
        workers, prefetch = shared_memory.fit_workers(workers, batch_bytes, held=2, most=2, who="train",
                                                      instead="reading")
        self.loader = DataLoader(
            StreamWindows(cache, windows), sampler=batches, batch_size=None, num_workers=workers,
            prefetch_factor=prefetch,
            worker_init_fn=_one_thread, persistent_workers=workers > 0, pin_memory=pin_memory,
            generator=torch.Generator(),  # else starting the workers draws from the global RNG: other dropout masks
        )

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.loader)


def default_workers(device: torch.device) -> int:
    """Stream-mode reader processes. Training on the CPU keeps every core busy, and a reader process
    preempting its threads costs more than reading in the training process between steps (on 2
    cores: 0.61 against 0.84 of the in-RAM speed), so readers come only with spare cores. Training
    on a GPU leaves the cores to the readers."""
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return min(4, max(0, (cores - 4) // 4))  # 2 or 4 cores: 0, 8: 1, 16: 3
    return min(4, max(1, cores // 2))


class WindowDataset(Dataset):
    """The windows of a cache as a PyTorch Dataset, for your own models: item i is
    (features, label_index), features a float32 tensor (window, feature_dim), windowed as
    `pipeline train` does it (window_starts: no window crosses two videos; a video shorter than a
    window gives one window padded by repeating its last frame).

    cache: a cache folder or an open FeatureCache. videos: the video ids to take (default: every ok
    video with frames). `labels` names the classes in index order: the sorted labels of every
    usable video of the cache (not only of `videos`), so a training and a validation dataset of one
    cache agree. Works with DataLoader workers: each process opens the HDF5 files itself.
    """

    def __init__(self, cache: FeatureCache | str | os.PathLike, window: int = 30, stride: int = 15,
                 videos: list[str] | None = None):
        if window < 1 or stride < 1:
            raise ValueError(f"window ({window}) and stride ({stride}) must be at least 1")
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        usable = [v for v in self.cache.video_ids if self.cache.num_frames(v) > 0]
        self.labels = sorted({self.cache.label(v) for v in usable})
        ids = usable if videos is None else list(videos)
        unknown = [v for v in ids if v not in self.cache.records or self.cache.records[v].status != "ok"]
        if unknown:
            raise KeyError(f"{len(unknown)} of the videos are not ok videos of {self.cache.path}, e.g. {unknown[0]!r}")
        self.windows = cache_windows(self.cache, ids, {label: i for i, label in enumerate(self.labels)}, window, stride)
        self.feature_dim = int(self.cache.settings["feature_dim"])

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        w = self.windows
        if not -len(w) <= i < len(w):
            raise IndexError(f"window {i} of {len(w)}")
        video, start = int(w.video[i]), int(w.start[i])
        stop = min(start + w.window, int(w.lengths[video]))
        x = np.empty((w.window, self.feature_dim), dtype=np.float32)
        x[: stop - start] = self.cache.features(w.ids[video], start, stop)
        x[stop - start:] = x[stop - start - 1]  # a short video: repeat its last frame
        return torch.from_numpy(x), int(w.video_labels[video])

    def video_of(self, i: int) -> tuple[str, int]:
        """(video id, first frame) of window i."""
        return self.windows.ids[int(self.windows.video[i])], int(self.windows.start[i])
