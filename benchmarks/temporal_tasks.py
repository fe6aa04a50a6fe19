"""A seeded suite of small video tasks for choosing stage two's model (issue 11).

    python benchmarks/temporal_tasks.py [--root /work/taskcache] [--weights random|imagenet|FILE] [--tasks ...]

Every clip has its own random textured backdrop (blotches, a grating and pixel noise, in random
colours) and its own object (shape, colour, size, position, speed), so memorising a training clip's
scene does not generalise: only what the task is about does.

Order-only tasks (every frame, and the set of frames in any window, is alike in both classes; only
the order of the frames tells them apart; an order-blind model stays at chance):
  motion    an object glides left or right, wrapping around the edges
  rotation  a bar with a knob at one end turns clockwise or counter-clockwise
  events    two flashes, one in the left half and one in the right half, left-then-right or
            right-then-left, repeating about once a second
  growth    an object grows from small to large, or shrinks from large to small (a sawtooth)
  fade      an object fades in (appears) or fades out (disappears) (a sawtooth)
  gravity   an object falls (speeding up downwards) or rises (slowing down upwards), every 0.7-1 s
  slowmotion  a small object (14-22 px) glides left or right at 8-18 px/s: mostly less than its own
            size in a one-second window (a camera's slow pan, a distant walker)
  pan       the camera pans left or right across a scene with a few objects, 20-40 px/s
  zoom      the camera zooms in or out (the view narrows to 55% or widens back), every 0.8-1.2 s
Appearance tasks (what is in the scene tells; the order is irrelevant):
  shape     a disc or a square drifting about at random
  count     one object or three (random shapes and colours) drifting about at random
  still     a still object, red or blue (its shape, size, place and shade random): nothing moves, so
            a model of what changes alone cannot see it

Each task has a training set (TRAIN_PER_CLASS clips a class) and a held-out set (HELDOUT_PER_CLASS
clips a class) drawn from other seeds. Clips are 112x112, 3 s at 30 fps, H.264 written with PyAV,
then extracted with the project's own `extract()` into ROOT/<weights>/<task>/{train,heldout}/cache;
a set already extracted is reused, and everything regenerates from the seeds if ROOT is empty.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE = 112
FPS = 30
FRAMES = 90  # 3 s: five 30-frame windows at stride 15
TRAIN_PER_CLASS = 36  # 72 training clips, 24 held-out: the sizes of the task in issue 11
HELDOUT_PER_CLASS = 12
SPLIT_SEEDS = {"train": 1, "heldout": 2}  # the held-out clips come from other seeds than the training ones

ORDER_TASKS = ("motion", "rotation", "events", "growth", "fade", "gravity", "slowmotion", "pan", "zoom")
APPEARANCE_TASKS = ("shape", "count", "still")
TASKS = ORDER_TASKS + APPEARANCE_TASKS
# Each task's seed number, fixed when it joined the suite: a task added later changes no other's clips
SEED_NUMBERS = {"motion": 1, "rotation": 2, "events": 3, "growth": 4, "fade": 5, "shape": 6, "count": 7,
                "gravity": 8, "slowmotion": 9, "pan": 10, "zoom": 11, "still": 12}
CLASSES = {
    "motion": ("left", "right"),
    "rotation": ("clockwise", "counterclockwise"),
    "events": ("left_then_right", "right_then_left"),
    "growth": ("grows", "shrinks"),
    "fade": ("appears", "disappears"),
    "gravity": ("falls", "rises"),
    "slowmotion": ("left", "right"),
    "pan": ("left", "right"),
    "zoom": ("zoom_in", "zoom_out"),
    "shape": ("disc", "square"),
    "count": ("one", "three"),
    "still": ("red", "blue"),
}

SHAPES = ("disc", "square", "triangle", "cross")  # the objects' shapes, drawn by each clip's generator


@functools.lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's (y, x) coordinates, float32 (read-only: shared between calls)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y.flags.writeable = x.flags.writeable = False
    return y, x


# --- scenes -------------------------------------------------------------------------------------

def backdrop(rng, width: int = SIZE, height: int = SIZE) -> np.ndarray:
    """A random textured (height, width, 3) float backdrop: coarse colour blotches, a grating, noise."""
    cells = int(rng.integers(3, 9))
    coarse = rng.uniform(0, 1, (cells + 1, cells + 1, 3))
    ty, tx = np.linspace(0, cells, height, dtype=np.float32), np.linspace(0, cells, width, dtype=np.float32)
    iy, ix = np.minimum(ty.astype(int), cells - 1), np.minimum(tx.astype(int), cells - 1)
    f = (ty - iy)[:, None, None]
    rows = coarse[iy] * (1 - f) + coarse[iy + 1] * f  # bilinear upsampling, rows then columns
    f = (tx - ix)[None, :, None]
    blotches = rows[:, ix] * (1 - f) + rows[:, ix + 1] * f
    y, x = _grid(width, height)
    angle, cycles = rng.uniform(0, np.pi), rng.uniform(3, 14)
    grating = np.sin(2 * np.pi * cycles * (np.cos(angle) * x + np.sin(angle) * y) / max(width, height)
                     + rng.uniform(0, 6.3))
    image = (rng.uniform(20, 120, 3) + blotches * rng.uniform(40, 130, 3)
             + grating[..., None] * rng.uniform(10, 45, 3) + rng.normal(0, rng.uniform(2, 12), (height, width, 3)))
    return np.clip(image, 0, 255).astype(np.float32)


def shape_mask(shape: str, cx: float, cy: float, size: float, angle: float = 0.0,
               width: int = SIZE, height: int = SIZE, wrap: bool = True) -> np.ndarray:
    """(height, width) coverage in [0, 1] of a shape centred at (cx, cy), with wrap-around in x if `wrap`."""
    y, x = _grid(width, height)
    dx = (x - cx + width / 2) % width - width / 2 if wrap else x - cx  # wraps around the left and right edges
    dy = y - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    r = size / 2
    if shape == "disc":
        return (u * u + v * v <= r * r).astype(np.float32)
    if shape == "square":
        return ((np.abs(u) <= r) & (np.abs(v) <= r)).astype(np.float32)
    if shape == "triangle":
        return ((v <= r * 0.6) & (v >= -r + 1.7 * np.abs(u))).astype(np.float32)
    if shape == "cross":
        return (((np.abs(u) <= r) & (np.abs(v) <= r / 3)) | ((np.abs(v) <= r) & (np.abs(u) <= r / 3))).astype(np.float32)
    if shape == "bar":  # a long bar with a knob at one end: it shows which way it turns
        bar = (np.abs(u) <= r) & (np.abs(v) <= max(r / 6, 2.5))
        knob = (u - r) ** 2 + v ** 2 <= (r / 3.5) ** 2
        return (bar | knob).astype(np.float32)
    raise ValueError(shape)


def _colour(rng, background: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the backdrop's mean (at least 90 levels away)."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(100):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - mean).max() >= 90:
            return colour.astype(np.float32)
    return (255 - mean).astype(np.float32)


def _paint(frame: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    a = (mask * alpha)[..., None]
    return frame * (1 - a) + colour * a


def clip_frames(task: str, label_index: int, rng) -> list[np.ndarray]:
    """FRAMES uint8 RGB frames of one clip of `task`, class CLASSES[task][label_index]."""
    back = backdrop(rng)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = _colour(rng, back)
    size = rng.uniform(22, 34)
    cx, cy = rng.uniform(0, SIZE), rng.uniform(size / 2 + 4, SIZE - size / 2 - 4)
    phase = rng.uniform(0, 1)
    sign = 1 if label_index == 0 else -1
    if task in ("pan", "zoom"):
        return _camera_frames(task, label_index, back, rng)
    if task == "still":
        return _still_frames(label_index, back, rng)
    frames = []
    if task == "events":
        other_shape, other_colour = SHAPES[int(rng.integers(len(SHAPES)))], _colour(rng, back)
        left = (rng.uniform(24, 48), rng.uniform(24, 88))
        right = (rng.uniform(64, 88), rng.uniform(24, 88))
        period, on, gap = int(rng.integers(26, 31)), int(rng.integers(5, 8)), int(rng.integers(2, 5))
        start = int(rng.integers(period))
    if task == "shape":
        vx, vy = rng.normal(0, 25, 2)  # a random drift, clipped at the borders
    if task == "count":  # (x, y, vx, vy, shape, colour) of each object
        extra = [(rng.uniform(0, SIZE), rng.uniform(20, SIZE - 20), *rng.normal(0, 25, 2),
                  SHAPES[int(rng.integers(len(SHAPES)))], _colour(rng, back)) for _ in range(3)]
    if task in ("growth", "fade"):
        period = rng.uniform(24, 36)
    if task == "rotation":
        omega = rng.uniform(1.5, 3.5)  # radians per second
        length = rng.uniform(50, 70)
        cx, cy = rng.uniform(46, 66), rng.uniform(46, 66)
    speed = rng.uniform(35, 65)  # pixels per second (motion)
    if task == "slowmotion":
        size, speed = rng.uniform(14, 22), rng.uniform(8, 18)
    if task == "gravity":
        size, period = rng.uniform(16, 26), rng.uniform(0.7, 1.0)
        cx = rng.uniform(20, SIZE - 20)
    for t in range(FRAMES):
        s = t / FPS
        frame = back
        if task in ("motion", "slowmotion"):  # (slowmotion: its own size and speed, drawn above)
            direction = -1 if label_index == 0 else 1
            frame = _paint(back, shape_mask(shape, cx + direction * speed * s, cy, size), colour)
        elif task == "gravity":  # rising is falling played backwards: y = 12 + A u^2 against 12 + A (1 - u)^2
            u = (s / period + phase) % 1.0
            y = 12 + (SIZE - 24) * (u * u if label_index == 0 else (1 - u) ** 2)
            frame = _paint(back, shape_mask(shape, cx, y, size), colour)
        elif task == "rotation":
            angle = phase * 2 * np.pi + sign * omega * s  # image y points down: + is clockwise on screen
            frame = _paint(back, shape_mask("bar", cx, cy, length, angle), colour)
        elif task == "events":
            k = (t + start) % period
            first, second = (left, right) if label_index == 0 else (right, left)
            if k < on:
                frame = _paint(back, shape_mask(shape, *first, size), colour)
            elif on + gap <= k < 2 * on + gap:
                frame = _paint(back, shape_mask(other_shape, *second, size), other_colour)
        elif task == "growth":
            ramp = (t / period + phase) % 1.0  # 0 -> 1, then back to 0
            grown = ramp if label_index == 0 else 1 - ramp
            frame = _paint(back, shape_mask(shape, cx, cy, 6 + grown * 38), colour)
        elif task == "fade":
            ramp = (t / period + phase) % 1.0
            alpha = ramp if label_index == 0 else 1 - ramp
            frame = _paint(back, shape_mask(shape, cx, cy, size + 6), colour, alpha)
        elif task == "count":
            frame = back
            for k in range(1 if label_index == 0 else 3):
                x = extra[k][0] + extra[k][2] * s
                y = np.clip(extra[k][1] + extra[k][3] * s, size / 2, SIZE - size / 2)
                frame = _paint(frame, shape_mask(extra[k][4], x, y, size), extra[k][5])
        elif task == "shape":
            x = cx + vx * s
            y = np.clip(cy + vy * s, size / 2, SIZE - size / 2)
            frame = _paint(back, shape_mask(CLASSES["shape"][label_index], x, y, size + 4, phase * 0.3), colour)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def _still_frames(label_index: int, back: np.ndarray, rng) -> list[np.ndarray]:
    """A still object whose colour is the class: strong red (label 0) or strong blue, on the backdrop."""
    shape, size = SHAPES[int(rng.integers(len(SHAPES)))], rng.uniform(26, 40)
    cx, cy = rng.uniform(25, SIZE - 25), rng.uniform(25, SIZE - 25)
    high, low = rng.uniform(180, 255), rng.uniform(0, 70, 2)
    colour = np.array([high, *low] if label_index == 0 else [*low, high], np.float32)
    return [np.clip(_paint(back, shape_mask(shape, cx, cy, size), colour), 0, 255).astype(np.uint8)] * FRAMES


def _camera_frames(task: str, label_index: int, back: np.ndarray, rng) -> list[np.ndarray]:
    """A camera that pans (over a scene twice the frame's width, wrapping) or zooms (a sawtooth)."""
    wide = np.concatenate([back, backdrop(rng)], axis=1)
    for _ in range(3):  # a few objects in the scene
        x, y, size = rng.uniform(0, 2 * SIZE), rng.uniform(15, SIZE - 15), rng.uniform(14, 30)
        mask = np.concatenate([shape_mask(SHAPES[int(rng.integers(len(SHAPES)))], 0, y, size),
                               np.zeros((SIZE, SIZE), np.float32)], axis=1)
        wide = _paint(wide, np.roll(mask, int(x), axis=1), _colour(rng, wide))
    frames = []
    if task == "pan":
        speed, start = rng.uniform(20, 40), rng.uniform(0, 2 * SIZE)
        direction = -1 if label_index == 0 else 1
        for t in range(FRAMES):
            x = int(round(start + direction * speed * t / FPS)) % (2 * SIZE)
            frames.append(np.roll(wide, -x, axis=1)[:, :SIZE])
    else:  # zooming in is zooming out played backwards
        import torch
        import torch.nn.functional as F

        period, phase = rng.uniform(0.8, 1.2), rng.uniform(0, 1)
        scene = torch.from_numpy(np.ascontiguousarray(wide[:, :SIZE])).permute(2, 0, 1)[None]
        for t in range(FRAMES):
            u = (t / FPS / period + phase) % 1.0
            n = int(round(SIZE * (1.0 - 0.45 * (u if label_index == 0 else 1 - u))))
            o = (SIZE - n) // 2
            view = F.interpolate(scene[:, :, o:o + n, o:o + n], size=(SIZE, SIZE), mode="bilinear", antialias=True)
            frames.append(view[0].permute(1, 2, 0).numpy())
    return [np.clip(f, 0, 255).astype(np.uint8) for f in frames]


# --- files --------------------------------------------------------------------------------------

def write_clip(path: Path, frames: list[np.ndarray], fps: float = FPS) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames[0].shape[:2]
        if stream.height % 2 or stream.width % 2:
            raise ValueError(f"{path}: yuv420p H.264 needs an even width and height, not {stream.width}x{stream.height}")
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)


