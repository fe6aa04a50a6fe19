"""Every common codec and container: the stored frames are those a plain sequential decode shows at
each k / 30, and the features those of torchvision's own transforms on FFmpeg's RGB frames.

The reference is independent of the pipeline's code: PyAV decodes every frame in order and turns it
into RGB with FFmpeg's swscale (`frame.to_ndarray(format="rgb24")`), the frame on screen at k / 30 is
picked by the definition from those frames' own times, and AlexNet_Weights.IMAGENET1K_V1.transforms()
prepares it. The clips (tests/formats.py) have sharp colour edges and are small (176x144, enlarged
to 256), the content on which resizing in the decoder was 3-4e-2 off.
"""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from formats import (ANIMATIONS, CUTS, FORMATS, X264_B, Format, corrupted_copies, scene, strip_first_timestamps,
                     write_clip, write_cut)

import pipeline
from pipeline.cli import main
from pipeline.features import FeatureExtractor, load_state_dict
from pipeline.preprocess import to_crops
from pipeline.video import VideoError, VideoReader, open_container

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    for f in FORMATS:
        (folder / "all").mkdir(exist_ok=True)
        write_clip(folder / "all", f)
    return folder / "all"


def reference(path, video=0):
    """(RGB frames in presentation order, source frame on screen at each k / 30) by a plain decode
    (of the file's first video stream, or of the `video`-th)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=video))
    rgb = np.stack([f.to_ndarray(format="rgb24") for f in frames])
    times = np.array([float(f.time) for f in frames])
    times -= times[0]
    duration = times[-1] + (times[-1] - times[-2])
    count = int(np.ceil(duration * 30 - 1e-6))
    shown = [int(np.flatnonzero(times <= k / 30 + 1e-6)[-1]) for k in range(count)]
    return rgb, shown


def transformed(rgb: np.ndarray) -> torch.Tensor:
    from torchvision.models import AlexNet_Weights

    return AlexNet_Weights.IMAGENET1K_V1.transforms()(torch.from_numpy(rgb).permute(0, 3, 1, 2))


def decode(path, handover):
    reader = VideoReader(path, 30.0, handover)
    index, crops = [], []
    for chunk in reader.chunks(16):
        index += chunk.source_index.tolist()
        crops.append(to_crops(chunk.frames.to_dict()))
    return index, torch.cat(crops)


@pytest.mark.parametrize("handover", ["rgb", "yuv"])  # rgb: a CPU box's path; yuv: a GPU box's (here on the CPU)
@pytest.mark.parametrize("name", [f.name for f in FORMATS])
def test_every_format_gives_the_frames_a_sequential_decode_shows_at_each_k_over_30(clips, name, handover):
    rgb, shown = reference(clips / name)
    index, crops = decode(clips / name, handover)
    assert index == shown
    expected = (transformed(rgb[shown]) * STD + MEAN) * 255  # the reference crop, before normalisation
    difference = (crops.permute(0, 3, 1, 2).float() - expected).abs()
    # swscale's fixed-point colour conversion against torch's float one: a few levels at most
    assert difference.max() <= (1.5 if handover == "rgb" else 4.5), difference.max()


@pytest.mark.parametrize("f", ANIMATIONS, ids=lambda f: f.name)
def test_animated_gif_and_apng_give_their_frames_at_each_k_over_30(tmp_path, f):
    path = write_clip(tmp_path, f)
    rgb, shown = reference(path)
    for handover in ("rgb", "yuv"):
        index, crops = decode(path, handover)
        assert index == shown
        expected = (transformed(rgb[shown]) * STD + MEAN) * 255
        assert (crops.permute(0, 3, 1, 2).float() - expected).abs().max() <= 1.5


@pytest.mark.parametrize("name, source, start", CUTS, ids=[cut[0] for cut in CUTS])
def test_a_stream_cut_where_ffmpeg_cannot_decode_its_first_packets_gives_the_frames_it_decodes(
        tmp_path, name, source, start):
    path = write_cut(tmp_path, name, source, start)
    with av.open(str(path)) as container:
        packets = sum(1 for p in container.demux(video=0) if p.size)
    rgb, shown = reference(path)
    assert len(rgb) < packets  # (the clip is what it is meant to be: FFmpeg drops its first frames)
    for handover in ("rgb", "yuv"):
        index, crops = decode(path, handover)
        assert index == shown
        expected = (transformed(rgb[shown]) * STD + MEAN) * 255
        assert (crops.permute(0, 3, 1, 2).float() - expected).abs().max() <= (1.5 if handover == "rgb" else 4.5)


@pytest.fixture(scope="module")
def extracted(clips, tmp_path_factory, weights_file):
    cache = tmp_path_factory.mktemp("cache") / "cache"
    assert main(["extract", str(clips), "--out", str(cache), "--weights", str(weights_file), "--workers", "1"]) == 0
    return cache


def test_every_format_is_extracted_with_features_within_1e_2_of_torchvision(clips, extracted, weights_file):
    from torchvision.models import alexnet

    model = alexnet(weights=None)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    with pipeline.open_cache(extracted) as cache:
        assert sorted(v.split("/")[-1] for v in cache.video_ids) == sorted(f.name for f in FORMATS)
        for video_id in cache.video_ids:
            rgb, shown = reference(clips / video_id)
            assert cache.source_index(video_id).tolist() == shown
            every = slice(0, None, 8)  # enough rows to see an error, few enough for a 2-core CI
            with torch.inference_mode():
                ref = model.eval()(transformed(rgb[shown][every])).numpy()
            ours = cache.features(video_id)[every]
            relative = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
            assert relative.max() < 1e-2, (video_id, relative.max())


def test_the_gpu_path_conversion_keeps_features_within_1e_2_too(clips, weights_file):
    """On a GPU box the frames cross as YUV planes and are converted by torch: same check, on the CPU."""
    extractor = FeatureExtractor.create(load_state_dict(weights_file), torch.device("cpu"))
    for f in FORMATS:
        rgb, shown = reference(clips / f.name)
        _, crops = decode(clips / f.name, "yuv")
        ours = extractor(crops[::13]).numpy()
        with torch.inference_mode():
            ref = extractor.model(transformed(rgb[shown][::13]).contiguous(memory_format=torch.channels_last)).numpy()
        relative = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
        assert relative.max() < 1e-2, (f.name, relative.max())


def test_a_raw_stream_without_any_timestamps_is_timed_by_its_frame_durations(tmp_path):
    path = write_clip(tmp_path, Format("raw.h264", "libx264", "yuv420p", container="h264", options=X264_B))
    with av.open(str(path)) as container:
        assert all(frame.pts is None for frame in container.decode(video=0))  # nothing to go by but durations
    index, _ = decode(path, "rgb")
    assert index == list(range(40))  # 40 frames at 30 fps, each on screen once


@pytest.mark.parametrize("clock", [1.4, 3600.0])  # ffmpeg's TS start; a broadcast recording an hour in
def test_ts_frames_before_the_first_timestamp_end_where_it_starts(tmp_path, clock):
    f = Format("timed.ts", "libx264", "yuv420p", options=X264_B, frames=45,
               container_options={"output_ts_offset": str(clock)})
    timed = write_clip(tmp_path, f)
    untimed = tmp_path / "untimed.ts"
    untimed.write_bytes(timed.read_bytes())
    strip_first_timestamps(untimed, 5)
    with av.open(str(untimed)) as container:
        assert [frame.pts is None for frame in container.decode(video=0)][:6] == [True] * 5 + [False]
    index, crops = decode(untimed, "rgb")
    assert index == list(range(45))  # was 45 + 42 copies of frame 4 (1.4 s), or failed as damaged timestamps
    assert torch.equal(crops, decode(timed, "rgb")[1])


def test_damaged_copies_fail_with_a_one_line_reason_or_keep_their_timing(tmp_path):
    """Flipped and zeroed bytes: the decoder's reports of corrupt frames, errors once decoding has
    begun, and timestamps or frame counts the container contradicts fail the video; what passes has
    the clip's own timing. (A damaged byte that still parses as valid data changes pixels unseen by
    any decoder: 1 of 40 copies here. README, "What is checked".)"""
    good = write_clip(tmp_path, Format("clip.mp4", "libx264", "yuv420p", options=X264_B, frames=90))
    good_index, _ = decode(good, "rgb")
    outcomes = []
    for copy in corrupted_copies(good, 20):
        try:
            index, _ = decode(copy, "rgb")
        except VideoError as e:
            reason = str(e)
            assert "\n" not in reason and str(tmp_path) not in reason and "/" not in reason.split(":")[0]
            outcomes.append("failed")
        else:
            assert index == good_index
            outcomes.append("ok")
    assert outcomes.count("failed") >= 15  # most damage is seen: the decoder flags it


def ffmpeg_errors(path) -> list[str]:
    """The errors FFmpeg logs while a plain PyAV decode reads `path` to its end (or to its first failure),
    on one thread as the pipeline decodes (HEVC with threads parses damaged data otherwise: its rows
    run in parallel from the entry points in the slice header)."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            try:
                with open_container(path) as container:
                    container.streams.video[0].codec_context.thread_count = 1
                    for _ in container.decode(video=0):
                        pass
            except av.error.FFmpegError:
                pass
    finally:
        av.logging.set_level(level)
    return [message for severity, _, message in logs if severity <= av.logging.ERROR]


