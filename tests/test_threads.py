"""The compiled backend under concurrency: Python threads, OpenMP thread counts and who sets them
(OMP_NUM_THREADS, threadpoolctl, prf.set_num_threads), determinism. Fork and a shortage of
memory for thread stacks are in test_fork_and_stacks.py."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import SELF_TOL, TOL, close, in_threads, make_problem, needs_two_cpus, num_threads, run_python, use_backend
from pyrnn_fast import _backends

pytestmark = pytest.mark.skipif("cpp" not in prf.backends(), reason="compiled backend not built")


def _run(p, activation="tanh"):
    hs, h_last = prf.rnn_forward(
        p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], activation=activation, time_major=True, backend="cpp"
    )
    g = prf.rnn_backward(
        p["dhs"],
        p["x"],
        p["Wx"],
        p["Wh"],
        hs,
        p["h0"],
        dh_last=p["dh_last"],
        activation=activation,
        time_major=True,
        backend="cpp",
    )
    return (hs, h_last) + tuple(g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eight_python_threads_agree_with_one(dtype):
    problems = [make_problem(20, 16, 24, 160, dtype=dtype, seed=s) for s in range(4)]
    expected = [_run(p) for p in problems]
    results = {}

    def worker(i):
        for rep in range(3):
            results[(i, rep)] = _run(problems[i % 4])

    errors = in_threads(worker, 8)
    assert not errors, errors
    for (i, _), got in results.items():
        for a, e in zip(got, expected[i % 4]):
            np.testing.assert_array_equal(a, e)


# Shapes (T, N, D, H) that run on a team in every build, each way the recurrence splits its
# work (recurrence_split in csrc/kernels/recurrence.hpp):
#  - by rows (samples), no barrier: 16 KB of float32 weights (H = 64) fit every core's cache,
#    N = 32 gives each of 3 threads 8 rows or more, and the sequence is 13M multiply-adds; N = 8
#    gives 2 threads 4 rows each (tiles shorter than the micro-kernel's 6 or 8 rows);
#  - by columns with many rows (packed from 64 in the AVX2 build): 4 MB of weights (H =
#    1024) fit no core's L2 seen (at most 2 MB);
#  - by columns, one row: a barrier per 1 x 384 step, the case the spin barrier was written
#    for (up to 1 x 256 runs on one thread with 512-bit vectors, kMinStepWorkPerThread).
THREAD_SPLIT_SHAPES = {
    "rows": (100, 32, 8, 64),
    "rows-few": (400, 8, 8, 64),
    "columns": (3, 24, 8, 1024),
    "columns-64rows": (2, 64, 8, 1024),
    "stream": (200, 1, 8, 384),
}


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("shape", list(THREAD_SPLIT_SHAPES.values()), ids=list(THREAD_SPLIT_SHAPES))
def test_repeated_calls_and_thread_counts_are_bitwise_identical(activation, shape):
    # Every output element is computed by the same arithmetic whichever thread computes it and
    # whichever way the work is split, so results do not depend on the thread count.
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
        from pyrnn_fast.benchmark import runners
        # Steps of 2^19 multiply-adds: numba's parallel kernels (from 2^20 the NumPy reference's)
        run = runners.make_runner("numba", (20, 32, 16, 128), "forward")
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_LAZY)  # the runtime numba will use
        before = gomp.omp_get_max_active_levels()
        run()
        import numba
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel region ran (one thread: the serial kernels)
            layer = "none"
        print(layer, before, gomp.omp_get_max_active_levels())
    """)
    # cwd away from the source tree: `python -c` imports from its cwd first, and the tests must
    # exercise the installed package (the source tree has no compiled _core). Without the
    # caller's OMP_NUM_THREADS, like the other tests that start threads: with one thread (that
    # setting, or one CPU) the numba backend runs its serial kernels and numba never starts a
    # threading layer (numba.threading_layer() then raised "Threading layer is not initialized").
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    if out.returncode != 0 and "OSError" in out.stderr:
        pytest.skip("no libgomp.so.1 on this system")
    assert out.returncode == 0, out.stderr
    layer, before, after = out.stdout.split()
    if layer == "none":
        pytest.skip("the numba runner ran on one thread (one CPU here): no threading layer started")
    if layer != "omp":
        pytest.skip(f"numba uses its {layer} threading layer here, which leaves OpenMP alone")
    assert after == before


