"""The compiled backend's threads in hostile conditions: a fork after a threaded call (libgomp's
pool does not survive it) and too little memory for a new thread's stack (libgomp would exit
the process). Each test runs in a fresh interpreter (helpers.run_python)."""

import pytest

import pyrnn_fast as prf
from helpers import needs_two_cpus, run_python

pytestmark = pytest.mark.skipif("cpp" not in prf.backends(), reason="compiled backend not built")


@needs_two_cpus
def test_fork_pool_after_a_threaded_call_computes_correct_results(tmp_path):
    # libgomp's thread pool does not survive fork: a child that starts a team waits forever for
    # threads that do not exist. A forked child must run the kernels on its one thread.
    out = run_python(
        """
        import multiprocessing

        def child_result(_):
            return forward(), prf.get_num_threads()

        if __name__ == "__main__":
            before = os_threads()
            expected = forward()
            assert os_threads() > before, "the parent's call did not start a thread: nothing tested"
            with multiprocessing.get_context("fork").Pool(2) as pool:
                results = pool.map(child_result, range(4))
            for got, threads in results:
                np.testing.assert_array_equal(got, expected)
                assert threads == 1, threads
            np.testing.assert_array_equal(forward(), expected)  # the parent still works
            print("ok")
    """,
        tmp_path,
        timeout=180,
        env={"OMP_NUM_THREADS": None},
    )
    assert out == ["ok"]


@needs_two_cpus
def test_os_fork_after_a_threaded_call_computes_correct_results(tmp_path):
    out = run_python(
        """
        expected = forward()
        pid = os.fork()
        if pid == 0:
            ok = np.array_equal(forward(), expected) and prf.get_num_threads() == 1
            g = prf.rnn_backward(forward(), x, Wx, Wh, forward(), time_major=True, backend="cpp")
            os._exit(0 if ok and np.isfinite(g.dWh).all() else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """,
        tmp_path,
        timeout=180,
        env={"OMP_NUM_THREADS": None},
    )
    assert out == ["0"]


@needs_two_cpus
def test_fork_after_team_steps_child_steps_and_exits(tmp_path):
    # The parent's streaming steps ran on a helper thread of its own (csrc/spin_team.cpp),
    # which the child does not have: its steps run on its one thread, and its normal exit
    # (which joins a thread's helpers) must not wait for the parent's.
    out = run_python(
        """
        layer = prf.RNN(32, 512, stateful=True, dtype=np.float32, seed=0)  # 1.1 MB: a team
        xs = np.random.default_rng(3).standard_normal((60, 1, 32)).astype(np.float32)
        before = os_threads()
        for x in xs[:30]:
            layer.step(x)
        assert os_threads() > before, "the parent's steps started no helper: nothing tested"
        start = layer.state.copy()
        pid = os.fork()
        if pid == 0:
            got = np.stack([layer.step(x).copy() for x in xs[30:]])
            np.save("child.npy", got)
            sys.exit(0)  # a normal exit: Python's, then the C++ runtime's
        _, status = os.waitpid(pid, 0)
        expected = np.stack([layer.step(x).copy() for x in xs[30:]])
        print(os.waitstatus_to_exitcode(status), np.array_equal(np.load("child.npy"), expected))
    """,
        tmp_path,
        timeout=120,
        env={"OMP_NUM_THREADS": None},
    )
    assert out == ["0", "True"]


@needs_two_cpus
@pytest.mark.parametrize(
    "stack_env,stack_mb,margin_mb", [(None, 0, 4), ("64M", 64, 16)], ids=["default-stack", "OMP_STACKSIZE"]
)
def test_out_of_memory_for_thread_stacks_degrades_to_fewer_threads(tmp_path, stack_env, stack_mb, margin_mb):
    # Address space limited to a little above what the process uses, so that a new thread's
    # stack (8 MB by default, or OMP_STACKSIZE) cannot be mapped. libgomp exits the process when
    # it cannot create a thread; the kernels must check first, with libgomp's stack size (with
    # OMP_STACKSIZE=64M a 16 MB margin holds a default stack but not libgomp's), and run on the
    # threads they can have.
    pytest.importorskip("resource")
    out = run_python(
        f"""
        import resource, threading, warnings
        import numpy.testing  # imported lazily: not under the limit
        prf.set_num_threads(1)
        expected = forward()
        prf.set_num_threads(2)
        if {stack_mb}:
            threading.stack_size({stack_mb} << 20)
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + ({margin_mb} << 20), resource.RLIM_INFINITY))
        try:
            threading.Thread(target=lambda: None).start()
            print("skip: a thread could still be started under the limit")
            sys.exit(0)
        except RuntimeError:
            pass
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = forward()
        np.testing.assert_array_equal(got, expected)
        assert any(issubclass(w.category, RuntimeWarning) and "thread" in str(w.message) for w in caught), caught
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        np.testing.assert_array_equal(forward(), expected)  # and threads again once memory is back
        print("ok")
    """,
        tmp_path,
        env={"OMP_NUM_THREADS": None, "OMP_STACKSIZE": stack_env, "GOMP_STACKSIZE": None},
    )
    if out[0] == "skip:":
        pytest.skip(" ".join(out[1:]))
    assert out[-1] == "ok"
