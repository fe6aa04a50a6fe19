"""Decoding, and resampling to a fixed frame rate by presentation timestamps.

Output frame k stands for time t_k = k / fps from the first frame and holds the source frame on
screen at t_k: the last one whose presentation time is <= t_k. Output frames run while
t_k < duration. A 25 fps source thus repeats every fifth frame, a 60 fps source drops every other
one, and a variable-frame-rate source is followed by its real timestamps.

Every video is decoded once, from start to end, by PyAV (FFmpeg): the sequential decode every
player makes, which is what "the frame on screen at t" means. Resampling is streamed: a decoded
frame's time on screen is known once the next frame's timestamp is, so memory does not grow with
the length. Frames are handed over unresized (see `Frames`): torch resizes them as torchvision does
(pipeline/preprocess.py). decord is the other decoder (pipeline/decord_video.py, `--decoder decord`).

A frame whose content or time cannot be trusted fails the video with a true reason: the decoder
reporting a corrupt frame or an error (returned, or only logged) once decoding has begun,
timestamps far past the file's own duration, a frame count far from the container's. A missing
timestamp is filled in from the frame before it plus the frame's duration, as FFmpeg's own players do.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .preprocess import aligned_window, chroma_subsampling, needed_region, to_crops

MAX_CHUNK_FRAMES = 128  # output frames per chunk handed to the CNN side
WARM_UP_FRAMES = 8  # frames whose timestamps are looked at before the first is timed (see _PresentationClock)
MAX_CHUNK_BYTES = 32 << 20  # and at most this much unresized frame data, or one frame (4K: 2 frames; 720p: 22)
# The CPU box's worker resizes its RGB frames (handover "crop") in groups of at least this much, as they
# come (720p: three frames, 320x240: nineteen), and keeps only the crops, so a chunk is bounded by its
# frame count, not by MAX_CHUNK_BYTES. Resizing whole chunks of RGB (21 frames, 33 MB at 720p) was 2%
# slower end to end on 2 cores (BENCHMARKS.md); one frame at a time costs torch's per-call overheads at
# small sizes (50% more at 320x240).
RESIZE_GROUP_BYTES = 4 << 20
# 8-bit planar YUV: preprocess.yuv_to_rgb converts it on the CNN's device within 3 levels of swscale
# (chroma repeated, as swscale's own converter does). Deeper formats upsample chroma with swscale's
# filters (up to 50 levels apart at sharp edges), so those, like every other format, are converted
# to RGB by swscale in the decode worker.
YUV_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"}


class VideoError(Exception):
    """A video that cannot be used; str() is a one-line reason for the failure ledger."""


def time_tolerance(t):
    """How far apart two times may be and still be the same instant: the float64 rounding of times
    that are exact fractions in the file (PyAV's). Any wider, and a 29.97 fps frame that starts 33 us
    after k/30 would count as on screen at k/30 (after 3 hours, too)."""
    return 1e-9 + np.abs(t) * 2.0**-44


def float32_time_tolerance(t):
    """The same for times given as float32 (decord's: 1/30 s reads 0.033333335), whose rounding
    grows with t; past about 200 s it is wider than 33 us (see decord_video.MAX_DECORD_SECONDS)."""
    return 1e-6 + np.abs(t) * 2.0**-22


@dataclass
class Resampling:
    times: np.ndarray  # (T,) seconds from the first frame, k / fps
    source_index: np.ndarray  # (T,) index of the source frame shown at each time
    duration: float  # seconds
    source_fps: float  # source frames per second of presentation time (an average for VFR)


def resample(presentation_times: np.ndarray, fps: float, fallback_frame_duration: float,
             tolerance=time_tolerance) -> Resampling:
    """Which source frame is on screen at each k / fps, from the source frames' start times: the
    whole-array form of `Resampler`, for a decoder that gives every timestamp up front (decord)."""
    r = Resampler(fps, tolerance)
    source_index = []
    for i, t in enumerate(np.asarray(presentation_times, dtype=np.float64)):
        source_index += [i - 1] * r.add(float(t))
    if r.frames == 0:
        raise VideoError("no video frames")
    source_index += [r.frames - 1] * r.finish(fallback_frame_duration)
    index = np.asarray(source_index, dtype=np.int64)
    return Resampling(np.arange(len(index)) / fps, index, r.duration, r.source_fps)


class Resampler:
    """Streamed resampling: add() each decoded frame's start time in decode order, finish() at the end.

    add(t) returns how many output frames the frame BEFORE this one fills (its time on screen ends
    where this one starts); finish() returns how many the last frame fills. Times count from the
    first frame's, and a time earlier than the one before is taken as equal (shown for no time).
    """

    def __init__(self, fps: float, tolerance=time_tolerance):
        self.fps, self.frames, self.outputs, self.tolerance = fps, 0, 0, tolerance
        self.first = self.last = self.step = None  # first start (absolute), last start, last interval
        self.duration = self.source_fps = 0.0

    def add(self, t: float) -> int:
        if self.first is None:
            self.first = t
        t = max(t - self.first, self.last if self.last is not None else 0.0)
        filled = 0
        if self.last is not None:
            self.step = t - self.last
            filled = self._fill_until(t)
        self.last, self.frames = t, self.frames + 1
        return filled

    def finish(self, fallback_frame_duration: float) -> int:
        """Outputs of the last frame, which shows as long as the one before it (a container's end
        time can be bogus), or `fallback_frame_duration` when it is the only frame."""
        step = self.step if self.step is not None else fallback_frame_duration
        self.duration = float(self.last + max(step, 0.0))
        count = max(int(math.ceil((self.duration - self.tolerance(self.duration)) * self.fps)), 1)
        self.source_fps = self.frames / self.duration if self.duration > 0 else 0.0
        filled = max(count - self.outputs, 0)
        self.outputs += filled
        return filled

    def _fill_until(self, t: float) -> int:
        """Output frames k whose time is before t (the next frame's start) go to the current frame."""
        start = self.outputs
        # k / fps + tol < t  <=>  k < (t - tol) * fps, nudged for float rounding by the loop below
        tol = self.tolerance
        k = max(int(math.ceil((t - tol(t)) * self.fps)), start)
        while k > start and (k - 1) / self.fps + tol((k - 1) / self.fps) >= t:
            k -= 1
        while k / self.fps + tol(k / self.fps) < t:
            k += 1
        self.outputs = k
        return k - start


@dataclass
class Frames:
    """Unique decoded frames at full size, as the decoder gave them, and how often each is shown.

    kind "yuv": `planes` = (Y (n, H, W), U (n, h, w), V (n, h, w)), 8-bit, with `matrix` (FFmpeg's
    colorspace name) and `full_range`: converted by torch on the CNN's device. kind "rgb": `planes` = (RGB (n, H, W, 3) uint8,), converted by FFmpeg (swscale).
    kind "crop": `planes` = (uint8 (n, 224, 224, 3),), the rgb frames already resized and cropped (a CPU box's worker).
    `rotation`: degrees counterclockwise the frames must turn to be upright (the display matrix), after
    being mirrored left to right where `mirror` (video.orientation).
    `interlaced`: the decoder flags the frames as two interleaved fields (see preprocess.yuv_to_rgb)."""

    kind: str
    planes: tuple
    repeats: np.ndarray  # (n,) output frames each unique frame fills, >= 1
    rotation: int = 0
    mirror: bool = False
    size: tuple[int, int] = (0, 0)  # (height, width) of the decoded frames
    region: tuple[int, int] | None = None  # (top, left) where the planes lie when only the crop's part came
    window: tuple[int, int, int, int] | None = None  # kind "rgb": only this aligned window of each frame came
    matrix: str = "bt470bg"
    full_range: bool = False
    interlaced: bool = False

    def to_dict(self) -> dict:  # what crosses from a decode worker: tensors and plain values
        import torch

        return {"kind": self.kind, "planes": [torch.from_numpy(p) for p in self.planes],
                "repeats": torch.from_numpy(self.repeats), "rotation": self.rotation, "mirror": self.mirror,
                "size": self.size, "region": self.region, "matrix": self.matrix, "full_range": self.full_range,
                "interlaced": self.interlaced, "window": self.window}


@dataclass
class Chunk:
    times: np.ndarray  # (m,) output times, k / fps
    source_index: np.ndarray  # (m,) decoded frame shown at each
    frames: Frames
    last: bool = False  # the video's last chunk (never empty): `VideoReader.duration` and `source_fps` are final


def quiet_decoder() -> None:
    """FFmpeg's log lines would repeat, on stderr, what the failure ledger says once per video."""
    import av

    av.logging.set_level(av.logging.PANIC)


def open_container(path):
    """av.open(path) for reading, where a metadata tag that is not UTF-8 (a title in Latin-1, as old
    cameras and tools wrote them) does not fail the file. PyAV 18 raises UnicodeDecodeError on such a
    tag unless given metadata_errors="ignore"; PyAV 19 (the one pip gives Python 3.12 and later) no
    longer takes that argument, a TypeError on every file, and reads such tags as surrogates itself."""
    import av

    before_19 = int(av.__version__.split(".")[0]) < 19
    return av.open(str(path), **({"metadata_errors": "ignore"} if before_19 else {}))


def first_line(text: str) -> str:
    """The first line of a library's message, or "" (the ledger holds one line a video)."""
    return (text.strip().splitlines() or [""])[0]


def _one_line(error: BaseException) -> str:
    """FFmpeg's own words for an error, without the file's path (the ledger names the file)."""
    text = getattr(error, "strerror", None) or first_line(str(error)) or type(error).__name__
    return text[:200]


class VideoReader:
    """One video decoded sequentially by PyAV, resampled to `fps` as it is decoded. `handover`: how
    its frames come (`Frames`): "rgb", "yuv" (8-bit planar YUV where it can, for the GPU to convert,
    else rgb) or "crop" (rgb resized and cropped here, for a CPU box's CNN)."""

    def __init__(self, path: str | Path, fps: float, handover: str = "rgb"):
        import av

        self.path, self.fps, self.handover = Path(path), fps, handover
        try:
            size = self.path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise VideoError("no such file") from None
        except OSError as e:  # (a folder on the way that may not be entered: PermissionError)
            raise VideoError(f"cannot read the file: {e.strerror or type(e).__name__}") from None
        if not os.access(self.path, os.R_OK):
            raise VideoError("cannot read the file: permission denied")
        if size == 0:
            raise VideoError("empty file")
        if av.logging.get_level() is None:
            quiet_decoder()  # (PyAV then counts FFmpeg's errors, which _decoded_frames reads, printing none)
        self.errors = av.logging.get_last_error()[0]  # FFmpeg's errors before this file was opened
        try:
            self.container = open_container(self.path)
        except av.error.FFmpegError as e:
            raise VideoError(f"not a readable video container: {_one_line(e)} (truncated, or not a video file)") from None
        self.stream = video_stream(self.container)
        if self.stream is None:
            kinds = sorted({s.type for s in self.container.streams if not _is_picture(s)})
            kinds += ["a cover picture"] * any(_is_picture(s) for s in self.container.streams)
            self.close()  # (after reading the streams: they are freed with the container)
            raise VideoError("no video stream" + (f" (the file holds only {', '.join(kinds)})" if kinds else ""))
        codec = self.stream.codec_context
        name = codec.name if codec is not None else ""
        if codec is None or codec.codec is None or name in ("", "none", "unknown"):
            self.close()
            if name in ("", "none", "unknown"):
                raise VideoError("unknown video codec: the stream's header names none FFmpeg knows (a damaged file?)")
            raise VideoError(f"unsupported video codec {name!r}: the FFmpeg under PyAV has no decoder for it")
        if self.container.format.name.endswith("_pipe") or self.container.format.name == "image2":
            self.close()  # FFmpeg opens a still image as a one-frame video
            if _animated_webp(self.path):
                raise VideoError("an animated WebP: the FFmpeg under PyAV cannot decode its frames "
                                 "(FFmpeg decodes animated WebP from version 9)")
            raise VideoError(f"not a video: a still image ({self.container.format.name.replace('_pipe', '')})")
        codec.thread_count = 1  # one decode process per core is the parallelism (and errors come with their packet)
        self.codec_name = codec.name
        self.duration = self.source_fps = 0.0
        self.frames_decoded = 0
        self.packets_hidden = 0  # packets an edit list hides (decoded for the frames after them, never shown)
        self.cut_short = False  # the file ends inside a sample (`_packets`)
        self.sample_missing = None  # the demuxer's reason, where it found a sample placed past the end

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _declared_duration(self) -> float | None:
        s = self.stream
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        if self.container.duration:
            return self.container.duration / 1e6  # AV_TIME_BASE
        return None

    def _nominal_frame_duration(self) -> float:
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        return float(1 / rate) if rate else 1.0 / self.fps

    def chunks(self, max_frames: int = MAX_CHUNK_FRAMES, max_bytes: int = MAX_CHUNK_BYTES) -> Iterator[Chunk]:
        """Chunks of at most `max_frames` output frames and `max_bytes` of pixels (or one frame, where
        that is more), in order."""
        resampler = Resampler(self.fps)
        pending = None  # the last decoded frame: its time on screen ends where the next one starts
        builder = _ChunkBuilder(self, max_frames, max_bytes)
        clock = _PresentationClock(self._nominal_frame_duration())
        declared = self._declared_duration()
        decoded = self._decoded_frames()
        first = list(itertools.islice(decoded, WARM_UP_FRAMES))
        clock.warm_up(first)
        for frame in itertools.chain(first, decoded):
            t = clock.time(frame)
            if resampler.last is not None and t - resampler.first < resampler.last - time_tolerance(t):
                raise VideoError(f"timestamps go backwards at {t:.3f} s (after {resampler.first + resampler.last:.3f} s)")
            filled = resampler.add(t)
            if declared and resampler.last > 1.5 * declared + 2.0:  # before it makes thousands of copies
                raise VideoError(f"timestamps run to {resampler.last:.1f} s, but the file says it lasts "
                                 f"{declared:.1f} s (damaged timestamps)")
            if pending is not None and filled:
                builder.add(pending, resampler.frames - 2, filled)
                while len(builder.done) > 1:  # the newest is held back: it may turn out to be the last
                    yield builder.done.pop(0)
            pending = frame
        if pending is None:
            raise VideoError("no video frame could be decoded")
        filled = resampler.finish(self._nominal_frame_duration())
        self.duration, self.source_fps = resampler.duration, resampler.source_fps
        self._check_frame_count()
        if filled:
            builder.add(pending, resampler.frames - 1, filled)
        builder.close()
        builder.done[-1].last = True
        yield from builder.done

    def _decoded_frames(self):
        import av

        at = 0.0
        errors = self.errors  # FFmpeg's errors so far: from opening the file on (a damaged header counts)
        unshown = {}  # pts -> why, for packets the decoder logged an error for before the first frame
        refused = "no reason given"  # FFmpeg's words for the last packet it refused before the first frame
        try:
            for packet in self._packets():
                if packet is None:  # the file ended inside the last packet: what the decoder still holds
                    yield from self._checked(self.stream.codec_context.decode(None), at, unshown)
                    break
                if packet.pts is not None and packet.time_base:
                    at = float(packet.pts * packet.time_base)
                self.packets_hidden += packet.is_discard and packet.size > 0
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    if self.frames_decoded == 0 and packet.size:
                        errors, refused = av.logging.get_last_error()[0], _one_line(e)
                        continue  # waiting for a keyframe or the parameter sets, as a player does
                    raise VideoError(f"damaged {self.codec_name} data near {at:.2f} s: {_one_line(e)}") from None
                except ValueError:
                    # PyAV 19: where the decoder failed to open on the first packet (damaged codec parameters),
                    # FFmpeg clears its codec and PyAV then refuses every packet ("cannot decode unknown
                    # codec"); PyAV 18 tried to open it again each time, and failed the same way.
                    raise VideoError(f"damaged {self.codec_name} data near {at:.2f} s: the decoder cannot start "
                                     f"on it ({refused})") from None
                errors, why = self._logged_error(errors, at, at_end=not packet.size)
                if why:
                    # An error logged, and concealed: MJPEG, FFV1 and HEVC do so without flagging the frame.
                    # Before the first frame it fails the video only if the packet is a keyframe or its
                    # frame is shown: a stream cut mid-GOP, or at an open GOP, has frames the decoder
                    # cannot make, logs errors for them, and drops them.
                    if self.frames_decoded or packet.is_keyframe:
                        raise VideoError(why)
                    if packet.pts is not None:
                        unshown[packet.pts] = why
                yield from self._checked(frames, at, unshown)
        except av.error.FFmpegError as e:  # the demuxer: a truncated or damaged container
            raise VideoError(f"damaged container near {at:.2f} s: {_one_line(e)}") from None
        if self.sample_missing and not self.cut_short:  # (a sample the index places past the end, with no cut)
            raise VideoError(self.sample_missing)

    def _packets(self):
        """The stream's packets, less a last one that the end of the file cut short. FFmpeg reads such a
        packet short and flags it corrupt (a short read happens only at the end of the file); then comes
        the end, or the demuxer's error for the sample after it (MP4: "partial file"). Decoded, it fails
        the video (H.264: "Invalid data") or gives a damaged last frame; dropped, the frames before it,
        which are whole, are kept (`cut_short`), as an unfinished recording's are. None at the end
        where the demuxer failed after it: the decoder is then flushed by hand. A packet flagged corrupt
        that more packets follow is passed on, for the decoder to judge."""
        import av

        held = None
        try:
            for packet in self.container.demux(self.stream):
                if held is not None:
                    if packet.size:
                        yield held
                    else:
                        self.cut_short = True
                    held = None
                if packet.is_corrupt and packet.size:
                    held = packet
                else:
                    yield packet
        except av.error.FFmpegError:
            if held is None:
                raise
            self.cut_short = True
            yield None

    def _checked(self, frames, at: float, unshown: dict):
        """The decoded frames, failing the video on one the decoder reports corrupt, or one whose packet
        it logged an error for (`unshown`: by pts)."""
        for frame in frames:
            if frame.is_corrupt:
                raise VideoError(f"damaged {self.codec_name} data near {at:.2f} s: the decoder "
                                 f"reports a corrupt frame (frame {self.frames_decoded})")
            if frame.pts is not None and frame.pts in unshown:
                raise VideoError(unshown[frame.pts])
            self.frames_decoded += 1
            yield frame

    def _logged_error(self, since: int, at: float, at_end: bool) -> tuple[int, str | None]:
        """FFmpeg's error count, and the reason its last error since the count `since` gives (`at`: the
        time), where that error is this video's: logged by its demuxer, or by its decoder other than
        H.264's. Not counted: another stream's decoder (an audio header probed at opening); H.264's
        decoder, which flags every frame it conceals damage in (`is_corrupt`) and also logs for data it
        rightly skips (a truncated SEI); and the demuxer meeting the end of a cut-off file (`at_end`:
        "File ended prematurely", an unfinished recording, whose frames before are whole; MP4's "partial
        file" is judged once the file has ended, by `_packets`); a cut-off
        last frame is the decoder's to report). (PyAV counts every error while its log is silenced,
        and keeps the last. The count is the process's: two readers decoding at once in one process
        would blame each other's errors; the pipeline decodes one video at a time in each process.)"""
        import av

        count, last = av.logging.get_last_error()
        if count == since or last is None:
            return count, None
        _, name, message = last
        words = repr(first_line(message)[:200])
        if re.fullmatch(r"'at -?[\d.]+ seconds'", words):  # the second half of FFV1's "slice CRC mismatch"
            words = "a slice whose checksum does not match"
        if name == self.container.format.name and "partial file" in message:
            # MP4's demuxer finds a sample placed past the end of the file: cut off there, or a damaged
            # index. Which one is known at the end (_packets: cut_short); a cut one keeps its frames.
            # (no time: for a short file FFmpeg reads that far while opening it)
            self.sample_missing = self.sample_missing or f"damaged container: the demuxer reports {words}"
            return count, None
        if name == self.container.format.name and not at_end:
            return count, f"damaged container near {at:.2f} s: the demuxer reports {words}"
        if name == self.codec_name and name != "h264":
            return count, f"damaged {name} data near {at:.2f} s: the decoder reports {words}"
        return count, None

    def _check_frame_count(self) -> None:
        # The container lists the samples an edit list hides too: a clip cut from a long GOP without
        # re-encoding (`ffmpeg -ss T -c copy`, a phone editor's quick export) keeps the GOP's start.
        listed = self.stream.frames and self.stream.frames - self.packets_hidden
        if listed and self.cut_short:  # an index written before the file was cut: an incomplete copy
            raise VideoError(f"the file is cut off: {self.frames_decoded} of the {listed} frames its index "
                             f"lists are in it (an incomplete copy)")
        if listed and not (listed / 2 - 2 <= self.frames_decoded <= 1.5 * listed + 2):
            raise VideoError(f"the container lists {listed} frames, but {self.frames_decoded} were decoded "
                             f"(a damaged file)")


class _PresentationClock:
    """Each decoded frame's presentation time, as FFmpeg's best_effort_timestamp picks it: the pts,
    unless the pts run out of order more often than the dts do (H.264 with B-frames in AVI gives pts
    in decode order), then the dts; a frame with neither starts where the frame before ends (its
    duration, or the stream's nominal one, after it). One departure: once the dts are chosen, a frame
    without one after the first also follows the frame before, where FFmpeg takes its pts (the frames
    an AVI's decoder gives back at the end have no dts, and their decode-order pts would run
    backwards). Streams that never have a dts keep the pts.

    Frames before the first timestamp (a TS recording whose first PES headers carry none) are timed
    back from it: they end where the first timed frame starts, as FFmpeg back-fills the packets it
    still holds when the first timestamp comes. Timing them from 0 instead would show the last of them
    until the stream's clock (1.4 s in an ffmpeg TS, hours in a broadcast) and make copies of it."""

    def __init__(self, nominal_frame_duration: float):
        self.nominal = nominal_frame_duration
        self.faulty_pts = self.faulty_dts = 0
        self.any_dts = False  # (kept through warm_up: it says whether the stream has dts at all)
        self._restart()

    def _restart(self) -> None:
        self.last_pts = self.last_dts = self.previous = None
        self.next_start = 0.0  # where the frame before ends
        self.shift = 0.0  # subtracted from every timestamp: nonzero once untimed leading frames were timed from 0
        self.untimed_lead = False  # the frames so far had no timestamp

    def warm_up(self, frames) -> None:
        """Count the faults of the first frames first, so that the choice holds from frame 0 on."""
        for frame in frames:
            self.time(frame)
        self._restart()

    def time(self, frame) -> float:
        pts, dts = frame.pts, frame.dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts, self.any_dts = dts, True
        if self.faulty_pts > self.faulty_dts and self.any_dts and (dts is not None or self.previous is not None):
            chosen = dts
        else:
            chosen = pts if pts is not None else dts
        if chosen is not None and frame.time_base:
            t = float(chosen * frame.time_base)
            if self.untimed_lead:  # the untimed frames before, timed from 0, end where this one starts
                self.shift, self.untimed_lead = t - self.next_start, False
            t -= self.shift
        else:
            t = self.next_start
            self.untimed_lead = self.previous is None or self.untimed_lead
        duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
        self.previous, self.next_start = t, t + (duration or self.nominal)
        return t


class _ChunkBuilder:
    """Collects the frames that are shown, converted for the hand-over, into Chunks (`done`): at most
    `max_frames` output frames and `max_bytes` of pixels each, or one frame where that is more (a frame
    shown longer is split across chunks; a chunk must fit a decode slot, pinned_slots.py) and one description
    of the pixels each (a chunk is closed when the size, pixel format, colour matrix, range, interlacing
    or rotation changes)."""

    def __init__(self, reader: VideoReader, max_frames: int, max_bytes: int = MAX_CHUNK_BYTES):
        self.reader, self.max_frames, self.max_bytes = reader, max_frames, max_bytes
        self.resizes = reader.handover == "crop"  # swscale's RGB, resized and cropped here
        self.handover = "rgb" if self.resizes else reader.handover
        self.images, self.repeats, self.source, self.bytes = [], [], [], 0
        self.resized = 0  # images[:resized] are crops already (handover "crop")
        self.times_from = 0  # output index of the chunk's first frame
        self.meta = None
        self.done: list[Chunk] = []

    def add(self, frame, index: int, filled: int) -> None:
        planes, meta = _handover(frame, self.handover)
        if self.meta is not None and meta != self.meta:
            # A new chunk where the description changes: each frame is resized and cropped from its own
            # size, as torchvision's transforms would take it. (The size changes mid-stream where a phone
            # recording its screen is turned, or a video call adapts its resolution.)
            self.close()
        self.meta = meta
        frame_bytes = sum(p.nbytes for p in planes)
        while filled:
            # (crops are bounded by their count: RESIZE_GROUP_BYTES above)
            if not self.resizes and self.images and self.bytes + frame_bytes > self.max_bytes:
                self.close()
            shown = min(filled, self.max_frames - sum(self.repeats))
            self.images.append(planes)
            self.repeats.append(shown)
            self.source.append(index)
            self.bytes += frame_bytes
            filled -= shown
            if self.resizes and sum(image[0].nbytes for image in self.images[self.resized:]) >= RESIZE_GROUP_BYTES:
                self._resize_group()
            if sum(self.repeats) >= self.max_frames:
                self.close()

    def _resize_group(self) -> None:
        """The chunk's frames not yet resized -> crops, in place (handover "crop")."""
        group = self.images[self.resized:]
        if not group:
            return
        rgb = Frames(kind="rgb", planes=(np.stack([image[0] for image in group]),),
                     repeats=np.ones(len(group), dtype=np.int64), rotation=self.meta["rotation"],
                     mirror=self.meta["mirror"], size=(self.meta["height"], self.meta["width"]),
                     window=self.meta.get("window"))
        crops = to_crops(rgb.to_dict()).numpy()
        self.images[self.resized:] = [(crop,) for crop in crops]
        self.bytes += crops.nbytes - sum(image[0].nbytes for image in group)
        self.resized = len(self.images)

    def close(self) -> None:
        if self.images:
            self.done.append(self.take())

    def take(self) -> Chunk:
        repeats = np.asarray(self.repeats, dtype=np.int64)
        count = int(repeats.sum())
        times = np.arange(self.times_from, self.times_from + count, dtype=np.float64) / self.reader.fps
        source_index = np.repeat(np.asarray(self.source, dtype=np.int64), repeats)
        if self.resizes:
            self._resize_group()
        meta = dict(self.meta or {})
        if self.resizes:
            meta.update(kind="crop", window=None, rotation=0, mirror=False)  # (turned upright before the resize)
        planes = tuple(np.stack([image[i] for image in self.images]) for i in range(len(self.images[0]))) \
            if self.images else ()
        frames = Frames(kind=meta.get("kind", "rgb"), planes=planes, repeats=repeats, rotation=meta.get("rotation", 0),
                        mirror=meta.get("mirror", False),
                        matrix=meta.get("matrix", "bt470bg"),
                        full_range=meta.get("full_range", False), size=(meta.get("height", 0), meta.get("width", 0)),
                        region=meta.get("region"), interlaced=meta.get("interlaced", False), window=meta.get("window"))
        self.times_from += count
        self.images, self.repeats, self.source, self.bytes = [], [], [], 0
        self.resized = 0
        return Chunk(times=times, source_index=source_index, frames=frames)


def video_stream(container):
    """The video stream FFmpeg picks (av_find_best_stream, as the ffmpeg tool, players and decord
    do: the default-flagged one, else the one with more frames, else the higher bit rate), unless it
    is a still picture or FFmpeg has no decoder for it; then the first video stream that FFmpeg can
    decode and is not a picture (else the first not a picture, for VideoReader to say why); or None.
    A file may hold other video tracks, placed first: a small preview, a depth map, a thumbnail;
    read in stream order, a camera's file was stored as its 64x48 preview. A cover picture (an audio
    file's album art, a thumbnail in an MP4 or Matroska file) is a one-frame video stream to FFmpeg:
    read as the video, an audio file would be stored as one frame of its cover."""
    moving = [s for s in container.streams.video if not _is_picture(s)]
    decodable = [s for s in moving if s.codec_context is not None and s.codec_context.codec is not None]
    best = container.streams.best("video")  # (which does not ask whether FFmpeg can decode it)
    if best in decodable:
        return best
    return (decodable or moving or [None])[0]


def _animated_webp(path: Path) -> bool:
    """A WebP whose VP8X header flags an animation (FFmpeg 8 and before skip its frames)."""
    with open(path, "rb") as f:
        head = f.read(21)
    return head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and len(head) == 21 and bool(head[20] & 0x02)


def _is_picture(stream) -> bool:
    import av

    still = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image
    return stream.type == "video" and bool(stream.disposition & still)


def orientation(frame) -> tuple[int, bool]:
    """(rotation, mirror): how the frame is turned upright by its display matrix, as the ffmpeg tool's
    autorotation turns it: mirrored left to right first (`mirror`), then turned `rotation` degrees
    counterclockwise. A front camera may mark its clips mirrored ([-1 0; 0 1]), which FFmpeg reports
    as a rotation of 180 degrees: turned, they would be upside down. Other angles are rounded to the
    nearest 90 (the ffmpeg tool rotates by the exact angle, filling the corners)."""
    side_data = frame.side_data.get("DISPLAYMATRIX")
    if side_data is None:
        return 0, False
    try:
        angle = frame.rotation or 0
    except Exception:  # a matrix FFmpeg cannot read a rotation from
        return 0, False
    m = np.frombuffer(bytes(side_data), dtype=np.int32)  # 16.16 fixed point: a b u / c d v / x y w
    theta = round(-angle / 90.0) * 90 % 360  # clockwise, as fftools' get_rotation gives it
    if theta == 90:  # "transpose=cclock_flip" where m[3] > 0, else "transpose=clock"
        return (90, True) if m[3] > 0 else (270, False)
    if theta == 180:  # "hflip" where m[0] < 0, "vflip" where m[4] < 0, each, both or neither
        hflip, vflip = bool(m[0] < 0), bool(m[4] < 0)  # (both: a half turn; vflip: a mirror, then a half turn)
        return (180 if vflip else 0, hflip != vflip)
    if theta == 270:  # "transpose=clock_flip" where m[3] < 0, else "transpose=cclock"
        return (270, True) if m[3] < 0 else (90, False)
    return (180, True) if m[4] < 0 else (0, False)  # "vflip" where m[4] < 0


def _handover(frame, handover: str) -> tuple[tuple[np.ndarray, ...], dict]:
    """The frame's pixels for the CNN side, and what describes them (equal for frames of one chunk)."""
    name = frame.format.name
    rotation, mirror = orientation(frame)
    meta = {"width": frame.width, "height": frame.height, "format": name, "rotation": rotation, "mirror": mirror}
    upright = not rotation and not mirror
    # (swscale interpolates the chroma of odd-sized frames instead of repeating it, and of interlaced
    # 4:2:0 frames whose fields have an odd number of rows: those go as RGB)
    rows = 4 if frame.interlaced_frame else 2
    if handover == "yuv" and name in YUV_FORMATS and frame.width % 2 == 0 and frame.height % rows == 0:
        planes = tuple(_plane(p) for p in frame.planes[:3])
        if upright:  # hand over only what the centre crop is made of (half of 720p)
            top, bottom, left, right = needed_region(frame.width, frame.height)
            planes = _crop_planes(planes, top, bottom, left, right)
            meta["region"] = (top, left)
        planes = tuple(p.copy() for p in planes)  # off the decoder's buffers, which it reuses
        meta.update(kind="yuv", matrix=_matrix(frame), full_range=name.startswith("yuvj") or _full_range(frame),
                    interlaced=bool(frame.interlaced_frame))
        return planes, meta
    meta.update(kind="rgb")
    window = aligned_window(frame.width, frame.height) if (
        name in YUV_FORMATS and frame.width % 2 == 0 and frame.height % 2 == 0 and upright
        and not frame.interlaced_frame) else None  # (PyAV cannot flag a new frame interlaced: those go whole)
    # (10- and 12-bit frames go whole: swscale upsamples their chroma by the frame's chroma location,
    # which PyAV cannot set on a new frame; cut, a 10-bit HEVC frame came out 33 levels off)
    if window:  # swscale converts, and torch resizes, only the pixels the crop is made of (60% of 720p)
        frame = _cut(frame, window)
        meta["window"] = window
    return (frame.to_ndarray(format="rgb24", threads=1),), meta


def _cut(frame, window):
    """A new frame holding `window` (top, bottom, left, right) of an 8-bit planar YUV frame, with its
    colour matrix and range, for swscale to convert as it would the whole."""
    import av

    top, bottom, left, right = window
    part = av.VideoFrame(right - left, bottom - top, frame.format.name)
    for source, target in zip(_crop_planes(tuple(_plane(p) for p in frame.planes), *window), part.planes):
        _plane(target)[:] = source
    part.colorspace, part.color_range = frame.colorspace, frame.color_range
    return part


def _crop_planes(planes: tuple[np.ndarray, ...], top: int, bottom: int, left: int, right: int) -> tuple[np.ndarray, ...]:
    """(top, bottom, left, right) of the luma plane, and the chroma planes' samples that cover it."""
    fy, fx = chroma_subsampling(planes[0], planes[1])
    return (planes[0][top:bottom, left:right],
            *(p[top // fy:-(-bottom // fy), left // fx:-(-right // fx)] for p in planes[1:]))


def _plane(plane) -> np.ndarray:
    """A view of one plane's pixels (rows are padded to line_size in the decoder's buffer)."""
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, :plane.width]


def _full_range(frame) -> bool:
    return int(frame.color_range) == 2  # AVCOL_RANGE_JPEG


def _matrix(frame) -> str:
    """FFmpeg's name of the YUV -> RGB matrix, as swscale picks it: the frame's tag, else BT.601."""
    names = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}
    return names.get(int(frame.colorspace), "bt470bg")
