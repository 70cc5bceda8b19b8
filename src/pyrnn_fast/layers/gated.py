"""``prf.LSTM`` and ``prf.GRU``: the gated cells as layers with everything ``prf.RNN`` has
(stacking, bidirectional, lengths, dropout, train/eval, stateful, step, save/load, interop).
Here: their gate counts and forget-gate bias (the initialisation itself is ``_base``'s), their
functional calls and their signatures; the rest is shared with RNN (``_base``, ``_stack``,
``_lengths``, ``_npz``, ``_interop``)."""

from __future__ import annotations

from .. import _api_gated
from . import _interop
from ._base import _RecurrentLayer
from ._stack import stack_backward, stack_forward

_OPTIONS_DOC = """
    Parameters
    ----------
    input_size, hidden_size : D and H.
    num_layers : stacked layers; layer l reads the outputs of layer l-1.
    bias : whether the layers have biases.
    bidirectional : add a reverse direction per layer; outputs are [forward, reverse] on the
        feature axis, as in PyTorch.
    dropout : probability of zeroing an output of every layer but the last, in training mode
        only (inverted dropout).
    time_major : x and out are (T, N, ·) instead of (N, T, ·).
    stateful : carry the final state into the next call (truncated BPTT; see ``reset_state``).
    dtype : float32 (default) or float64.
    seed : int or None; makes the initialisation and the dropout masks reproducible.
    backend : the functional API's backend (None: the default one).
"""


class LSTM(_RecurrentLayer):
    __doc__ = (
        """A (stacked, optionally bidirectional) LSTM layer, PyTorch's cell with the gates as
    column blocks [i | f | g | o] (row-vector convention, a_t = x_t·Wx + h_{t-1}·Wh + b):
    i, f, o = σ(a_i, a_f, a_o), g = tanh(a_g), c_t = f ⊙ c_{t-1} + i ⊙ g, h_t = o ⊙ tanh(c_t).
"""
        + _OPTIONS_DOC
        + """
    Initialisation: Wx Glorot-uniform and Wh orthogonal per gate block, b zeros except the
    forget gate's, 1 (Keras's unit_forget_bias: early gradients pass through c).

    Attributes
    ----------
    params : ``Wx_l{k}`` (D_k, 4H), ``Wh_l{k}`` (H, 4H), ``b_l{k}`` (4H,) (+ ``_reverse``).
    grads : the same keys, overwritten in place by every ``backward``.
    dh0, dc0 : gradients w.r.t. the initial state (num_layers·dirs, N, H), from the last backward.
    state : the carried (h, c) of a stateful layer, or None.
    """
    )

    _name = "LSTM"
    _gates = 4
    _state_names = ("h", "c")
    _forget_bias = 1.0

    def _run(self, x, W, state, keep=True, options=None, active=None):
        Wx, Wh, b = W
        kernel, arrays, dtype, dims = self._forward_args(x, Wx=Wx, Wh=Wh, b=b, h0=state[0], c0=state[1])
        out = _api_gated._lstm_forward_checked(kernel, arrays, dtype, dims, True, keep, active, final_view=True)
        return out.hs, (out.h_last, out.c_last), out.workspace

    def _grad_steps(self, dhs, x, W, hs, saved, state0, dstate_n, active=None):
        Wx, Wh, _ = W
        h0, c0 = state0
        return _api_gated._lstm_backward_steps(
            dhs, x, Wx, Wh, hs, saved, h0, c0, dstate_n[0], dstate_n[1], True, self.backend, active
        )

    def __call__(self, x, state=None, lengths=None, *, record=True):
        """Run the layer: returns ``out, (h_n, c_n)``.

        x : (N, T, D), or (T, N, D) with time_major.
        state : None (zeros; a stateful layer's carried state) or a pair (h0, c0), each
            (num_layers·dirs, N, H).
        lengths : (N,) ints in [0, T], optional (PyTorch's packed sequences: see ``RNN``).
        record : keep what ``backward`` needs (default); False for inference (see ``RNN``).

        out : (N, T, dirs·H) (or time-major), the top layer's h, [forward, reverse].
        h_n, c_n : (num_layers·dirs, N, H), the final states, index ``layer·dirs + direction``.
        """
        if state is None:
            h0 = c0 = None
        elif isinstance(state, (tuple, list)) and len(state) == 2:
            h0, c0 = state
        else:
            raise TypeError(f"state: expected None or a pair (h0, c0), got {type(state).__name__}")
        # A pair is a state given, also (None, None): zeros, not the carried state (README).
        out, (h_n, c_n) = stack_forward(self, x, {"h0": h0, "c0": c0}, lengths, record, carry=state is None)
        return out, (h_n, c_n)

    forward = __call__

    def backward(self, dout, dh_n=None, dc_n=None):
        """Backpropagate through the last call: returns dx (the layout of x), overwrites
        ``grads`` and sets ``dh0``, ``dc0``. ``dout`` is the gradient w.r.t. ``out``; ``dh_n``,
        ``dc_n`` (optional) w.r.t. ``h_n``, ``c_n``. Otherwise as ``RNN.backward``."""
        dx, (self.dh0, self.dc0) = stack_backward(self, dout, {"dh_n": dh_n, "dc_n": dc_n})
        return dx

    @classmethod
    def from_torch(cls, module, *, backend=None):
        """A layer with the weights, layout, dtype and mode of a ``torch.nn.LSTM``:
        Wx = weight_ih.T, Wh = weight_hh.T, b = bias_ih + bias_hh (same gate order)."""
        return _interop.from_torch(cls, module, backend)

    def to_torch(self):
        """A ``torch.nn.LSTM`` with this layer's weights (bias_ih = b, bias_hh = 0)."""
        return _interop.to_torch(self)

    @classmethod
    def from_keras_weights(cls, weights, *, time_major=False, stateful=False, dtype=None, backend=None):
        """A one-layer LSTM from a Keras ``LSTM``'s ``get_weights()``: [kernel (D, 4H),
        recurrent_kernel (H, 4H), bias (4H,)] (no bias with use_bias=False). Keras's gate order
        [i, f, c, o] is ours."""
        return _interop.from_keras_weights(cls, weights, None, time_major, stateful, dtype, backend)


