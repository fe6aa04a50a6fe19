"""Extraction survives kill -9, bad files, a second writer, other settings and write errors."""

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
from videos import rotate_90_on_display, textured_frames, write_video

import pipeline
from pipeline.cache import CacheWriter, read_settings
from pipeline.cli import EXIT_ERROR, EXIT_SOME_FAILED, main


def extract_command(input_dir, cache, weights, *extra):
    return [sys.executable, "-m", "pipeline", "extract", str(input_dir), "--out", str(cache),
            "--weights", str(weights), "--workers", "1", "--batch-size", "8", *map(str, extra)]


def assert_cache_intact(cache):
    """Every video the index lists as ok opens with all its frames."""
    if not (cache / "settings.json").exists():  # killed before the cache was made
        assert not any(cache.glob("videos/*.h5"))
        return 0
    with pipeline.open_cache(cache) as c:
        for video_id in c.video_ids:
            assert c.features(video_id).shape == (c.num_frames(video_id), 1000)
            assert len(c.timestamps(video_id)) == c.num_frames(video_id)
        return len(c.video_ids)


def test_kill_9_at_random_moments_loses_no_finished_video_and_a_rerun_equals_a_clean_run(tmp_path, weights_file):
    for i in range(8):
        write_video(tmp_path / "in" / f"class{i % 2}" / f"v{i}.mp4", textured_frames(15, seed=i), fps=25)
    main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "clean"), "--weights", str(weights_file),
          "--workers", "0", "--batch-size", "8"])

    cache, rng, done_before = tmp_path / "killed", random.Random(0), 0
    for _ in range(3):
        process = subprocess.Popen(extract_command(tmp_path / "in", cache, weights_file),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        done = assert_cache_intact(cache)
        assert done >= done_before  # nothing finished is ever lost
        done_before = done
    finished = subprocess.run(extract_command(tmp_path / "in", cache, weights_file), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr

    index_lines = [json.loads(line) for line in (cache / "index.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in index_lines) == sorted(set(r["id"] for r in index_lines))  # each video once
    assert not list(cache.glob("videos/*.tmp-*"))
    with pipeline.open_cache(tmp_path / "clean") as clean, pipeline.open_cache(cache) as resumed:
        assert resumed.video_ids == clean.video_ids
        for video_id in clean.video_ids:
            np.testing.assert_allclose(resumed.features(video_id), clean.features(video_id), rtol=1e-4, atol=1e-4)


def test_a_second_writer_on_the_same_cache_is_refused(tmp_path, capsys, weights_file):
    write_video(tmp_path / "in" / "x" / "a.mp4", 10)
    main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--weights", str(weights_file),
          "--workers", "0"])
    capsys.readouterr()
    with CacheWriter(tmp_path / "cache", read_settings(tmp_path / "cache")):  # the first writer, still running
        code = main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--weights", str(weights_file),
                     "--workers", "0"])
    assert code == EXIT_ERROR and "another `pipeline extract` is writing" in capsys.readouterr().err


def write_audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for i in range(10):
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# The FFmpeg under PyAV: 9 and later decode animated WebP (PyAV 19, which pip gives Python 3.12 and later)
FFMPEG_DECODES_ANIMATED_WEBP = int(re.match(r"\D*(\d+)", av.ffmpeg_version_info).group(1)) >= 9


def make_bad_inputs(folder):
    from PIL import Image

    folder.mkdir(parents=True)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    good = write_video(folder.parent.parent / "whole.mp4", 30).read_bytes()
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(folder / "image.png")
    os.rename(folder / "image.png", folder / "image.mp4")
    (folder / "text.mp4").write_text("just some text\n")
    write_audio_only(folder / "audio.mp4")
    # an animated WebP (what web scrapes hold as .webp, or renamed): FFmpeg before 9 sees a still image
    # and cannot decode its frames; FFmpeg 9 (PyAV 19, on Python 3.12 and later) decodes them: two frames
    # of 0.1 s, six at 30 fps (test_bad_files_are_reported_one_by_one_and_the_good_ones_are_kept)
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(
        folder / "anim.webp", save_all=True, duration=100, loop=0,
        append_images=[Image.fromarray(np.full((48, 64, 3), 150, np.uint8))])
    os.rename(folder / "anim.webp", folder / "webp.mp4")
    return {"empty.mp4": "empty file", "random.mp4": "not a readable video container",
            "truncated.mp4": "not a readable video container", "image.mp4": "not a video: a still image",
            "text.mp4": "not a readable video container", "audio.mp4": "no video stream (the file holds only audio)",
            **({} if FFMPEG_DECODES_ANIMATED_WEBP else {"webp.mp4": "an animated WebP"})}


