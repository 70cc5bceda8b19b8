"""Short calls (T = 1 and N <= 8, or N·T <= 4; unidirectional, no lengths, no dropout between layers) run as
T steps of ``step()``'s kernel on the compiled backend (layers/_stack.py, ``_by_steps_suits``):
the same bits as those steps, the sequence kernels' results to rounding, and everything else
of a call (the carried state, ``h0``, layouts, rebound parameters) as before. A recording
call keeps its inputs, and its backward runs the forward again on the sequence kernels first:
the gradients of the sequence kernels' forward. Other backends and other calls never take it.
The sequence kernels' results come from a twin layer given ``lengths`` all equal to T (the
same computation as none, which never runs by steps)."""

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import assert_close, in_threads
from pyrnn_fast.layers import _stack

CELLS = {"RNN": prf.RNN, "LSTM": prf.LSTM, "GRU": prf.GRU}


@pytest.fixture
def routed(monkeypatch):
    """A list that gets one entry per call run by steps."""
    calls = []
    real = _stack._forward_by_steps

    def counting(*args):
        calls.append(args[1].shape[:2])
        return real(*args)

    monkeypatch.setattr(_stack, "_forward_by_steps", counting)
    return calls


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


def _twins(cell, dtype, backend, **kw):
    """Two layers with the same weights (and a third for the steps)."""
    make = CELLS[cell]
    return [make(5, 9, seed=4, dtype=dtype, backend=backend, **kw) for _ in range(3)]


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_short_calls_are_steps(cell, dtype, num_layers, backend, routed):
    """A stateful layer fed chunks (N, T) = (1, 1), (1, 4), (2, 2), (8, 1), recording or not:
    its outputs and carried state equal the sequence kernels' to rounding (the float64
    reference's tolerance) and, on the compiled backend, bit for bit what step() gives over
    the same steps."""
    # training mode: dropout between layers (one layer has none, and warns of it) ...
    kw = dict(num_layers=num_layers, stateful=True, dropout=0.5 if num_layers > 1 else 0.0)
    sequence, recording, inference = _twins(cell, dtype, backend, **kw)
    stepping = _twins(cell, dtype, backend, **kw)[0]
    layers = (sequence, recording, inference, stepping)
    for layer in layers:
        layer.eval()  # ... which eval() turns off: then calls may run by steps
    rng = np.random.default_rng(0)
    chunks = [(1, 1), (1, 4), (2, 2), (8, 1), (8, 1)]
    for N, T in chunks:
        for layer in layers:
            if layer.state is not None and _parts(layer.state)[0].shape[1] != N:
                layer.reset_state()
        x = rng.standard_normal((N, T, 5)).astype(dtype)
        want, want_state = sequence(x, None, np.full(N, T))
        for layer, record in ((recording, True), (inference, False)):
            got, got_state = layer(x, record=record)
            assert (layer._cache is None) != record
            for what, a, b in [("out", got, want), *zip(("h_n", "c_n"), _parts(got_state), _parts(want_state))]:
                assert_close(a, b.astype(np.float64), dtype, what=f"{what} N={N} T={T} record={record}")
            if backend == "cpp":
                if record:
                    tops = np.stack([stepping.step(x[:, t]) for t in range(T)], axis=1)
                np.testing.assert_array_equal(got, tops)
                for a, b in zip(_parts(layer.state), _parts(stepping.state)):
                    np.testing.assert_array_equal(a, b)
    assert len(routed) == (2 * len(chunks) if backend == "cpp" else 0)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_after_a_short_call(cell, dtype, backend, routed):
    """Backward of a short recording call: dx, every gradient and the initial state's equal
    the sequence kernels' to rounding, whatever happens between the call and its backward
    (a step, the parameters rebound, dropout switched on, the RNN's activation changed), and
    again the same on a second backward; a dout of another shape is refused before anything
    runs; a short call for inference leaves no record."""
    layer, sequence, _ = _twins(cell, dtype, backend, num_layers=2, stateful=True, dropout=0.5)
    rng = np.random.default_rng(3)
    for N, T in [(1, 3), (2, 2), (5, 1)]:
        for one in (layer, sequence):
            one.eval()
            one.reset_state()
            one(rng.standard_normal((N, 5, 5)).astype(dtype))  # a carried state to start from (not by steps)
        layer.state = tuple(p.copy() for p in sequence._state_parts())[: len(layer._state_names)]
        if len(layer._state_names) == 1:
            layer.state = layer.state[0]
        x = rng.standard_normal((N, T, 5)).astype(dtype)
        layer(x)
        sequence(x, None, np.full(N, T))
        dout = rng.standard_normal((N, T, 9)).astype(dtype)
        dh_n = rng.standard_normal((2, N, 9)).astype(dtype)
        layer.step(x[:, 0])  # nothing of a step enters the last call's backward...
        kept = dict(layer.params)
        for k in layer.params:  # ... nor parameters rebound since (the call's arrays are)
            layer.params[k] = layer.params[k] * 2
        layer.train()  # ... nor dropout switched on (the call had none)
        if cell == "RNN":
            layer.activation = "relu"  # ... nor another activation (the call's was tanh)
        args = (dout, dh_n) + ((dh_n * 0.5,) if cell == "LSTM" else ())
        with pytest.raises(ValueError, match="dout: expected the shape of out"):
            layer.backward(dout[:, :1] if T > 1 else dout[:1, :, :5])
        assert ("replay" in layer._cache) == (backend == "cpp")  # nothing run yet
        dx, dx_want = layer.backward(*args), sequence.backward(*args)
        grads = {k: g.copy() for k, g in layer.grads.items()}
        assert_close(dx, dx_want.astype(np.float64), dtype, what="dx")
        for k in grads:
            assert_close(grads[k], sequence.grads[k].astype(np.float64), dtype, what=k)
        for name in ("dh0", "dc0") if cell == "LSTM" else ("dh0",):
            assert_close(getattr(layer, name), getattr(sequence, name).astype(np.float64), dtype, what=name)
        np.testing.assert_array_equal(layer.backward(*args), dx)  # the record, once made, is kept
        for k in grads:
            np.testing.assert_array_equal(layer.grads[k], grads[k])
        layer.params = kept
        if cell == "RNN":
            layer.activation = "tanh"
    assert len(routed) == (3 if backend == "cpp" else 0)
    layer(x, record=False)
    with pytest.raises(RuntimeError, match="record=True"):
        layer.backward(*args)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_short_inference_calls_keep_the_call_semantics(cell, backend, routed):
    """Run by steps, a call still starts from the state given (zeros for an LSTM's (None,
    None)), leaves that argument and the parameters unchanged, reads rebound parameters of
    another dtype and layout, takes time-major input, and returns arrays of its own."""
    make = CELLS[cell]
    rng = np.random.default_rng(1)
    extra = {"activation": "relu"} if cell == "RNN" else {}
    a, b = (make(5, 9, num_layers=2, bias=False, time_major=True, seed=6, backend=backend, **extra) for _ in range(2))
    for layer in (a, b):  # float64 in Fortran order: not what the kernels read in place
        layer.params["Wh_l1"] = np.asfortranarray(layer.params["Wh_l1"].astype(np.float64))
    x = rng.standard_normal((1, 3, 5)).astype(np.float32)  # (T, N, D): T = 1
    h0 = rng.standard_normal((2, 3, 9)).astype(np.float32)
    state = (h0, h0 * 0.5) if cell == "LSTM" else h0
    given = [p.copy() for p in _parts(state)]
    before = {k: v.copy() for k, v in a.params.items()}
    got, got_state = a(x, state, record=False)
    lengths = np.ones(3, np.int64)  # the sequence kernels
    want, want_state = b(x, state, lengths)
    for what, u, v in [("out", got, want), *zip(("h_n", "c_n"), _parts(got_state), _parts(want_state))]:
        assert_close(u, v.astype(np.float64), np.float32, what=what)
    for p, g in zip(_parts(state), given):
        np.testing.assert_array_equal(p, g)
    for k, v in a.params.items():
        np.testing.assert_array_equal(v, before[k])
    got[...] = 7  # the outputs are the caller's own
    assert not any(np.shares_memory(got, p) for p in _parts(got_state))
    if cell == "LSTM":
        out0, (h, c) = a(x, (None, None), record=False)
        want0, (wh, wc) = b(x, (None, None), lengths)
        for what, u, v in (("out from zeros", out0, want0), ("h_n from zeros", h, wh), ("c_n from zeros", c, wc)):
            assert_close(u, v.astype(np.float64), np.float32, what=what)
    stateful = make(5, 9, stateful=True, seed=6, backend=backend, **extra)
    _, carried = stateful(x[0][:, None])  # (N, T, D) = (3, 1, 5)
    assert not any(np.shares_memory(p, q) for p in _parts(carried) for q in _parts(stateful.state))
    assert len(routed) == ((3 if cell == "LSTM" else 2) if backend == "cpp" else 0)


