"""decord as a second decoder (`extract --decoder decord`), and the rule that picks a decoder per file.

decord reads a file's frame index up front and decodes frames by number; PyAV (pipeline/video.py)
decodes the file once from start to end. Both give FFmpeg's RGB frames, and on the formats decord
handles they are the same frames (tests/test_decoders.py). But decord is wrong on some files without
saying so, and measured slower on the others (BENCHMARKS.md, bench_decode.py), hence the rule:

- `--decoder pyav` (and `auto`, the default): PyAV for every file.
- `--decoder decord`: decord for MP4/MOV, Matroska/WebM and AVI files (FOR_DECORD, the containers it
  is tested on), except where it is known or seen to be wrong, where PyAV takes over. PyAV reads every
  other container: MPEG transport and program streams (.ts .mts .m2ts .mpg .mpeg .vob .m2v: decord
  fails on H.264 with B-frames there, drops MPEG-2's first GOP and pads the end, and gives no
  timestamps for some program-stream frames), ASF/WMV (WMV2: frames 12-23 of a 40-frame clip came
  back as other pixels, up to 255 levels off, with the right count), FLV, 3GP, MXF, DV and the rest;
  and video that is not 8-bit YUV of even width and height (decord's RGB of
  10-bit H.264 is up to 60 levels off FFmpeg's, of a 175x143 frame 26); interlaced video (decord
  converts both fields' chroma as one picture: up to 166 levels off at moving colour edges, where
  FFmpeg converts each field on its own); a stream cut where FFmpeg cannot decode its first
  packets (decord then gives every frame the time of one shown earlier); open GOPs (decord's seeks
  to their keyframes make its FFmpeg log errors, which are read as damage); video longer than 200 s
  (decord's float32 timestamps cannot place 29.97 fps frames to 33 us past that); and any file
  whose decord timestamps are missing (its marker is about -1e14 s; AVI files with B-frames get it
  for every frame), not finite, out of order, or past the file's own duration, or whose frames
  decord does not give as RGB (decord2 3.4 returns 4 channels for some frame widths).
A display matrix that mirrors the picture (a front camera's) also sends a file to PyAV.
Not seen by the rule: a picture size or pixel format that changes mid-stream, which decord converts
as the first frame's (stretched; 8-bit then 10-bit came out 57 levels off) without a word (nothing in
the header tells it); PyAV converts and resizes each frame as it is.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from .video import (MAX_CHUNK_BYTES, MAX_CHUNK_FRAMES, YUV_FORMATS, Chunk, Frames, VideoError, VideoReader,
                    first_line, float32_time_tolerance, open_container, orientation, resample, video_stream)

DECODERS = ("auto", "pyav", "decord")
# The containers decord is given (by suffix), those its frames are tested against PyAV's on. Not MPEG
# transport or program streams (wrong or failed with H.264 B-frames or MPEG-2: DESIGN.md, issue 10),
# nor ASF/WMV (wrong pixels from WMV2), nor any other.
FOR_DECORD = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}
# decord's timestamps are float32: past about 200 s they cannot tell a 29.97 fps frame that starts
# 33 us after k/30 from one on screen at k/30.
MAX_DECORD_SECONDS = 200
PROGRESSIVE = 1  # FFmpeg's AVFieldOrder: 0 unknown, 1 progressive, 2-5 the interlaced field orders


def open_video(path: str | Path, fps: float, handover: str = "rgb", decoder: str = "auto"):
    """A reader for one file, by the rule above: a VideoReader (PyAV) or a DecordReader."""
    # (decord's only report of damage is its log, read with os.pread, which Windows lacks: PyAV there)
    readable_log = hasattr(os, "pread")
    if decoder == "decord" and readable_log and Path(path).suffix.lower() in FOR_DECORD and _fit_for_decord(path):
        try:
            return DecordReader(path, fps)
        except VideoError:
            pass  # decord cannot be trusted with this file: PyAV says whether it can
    return VideoReader(path, fps, handover)


def _fit_for_decord(path) -> bool:
    """From the header (read by PyAV): progressive 8-bit planar YUV of even width and height, at
    most MAX_DECORD_SECONDS long. Where the header does not say whether the video is interlaced
    (MPEG-2 in MP4 or MOV, say), the first frame does."""
    import av

    try:
        with open_container(path) as container:
            stream = video_stream(container)
            if stream is not container.streams.best("video"):  # decord reads FFmpeg's pick: here not ours
                return False  # (a still picture, or a track PyAV's FFmpeg cannot decode)
            codec = stream.codec_context
            seconds = (container.duration or 0) / 1e6
            if not (codec.format is not None and codec.format.name in YUV_FORMATS and codec.width % 2 == 0
                    and codec.height % 2 == 0 and seconds <= MAX_DECORD_SECONDS and codec.field_order <= PROGRESSIVE):
                return False
            first, earliest = _first_frame_and_earliest_pts(container, stream)
            if first is None or first.pts is None or earliest < first.pts or _open_gop(container, stream):
                return False
            if orientation(first)[1]:  # mirrored by its display matrix: decord would turn it instead
                return False
            return codec.field_order == PROGRESSIVE or not first.interlaced_frame
    except (av.error.FFmpegError, AttributeError):  # (no video stream)
        return False  # PyAV will say what is wrong with it


def _first_frame_and_earliest_pts(container, stream):
    """The first frame FFmpeg outputs, and the earliest time (pts) any packet before it is to be shown.

    They differ where the stream was cut at a frame that is not a keyframe, or at an open GOP's
    keyframe, whose leading B-frames need the GOP before (as `ffmpeg -ss ... -c copy` cuts): FFmpeg
    drops the frames it cannot decode, but decord's index numbers every packet, so it gives each
    frame the timestamp of one shown earlier and pads the end with copies of the last (seen with
    decord2 3.4: 55 frames for FFmpeg's 48, each 0.5 s early). A packet shown before the first frame
    has dts <= pts < that frame's pts, so demuxing stops at the first packet decoded past it."""
    first, earliest = None, None
    for packet in container.demux(stream):
        if first is not None and packet.dts is not None and packet.dts >= first.pts:
            break
        if packet.pts is not None:
            earliest = packet.pts if earliest is None else min(earliest, packet.pts)
        if first is None:
            first = next(iter(packet.decode()), None)  # (the flush packet at the end gives the rest)
    return first, earliest if earliest is not None else -float("inf")


def _open_gop(container, stream, most_packets: int = 2000) -> bool:
    """Whether the next keyframe (within `most_packets`) is an open GOP's: followed, in decode order,
    by frames to be shown before it, which need the GOP before. decord seeks to keyframes as it
    decodes, and from an open GOP's keyframe its FFmpeg logs errors for those frames ("mmco: unref
    short failure", in the middle of a valid Matroska file, decord2 3.4), which DecoderLog must take
    for damage. As above, a frame shown before the keyframe has dts < the keyframe's pts."""
    keyframe = None
    for n, packet in enumerate(container.demux(stream)):
        if n >= most_packets:
            return False
        if packet.pts is None:
            continue
        if keyframe is None:
            keyframe = packet.pts if packet.is_keyframe else None
        elif packet.pts < keyframe:
            return True
        elif packet.dts is not None and packet.dts >= keyframe:
            return False
    return False


class DecordReader:
    """One video decoded by decord at full size, resampled to `fps` by its frame timestamps."""

    def __init__(self, path: str | Path, fps: float):
        import decord

        self.path, self.fps = Path(path), fps
        decord.logging.set_level(decord.logging.ERROR)  # (its FFmpeg's errors are read: DecoderLog)
        self.log = DecoderLog()
        try:
            self._open(decord)
        except BaseException:
            self.close()  # (stderr back as it was)
            raise

    def _open(self, decord) -> None:
        try:
            self.reader = decord.VideoReader(str(self.path), num_threads=1)
            count = len(self.reader)
            starts = self.reader.get_frame_timestamp(np.arange(count))[:, 0].astype(np.float64) if count else []
            average_fps = self.reader.get_avg_fps()
            shape = self.reader.get_batch([0]).asnumpy().shape if count else (1, 1, 1, 3)
        except Exception as e:  # decord raises plain RuntimeErrors for any file it cannot read
            raise VideoError(f"decord cannot read it: {_decord_words(e)}") from None
        reports = self.log.read()
        if reports:
            raise VideoError(f"decord's decoder reports damaged data: {reports[0]}")
        if shape[-1] != 3:  # decord2 3.4 gave 4 channels 144 wide on one CPU, RGB on another
            raise VideoError(f"decord gives frames of shape {shape[1:]}, not RGB")
        self.frame_bytes = int(np.prod(shape[1:]))
        _check_timestamps(np.asarray(starts), count, average_fps)
        self.resampling = resample(starts, self.fps, 1.0 / average_fps if average_fps > 0 else 1.0 / self.fps,
                                   float32_time_tolerance)
        self.duration, self.source_fps = self.resampling.duration, self.resampling.source_fps

    def close(self) -> None:
        self.reader = None  # (decord's decoding thread stops: nothing more is logged)
        if getattr(self, "log", None):
            self.log.close()
        self.log = None

    def __del__(self):  # a reader nobody closed must not keep stderr
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def chunks(self, max_frames: int = MAX_CHUNK_FRAMES, max_bytes: int = MAX_CHUNK_BYTES):
        """Chunks of full-size RGB frames (decord turns them upright itself), in order."""
        r = self.resampling
        step = max(1, min(max_frames, max_bytes // self.frame_bytes))
        try:
            for start in range(0, len(r.times), step):
                index = r.source_index[start:start + step]
                unique, repeats = np.unique(index, return_counts=True)
                last = start + step >= len(r.times)
                try:
                    rgb = self.reader.get_batch(unique.tolist()).asnumpy()
                except Exception as e:
                    raise VideoError(f"decord cannot decode frames {unique[0]}-{unique[-1]}: {_decord_words(e)}") from None
                if last:
                    self.reader = None  # decord decodes ahead in a thread of its own: let it finish first
                reports = self.log.read()
                if reports:  # FFmpeg concealed the damage and decord went on: the frames are not the file's
                    raise VideoError(f"damaged data (by frame {unique[-1]}): decord's decoder reports '{reports[0]}'")
                yield Chunk(times=r.times[start:start + step], source_index=index,
                            frames=Frames(kind="rgb", planes=(rgb,), repeats=repeats.astype(np.int64)), last=last)
        finally:
            self.close()


def _decord_words(error: BaseException) -> str:
    """decord's message without its "[time] /source/file.cc:123: " prefixes, C++ stack trace or advice;
    a failed check on an FFmpeg call ("Check failed: avcodec_send_packet(...) >= 0 (-1094995529 vs. 0)
    Thread worker: Error sending packet.") as what it says and FFmpeg's words for the code."""
    text = first_line(str(error)) or type(error).__name__
    text = re.sub(r"^(\[[\d:]+\] \S+:\d+: )+", "", text)
    check = re.match(r"Check failed: (\w+)\(.*?\) >= 0 \((-\d+) vs\. 0\)\s*(?:Thread worker: )?(.*?)\.?$", text)
    if check:
        text = f"{check.group(3) or check.group(1) + ' failed'}: {_ffmpeg_words(int(check.group(2)))}"
    return re.sub(r"^Check failed: ", "", text).split(" Try to ")[0][:200]


def _ffmpeg_words(code: int) -> str:
    import av

    try:
        av.error.err_check(code)
    except av.error.FFmpegError as e:
        return e.strerror
    return f"error {code}"


# A line decord's FFmpeg logs ("[h264 @ 0x55ff2d11f040] error while decoding MB 9 7") or decord itself
# ("[13:01:15] /project/src/video/ffmpeg/threaded_decoder.cc:218: ...")
DECODER_LINE = re.compile(r"^\[([\w,]+) @ 0x[0-9a-f]+\] (.*)$|^\[[\d:]+\] \S+\.(?:cc|h):\d+: (.*)$")


class DecoderLog:
    """What decord's FFmpeg reports on stderr while a DecordReader is open, as "h264: error while
    decoding MB 9 7" (its decoders' and its demuxers' lines). decord has no other way to tell of damaged
    data: FFmpeg conceals it and decord returns the frames (32 of 40 damaged copies of an H.264 clip
    came back so, where PyAV reports a corrupt frame: tests/test_decoders.py). Its FFmpeg is not PyAV's,
    and it logs from a decoding thread of its own, ahead of the frames asked for, so fd 2 goes to a file
    while any DecoderLog of the process is open (one redirect, undone by the last to close). Each reads
    the file from where it last read, without moving the offset fd 2 writes at; other lines, and any
    piece of a line that cannot be the start of FFmpeg's (a progress bar's), are passed on to the real
    stderr as they are read. Two readers decoding at once in one process would see each other's lines.
    (os.pread: Linux and macOS.)"""

    _real_stderr: int | None = None
    _file = None
    _users = 0
    _passed_on = 0  # how far the file's other lines have been passed on

    def __init__(self):
        log = DecoderLog
        if log._users == 0:
            sys.stderr.flush()
            log._real_stderr, log._file, log._passed_on = os.dup(2), tempfile.TemporaryFile(), 0
            os.dup2(log._file.fileno(), 2)
        log._users += 1
        self.position = os.fstat(log._file.fileno()).st_size
        self.open = True

    def read(self, final: bool = False) -> list[str]:
        """FFmpeg's reports since the last read (`final`: also a last line without its end)."""
        log = DecoderLog
        sys.stderr.flush()
        fd = log._file.fileno()
        data = os.pread(fd, os.fstat(fd).st_size - self.position, self.position)
        reports, offset = [], self.position
        for piece in data.splitlines(keepends=True):
            whole = piece.endswith(b"\n") or final
            text = piece.decode(errors="replace").strip()
            if not whole and text.startswith("["):
                break  # perhaps the start of one of FFmpeg's lines: read it whole next time
            found = DECODER_LINE.match(text) if whole else None
            if found:
                reports.append(f"{found.group(1)}: {found.group(2)}" if found.group(1) else found.group(3))
            elif offset + len(piece) > log._passed_on:
                os.write(log._real_stderr, piece[max(0, log._passed_on - offset):])
                log._passed_on = offset + len(piece)
            offset += len(piece)
        self.position = offset
        return reports

    def close(self) -> None:
        """Pass on what is left (FFmpeg's lines too: a reader closed early has not read them), and give
        fd 2 back if this is the last DecoderLog open."""
        if not self.open:
            return
        self.open = False
        log = DecoderLog
        left = self.read(final=True)
        if left:
            os.write(log._real_stderr, "".join(f"{line}\n" for line in left).encode())
        log._users -= 1
        if log._users == 0:
            sys.stderr.flush()
            os.dup2(log._real_stderr, 2)
            os.close(log._real_stderr)
            log._file.close()
            log._real_stderr, log._file = None, None


def _check_timestamps(starts: np.ndarray, count: int, average_fps: float) -> None:
    """Refuse timestamps decord could not read (its no-timestamp markers are far from any real time), that are
    not finite, run backwards, or run past what the frame count and rate make plausible."""
    if count == 0:
        raise VideoError("decord finds no frames")
    # (its markers: about -1.02e14 s, and INT64_MAX ms, 9.2e15 s, seen on 2- and 3-frame Matroska files)
    if not np.all(np.isfinite(starts)) or starts.min() < -1.0 or starts.max() > 1e9:
        raise VideoError("decord gives no timestamps for some frames")
    if np.any(np.diff(starts) < -1e-3):
        raise VideoError("decord's timestamps run backwards")
    if average_fps > 0 and starts[-1] - starts[0] > 1.5 * count / average_fps + 2.0:
        raise VideoError("decord's timestamps run past the video's length")