def task_id(task: str) -> int:
    return SEED_NUMBERS[task]


def clip_rng(task: str, split: str, label_index: int, number: int):
    """The generator of one clip: its scene, object and motion (and nothing else) come from it."""
    return np.random.default_rng([task_id(task), SPLIT_SEEDS[split], label_index, number])


def make_videos(task: str, split: str, folder: Path, per_class: int | None = None) -> None:
    """The clips of one task and split, in folder/<label>/<label>_NN.mp4; existing files are kept."""
    per_class = per_class or (TRAIN_PER_CLASS if split == "train" else HELDOUT_PER_CLASS)
    for label_index, label in enumerate(CLASSES[task]):
        for number in range(per_class):
            path = folder / label / f"{label}_{number:02d}.mp4"
            if not path.exists():
                write_clip(path, clip_frames(task, label_index, clip_rng(task, split, label_index, number)))


def weights_tag(weights: str) -> str:
    return weights if weights in ("random", "imagenet") else Path(weights).stem


def cache_path(root: Path, weights: str, task: str, split: str) -> Path:
    return Path(root) / weights_tag(weights) / task / split / "cache"


def build(root: Path, weights: str = "random", tasks=TASKS, log=print) -> dict:
    """Generate and extract every (task, split) not done yet; {(task, split): cache path}."""
    caches = {}
    for task in tasks:
        for split in SPLIT_SEEDS:
            videos = Path(root) / "videos" / task / split  # videos do not depend on the weights
            cache = cache_path(root, weights, task, split)
            t0 = time.perf_counter()
            make_videos(task, split, videos)
            extract_clips(videos, cache, weights, f"{task}/{split}: videos {time.perf_counter() - t0:.0f} s", log)
            caches[task, split] = cache
    return caches


