"""prf.TimeRNN against the textbook's TimeRNN, written out here as the textbook has it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import SELF_TOL, close


class TextbookRNN:
    """One time step, as written in the textbook."""

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        t = np.dot(h_prev, Wh) + np.dot(x, Wx) + b
        h_next = np.tanh(t)
        self.cache = (x, h_prev, h_next)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        x, h_prev, h_next = self.cache
        dt = dh_next * (1 - h_next**2)
        db = np.sum(dt, axis=0)
        dWh = np.dot(h_prev.T, dt)
        dh_prev = np.dot(dt, Wh.T)
        dWx = np.dot(x.T, dt)
        dx = np.dot(dt, Wx.T)
        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        return dx, dh_prev


class TextbookTimeRNN:
    """The textbook's TimeRNN (with the dtype of the parameters instead of a fixed 'f')."""

    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.layers = None
        self.h, self.dh = None, None
        self.stateful = stateful

    def set_state(self, h):
        self.h = h

    def reset_state(self):
        self.h = None

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        D, H = Wx.shape
        self.layers = []
        hs = np.empty((N, T, H), dtype=Wx.dtype)
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H), dtype=Wx.dtype)
        for t in range(T):
            layer = TextbookRNN(*self.params)
            self.h = layer.forward(xs[:, t, :], self.h)
            hs[:, t, :] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs):
        Wx, Wh, b = self.params
        N, T, H = dhs.shape
        D, H = Wx.shape
        dxs = np.empty((N, T, D), dtype=Wx.dtype)
        dh = 0
        grads = [0, 0, 0]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh = layer.backward(dhs[:, t, :] + dh)
            dxs[:, t, :] = dx
            for i, grad in enumerate(layer.grads):
                grads[i] += grad
        for i, grad in enumerate(grads):
            self.grads[i][...] = grad
        self.dh = dh
        return dxs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stateful", [False, True])
def test_time_rnn_matches_the_textbook(dtype, stateful):
    N, T, D, H = 3, 5, 4, 6
    rng = np.random.default_rng(50)
    Wx, Wh, b = (
        (rng.standard_normal((D, H)) / 2).astype(dtype),
        (rng.standard_normal((H, H)) / 3).astype(dtype),
        (rng.standard_normal(H) / 4).astype(dtype),
    )
    ours = prf.TimeRNN(Wx.copy(), Wh.copy(), b.copy(), stateful=stateful)
    book = TextbookTimeRNN(Wx.copy(), Wh.copy(), b.copy(), stateful=stateful)
    grads_ids = [id(g) for g in ours.grads]
    tol = SELF_TOL if dtype == np.float64 else 1e-5  # the same sums in another order
    for it in range(3):  # three chunks, an SGD step after each, as the textbook's trainer does
        xs = rng.standard_normal((N, T, D)).astype(dtype)
        dhs = rng.standard_normal((N, T, H)).astype(dtype)
        if it == 1:
            h = rng.standard_normal((N, H)).astype(dtype)
            ours.set_state(h.copy())
            book.set_state(h.copy())
        hs = ours.forward(xs)
        close(hs, book.forward(xs), tol, f"hs {it}")
        assert hs.dtype == dtype
        hs *= 0.5  # a caller's change to the returned hs must not reach backward (the book's hs is its own)
        close(ours.h, book.h, tol, f"h {it}")
        dxs = ours.backward(dhs)
        close(dxs, book.backward(dhs), tol, f"dxs {it}")
        close(ours.dh, book.dh, tol, f"dh {it}")
        for i in range(3):
            close(ours.grads[i], book.grads[i], tol, f"grads[{i}] {it}")
            ours.params[i] -= 0.1 * ours.grads[i]  # in place, the textbook SGD
            book.params[i] -= 0.1 * book.grads[i]
    assert [id(g) for g in ours.grads] == grads_ids
    ours.reset_state()
    book.reset_state()
    assert ours.h is None
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    close(ours.forward(xs), book.forward(xs), tol, "after reset")


def test_integer_weights_are_a_typeerror_naming_them():
    """Integer weights would get integer gradient arrays, into which backward's gradients
    were silently truncated: they are refused, naming the weight."""
    Wx, Wh, b = np.ones((3, 4)), np.ones((4, 4)), np.ones(4)
    for i, name in enumerate(("Wx", "Wh", "b")):
        given = [Wx, Wh, b]
        given[i] = given[i].astype(np.int32)
        with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point array"):
            prf.TimeRNN(*given)
    prf.TimeRNN(Wx.astype(np.float32), Wh.astype(np.float32), b.astype(np.float32))  # float32 is fine
    for dtype in (np.float16, np.longdouble):  # float16 gradients were rounded; longdouble failed at forward
        with pytest.raises(TypeError, match=r"^Wx: expected a floating-point array, float32 or float64"):
            prf.TimeRNN(Wx.astype(dtype), Wh, b)
    with pytest.raises(TypeError, match=r"^Wx: expected a floating-point array"):
        prf.TimeLSTM(np.ones((3, 16), np.float16), np.ones((4, 16)), np.ones(16))
    # float32 and float64 in either byte order (a '>f8' from a file): dtype == compares it
    xs = np.ones((1, 2, 3))
    np.testing.assert_array_equal(prf.TimeRNN(Wx.astype(">f8"), Wh, b).forward(xs), prf.TimeRNN(Wx, Wh, b).forward(xs))


