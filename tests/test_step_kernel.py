"""The compiled streaming step (_core.Stepper) and the FMA peak loop (_core.fma_peak), at the
binding: every layer's new state against the NumPy reference, over several steps, for stacks,
batch sizes around the kernel's row blocking and widths around the vector width; what it
accepts and refuses. The layer's step() built on it is tested in test_layers_state.py."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import CPP_PARAMS, assert_close, backend_id, num_threads, use_backend
from pyrnn_fast import _backends, _reference

core = _backends._core
pytestmark = pytest.mark.skipif(core is None, reason="the compiled backend is not installed")


def _params(wx, wh, b) -> dict:
    """The layer's params dict the stepper watches (only the identity of its values matters)."""
    return {f"{name}{l}": a for l in range(len(wx)) for name, a in (("Wx", wx[l]), ("Wh", wh[l]), ("b", b[l]))}


def _stack(L, N, D, H, dtype, seed=0, bias_every=1):
    rng = np.random.default_rng(seed)
    wx = [(rng.standard_normal((D if l == 0 else H, H)) / np.sqrt(D if l == 0 else H)).astype(dtype) for l in range(L)]
    wh = [(0.5 * rng.standard_normal((H, H)) / np.sqrt(max(H, 1))).astype(dtype) for _ in range(L)]
    b = [rng.standard_normal(H).astype(dtype) if l % bias_every == 0 else None for l in range(L)]
    state = rng.standard_normal((L, N, H)).astype(dtype)
    return wx, wh, b, state


def _reference_step(x, wx, wh, b, state, activation):
    """Every layer's new state, with the reference's one-step forward in float64."""
    new, inp = [], x.astype(np.float64)
    for l in range(len(wx)):
        hs, _ = _reference.rnn_forward(
            inp[None], wx[l].astype(np.float64), wh[l].astype(np.float64),
            None if b[l] is None else b[l].astype(np.float64), state[l].astype(np.float64), activation,
        )  # fmt: skip
        inp = hs[0]
        new.append(inp)
    return np.stack(new)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize(
    "L,N,D,H",
    [
        (1, 1, 32, 64), (1, 1, 3, 1), (2, 3, 5, 37), (3, 5, 32, 130), (1, 2, 1, 17), (2, 4, 7, 512), (1, 1, 0, 9),
        (1, 11, 20, 600), (2, 61, 32, 192), (1, 3, 16, 256), (1, 3, 8, 1024), (1, 3, 8, 1040),
    ],
)  # fmt: skip
@pytest.mark.parametrize("backend", CPP_PARAMS, ids=backend_id)
def test_steps_match_the_reference(L, N, D, H, dtype, activation, backend):
    with use_backend(backend):
        _check_steps(L, N, D, H, dtype, activation)


def _check_steps(L, N, D, H, dtype, activation):
    wx, wh, b, state = _stack(L, N, D, H, dtype, bias_every=2)
    out = np.empty_like(state)
    stepper = core.Stepper(wx, wh, b, state, out, activation, params := _params(wx, wh, b))
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((N, D)).astype(dtype)
        expected = _reference_step(x, wx, wh, b, state.copy(), activation)
        top = stepper.step(x, params, state)
        assert_close(state, expected, dtype, "state")
        assert_close(top, expected[-1], dtype, "returned top state")
        assert top.dtype == dtype and top.shape == (N, H)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,H", [(1, 700), (3, 700), (8, 448), (61, 192), (3, 256)])
