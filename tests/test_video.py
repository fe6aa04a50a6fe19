"""Resampling to 30 fps by presentation timestamps, and decoding (PyAV, sequentially)."""

import numpy as np
import pytest
from videos import frame_number, rotate_90_on_display, write_video

from pipeline.preprocess import center_crop_box, resized_size, to_crops
from pipeline import video
from pipeline.video import Resampler, VideoError, VideoReader, float32_time_tolerance, resample


def expected_source_index(pts, fps, count):
    """The definition, written out slowly: the last frame whose start time is <= k / fps."""
    return [max(i for i, p in enumerate(pts) if p <= k / fps + 1e-9) for k in range(count)]


@pytest.mark.parametrize("source_fps, frames, expected_count", [
    (25, 50, 60),  # 2 s
    (30000 / 1001, 60, 61),  # 2.002 s
    (24000 / 1001, 48, 61),  # 2.002 s
    (30, 60, 60),
    (60, 120, 60),
])
def test_constant_frame_rates_resample_by_timestamp(source_fps, frames, expected_count):
    pts = np.arange(frames) / source_fps
    r = resample(pts.astype(np.float32), 30.0, 1 / source_fps, float32_time_tolerance)
    assert len(r.times) == expected_count
    np.testing.assert_allclose(r.times, np.arange(expected_count) / 30)
    assert r.source_index.tolist() == expected_source_index(pts, 30.0, expected_count)


def test_25_fps_repeats_every_fifth_frame_and_60_fps_drops_every_other():
    r25 = resample(np.arange(25) / 25, 30.0, 1 / 25)
    assert r25.source_index[:12].tolist() == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
    r60 = resample(np.arange(60) / 60, 30.0, 1 / 60)
    assert r60.source_index.tolist() == list(range(0, 60, 2))


def test_29_97_fps_frame_that_starts_just_after_k_over_30_is_not_yet_on_screen():
    pts = (np.arange(100) * 1001 / 30000).astype(np.float32)  # frame k starts k * 33 us after k / 30
    r = resample(pts, 30.0, 1001 / 30000, float32_time_tolerance)
    assert r.source_index[1:6].tolist() == [0, 1, 2, 3, 4]


def test_variable_frame_rate_follows_real_timestamps():
    pts = np.array([0, 0.04, 0.05, 0.2, 0.21, 0.4])
    r = resample(pts, 30.0, 0.1)
    assert r.duration == pytest.approx(0.59)  # the last frame shows as long as the one before it
    assert len(r.times) == 18
    assert r.source_index.tolist() == expected_source_index(pts, 30.0, 18)


def test_timestamps_count_from_the_first_frame():
    r = resample(np.array([1.5, 1.6, 1.7]), 10.0, 0.1)
    assert r.times.tolist() == pytest.approx([0, 0.1, 0.2])
    assert r.source_index.tolist() == [0, 1, 2]


def test_a_single_frame_lasts_the_fallback_duration():
    r = resample(np.array([0.0]), 30.0, 0.1)
    assert len(r.times) == 3 and r.source_index.tolist() == [0, 0, 0]


def test_sizes_and_crop_are_rounded_as_torchvision_does():
    assert resized_size(640, 480, 256) == (341, 256)
    assert resized_size(480, 640, 256) == (256, 341)
    assert resized_size(1920, 1080, 256) == (455, 256)
    assert center_crop_box(341, 256, 224) == (16, 58)  # round(58.5) == 58, as torchvision's round


def test_streamed_resampling_equals_the_definition_on_random_variable_frame_rates():
    rng = np.random.default_rng(0)
    for _ in range(50):
        pts = np.cumsum(rng.choice([0.0, 0.001, 0.01, 1 / 30, 0.04, 0.3], size=int(rng.integers(1, 40))))
        r = resample(pts, 30.0, 0.05)
        assert r.source_index.tolist() == expected_source_index(pts - pts[0], 30.0, len(r.times))


