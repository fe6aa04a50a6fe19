"""decord as the second decoder: the same frames as PyAV where the rule gives it the file, and PyAV
wherever decord is known or seen to be wrong."""

import os

import numpy as np
import pytest
from formats import CUTS, FORMATS, OPEN_GOP, X264_B, Format, corrupted_copies, write_clip, write_cut
from videos import frame_number, latin1_title, rotate_90_on_display, write_video

from pipeline.decord_video import FOR_DECORD, DecordReader, _check_timestamps, open_video
from pipeline.preprocess import to_crops
from pipeline.video import VideoError, VideoReader


# Files of the matrix that --decoder decord leaves to PyAV, and why
PYAV_EVEN_UNDER_DECORD = {
    "h264_10bit.mp4", "hevc_10bit.mkv", "hevc_12bit.mkv", "av1_10bit.mkv", "prores.mov",  # not 8-bit YUV
    "hevc_10bit_bt2020_640x360.mp4", "prores_422_10bit_854x480.mov", "cfhd.mov", "v210.mov",
    "svq1.mov",  # 8-bit, but 4:1:0
    "h264rgb.mkv",  # RGB
    "png_rgba.mov", "utvideo_rgb.avi", "qtrle.mov", "qtrle_argb.mov", "cinepak.avi", "msvideo1.avi",  # RGB
    "ffvhuff_rgb.avi", "zmbv.avi",  # RGB, and palette
    "raw_uyvy.avi", "raw_nv12.mkv",  # YUV, but packed or semi-planar
    "mpeg4.avi",  # no decord timestamps (AVI with B-frames)
    "ffv1_odd_size.mkv",  # an odd size (decord's RGB is 26 levels off there)
    "h264_interlaced.mkv",  # interlaced (decord's RGB is up to 166 levels off at moving colour edges)
    "mpeg2_interlaced_146.mov",  # the same, though its header does not say so (its first frame does)
    "mpeg4_bframes.mkv",  # open GOPs (FFmpeg's MPEG-4 encoder leaves its GOPs open)
}
# decord2 3.4 gave 4-channel frames 144 wide on the machine of earlier sessions, and gives RGB on an
# AMD EPYC: the reader checks the frames' shape and leaves such files to PyAV.
NOT_RGB_FROM_DECORD_ON_SOME_CPUS = {"h264_portrait.mp4"}


def crops_and_index(reader):
    index, crops = [], []
    for chunk in reader.chunks(16):
        index += chunk.source_index.tolist()
        crops.append(to_crops(chunk.frames.to_dict()).numpy())
    return index, np.concatenate(crops)


@pytest.mark.parametrize("name", [f.name for f in FORMATS if f.name.endswith(tuple(FOR_DECORD))])
def test_decord_gives_the_frames_pyav_gives_where_the_rule_picks_it(tmp_path, name):
    path = write_clip(tmp_path, next(f for f in FORMATS if f.name == name))
    reader = open_video(path, 30.0, "rgb", "decord")
    if name in PYAV_EVEN_UNDER_DECORD:
        assert isinstance(reader, VideoReader)
        return
    if name in NOT_RGB_FROM_DECORD_ON_SOME_CPUS and isinstance(reader, VideoReader):
        import decord

        assert decord.VideoReader(str(path), num_threads=1).get_batch([0]).asnumpy().shape[-1] != 3
        return
    assert isinstance(reader, DecordReader)
    index, crops = crops_and_index(reader)
    pyav_index, pyav_crops = crops_and_index(VideoReader(path, 30.0, "rgb"))
    assert index == pyav_index
    assert np.abs(crops.astype(int) - pyav_crops).max() <= 1


@pytest.mark.parametrize("name", [f.name for f in FORMATS if not f.name.endswith(tuple(FOR_DECORD))])
def test_other_containers_go_to_pyav_even_when_decord_is_asked_for(tmp_path, name):
    """MPEG transport and program streams, ASF/WMV (decord gave other pixels for WMV2), FLV, 3GP, MXF..."""
    path = write_clip(tmp_path, next(f for f in FORMATS if f.name == name))
    assert isinstance(open_video(path, 30.0, "rgb", "decord"), VideoReader)


@pytest.mark.parametrize("name, source, start", [cut for cut in CUTS if cut[0].endswith(tuple(FOR_DECORD))],
                         ids=[cut[0] for cut in CUTS if cut[0].endswith(tuple(FOR_DECORD))])
def test_a_stream_cut_where_ffmpeg_cannot_decode_its_first_packets_goes_to_pyav(tmp_path, name, source, start):
    """decord numbers the packets FFmpeg drops: each frame would come with an earlier frame's time."""
    path = write_cut(tmp_path, name, source, start)
    assert isinstance(open_video(path, 30.0, "rgb", "decord"), VideoReader)


def test_open_gops_go_to_pyav(tmp_path):
    """decord seeks to keyframes, and from an open GOP's its FFmpeg logs errors (DecoderLog: damage)."""
    path = write_clip(tmp_path, Format("open_gop.mkv", "libx264", "yuv420p", options=OPEN_GOP, frames=60))
    assert isinstance(open_video(path, 30.0, "rgb", "decord"), VideoReader)
    closed = write_clip(tmp_path, Format("closed_gop.mkv", "libx264", "yuv420p", options=X264_B, frames=60))
    with open_video(closed, 30.0, "rgb", "decord") as reader:
        assert isinstance(reader, DecordReader)


