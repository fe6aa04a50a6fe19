"""Decoding with decord, and resampling to a fixed frame rate by presentation timestamps.

Output frame k stands for time t_k = k / fps from the first frame and holds the source frame on
screen at t_k: the last one whose presentation time is <= t_k. Output frames run while
t_k < duration. A 25 fps source thus repeats every fifth frame, a 60 fps source drops every other
one, and a variable-frame-rate source is followed by its real timestamps.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np



def time_tolerance(t):
    """How far apart two times may be and still be the same instant. decord gives presentation
    times as float32 (1/30 s reads 0.033333335), whose rounding error grows with t; any wider and
    a 29.97 fps frame that starts 33 us after k/30 would count as on screen at k/30."""
    return 1e-6 + np.abs(t) * 2.0**-22


# Source frames between reopenings of the decoder (see VideoDecoder.chunks): bounds decord's
# read-ahead; each reopening costs a seek, at most one keyframe interval of extra decoding.
REOPEN_EVERY_FRAMES = 2048


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
            self.reader = self._open_resized()
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

    def _open_resized(self):
        import decord

        self.opened_at = 0  # source frame index the reader was (re)opened at
        return decord.VideoReader(str(self.path), width=self.width, height=self.height, num_threads=1)

    def chunks(self, max_frames: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(times, source_index, frames) in order, at most `max_frames` output frames at a time;
        frames are uint8 RGB (n, crop, crop, 3). Memory is bounded by max_frames, not the length."""
        r = self.resampling
        for start in range(0, len(r.times), max_frames):
            source = r.source_index[start:start + max_frames]
            unique, inverse = np.unique(source, return_inverse=True)  # repeated frames decode once
            try:
                if unique[0] - self.opened_at >= REOPEN_EVERY_FRAMES:
                    # decord decodes ahead of what is asked for, without a cap, while its consumer
                    # (the CNN) is slower: 5 GB for 10 minutes of 720p. A new reader starts empty.
                    self.reader = self._open_resized()
                    self.opened_at = int(unique[0])
                decoded = self.reader.get_batch(unique).asnumpy()
            except Exception as e:
                raise VideoError(f"cannot decode frames {unique[0]}-{unique[-1]}: {_one_line(e)}") from None
            cropped = decoded[:, self.top:self.top + self.crop, self.left:self.left + self.crop]
            yield r.times[start:start + max_frames], source, np.ascontiguousarray(cropped[inverse])