@pytest.mark.parametrize(
    "case",
    ["bidirectional", "lengths", "dropout in training", "N*T > 4", "T = 1, N > 8", "T = 0", "N = 0"],
)
def test_other_calls_are_not_steps(case, routed):
    """Only short calls of a unidirectional layer without lengths or dropout run by steps; the
    others give the same bits with record=False as recording, as every call did before."""
    kw = dict(bidirectional=case == "bidirectional", num_layers=2, dropout=0.5 if case == "dropout in training" else 0)
    a, b = prf.GRU(5, 9, seed=2, **kw), prf.GRU(5, 9, seed=2, **kw)
    N, T = {"N*T > 4": (3, 2), "T = 1, N > 8": (9, 1), "T = 0": (2, 0), "N = 0": (0, 1)}.get(case, (1, 1))
    x = np.random.default_rng(2).standard_normal((N, T, 5)).astype(np.float32)
    lengths = np.ones(N, np.int64) if case == "lengths" else None
    if case == "dropout in training":  # the same masks in both
        b._dropout_rng = np.random.default_rng(9)
        a._dropout_rng = np.random.default_rng(9)
    got, got_h = a(x, None, lengths, record=False)
    want, want_h = b(x, None, lengths)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_h, want_h)
    assert routed == []


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_short_calls_keep_their_stepper_while_it_is_current(cell):
    """A short call's compiled stepper is kept for the next calls (building one was ~6-12 µs of
    a ~30 µs call) while it is current: the layer's parameter objects (changes in place are
    seen), its settings and the batch size; it steps state arrays of its own, so the states a
    call returns are the caller's, untouched by later calls. Each result is compared with a
    twin layer whose calls are all made on a fresh stepper (its kept one dropped before each)."""
    kept, fresh = (CELLS[cell](5, 9, num_layers=2, stateful=True, seed=4, backend="cpp") for _ in range(2))
    rng = np.random.default_rng(1)

    def both(x, **kw):
        fresh._call_stepper = None
        results = [layer(x, record=False, **kw) for layer in (kept, fresh)]
        for a, b in zip(*(([out, *_parts(state)]) for out, state in results)):
            np.testing.assert_array_equal(a, b)
        return results[0]

    out, state = both(rng.standard_normal((1, 1, 5)).astype(np.float32))
    first = kept._call_stepper
    assert first is not None, "no stepper kept"
    held = [p.copy() for p in _parts(state)]
    out2, _ = both(rng.standard_normal((1, 1, 5)).astype(np.float32))
    assert kept._call_stepper is first, "the kept stepper was not reused"
    for p, h in zip(_parts(state), held):  # the first call's state, held, is not the stepper's
        np.testing.assert_array_equal(p, h)
    for layer in (kept, fresh):  # weights changed in place: seen
        layer.params["Wh_l1"] *= 0.5
    both(rng.standard_normal((1, 2, 5)).astype(np.float32))
    assert kept._call_stepper is first
    for layer in (kept, fresh):  # a parameter rebound: a new stepper
        layer.params["Wx_l0"] = layer.params["Wx_l0"] * 2
    both(rng.standard_normal((1, 1, 5)).astype(np.float32))
    second = kept._call_stepper
    assert second is not None and second is not first
    for layer in (kept, fresh):  # another batch size: a new stepper (calls of 2 samples start from zeros)
        layer.reset_state()
    both(rng.standard_normal((2, 1, 5)).astype(np.float32))
    assert kept._call_stepper is not second
    if cell == "RNN":  # a setting changed: dropped, and the new one computes relu
        for layer in (kept, fresh):
            layer.activation = "relu"
        assert kept._call_stepper is None
        out, _ = both(rng.standard_normal((2, 1, 5)).astype(np.float32))
        assert (out >= 0).all()


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")
def test_short_calls_from_threads_at_once():
    """Calls of one layer from several threads at once: each takes the kept stepper only while
    no other call holds it (else it builds its own), so each gets the result of its own input
    and state (as the same call made alone)."""
    layer = prf.LSTM(5, 64, num_layers=2, seed=4, backend="cpp")
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((1, 2, 5)).astype(np.float32) for _ in range(8)]
    starts = [tuple(rng.standard_normal((2, 1, 64)).astype(np.float32) for _ in range(2)) for _ in range(8)]
    expected = [layer(x, state=s, record=False) for x, s in zip(inputs, starts)]

    def work(i):
        for _ in range(200):
            out, (h, c) = layer(inputs[i], state=starts[i], record=False)
            np.testing.assert_array_equal(out, expected[i][0])
            np.testing.assert_array_equal(h, expected[i][1][0])
            np.testing.assert_array_equal(c, expected[i][1][1])

    errors = in_threads(work, 8)
    assert not errors, errors[:1]


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_a_dtype_set_while_a_call_builds_its_stepper(cell):
    """`layer.dtype = ...` from another thread between a call's build of its stepper and its
    keeping it (the setting drops the kept stepper before the call keeps its own, of the old
    dtype): the next calls must not take that stepper (a review found every later short call
    raising RuntimeError, blaming another thread). Simulated here by setting the dtype inside
    the build."""
    layer = CELLS[cell](5, 16, num_layers=2, seed=1, backend="cpp")
    x = np.random.default_rng(0).standard_normal((1, 1, 5))
    real = layer._new_stepper

    def racing(*args):
        built = real(*args)
        layer.dtype = np.float64  # what the other thread does at this moment
        return built

    layer._new_stepper = racing
    layer(x.astype(np.float32), record=False)
    del layer._new_stepper
    out, _ = layer(x, record=False)
    twin = CELLS[cell](5, 16, num_layers=2, seed=1, backend="cpp", dtype=np.float64)
    twin.params = layer.params
    np.testing.assert_array_equal(out, twin(x, record=False)[0])