@pytest.mark.parametrize("starts, reason", [
    ([0.0, -1.02e14, 0.066], "no timestamps"),
    ([0.0, np.nan, 0.066], "no timestamps"),
    ([9.223e15, 9.223e15], "no timestamps"),  # (decord's other marker: 2- and 3-frame Matroska files)
    ([0.0, 0.066, 0.033], "backwards"),
    ([0.0, 0.033, 226.0], "past the video's length"),
])
def test_decord_timestamps_that_cannot_be_trusted_are_refused(starts, reason):
    with pytest.raises(VideoError, match=reason):
        _check_timestamps(np.array(starts), len(starts), 30.0)


def test_auto_is_pyav_and_decord_turns_rotated_video_upright_too(tmp_path):
    image = np.zeros((240, 320, 3), np.uint8)
    image[:, :160] = 200
    path = rotate_90_on_display(write_video(tmp_path / "phone.mp4", [image] * 3))
    assert isinstance(open_video(path, 30.0), VideoReader)
    _, crops = crops_and_index(open_video(path, 30.0, "rgb", "decord"))
    assert crops[0][:100, :180, 0].mean() > 190 and crops[0][130:, :180, 0].mean() < 10


def test_decord_frames_are_the_named_source_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", 40, fps=25)
    index, crops = crops_and_index(DecordReader(path, 30.0))
    assert [frame_number(c) for c in crops] == index


@pytest.mark.parametrize("raw, words", [
    ("[17:32:02] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:218: Check failed: "
     "avcodec_send_packet(dec_ctx_.get(), pkt.get()) >= 0 (-1094995529 vs. 0)\nStack trace: ...",
     "avcodec_send_packet failed: Invalid data found when processing input"),
    ("[13:01:15] /project/src/video/ffmpeg/threaded_decoder.cc:292: [13:01:15] /project/src/video/ffmpeg/"
     "threaded_decoder.cc:218: Check failed: avcodec_send_packet(dec_ctx_.get(), pkt.get()) >= 0 "
     "(-1094995529 vs. 0) Thread worker: Error sending packet.",
     "Error sending packet: Invalid data found when processing input"),
])
def test_decords_messages_lose_its_source_paths(raw, words):
    from pipeline.decord_video import _decord_words

    assert _decord_words(RuntimeError(raw)) == words


def test_damaged_copies_under_decord_fail_with_a_one_line_reason_or_give_pyavs_frames(tmp_path):
    """FFmpeg conceals damaged data and decord returns the frames without a word, but for its FFmpeg's
    log on stderr: read, it fails the video (32 of these 40 copies were stored as ok, other frames)."""
    good = write_clip(tmp_path, Format("clip.mp4", "libx264", "yuv420p", options=X264_B, frames=90))
    outcomes = []
    for seed in (0, 1):
        for copy in corrupted_copies(good, 20, seed):
            try:
                index, crops = crops_and_index(open_video(copy, 30.0, "rgb", "decord"))
            except VideoError as e:
                reason = str(e)
                assert "\n" not in reason and "/" not in reason and "Check failed" not in reason, reason
                outcomes.append("failed")
                continue
            pyav_index, pyav_crops = crops_and_index(VideoReader(copy, 30.0, "rgb"))  # (raises if PyAV sees damage)
            assert index == pyav_index and np.abs(crops.astype(int) - pyav_crops).max() <= 1
            outcomes.append("ok")
    assert outcomes.count("failed") >= 30


@pytest.mark.parametrize("order", ["first opened closes first", "last opened closes first"])
def test_decoder_log_reads_ffmpegs_lines_passes_on_the_rest_and_gives_stderr_back(capfd, order):
    from pipeline.decord_video import DecoderLog

    stderr = os.fstat(2)
    a, b = DecoderLog(), DecoderLog()
    os.write(2, b"[h264 @ 0x55ff2d11f040] error while decoding MB 9 7\nsomething else\n")
    os.write(2, b"[matroska,webm @ 0x55ff2d11f041] Error parsing frame sizes.\n\r 50%|#####     | 1/2")
    reports = ["h264: error while decoding MB 9 7", "matroska,webm: Error parsing frame sizes."]
    assert a.read() == reports and a.read() == []
    assert b.read() == reports  # (each reads from where it last read)
    for log in ((a, b) if order.startswith("first") else (b, a)):
        log.close()
    assert (os.fstat(2).st_ino, os.fstat(2).st_dev) == (stderr.st_ino, stderr.st_dev)
    err = capfd.readouterr().err
    assert err.count("something else") == 1 and err.count("50%") == 1 and "error while decoding" not in err


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_a_title_tag_that_is_not_utf8_does_not_fail_the_file(tmp_path, decoder):
    """PyAV 18 raises UnicodeDecodeError opening such a file unless told to ignore it; PyAV 19 no
    longer takes that argument (it reads the tag as surrogates), so the argument depends on the version."""
    path = latin1_title(write_video(tmp_path / "old_camera.mp4", 6))
    reader = open_video(path, 30.0, "rgb", decoder)
    assert isinstance(reader, DecordReader if decoder == "decord" else VideoReader)
    index, crops = crops_and_index(reader)
    assert index == list(range(6)) and [frame_number(c) for c in crops] == index
