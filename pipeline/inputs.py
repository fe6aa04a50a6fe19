"""What to extract: the videos of a folder (labelled by their folder) or of a CSV manifest."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts",
    ".m2ts", ".vob", ".mxf", ".ogv", ".dv", ".asf", ".divx", ".f4v", ".3g2", ".rm", ".rmvb", ".y4m",
    ".h264", ".264", ".h265", ".hevc", ".m2v",  # the last five: raw streams
}


class InputError(Exception):
    """The input cannot be used at all (as opposed to one bad video, which is recorded and skipped)."""


@dataclass(frozen=True)
class VideoSource:
    id: str  # path relative to the input folder (or CSV folder), '/'-separated: stable across machines
    path: Path
    label: str


def find_videos(input_path: str | Path) -> list[VideoSource]:
    """Videos under a folder (recursively, by extension) or listed in a CSV with columns path,label."""
    input_path = Path(input_path)
    if input_path.is_dir():
        return _from_folder(input_path)
    if input_path.is_file() and input_path.suffix.lower() == ".csv":
        return _from_csv(input_path)
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder")
    raise InputError(f"{input_path}: expected a folder of videos or a .csv manifest with columns path,label")


def _from_folder(root: Path) -> list[VideoSource]:
    paths = sorted(p for p in _files(root) if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    return [VideoSource(id=p.relative_to(root).as_posix(), path=p, label=p.parent.name) for p in paths]


def _files(root: Path):
    """Every file under root, through symlinked folders too (a split built of links to label folders;
    Path.rglob skips them before Python 3.13), each real folder once (a link to a folder above would
    loop). Hidden files and folders (a leading ".") are left out, as glob and ls leave them out: a
    dataset unzipped from a Mac holds a "._NAME.mp4" AppleDouble sidecar beside each video (resource
    forks, not video), which would each fail as unreadable and make the run exit 3."""
    seen = set()
    for folder, folders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        yield from (Path(folder) / name for name in names if not name.startswith("."))


def _from_csv(manifest: Path) -> list[VideoSource]:
    base = manifest.parent
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{manifest}: the header must name the columns path,label (missing: {', '.join(sorted(missing))})")
        sources, seen = [], set()
        for line_no, row in enumerate(reader, start=2):
            rel, label = (row["path"] or "").strip(), (row["label"] or "").strip()
            if not rel or not label:
                raise InputError(f"{manifest}, line {line_no}: empty path or label")
            video_id = Path(rel).as_posix()
            if video_id in seen:
                raise InputError(f"{manifest}, line {line_no}: {rel} is listed twice")
            seen.add(video_id)
            sources.append(VideoSource(id=video_id, path=base / rel, label=label))
    return sources


def parse_shard(text: str) -> tuple[int, int]:
    """"i/N" -> (i, N), with 0 <= i < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard takes i/N, e.g. 0/4, not {text!r}") from None
    if not 0 <= index < count:
        raise InputError(f"--shard {text}: i must be in 0..N-1")
    return index, count


def assign_shard(sources: list[VideoSource], index: int, count: int) -> list[VideoSource]:
    """The videos of shard `index` of `count`, balanced by expected frame count.

    A video's frame count is estimated by its file size: reading every container's duration would
    cost each of N processes a pass over the whole collection before any work, and within one
    collection size follows length far better than one-video-one-unit. Largest first, each video
    goes to the lightest shard so far: every process computes the same split, with no talking.
    """
    def size(source: VideoSource) -> int:
        try:
            return source.path.stat().st_size
        except OSError:
            return 0  # a missing file fails quickly wherever it lands

    loads = [0] * count
    mine = set()
    for source in sorted(sources, key=lambda s: (-size(s), s.id)):
        lightest = min(range(count), key=lambda shard: (loads[shard], shard))
        loads[lightest] += max(size(source), 1)
        if lightest == index:
            mine.add(source.id)
    return [s for s in sources if s.id in mine]
