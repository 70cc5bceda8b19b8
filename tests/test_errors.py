"""Bad input: a ValueError/TypeError whose message names the argument and the expected shape."""
import numpy as np
import pytest

import pyrnn_fast as prf

T, N, D, H = 4, 3, 5, 6


@pytest.fixture
def good():
    rng = np.random.default_rng(0)
    return dict(x=rng.standard_normal((N, T, D)), Wx=rng.standard_normal((D, H)), Wh=rng.standard_normal((H, H)),
                b=rng.standard_normal(H), h0=rng.standard_normal((N, H)))


@pytest.mark.parametrize("name,bad,pattern", [
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
])
def test_forward_shape_errors(good, name, bad, pattern):
    good[name] = bad
    with pytest.raises(ValueError, match=pattern):
        prf.rnn_forward(**good)


def test_time_major_changes_the_expected_layout(good):
    with pytest.raises(ValueError, match=r"h0: expected shape \(N, H\) = \(4, 6\), got \(3, 6\)"):
        prf.rnn_forward(**good, time_major=True)  # x read as (T=3, N=4, D=5)
    with pytest.raises(ValueError, match=r"x: expected a 3-D array \(T, N, D\)"):
        prf.rnn_forward(good["x"][0], good["Wx"], good["Wh"], time_major=True)


@pytest.mark.parametrize("name,bad,pattern", [
    ("dhs", np.zeros((N, T, H + 1)), r"dhs: expected shape \(N, T, H\) = \(3, 4, 6\), got \(3, 4, 7\)"),
    ("hs", np.zeros((T, N, H)), r"hs: expected shape \(N, T, H\) = \(3, 4, 6\), got \(4, 3, 6\)"),
    ("dh_last", np.zeros((N, H - 1)), r"dh_last: expected shape \(N, H\) = \(3, 6\), got \(3, 5\)"),
    ("h0", np.zeros((1, H)), r"h0: expected shape \(N, H\) = \(3, 6\), got \(1, 6\)"),
])
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


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(activation="sigmoid"), ValueError, r"activation: expected one of \('tanh', 'relu'\), got 'sigmoid'"),
    (dict(activation=None), ValueError, "activation"),
    (dict(backend="cuda"), ValueError, r"backend: expected one of"),
    (dict(backend=3), TypeError, r"backend: expected a str or None"),
    (dict(time_major="yes"), TypeError, r"time_major: expected a bool"),
])
def test_option_errors(good, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        prf.rnn_forward(**good, **kwargs)


def test_ragged_input_is_a_typeerror(good):
    with pytest.raises(TypeError, match="x"):
        prf.rnn_forward([[[1.0], [1.0, 2.0]]], good["Wx"], good["Wh"])
