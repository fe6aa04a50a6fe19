"""Shared, page-locked slots that decode workers write frames into and the GPU copies them from.

On a GPU box the main process is the one that turns decoded frames into CNN batches, and its core
bounds `extract` once the workers hand over YUV (BENCHMARKS.md). A tensor a DataLoader worker
yields reaches the main process in a fresh shared-memory segment, which the pin-memory thread then
copies into page-locked memory for the GPU: about 0.9 CPU-seconds per GB here, page faults
included, and 720p frames arrive at over 1 GB/s. Written by the worker straight into a slot that is
already shared and page-locked, a chunk reaches the GPU by DMA with no copy on the host.

The free slots wait in a queue; a worker takes one (waiting while there is none), and the main
process puts it back once the GPU has read it (a CUDA event says when). Workers cut their chunks to
fit a slot (`chunk_bytes`); a single frame too big for one is converted and cropped in the worker
(extract._crops_made_here), and only where there are no slots do decoded frames travel the
DataLoader's way (then unpinned: the driver copies them through its own staging buffer).

Where /dev/shm is small (Docker gives a container 64 MB unless told otherwise) the slots are made
smaller, down to MIN_SLOT_BYTES, and then fewer, down to two: without them every chunk would need a
fresh segment of /dev/shm as big as a slot, and where not even one per worker fits, the decoding falls
back to the main process, one core for the whole box (shared_memory.fit_workers). A worker holds a slot
from copying a decoded chunk in until the GPU has read it, not while it decodes; whether two keep 15
workers busy on a GPU box is not measured yet.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import shutil
import sys
from collections import deque

import numpy as np
import torch

ALIGN = 64  # bytes: each plane starts on a cache line
MAX_PLANES = 4  # a chunk's planes (Y, U, V; or one RGB plane), each padded to ALIGN: what a slot holds beyond its chunk
# Slots are not made smaller than this: a 4K frame's region (the pixels its crop is made of) fits, as YUV
# 4:2:0 (5.2 MB) or 4:4:4 (11.0 MB), and 720p's 20 times (4:2:0). Frames handed over whole do not (4K
# of a deeper format, turned or from decord: 25 MB of RGB); they cross as crops made in the worker
# (extract._crops_made_here). Two fit in half of Docker's 64 MB with room to spare.
MIN_SLOT_BYTES = 12 << 20
MAX_COPYING = 4  # slots the main process holds while the GPU has not read them yet (fewer in a small set)


class PinnedSlots:
    def __init__(self, slots: int, slot_bytes: int, device: torch.device):
        self.device, self.slot_bytes = device, slot_bytes
        # share_memory_() writes every page now, in this process (a page beyond a full /dev/shm would
        # be a SIGBUS: `fitting` leaves room)
        self.buffer = torch.empty((slots, slot_bytes), dtype=torch.uint8).share_memory_()
        self.free = multiprocessing.get_context().SimpleQueue()  # the DataLoader's default context
        for slot in range(slots):
            self.free.put(slot)
        self.copying: deque = deque()  # (CUDA event, slot): slots the GPU may still be reading
        # Slots go back only when the next chunk comes in: holding all of them would leave the workers
        # waiting for a slot and this process waiting for a chunk.
        self.max_copying = min(MAX_COPYING, slots - 1)
        self.pinned = False

    @property
    def chunk_bytes(self) -> int:
        """The most pixel data a worker may put in one chunk for it to fit a slot."""
        return self.slot_bytes - MAX_PLANES * ALIGN

    @classmethod
    def fitting(cls, slots: int, slot_bytes: int, device: torch.device, free: int | None = None) -> PinnedSlots | None:
        """Up to `slots` slots of `slot_bytes`, in at most half of the free shared memory (`free`: that of
        /dev/shm): smaller slots where they do not fit, down to MIN_SLOT_BYTES, then fewer; None below
        two, or where the space has gone by the time they are made (ranks of torchrun that start at
        the same moment each see the same free space): that process's chunks then cross as tensors,
        or it decodes in its main process (shared_memory.fit_workers). With a small /dev/shm, give
        such ranks fewer --workers: what the slots leave is shared by every rank's items."""
        if free is None:
            try:
                free = shutil.disk_usage("/dev/shm").free
            except OSError:  # no /dev/shm (macOS, Windows): the platform's shared memory has no such cap
                free = slots * slot_bytes * 2
        room = free // 2
        if slots * slot_bytes > room:
            slot_bytes = max(min(slot_bytes, MIN_SLOT_BYTES), room // slots // ALIGN * ALIGN)
            slots = min(slots, room // slot_bytes)
        if slots < 2:
            return None
        try:
            return cls(slots, slot_bytes, device)
        except RuntimeError as e:  # torch reserves the pages at once (posix_fallocate): a clean error, no SIGBUS
            if "No space left on device" not in str(e):
                raise
            return None

    # --- in a decode worker -------------------------------------------------------------------
    def store(self, planes: list[np.ndarray]) -> dict | None:
        """Copy the planes into a free slot (waiting for one) and return where they lie; None where
        they do not fit a slot (one frame bigger than `chunk_bytes`), or the slots are closed: the
        caller then sends them as tensors."""
        offsets, end = [], 0
        for p in planes:
            offsets.append(end)
            end += -(-p.nbytes // ALIGN) * ALIGN
        if end > self.slot_bytes or any(p.dtype != np.uint8 for p in planes):
            return None
        slot = self.free.get()
        if slot < 0:  # closed: pass the word on to the next waiting worker
            self.free.put(slot)
            return None
        memory = self.buffer[slot].numpy()
        for p, start in zip(planes, offsets):
            np.copyto(memory[start:start + p.nbytes].reshape(p.shape), p)
        return {"slot": slot, "planes": [(start, p.shape) for p, start in zip(planes, offsets)]}

    # --- in the main process ------------------------------------------------------------------
    def pin(self) -> None:
        """Page-lock the slots, so the GPU copies them by DMA while the host goes on. Called once the
        workers have started: CUDA may keep page-locked ranges out of a forked child (MADV_DONTFORK)."""
        if self.device.type != "cuda" or self.pinned:
            return
        with torch.cuda.device(self.device):
            error = int(torch.cuda.cudart().cudaHostRegister(self.buffer.data_ptr(), self.buffer.numel(), 1))  # 1: portable
        self.pinned = error == 0
        if not self.pinned:  # the frames stay right, copied through the driver's staging buffer: slower
            _clear_cuda_error()
            print(f"extract: cannot page-lock the decode slots (CUDA error {error}); frames reach the GPU "
                  f"by slower copies", file=sys.stderr)

    def planes(self, stored: dict) -> list[torch.Tensor]:
        """The stored planes, as views of their slot (valid until `release`)."""
        memory = self.buffer[stored["slot"]]
        return [memory[start:start + int(np.prod(shape))].view(shape) for start, shape in stored["planes"]]

    def release(self, slot: int) -> None:
        """Give the slot back once the GPU has done everything queued so far (the copies from it among
        them); with too many such slots held, wait for the oldest. On a CPU at once: the caller has
        read it (to_crops always makes new tensors)."""
        if self.device.type != "cuda":
            self.free.put(slot)
            return
        event = torch.cuda.Event(blocking=True)  # a wait below sleeps instead of spinning on a core
        event.record(torch.cuda.current_stream(self.device))
        self.copying.append((event, slot))
        while self.copying and (len(self.copying) > self.max_copying or self.copying[0][0].query()):
            event, slot = self.copying.popleft()
            event.synchronize()
            self.free.put(slot)

    def close(self) -> None:
        """Wake every worker waiting for a slot (they send the DataLoader's way from then on) and unpin."""
        self.free.put(-1)
        if self.pinned:
            torch.cuda.synchronize(self.device)  # no copy may still read the slots
            if int(torch.cuda.cudart().cudaHostUnregister(self.buffer.data_ptr())) != 0:
                _clear_cuda_error()  # the memory is freed with the process anyway
            self.pinned = False


def _clear_cuda_error() -> None:
    """torch's cudart binding leaves a failed call's error as CUDA's last error, which the next
    kernel launch check would then raise as its own. Clear it through the CUDA runtime torch loaded."""
    try:
        with open("/proc/self/maps") as maps:
            path = next(line.split()[-1] for line in maps if "libcudart" in line)
        ctypes.CDLL(path).cudaGetLastError()
    except (OSError, StopIteration):
        pass
