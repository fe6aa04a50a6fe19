"""Feature error of each --precision on CUDA, against fp32 on the CPU, on the same videos.

    python benchmarks/precision_check.py       (needs a CUDA device)

Prints, per precision, the mean and max over frames of |f - f_cpu| / |f_cpu| (L2 norms per frame).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_extract import make_videos  # noqa: E402

import pipeline  # noqa: E402
from pipeline.extract import ExtractOptions, extract  # noqa: E402
from pipeline.inputs import find_videos  # noqa: E402


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("precision_check needs a CUDA device")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_videos(tmp / "videos", "320x240", 4, 2.0)
        sources = find_videos(tmp / "videos")
        runs = {"cpu fp32": ("cpu", "fp32"), "cuda fp32 (tf32 matmuls)": ("cuda", "fp32"),
                "cuda fp16": ("cuda", "fp16"), "cuda bf16": ("cuda", "bf16")}
        for name, (device, precision) in runs.items():
            extract(sources, tmp / name.replace(" ", "_"), ExtractOptions(
                weights="random", device=device, precision=precision, workers=4, progress=False))
        with pipeline.open_cache(tmp / "cpu_fp32") as ref:
            for name in list(runs)[1:]:
                errors = []
                with pipeline.open_cache(tmp / name.replace(" ", "_")) as c:
                    for video_id in ref.video_ids:
                        a, b = c.features(video_id), ref.features(video_id)
                        errors.append(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1))
                errors = np.concatenate(errors)
                print(f"{name:26s} relative error vs cpu fp32: mean {errors.mean():.2e}  max {errors.max():.2e}"
                      f"  ({len(errors)} frames)")


if __name__ == "__main__":
    main()
