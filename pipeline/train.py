"""Stage two: train the LSTM on windows of cached features, evaluate a run, load a run to predict.

A run folder (RUN_DIR) holds:
  split.json     which videos train and which validate (split by video, stratified, fixed by the seed)
  last.pt        the checkpoint after the latest epoch: what --resume continues from
  best.pt        the checkpoint of the best epoch: highest validation window accuracy, then the
                 latest epoch (see _rank)
  metrics.jsonl  one JSON object per epoch
  curves.png     training curves; confusion.png: the best epoch's validation confusion matrix

A checkpoint is a plain dict: model and optimizer state_dicts, the epochs done, the settings (as a
dict), the label names, the normalisation (also buffers of the model), the cache's feature
settings, the split and the metrics history. It holds only tensors and plain containers, so it
loads with torch.load(weights_only=True), which refuses anything that could run code.

Every file is written atomically (temporary file in the same folder, fsync, rename), so `kill -9`
leaves the old file or the new one. Batches are shuffled and dropout is seeded by (seed, epoch)
alone, and the learning rate is constant, so `--resume` (also with more --epochs) reproduces an
uninterrupted run without saving RNG states.
"""

from __future__ import annotations

import atexit
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import devices
from .cache import FeatureCache, open_cache, settings_differences, write_atomic, write_json_atomic
from .model import INPUTS, LEGACY_ARGS, POOLS, WindowLSTM
from .safe_load import load_without_code
from .windows import (GPU_FRACTION, EpochBatches, RamBatches, StreamBatches, Windows, cache_windows, choose_data_mode,
                      default_workers, feature_stats, load_features, split_by_video, window_starts)

CHECKPOINT_FORMAT = 1
EVAL_BATCH = 256  # windows per batch when no gradients are kept


class TrainError(Exception):
    """A problem with a run or its inputs that the user can fix; the message says what."""


@dataclass
class TrainSettings:
    cache: str = ""  # the feature cache (stage one's output); stored resolved, `evaluate` finds it there
    out: str = ""  # the run folder
    window: int = 30  # frames per window: one second at 30 fps
    stride: int = 15  # frames between window starts: consecutive windows overlap by half
    jitter: bool = True  # training windows move by a random 0..stride-1 frames each epoch (windows.EpochBatches)
    epochs: int = 20  # the ablation's runs peaked by epoch 5-15; best.pt keeps the best epoch anyway
    # The model (model.WindowLSTM); defaults chosen by benchmarks/bench_models.py (BENCHMARKS.md,
    # "Stage two: choosing the model"): an LSTM of 64 on the temporal differences of the normalised
    # features beside their window-centred values at 0.3 weight, no input projection, head on its last state.
    hidden: int = 64  # LSTM width; the 2000 inputs -> 4*64 gates are most of the compute on a CPU
    dropout: float = 0.0  # before the classifier (and after the projection, if any)
    input_dropout: float = 0.0  # on the normalised input features
    feature_dropout: float = 0.0  # whole LSTM inputs dropped per window (model.py); 0: BENCHMARKS.md, 11th-12th rounds
    project: int | None = None  # None: the LSTM reads the features; N: Linear(D -> N) + GELU first (0: N = hidden)
    pool: str = "last"  # what the classifier reads: last | mean | mean+last (of the LSTM's outputs)
    head_norm: bool = False  # LayerNorm before the classifier
    layers: int = 1  # stacked LSTM layers
    bidirectional: bool = False
    inputs: str = "deltas+centered"  # x[t] - x[t-1] beside the features less their window mean (model.py)
    centered_weight: float = 0.3  # the centred half's weight (and +mean's window mean): at 1 held-out fade and zoom fall (model.py)
    scene_head: bool = True  # a second classifier that also reads the window's mean features; validation picks (validate)
    lr: float = 1e-3  # constant: no schedule, so extending a run with --resume matches a longer run
    weight_decay: float = 0.01  # AdamW's decoupled decay; mild, the model is small
    grad_clip: float = 1.0  # max global gradient norm: an LSTM's rare gradient spike cannot undo an epoch
    batch_size: int = 64
    val_fraction: float = 0.2  # share of each label's videos held out (see windows.split_by_video)
    seed: int = 0  # fixes the split, the initial weights, the batch order and dropout
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    data: str = "auto"  # ram | stream | auto: ram when all features take < 40% of the free memory
    workers: int | None = None  # stream mode's reader processes; None: see windows.default_workers