# ---------------------------------------------------------------------------------------------
# Who decides the thread count: OpenMP's setting (OMP_NUM_THREADS, threadpoolctl,
# prf.set_num_threads), read at each call. The tests that start threads in a fresh interpreter
# use helpers.run_python; fork and thread-creation failure are in test_fork_and_stacks.py.


def _our_openmp(info):
    """threadpoolctl's entries for the OpenMP runtime that pyrnn_fast._core uses: the copy bundled
    in the wheel (pyrnn_fast.libs) if there is one, else the only OpenMP runtime loaded."""
    omp = [lib for lib in info if lib["internal_api"] == "openmp"]
    # auditwheel puts the bundled copy in <site-packages>/pyrnn_fast.libs, next to the package.
    # Compare folders, not substrings: in a venv under a folder named pyrnn_fast-ci.* (as CI's
    # once was) every library's path contained "pyrnn_fast", PyTorch's libgomp included.
    bundled = pathlib.Path(prf.__file__).resolve().parent.parent / "pyrnn_fast.libs"
    ours = [lib for lib in omp if pathlib.Path(lib["filepath"]).resolve().parent == bundled]
    return ours or omp


@needs_two_cpus
def test_threadpool_limits_one_keeps_calls_on_one_thread(tmp_path):
    # Observable: the OS threads of the process. libgomp keeps a team's threads alive after the
    # region, so a call that started a second thread leaves one more entry in /proc/self/task.
    pytest.importorskip("threadpoolctl")
    before, limited, inside, after, unlimited = run_python(
        """
        from threadpoolctl import threadpool_limits
        before = os_threads()  # NumPy's BLAS threads start at import
        with threadpool_limits(1):
            inside = prf.get_num_threads()
            forward()
            limited = os_threads()
        forward()  # the control: without the limit the same call does start a thread
        print(before, limited, inside, os_threads(), prf.get_num_threads())
    """,
        tmp_path,
        env={"OMP_NUM_THREADS": None},
    )
    assert int(inside) == 1
    assert int(limited) == int(before), "a call inside threadpool_limits(1) started an OpenMP thread"
    assert int(after) == int(before) + 1, "the control call outside the limit did not start a second thread"
    assert int(unlimited) >= 2


@needs_two_cpus
def test_helper_threads_keep_off_the_calling_threads_cpu(tmp_path):
    # run_team (team.hpp): a helper leaves each region with its CPU mask = what it was allowed
    # minus the CPU the calling thread ran on, so that a later wake-up cannot put it on the
    # caller's CPU (seen in a VM: both threads on one vCPU, a 0.1 ms region took 3-8 ms). The
    # calling thread's own mask is never changed. (Which CPU the caller was on is not checked:
    # pinning it to one would also limit the call to one thread.)
    lines = run_python(
        """
        import json
        before = set(os.listdir("/proc/self/task"))
        allowed = sorted(os.sched_getaffinity(0))
        forward()
        helpers = [int(t) for t in set(os.listdir("/proc/self/task")) - before]
        masks = [sorted(os.sched_getaffinity(t)) for t in helpers]
        print(json.dumps([allowed, sorted(os.sched_getaffinity(0)), masks], separators=(",", ":")))
    """,
        tmp_path,
        env={"OMP_NUM_THREADS": None},
    )
    allowed, caller, helper_masks = json.loads(lines[-1])
    assert caller == allowed, "the calling thread's mask was changed"
    assert helper_masks, "the call started no helper thread"
    for mask in helper_masks:
        excluded = set(allowed) - set(mask)
        assert set(mask) <= set(allowed) and len(excluded) == 1, (allowed, mask)


@needs_two_cpus
def test_a_step_after_a_pause_runs_on_one_thread_back_to_back_steps_on_two(tmp_path):
    # step.hpp (kStepTeamIdleNs): waking a sleeping helper costs more than a step, so only a
    # step that follows the previous one closely starts the team. Observable as the OS threads
    # of a fresh process: the first step (no step before it) starts none.
    before, first, loop = run_python(
        """
        layer = prf.RNN(32, 512, stateful=True, dtype=np.float32, seed=0)  # 1.1 MB of weights: 2 threads
        xs = np.ones((1, 32), np.float32)
        before = os_threads()
        layer.step(xs)
        first = os_threads()
        for _ in range(50):
            layer.step(xs)
        print(before, first, os_threads())
    """,
        tmp_path,
        env={"OMP_NUM_THREADS": None},
    )
    assert int(first) == int(before), "the first step started a team"
    assert int(loop) == int(before) + 1, "back-to-back steps did not use a second thread"


