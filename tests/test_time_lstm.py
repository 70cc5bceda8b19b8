"""prf.TimeLSTM against an independent textbook implementation: the LSTM cell and TimeLSTM
written out below from the book's equations (gate blocks [f | g | i | o], one step at a time),
sharing no code with the library."""

from __future__ import annotations

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import close


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class BookLSTM:
    """One step of the textbook LSTM cell, A = x·Wx + h_prev·Wh + b sliced [f | g | i | o]."""

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        H = h_prev.shape[1]
        A = x @ Wx + h_prev @ Wh + b
        f, g, i, o = sigmoid(A[:, :H]), np.tanh(A[:, H : 2 * H]), sigmoid(A[:, 2 * H : 3 * H]), sigmoid(A[:, 3 * H :])
        c_next = f * c_prev + g * i
        h_next = o * np.tanh(c_next)
        self.cache = (x, h_prev, c_prev, i, f, g, o, c_next)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        Wx, Wh, _ = self.params
        x, h_prev, c_prev, i, f, g, o, c_next = self.cache
        tanh_c = np.tanh(c_next)
        ds = dc_next + (dh_next * o) * (1 - tanh_c**2)
        dc_prev = ds * f
        di, df, do, dg = ds * g, ds * c_prev, dh_next * tanh_c, ds * i
        di *= i * (1 - i)
        df *= f * (1 - f)
        do *= o * (1 - o)
        dg *= 1 - g**2
        dA = np.hstack((df, dg, di, do))
        self.grads[0][...] = x.T @ dA
        self.grads[1][...] = h_prev.T @ dA
        self.grads[2][...] = dA.sum(axis=0)
        return dA @ Wx.T, dA @ Wh.T, dc_prev


class BookTimeLSTM:
    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.h = self.c = self.dh = None
        self.stateful = stateful

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, _ = xs.shape
        H = Wh.shape[0]
        self.layers = []
        hs = np.empty((N, T, H), xs.dtype)
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H), xs.dtype)
        if not self.stateful or self.c is None:
            self.c = np.zeros((N, H), xs.dtype)
        for t in range(T):
            layer = BookLSTM(*self.params)
            self.h, self.c = layer.forward(xs[:, t], self.h, self.c)
            hs[:, t] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs):
        Wx, Wh, _ = self.params
        N, T, H = dhs.shape
        dxs = np.empty((N, T, Wx.shape[0]), dhs.dtype)
        dh, dc = 0, 0
        grads = [0, 0, 0]
        for t in reversed(range(T)):
            dx, dh, dc = self.layers[t].backward(dhs[:, t] + dh, dc)
            dxs[:, t] = dx
            for i, g in enumerate(self.layers[t].grads):
                grads[i] += g
        for i, g in enumerate(grads):
            self.grads[i][...] = g
        self.dh = dh
        return dxs


def weights(dtype, D=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    return (
        (rng.standard_normal((D, 4 * H)) / np.sqrt(D)).astype(dtype),
        (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(dtype),
        (rng.standard_normal(4 * H) * 0.3).astype(dtype),
    )


@pytest.mark.parametrize("stateful", [False, True])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_matches_the_textbook(stateful, dtype, tol):
    rng = np.random.default_rng(1)
    ours, book = prf.TimeLSTM(*weights(dtype), stateful=stateful), BookTimeLSTM(*weights(dtype), stateful=stateful)
    for _chunk in range(2):  # the second chunk starts from the first's state when stateful
        xs = rng.standard_normal((5, 6, 3)).astype(dtype)
        dhs = rng.standard_normal((5, 6, 4)).astype(dtype)
        hs = ours.forward(xs)
        close(hs, book.forward(xs), tol, "hs")
        hs *= 0.5  # a caller's change to the returned hs must not reach backward (the book's hs is its own)
        close(ours.h, book.h, tol, "h")
        close(ours.c, book.c, tol, "c")
        grads_before = [id(g) for g in ours.grads]
        close(ours.backward(dhs), book.backward(dhs), tol, "dxs")
        assert [id(g) for g in ours.grads] == grads_before  # overwritten in place
        for name, a, b in zip(("dWx", "dWh", "db"), ours.grads, book.grads):
            close(a, b, tol, name)
        close(ours.dh, book.dh, tol, "dh")


def test_params_updated_in_place_are_seen_and_state_api():
    Wx, Wh, b = weights(np.float64)
    layer = prf.TimeLSTM(Wx, Wh, b, stateful=True)
    xs = np.random.default_rng(2).standard_normal((2, 3, 3))
    first = layer.forward(xs)
    layer.reset_state()
    Wx *= 0.5  # an optimizer's in-place update
    book = BookTimeLSTM(Wx, Wh, b)
    second = layer.forward(xs)
    close(second, book.forward(xs), 1e-10, "after the update")
    assert not np.allclose(first, second)
    h, c = np.full((2, 4), 0.3), np.full((2, 4), -0.2)
    layer.set_state(h, c)
    book.stateful, book.h, book.c = True, h, c
    close(layer.forward(xs), book.forward(xs), 1e-10, "from set_state")
    layer.set_state(h)  # c = None: zeros
    book.h, book.c = h, np.zeros((2, 4))
    close(layer.forward(xs), book.forward(xs), 1e-10, "from set_state(h)")
    with pytest.raises(RuntimeError, match="call forward first"):
        prf.TimeLSTM(Wx, Wh, b).backward(np.zeros((2, 3, 4)))


def test_weights_without_gate_blocks_or_of_integer_dtype_are_errors_naming_them():
    """A b without a last axis, or a last axis that is not 4 gate blocks, is a ValueError
    naming it (a 0-d b raised IndexError); integer weights are a TypeError (their gradients
    would be truncated into integer arrays)."""
    Wx, Wh, b = weights(np.float64)
    xs = np.ones((2, 3, 3))
    for i, name in enumerate(("Wx", "Wh", "b")):
        given = [Wx, Wh, b]
        given[i] = np.ones(given[i].shape[:-1] + (given[i].shape[-1] - 1,))
        with pytest.raises(ValueError, match=rf"^{name}: expected 4H values"):
            prf.TimeLSTM(*given).forward(xs)
        given[i] = given[i].astype(np.int64)
        with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point array"):
            prf.TimeLSTM(*given)
    with pytest.raises(ValueError, match=r"^b: expected 4H values"):
        prf.TimeLSTM(Wx, Wh, np.float64(0.0)).forward(xs)
