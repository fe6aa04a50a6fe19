"""Resampling to 30 fps by presentation timestamps, and decoding with decord."""

import numpy as np
import pytest
from videos import frame_number, rotate_90_on_display, write_video

from pipeline.video import VideoDecoder, VideoError, center_crop_box, decoder_size, resample


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
    r = resample(pts.astype(np.float32), 30.0, 1 / source_fps)
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
    r = resample(pts, 30.0, 1001 / 30000)
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
    assert decoder_size(640, 480, 256) == (341, 256)
    assert decoder_size(480, 640, 256) == (256, 341)
    assert decoder_size(1920, 1080, 256) == (455, 256)
    assert center_crop_box(341, 256, 224) == (16, 58)  # round(58.5) == 58, as torchvision's round


@pytest.mark.parametrize("fps, pts_ms", [(25, None), (30000 / 1001, None), (30, None), (60, None),
                                         (30, [0, 40, 50, 200, 210, 400, 433, 700])])
def test_decoded_frames_are_the_source_frames_the_resampling_names(tmp_path, fps, pts_ms):
    count = len(pts_ms) if pts_ms else 45
    path = write_video(tmp_path / "v.mp4", count, fps=fps, pts_ms=pts_ms)
    decoder = VideoDecoder(path, 30.0, 256, 224)
    seen, times = [], []
    for t, source_index, frames in decoder.chunks(max_frames=7):
        assert frames.shape[1:] == (224, 224, 3) and frames.dtype == np.uint8
        assert [frame_number(f) for f in frames] == source_index.tolist()
        seen += source_index.tolist()
        times += t.tolist()
    pts = np.array(pts_ms) / 1000 if pts_ms else np.arange(count) / fps
    assert len(seen) == len(decoder.resampling.times)
    assert seen == expected_source_index(pts, 30.0, len(seen))
    np.testing.assert_allclose(times, np.arange(len(seen)) / 30)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"hello, this is text", "cannot decode"),
    (bytes(range(256)) * 64, "cannot decode"),
])
def test_bad_files_raise_a_one_line_reason(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=reason) as e:
        VideoDecoder(path, 30.0, 256, 224)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fps", [25, 30, 60])
def test_dropping_the_read_ahead_at_keyframes_still_gives_the_named_frames(tmp_path, monkeypatch, fps):
    import pipeline.video

    monkeypatch.setattr(pipeline.video, "MIN_SEGMENT_FRAMES", 4)
    monkeypatch.setattr(pipeline.video, "MAX_SEGMENT_FRAMES", 12)
    monkeypatch.setattr(pipeline.video, "DECODE_BATCH", 5)
    monkeypatch.setattr(pipeline.video, "READ_AHEAD_BUDGET", 0)  # drop at every keyframe cut
    path = write_video(tmp_path / "v.mp4", 60, fps=fps, keyframe_every=10)
    decoder = VideoDecoder(path, 30.0, 256, 224)
    drops = []
    drop = decoder._drop_read_ahead
    monkeypatch.setattr(decoder, "_drop_read_ahead", lambda: drops.append(1) or drop())
    seen = []
    for _, source_index, frames in decoder.chunks(max_frames=7):
        assert [frame_number(f) for f in frames] == source_index.tolist()
        seen += source_index.tolist()
    assert seen == decoder.resampling.source_index.tolist()
    assert len(drops) >= 2


def test_a_reader_that_is_never_kept_waiting_is_dropped_once_only(tmp_path, monkeypatch):
    import pipeline.video

    monkeypatch.setattr(pipeline.video, "MIN_SEGMENT_FRAMES", 4)
    monkeypatch.setattr(pipeline.video, "MAX_SEGMENT_FRAMES", 12)
    path = write_video(tmp_path / "v.mp4", 60, keyframe_every=10)
    decoder = VideoDecoder(path, 30.0, 256, 224)
    drops = []
    drop = decoder._drop_read_ahead
    monkeypatch.setattr(decoder, "_drop_read_ahead", lambda: drops.append(1) or drop())
    assert sum(len(t) for t, _, _ in decoder.chunks(max_frames=7)) == 60
    assert len(drops) == 1  # the first cut, before the caller's pace is known


def test_a_video_without_keyframes_to_cut_at_is_cut_at_the_segment_cap(tmp_path, monkeypatch):
    import pipeline.video

    monkeypatch.setattr(pipeline.video, "MIN_SEGMENT_FRAMES", 4)
    monkeypatch.setattr(pipeline.video, "MAX_SEGMENT_FRAMES", 9)
    path = write_video(tmp_path / "v.mp4", 40, keyframe_every=1000)  # one keyframe, at the start
    decoder = VideoDecoder(path, 30.0, 256, 224)
    assert [(a, b, k) for a, b, k in decoder._segments()] == [(0, 9, False), (9, 18, False), (18, 27, False),
                                                             (27, 36, False), (36, 40, False)]
    seen = [n for _, source_index, frames in decoder.chunks(max_frames=4) for n in map(frame_number, frames)]
    assert seen == list(range(40))


def test_a_cut_at_the_segment_cap_never_splits_a_repeated_source_frame(tmp_path, monkeypatch):
    import pipeline.video

    monkeypatch.setattr(pipeline.video, "MIN_SEGMENT_FRAMES", 4)
    monkeypatch.setattr(pipeline.video, "MAX_SEGMENT_FRAMES", 9)
    path = write_video(tmp_path / "v.mp4", 48, fps=24, keyframe_every=1000)  # at 30 fps, every 4th frame repeats
    decoder = VideoDecoder(path, 30.0, 256, 224)
    source = decoder.resampling.source_index
    segments = list(decoder._segments())
    assert segments[0][0] == 0 and segments[-1][1] == len(source)
    assert all(a < b and b == c for (a, b, _), (c, _, _) in zip(segments, segments[1:]))
    # decord would go back to the keyframe to decode a frame it has just given
    assert all(source[b] != source[b - 1] for _, b, _ in segments[:-1])
    seen = [n for _, _, frames in decoder.chunks(max_frames=4) for n in map(frame_number, frames)]
    assert seen == source.tolist()


def test_a_video_marked_rotated_is_decoded_upright(tmp_path):
    image = np.zeros((240, 320, 3), np.uint8)
    image[:, :160] = 200  # left half light
    image[:40, :, 1] = 255  # a green band along the top
    path = rotate_90_on_display(write_video(tmp_path / "phone.mp4", [image] * 3))
    decoder = VideoDecoder(path, 30.0, 256, 224)
    assert decoder.source_size == (240, 320)  # as displayed: portrait
    _, _, frames = next(decoder.chunks(max_frames=3))
    frame = frames[0].astype(int)
    # Turned clockwise: the light left half is now the top, the green top band the right edge.
    assert frame[:100, :180, 0].mean() > 190 and frame[130:, :180, 0].mean() < 10
    assert frame[:, -12:, 1].mean() > 240 and frame[120:, -12:, 0].mean() < 10
