"""Shared, page-locked slots that decode workers write frames into and the GPU copies them from.

On a GPU box the main process is the one that turns decoded frames into CNN batches, and its core
bounds `extract` once the workers hand over YUV (BENCHMARKS.md). A tensor a DataLoader worker
yields reaches the main process in a fresh shared-memory segment, which the pin-memory thread then
copies into page-locked memory for the GPU: about 0.9 CPU-seconds per GB here, page faults
included, and 720p frames arrive at over 1 GB/s. Written by the worker straight into a slot that is
already shared and page-locked, a chunk reaches the GPU by DMA with no copy on the host.

A slot goes back to the free list once the GPU has copied it (a CUDA event says when); a worker
that finds no free slot waits. Chunks too big for a slot, or not uint8, travel the usual way.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections import deque

import numpy as np
import torch

ALIGN = 64  # bytes: each plane starts on a cache line


class PinnedRing:
    def __init__(self, slots: int, slot_bytes: int, device: torch.device):
        self.device, self.slot_bytes = device, slot_bytes
        self.buffer = torch.empty((slots, slot_bytes), dtype=torch.uint8).share_memory_()
        self.free = multiprocessing.get_context().SimpleQueue()  # the DataLoader's default context
        for slot in range(slots):
            self.free.put(slot)
        self.copying: deque = deque()  # (CUDA event, slot): slots the GPU is still copying from
        self.pinned = False

    @classmethod
    def fitting(cls, slots: int, slot_bytes: int, device: torch.device) -> PinnedRing | None:
        """Up to `slots` slots, as many as fill at most half of the free shared memory; None below
        two. A full /dev/shm (64 MB in a default Docker container) would kill with SIGBUS whichever
        process first touched a page of the ring beyond it, the main process included."""
        try:
            free = shutil.disk_usage("/dev/shm").free
        except OSError:  # no /dev/shm (macOS, Windows): the platform's shared memory has no such cap
            free = slots * slot_bytes * 2
        slots = min(slots, free // 2 // slot_bytes)
        return cls(slots, slot_bytes, device) if slots >= 2 else None

    # --- in a decode worker -------------------------------------------------------------------
    def store(self, planes: list[np.ndarray]) -> dict | None:
        """Copy the planes into a free slot (waiting for one) and return where they lie; None where
        they do not fit a slot, or the ring has closed: the caller then sends them as tensors."""
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
        workers have forked: CUDA may keep pinned ranges out of a child's memory (MADV_DONTFORK)."""
        if self.device.type != "cuda" or self.pinned:
            return
        cudart = torch.cuda.cudart()
        error = cudart.cudaHostRegister(self.buffer.data_ptr(), self.buffer.numel(), 0)
        # Unpinned slots still give the right frames, copied by the driver through its own staging
        # buffer: slower, never wrong.
        self.pinned = int(getattr(error, "value", error)) == 0

    def planes(self, stored: dict) -> list[torch.Tensor]:
        """The stored planes, as views of their slot (valid until `release`)."""
        memory = self.buffer[stored["slot"]]
        return [memory[start:start + int(np.prod(shape))].view(shape) for start, shape in stored["planes"]]

    def release(self, slot: int) -> None:
        """Give the slot back once the copies queued from it so far are done; on a CPU at once."""
        if self.device.type == "cuda":
            event = torch.cuda.Event(blocking=True)  # a wait below sleeps instead of spinning on a core
            event.record(torch.cuda.current_stream(self.device))
            self.copying.append((event, slot))
            while self.copying and (len(self.copying) > 4 or self.copying[0][0].query()):
                event, slot = self.copying.popleft()
                event.synchronize()
                self.free.put(slot)
        else:
            self.free.put(slot)

    def close(self) -> None:
        """Wake every worker waiting for a slot (they send the usual way from then on) and unpin."""
        self.free.put(-1)
        if self.pinned:
            torch.cuda.synchronize(self.device)  # no copy may still read the slots
            torch.cuda.cudart().cudaHostUnregister(self.buffer.data_ptr())
            self.pinned = False
