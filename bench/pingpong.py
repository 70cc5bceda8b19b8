"""What a cache line costs to move between two CPUs, over time: every 0.2 s the round trip
(two transfers) that ``_core.line_round_trip_ns`` measures (two threads of its own, pinned to
the first two CPUs this thread may use; the median of 20 rounds of 1,000 exchanges), in ns;
"-" where no round ended within a second (the host took a vCPU away). It replaces
bench/pingpong.cpp, which printed the mean of 20,000 exchanges: a short spike moved that mean,
and moves this median less. The streaming step's second thread gains only while it is cheap
(README, "Backends, instruction sets and threads"); the main job prints it beside each row of
its step table.

    python bench/pingpong.py 60   # seconds

Zen 4 KVM guest (2 vCPUs), 2026-12-06: ~90 ns for minutes, then ~390 ns for minutes, and
back, with no other load in the guest: the host moves the vCPUs (a sibling core, then one of
another core complex, or socket); 2026-12-07 also 30-50 ns (two hyperthreads of one core).
"""

import argparse
import os
import sys
import time

from pyrnn_fast import _backends
from pyrnn_fast.benchmark.limits import LINE_EXCHANGES


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("seconds", nargs="?", type=float, default=30.0, help="how long (default 30)")
    p.add_argument("--exchanges", type=int, default=LINE_EXCHANGES, help="exchanges per figure (as the main job)")
    args = p.parse_args(argv)
    if _backends._core is None:
        print("the compiled backend is not installed: nothing to measure with", file=sys.stderr)
        return 1
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) < 2:
        print("fewer than two CPUs to measure between", file=sys.stderr)
        return 1
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        try:
            ns = _backends._core.line_round_trip_ns(args.exchanges)
        except ValueError as e:  # the binding's check of the count
            p.error(f"--{e}")
        print("-" if ns is None else f"{ns:.0f}", end=" ", flush=True)
        time.sleep(0.2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
