"""How close `pipeline train` runs to its ceiling, and what the feature cache saves, in one run.

    python benchmarks/bench_train.py [--cache DIR] [--device auto] [--batch-size 64] [--workers N]
                                     [--threads N] [--seconds 3] [--rounds 5] [--e2e-seconds 20] [--no-e2e]
    python benchmarks/bench_train.py --make-cache DIR   # only write the synthetic cache (for rss.py)

Four figures, in training windows/s (30 frames each) of the same WindowLSTM, batch size, AdamW and
gradient clipping that `pipeline train` uses:
  in-memory ceiling  random (B, 30, D) tensors already in memory: the training step and nothing else
  RAM mode           train_one_epoch on make_batches(..., "ram"): what `train --data ram` runs
  stream mode        train_one_epoch on make_batches(..., "stream"): what `train --data stream` runs
  end-to-end         the recipe the cache replaces: AlexNet (torchvision, random init, frozen: eval
                     mode under no_grad, so gradients reach the LSTM only; the cheapest end-to-end
                     variant) run TimeDistributed on each window's 30 frames inside the training
                     loop, frames decoded once and held as uint8 224x224 (in RAM; on a GPU, in GPU
                     memory, which favours it further). Timed over whole batches, at least one.
                     Needs torchvision (the extract extra): without it, or with --no-e2e, it is
                     skipped with a note, and cached_speedup reads "skipped".
The first three run in interleaved rounds (ceiling, RAM, stream, again...), each for --seconds after
a warm-up, so a machine busy with other work slows all three alike; each figure is the median over
rounds. Without --cache a synthetic cache is written first (200 videos x 300 frames of random
float32 features, 2 labels); its files are then in the page cache, as for any cache that fits in
memory after one epoch. Last line:
  train_ratio = RAM / ceiling (target >= 0.9), streaming_ratio = stream / ceiling (target >= 0.7),
  cached_speedup = RAM / end-to-end.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from pipeline.cache import CacheWriter, open_cache
from pipeline.cli import default_threads
from pipeline.model import WindowLSTM
from pipeline.train import (TrainSettings, clip_groups, make_batches, model_args, resolve_device, train_one_epoch,
                            training_step)
from pipeline.windows import cache_windows, default_workers, split_by_video


def write_synthetic_cache(path: Path, videos: int = 200, frames: int = 300, dim: int = 1000) -> Path:
    settings = {"format_version": 1, "feature_dim": dim, "dtype": "float32", "fps": 30.0,
                "model": "synthetic", "layer": "none"}
    rng = np.random.default_rng(0)
    with CacheWriter(path, settings) as cache:
        for i in range(videos):
            writer = cache.begin_video(f"class{i % 2}/clip{i:04d}.mp4", f"class{i % 2}", f"/videos/{i}.mp4",
                                       30.0, frames / 30, frames)
            writer.append(rng.standard_normal((frames, dim), dtype=np.float32), np.arange(frames) / 30.0,
                          np.arange(frames))
            writer.commit()
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_model(s: TrainSettings, dim: int, classes: int, device: torch.device):
    torch.manual_seed(s.seed)
    model = WindowLSTM(**model_args(s, dim, classes)).to(device)  # the model `pipeline train` would build
    return model, torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)


class Ceiling:
    """The training step of train_one_epoch on batches already in memory, with nothing around it."""

    def __init__(self, s: TrainSettings, dim: int, classes: int, device: torch.device):
        self.s, self.device = s, device
        self.model, self.optimizer = new_model(s, dim, classes, device)
        self.groups = clip_groups(self.model)
        self.criterion = nn.CrossEntropyLoss()
        g = torch.Generator().manual_seed(0)
        self.batches = [(torch.randn(s.batch_size, s.window, dim, generator=g).to(device),
                         torch.randint(classes, (s.batch_size,), generator=g).to(device)) for _ in range(4)]

    def run(self, seconds: float) -> float:
        self.model.train()
        sync(self.device)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            x, y = self.batches[done % len(self.batches)]
            training_step(self.model, self.criterion, self.optimizer, x, y, self.s.grad_clip, self.groups)
            done += 1
        sync(self.device)
        return done * self.s.batch_size / (time.perf_counter() - start)


class ForSeconds:
    """The batches of a project loader, epoch after epoch, until `seconds` have passed."""

    def __init__(self, loader, seconds: float):
        self.loader, self.seconds, self.epoch = loader, seconds, 0

    def __iter__(self):
        end = time.perf_counter() + self.seconds
        while True:
            self.loader.set_epoch(self.epoch)
            self.epoch += 1
            for batch in self.loader:
                yield batch
                if time.perf_counter() >= end:
                    return


class ProjectPath:
    """`pipeline train`'s own data path and epoch loop (make_batches + train_one_epoch) in one mode."""

    def __init__(self, s: TrainSettings, cache, train_w, mode: str, classes: int, device: torch.device):
        self.s, self.device = s, device
        (self.loader,), _ = make_batches(cache, [train_w], mode, s.batch_size, [True], s.seed, s.workers, device,
                                         progress=False, jitter=s.jitter)
        self.model, self.optimizer = new_model(s, int(cache.settings["feature_dim"]), classes, device)
        self.criterion = nn.CrossEntropyLoss()

    def run(self, seconds: float) -> float:
        metrics = train_one_epoch(self.model, self.criterion, self.optimizer, ForSeconds(self.loader, seconds),
                                  self.device, self.s.grad_clip)
        return metrics["train_windows_per_s"]