# Settings a resumed run may change: they do not change what is computed.
RESUMABLE = {"cache", "out", "epochs", "device", "data", "workers"}
# Settings that are arguments of WindowLSTM (besides feature_dim and num_classes).
MODEL_SETTINGS = ("hidden", "dropout", "input_dropout", "feature_dropout", "project", "pool", "head_norm", "layers",
                  "bidirectional", "inputs", "centered_weight", "scene_head")


@dataclass
class FitResult:
    out: str
    device: str
    data: str
    start_epoch: int  # epochs done before this call (0 unless resumed)
    best: dict | None  # epoch and validation metrics of best.pt
    history: list[dict] = field(default_factory=list)


# --- files --------------------------------------------------------------------------------------

def save_checkpoint(path: Path, checkpoint: dict) -> None:
    buf = io.BytesIO()
    torch.save(_to_cpu(checkpoint), buf)  # CPU tensors: a GPU run's checkpoint loads on a laptop as is
    write_atomic(path, buf.getvalue())


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `pipeline train`, loaded with weights_only=True: never runs code."""
    checkpoint = load_without_code(path, TrainError, "checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a checkpoint of `pipeline train` (format {CHECKPOINT_FORMAT})")
    return checkpoint


def resolve_device(name: str | torch.device) -> torch.device:
    return devices.resolve_device(name, TrainError, auto_mps=True)  # the LSTM is small enough for any device


# --- settings -----------------------------------------------------------------------------------

def resume_settings(out: str | os.PathLike, given: dict) -> TrainSettings:
    """Settings for `train --resume`: the run's own, updated with the options given on the command line."""
    last = Path(out) / "last.pt"
    if not last.exists():
        raise TrainError(f"{out}: no run to resume (no last.pt); to start one, run the command without --resume")
    saved = _saved_settings(load_checkpoint(last))
    known = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{**{k: v for k, v in saved.items() if k in known}, **given})


def _with_legacy_model(args: dict) -> dict:
    """Settings or model_args of a checkpoint, with the model arguments it predates filled in as the
    model it was trained with (model.LEGACY_ARGS): runs from before these arguments existed load and
    resume as they were. Runs from before centered_weight read the centred features unweighted, and
    runs from before scene_head had none, nor feature_dropout."""
    args = {**LEGACY_ARGS, **args} if "pool" not in args else args
    return {"centered_weight": 1.0, "scene_head": False, "feature_dropout": 0.0, **args}


def _saved_settings(checkpoint: dict) -> dict:
    """A checkpoint's training settings, with those it predates as it was trained (no jitter)."""
    return {"jitter": False, **_with_legacy_model(checkpoint["settings"])}


def training_differences(checkpoint: dict, s: TrainSettings) -> list[str]:
    """The settings `s` does not share with the run of `checkpoint` and that `--resume` may not change."""
    saved = _saved_settings(checkpoint)
    return [f"{k}: {saved.get(k)!r} (run) != {v!r} (now)"
            for k, v in asdict(s).items() if k not in RESUMABLE and saved.get(k) != v]


def model_args(s: TrainSettings, feature_dim: int, num_classes: int) -> dict:
    return {"feature_dim": feature_dim, "num_classes": num_classes, **{k: getattr(s, k) for k in MODEL_SETTINGS}}