@pytest.mark.parametrize("f", [Format("clip.avi", "mjpeg", "yuvj422p"), Format("clip.mkv", "ffv1", "yuv420p"),
                               # (x265 on one thread writes the same file every time; with B-frames,
                               # copy 18 of seed 1 logs an error in a frame decoded before the first is shown)
                               Format("clip.mp4", "libx265", "yuv420p", options={
                                   "preset": "veryfast", "x265-params": "log-level=none:pools=none:frame-threads=1"})],
                         ids=["mjpeg", "ffv1", "hevc"])
def test_no_damaged_copy_is_stored_as_ok_when_ffmpeg_logs_an_error_decoding_it(tmp_path, f):
    """MJPEG, FFV1 and HEVC log damaged data and conceal it without flagging the frame corrupt: the
    log is read (it was silenced: 21 of 40 MJPEG copies and 36 of 40 FFV1 copies were stored as ok,
    with other frames). What passes is what FFmpeg decodes without a word."""
    good = write_clip(tmp_path, f)
    outcomes = []
    for seed in (0, 1):
        for copy in corrupted_copies(good, 20, seed):
            try:
                decode(copy, "rgb")
            except VideoError as e:
                assert "\n" not in str(e) and str(tmp_path) not in str(e)
                outcomes.append("failed")
            else:
                assert ffmpeg_errors(copy) == [], (seed, copy.name)
                outcomes.append("ok")
    assert outcomes.count("failed") >= 10  # (the test sees damage at all)