class GRU(_RecurrentLayer):
    __doc__ = (
        """A (stacked, optionally bidirectional) GRU layer, PyTorch's cell (the reset gate applied
    after the recurrent product, Keras's reset_after=True) with blocks [r | z | n]:
    u_t = x_t·Wx + b, v_t = h_{t-1}·Wh + bh, r = σ(u_r + v_r), z = σ(u_z + v_z),
    n = tanh(u_n + r ⊙ v_n), h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}.
"""
        + _OPTIONS_DOC
        + """
    Initialisation: Wx Glorot-uniform and Wh orthogonal per gate block, b and bh zeros.

    Attributes
    ----------
    params : ``Wx_l{k}`` (D_k, 3H), ``Wh_l{k}`` (H, 3H), ``b_l{k}``, ``bh_l{k}`` (3H,) (+ ``_reverse``).
    grads : the same keys, overwritten in place by every ``backward``.
    dh0 : the gradient w.r.t. the initial state (num_layers·dirs, N, H), from the last backward.
    state : the carried state (num_layers·dirs, N, H) of a stateful layer, or None.
    """
    )

    _name = "GRU"
    _gates = 3
    _param_kinds = ("Wx", "Wh", "b", "bh")

    def _run(self, x, W, state, keep=True, options=None, active=None):
        Wx, Wh, b, bh = W
        kernel, arrays, dtype, dims = self._forward_args(x, Wx=Wx, Wh=Wh, b=b, bh=bh, h0=state[0])
        out = _api_gated._gru_forward_checked(kernel, arrays, dtype, dims, True, keep, active, final_view=True)
        return out.hs, (out.h_last,), out.workspace

    def _grad_steps(self, dhs, x, W, hs, saved, state0, dstate_n, active=None):
        Wx, Wh, _, _ = W
        return _api_gated._gru_backward_steps(
            dhs, x, Wx, Wh, hs, saved, state0[0], dstate_n[0], True, self.backend, active
        )

    def __call__(self, x, h0=None, lengths=None, *, record=True):
        """Run the layer: returns ``out, h_n`` (as ``RNN``)."""
        out, (h_n,) = stack_forward(self, x, {"h0": h0}, lengths, record)
        return out, h_n

    forward = __call__

    def backward(self, dout, dh_n=None):
        """Backpropagate through the last call (as ``RNN.backward``)."""
        dx, (self.dh0,) = stack_backward(self, dout, {"dh_n": dh_n})
        return dx

    @classmethod
    def from_torch(cls, module, *, backend=None):
        """A layer with the weights, layout, dtype and mode of a ``torch.nn.GRU``:
        Wx = weight_ih.T, Wh = weight_hh.T, b = bias_ih, bh = bias_hh (same gate order)."""
        return _interop.from_torch(cls, module, backend)

    def to_torch(self):
        """A ``torch.nn.GRU`` with this layer's weights."""
        return _interop.to_torch(self)

    @classmethod
    def from_keras_weights(cls, weights, *, time_major=False, stateful=False, dtype=None, backend=None):
        """A one-layer GRU from a Keras ``GRU(reset_after=True)``'s ``get_weights()``: [kernel
        (D, 3H), recurrent_kernel (H, 3H), bias (2, 3H)], gate blocks [z, r, h] (reordered to
        ours, [r, z, n]); bias[0] is the input bias b, bias[1] the recurrent bias bh. Weights of
        ``reset_after=False`` (a (3H,) bias) are another cell: a ValueError. (Without a bias the
        two cells' arrays have the same shapes: that case cannot be told apart.)"""
        return _interop.from_keras_weights(cls, weights, None, time_major, stateful, dtype, backend)
