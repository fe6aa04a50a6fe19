"""What the features of the task suite carry: is a task's cue there for any reader to find? (issue 11)

    python benchmarks/probe_features.py [--root /work/taskcache] [--weights random]

Linear probes (logistic regression, standardised inputs, Adam, 500 steps, several L2 weights),
trained on the training clips and scored on the held-out clips, each given MORE than a model
sees: the clip's backdrop is subtracted.
  events   which side a flash is on (left/right), from the feature change at the flash's onset
           (the change the default model's deltas input sees), flashes found from the generator
  shape    disc or square, from frames 0 and 45 less the features of the clip's bare backdrop
  count    one object or three, the same way
  still    a still object red or blue, the same way (joined the suite after the recorded probes)
If a probe is at chance on held-out clips, no model reading those features learns the task from
this many clips; if it is near 1, the cue is there and the question is whether training finds it.
Then, for events: an LSTM (32 units) on two numbers per frame, the probe's left/right score of the
deltas and their size, trained on the training clips' windows (jittered each epoch) and scored on
the held-out videos: can the order logic be learnt once the side of each flash is given?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import temporal_tasks as tt  # noqa: E402

WEIGHT_DECAYS = (1e-4, 1e-2, 1e-1, 1.0)


def logistic_probe(x_train, y_train, x_test, y_test, weight_decay: float):
    """(train accuracy, held-out accuracy, unit direction in the raw input space) of a linear probe."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt, yt = torch.tensor((x_train - mean) / std, dtype=torch.float32), torch.tensor(y_train, dtype=torch.float32)
    xe = torch.tensor((x_test - mean) / std, dtype=torch.float32)
    w = torch.zeros(xt.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(500):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + weight_decay * (w * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train = float(((xt @ w + b > 0).float() == yt).float().mean())
        test = float(((xe @ w + b > 0).numpy() == y_test).mean())
        direction = (w / torch.tensor(std, dtype=torch.float32)).numpy()
    return train, test, direction / np.linalg.norm(direction)


def events_onsets(root, weights, split, mean, std):
    """(deltas at each flash onset, 1 if it is on the right) and every clip's (deltas, label)."""
    from pipeline.cache import open_cache

    cache = open_cache(str(tt.cache_path(root, weights, "events", split)))
    onsets, sides, clips = [], [], []
    for vid in cache.video_ids:
        label = tt.CLASSES["events"].index(cache.label(vid))
        number = int(Path(vid).stem.split("_")[-1])
        rng = tt.clip_rng("events", split, label, number)
        frames = np.stack(tt.clip_frames("events", label, rng)).astype(np.float32)
        changed = np.abs(frames - np.median(frames, 0)).sum(-1) > 60  # (T, H, W): where a flash is
        lit = changed.reshape(len(frames), -1).any(1)
        x = (cache.features(vid) - mean) / std
        deltas = np.concatenate([np.zeros_like(x[:1]), np.diff(x, axis=0)])
        clips.append((deltas, label))
        for t in np.flatnonzero(lit[1:] & ~lit[:-1]) + 1:
            onsets.append(deltas[t])
            sides.append(int(np.nonzero(changed[t])[1].mean() > tt.SIZE / 2))
    return np.array(onsets), np.array(sides), clips


def appearance_data(task, split, per_class, extractor):
    from pipeline.preprocess import resize_and_crop

    x, y = [], []
    for label in range(2):
        for number in range(per_class):
            frames = tt.clip_frames(task, label, tt.clip_rng(task, split, label, number))
            # the clip's own backdrop alone: backdrop() is the first draw of clip_frames
            bare = np.clip(tt.backdrop(tt.clip_rng(task, split, label, number)), 0, 255).astype(np.uint8)
            images = torch.from_numpy(np.stack([frames[0], frames[45], bare])).permute(0, 3, 1, 2).contiguous()
            f = extractor(resize_and_crop(images)).numpy()
            x += [f[0] - f[2], f[1] - f[2]]
            y += [label, label]
    return np.array(x), np.array(y)


def order_logic_given_sides(train_clips, heldout_clips, direction, epochs=60, seed=0) -> list[str]:
    """An LSTM on (left/right score, size) of each frame's deltas: held-out video accuracy by epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    d = torch.tensor(direction, dtype=torch.float32)

    def inputs(deltas):
        t = torch.tensor(deltas, dtype=torch.float32)
        return torch.stack([t @ d, t.norm(dim=1) / 30], 1)

    def windows(clips, jitter):
        xs, ys, vids = [], [], []
        for i, (deltas, label) in enumerate(clips):
            s = inputs(deltas)
            for start in range(0, len(s) - 29, 15):
                at = min(start + (int(rng.integers(15)) if jitter else 0), len(s) - 30)
                xs.append(s[at:at + 30])
                ys.append(label)
                vids.append(i)
        return torch.stack(xs), torch.tensor(ys), np.array(vids)

    lstm, head = torch.nn.LSTM(2, 32, batch_first=True), torch.nn.Linear(32, 2)
    opt = torch.optim.AdamW([*lstm.parameters(), *head.parameters()], lr=1e-2)
    hx, hy, hv = windows(heldout_clips, False)
    lines = []
    for epoch in range(epochs):
        x, y, _ = windows(train_clips, True)
        for idx in torch.randperm(len(y)).split(64):
            out, _ = lstm(x[idx])
            loss = torch.nn.functional.cross_entropy(head(out[:, -1]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % 10 == 9:
            with torch.no_grad():
                logits = head(lstm(hx)[0][:, -1])
                videos = np.mean([int(logits[hv == v].mean(0).argmax()) == int(hy[hv == v][0]) for v in np.unique(hv)])
            lines.append(f"epoch {epoch + 1}: held-out windows {(logits.argmax(1) == hy).float().mean():.2f}, "
                         f"videos {videos:.2f}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/work/taskcache")
    p.add_argument("--weights", default="random", help="whose caches (as temporal_tasks.py); the appearance "
                   "probes extract their frames with --weights random only")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from pipeline.cache import open_cache
    from pipeline.windows import feature_stats

    train_cache = open_cache(str(tt.cache_path(a.root, a.weights, "events", "train")))
    mean, std = feature_stats(train_cache.features(v) for v in train_cache.video_ids)
    x_train, y_train, train_clips = events_onsets(a.root, a.weights, "train", mean, std)
    x_test, y_test, heldout_clips = events_onsets(a.root, a.weights, "heldout", mean, std)
    print(f"events: {len(y_train)} training onsets, {len(y_test)} held-out")
    for wd in WEIGHT_DECAYS:
        train, test, direction = logistic_probe(x_train, y_train, x_test, y_test, wd)
        print(f"  side of the flash, L2 {wd:g}: train {train:.2f}, held-out {test:.2f}")
    _, _, direction = logistic_probe(x_train, y_train, x_test, y_test, 1e-2)
    print("  an LSTM given each frame's side score and size (the order logic alone):")
    for line in order_logic_given_sides(train_clips, heldout_clips, direction):
        print("    " + line)

    if a.weights == "random":
        from pipeline.features import FeatureExtractor

        extractor = FeatureExtractor.create(None, torch.device("cpu"))
        for task in tt.APPEARANCE_TASKS:
            x_train, y_train = appearance_data(task, "train", tt.TRAIN_PER_CLASS, extractor)
            x_test, y_test = appearance_data(task, "heldout", tt.HELDOUT_PER_CLASS, extractor)
            for wd in WEIGHT_DECAYS:
                train, test, _ = logistic_probe(x_train, y_train, x_test, y_test, wd)
                print(f"{task}: {' / '.join(tt.CLASSES[task])} less the bare backdrop, L2 {wd:g}: "
                      f"train {train:.2f}, held-out {test:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
