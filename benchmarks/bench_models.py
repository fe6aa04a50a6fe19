"""Which stage-two model generalises: an ablation on the temporal task suite (issue 11).

    python benchmarks/bench_models.py [--root /work/taskcache] [--weights random] [--seeds 0 1 2]
                                      [--configs NAME ...] [--tasks TASK ...] [--jobs 2]
                                      [--results FILE.jsonl] [--speed-seconds 4]

For every (config, task, seed): train as `pipeline train` does (the same split of the training
cache by seed, normalisation from the training videos, RamBatches, train_one_epoch, AdamW, constant
lr, gradient clipping, batch 64, --epochs (20), dropout seeded by epoch), and after every epoch score
the validation videos and the task's HELD-OUT cache (clips from other seeds, never trained or
validated on). The measure is held-out video accuracy of the checkpoint `pipeline train` would keep
(best.pt under train._rank); the table also shows it under other best-checkpoint rules, so the rule
is chosen by what holds on held-out clips. The order-blind baseline (demo.order_blind_baseline:
window features averaged over time, then a linear classifier) is scored on the same caches.

Runs go to --results (one JSON line each; a rerun skips what is there), --jobs processes at a time,
one thread each. Then every config's training step is timed (windows/s, batch 64, 30 x D random
windows, --speed-threads, interleaved rounds so a busy machine slows all alike), and the
table is printed: mean and spread (min-max over seeds, pooled over the order-only tasks) per task.
The tasks are built (videos generated, features extracted) first if they are not in --root yet.

How long, on a 2-core CPU (measured 2026-11-28): building the twelve tasks about 15 min (once; 71 s
a task), then about 4 min a config for the twelve tasks and three seeds with --jobs 2, so every
config (the default --configs, 33 of them) about 2.5 h. The default against the model before issue
11 alone, build included, about 25 min:

    python benchmarks/bench_models.py --configs today deltas+centered0.3x64-jitter --speed-threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import temporal_tasks as tt  # noqa: E402

# name: (WindowLSTM arguments, training overrides). "today" is the model before issue 11.
CONFIGS = {  # in the order they run: the most telling first
    "today": (dict(hidden=256, dropout=0.2, project=0, pool="mean+last", head_norm=True), {}),
    "plain128": (dict(hidden=128), {}),
    "centered128": (dict(hidden=128, inputs="centered"), {}),
    "plain128-mean": (dict(hidden=128, pool="mean"), {}),
    "centered128-proj128": (dict(hidden=128, inputs="centered", project=128), {}),
    "features+centered128": (dict(hidden=128, inputs="features+centered"), {}),
    "centered64": (dict(hidden=64, inputs="centered"), {}),
    "centered128-indrop0.2": (dict(hidden=128, inputs="centered", input_dropout=0.2), {}),
    "centered128-wd0.1": (dict(hidden=128, inputs="centered"), {"weight_decay": 0.1}),
    "deltas128": (dict(hidden=128, inputs="deltas"), {}),
    "centered128-2layers": (dict(hidden=128, inputs="centered", layers=2), {}),
    "centered128-bidir": (dict(hidden=128, inputs="centered", bidirectional=True), {}),
    "centered128-mean+last": (dict(hidden=128, inputs="centered", pool="mean+last"), {}),
    "centered128-wd0": (dict(hidden=128, inputs="centered"), {"weight_decay": 0.0}),
    "centered128-lr3e-3": (dict(hidden=128, inputs="centered"), {"lr": 3e-3}),
    "plain128-proj128": (dict(hidden=128, project=128), {}),
    # second round: each epoch's training windows at random offsets within the stride (windows.EpochBatches)
    "deltas128-jitter": (dict(hidden=128, inputs="deltas"), {"jitter": True}),  # the default since
    "deltas128-jitter-mean": (dict(hidden=128, inputs="deltas", pool="mean"), {"jitter": True}),
    "both128-jitter": (dict(hidden=128, inputs="both"), {"jitter": True}),
    "deltas+centered128-jitter": (dict(hidden=128, inputs="deltas+centered"), {"jitter": True}),
    "deltas128-jitter-proj32": (dict(hidden=128, inputs="deltas", project=32), {"jitter": True}),
    "deltas128-jitter-indrop0.5": (dict(hidden=128, inputs="deltas", input_dropout=0.5), {"jitter": True}),
    "deltas32-jitter": (dict(hidden=32, inputs="deltas"), {"jitter": True}),
    "deltas128-jitter-2layers": (dict(hidden=128, inputs="deltas", layers=2), {"jitter": True}),
    "deltas128-jitter-wd0.1": (dict(hidden=128, inputs="deltas"), {"jitter": True, "weight_decay": 0.1}),
    # fourth round: the window-centred features beside the deltas, at a smaller weight
    "deltas+centered0.3x128-jitter": (dict(hidden=128, inputs="deltas+centered", centered_weight=0.3), {"jitter": True}),
    "deltas+centered0.3x96-jitter": (dict(hidden=96, inputs="deltas+centered", centered_weight=0.3), {"jitter": True}),
    "deltas+centered0.3x64-jitter": (dict(hidden=64, inputs="deltas+centered", centered_weight=0.3), {"jitter": True}),
    "deltas+centered0.2x128-jitter": (dict(hidden=128, inputs="deltas+centered", centered_weight=0.2), {"jitter": True}),
    "deltas+centered0.5x128-jitter": (dict(hidden=128, inputs="deltas+centered", centered_weight=0.5), {"jitter": True}),
    "deltas+centered0.3x64-jitter-mean+last": (dict(hidden=64, inputs="deltas+centered", centered_weight=0.3,
                                                    pool="mean+last"), {"jitter": True}),
    "deltas+centered0.3x64-jitter-wd0.05": (dict(hidden=64, inputs="deltas+centered", centered_weight=0.3),
                                            {"jitter": True, "weight_decay": 0.05}),
    # sixth round: the head also reads the window's mean features (what stays put), at the same weight
    "deltas+centered0.3x64-jitter+mean": (dict(hidden=64, inputs="deltas+centered+mean", centered_weight=0.3),
                                          {"jitter": True}),
    # eighth round: a second head reads the window's mean features too; validation picks (train.validate)
    "deltas+centered0.3x64-jitter+scene": (dict(hidden=64, inputs="deltas+centered", centered_weight=0.3,
                                                scene_head=True), {"jitter": True}),
    # eleventh round: whole inputs dropped for a window (WindowLSTM.feature_dropout)
    "deltas+centered0.3x64-jitter+scene-fdrop0.5": (dict(hidden=64, inputs="deltas+centered", centered_weight=0.3,
                                                         scene_head=True, feature_dropout=0.5), {"jitter": True}),
}
# What every config starts from, whatever TrainSettings' defaults become: a config's name keeps its meaning
BASE = {"hidden": 128, "dropout": 0.0, "input_dropout": 0.0, "feature_dropout": 0.0, "project": None, "pool": "last",
        "head_norm": False, "layers": 1, "bidirectional": False, "inputs": "features", "centered_weight": 1.0,
        "weight_decay": 0.01, "lr": 1e-3, "jitter": False, "scene_head": False}


def settings_for(config: str, cache: str, seed: int, epochs: int):
    from pipeline.train import MODEL_SETTINGS, TrainSettings

    assert set(MODEL_SETTINGS) <= set(BASE), "BASE must name every model setting"
    model, overrides = CONFIGS[config]
    return TrainSettings(cache=cache, out="", seed=seed, epochs=epochs, device="cpu", data="ram",
                         **{**BASE, **model, **overrides})


def _train_rank(metrics: dict) -> tuple:
    """train._rank itself, not a copy of it (imported when used, as everything from pipeline here)."""
    from pipeline.train import _rank

    return _rank(metrics)


# --- best-checkpoint rules: each maps an epoch's validation metrics to a key, the highest wins (ties: earliest)
RULES = {
    "video acc, window acc, loss (old)": lambda m: (m["val_video_acc"], m["val_window_acc"], -m["val_loss"]),
    "lowest val loss": lambda m: (-m["val_loss"],),
    "window acc, then loss": lambda m: (m["val_window_acc"], -m["val_loss"]),
    "last epoch": lambda m: (m["epoch"],),
    "video acc, window acc, later epoch": lambda m: (m["val_video_acc"], m["val_window_acc"], m["epoch"]),
    "video acc, later epoch": lambda m: (m["val_video_acc"], m["epoch"]),
    "window acc, later epoch": _train_rank,  # what best.pt keeps
}


def pick(history: list[dict], rule) -> dict:
    best = None
    for m in history:
        if best is None or rule(m) > rule(best):
            best = m
    return best


def run_one(job: tuple) -> dict:
    """Train one (config, task, seed) and score every epoch on the validation and held-out videos."""
    config, task, seed, root, weights, epochs = job
    import torch

    torch.set_num_threads(1)
    from torch import nn

    from pipeline.cache import open_cache
    from pipeline.demo import order_blind_baseline
    from pipeline.model import WindowLSTM
    from pipeline.train import (_usable_videos, make_batches, model_args, train_one_epoch, validate,
                                window_and_video_metrics, window_predictions)
    from pipeline.windows import cache_windows, feature_stats, split_by_video

    train_cache, heldout_cache = (str(tt.cache_path(root, weights, task, split)) for split in ("train", "heldout"))
    s = settings_for(config, train_cache, seed, epochs)
    cache = open_cache(train_cache)
    ids = _usable_videos(cache)
    labels = sorted({cache.label(v) for v in ids})
    index = {label: i for i, label in enumerate(labels)}
    train_ids, val_ids = split_by_video(ids, [cache.label(v) for v in ids], s.val_fraction, s.seed)
    train_w = cache_windows(cache, train_ids, index, s.window, s.stride)
    val_w = cache_windows(cache, val_ids, index, s.window, s.stride)
    device = torch.device("cpu")
    (train_loader, val_loader), video_features = make_batches(
        cache, [train_w, val_w], "ram", s.batch_size, [True, False], s.seed, None, device, False, jitter=s.jitter)
    held = open_cache(heldout_cache)
    held_ids = _usable_videos(held)
    held_w = cache_windows(held, held_ids, index, s.window, s.stride)
    (held_loader,), _ = make_batches(held, [held_w], "ram", 256, [False], 0, None, device, False)

    torch.manual_seed(s.seed)
    model = WindowLSTM(**model_args(s, int(cache.settings["feature_dim"]), len(labels)))
    model.set_normalization(*feature_stats(video_features(v) for v in train_ids))
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    criterion = nn.CrossEntropyLoss()
    history = []
    for epoch in range(s.epochs):
        torch.manual_seed(s.seed * 1_000_003 + epoch + 1)
        train_loader.set_epoch(epoch)
        m = {"epoch": epoch + 1}
        m.update(train_one_epoch(model, criterion, optimizer, train_loader, device, s.grad_clip))
        m.update(validate(model, criterion, val_loader, val_w, len(labels), device))  # (picks a scene head or not)
        h = window_and_video_metrics(window_predictions(model, held_loader, device), held_w, len(labels))
        m.update(heldout_video_acc=h["video_accuracy"], heldout_window_acc=h["window_accuracy"])
        m.pop("val_confusion")
        history.append(m)
    baseline = order_blind_baseline(train_cache, {"train": train_ids, "val": held_ids}, s.window, s.stride, seed,
                                    eval_cache=heldout_cache)
    return {"config": config, "task": task, "seed": seed, "weights": weights, "epochs": epochs,
            "settings": {k: v for k, v in asdict(s).items() if k in BASE},
            "params": sum(p.numel() for p in model.parameters()), "history": history,
            "baseline_heldout_video_acc": baseline["video_accuracy"] if heldout_cache else None}


def speed(configs: list[str], seconds: float, rounds: int = 3, dim: int = 1000, threads: int | None = None) -> dict:
    """Training windows/s of each config's step (batch 64, 30 frames, random features), interleaved rounds."""
    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    from pipeline.model import WindowLSTM
    from pipeline.train import clip_groups, model_args, training_step

    rates = {c: [] for c in configs}
    x, y = torch.randn(64, 30, dim), torch.randint(0, 2, (64,))
    for _ in range(rounds):
        for c in configs:
            s = settings_for(c, "", 0, 1)
            torch.manual_seed(0)
            model = WindowLSTM(**model_args(s, dim, 2)).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=s.weight_decay)
            groups = clip_groups(model)
            n, t0 = 0, None
            while t0 is None or time.perf_counter() - t0 < seconds:
                training_step(model, nn.functional.cross_entropy, opt, x, y, 1.0, groups)  # train_one_epoch's step
                if t0 is None:
                    t0 = time.perf_counter()  # the first step warms up
                else:
                    n += len(y)
            rates[c].append(n / (time.perf_counter() - t0))
    return {c: statistics.median(r) for c, r in rates.items()}


