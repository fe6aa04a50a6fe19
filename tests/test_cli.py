"""The command line as a new user meets it: every mistake is one line and a documented exit status,
nothing is left behind, and the extract extra is asked for by name when it is missing."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import cli
from pipeline.cli import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_MISSING_PACKAGE, EXIT_STATUSES, EXIT_USAGE, build_parser,
                          main)
from pipeline.train import TrainSettings, fit
from synthetic_cache import order_task_videos, synthetic_settings, write_cache

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--epochs", "2", "--hidden", "8", "--batch-size", "8", "--device", "cpu"]

# Run first on a stage-two install: the extract extra's modules cannot be imported, and
# importlib.util.find_spec reports them missing, exactly as when they are not installed.
BLOCKER = """
import sys
for name in ("torchvision", "av", "decord"):
    sys.modules[name] = None
"""


@pytest.fixture(scope="module")
def stage_two_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage_two_site")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]))
    check = subprocess.run([sys.executable, "-c", "import torchvision"], env=env, capture_output=True, text=True)
    assert check.returncode != 0, "the blocker must make torchvision unimportable"
    return env


def pipeline_command(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    env = env or dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(cache, run): a small synthetic cache and a 2-epoch run on it."""
    root = tmp_path_factory.mktemp("cli")
    cache = write_cache(root / "cache", order_task_videos(per_class=4, feature_dim=8, seed=3), synthetic_settings(8))
    fit(TrainSettings(cache=str(cache), out=str(root / "run"), epochs=2, hidden=8, batch_size=8, device="cpu"),
        progress=False)
    return cache, root / "run"


def exit_status(argv) -> int:
    with pytest.raises(SystemExit) as exit:
        main([str(a) for a in argv])
    return exit.value.code


# --- 1. the extract extra ----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["extract", "predict", "demo"])
def test_commands_needing_the_extract_extra_name_what_to_install_and_create_nothing(command, stage_two_env,
                                                                                     tmp_path, small):
    _, run = small
    args = {"extract": ["extract", ROOT / "data" / "tiny", "--out", tmp_path / "cache", "--weights", "random"],
            "predict": ["predict", run, ROOT / "data" / "tiny" / "moves_left" / "moves_left_0.mp4",
                        "--features", tmp_path / "features"],
            "demo": ["demo", "--out", tmp_path / "demo", "--data", tmp_path / "data"]}[command]
    result = pipeline_command(*args, env=stage_two_env)
    assert result.returncode == EXIT_MISSING_PACKAGE == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'pip install -e ".[extract]"' in lines[0] and "torchvision" in lines[0] and f"pipeline {command}" in lines[0]
    assert "Traceback" not in result.stderr and "RANDOM" not in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no cache folder, no lock, no settings


