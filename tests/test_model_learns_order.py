"""The default model learns what the ORDER of frames tells, on clips whose scenes all differ (issue 11).

Synthetic features stand in for AlexNet's: each clip cycles through ten pattern vectors, forwards or
backwards, and a per-clip random "backdrop" vector, larger than the patterns, is added to every one
of its frames. A model that memorises the training clips' backdrops fits them perfectly and is at
chance on new clips; only reading the order generalises. Training and held-out clips come from
different seeds, so the held-out score is on clips (and backdrops) never seen in training.
"""

import numpy as np
import pytest

from pipeline.train import TrainSettings, evaluate_run, fit
from synthetic_cache import synthetic_settings, write_cache

DIM = 64  # wide enough that a backdrop is easy to memorise, as with AlexNet's 1000 features


def backdrop_order_videos(per_class: int, seed: int, dim: int = DIM) -> dict:
    patterns = np.random.default_rng(1234).normal(size=(10, dim))  # the same patterns in every set
    rng = np.random.default_rng(seed)
    videos = {}
    for label, order in (("forward", np.arange(10)), ("backward", np.arange(10)[::-1])):
        cycle = np.repeat(order, 3)  # 30 frames
        for i in range(per_class):
            length = int(rng.integers(60, 91))
            steps = cycle[(np.arange(length) + rng.integers(30)) % 30]
            backdrop = rng.normal(scale=3.0, size=dim)  # this clip's scene
            features = backdrop + patterns[steps] + rng.normal(scale=0.2, size=(length, dim))
            videos[f"{label}/{seed}_{i:02d}.mp4"] = (label, features.astype(np.float32))
    return videos


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("backdrops")
    train = write_cache(root / "train", backdrop_order_videos(24, seed=1), synthetic_settings(DIM))
    heldout = write_cache(root / "heldout", backdrop_order_videos(12, seed=2), synthetic_settings(DIM))
    return root, train, heldout


# The default model; fewer epochs over smaller batches at a higher lr keep the test to seconds.
QUICK = dict(epochs=8, batch_size=16, lr=3e-3)


def held_out_report(root, train, heldout, name: str, **model) -> dict:
    fit(TrainSettings(cache=str(train), out=str(root / name), device="cpu", **QUICK, **model), progress=False)
    return evaluate_run(root / name, heldout, device="cpu")


def test_the_default_model_learns_an_order_only_task_on_held_out_clips_with_their_own_backdrops(caches):
    report = held_out_report(*caches, "default")
    assert report["videos"] == 24
    assert report["video_accuracy"] >= 0.9, report
    import torch

    best = torch.load(caches[0] / "default" / "best.pt", weights_only=True)
    assert not best["model"]["reads_scene"]  # the order head predicts: nothing to see in the scene here


def test_a_run_from_before_the_model_options_loads_and_resumes_with_its_own_model(caches, tmp_path):
    """Checkpoints written before issue 11 hold only hidden and dropout in model_args and settings, and
    no jitter: they load as the model they were trained with (model.LEGACY_ARGS), and --resume
    accepts them and goes on without jitter, as they were trained."""
    import torch

    from pipeline.model import LEGACY_ARGS, WindowLSTM
    from pipeline.train import MODEL_SETTINGS, load_run, save_checkpoint

    root, train, _ = caches
    run = tmp_path / "old"
    fit(TrainSettings(cache=str(train), out=str(run), device="cpu", epochs=1, hidden=16, dropout=0.2, jitter=False,
                      scene_head=False, **LEGACY_ARGS), progress=False)
    for name in ("best.pt", "last.pt"):  # rewrite as the old code wrote them
        checkpoint = torch.load(run / name, weights_only=True)
        checkpoint["model_args"] = {k: checkpoint["model_args"][k] for k in ("feature_dim", "num_classes", "hidden", "dropout")}
        checkpoint["settings"] = {k: v for k, v in checkpoint["settings"].items()
                                  if k not in (*MODEL_SETTINGS, "jitter") or k in ("hidden", "dropout")}
        save_checkpoint(run / name, checkpoint)
    model, checkpoint = load_run(run)
    assert isinstance(model.proj[0], torch.nn.Linear) and isinstance(model.head[0], torch.nn.LayerNorm)
    assert model.pool == "mean+last"
    from pipeline.train import resume_settings

    settings = resume_settings(run, {"epochs": 2, "device": "cpu"})
    assert settings.jitter is False
    resumed = fit(settings, resume=True, progress=False)
    assert [m["epoch"] for m in resumed.history] == [1, 2]
    assert isinstance(WindowLSTM(4, 2).proj, torch.nn.Identity)  # the new default has no projection


def test_a_run_from_before_centered_weight_loads_and_resumes_with_the_centred_half_unweighted(caches, tmp_path):
    """Runs written before centered_weight existed read the centred features at full weight: they
    load with centered_weight 1.0 (their own model, the same predictions) and --resume accepts them.
    They had no scene head either (nor the runs after them until it came): they load without one, and
    no feature dropout: --resume goes on without it, as they were trained."""
    import torch

    from pipeline.cache import open_cache
    from pipeline.train import load_run, resume_settings, save_checkpoint, window_logits

    root, train, _ = caches
    run = tmp_path / "before"
    fit(TrainSettings(cache=str(train), out=str(run), device="cpu", epochs=1, hidden=16, centered_weight=1.0,
                      scene_head=False), progress=False)
    cache = open_cache(train)
    features = cache.features(cache.video_ids[0])
    before = window_logits(*load_run(run), features)[1]
    for name in ("best.pt", "last.pt"):  # rewrite as the code before centered_weight wrote them
        checkpoint = torch.load(run / name, weights_only=True)
        for key in ("centered_weight", "scene_head", "feature_dropout"):
            del checkpoint["model_args"][key], checkpoint["settings"][key]
        save_checkpoint(run / name, checkpoint)
    model, checkpoint = load_run(run)
    assert model.centered_weight == 1.0 and model.inputs == "deltas+centered" and model.scene_head is None
    assert torch.equal(window_logits(model, checkpoint, features)[1], before)
    model.centered_weight = 0.3  # the same weights read with the new default's weight: other logits
    assert not torch.allclose(window_logits(model, checkpoint, features)[1], before)
    settings = resume_settings(run, {"epochs": 2, "device": "cpu"})
    assert settings.centered_weight == 1.0 and settings.scene_head is False and settings.feature_dropout == 0.0
    assert [m["epoch"] for m in fit(settings, resume=True, progress=False).history] == [1, 2]