def test_a_frame_that_starts_before_the_one_before_it_is_shown_for_no_time():
    r = Resampler(10.0)
    assert [r.add(t) for t in (0.0, 0.3, 0.25, 0.5)] == [0, 3, 0, 2]  # frame 2 is taken as starting at 0.3


def decode(path, handover="rgb", max_frames=7):
    """(source_index, crops) of a whole video, through VideoReader and the CPU's preprocessing."""
    reader = VideoReader(path, 30.0, handover)
    index, crops, times = [], [], []
    for chunk in reader.chunks(max_frames):
        index += chunk.source_index.tolist()
        times += chunk.times.tolist()
        crops.append(to_crops(chunk.frames.to_dict()).numpy())
    np.testing.assert_allclose(times, np.arange(len(index)) / 30)
    return index, np.concatenate(crops), reader


@pytest.mark.parametrize("handover", ["rgb", "yuv", "crop"])
@pytest.mark.parametrize("fps, pts_ms", [(25, None), (30000 / 1001, None), (30, None), (60, None),
                                         (30, [0, 40, 50, 200, 210, 400, 433, 700])])
def test_decoded_frames_are_the_source_frames_the_resampling_names(tmp_path, fps, pts_ms, handover):
    count = len(pts_ms) if pts_ms else 45
    path = write_video(tmp_path / "v.mp4", count, fps=fps, pts_ms=pts_ms)
    index, crops, reader = decode(path, handover)
    assert crops.shape[1:] == (224, 224, 3) and crops.dtype == np.uint8
    assert [frame_number(f) for f in crops] == index
    pts = np.array(pts_ms) / 1000 if pts_ms else np.arange(count) / fps
    assert index == expected_source_index(pts, 30.0, len(index))
    assert reader.duration == pytest.approx(pts[-1] + (pts[-1] - pts[-2]))


@pytest.mark.parametrize("group_bytes", [1, 100_000, video.RESIZE_GROUP_BYTES])
@pytest.mark.parametrize("width, height", [(1280, 720), (320, 240), (175, 143)])
def test_crops_made_as_frames_come_equal_the_frames_resized_on_the_cnn_side(tmp_path, monkeypatch, width, height,
                                                                            group_bytes):
    """The CPU box's worker resizes frames a few at a time (handover "crop"): the same crops, bit for
    bit, as resizing whole chunks of RGB frames: one frame a group, several groups a chunk, and the
    default, with frames shown twice."""
    monkeypatch.setattr(video, "RESIZE_GROUP_BYTES", group_bytes)
    rng = np.random.default_rng(0)
    images = [np.kron(rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8),
                      np.ones((4, 4, 1), np.uint8))[:height, :width] for _ in range(12)]
    path = write_video(tmp_path / "v.mp4", images, fps=25)
    index, crops, _ = decode(path, "rgb", max_frames=9)
    crop_index, crops_made_early, _ = decode(path, "crop", max_frames=9)
    assert crop_index == index and len(set(index)) == 12 and len(index) > 12
    assert np.array_equal(crops_made_early, crops)


def test_long_videos_come_in_chunks_of_bounded_size(tmp_path):
    path = write_video(tmp_path / "v.mp4", 60, fps=25)
    chunks = list(VideoReader(path, 30.0).chunks(max_frames=16))
    assert all(len(c.times) <= 16 + 1 for c in chunks)  # a frame shown twice may cross the bound by one
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert sum(len(c.frames.planes[0]) for c in chunks) == 60  # each source frame decoded and kept once


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"hello, this is text", "not a readable video container"),
    (bytes(range(256)) * 64, "not a readable video container"),
])
def test_bad_files_raise_a_one_line_reason(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=reason) as e:
        list(VideoReader(path, 30.0).chunks())
    assert "\n" not in str(e.value) and str(tmp_path) not in str(e.value)


