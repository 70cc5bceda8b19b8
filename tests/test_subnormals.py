"""The compiled backend's flushing of subnormal numbers (prf.set_flush_subnormals; README,
"Subnormal numbers"): on by default on x86-64, where every thread of a kernel reads subnormal
operands as 0 and writes 0 for subnormal results; off, IEEE arithmetic as the reference's. The
problems are the vanishing-gradient ones the setting is for: one loss at the last step, and
weights that make dh decay through the subnormal range on its way to the first step."""

from __future__ import annotations

import pathlib
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import CAN_FLUSH, assert_close, flush_subnormals, run_python
from pyrnn_fast import _backends

pytestmark = pytest.mark.skipif("cpp" not in prf.backends(), reason="needs the compiled backend")
needs_flushing = pytest.mark.skipif(not CAN_FLUSH, reason="the kernels flush subnormals on x86-64 only")

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# Steps enough for dh to decay through the subnormals of the dtype (and the IEEE run to have
# some left: they end at 1.4e-45 and 4.9e-324).
STEPS = {np.float32: 100, np.float64: 700}


def _subnormal(a, dtype):
    return (a != 0) & (np.abs(a) < np.finfo(dtype).tiny)


def _vanishing(cell, dtype, N=3, D=4, H=8, T=None, seed=0):
    rng = np.random.default_rng(seed)
    T = T or STEPS[dtype]
    G = GATES[cell]
    p = {
        "x": rng.standard_normal((N, T, D)),
        "Wx": rng.standard_normal((D, G * H)) * 0.5,
        "Wh": rng.standard_normal((H, G * H)) * (0.25 / np.sqrt(H)),  # dh shrinks ~4x a step
        "b": np.zeros(G * H),
    }
    if cell != "rnn":  # LSTM: forget gate, GRU: update gate, nearly closed (sigmoid(-4) = 0.018)
        p["b"][H : 2 * H] = -4
    p = {k: v.astype(dtype) for k, v in p.items()}
    p["dhs"] = np.zeros((N, T, H), dtype)
    p["dhs"][:, -1] = 1
    return p


def _forward_backward(cell, p, backend):
    """Every output and gradient of the cell's functional API, by name."""
    x, Wx, Wh, b, dhs = p["x"], p["Wx"], p["Wh"], p["b"], p["dhs"]
    if cell == "rnn":
        hs, _ = prf.rnn_forward(x, Wx, Wh, b, backend=backend)
        g = prf.rnn_backward(dhs, x, Wx, Wh, hs, backend=backend)
    elif cell == "lstm":
        out = prf.lstm_forward(x, Wx, Wh, b, backend=backend)
        hs = out.hs
        g = prf.lstm_backward(dhs, x, Wx, Wh, hs, out.workspace, backend=backend)
    else:
        out = prf.gru_forward(x, Wx, Wh, b, backend=backend)
        hs = out.hs
        g = prf.gru_backward(dhs, x, Wx, Wh, hs, out.workspace, backend=backend)
    return {"hs": hs, **g._asdict()}


def test_on_by_default_on_x86_64():
    assert prf.get_flush_subnormals() is CAN_FLUSH


@pytest.mark.parametrize("enabled", [1, 0, None, "yes", np.float64(1)])
def test_the_setting_takes_a_bool(enabled):
    with pytest.raises(TypeError, match="enabled: expected a bool, got"):
        prf.set_flush_subnormals(enabled)


def test_without_the_compiled_backend_flushing_is_refused(monkeypatch):
    monkeypatch.setattr(_backends, "_core", None)
    assert prf.get_flush_subnormals() is False
    prf.set_flush_subnormals(False)  # what the numpy and numba backends do anyway
    with pytest.raises(ValueError, match="enabled: flushing subnormals is done by the compiled backend"):
        prf.set_flush_subnormals(True)