def test_weights_given_as_lists_are_taken():
    """A list Wx passed the constructor's check, then TimeRNN.forward raised AttributeError."""
    Wx, Wh, b = np.full((2, 3), 0.1), np.eye(3) * 0.5, np.zeros(3)
    x = np.ones((1, 4, 2))
    np.testing.assert_array_equal(prf.TimeRNN(Wx.tolist(), Wh, b).forward(x), prf.TimeRNN(Wx, Wh, b).forward(x))


@pytest.mark.parametrize("make", ["TimeRNN", "TimeLSTM"])
def test_an_input_that_does_not_fit_the_weights_is_named(make):
    """The weights are the layer's: a wrong xs is the error, not Wx (as the functional API,
    which takes D from x, had said)."""
    G = 4 if make == "TimeLSTM" else 1
    layer = getattr(prf, make)(np.ones((4, 3 * G)), np.ones((3, 3 * G)), np.ones(3 * G))
    for xs in (np.ones((2, 5, 6)), np.ones((2, 4))):
        with pytest.raises(ValueError, match=r"^xs: expected shape \(N, T, D\) with D = Wx.shape\[0\] = 4, got"):
            layer.forward(xs)


def test_backward_differentiates_the_forward_when_params_are_rebound_between():
    """As the textbook's (whose cells keep the arrays their forward read): a parameter rebound
    after forward (params[1] = params[1] * 2) changes nothing in that forward's backward; the
    next forward uses it (found by a review: backward read the new Wh)."""
    rng = np.random.default_rng(3)
    Wx, Wh, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 4)) * 0.5, rng.standard_normal(4)
    xs, dhs = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 4))
    ours, book = prf.TimeRNN(Wx.copy(), Wh.copy(), b.copy()), TextbookTimeRNN(Wx.copy(), Wh.copy(), b.copy())
    for layer in (ours, book):
        layer.forward(xs)
        layer.params[1] = layer.params[1] * 2
    close(ours.backward(dhs), book.backward(dhs), SELF_TOL, "dxs")
    for g, e in zip(ours.grads, book.grads):
        close(g, e, SELF_TOL, "grads")
    close(ours.forward(xs), book.forward(xs), SELF_TOL, "hs with the rebound Wh")


@pytest.mark.parametrize("make", [prf.TimeRNN, prf.TimeLSTM])
def test_a_bad_state_from_set_state_is_named_as_set_state_names_it(make):
    """set_state takes what the textbook's takes (anything, used at the next forward); a wrong
    one is an error naming `h` (or `c`) there, not the functional API's h0 it becomes."""
    G = 4 if make is prf.TimeLSTM else 1
    rng = np.random.default_rng(0)
    layer = make(
        *(rng.standard_normal(s).astype(np.float32) for s in ((3, 5 * G), (5, 5 * G), (5 * G,))), stateful=True
    )
    xs = rng.standard_normal((2, 4, 3)).astype(np.float32)
    bad = [
        (np.ones((3, 5), np.float32), ValueError, r"^h: the state set_state set: expected shape \(N, H\) = \(2, 5\)"),
        (np.ones((1, 2, 5), np.float32), ValueError, r"^h: the state set_state set: expected shape"),
        (np.ones((2, 5), complex), TypeError, "^h: "),
    ]
    for h, error, message in bad:
        layer.set_state(h)
        with pytest.raises(error, match=message):
            layer.forward(xs)
    if make is prf.TimeLSTM:
        layer.set_state(np.ones((2, 5), np.float32), np.ones((2, 4), np.float32))
        with pytest.raises(ValueError, match=r"^c: the state set_state set: expected shape \(N, H\) = \(2, 5\)"):
            layer.forward(xs)
    layer.set_state(np.ones((2, 5), np.float64))  # a good one (cast as the call casts it)
    assert layer.forward(xs).shape == (2, 4, 5)


@pytest.mark.parametrize("make", [prf.TimeRNN, prf.TimeLSTM])
def test_stateful_set_after_construction_is_checked_and_old_pickles_load(make):
    """`layer.stateful = "False"` was taken and acted as True (found by a review): now the
    constructor's check, whenever it is set. A layer pickled when `stateful` was a plain
    attribute still unpickles, with its value."""
    G = 4 if make is prf.TimeLSTM else 1
    rng = np.random.default_rng(1)
    layer = make(*(rng.standard_normal(s).astype(np.float32) for s in ((3, 5 * G), (5, 5 * G), (5 * G,))))
    with pytest.raises(TypeError, match=r"^stateful: expected a bool, got str$"):
        layer.stateful = "False"
    assert layer.stateful is False
    xs = rng.standard_normal((2, 4, 3)).astype(np.float32)
    first = layer.forward(xs).copy()
    layer.stateful = True
    layer.reset_state()
    np.testing.assert_array_equal(layer.forward(xs), first)  # from zeros
    assert not np.array_equal(layer.forward(xs), first)  # from the last h
    old = dict(layer.__dict__)
    old["stateful"] = old.pop("_stateful")
    revived = make.__new__(make)
    revived.__setstate__(old)
    assert revived.stateful is True
    assert pickle.loads(pickle.dumps(layer)).stateful is True
    old["_stateful"] = "False"  # one set so before the check existed: refused, not True
    old["stateful"] = old.pop("_stateful")
    with pytest.raises(TypeError, match=r"^stateful: expected a bool, got str$"):
        make.__new__(make).__setstate__(old)
