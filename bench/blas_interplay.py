"""How NumPy's BLAS threads and pyrnn_fast's OpenMP threads interact.

Times the compiled backend's forward pass on the `typical` shape (a) on idle cores and
(b) right after a NumPy matmul, whose OpenBLAS worker threads then keep spinning for a while
(OPENBLAS_THREAD_TIMEOUT, log2 of the cycles they spin; default 28, about 0.1 s). Run it as

    python bench/blas_interplay.py                                # OpenBLAS defaults
    OPENBLAS_THREAD_TIMEOUT=4 python bench/blas_interplay.py      # idle BLAS threads sleep at once

The variable is read when NumPy loads OpenBLAS, so it must be set before the process starts.
"""

import os
import statistics
import time

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark import runners


def measure(rounds=30):
    shape = runners.SHAPES["typical"]
    x, Wx, Wh, b, h0 = (a.astype(np.float32) for a in runners.make_inputs(shape))
    a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)

    def ours():
        prf.rnn_forward(x, Wx, Wh, b, h0, time_major=True, backend="cpp")

    ours()
    idle, after_blas = [], []
    for _ in range(rounds):
        time.sleep(0.3)  # every library's idle threads have gone to sleep
        ours()  # warm
        t0 = time.perf_counter()
        ours()
        idle.append(time.perf_counter() - t0)
        a @ a  # NumPy's BLAS wakes its threads ...
        t0 = time.perf_counter()
        ours()  # ... and we run while they spin
        after_blas.append(time.perf_counter() - t0)
    return statistics.median(idle), statistics.median(after_blas)


def main():
    print(f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset (28)')}")
    for threads in (os.cpu_count(), 1):
        prf.set_num_threads(threads)
        med_idle, med_after = measure()
        print(
            f"  pyrnn_fast threads {threads}: forward 'typical' {med_idle * 1e3:6.2f} ms on idle cores, "
            f"{med_after * 1e3:6.2f} ms right after a NumPy GEMM ({med_after / med_idle:.2f}x)"
        )


if __name__ == "__main__":
    main()
