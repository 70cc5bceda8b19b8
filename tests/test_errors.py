"""Bad input: a ValueError/TypeError whose message names the argument and the expected shape."""

import numpy as np
import pytest

import pyrnn_fast as prf

T, N, D, H = 4, 3, 5, 6


@pytest.fixture
def good():
    rng = np.random.default_rng(0)
    return dict(
        x=rng.standard_normal((N, T, D)),
        Wx=rng.standard_normal((D, H)),
        Wh=rng.standard_normal((H, H)),
        b=rng.standard_normal(H),
        h0=rng.standard_normal((N, H)),
    )


@pytest.mark.parametrize(
    "name,bad,pattern",
    [
        ("x", np.zeros((N, T)), r"x: expected a 3-D array \(N, T, D\), got shape \(3, 4\)"),
        ("x", np.zeros((N, T, D + 1)), r"Wx: expected shape \(D, H\) with D = x.shape\[2\] = \(6, 6\), got \(5, 6\)"),
        ("Wx", np.zeros(D), r"Wx: expected a 2-D array \(D, H\), got shape \(5,\)"),
        ("Wx", np.zeros((D + 1, H)), r"Wx: expected shape .* = \(5, 6\), got \(6, 6\)"),
        ("Wh", np.zeros((H, H + 1)), r"Wh: expected shape \(H, H\) with H = Wx.shape\[1\] = \(6, 6\), got \(6, 7\)"),
        ("Wh", np.zeros((H, H, 1)), r"Wh: expected a 2-D array"),
        ("b", np.zeros(H + 1), r"b: expected shape \(H,\) = \(6,\), got \(7,\)"),
        ("b", np.zeros((1, H)), r"b: expected shape \(H,\) = \(6,\), got \(1, 6\)"),
        ("h0", np.zeros((N + 1, H)), r"h0: expected shape \(N, H\) = \(3, 6\), got \(4, 6\)"),
        ("h0", np.zeros(H), r"h0: expected shape \(N, H\) = \(3, 6\), got \(6,\)"),
    ],
)
def test_forward_shape_errors(good, name, bad, pattern):
    good[name] = bad
    with pytest.raises(ValueError, match=pattern):
        prf.rnn_forward(**good)


def test_time_major_changes_the_expected_layout(good):
    with pytest.raises(ValueError, match=r"h0: expected shape \(N, H\) = \(4, 6\), got \(3, 6\)"):
        prf.rnn_forward(**good, time_major=True)  # x read as (T=3, N=4, D=5)
    with pytest.raises(ValueError, match=r"x: expected a 3-D array \(T, N, D\)"):
        prf.rnn_forward(good["x"][0], good["Wx"], good["Wh"], time_major=True)


@pytest.mark.parametrize(
    "name,bad,pattern",
    [
        ("dhs", np.zeros((N, T, H + 1)), r"dhs: expected shape \(N, T, H\) = \(3, 4, 6\), got \(3, 4, 7\)"),
        ("hs", np.zeros((T, N, H)), r"hs: expected shape \(N, T, H\) = \(3, 4, 6\), got \(4, 3, 6\)"),
        ("dh_last", np.zeros((N, H - 1)), r"dh_last: expected shape \(N, H\) = \(3, 6\), got \(3, 5\)"),
        ("h0", np.zeros((1, H)), r"h0: expected shape \(N, H\) = \(3, 6\), got \(1, 6\)"),
    ],
)
def test_backward_shape_errors(good, name, bad, pattern):
    hs, _ = prf.rnn_forward(**good)
    args = dict(dhs=np.ones_like(hs), x=good["x"], Wx=good["Wx"], Wh=good["Wh"], hs=hs, h0=good["h0"], dh_last=None)
    args[name] = bad
    with pytest.raises(ValueError, match=pattern):
        prf.rnn_backward(**args)


def test_backward_requires_hs_and_dhs(good):
    hs, _ = prf.rnn_forward(**good)
    with pytest.raises(TypeError, match="dhs: expected an array, got None"):
        prf.rnn_backward(None, good["x"], good["Wx"], good["Wh"], hs)
    with pytest.raises(TypeError, match="hs: expected an array, got None"):
        prf.rnn_backward(np.ones_like(hs), good["x"], good["Wx"], good["Wh"], None)