def test_a_video_marked_rotated_is_decoded_upright(tmp_path):
    image = np.zeros((240, 320, 3), np.uint8)
    image[:, :160] = 200  # left half light
    image[:40, :, 1] = 255  # a green band along the top
    path = rotate_90_on_display(write_video(tmp_path / "phone.mp4", [image] * 3))
    for handover in ("rgb", "yuv", "crop"):
        _, crops, _ = decode(path, handover)
        frame = crops[0].astype(int)
        # Turned clockwise: the light left half is now the top, the green top band the right edge.
        assert frame[:100, :180, 0].mean() > 190 and frame[130:, :180, 0].mean() < 10
        assert frame[:, -12:, 1].mean() > 240 and frame[120:, -12:, 0].mean() < 10


def test_timestamps_that_run_far_past_the_files_duration_fail_the_video(tmp_path):
    """A damaged time-to-sample table (stts) stretches every frame to minutes, while the movie header
    still says one second: stored, it would be thousands of copies of a few frames."""
    import struct

    path = write_video(tmp_path / "v.mp4", 30)
    data = bytearray(path.read_bytes())
    at = data.index(b"stts") + 4 + 4  # the box's type, then version and flags
    entries = struct.unpack(">I", data[at:at + 4])[0]
    count, delta = struct.unpack(">II", data[at + 4:at + 12])
    assert entries >= 1 and count >= 1
    data[at + 8:at + 12] = struct.pack(">I", delta * 4000)
    path.write_bytes(bytes(data))
    # (the demuxer then gives one frame: the frame count the container lists is what tells)
    with pytest.raises(VideoError, match="timestamps run to .* but the file says it lasts|container lists 30 frames"):
        list(VideoReader(path, 30.0).chunks())


@pytest.mark.parametrize("interlaced", [False, True])
@pytest.mark.parametrize("width, height", [(1280, 720), (320, 240), (176, 144), (144, 256), (333, 187), (3840, 2160),
                                           (720, 576)])
