"""``_RecurrentLayer``: what a stacked, optionally bidirectional recurrent layer does whatever
its cell is (RNN, LSTM, GRU): check and keep the configuration, name, shape and initialise the
parameters, describe itself, switch modes, check the arguments that only the layer's geometry
(layers, directions, N, T, H) decides, stream (``step``, the compiled stepper) and save /
load. A cell's class adds its own options and its math (``_run`` / ``_grad_steps``, which ``_stack``
arranges) and its public signatures (``__call__``, ``backward``, interop)."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

from .. import _backends
from .._orchestration import _check_flag, _kernel_seq, _reject_masked, _weight_grads, aligned_copy
from . import _npz
from ._checks import _check_dropout, _check_dtype, _check_int, _check_real, _checked_property, _restore_settings

# step(): a step of at least STEP_KERNEL_MIN_BATCH samples whose batch size times a layer's
# weight bytes reaches STEP_KERNEL_MAX_BATCH_BYTES[gates] runs on the sequence kernels (T = 1)
# instead of the step kernel (_step_kernel_suits).
STEP_KERNEL_MIN_BATCH = 32
STEP_KERNEL_MAX_BATCH_BYTES = {1: 24 << 20, 3: 56 << 20, 4: 56 << 20}


def _aligned(a):
    """Whether the data of ``a`` is aligned to its item size as the compiled step checks it: NumPy
    flags every empty array aligned, whatever its data pointer (a zero-size slice of a packed
    structured array, ``np.frombuffer(..., offset=1, count=0)``)."""
    # (the pointer read only for an empty array: `a.ctypes` costs ~0.8 µs, a sixth of a step
    # whose x_t is converted, e.g. float64 readings into a float32 layer)
    return a.flags.aligned and (a.size != 0 or a.ctypes.data % a.dtype.alignment == 0)


def _c_array(a, dtype):
    """``a`` as a C-contiguous, aligned array of ``dtype`` (copied only if it is not one)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if _aligned(a) else a.copy()


def _checked_step(step, x, params_key, state_key, during="step"):
    """A compiled stepper's step on x (of the layer's dtype and layout): its new top state, or a
    RuntimeError where the state or parameters are no longer the objects it was built on (the
    stepper then returns None, having done nothing). `during`: what runs it (a "step", or a
    "call" run by steps, whose state parts are its own)."""
    top = step(x, params_key, state_key)
    if top is None:
        # x and every array were made what the kernel takes, so only the layer changed: its
        # state or params rebound by another thread since the checks (a review saw this with
        # a second thread calling reset_state() in a loop: 71 steps in 3000).
        changed = "state or parameters" if during == "step" else "parameters"
        raise RuntimeError(
            f"{during}: the layer's {changed} were changed by another thread during this {during}; "
            f"{during} a layer from one thread at a time"
        )
    return top


def _drop_stepper(layer):
    layer._stepper = None
    layer._call_stepper = None


def _setting(name, check, doc):
    """A layer setting that users may change after construction (``_checked_property``); the
    kept compiled steppers, built for the old value, are dropped (``step`` and short calls build
    one for the new value at their full checks, and need not compare settings at every step)."""
    return _checked_property(name, check, doc, on_change=_drop_stepper)


def _geometry_setting(name, check, doc):
    """A ``_setting`` that decides the parameters and states the layer has (sizes, layers,
    directions, bias, dtype): a change also drops what the last call recorded for backward,
    which was made for the old geometry (backward read the layer's current num_layers and fed
    layer 1's gradient to layer 0's backward, silently; found by a review). Backward then
    names the setting."""

    def drop(layer):
        _drop_stepper(layer)
        layer.__dict__.pop("_param_shapes_kept", None)
        if layer.__dict__.get("_cache") is not None:
            layer._cache = {"changed": name}

    return _checked_property(name, check, doc, on_change=drop)


# The layers' settings kept under their own names by layers pickled before they were checked
# properties (__setstate__ sets them through the properties).
_SETTINGS = (
    "input_size",
    "hidden_size",
    "num_layers",
    "bias",
    "dropout",
    "time_major",
    "training",
    "stateful",
    "bidirectional",
    "dtype",
    "backend",
    "activation",
)


