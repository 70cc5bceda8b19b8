"""The streaming step's latency back to back and after a pause (a sensor's frames some
milliseconds apart), with one thread allowed and with two, alternating call by call so that
both settings see the same machine.

    python bench/step_pauses.py                   # pauses of 0, 3 and 20 ms
    python bench/step_pauses.py --pauses 0,5 --calls 200
    python bench/step_pauses.py --tail 40000      # back to back: median, p99, p99.9, slowest
    python bench/step_pauses.py --tail 40000 --after-make 0   # ... starting as the layer is made
    python bench/step_pauses.py --tail 40000 --busy           # ... beside a busy process

A step uses a second thread only while steps come back to back (step.hpp, kStepTeamIdleNs):
libgomp's idle helpers spin about a millisecond after a region and then sleep, and waking a
sleeping one costs more than a step. So after a pause both settings should take the same time
(one thread ran), and back to back two threads should be faster where the weights are large
(one thread per half a core's L2 of weights, kStepCacheShare).

Each case starts `--after-make` seconds (the main job's SETTLE_SECONDS, 0.15) after its layer
is made: the constructor's np.linalg.qr (the orthogonal Wh) runs on NumPy's OpenBLAS threads
from H = 128 on, and their idle worker then spins ~0.1 s, on two CPUs the one the step's
helper uses (README, "OpenMP runtimes"); `--after-make 0` times what a loop that starts at
once meets. `--busy` runs a
process that spins on a CPU beside the steps (another program at work, on two CPUs the
helper's): a helper the OS keeps off its CPU has its steps taken back by the calling thread
(step.hpp, kStepTakeBackNs), and the script prints how many were.
"""

import argparse
import subprocess
import sys
import time

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark.timing import SETTLE_SECONDS

CASES = ((np.float32, 256), (np.float32, 512), (np.float64, 512))  # (dtype, H)


def make_layer(dtype, H, after_make):
    """The case's layer, `after_make` seconds after it was made."""
    layer = prf.RNN(32, H, stateful=True, dtype=dtype, seed=0)
    time.sleep(after_make)
    return layer


def _columns(r):
    """One line's figures per thread count, from {threads: figures}."""
    return "   ".join(f"{t} thread(s) " + " / ".join(f"{v:6.1f}" for v in r[t]) for t in r)


def measure(dtype, H, pause_s, calls, after_make):
    layer = make_layer(dtype, H, after_make)
    x = np.ones((1, 32), dtype)
    times = {1: [], 2: []}
    for _ in range(calls):
        for threads in times:
            prf.set_num_threads(threads)
            if pause_s:
                time.sleep(pause_s)
            else:
                layer.step(x)  # the step before, back to back with the timed one
            t0 = time.perf_counter()
            layer.step(x)
            times[threads].append(time.perf_counter() - t0)
    prf.set_num_threads(None)
    return {threads: np.percentile(t, [25, 50, 75]) * 1e6 for threads, t in times.items()}


def tail(dtype, H, calls, after_make, block=2000):
    """`calls` back-to-back steps per thread count, in blocks of `block` that alternate between
    one thread and two (a real-time loop's view: how slow the slow calls are, not only the
    median); returns {threads: (median, p99, p99.9, slowest, mean)} in µs."""
    layer = make_layer(dtype, H, after_make)
    x = np.ones((1, 32), dtype)
    times = {1: [], 2: []}
    for b in range(max(1, calls // block)):
        for threads in (1, 2) if b % 2 == 0 else (2, 1):
            prf.set_num_threads(threads)
            for _ in range(50):
                layer.step(x)  # the team (or not) settled before the block is timed
            for _ in range(block):
                t0 = time.perf_counter()
                layer.step(x)
                times[threads].append(time.perf_counter() - t0)
    prf.set_num_threads(None)
    return {t: (*np.percentile(v, [50, 99, 99.9]) * 1e6, max(v) * 1e6, np.mean(v) * 1e6) for t, v in times.items()}


def take_backs():
    """Steps this thread took back from a late helper so far (None: not this build)."""
    from pyrnn_fast import _backends

    counts = getattr(_backends._core, "_step_team_counts", None)
    return counts()[1] if counts else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pauses", default="0,3,20", help="comma-separated pauses before each call, ms")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--tail", type=int, default=0, metavar="CALLS", help="instead: CALLS back-to-back steps per setting")
    p.add_argument("--after-make", type=float, default=SETTLE_SECONDS, metavar="S", help="s from making to timing")
    p.add_argument("--busy", action="store_true", help="with --tail: beside a process that spins")
    args = p.parse_args()
    if args.busy and not args.tail:
        p.error("--busy needs --tail")
    if args.tail:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
        try:
            head = "µs per step back to back (median / p99 / p99.9 / slowest / mean)"
            print(f"{head}, N = 1, D = 32, {prf.isa()} kernels{', beside a busy process' if busy else ''}")
            for dtype, H in CASES:
                before = take_backs()
                r = tail(dtype, H, args.tail, args.after_make)
                taken = "" if before is None else f"   ({take_backs() - before} taken back)"
                print(f"{np.dtype(dtype).name:>7} H = {H:4d}:   {_columns(r)}{taken}")
        finally:
            if busy:
                busy.kill()
                busy.wait()
        return
    print(f"µs per step (25th / 50th / 75th percentile), N = 1, D = 32, {prf.isa()} kernels")
    for dtype, H in CASES:
        for pause in (float(v) for v in args.pauses.split(",")):
            r = measure(dtype, H, pause / 1e3, args.calls, args.after_make)
            print(f"{np.dtype(dtype).name:>7} H = {H:4d}, pause {pause:4.0f} ms:   {_columns(r)}")


if __name__ == "__main__":
    main()
