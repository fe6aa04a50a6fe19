"""Loading a PyTorch file (weights or a checkpoint) without ever running code from it."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch


def load_without_code(path: Path, error: type[Exception], what: str):
    """torch.load(path, weights_only=True) on the CPU; every failure raised as `error` with a
    one-line message naming the file. `what` names what the file should be, for that message."""
    not_torch = _not_a_torch_file(path)
    if not_torch:
        raise error(f"{path}: cannot read as a {what}: {not_torch}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then reads fine
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False, the one thing not to do: keep only
        # the line that names what was found
        found = [line.strip().split(". Please use")[0] for line in str(e).splitlines()
                 if "GLOBAL" in line or "Unsupported" in line]
        whole_model = "state dict" in what and any("GLOBAL" in line for line in found)
        raise error(
            f"{path}: refused to load: it holds more than tensors and plain containers, and loading it "
            f"could run code" + (f" ({found[0]})" if found else "")
            + ("; a whole model saved with torch.save(model)? Save its weights instead: "
               "torch.save(model.state_dict(), PATH)" if whole_model else "")
        ) from None
    except (OSError, RuntimeError, EOFError) as e:
        raise error(f"{path}: cannot read as a {what}: {str(e).strip().splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001  the weights-only unpickler fails every which way on a damaged
        # pickle (KeyError, IndexError, ValueError...); nothing of the file has run, so say so in one line
        raise error(f"{path}: cannot read as a {what}: a damaged file ({type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})") from None


def _not_a_torch_file(path: Path) -> str | None:
    """Why the file cannot be one that torch.save wrote, told by its first bytes (None where it may be):
    torch.save writes a zip archive (a pickle from older PyTorch); what else users pass, by name."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None  # (torch.load then says why: missing, a folder, no permission)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None  # a zip archive, or a pickle (protocol 2 and later): torch.load decides
    if not head:
        return "an empty file"
    if len(head) > 9 and head[8:10] == b'{"':
        return ("a safetensors file; torch.load reads what torch.save wrote (convert it: "
                "torch.save(safetensors.torch.load_file(FILE), PATH))")
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras weights?), not what torch.save writes"
    return "not what torch.save writes (neither a zip archive nor a pickle)"