def test_the_missing_package_is_named_alone_when_only_it_is_missing(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text("import sys\nsys.modules['av'] = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]))
    result = pipeline_command("extract", ROOT / "data" / "tiny", "--out", tmp_path / "cache", env=env)
    assert result.returncode == EXIT_MISSING_PACKAGE
    assert "av is not installed" in result.stderr and "pip install av" in result.stderr
    assert not (tmp_path / "cache").exists()


def test_stage_two_commands_and_the_window_dataset_work_without_the_extract_extra(stage_two_env, small, tmp_path):
    cache, run = small
    assert pipeline_command("info", cache, env=stage_two_env).returncode == 0
    trained = pipeline_command("train", cache, "--out", tmp_path / "run", *QUICK, env=stage_two_env)
    assert trained.returncode == 0, trained.stderr
    assert pipeline_command("evaluate", tmp_path / "run", "--json", env=stage_two_env).returncode == 0
    code = f"import pipeline; d = pipeline.WindowDataset({str(cache)!r}); print(len(d), tuple(d[0][0].shape))"
    dataset = subprocess.run([sys.executable, "-c", code], env=stage_two_env, capture_output=True, text=True)
    assert dataset.returncode == 0, dataset.stderr
    assert "(30, 8)" in dataset.stdout


def test_bench_train_runs_without_torchvision_and_says_the_end_to_end_part_was_skipped(stage_two_env):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--videos", "6", "--frames",
                             "40", "--seconds", "0.1", "--rounds", "1"], env=stage_two_env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torchvision is not installed" in result.stdout
    assert "cached_speedup=skipped" in result.stdout.splitlines()[-1]


# --- 3. exit statuses: a bad option value is a bad command line ---------------------------------

@pytest.mark.parametrize("option", [
    ["--window", "0"], ["--stride", "0"], ["--lr", "-1"], ["--lr", "nan"], ["--epochs", "-1"], ["--batch-size", "0"],
    ["--val-fraction", "1.5"], ["--hidden", "0"], ["--workers", "-1"], ["--threads", "0"], ["--window", "ten"],
    ["--data", "disk"],
])
def test_an_invalid_train_option_value_is_status_2_and_creates_nothing(option, small, tmp_path, capsys):
    cache, _ = small
    assert exit_status(["train", cache, "--out", tmp_path / "run", *option]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"pipeline train: error: argument {option[0]}" in err and "usage: pipeline train" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", ["train", "evaluate", "extract"])
def test_device_cuda_without_a_gpu_is_status_2(command, small, tmp_path, capsys):
    cache, run = small
    argv = {"train": ["train", cache, "--out", tmp_path / "run"], "evaluate": ["evaluate", run],
            "extract": ["extract", ROOT / "data" / "tiny", "--out", tmp_path / "cache"]}[command]
    assert exit_status(argv + ["--device", "cuda"]) == EXIT_USAGE
    assert "no CUDA device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["extract", "in", "--out", "{tmp}/c", "--workers", "-1"], ["extract", "in", "--out", "{tmp}/c", "--threads", "0"],
    ["extract", "in", "--out", "{tmp}/c", "--batch-size", "0"], ["extract", "in", "--out", "{tmp}/c", "--fps", "0"],
    ["extract", "in", "--out", "{tmp}/c", "--shard", "4/4"], ["evaluate", "run", "--threads", "-2"],
    ["train", "cache", "--out", ""], ["extract", "in", "--out", ""],
])
def test_invalid_values_of_other_commands_are_status_2(argv, tmp_path, capsys):
    assert exit_status([a.format(tmp=tmp_path) for a in argv]) == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_an_unknown_option_prints_the_subcommands_usage(small, tmp_path):
    cache, _ = small
    result = pipeline_command("train", cache, "--out", tmp_path / "run", "--bogus")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.startswith("usage: pipeline train")
    assert "pipeline train: error: unrecognized arguments: --bogus" in result.stderr


def test_the_exit_statuses_are_listed_in_help_and_readme():
    helptext = pipeline_command("--help").stdout
    readme = (ROOT / "README.md").read_text()
    for code, _ in EXIT_STATUSES:
        assert re.search(rf"^\s+{code}\s", helptext, re.M), code
        assert f"| `{code}` |" in readme, code


# --- 2 and 9: one-line messages for user mistakes ----------------------------------------------

@pytest.mark.parametrize("command", ["train", "extract"])
def test_out_naming_a_file_or_a_path_under_a_file_is_a_one_line_message(command, small, tmp_path):
    cache, _ = small
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below"):
        args = ["train", cache] if command == "train" else ["extract", ROOT / "data" / "tiny", "--weights", "random"]
        result = pipeline_command(*args, "--out", out)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert "Traceback" not in result.stderr and "a_file" in result.stderr.splitlines()[-1]
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_info_reads_a_cache_whose_settings_lack_weights(tmp_path):
    cache = write_cache(tmp_path / "cache", order_task_videos(per_class=1, feature_dim=4), synthetic_settings(4))
    assert "weights" not in json.loads((cache / "settings.json").read_text())
    result = pipeline_command("info", cache)
    assert result.returncode == 0, result.stderr
    assert "weights not recorded" in result.stdout


