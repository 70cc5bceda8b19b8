"""The compiled backend under concurrency: Python threads, OpenMP thread counts, determinism."""
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import pyrnn_fast as prf

from conftest import make_problem

pytestmark = pytest.mark.skipif("cpp" not in prf.backends(), reason="compiled backend not built")


def _run(p, activation="tanh"):
    hs, h_last = prf.rnn_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], activation=activation,
                                 time_major=True, backend="cpp")
    g = prf.rnn_backward(p["dhs"], p["x"], p["Wx"], p["Wh"], hs, p["h0"], dh_last=p["dh_last"],
                         activation=activation, time_major=True, backend="cpp")
    return (hs, h_last) + tuple(g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eight_python_threads_agree_with_one(dtype):
    problems = [make_problem(20, 16, 24, 160, dtype=dtype, seed=s) for s in range(4)]
    expected = [_run(p) for p in problems]
    results, errors = {}, []

    def worker(i):
        try:
            for rep in range(3):
                results[(i, rep)] = _run(problems[i % 4])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (i, _), got in results.items():
        for a, e in zip(got, expected[i % 4]):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("shape", [(30, 40, 16, 300), (200, 1, 8, 128)], ids=["batch40", "stream"])
def test_repeated_calls_and_thread_counts_are_bitwise_identical(activation, shape):
    # The kernel splits hidden units between threads but every output element is computed by
    # the same arithmetic whatever the split, so results do not depend on the thread count.
    # Both shapes are big enough per step to run on a team (the stream one: a barrier per
    # 1 x 128 step, the case the spin barrier was written for).
    p = make_problem(*shape, dtype=np.float32, seed=9)
    old = prf.get_num_threads()
    try:
        prf.set_num_threads(2)
        first = _run(p, activation)
        for n in (2, 1, 3, 2):
            prf.set_num_threads(n)
            for a, e in zip(_run(p, activation), first):
                np.testing.assert_array_equal(a, e)
    finally:
        prf.set_num_threads(old)


def test_numba_bench_runner_leaves_openmp_nesting_alone(tmp_path):
    # Numba's OpenMP layer switches nested parallelism on in the shared libgomp the first time it
    # runs, which made torch.nn.RNN 20x slower for the rest of the main job. The numba runner of
    # the benchmark must hand the setting back. A fresh process: numba does it only once.
    pytest.importorskip("numba")
    code = textwrap.dedent("""
        import ctypes, os
        from pyrnn_fast import _bench
        run = _bench.make_runner("numba", _bench.SHAPES["typical"], "forward")
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        before = gomp.omp_get_max_active_levels()
        run()
        import numba
        print(numba.threading_layer(), before, gomp.omp_get_max_active_levels())
    """)
    # cwd away from the source tree: `python -c` imports from its cwd first, and the tests must
    # exercise the installed package (the source tree has no compiled _core).
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    if out.returncode != 0 and "OSError" in out.stderr:
        pytest.skip("libgomp is not loaded in this build")
    assert out.returncode == 0, out.stderr
    layer, before, after = out.stdout.split()
    if layer != "omp":
        pytest.skip(f"numba uses its {layer} threading layer here, which leaves OpenMP alone")
    assert after == before
