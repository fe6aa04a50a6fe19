"""The CUDA path: run where a GPU is (benchmarks/gpu_check.sh runs it); skipped elsewhere."""

import numpy as np
import pytest
import torch
from videos import textured_frames, write_video

import pipeline
from pipeline.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-2), ("fp16", 1e-2), ("bf16", 5e-2)])
def test_cuda_features_match_the_cpu_ones(tmp_path, capsys, precision, tolerance):
    write_video(tmp_path / "in" / "x" / "a.mp4", textured_frames(20))
    write_video(tmp_path / "in" / "y" / "b.mp4", textured_frames(25, seed=3), fps=25)
    for device in ("cpu", "cuda"):
        assert main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / device), "--weights", "random",
                     "--device", device, "--precision", precision if device == "cuda" else "fp32",
                     "--workers", "2", "--batch-size", "7"]) in (0,)  # many batches: the GPU runs ahead
        capsys.readouterr()
    with pipeline.open_cache(tmp_path / "cpu") as cpu, pipeline.open_cache(tmp_path / "cuda") as gpu:
        for video_id in cpu.video_ids:
            a, b = gpu.features(video_id), cpu.features(video_id)
            assert (np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max() < tolerance


def test_training_and_evaluating_on_cuda(tmp_path, capsys):
    for i in range(3):
        write_video(tmp_path / "in" / "p" / f"{i}.mp4", textured_frames(40, seed=i))
        write_video(tmp_path / "in" / "q" / f"{i}.mp4", textured_frames(40, seed=10 + i)[::-1])
    assert main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--weights", "random"]) == 0
    assert main(["train", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--epochs", "2",
                 "--device", "cuda"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--device", "cuda", "--json"]) == 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_features_started_on_a_second_gpu_match_a_synchronous_run():
    from pipeline.features import FeatureExtractor

    extractor = FeatureExtractor.create(None, torch.device("cuda:1"))  # the current device stays cuda:0
    frames = [torch.randint(0, 256, (256, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              .pin_memory() for i in range(3)]
    pending = [extractor.start([f]) for f in frames]  # several batches queued before any is read
    for f, p in zip(frames, pending):
        np.testing.assert_allclose(p.numpy(), extractor([f]).cpu().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_extract_on_a_second_gpu_gives_the_first_gpus_features(tmp_path, capsys):
    write_video(tmp_path / "in" / "x" / "a.mp4", textured_frames(40))
    for device in ("cuda:0", "cuda:1"):
        assert main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / device.replace(":", "")), "--weights",
                     "random", "--device", device, "--workers", "1", "--batch-size", "7"]) == 0
    with pipeline.open_cache(tmp_path / "cuda0") as a, pipeline.open_cache(tmp_path / "cuda1") as b:
        np.testing.assert_allclose(a.features("x/a.mp4"), b.features("x/a.mp4"), rtol=1e-4, atol=1e-4)


def test_every_format_converted_and_resized_on_the_gpu_matches_the_cpu(tmp_path):
    """A GPU box's decode workers hand over YUV planes; the GPU's conversion and resize must give the
    CPU's crops (which tests/test_formats.py holds to torchvision's), to a level of rounding."""
    from formats import FORMATS, write_clip

    from pipeline.preprocess import to_crops
    from pipeline.video import VideoReader

    for f in FORMATS:
        for chunk in VideoReader(write_clip(tmp_path, f), 30.0, "yuv").chunks(16):
            frames = chunk.frames.to_dict()
            gpu, cpu = to_crops(frames, "cuda").cpu(), to_crops(frames, "cpu")
            assert (gpu.int() - cpu.int()).abs().max() <= 1, f.name
