"""`pipeline demo`: the whole job on a task only the order of the frames can solve.

Every sample video shows a square gliding across a textured background, wrapping around at the
edges: to the right in class `moves_right`, to the left in `moves_left`. Start position, speed,
height, colour and background are random, so any one frame, and the set of frames in any window,
looks alike in both classes. An order-blind model (window features averaged over time, then a
linear classifier) is left at chance; the LSTM, which reads the frames in order, is not.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .cache import open_cache
from .extract import ExtractOptions, extract
from .features import WeightsError, resolve_weights
from .inputs import find_videos
from .train import TrainSettings, evaluate_run, fit
from .windows import cache_windows

CLASSES = ("moves_left", "moves_right")
VIDEOS_PER_CLASS = 24
SECONDS = 3.0  # 90 frames: five 1-second windows at stride 15
FPS = 30
WIDTH, HEIGHT, SQUARE = 160, 120, 36


def make_sample_videos(folder: Path, seed: int = 0) -> None:
    """Write the sample videos (seeded: the same files every time) unless they are there already."""
    import av  # PyAV writes H.264; decord only reads

    rng = np.random.default_rng(seed)
    for number in range(VIDEOS_PER_CLASS):
        for label in CLASSES:
            path = folder / label / f"{label}_{number:02d}.mp4"
            params = _random_scene(rng)
            if path.exists():
                continue
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


def _random_scene(rng) -> dict:
    # A plain backdrop with a gentle gradient: the moving square is what the features see most.
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    gradient = (x / WIDTH)[..., None] * rng.uniform(-20, 20, 3) + (y / HEIGHT)[..., None] * rng.uniform(-20, 20, 3)
    background = np.clip(rng.uniform(30, 90, 3) + gradient, 0, 255)
    return {"background": background.astype(np.uint8), "x0": rng.uniform(0, WIDTH), "speed": rng.uniform(50, 90),
            "top": int(rng.integers(0, HEIGHT - SQUARE)), "colour": rng.integers(180, 256, 3).astype(np.uint8)}


def _draw(p: dict, t: float, direction: int) -> np.ndarray:
    frame = p["background"].copy()
    left = int(p["x0"] + direction * p["speed"] * t) % WIDTH
    columns = (np.arange(SQUARE) + left) % WIDTH  # wraps around the edges
    frame[p["top"]:p["top"] + SQUARE, columns] = p["colour"]
    return frame


def order_blind_baseline(cache_path, split: dict, window: int, stride: int, seed: int = 0) -> dict:
    """Window features averaged over time, then a linear classifier: accuracy on the validation videos."""
    with open_cache(cache_path) as cache:
        labels = sorted({cache.label(v) for v in split["train"]})
        index = {label: i for i, label in enumerate(labels)}

        def pooled(ids):
            w = cache_windows(cache, ids, index, window, stride)
            x = np.stack([cache.features(w.ids[v], s, s + window).mean(0) for v, s in zip(w.video, w.start)])
            return torch.tensor(x, dtype=torch.float32), torch.tensor(w.targets), w

        x_train, y_train, _ = pooled(split["train"])
        x_val, y_val, val_windows = pooled(split["val"])
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
    log(f"1/4 sample videos: {VIDEOS_PER_CLASS} per class x {len(CLASSES)} classes, {SECONDS:g} s each, in {data_dir}")
    make_sample_videos(data_dir)

    try:
        resolve_weights("imagenet")
        weights = "imagenet"
    except WeightsError as e:
        weights = "random"
        log("NOTE: the pretrained AlexNet weights are not available here, so this demo uses RANDOM-INIT weights.\n"
            f"      (why: {str(e).splitlines()[0]})\n"
            "      The comparison below still holds; with ImageNet weights the features are better.")
    log(f"2/4 extract: AlexNet ({weights} weights) on every frame at 30 fps -> {out_dir / 'cache'}")
    summary = extract(find_videos(data_dir), out_dir / "cache", ExtractOptions(weights=weights))
    log(f"    {summary.done} videos extracted, {summary.skipped} already done, {len(summary.failures)} failed "
        f"({summary.frames / max(summary.seconds, 1e-9):.0f} frames/s)")

    log(f"3/4 train: LSTM on 1-second windows -> {out_dir / 'run'}")
    settings = TrainSettings(cache=str(out_dir / "cache"), out=str(out_dir / "run"))
    result = fit(settings, resume=True, log=lambda line: log("    " + line))

    log("4/4 evaluate on the validation videos, beside an order-blind baseline")
    report = evaluate_run(out_dir / "run")
    import json

    split = json.loads((out_dir / "run" / "split.json").read_text())
    baseline = order_blind_baseline(out_dir / "cache", split, settings.window, settings.stride)
    log(f"\n    {len(split['val'])} validation videos     window accuracy   video accuracy")
    log(f"    LSTM (frame order)        {report['window_accuracy']:15.3f}  {report['video_accuracy']:15.3f}")
    log(f"    mean + linear (no order)  {baseline['window_accuracy']:15.3f}  {baseline['video_accuracy']:15.3f}")
    log(f"    chance                    {1 / len(CLASSES):15.3f}  {1 / len(CLASSES):15.3f}")
    log(f"\nplots: {Path(result.out) / 'curves.png'}, {Path(result.out) / 'confusion.png'}")
    log(f"next:  pipeline predict {result.out} {data_dir / CLASSES[0] / (CLASSES[0] + '_00.mp4')}")
    return 0
