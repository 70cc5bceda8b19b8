"""The compiled kernels' tanh and sigmoid, element by element, against long-double truth.

The kernels compute both through exp (csrc/kernels/activations.hpp); the parity tests see
them only inside sums whose rounding hides an ulp or two, so here the activation is the
whole computation, over its whole range and every vector tail:
  - tanh: ``rnn_forward`` of one step with Wx = ones (1, H) and no bias: hs = tanh(x);
  - sigmoid: ``lstm_forward`` of one step with the input gate's column of Wx = 1, the cell
    gate's bias large (its tanh rounds to 1) and no c0: c_last = sigmoid(x) * 1.
Each value's error is measured in ulps of the dtype at the true value."""

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import CAN_FLUSH, flush_subnormals

H = 19  # one whole float32 vector of 16 lanes and a tail (float64: two vectors and a tail)

# Within a few ulp: the kernels' documented accuracy (2.5 ulp measured, activations.hpp).
MAX_ULP = 4.0


def _arguments(dtype):
    fine = np.linspace(-25.0, 25.0, 2001)
    tiny = np.ldexp(1.0, -np.arange(1, 140, 3))  # down to float32 denormals
    edges = [-87.3, -87.9, -88.0, -708.01, -708.2, -708.4, -708.9]  # near the least normal sigmoid
    values = np.concatenate([fine, tiny, -tiny, [0.0, -0.0, 0.3, 0.549, 0.55, 60.0, -60.0, 85.0, -85.0], edges])
    return values.astype(dtype)


def _tanh(x, backend):
    """tanh of each value of x, (len(x), H), by the kernels: one step with Wx = ones, no bias."""
    dtype = x.dtype
    hs, _ = prf.rnn_forward(x[:, None, None], np.ones((1, H), dtype), np.zeros((H, H), dtype), backend=backend)
    return hs[:, 0, :]


def _sigmoid(x, backend):
    """sigmoid of each value of x, (len(x), H), by the kernels: c_last = i * g of one LSTM step
    with the input gate's column of Wx = 1 and the cell gate g = tanh(100) = 1."""
    dtype = x.dtype
    Wx = np.zeros((1, 4 * H), dtype)
    Wx[0, :H] = 1
    b = np.zeros(4 * H, dtype)
    b[2 * H : 3 * H] = 100
    out = prf.lstm_forward(x[:, None, None], Wx, np.zeros((H, 4 * H), dtype), b, workspace=False, backend=backend)
    return out.c_last


