"""Every public entry point takes every array argument in every memory layout NumPy can make
and returns exactly (bitwise: the kernels are deterministic) what it returns for a
C-contiguous native copy of the same values, on every backend (issue 9, finding 8)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyrnn_fast as prf

T, N, D, H = 5, 3, 4, 6


def _embedded(a):
    """A view of a bigger array taking every other element on every axis."""
    big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _unaligned(a):
    """The same values at an odd address (np.frombuffer(..., offset=1)): C-contiguous, unaligned."""
    buf = bytearray(a.nbytes + 1)
    view = np.frombuffer(buf, a.dtype, count=a.size, offset=1).reshape(a.shape)
    view[...] = a
    return view


def _packed_field(a):
    """A field of a packed structured array: strides of itemsize + 1 bytes, unaligned."""
    rec = np.zeros(a.shape, np.dtype([("tag", np.uint8), ("v", a.dtype)], align=False))
    rec["v"] = a
    return rec["v"]


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


LAYOUTS = {
    "fortran": np.asfortranarray,
    "negative": lambda a: np.flip(np.flip(a).copy()),  # every axis backwards in memory
    "strided": _embedded,
    "last-axis-negative": lambda a: a[..., ::-1].copy()[..., ::-1],
    "packed-field": _packed_field,
    "unaligned": _unaligned,
    "byte-swapped": lambda a: a.astype(a.dtype.newbyteorder()),
    "read-only": _read_only,
    "broadcast": lambda a: np.broadcast_to(a[:1], a.shape),  # stride 0 on the first axis
    "broadcast-last": lambda a: np.broadcast_to(a[..., :1], a.shape),  # stride 0 on the last axis
    "scalar": lambda a: np.broadcast_to(a.reshape(-1)[0], a.shape),  # every stride 0
}


def contiguous(a):
    """A plain copy: C order, native byte order, aligned, writable."""
    return None if a is None else np.array(a, dtype=a.dtype.newbyteorder("="), order="C")


def problem(dtype, time_major, seed=0, dims=(T, N, D, H)):
    T, N, D, H = dims
    rng = np.random.default_rng(seed)
    seq = (T, N) if time_major else (N, T)
    p = dict(
        x=rng.standard_normal(seq + (D,)),
        Wx=rng.standard_normal((D, H)) / 2,
        Wh=rng.standard_normal((H, H)) / 3,
        b=rng.standard_normal(H),
        h0=rng.standard_normal((N, H)),
        dhs=rng.standard_normal(seq + (H,)),
        dh_last=rng.standard_normal((N, H)),
    )
    p = {k: v.astype(dtype) for k, v in p.items()}
    p["hs"], _ = prf.rnn_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], time_major=time_major)
    return p


def run(p, time_major, backend):
    """Forward and backward through the functional API: every output, in one list."""
    hs, h_last = prf.rnn_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], time_major=time_major, backend=backend)
    g = prf.rnn_backward(
        p["dhs"],
        p["x"],
        p["Wx"],
        p["Wh"],
        p["hs"],
        p["h0"],
        dh_last=p["dh_last"],
        time_major=time_major,
        backend=backend,
    )
    return [hs, h_last, *g]


def assert_same(actual, expected, what):
    names = ["hs", "h_last", *prf.RNNGrads._fields]
    for name, a, e in zip(names, actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what}: {name}"
        np.testing.assert_array_equal(a, e, err_msg=f"{what}: {name}")


ARGUMENTS = ("x", "Wx", "Wh", "b", "h0", "dhs", "hs", "dh_last")

# Numba compiles its kernels once per combination of argument types, read-only and layout
# flags included: the whole grid below costs ~3 minutes of compilation on a cold cache (2
# busy cores), ~8 s warm. The conversion under test is the same for every backend, so Numba
# runs one dtype and layout of it (the float32 and time-major grids run on cpp and numpy).
NUMBA_CASE = (np.float64, False)


def light_for_numba(backend, dtype, time_major):
    return backend == "numba" and (dtype, time_major) != NUMBA_CASE


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layout_of_every_argument(backend, dtype, time_major):
    """One argument at a time in each layout, the others contiguous."""
    if light_for_numba(backend, dtype, time_major):
        pytest.skip("Numba: one dtype and layout (see NUMBA_CASE)")
    p = problem(dtype, time_major)
    for layout, make in LAYOUTS.items():
        for name in ARGUMENTS:
            q = dict(p, **{name: make(p[name])})
            expected = run({k: contiguous(v) for k, v in q.items()}, time_major, backend)
            assert_same(run(q, time_major, backend), expected, f"{name} {layout}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layouts=st.fixed_dictionaries({name: st.sampled_from([None, *LAYOUTS]) for name in ARGUMENTS}),
    time_major=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_any_mix_of_layouts(backend, layouts, time_major, dtype):
    if light_for_numba(backend, dtype, time_major):
        dtype, time_major = NUMBA_CASE
    p = problem(dtype, time_major, seed=1)
    q = {k: v if layouts.get(k) is None else LAYOUTS[layouts[k]](v) for k, v in p.items()}
    expected = run({k: contiguous(v) for k, v in q.items()}, time_major, backend)
    assert_same(run(q, time_major, backend), expected, str(layouts))


def test_every_layout_at_blas_sizes(backend):
    """As test_every_layout_of_every_argument (float64, batch-major) at sizes where NumPy's
    BLAS blocks its sums: the numpy and numba backends' GEMMs gave other bits (up to 9e-16)
    for a Fortran-ordered Wx of 33 rows than for its C-ordered copy (BLAS sums a transposed
    operand in another order; found by a review through a layer's second layer)."""
    p = problem(np.float64, False, seed=3, dims=(3, 24, 40, 36))
    for layout, make in LAYOUTS.items():
        for name in ARGUMENTS:
            q = dict(p, **{name: make(p[name])})
            expected = run({k: contiguous(v) for k, v in q.items()}, False, backend)
            assert_same(run(q, False, backend), expected, f"{name} {layout}")


# --- the layers pass user arrays through the same path -------------------------------------


def _layer_outputs(backend, dtype, arrays):
    """Every array the layers return, for user arrays `arrays` (x, h0, lengths, dout, dh_n, x_t,
    Wx, Wh, b): RNN call/backward/step with those params assigned, TimeRNN forward/backward,
    and from_keras_weights."""
    a = arrays
    layer = prf.RNN(D, H, num_layers=2, bidirectional=True, dtype=dtype, seed=0, backend=backend)
    layer.params["Wh_l0"] = a["Wh"]
    layer.params["b_l1_reverse"] = a["b"]
    out, h_n = layer(a["x"], a["h0"], a["lengths"])
    dx = layer.backward(a["dout"], a["dh_n"])
    results = [out, h_n, dx, *layer.grads.values(), layer.dh0]

    stream = prf.RNN(D, H, num_layers=2, stateful=True, dtype=dtype, seed=1, backend=backend)
    stream.params["Wx_l0"], stream.params["Wh_l1"], stream.params["b_l0"] = a["Wx"], a["Wh"], a["b"]
    results += [stream.step(a["x_t"]), stream.step(a["x_t"])]

    keras = prf.RNN.from_keras_weights([a["Wx"], a["Wh"], a["b"]], dtype=dtype, backend=backend)
    results += [*keras(a["x"])]

    textbook = prf.TimeRNN(a["Wx"], a["Wh"], a["b"], backend=backend)
    results += [textbook.forward(a["x"]), textbook.backward(a["dhs"]), *textbook.grads]
    return results


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layers_take_every_layout(backend, layout):
    dtype = np.float64
    rng = np.random.default_rng(2)
    arrays = dict(
        x=rng.standard_normal((N, T, D)),
        h0=rng.standard_normal((4, N, H)),
        lengths=np.array([T, 2, T - 1]),
        dout=rng.standard_normal((N, T, 2 * H)),
        dh_n=rng.standard_normal((4, N, H)),
        x_t=rng.standard_normal((N, D)),
        Wx=rng.standard_normal((D, H)) / 2,
        Wh=rng.standard_normal((H, H)) / 3,
        b=rng.standard_normal(H),
        dhs=rng.standard_normal((N, T, H)),
    )
    for name in arrays:
        odd = dict(arrays, **{name: LAYOUTS[layout](arrays[name])})
        expected = _layer_outputs(backend, dtype, {k: contiguous(v) for k, v in odd.items()})
        actual = _layer_outputs(backend, dtype, odd)
        for i, (r, e) in enumerate(zip(actual, expected)):
            np.testing.assert_array_equal(r, e, err_msg=f"{name} {layout}: output {i}")