def test_handing_over_only_the_crops_region_gives_the_same_crop(width, height, interlaced):
    import torch

    from pipeline.preprocess import needed_region

    g = torch.Generator().manual_seed(width)
    y = torch.randint(16, 236, (1, height, width), dtype=torch.uint8, generator=g)
    u, v = (torch.randint(16, 241, (1, (height + 1) // 2, (width + 1) // 2), dtype=torch.uint8, generator=g)
            for _ in range(2))
    whole = {"kind": "yuv", "planes": [y, u, v], "repeats": torch.ones(1, dtype=torch.long), "rotation": 0,
             "matrix": "bt709", "full_range": False, "interlaced": interlaced}
    top, bottom, left, right = needed_region(width, height)
    assert top % 4 == 0 and left % 2 == 0
    part = dict(whole, size=(height, width), region=(top, left),
                planes=[y[:, top:bottom, left:right], u[:, top // 2:-(-bottom // 2), left // 2:-(-right // 2)],
                        v[:, top // 2:-(-bottom // 2), left // 2:-(-right // 2)]])
    assert torch.equal(to_crops(whole), to_crops(part))


@pytest.mark.parametrize("width, height", [(1280, 720), (1920, 1080), (720, 576), (854, 480), (1080, 1920), (640, 360)])
def test_resizing_only_an_aligned_window_gives_the_same_crop(width, height):
    import torch

    from pipeline.preprocess import aligned_window, resize_and_crop

    rgb = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(width))
    window = aligned_window(width, height)
    top, bottom, left, right = window
    assert all(edge % 2 == 0 for edge in window) and (bottom - top) * (right - left) <= 0.75 * width * height
    part = rgb[:, :, top:bottom, left:right]
    assert torch.equal(resize_and_crop(rgb), resize_and_crop(part, size=(height, width), window=window))


def test_a_29_97_fps_source_keeps_the_right_frame_for_hours():
    """Times from the file are exact fractions: the frame that starts 33 us after k/30 is not on
    screen at k/30, after 3 hours as after 3 seconds (a float32 tolerance went wrong after 3 min)."""
    from fractions import Fraction

    r = Resampler(30.0)
    shown = []
    for i in range(3 * 3600 * 30):
        shown += [i - 1] * r.add(float(i * Fraction(1001, 30000)))
    assert shown == [k * 1000 // 1001 for k in range(len(shown))]


@pytest.mark.parametrize("bframes", [2, 3])
def test_h264_with_b_frames_in_avi_is_timed_by_its_decode_order(tmp_path, bframes):
    """AVI has no presentation times: FFmpeg's pts come out in decode order there, and its
    best-effort timestamp takes the dts instead, as the pipeline does. With 3 B-frames (a B-pyramid)
    the frames the decoder gives back at the end have no dts, and their pts, still in decode order,
    run backwards (FFmpeg's best-effort timestamp takes them): each follows the frame before."""
    import av
    from fractions import Fraction

    path = tmp_path / "b.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast", "x264-params": f"bframes={bframes}:b-adapt=0:keyint=12:scenecut=0"}
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 + 4 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    index, crops, _ = decode(path)
    assert index == list(range(40)) and [frame_number(c) for c in crops] == index


def test_the_clock_keeps_the_pts_where_no_dts_can_stand_in():
    """The dts take over from pts that run out of order, but not in a stream without any dts (where a
    variable frame rate's gaps would be lost), and not for a first frame without one (H.264 in an MPEG
    program stream), which would open a gap to the next."""
    from fractions import Fraction
    from types import SimpleNamespace

    from pipeline.video import _PresentationClock

    def frame_numbers(stamps):  # (pts, dts) in 1/30 s -> each frame's time, in frames
        frames = [SimpleNamespace(pts=p, dts=d, time_base=Fraction(1, 30), duration=1) for p, d in stamps]
        clock = _PresentationClock(1 / 30)
        clock.warm_up(frames)
        return [round(clock.time(f) * 30, 6) for f in frames]

    assert frame_numbers([(p, None) for p in (0, 1, 3, 2, 7, 8)]) == [0, 1, 3, 2, 7, 8]
    decode_order = [(17, None), (20, 18), (18, 19), (19, 20), (23, 21), (21, 22), (22, 23)]
    assert frame_numbers(decode_order) == [17, 18, 19, 20, 21, 22, 23]
    # the decoder's last frames without a dts (AVI) follow the frame before
    assert frame_numbers(decode_order + [(25, None), (24, None)]) == list(range(17, 26))


def test_a_frame_shown_for_minutes_is_split_across_chunks_of_bounded_size(tmp_path):
    path = write_video(tmp_path / "v.mp4", 3, pts_ms=[0, 60_000, 60_033])
    chunks = list(VideoReader(path, 30.0).chunks(max_frames=16))
    assert max(len(c.times) for c in chunks) <= 16
    assert sum(len(c.times) for c in chunks) == 1801 + 1 and chunks[-1].last


def test_a_folder_search_follows_symlinked_label_folders_once_each(tmp_path):
    from pipeline.inputs import find_videos

    write_video(tmp_path / "all" / "running" / "a.mp4", 2)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "running").symlink_to(tmp_path / "all" / "running")  # a split built of links
    (tmp_path / "all" / "running" / "loop").symlink_to(tmp_path / "all")  # a link to a folder above
    sources = find_videos(tmp_path / "train")
    assert [(s.id, s.label) for s in sources] == [("running/a.mp4", "running")]


def test_a_folder_search_leaves_out_hidden_files_and_folders(tmp_path):
    """A dataset unzipped from a Mac: an AppleDouble sidecar "._a.mp4" beside each video (not video),
    and the same in __MACOSX/; a hidden folder (.cache/) is not searched either."""
    from pipeline.inputs import find_videos

    write_video(tmp_path / ".hidden_root" / "running" / "a.mp4", 2)  # the root itself may be hidden
    root = tmp_path / ".hidden_root"
    (root / "running" / "._a.mp4").write_bytes(b"\x00\x05\x16\x07" + bytes(100))  # AppleDouble's magic
    (root / "__MACOSX" / "running").mkdir(parents=True)
    (root / "__MACOSX" / "running" / "._a.mp4").write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    write_video(root / ".cache" / "running" / "b.mp4", 2)
    assert [(s.id, s.label) for s in find_videos(root)] == [("running/a.mp4", "running")]
