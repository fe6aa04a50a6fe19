"""The feature cache: a folder that survives `kill -9` at any moment.

Layout (format version 1)::

    CACHE/
      settings.json      what produced the features (model, weights, layer, preprocessing, fps, dtype)
      index.jsonl        one JSON line per finished video, ok or failed; the last line for an id wins
      videos/<key>.h5    one HDF5 file per ok video: features (T, D), timestamps (T,), source_index (T,)
      .lock              held (flock) by the one process that writes the cache

Why a folder and not one HDF5 file: h5py that is killed while many groups are open for writing
leaves a file that no longer opens, losing every finished video. Here each video is written to a
temporary file, fsync'ed and renamed into place, and only then appended to the index, so a kill
loses at most the video in flight. The index is the commit record: a video file without an index
line is redone on the next run, a torn last index line is cut off before appending.

This module imports h5py and numpy only, so stage two can read caches without a decoder or torchvision.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSION = 1
SETTINGS_FILE = "settings.json"
INDEX_FILE = "index.jsonl"
VIDEOS_DIR = "videos"
LOCK_FILE = ".lock"
SHARDS_DIR = "shards"
WINDOW_CHUNK_FRAMES = 30  # one chunk per second of video: a 30-frame window touches at most two
MAX_OPEN_FILES = 128  # per reading process; opening a file costs about 10 window reads (250 us against 20)


class CacheError(Exception):
    """A problem with a cache that the user can fix; the message says what and where."""


@contextmanager
def _writing(path: Path):
    """Turn any failed write (a full disk; h5py says RuntimeError, the OS says OSError) into a
    CacheError. Finished videos stay intact: they were renamed into place and indexed already."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        # HDF5 buries the OS's reason: "... error message = 'No space left on device', ..."
        found = re.search(r"error message = '([^']+)'", str(e))
        reason = found.group(1) if found else getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise CacheError(f"cannot write to the cache {path}: {reason}; every video finished before this is kept") from None


@dataclass
class VideoRecord:
    """One line of index.jsonl: what happened to one input video."""

    id: str
    label: str
    status: str  # "ok" or "failed"
    source_path: str
    frames: int = 0
    file: str = ""  # relative to the cache folder; empty for failed videos
    source_fps: float = 0.0
    duration: float = 0.0
    error: str = ""


def video_key(video_id: str) -> str:
    """File name stem for a video id: fixed length and safe for any id (spaces, non-ASCII, '/')."""
    return hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:20]


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes so that readers, and a `kill -9` at any moment, see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write (a full disk); gone already after the rename
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def settings_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two settings dicts, e.g. "fps: 30.0 != 25.0"."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        if key == "package_version":  # a newer release may add to a cache of the same format
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += settings_differences(a, b, prefix + key + ".")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} (cache) != {b!r} (now)")
    return diffs


def read_index(cache_dir: Path) -> dict[str, VideoRecord]:
    """The last record of every video id. A torn last line (a kill mid-write) is ignored."""
    records: dict[str, VideoRecord] = {}
    path = cache_dir / INDEX_FILE
    if not path.exists():
        return records
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn write: the video it described is redone
            record = VideoRecord(**json.loads(line))
            records[record.id] = record
    return records


def refuse_other_settings(cache_dir: Path, settings: dict) -> None:
    """Raise CacheError naming every difference between a cache's settings and `settings`."""
    diffs = settings_differences(read_settings(cache_dir), settings)
    if diffs:
        raise CacheError(f"{cache_dir} was made with other settings; use another --out or the same settings:\n  "
                         + "\n  ".join(diffs))


def shard_dir(cache_dir: str | os.PathLike, index: int, count: int) -> Path:
    """Where shard `index` of `count` writes: a complete cache of its own inside the cache folder,
    so shards never share a file, a lock or an index, wherever they run."""
    return Path(cache_dir) / SHARDS_DIR / f"{index}-of-{count}"


def read_records(cache_dir: Path) -> dict[str, VideoRecord]:
    """Every video of a cache, its shards' included (with files relative to the cache folder).
    The cache's own index comes first; a shard's record is taken for a video the cache has no ok
    record of, and an ok record beats a failed one."""
    records = read_index(cache_dir)
    for shard in sorted((cache_dir / SHARDS_DIR).glob("*-of-*")):
        for record in read_index(shard).values():
            known = records.get(record.id)
            if known is None or (known.status != "ok" and record.status == "ok"):
                if record.file:
                    record.file = f"{SHARDS_DIR}/{shard.name}/{record.file}"
                records[record.id] = record
    return records