def end_to_end(s: TrainSettings, dim: int, classes: int, device: torch.device, seconds: float) -> tuple[float, int]:
    """(windows/s, batches timed) of AlexNet on every frame of every window inside the training loop."""
    from torchvision.models import alexnet

    torch.manual_seed(s.seed)
    cnn = alexnet(weights=None).to(device).eval()  # frozen: no gradients, no dropout
    if device.type == "cuda":  # as `pipeline extract` runs it: its fastest fp32 settings
        cnn = cnn.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    model, optimizer = new_model(s, dim, classes, device)
    criterion = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (600, 224, 224, 3), dtype=torch.uint8, generator=g).to(device)  # 20 s of frames
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255.0
    steps = torch.arange(s.window, device=device)

    def normalise(frames: torch.Tensor) -> torch.Tensor:  # as pipeline.features does it
        x = (frames.permute(0, 3, 1, 2).float() - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x

    def step(batch_size: int) -> None:
        starts = torch.randint(0, len(video) - s.window + 1, (batch_size,), device=device)
        frames = video[(starts[:, None] + steps).view(-1)]  # (B * 30, 224, 224, 3)
        with torch.no_grad():  # TimeDistributed(AlexNet), 512 frames at a time: bounded memory, same speed
            features = torch.cat([cnn(normalise(chunk)) for chunk in frames.split(512)]).view(batch_size, s.window, -1)
        y = torch.randint(classes, (batch_size,), device=device)
        training_step(model, criterion, optimizer, features, y, s.grad_clip)  # what train_one_epoch does

    model.train()
    step(2)  # warm-up: allocator, one-off initialisation
    if device.type == "cuda":
        step(s.batch_size)  # and cudnn's autotuning at the timed size: a second on a GPU, a minute on a CPU
    sync(device)
    done, start = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - start < seconds:
        step(s.batch_size)
        sync(device)
        done += 1
    return done * s.batch_size / (time.perf_counter() - start), done


def load() -> str:
    try:
        return "load average " + " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "load average unknown"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", help="a feature cache to train from (default: a synthetic one in a temp folder)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    parser.add_argument("--workers", type=int, default=None, help="stream mode's readers (default: as train)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--e2e-seconds", type=float, default=20.0, help="time at least this long end-to-end")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end figure (needs torchvision)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: as `pipeline train`, one less than the cores, at least 1)")
    parser.add_argument("--videos", type=int, default=200, help="videos of the synthetic cache (default 200)")
    parser.add_argument("--frames", type=int, default=300, help="frames per video of the synthetic cache (default 300)")
    parser.add_argument("--make-cache", metavar="DIR", help="write the synthetic cache to DIR and exit")
    args = parser.parse_args(argv)
    if args.make_cache:
        write_synthetic_cache(Path(args.make_cache), args.videos, args.frames)
        return
    torch.set_num_threads(args.threads or default_threads("train") or torch.get_num_threads())
    e2e_note = None
    if args.no_e2e:
        e2e_note = "skipped (--no-e2e)"
    elif importlib.util.find_spec("torchvision") is None:
        e2e_note = 'skipped: torchvision is not installed (pip install -e ".[extract]" to measure it)'

    device = resolve_device(args.device)
    s = TrainSettings(batch_size=args.batch_size, device=str(device), workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        if args.cache:
            cache_path = Path(args.cache)
        else:
            started = time.perf_counter()
            cache_path = write_synthetic_cache(Path(tmp) / "cache", args.videos, args.frames)
            print(f"wrote a synthetic cache of {args.videos} videos x {args.frames} frames x 1000 float32 in "
                  f"{time.perf_counter() - started:.1f} s")
        cache = open_cache(cache_path)
        ids = [v for v in cache.video_ids if cache.num_frames(v) > 0]
        labels = sorted({cache.label(v) for v in ids})
        train_ids, _ = split_by_video(ids, [cache.label(v) for v in ids], s.val_fraction, s.seed)
        train_w = cache_windows(cache, train_ids, {l: i for i, l in enumerate(labels)}, s.window, s.stride)
        dim = int(cache.settings["feature_dim"])
        workers = default_workers(device) if s.workers is None else s.workers
        print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"device {device}; batch {s.batch_size}; {len(train_ids)} training videos, {len(train_w)} windows "
              f"of {s.window} x {dim}; stream workers {workers}; {load()}")

        runs = {"in-memory ceiling": Ceiling(s, dim, len(labels), device),
                "RAM mode": ProjectPath(s, cache, train_w, "ram", len(labels), device),
                "stream mode": ProjectPath(s, cache, train_w, "stream", len(labels), device)}
        for run in runs.values():
            run.run(1.0)  # warm-up
        rates = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, run in runs.items():
                rates[name].append(run.run(args.seconds))
            print(f"round {r + 1}: " + ", ".join(f"{name} {rates[name][-1]:.0f}" for name in runs) + " windows/s")
        median = {name: statistics.median(v) for name, v in rates.items()}
        for name in runs:
            print(f"{name + ':':19s}{median[name]:9.1f} windows/s (median of {args.rounds} x {args.seconds:g} s)")
        del runs
        cache.close()

    if e2e_note is None:
        e2e, batches = end_to_end(s, dim, len(labels), device, args.e2e_seconds)
        print(f"{'end-to-end:':19s}{e2e:9.2f} windows/s (AlexNet frozen + LSTM, {batches} batches of {s.batch_size})")
        speedup = f"{median['RAM mode'] / e2e:.0f}"
    else:
        print(f"{'end-to-end:':19s}{e2e_note}")
        speedup = "skipped"
    print(f"{load()}; ratios: RAM / ceiling, stream / ceiling, RAM / end-to-end")
    print(f"train_ratio={median['RAM mode'] / median['in-memory ceiling']:.3f} "
          f"streaming_ratio={median['stream mode'] / median['in-memory ceiling']:.3f} "
          f"cached_speedup={speedup}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