def _check(s: TrainSettings) -> None:
    problems = [
        (s.window >= 1, f"--window must be at least 1, not {s.window}"),
        (s.stride >= 1, f"--stride must be at least 1, not {s.stride}"),
        (s.epochs >= 0, f"--epochs must be at least 0, not {s.epochs}"),
        (s.hidden >= 1, f"--hidden must be at least 1, not {s.hidden}"),
        (s.batch_size >= 1, f"--batch-size must be at least 1, not {s.batch_size}"),
        (s.lr > 0, f"--lr must be positive, not {s.lr}"),
        (0 <= s.val_fraction < 1, f"--val-fraction must be in [0, 1), not {s.val_fraction}"),
        (s.pool in POOLS, f"--pool must be one of {', '.join(POOLS)}, not {s.pool!r}"),
        (s.inputs in INPUTS, f"--inputs must be one of {', '.join(INPUTS)}, not {s.inputs!r}"),
        (s.layers >= 1, f"--layers must be at least 1, not {s.layers}"),
        (math.isfinite(s.centered_weight) and s.centered_weight >= 0,
         f"centered_weight must be a finite number >= 0, not {s.centered_weight}"),
        (0 <= s.dropout < 1 and 0 <= s.input_dropout < 1 and 0 <= s.feature_dropout < 1,
         "dropouts must be in [0, 1)"),
        (s.data in ("auto", "ram", "stream"), f"--data must be auto, ram or stream, not {s.data!r}"),
        (s.workers is None or s.workers >= 0, f"--workers must be at least 0, not {s.workers}"),
    ]
    for ok, message in problems:
        if not ok:
            raise TrainError(message)


def _usable_videos(cache: FeatureCache) -> list[str]:
    return [v for v in cache.video_ids if cache.num_frames(v) > 0]  # an empty video has no window


def _feature_differences(checkpoint: dict, cache: FeatureCache) -> str:
    diffs = settings_differences(checkpoint["feature_settings"], cache.settings)
    if not diffs:
        return ""
    return (f"{cache.path}: its features were made with other settings than the run's training cache "
            f"(cache = training cache, now = {cache.path}):\n  " + "\n  ".join(diffs))


# --- data ---------------------------------------------------------------------------------------

def make_batches(cache: FeatureCache, windows: list[Windows], mode: str, batch_size: int, shuffle: list[bool],
                 seed: int, workers: int | None, device: torch.device, progress: bool, rank: int = 0, world: int = 1,
                 jitter: bool = False):
    """(loaders, video_features): one batch iterable per Windows (train, validation, ...), all held in
    memory or all streamed, and a function giving one video's (T, D) features (for normalisation).
    Under data-parallel training (world > 1) the shuffled loaders give this rank its share; with
    `jitter`, their windows move by a random part of the stride each epoch (windows.EpochBatches)."""
    sizes = [batch_size if sh else max(batch_size, EVAL_BATCH) for sh in shuffle]

    def batches(w: Windows, size: int, sh: bool) -> EpochBatches:
        return EpochBatches(w, size, sh, seed, rank, world, jitter) if sh else EpochBatches(w, size, sh, seed)

    if mode == "ram":
        ids = [v for w in windows for v in w.ids]
        features, offsets = load_features(cache, ids, progress)
        cache.close()  # every feature is in memory now: let go of the open HDF5 files (about 0.5 MB each)
        if device.type == "cuda" and features.numel() * 4 < GPU_FRACTION * torch.cuda.mem_get_info(device)[0]:
            features = features.to(device)  # gathered on the GPU: no host-to-device copy per batch
        loaders, at = [], 0
        for w, size, sh in zip(windows, sizes, shuffle):
            loaders.append(RamBatches(features, offsets[at:at + len(w.ids)], w, batches(w, size, sh)))
            at += len(w.ids)
        rows = dict(zip(ids, zip(offsets, (int(n) for w in windows for n in w.lengths))))
        return loaders, lambda vid: features[rows[vid][0]:rows[vid][0] + rows[vid][1]].cpu().numpy()
    workers = default_workers(device) if workers is None else workers
    loaders = [StreamBatches(cache, w, batches(w, size, sh), workers, device.type == "cuda")
               for w, size, sh in zip(windows, sizes, shuffle)]
    return loaders, cache.features


