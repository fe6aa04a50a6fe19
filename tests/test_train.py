import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import open_cache
from pipeline.cli import main
from pipeline.train import TrainError, TrainSettings, fit, load_run, window_logits, write_atomic
from pipeline.windows import window_starts
from synthetic_cache import order_task_videos, synthetic_settings, write_cache

# Small enough to train in seconds on two cores, big enough to learn the order task.
QUICK = dict(hidden=32, lr=3e-3, batch_size=32, epochs=20)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A run trained on the order-only task: (cache folder, run folder, FitResult)."""
    root = tmp_path_factory.mktemp("order")
    cache = write_cache(root / "cache", order_task_videos(per_class=16))
    result = fit(TrainSettings(cache=str(cache), out=str(root / "run"), device="cpu", **QUICK), progress=False)
    return cache, root / "run", result


def small_cache(path: Path, **settings_changes) -> Path:
    videos = order_task_videos(per_class=6, feature_dim=8, seed=1)
    return write_cache(path, videos, synthetic_settings(8, **settings_changes))


def test_training_learns_a_task_that_only_the_order_of_frames_tells_apart(synthetic_run):
    _, run, result = synthetic_run
    assert result.best["val_video_acc"] >= 0.9
    assert result.best["val_window_acc"] >= 0.9
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in history] == list(range(1, QUICK["epochs"] + 1))
    assert {"train_loss", "train_acc", "val_loss", "val_window_acc", "val_video_acc"} <= set(history[0])
    for name in ("best.pt", "last.pt", "split.json", "curves.png", "confusion.png"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run.glob(".*tmp*")), "no temporary file is left behind"


def test_the_split_file_lists_disjoint_training_and_validation_videos(synthetic_run):
    cache, run, _ = synthetic_run
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])
    assert sorted(split["train"] + split["val"]) == open_cache(cache).video_ids
    assert {v.split("/")[0] for v in split["val"]} == {"forward", "backward"}


def test_normalisation_comes_from_the_training_videos_frames_only(synthetic_run):
    cache, run, _ = synthetic_run
    split = json.loads((run / "split.json").read_text())
    c = open_cache(cache)
    train_frames = np.concatenate([c.features(v) for v in split["train"]]).astype(np.float64)
    all_frames = np.concatenate([c.features(v) for v in c.video_ids]).astype(np.float64)
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    mean = checkpoint["normalization"]["mean"].double().numpy()
    np.testing.assert_allclose(mean, train_frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(checkpoint["normalization"]["std"].double().numpy(), train_frames.std(0), rtol=1e-4)
    assert not np.allclose(mean, all_frames.mean(0), rtol=1e-5)
    assert torch.equal(checkpoint["model"]["mean"], checkpoint["normalization"]["mean"]), "the model normalises itself"


def test_checkpoints_are_plain_dicts_that_load_with_weights_only(synthetic_run):
    cache, run, result = synthetic_run
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == QUICK["epochs"]
    assert checkpoint["labels"] == ["backward", "forward"]
    assert checkpoint["settings"]["hidden"] == QUICK["hidden"] and checkpoint["settings"]["window"] == 30
    assert checkpoint["feature_settings"] == open_cache(cache).settings
    assert {"model", "optimizer", "history", "best", "split"} <= set(checkpoint)
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == result.best["epoch"]


def test_a_checkpoint_that_would_run_code_is_refused(synthetic_run, tmp_path):
    _, run, _ = synthetic_run
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    checkpoint["extra"] = Path("not a tensor")  # pickled as a class: loading it calls code
    torch.save(checkpoint, tmp_path / "best.pt")
    with pytest.raises(TrainError, match="refused"):
        load_run(tmp_path)


def test_window_logits_score_every_window_of_a_video_as_in_training(synthetic_run):
    cache, run, _ = synthetic_run
    model, checkpoint = load_run(run)
    c = open_cache(cache)
    video = json.loads((run / "split.json").read_text())["val"][0]
    starts, logits = window_logits(model, checkpoint, c.features(video))
    assert starts.tolist() == window_starts(c.num_frames(video), 30, 15).tolist()
    assert logits.shape == (len(starts), 2)
    assert checkpoint["labels"][int(logits.mean(0).argmax())] == c.label(video)
    starts, logits = window_logits(model, checkpoint, c.features(video)[:5])
    assert starts.tolist() == [0] and logits.shape == (1, 2)


def test_evaluate_json_reports_accuracies_per_class_and_the_confusion_matrix(synthetic_run, capsys):
    _, run, result = synthetic_run
    assert main(["evaluate", str(run), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["labels"] == ["backward", "forward"]
    assert report["video_accuracy"] == pytest.approx(result.best["val_video_acc"])
    assert report["window_accuracy"] == pytest.approx(result.best["val_window_acc"])
    assert set(report["per_class"]) == {"backward", "forward"}
    assert {"precision", "recall", "support"} <= set(report["per_class"]["forward"])
    assert np.array(report["confusion"]).shape == (2, 2)
    val_videos = len(json.loads((run / "split.json").read_text())["val"])
    assert np.array(report["confusion"]).sum() == val_videos
    assert sum(c["support"] for c in report["per_class"].values()) == val_videos


def test_evaluate_on_a_cache_scores_every_video_of_it(synthetic_run, capsys):
    cache, run, _ = synthetic_run
    assert main(["evaluate", str(run), str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert np.array(report["confusion"]).sum() == len(open_cache(cache).video_ids)
    assert main(["evaluate", str(run), str(cache)]) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "confusion" in text


def test_evaluate_refuses_a_cache_made_with_other_feature_settings(synthetic_run, tmp_path, capsys):
    _, run, _ = synthetic_run
    other = write_cache(tmp_path / "other", order_task_videos(per_class=2), synthetic_settings(16, fps=25.0))
    assert main(["evaluate", str(run), str(other)]) == 1
    err = capsys.readouterr().err
    assert "fps" in err and "25.0" in err and "Traceback" not in err


def test_a_wrong_device_for_train_is_a_bad_command_line(synthetic_run, tmp_path, capsys):
    cache, _, _ = synthetic_run
    with pytest.raises(SystemExit) as exit:  # argparse's parser.error: status 2 (README, pipeline --help)
        main(["train", str(cache), "--out", str(tmp_path / "run"), "--device", "gpu"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "unknown device 'gpu'" in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_evaluate_refuses_a_cache_with_labels_the_model_does_not_know(synthetic_run, tmp_path, capsys):
    _, run, _ = synthetic_run
    videos = order_task_videos(per_class=2)
    videos["sideways/0.mp4"] = ("sideways", next(iter(videos.values()))[1])
    other = write_cache(tmp_path / "other", videos)
    assert main(["evaluate", str(run), str(other)]) == 1
    assert "'sideways'" in capsys.readouterr().err


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    cache = small_cache(tmp_path / "cache")
    common = ["train", str(cache), "--hidden", "16", "--batch-size", "16", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "straight"), "--epochs", "4"]) == 0
    # the interrupted run streams its first epochs from the cache (one reader process), then resumes in RAM
    first_part = ["--out", str(tmp_path / "resumed"), "--epochs", "2", "--data", "stream", "--workers", "1"]
    assert main(common + first_part) == 0
    assert main(["train", str(cache), "--out", str(tmp_path / "resumed"), "--epochs", "4", "--resume",
                 "--data", "ram"]) == 0
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert resumed["epoch"] == 4
    for name, tensor in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    for a, b in zip(straight["history"], resumed["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_a_run_killed_at_any_moment_resumes_to_the_same_result(tmp_path):
    cache = small_cache(tmp_path / "cache")
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "pipeline", "train", str(cache), "--out", str(run), "--hidden", "16",
               "--batch-size", "8", "--device", "cpu", "--epochs", "100000"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_bytes().splitlines()) < 3:
            assert process.poll() is None and time.monotonic() < deadline, "training stopped early"
            time.sleep(0.01)
    finally:
        process.kill()  # SIGKILL: no cleanup, possibly in the middle of writing a checkpoint
        process.wait()
    done = torch.load(run / "last.pt", weights_only=True)["epoch"]
    epochs = str(done + 2)
    assert main(["train", str(cache), "--out", str(run), "--resume", "--epochs", epochs]) == 0
    straight = tmp_path / "straight"
    assert main(["train", str(cache), "--out", str(straight), "--hidden", "16", "--batch-size", "8", "--device", "cpu",
                 "--epochs", epochs]) == 0
    a = torch.load(run / "last.pt", weights_only=True)
    b = torch.load(straight / "last.pt", weights_only=True)
    for name, tensor in b["model"].items():
        torch.testing.assert_close(a["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert [m["epoch"] for m in a["history"]] == list(range(1, done + 3))
    assert not list(run.glob(".*tmp*")), "the temporary of an interrupted write is cleaned up"


def test_train_refuses_a_used_run_folder_without_resume_and_changed_settings_with_it(tmp_path, capsys):
    cache = small_cache(tmp_path / "cache")
    run = str(tmp_path / "run")
    assert main(["train", str(cache), "--out", run, "--epochs", "1", "--hidden", "8"]) == 0
    capsys.readouterr()
    assert main(["train", str(cache), "--out", run, "--epochs", "2"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(cache), "--out", run, "--epochs", "2", "--resume", "--window", "10"]) == 1
    assert "window: 30 (run) != 10 (now)" in capsys.readouterr().err


def test_atomic_writes_replace_the_whole_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_atomic(path, b"old\n")
    write_atomic(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_training_and_evaluation_run_where_the_decoders_and_torchvision_cannot_be_imported(tmp_path):
    cache = small_cache(tmp_path / "cache")
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("decord", "av", "torchvision"):
                    raise ImportError(f"{{name}} is not installed here (test)")
                return None

        sys.meta_path.insert(0, Refuse())
        from pipeline.cli import main
        rc = main(["train", {str(cache)!r}, "--out", {str(run)!r}, "--epochs", "1", "--hidden", "8"])
        rc = rc or main(["evaluate", {str(run)!r}, "--json"])
        assert not {{"decord", "av", "torchvision"}} & set(sys.modules), "stage two imported stage one's libraries"
        sys.exit(rc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (run / "best.pt").exists()
    assert set(json.loads(done.stdout.splitlines()[-1])) >= {"window_accuracy", "video_accuracy", "per_class"}


def test_the_scene_head_learns_what_stays_put_which_the_order_head_cannot_see(tmp_path):
    """A class told by each clip's constant features (a static scene): the LSTM reads the frame-to-frame
    differences and the window-centred features, here only noise unrelated to the label, so the order
    head stays at chance, as do the differences alone (0.5 at the last epoch for 5 data seeds); the
    default's scene head (the window's mean features beside the LSTM's state) learns it and validation
    picks it; so do `--inputs features` (1.0 for each) and deltas+centered+mean. The mean paths are scaled
    by 0.3 and learn more slowly: at 15 epochs one data seed of 6 stayed at 0.5, at 40 all six reached 1.0."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=8)
    videos = {}
    for i in range(24):
        label = i % 2
        still = rng.normal(size=8) + (2 if label else -2) * direction  # one frame's features, for 60 frames
        videos[f"v{i:02d}"] = ("b" if label else "a", np.tile(still, (60, 1)) + rng.normal(0, 0.01, (60, 8)))
    cache = write_cache(tmp_path / "cache", videos)
    accuracy, heads = {}, {}
    for name, options in [("order head only", ["--no-scene-head"]), ("deltas", ["--inputs", "deltas", "--no-scene-head"]),
                          ("features", ["--inputs", "features", "--no-scene-head"]),
                          ("+mean", ["--inputs", "deltas+centered+mean", "--no-scene-head", "--epochs", "40"]),
                          ("default", ["--epochs", "40"])]:
        run = tmp_path / name.replace(" ", "_")
        assert main(["train", str(cache), "--out", str(run), "--epochs", "15", *options, "--hidden", "16",
                     "--batch-size", "8", "--device", "cpu", "--val-fraction", "0.34"]) == 0
        best = torch.load(run / "best.pt", weights_only=True)
        assert best["model_args"]["scene_head"] == (name == "default")
        heads[name] = bool(best["model"]["reads_scene"]) if name == "default" else None
        accuracy[name] = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_video_acc"]
    assert accuracy["features"] >= 0.9 and accuracy["+mean"] >= 0.9 and accuracy["default"] >= 0.9, accuracy
    assert accuracy["deltas"] <= 0.7 and accuracy["order head only"] <= 0.7, accuracy
    assert heads["default"], "validation should have picked the scene head"


