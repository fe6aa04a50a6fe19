"""Feature caches made of numbers instead of videos, for the stage-two tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.cache import CacheWriter


def synthetic_settings(feature_dim: int = 16, **changes) -> dict:
    settings = {"format_version": 1, "feature_dim": feature_dim, "dtype": "float32", "fps": 30.0,
                "model": "synthetic", "layer": "none"}
    settings.update(changes)
    return settings


def write_cache(path: Path, videos: dict[str, tuple[str, np.ndarray]], settings: dict | None = None) -> Path:
    """A cache at `path` holding videos {id: (label, (T, D) features)}."""
    settings = settings or synthetic_settings(next(iter(videos.values()))[1].shape[1])
    with CacheWriter(path, settings) as cache:
        for video_id, (label, features) in videos.items():
            writer = cache.begin_video(video_id, label, f"/videos/{video_id}.mp4", 30.0, len(features) / 30)
            n = len(features)
            writer.append(features.astype(settings["dtype"]), np.arange(n) / 30.0, np.arange(n))
            writer.commit()
    return path


def order_task_videos(per_class: int = 16, feature_dim: int = 16, seed: int = 0) -> dict[str, tuple[str, np.ndarray]]:
    """Two classes that only the ORDER of frames tells apart: "forward" videos cycle through ten
    random vectors v1..v10, "backward" ones through v10..v1, each vector held 3 frames, from a random
    phase, plus noise. Any 30-frame window holds the same frames, 3 of each vector, in either class."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(10, feature_dim)) * 2.0 + 5.0  # an offset and scale that normalisation must fix
    videos = {}
    for label, order in (("forward", np.arange(10)), ("backward", np.arange(10)[::-1])):
        cycle = np.repeat(order, 3)  # 30 frames
        for i in range(per_class):
            length = int(rng.integers(45, 91))
            steps = cycle[(np.arange(length) + rng.integers(30)) % 30]
            features = vectors[steps] + rng.normal(scale=0.5, size=(length, feature_dim))
            videos[f"{label}/{i:02d}.mp4"] = (label, features.astype(np.float32))
    return videos