# --- training -----------------------------------------------------------------------------------

def clip_groups(model) -> list[list[nn.Parameter]]:
    """The parameters whose gradient norm is clipped together: all of them, or, with a scene head, its
    own apart from the rest, so that its gradients never scale the LSTM's steps (which then train
    exactly as without it). `model` may be wrapped in DistributedDataParallel."""
    scene_head = getattr(model, "module", model).scene_head
    if scene_head is None:
        return [list(model.parameters())]
    own = {id(p) for p in scene_head.parameters()}
    return [[p for p in model.parameters() if id(p) not in own], list(scene_head.parameters())]


def training_step(model, criterion, optimizer, x, y, grad_clip: float | None, groups=None):
    """One optimiser step on a batch; returns the order head's logits and loss (what training reports:
    with a scene head, the step minimises the sum of both heads' losses). `groups`: clip_groups(model)."""
    if getattr(model, "module", model).scene_head is not None:
        logits, scene_logits = model(x, both_heads=True)
        loss = criterion(logits, y)
        total = loss + criterion(scene_logits, y)
    else:
        logits = model(x)
        loss = total = criterion(logits, y)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if grad_clip:
        for group in groups or clip_groups(model):
            nn.utils.clip_grad_norm_(group, grad_clip)
    optimizer.step()
    return logits, loss


def train_one_epoch(model, criterion, optimizer, loader, device, grad_clip: float | None = None,
                    progress: bool = False, desc: str = "train") -> dict:
    model.train()
    total_loss = torch.zeros((), device=device)  # summed on the device: no sync per batch
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen, t0 = 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False, dynamic_ncols=True)
    groups = clip_groups(model)
    for step, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits, loss = training_step(model, criterion, optimizer, x, y, grad_clip, groups)
        total_loss += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if progress and step % 20 == 0:
            bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
    seconds = time.perf_counter() - t0
    if _world() > 1:  # every rank saw its share: report the whole epoch
        import torch.distributed as dist

        totals = torch.stack([total_loss.double(), correct.double(), torch.tensor(float(seen), device=device)])
        dist.all_reduce(totals)
        total_loss, correct, seen = totals[0], totals[1], int(totals[2].item())
    return {"train_loss": total_loss.item() / max(seen, 1), "train_acc": correct.item() / max(seen, 1),
            "train_windows_per_s": seen / max(seconds, 1e-9)}


@torch.inference_mode()
def window_predictions(model, loader, device, both_heads: bool = False):
    """(N, C) float32 logits on the CPU of every window of `loader`, in its order (not shuffled); with
    both_heads (a model with a scene head), the pair (order head's, scene head's) from the one pass."""
    model.eval()
    heads = [[], []] if both_heads else [[]]
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        for part, logits in zip(heads, model(x, both_heads=True) if both_heads else (model(x),)):
            part.append(logits.float().cpu())
    out = [torch.cat(part) if part else torch.zeros(0, model.head[-1].out_features) for part in heads]
    return tuple(out) if both_heads else out[0]


def window_and_video_metrics(logits: torch.Tensor, windows: Windows, num_classes: int) -> dict:
    """Window accuracy, video accuracy (a video's prediction: argmax of the mean of its windows'
    logits) and the video-level confusion matrix (rows: true class, columns: predicted)."""
    targets = torch.as_tensor(windows.targets)
    video = torch.as_tensor(windows.video)
    window_acc = (logits.argmax(1) == targets).double().mean().item() if len(targets) else float("nan")
    sums = torch.zeros(len(windows.ids), num_classes).index_add_(0, video, logits)
    counts = torch.bincount(video, minlength=len(windows.ids))
    has = counts > 0
    pred = (sums[has] / counts[has, None]).argmax(1)
    true = torch.as_tensor(windows.video_labels)[has]
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((true, pred), torch.ones_like(true), accumulate=True)
    video_acc = (pred == true).double().mean().item() if len(true) else float("nan")
    return {"window_accuracy": window_acc, "video_accuracy": video_acc, "confusion": confusion.tolist(),
            "videos": int(has.sum()), "windows": len(targets)}


