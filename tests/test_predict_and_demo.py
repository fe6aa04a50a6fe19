"""`pipeline predict` and `pipeline demo`, end to end on tiny videos with random-init weights."""

import json

import numpy as np
import pytest
import torch
from videos import write_video

import pipeline.demo as demo
from pipeline.cli import EXIT_ERROR, EXIT_SOME_FAILED, main


def moving_square(direction: int, frames: int = 45, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x0, top = rng.integers(0, 96), rng.integers(0, 40)
    images = []
    for t in range(frames):
        image = np.full((72, 96, 3), 40, np.uint8)
        columns = (np.arange(24) + x0 + direction * 3 * t) % 96
        image[top:top + 24, columns] = 230
        images.append(image)
    return images


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    for i in range(4):
        write_video(root / "in" / "right" / f"r{i}.mp4", moving_square(+1, seed=i))
        write_video(root / "in" / "left" / f"l{i}.mp4", moving_square(-1, seed=10 + i))
    assert main(["extract", str(root / "in"), "--out", str(root / "cache"), "--weights", "random",
                 "--workers", "0"]) == 0
    assert main(["train", str(root / "cache"), "--out", str(root / "run"), "--epochs", "3"]) == 0
    return root


def test_predict_json_gives_a_label_and_labels_over_time_per_video(trained_run, capsys):
    new = write_video(trained_run / "new.mp4", moving_square(+1, frames=60, seed=99))
    capsys.readouterr()
    code = main(["predict", str(trained_run / "run"), str(new), "--json"])
    results = json.loads(capsys.readouterr().out)
    assert code == 0 and len(results) == 1
    r = results[0]
    assert r["video"] == str(new) and r["label"] in ("left", "right") and 0.5 <= r["probability"] <= 1
    assert [w["start"] for w in r["windows"]] == [0.0, 0.5, 1.0]  # 60 frames: windows at 0, 15, 30
    assert [w["end"] for w in r["windows"]] == [1.0, 1.5, 2.0]
    assert all(w["label"] in ("left", "right") and 0 <= w["probability"] <= 1 for w in r["windows"])


def test_predict_reports_a_bad_video_and_still_labels_the_good_one(trained_run, capsys):
    bad = trained_run / "bad.mp4"
    bad.write_text("not a video")
    good = write_video(trained_run / "good.mp4", moving_square(-1, seed=5))
    capsys.readouterr()
    code = main(["predict", str(trained_run / "run"), str(bad), str(good), "--json"])
    results = json.loads(capsys.readouterr().out)
    assert code == EXIT_SOME_FAILED
    assert results[0]["video"] == str(bad) and "not a readable video container" in results[0]["error"]
    assert results[1]["label"] in ("left", "right")


def test_predict_takes_folders_of_videos_as_extract_finds_them(trained_run, capsys):
    """A folder given stands for the videos under it (sorted, hidden files left out), a CSV manifest for
    those it lists, and a video given twice is labelled once; a folder with none, or a path that is
    neither, stops with one line before anything is decoded."""
    folder = trained_run / "new_folder"
    write_video(folder / "b" / "two.mp4", moving_square(-1, seed=7))
    write_video(folder / "a" / "one.mp4", moving_square(+1, seed=6))
    (folder / "notes.txt").write_text("not a video")
    (folder / "._one.mp4").write_bytes(b"\0" * 64)  # a Mac's AppleDouble sidecar
    single = write_video(trained_run / "single.mp4", moving_square(+1, seed=8))
    capsys.readouterr()
    (trained_run / "list.csv").write_text("path,label\nsingle.mp4,right\n")  # (its labels are read, not used)
    code = main(["predict", str(trained_run / "run"), str(folder), str(single), str(folder / "a" / "one.mp4"),
                 str(trained_run / "list.csv"), "--json"])
    results = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["video"] for r in results] == [str(folder / "a" / "one.mp4"), str(folder / "b" / "two.mp4"), str(single)]
    assert all(r["label"] in ("left", "right") for r in results)
    (trained_run / "empty_folder").mkdir()
    for path, words in ((trained_run / "empty_folder", "no video files found in this folder"),
                        (trained_run / "nothere", "no such video file or folder")):
        code = main(["predict", str(trained_run / "run"), str(path)])
        err = capsys.readouterr().err
        assert code == EXIT_ERROR and words in err and "Traceback" not in err


def test_predict_refuses_weights_other_than_the_training_caches(trained_run, tmp_path, capsys, weights_file):
    video = write_video(tmp_path / "v.mp4", moving_square(+1))
    capsys.readouterr()
    code = main(["predict", str(trained_run / "run"), str(video), "--weights", str(weights_file)])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "weights.name: 'random' (cache) != 'file' (now)" in err


def test_the_demo_runs_end_to_end_and_compares_with_an_order_blind_baseline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights_here"))
    monkeypatch.setattr(demo, "VIDEOS_PER_CLASS", 4)
    monkeypatch.setattr(demo, "HELDOUT_PER_CLASS", 2)
    monkeypatch.setattr(demo, "SECONDS", 1.0)
    code = main(["demo", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == 0
    assert "RANDOM-INIT" in out
    assert "LSTM (frame order)" in out and "mean + linear (no order)" in out
    assert (tmp_path / "out" / "run" / "curves.png").exists()
    assert len(list((tmp_path / "data" / "train").rglob("*.mp4"))) == 8
    assert len(list((tmp_path / "data" / "heldout").rglob("*.mp4"))) == 4
    assert "held-out videos" in out

    # Run again over the folder of an earlier version, whose defaults differ (no jitter then): the
    # demo's own run is trained anew, where a plain --resume would refuse the other settings.
    from pipeline.train import save_checkpoint

    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(tmp_path / "out" / "run" / name, weights_only=True)
        del checkpoint["settings"]["jitter"]
        save_checkpoint(tmp_path / "out" / "run" / name, checkpoint)
    code = main(["demo", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == 0 and "training it anew" in out and "held-out videos" in out
    assert torch.load(tmp_path / "out" / "run" / "last.pt", weights_only=True)["settings"]["jitter"] is True
