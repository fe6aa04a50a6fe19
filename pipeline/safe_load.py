"""Loading a PyTorch file (weights or a checkpoint) without ever running code from it."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch


def load_without_code(path: Path, error: type[Exception], what: str):
    """torch.load(path, weights_only=True) on the CPU (a safetensors file through safetensors, which
    holds only tensors); every failure raised as `error` with a one-line message naming the file.
    `what` names what the file should be, for that message."""
    kind = _kind(path)
    if kind == "safetensors":
        return _load_safetensors(path, error)
    if kind is not None:
        raise error(f"{path}: cannot read as a {what}: {kind}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then reads fine
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False, the one thing not to do: keep only the line
        # that names what was found. An "Unsupported global" is code the file would run; anything else
        # the weights-only unpickler refuses is a damaged pickle, or one torch.save does not write.
        found = [line.strip().split(". Please use")[0] for line in str(e).splitlines() if "Unsupported" in line]
        if not any("GLOBAL" in line for line in found):
            raise error(f"{path}: refused to load: a damaged file, or a pickle that torch.save does not write "
                        f"and torch's weights-only loader does not read" + (f" ({found[0]})" if found else "")) from None
        whole_model = "state dict" in what and any("GLOBAL torch.nn." in line for line in found)
        raise error(
            f"{path}: refused to load: it holds more than tensors and plain containers, and loading it "
            f"could run code ({found[0]})"
            + ("; a whole model saved with torch.save(model)? Save its weights instead: "
               "torch.save(model.state_dict(), PATH)" if whole_model else "")
        ) from None
    except (OSError, RuntimeError, EOFError) as e:
        raise error(f"{path}: cannot read as a {what}: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001  the weights-only unpickler fails every which way on a damaged
        # pickle (KeyError, IndexError, ValueError...); nothing of the file has run, so say so in one line
        raise error(f"{path}: cannot read as a {what}: a damaged file ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else f"{type(e).__name__}, no detail (a file cut short?)"


def _kind(path: Path) -> str | None:
    """What the file is, told by its first bytes, where it cannot be what torch.save writes:
    "safetensors", or the reason in words; None where it may be (a zip archive, or a pickle of
    protocol 2 or later, as older PyTorch wrote), for torch.load to decide."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None  # (torch.load then says why: missing, a folder, no permission)
    if len(head) > 9 and head[8:10] == b'{"':  # (first: an 8-byte header length may begin with 0x80)
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None
    if not head:
        return "an empty file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras weights?), not what torch.save writes"
    return "not what torch.save writes (neither a zip archive nor a pickle of protocol 2 or later)"


def _load_safetensors(path: Path, error: type[Exception]) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise error(f"{path}: a safetensors file; reading it needs the safetensors package "
                    "(pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001  (safetensors parses a JSON header and raw tensors; no code runs)
        raise error(f"{path}: cannot read as a safetensors file: {_first_line(e)}") from None
