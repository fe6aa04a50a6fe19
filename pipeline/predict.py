"""Label new videos with a trained run: stage one with the training cache's own feature settings,
then the LSTM over every window."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .cache import SETTINGS_FILE, CacheError, open_cache, write_json_atomic
from .extract import ExtractOptions, extract
from .inputs import InputError, VideoSource, find_videos
from .train import load_run, window_logits


def weights_for(feature_settings: dict, weights: str | None) -> str:
    """The --weights that reproduces the training cache's features: its named weights, or the
    FILE the user names (checked against the cache's sha256 by the cache's settings comparison)."""
    if weights:
        return weights
    name = feature_settings["weights"]["name"]
    if name == "IMAGENET1K_V1":
        return "imagenet"
    if name == "random":
        return "random"
    w = feature_settings["weights"]
    raise CacheError(f"the run's features were made with the weights file {w.get('file')} "
                     f"(sha256 {w.get('sha256')}); pass it with --weights FILE")


def predict(run_dir, videos: list[str], weights: str | None = None, device: str = "auto",
            features_dir: str | None = None, progress: bool = True) -> list[dict]:
    """One result per video, in the order given:
    {"video", "label", "probability", "windows": [{"start", "end", "label", "probability"}]}
    or {"video", "error"} for a video that could not be decoded."""
    model, checkpoint = load_run(run_dir, "cpu")
    feature_settings = checkpoint["feature_settings"]
    videos = _video_files(videos)
    sources = [VideoSource(id=str(Path(video).resolve()), path=Path(video), label="") for video in videos]
    options = ExtractOptions(fps=feature_settings["fps"], weights=weights_for(feature_settings, weights),
                             device=device, dtype=feature_settings["dtype"],
                             precision=feature_settings.get("precision", "fp32"), progress=progress)
    with tempfile.TemporaryDirectory(prefix="pipeline-predict-") as tmp:
        cache_dir = Path(features_dir or tmp)
        if not (cache_dir / SETTINGS_FILE).exists():
            # The training cache's settings, so extract refuses (naming the difference) anything else.
            cache_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cache_dir / SETTINGS_FILE, feature_settings)
        summary = extract(sources, cache_dir, options)
        failures = dict(summary.failures)
        with open_cache(cache_dir) as cache:
            return [_result(model, checkpoint, cache, source.id, str(video), failures)
                    for source, video in zip(sources, videos)]


def _video_files(videos: list[str]) -> list[str]:
    """The files given, each folder or CSV manifest replaced by the videos it holds (found as `extract`
    finds them, in its order); a video given twice is labelled once."""
    files = []
    for video in videos:
        path = Path(video)
        if path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv"):
            found = [str(source.path) for source in find_videos(path)]
            if not found:
                raise InputError(f"{video}: no video files found in this {'folder' if path.is_dir() else 'manifest'}")
            files += found
        elif path.is_file():
            files.append(video)
        else:
            raise InputError(f"{video}: no such video file or folder")
    first = {}
    for file in files:
        first.setdefault(Path(file).resolve(), file)
    return list(first.values())


def _result(model, checkpoint, cache, video_id: str, video: str, failures: dict) -> dict:
    if video_id not in cache.video_ids:
        return {"video": video, "error": failures.get(video_id) or cache.records[video_id].error}
    labels, window = checkpoint["labels"], checkpoint["settings"]["window"]
    fps, frames = cache.settings["fps"], cache.num_frames(video_id)
    starts, logits = window_logits(model, checkpoint, cache.features(video_id))
    probabilities = torch.softmax(logits, dim=1).numpy()
    video_probabilities = torch.softmax(logits.mean(0), dim=0).numpy()
    best = int(np.argmax(video_probabilities))
    return {
        "video": video,
        "label": labels[best],
        "probability": float(video_probabilities[best]),
        "windows": [
            {"start": round(float(start) / fps, 4), "end": round(min(start + window, frames) / fps, 4),
             "label": labels[int(p.argmax())], "probability": float(p.max())}
            for start, p in zip(starts.tolist(), probabilities)
        ],
    }
