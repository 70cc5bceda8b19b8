"""Argument checks shared by the layers (RNN, LSTM, GRU, TimeRNN, TimeLSTM) and ``dask``."""

from __future__ import annotations

import numbers
import operator

import numpy as np

from .._orchestration import _reject_masked


def _checked_property(name, check, doc, on_change=None):
    """An attribute users may set after construction, checked as the constructor checks it
    (``check(name, value)`` returns the value kept, in the slot ``_<name>``): a bad value is that
    error at once, not another one (or none: a string "False" read as true) at the next call.
    ``on_change(self)`` runs after each change (the layers drop their compiled stepper)."""
    slot = "_" + name

    def set_checked(self, value):
        value = check(name, value)
        unset = object()
        old = getattr(self, slot, unset)
        setattr(self, slot, value)
        # (only for a change: train() and eval() in a loop of steps kept rebuilding the stepper)
        if on_change is not None and (old is unset or type(old) is not type(value) or old != value):
            on_change(self)

    return property(operator.attrgetter(slot), set_checked, doc=doc)


def _restore_settings(obj, state, names):
    """``obj.__dict__.update(state)`` for ``__setstate__``, where a layer pickled before its
    settings among ``names`` were ``_checked_property``s kept them under their own names: those
    are set through the properties, so checked (such a layer could hold a `stateful` of "False")."""
    state = dict(state)
    old = {k: state.pop(k) for k in names if k in state}
    obj.__dict__.update(state)
    for k, v in old.items():
        setattr(obj, k, v)


def _check_real(name, a):
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    _reject_masked(name, a)
    try:
        a = np.asarray(a)
    except Exception as e:
        raise TypeError(f"{name}: cannot be converted to a numeric array ({e})") from None
    if a.dtype.kind not in "biuf":
        got = f"a {type(a[()]).__name__}" if a.dtype.kind == "O" and a.ndim == 0 else f"dtype {a.dtype}"
        raise TypeError(f"{name}: expected a real numeric array, got {got}")
    return a


def _check_float_param(name, a):
    """A textbook layer's parameter: a real array of a floating-point dtype (its gradient array
    is made in that dtype, where integer gradients would be silently truncated)."""
    a = _check_real(name, a)
    if a.dtype.type not in (np.float32, np.float64):  # either byte order (dtype == compares it)
        raise TypeError(
            f"{name}: expected a floating-point array, float32 or float64 (its gradient takes its dtype), "
            f"got dtype {a.dtype}"
        )
    return a


def _check_dtype(dtype):
    if dtype is None:  # np.dtype(None) is float64: not the layers' float32 default
        raise TypeError("dtype: expected float32 or float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _check_dropout(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"dropout: expected a probability in [0, 1], got {type(value).__name__}")
    if not 0 <= float(value) <= 1:
        raise ValueError(f"dropout: expected a probability in [0, 1], got {value!r}")
    return float(value)


def _check_int(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    return int(v)


def _check_xs(xs, Wx):
    """A textbook layer's (TimeRNN, TimeLSTM) weights are given: a wrong xs is named as such,
    not as a mismatched Wx (the functional API's view, which takes D from x)."""
    D = np.shape(Wx)[0] if np.ndim(Wx) else None  # a list of rows too (the functional call names a bad Wx)
    if xs.ndim != 3 or xs.shape[2] != D:
        raise ValueError(f"xs: expected shape (N, T, D) with D = Wx.shape[0] = {D}, got {xs.shape}")


def _check_set_state(name, a, xs, Wh):
    """A textbook layer's state as ``set_state`` set it (or None), checked at the forward that
    starts from it, where N is known, and named as set_state names it: the functional call
    would name it h0 (or c0)."""
    if a is None:
        return None
    a = _check_real(name, a)
    H = np.shape(Wh)[0] if np.ndim(Wh) else None
    if a.shape != (xs.shape[0], H):
        raise ValueError(
            f"{name}: the state set_state set: expected shape (N, H) = ({xs.shape[0]}, {H}) for this xs, got {a.shape}"
        )
    return a