def join_shards(cache_dir: str | os.PathLike) -> int:
    """Fold a cache's shards into the cache itself; returns how many videos moved in.

    Each video file is hard-linked into videos/ and indexed before its shard folder goes, so a kill
    at any moment leaves a cache that reads the same; rerunning finishes the job.
    """
    cache_dir = Path(cache_dir)
    shards = sorted((cache_dir / SHARDS_DIR).glob("*-of-*"))
    settings = read_settings(cache_dir)
    moved = 0
    with CacheWriter(cache_dir, settings) as cache:
        for shard in shards:
            with open(shard / LOCK_FILE, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise CacheError(f"{shard}: this shard is still being written; join when it is done") from None
                for record in read_index(shard).values():
                    if cache.is_done(record.id):
                        continue
                    if record.file:
                        target = cache_dir / record.file
                        if not target.exists():
                            os.link(shard / record.file, target)
                    cache._append(record)
                    moved += 1
            shutil.rmtree(shard)
    if (cache_dir / SHARDS_DIR).exists() and not any((cache_dir / SHARDS_DIR).iterdir()):
        (cache_dir / SHARDS_DIR).rmdir()
    return moved


def read_settings(cache_dir: Path) -> dict:
    path = Path(cache_dir) / SETTINGS_FILE
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        if any((Path(cache_dir) / name).exists() for name in ("best.pt", "last.pt")):
            raise CacheError(f"{cache_dir}: a run folder of `pipeline train`, not a feature cache (the folder "
                             f"`pipeline extract` made); `pipeline evaluate {cache_dir}` scores the run") from None
        raise CacheError(f"{cache_dir}: not a feature cache (no {SETTINGS_FILE}); make one with `pipeline extract`")
    except (OSError, json.JSONDecodeError) as e:
        raise CacheError(f"{path}: cannot read the cache settings: {e}")


class CacheWriter:
    """The one writer of a cache. Use as a context manager; it holds the cache's lock meanwhile.

    Construction refuses, before touching anything, a cache whose settings differ from `settings`.
    """

    def __init__(self, path: str | os.PathLike, settings: dict, wait: bool = False):
        self.path = Path(path)
        if (self.path / SETTINGS_FILE).exists():
            refuse_other_settings(self.path, settings)
        elif self.path.exists() and not self.path.is_dir():
            raise CacheError(f"{self.path}: exists and is not a cache folder")
        (self.path / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / LOCK_FILE, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise CacheError(f"{self.path}: another `pipeline extract` is writing this cache; wait for it to finish")
        if not (self.path / SETTINGS_FILE).exists():
            write_json_atomic(self.path / SETTINGS_FILE, settings)
        self.settings = settings
        self._remove_stale_temporaries()
        self._repair_index_tail()
        self.records = read_index(self.path)
        self._index = open(self.path / INDEX_FILE, "ab")
        self._index_lock = threading.Lock()  # failures are recorded by the main thread, videos by a writer thread

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if not self._lock.closed:
            self._index.close()
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def is_done(self, video_id: str, retry_failed: bool = True) -> bool:
        record = self.records.get(video_id)
        if record is None:
            return False
        return record.status == "ok" or not retry_failed

    def begin_video(self, video_id: str, label: str, source_path: str, source_fps: float, duration: float,
                    frames: int = 0) -> "VideoWriter":
        """A writer for one video (`frames`: how many to expect, if known); nothing is on disk until
        its commit()."""
        return VideoWriter(self, video_id, label, source_path, source_fps, duration, frames)

    def record_failure(self, video_id: str, label: str, source_path: str, error: str) -> None:
        self._append(VideoRecord(id=video_id, label=label, status="failed", source_path=source_path, error=error))

    def _append(self, record: VideoRecord) -> None:
        with self._index_lock, _writing(self.path):
            self._index.write((json.dumps(asdict(record), ensure_ascii=False) + "\n").encode("utf-8"))
            self._index.flush()
            os.fsync(self._index.fileno())
        self.records[record.id] = record

    def _remove_stale_temporaries(self) -> None:
        for tmp in (self.path / VIDEOS_DIR).glob("*.tmp-*"):
            tmp.unlink(missing_ok=True)

    def _repair_index_tail(self) -> None:
        """Cut a torn last line, so the next append starts on a line of its own."""
        path = self.path / INDEX_FILE
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                os.fsync(f.fileno())


class VideoWriter:
    """Collects one video's features, then commit() publishes them as one file.

    The HDF5 file is built in memory and written with plain file I/O: HDF5 itself never writes to
    disk, because after a failed write (a full disk) h5py can crash the process when it closes the
    file. The cost is holding one video's features in memory: 4 KB a frame in float32.
    """

    def __init__(self, cache: CacheWriter, video_id, label, source_path, source_fps, duration, frames=0):
        self.cache = cache
        self.record = VideoRecord(
            id=video_id, label=label, status="ok", source_path=str(source_path),
            source_fps=float(source_fps), duration=float(duration),
            file=f"{VIDEOS_DIR}/{video_key(video_id)}.h5",
        )
        self.features = np.empty((frames, cache.settings["feature_dim"]), dtype=cache.settings["dtype"])
        self.timestamps = np.empty(frames, dtype=np.float64)
        self.source_index = np.empty(frames, dtype=np.int64)
        self.filled = 0

    def set_timing(self, duration: float, source_fps: float) -> None:
        """The video's duration and source frame rate, known once its last frame is decoded."""
        self.record.duration, self.record.source_fps = float(duration), float(source_fps)

    def append(self, features: np.ndarray, timestamps: np.ndarray, source_index: np.ndarray) -> None:
        start, stop = self.filled, self.filled + len(features)
        if stop > len(self.features):  # more frames than expected: grow geometrically
            size = max(stop, 2 * len(self.features))
            self.features = np.resize(self.features, (size, self.features.shape[1]))
            self.timestamps, self.source_index = np.resize(self.timestamps, size), np.resize(self.source_index, size)
        self.features[start:stop], self.timestamps[start:stop], self.source_index[start:stop] = (
            features, timestamps, source_index)
        self.filled = stop

    def _file_image(self) -> bytes:
        n, record = self.filled, self.record
        with h5py.File(f"{record.file}-in-memory", "w", driver="core", backing_store=False) as h5:
            h5.create_dataset("features", data=self.features[:n], chunks=(min(n, WINDOW_CHUNK_FRAMES), self.features.shape[1]))
            h5.create_dataset("timestamps", data=self.timestamps[:n])
            h5.create_dataset("source_index", data=self.source_index[:n])
            for key in ("id", "label", "source_path", "source_fps", "duration"):
                h5.attrs[key] = getattr(record, key)
            h5.flush()
            return h5.id.get_file_image()

    def commit(self) -> VideoRecord:
        self.record.frames = self.filled
        image = self._file_image()
        with _writing(self.cache.path):
            write_atomic(self.cache.path / self.record.file, image)
        self.cache._append(self.record)
        return self.record


class FeatureCache:
    """Read-only view of a cache. Cheap to pickle: HDF5 files are opened lazily in each process,
    so a DataLoader worker never inherits an h5py handle through fork."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CacheError(f"{self.path}: no such cache folder")
        self.settings = read_settings(self.path)
        if self.settings.get("format_version") != FORMAT_VERSION:
            raise CacheError(
                f"{self.path}: cache format version {self.settings.get('format_version')!r}, "
                f"this pipeline reads version {FORMAT_VERSION}"
            )
        self.records = read_records(self.path)
        self.video_ids = sorted(vid for vid, r in self.records.items() if r.status == "ok")
        self._files: dict[str, tuple[h5py.File, h5py.Dataset]] = {}  # open files and their features, LRU order
        self._pid = os.getpid()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def close(self) -> None:
        for f, _ in self._files.values():
            f.close()
        self._files.clear()

    def _open(self, video_id: str) -> tuple[h5py.File, h5py.Dataset]:
        """(file, its "features" dataset) of one video. Both stay open: opening the dataset by name
        costs several times more than reading a window from it (about 100 us against 20)."""
        if self._pid != os.getpid():  # forked: never use the parent's handles
            self._files, self._pid = {}, os.getpid()
        entry = self._files.pop(video_id, None)
        if entry is None:
            record = self.records.get(video_id)
            if record is None or record.status != "ok":
                raise KeyError(f"{video_id!r} is not an ok video of cache {self.path}")
            # no chunk cache: windows come in random order, so each open dataset's cache (1 MB by
            # default, MAX_OPEN_FILES MB per process) would buy few hits
            f = h5py.File(self.path / record.file, "r", rdcc_nbytes=0)
            entry = (f, f["features"])
            if len(self._files) >= MAX_OPEN_FILES:
                # evict the least recently used. Dropping the only references closes it; File.close()
                # would first search every open HDF5 object: about 200 us more with 128 files open
                del self._files[next(iter(self._files))]
        self._files[video_id] = entry  # (re)inserted last: dicts keep insertion order
        return entry

    def label(self, video_id: str) -> str:
        return self.records[video_id].label

    def num_frames(self, video_id: str) -> int:
        return self.records[video_id].frames

    def features(self, video_id: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(T, D) features of one video, or the frames [start, stop) of it."""
        return self._open(video_id)[1][start:stop]

    def timestamps(self, video_id: str) -> np.ndarray:
        return self._open(video_id)[0]["timestamps"][:]

    def source_index(self, video_id: str) -> np.ndarray:
        return self._open(video_id)[0]["source_index"][:]


def open_cache(path: str | os.PathLike) -> FeatureCache:
    """Open a feature cache for reading: `with open_cache("cache") as c: c.features(c.video_ids[0])`."""
    return FeatureCache(path)