@needs_two_cpus
def test_a_thread_that_stepped_on_a_team_leaves_no_helper_behind(tmp_path):
    # csrc/spin_team.cpp: a thread's streaming steps run their team on helper threads of that
    # thread, which end with it (joined when it exits); the interpreter then exits with the
    # main thread's helpers still there (joined at exit), which must not hang.
    before, during, after = run_python(
        """
        import threading
        layer = prf.RNN(32, 512, stateful=True, dtype=np.float32, seed=0)  # 1.1 MB of weights: a team
        xs = np.ones((1, 32), np.float32)
        seen = {}
        def stream():
            for _ in range(300):
                layer.step(xs)
            seen["during"] = os_threads()
        before = os_threads()
        t = threading.Thread(target=stream)
        t.start()
        t.join()
        for _ in range(300):
            layer.step(xs)
        # t.join() returns once the thread's Python state is gone; its thread_local team (which
        # joins its helper) ends after that, at the OS thread's exit: wait for it, within reason
        # (failed once in CI, and once in 12 runs here, counting right away)
        import time
        deadline = time.monotonic() + 5
        while os_threads() > before + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(before, seen["during"], os_threads())
    """,
        tmp_path,
        env={"OMP_NUM_THREADS": None},
    )
    assert int(during) == int(before) + 2, "the stepping thread had no helper: nothing tested"
    assert int(after) == int(before) + 1, "the exited thread's helper is still there (or the main thread has none)"


@needs_two_cpus
def test_steps_paused_around_the_helpers_sleep_give_one_threads_bits(tmp_path):
    # A team's helper sleeps kStepTeamIdleNs (0.5 ms) after its last work, and the caller wakes
    # it when its post may have come after that (csrc/spin_team.cpp): pauses from 0.1 to 0.9 ms
    # between steps cross that moment in both directions. A missed wake-up would hang (the
    # caller waits for the helper at the step's barrier) or be slow; the bits must be one
    # thread's.
    out = run_python(
        """
        import time
        xs = np.random.default_rng(1).standard_normal((400, 1, 32)).astype(np.float32)
        pauses = np.random.default_rng(2).uniform(1e-4, 9e-4, 400)
        runs = []
        for threads in (1, 2):
            prf.set_num_threads(threads)
            layer = prf.RNN(32, 512, stateful=True, dtype=np.float32, seed=0)
            states = []
            for x, pause in zip(xs, pauses):
                end = time.perf_counter() + pause
                while time.perf_counter() < end:
                    pass
                states.append(layer.step(x).copy())
            runs.append(np.stack(states))
        print(np.array_equal(runs[0].view(np.uint32), runs[1].view(np.uint32)), os_threads())
    """,
        tmp_path,
        timeout=120,
        env={"OMP_NUM_THREADS": None},
    )
    assert out[0] == "True"


def test_set_num_threads_is_what_threadpoolctl_reports():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    old = prf.get_num_threads()
    try:
        for n in (1, 3):
            prf.set_num_threads(n)
            ours = _our_openmp(threadpoolctl.threadpool_info())
            assert ours, "threadpoolctl does not see the OpenMP runtime of pyrnn_fast._core"
            assert [lib["num_threads"] for lib in ours] == [n] * len(ours)
            assert prf.get_num_threads() == n
        # A limit inside a pyrnn_fast setting still limits, and the setting is back afterwards.
        with threadpoolctl.threadpool_limits(1):
            assert prf.get_num_threads() == 1
        assert prf.get_num_threads() == 3
    finally:
        prf.set_num_threads(old)


@pytest.mark.parametrize("limit", [1, 3], ids=["below", "equal to the setting"])
def test_calling_thread_limit_is_the_calling_threads_own(limit):
    # pyrnn_fast.dask limits each task's worker thread this way: the limit wins over
    # set_num_threads in that thread only (also when equal to it: then values alone cannot
    # tell them apart), and the thread is back to the process's setting afterwards, also
    # after an exception.
    old = prf.get_num_threads()
    seen = {}

    def other():
        seen["other"] = prf.get_num_threads()
        prf.set_num_threads(2)  # a newer process-wide setting, made elsewhere

    try:
        prf.set_num_threads(3)
        with pytest.raises(KeyError), _backends.calling_thread_limit(limit):
            seen["inside"] = prf.get_num_threads()
            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
            seen["after a newer setting"] = prf.get_num_threads()  # does not lift the limit here
            raise KeyError("a task that fails")
        seen["outside"] = prf.get_num_threads()  # back to the process-wide setting, the newer one
        prf.set_num_threads(1)
        seen["and follows it"] = prf.get_num_threads()
    finally:
        prf.set_num_threads(old)
    assert seen == {"inside": limit, "other": 3, "after a newer setting": limit, "outside": 2, "and follows it": 1}