def table(results: list[dict], configs: list[str], tasks: list[str], rates: dict, rule_name: str) -> str:
    rule = RULES[rule_name]
    seeds = sorted({r["seed"] for r in results})
    order_tasks = [t for t in tasks if t in tt.ORDER_TASKS]
    lines = [f"held-out video accuracy, best checkpoint by: {rule_name}; mean [min-max] over seeds "
             f"{seeds} (n=: fewer seeds ran)",
             "| config | params | windows/s | " + " | ".join(tasks) + " | order-only mean [min task] |",
             "|---" * (len(tasks) + 4) + "|"]
    for c in configs:
        rs = [r for r in results if r["config"] == c]
        if not rs:
            continue
        cells, means = [], {}
        for t in tasks:
            accs = [pick(r["history"], rule)["heldout_video_acc"] for r in rs if r["task"] == t]
            if accs:
                means[t] = statistics.mean(accs)
                n = f" n={len(accs)}" if len(accs) != len(seeds) else ""
                cells.append(f"{means[t]:.2f} [{min(accs):.2f}-{max(accs):.2f}]{n}")
            else:
                cells.append("-")
        om = [means[t] for t in order_tasks if t in means]
        summary = f"**{statistics.mean(om):.3f}** [{min(om):.2f}]" if om else "-"
        rate = f"{rates[c]:.0f}" if c in rates else "-"
        lines.append(f"| {c} | {rs[0]['params']:,} | {rate} | " + " | ".join(cells) + f" | {summary} |")
    base = []
    for t in tasks:
        accs = [r["baseline_heldout_video_acc"] for r in results if r["task"] == t and r["config"] == configs[0]]
        base.append(f"{statistics.mean(accs):.2f}" if accs else "-")
    lines.append("| order-blind baseline (mean + linear) | | | " + " | ".join(base) + " | |")
    return "\n".join(lines)


