"""The default model on order-only tasks it was never tuned on, at the sizes, frame rates and
lengths users have: a check of the claim that it learns order on new scenes, as a new user would
make it (issue 11). The suite the model was chosen on (temporal_tasks.py) is all 112x112, 3 s, 30 fps.
One variant (`tint`) has its class in what stays put instead: a check of the scene head.

    python benchmarks/unseen_tasks.py [--root /work/unseen] [--variants ...] [--seeds 0 1 2] [--config NAME]

Each variant: per-clip textured backdrops and objects as in temporal_tasks.py, 36 training clips and
12 held-out clips a class from other seeds, H.264; `extract()` with random-init weights (30 fps by timestamp,
torchvision's transforms), then `fit()` with the default TrainSettings (or a bench_models.py config,
`--config`) and `evaluate_run()` on the held-out cache, per seed. Prints each variant's held-out video
accuracy. A run already in ROOT is resumed, so an interrupted one is finished and one made with other
settings is refused, never scored as if it were this one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import temporal_tasks as tt  # noqa: E402
from bench_models import CONFIGS, settings_for  # noqa: E402

# name: (width, height, source fps, seconds, classes, what it shows)
VARIANTS = {
    "updown": (320, 240, 25, 4.0, ("up", "down"), "an object moving up or down at constant speed, wrapping"),
    "orbit": (160, 160, 30, 2.0, ("cw", "ccw"), "an object circling a point clockwise or counter-clockwise"),
    "fill": (224, 224, 24, 3.0, ("fills", "empties"), "a box filling or emptying (sawtooth, 0.8-1.2 s)"),
    "widemotion": (640, 360, 60, 2.0, ("left", "right"),
                   "an object moving left or right across a 16:9 frame, much of it outside the centre crop"),
    "growsmall": (176, 144, 30, 5.0, ("grows", "shrinks"), "two objects growing or shrinking, a small source"),
    "bounce": (256, 192, 30, 3.0, ("bounces", "reversed"),
               "a ball dropped, bouncing lower each time (1.2-1.6 s), or that played backwards"),
    # more than two classes (each class's clips as many as above)
    "compass": (320, 240, 30, 3.0, ("left", "right", "up", "down"),
                "four classes: an object moving left, right, up or down, wrapping"),
    "pulse": (240, 180, 15, 4.0, ("grows", "shrinks", "pulses"),
              "three classes at 15 fps (each frame shown twice at 30): an object growing, shrinking, or growing "
              "then shrinking (0.8-1.2 s)"),
    # the class in what stays put, order irrelevant (the scene head's check; not in the order-only mean)
    "tint": (320, 180, 25, 3.0, ("warm", "cool"),
             "appearance: a warm or a cool scene (the backdrop tinted), an object moving either way in both"),
}
PER_CLASS = {"train": tt.TRAIN_PER_CLASS, "heldout": tt.HELDOUT_PER_CLASS}
# Each variant's seed number, fixed: a variant added later changes no other's clips
SEED_NUMBERS = {"updown": 100, "orbit": 101, "fill": 102, "widemotion": 103, "growsmall": 104, "bounce": 105,
                "compass": 106, "pulse": 107, "tint": 108}


def clip_frames(variant: str, label_index: int, rng) -> tuple[list[np.ndarray], int]:
    """The uint8 RGB frames of one clip and their frame rate."""
    w, h, fps, seconds = VARIANTS[variant][:4]
    back = tt.backdrop(rng, w, h)
    shape, colour = tt.SHAPES[int(rng.integers(len(tt.SHAPES)))], tt._colour(rng, back)
    scale = min(w, h) / tt.SIZE  # object sizes and speeds as the suite's, relative to the frame
    size = rng.uniform(22, 34) * scale
    sign = 1 if label_index == 0 else -1

    def mask(cx, cy, d, name=shape):
        return tt.shape_mask(name, cx, cy, d, width=w, height=h, wrap=False)

    if variant == "updown":
        cx, y0, speed = rng.uniform(size, w - size), rng.uniform(0, h), rng.uniform(35, 65) * scale
    elif variant == "orbit":
        radius, omega, phase = rng.uniform(0.2, 0.35) * min(w, h), rng.uniform(2.0, 4.0), rng.uniform(0, 2 * np.pi)
        ox, oy = w / 2 + rng.uniform(-10, 10), h / 2 + rng.uniform(-10, 10)
        size = rng.uniform(16, 26) * scale
    elif variant == "fill":
        bx, by = rng.uniform(0.25, 0.75) * w, rng.uniform(0.3, 0.7) * h
        bw, bh = rng.uniform(30, 60) * scale, rng.uniform(50, 80) * scale
        period, phase = rng.uniform(0.8, 1.2), rng.uniform(0, 1)
        y, x = tt._grid(w, h)
        inside = (np.abs(x - bx) <= bw / 2) & (np.abs(y - by) <= bh / 2)
        outline = ((np.abs(x - bx) <= bw / 2 + 3) & (np.abs(y - by) <= bh / 2 + 3) & ~inside).astype(np.float32)
    elif variant == "widemotion":
        cy, x0, speed = rng.uniform(size, h - size), rng.uniform(0, w), rng.uniform(100, 200) * scale / 3  # (33-67 px/s at the suite's size)
    elif variant == "growsmall":
        objects = [(rng.uniform(0.2, 0.8) * w, rng.uniform(0.25, 0.75) * h, tt.SHAPES[int(rng.integers(len(tt.SHAPES)))],
                    tt._colour(rng, back), rng.uniform(24, 36), rng.uniform(0, 1)) for _ in range(2)]
    elif variant == "bounce":
        cx, period, phase = rng.uniform(size, w - size), rng.uniform(1.2, 1.6), rng.uniform(0, 1)
        size = rng.uniform(16, 26) * scale
    elif variant == "compass":
        dx, dy = ((-1, 0), (1, 0), (0, -1), (0, 1))[label_index]
        x0 = rng.uniform(0, w) if dx else rng.uniform(size, w - size)  # (across the frame, never off its side)
        y0 = rng.uniform(0, h) if dy else rng.uniform(size, h - size)
        speed = rng.uniform(35, 65) * scale
    elif variant == "pulse":
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        period, phase = rng.uniform(0.8, 1.2), rng.uniform(0, 1)
    elif variant == "tint":  # the backdrop's colours pulled towards orange or towards blue, at random strength
        strength = rng.uniform(0.25, 0.45)
        towards = np.array([230, 140, 40] if label_index == 0 else [40, 120, 230], np.float32)
        back = (1 - strength) * back + strength * towards
        cy, x0, speed = rng.uniform(size, h - size), rng.uniform(0, w), rng.uniform(35, 65) * scale
        sign = 1 if rng.uniform() < 0.5 else -1  # which way the object goes: not the class
    frames = []
    for t in range(int(round(fps * seconds))):
        s = t / fps
        frame = back
        if variant == "updown":
            frame = tt._paint(back, mask(cx, (y0 - sign * speed * s) % (h + size) - size / 2, size), colour)
        elif variant == "orbit":
            a = phase + sign * omega * s
            frame = tt._paint(back, mask(ox + radius * np.cos(a), oy + radius * np.sin(a), size), colour)
        elif variant == "fill":
            u = (s / period + phase) % 1.0
            level = u if label_index == 0 else 1 - u
            liquid = (inside & (y >= by + bh / 2 - level * bh)).astype(np.float32)
            frame = tt._paint(tt._paint(back, outline, 255 - colour), liquid, colour)
        elif variant in ("widemotion", "tint"):
            frame = tt._paint(back, mask((x0 - sign * speed * s) % (w + size) - size / 2, cy, size), colour)
        elif variant == "growsmall":
            for x, y0, name, c, period_frames, ph in objects:
                ramp = (t / period_frames + ph) % 1.0
                grown = ramp if label_index == 0 else 1 - ramp
                frame = tt._paint(frame, mask(x, y0, (6 + grown * 30) * scale, name), c)
        elif variant == "bounce":  # hops of 0.4, 0.3, 0.2, 0.1 of the period, each lower: a fall, then parabolas
            u = (s / period + phase) % 1.0
            u = u if label_index == 0 else 1 - u
            start, lift = 0.0, 0.0
            for hop, (length, height) in enumerate(zip((0.4, 0.3, 0.2, 0.1), (1.0, 0.6, 0.36, 0.2))):
                if u < start + length:
                    p = (u - start) / length
                    lift = height * (1 - p * p) if hop == 0 else height * 4 * p * (1 - p)
                    break
                start += length
            frame = tt._paint(back, mask(cx, h - size / 2 - 4 - lift * (h - size - 16), size, "disc"), colour)
        elif variant == "compass":
            x = (x0 + dx * speed * s) % (w + size) - size / 2 if dx else x0
            y = (y0 + dy * speed * s) % (h + size) - size / 2 if dy else y0
            frame = tt._paint(back, mask(x, y, size), colour)
        elif variant == "pulse":
            u = (s / period + phase) % 1.0
            grown = (u, 1 - u, 1 - abs(2 * u - 1))[label_index]
            frame = tt._paint(back, mask(cx, cy, (6 + grown * 38) * scale), colour)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames, fps


def build(root: Path, variant: str) -> dict:
    """Generate (the clips not there yet) and extract both splits of `variant`; {split: cache path}."""
    caches = {}
    for split_index, (split, per_class) in enumerate(PER_CLASS.items()):
        videos = root / "videos" / variant / split
        for label_index, label in enumerate(VARIANTS[variant][4]):
            for number in range(per_class):
                path = videos / label / f"{label}_{number:02d}.mp4"
                if not path.exists():
                    rng = np.random.default_rng([SEED_NUMBERS[variant], split_index, label_index, number])
                    tt.write_clip(path, *clip_frames(variant, label_index, rng))
        caches[split] = root / "cache" / variant / split
        tt.extract_clips(videos, caches[split], "random", f"{variant}/{split}")
    return caches


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/work/unseen", help="where the videos, caches and runs go")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--config", choices=list(CONFIGS), metavar="NAME",
                   help="a config of bench_models.py instead of the default TrainSettings "
                        "(e.g. today: the model before issue 11)")
    a = p.parse_args(argv)
    from dataclasses import replace

    from pipeline.train import TrainSettings, evaluate_run, fit

    root, rows = Path(a.root), []
    for variant in a.variants:
        caches = build(root, variant)
        scores = []
        for seed in a.seeds:
            run = root / "runs" / f"{a.config + '-' if a.config else ''}{variant}-{seed}"
            settings = (settings_for(a.config, str(caches["train"]), seed, TrainSettings.epochs) if a.config
                        else TrainSettings(cache=str(caches["train"]), seed=seed, device="cpu"))
            fit(replace(settings, out=str(run)), resume=(run / "last.pt").exists(), progress=False)
            scores.append(evaluate_run(run, caches["heldout"], device="cpu")["video_accuracy"])
        w, h, fps, seconds, classes, what = VARIANTS[variant]
        rows.append(f"| `{variant}` | {w}x{h}, {fps} fps, {seconds:g} s | {what} | "
                    f"{' / '.join(f'{x:.3f}' for x in scores)} | **{statistics.mean(scores):.2f}** |")
        print(rows[-1], flush=True)
    print("\n| variant | source | what it shows | held-out video accuracy, seeds " + " / ".join(map(str, a.seeds))
          + " | mean |\n|---|---|---|---|---|\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
