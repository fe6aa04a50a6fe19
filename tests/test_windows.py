import numpy as np
import pytest
import torch

from pipeline import open_cache
from pipeline.windows import (EpochBatches, RamBatches, StreamBatches, build_windows, cache_windows,
                              choose_data_mode, feature_stats, load_features, split_by_video, window_starts)
from synthetic_cache import synthetic_settings, write_cache


def numbered_videos(lengths: dict[str, int]) -> dict:
    """Videos whose frame features say where they come from: [video number, frame number, 0, ...]."""
    videos = {}
    for number, (video_id, n) in enumerate(lengths.items()):
        features = np.zeros((n, 4), dtype=np.float32)
        features[:, 0], features[:, 1] = number, np.arange(n)
        videos[video_id] = ("a" if number % 2 else "b", features)
    return videos


def test_windows_start_every_stride_frames_and_end_inside_the_video():
    assert window_starts(100, 30, 15).tolist() == [0, 15, 30, 45, 60]
    assert window_starts(30, 30, 15).tolist() == [0]
    assert window_starts(44, 30, 15).tolist() == [0]
    assert window_starts(45, 30, 15).tolist() == [0, 15]
    assert window_starts(100, 30, 30).tolist() == [0, 30, 60]
    assert window_starts(10, 3, 1).tolist() == list(range(8))


def test_a_video_shorter_than_a_window_gives_one_window_and_an_empty_video_none():
    assert window_starts(1, 30, 15).tolist() == [0]
    assert window_starts(29, 30, 15).tolist() == [0]
    assert window_starts(0, 30, 15).tolist() == []


def test_the_index_counts_windows_per_video_and_never_crosses_into_the_next_video():
    lengths = [100, 5, 0, 30, 61]
    w = build_windows(["a", "b", "c", "d", "e"], lengths, [0, 1, 0, 1, 0], window=30, stride=15)
    assert np.bincount(w.video, minlength=5).tolist() == [5, 1, 0, 1, 3]
    assert w.targets.tolist() == [0] * 5 + [1] + [1] + [0] * 3
    for video, start in zip(w.video, w.start):
        assert start + 30 <= lengths[video] or (start == 0 and lengths[video] < 30)


@pytest.mark.parametrize("mode", ["ram", "stream"])
def test_batches_hold_each_windows_own_frames_and_pad_short_videos_with_their_last_frame(tmp_path, mode):
    lengths = {"v0": 50, "v1": 1, "v2": 12, "v3": 31}
    cache = open_cache(write_cache(tmp_path / "cache", numbered_videos(lengths)))
    windows = cache_windows(cache, cache.video_ids, {"a": 0, "b": 1}, window=10, stride=7)
    batches = EpochBatches(windows, batch_size=4, shuffle=False)
    if mode == "ram":
        loader = RamBatches(*load_features(cache, cache.video_ids), windows, batches)
    else:  # one worker process: the cache is opened lazily in it
        loader = StreamBatches(cache, windows, batches, workers=1)
    x = torch.cat([xb for xb, _ in loader])
    y = torch.cat([yb for _, yb in loader])
    assert x.shape == (len(windows), 10, 4) and x.dtype == torch.float32
    assert y.tolist() == windows.targets.tolist()
    for i, (video, start) in enumerate(zip(windows.video, windows.start)):
        number = int(video_id_number(windows.ids[video]))
        n = lengths[windows.ids[video]]
        assert (x[i, :, 0] == number).all(), "a window holds frames of one video only"
        assert x[i, :, 1].tolist() == [min(start + k, n - 1) for k in range(10)]


def video_id_number(video_id: str) -> int:
    return int(video_id[1:])


def test_batches_are_shuffled_by_seed_and_epoch_alone():
    hundred = build_windows(["v"], [129], [0], window=30, stride=1)
    def order(seed, epoch):
        b = EpochBatches(hundred, 16, shuffle=True, seed=seed)
        b.set_epoch(epoch)
        return torch.cat([idx for idx, _ in b]).tolist()

    assert order(0, 3) == order(0, 3)
    assert order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)
    assert sorted(order(0, 3)) == list(range(100))
    assert len(EpochBatches(hundred, 16, shuffle=False)) == 7


def test_the_split_is_by_video_stratified_by_label_and_fixed_by_the_seed():
    ids = [f"v{i:02d}" for i in range(40)]
    labels = ["cat"] * 20 + ["dog"] * 10 + ["eel"] * 10
    train, val = split_by_video(ids, labels, val_fraction=0.2, seed=0)
    assert not set(train) & set(val) and sorted(train + val) == ids
    label_of = dict(zip(ids, labels))
    assert sorted(label_of[v] for v in val) == ["cat"] * 4 + ["dog"] * 2 + ["eel"] * 2
    assert split_by_video(ids, labels, 0.2, seed=0) == (train, val)
    assert split_by_video(ids, labels, 0.2, seed=1) != (train, val)
    assert split_by_video(list(reversed(ids)), list(reversed(labels)), 0.2, seed=0) == (train, val)