def test_evaluate_after_the_cache_moved_hints_at_cache_and_then_scores_the_validation_videos(small, tmp_path):
    import shutil

    cache, run = small
    moved_run = tmp_path / "run"
    shutil.copytree(run, moved_run)
    moved = tmp_path / "moved_cache"
    shutil.copytree(cache, moved)
    settings = torch.load(moved_run / "last.pt", weights_only=True)["settings"]
    gone = tmp_path / "gone"  # the run's recorded cache, as if moved away: rewrite best.pt to point there
    best = torch.load(moved_run / "best.pt", weights_only=True)
    best["settings"] = {**settings, "cache": str(gone)}
    torch.save(best, moved_run / "best.pt")

    result = pipeline_command("evaluate", moved_run)
    assert result.returncode == EXIT_ERROR
    assert "--cache NEWPATH" in result.stderr and len(result.stderr.strip().splitlines()) == 1

    by_option = json.loads(pipeline_command("evaluate", moved_run, "--cache", moved, "--json").stdout)
    here = json.loads(pipeline_command("evaluate", run, "--json").stdout)
    every = json.loads(pipeline_command("evaluate", moved_run, moved, "--json").stdout)
    split = json.loads((run / "split.json").read_text())
    assert by_option["videos"] == here["videos"] == len(split["val"])
    assert by_option["video_accuracy"] == here["video_accuracy"]
    assert every["videos"] == len(split["train"]) + len(split["val"])  # CACHE keeps its meaning: every video
    both = pipeline_command("evaluate", moved_run, moved, "--cache", moved)
    assert both.returncode == EXIT_USAGE and "not both" in both.stderr


def test_resume_without_a_run_is_an_error_and_creates_nothing(small, tmp_path):
    cache, _ = small
    result = pipeline_command("train", cache, "--out", tmp_path / "none", "--resume")
    assert result.returncode == EXIT_ERROR
    assert "no run to resume" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none").exists()


def test_a_run_folder_given_for_a_cache_is_named_as_one(tmp_path, capsys):
    """A newcomer passes the run to `info` or `train`: the message says what the folder is."""
    (tmp_path / "run").mkdir()
    torch.save({}, tmp_path / "run" / "best.pt")
    for command in (["info", tmp_path / "run"], ["train", tmp_path / "run", "--out", tmp_path / "run2"]):
        assert cli.main([str(a) for a in command]) == EXIT_ERROR
        err = capsys.readouterr().err
        assert "a run folder of `pipeline train`, not a feature cache" in err and "Traceback" not in err
    assert not (tmp_path / "run2").exists()


def test_a_failed_train_leaves_no_run_folder(tmp_path):
    one_label = write_cache(tmp_path / "one_label", {"a/1.mp4": ("a", np.zeros((40, 4), np.float32))},
                            synthetic_settings(4))
    for cache in (tmp_path / "missing", one_label):
        result = pipeline_command("train", cache, "--out", tmp_path / "run")
        assert result.returncode == EXIT_ERROR and "Traceback" not in result.stderr
        assert not (tmp_path / "run").exists()


def test_a_failure_after_the_folder_was_made_removes_it_but_keeps_an_existing_one(small, tmp_path, monkeypatch,
                                                                                   capsys):
    import pipeline.train

    cache, _ = small

    def failing_fit(settings, resume=False, log=None):
        Path(settings.out).mkdir()
        (Path(settings.out) / "split.json").write_text("{}")
        raise pipeline.train.TrainError("disk trouble")

    monkeypatch.setattr(pipeline.train, "fit", failing_fit)
    assert main(["train", str(cache), "--out", str(tmp_path / "run")]) == EXIT_ERROR
    assert not (tmp_path / "run").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    # the stand-in's mkdir fails (FileExistsError: one line, status 1); the user's own folder stays
    assert main(["train", str(cache), "--out", str(mine)]) == EXIT_ERROR
    assert (mine / "notes.txt").exists()


def test_ctrl_c_during_training_gives_the_resume_command(small, tmp_path, monkeypatch, capsys):
    import pipeline.train

    cache, _ = small

    def interrupted_fit(settings, resume=False, log=None):
        Path(settings.out).mkdir(exist_ok=True)
        (Path(settings.out) / "last.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.train, "fit", interrupted_fit)
    run = tmp_path / "my run"
    assert main(["train", str(cache), "--out", str(run), "--epochs", "9"]) == EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"resume with: pipeline train {cache} --out '{run}' --resume")
    assert run.exists()


def test_a_real_ctrl_c_stops_training_with_status_130_and_the_resume_command(small, tmp_path):
    import signal
    import time

    cache, _ = small
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "train", str(cache), "--out", str(run), *QUICK[2:],
                                "--epochs", "100000"], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               # SIGINT as at a terminal, even where the tests run as a background job, which ignores it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").exists():
            assert process.poll() is None and time.monotonic() < deadline, "training stopped early"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED
    assert err.strip().splitlines()[-1].endswith(f"resume with: pipeline train {cache} --out {run} --resume")
    assert "Traceback" not in err
    assert main(["train", str(cache), "--out", str(run), "--resume", "--epochs", "1"]) == 0  # the command works


