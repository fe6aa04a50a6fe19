"""Decoding with decord, and resampling to a fixed frame rate by presentation timestamps.

Output frame k stands for time t_k = k / fps from the first frame and holds the source frame on
screen at t_k: the last one whose presentation time is <= t_k. Output frames run while
t_k < duration. A 25 fps source thus repeats every fifth frame, a 60 fps source drops every other
one, and a variable-frame-rate source is followed by its real timestamps.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np



def time_tolerance(t):
    """How far apart two times may be and still be the same instant. decord gives presentation
    times as float32 (1/30 s reads 0.033333335), whose rounding error grows with t; any wider and
    a 29.97 fps frame that starts 33 us after k/30 would count as on screen at k/30."""
    return 1e-6 + np.abs(t) * 2.0**-22


# Decoding runs in segments of at most MAX_SEGMENT_FRAMES output frames (77 MB once cropped), cut
# where possible at a keyframe at least MIN_SEGMENT_FRAMES in; see VideoDecoder.chunks.
MIN_SEGMENT_FRAMES = 128
MAX_SEGMENT_FRAMES = 512
DECODE_BATCH = 64  # frames per get_batch call: bounds the uncropped frames held at once
READ_AHEAD_BUDGET = 256  # frames decord may decode ahead (90 MB at 455x256) before they are dropped


class VideoError(Exception):
    """A video that cannot be used; str() is a one-line reason for the failure ledger."""


@dataclass
class Resampling:
    times: np.ndarray  # (T,) seconds from the first frame, k / fps
    source_index: np.ndarray  # (T,) index of the source frame shown at each time
    duration: float  # seconds
    source_fps: float  # source frames per second of presentation time (an average for VFR)


def resample(presentation_times: np.ndarray, fps: float, fallback_frame_duration: float) -> Resampling:
    """Which source frame is on screen at each k / fps, from the source frames' start times.

    `fallback_frame_duration` is how long the last frame shows when the video has one frame only.
    """
    pts = np.asarray(presentation_times, dtype=np.float64)
    if pts.size == 0:
        raise VideoError("no video frames")
    pts = np.maximum.accumulate(pts - pts[0])  # times from the first frame; never step back
    # The last frame shows as long as the one before it: decord's end times can be bogus.
    last_frame_duration = pts[-1] - pts[-2] if pts.size > 1 else fallback_frame_duration
    duration = float(pts[-1] + max(last_frame_duration, 0.0))
    count = int(np.ceil((duration - time_tolerance(duration)) * fps))  # k / fps < duration
    times = np.arange(max(count, 1), dtype=np.float64) / fps
    source_index = np.searchsorted(pts, times + time_tolerance(times), side="right") - 1
    source_fps = pts.size / duration if duration > 0 else 0.0
    return Resampling(times=times, source_index=source_index.astype(np.int64), duration=duration, source_fps=source_fps)


def decoder_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after scaling the short side to `short_side`, rounded as torchvision's Resize does."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int]:
    """(top, left) of a centred crop, rounded as torchvision's center_crop does."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def quiet_decoder() -> None:
    """Silence ffmpeg's own log lines: a bad file is reported once, in the failure ledger."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)


# decord's messages for common bad files, and what they mean to a user.
_KNOWN_ERRORS = (
    ("cannot find video stream", "no video stream (an audio-only file?)"),
    ("Failed to measure duration/frame-count", "not a video: no frame count or duration (an image or a broken file?)"),
    ("Error reading", "not a readable video container (truncated, or not a video file)"),
    ("Invalid data found", "not a readable video container (truncated, or not a video file)"),
)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    for marker, reason in _KNOWN_ERRORS:
        if marker in text:
            return reason
    # decord prefixes "[time] /path/file.cc:123: " and appends a C++ stack trace: keep the message.
    first = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text.splitlines()[0] if text else type(error).__name__)
    return first[:300]


class VideoDecoder:
    """One video opened for decoding at `fps`, resized in the decoder so its short side is
    `short_side` and centre-cropped to `crop` x `crop`: what the CNN's transforms ask for."""

    def __init__(self, path: str | Path, fps: float, short_side: int, crop: int):
        import decord  # stage one only: stage two never imports this module's decoder

        self.path = Path(path)
        if not os.access(self.path, os.R_OK):
            raise VideoError("cannot read the file (permission denied or missing)")
        if self.path.stat().st_size == 0:
            raise VideoError("empty file")
        try:
            probe = decord.VideoReader(str(self.path), num_threads=1)
            n = len(probe)
            if n <= 0:
                raise VideoError("no video frames")
            height, width = probe[0].shape[:2]
            starts = probe.get_frame_timestamp(np.arange(n))[:, 0]
            avg_fps = probe.get_avg_fps()
            del probe
            self.width, self.height = decoder_size(width, height, short_side)
            self.reader = decord.VideoReader(str(self.path), width=self.width, height=self.height, num_threads=1)
        except VideoError:
            raise
        except Exception as e:  # decord raises plain RuntimeErrors (DECORDError) for any bad file
            raise VideoError(f"cannot decode: {_one_line(e)}") from None
        if self.height < crop or self.width < crop:
            raise VideoError(f"frames of {width}x{height} cannot be resized for a {crop}x{crop} crop")
        fallback = 1.0 / avg_fps if avg_fps and avg_fps > 0 else 1.0 / fps
        self.resampling = resample(starts, fps, fallback)
        self.source_size = (width, height)
        self.crop = crop
        self.top, self.left = center_crop_box(self.width, self.height, crop)

    def chunks(self, max_frames: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(times, source_index, frames) in order, at most `max_frames` output frames at a time;
        frames are uint8 RGB (n, crop, crop, 3). Memory is bounded by a segment, not the length,
        where keyframes come at most MAX_SEGMENT_FRAMES apart (see below).

        decord's reader queues compressed packets ahead of the frame it is asked for, up to the end
        of the file, and its decoding thread turns them all into frames while the caller is busy
        elsewhere (here: waiting for the CNN): 5 GB over ten minutes of 720p. Any seek empties the
        queues, and a seek to a keyframe costs no extra decoding, only a restart (about 45 ms at
        720p). So each segment is decoded without a pause, and when the caller has kept the reader
        waiting long enough for READ_AHEAD_BUDGET frames to pile up, the read-ahead is dropped at
        the keyframe that starts the next segment. A caller that keeps up never pays for a drop."""
        r = self.resampling
        waited = float("inf")  # seconds the reader sat idle since the last drop; unknown at first
        decoded, busy = 0, 0.0  # for decord's decoding rate
        for start, stop, next_starts_at_keyframe in self._segments():
            unique, inverse = np.unique(r.source_index[start:stop], return_inverse=True)  # repeats decode once
            began = time.perf_counter()
            frames = self._decode(unique)
            busy, decoded = busy + time.perf_counter() - began, decoded + len(unique)
            if next_starts_at_keyframe and waited * decoded / busy >= READ_AHEAD_BUDGET:
                self._drop_read_ahead()
                waited = 0.0
            for first in range(0, stop - start, max_frames):
                last = min(first + max_frames, stop - start)
                paused = time.perf_counter()
                yield (r.times[start + first:start + last], r.source_index[start + first:start + last],
                       frames[inverse[first:last]])
                waited += time.perf_counter() - paused

    def _drop_read_ahead(self) -> None:
        try:
            self.reader.seek(0)  # any seek empties the queues; the next get_batch seeks to the keyframe
        except Exception as e:
            raise VideoError(f"cannot seek: {_one_line(e)}") from None

    def _segments(self) -> Iterator[tuple[int, int, bool]]:
        """(start, stop, the next segment starts at a keyframe) over the output frames."""
        source = self.resampling.source_index
        keyframes = np.asarray(self.reader.get_key_indices(), dtype=np.int64)
        # Output frame j starts a new keyframe interval when a keyframe lies in (source[j-1], source[j]].
        interval = np.searchsorted(keyframes, source, side="right")
        cuts = np.flatnonzero(np.diff(interval)) + 1
        start = 0
        while start < len(source):
            stop = min(start + MAX_SEGMENT_FRAMES, len(source))
            within = cuts[(cuts >= start + max(MIN_SEGMENT_FRAMES, 1)) & (cuts <= stop)]
            at_keyframe = len(within) > 0 and stop < len(source)
            if at_keyframe:
                stop = int(within[-1])
            elif stop < len(source):
                # Not between two output frames of one source frame: decord would decode it again,
                # from the keyframe before it (a 24 fps source repeats every fourth frame at 30 fps).
                stop = max(int(np.searchsorted(source, source[stop], side="left")), start + 1)
            yield start, stop, at_keyframe
            start = stop

    def _decode(self, unique: np.ndarray) -> np.ndarray:
        """The cropped frames at these ascending source indices, decoded without a pause."""
        frames = np.empty((len(unique), self.crop, self.crop, 3), np.uint8)
        for first in range(0, len(unique), DECODE_BATCH):
            wanted = unique[first:first + DECODE_BATCH]
            try:
                decoded = self.reader.get_batch(wanted).asnumpy()
            except Exception as e:
                raise VideoError(f"cannot decode frames {wanted[0]}-{wanted[-1]}: {_one_line(e)}") from None
            frames[first:first + len(wanted)] = decoded[:, self.top:self.top + self.crop, self.left:self.left + self.crop]
        return frames
