"""A matrix of tiny clips in the codecs and containers users have, written by PyAV's encoders.

Each frame holds sharp-edged colour rectangles (the content where resizing the chroma planes alone
goes wrong) that move with the frame number, so a wrong frame, a wrong colour or a wrong resize shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class Format:
    name: str  # also the file name
    codec: str
    pix_fmt: str
    container: str | None = None  # PyAV's format name, when the suffix does not say it
    fps: Fraction = Fraction(30)
    options: dict = field(default_factory=dict)
    container_options: dict = field(default_factory=dict)
    size: tuple[int, int] = (176, 144)
    frames: int = 40
    first_pts: float = 0.0  # seconds: a start offset (mp4/mov write it as an edit list)


X264_B = {"preset": "ultrafast", "x264-params": "bframes=3:b-adapt=0:keyint=12:min-keyint=12:scenecut=0"}

FORMATS = [
    Format("h264_bframes.mp4", "libx264", "yuv420p", options=X264_B),
    Format("h264_open_gop_long.mkv", "libx264", "yuv420p",
           options={"preset": "ultrafast", "x264-params": "bframes=2:open-gop=1:keyint=250:scenecut=0"}),
    Format("h264_interlaced.mkv", "libx264", "yuv420p", options={"preset": "ultrafast", "x264-params": "tff=1:bframes=2"}),
    Format("h264_444.mov", "libx264", "yuv444p", options={"preset": "ultrafast"}),
    Format("h264_10bit.mp4", "libx264", "yuv420p10le", options={"preset": "ultrafast"}),
    Format("h264_25fps_offset.mp4", "libx264", "yuv420p", fps=Fraction(25), options=X264_B, first_pts=0.5),
    Format("h264_bframes.ts", "libx264", "yuv420p", fps=Fraction(30000, 1001), options=X264_B),
    Format("h264_bframes_avchd.mts", "libx264", "yuv420p", container="mpegts", options=X264_B,
           container_options={"mpegts_m2ts_mode": "1"}),
    Format("hevc.mp4", "libx265", "yuv420p", options={"preset": "ultrafast", "x265-params": "log-level=none"}),
    Format("hevc_10bit.mkv", "libx265", "yuv420p10le", options={"preset": "ultrafast", "x265-params": "log-level=none"}),
    Format("mpeg2_2997.ts", "mpeg2video", "yuv420p", fps=Fraction(30000, 1001), options={"g": "15", "bf": "2"}),
    Format("mpeg2_interlaced.ts", "mpeg2video", "yuv420p", fps=Fraction(30000, 1001),
           options={"g": "15", "bf": "2", "flags": "+ilme+ildct"}),  # broadcast: two fields a frame
    Format("mpeg2_interlaced_146.mov", "mpeg2video", "yuv420p", size=(176, 146), frames=12,
           options={"g": "15", "bf": "2", "flags": "+ilme+ildct"}),  # fields of 73 rows; unknown field order in MOV
    Format("mpeg2_dvd.mpg", "mpeg2video", "yuv420p", container="vob", fps=Fraction(30000, 1001),
           options={"g": "15", "bf": "2"}),
    Format("mpeg4.avi", "mpeg4", "yuv420p", options={"bf": "1", "qscale": "2"}),
    Format("vp8.webm", "libvpx", "yuv420p"),
    Format("vp9.webm", "libvpx-vp9", "yuv420p", options={"deadline": "realtime", "cpu-used": "8"}),
    Format("av1.mp4", "libsvtav1", "yuv420p", options={"preset": "12"}),
    Format("av1.webm", "libsvtav1", "yuv420p", options={"preset": "12"}),
    Format("mjpeg_full_range.avi", "mjpeg", "yuvj422p"),
    Format("prores.mov", "prores_ks", "yuv422p10le"),
    Format("ffv1.mkv", "ffv1", "yuv420p"),
    Format("ffv1_odd_size.mkv", "ffv1", "yuv420p", size=(175, 143)),
    # older and rarer ones users still have (camcorders, phones, old web video, screen recorders)
    Format("mpeg1.mpg", "mpeg1video", "yuv420p", container="mpeg", options={"bf": "2", "g": "12"}),
    Format("wmv2.wmv", "wmv2", "yuv420p", container="asf"),
    Format("flv1.flv", "flv", "yuv420p"),
    Format("h263.3gp", "h263", "yuv420p", container="3gp"),
    Format("dv_ntsc.dv", "dvvideo", "yuv411p", fps=Fraction(30000, 1001), size=(720, 480), frames=6),
    Format("h264_422.mp4", "libx264", "yuv422p", options={"preset": "ultrafast"}),
    Format("h264_gray.mp4", "libx264", "gray", options={"preset": "ultrafast"}),
    Format("hevc_12bit.mkv", "libx265", "yuv420p12le", options={"preset": "ultrafast", "x265-params": "log-level=none"}),
    Format("hevc_bframes.ts", "libx265", "yuv420p", options={"preset": "ultrafast", "x265-params": "log-level=none:bframes=3"}),
    Format("vp9_alpha.webm", "libvpx-vp9", "yuva420p", options={"deadline": "realtime", "cpu-used": "8"}),
    Format("av1_10bit.mkv", "libsvtav1", "yuv420p10le", options={"preset": "12"}),
    Format("png_rgba.mov", "png", "rgba", frames=12),
    Format("utvideo_rgb.avi", "utvideo", "gbrp", frames=12),
    Format("h264_60fps.mp4", "libx264", "yuv420p", fps=Fraction(60), options=X264_B, frames=60),
    Format("h264_23976.mkv", "libx264", "yuv420p", fps=Fraction(24000, 1001), options=X264_B),
    # sizes where only a window of each frame is converted and resized (preprocess.aligned_window)
    Format("h264_bt709_640x360.mp4", "libx264", "yuv420p", size=(640, 360), frames=10,
           options={"preset": "ultrafast", "x264-params": "colormatrix=bt709"}),
    Format("h264_full_range_854x480.mp4", "libx264", "yuvj420p", size=(854, 480), frames=6,
           options={"preset": "ultrafast"}),
    # 10-bit at such sizes goes whole (swscale places its chroma by a chroma location a cut frame cannot keep)
    Format("hevc_10bit_bt2020_640x360.mp4", "libx265", "yuv420p10le", size=(640, 360), frames=8,
           options={"preset": "ultrafast", "x265-params": "log-level=none:colormatrix=bt2020nc"}),
    Format("prores_422_10bit_854x480.mov", "prores_ks", "yuv422p10le", size=(854, 480), frames=6),
    Format("mpeg2_pal_720x576.mpg", "mpeg2video", "yuv420p", container="vob", fps=Fraction(25), size=(720, 576),
           frames=10, options={"g": "12", "bf": "2"}),
    Format("h264_portrait.mp4", "libx264", "yuv420p", size=(144, 256), options={"preset": "ultrafast"}),
    # a sweep of further formats (2026-11-28): screen recorders, old AVI codecs, raw and intermediate
    # codecs, broadcast MXF, more sizes and rates
    Format("qtrle.mov", "qtrle", "rgb24", frames=12),
    Format("qtrle_argb.mov", "qtrle", "argb", frames=12),
    Format("cinepak.avi", "cinepak", "rgb24", frames=12),
    Format("msvideo1.avi", "msvideo1", "rgb555le", frames=12),
    Format("huffyuv.avi", "huffyuv", "yuv422p", frames=12),
    Format("ffvhuff_rgb.avi", "ffvhuff", "bgra", frames=12),
    Format("raw_uyvy.avi", "rawvideo", "uyvy422", frames=8),
    Format("raw_nv12.mkv", "rawvideo", "nv12", frames=8),
    Format("jpeg2000.mov", "jpeg2000", "yuv420p", frames=6),
    Format("snow.avi", "snow", "yuv420p", frames=10),
    Format("h261.avi", "h261", "yuv420p", frames=12),
    Format("flashsv.flv", "flashsv", "bgr24", frames=8),
    Format("zmbv.avi", "zmbv", "bgr0", frames=8),
    Format("h264_bframes.flv", "libx264", "yuv420p", options=X264_B),
    Format("h264_bframes_1080p.mp4", "libx264", "yuv420p", size=(1920, 1080), frames=8, options=X264_B),
    Format("hevc_bframes_offset.mov", "libx265", "yuv420p", first_pts=0.3,
           options={"preset": "ultrafast", "x265-params": "log-level=none:bframes=3"}),
    Format("vp9_444.webm", "libvpx-vp9", "yuv444p", options={"deadline": "realtime", "cpu-used": "8"}),
    Format("mjpeg_420.mov", "mjpeg", "yuvj420p", frames=12),
    Format("mpeg4_bframes.mkv", "mpeg4", "yuv420p", options={"bf": "2", "qscale": "2"}),
    Format("mpeg2_422.mxf", "mpeg2video", "yuv422p", container="mxf", fps=Fraction(25), size=(720, 576), frames=6,
           options={"g": "12", "bf": "2"}),
    Format("dnxhd.mov", "dnxhd", "yuv422p", fps=Fraction(30000, 1001), size=(1920, 1080), frames=3, options={"b": "36M"}),
    Format("h264_640x362.mp4", "libx264", "yuv420p", size=(640, 362), frames=6, options=X264_B),
    Format("h264_1366x768.mp4", "libx264", "yuv420p", size=(1366, 768), frames=6, options=X264_B),
    Format("h264_50fps.ts", "libx264", "yuv420p", fps=Fraction(50), options=X264_B),
    Format("h264_5994.mkv", "libx264", "yuv420p", fps=Fraction(60000, 1001), options=X264_B),
    Format("h264_12fps.mp4", "libx264", "yuv420p", fps=Fraction(12), frames=20, options=X264_B),
    # a third sweep (2026-11-28): old PC and web codecs, 4x4 chroma, RGB H.264, a cinema intermediate, 10-bit 4:2:2
    Format("msmpeg4v3.avi", "msmpeg4v3", "yuv420p"),  # DivX 3 ("DIV3"), in old downloaded AVIs
    Format("rv20.rm", "rv20", "yuv420p", fps=Fraction(25)),  # RealVideo in RealMedia
    Format("svq1.mov", "svq1", "yuv410p"),  # Sorenson Video 1 (old QuickTime): chroma a quarter each way
    Format("h264rgb.mkv", "libx264rgb", "rgb24", options={"preset": "ultrafast"}),  # lossless screen captures
    Format("cfhd.mov", "cfhd", "yuv422p10le"),  # GoPro CineForm
    Format("v210.mov", "v210", "yuv422p10le", frames=6),  # uncompressed 10-bit 4:2:2 (broadcast)
]

# Animations a folder search leaves out (by extension: an icon is not a video); a CSV manifest takes them
ANIMATIONS = [
    Format("anim.gif", "gif", "rgb8", fps=Fraction(10), frames=12),
    Format("anim.apng", "apng", "rgb24", container="apng", fps=Fraction(15), frames=10),
]


def scene(index: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Saturated rectangles on a dark ground, each moving its own way: frame `index` of a clip."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 20, np.uint8)
    for _ in range(14):
        w, h = rng.integers(6, width // 3), rng.integers(6, height // 3)
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        vx, vy = rng.integers(-4, 5), rng.integers(-3, 4)
        x, y = (x0 + vx * index) % width, (y0 + vy * index) % height
        image[y:y + h, x:x + w] = rng.integers(0, 256, 3)
    return image


def write_clip(folder: Path, f: Format) -> Path:
    path = Path(folder) / f.name
    width, height = f.size
    with av.open(str(path), "w", format=f.container, options=f.container_options) as container:
        stream = container.add_stream(f.codec, rate=f.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, f.pix_fmt
        stream.options = dict(f.options)
        offset = int(round(f.first_pts * f.fps))
        for i in range(f.frames):
            frame = av.VideoFrame.from_ndarray(scene(i, width, height), format="rgb24")
            frame.pts = offset + i
            frame.time_base = 1 / f.fps
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


OPEN_GOP = {"preset": "ultrafast", "x264-params": "bframes=2:b-adapt=0:open-gop=1:keyint=12:min-keyint=12:scenecut=0"}
# Streams cut by copying packets from a later point, as `ffmpeg -ss T -i IN -c copy OUT` does: (name,
# the source clip, where the copy starts). FFmpeg cannot decode their first packets and drops them.
CUTS = [
    ("cut_mid_gop.mp4", Format("source.mp4", "libx264", "yuv420p", options=X264_B, frames=60), "packet 5"),
    ("cut_mid_gop.mkv", Format("source.mp4", "libx264", "yuv420p", options=X264_B, frames=60), "packet 5"),
    ("cut_mid_gop.ts", Format("source.ts", "libx264", "yuv420p", options=X264_B, frames=60), "packet 5"),
    # an open GOP's keyframe: its leading B-frames need the GOP before
    ("cut_open_gop.mp4", Format("source.mp4", "libx264", "yuv420p", options=OPEN_GOP, frames=60), "keyframe 2"),
    ("cut_open_gop.mkv", Format("source.mkv", "libx264", "yuv420p", options=OPEN_GOP, frames=60), "keyframe 2"),
]


def write_cut(folder: Path, name: str, source: Format, start: str) -> Path:
    """A clip of CUTS: `source` written, then its video packets copied from `start` ("packet N": the
    N-th in decode order, counting from 0; "keyframe N": the N-th keyframe, counting from 1) on."""
    what, number = start.split()
    (Path(folder) / "sources").mkdir(exist_ok=True)
    source_path = write_clip(Path(folder) / "sources", source)
    path = Path(folder) / name
    with av.open(str(source_path)) as original, av.open(str(path), "w") as copy:
        stream = original.streams.video[0]
        target = copy.add_stream_from_template(stream)
        keyframes, copying = 0, False
        for n, packet in enumerate(p for p in original.demux(stream) if p.size):
            keyframes += packet.is_keyframe
            copying = copying or (n >= int(number) if what == "packet" else keyframes >= int(number))
            if copying:
                packet.stream = target
                copy.mux(packet)
    return path


def corrupted_copies(path: Path, count: int, seed: int = 0):
    """`count` copies of `path` with 1-19 bytes zeroed (even copies) or flipped (odd ones), one by one."""
    data = path.read_bytes()
    rng = np.random.default_rng(seed)
    for i in range(count):
        damaged = bytearray(data)
        for at in rng.integers(0, len(data), int(rng.integers(1, 20))):
            damaged[at] = damaged[at] ^ 0xFF if i % 2 else 0
        copy = path.with_name(f"damaged{i:02d}.mp4")
        copy.write_bytes(bytes(damaged))
        yield copy


def strip_first_timestamps(path: Path, count: int) -> Path:
    """Clear the timestamps of an MPEG-TS file's first `count` video PES packets, as some recorders
    and broken muxers write them (the PES header's PTS_DTS_flags set to none; the header keeps its
    length, so the bytes where they were read as stuffing)."""
    data = bytearray(Path(path).read_bytes())
    cleared = 0
    for at in range(0, len(data) - 187, 188):
        if data[at] != 0x47 or not data[at + 1] & 0x40:  # sync byte; a PES packet starts in this one
            continue
        payload = at + 4 + (1 + data[at + 4] if data[at + 3] & 0x20 else 0)  # after the adaptation field
        if data[payload:payload + 4] == b"\x00\x00\x01\xe0":  # the first video stream's PES start code
            data[payload + 7] &= 0x3F
            cleared += 1
            if cleared == count:
                break
    assert cleared == count, f"{path} has {cleared} video PES packets"
    Path(path).write_bytes(bytes(data))
    return Path(path)
