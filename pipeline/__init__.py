"""Extract CNN features of every video frame once (stage one), train an LSTM on them (stage two)."""

__version__ = "0.1.0"

from .cache import open_cache  # noqa: E402  (h5py and numpy only: safe for stage-two machines)

__all__ = ["open_cache", "WindowDataset", "__version__"]


def __getattr__(name: str):
    # imported on first use: `import pipeline` stays light (no torch), and needs no torchvision or decord
    if name == "WindowDataset":
        from .windows import WindowDataset

        return WindowDataset
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