@pytest.mark.parametrize("backend", CPP_PARAMS, ids=backend_id)
def test_thread_counts_give_bitwise_equal_states(dtype, N, H, backend):
    """Threads split the weights' rows into chunks fixed by the shape, summed along one fixed
    binary tree, and take separate blocks of rows: every value is computed the same way
    whatever the split. (1, 700), (3, 700), (8, 448): several chunks (the weights need more
    than one core's cache), one block of rows, with kStepRows rows and a row on its own;
    (61, 192): one chunk, blocks of rows split between the threads; (3, 256): rows swept with
    the sums in registers, in one or more column tiles. (The first step after a pause runs on
    one thread, kStepTeamIdleNs: the later ones on two.)"""
    results = []
    for threads in (1, 2):
        wx, wh, b, state = _stack(2, N, 32, H, dtype)
        with use_backend(backend):
            results.append(_steps_on(threads, wx, wh, b, state, N, dtype))
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("N", [1, 17])
@pytest.mark.parametrize("cell", ["rnn", "gru"])
@pytest.mark.parametrize("backend", CPP_PARAMS, ids=backend_id)
def test_consecutive_steps_from_one_state_give_the_same_bits(cell, dtype, threads, N, backend):
    """Each round of blocks of rows (N = 17 has three) sums every thread's chunks of weights in
    the other order from the round before, the previous step's included, along the same tree:
    the same step, repeated from the same state, must give the same bits whichever order it
    ran in. Several chunks per thread on any core's L2 up to 2 MB: vanilla H = 1000 (4 MB of
    weights), GRU H = 600 (its h·Wh's 4.3 MB; its x·Wx, D = 32 rows, has chunks of its own)."""
    x = np.random.default_rng(4).standard_normal((N, 32)).astype(dtype)
    outs = []
    with num_threads(threads), use_backend(backend):
        if cell == "rnn":
            wx, wh, b, state = _stack(1, N, 32, 1000, dtype, seed=3)
            stepper = core.Stepper(wx, wh, b, state, np.empty_like(state), "tanh", {})
            expected = _reference_step(x, wx, wh, b, state, "tanh")
        else:
            wx, wh, b, bh, state = _gru_stack(1, N, 32, 600, dtype, seed=3)
            stepper = core.Stepper(wx, wh, b, state, np.empty_like(state), "tanh", {}, bh=bh)
            expected = _gru_reference_step(x, wx, wh, b, bh, state.copy())
        start = state.copy()
        for _ in range(4):
            state[...] = start
            assert stepper.step(x, {}, state) is not None
            outs.append(state.copy())
    assert_close(outs[0], expected, dtype, "state")
    for later in outs[1:]:
        np.testing.assert_array_equal(later.view(np.uint8), outs[0].view(np.uint8))


def _process_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _core_cache_bytes() -> int:
    """A core's L2 as the C library reports it (what the kernels size by, team.hpp), else the
    512 KB they assume."""
    try:
        out = subprocess.run(["getconf", "LEVEL2_CACHE_SIZE"], capture_output=True, text=True, timeout=10)
        size = int(out.stdout) if out.returncode == 0 else 0
    except (OSError, ValueError, subprocess.SubprocessError):
        size = 0
    return size if size > 0 else 512 << 10


# A vanilla float32 layer (D = 32) whose weights fill 60 % of that L2: more than half of it, so
# its team is there for the cache (two chunks of weights), yet timed against one thread (step.hpp,
# kStepTrialCachePercent). 380 on a 1 MB L2.
_H_TEAM_FOR_CACHE = int((-32 + (32**2 + 0.6 * _core_cache_bytes()) ** 0.5) / 2)


