"""The CNN: torchvision's AlexNet, its weights, and the preprocessing its weights were trained with."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .safe_load import load_without_code

from .preprocess import CROP_SIZE, RESIZE_SHORT_SIDE

# AlexNet_Weights.IMAGENET1K_V1.transforms(): resize the short side to 256 (bilinear, antialiased),
# centre-crop 224 (both in preprocess.py), scale to [0, 1], normalise with the ImageNet mean and std.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LAYER = "classifier.6"  # the last Linear: the 1000 ImageNet logits
FEATURE_DIM = 1000
RANDOM_SEED = 0  # --weights random is seeded, so a resumed run gives the same features as a clean one

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class WeightsError(Exception):
    """The weights cannot be had or cannot be trusted; the message says what to do."""


def preprocessing_settings() -> dict:
    return {
        "color": "RGB",
        "resize_short_side": RESIZE_SHORT_SIDE,
        "resize": "torchvision's: bilinear, antialiased, on full-size RGB (FFmpeg's YUV -> RGB)",
        "center_crop": CROP_SIZE,
        "scale": "1/255",
        "mean": list(MEAN),
        "std": list(STD),
    }


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_state_dict(path: Path) -> dict:
    """A state dict from a file, never running code from it (weights_only=True)."""
    state = load_without_code(path, WeightsError, "PyTorch state dict")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict (a dict of tensors)")
    return state


def _imagenet_weights_file() -> tuple[Path, str]:
    """Where torchvision's weights API keeps IMAGENET1K_V1: $TORCH_HOME/hub/checkpoints/<file>."""
    from torchvision.models import AlexNet_Weights

    url = AlexNet_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def resolve_weights(weights: str) -> tuple[dict | None, dict]:
    """(state_dict or None for random init, identity) for --weights imagenet|random|FILE."""
    if weights == "random":
        return None, {"name": "random", "seed": RANDOM_SEED}
    if weights == "imagenet":
        path, url = _imagenet_weights_file()
        if not path.exists():
            try:
                # The same download torchvision's weights API makes, to the same place.
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(url, str(path), progress=True)
            except Exception as e:
                raise WeightsError(
                    f"the pretrained AlexNet weights are not on this machine and cannot be downloaded "
                    f"({type(e).__name__}).\n  Put {os.path.basename(url)} (from {url}) at {path},\n"
                    f"  or pass --weights FILE with a saved state dict, or --weights random for random-init weights."
                ) from None
        name = "IMAGENET1K_V1"
    else:
        path, name = Path(weights), "file"
        if not path.is_file():
            raise WeightsError(f"{path}: no such weights file (--weights takes imagenet, random or a file)")
    state = load_state_dict(path)
    build_alexnet(state)  # refuse weights that do not fit now, before any cache is touched
    return state, {"name": name, "file": path.name, "sha256": sha256_of(path)}


def build_alexnet(state_dict: dict | None) -> torch.nn.Module:
    from torchvision.models import alexnet

    if state_dict is None:
        torch.manual_seed(RANDOM_SEED)
        return alexnet(weights=None).eval()
    with torch.device("meta"):  # no random init of 61M weights only to overwrite them
        model = alexnet(weights=None)
    try:
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, assign=True)
    except RuntimeError as e:
        raise WeightsError(f"the weights do not fit torchvision's AlexNet: {str(e).splitlines()[0]}") from None
    return model.eval()