def _write_back(pairs):
    """dst[...] = src for each (dst, src) of `pairs`, all of them: an exception a signal handler
    raises in the middle (Ctrl-C between two assignments) is raised once every array is
    written, so that a step advances the whole stack's state or none of it. (A second
    exception, a second signal or the assignment's own error, is raised at once.)"""
    pending = None
    i = 0
    while i < len(pairs):
        try:
            dst, src = pairs[i]
            dst[...] = src  # (again after an interrupt that came just after it: the same values)
            i += 1
        except BaseException as e:
            if pending is not None:
                raise
            pending = e
    if pending is not None:
        raise pending


def _orthogonal(rng, n, dtype):
    """A uniformly distributed (Haar) random orthogonal n×n matrix."""
    if n == 0:
        return np.zeros((0, 0), dtype)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.sign(np.diag(r))).astype(dtype)


class _RecurrentLayer:
    """The cell-independent part of a layer. Parameters are named ``Wx_l{k}``, ``Wh_l{k}``,
    ``b_l{k}`` (and the GRU's ``bh_l{k}``; ``_reverse`` appended for the reverse direction),
    the names torch and the save format use; a subclass sets ``_name`` and those of the class
    attributes below that differ for its cell."""

    _name: str  # the layer's name in repr: the public class's, also for a user's subclass of it
    _cell_options: tuple[str, ...] = ()  # the cell's own options, set by _configure_cell
    _gates = 1  # column blocks of Wx, Wh and b (docs/DESIGN.md: 4 for LSTM, 3 for GRU)
    _param_kinds: tuple[str, ...] = ("Wx", "Wh", "b")  # per layer and direction; biases last
    _state_names: tuple[str, ...] = ("h",)  # the carried state's parts (LSTM: h and c)
    _forget_bias = 0.0  # the initial bias of gate block 1 (LSTM: 1, its forget gate)
    params: dict[str, np.ndarray]  # set by __init__ (or load)
    # Every setting is checked when set, after construction too (a plain attribute took a
    # string "False" for true: time_major, training), and a change drops what was made for the
    # old value: the kept compiled steppers (_setting; one kept stepping two layers after
    # num_layers = 1, or adding the bias after bias = False, found by a review) and, for the
    # geometry, the last call's record for backward (_geometry_setting).
    input_size = _geometry_setting(
        "input_size", lambda name, value: _check_int(name, value, 0), "Features per step (D)."
    )
    hidden_size = _geometry_setting("hidden_size", lambda name, value: _check_int(name, value, 0), "Hidden units (H).")
    num_layers = _geometry_setting("num_layers", lambda name, value: _check_int(name, value, 1), "Stacked layers.")
    bias = _geometry_setting(
        "bias", _check_flag, "True: the layers have biases (``b_l{k}``, the GRU's ``bh_l{k}`` too)."
    )
    # Neither stepper depends on these three (a call with a dropout mask between layers is not
    # run by steps; a call's layout is its own): checked, nothing dropped.
    dropout = _checked_property(
        "dropout", lambda _, value: _check_dropout(value), "Dropout between stacked layers, a probability in [0, 1]."
    )
    time_major = _checked_property("time_major", _check_flag, "True: x and out are (T, N, ·); False: (N, T, ·).")
    training = _checked_property(
        "training", _check_flag, "True: training mode (dropout acts); see ``train`` / ``eval``."
    )
    stateful = _setting(
        "stateful", _check_flag, "True: each call starts from the state the last one ended in (``step`` needs it)."
    )
    bidirectional = _geometry_setting(
        "bidirectional", _check_flag, "True: a reverse direction per layer (``step`` refuses)."
    )
    dtype = _geometry_setting(
        "dtype", lambda _, value: _check_dtype(value), "np.dtype float32 or float64: of the computation."
    )
    backend = _setting(
        "backend",
        lambda _, value: _backends.check_backend_name(value),
        "'cpp', 'numba', 'numpy' or None (the default).",
    )

    def __init__(
        self,
        input_size,
        hidden_size,
        *,
        num_layers=1,
        bias=True,
        bidirectional=False,
        dropout=0.0,
        time_major=False,
        stateful=False,
        dtype=np.float32,
        seed=None,
        backend=None,
        **cell_options,
    ):
        init_seq = self._configure(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            bidirectional=bidirectional,
            dropout=dropout,
            time_major=time_major,
            stateful=stateful,
            dtype=dtype,
            seed=seed,
            backend=backend,
            **cell_options,
        )
        try:
            initial = self._initial_params(np.random.default_rng(init_seq))
        except (ValueError, MemoryError) as e:  # NumPy's "array is too big", naming no argument
            count = sum(math.prod(shape) for _, shape in self._param_shapes())
            # Not type(e)(...): NumPy's MemoryError (_ArrayMemoryError) takes (shape, dtype).
            raise (MemoryError if isinstance(e, MemoryError) else ValueError)(
                f"input_size={self.input_size}, hidden_size={self.hidden_size}, num_layers={self.num_layers}: "
                f"{count} parameters of {self.dtype} cannot be allocated ({e})"
            ) from e
        self.params = {k: aligned_copy(v) for k, v in initial.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        if self.dropout > 0 and self.num_layers == 1:
            # As torch.nn.RNN warns (a configuration it takes, then ignores): said here, where it
            # was written, rather than by torch at to_torch (found by a review). At the line that
            # made the layer: past this __init__ and those of subclasses (RNN's, a user's).
            level, frame = 1, sys._getframe(1)
            while frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is self and frame.f_back:
                level, frame = level + 1, frame.f_back
            warnings.warn(
                f"dropout={self.dropout} has no effect with num_layers=1: dropout acts between stacked "
                "layers, on the outputs of all but the last",
                UserWarning,
                stacklevel=level + 1,
            )

    def _initial_params(self, rng):
        """Wx Glorot-uniform and Wh a random orthogonal matrix, per gate block; biases zero but
        for gate block 1's ``_forget_bias``. With one block (RNN) that is the classic init."""
        H, G = self.hidden_size, self._gates
        params = {}
        for name, shape in self._param_shapes():
            if name.startswith("Wx_"):
                limit = np.sqrt(6.0 / (shape[0] + H)) if shape[0] + H > 0 else 0.0
                params[name] = rng.uniform(-limit, limit, shape).astype(self.dtype)
            elif name.startswith("Wh_"):
                params[name] = np.concatenate([_orthogonal(rng, H, self.dtype) for _ in range(G)], axis=1)
            else:
                params[name] = np.zeros(G * H, self.dtype)
                if name.startswith("b_") and G > 1:
                    params[name][H : 2 * H] = self._forget_bias
        return params

    # --- configuration -------------------------------------------------------------------

    def _configure(
        self,
        input_size,
        hidden_size,
        *,
        num_layers,
        bias,
        bidirectional,
        dropout,
        time_major,
        stateful,
        dtype,
        seed,
        backend,
        **cell_options,
    ):
        """Check and set everything but the weights; returns the seed of the initialisation.
        Both ``__init__`` and ``load`` (which reads the weights instead) call it."""
        # (each checked by its setting)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        # Here, so that with several bad arguments the first one in the signature is reported.
        self._configure_cell(**cell_options)
        self.bias = bias
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.time_major = time_major
        self.stateful = stateful
        self.dtype = dtype
        # An int (a NumPy one too, kept as Python's: the saved config is JSON) or None.
        self.seed = None if seed is None else _check_int("seed", seed, 0)
        self.backend = backend
        self.training = True
        self.state = None
        self.dh0 = None
        self._cache = None  # what the last call keeps for backward
        self._stepper = None  # the compiled step: (stepper, its step function), see step
        self._call_stepper = None  # short calls' compiled stepper, kept between calls (_stack._forward_by_steps)
        init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
        self._dropout_rng = np.random.default_rng(dropout_seq)
        return init_seq

    def _configure_cell(self, **cell_options):
        """Check and set the options named in ``_cell_options`` (a cell with options overrides
        this). The gated cells have none, and their constructor is this class's, which takes
        ``**cell_options``: anything left here is a keyword they do not take (a misspelt
        ``num_layer=2``, an ``activation``), an error rather than silently dropped."""
        if cell_options:
            raise TypeError(f"{self._name}() got an unexpected keyword argument {next(iter(cell_options))!r}")

    # The cell's functional calls over one run (time-major), which _stack arranges:
    def _run(self, x, W, state, keep=True, options=None, active=None):
        """(hs, final state parts, what _grad_steps needs); W in ``_param_kinds`` order, state a tuple
        in ``_state_names`` order; `keep`: record what backward needs (False: a step); `options`:
        the cell's options ({name: value} of ``_cell_options``) as a call had them (None: the
        layer's own now); `active`: the samples each step runs, a batch of variable lengths
        sorted longest first (``_lengths``; None: all of them)."""
        raise NotImplementedError

    def _grad_steps(self, dhs, x, W, hs, saved, state0, dstate_n, active=None):
        """The backward of one run up to its weight gradients: (``BackwardSteps``, initial
        state gradients), from the cell's ``_..._backward_steps`` (`active` as for ``_run``)."""
        raise NotImplementedError

    def _weight_grads(self, steps):
        """(dx, parameter gradients in ``_param_kinds`` order) of a ``BackwardSteps``."""
        dx, dWx, dWh, db, dbh = _weight_grads(steps)
        return dx, (dWx, dWh, db, dbh)[: len(self._param_kinds)]

    def _forward_args(self, x, **named):
        """(backend, arrays, dtype, dims) for a cell's functional forward past its checks
        (``_api._rnn_forward_checked``, ``_api_gated._lstm_forward_checked``, ...) over one run
        of this layer: x time-major (T, N, D) and the named arrays (weights, state parts, None
        where absent) in the layer's dtype, as ``_stack`` and ``step`` pass them. The checks
        skipped are those the layer made (x's D, the parameters' shapes, the state's): at
        T = 1 they were a fifth of a layer call. The layouts are made the kernels' as the
        public calls make them; the bindings check the sizes again."""
        x = _kernel_seq(x, self.dtype)
        T, N, D = x.shape
        return _backends.get_backend(self.backend), dict(x=x, **named), self.dtype, (T, N, D, self.hidden_size)

    def _param_shapes(self):
        """[(name, shape)] of every parameter, in the order of ``params`` (a tuple, kept for the
        configuration it was made for: every call checks the parameters against it)."""
        kept = self.__dict__.get("_param_shapes_kept")  # (dropped by a change of geometry)
        if kept is not None:
            return kept
        H, G = self.hidden_size, self._gates
        out: list[tuple[str, tuple[int, ...]]] = []
        for layer in range(self.num_layers):
            fan_in = self.input_size if layer == 0 else self.num_directions * H
            for suffix in self._suffixes:
                name = f"l{layer}{suffix}"
                out += [(f"Wx_{name}", (fan_in, G * H)), (f"Wh_{name}", (H, G * H))]
                if self.bias:
                    out += [(f"{kind}_{name}", (G * H,)) for kind in self._param_kinds[2:]]
        self._param_shapes_kept = tuple(out)
        return self._param_shapes_kept

    def _check_params(self):
        """Every parameter the configuration implies is in ``params``, a real numeric array of
        its shape (they may be rebound between calls), else an error naming it: the functional
        calls would only see a Wx and a Wh that disagree, not which of the layer's arrays.
        Returns {name: the array checked} (each converted once: what the call then computes
        with, so that an object converted again, or an entry rebound by another thread
        meanwhile, is never used unchecked; found by a review: the numba kernels, which check
        no sizes, wrote out of bounds)."""
        params = self.params
        if not isinstance(params, dict):
            raise TypeError(f"params: expected a dict {{name: array}}, got {type(params).__name__}")
        checked = {}
        for name, shape in self._param_shapes():
            a = params.get(name)
            if not (type(a) is np.ndarray and a.shape == shape and a.dtype.kind in "biuf"):
                # (the test above passes what these do, without their calls: every call runs this)
                if name not in params:
                    raise ValueError(f"params: {name!r} is missing (expected an array of shape {shape})")
                a = _check_real(name, a)
                if a.shape != shape:
                    raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
            checked[name] = a
        return checked

    def _check_own_params(self, what):
        """``_check_params``, and no other entry in ``params``: what save() writes and to_torch
        copies (``what`` they do, for the message) is the layer's own parameters, and an array of
        the user's there would be left behind without a word."""
        checked = self._check_params()
        extra = sorted(set(self.params) - set(checked))
        if extra:
            are = "is not a parameter" if len(extra) == 1 else "are not parameters"
            raise ValueError(
                f"params: {', '.join(map(repr, extra))} {are} of this layer ({what} the layer's own: "
                f"{', '.join(checked)}); keep other arrays outside layer.params"
            )
        return checked

    def _weights(self, params, layer, suffix):
        """The parameters (``_check_params``'s) of one layer and direction in ``_param_kinds``
        order (None: no bias)."""
        name = f"l{layer}{suffix}"
        return tuple(params.get(f"{kind}_{name}") for kind in self._param_kinds)

    def _weights_as_computed(self, params, layer, suffix):
        """``_weights`` in the layer's dtype, whatever the parameters were rebound to: the
        computation's dtype, so that outputs, states and gradients all have it."""
        return tuple(None if w is None else np.asarray(w, self.dtype) for w in self._weights(params, layer, suffix))

    def _set_params(self, weights):
        """Copy {name: array} into ``params`` (same shapes; cast to the layer's dtype)."""
        for k, v in weights.items():
            v = _check_real(k, v)
            if v.shape != self.params[k].shape:
                raise ValueError(f"{k}: expected shape {self.params[k].shape}, got {v.shape}")
            self.params[k][...] = v

    # --- description ---------------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        """2 for a bidirectional layer, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def _config(self) -> dict:
        """The options (the file format's config, in its order, and repr's)."""
        return dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            **{k: getattr(self, k) for k in self._cell_options},
            bias=self.bias,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            time_major=self.time_major,
            stateful=self.stateful,
            dtype=self.dtype.name,
        )

    def num_params(self) -> int:
        """The number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        c = self._config()
        sizes = f"{c.pop('input_size')}, {c.pop('hidden_size')}"
        options = ", ".join(f"{k}={v}" if k == "dtype" else f"{k}={v!r}" for k, v in c.items())
        lines = [f"{self._name}({sizes}, {options})"]
        for layer in range(self.num_layers):
            for suffix in self._suffixes:
                names = [f"{p}_l{layer}{suffix}" for p in self._param_kinds]
                lines.append("  " + "  ".join(f"{n} {self.params[n].shape}" for n in names if n in self.params))
        lines.append(f"  parameters: {self.num_params():,}")
        return "\n".join(lines)

    # --- modes and state -----------------------------------------------------------------

    def train(self, mode=True):
        """Training mode (dropout active); returns self."""
        self.training = _check_flag("mode", mode)  # (the argument's name in the error)
        return self

    def eval(self):
        """Inference mode (no dropout); returns self."""
        return self.train(False)

    def reset_state(self):
        """Forget the carried state: the next call of a stateful layer starts from zeros."""
        self.state = None

    def _state_parts(self):
        """The carried state as a tuple in ``_state_names`` order, or None. ``state`` itself is
        an array for a cell with one state part (RNN, GRU), a tuple (h, c) for the LSTM: the
        layer's own, or what the user put there, checked here (its batch size is the caller's
        to check). A step updates it in place, so each part must be a floating-point array: an
        integer one would have the new state truncated into it."""
        if self.state is None:
            return None
        names, L, H = self._state_names, self.num_layers * self.num_directions, self.hidden_size
        if len(names) == 1:
            parts = (self.state,)
        elif isinstance(self.state, (tuple, list)) and len(self.state) == len(names):
            parts = tuple(self.state)
        else:
            raise TypeError(
                f"state: expected a tuple ({', '.join(names)}) of arrays {self._state_shape_text()}, "
                f"got {type(self.state).__name__}"
            )
        for i, part in enumerate(parts):
            # (the messages formatted only for an error: this runs at every call of a stateful layer)
            _reject_masked(self._state_label(i), part)
            if not isinstance(part, np.ndarray) or part.dtype.kind != "f":
                got = f"dtype {part.dtype}" if isinstance(part, np.ndarray) else type(part).__name__
                expected = self._state_shape_text()
                raise TypeError(f"{self._state_label(i)}: expected a floating-point NumPy array {expected}, got {got}")
            if part.ndim != 3 or part.shape[0] != L or part.shape[2] != H:
                raise ValueError(f"{self._state_label(i)}: expected shape {self._state_shape_text()}, got {part.shape}")
        if len(parts) > 1 and any(part.shape != parts[0].shape for part in parts):
            raise ValueError(f"state: its parts differ in shape: {[part.shape for part in parts]}")
        return parts

    def _state_shape_text(self):
        return f"(num_layers*dirs, N, H) = ({self.num_layers * self.num_directions}, N, {self.hidden_size})"

    def _state_label(self, i):
        """How the errors name part i of the carried state."""
        return "state" if len(self._state_names) == 1 else f"state[{i}] ({self._state_names[i]})"

    def _set_state_parts(self, parts):
        self.state = parts[0] if len(parts) == 1 else tuple(parts)

    # --- argument checks -----------------------------------------------------------------

    def _check_lengths(self, lengths, N, T):
        if lengths is None:
            return None
        empty_sequence = isinstance(lengths, (list, tuple)) and len(lengths) == 0
        lengths = _check_real("lengths", lengths)
        if lengths.dtype.kind not in "iu" and not empty_sequence:  # (NumPy makes [] float64)
            raise TypeError(f"lengths: expected an integer array (N,), got dtype {lengths.dtype}")
        if lengths.shape != (N,):
            raise ValueError(f"lengths: expected shape (N,) = ({N},), got {lengths.shape}")
        if lengths.size and (lengths.min() < 0 or lengths.max() > T):
            raise ValueError(
                f"lengths: expected 0 <= lengths <= T = {T}, got values in [{lengths.min()}, {lengths.max()}]"
            )
        return lengths.astype(np.int64)

    def _step_input(self, x_t):
        """The checks of ``step``'s argument and layer: returns x_t (N, D) checked, the carried
        state's parts, made zeros when there is none yet, and the parameters checked."""
        if self.bidirectional:
            raise ValueError("step: a bidirectional layer needs the whole sequence; use layer(x)")
        if not self.stateful:
            raise ValueError(
                f"step: the layer must be stateful ({self._name}(..., stateful=True), or set layer.stateful = True)"
            )
        params = self._check_params()
        x_t = _check_real("x_t", x_t)
        if x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(f"x_t: expected shape (N, D) with D = input_size = {self.input_size}, got {x_t.shape}")
        N = x_t.shape[0]
        parts = self._state_parts()
        if parts is None:
            shape = (self.num_layers, N, self.hidden_size)
            self._set_state_parts(tuple(np.zeros(shape, self.dtype) for _ in self._state_names))
            parts = self._state_parts()
        elif parts[0].shape[1] != N:
            raise ValueError(
                f"x_t: the carried state is for batch size {parts[0].shape[1]}, got {N}; call reset_state() first"
            )
        if not all(p.flags.writeable for p in parts):
            raise ValueError(
                "state: step() updates the carried state in place, got a read-only array "
                "(set a writable one, or call reset_state())"
            )
        for name, w in params.items():  # (the exact test only where the bounds overlap)
            if any(np.may_share_memory(p, w) and np.shares_memory(p, w) for p in parts):
                raise ValueError(
                    f"state: step() updates the carried state in place, and it shares memory with the parameter "
                    f"{name!r} (set a state of its own, or call reset_state())"
                )
        if len(parts) == 2 and np.shares_memory(*parts):  # exact: small 3-D arrays
            # An LSTM's (h, c) set as one array (`state = (z, z)`): updated in place, each would
            # overwrite the other. As NumPy does for overlapping operands, c is copied (the
            # state then holds the copy; the user's array keeps h).
            parts = (parts[0], parts[1].copy())
            self._set_state_parts(parts)
        return x_t, parts, params

    # --- streaming: one step (RNN, LSTM and GRU) -------------------------------------------

    def step(self, x_t):
        """Advance a unidirectional stateful layer by one time step (streaming inference).

        x_t : (N, D). Returns the top layer's new h (N, H). The state is ``self.state``, the one
        ``__call__`` carries, updated in place (zeros when there is none yet). No dropout,
        nothing recorded for backward.

        With the compiled backend the whole stack advances in one call of a step kernel that
        reads the weights where they are (changes made to them in place are seen). Everything
        is checked at the first step; later steps check only x_t and that the layer still has
        the same state, parameter arrays and settings: anything else goes through the checks
        again (and ``x_t`` of another dtype or layout is converted there, at a cost). The other
        backends run the functional forward with T = 1 for each layer, which checks every
        argument at every step."""
        # The kept compiled stepper, while the settings it was built for hold: it returns None
        # (nothing done) when x_t needs converting or the state or parameter arrays are not the
        # ones it was built on. Inline rather than a method: a Python call is ~12 % of a small
        # step's time.
        fast = self._stepper
        if fast is not None:  # (dropped when a setting changes: _setting)
            try:  # (free in Python 3.11+ when nothing is raised)
                top = fast[1](x_t, self.params, self.state)
            except TypeError:  # `params` rebound to a non-dict: the checks below name it
                top = None
            if top is not None:
                return top
        x_t, parts, params = self._step_input(x_t)
        if x_t.shape[0] == 0:  # an empty batch: nothing to advance (the compiled stepper takes none)
            return np.zeros((0, self.hidden_size), self.dtype)
        if _backends.get_backend(self.backend).name == "cpp" and self._step_kernel_suits(x_t.shape[0]):
            return self._compiled_step(_c_array(x_t, self.dtype), parts, params)
        # The functional forward with T = 1, layer by layer (its GEMMs on the compiled backend).
        inp = np.asarray(x_t, dtype=self.dtype)[None]
        new_states = []
        for layer in range(self.num_layers):
            W = self._weights_as_computed(params, layer, "")  # as on the compiled path
            # The state too: one set by hand may be of another dtype (written back into it).
            state = tuple(np.asarray(p[layer], self.dtype) for p in parts)
            hs, new, _ = self._run(inp, W, state, keep=False)
            new_states.append(new)
            inp = hs
        # Written back once every layer has stepped: a Ctrl-C in a later layer's call leaves
        # the whole stack where it was (found by a review: 19 of 40 interrupted steps of a
        # 3-layer LSTM had advanced some layers only).
        _write_back([(p[layer], v) for layer, new in enumerate(new_states) for p, v in zip(parts, new)])
        return inp[0]  # a view of the top layer's hs, a fresh array of its own

    # --- the compiled streaming step (RNN, LSTM and GRU) ----------------------------------

    def _step_kernel_suits(self, n):
        """Whether a step of n samples runs on the step kernel rather than on the sequence
        kernels with T = 1. The step kernel sweeps a layer's weights once per one or two samples
        (no packing: N = 1 is what it is for), and a GEMM, which packs them once and reuses each
        block across all samples, overtakes it once they come from L3 at every sweep: from about
        N = 20-35 when a layer's weights exceed the cores' L2, at N = 32-100 for ~1 MB (measured,
        Sapphire Rapids VM, float32, D = 32, 2 threads, step kernel time over the T = 1 path:
        LSTM H = 512 (4.5 MB) N = 16 0.79x, N = 32 1.27x, N = 128 2.04x; H = 1024 N = 16 0.74x;
        twenty-second session, since short sequence calls split by columns (much faster at
        T = 1): vanilla H = 512 (1.1 MB) N = 32 1.08-1.09x, N = 48 1.22-1.29x, N = 64
        1.29-1.38x; LSTM H = 256 (1.2 MB) N = 32 0.88-0.93x, N = 64 1.06-1.11x, N = 96
        1.18-1.25x; GRU H = 256 (0.9 MB) N = 64 0.90-0.94x, N = 96 0.97-1.08x; vanilla H = 256
        (0.3 MB) N = 96 0.98x; on one thread the crossings come at about half those batches).
        Twenty-fifth session, the T = 1 path a copy lighter (both paths in one process,
        interleaved, µs): vanilla H = 128 (80 KB) N = 384 133 vs 123, N = 512 173 vs 130, H = 256
        N = 128 132 vs 133, H = 64 N = 512 84 vs 82; LSTM H = 64 (98 KB) N = 512 214 vs 247,
        H = 128 N = 256 328 vs 324; GRU H = 128 N = 256 250 vs 226: the vanilla cell's crossings
        at ~20-38 MB (a bound of 48 MB kept H = 128 N = 512 on the kernel, 1.33x the time),
        the gated cells' at ~50-85 MB.
        The bound does not depend on the thread count, so neither do the results' bits."""
        if n < STEP_KERNEL_MIN_BATCH:
            return True
        H, G, itemsize = self.hidden_size, self._gates, np.dtype(self.dtype).itemsize
        first = self.input_size + H  # the rows of [Wx; Wh] of layer 0, then of the layers above
        rows = max(first, 2 * H) if self.num_layers > 1 else first
        return n * rows * G * H * itemsize < STEP_KERNEL_MAX_BATCH_BYTES[G]

    def _step_settings(self):
        """What a compiled stepper is built for besides the arrays: backend and activation
        (the gated cells have none of their own: the stepper's is unused, RNN overrides)."""
        return (self.backend, "tanh")

    def _compiled_step(self, x, parts, params):
        """One step with the compiled backend's stepper (x checked, parts the carried state's
        arrays: (h,), or an LSTM's (h, c)). The stepper is kept (``self._stepper``) while the
        layer holds the same state and parameter objects and settings, when it can read them
        in place (the layer's dtype, C-contiguous, aligned, a writable state); otherwise this
        step runs on converted copies (the state written back), so the results are the same in
        every layout, and changes in place are still seen."""
        fast = self._stepper  # (built for the settings as they are: _setting drops it otherwise)
        if fast is not None and fast[0].current(self.params, self.state):
            return fast[1](x, self.params, self.state)
        self._stepper = None
        stepper, stepped, key = self._new_stepper(params, parts, self._step_settings(), self.params, self.state)
        step = stepper.step  # a new function object per read: kept
        top = _checked_step(step, x, self.params, key)
        if stepped is parts:
            self._stepper = (stepper, step)
        else:
            _write_back(list(zip(parts, stepped)))
        return top

    def _new_stepper(self, params, parts, settings, params_key, state_key):
        """A compiled stepper of the whole stack over ``params`` (checked) and the state parts
        (h,) or (h, c), which it updates in place, for ``settings`` (``_step_settings``):
        (stepper, the parts it steps, the state key its steps take). It reads the arrays in
        place, and steps ``parts`` themselves, where they are what the kernel reads (the
        layer's dtype, C-contiguous, aligned; a writable state), else copies of them all (the
        parts stepped are then the copies, and the first of them the key). Its steps take
        ``params_key`` and the key and check that they are still the objects it was built on."""
        weights = [self._weights(params, layer, "") for layer in range(self.num_layers)]
        arrays = [a for w in weights for a in w if a is not None] + list(parts)
        in_place = all(p.flags.writeable for p in parts) and all(
            type(a) is np.ndarray and a.dtype == self.dtype and a.flags.c_contiguous and _aligned(a) for a in arrays
        )
        if not in_place:
            weights = [tuple(None if a is None else _c_array(a, self.dtype) for a in w) for w in weights]
            parts = tuple(np.array(p, dtype=self.dtype, order="C") for p in parts)
            state_key = parts[0]
        stepper = _backends._core.Stepper(
            [w[0] for w in weights],
            [w[1] for w in weights],
            [w[2] for w in weights],
            parts[0],
            np.empty_like(parts[0]),
            settings[1],
            params_key,
            cell_state=parts[1] if len(parts) > 1 else None,
            state_key=state_key,
            bh=[w[3] for w in weights] if len(weights[0]) > 3 else None,  # a GRU's recurrent biases
        )
        return stepper, parts, state_key

    def _state_or_zeros(self, name, a, shape, meaning):
        """An optional (layers·dirs, N, H) argument as a native array of the layer's dtype."""
        if a is None:
            return np.zeros(shape, self.dtype)
        a = _check_real(name, a)
        if a.shape != shape:
            raise ValueError(f"{name}: expected {meaning} = {shape}, got {a.shape}")
        return np.array(a, dtype=self.dtype)

    def __getstate__(self):
        # The compiled stepper (step()) is a cache bound to this object's arrays, and cannot
        # be pickled: a copy or an unpickled layer builds its own at its first step.
        state = self.__dict__.copy()
        state["_stepper"] = state["_call_stepper"] = None
        return state

    def __setstate__(self, state):
        # Pickle and deepcopy rebuild the parameters in NumPy's own buffers, which start 16
        # bytes into a cache line: aligned again, as the constructor and load make them.
        # A new dict: copy.copy passes the original layer's own dict here, whose arrays (the
        # user's, which the original reads in place) must stay as they are.
        if "params" in state:
            state = dict(state)
            state["params"] = {
                k: aligned_copy(v) if type(v) is np.ndarray and v.ctypes.data % 64 else v
                for k, v in state["params"].items()
            }
        # The pickled record for backward is for the settings restored (an older layer's, set
        # through the properties here, would otherwise read as changed since the call), and
        # the parameters' shapes are worked out again for them.
        state = {k: v for k, v in state.items() if k != "_param_shapes_kept"}
        record = state.get("_cache")
        _restore_settings(self, state, _SETTINGS)
        self.__dict__["_cache"] = record

    # --- save / load (_npz) --------------------------------------------------------------

    def save(self, path):
        """Save config and weights to one .npz file (np.savez adds '.npz' if path has none).

        ``path``: a str, bytes, os.PathLike or a writable file object. The parameters are
        checked first: one missing or of another shape, or an entry of ``params`` that is not
        a parameter of the layer, is a ValueError. Not saved: the train/eval mode (a loaded
        layer is in training mode), a stateful layer's carried state, the gradients."""
        _npz.save(self, path)

    @classmethod
    def load(cls, path, *, backend=None):
        """A layer from a file written by ``save``.

        Before reading any weights it checks the zip directory, the config (keys, types,
        ranges) and, from each member's .npy header, that the members are exactly the
        config's parameters with their shapes and dtype; no pickle is ever loaded. Any file
        that is not such a layer (corrupt, truncated, foreign, inconsistent) raises a
        ValueError naming the file. Nothing is initialised randomly: the time is that of
        reading the file."""
        return _npz.load(cls, path, backend)