@pytest.mark.parametrize(
    "cell,H",
    [("rnn", 256), ("lstm", 128), ("gru", 192), pytest.param("rnn", _H_TEAM_FOR_CACHE, id="rnn-60pct-of-L2")],
)
@pytest.mark.parametrize("backend", CPP_PARAMS, ids=backend_id)
def test_a_stream_whose_team_trials_switch_ways_gives_one_threads_bits(cell, H, backend):
    """A stream of back-to-back steps on two threads runs some steps alone (step.hpp,
    StepTeamTrial: steps 8-11 and 4 in every 128 or more after, and alone throughout where
    that measured faster) and the rest on the team: every step's state must be the bits of
    the same stream on one thread. N = 1 and weights of 160-400 KB: a team for the work
    (kMinStepCallBytesPerThread), not for the cache, so two chunks on every machine; and
    weights of 60 % of the core's L2, two chunks for the cache."""
    import pyrnn_fast as prf

    xs = np.random.default_rng(5).standard_normal((300, 1, 32)).astype(np.float32)
    make = {"rnn": prf.RNN, "lstm": prf.LSTM, "gru": prf.GRU}[cell]
    streams = []
    for threads in (1, 2):
        with num_threads(threads), use_backend(backend):
            layer = make(32, H, stateful=True, dtype=np.float32, seed=6)
            streams.append(np.stack([layer.step(x).copy() for x in xs]))
    assert np.isfinite(streams[0]).all() and np.abs(streams[0]).max() > 0.1
    np.testing.assert_array_equal(streams[1].view(np.uint32), streams[0].view(np.uint32))


# A helper that sees its share of a step `delay` late (_core._set_step_helper_delay_ns), over a
# window of a stream of back-to-back steps on two threads, between windows without the delay
# (the first from the helper's first share; the last followed by steps until the helper runs
# one again, up to 5,000); prints the bits' check and the calling thread's team counts
# (_core._step_team_counts).
_LATE_HELPER_STREAM = """
import json, sys, time, numpy as np, pyrnn_fast as prf
from pyrnn_fast import _backends
core = _backends._core
cell, H, layers, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
make = {"rnn": prf.RNN, "lstm": prf.LSTM, "gru": prf.GRU}[cell]
xs = np.random.default_rng(5).standard_normal((400, 1, 32)).astype(np.float32)
prf.set_num_threads(1)
layer = make(32, H, num_layers=layers, stateful=True, dtype=np.float32, seed=6, backend="cpp")
alone = np.stack([layer.step(x).copy() for x in xs])
alone_counts = core._step_team_counts()
prf.set_num_threads(2)
layer = make(32, H, num_layers=layers, stateful=True, dtype=np.float32, seed=6, backend="cpp")
time.sleep(0.15)  # NumPy's OpenBLAS worker, woken by the constructor's QR, spins ~0.1 s (README)
steps, counts = [], []
for i in range(100):  # until the new helper has run a share
    steps.append(layer.step(xs[i]).copy())
    if core._step_team_counts()[0] > 0:
        break
for window, d in ((range(len(steps), 200), 0), (range(200, 300), delay), (range(300, 400), 0)):
    counts.append(core._step_team_counts())
    core._set_step_helper_delay_ns(d)
    steps += [layer.step(xs[i]).copy() for i in window]
core._set_step_helper_delay_ns(0)
# After a take-back the steps run alone until the helper answers, which a host that keeps it
# off its CPU can delay past the last window (CI, once: no share in its 100 steps): more steps,
# not compared, until it has run one (a helper that never answers still fails)
for i in range(5000):
    if core._step_team_counts()[0] > counts[2][0]:
        break
    layer.step(xs[i % len(xs)])
counts.append(core._step_team_counts())
print(json.dumps({
    "varied": bool(np.isfinite(alone).all() and np.abs(alone).max() > 0.1),
    "same_bits": bool(np.array_equal(np.stack(steps).view(np.uint32), alone.view(np.uint32))),
    "one_thread": list(alone_counts),
    "taken_back_late": counts[2][1] - counts[1][1],
    "helper_ran_after": counts[3][0] - counts[2][0],
}))
"""


_TAKE_BACK_US = 20  # config.hpp, kStepTakeBackNs


def _h_for_weights(cell: str, nbytes: float) -> int:
    """The hidden size whose float32 layer (D = 32) has about `nbytes` of weights [Wx; Wh]."""
    g = {"rnn": 1, "lstm": 4, "gru": 3}[cell]  # gate blocks: (32 + H) x gH weights
    return int((-32 * g + ((32 * g) ** 2 + g * nbytes) ** 0.5) / (2 * g))


