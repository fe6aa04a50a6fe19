import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests import their helpers (videos.py) by name


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A state dict of random-init AlexNet saved to a file: the pretrained one cannot be downloaded here."""
    from torchvision.models import alexnet

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture
def run_with_dev_shm():
    """run(command, megabytes): a shell command run in a mount namespace of its own whose /dev/shm holds
    `megabytes`, as a container's does (Docker's default is 64 MB). Needs `unshare -m` and mount, so
    root on Linux: skipped elsewhere."""
    import os
    import subprocess

    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True) if os.path.exists("/usr/bin/unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("needs unshare -m and mount (root on Linux)")

    def run(command: str, megabytes: int) -> subprocess.CompletedProcess:
        return subprocess.run(["unshare", "-m", "sh", "-c",
                               f"mount -t tmpfs -o size={megabytes}m tmpfs /dev/shm && {command}"],
                              capture_output=True, text=True, timeout=600)

    return run
