"""Tiny synthetic test videos, written with PyAV (H.264, lossless so frame contents survive).

Frame i of `write_video` is a flat grey of level `gray_level(i)`, so a decoded frame tells which
source frame it is: tests can check which source frame an output frame holds.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

LEVEL_STEP = 4  # grey levels 4 apart survive RGB -> YUV -> RGB (off by 1 at most)


def gray_level(i: int) -> int:
    return 8 + LEVEL_STEP * i


def frame_number(frame: np.ndarray) -> int:
    """Which source frame a decoded flat-grey frame is."""
    return int(round((float(frame.mean()) - 8) / LEVEL_STEP))


def write_video(path, frames: int | list[np.ndarray], fps: float = 30, width: int = 64, height: int = 48,
                pts_ms: list[int] | None = None, keyframe_every: int | None = None) -> Path:
    """Write an H.264 mp4. `frames` is a count (flat grey frames, see gray_level) or a list of RGB
    arrays. `pts_ms` gives each frame's presentation time in milliseconds: a variable frame rate.
    `keyframe_every` makes a keyframe every that many frames, with B-frames between, as cameras
    and streaming encoders do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = frames if isinstance(frames, list) else [
        np.full((height, width, 3), gray_level(i), np.uint8) for i in range(frames)]
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"qp": "0", "preset": "ultrafast"}  # lossless
        if keyframe_every:
            stream.options["x264-params"] = f"keyint={keyframe_every}:min-keyint={keyframe_every}:scenecut=0:bframes=2"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def latin1_title(path, title: str = "Caf\u00e9 ABC") -> Path:
    """Give an mp4 a title tag in Latin-1, not UTF-8, as old cameras and tools wrote them: the file is
    remuxed with the title in UTF-8, whose bytes are then swapped for Latin-1's ("\u00e9" is two bytes
    in UTF-8 and one in Latin-1, so a space pads it: the atoms keep their sizes)."""
    path = Path(path)
    utf8, latin1 = title.encode(), title.encode("latin-1")
    latin1 += b" " * (len(utf8) - len(latin1))
    remuxed = path.with_suffix(".titled.mp4")
    with av.open(str(path)) as source, av.open(str(remuxed), "w") as target:
        target.metadata["title"] = title
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    data = remuxed.read_bytes()
    assert data.count(utf8) == 1, "the title is written once"
    path.write_bytes(data.replace(utf8, latin1))
    remuxed.unlink()
    return path


def rotate_90_on_display(path) -> Path:
    """Mark an mp4 as shown turned 90 degrees clockwise, as phones mark portrait footage: the display
    matrix in the track header (tkhd), which players, ffmpeg and decord apply."""
    return set_display_matrix(path, 0, 1, -1, 0)


def set_display_matrix(path, a: int, b: int, c: int, d: int) -> Path:
    """Write the display matrix [a b; c d] (each -1, 0 or 1) into an mp4's track header (tkhd)."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    matrix = data.index(b"tkhd") - 4 + 48  # box start, then a version-0 tkhd's fields up to its matrix
    data[matrix:matrix + 36] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30)
    path.write_bytes(data)
    return path


def textured_frames(count: int, width: int = 96, height: int = 72, seed: int = 0) -> list[np.ndarray]:
    """Smooth, natural-looking frames (gradients and blobs) that move a little each frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    centres = rng.uniform(0, 1, size=(4, 2)) * [width, height]
    colours = rng.uniform(0, 255, size=(4, 3))
    frames = []
    for i in range(count):
        image = np.stack([x / width * 200, y / height * 200, np.full_like(x, 60)], axis=-1)
        for (cx, cy), colour in zip(centres, colours):
            blob = np.exp(-(((x - cx - 2 * i) ** 2 + (y - cy) ** 2) / (2 * (width / 8) ** 2)))[..., None]
            image = image * (1 - blob) + colour * blob
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


def decoded_rgb_frames(path) -> list[np.ndarray]:
    """Every frame of a video's first video stream, in presentation order, as FFmpeg's swscale turns it
    into RGB: the plain sequential decode any player makes (PyAV), independent of the pipeline's."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