def cpu_lanes(threads: int, batch_size: int) -> int:
    """How many forwards a CPU box runs at once (FeatureExtractor._lanes_start): one per thread,
    as measured on 2 cores, but no lane under 8 rows (on a big box the fully-connected layers'
    weights would be read once per few frames), and one where torch's threads are not OpenMP's
    (its own pool cannot give each lane a thread count of its own)."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return 1
    return max(1, min(threads, batch_size // 8))


# Rows for each CPU lane by default: AlexNet's single-threaded channels_last forward on this project's
# 2-core machine made 65.7 frames/s at 8 rows, 73.1 at 16, 77.5 at 32 and 76.6 at 64 (the
# fully-connected layers' 234 MB of weights are read once per forward, so small batches pay for them).
CPU_ROWS_PER_LANE = 32
MAX_CPU_BATCH = 256  # the two float input buffers stay under 310 MB on boxes with many cores


def default_batch_size(device: torch.device, threads: int) -> int:
    """Frames per CNN batch unless --batch-size says: 512 on a GPU; on a CPU 32 rows for each lane (on
    2 cores 64: two single-threaded forwards of 32 rows, as fast as AlexNet runs there), but at most
    256 in all, so beyond 8 lanes each gets fewer rows (16 at 16 threads: about 6% slower a row here)."""
    if device.type == "cuda":
        return 512
    return min(MAX_CPU_BATCH, CPU_ROWS_PER_LANE * cpu_lanes(threads, CPU_ROWS_PER_LANE * threads))


@dataclass
class FeatureExtractor:
    """uint8 RGB frames (N, 224, 224, 3) -> (N, 1000) float32 features, on one device."""

    model: torch.nn.Module
    device: torch.device
    precision: str = "fp32"
    # On a CPU: independent forwards at once, each on its share of the batch (see `_lanes_start`)
    lanes: int = 1

    def _cpu_input(self, frames: list[torch.Tensor], turn: int = 0) -> torch.Tensor:
        """Room for the chunks as one float NHWC batch, in a buffer kept from batch to batch: on a CPU
        every fresh MB costs page faults (a new 19 MB float batch each step cost 6-8% of the CNN's time
        on this project's 2-core machine), and the uint8 chunks go straight in (`_fill`), without
        joining them first. Two buffers (`turn`): lanes compute one batch while the next is filled."""
        n = sum(len(f) for f in frames)
        buffer = self._buffers[turn]
        if buffer is None or len(buffer) < n or frames[0].shape[1:] != buffer.shape[1:]:
            buffer = self._buffers[turn] = torch.empty((n, *frames[0].shape[1:]), dtype=torch.float32)
        return buffer[:n]

    @staticmethod
    def _fill(buffer: torch.Tensor, frames: list[torch.Tensor], start: int, stop: int) -> None:
        """Rows start..stop of the batch the uint8 chunks make, converted into `buffer` (those rows)."""
        at = 0
        for f in frames:
            lo, hi = max(start, at), min(stop, at + len(f))
            if lo < hi:
                buffer[lo - start:hi - start].copy_(f[lo - at:hi - at])  # uint8 -> float32
            at += len(f)

    def _normalised_forward(self, x: torch.Tensor) -> torch.Tensor:
        # == ((x / 255) - MEAN) / STD, in place: no more float batches than x
        x = x.permute(0, 3, 1, 2).sub_(self.mean).div_(self.std)  # NHWC memory is channels_last NCHW: no copy
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return self.model(x)

    def _lanes_start(self, frames: list[torch.Tensor]) -> list:
        """Start forwards at once, one per lane, each on its share of the rows, each with its share of
        the threads (one each on a small CPU); their futures. Independent forwards beat one forward on
        as many threads on a CPU (153 against 141 frames/s on 2 cores, BENCHMARKS.md): a
        multi-threaded forward waits for its slowest thread at every layer, and a thread that lost its
        core to a decode worker holds all of them up. Started, not waited for: the caller gathers the
        next batch meanwhile, and a lane that finishes early goes on to its share of that one."""
        turn, self._turn = self._turn, self._turn ^ 1
        wait(self._running[turn])  # the batch before the last one, which read this buffer
        x = self._cpu_input(frames, turn)
        bounds = np.linspace(0, len(x), self.lanes + 1).astype(int)

        def lane(i: int) -> torch.Tensor:
            with torch.inference_mode():
                part = x[bounds[i]:bounds[i + 1]]
                self._fill(part, frames, bounds[i], bounds[i + 1])
                return self._normalised_forward(part).float()

        self._running[turn] = [self._lane_pool.submit(lane, i) for i in range(self.lanes)]
        return self._running[turn]

    @staticmethod
    def _joined(running: list) -> torch.Tensor:
        wait(running)  # all of them, even where one failed: none may still write into a buffer
        return torch.cat([r.result() for r in running])

    def __post_init__(self):
        self._buffers, self._turn, self._running = [None, None], 0, [[], []]  # the CPU's input batches (_cpu_input)
        # Made once: a tensor made from host values each batch would wait for the GPU to finish the
        # batch before (a copy from pageable memory synchronizes the stream first).
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1) * 255.0
        self._lane_pool = None
        if self.device.type == "cpu" and self.lanes > 1:
            # Each lane's thread sets its own OpenMP team once. (torch.set_num_threads also sets the
            # count that threads started later begin with: extract() restores it when it ends.)
            self._lane_pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="cnn-lane", initializer=torch.set_num_threads,
                                                 initargs=(max(1, torch.get_num_threads() // self.lanes),))

    def close(self) -> None:
        """Stop the lanes' threads now rather than when the extractor is collected."""
        if self._lane_pool is not None:
            self._lane_pool.shutdown(wait=True, cancel_futures=True)
            self._lane_pool = None

    @classmethod
    def create(cls, state_dict: dict | None, device: torch.device, precision: str = "fp32",
               lanes: int = 1) -> "FeatureExtractor":
        # channels_last is the fastest layout on GPUs and on CPUs alike (1.3x on this project's CPU)
        model = build_alexnet(state_dict).to(device).to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(model=model, device=device, precision=precision, lanes=lanes)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(frames, torch.Tensor):
            frames = [frames]
        if self._lane_pool is not None:
            return self._joined(self._lanes_start(frames))
        if self.device.type == "cpu":
            x = self._cpu_input(frames)
            self._fill(x, frames, 0, len(x))
        else:
            # Chunks are joined on the device: joining pinned chunks on the host would make an unpinned
            # copy, and copies from unpinned memory are neither asynchronous nor as fast.
            x = torch.cat([f.to(self.device, non_blocking=True) for f in frames]).float()
        return self._normalised_forward(x).float()

    @torch.inference_mode()
    def start(self, frames: list[torch.Tensor]) -> "PendingFeatures":
        """Queue a batch and return at once on CUDA and in lanes on a CPU, so the host can file the
        previous batch while this one is computed; with one CPU lane the work is done before this returns."""
        if self._lane_pool is not None:
            return PendingFeatures(None, None, self._lanes_start(frames))
        if self.device.type != "cuda":
            return PendingFeatures(self(frames), None)
        with torch.cuda.device(self.device):  # the event goes on this device's stream, not on cuda:0's
            out = self(frames)
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event(blocking=True)  # a waiting thread sleeps instead of spinning on a core
            done.record()
        return PendingFeatures(host, done)


@dataclass
class PendingFeatures:
    host: torch.Tensor | None  # (N, 1000) float32, on the host once `done` has fired
    done: "torch.cuda.Event | None"
    lanes: list | None = None  # or the futures of a CPU's lanes, whose rows make it

    def numpy(self):
        if self.lanes is not None:
            self.host, self.lanes = FeatureExtractor._joined(self.lanes), None
        if self.done is not None:
            self.done.synchronize()
        return self.host.numpy()