def test_a_truncated_sei_message_is_skipped_not_taken_for_damage(tmp_path):
    """H.264's decoder logs an error for an SEI message whose size runs past its NAL unit, skips it,
    and decodes the pictures untouched: the video is as without it (the H.264 decoder's own log lines
    are not read; it flags the frames it conceals damage in)."""
    good = write_clip(tmp_path, Format("sei.mp4", "libx264", "yuv420p", options=X264_B, frames=30))
    with av.open(str(good)) as container:
        packet = next(p for p in container.demux(video=0) if p.size)
        position, data = packet.pos, bytes(packet)
    at = 0
    while data[at + 4] & 0x1F != 6:  # NAL units with 4-byte sizes: find the SEI (x264 writes its settings there)
        at += 4 + int.from_bytes(data[at:at + 4], "big")
    size = at + 6  # after the NAL header and the payload type (5: user data)
    while data[size] == 0xFF:
        size += 1
    damaged = bytearray(good.read_bytes())
    damaged[position + size] = min(254, data[size] + 100)
    bad = tmp_path / "sei_too_long.mp4"
    bad.write_bytes(bytes(damaged))
    assert any("SEI" in line for line in ffmpeg_errors(bad))
    (good_index, good_crops), (index, crops) = decode(good, "rgb"), decode(bad, "rgb")
    assert index == good_index and torch.equal(crops, good_crops)


