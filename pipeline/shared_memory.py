"""How many items DataLoader workers may have on their way, so that they fit in /dev/shm.

Every tensor a worker hands over lives in shared memory until the main process lets it go, and
Docker gives a container 64 MB of it unless told otherwise (`--shm-size`, `--ipc=host`). There, a
worker that finds it full fails (a traceback, or SIGBUS), or its queue drops the item: multiprocessing's
feeder thread prints the error and goes on, which once stored a video short (extract.py)."""

from __future__ import annotations

import shutil

ADVICE = "give it more (docker run --shm-size=2g, or --ipc=host)"


def free_bytes() -> int | None:
    """Free space in /dev/shm; None where there is none (macOS, Windows: no such cap)."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


def prefetch_that_fits(workers: int, item_bytes: int, held: int, most: int) -> int | None:
    """The DataLoader's prefetch_factor: `most`, or fewer where /dev/shm cannot hold every worker's
    items on their way and the `held` ones the main process still uses; None where not even one
    each fits (then read in the main process)."""
    free = free_bytes()
    if free is None:
        return most
    room = int(free * 0.8)  # (others use it too)
    for prefetch in range(most, 0, -1):
        if (workers * prefetch + held) * item_bytes <= room:
            return prefetch
    return None