def test_omp_num_threads_is_the_default(tmp_path):
    # 3 on purpose: more than the CPUs of a small CI machine, so it is OpenMP's setting that is
    # reported, not a CPU count. None returns to that default after a set_num_threads.
    default, after_set, after_reset = run_python(
        """
        print(prf.get_num_threads())
        prf.set_num_threads(1)
        print(prf.get_num_threads())
        prf.set_num_threads(None)
        print(prf.get_num_threads())
    """,
        tmp_path,
        env={"OMP_NUM_THREADS": "3"},
    )
    assert (int(default), int(after_set), int(after_reset)) == (3, 1, 3)
    assert run_python("print(prf.get_num_threads())", tmp_path, env={"OMP_NUM_THREADS": "1"}) == ["1"]


def test_the_setting_is_seen_by_other_python_threads():
    old = prf.get_num_threads()
    seen = []

    def look():
        seen.append(prf.get_num_threads())
        _run(make_problem(3, 4, 5, 6, seed=1))  # a call from this thread works

    try:
        for n in (1, 3, 2):
            prf.set_num_threads(n)
            t = threading.Thread(target=look)
            t.start()
            t.join()
        assert seen == [1, 3, 2]
    finally:
        prf.set_num_threads(old)


def test_threadpool_limits_in_another_thread_limits_despite_a_newer_setting():
    # A worker thread whose first call comes inside threadpool_limits(1) must stay limited even
    # though set_num_threads(3) was called (in another thread) after the worker last looked;
    # on exit the worker gets the setting.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _backends._core.default_num_threads() == 1:
        pytest.skip("OpenMP's default is 1 here: a limit to 1 is not told apart from the default")
    old = prf.get_num_threads()
    seen = []

    def worker():
        with threadpoolctl.threadpool_limits(1):
            seen.append(prf.get_num_threads())
            _run(make_problem(3, 4, 5, 6, seed=3))
            seen.append(prf.get_num_threads())
        seen.append(prf.get_num_threads())

    try:
        prf.set_num_threads(3)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert seen == [1, 1, 3]
    finally:
        prf.set_num_threads(old)


@pytest.mark.parametrize(
    "bad,exc",
    [
        (2**31, ValueError),
        (10**30, ValueError),
        (0, ValueError),
        (-1, ValueError),
        (True, TypeError),
        (2.0, TypeError),
        ("2", TypeError),
    ],
)
def test_set_num_threads_rejects_bad_counts_and_keeps_working(bad, exc):
    old = prf.get_num_threads()
    with pytest.raises(exc, match="n"):
        prf.set_num_threads(bad)
    assert prf.get_num_threads() == old
    _run(make_problem(3, 4, 5, 6, seed=2))


