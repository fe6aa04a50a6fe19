"""How far the stored features are from torchvision's transforms on FFmpeg's RGB frames, per format.

    python benchmarks/feature_error.py [--weights FILE]

For every clip of tests/formats.py (76 codecs and containers, sharp-edged colour content, most at
176x144, and a portrait one), every output frame: the relative error (row norm of the difference over the
reference's) of the CPU box's path (FFmpeg's RGB, torch resize) and of the GPU box's path (the decoded
YUV converted by torch, run here on the CPU). The reference: a plain PyAV decode, the frame on screen
at k / 30, AlexNet_Weights.IMAGENET1K_V1.transforms(), AlexNet. Random-init weights unless --weights.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from formats import FORMATS, write_clip  # noqa: E402
from test_formats import decode, reference, transformed  # noqa: E402

from pipeline.features import FeatureExtractor, load_state_dict  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="an AlexNet state dict (default: random init, seeded)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    state = load_state_dict(Path(args.weights)) if args.weights else None
    extractor = FeatureExtractor.create(state, torch.device("cpu"))
    worst = {"rgb": 0.0, "yuv": 0.0}
    print(f"{'clip':28s} {'frames':>6s} {'cpu box (rgb) max':>18s} {'gpu box (yuv) max':>18s}")
    with tempfile.TemporaryDirectory() as tmp:
        for f in FORMATS:
            path = write_clip(Path(tmp), f)
            rgb, shown = reference(path)
            with torch.inference_mode():
                ref = extractor.model(transformed(rgb[shown]).contiguous(memory_format=torch.channels_last)).numpy()
            row = []
            for handover in ("rgb", "yuv"):
                _, crops = decode(path, handover)
                ours = extractor(crops).numpy()
                error = float((np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)).max())
                worst[handover] = max(worst[handover], error)
                row.append(error)
            print(f"{f.name:28s} {len(shown):6d} {row[0]:18.2e} {row[1]:18.2e}")
    print(f"max_relative_error cpu_box={worst['rgb']:.2e} gpu_box={worst['yuv']:.2e} (bound 1e-2)")


if __name__ == "__main__":
    main()