def test_a_damaged_audio_header_does_not_fail_the_video(tmp_path):
    """FFmpeg probes the audio as it opens a file and logs an error for a damaged audio header: the
    video is as without it (errors are read only from the video's own decoder and the demuxer)."""
    good = tmp_path / "av.ts"
    with av.open(str(good), "w", format="mpegts") as container:
        video, audio = container.add_stream("libx264", rate=30), container.add_stream("mp2", rate=48000)
        video.width, video.height, video.pix_fmt, video.options = 176, 144, "yuv420p", dict(X264_B)
        audio.layout = "stereo"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(scene(i, 176, 144), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            sound = av.AudioFrame.from_ndarray(np.zeros((2, 1600), np.float32), format="fltp", layout="stereo")
            sound.sample_rate, sound.pts = 48000, i * 1600
            for packet in [*video.encode(frame), *audio.encode(sound)]:
                container.mux(packet)
        for packet in [*video.encode(), *audio.encode()]:
            container.mux(packet)
    data = bytearray(good.read_bytes())
    with av.open(str(good)) as container:
        first = next(p for p in container.demux(audio=0) if p.size).pos
    sync = data.index(b"\xff", first + 4)  # the first MPEG audio frame header in that TS packet's payload
    data[sync:sync + 12] = bytes(b ^ 0xFF for b in data[sync:sync + 12])
    bad = tmp_path / "audio_damaged.ts"
    bad.write_bytes(bytes(data))
    assert ffmpeg_errors(bad)  # (the case is what it is meant to be: the audio header's error, at opening)
    (good_index, good_crops), (index, crops) = decode(good, "rgb"), decode(bad, "rgb")
    assert index == good_index and torch.equal(crops, good_crops)


@pytest.mark.parametrize("name", ["vp9.webm", "ffv1.mkv", "h264_open_gop_long.mkv"])
def test_an_unfinished_matroska_recording_keeps_its_whole_frames(tmp_path, name):
    """A recording cut off (a crash, an interrupted download): Matroska's demuxer logs "File ended
    prematurely" as it meets the end, which is not damage to the frames before it."""
    whole = write_clip(tmp_path, next(f for f in FORMATS if f.name == name))
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.77)])
    rgb, shown = reference(cut)
    index, crops = decode(cut, "rgb")
    assert index == shown and len(shown) >= 20
    expected = (transformed(rgb[shown]) * STD + MEAN) * 255
    assert (crops.permute(0, 3, 1, 2).float() - expected).abs().max() <= 1.5


def write_mp4_with_sound(path, movflags: str):
    """45 frames of H.264 and AAC in an MP4 written with `movflags` (fragmented, as OBS records
    crash-safe, or with its index first, as web video is served)."""
    with av.open(str(path), "w", options={"movflags": movflags}) as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 176, 144, "yuv420p"
        video.options = {"preset": "ultrafast", "x264-params": "bframes=0:keyint=10"}
        audio = container.add_stream("aac", rate=16000)
        for i in range(45):
            frame = av.VideoFrame.from_ndarray(scene(i, 176, 144), format="rgb24")
            frame.pts = i
            packets = video.encode(frame)
            if i % 2 == 0:
                sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                sound.sample_rate, sound.pts = 16000, i // 2 * 1024
                packets += audio.encode(sound)
            for packet in packets:
                container.mux(packet)
        for packet in [*video.encode(), *audio.encode()]:
            container.mux(packet)
    return path


