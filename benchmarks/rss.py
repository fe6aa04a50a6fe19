"""Peak resident memory of a command and of all its processes (Linux: reads /proc).

    python benchmarks/rss.py [--interval 0.1] -- COMMAND [ARGS...]
    e.g. python benchmarks/rss.py -- python -m pipeline train CACHE --out RUN --epochs 2 --data stream

Runs COMMAND, samples the memory of it and of every process descended from it (DataLoader workers,
decode workers) every --interval seconds, and prints, as its last line:
  peak_main_mib      the highest sampled RSS of COMMAND's own process
  peak_tree_pss_mib  the highest sampled sum of PSS over COMMAND and its descendants: what they hold
                     together, each page shared by n processes (a forked worker shares its parent's
                     libraries) counted 1/n in each
  peak_tree_rss_mib  the same sum of RSS: counts shared pages once per process, an upper bound
  maxrss_mib         the kernel's exact high-water mark of the largest single process
                     (getrusage(RUSAGE_CHILDREN).ru_maxrss): a peak shorter than --interval shows here
Exits with COMMAND's exit status.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time


def read_kib(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0  # gone, or a zombie


def rss_kib(pid: int) -> int:
    return read_kib(f"/proc/{pid}/status", "VmRSS:")


def pss_kib(pid: int) -> int:
    return read_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # the name may hold spaces and ")"
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")

    start = time.perf_counter()
    process = subprocess.Popen(command)
    peak_main = peak_pss = peak_rss = 0
    while process.poll() is None:
        tree = [process.pid] + descendants(process.pid)
        peak_main = max(peak_main, rss_kib(process.pid))
        peak_pss = max(peak_pss, sum(pss_kib(pid) for pid in tree))
        peak_rss = max(peak_rss, sum(rss_kib(pid) for pid in tree))
        time.sleep(args.interval)
    seconds = time.perf_counter() - start
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(f"exit status {process.returncode} after {seconds:.1f} s; sampled every {args.interval:g} s")
    print(f"peak_main_mib={peak_main / 1024:.0f} peak_tree_pss_mib={peak_pss / 1024:.0f} "
          f"peak_tree_rss_mib={peak_rss / 1024:.0f} maxrss_mib={maxrss / 1024:.0f}")
    sys.stdout.flush()
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
