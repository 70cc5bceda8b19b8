"""The forward and backward of a layer as a stack: layers one above the other, each with one
or two directions, dropout between layers, variable lengths (``_lengths``), whatever the
cell; short calls as steps of the streaming step's kernel (``_forward_by_steps``), which keep
their inputs for a backward to run their forward again on the sequence kernels (``_replayed``).
A cell's class provides two functional calls over one run, ``_run(x, W, state) ->
(hs, state_n, saved)`` and ``_grad_steps(dhs, x, W, hs, saved, state0, dstate_n) ->
(BackwardSteps, dstate0)``, the backward up to its weight gradients, which
``_weight_grads(steps) -> (dx, dW)`` computes (W and dW in ``_param_kinds`` order, states as
tuples in ``_state_names`` order); everything else is here, once for RNN, LSTM and GRU."""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import numpy as np

from .. import _backends
from .._orchestration import _check_flag, _copy, _empty, aligned_copy
from ._base import _checked_step
from ._checks import _check_real
from ._lengths import _by_length, _reverse, _sorted, _sorted_input, _unsorted


def _time_major_input(layer, x):
    """x checked, as our own time-major C-contiguous copy: cheap next to the recurrence, makes
    the kernels' views contiguous, and keeps backward right if the caller changes x afterwards."""
    x = _check_real("x", x)
    layout = "(T, N, D)" if layer.time_major else "(N, T, D)"
    if x.ndim != 3 or x.shape[2] != layer.input_size:
        raise ValueError(
            f"x: expected a 3-D array {layout} with D = input_size = {layer.input_size}, got shape {x.shape}"
        )
    return np.array(x if layer.time_major else x.transpose(1, 0, 2), dtype=layer.dtype, order="C")


def _initial_state(layer, given, N, carry=True):
    """The (layers·dirs, N, H) arrays the call starts from: `given` ({name: array or None},
    one per part of the state), else a stateful layer's carried state (when `carry`: the caller
    passed no state at all), else zeros."""
    shape = (layer.num_layers * layer.num_directions, N, layer.hidden_size)
    carried = layer._state_parts()
    if carry and all(v is None for v in given.values()) and layer.stateful and carried is not None:
        if carried[0].shape[1] != N:
            raise ValueError(
                f"x: a stateful layer carries a state for batch size {carried[0].shape[1]}, got batch "
                f"size {N}; call reset_state() first"
            )
        given = dict(zip(given, carried))
    return tuple(layer._state_or_zeros(name, a, shape, "shape (num_layers*dirs, N, H)") for name, a in given.items())


# A call of a unidirectional layer over one step of at most BY_STEPS_MAX_BATCH samples, or over
# at most BY_STEPS_MAX_ROWS sample-steps N·T, runs as T steps of step()'s kernel
# (_by_steps_suits), whose row chunks of [Wx; Wh] stay in each core's cache from call to call:
# 1.2-1.8x faster at N = 1; beyond, the sequence kernels can win (T = 1, H = 512: N = 16 0.98-1.08x
# the time, N = 24 1.2-1.3x; N = 1, T = 8, LSTM H = 512: 543 against 606 µs). docs/DESIGN.md,
# "Short calls as steps".
BY_STEPS_MAX_BATCH = 8
BY_STEPS_MAX_ROWS = 4


def _by_steps_suits(layer, T, N, lengths):
    """Whether a call over (T, N) runs as T steps of the step kernel."""
    return (
        0 < N
        and ((T == 1 and N <= BY_STEPS_MAX_BATCH) or 0 < T * N <= BY_STEPS_MAX_ROWS)
        and lengths is None
        and not layer.bidirectional
        and not (layer.training and layer.dropout > 0 and layer.num_layers > 1)  # no dropout mask between layers
        and _backends.get_backend(layer.backend).name == "cpp"
    )  # (N <= 8: below the batches step() itself leaves its kernel for, _step_kernel_suits)