def evaluate(model, criterion, loader, windows: Windows, num_classes: int, device, logits=None) -> dict:
    """Validation loss, window and video accuracy, and confusion matrix of one epoch (of `logits`, the
    windows' predictions, if given)."""
    logits = window_predictions(model, loader, device) if logits is None else logits
    m = window_and_video_metrics(logits, windows, num_classes)
    loss = criterion(logits, torch.as_tensor(windows.targets)).item()
    return {"val_loss": loss, "val_window_acc": m["window_accuracy"], "val_video_acc": m["video_accuracy"],
            "val_confusion": m["confusion"]}


# How much higher the scene head's validation window accuracy must be for it to predict. On the suite
# (BENCHMARKS.md, "Eighth round") its best epoch beat the order head's by at most 0.09 on order tasks, where
# it only adds what can be memorised, and by 0.24-0.50 on a still object's colour.
SCENE_MARGIN = 0.15


def validate(model, criterion, loader, windows: Windows, num_classes: int, device) -> dict:
    """evaluate() of the classifier that predicts. With a scene head both are scored, and the scene head
    is chosen (model.reads_scene) only where its window accuracy beats the order head's by SCENE_MARGIN:
    with few validation videos, a head that also reads the scene can look better by chance, and on order
    tasks it then holds worse on new clips. `rank_window_acc` (what _rank compares across epochs) is the
    chosen head's accuracy, less the margin for the scene head."""
    if model.scene_head is None:
        return evaluate(model, criterion, loader, windows, num_classes, device)
    order, scene = window_predictions(model, loader, device, both_heads=True)
    scores = {reads_scene: evaluate(model, criterion, loader, windows, num_classes, device, logits)
              for reads_scene, logits in ((False, order), (True, scene))}
    use_scene = scores[True]["val_window_acc"] - SCENE_MARGIN > scores[False]["val_window_acc"]
    model.reads_scene.fill_(use_scene)
    rank = scores[use_scene]["val_window_acc"] - (SCENE_MARGIN if use_scene else 0.0)
    return {**scores[use_scene], "head": "scene" if use_scene else "order", "rank_window_acc": rank}


def _rank(metrics: dict) -> tuple:
    """What best.pt keeps: the epoch of the highest validation WINDOW accuracy, and of those the LATEST
    (higher rank wins). With a few validation videos, video accuracy moves in steps of one video and
    ties for many epochs; window accuracy has about five times the resolution, and a tie goes to the
    more trained epoch. On the ablation's runs (BENCHMARKS.md, "Stage two: choosing the model") this
    rule's picks held as well as any rule's on the held-out clips (the best with the default model on
    caches of the current stage one; within one clip of 24 of the best elsewhere); the lowest
    validation loss held worst (it often keeps an early epoch, before the model is confident). With a
    scene head, the accuracy is validate()'s rank_window_acc."""
    return (metrics.get("rank_window_acc", metrics["val_window_acc"]), metrics["epoch"])