@pytest.mark.parametrize("share", [0.5, 0.7, 0.9])
def test_a_cut_off_fragmented_mp4_recording_keeps_its_whole_frames_and_an_indexed_copy_fails(tmp_path, share):
    """Cut inside a sample, MP4's demuxer reads it short and flags it corrupt, then logs "partial file"
    for the next (while opening, for a file this short). A fragmented recording (OBS's crash-safe
    format) keeps its whole frames, as an unfinished Matroska one does; an MP4 whose index lists the
    frames it lost is an incomplete copy, and fails saying so."""
    whole = write_mp4_with_sound(tmp_path / "recording.mp4", "frag_keyframe+empty_moov+default_base_moof")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * share)])
    (whole_index, whole_crops), (index, crops) = decode(whole, "rgb"), decode(cut, "rgb")
    assert len(index) >= 45 * share - 8 and index == whole_index[:len(index)]
    assert torch.equal(crops, whole_crops[:len(index)])
    if share == 0.9:  # cut inside the last sample: read short, then the end (no "partial file")
        cut.write_bytes(whole.read_bytes()[:-150])
        index, crops = decode(cut, "rgb")
        assert len(index) >= 43 and index == whole_index[:len(index)] and torch.equal(crops, whole_crops[:len(index)])
    indexed = write_mp4_with_sound(tmp_path / "download.mp4", "faststart")
    cut.write_bytes(indexed.read_bytes()[:int(indexed.stat().st_size * share)])
    with pytest.raises(VideoError, match=r"^the file is cut off: \d+ of the 45 frames its index lists are in it"):
        decode(cut, "rgb")


def test_a_fragment_whose_samples_the_index_places_past_the_end_fails_as_damaged(tmp_path):
    """Not a cut: whole fragments follow. The demuxer logs "partial file" as for a cut (while opening,
    for a file this short), but no packet was read short, so the file is damaged, not unfinished."""
    import struct

    whole = write_mp4_with_sound(tmp_path / "recording.mp4", "frag_keyframe+empty_moov+default_base_moof")
    data = bytearray(whole.read_bytes())
    runs = [k for k in range(len(data)) if data[k:k + 4] == b"trun"]
    middle = runs[len(runs) // 2]
    data[middle + 12:middle + 16] = struct.pack(">i", len(data) + 1000)  # its data offset, past the end
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data)
    with pytest.raises(VideoError, match=r"^damaged container"):
        decode(damaged, "rgb")
    decode(whole, "rgb")  # (then a cut file in the same process: judged by its own packets alone)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.5)])
    decode(cut, "rgb")
    with pytest.raises(VideoError, match=r"^damaged container"):
        decode(damaged, "rgb")


def test_a_file_without_video_says_what_it_holds(tmp_path):
    from test_reliability import write_audio_only

    write_audio_only(tmp_path / "song.mp4")
    with pytest.raises(VideoError, match=r"no video stream \(the file holds only audio\)"):
        VideoReader(tmp_path / "song.mp4", 30.0)


def add_cover_picture(container):
    """A PNG cover picture stream (album art, a thumbnail): FFmpeg shows it as a one-frame video stream."""
    import av

    cover = container.add_stream("png")
    cover.width, cover.height, cover.pix_fmt = 64, 64, "rgb24"
    cover.disposition = av.stream.Disposition.attached_pic
    return cover, av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")


def test_an_audio_file_with_a_cover_picture_is_not_taken_for_a_one_frame_video(tmp_path):
    path = tmp_path / "song.m4a.mp4"
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=16000)
        cover, picture = add_cover_picture(container)
        for packet in [*cover.encode(picture), *cover.encode()]:
            container.mux(packet)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        sound.sample_rate, sound.pts = 16000, 0
        for packet in [*audio.encode(sound), *audio.encode()]:
            container.mux(packet)
    with pytest.raises(VideoError, match=r"no video stream \(the file holds only audio, a cover picture\)"):
        VideoReader(path, 30.0)




