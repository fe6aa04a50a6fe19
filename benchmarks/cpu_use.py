"""Where the cores went during a phase of a benchmark (Linux: reads /proc).

    with CpuUse() as use:
        ...  # the phase
    print(use.report())

Samples, every `interval` seconds, the CPU time of each thread of this process and of each process
descended from it (decode workers), and reports them as cores busy on average over the phase: this
process's threads (the busiest named by thread id), and the workers together.
"""

from __future__ import annotations

import os
import threading
import time

from rss import descendants

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(stat_path: str) -> float:
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuUse:
    def __init__(self, interval: float = 0.2):
        self.interval, self.stop = interval, threading.Event()
        self.threads: dict[int, tuple[float, float]] = {}  # tid -> (first, last) seen CPU seconds
        self.workers: dict[int, float] = {}  # pid -> last seen CPU seconds

    def _sample(self) -> None:
        me = os.getpid()
        for tid in map(int, os.listdir(f"/proc/{me}/task")):
            seconds = _cpu_seconds(f"/proc/{me}/task/{tid}/stat")
            first = self.threads.get(tid, (seconds, seconds))[0]
            self.threads[tid] = (first, seconds)
        for pid in descendants(me):
            self.workers[pid] = max(self.workers.get(pid, 0.0), _cpu_seconds(f"/proc/{pid}/stat"))

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuUse":
        self._sample()
        self.workers_before = dict(self.workers)
        self.started = time.perf_counter()
        self.sampler = threading.Thread(target=self._run, daemon=True)
        self.sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sampler.join()
        self._sample()
        self.seconds = time.perf_counter() - self.started

    def report(self) -> str:
        used = sorted(((last - first, tid) for tid, (first, last) in self.threads.items()), reverse=True)
        mine = sum(u for u, _ in used)
        workers = sum(s - self.workers_before.get(pid, 0.0) for pid, s in self.workers.items())
        busiest = ", ".join(f"{'main' if tid == os.getpid() else tid} {u / self.seconds:.2f}" for u, tid in used[:4])
        return (f"cores busy over {self.seconds:.1f} s: this process {mine / self.seconds:.2f} (threads: {busiest}); "
                f"{len(self.workers)} child processes {workers / self.seconds:.2f}")