def rules_table(results: list[dict], configs: list[str]) -> str:
    """Held-out video accuracy of the checkpoint each rule picks, and its gap to the best held-out epoch."""
    lines = ["| rule | " + " | ".join(configs) + " |", "|---" * (len(configs) + 1) + "|"]
    for name, rule in RULES.items():
        cells = []
        for c in configs:
            rs = [r for r in results if r["config"] == c]
            picked = [pick(r["history"], rule)["heldout_video_acc"] for r in rs]
            cells.append(f"{statistics.mean(picked):.3f}" if picked else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for c in configs:
        rs = [r for r in results if r["config"] == c]
        cells.append(f"{statistics.mean(max(m['heldout_video_acc'] for m in r['history']) for r in rs):.3f}"
                     if rs else "-")
    lines.append("| (oracle: best held-out epoch) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/work/taskcache")
    p.add_argument("--weights", default="random")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--tasks", nargs="*", default=list(tt.TASKS), choices=tt.TASKS)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--results", help="JSON lines of finished runs (default ROOT/<weights>/ablation.jsonl)")
    p.add_argument("--speed-seconds", type=float, default=4.0, help="0: skip the timing")
    p.add_argument("--report-only", action="store_true", help="tabulate --results as they are; train nothing")
    p.add_argument("--no-build", action="store_true", help="use the caches in --root as they are, even if an "
                   "earlier version of stage one made them (extract would refuse to add to them)")
    p.add_argument("--speed-threads", type=int, help="torch threads for the timing (default: torch's); "
                   "1 on a shared machine, where 2 threads collapse (BENCHMARKS.md)")
    p.add_argument("--rule", default="window acc, later epoch", choices=list(RULES),
                   help="best-checkpoint rule of the main table (train._rank implements the default)")
    a = p.parse_args(argv)
    root = Path(a.root)
    if not (a.report_only or a.no_build):
        tt.build(root, a.weights, a.tasks)
    results_path = Path(a.results or root / tt.weights_tag(a.weights) / "ablation.jsonl")
    done = []
    if results_path.exists():
        done = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
        done = list({(r["config"], r["task"], r["seed"], r["epochs"]): r for r in done}.values())  # a rerun's last
    have = {(r["config"], r["task"], r["seed"], r["epochs"]) for r in done}
    # config by config, so whatever has finished when a run is cut short is whole configs
    jobs = [(c, t, s, root, a.weights, a.epochs) for c in a.configs for s in a.seeds for t in a.tasks
            if (c, t, s, a.epochs) not in have and not a.report_only]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.jobs) as pool, open(results_path, "a") as f:
        for i, r in enumerate(pool.map(run_one, jobs)):
            f.write(json.dumps(r) + "\n")
            f.flush()
            done.append(r)
            print(f"[{i + 1}/{len(jobs)}, {time.perf_counter() - t0:.0f} s] {r['config']} {r['task']} seed {r['seed']}: "
                  f"held-out {pick(r['history'], RULES[a.rule])['heldout_video_acc']:.2f}", flush=True)
    results = [r for r in done if r["config"] in a.configs and r["task"] in a.tasks and r["seed"] in a.seeds
               and r["epochs"] == a.epochs]
    rates = speed(a.configs, a.speed_seconds, threads=a.speed_threads) if a.speed_seconds > 0 else {}
    print()
    print(table(results, a.configs, a.tasks, rates, a.rule))
    print()
    print("best-checkpoint rules: mean held-out video accuracy of the checkpoint each picks (all tasks and seeds)")
    print(rules_table(results, a.configs))
    if rates and "today" in rates:
        print("\ntraining windows/s relative to today's model: " +
              ", ".join(f"{c} {rates[c] / rates['today']:.2f}x" for c in a.configs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
