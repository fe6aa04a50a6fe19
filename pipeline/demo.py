"""`pipeline demo`: the whole job on a task only the order of the frames can solve, scored on new clips.

Every sample video shows a square gliding across its own random textured backdrop (colour blotches,
a grating and pixel noise), wrapping around at the edges: to the right in class `moves_right`, to
the left in `moves_left`. Start position, speed, height, colour and backdrop are random per clip, so
any one frame, and the set of frames in any window, looks alike in both classes, and memorising a
training clip's backdrop does not help on another clip. The LSTM trains on one set of clips
(DATA/train) and is scored on clips it never saw (DATA/heldout, other seeds), beside an
order-blind model (window features averaged over time, then a linear classifier), which is left
at chance.
"""

from __future__ import annotations

import json
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .cache import open_cache
from .extract import ExtractOptions, extract
from .features import WeightsError, resolve_weights
from .inputs import find_videos
from .train import TrainSettings, evaluate_run, fit, load_checkpoint, training_differences
from .windows import cache_windows

CLASSES = ("moves_left", "moves_right")
VIDEOS_PER_CLASS = 24  # training clips per class (the run's own split takes 20% of them to validate)
HELDOUT_PER_CLASS = 8  # clips per class the model never sees in training
SECONDS = 3.0  # 90 frames: five 1-second windows at stride 15
FPS = 30
WIDTH, HEIGHT, SQUARE = 160, 120, 36
SEEDS = {"train": 0, "heldout": 1}


