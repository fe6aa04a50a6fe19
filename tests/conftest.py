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