def test_bad_files_are_reported_one_by_one_and_the_good_ones_are_kept(tmp_path, weights_file):
    expected = make_bad_inputs(tmp_path / "in" / "bad")
    write_video(tmp_path / "in" / "good" / "ok.mp4", 12)
    run = subprocess.run(extract_command(tmp_path / "in", tmp_path / "cache", weights_file),
                         capture_output=True, text=True)
    assert run.returncode == EXIT_SOME_FAILED
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    for name, reason in expected.items():
        assert f"failed: bad/{name}: {reason}" in run.stdout
    info = json.loads(subprocess.run([sys.executable, "-m", "pipeline", "info", str(tmp_path / "cache"), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    status = {v["id"]: (v["status"], v["error"]) for v in info["videos"]}
    assert status["good/ok.mp4"] == ("ok", "")
    if FFMPEG_DECODES_ANIMATED_WEBP:
        assert status["bad/webp.mp4"] == ("ok", "")
        assert {v["id"]: v["frames"] for v in info["videos"]}["bad/webp.mp4"] == 6
    for name, reason in expected.items():
        assert status[f"bad/{name}"][0] == "failed" and reason in status[f"bad/{name}"][1]


def test_failed_videos_are_retried_by_a_later_run_unless_skip_failed(tmp_path, capsys, weights_file):
    (tmp_path / "in" / "x").mkdir(parents=True)
    (tmp_path / "in" / "x" / "late.mp4").write_bytes(b"")
    args = ["extract", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--weights", str(weights_file),
            "--workers", "0"]
    assert main(args) == EXIT_SOME_FAILED
    assert main(args + ["--skip-failed"]) == 0
    write_video(tmp_path / "in" / "x" / "late.mp4", 10)  # the file is fixed: a plain rerun picks it up
    assert main(args) == 0
    capsys.readouterr()
    with pipeline.open_cache(tmp_path / "cache") as c:
        assert c.video_ids == ["x/late.mp4"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_reported(tmp_path, capsys, weights_file):
    path = write_video(tmp_path / "in" / "x" / "locked.mp4", 10)
    path.chmod(0)
    code = main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--weights", str(weights_file),
                 "--workers", "0"])
    assert code == EXIT_SOME_FAILED and "permission" in capsys.readouterr().out


def test_odd_but_valid_videos_succeed(tmp_path, capsys, weights_file):
    write_video(tmp_path / "in" / "odd" / "one frame.mp4", 1)
    write_video(tmp_path / "in" / "odd" / "odd size.mp4", [np.full((17, 33, 3), 120, np.uint8)] * 5)
    write_video(tmp_path / "in" / "odd" / "portrait.mp4", textured_frames(5, width=48, height=96))
    rotate_90_on_display(write_video(tmp_path / "in" / "odd" / "rotated.mp4", textured_frames(6, width=96, height=48)))
    write_video(tmp_path / "in" / "vidéos à part" / "clip ünïcode 映像.mp4", 8)
    code = main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--weights", str(weights_file),
                 "--workers", "0"])
    assert code == 0, capsys.readouterr()
    with pipeline.open_cache(tmp_path / "cache") as c:
        assert c.num_frames("odd/one frame.mp4") == 1
        assert c.num_frames("odd/odd size.mp4") == 5
        assert c.num_frames("odd/portrait.mp4") == 5
        assert c.num_frames("odd/rotated.mp4") == 6
        assert c.label("vidéos à part/clip ünïcode 映像.mp4") == "vidéos à part"


def _limit_file_size():
    # Files may not grow past 1 MB: the 'disk' fills up after a few videos. Ignoring SIGXFSZ turns
    # the kill the kernel would send into an EFBIG write error, as a full disk gives ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))


def test_a_write_error_stops_with_a_clear_message_and_keeps_the_finished_videos(tmp_path, weights_file):
    write_video(tmp_path / "in" / "x" / "a_short.mp4", textured_frames(10))
    write_video(tmp_path / "in" / "x" / "b_long.mp4", textured_frames(300), fps=30)  # 1.2 MB of features
    # --workers 0: the limit would also stop the workers' shared-memory hand-over of frames
    command = extract_command(tmp_path / "in", tmp_path / "cache", weights_file) + ["--workers", "0"]
    run = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300)
    assert run.returncode == EXIT_ERROR, run.stderr
    assert "cannot write to the cache" in run.stderr and "Traceback" not in run.stderr
    assert assert_cache_intact(tmp_path / "cache") == 1


@pytest.mark.parametrize("lost_part", [0, 1, 4])  # the first, a middle one, the last (40 frames: parts of 8)
def test_a_video_whose_frames_do_not_all_arrive_from_its_worker_fails_and_the_others_are_kept(
        tmp_path, monkeypatch, lost_part, weights_file):
    """A worker's queue drops an item it cannot send (multiprocessing's feeder thread prints the error
    and goes on), as when /dev/shm is full: the video once was stored without those frames, as ok."""
    write_video(tmp_path / "in" / "a" / "lossy.mp4", 40)
    write_video(tmp_path / "in" / "b" / "whole.mp4", 40)
    from pipeline.extract import Decoding

    items = Decoding.__iter__

    def dropping(self):  # the transfer fault, not the code under test: video 0's item number `lost_part` is lost
        sent = 0
        for item in items(self):
            if item["video"] == 0:
                sent += 1
                if sent - 1 == lost_part:
                    continue
            yield item

    monkeypatch.setattr(Decoding, "__iter__", dropping)
    code = main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--weights", str(weights_file),
                 "--workers", "0", "--batch-size", "8"])
    assert code == EXIT_SOME_FAILED
    with pipeline.open_cache(tmp_path / "cache") as c:
        assert c.video_ids == ["b/whole.mp4"] and c.num_frames("b/whole.mp4") == 40
    record = json.loads(next(
        line for line in (tmp_path / "cache" / "index.jsonl").read_text().splitlines() if "lossy" in line))
    assert record["status"] == "failed" and f"part {lost_part} of its frames never came" in record["error"]


