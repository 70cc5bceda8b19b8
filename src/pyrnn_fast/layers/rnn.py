"""``prf.RNN``: a stacked, optionally bidirectional vanilla RNN layer with dropout, variable
lengths, state and streaming. Here: its option (the activation), initialisation and math;
what does not depend on the cell (configuration, parameter names, repr, modes, argument checks,
save/load) is ``_base._RecurrentLayer``, its save/load format ``_npz``, its torch/Keras interop
``_interop``, the segment machinery for variable lengths ``_segments``."""

from __future__ import annotations

import numpy as np

from .. import _backends
from .._backends import get_backend
from .._orchestration import _forward_into, _kernel_matrix, _kernel_seq
from . import _interop
from ._base import _orthogonal, _RecurrentLayer
from ._checks import _check_real
from ._segments import _reverse, _reverse_index, _run_backward, _run_forward, _segments


def _c_array(a, dtype):
    """``a`` as a C-contiguous, aligned array of ``dtype`` (copied only if it is not one)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.aligned else a.copy()


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
        init_seq = self._configure(
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
        rng = np.random.default_rng(init_seq)
        H = self.hidden_size
        self.params = {}
        for name, shape in self._param_shapes():
            if name.startswith("Wx_"):
                limit = np.sqrt(6.0 / (shape[0] + H)) if shape[0] + H > 0 else 0.0
                self.params[name] = rng.uniform(-limit, limit, shape).astype(self.dtype)
            elif name.startswith("Wh_"):
                self.params[name] = _orthogonal(rng, H, self.dtype)
            else:
                self.params[name] = np.zeros(H, self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def _configure_cell(self, *, activation):  # type: ignore[override]  # each cell names its own options
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation: expected 'tanh' or 'relu', got {activation!r}")
        self.activation = activation

    # --- forward -------------------------------------------------------------------------

    def __call__(self, x, h0=None, lengths=None):
        """Run the layer: returns ``out, h_n``.

        x : (N, T, D), or (T, N, D) with time_major.
        h0 : (num_layers·dirs, N, H), optional (zeros; a stateful layer's carried state).
        lengths : (N,) ints in [0, T], optional: steps at or past a sample's length leave its
            state unchanged and give zero outputs; the reverse direction starts from each
            sample's own last valid step (PyTorch's packed sequences).

        out : (N, T, dirs·H) (or time-major), the top layer's outputs, [forward, reverse].
        h_n : (num_layers·dirs, N, H), the final states, index ``layer·dirs + direction``.
        """
        x = _check_real("x", x)
        layout = "(T, N, D)" if self.time_major else "(N, T, D)"
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(
                f"x: expected a 3-D array {layout} with D = input_size = {self.input_size}, got shape {x.shape}"
            )
        # Our own time-major C-contiguous copy: cheap next to the recurrence, makes the segment
        # slices contiguous, and keeps backward right if the caller changes x afterwards.
        x_tm = np.array(x if self.time_major else x.transpose(1, 0, 2), dtype=self.dtype, order="C")
        T, N = x_tm.shape[:2]
        H, dirs, L = self.hidden_size, self.num_directions, self.num_layers
        lengths = self._check_lengths(lengths, N, T)

        if h0 is None and self.stateful and self.state is not None:
            h0 = self.state
            if h0.shape[1] != N:
                raise ValueError(
                    f"x: a stateful layer carries a state for batch size {h0.shape[1]}, got batch "
                    f"size {N}; call reset_state() first"
                )
        h0 = self._state_or_zeros("h0", h0, (L * dirs, N, H), "shape (num_layers*dirs, N, H)")

        segs = _segments(lengths, T)
        rev = None if lengths is None else _reverse_index(lengths, T, N)
        h_n = np.empty((L * dirs, N, H), self.dtype)
        cache = dict(segs=segs, rev=rev, layers=[], T=T, N=N)
        inp = x_tm
        for layer in range(L):
            mask = None
            if layer > 0 and self.training and self.dropout > 0:
                keep = self._dropout_rng.random(inp.shape) >= self.dropout
                scale = 1.0 / (1.0 - self.dropout) if self.dropout < 1 else 0.0
                mask = (keep * scale).astype(self.dtype)
                inp = inp * mask
            runs, outs = [], []
            for d, suffix in enumerate(self._suffixes):
                Wx, Wh, b = self._weights(layer, suffix)
                x_run = inp if d == 0 else _reverse(inp, rev)
                hs, h_n[layer * dirs + d], starts = _run_forward(
                    x_run, Wx, Wh, b, h0[layer * dirs + d], segs, self.activation, self.backend
                )
                runs.append(dict(x=x_run, hs=hs, starts=starts))
                outs.append(hs if d == 0 else _reverse(hs, rev))
            cache["layers"].append(dict(runs=runs, mask=mask))
            inp = outs[0] if dirs == 1 else np.concatenate(outs, axis=-1)
        self._cache = cache
        if self.stateful:
            self.state = h_n.copy()
        out = inp.copy() if self.time_major else np.ascontiguousarray(inp.transpose(1, 0, 2))
        return out, h_n

    forward = __call__

    # --- backward ------------------------------------------------------------------------

    def backward(self, dout, dh_n=None):
        """Backpropagate through the last call: returns dx (the layout of x) and overwrites
        ``grads`` (and ``dh0``). ``dout`` is the gradient w.r.t. ``out`` (its entries past a
        sample's length are ignored: those outputs are constant zeros); ``dh_n`` (optional)
        w.r.t. ``h_n``. A stateful layer stops at the chunk boundary (truncated BPTT)."""
        cache = self._cache
        if cache is None:
            raise RuntimeError("backward: call the layer (forward) first")
        T, N = cache["T"], cache["N"]
        H, dirs, L = self.hidden_size, self.num_directions, self.num_layers
        dout = _check_real("dout", dout)
        expected = (T, N, dirs * H) if self.time_major else (N, T, dirs * H)
        if dout.shape != expected:
            raise ValueError(f"dout: expected the shape of out = {expected}, got {dout.shape}")
        d_tm = np.asarray(dout if self.time_major else dout.transpose(1, 0, 2), dtype=self.dtype)
        dh_n = self._state_or_zeros("dh_n", dh_n, (L * dirs, N, H), "the shape of h_n")

        segs, rev = cache["segs"], cache["rev"]
        dh0 = np.empty((L * dirs, N, H), self.dtype)
        for layer in reversed(range(L)):
            entry = cache["layers"][layer]
            d_in = None
            for d, suffix in enumerate(self._suffixes):
                Wx, Wh, _ = self._weights(layer, suffix)
                run = entry["runs"][d]
                dhs = d_tm[..., d * H : (d + 1) * H]
                if d == 1:
                    dhs = _reverse(dhs, rev)
                dx, dWx, dWh, db, dh0[layer * dirs + d] = _run_backward(
                    dhs,
                    run["x"],
                    Wx,
                    Wh,
                    run["hs"],
                    run["starts"],
                    dh_n[layer * dirs + d],
                    segs,
                    self.activation,
                    self.backend,
                )
                if d == 1:
                    dx = _reverse(dx, rev)
                d_in = dx if d_in is None else d_in + dx
                name = f"l{layer}{suffix}"
                self.grads[f"Wx_{name}"][...] = dWx
                self.grads[f"Wh_{name}"][...] = dWh
                if self.bias:
                    self.grads[f"b_{name}"][...] = db
            if entry["mask"] is not None:
                d_in = d_in * entry["mask"]
            assert d_in is not None  # every layer has at least one direction
            d_tm = d_in
        self.dh0 = dh0
        return d_tm if self.time_major else np.ascontiguousarray(d_tm.transpose(1, 0, 2))

    # --- streaming -----------------------------------------------------------------------

    def step(self, x_t):
        """Advance a unidirectional stateful layer by one time step (streaming inference).

        x_t : (N, D). Returns the top layer's new state (N, H). The state is ``self.state``,
        the one ``__call__`` carries, updated in place (zeros when there is none yet). No
        dropout, nothing recorded for backward.

        With the compiled backend the whole stack advances in one call of a kernel that reads
        the weights where they are (changes made to them in place are seen). Everything is
        checked at the first step; later steps check only x_t and that the layer still has
        the same state, parameter arrays and settings: anything else goes through the checks
        again (and ``x_t`` of another dtype or layout is converted there, at a cost).
        """
        fast = self._stepper
        if fast is not None and self.stateful and fast[1] == (self.backend, self.activation):
            top = fast[0].step(x_t, self.params, self.state)
            if top is not None:
                return top
        return self._checked_step(x_t)

    def _checked_step(self, x_t):
        if self.bidirectional:
            raise ValueError("step: a bidirectional layer needs the whole sequence; use layer(x)")
        if not self.stateful:
            raise ValueError("step: the layer must be stateful (RNN(..., stateful=True), or set layer.stateful = True)")
        x_t = _check_real("x_t", x_t)
        if x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(f"x_t: expected shape (N, D) with D = input_size = {self.input_size}, got {x_t.shape}")
        N = x_t.shape[0]
        if self.state is None:
            self.state = np.zeros((self.num_layers, N, self.hidden_size), self.dtype)
        elif self.state.shape[1] != N:
            raise ValueError(
                f"x_t: the carried state is for batch size {self.state.shape[1]}, got {N}; call reset_state() first"
            )
        kernel = get_backend(self.backend)
        x = _c_array(x_t, self.dtype)
        if kernel.name == "cpp":
            return self._compiled_step(x, self.state)
        # One time step of rnn_forward's orchestration per layer, written into buffers kept
        # across steps: nothing is allocated per step but the returned output.
        if self._step_buffer is None or self._step_buffer.shape[2] != N or self._step_buffer.dtype != self.dtype:
            self._step_buffer = np.empty((self.num_layers, 1, N, self.hidden_size), self.dtype)
        inp = _kernel_seq(x[None], self.dtype)  # (1, N, D), time-major
        for layer in range(self.num_layers):
            Wx, Wh, b = self._weights(layer, "")
            out = self._step_buffer[layer]
            h0 = _kernel_matrix(self.state[layer], self.dtype)
            _forward_into(kernel, inp, Wx, Wh, b, h0, out, self.activation, self.dtype)
            self.state[layer] = out[0]
            inp = out
        return inp[0].copy()

    def _compiled_step(self, x, state):
        """One step with the compiled backend's stepper. The stepper is kept (``self._stepper``)
        while the layer holds the same state and parameter objects and settings, when it can
        read them in place (the layer's dtype, C-contiguous, aligned, a writable state);
        otherwise this step runs on converted copies (the state written back), so the results
        are the same in every layout, and changes in place are still seen."""
        settings = (self.backend, self.activation)
        fast = self._stepper
        if fast is not None and fast[1] == settings and fast[0].current(self.params, self.state):
            return fast[0].step(x, self.params, self.state)
        self._stepper = None
        weights = [self._weights(layer, "") for layer in range(self.num_layers)]
        arrays = [a for w in weights for a in w if a is not None] + [state]
        in_place = state.flags.writeable and all(
            type(a) is np.ndarray and a.dtype == self.dtype and a.flags.c_contiguous and a.flags.aligned for a in arrays
        )
        if not in_place:
            weights = [tuple(None if a is None else _c_array(a, self.dtype) for a in w) for w in weights]
            state, original_state = np.array(state, dtype=self.dtype, order="C"), state
        stepper = _backends._core.Stepper(
            [w[0] for w in weights],
            [w[1] for w in weights],
            [w[2] for w in weights],
            state,
            np.empty_like(state),
            self.activation,
            self.params,
        )
        top = stepper.step(x, self.params, state)
        if top is None:  # cannot happen: x and every array were made what the kernel takes
            raise RuntimeError("pyrnn_fast internal error: the compiled step refused checked arguments")
        if in_place:
            self._stepper = (stepper, settings)
        else:
            original_state[...] = state
        return top

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
