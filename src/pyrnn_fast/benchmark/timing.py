"""How the benchmark times: interleaved rounds, the other processes' CPU share, and the
thread count every implementation gets.

Thread counts: ``limit_threads(n)`` must run before NumPy/torch/jax are imported (the CLI
re-executes itself for that), so that every implementation gets the same ``n`` cores.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from typing import NamedTuple

#: Environment marker set by ``limit_threads``; the CLI re-execs itself until it matches.
THREADS_ENV = "PYRNN_FAST_BENCH_THREADS"

# Idle worker threads of one library keep spinning for a while after its last call (OpenBLAS:
# 2^28 cycles, ~0.1 s, unless OPENBLAS_THREAD_TIMEOUT says otherwise; OpenMP runtimes and
# XLA less) and take cores from whatever runs next. Pausing this long before each batch of
# calls lets every implementation start on idle cores instead of inheriting its
# predecessor's spinning threads (README, "Threads and NumPy's BLAS").
SETTLE_SECONDS = 0.15
#: Calls shorter than this get one untimed call after each settle pause. The first call after
#: a pause runs on cold caches and sleeping threads and cores: measured on `typical` forward,
#: 6-13 ms against 4.9 ms for the calls after it. Calls of a tenth of a second lose a few ms
#: too, which is a few percent of them: `large` on Zen 3 (2 threads, two runs each way in one
#: process, median of 5 rounds) read 82.5-85.1 % of the FMA peak forward and 82.5-82.6 %
#: forward + backward without the warm-up call, 85.0-85.7 % and 83.0-85.5 % with it, as a loop
#: does (torch gained 1-7 % the same way). Calls of a second or more get none (the gated
#: cells' `large` forward + backward, ~1.5 s here): a few ms of cold start are under half a
#: percent of them, and warming them up would cost the job seconds per round.
WARM_UP_BELOW_SECONDS = 1.0


class Timed(NamedTuple):
    """What ``time_interleaved`` measured of one callable: seconds per call, the median and the
    fastest of its rounds, and how many rounds it ran."""

    median: float
    rounds: int
    best: float


def time_interleaved(
    fns: dict, repeat=5, min_time=10e-3, max_time=10.0, settle=SETTLE_SECONDS, errors: dict | None = None
) -> dict:
    """Median seconds per call of each callable in ``fns``, measured in interleaved rounds.

    Each callable is first called once untimed (JIT compilation excluded) and then up to three
    more times to estimate its cost, the fastest of them (no more once one took
    ``WARM_UP_BELOW_SECONDS`` or they took ``max_time`` in all; none when the first call already
    took > ``max_time``). Then, ``repeat`` times, every callable in turn (the order rotating)
    runs as many calls as fill ``min_time`` and records the time per call, so all of them see
    the same machine conditions. A callable
    whose rounds would exceed ``max_time`` seconds in total gets fewer rounds (at least one).
    Each batch starts after ``settle`` seconds of sleep (see SETTLE_SECONDS) and, for calls
    shorter than WARM_UP_BELOW_SECONDS, one untimed call (neither with ``settle=0``). Returns
    ``{key: Timed(median, rounds, best)}`` (seconds per call). With ``errors`` (a dict), a callable that raises in its
    calls before the timed rounds is left out and its exception stored there under its key;
    without, the exception propagates (as one raised in a timed round always does).
    """
    plan = {}
    for key, fn in fns.items():
        try:
            t0 = time.perf_counter()
            fn()
            est = time.perf_counter() - t0
            if est < max_time:
                # The fastest of up to three calls after the first: the first calls of a process
                # (the first callable's) can take 100x a later one (3.3 ms against 25 µs for a
                # layer call), and a batch of 3 calls after each settle pause then measured the
                # pause's cold start (bench/short_calls.py: `record` read 65-106 µs, 4x
                # `record=False`). Fewer when a call is long, and within max_time in all.
                times: list = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                    if min(times) >= WARM_UP_BELOW_SECONDS or sum(times) >= max_time:
                        break
                est = min(times)
        except Exception as e:
            if errors is None:
                raise
            errors[key] = e
            continue
        number = max(1, math.ceil(min_time / max(est, 1e-9)))
        rounds = max(1, min(repeat, int(max_time / max(est * number, 1e-9))))
        plan[key] = (number, rounds, est < WARM_UP_BELOW_SECONDS)
    samples: dict = {key: [] for key in plan}
    keys = list(plan)
    for r in range(repeat if keys else 0):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            number, rounds, warm_up = plan[key]
            if r >= rounds:
                continue
            fn = fns[key]
            if settle:
                time.sleep(settle)
                if warm_up:
                    fn()
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples[key].append((time.perf_counter() - t0) / number)
    return {key: Timed(statistics.median(s), len(s), min(s)) for key, s in samples.items()}


def time_callable(fn, repeat=5, min_time=2e-3) -> float:
    """Median seconds per call of ``fn`` (see ``time_interleaved``)."""
    return time_interleaved({0: fn}, repeat, min_time)[0][0]


def best_seconds(fn, calls=3) -> float:
    """The fastest of ``calls`` timed calls of ``fn``, after one untimed call."""
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cpu_snapshot():
    """(wall seconds, CPU seconds used on this process's CPUs by all processes, CPU seconds used
    by this one, how many CPUs), for ``other_load``. Only the CPUs this process may run on:
    load elsewhere (``--threads 1`` on 2 CPUs) does not slow it, and a container's few CPUs
    are not averaged with the host's many. "Used" is /proc/stat's non-idle time: user,
    system, interrupts and steal (a hypervisor's other guests); the second entry is None,
    and the count 0, without /proc/stat."""
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        ticks, seen = 0, 0
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if not name.startswith("cpu") or name == "cpu" or (mine is not None and int(name[3:]) not in mine):
                    continue
                fields = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                ticks += sum(fields) - fields[3] - fields[4]
                seen += 1
        busy = ticks / os.sysconf("SC_CLK_TCK") if seen else None
    except (OSError, ValueError):
        busy, seen = None, 0
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system, seen


def other_load(since) -> float | None:
    """Fraction of the CPU time of this process's CPUs used by *other* processes since
    ``cpu_snapshot()`` ``since`` (None where /proc/stat is missing). On a 2-core machine even a
    little of it wrecks multi-threaded timings: a thread that is descheduled stalls every barrier."""
    now = cpu_snapshot()
    if since[1] is None or now[1] is None or now[0] <= since[0]:
        return None
    other = (now[1] - since[1]) - (now[2] - since[2])
    return max(0.0, other / ((now[0] - since[0]) * max(now[3], 1)))


def num_threads() -> int:
    """The number of CPUs this process may run on (what ``limit_threads`` restricted)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def limit_threads(n: int) -> None:
    """Confine this process, and every library in it, to ``n`` threads on the first ``n`` CPUs.

    Sets OMP/OpenBLAS/MKL/Numba thread counts in the environment (read when those libraries
    load, so this must happen before NumPy/torch/jax are imported — or be followed by a
    re-exec, as the CLI does), restricts CPU affinity so XLA and any other pool size themselves
    to ``n``, and sets pyrnn_fast's and torch's thread counts if they are already imported.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"threads: expected an int >= 1, got {n}")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ[THREADS_ENV] = str(n)
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:n])
    if "pyrnn_fast" in sys.modules:
        sys.modules["pyrnn_fast"].set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