def _world() -> int:
    """Processes in data-parallel training: torchrun's WORLD_SIZE, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _start_data_parallel(device_name: str) -> tuple[int, str]:
    """(rank, device) of this process. Under torchrun, joins the process group (nccl on GPUs, gloo on
    CPUs) and takes the GPU of its local rank; each rank trains on its share of every epoch's batches
    and DistributedDataParallel averages the gradients, so the effective batch is world x batch size."""
    if _world() <= 1:
        return 0, device_name
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and device_name in ("auto", "cuda") else "gloo")
        # Torn down while Python is still whole: left to interpreter exit, gloo's threads can abort
        # the process ("terminate called without an active exception"; seen once in CI here).
        atexit.register(dist.destroy_process_group)
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        device_name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return dist.get_rank(), device_name


def fit(settings: TrainSettings, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None) -> FitResult:
    """Train (or, with resume, continue training) the run of `settings`; `log` receives report lines.
    Under torchrun, every rank trains and rank 0 alone writes the run's files and logs."""
    s = replace(settings)  # the cache path is stored resolved; the caller's settings stay as given
    rank, device_name = _start_data_parallel(s.device)
    is_main = rank == 0
    log = log if log and is_main else (lambda line: None)
    progress = progress and is_main
    _check(s)
    out = Path(s.out)  # made only once the cache and the run are known to be usable (below)
    for tmp in out.glob(".*.tmp-*") if is_main and out.is_dir() else []:  # left by a kill during a write
        tmp.unlink(missing_ok=True)
    last_path = out / "last.pt"

    checkpoint = None
    if last_path.exists():
        if not resume:
            raise TrainError(f"{out} already holds a run (last.pt); pass --resume to continue it, or another --out")
        checkpoint = load_checkpoint(last_path)
        diffs = training_differences(checkpoint, s)
        if diffs:
            raise TrainError(f"{out}: --resume with other settings than the run's:\n  " + "\n  ".join(diffs))
        if checkpoint["epoch"] >= s.epochs:  # done already: no need to read any data
            return FitResult(str(out), s.device, s.data, checkpoint["epoch"], checkpoint["best"], checkpoint["history"])

    cache = open_cache(s.cache)
    s.cache = str(Path(s.cache).resolve())
    if checkpoint is not None:
        problem = _feature_differences(checkpoint, cache)
        if problem:
            raise TrainError(problem)
        labels, split = checkpoint["labels"], checkpoint["split"]
        missing = [v for v in split["train"] + split["val"] if v not in cache.video_ids]
        if missing:
            raise TrainError(f"{s.cache}: {len(missing)} videos of the run are not in the cache, e.g. {missing[0]!r}")
    else:
        ids = _usable_videos(cache)
        labels = sorted({cache.label(v) for v in ids})
        if len(labels) < 2:
            raise TrainError(f"{s.cache}: training needs videos of at least two labels, found {labels}")
        train_ids, val_ids = split_by_video(ids, [cache.label(v) for v in ids], s.val_fraction, s.seed)
        split = {"train": train_ids, "val": val_ids}
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "split.json", {"seed": s.seed, "val_fraction": s.val_fraction, "cache": s.cache, **split})

    label_index = {label: i for i, label in enumerate(labels)}
    train_w = cache_windows(cache, split["train"], label_index, s.window, s.stride)
    val_w = cache_windows(cache, split["val"], label_index, s.window, s.stride)
    device = resolve_device(device_name)
    dim = int(cache.settings["feature_dim"])
    mode = choose_data_mode(s.data, int(train_w.lengths.sum() + val_w.lengths.sum()), dim)
    (train_loader, val_loader), video_features = make_batches(
        cache, [train_w, val_w], mode, s.batch_size, [True, False], s.seed, s.workers, device, progress,
        rank, _world(), s.jitter)

    torch.manual_seed(s.seed)  # initial weights
    args = model_args(s, dim, len(labels))
    model = WindowLSTM(**args)
    if checkpoint is None:  # normalisation from the training videos' frames only
        model.set_normalization(*feature_stats(video_features(v) for v in split["train"]))
    else:
        model.load_state_dict(checkpoint["model"])
    model.to(device)
    trained = model
    if _world() > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    history, best, start = [], None, 0
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        history, best, start = checkpoint["history"], checkpoint["best"], checkpoint["epoch"]
    criterion = nn.CrossEntropyLoss()

    log(f"{'resuming at epoch ' + str(start + 1) + ': ' if checkpoint else ''}"
        f"{len(split['train'])} training videos ({len(train_w)} windows), {len(split['val'])} validation videos "
        f"({len(val_w)} windows), {len(labels)} labels; data {'in memory' if mode == 'ram' else 'streamed'}, "
        f"device {device}")
    for epoch in range(start, s.epochs):
        torch.manual_seed(s.seed * 1_000_003 + epoch + 1)  # dropout: the same masks, resumed or not
        train_loader.set_epoch(epoch)
        t0 = time.perf_counter()
        metrics = {"epoch": epoch + 1}
        metrics.update(train_one_epoch(trained, criterion, optimizer, train_loader, device, s.grad_clip,
                                       progress, desc=f"epoch {epoch + 1}/{s.epochs}"))
        if len(val_w):
            metrics.update(validate(model, criterion, val_loader, val_w, len(labels), device))
        metrics["seconds"] = time.perf_counter() - t0
        # without validation videos there is nothing to choose by: the latest epoch is the best
        metrics["best"] = best is None or not len(val_w) or _rank(metrics) > _rank(best)
        if metrics["best"]:
            best = {k: metrics.get(k) for k in ("epoch", "val_loss", "val_window_acc", "val_video_acc")}
            best.update({k: metrics[k] for k in ("head", "rank_window_acc") if k in metrics})
        history.append(metrics)
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "settings": asdict(s),
            "model_args": args,
            "labels": labels,
            "normalization": {"mean": model.mean.cpu(), "std": model.std.cpu()},
            "feature_settings": cache.settings,
            "split": split,
            "history": history,
            "best": best,
        }
        if is_main:
            if metrics["best"]:  # best first: a kill between the two writes redoes this epoch, same result
                save_checkpoint(out / "best.pt", checkpoint)
            save_checkpoint(last_path, checkpoint)
            write_atomic(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history).encode())
            _write_plots(out, history, labels, metrics)
        log(_epoch_line(metrics, s.epochs))
    cache.close()
    return FitResult(str(out), str(device), mode, start, best, history)


