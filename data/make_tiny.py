"""Write data/tiny: the small committed sample set (2 labels x 2 clips, 2 s, 160x120, H.264).

    python data/make_tiny.py            # needs PyAV (pip install av, part of the extract extra)

A square moves right (`moves_right`) or left (`moves_left`) over a plain backdrop. The files are
seeded and committed, so a fresh clone can run the README's quick start without making them.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS, SECONDS, SQUARE = 160, 120, 30, 2.0, 32


def write_clip(path: Path, direction: int, rng: np.random.Generator) -> None:
    backdrop = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    backdrop[:] = rng.integers(40, 200, size=3)
    colour = rng.integers(0, 256, size=3)
    x0, y, speed = rng.integers(0, WIDTH), int(rng.integers(0, HEIGHT - SQUARE)), 3
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "28"}
        for t in range(int(SECONDS * FPS)):
            frame = backdrop.copy()
            x = (x0 + direction * speed * t) % WIDTH
            cols = (np.arange(SQUARE) + x) % WIDTH  # wraps around the edges
            frame[y:y + SQUARE, cols] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    root = Path(__file__).parent / "tiny"
    rng = np.random.default_rng(0)
    for label, direction in (("moves_left", -1), ("moves_right", +1)):
        for number in range(2):
            write_clip(root / label / f"{label}_{number}.mp4", direction, rng)
    print(f"wrote {sorted(str(p.relative_to(root)) for p in root.rglob('*.mp4'))} under {root}")


if __name__ == "__main__":
    main()