@pytest.mark.parametrize(
    "kwargs,exc,pattern",
    [
        (dict(activation="sigmoid"), ValueError, r"activation: expected one of \('tanh', 'relu'\), got 'sigmoid'"),
        (dict(activation=None), ValueError, "activation"),
        (dict(backend="cuda"), ValueError, r"backend: expected one of"),
        (dict(backend=3), TypeError, r"backend: expected a str or None"),
        (dict(time_major="yes"), TypeError, r"time_major: expected a bool"),
    ],
)
def test_option_errors(good, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        prf.rnn_forward(**good, **kwargs)


def test_ragged_input_is_a_typeerror(good):
    with pytest.raises(TypeError, match="x"):
        prf.rnn_forward([[[1.0], [1.0, 2.0]]], good["Wx"], good["Wh"])


# --- missing and junk arguments: a TypeError naming the argument, from every public entry ---

JUNK = {"None": None, "str": "abc", "dict": {"a": 1}, "object": object(), "ragged": [[1.0], [1.0, 2.0]]}


def _entry_points():
    """(argument name in messages, required, call(value)) for every array argument of every
    public function; call passes `value` for that argument and good values for the rest."""
    rng = np.random.default_rng(0)
    x, Wx, Wh, b, h0 = (rng.standard_normal(s) for s in ((N, T, D), (D, H), (H, H), (H,), (N, H)))
    hs, _ = prf.rnn_forward(x, Wx, Wh, b, h0)
    fwd = dict(x=x, Wx=Wx, Wh=Wh, b=b, h0=h0)
    bwd = dict(dhs=hs, x=x, Wx=Wx, Wh=Wh, hs=hs, h0=h0, dh_last=h0)
    out = []
    for name in fwd:
        out.append((name, name in ("x", "Wx", "Wh"), lambda v, name=name: prf.rnn_forward(**dict(fwd, **{name: v}))))
    for name in bwd:
        out.append(
            (name, name not in ("h0", "dh_last"), lambda v, name=name: prf.rnn_backward(**dict(bwd, **{name: v})))
        )

    def layer():
        return prf.RNN(D, H, stateful=True, seed=0)

    def call(v, what):
        return layer()(**{**dict(x=x, h0=None, lengths=None), what: v})

    def backward(v, what):
        lay = layer()
        lay(x)
        return lay.backward(**{**dict(dout=np.ones((N, T, H)), dh_n=None), what: v})

    out += [
        ("x", True, lambda v: call(v, "x")),
        ("h0", False, lambda v: call(v, "h0")),
        ("lengths", False, lambda v: call(v, "lengths")),
        ("dout", True, lambda v: backward(v, "dout")),
        ("dh_n", False, lambda v: backward(v, "dh_n")),
        ("x_t", True, lambda v: layer().step(v)),
    ]
    for i, name in enumerate(("Wx", "Wh", "b")):
        out.append((name, True, lambda v, i=i: prf.TimeRNN(*[v if j == i else w for j, w in enumerate((Wx, Wh, b))])))
        out.append(
            (
                "weights",
                True,
                lambda v, i=i: prf.RNN.from_keras_weights([v if j == i else w for j, w in enumerate((Wx, Wh, b))]),
            )
        )
    out.append(("xs", True, lambda v: prf.TimeRNN(Wx, Wh, b).forward(v)))

    def time_rnn_backward(v):
        t = prf.TimeRNN(Wx, Wh, b)
        t.forward(x)
        return t.backward(v)

    out += [("dhs", True, time_rnn_backward), ("path", True, prf.RNN.load)]
    return out


@pytest.mark.parametrize("junk", list(JUNK))
def test_junk_arguments_are_a_typeerror_naming_them(junk):
    """rnn_forward(None, Wx, Wh) used to raise AttributeError; no message may name an
    internal parameter (the binding's)."""
    value = JUNK[junk]
    for name, required, call in _entry_points():
        if value is None and not required:
            continue  # None means "not given" there
        if isinstance(value, str) and name == "path":
            continue  # a str is a path
        with pytest.raises(TypeError, match=rf"^{name}\b") as info:
            call(value)
        assert "_core" not in str(info.value)
    if not isinstance(value, list):  # a (ragged) list is a list of two weights, of wrong shapes
        with pytest.raises(TypeError, match=r"^weights: expected a list"):
            prf.RNN.from_keras_weights(value)


def test_backend_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("PYRNN_FAST_BACKEND", "garbage")
    with pytest.raises(ValueError, match=r"^PYRNN_FAST_BACKEND='garbage': expected one of \['cpp', 'numba', 'numpy'\]"):
        prf.rnn_forward(np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)))
    with pytest.raises(ValueError, match=r"^backend: expected one of"):  # an explicit argument wins
        prf.rnn_forward(np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), backend="garbage")
    monkeypatch.setenv("PYRNN_FAST_BACKEND", " numpy ")
    prf.rnn_forward(np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)))


def test_layout_errors_never_reach_the_binding():
    """Layouts the kernels cannot address are copied before the binding sees them: none of
    them gives an error (they used to give `b: strides must be non-negative`, `a: array data
    is not aligned`); test_layouts.py checks the results."""
    rng = np.random.default_rng(0)
    x, Wx, Wh = rng.standard_normal((N, T, D)), rng.standard_normal((D, H)), rng.standard_normal((H, H))
    buf = bytearray(x.nbytes + 1)
    x_unaligned = np.frombuffer(buf, x.dtype, count=x.size, offset=1).reshape(x.shape)
    for backend in prf.backends():
        prf.rnn_forward(x, Wx[::-1], Wh, backend=backend)
        prf.rnn_forward(x_unaligned, Wx, Wh, backend=backend)


def test_a_call_interrupting_the_numba_backends_load_is_refused_not_remembered(monkeypatch):
    """Loading numba takes ~1 s; a signal handler asking for the backend on the thread doing so
    met half-imported modules, and their ImportError was kept as the reason numba is
    unavailable, for the rest of the process (found by a review). Here the load itself asks
    again, as such a handler would: refused, and the backend loads."""
    pytest.importorskip("numba")
    from pyrnn_fast import _backends

    monkeypatch.delitem(_backends._loaded, "numba", raising=False)
    monkeypatch.setattr(_backends, "_numba_error", None)
    check, nested = _backends._check_numba_imports, []

    def interrupted_check():
        if not nested:
            with pytest.raises(RuntimeError, match="^backend: the numba backend is being loaded by the code this call"):
                nested.append(_backends.get_backend("numba"))
            nested.append("refused")
        check()

    monkeypatch.setattr(_backends, "_check_numba_imports", interrupted_check)
    assert _backends.get_backend("numba").name == "numba" and nested == ["refused"]
    assert "numba" in prf.backends()
