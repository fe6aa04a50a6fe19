"""Stage one spread over processes: --shard i/N, torchrun, and joining the shards."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from videos import textured_frames, write_video

import pipeline
from pipeline.cli import main
from pipeline.inputs import VideoSource, assign_shard


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from torchvision.models import alexnet

    root = tmp_path_factory.mktemp("shards")
    torch.manual_seed(3)
    torch.save(alexnet(weights=None).state_dict(), root / "w.pth")
    for i in range(5):
        write_video(root / "in" / f"c{i % 2}" / f"v{i}.mp4", textured_frames(6 + 4 * i, seed=i))
    assert main(["extract", str(root / "in"), "--out", str(root / "single"), "--weights", str(root / "w.pth"),
                 "--workers", "0"]) == 0
    return root


def assert_same_cache(a, b):
    with pipeline.open_cache(a) as x, pipeline.open_cache(b) as y:
        assert x.video_ids == y.video_ids
        for video_id in x.video_ids:
            assert x.label(video_id) == y.label(video_id)
            np.testing.assert_allclose(x.features(video_id), y.features(video_id), rtol=1e-4, atol=1e-4)


def test_shards_split_every_video_once_balanced_by_size(tmp_path):
    sources = []
    for i, size in enumerate([100, 90, 50, 40, 30, 20, 10, 10]):
        path = tmp_path / f"{i}.mp4"
        path.write_bytes(b"x" * size)
        sources.append(VideoSource(id=path.name, path=path, label="a"))
    shards = [assign_shard(sources, i, 3) for i in range(3)]
    assert sorted(s.id for shard in shards for s in shard) == sorted(s.id for s in sources)
    loads = [sum(s.path.stat().st_size for s in shard) for shard in shards]
    assert max(loads) - min(loads) <= 20  # 350 bytes in 3 shards: 120, 120, 110
    assert shards == [assign_shard(sources, i, 3) for i in range(3)]  # the same split in every process


def test_shards_read_as_one_cache_and_join_into_a_plain_one(setup, tmp_path, capsys):
    cache = tmp_path / "cache"
    for shard in ("0/2", "1/2"):
        assert main(["extract", str(setup / "in"), "--out", str(cache), "--weights", str(setup / "w.pth"),
                     "--workers", "0", "--shard", shard]) == 0
    assert sorted(p.name for p in (cache / "shards").iterdir()) == ["0-of-2", "1-of-2"]
    assert_same_cache(cache, setup / "single")
    assert main(["join", str(cache)]) == 0
    assert "5 videos joined" in capsys.readouterr().out
    assert not (cache / "shards").exists()
    assert_same_cache(cache, setup / "single")
    assert main(["extract", str(setup / "in"), "--out", str(cache), "--weights", str(setup / "w.pth"),
                 "--workers", "0"]) == 0
    assert "0 videos extracted (0 frames in 0.0 s), 5 already done" in capsys.readouterr().out


def test_torchrun_with_two_processes_gives_the_same_cache_as_one(setup, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(pipeline.__file__).parent.parent)}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "pipeline", "extract", str(setup / "in"), "--out", str(tmp_path / "cache"),
         "--weights", str(setup / "w.pth"), "--workers", "1"],
        capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "cache" / "shards").iterdir()) == ["0-of-2", "1-of-2"]
    assert_same_cache(tmp_path / "cache", setup / "single")