def _write_plots(out: Path, history: list[dict], labels: list[str], metrics: dict) -> None:
    from .plots import confusion_png, curves_png

    write_atomic(out / "curves.png", curves_png(history))
    if metrics["best"] and "val_confusion" in metrics:
        title = f"validation videos, epoch {metrics['epoch']} (best)"
        write_atomic(out / "confusion.png", confusion_png(metrics["val_confusion"], labels, title))


def _epoch_line(m: dict, epochs: int) -> str:
    line = (f"epoch {m['epoch']}/{epochs}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f}"
            f"  ({m['train_windows_per_s']:.0f} windows/s)")
    if "val_loss" in m:
        line += (f"  val loss {m['val_loss']:.4f} window acc {m['val_window_acc']:.3f}"
                 f" video acc {m['val_video_acc']:.3f}" + ("  (scene head)" if m.get("head") == "scene" else ""))
    return line + ("  *best" if m["best"] else "")


# --- using a trained run ------------------------------------------------------------------------

def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[WindowLSTM, dict]:
    """(model, checkpoint) of a run's best.pt: the model in eval mode on `device`, normalisation
    included. checkpoint["labels"][i] names class i; checkpoint["settings"] has window and stride."""
    path = Path(run_dir) / "best.pt"
    if not path.exists():
        raise TrainError(f"{run_dir}: no best.pt; is this a run folder of `pipeline train`?")
    checkpoint = load_checkpoint(path)
    model = WindowLSTM(**_with_legacy_model(checkpoint["model_args"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(resolve_device(device)).eval(), checkpoint


@torch.inference_mode()
def window_logits(model: WindowLSTM, checkpoint: dict, features: np.ndarray,
                  batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, torch.Tensor]:
    """(starts, logits) of every window of one video's (T, D) features, windowed as in training
    (windows.window_starts: a video shorter than a window gives one padded window, an empty one none).
    starts: (N,) first frame of each window; logits: (N, C) float32 on the CPU. The video's
    prediction, as in evaluation, is logits.mean(0).argmax()."""
    window, stride = checkpoint["settings"]["window"], checkpoint["settings"]["stride"]
    features = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if features.ndim != 2 or features.shape[1] != model.mean.shape[0]:
        raise TrainError(f"features of shape {tuple(features.shape)}; the model takes (T, {model.mean.shape[0]})")
    starts = window_starts(len(features), window, stride)
    rows = torch.minimum(torch.as_tensor(starts)[:, None] + torch.arange(window), torch.tensor(len(features) - 1))
    device = model.mean.device
    out = [model(features[chunk].to(device)).float().cpu() for chunk in rows.split(batch_size)]
    return starts, torch.cat(out) if out else torch.zeros(0, checkpoint["model_args"]["num_classes"])


def evaluate_run(run_dir: str | os.PathLike, cache_path: str | os.PathLike | None = None, device: str = "auto",
                 data: str = "auto", progress: bool = False, moved_cache: str | os.PathLike | None = None) -> dict:
    """Metrics of a run's best checkpoint on its validation videos, or on every ok video of `cache_path`.
    `moved_cache`: the run's training cache at a new place; its validation videos are read from there.

    Returns window_accuracy, video_accuracy, per_class ({label: precision, recall, support}, by
    video), confusion (video level; rows: true label in `labels` order, columns: predicted) and labels.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model, checkpoint = load_run(run_dir, dev)
    labels = checkpoint["labels"]
    if cache_path is not None and moved_cache is not None:
        raise TrainError("pass a cache to evaluate every video of, or the moved training cache, not both")
    if cache_path is None:
        cache_path = checkpoint["settings"]["cache"] if moved_cache is None else moved_cache
        if moved_cache is None and not Path(cache_path).is_dir():
            raise TrainError(f"{cache_path}: the run's training cache is not there any more; if it moved, "
                             f"pass its new place: pipeline evaluate {run_dir} --cache NEWPATH")
        try:
            with open(run_dir / "split.json", encoding="utf-8") as f:
                ids = json.load(f)["val"]
        except (OSError, ValueError, KeyError) as e:
            raise TrainError(f"{run_dir / 'split.json'}: cannot read the run's split: {e}") from None
        if not ids:
            raise TrainError(f"{run_dir}: the run has no validation videos; pass a CACHE to evaluate on")
        source = "validation videos"
    else:
        ids = None
        source = "every video"
    with open_cache(cache_path) as cache:
        problem = _feature_differences(checkpoint, cache)
        if problem:
            raise TrainError(problem)
        if ids is None:
            ids = _usable_videos(cache)
            if not ids:
                raise TrainError(f"{cache_path}: no videos with frames to evaluate on")
        missing = [v for v in ids if v not in cache.records or cache.records[v].status != "ok"]
        if missing:
            raise TrainError(f"{cache_path}: {len(missing)} validation videos are missing, e.g. {missing[0]!r}")
        unknown = sorted({cache.label(v) for v in ids} - set(labels))
        if unknown:
            raise TrainError(f"{cache_path}: labels the model was not trained on: {', '.join(map(repr, unknown))} "
                             f"(it knows {', '.join(map(repr, labels))})")
        s = checkpoint["settings"]
        windows = cache_windows(cache, ids, {l: i for i, l in enumerate(labels)}, s["window"], s["stride"])
        mode = choose_data_mode(data, int(windows.lengths.sum()), int(cache.settings["feature_dim"]))
        (loader,), _ = make_batches(cache, [windows], mode, EVAL_BATCH, [False], 0, None, dev, progress)
        logits = window_predictions(model, loader, dev)
    m = window_and_video_metrics(logits, windows, len(labels))
    confusion = np.array(m["confusion"])
    per_class = {}
    for i, label in enumerate(labels):
        predicted, support = int(confusion[:, i].sum()), int(confusion[i].sum())
        per_class[label] = {"precision": confusion[i, i] / predicted if predicted else 0.0,
                            "recall": confusion[i, i] / support if support else 0.0, "support": support}
        per_class[label] = {k: (float(v) if k != "support" else v) for k, v in per_class[label].items()}
    return {"run": str(run_dir), "checkpoint": "best.pt", "epoch": checkpoint["epoch"], "cache": str(cache_path),
            "videos_evaluated": source, "videos": m["videos"], "windows": m["windows"], "labels": labels,
            "window_accuracy": m["window_accuracy"], "video_accuracy": m["video_accuracy"],
            "per_class": per_class, "confusion": m["confusion"]}