def write_two_tracks(path, small_frames):
    """A camera's file: a 64x48 track first (a preview, or with one frame a thumbnail, which Matroska
    keeps as a plain video track), then the 176x144 main track, flagged default: the one FFmpeg's
    best-stream choice picks, as the ffmpeg tool, players and decord do."""
    with av.open(str(path), "w") as container:
        small = container.add_stream("libx264", rate=30)
        small.width, small.height, small.pix_fmt, small.disposition = 64, 48, "yuv420p", 0
        main = container.add_stream("libx264", rate=30)
        main.width, main.height, main.pix_fmt = 176, 144, "yuv420p"
        main.disposition = av.stream.Disposition.default
        for i in range(30):
            for stream in (main, small)[:1 + (i < small_frames)]:
                frame = av.VideoFrame.from_ndarray(scene(i, stream.width, stream.height), format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream in (main, small):
            for packet in stream.encode():
                container.mux(packet)
    return path


def test_a_default_track_ffmpeg_cannot_decode_leaves_the_one_it_can(tmp_path):
    from pipeline.decord_video import open_video

    path = write_two_tracks(tmp_path / "two.mp4", small_frames=30)
    data = bytearray(path.read_bytes())  # the default (second) track's codec: a tag FFmpeg does not know
    second = data.index(b"avc1", [k for k in range(len(data)) if data[k:k + 4] == b"stsd"][1])
    data[second:second + 4] = b"zzzz"
    path.write_bytes(data)
    for reader in (VideoReader(path, 30.0), open_video(path, 30.0, "rgb", "decord")):
        assert next(reader.chunks()).frames.planes[0].shape[1:3] == (48, 64)


@pytest.mark.parametrize("name, small_frames", [("preview_first.mp4", 30), ("thumbnail_first.mkv", 1)])
def test_the_main_video_track_is_read_not_a_smaller_track_placed_first(tmp_path, name, small_frames):
    from pipeline.decord_video import open_video

    path = tmp_path / name
    write_two_tracks(path, small_frames)
    rgb, shown = reference(path, video=1)
    index, crops = decode(path, "rgb")
    assert index == shown
    expected = transformed(rgb[shown])
    np.testing.assert_allclose(crops.permute(0, 3, 1, 2).float(), (expected * STD + MEAN) * 255, atol=1.5)
    reader = open_video(path, 30.0, "rgb", "decord")  # decord reads FFmpeg's pick: the main track too
    assert next(reader.chunks()).frames.planes[0].shape[1:3] == (144, 176)


def write_size_change(path, sizes=((240, 160), (160, 240)), frames_each=12):
    """One H.264 stream whose picture size changes mid-stream (parameter sets in-band, as a phone
    recording its screen writes when it is turned): `frames_each` frames at each (width, height)."""
    options = {"preset": "ultrafast", "x264-params": "bframes=0:repeat-headers=1:annexb=1"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt, stream.options = *sizes[0], "yuv420p", options
        encoders = [stream.codec_context]
        for width, height in sizes[1:]:
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base, encoder.options = Fraction(1, 30), options
            encoders.append(encoder)
        for part, ((width, height), encoder) in enumerate(zip(sizes, encoders)):
            for i in range(part * frames_each, (part + 1) * frames_each):
                frame = av.VideoFrame.from_ndarray(scene(i, width, height), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 30)
                for packet in encoder.encode(frame):
                    packet.stream = stream
                    container.mux(packet)
            for packet in encoder.encode():
                packet.stream = stream
                container.mux(packet)


@pytest.mark.parametrize("handover", ["rgb", "yuv", "crop"])
def test_a_picture_size_change_mid_stream_resizes_each_frame_from_its_own_size(tmp_path, handover):
    path = tmp_path / "turned.mp4"
    write_size_change(path, sizes=((240, 160), (160, 240), (120, 80)))
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert sorted({f.shape for f in frames}) == [(80, 120, 3), (160, 240, 3), (240, 160, 3)]
    index, crops = decode(path, handover)
    assert index == list(range(36))
    expected = torch.cat([transformed(f[None]) for f in frames])
    np.testing.assert_allclose(crops.permute(0, 3, 1, 2).float(), (expected * STD + MEAN) * 255,
                               atol=1.5 if handover != "yuv" else 3.5)


# Each display matrix [a b; c d] and what the ffmpeg tool's autorotation makes of the picture (fftools:
# transpose, hflip and vflip, by the angle and the matrix's signs). Mirrored ones are a front camera's.
UPRIGHT = {
    (1, 0, 0, 1): lambda image: image,
    (0, 1, -1, 0): lambda image: np.rot90(image, -1),  # turned clockwise (portrait phone footage)
    (0, -1, 1, 0): lambda image: np.rot90(image, 1),
    (-1, 0, 0, -1): lambda image: np.rot90(image, 2),
    (-1, 0, 0, 1): lambda image: image[:, ::-1],  # mirrored left to right (FFmpeg: a rotation of 180)
    (1, 0, 0, -1): lambda image: image[::-1],
    (0, 1, 1, 0): lambda image: image.transpose(1, 0, 2),
    (0, -1, -1, 0): lambda image: np.rot90(image, -1)[::-1],
}


@pytest.mark.parametrize("matrix", list(UPRIGHT))
def test_every_display_matrix_turns_and_mirrors_the_picture_as_ffmpeg_does(tmp_path, matrix):
    from videos import set_display_matrix, write_video

    from pipeline.decord_video import open_video

    path = set_display_matrix(write_video(tmp_path / "phone.mp4", [scene(i, 176, 144) for i in range(3)]), *matrix)
    rgb, shown = reference(path)  # (PyAV's frames as coded)
    expected = transformed(np.stack([np.ascontiguousarray(UPRIGHT[matrix](f)) for f in rgb[shown]]))
    for handover, levels in (("rgb", 1.5), ("crop", 1.5), ("yuv", 3.5)):
        _, crops = decode(path, handover)
        np.testing.assert_allclose(crops.permute(0, 3, 1, 2).float(), (expected * STD + MEAN) * 255, atol=levels)
    if matrix[0] * matrix[3] - matrix[1] * matrix[2] < 0:  # mirrored: decord would turn it, so PyAV reads it
        assert isinstance(open_video(path, 30.0, "rgb", "decord"), VideoReader)


def test_a_clip_cut_from_a_long_gop_without_re_encoding_keeps_its_shown_frames(tmp_path):
    """`ffmpeg -ss T -c copy` (or a phone editor's quick export) keeps the packets from the keyframe
    before T, and an edit list hides the 75 before T: the container lists 105 samples for 30 shown."""
    from pipeline.decord_video import open_video

    path = tmp_path / "trimmed.mp4"
    with av.open(str(path), "w", options={"video_track_timescale": "600"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        stream.options = {"preset": "ultrafast", "x264-params": "bframes=2:keyint=90:min-keyint=90:scenecut=0"}
        stream.codec_context.time_base = Fraction(1, 600)
        for i in range(105):
            frame = av.VideoFrame.from_ndarray(scene(i, 176, 144), format="rgb24")
            frame.pts, frame.time_base = (i - 75) * 20, Fraction(1, 600)  # before 0: hidden by the edit list
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    rgb, shown = reference(path)
    assert len(rgb) == 30
    expected = (transformed(rgb[shown]) * STD + MEAN) * 255
    for reader in (VideoReader(path, 30.0, "crop"), open_video(path, 30.0, "rgb", "decord")):
        chunks = list(reader.chunks())
        crops = torch.cat([to_crops(chunk.frames.to_dict()) for chunk in chunks])
        assert np.concatenate([chunk.source_index for chunk in chunks]).tolist() == shown
        np.testing.assert_allclose(crops.permute(0, 3, 1, 2).float(), expected, atol=1.5)