def test_a_ctrl_c_while_matplotlib_is_first_imported_waits_until_the_import_is_done():
    """A Ctrl-C in the middle of matplotlib's first import (after the first epoch, when the first
    plots are drawn) broke its C extensions: "ImportError: initialization failed" and a traceback,
    at times an abort as Python exited, instead of "interrupted; resume with" (1 run in 20)."""
    import signal
    import time

    from pipeline.plots import ctrl_c_held_back

    original = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal (CI may ignore SIGINT)
    try:
        finished = False
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c_held_back():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # Python runs the handler here, between two bytecodes
                finished = True
        assert finished
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):  # and a Ctrl-C is not lost to another error meanwhile
            with ctrl_c_held_back():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                raise ImportError("initialization failed")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job: Ctrl-C is not for it
        with ctrl_c_held_back():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, original)


def test_a_window_longer_than_every_video_is_said(small, tmp_path):
    cache, _ = small  # videos of 45 to 90 frames
    result = pipeline_command("train", cache, "--out", tmp_path / "run", "--window", "200", *QUICK)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "--window 200 is longer than every video" in warning[0]


# --- 4. threads ---------------------------------------------------------------------------------

def test_threads_sets_torchs_threads_and_the_default_leaves_a_core(small, tmp_path, monkeypatch):
    cache, run = small
    before = torch.get_num_threads()
    try:
        assert main(["evaluate", str(run), "--threads", "1", "--json"]) == 0
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
        assert cli.default_threads("train") == 7
        monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
        assert cli.default_threads("train") == cli.default_threads("evaluate") == 1
        assert cli.default_threads("extract") is cli.default_threads("predict") is None  # the CNN is the bound
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert cli.default_threads("train") is None
    finally:
        torch.set_num_threads(before)


# --- 6. help ------------------------------------------------------------------------------------

def test_every_argument_has_help_and_every_command_says_whether_it_needs_the_extra():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == {"extract", "join", "info", "train", "evaluate", "predict", "demo"}
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"{name} {action.dest}"
        needs = name in ("extract", "predict", "demo")
        assert ('pip install -e ".[extract]"' in command.description) == needs, name
        assert ("plain install" in command.description) == (not needs), name


def test_version():
    result = pipeline_command("--version")
    assert result.returncode == 0 and re.fullmatch(r"pipeline \d+\.\d+\.\d+\n", result.stdout)


# --- 7. plots -----------------------------------------------------------------------------------

@pytest.mark.parametrize("epochs", [1, 3, 30])
def test_curves_have_markers_and_whole_epoch_ticks(epochs, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.plots import curves_png

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))  # keep the figure to look at it
    history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 1.0, "val_loss": 1.2 / e, "val_window_acc": 1.0,
                "val_video_acc": 1.0} for e in range(1, epochs + 1)]
    assert curves_png(history)[:4] == b"\x89PNG"
    for ax in figures[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert all(line.get_marker() not in (None, "None", "") for line in ax.get_lines())
        legend = ax.get_legend()  # below the axes: it cannot cover a curve
        assert legend is not None and legend.get_window_extent().y1 <= ax.get_window_extent().y0


# --- 8. data/ -----------------------------------------------------------------------------------

def test_the_committed_sample_set_is_small_and_not_ignored():
    clips = sorted((ROOT / "data" / "tiny").rglob("*.mp4"))
    assert len(clips) == 4 and {c.parent.name for c in clips} == {"moves_left", "moves_right"}
    assert sum(c.stat().st_size for c in clips) < 1_000_000
    if (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", *map(str, clips)], cwd=ROOT, capture_output=True)
        assert ignored.returncode == 1, ignored.stdout  # 1: none of them is ignored


def test_the_quick_start_extracts_the_sample_set_in_seconds(tmp_path):
    pytest.importorskip("torchvision")
    pytest.importorskip("decord")
    result = pipeline_command("extract", "data/tiny/manifest.csv", "--out", tmp_path / "cache", "--weights", "random",
                              cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    from pipeline import open_cache

    with open_cache(tmp_path / "cache") as cache:
        assert len(cache.video_ids) == 4 and all(cache.num_frames(v) == 60 for v in cache.video_ids)