class _CallStepper(NamedTuple):
    """A short call's compiled stepper (``_forward_by_steps``): the lock a call holds while it
    steps, the stepper, its step function, the state arrays it steps (its own) and the
    settings it was built for."""

    lock: Any
    stepper: Any
    step: Any
    parts: tuple
    settings: tuple


def _kept_call_stepper(layer, params, state0, settings):
    """The layer's kept stepper, its lock taken, where it serves this call: free (a call from
    another thread may hold it), built for these settings, this state's shape and dtype (a
    `layer.dtype = ...` from another thread can land between a call's build of a stepper and
    its keeping it, after the setting dropped the kept one) and current (the same parameter
    objects, in the same layouts). Else None."""
    kept = layer.__dict__.get("_call_stepper")
    if kept is None or not kept.lock.acquire(blocking=False):
        return None
    stepped = kept.parts[0]
    if (
        kept.settings == settings
        and stepped.shape == state0[0].shape
        and stepped.dtype == state0[0].dtype
        and kept.stepper.current(params, stepped)
    ):
        return kept
    kept.lock.release()
    return None


def _forward_by_steps(layer, x_tm, state0, params):
    """(top output time-major, final state parts) of a short call, as T steps of a compiled
    stepper from the initial state parts `state0` (checked, fresh arrays: they come back
    holding the final state) with the parameters `params` (checked): the same bits as T calls
    of ``step()``. The stepper steps state arrays of its own, and is kept for the next calls
    (``layer._call_stepper``) where it reads every array in place: building one is ~6-12 µs of
    a ~30 µs call (N = 1, H = 128). A call takes the kept one while it serves
    (``_kept_call_stepper``; a setting changed drops it) and no other call holds it: a call of
    the layer from another thread meanwhile builds its own, as every call did before."""
    T, N = x_tm.shape[:2]
    settings = layer._step_settings()
    kept = _kept_call_stepper(layer, params, state0, settings)
    if kept is None:
        own = tuple(aligned_copy(s) for s in state0)
        stepper, parts, _ = layer._new_stepper(params, own, settings, params, own[0])
        kept = _CallStepper(threading.Lock(), stepper, stepper.step, parts, settings)
        kept.lock.acquire()
        if parts is own:  # (else it reads converted copies of the weights: not kept, changes in place must be seen)
            layer._call_stepper = kept
    try:
        for p, s in zip(kept.parts, state0):
            p[...] = s
        hs = _empty((T, N, layer.hidden_size), layer.dtype)
        for t in range(T):
            hs[t] = _checked_step(kept.step, x_tm[t], params, kept.parts[0], during="call")
        for s, p in zip(state0, kept.parts):
            s[...] = p
    finally:
        kept.lock.release()
    return hs, state0


def _run_stack(layer, x_tm, state0, params, by, record, dropout=True, options=None):
    """The layers one above the other on the sequence kernels, over the time-major x_tm (the
    call's own copy) from the state parts state0 (not changed): (top output time-major, its
    samples in `by`'s order, final state parts, the record for backward or None). `by`: a
    batch of variable lengths sorted longest first (``_lengths._by_length``), or None.
    `dropout`: masks between layers in training mode; `options`: the cell's options as a call
    had them (None: the layer's now; ``_run``)."""
    T, N = x_tm.shape[:2]
    dirs, L = layer.num_directions, layer.num_layers
    active = None if by is None else by.active
    rev = None if by is None else by.rev
    state0 = tuple(_sorted(s, by) for s in state0)
    state_n = tuple(_empty(s.shape, s.dtype) for s in state0)
    cache = dict(by=by, layers=[], T=T, N=N)
    inp = _sorted_input(x_tm, by)
    for layer_idx in range(L):
        mask = None
        if dropout and layer_idx > 0 and layer.training and layer.dropout > 0:
            # Drawn in the caller's order of samples: a sample's mask does not depend on the sorting.
            keep = layer._dropout_rng.random(inp.shape) >= layer.dropout
            scale = 1.0 / (1.0 - layer.dropout) if layer.dropout < 1 else 0.0
            mask = _sorted((keep * scale).astype(layer.dtype), by)
            inp = inp * mask
        runs, outs = [], []
        for d, suffix in enumerate(layer._suffixes):
            W = layer._weights_as_computed(params, layer_idx, suffix)
            k = layer_idx * dirs + d
            x_run = inp if d == 0 else _reverse(inp, rev)
            start = tuple(s[k] for s in state0)
            hs, final, saved = layer._run(x_run, W, start, keep=record, options=options, active=active)
            for s, f in zip(state_n, final):
                s[k] = f
            if record:
                # W: the arrays this run read (references, no copy), so that backward
                # differentiates this forward even if params are rebound in between.
                runs.append(dict(x=x_run, hs=hs, saved=saved, start=start, W=W))
            outs.append(hs if d == 0 else _reverse(hs, rev))
        if record:
            cache["layers"].append(dict(runs=runs, mask=mask))
        inp = outs[0] if dirs == 1 else np.concatenate(outs, axis=-1)
    return inp, tuple(_unsorted(s, by) for s in state_n), cache if record else None


