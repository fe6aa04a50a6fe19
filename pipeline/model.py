"""The classifier: a window of per-frame features (B, T, D) -> class logits (B, C)."""

from __future__ import annotations

import torch
from torch import nn


class WindowLSTM(nn.Module):
    """Normalise, project each frame to `hidden`, one LSTM layer, classify mean and last outputs.

    The per-feature mean and std of the training frames are buffers of the model, so they travel in
    its state_dict and whoever loads the checkpoint normalises exactly as training did. Projecting
    1000 -> hidden first makes the LSTM's input matmul hidden x 4*hidden instead of 1000 x 4*hidden,
    most of the cost on a CPU. The mean over time says what is in the window, the last output in
    what order it came.
    """

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("std", torch.ones(feature_dim))
        self.proj = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(2 * hidden), nn.Dropout(dropout), nn.Linear(2 * hidden, num_classes))

    def set_normalization(self, mean, std) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        out, _ = self.lstm(self.proj(x))
        return self.head(torch.cat([out.mean(1), out[:, -1]], dim=-1))