def test_the_scene_head_leaves_the_lstm_and_the_order_head_as_they_train_without_it(tmp_path):
    """The scene head reads the LSTM's state detached, and its gradients are clipped apart: adding it
    changes nothing the order head computes (the same weights after training, to float noise). The
    clipping bound is small so that it acts on every step (at 1.0 it never does on this cache)."""
    cache = small_cache(tmp_path / "cache")
    weights = {}
    for scene_head in (False, True):
        run = tmp_path / f"scene_{scene_head}"
        fit(TrainSettings(cache=str(cache), out=str(run), device="cpu", epochs=3, scene_head=scene_head, grad_clip=0.01),
            progress=False)
        weights[scene_head] = torch.load(run / "last.pt", weights_only=True)["model"]
    assert "scene_head.weight" in weights[True] and "scene_head.weight" not in weights[False]
    for name, value in weights[False].items():
        assert torch.allclose(value, weights[True][name], rtol=0, atol=1e-6), name


def test_feature_dropout_drops_the_same_inputs_at_every_frame_of_a_window_and_only_while_training():
    """Per frame, a dropped input's differences would jump between 0 and its value; one mask per window
    keeps each input whole or zero for all of it (WindowLSTM.feature_dropout, on what the LSTM reads)."""
    from pipeline.model import WindowLSTM

    model = WindowLSTM(20, 2, hidden=4, feature_dropout=0.5).train()
    read = []
    model.lstm.register_forward_hook(lambda module, inputs, output: read.append(inputs[0]))
    x = torch.randn(256, 30, 20)
    model(x)
    model(x)
    model.eval()(x)
    model.feature_dropout.p = 0.0
    model.train()(x)
    undropped = read[3]  # the same inputs, nothing dropped
    kept = read[0][:, 1:2] != 0  # (B, 1, D): whether each input of each window is kept (frame 0 has no difference)
    assert torch.equal(read[0], torch.where(kept, 2 * undropped, torch.zeros_like(undropped)))  # every frame; 1/(1-p)
    assert 0.4 < kept.float().mean() < 0.6
    assert not torch.equal(kept, read[1][:, 1:2] != 0)  # a new mask each call
    assert torch.equal(read[2], undropped)  # none in eval


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf")])
def test_a_centered_weight_that_is_not_a_finite_non_negative_number_is_refused_before_any_work(tmp_path, weight):
    cache = small_cache(tmp_path / "cache")
    with pytest.raises(TrainError, match="centered_weight"):
        fit(TrainSettings(cache=str(cache), out=str(tmp_path / "run"), device="cpu", centered_weight=weight),
            progress=False)
    assert not (tmp_path / "run").exists()


def test_streamed_training_in_a_small_dev_shm_reads_in_this_process_instead_of_failing(tmp_path, run_with_dev_shm):
    """A 4 MB /dev/shm: each reader's batch (64 windows of 30 x 1000 float32, 7.7 MB) does not fit. A
    reader once failed the run with "unable to allocate shared memory", as in Docker's default 64 MB
    with 4 readers."""
    cache = write_cache(tmp_path / "cache", order_task_videos(per_class=20, feature_dim=1000))
    run = run_with_dev_shm(f"{sys.executable} -m pipeline train {cache} --out {tmp_path / 'run'} --data stream "
                           f"--workers 2 --epochs 1 --batch-size 64", 4)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "reading in this process instead" in run.stderr and "Traceback" not in run.stderr
    assert (tmp_path / "run" / "best.pt").exists()
