"""The classifier: a window of per-frame features (B, T, D) -> class logits (B, C)."""

from __future__ import annotations

import torch
from torch import nn

POOLS = ("last", "mean", "mean+last")
INPUTS = ("features", "deltas", "both", "centered", "features+centered", "deltas+centered", "deltas+centered+mean")

# The model of checkpoints written before issue 11 (their model_args hold only feature_dim,
# num_classes, hidden and dropout): Linear(D -> hidden) + GELU + dropout, LSTM, LayerNorm + dropout +
# Linear on the mean and last outputs. load_run fills these in, so old runs load as they were.
LEGACY_ARGS = {"project": 0, "pool": "mean+last", "head_norm": True, "input_dropout": 0.0, "layers": 1,
               "bidirectional": False, "inputs": "features"}


class WindowLSTM(nn.Module):
    """Normalise each frame's features; an LSTM reads their temporal differences beside their window-centred
    values, at a smaller weight; a linear head on its last state (and, with scene_head, a second one that
    also reads the window's mean features, for classes told by what stays put).

    The defaults are what the ablation on benchmarks/temporal_tasks.py chose (BENCHMARKS.md, "Stage
    two: choosing the model"). Each frame the LSTM reads two things made from the normalised features x:
    - x[t] - x[t-1] (zero for the first frame): whatever stays put, above all the clip's own scene,
      cancels, so the model cannot tell training clips apart by their backdrops and has to learn what
      changes, and in what order;
    - x[t] less its mean over the window, times centered_weight: still without what stays put for
      the whole window, but with the layout the change happens in. With the differences alone the
      model does not learn which way a camera pans (chance on the suite); with this beside them it
      does. (A reading, not measured: the same change is a slide left over one texture and right over
      another, so a change says which way only beside the layout.) At full weight the model still
      fits the training clips (training accuracy 1.0) but loses the sawtooth tasks on held-out clips
      (fade, zoom: memorising again); at 0.3 it keeps them. A reading of why: AdamW's steps do not
      grow for a smaller input, so a weaker input needs larger weights to matter, and weight decay
      and the few epochs then favour the differences, with the centred half used where they do not
      suffice.
    A model on the raw features (the pre-issue-11 default: Linear + GELU projection, LSTM 256, head on
    the mean and last outputs) memorised the training clips and stayed at chance on new ones.

    The per-feature mean and std of the training frames are buffers of the model, so they travel in
    its state_dict and whoever loads the checkpoint normalises exactly as training did.

    hidden         LSTM width (per direction)
    dropout        before the head (and after the projection, if any)
    input_dropout  on the normalised input features, each feature of each frame alike
    feature_dropout  while training, drops whole inputs of the LSTM for a window: one mask per window
                   and input, the same at every frame (the "variational" dropout of Gal and Ghahramani,
                   2016, on an RNN's inputs). Per frame, a dropped input's differences would jump; here a
                   dropped one reads zero for the whole window, so the model cannot lean on any few
                   features, such as those that tell one training clip's colours from another's. At 0.5
                   the suite's order-only mean rose from 0.866 to 0.895, but tasks it was not tuned on did
                   not gain (with 30 epochs: no more than 30 epochs alone give) and appearance lost, so it is
                   an option, not the default (BENCHMARKS.md, "Eleventh round", "Twelfth round").
    project        None: no projection; N: Linear(D -> N) + GELU + dropout before the LSTM; 0: N = hidden
    pool           what the head reads: the last output ("last"), the mean over time, or both
    head_norm      LayerNorm before the head
    layers         stacked LSTM layers
    bidirectional  a second LSTM reads the window backwards; "last" then reads both directions' final states
    inputs         "features"; their temporal differences x[t] - x[t-1] ("deltas"); both concatenated ("both");
                   the features less their mean over the window ("centered": what stays put in the window,
                   such as a clip's backdrop, is removed); features and centered concatenated; deltas and
                   centered concatenated ("deltas+centered"); or that, with the head also reading the
                   features' mean over the window ("deltas+centered+mean": what stays put, such as a still
                   object's colour, is no longer invisible; the LSTM reads the same as with deltas+centered)
    centered_weight  what the centred half of "deltas+centered" (and the window mean of "+mean") is multiplied by
    scene_head     a second classifier that reads the LSTM's state (detached: it never trains the LSTM) beside
                   the window's mean features times centered_weight, so that a class told by what stays put
                   (the scene, a still object's colour) is not invisible. Both are trained; the buffer
                   `reads_scene`, set by validation (train.validate), says which one predicts. False for
                   checkpoints made before it existed.
    """

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 64, dropout: float = 0.0,
                 input_dropout: float = 0.0, feature_dropout: float = 0.0, project: int | None = None,
                 pool: str = "last", head_norm: bool = False, layers: int = 1, bidirectional: bool = False,
                 inputs: str = "deltas+centered", centered_weight: float = 0.3, scene_head: bool = False):
        super().__init__()
        if pool not in POOLS or inputs not in INPUTS:
            raise ValueError(f"pool must be one of {POOLS} and inputs one of {INPUTS}")
        self.pool, self.inputs, self.bidirectional = pool, inputs, bidirectional
        # "+mean" changes what the head reads, not what the LSTM reads
        self.lstm_reads, self.head_reads_mean = inputs.removesuffix("+mean"), inputs.endswith("+mean")
        self.centered_weight = centered_weight
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("std", torch.ones(feature_dim))
        self.input_dropout = nn.Dropout(input_dropout)
        self.feature_dropout = nn.Dropout1d(feature_dropout)  # whole channels of (B, D, T): an input for all frames
        width = feature_dim * (2 if self.lstm_reads in ("both", "features+centered", "deltas+centered") else 1)
        if project is not None:
            project = project or hidden
            self.proj = nn.Sequential(nn.Linear(width, project), nn.GELU(), nn.Dropout(dropout))
            width = project
        else:
            self.proj = nn.Identity()
        self.lstm = nn.LSTM(width, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        out = hidden * (2 if bidirectional else 1) * (2 if pool == "mean+last" else 1)
        out += feature_dim if self.head_reads_mean else 0
        norm = [nn.LayerNorm(out)] if head_norm else []
        self.head = nn.Sequential(*norm, nn.Dropout(dropout), nn.Linear(out, num_classes))
        self.scene_head = None
        if scene_head:
            pooled_width = out - (feature_dim if self.head_reads_mean else 0)
            self.scene_head = nn.Linear(pooled_width + feature_dim, num_classes)
            self.register_buffer("reads_scene", torch.tensor(False))

    def set_normalization(self, mean, std) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))

    def forward(self, x: torch.Tensor, both_heads: bool = False):
        """Logits of the classifier that predicts; with both_heads (training a scene head), the pair
        (order head's, scene head's)."""
        x = (x - self.mean) / self.std
        # +mean: the head also reads the window's mean features, scaled by centered_weight (at 1 the head
        # fit the training clips' scenes and lost order tasks, pan 0.79 and zoom 0.76; at 0.3 they held;
        # BENCHMARKS.md, "Sixth round"). input_dropout does not reach it.
        scene = self.centered_weight * x.mean(1) if self.head_reads_mean or self.scene_head is not None else None
        still = [scene] if self.head_reads_mean else []
        if self.lstm_reads == "deltas+centered":
            x = torch.cat([_differences(x), self.centered_weight * (x - x.mean(1, keepdim=True))], dim=-1)
        elif self.lstm_reads in ("deltas", "both"):
            x = _differences(x) if self.lstm_reads == "deltas" else torch.cat([x, _differences(x)], dim=-1)
        elif self.lstm_reads in ("centered", "features+centered"):
            centered = x - x.mean(1, keepdim=True)
            x = centered if self.lstm_reads == "centered" else torch.cat([x, centered], dim=-1)
        x = self.feature_dropout(self.input_dropout(x).transpose(1, 2)).transpose(1, 2)
        out, (h, _) = self.lstm(self.proj(x))
        if self.bidirectional:  # the last layer's final state of each direction, each after its whole pass
            last = torch.cat([h[-2], h[-1]], dim=-1)
        else:
            last = out[:, -1]
        pooled = {"last": last, "mean": out.mean(1), "mean+last": torch.cat([out.mean(1), last], dim=-1)}[self.pool]
        logits = self.head(torch.cat([pooled, *still], dim=-1))
        if self.scene_head is None:
            return logits
        scene_logits = self.scene_head(torch.cat([pooled.detach(), scene], dim=-1))
        if both_heads:
            return logits, scene_logits
        return torch.where(self.reads_scene, scene_logits, logits)


def _differences(x: torch.Tensor) -> torch.Tensor:
    """x[t] - x[t-1] along the window (B, T, D), zero for the first frame."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
