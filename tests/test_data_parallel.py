"""Stage two at scale: streaming equals RAM mode, and data-parallel training with torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from synthetic_cache import order_task_videos, write_cache

import pipeline
from pipeline.train import TrainSettings, fit


def test_streaming_training_gives_the_same_model_as_ram_mode(tmp_path):
    cache = write_cache(tmp_path / "cache", order_task_videos(per_class=6))
    states = {}
    for mode in ("ram", "stream"):
        fit(TrainSettings(cache=str(cache), out=str(tmp_path / mode), epochs=3, hidden=32, data=mode), progress=False)
        states[mode] = torch.load(tmp_path / mode / "last.pt", weights_only=True)
    for name, tensor in states["ram"]["model"].items():
        torch.testing.assert_close(states["stream"]["model"][name], tensor, rtol=1e-4, atol=1e-5)
    assert states["ram"]["history"][-1]["val_video_acc"] == states["stream"]["history"][-1]["val_video_acc"]


def test_torchrun_with_two_processes_trains_one_run_that_learns(tmp_path):
    cache = write_cache(tmp_path / "cache", order_task_videos(per_class=16))
    env = {**os.environ, "PYTHONPATH": str(Path(pipeline.__file__).parent.parent)}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "pipeline", "train", str(cache), "--out", str(tmp_path / "run"), "--epochs", "30", "--hidden", "64", "--batch-size", "8",
         "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("best epoch") == 1  # rank 0 alone reports
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 30
    assert max(m["val_video_acc"] for m in history) >= 0.9
