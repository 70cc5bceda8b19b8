"""pytest-benchmark setup for bench/: the thread count every implementation gets.

Set ``PYRNN_FAST_BENCH_THREADS=N`` to run every implementation on N threads. The thread
variables must be in the environment before NumPy (OpenBLAS), torch or jax load, so they are
set here before anything imports them; then ``limit_threads`` confines the CPU affinity (which
XLA sizes its pool by) and sets pyrnn_fast's and torch's thread counts. Unset: all cores.
"""

import os
import sys

_threads = os.environ.get("PYRNN_FAST_BENCH_THREADS")
if _threads:
    if "numpy" in sys.modules:
        print("bench/conftest.py: numpy was imported before the thread limit was set", file=sys.stderr)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_var] = _threads
    from pyrnn_fast.benchmark import timing

    timing.limit_threads(int(_threads))


def pytest_report_header(config):
    import pyrnn_fast as prf
    from pyrnn_fast.benchmark import runners, timing

    return (
        f"pyrnn_fast {prf.__version__}: backends {prf.backends()}, ISA {prf.isa()}, "
        f"{timing.num_threads()} thread(s); peers installed: {runners.available_peers()}"
    )