def _ulp_errors(actual, truth, dtype):
    truth_rounded = truth.astype(dtype)
    ulp = np.spacing(np.abs(truth_rounded)).astype(np.longdouble)
    return np.abs(actual.astype(np.longdouble) - truth) / ulp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_is_accurate_to_a_few_ulp(backend, dtype):
    x = _arguments(dtype)
    with flush_subnormals(False):  # IEEE arithmetic: tanh of a subnormal is that subnormal
        t = _tanh(x, backend)
    truth = np.tanh(x.astype(np.longdouble))
    err = _ulp_errors(t, truth[:, None], dtype)
    worst = int(np.argmax(err.max(axis=1)))
    assert err.max() <= MAX_ULP, f"tanh({x[worst]!r}) = {t[worst, 0]!r}, {err.max():.2f} ulp from {truth[worst]}"
    nonzero = x != 0  # the product x . Wx of -0.0 sums to +0.0
    assert np.all(np.signbit(t[nonzero]) == np.signbit(x[nonzero])[:, None])  # odd


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_accurate_to_a_few_ulp(backend, dtype):
    x = _arguments(dtype)
    s = _sigmoid(x, backend)
    xl = x.astype(np.longdouble)
    truth = 1 / (1 + np.exp(-xl))
    # Where the truth is below the least normal number (x < -87.3 in float32, -708.4 in
    # float64) the kernels give it to within that number: 0 below x = -88 (-709), as IEEE's
    # 1 / (1 + exp(-x)) does once exp overflows. (A floor of 1.8e-35 there had left saturated
    # gates never 0: inf times them was inf where the reference has NaN.)
    tiny = np.finfo(dtype).tiny
    tail = truth < tiny
    err = _ulp_errors(s[~tail], truth[~tail, None], dtype)
    worst = int(np.argmax(err.max(axis=1)))
    assert err.max() <= MAX_ULP, f"sigmoid({x[~tail][worst]!r}): {err.max():.2f} ulp"
    assert np.all(np.abs(s[tail] - truth[tail, None]) <= tiny)
    far = _sigmoid(
        np.array([-89.0, -100.0, -1e30] if dtype == np.float32 else [-709.5, -800.0, -1e300], dtype), backend
    )
    far = far[:, 0]
    if backend.startswith("cpp"):
        assert not far.any()
    assert np.all(far <= tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flushing_subnormals_zeroes_only_them(backend, dtype):
    """With the compiled kernels' flushing of subnormals (the default), tanh and sigmoid give
    the IEEE result for the argument with a subnormal read as 0, and 0 where that result is
    subnormal (prf.set_flush_subnormals)."""
    if not backend.startswith("cpp") or not CAN_FLUSH:
        pytest.skip("only the compiled backend flushes subnormals, on x86-64")
    tiny = np.finfo(dtype).tiny
    subnormals = tiny * np.ldexp(1.0, -np.arange(1, 20, 3)).astype(dtype)
    x = np.concatenate([_arguments(dtype), subnormals, -subnormals])
    x_read = np.where(np.abs(x) < tiny, dtype(0), x)
    with flush_subnormals(False):
        ieee = _tanh(x_read, backend), _sigmoid(x_read, backend)
    with flush_subnormals(True):
        got = _tanh(x, backend), _sigmoid(x, backend)
    for g, e in zip(got, ieee):
        results_flushed = (e != 0) & (np.abs(e) < tiny)
        np.testing.assert_array_equal(g, np.where(results_flushed, dtype(0), e))
    assert ((ieee[1] != 0) & (np.abs(ieee[1]) < tiny)).any()  # sigmoid's subnormal results are tested


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_of_infinities_and_nan(backend, dtype):
    t = _tanh(np.array([np.inf, -np.inf, np.nan, 1e30, -1e30], dtype), backend)
    np.testing.assert_array_equal(t[:, 0], np.array([1, -1, np.nan, 1, -1], dtype))
    # sigmoid: not of ±inf, which times the zeros of Wx would be NaN
    c = _sigmoid(np.array([np.nan, 1e30, -1e30], dtype), backend)[:, 0]
    assert np.isnan(c[0]) and c[1] == 1 and c[2] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_saturated_gate_meeting_inf_gives_the_references_nan(backend, dtype):
    """An inf in a GRU's h0 makes v = h0 . Wh infinite; where the reset gate is sigmoid(-inf) = 0,
    n = tanh(u + 0 * inf) is NaN in the reference (and torch). With sigmoid floored at 1.8e-35
    the compiled backend gave +-1 there (found by a review)."""
    rng = np.random.default_rng(0)
    D, H = 3, 4
    x = rng.standard_normal((1, 1, D)).astype(dtype)
    Wx, Wh = rng.standard_normal((D, 3 * H)).astype(dtype), rng.standard_normal((H, 3 * H)).astype(dtype)
    h0 = np.zeros((1, H), dtype)
    h0[0, 1] = np.inf
    with np.errstate(invalid="ignore"):  # the reference's inf * 0, on purpose
        got = prf.gru_forward(x, Wx, Wh, None, None, h0, backend=backend).hs
        expected = prf.gru_forward(x, Wx, Wh, None, None, h0, backend="numpy").hs
    assert np.isnan(expected).any() and not np.isnan(expected).all()  # the case is what it claims
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_of_infinities_and_signed_zeros(backend, dtype):
    """relu(-inf) = +0, relu(-1) = +0 (not -0) and relu'(inf) = 1 on every backend: Numba's
    kernels computed v * 0 and h * 0 + 1, NaN at the infinities (found by a review)."""
    b = np.array([-np.inf, np.inf, -1.0, 2.0, np.nan], dtype)  # the pre-activations: x = 0
    x, Wx, Wh = np.zeros((1, 1, 1), dtype), np.zeros((1, 5), dtype), np.zeros((5, 5), dtype)
    hs, _ = prf.rnn_forward(x, Wx, Wh, b, activation="relu", backend=backend)
    np.testing.assert_array_equal(hs.ravel(), np.array([0, np.inf, 0, 2, np.nan], dtype))
    assert not np.signbit(hs.ravel()[[0, 2]]).any()
    g = prf.rnn_backward(np.ones_like(hs), x, Wx, Wh, hs, activation="relu", backend=backend)
    np.testing.assert_array_equal(g.db, np.array([0, 1, 0, 1, np.nan], dtype))
