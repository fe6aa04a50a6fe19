"""Loading a PyTorch file (weights or a checkpoint) without ever running code from it."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch


def load_without_code(path: Path, error: type[Exception], what: str):
    """torch.load(path, weights_only=True) on the CPU; every failure raised as `error` with a
    one-line message naming the file. `what` names what the file should be, for that message."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then reads fine
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False, the one thing not to do: keep only
        # the line that names what was found
        found = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        raise error(
            f"{path}: refused to load: it holds more than tensors and plain containers, and loading it "
            f"could run code" + (f" ({found[0]})" if found else "")
        ) from None
    except (OSError, RuntimeError, EOFError) as e:
        raise error(f"{path}: cannot read as a {what}: {str(e).strip().splitlines()[0]}") from None