@needs_flushing
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_flushing_leaves_no_subnormals_and_matches_the_reference(cell, dtype):
    p = _vanishing(cell, dtype)
    expected = _forward_backward(cell, p, "numpy")
    assert _subnormal(expected["dx"], dtype).any()  # the IEEE reference has them: the case is real
    with flush_subnormals(True):
        got = _forward_backward(cell, p, "cpp")
    for name, value in got.items():
        assert not _subnormal(value, dtype).any(), name
        assert_close(value, expected[name], dtype, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_ieee_mode_keeps_the_subnormals(cell, dtype):
    p = _vanishing(cell, dtype)
    expected = _forward_backward(cell, p, "numpy")
    with flush_subnormals(False):
        got = _forward_backward(cell, p, "cpp")
    for name, value in got.items():
        assert_close(value, expected[name], dtype, name)
    # The same steps of dx reach the subnormals (their last bits may differ: other sums).
    steps_with = lambda dx: _subnormal(dx, dtype).any(axis=(0, 2))  # noqa: E731
    assert steps_with(got["dx"]).any()
    assert np.array_equal(steps_with(got["dx"]), steps_with(expected["dx"]))


@needs_flushing
@pytest.mark.skipif(prf.get_num_threads() < 2, reason="needs two threads")
def test_every_thread_keeps_ieee_arithmetic_after_flushing_calls():
    """A team's helper threads get their own mode back at the end of each call: after calls
    that flushed, a call in IEEE mode gives subnormals in the rows the helper computed (the
    second half of the samples, in the recurrence split by samples and the dx product split by
    rows)."""
    p = _vanishing("rnn", np.float32, N=64, D=64, H=64)
    with flush_subnormals(True):
        for _ in range(3):
            flushed = _forward_backward("rnn", p, "cpp")
    assert not _subnormal(flushed["dx"], np.float32).any()
    with flush_subnormals(False):
        ieee = _forward_backward("rnn", p, "cpp")
    half = p["x"].shape[0] // 2
    assert _subnormal(ieee["dx"][:half], np.float32).any()
    assert _subnormal(ieee["dx"][half:], np.float32).any()


def _numpy_makes_subnormals():
    """Whether this thread's own arithmetic (NumPy's) keeps a subnormal result."""
    return bool(np.float32(np.finfo(np.float32).tiny) / np.float32(4) != 0)


@needs_flushing
@pytest.mark.parametrize("threads", [1, 2])
def test_the_calling_threads_mode_is_its_own_after_a_call(threads):
    assert _numpy_makes_subnormals()
    prf.set_num_threads(threads)
    try:
        with flush_subnormals(True):
            _forward_backward("lstm", _vanishing("lstm", np.float32), "cpp")
            layer = prf.RNN(4, 8, stateful=True, seed=0)
            layer.step(np.ones((1, 4), np.float32))
    finally:
        prf.set_num_threads(None)
    assert _numpy_makes_subnormals()


@needs_flushing
def test_signal_handlers_run_in_the_callers_mode():
    """A Python signal handler that runs during a call (the kernels poll for them about every
    50 ms, with the GIL) computes in the caller's arithmetic, not the kernels' flushing one."""
    rng = np.random.default_rng(0)
    N, D, H = 1, 16, 128
    Wx = (rng.standard_normal((D, 4 * H)) * 0.3).astype(np.float32)
    Wh = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(np.float32)

    def run(T):
        x = rng.standard_normal((T, N, D)).astype(np.float32)
        t0 = time.perf_counter()
        prf.lstm_forward(x, Wx, Wh, time_major=True, workspace=False, backend="cpp")
        return time.perf_counter() - t0

    T = int(min(300_000, max(20_000, 0.6 * 5000 / min(run(5000) for _ in range(3)))))  # ~0.6 s
    seen = []  # (when, whether NumPy kept a subnormal)
    previous = signal.signal(signal.SIGALRM, lambda *_: seen.append((time.perf_counter(), _numpy_makes_subnormals())))
    try:
        with flush_subnormals(True):
            signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
            run(T)
            returned_at = time.perf_counter()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # At most one handler can run after the call returned and before returned_at was read.
    assert sum(when < returned_at for when, _ in seen) >= 2
    assert all(ieee for _, ieee in seen)


# Sets or clears FTZ and DAZ (MXCSR bits 15 and 6) of the calling thread, as
# torch.set_flush_denormal or a library built with -Ofast does.
FTZ_C = r"""
void set_ftz(int on) {
    unsigned mode = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(on ? mode | 0x8040u : mode & ~0x8040u);
}
"""


@needs_flushing
@pytest.mark.skipif(prf.get_num_threads() < 2, reason="needs two threads")
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="needs a C compiler")
def test_ieee_mode_is_set_on_threads_created_while_the_caller_flushed(tmp_path):
    """A thread starts in its creator's floating-point mode: libgomp's helper, created at a
    call made while the calling thread flushed (its own FTZ/DAZ), kept flushing afterwards
    when the kernels only left IEEE threads alone: with flushing off, 1 thread gave 27,431
    subnormals in dx and 2 threads none, other bits (found by a review)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    src, shim = tmp_path / "ftz.c", tmp_path / "ftz.so"
    src.write_text(FTZ_C)
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-msse2", "-o", str(shim), str(src)], check=True)
    out = run_python(
        f"""
        import ctypes, sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from test_subnormals import _forward_backward, _subnormal, _vanishing
        ftz = ctypes.CDLL({str(shim)!r})
        p = _vanishing("rnn", np.float32, N=64, D=64, H=64)
        prf.set_flush_subnormals(False)
        prf.set_num_threads(2)
        ftz.set_ftz(1)  # the caller flushes when libgomp creates its helper
        _forward_backward("rnn", p, "cpp")
        ftz.set_ftz(0)
        two = _forward_backward("rnn", p, "cpp")["dx"]
        prf.set_num_threads(1)
        one = _forward_backward("rnn", p, "cpp")["dx"]
        half = len(two) // 2
        print(int(_subnormal(one, np.float32).sum()), int(_subnormal(two[half:], np.float32).sum()),
              bool(np.array_equal(one, two)))
        """,
        tmp_path,
    )
    total, in_helpers_rows, same = out[-3:]  # run_python returns the words of stdout
    assert int(total) > 0 and int(in_helpers_rows) > 0 and same == "True", out