def stack_forward(layer, x, given_state, lengths, record=True, carry=True):
    """Run the layer: returns (out in the caller's layout, the final state parts). `record`:
    keep what backward needs in ``layer._cache`` (False: nothing, and the cells' forwards
    keep no workspace; a short call run by steps keeps its inputs instead, ``_replayed``);
    `carry`: start a stateful layer from its carried state when `given_state` is all None
    (False: zeros, an LSTM's ``state=(None, None)``). A stateful layer keeps a copy of the
    final state parts in ``layer.state``."""
    _check_flag("record", record)
    # The last call's record goes first: its arrays' buffers serve this call (_orchestration.
    # _empty) instead of a second set beside them, and a call that fails leaves no stale
    # record for backward.
    layer._cache = None
    params = layer._check_params()
    x_tm = _time_major_input(layer, x)
    T, N = x_tm.shape[:2]
    lengths = layer._check_lengths(lengths, N, T)
    state0 = _initial_state(layer, given_state, N, carry)
    if _by_steps_suits(layer, T, N, lengths):
        # The step kernel keeps nothing for backward: a recording call keeps its inputs, and
        # a backward runs this forward again on the sequence kernels first (_replayed), as
        # checkpointing does: ~the cost of a short forward, paid only where backward follows.
        replay = None
        if record:  # the cell's options too: the RNN's activation as this call had it
            options = {name: getattr(layer, name) for name in layer._cell_options}
            replay = (x_tm, tuple(_copy(s) for s in state0), params, options)
        top, state_n = _forward_by_steps(layer, x_tm, state0, params)
        cache = dict(replay=replay, T=T, N=N) if record else None
        by = None
    else:
        by = _by_length(lengths, T)
        top, state_n, cache = _run_stack(layer, x_tm, state0, params, by, record)
    if cache is not None:
        cache["time_major"] = layer.time_major  # the layout of this call's out and x
    layer._cache = cache
    if layer.stateful:
        layer._set_state_parts(tuple(_copy(s) for s in state_n))
    # Always a copy: backward reads the kept hs (top; run by steps, the record keeps x_tm), which
    # a caller changing out in place must not change. (np.ascontiguousarray returned a view
    # where N = 1 or T = 1, whose transpose is contiguous already: out[...] = 0 then changed the
    # gradients.)
    return _in_callers_layout(top, by, layer.time_major, copy=True), state_n


def _in_callers_layout(a_tm, by, time_major, copy):
    """The time-major a_tm (T, N, ·) in the caller's layout and order of samples, C-contiguous:
    a new array where `copy` or where it must move (un-sorted, transposed), else a_tm itself."""
    a = a_tm if time_major else a_tm.transpose(1, 0, 2)
    if by is not None and by.order is not None:
        return _unsorted(a, by, axis=1 if time_major else 0)
    return np.array(a, order="C") if copy else np.ascontiguousarray(a)


