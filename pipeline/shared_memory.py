"""How many items DataLoader workers may have on their way, so that they fit in /dev/shm.

Every tensor a worker hands over lives in shared memory until the main process lets it go, and
Docker gives a container 64 MB of it unless told otherwise (`--shm-size`, `--ipc=host`). There, a
worker that finds it full fails (a traceback, or SIGBUS), or its queue drops the item: multiprocessing's
feeder thread prints the error and goes on, which once stored a video short (extract.py)."""

from __future__ import annotations

import shutil
import sys


def free_bytes() -> int | None:
    """Free space in /dev/shm; None where there is none (macOS, Windows: no such cap)."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


def fit_workers(workers: int, item_bytes: int, held: int, most: int, who: str, instead: str) -> tuple[int, int | None]:
    """(workers, prefetch_factor) for `who`'s DataLoader: each worker has `most` items on their way,
    or fewer where /dev/shm cannot hold them all and the `held` ones the main process still uses;
    where not even one each fits, no workers: the work (`instead`: "decoding", "reading") is then done
    in the main process, and stderr says so."""
    if not workers:
        return 0, None
    free = free_bytes()
    if free is None:
        return workers, most
    room = int(free * 0.8)  # (others use it too)
    for prefetch in range(most, 0, -1):
        if (workers * prefetch + held) * item_bytes <= room:
            return workers, prefetch
    print(f"{who}: /dev/shm has {free / 2**20:.0f} MB free, and {workers} worker process(es) would need about "
          f"{(workers + held) * item_bytes / 2**20:.0f} MB to hand over items of {item_bytes / 2**20:.0f} MB: "
          f"{instead} in this process instead (slower); give it more (docker run --shm-size=2g, or --ipc=host), "
          f"or use a smaller --batch-size", file=sys.stderr)
    return 0, None