@pytest.mark.skipif(_process_cpus() < 2 or not sys.platform.startswith("linux"), reason="needs two CPUs (Linux)")
@pytest.mark.parametrize("delay_us", [300, 20])
@pytest.mark.parametrize("cell,layers", [("rnn", 1), ("rnn", 2), ("lstm", 1), ("gru", 1)])
def test_a_stream_whose_helper_is_late_takes_its_steps_back_with_one_threads_bits(cell, layers, delay_us):
    """A helper that begins its share of a step late, as one the OS keeps off its CPU would:
    at 300 µs every team step of the window is taken back at the first barrier and done by the
    calling thread alone (step.hpp, kStepTakeBackNs: 20 µs), and its steps after run alone
    until the helper answers; at 20 µs the helper's claim and the take-back race. Either way
    the stream keeps the bits of the same stream on one thread (which takes nothing back), and
    once the delay is gone the helper runs shares again. Weights of 120 % of a core's L2: a
    team for the cache that is never timed against one thread (StepTeamTrial), so every step
    but a pause's first posts to the helper. In a child process with a timeout: a take-back
    that left a thread waiting fails the test instead of hanging the run."""
    H = _h_for_weights(cell, 1.2 * _core_cache_bytes() / layers)
    args = [cell, str(H), str(layers), str(delay_us * 1000)]
    out = subprocess.run(
        [sys.executable, "-c", _LATE_HELPER_STREAM, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["varied"] and r["same_bits"], r
    assert r["one_thread"] == [0, 0], r
    assert r["helper_ran_after"] > 0, r
    if delay_us > _TAKE_BACK_US:
        assert r["taken_back_late"] > 0, r


def _steps_on(threads, wx, wh, b, state, N, dtype):
    """The state after 5 steps of x = ones on `threads` threads."""
    with num_threads(threads):
        stepper = core.Stepper(wx, wh, b, state, np.empty_like(state), "tanh", {})
        x = np.ones((N, 32), dtype)
        for _ in range(5):
            assert stepper.step(x, {}, state) is not None
    return state


def test_weights_changed_in_place_are_seen():
    wx, wh, b, state = _stack(1, 1, 4, 8, np.float64)
    params = _params(wx, wh, b)
    stepper = core.Stepper(wx, wh, b, state, np.empty_like(state), "tanh", params)
    x = np.ones((1, 4))
    wh[0][...] = 0.0
    b[0][...] = 0.0
    wx[0] *= 2
    expected = np.tanh(x @ wx[0])
    np.testing.assert_allclose(stepper.step(x, params, state), expected, rtol=1e-14)


def test_arrays_replaced_in_the_layer_make_the_stepper_refuse():
    wx, wh, b, state = _stack(2, 1, 4, 8, np.float64)
    params = _params(wx, wh, b)
    stepper = core.Stepper(wx, wh, b, state, np.empty_like(state), "tanh", params)
    x = np.ones((1, 4))
    assert stepper.current(params, state)
    before = state.copy()
    for changed_params, changed_state in [
        ({**params, "Wh1": wh[1].copy()}, state),  # a parameter rebound
        ({k: v for k, v in params.items() if k != "b1"}, state),  # one removed
        ({**params, "extra": wh[0]}, state),  # one added
        (params, state.copy()),  # another state array
    ]:
        assert not stepper.current(changed_params, changed_state)
        assert stepper.step(x, changed_params, changed_state) is None
        np.testing.assert_array_equal(state, before)
    assert stepper.step(x, params, state) is not None


@pytest.mark.parametrize(
    "x",
    [
        np.ones((1, 4), np.float32),  # another dtype
        np.ones((2, 4)),  # another batch size
        np.ones((1, 5)),  # another input size
        np.ones((1, 1, 4)),  # another rank
        np.ones((1, 8))[:, ::2],  # last axis not contiguous
        np.ones((1, 4)).astype(">f8"),  # byte-swapped
        [[1.0, 1.0, 1.0, 1.0]],  # not an array
    ],
)
def test_step_returns_none_for_what_it_cannot_take_as_it_is(x):
    wx, wh, b, state = _stack(1, 1, 4, 8, np.float64)
    before = state.copy()
    stepper = core.Stepper(wx, wh, b, state, np.empty_like(state), "tanh", {})
    assert stepper.step(x, {}, state) is None
    np.testing.assert_array_equal(state, before)


def test_step_is_positional_checks_params_and_keeps_the_stepper_alive():
    wx, wh, b, state = _stack(1, 1, 4, 8, np.float64)
    stepper = core.Stepper(wx, wh, b, state, np.empty_like(state), "tanh", {})
    step = stepper.step
    x = np.ones((1, 4))
    with pytest.raises(TypeError, match=r"expected \(x, params: dict, state\)"):
        step(x, {})
    with pytest.raises(TypeError, match=r"expected \(x, params: dict, state\)"):
        step(x, [], state)
    with pytest.raises(TypeError):
        step(x=x, params={}, state=state)
    expected = _reference_step(x, wx, wh, b, state.copy(), "tanh")
    del stepper
    gc.collect()
    np.testing.assert_allclose(step(x, {}, state), expected[-1], rtol=1e-14)


def test_a_stepper_never_constructed_is_an_error_not_a_crash():
    """Stepper.__new__ without __init__ makes an instance with no Stepper in it; pybind11 hands
    a method uninitialised storage for it, whose stale pointers (freed Steppers' memory) crashed
    the process when stepped. Every entry point refuses it. In a child process, so that a crash
    fails this test rather than ending the run."""
    code = """if True:
        import numpy as np
        from pyrnn_fast import _core as C
        st, out, p = np.zeros((1, 2, 4)), np.zeros((1, 2, 4)), {}
        live = [C.Stepper([np.ones((3, 4))], [np.ones((4, 4))], [None], st, out, "tanh", p) for _ in range(20)]
        del live  # freed Steppers leave their bytes behind
        refused = 0
        for s in [C.Stepper.__new__(C.Stepper) for _ in range(20)]:
            for use in (lambda: s.current(p, st), lambda: s.step(np.ones((2, 3)), p, st)):
                try:
                    use()
                except TypeError as e:
                    assert "not constructed" in str(e), e
                    refused += 1
        print(refused)
    """
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["40"]


def test_stepper_checks_every_argument():
    wx, wh, b, state = _stack(2, 1, 4, 8, np.float64)
    out = np.empty_like(state)
    with pytest.raises(ValueError, match="one entry per layer"):
        core.Stepper(wx[:1], wh, b, state, out, "tanh", {})
    with pytest.raises(ValueError, match=r"wx\[1\]: expected shape \(8, 8\)"):
        core.Stepper([wx[0], wx[0]], wh, b, state, out, "tanh", {})
    with pytest.raises(ValueError, match=r"wh\[0\]: expected shape \(8, 8\)"):
        core.Stepper(wx, [wh[0][:4], wh[1]], b, state, out, "tanh", {})
    with pytest.raises(ValueError, match=r"b\[0\]: expected shape \(8,\)"):
        core.Stepper(wx, wh, [b[0][:3], None], state, out, "tanh", {})
    with pytest.raises(TypeError, match=r"wx\[0\]: expected a float64"):
        core.Stepper([wx[0].astype(np.float32), wx[1]], wh, b, state, out, "tanh", {})
    with pytest.raises(ValueError, match="out: expected shape"):
        core.Stepper(wx, wh, b, state, out[:1], "tanh", {})
    with pytest.raises(ValueError, match="read-only"):
        ro = state.copy()
        ro.flags.writeable = False
        core.Stepper(wx, wh, b, ro, out, "tanh", {})
    with pytest.raises(TypeError, match="state: expected float32 or float64"):
        core.Stepper(wx, wh, b, state.astype(np.int64), out, "tanh", {})
    with pytest.raises(ValueError, match="activation"):
        core.Stepper(wx, wh, b, state, out, "sigmoid", {})


@pytest.mark.parametrize("loop", ["fma_peak", "microkernel_peak"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peak_loops_count_the_work_they_do(dtype, loop):
    peak = getattr(core, loop)
    f1, s1 = peak(dtype, 10, 1)
    f2, s2 = peak(dtype, 20, 1)
    assert f1 > 0 and s1 > 0 and s2 > 0
    assert f2 == 2 * f1
    f, _ = peak(dtype, 10, 2)
    assert f in (f1, 2 * f1)  # one or two threads ran, each the same rounds


@pytest.mark.parametrize("loop", ["fma_peak", "microkernel_peak"])
def test_peak_loops_reject_bad_arguments(loop):
    peak = getattr(core, loop)
    with pytest.raises(ValueError, match="iterations"):
        peak(np.float32, 0, 1)
    with pytest.raises(ValueError, match="threads"):
        peak(np.float32, 10, 0)
    with pytest.raises(TypeError, match="dtype"):
        peak(np.int32, 10, 1)


@pytest.mark.parametrize("param", CPP_PARAMS, ids=backend_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_loop_counts_the_bytes_it_reads(dtype, param):
    with use_backend(param):
        # Whole rounds of kReadChains vectors: 512 bytes with AVX-512, 256 with AVX2, 128 in the
        # portable build.
        one = int(core.read_peak(dtype, 1, 1, 1)[0])
        assert one == {"avx512": 512, "avx2": 256}.get(param[1], 128)
        b1, s1 = core.read_peak(dtype, 8192, 10, 1)
        b2, s2 = core.read_peak(dtype, 8192, 20, 1)
        assert (b1, b2) == (81920, 163840) and s1 > 0 and s2 > 0
        assert core.read_peak(dtype, 8192 + one - 1, 10, 1)[0] == b1  # rounded down to whole rounds
        assert core.read_peak(dtype, 8192, 10, 2)[0] in (b1, 2 * b1)  # one or two threads, each its own buffer


def test_read_loop_rejects_bad_arguments():
    # Buffers of 1 GiB in all at most, 256 GiB read by a thread at most (a call is uninterruptible).
    too_much = [((0, 1, 1), "bytes"), (((1 << 30) + 1, 1, 1), "bytes"), ((64, 0, 1), "iterations")]
    # (a buffer of fewer bytes than a round of the sums is a round: 512 bytes at most)
    too_much += [((4096, (1 << 38) // 4096 + 1, 1), "iterations"), ((1, (1 << 38) // 512 + 1, 1), "iterations")]
    if _process_cpus() >= 2:
        too_much += [((1 << 30, 1, 2), "bytes")]
    for args, name in too_much:
        with pytest.raises(ValueError, match=name):
            core.read_peak(np.float32, *args)
    with pytest.raises(ValueError, match="threads"):
        core.read_peak(np.float32, 64, 1, 0)
    with pytest.raises(TypeError, match="dtype"):
        core.read_peak(np.int32, 64, 1, 1)


@pytest.mark.skipif(_process_cpus() < 2 or not sys.platform.startswith("linux"), reason="needs two CPUs (Linux)")
def test_line_round_trip_is_measured_on_two_threads_that_end():
    """A positive time (each exchange waits for the other thread's answer), and the measuring
    threads joined: no thread of the process's left that was not there before. In a child
    process with a timeout, so that a hang fails the test instead of the run."""
    code = (
        "import os; from pyrnn_fast import _backends; core = _backends._core\n"
        "tasks = set(os.listdir('/proc/self/task'))\n"
        "ns = core.line_round_trip_ns(2000)\n"
        "print(type(ns).__name__, ns is not None and 0 < ns < 1e7, set(os.listdir('/proc/self/task')) <= tasks)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["float", "True", "True"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_line_round_trip_is_none_on_one_cpu():
    """A process allowed one CPU has no pair to measure (and must not wait for one)."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from pyrnn_fast import _backends; print(_backends._core.line_round_trip_ns(1000))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


@pytest.mark.parametrize("exchanges", [0, -5, 10**6 + 1])
def test_line_round_trip_rejects_bad_counts(exchanges):
    with pytest.raises(ValueError, match="exchanges: expected 1 to"):
        core.line_round_trip_ns(exchanges)


def _lstm_stack(L, N, D, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    wx = [
        (rng.standard_normal((D if l == 0 else H, 4 * H)) / np.sqrt(D if l == 0 else H)).astype(dtype) for l in range(L)
    ]
    wh = [(0.5 * rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(dtype) for _ in range(L)]
    b = [rng.standard_normal(4 * H).astype(dtype) if l % 2 == 0 else None for l in range(L)]
    h, c = (rng.standard_normal((L, N, H)).astype(dtype) for _ in range(2))
    return wx, wh, b, h, c


def _lstm_reference_step(x, wx, wh, b, h, c):
    """Every layer's new (h, c), with the reference's LSTM in float64."""
    from pyrnn_fast import _reference_gated

    hs, cs, inp = [], [], x.astype(np.float64)
    for l in range(len(wx)):
        _, h_l, c_l, _, _ = _reference_gated.lstm_model_forward(
            inp[None], wx[l].astype(np.float64), wh[l].astype(np.float64),
            None if b[l] is None else b[l].astype(np.float64), h[l].astype(np.float64), c[l].astype(np.float64),
        )  # fmt: skip
        hs.append(h_l)
        cs.append(c_l)
        inp = h_l
    return np.stack(hs), np.stack(cs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L,N,D,H", [(1, 1, 32, 64), (2, 3, 5, 37), (1, 11, 20, 300), (2, 1, 7, 17)])
def test_lstm_steps_match_the_reference(L, N, D, H, dtype):
    """An LSTM stack (cell_state given): gate blocks [i | f | g | o], h and c carried. (1, 11,
    20, 300): weights over 1 MB (chunks split between threads) and two blocks of rows."""
    wx, wh, b, h, c = _lstm_stack(L, N, D, H, dtype)
    stepper = core.Stepper(wx, wh, b, h, np.empty_like(h), "tanh", {}, cell_state=c)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((N, D)).astype(dtype)
        h_ref, c_ref = _lstm_reference_step(x, wx, wh, b, h.copy(), c.copy())
        top = stepper.step(x, {}, h)
        assert_close(h, h_ref, dtype, "h")
        assert_close(c, c_ref, dtype, "c")
        assert_close(top, h_ref[-1], dtype, "returned top h")


def test_lstm_stepper_refuses_wrong_shapes():
    wx, wh, b, h, c = _lstm_stack(1, 2, 3, 4, np.float64)
    with pytest.raises(ValueError, match="cell_state"):
        core.Stepper(wx, wh, b, h, np.empty_like(h), "tanh", {}, cell_state=c[:, :1])
    with pytest.raises(ValueError, match="wh"):
        core.Stepper(wx, [w[:, :4] for w in wh], b, h, np.empty_like(h), "tanh", {}, cell_state=c)
    with pytest.raises(ValueError, match="b"):
        core.Stepper(wx, wh, [np.zeros(4)], h, np.empty_like(h), "tanh", {}, cell_state=c)
    with pytest.raises(TypeError, match="cell_state"):
        core.Stepper(wx, wh, b, h, np.empty_like(h), "tanh", {}, cell_state=c.astype(np.float32))


def _gru_stack(L, N, D, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    fan_in = [D if l == 0 else H for l in range(L)]
    wx = [(rng.standard_normal((k, 3 * H)) / np.sqrt(k)).astype(dtype) for k in fan_in]
    wh = [(0.5 * rng.standard_normal((H, 3 * H)) / np.sqrt(H)).astype(dtype) for _ in range(L)]
    b = [rng.standard_normal(3 * H).astype(dtype) if l % 2 == 0 else None for l in range(L)]
    bh = [rng.standard_normal(3 * H).astype(dtype) if l % 3 != 1 else None for l in range(L)]
    h = rng.standard_normal((L, N, H)).astype(dtype)
    return wx, wh, b, bh, h


def _gru_reference_step(x, wx, wh, b, bh, h):
    """Every layer's new h, with the reference's GRU in float64."""
    from pyrnn_fast import _reference_gated

    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    hs, inp = [], x.astype(np.float64)
    for l in range(len(wx)):
        _, h_l, _ = _reference_gated.gru_model_forward(
            inp[None], f64(wx[l]), f64(wh[l]), f64(b[l]), f64(bh[l]), f64(h[l])
        )
        hs.append(h_l)
        inp = h_l
    return np.stack(hs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L,N,D,H", [(1, 1, 32, 64), (3, 3, 5, 37), (1, 11, 20, 300), (2, 1, 0, 17)])
def test_gru_steps_match_the_reference(L, N, D, H, dtype):
    """A GRU stack (bh given; None entries: no bias there): x·Wx + b and h·Wh + bh apart for
    the n gate. (1, 11, 20, 300): weights over 1 MB (chunks split between threads) and two
    blocks of rows; D = 0: no input."""
    wx, wh, b, bh, h = _gru_stack(L, N, D, H, dtype)
    stepper = core.Stepper(wx, wh, b, h, np.empty_like(h), "tanh", {}, bh=bh)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((N, D)).astype(dtype)
        expected = _gru_reference_step(x, wx, wh, b, bh, h.copy())
        top = stepper.step(x, {}, h)
        assert_close(h, expected, dtype, "h")
        assert_close(top, expected[-1], dtype, "returned top h")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [32, 8])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_thread_counts_give_bitwise_equal_states(cell, D, dtype):
    """As for the vanilla cell: chunks over 1 MB of weights, split between two threads or not,
    and the two-thread states against the reference. A GRU's x·Wx has chunks of its own: D = 32
    gives layer 0 two (one per thread), D = 8 one (the second thread has none); layer 1 (D = H)
    four."""
    results = []
    for threads in (1, 2):
        if cell == "lstm":
            wx, wh, b, h, c = _lstm_stack(2, 3, D, 300, dtype)
            kind, carried = {"cell_state": c}, (h, c)
        else:
            wx, wh, b, bh, h = _gru_stack(2, 3, D, 300, dtype)
            kind, carried = {"bh": bh}, (h,)
        expected = tuple(a.copy() for a in carried)
        x = np.ones((3, D), dtype)
        for _ in range(5):
            if cell == "lstm":
                expected = _lstm_reference_step(x, wx, wh, b, *expected)
            else:
                expected = (_gru_reference_step(x, wx, wh, b, bh, expected[0]),)
        with num_threads(threads):
            stepper = core.Stepper(wx, wh, b, h, np.empty_like(h), "tanh", {}, **kind)
            for _ in range(5):
                assert stepper.step(x, {}, h) is not None
        for part, ref in zip(carried, expected):
            assert_close(part, ref, dtype, f"{cell}, {threads} thread(s)")
        results.append(carried)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_gru_stepper_refuses_wrong_arguments():
    wx, wh, b, bh, h = _gru_stack(1, 2, 3, 4, np.float64)
    with pytest.raises(ValueError, match="bh"):
        core.Stepper(wx, wh, b, h, np.empty_like(h), "tanh", {}, bh=[np.zeros(4)])
    with pytest.raises(ValueError, match="bh"):
        core.Stepper(wx, wh, b, h, np.empty_like(h), "tanh", {}, bh=bh + bh)
    with pytest.raises(ValueError, match="not both"):
        core.Stepper(wx, wh, b, h, np.empty_like(h), "tanh", {}, bh=bh, cell_state=h.copy())
    with pytest.raises(ValueError, match="wh"):
        core.Stepper(wx, [w[:, :4] for w in wh], b, h, np.empty_like(h), "tanh", {}, bh=bh)