def extract_clips(videos: Path, cache: Path, weights: str, name: str, log=print) -> None:
    """Extract the clips in `videos` (not done yet) into `cache` with the project's own extract();
    any clip that fails stops the build."""
    from pipeline.extract import ExtractOptions, extract
    from pipeline.inputs import find_videos

    summary = extract(find_videos(videos), cache, ExtractOptions(weights=weights, progress=False))
    if summary.failures:
        raise RuntimeError(f"{name}: {len(summary.failures)} clips failed: {summary.failures[0]}")
    if summary.done:
        log(f"{name}, extracted {summary.done} clips ({summary.frames / max(summary.seconds, 1e-9):.0f} frames/s)"
            f" -> {cache}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/work/taskcache", help="where the videos and caches go")
    p.add_argument("--weights", default="random", help="random | imagenet | a state-dict file (as `extract`)")
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    p.add_argument("--preview", help="write one PNG strip per task and class to this folder, then stop")
    a = p.parse_args(argv)
    if a.preview:
        import matplotlib.pyplot as plt

        out = Path(a.preview)
        out.mkdir(parents=True, exist_ok=True)
        for task in a.tasks:
            for li, label in enumerate(CLASSES[task]):
                frames = clip_frames(task, li, np.random.default_rng([task_id(task), 9, li, 0]))
                plt.imsave(out / f"{task}_{label}.png", np.concatenate(frames[0:30:5], axis=1))
        return 0
    build(Path(a.root), a.weights, a.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
