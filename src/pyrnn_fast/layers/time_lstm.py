"""``prf.TimeLSTM``: the textbook class, one ``lstm_forward`` / ``lstm_backward`` call per sequence."""

from __future__ import annotations

import numpy as np

from .. import _backends
from .._api_gated import lstm_backward, lstm_forward
from .._orchestration import _check_flag
from ._checks import _check_float_param, _check_real, _check_set_state, _check_xs, _checked_property, _restore_settings

# The textbook orders the gate blocks [f | g | i | o]; ours (PyTorch's) is [i | f | g | o].
# Column block k of ours is block _OURS_FROM_BOOK[k] of the book's.
_OURS_FROM_BOOK = (2, 0, 1, 3)
_BOOK_FROM_OURS = tuple(_OURS_FROM_BOOK.index(k) for k in range(4))  # (1, 2, 0, 3)


def _reorder(a, order):
    """The gate blocks (last axis, 4 of H) of `a` in `order`."""
    H = a.shape[-1] // 4
    return np.concatenate([a[..., k * H : (k + 1) * H] for k in order], axis=-1)


def _in_our_order(name, a):
    """A parameter in the book's gate order [f | g | i | o] (4H values on its last axis), its
    columns put in ours; the functional call then checks the shapes against each other."""
    a = _check_real(name, a)
    if a.ndim == 0 or a.shape[-1] % 4:
        raise ValueError(f"{name}: expected 4H values on its last axis (blocks [f | g | i | o]), got shape {a.shape}")
    return _reorder(a, _OURS_FROM_BOOK)


class TimeLSTM:
    """A drop-in for the textbook ``TimeLSTM`` layer (T steps of the LSTM cell with
    ``A = x·Wx + h·Wh + b`` split into the gate blocks [f | g | i | o]), with the whole
    sequence in one ``lstm_forward`` / ``lstm_backward`` call.

    ``params = [Wx, Wh, b]`` ((D, 4H), (H, 4H), (4H,), the book's gate order) are used as given
    (an optimizer updating them in place is seen by the next forward: the columns are put in
    our order [i | f | g | o] at each call, a copy cheap next to the recurrence);
    ``grads = [dWx, dWh, db]`` are overwritten in place by ``backward``, in the book's order.
    ``h``, ``c`` are the last states, ``dh`` the gradient w.r.t. the initial h from the last
    backward. With ``stateful=False`` every forward starts from zeros; with ``stateful=True``
    from ``h``, ``c`` (zeros after ``reset_state()``; ``set_state(h, c=None)`` sets them), and
    backward stops at the start of the sequence (truncated BPTT).
    """

    stateful = _checked_property("stateful", _check_flag, "True: each forward starts from the last state.")

    def __init__(self, Wx, Wh, b, stateful=False, *, backend=None):
        for name, a in (("Wx", Wx), ("Wh", Wh), ("b", b)):
            _check_float_param(name, a)
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.h, self.c, self.dh = None, None, None
        self.stateful = stateful
        self.backend = _backends.check_backend_name(backend)
        self._cache = None

    def __setstate__(self, state):  # pickled before `stateful` was a property: under its name
        _restore_settings(self, state, ("stateful",))

    def set_state(self, h, c=None):
        """The state a stateful layer's next forward starts from: h, c (N, H) (c None: zeros)."""
        self.h, self.c = h, c

    def reset_state(self):
        """Forget the state: a stateful layer's next forward starts from zeros."""
        self.h, self.c = None, None

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, H)."""
        xs = _check_real("xs", xs)
        Wx, Wh, b = (_in_our_order(name, p) for name, p in zip(("Wx", "Wh", "b"), self.params))
        _check_xs(xs, Wx)
        if not self.stateful:
            self.h, self.c = None, None
        h0, c0 = (_check_set_state(k, a, xs, self.params[1]) for k, a in (("h", self.h), ("c", self.c)))
        out = lstm_forward(xs, Wx, Wh, b, h0, c0, backend=self.backend)
        self.h, self.c = out.h_last, out.c_last
        self._cache = (xs, Wx, Wh, out, h0, c0)
        return out.hs.copy()  # backward reads the kept hs (see TimeRNN.forward)

    def backward(self, dhs):
        """dhs (N, T, H) -> dxs (N, T, D); fills grads in place and sets dh."""
        if self._cache is None:
            raise RuntimeError("backward: call forward first")
        dhs = _check_real("dhs", dhs)
        xs, Wx, Wh, out, h0, c0 = self._cache
        g = lstm_backward(dhs, xs, Wx, Wh, out.hs, out.workspace, h0, c0, backend=self.backend)
        for grad, d in zip(self.grads, (g.dWx, g.dWh, g.db)):
            grad[...] = _reorder(d, _BOOK_FROM_OURS)
        self.dh = g.dh0
        return g.dx