def _replayed(layer, cache):
    """The record of a short call run by steps (``cache["replay"]``: its time-major x, initial
    state parts, checked parameters and cell options), made by running that forward again on
    the sequence kernels, without dropout (the call had none), and kept in its place unless
    another call has replaced it meanwhile (another thread's)."""
    x_tm, state0, params, options = cache["replay"]
    record = _run_stack(layer, x_tm, state0, params, None, True, dropout=False, options=options)[2]
    record["time_major"] = cache["time_major"]
    if layer._cache is cache:
        layer._cache = record
    return record


def stack_backward(layer, dout, given_dstate):
    """Backpropagate through the last call: returns (dx, the gradients w.r.t. the initial state
    parts) and overwrites ``layer.grads`` in place; dout and dx have the layout of that call's
    x (its ``time_major``, whatever the layer's is now). `given_dstate`: {name: array or None},
    the gradients w.r.t. the final state parts. A RuntimeError without a recorded call."""
    cache = layer._cache
    if cache is None:
        raise RuntimeError("backward: call the layer (forward) first, with record=True (the default)")
    if "changed" in cache:  # (_base._geometry_setting)
        raise RuntimeError(
            f"backward: the layer's {cache['changed']} was changed after the call it would backpropagate "
            "through; call the layer again"
        )
    T, N = cache["T"], cache["N"]
    time_major = cache["time_major"]  # the layout of the call's out (and x), whatever the layer's now
    H, dirs, L = layer.hidden_size, layer.num_directions, layer.num_layers
    dout = _check_real("dout", dout)
    expected = (T, N, dirs * H) if time_major else (N, T, dirs * H)
    if dout.shape != expected:
        raise ValueError(f"dout: expected the shape of out = {expected}, got {dout.shape}")
    shape = (L * dirs, N, H)
    dstate_n = tuple(layer._state_or_zeros(name, a, shape, "the shape of h_n") for name, a in given_dstate.items())
    if "replay" in cache:  # a short call run by steps: its forward again, on the sequence kernels
        cache = _replayed(layer, cache)

    by = cache["by"]
    # Sorted in the caller's layout (a gather of whole samples, contiguous in either layout).
    d = _sorted(np.asarray(dout, dtype=layer.dtype), by, axis=1 if time_major else 0)
    d_tm = d if time_major else d.transpose(1, 0, 2)
    active = None if by is None else by.active
    rev = None if by is None else by.rev
    dstate_n = tuple(_sorted(s, by) for s in dstate_n)
    dstate0 = tuple(_empty(shape, layer.dtype) for _ in dstate_n)
    names = {name for name, _ in layer._param_shapes()}  # the gradients backward writes: the parameters'
    for layer_idx in reversed(range(L)):
        entry = cache["layers"][layer_idx]
        d_in = None
        for d, suffix in enumerate(layer._suffixes):
            run = entry["runs"][d]
            W = run["W"]
            k = layer_idx * dirs + d
            dhs = d_tm[..., d * H : (d + 1) * H]
            if d == 1:
                dhs = _reverse(dhs, rev)
            steps, d0 = layer._grad_steps(
                dhs, run["x"], W, run["hs"], run["saved"], run["start"], tuple(s[k] for s in dstate_n), active
            )
            dx, dW = layer._weight_grads(steps)
            for s, v in zip(dstate0, d0):
                s[k] = v
            if d == 1:
                dx = _reverse(dx, rev)
            d_in = dx if d_in is None else d_in + dx
            name = f"l{layer_idx}{suffix}"
            for kind, g in zip(layer._param_kinds, dW):
                key = f"{kind}_{name}"
                if key not in names:  # (a bias the layer does not have)
                    continue
                kept = layer.grads.get(key)
                if isinstance(kept, np.ndarray) and kept.shape == g.shape and kept.dtype == g.dtype:
                    kept[...] = g  # in place, as documented (a read-only one raises, as it did)
                else:  # none yet, or made for another geometry or dtype (a setting changed since)
                    layer.grads[key] = np.array(g)
        if entry["mask"] is not None:
            d_in = d_in * entry["mask"]
        assert d_in is not None  # every layer has at least one direction
        d_tm = d_in
    return _in_callers_layout(d_tm, by, time_major, copy=False), tuple(_unsorted(s, by) for s in dstate0)