@needs_two_cpus
def test_the_numba_backend_gives_back_the_callers_numba_thread_count():
    """numba's thread count is a setting of the calling thread (the user's own parallel numba
    code reads it): a parallel numba-backend call set it to its own and left it there (found
    by a review). The call itself still runs on the package's setting."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2 or prf.get_num_threads() < 2:
        pytest.skip("needs numba and pyrnn_fast to have two threads")
    x, Wx, Wh = (
        np.full((32, 3, 8), 0.01, np.float32),
        np.full((8, 128), 0.01, np.float32),
        np.eye(128, dtype=np.float32),
    )
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        prf.rnn_forward(x, Wx, Wh, backend="numba")  # 32 rows, H = 128 (2^19 a step): the parallel kernels
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("work", ["forward", "step"])
def test_a_daemon_thread_in_a_compiled_call_when_the_program_ends(work, tmp_path):
    """The process aborted at exit ("terminate called without an active exception", status
    134) when a daemon thread was inside a compiled call as the main thread returned: CPython
    ends such a thread as it takes the GIL back, and that unwinding met pybind11's noexcept
    GIL guard (found by a review). The thread is parked instead; the process exits with 0."""
    code = f"""
        import threading, time
        xs = rng.standard_normal((3000, 64, 64)).astype(np.float32)
        wx = (rng.standard_normal((64, 256)) * .1).astype(np.float32)
        wh = (rng.standard_normal((256, 256)) * .05).astype(np.float32)
        layer = prf.RNN(64, 2048, stateful=True, seed=0, backend="cpp")  # a step > 2**20 releases the GIL
        x_t = np.ones((64, 64), np.float32)
        started = threading.Event()

        def work():
            started.set()
            while True:
                if {work!r} == "forward":
                    prf.rnn_forward(xs, wx, wh, time_major=True, backend="cpp")
                else:
                    layer.step(x_t)

        threading.Thread(target=work, daemon=True).start()
        started.wait()
        time.sleep(0.3)
        print("returning")
    """
    for _ in range(2):  # it aborted in 3 to 6 runs of 6 before
        assert run_python(code, tmp_path, env={"OMP_NUM_THREADS": "2"}) == ["returning"]


def test_numba_workqueue_layer_with_two_calling_threads(tmp_path):
    """numba's workqueue threading layer (the README's advice beside torch, and numba's own
    fallback) aborts the process when two threads launch parallel kernels at once
    ("Concurrent access has been detected"); the numba backend's kernels take turns there."""
    pytest.importorskip("numba")
    code = """
        import threading
        import numba
        N, T, D, H = 32, 40, 16, 128  # N*H*H = 2^19 multiply-adds a step: numba's parallel kernels
        r = np.random.default_rng(1)
        xs = r.standard_normal((N, T, D)).astype(np.float32)
        wx = (r.standard_normal((D, H)) * .2).astype(np.float32)
        wh = (r.standard_normal((H, H)) * .05).astype(np.float32)
        expected = prf.rnn_forward(xs, wx, wh, backend="numba")[0]
        assert numba.threading_layer() == "workqueue", numba.threading_layer()
        bad = []

        def work():
            for _ in range(30):
                if not np.array_equal(prf.rnn_forward(xs, wx, wh, backend="numba")[0], expected):
                    bad.append(1)

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("done", len(bad))
    """
    env = {"NUMBA_THREADING_LAYER": "workqueue", "OMP_NUM_THREADS": "2"}
    assert run_python(code, tmp_path, timeout=300, env=env) == ["done", "0"]


