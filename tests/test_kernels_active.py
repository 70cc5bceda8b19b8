"""The recurrence kernels' `active` (the rows each step runs, for a batch sorted longest first):
every backend and instruction set against the NumPy reference kernels (the numpy backend) given the same counts,
the rows a step does not run left as they were, the same bits on 1 and 2 threads (the
compiled row split shares the rows out again where the count changes), and the binding's
checks of the counts. The layers' results with lengths against each sample run alone are in
test_layers_lengths.py."""

from __future__ import annotations

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import BACKEND_PARAMS, backend_id, run_python, use_backend
from pyrnn_fast import _backends

SENTINEL = 7.25  # what the outputs hold before a call: rows a step does not run keep it


def _counts(T, N, rng, first=None):
    """T row counts that never grow: ties, zeros at the end, all N or fewer at the start."""
    c = np.sort(rng.integers(0, N + 1, T))[::-1].astype(np.int64)
    if first is not None:
        c[0] = first
        c = np.minimum.accumulate(c)
    return np.ascontiguousarray(c)


def _problem(cell, T, N, H, seed):
    """(inputs, outputs) of one cell's forward and backward kernels, float64: inputs random,
    outputs filled with SENTINEL."""
    rng = np.random.default_rng(seed)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    r = lambda *s: rng.standard_normal(s) * 0.5  # noqa: E731
    state = {k: r(N, H) for k in ("h0", "c0", "dh_last", "dc_last")}
    gates = rng.uniform(0.05, 0.95, (T, N, 4 * H))  # activated gates (and the GRU's v_n)
    inputs = dict(xw=r(T, N, G * H), wh=r(H, G * H) / np.sqrt(H), bh=r(G * H), dhs=r(T, N, H), hs=r(T, N, H) * 0.9)
    inputs.update(state, gates=gates, cs=r(T, N, H))
    shapes = dict(out=(T, N, H), hs=(T, N, H), cs=(T, N, H), gates=(T, N, 4 * H), da=(T, N, G * H))
    shapes.update(du=(T, N, 3 * H), dv=(T, N, 3 * H), dh0=(N, H), dc0=(N, H))
    outputs = {k: np.full(s, SENTINEL) for k, s in shapes.items()}
    return inputs, outputs


def _run(kernels, cell, inputs, outputs, active):
    """The cell's forward then backward kernel on copies of `outputs`; returns them."""
    o = {k: v.copy() for k, v in outputs.items()}
    i = inputs
    if cell == "rnn":
        kernels.forward(i["xw"], i["wh"], i["h0"], o["out"], "tanh", active=active)
        kernels.backward(i["dhs"], i["hs"], i["wh"], i["dh_last"], o["da"], o["dh0"], "tanh", active=active)
    elif cell == "lstm":
        kernels.lstm_forward(i["xw"], i["wh"], i["h0"], i["c0"], o["hs"], o["cs"], o["gates"], active=active)
        args = (i["dhs"], i["gates"], i["cs"], i["c0"], i["wh"], i["dh_last"], i["dc_last"])
        kernels.lstm_backward(*args, o["da"], o["dh0"], o["dc0"], active=active)
    else:
        kernels.gru_forward(i["xw"], i["wh"], i["bh"], i["h0"], o["hs"], o["gates"], active=active)
        args = (i["dhs"], i["hs"], i["h0"], i["gates"], i["wh"], i["dh_last"])
        kernels.gru_backward(*args, o["du"], o["dv"], o["dh0"], active=active)
    return o


SEQUENCES = {"rnn": ("out", "da"), "lstm": ("hs", "cs", "gates", "da"), "gru": ("hs", "gates", "du", "dv")}

# (T, N, H): a few rows; enough rows and steps for the compiled kernels' row split (every
# thread re-shares the rows where the count changes); wide enough for the column split; 85
# rows, where the AVX2 build copies a thread's rows of the step's left factor and the second
# thread's share of 84 rows is larger than its share of 85 (a review found the copy sized for
# the latter: heap corruption).
SHAPES = [(7, 6, 5), (40, 32, 16), (6, 9, 80), (12, 85, 24)]


