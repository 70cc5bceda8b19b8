"""``prf.TimeRNN``: the textbook class, one ``rnn_forward`` / ``rnn_backward`` call per sequence."""

from __future__ import annotations

import numpy as np

from .. import _backends
from .._api import rnn_backward, rnn_forward
from .._orchestration import _check_flag
from ._checks import _check_float_param, _check_real, _check_set_state, _check_xs, _checked_property, _restore_settings


class TimeRNN:
    """A drop-in for the textbook ``TimeRNN`` layer (T steps of ``h = tanh(h·Wh + x·Wx + b)``),
    with the whole sequence in one ``rnn_forward`` / ``rnn_backward`` call.

    ``params = [Wx, Wh, b]`` are used as given (an optimizer updating them in place is seen
    by the next forward); ``grads = [dWx, dWh, db]`` are overwritten in place by ``backward``.
    ``h`` is the last hidden state, ``dh`` the gradient w.r.t. the initial state from the last
    backward. With ``stateful=False`` every forward starts from zeros; with ``stateful=True``
    from ``h`` (zeros after ``reset_state()``; ``set_state(h)`` sets it), and backward stops at
    the start of the sequence (truncated BPTT).
    """

    stateful = _checked_property("stateful", _check_flag, "True: each forward starts from the last state.")

    def __init__(self, Wx, Wh, b, stateful=False, *, backend=None):
        for name, a in (("Wx", Wx), ("Wh", Wh), ("b", b)):
            _check_float_param(name, a)
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.h, self.dh = None, None
        self.stateful = stateful
        self.backend = _backends.check_backend_name(backend)
        self._cache = None

    def __setstate__(self, state):  # pickled before `stateful` was a property: under its name
        _restore_settings(self, state, ("stateful",))

    def set_state(self, h):
        """The state a stateful layer's next forward starts from: h (N, H), used as given."""
        self.h = h

    def reset_state(self):
        """Forget the state: a stateful layer's next forward starts from zeros."""
        self.h = None

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, H)."""
        xs = _check_real("xs", xs)
        Wx, Wh, b = self.params
        _check_xs(xs, Wx)
        if not self.stateful:
            self.h = None
        h0 = _check_set_state("h", self.h, xs, Wh)
        hs, self.h = rnn_forward(xs, Wx, Wh, b, h0, backend=self.backend)
        # The weights too: backward differentiates this forward even if params are rebound
        # in between, as the textbook's (its cells keep the arrays of their forward) and TimeLSTM.
        self._cache = (xs, Wx, Wh, hs, h0)
        # A copy, as the textbook's hs is its own array: backward reads the kept one, which a
        # caller changing the returned hs in place (hs *= mask) must not change.
        return hs.copy()

    def backward(self, dhs):
        """dhs (N, T, H) -> dxs (N, T, D); fills grads in place and sets dh."""
        if self._cache is None:
            raise RuntimeError("backward: call forward first")
        dhs = _check_real("dhs", dhs)
        xs, Wx, Wh, hs, h0 = self._cache
        g = rnn_backward(dhs, xs, Wx, Wh, hs, h0, backend=self.backend)
        self.grads[0][...] = g.dWx
        self.grads[1][...] = g.dWh
        self.grads[2][...] = g.db
        self.dh = g.dh0
        return g.dx
