"""``prf.RNN``: a stacked, optionally bidirectional vanilla RNN layer with dropout, variable
lengths, state and streaming. Here: its option (the activation) and math; what does not
depend on the cell (configuration, initialisation, parameter names, repr, modes, argument
checks, step, save/load) is ``_base._RecurrentLayer``, its save/load format ``_npz``, its
torch/Keras interop ``_interop``, the machinery of variable lengths ``_lengths``."""

from __future__ import annotations

import numpy as np

from .._api import _rnn_backward_steps, _rnn_forward_checked
from .._orchestration import _check_activation
from . import _interop
from ._base import _RecurrentLayer, _setting
from ._stack import stack_backward, stack_forward


class RNN(_RecurrentLayer):
    """A (stacked, optionally bidirectional) vanilla RNN layer:
    ``h_t = act(x_t · Wx + h_{t-1} · Wh + b)`` per layer and direction.

    Parameters
    ----------
    input_size, hidden_size : D and H.
    num_layers : stacked layers; layer l reads the outputs of layer l-1.
    activation : 'tanh' or 'relu'.
    bias : whether the layers have a bias b (one per layer and direction).
    bidirectional : add a reverse direction per layer; outputs are [forward, reverse] on the
        feature axis, as in PyTorch.
    dropout : probability of zeroing an output of every layer but the last, in training mode
        only (inverted dropout: kept values are scaled by 1 / (1 - dropout)).
    time_major : x and out are (T, N, ·) instead of (N, T, ·) (PyTorch's ``batch_first=False``).
    stateful : carry h_n into the next call as its h0 (truncated BPTT; see ``reset_state``).
    dtype : float32 (default) or float64, of the parameters and the computation; inputs are
        cast to it.
    seed : int or None; makes the initialisation and the dropout masks reproducible.
    backend : the functional API's backend (None: the default one).

    Initialisation: Wx Glorot-uniform (U(±sqrt(6 / (fan_in + H)))), Wh a random orthogonal
    matrix, b zeros.

    Attributes
    ----------
    params : dict name -> array, ``Wx_l{k}`` (D_k, H), ``Wh_l{k}`` (H, H), ``b_l{k}`` (H,), and the
        same names with ``_reverse`` for the reverse direction (no ``b_*`` with bias=False).
    grads : dict with the same keys, overwritten in place by every ``backward``.
    dh0 : the gradient w.r.t. the initial state (num_layers·dirs, N, H) from the last backward.
    state : the carried state (num_layers·dirs, N, H) of a stateful layer, or None.
    training : True (default) or False, set by ``train()`` / ``eval()``; only dropout cares.
    """

    _name = "RNN"
    _cell_options = ("activation",)

    def __init__(
        self,
        input_size,
        hidden_size,
        *,
        num_layers=1,
        activation="tanh",
        bias=True,
        bidirectional=False,
        dropout=0.0,
        time_major=False,
        stateful=False,
        dtype=np.float32,
        seed=None,
        backend=None,
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            activation=activation,
            bias=bias,
            bidirectional=bidirectional,
            dropout=dropout,
            time_major=time_major,
            stateful=stateful,
            dtype=dtype,
            seed=seed,
            backend=backend,
        )

    activation = _setting("activation", lambda _, value: _check_activation(value), "'tanh' or 'relu'.")

    def _configure_cell(self, *, activation):  # type: ignore[override]  # each cell names its own options
        self.activation = activation

    def _step_settings(self):
        return (self.backend, self.activation)

    # --- the cell's functional calls (_stack runs them per layer and direction) ---

    def _run(self, x, W, state, keep=True, options=None, active=None):
        Wx, Wh, b = W
        act = self.activation if options is None else options["activation"]
        kernel, arrays, dtype, dims = self._forward_args(x, Wx=Wx, Wh=Wh, b=b, h0=state[0])
        hs, h = _rnn_forward_checked(kernel, arrays, dtype, dims, True, act, active, final_view=True)
        return hs, (h,), act  # what backward needs: the call's activation, not the current one

    def _grad_steps(self, dhs, x, W, hs, saved, state0, dstate_n, active=None):
        Wx, Wh, _ = W
        # saved: the call's activation, not the current one
        return _rnn_backward_steps(dhs, x, Wx, Wh, hs, state0[0], dstate_n[0], saved, True, self.backend, active)

    # --- forward and backward -------------------------------------------------------------

    def __call__(self, x, h0=None, lengths=None, *, record=True):
        """Run the layer: returns ``out, h_n``.

        x : (N, T, D), or (T, N, D) with time_major.
        h0 : (num_layers·dirs, N, H), optional (zeros; a stateful layer's carried state).
        lengths : (N,) ints in [0, T], optional: steps at or past a sample's length leave its
            state unchanged and give zero outputs; the reverse direction starts from each
            sample's own last valid step (PyTorch's packed sequences).
        record : keep what ``backward`` needs (default); False for inference: nothing is
            kept (the gated cells then also run in bounded scratch) and backward raises.

        out : (N, T, dirs·H) (or time-major), the top layer's outputs, [forward, reverse].
        h_n : (num_layers·dirs, N, H), the final states, index ``layer·dirs + direction``.
        """
        out, (h_n,) = stack_forward(self, x, {"h0": h0}, lengths, record)
        return out, h_n

    forward = __call__

    def backward(self, dout, dh_n=None):
        """Backpropagate through the last call: returns dx (the layout of x) and overwrites
        ``grads`` (and ``dh0``). ``dout`` is the gradient w.r.t. ``out`` (its entries past a
        sample's length are ignored: those outputs are constant zeros); ``dh_n`` (optional)
        w.r.t. ``h_n``. A stateful layer stops at the chunk boundary (truncated BPTT). The
        call is differentiated with the weight arrays, activation and layout it used (params
        rebound since do not enter it; arrays changed in place do). A RuntimeError without a
        recorded call (none yet, or ``record=False``)."""
        dx, (self.dh0,) = stack_backward(self, dout, {"dh_n": dh_n})
        return dx

    # --- interop (_interop) -----------------------------------------------------------

    @classmethod
    def from_torch(cls, module, *, backend=None):
        """A layer with the weights, layout, dtype and mode of a ``torch.nn.RNN``:
        Wx = weight_ih.T, Wh = weight_hh.T, b = bias_ih + bias_hh; ``batch_first=False``
        gives ``time_major=True``."""
        return _interop.from_torch(cls, module, backend)

    def to_torch(self):
        """A ``torch.nn.RNN`` with this layer's weights (bias_ih = b, bias_hh = 0), layout
        (``batch_first = not time_major``), dtype and mode."""
        return _interop.to_torch(self)

    @classmethod
    def from_keras_weights(
        cls, weights, *, activation="tanh", time_major=False, stateful=False, dtype=None, backend=None
    ):
        """A one-layer RNN from a Keras ``SimpleRNN``'s ``get_weights()``: [kernel (D, H),
        recurrent_kernel (H, H), bias (H,)] ([kernel, recurrent_kernel] with use_bias=False).
        Keras's order and convention are ours (x·kernel + h·recurrent_kernel + bias).
        dtype: the kernel's (float32 or float64) unless given."""
        return _interop.from_keras_weights(cls, weights, activation, time_major, stateful, dtype, backend)