def test_every_class_keeps_a_training_video_and_is_validated_when_it_can_be():
    ids = ["a0", "b0", "b1", "c0", "c1", "c2"]
    labels = ["a", "b", "b", "c", "c", "c"]
    train, val = split_by_video(ids, labels, val_fraction=0.2, seed=0)
    assert "a0" in train
    assert sum(v.startswith("b") for v in val) == 1 and sum(v.startswith("c") for v in val) == 1
    train, val = split_by_video(ids, labels, val_fraction=0.9, seed=0)
    assert {v[0] for v in train} == {"a", "b", "c"}
    assert split_by_video(ids, labels, val_fraction=0.0, seed=0) == (sorted(ids), [])


def test_feature_stats_are_the_mean_and_std_of_all_frames():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(3.0, 2.0, size=(n, 5)) for n in (7, 1, 30)]
    mean, std = feature_stats(arrays)
    everything = np.concatenate(arrays)
    np.testing.assert_allclose(mean, everything.mean(0))
    np.testing.assert_allclose(std, everything.std(0))
    _, std = feature_stats([np.ones((4, 3))])
    assert (std > 0).all(), "a constant feature must not divide by zero"


def test_data_auto_holds_features_in_ram_only_when_they_fit(monkeypatch):
    monkeypatch.setattr("pipeline.windows.available_memory", lambda: 1_000_000_000)
    assert choose_data_mode("auto", num_frames=1000, feature_dim=1000) == "ram"  # 4 MB
    assert choose_data_mode("auto", num_frames=200_000, feature_dim=1000) == "stream"  # 800 MB
    assert choose_data_mode("ram", num_frames=200_000, feature_dim=1000) == "ram"
    assert choose_data_mode("stream", num_frames=10, feature_dim=1000) == "stream"


def test_a_float16_cache_is_read_as_float32(tmp_path):
    videos = numbered_videos({"v0": 40})
    cache = open_cache(write_cache(tmp_path / "cache", videos, synthetic_settings(4, dtype="float16")))
    features, offsets = load_features(cache, cache.video_ids)
    assert features.dtype == torch.float32 and features[:, 1].tolist() == list(range(40))


def test_the_reader_keeps_at_most_max_open_files_open_and_reads_the_same_after_evicting(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.cache.MAX_OPEN_FILES", 2)
    videos = numbered_videos({f"v{i}": 40 for i in range(5)})
    cache = open_cache(write_cache(tmp_path / "cache", videos))
    for _ in range(3):
        for vid in cache.video_ids:
            assert np.array_equal(cache.features(vid, 5, 35), videos[vid][1][5:35])
            assert len(cache._files) <= 2
    cache.close()
    assert not cache._files


def test_jitter_moves_each_training_window_within_its_stride_and_never_past_its_video():
    windows = build_windows(["a", "b", "c"], [100, 47, 12], [0, 1, 0], window=30, stride=15)
    latest = np.maximum(windows.lengths[windows.video] - 30, 0)

    def starts(epoch, jitter=True, seed=0):
        b = EpochBatches(windows, 4, shuffle=True, seed=seed, jitter=jitter)
        b.set_epoch(epoch)
        pairs = [(int(i), int(s)) for idx, start in b for i, s in zip(idx, start)]
        assert sorted(i for i, _ in pairs) == list(range(len(windows)))
        return np.array([s for _, s in sorted(pairs)])

    seen = np.stack([starts(epoch) for epoch in range(20)])
    assert (seen >= windows.start).all() and (seen < windows.start + 15).all() and (seen <= latest).all()
    assert len({tuple(row) for row in seen}) > 10  # other crops every epoch
    assert (seen.max(0) > windows.start)[latest > windows.start].all()  # every window that can move does
    assert (starts(3) == starts(3)).all() and (starts(3) != starts(3, seed=1)).any()  # by (seed, epoch) alone
    assert (starts(5, jitter=False) == windows.start).all()


@pytest.mark.parametrize("mode", ["ram", "stream"])
def test_jittered_batches_hold_each_windows_moved_frames_in_ram_and_streamed(tmp_path, mode):
    lengths = {"v0": 50, "v1": 1, "v2": 12, "v3": 31}
    cache = open_cache(write_cache(tmp_path / "cache", numbered_videos(lengths)))
    windows = cache_windows(cache, cache.video_ids, {"a": 0, "b": 1}, window=10, stride=7)
    batches = EpochBatches(windows, batch_size=4, shuffle=False, seed=3, jitter=True)
    if mode == "ram":
        loader = RamBatches(*load_features(cache, cache.video_ids), windows, batches)
    else:
        loader = StreamBatches(cache, windows, batches, workers=1)
    loader.set_epoch(2)
    expected = torch.cat([start for _, start in batches])  # the same epoch's starts, as the loader used them
    x = torch.cat([xb for xb, _ in loader])
    assert (expected != torch.as_tensor(windows.start)).any()
    for i, (video, start) in enumerate(zip(windows.video, expected.tolist())):
        n = lengths[windows.ids[video]]
        assert (x[i, :, 0] == int(video_id_number(windows.ids[video]))).all()
        assert x[i, :, 1].tolist() == [min(start + k, n - 1) for k in range(10)]
