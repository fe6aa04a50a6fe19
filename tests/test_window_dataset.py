"""pipeline.WindowDataset: the cache's windows for your own models."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import pipeline
from pipeline import open_cache
from pipeline.windows import window_starts
from synthetic_cache import synthetic_settings, write_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    rng = np.random.default_rng(0)
    videos = {f"{label}/{i}.mp4": (label, rng.normal(size=(n, 1000)).astype(np.float32))
              for label, lengths in (("b_walk", (75, 20)), ("a_run", (60, 31))) for i, n in enumerate(lengths)}
    return write_cache(tmp_path_factory.mktemp("ds") / "cache", videos, synthetic_settings(1000))


def test_items_are_windows_of_the_features_and_the_label_index(cache):
    ds = pipeline.WindowDataset(cache, window=30, stride=15)
    assert ds.labels == ["a_run", "b_walk"]
    with open_cache(cache) as c:
        expected = sum(len(window_starts(c.num_frames(v), 30, 15)) for v in c.video_ids)
        assert len(ds) == expected
        for i in range(len(ds)):
            x, y = ds[i]
            video, start = ds.video_of(i)
            assert x.dtype == torch.float32 and x.shape == (30, 1000)
            assert ds.labels[y] == c.label(video)
            rows = c.features(video)[start:start + 30]
            np.testing.assert_array_equal(x[:len(rows)].numpy(), rows)
            np.testing.assert_array_equal(x[len(rows):].numpy(), np.repeat(rows[-1:], 30 - len(rows), 0))  # padding


def test_a_subset_of_videos_keeps_the_label_order_of_the_whole_cache(cache):
    only_walk = pipeline.WindowDataset(open_cache(cache), videos=["b_walk/0.mp4"])
    assert only_walk.labels == ["a_run", "b_walk"]
    assert {y for _, y in only_walk} == {1} and len(only_walk) == len(window_starts(75, 30, 15))
    with pytest.raises(KeyError):
        pipeline.WindowDataset(cache, videos=["nope.mp4"])


def test_it_feeds_a_dataloader_with_worker_processes(cache):
    ds = pipeline.WindowDataset(cache, window=10, stride=10)
    batches = list(DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0)))
    assert sum(len(y) for _, y in batches) == len(ds)
    assert batches[0][0].shape[1:] == (10, 1000)


def test_the_readme_example_trains_a_model_of_ones_own(cache):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(30 * 1000, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for x, y in DataLoader(pipeline.WindowDataset(cache), batch_size=8, shuffle=True):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