@pytest.mark.parametrize("param", BACKEND_PARAMS, ids=backend_id)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_active_rows_match_the_reference(param, cell, shape):
    T, N, H = shape
    rng = np.random.default_rng(T * N + H)
    inputs, outputs = _problem(cell, T, N, H, seed=H)
    one_fewer = np.array([N] + [N - 1] * (T - 1), np.int64)
    for active in (_counts(T, N, rng, first=N), _counts(T, N, rng), one_fewer, np.zeros(T, np.int64), None):
        want = _run(_backends.get_backend("numpy"), cell, inputs, outputs, active)
        with use_backend(param) as name:
            got = _run(prf._backends.get_backend(name), cell, inputs, outputs, active)
        for k in want:
            # Rows a step does not run keep the sentinel in both (equal_nan: none is NaN here).
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=f"{cell} {k} {active}")
        if active is not None:  # (implied by the comparison, but said plainly)
            past = np.arange(N)[None, :] >= active[:, None]
            for k in SEQUENCES[cell]:
                assert (got[k][past] == SENTINEL).all(), f"{cell} {k}: a row past its count was written"


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: "x".join(map(str, s)))
def test_active_rows_same_bits_on_one_and_two_threads(cell, shape):
    T, N, H = shape
    inputs, outputs = _problem(cell, T, N, H, seed=3)
    before = prf.get_num_threads()
    for active in (_counts(T, N, np.random.default_rng(5), first=N), np.array([N] + [N - 1] * (T - 1))):
        try:
            runs = []
            for threads in (1, 2):
                prf.set_num_threads(threads)
                runs.append(_run(prf._backends.get_backend("cpp"), cell, inputs, outputs, active))
        finally:
            prf.set_num_threads(before)
        for k in runs[0]:
            np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")
@pytest.mark.parametrize(
    "active, err, match",
    [
        (np.array([3, 2, 1, 0], np.float64), TypeError, r"_core.forward: active: expected a int64"),
        (np.array([3, 2, 1], np.int64), ValueError, r"_core.forward: active: expected shape \(4,\)"),
        (np.array([4, 2, 1, 0], np.int64), ValueError, r"in \[0, N = 3\].*got 4 at step 0"),
        (np.array([3, 2, -1, 0], np.int64), ValueError, r"got -1 at step 2"),
        (np.array([2, 3, 1, 0], np.int64), ValueError, r"never grow.*got 3 at step 1"),
        ([3, 2, 1, 0], TypeError, r"_core.forward: active: expected a numpy int64 array or None"),
    ],
)
def test_the_binding_checks_the_counts(active, err, match):
    from pyrnn_fast import _core

    T, N, H = 4, 3, 5
    xw, out = np.zeros((T, N, H)), np.zeros((T, N, H))
    with pytest.raises(err, match=match):
        _core.forward(xw, np.zeros((H, H)), None, out, "tanh", 1, active=active)
    assert not out.any()  # refused before anything ran
    _core.forward(xw, np.zeros((H, H)), None, out, "tanh", 1, active=np.array([3, 3, 1, 0])[::1])
    # A strided view is read as it is (the counts are copied before they are checked).
    _core.forward(xw, np.zeros((H, H)), None, out, "tanh", 1, active=np.array([3, 9, 2, 9, 2, 9, 0, 9])[::2])


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")
def test_ctrl_c_never_hangs_a_row_split_whose_counts_change(tmp_path):
    """Split by rows, the threads are not in step, and meet only where the count of rows
    changes: a thread waiting there must stop waiting when thread 0 (which polls for signals)
    has stopped a step or more before it. The first version hung here (counts changing every
    second step; a review saw it at the 7th interrupt; this test hung in 3 runs of 3): a
    KeyboardInterrupt at random times, many times, in a process killed when it hangs."""
    code = """
        import random, signal, time
        import numpy as np
        import pyrnn_fast as prf
        from pyrnn_fast import _backends
        from numpy.lib.stride_tricks import as_strided

        prf.set_num_threads(2)
        kernels = _backends.get_backend("cpp")
        N, H = 4096, 32  # split by rows; one panel of columns (a step reads h_{t-1} before it writes h_t)
        T = 2 * N - 2
        rng = np.random.default_rng(0)
        xw = np.broadcast_to(rng.standard_normal((1, N, H)).astype(np.float32) * 0.1, (T, N, H))
        wh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
        out = as_strided(np.zeros((N, H), np.float32), (T, N, H), (0, H * 4, 4), writeable=True)  # one (N, H)
        active = np.array([N - t // 2 for t in range(T)], np.int64)  # shared out again every second step

        def interrupt(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGALRM, interrupt)
        start = time.perf_counter()
        kernels.forward(xw, wh, None, out, "tanh", active=active)
        full = time.perf_counter() - start  # ~0.2 s here: the kernel polls every ~50 ms
        random.seed(0)
        stopped = 0
        for _ in range(20):
            signal.setitimer(signal.ITIMER_REAL, random.uniform(0.1, 0.9) * full)
            try:
                kernels.forward(xw, wh, None, out, "tanh", active=active)
            except KeyboardInterrupt:
                stopped += 1
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(stopped)
    """
    lines = run_python(code, tmp_path, timeout=120)
    assert int(lines[-1]) > 0  # some calls were stopped (the others ended first)