# An LD_PRELOAD shim that makes omp_get_num_procs() report FAKE_CPUS CPUs, so that a call is
# granted the threads a machine with that many CPUs would give it.
FAKE_CPUS_C = """
#include <stdlib.h>
int omp_get_num_procs(void) { const char* s = getenv("FAKE_CPUS"); return s ? atoi(s) : 128; }
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not (shutil.which("cc") or shutil.which("gcc")),
    reason="needs Linux and a C compiler for the LD_PRELOAD shim",
)
def test_forty_threads_split_a_view_of_2_to_the_61_rows_within_its_bounds(tmp_path):
    # Each thread's share of n rows was n*tid/nt in int64: with n ~ 2^61 (a stride-0 view
    # costs no memory) n*tid overflowed from thread 32 on, whose negative range read and
    # wrote the rows before the arrays. The canary: `out`'s rows sit in a larger array whose
    # elements before them must stay untouched. The call is stopped after 0.5 s by a signal
    # handler that raises (the kernels' Ctrl-C path), which first counts the process's threads
    # to show that the call did run on more than 32.
    compiler = shutil.which("cc") or shutil.which("gcc")
    shim = tmp_path / "fake_cpus.so"
    src = tmp_path / "fake_cpus.c"
    src.write_text(FAKE_CPUS_C)
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(shim), str(src)], check=True)
    out = run_python(
        """
        import signal
        from numpy.lib.stride_tricks import as_strided
        from pyrnn_fast import _core

        S, N = (2**61 - 1) // 7, 7
        a = as_strided(np.ones(N, np.float32), shape=(S, N, 1), strides=(0, 4, 4), writeable=False)
        b = np.ones((1, 1), np.float32)
        big = np.full(3 * N, 12345.0, np.float32)
        out = as_strided(big[N:], shape=(S, N, 1), strides=(0, 4, 4))
        threads = []

        def stop(signum, frame):
            threads.append(len(os.listdir("/proc/self/task")))
            raise KeyboardInterrupt

        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        try:
            _core.rows_gemm(a, b, None, out, 256)
        except KeyboardInterrupt:
            pass
        print(threads[0], int((big[:N] != 12345).sum()), int((big[2 * N :] != 12345).sum()))
        """,
        tmp_path,
        env={"FAKE_CPUS": "40", "OMP_NUM_THREADS": "40", "LD_PRELOAD": str(shim)},
    )
    threads, written_before, written_after = map(int, out)
    assert threads > 33, f"the call ran on {threads - 1} threads at most: the shim did not take"
    assert (written_before, written_after) == (0, 0), "rows outside `out` were written"


@needs_two_cpus
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("cell, H", [("RNN", 403), ("LSTM", 203), ("GRU", 243)])
def test_a_column_split_of_packed_steps_with_lengths(cell, H, with_state):
    """Two threads split these steps by columns and, from 64 rows (kMinPackedRows, the AVX2
    build), each packs the step's whole left factor, half of it written by the other thread's
    step (recurrence.hpp). With samples ending at different steps (rows leaving the forward,
    entering the backward), with and without an initial state, and the last thread's columns
    not a whole number of vectors, the results equal one thread's bit for bit, and the NumPy
    backend's. T = 4: fewer sample-steps than the weights' bytes
    (kRowSplitBytesPerSampleStep), so no L2 makes it a split by rows."""
    T, N = 4, 70
    rng = np.random.default_rng(3)
    isa = "avx2" if "avx2" in _backends._core.available_isas() else None
    _two_threads_as_one_and_numpy(cell, H, T, N, rng.integers(0, T + 1, N), with_state, np.float64, isa, rng, seed=5)


def _two_threads_as_one_and_numpy(cell, H, T, N, lengths, with_state, dtype, isa, rng, seed):
    """A layer's forward and backward over samples of `lengths` (D = 4; inputs and initial
    state, when `with_state`, from `rng`): two threads' results equal one's bit for bit and
    the NumPy backend's within its tolerance (`isa`: the compiled backend's kernels, or None)."""
    D = 4
    x, dout, h0, c0 = (rng.standard_normal(s) for s in ((N, T, D), (N, T, H), (1, N, H), (1, N, H)))
    state = ((h0, c0) if cell == "LSTM" else h0) if with_state else None
    runs = []
    for backend, threads in (("cpp", 1), ("cpp", 2), ("numpy", 1)):
        layer = getattr(prf, cell)(D, H, dtype=dtype, seed=seed, backend=backend)
        with num_threads(threads), use_backend((backend, isa if backend == "cpp" else None)):
            out = layer(x, state, lengths)
            dx = layer.backward(dout)
        runs.append([out[0], dx, *(layer.grads[k] for k in sorted(layer.grads))])
    for one, two, ref in zip(*runs):
        np.testing.assert_array_equal(two, one)
        close(two, ref, SELF_TOL if dtype == np.float64 else TOL[np.dtype(dtype)])


# Two H per cell, one of which splits into an odd count of panels for each of NR = 32, 16, 8.
LEFT_OVER_SIZES = {"RNN": (544, 552), "LSTM": (272, 280), "GRU": (272, 280)}
ISAS = _backends._core.available_isas() if "cpp" in prf.backends() else []


@needs_two_cpus
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("T, N", [(3, 10), (2, 64)], ids=["N10", "N64"])
@pytest.mark.parametrize("cell, H", [(c, H) for c, sizes in LEFT_OVER_SIZES.items() for H in sizes])
def test_a_column_split_shares_the_panels_left_over_by_rows(cell, H, T, N, with_state, dtype, isa):
    """Split by columns into panels that do not divide evenly between two threads (NR columns a
    panel: 32 float32 and 16 float64 with AVX-512 and the portable build, 16 and 8 with AVX2),
    each thread takes as many whole panels and the one left over is shared by rows
    (recurrence.hpp, share_rest), the rows shared out again where samples end. The results
    equal one thread's bit for bit, and the NumPy backend's. Fewer sample-steps than the
    weights' bytes (kRowSplitBytesPerSampleStep), so a split by columns; from N = 64 the AVX2
    build packs each thread's rows of the step's left factor (kMinPackedRows) while the shared
    panels read theirs in place."""
    rng = np.random.default_rng(H + N)
    lengths = rng.integers(0, T + 1, N)
    lengths[0] = T
    _two_threads_as_one_and_numpy(cell, H, T, N, lengths, with_state, dtype, isa, rng, seed=7)
