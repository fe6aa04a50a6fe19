"""`pipeline extract` and `pipeline info` end to end: real decoding (PyAV), real AlexNet (random-init
weights saved to a file, since pretrained ones cannot be downloaded here), real HDF5."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from videos import decoded_rgb_frames, textured_frames, write_video

import pipeline
from pipeline.cli import EXIT_ERROR, EXIT_SOME_FAILED, main

IMAGENET_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "left" / "a.mp4", textured_frames(20, seed=1), fps=25)
    write_video(root / "left" / "deeper" / "b.mp4", textured_frames(25, seed=2), fps=30000 / 1001)
    write_video(root / "right" / "c.mp4", textured_frames(30, seed=3), fps=60)
    (root / "right" / "notes.txt").write_text("not a video: ignored by extension")
    return root


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def info_json(capsys, cache):
    code, out, _ = run_cli(capsys, "info", cache, "--json")
    assert code == 0
    return json.loads(out)


def reference_features(state_dict_path, video_path, source_index):
    """An independent reference: PyAV's sequential decode to RGB (FFmpeg's swscale), torchvision's own
    transforms, AlexNet."""
    from torchvision.models import AlexNet_Weights, alexnet

    model = alexnet(weights=None)
    model.load_state_dict(torch.load(state_dict_path, weights_only=True))
    frames = np.stack(decoded_rgb_frames(video_path))[np.asarray(source_index)]
    batch = AlexNet_Weights.IMAGENET1K_V1.transforms()(torch.from_numpy(frames).permute(0, 3, 1, 2))
    with torch.inference_mode():
        return model.eval()(batch).numpy()


def test_extract_a_folder_labels_videos_by_their_folder_and_stores_every_frame_at_30_fps(
        tmp_path, capsys, video_folder, weights_file):
    cache = tmp_path / "cache"
    code, out, _ = run_cli(capsys, "extract", video_folder, "--out", cache, "--weights", weights_file, "--workers", 0)
    assert code == 0, out
    videos = {v["id"]: v for v in info_json(capsys, cache)["videos"]}
    assert {k: (v["label"], v["status"]) for k, v in videos.items()} == {
        "left/a.mp4": ("left", "ok"), "left/deeper/b.mp4": ("deeper", "ok"), "right/c.mp4": ("right", "ok")}
    # 20 frames at 25 fps = 0.8 s; 25 at 29.97 = 0.834 s; 30 at 60 = 0.5 s
    assert {k: v["frames"] for k, v in videos.items()} == {"left/a.mp4": 24, "left/deeper/b.mp4": 26, "right/c.mp4": 15}
    with pipeline.open_cache(cache) as c:
        times = c.timestamps("left/a.mp4")
        np.testing.assert_allclose(times, np.arange(24) / 30)
        assert c.source_index("left/a.mp4")[:7].tolist() == [0, 0, 1, 2, 3, 4, 5]
        assert c.source_index("right/c.mp4")[:4].tolist() == [0, 2, 4, 6]
        assert c.features("right/c.mp4").shape == (15, 1000)
        assert c.features("right/c.mp4").dtype == np.float32


def test_stored_features_match_torchvision_on_the_frame_on_screen_within_1e_2(
        tmp_path, capsys, video_folder, weights_file):
    cache = tmp_path / "cache"
    run_cli(capsys, "extract", video_folder, "--out", cache, "--weights", weights_file, "--workers", 0)
    with pipeline.open_cache(cache) as c:
        for video_id in c.video_ids:
            ours = c.features(video_id)
            ref = reference_features(weights_file, video_folder / video_id, c.source_index(video_id))
            relative = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
            assert relative.max() < 1e-2, (video_id, relative.max())


def test_the_reader_is_a_context_manager_with_ids_labels_and_settings(tmp_path, capsys, video_folder, weights_file):
    cache = tmp_path / "cache"
    run_cli(capsys, "extract", video_folder, "--out", cache, "--weights", weights_file, "--workers", 0)
    with pipeline.open_cache(cache) as c:
        assert c.video_ids == ["left/a.mp4", "left/deeper/b.mp4", "right/c.mp4"]
        assert c.label("right/c.mp4") == "right"
        assert c.settings["fps"] == 30.0 and c.settings["feature_dim"] == 1000
        assert c.settings["weights"]["sha256"] and c.settings["layer"] == "classifier.6"
        assert c.features("left/a.mp4", 3, 8).shape == (5, 1000)


def test_a_csv_manifest_gives_paths_relative_to_its_folder_and_its_labels(tmp_path, capsys, video_folder, weights_file):
    (tmp_path / "list.csv").write_text(f"path,label\n{video_folder}/left/a.mp4,waving\n../{tmp_path.name}/c.mp4,running\n")
    write_video(tmp_path / "c.mp4", 10)
    code, out, _ = run_cli(capsys, "extract", tmp_path / "list.csv", "--out", tmp_path / "cache",
                           "--weights", weights_file, "--workers", 0)
    assert code == 0, out
    labels = {v["id"]: v["label"] for v in info_json(capsys, tmp_path / "cache")["videos"]}
    assert sorted(labels.values()) == ["running", "waving"]


def test_a_manifest_path_that_does_not_exist_fails_as_missing_and_the_rest_is_done(tmp_path, capsys, weights_file):
    (tmp_path / "list.csv").write_text("path,label\nc.mp4,running\nnot_there.mp4,running\n")
    write_video(tmp_path / "c.mp4", 10)
    code, out, _ = run_cli(capsys, "extract", tmp_path / "list.csv", "--out", tmp_path / "cache",
                           "--weights", weights_file, "--workers", 0)
    assert code == EXIT_SOME_FAILED and "not_there.mp4: no such file" in out and "permission" not in out


def test_rerunning_skips_videos_already_done(tmp_path, capsys, video_folder, weights_file):
    cache = tmp_path / "cache"
    run_cli(capsys, "extract", video_folder, "--out", cache, "--weights", weights_file, "--workers", 0)
    files = sorted((cache / "videos").iterdir())
    before = [f.stat().st_mtime_ns for f in files]
    code, out, _ = run_cli(capsys, "extract", video_folder, "--out", cache, "--weights", weights_file, "--workers", 0)
    assert code == 0 and "0 videos extracted" in out and "3 already done" in out
    assert [f.stat().st_mtime_ns for f in files] == before


def test_decoding_in_worker_processes_gives_the_same_features(tmp_path, capsys, video_folder, weights_file):
    for workers in (0, 2):
        run_cli(capsys, "extract", video_folder, "--out", tmp_path / f"w{workers}", "--weights", weights_file,
                "--workers", workers, "--batch-size", 16)
    with pipeline.open_cache(tmp_path / "w0") as a, pipeline.open_cache(tmp_path / "w2") as b:
        assert a.video_ids == b.video_ids
        for video_id in a.video_ids:
            np.testing.assert_allclose(a.features(video_id), b.features(video_id), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device, message", [("gpu", "unknown device 'gpu'"), ("vulkan", "unsupported device"),
                                             ("cuda:7", "cuda:7")])
def test_a_wrong_device_is_a_bad_command_line_and_makes_no_cache(tmp_path, capsys, video_folder, weights_file, device,
                                                                 message):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(SystemExit) as exit:  # checked by argparse: status 2, the README's bad command line
        run_cli(capsys, "extract", video_folder, "--out", tmp_path / "c", "--weights", weights_file,
                "--device", device)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_when_the_decode_workers_die_the_videos_already_decoded_are_kept(tmp_path, weights_file):
    from pipeline.cache import CacheError, CacheWriter
    from pipeline.extract import ExtractOptions, ExtractSummary, _ExtractLoop, cache_settings
    from pipeline.features import FeatureExtractor, resolve_weights
    from pipeline.inputs import VideoSource

    state_dict, identity = resolve_weights(str(weights_file))
    sources = [VideoSource(f"x/{name}.mp4", tmp_path / f"{name}.mp4", "x") for name in ("done", "half")]

    def items():  # what the DataLoader hands over, then its error when a worker is killed
        for number, frames, last in ((0, 12, True), (1, 5, False)):
            yield {"kind": "chunk", "video": number, "first": True, "last": last, "duration": 1.0,
                   "source_fps": 30.0, "frames_total": 12, "times": torch.arange(frames) / 30.0,
                   "source_index": torch.arange(frames), "frames": torch.zeros(frames, 224, 224, 3, dtype=torch.uint8)}
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed.")

    with CacheWriter(tmp_path / "cache", cache_settings(identity, ExtractOptions())) as cache:
        loop = _ExtractLoop(sources, cache, FeatureExtractor.create(state_dict, torch.device("cpu")), 32,
                            ExtractSummary(cache=str(tmp_path / "cache")), progress=False)
        with pytest.raises(CacheError, match="decoding workers stopped.*every video finished before this is kept"):
            loop.run(items())
    with pipeline.open_cache(tmp_path / "cache") as c:
        assert c.video_ids == ["x/done.mp4"] and c.features("x/done.mp4").shape == (12, 1000)


def test_cnn_batches_hold_exactly_the_batch_size_whatever_the_chunk_sizes():
    from pipeline.extract import _Batcher

    def chunk(video, first_frame, n, last):
        times = torch.arange(first_frame, first_frame + n)
        return {"video": video, "first": first_frame == 0, "last": last, "times": times,
                "source_index": times.clone(), "frames": times.view(-1, 1, 1, 1).expand(n, 2, 2, 3)}

    batcher, batches = _Batcher(8), []
    for c in [chunk(0, 0, 5, False), chunk(0, 5, 7, True), chunk(1, 0, 3, False), chunk(1, 3, 10, True)]:
        batcher.add(c)
        while batcher.full():
            batches.append(batcher.take())
    batches.append(batcher.take())  # what is left at the end
    assert [sum(len(c["times"]) for c in b) for b in batches] == [8, 8, 8, 1]
    parts = [c for b in batches for c in b]
    for video, frames in ((0, 12), (1, 13)):
        mine = [c for c in parts if c["video"] == video]
        assert torch.cat([c["frames"][:, 0, 0, 0] for c in mine]).tolist() == list(range(frames))
        assert torch.cat([c["times"] for c in mine]).tolist() == list(range(frames))
        assert [c["last"] for c in mine] == [False] * (len(mine) - 1) + [True]
        assert [c["first"] for c in mine] == [True] + [False] * (len(mine) - 1)


def test_lanes_on_a_cpu_give_the_features_of_one_forward():
    """On a CPU the extractor runs forwards at once, each on its share of the batch; the rows must
    come back in the batch's order, whatever the chunks' sizes, also with fewer rows than lanes."""
    from pipeline.features import FeatureExtractor, cpu_lanes, default_batch_size

    g = torch.Generator().manual_seed(0)
    chunks = [torch.randint(0, 256, (n, 224, 224, 3), dtype=torch.uint8, generator=g) for n in (3, 0, 1, 6)]
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    one = FeatureExtractor.create(None, cpu)
    for lanes in (2, 3, 4):
        split = FeatureExtractor.create(None, cpu, lanes=lanes)
        torch.testing.assert_close(split(chunks), one(chunks), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(split(chunks[2:3]), one(chunks[2:3]), rtol=1e-4, atol=1e-4)  # 1 row, 3 lanes
        # started before the batches before them are read (extract keeps one in flight; here three,
        # the third in the first one's buffer)
        batches = [chunks, chunks[::-1], chunks[3:]]
        pending = [split.start(b) for b in batches]
        for b, p in zip(batches, pending):
            np.testing.assert_allclose(p.numpy(), one(b).numpy(), rtol=1e-4, atol=1e-4)
        split.close()
    assert torch.get_num_threads() == threads  # the lanes set their own threads' counts
    openmp = "parallel backend: OpenMP" in torch.__config__.parallel_info()
    assert (cpu_lanes(2, 32), cpu_lanes(16, 32), cpu_lanes(8, 4)) == ((2, 4, 1) if openmp else (1, 1, 1))
    # by default each lane gets 32 rows (AlexNet's single-threaded forward is slower on fewer), at most 256 in all
    assert [default_batch_size(cpu, n) for n in (1, 2, 16)] == ([32, 64, 256] if openmp else [32, 32, 32])
    assert default_batch_size(torch.device("cuda"), 2) == 512


def test_the_summary_says_when_the_first_batch_was_computed(tmp_path, video_folder, weights_file):
    """Benchmarks of short runs report the rate after the start-up (bench_extract.py)."""
    from pipeline.extract import ExtractOptions, extract
    from pipeline.inputs import find_videos

    summary = extract(find_videos(video_folder), tmp_path / "cache",
                      ExtractOptions(weights=str(weights_file), batch_size=16, workers=0, progress=False))
    assert summary.frames > 32 and summary.startup_frames == 16
    assert 0 < summary.startup_seconds < summary.seconds and summary.rate_after_startup() > 0


def test_a_bad_video_is_recorded_as_failed_and_the_rest_still_done(tmp_path, capsys, weights_file):
    write_video(tmp_path / "in" / "x" / "good.mp4", 12)
    (tmp_path / "in" / "x" / "bad.mp4").write_text("this is not a video")
    code, out, err = run_cli(capsys, "extract", tmp_path / "in", "--out", tmp_path / "cache",
                             "--weights", weights_file, "--workers", 0)
    assert code == EXIT_SOME_FAILED
    assert "failed: x/bad.mp4: not a readable video container" in out and "Traceback" not in err
    videos = {v["id"]: v for v in info_json(capsys, tmp_path / "cache")["videos"]}
    assert videos["x/good.mp4"]["status"] == "ok"
    assert videos["x/bad.mp4"]["status"] == "failed" and videos["x/bad.mp4"]["error"].startswith("not a readable video container")


def test_other_settings_on_an_existing_cache_are_refused_and_change_nothing(tmp_path, capsys, weights_file):
    write_video(tmp_path / "in" / "x" / "a.mp4", 12)
    cache = tmp_path / "cache"
    run_cli(capsys, "extract", tmp_path / "in", "--out", cache, "--weights", weights_file, "--workers", 0)
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    write_video(tmp_path / "in" / "x" / "b.mp4", 12)
    code, _, err = run_cli(capsys, "extract", tmp_path / "in", "--out", cache, "--weights", weights_file,
                           "--workers", 0, "--fps", 25)
    assert code == EXIT_ERROR and "fps: 30.0 (cache) != 25.0 (now)" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("change", ["missing layer", "wrong shape"])
def test_weights_that_do_not_fit_alexnet_are_refused_with_the_reason(tmp_path, capsys, weights_file, change):
    state = torch.load(weights_file, weights_only=True)
    if change == "missing layer":
        del state["classifier.6.weight"]
    else:
        state["features.0.weight"] = torch.zeros(8, 3, 11, 11)
    torch.save(state, tmp_path / "bad.pt")
    write_video(tmp_path / "in" / "x" / "a.mp4", 12)
    code, _, err = run_cli(capsys, "extract", tmp_path / "in", "--out", tmp_path / "cache", "--weights",
                           tmp_path / "bad.pt", "--workers", 0)
    assert code == EXIT_ERROR and "do not fit torchvision's AlexNet" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()


def test_imagenet_weights_load_from_the_file_torchvision_looks_for_in_torch_home(
        tmp_path, capsys, monkeypatch, weights_file):
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / IMAGENET_FILE).symlink_to(weights_file)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    write_video(tmp_path / "in" / "x" / "a.mp4", 10)
    for name, weights in (("imagenet", "imagenet"), ("file", weights_file)):
        code, _, _ = run_cli(capsys, "extract", tmp_path / "in", "--out", tmp_path / name, "--weights", weights,
                             "--workers", 0)
        assert code == 0
    with pipeline.open_cache(tmp_path / "imagenet") as a, pipeline.open_cache(tmp_path / "file") as b:
        assert a.settings["weights"]["name"] == "IMAGENET1K_V1"
        assert a.settings["weights"]["sha256"] == b.settings["weights"]["sha256"]
        np.testing.assert_array_equal(a.features("x/a.mp4"), b.features("x/a.mp4"))


def test_missing_imagenet_weights_stop_with_where_to_put_them_and_no_random_fallback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    write_video(tmp_path / "in" / "x" / "a.mp4", 10)
    code, _, err = run_cli(capsys, "extract", tmp_path / "in", "--out", tmp_path / "cache", "--workers", 0)
    assert code == EXIT_ERROR
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / IMAGENET_FILE) in err
    assert "--weights random" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()


def test_random_weights_are_only_had_by_asking_and_are_announced(tmp_path, capsys):
    write_video(tmp_path / "in" / "x" / "a.mp4", 10)
    code, _, err = run_cli(capsys, "extract", tmp_path / "in", "--out", tmp_path / "cache", "--weights", "random",
                           "--workers", 0)
    assert code == 0 and "RANDOM-INIT" in err
    assert info_json(capsys, tmp_path / "cache")["settings"]["weights"]["name"] == "random"


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_weights_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"features.0.weight": _RunsCode()}, f)
    write_video(tmp_path / "in" / "x" / "a.mp4", 10)
    code, _, err = run_cli(capsys, "extract", tmp_path / "in", "--out", tmp_path / "cache", "--weights", evil,
                           "--workers", 0)
    assert code == EXIT_ERROR and "refused" in err and "Traceback" not in err
    assert not (tmp_path / "pwned").exists()


def _safetensors_file(path, header_bytes: int = 0):
    """A safetensors file (an 8-byte header length, a JSON header, raw tensors), its header padded with
    spaces to `header_bytes` (128: the file's first byte is 0x80, as a pickle's is)."""
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * max(0, header_bytes - len(header))
    path.write_bytes(struct.pack("<Q", len(header)) + header + np.float32(2.5).tobytes())


def _write_unreadable_weights(path, kind):
    if kind == "text":
        path.write_text("hi\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "damaged pickle":
        path.write_bytes(b"\x80\x02hi")  # the weights-only unpickler raised KeyError: 105, a traceback
    elif kind == "cut short":  # the legacy format, cut: EOFError with no message, then an IndexError
        torch.save({"w": torch.zeros(8)}, path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:7])
    elif kind == "hdf5":
        import h5py

        with h5py.File(path, "w") as f:
            f["x"] = [1]
    else:
        torch.save(torch.nn.Linear(2, 2), path)


@pytest.mark.parametrize("kind, words", [
    ("text", "neither a zip archive nor a pickle"),
    ("empty", "an empty file"),
    ("damaged pickle", "a damaged file"),
    ("cut short", "cannot read as a PyTorch state dict"),
    ("hdf5", "an HDF5 file"),
    ("whole model", "torch.save(model.state_dict(), PATH)"),
])
def test_a_weights_file_torch_cannot_read_is_refused_in_one_line_with_the_reason(tmp_path, capsys, kind, words):
    """What users pass by mistake: no traceback, the reason, nothing made; the same loader reads checkpoints."""
    bad = tmp_path / "weights"
    _write_unreadable_weights(bad, kind)
    write_video(tmp_path / "in" / "x" / "a.mp4", 10)
    code, _, err = run_cli(capsys, "extract", tmp_path / "in", "--out", tmp_path / "cache", "--weights", bad,
                           "--workers", 0)
    assert code == EXIT_ERROR and words in err and str(bad) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "cache").exists()
    assert ("could run code" in err) == (kind == "whole model")  # only a class to build is code
    from pipeline.train import TrainError, load_checkpoint

    with pytest.raises(TrainError, match="cannot read as a checkpoint|refused to load"):
        load_checkpoint(bad)


@pytest.mark.parametrize("header_bytes", [0, 128])
def test_a_safetensors_file_is_read_with_safetensors_where_it_is_installed(tmp_path, header_bytes):
    """Told by its bytes, not its name (a 128-byte header makes the first byte a pickle's 0x80)."""
    from pipeline.features import WeightsError, load_state_dict

    path = tmp_path / "weights.bin"
    _safetensors_file(path, header_bytes)
    try:
        import safetensors  # noqa: F401
    except ImportError:
        with pytest.raises(WeightsError, match="a safetensors file; reading it needs the safetensors package"):
            load_state_dict(path)
    else:
        assert torch.equal(load_state_dict(path)["w"], torch.tensor([2.5]))


def test_float16_storage_halves_the_cache_and_keeps_the_features(tmp_path, capsys, weights_file):
    write_video(tmp_path / "in" / "x" / "a.mp4", textured_frames(10))
    for dtype in ("float32", "float16"):
        run_cli(capsys, "extract", tmp_path / "in", "--out", tmp_path / dtype, "--weights", weights_file,
                "--workers", 0, "--dtype", dtype)
    with pipeline.open_cache(tmp_path / "float32") as a, pipeline.open_cache(tmp_path / "float16") as b:
        half = b.features("x/a.mp4")
        assert half.dtype == np.float16
        np.testing.assert_allclose(half, a.features("x/a.mp4"), rtol=2e-3, atol=2e-3)


def test_frames_through_pinned_slots_are_the_frames_sent_directly(tmp_path):
    """A GPU box's workers write decoded planes into shared slots (pinned_slots.py); run here on the
    CPU. Workers cut their chunks to fit the slots; a frame bigger than a slot travels as a tensor."""
    from pipeline.extract import Decoding, ExtractOptions
    from pipeline.inputs import find_videos
    from pipeline.pinned_slots import PinnedSlots
    from pipeline.video import VideoReader

    write_video(tmp_path / "in" / "a" / "small.mp4", textured_frames(40, 320, 240, seed=1))
    write_video(tmp_path / "in" / "b" / "large.mp4", textured_frames(12, 640, 480, seed=2), fps=25)
    sources = find_videos(tmp_path / "in")
    options, cpu = ExtractOptions(workers=2), torch.device("cpu")

    def crops(slots):
        decoding, got, through_slots, chunks = Decoding(sources, options, 16, cpu, slots=slots), {}, 0, 0
        try:
            for item in decoding:
                assert item["kind"] == "chunk"
                chunks += 1
                if "decoded" in item:
                    through_slots += "stored" in item["decoded"]
                    # what does not fit a slot crosses as crops made in the worker, never as whole frames
                    assert "stored" in item["decoded"] or item["decoded"]["kind"] == "crop" or slots is None
                    item["frames"] = decoding.crops(item["decoded"])
                got.setdefault(item["video"], []).append(item["frames"])
        finally:
            decoding.close()
        return {v: torch.cat(c) for v, c in got.items()}, through_slots, chunks

    def frame_bytes(source):  # what one frame's planes (the crop's region) take
        with VideoReader(source.path, 30.0, "yuv") as reader:
            return sum(p[0].nbytes for p in next(reader.chunks(1)).frames.planes)

    small, large = (frame_bytes(s) for s in sources)
    direct, through_slots, chunks = crops(PinnedSlots(4, 8 << 20, cpu))  # chunks of 16 frames: every one fits
    assert through_slots == chunks == 3 + 1
    # Slots for 2 frames of 320x240, too small for one of 640x480: the small clip in chunks of 2, through
    # the slots; the large one a frame at a time, as crops made in the worker
    assert large > 2 * small + 1024
    small_slots, through_slots, chunks = crops(PinnedSlots(2, 2 * small + 1024, cpu))
    assert (through_slots, chunks) == (20, 20 + 12)
    # Slots for 16 frames of 320x240: the large clip cut to fit them
    cut, through_slots, chunks = crops(PinnedSlots(2, 16 * small + 1024, cpu))
    assert through_slots == chunks == 3 + -(-12 // (16 * small // large))
    assert direct.keys() == small_slots.keys() == cut.keys() == {0, 1}
    for v in direct:
        assert torch.equal(direct[v], small_slots[v]) and torch.equal(direct[v], cut[v])
    # and the same frames as the CPU box's workers send, to the rounding of the YUV conversion
    workers_crops, _, _ = crops(None)
    for v in direct:
        assert (direct[v].int() - workers_crops[v].int()).abs().max() <= 3


def test_slots_shrink_to_fit_a_small_dev_shm():
    """Docker's default /dev/shm of 64 MB: two slots of 12 MB in half of it, where the wanted 32 MB ones
    would leave a GPU box decoding in its main process, on one core."""
    from pipeline.pinned_slots import ALIGN, MAX_PLANES, MIN_SLOT_BYTES, PinnedSlots
    from pipeline.video import MAX_CHUNK_BYTES

    cpu = torch.device("cpu")
    # where there is room, gpu_box_slots' size carries whole chunks of MAX_CHUNK_BYTES
    full = PinnedSlots.fitting(7, MAX_CHUNK_BYTES + MAX_PLANES * ALIGN, cpu, free=1 << 30)
    assert full.buffer.shape[0] == 7 and full.chunk_bytes == MAX_CHUNK_BYTES
    for free, count, size in [(1 << 30, 7, 32 << 20), (64 << 20, 2, MIN_SLOT_BYTES), (200 << 20, 7, 100 // 7 << 20)]:
        slots = PinnedSlots.fitting(7, 32 << 20, cpu, free=free)
        assert slots.buffer.shape[0] == count and abs(slots.slot_bytes - size) < 1 << 20
        assert slots.buffer.numel() <= free // 2
    assert PinnedSlots.fitting(7, 32 << 20, cpu, free=40 << 20) is None  # not even two of MIN_SLOT_BYTES


def test_chunks_never_converted_give_their_slots_back(tmp_path):
    """The rest of a video that failed on the main side is discarded: were its slots kept, two slots
    would be gone after two chunks and the workers would wait for one forever."""
    import threading

    from pipeline.extract import Decoding, ExtractOptions
    from pipeline.inputs import find_videos
    from pipeline.pinned_slots import PinnedSlots

    write_video(tmp_path / "in" / "a" / "v.mp4", textured_frames(90, 64, 48, seed=1))
    slots = PinnedSlots(2, 1 << 20, torch.device("cpu"))
    decoding = Decoding(find_videos(tmp_path / "in"), ExtractOptions(workers=1), 8, torch.device("cpu"), slots=slots)
    seen = []

    def discard_all():
        for item in decoding:
            seen.append("stored" in item["decoded"])
            decoding.discard(item)

    reader = threading.Thread(target=discard_all, daemon=True)
    reader.start()
    reader.join(timeout=60)
    finished = not reader.is_alive()
    decoding.close()  # wakes a worker stuck for a slot, so a failing run ends too
    assert finished and len(seen) >= 10 and all(seen)
