"""Which torch device a `--device` name means, checked, so a wrong name is a message, not a traceback."""

from __future__ import annotations

import torch

NAMES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str | torch.device, error: type[Exception], auto_mps: bool = False) -> torch.device:
    """`auto` is the first CUDA device, else (with `auto_mps`) Apple's MPS, else the CPU.
    `error` is the caller's exception type, which the CLI turns into a one-line message."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if auto_mps and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise error(f"unknown device {name!r}: use {NAMES}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise error(f"unsupported device {name!r}: use {NAMES}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error(f"--device {name} was asked for, but torch sees no CUDA device here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise error(f"--device {name}: torch sees only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise error(f"--device {name} was asked for, but torch sees no MPS device here")
    return device