@pytest.mark.parametrize("shm_mb", [20, 64])  # too small for one worker's chunks; Docker's default
def test_extract_in_a_small_dev_shm_stores_every_frame(tmp_path, shm_mb, weights_file, run_with_dev_shm):
    """With 64 MB and the default prefetch, one chunk in 36 of this set was lost."""
    for i in range(2):
        write_video(tmp_path / "in" / f"c{i}" / "v.mp4", textured_frames(200, width=1280, height=720, seed=i))
    command = " ".join(extract_command(tmp_path / "in", tmp_path / "cache", weights_file)).replace(
        "--batch-size 8", "--batch-size 64")
    run = run_with_dev_shm(command, shm_mb)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    with pipeline.open_cache(tmp_path / "cache") as c:
        assert [c.num_frames(v) for v in c.video_ids] == [200, 200]


GPU_BOX_DECODING = """
import sys, torch
from pipeline.extract import Decoding, ExtractOptions, gpu_box_slots
from pipeline.inputs import find_videos


def main():
    cpu = torch.device("cpu")
    slots = gpu_box_slots(2, cpu)  # as on a GPU box (there page-locked too)
    print("slots", slots and slots.buffer.shape[0], flush=True)
    decoding = Decoding(find_videos(sys.argv[1]), ExtractOptions(workers=2), 64, cpu, slots=slots)
    frames, stored, chunks = {}, 0, 0
    try:
        for item in decoding:
            assert item["kind"] == "chunk", item
            stored, chunks = stored + ("stored" in item["decoded"]), chunks + 1
            assert "stored" in item["decoded"] or item["decoded"]["kind"] == "crop"  # (too big for a slot: crops)
            frames[item["video"]] = frames.get(item["video"], 0) + len(decoding.crops(item["decoded"]))
    finally:
        decoding.close()
    print("frames", sorted(frames.values()), "chunks", chunks, "through slots", stored)


if __name__ == "__main__":  # (where workers start by spawn or forkserver, Python 3.14's default, they import this)
    main()
"""


def test_a_gpu_box_in_docker_s_default_dev_shm_decodes_in_its_workers_through_slots(tmp_path, run_with_dev_shm):
    """Docker's 64 MB /dev/shm: the GPU box's 32 MB slots did not fit, nor did its chunks travel the
    DataLoader's way, so the whole box decoded in its main process, on one core (a warning said so).
    Smaller slots keep every worker decoding. A frame bigger than a slot (4K 10-bit goes whole, as 25 MB
    of RGB) crosses as crops made in the worker: as a tensor it found /dev/shm full, and the lost item
    stalled the workers until the DataLoader's timeout. Run on the CPU: page-locking is left out."""
    for i in range(2):
        write_video(tmp_path / "in" / f"c{i}" / "v.mp4", 45, width=1280, height=720)  # (content does not matter)
    for i in range(2):
        (tmp_path / "in" / f"hdr{i}").mkdir()
        with av.open(str(tmp_path / "in" / f"hdr{i}" / "v.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt, stream.options = 3840, 2160, "yuv420p10le", {"preset": "ultrafast"}
            for level in (60, 120, 180):
                frame = av.VideoFrame.from_ndarray(np.full((2160, 3840, 3), level, np.uint8), format="rgb24")
                for packet in stream.encode(frame.reformat(format="yuv420p10le")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    script = tmp_path / "decode.py"
    script.write_text(GPU_BOX_DECODING)
    run = run_with_dev_shm(f"{sys.executable} {script} {tmp_path / 'in'}", 64)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "in this process instead" not in run.stderr and "Traceback" not in run.stderr
    assert "slots 2\n" in run.stdout and "frames [3, 3, 45, 45]" in run.stdout
    chunks, stored = (int(run.stdout.split(word)[1].split()[0]) for word in ("chunks", "through slots"))
    assert stored >= 2 * 45 // 10 and chunks == stored + 2 * 3  # 720p in slots (10 frames of 4:4:4 each), 4K as crops


def test_slots_whose_space_another_process_took_are_not_made(run_with_dev_shm):
    """Ranks of torchrun started at the same moment each see the same free space in /dev/shm; the
    later ones find it gone. They go on without slots (a traceback before)."""
    script = ("import torch; from pipeline.pinned_slots import PinnedSlots; "
              "print('slots', PinnedSlots.fitting(7, 32 << 20, torch.device('cpu'), free=200 << 20))")
    run = run_with_dev_shm(f"{sys.executable} -c \"{script}\"", 64)  # half of the 200 MB it thinks free: 7 x 14 MB
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "slots None"