def make_sample_videos(folder: Path, seed: int = 0, per_class: int | None = None) -> None:
    """Write the sample videos (seeded: the same files every time) unless they are there already."""
    import av  # PyAV writes H.264; decord only reads

    per_class = VIDEOS_PER_CLASS if per_class is None else per_class
    for number in range(per_class):
        for index, label in enumerate(CLASSES):
            path = folder / label / f"{label}_{number:02d}.mp4"
            if path.exists():
                continue
            params = _random_scene(np.random.default_rng([seed, index, number]))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            with av.open(str(tmp), "w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=Fraction(FPS))
                stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
                for t in range(int(SECONDS * FPS)):
                    frame = _draw(params, t / FPS, +1 if label == "moves_right" else -1)
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            tmp.rename(path)


def textured_backdrop(rng, height: int, width: int) -> np.ndarray:
    """A random (height, width, 3) uint8 backdrop: coarse colour blotches, a grating and pixel noise."""
    cells = int(rng.integers(3, 9))
    coarse = rng.uniform(0, 1, (cells + 1, cells + 1, 3))
    ty, tx = np.linspace(0, cells, height), np.linspace(0, cells, width)
    iy, ix = np.minimum(ty.astype(int), cells - 1), np.minimum(tx.astype(int), cells - 1)
    fy, fx = (ty - iy)[:, None, None], (tx - ix)[None, :, None]
    rows = coarse[iy] * (1 - fy) + coarse[iy + 1] * fy
    blotches = rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx
    y, x = np.mgrid[0:height, 0:width]
    angle, cycles = rng.uniform(0, np.pi), rng.uniform(3, 14)
    grating = np.sin(2 * np.pi * cycles * (np.cos(angle) * x + np.sin(angle) * y) / width + rng.uniform(0, 6.3))
    image = (rng.uniform(20, 120, 3) + blotches * rng.uniform(40, 130, 3)
             + grating[..., None] * rng.uniform(10, 45, 3) + rng.normal(0, rng.uniform(2, 12), (height, width, 3)))
    return np.clip(image, 0, 255).astype(np.uint8)


def _random_scene(rng) -> dict:
    background = textured_backdrop(rng, HEIGHT, WIDTH)
    mean = background.reshape(-1, 3).mean(0)
    colour = rng.integers(0, 256, 3)
    while np.abs(colour - mean).max() < 90:  # a square that stands out from its backdrop
        colour = rng.integers(0, 256, 3)
    return {"background": background, "x0": rng.uniform(0, WIDTH), "speed": rng.uniform(50, 90),
            "top": int(rng.integers(0, HEIGHT - SQUARE)), "colour": colour.astype(np.uint8)}


def _draw(p: dict, t: float, direction: int) -> np.ndarray:
    frame = p["background"].copy()
    left = int(p["x0"] + direction * p["speed"] * t) % WIDTH
    columns = (np.arange(SQUARE) + left) % WIDTH  # wraps around the edges
    frame[p["top"]:p["top"] + SQUARE, columns] = p["colour"]
    return frame


def order_blind_baseline(cache_path, split: dict, window: int, stride: int, seed: int = 0, eval_cache=None) -> dict:
    """Window features averaged over time, then a linear classifier, trained on split["train"] of
    `cache_path`: accuracy on split["val"], videos of `eval_cache` (default: the same cache)."""

    def pooled(path, ids, index=None):
        with open_cache(path) as cache:
            index = index or {label: i for i, label in enumerate(sorted({cache.label(v) for v in ids}))}
            w = cache_windows(cache, ids, index, window, stride)
            x = np.stack([cache.features(w.ids[v], s, s + window).mean(0) for v, s in zip(w.video, w.start)])
        return torch.tensor(x, dtype=torch.float32), torch.tensor(w.targets), w, index

    x_train, y_train, _, index = pooled(cache_path, split["train"])
    labels = list(index)
    x_val, y_val, val_windows, _ = pooled(eval_cache or cache_path, split["val"], index)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    torch.manual_seed(seed)
    linear = torch.nn.Linear(x_train.shape[1], len(labels))
    optimizer = torch.optim.AdamW(linear.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(linear((x_train - mean) / std), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        logits = linear((x_val - mean) / std)
    video = torch.as_tensor(val_windows.video)
    sums = torch.zeros(len(val_windows.ids), len(labels)).index_add_(0, video, logits)
    video_pred = sums.argmax(1)
    return {"window_accuracy": (logits.argmax(1) == y_val).float().mean().item(),
            "video_accuracy": (video_pred == torch.as_tensor(val_windows.video_labels)).float().mean().item()}


def run_demo(out: str, data: str, log: Callable[[str], None]) -> int:
    out_dir, data_dir = Path(out), Path(data)
    started = time.perf_counter()
    log(f"1/4 sample videos in {data_dir}: {VIDEOS_PER_CLASS} per class to train on (train/), "
        f"{HELDOUT_PER_CLASS} per class never trained on (heldout/), {SECONDS:g} s each, every clip its own backdrop")
    for split, per_class in (("train", VIDEOS_PER_CLASS), ("heldout", HELDOUT_PER_CLASS)):
        make_sample_videos(data_dir / split, SEEDS[split], per_class)

    try:
        resolve_weights("imagenet")
        weights = "imagenet"
    except WeightsError as e:
        weights = "random"
        log("NOTE: the pretrained AlexNet weights are not available here, so this demo uses RANDOM-INIT weights.\n"
            f"      (why: {str(e).splitlines()[0]})\n"
            "      The comparison below still holds; with ImageNet weights the features are better.")
    caches = {split: out_dir / ("cache" if split == "train" else "heldout_cache") for split in SEEDS}
    log(f"2/4 extract: AlexNet ({weights} weights) on every frame at 30 fps -> {caches['train']}, {caches['heldout']}")
    for split, cache in caches.items():
        summary = extract(find_videos(data_dir / split), cache, ExtractOptions(weights=weights))
        log(f"    {split}: {summary.done} videos extracted, {summary.skipped} already done, "
            f"{len(summary.failures)} failed ({summary.frames / max(summary.seconds, 1e-9):.0f} frames/s)")

    log(f"3/4 train: LSTM on 1-second windows, default settings -> {out_dir / 'run'}")
    settings = TrainSettings(cache=str(caches["train"]), out=str(out_dir / "run"))
    last = out_dir / "run" / "last.pt"
    if last.exists() and training_differences(load_checkpoint(last), settings):
        # a run of an earlier version's defaults: this demo's own run, so it starts afresh
        log("    the run there was trained with other default settings (an earlier version): training it anew")
        shutil.rmtree(out_dir / "run")
    result = fit(settings, resume=True, log=lambda line: log("    " + line))

    log("4/4 evaluate on the held-out videos (never trained on), beside an order-blind baseline")
    report = evaluate_run(out_dir / "run", caches["heldout"])
    split = json.loads((out_dir / "run" / "split.json").read_text())
    with open_cache(caches["heldout"]) as cache:
        heldout_ids = cache.video_ids
    baseline = order_blind_baseline(caches["train"], {"train": split["train"], "val": heldout_ids},
                                    settings.window, settings.stride, eval_cache=caches["heldout"])
    log(f"\n    {len(heldout_ids)} held-out videos        window accuracy   video accuracy")
    log(f"    LSTM (frame order)        {report['window_accuracy']:15.3f}  {report['video_accuracy']:15.3f}")
    log(f"    mean + linear (no order)  {baseline['window_accuracy']:15.3f}  {baseline['video_accuracy']:15.3f}")
    log(f"    chance                    {1 / len(CLASSES):15.3f}  {1 / len(CLASSES):15.3f}")
    log(f"\n{time.perf_counter() - started:.0f} s in all. plots: {Path(result.out) / 'curves.png'}, "
        f"{Path(result.out) / 'confusion.png'} (validation videos)")
    log(f"next:  pipeline predict {result.out} {data_dir / 'heldout' / CLASSES[0] / (CLASSES[0] + '_00.mp4')}")
    return 0
