"""Backend registry and thread settings.

A backend is two recurrence kernels with the contract of ``_reference``:

    forward(xw, wh, h0, out, activation)                 # out may be the same array as xw
    backward(dh, h, wh, dh_last, da, dh0, activation)

and the two GEMM shapes the orchestration needs (NumPy's by default; the compiled backend
brings its own, faster than NumPy's bundled BLAS and on the kernels' own threads):

    rows_gemm(a, b, bias, out)            # out[s, n] = a[s, n] @ b (+ bias)
    reduce_gemm(a, b, out, accumulate)    # out (+)= Σ_{s,n} a[s, n]ᵀ b[s, n]

All (T, N, ·) arguments are time-major views (possibly non-contiguous, last axis contiguous);
h0, dh_last and bias may be None. Validation and the order of calls are shared, in ``_api``.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable, NamedTuple

from . import _reference

PREFERENCE = ("cpp", "numba", "numpy")


class Backend(NamedTuple):
    name: str
    forward: Callable
    backward: Callable
    rows_gemm: Callable = _reference.rows_gemm
    reduce_gemm: Callable = _reference.reduce_gemm


def _load_core():
    try:
        from . import _core
    except ImportError:
        return None
    isa = os.environ.get("PYRNN_FAST_ISA", "").strip().lower()
    if isa:
        try:
            _core.set_isa(isa)
        except ValueError as e:
            raise ValueError(f"PYRNN_FAST_ISA={isa!r}: {e}") from None
    return _core


_core = _load_core()
_numba_installed = importlib.util.find_spec("numba") is not None
_loaded: dict[str, Backend] = {}
_num_threads = max(1, _core.max_threads() if _core is not None else (os.cpu_count() or 1))


def backends() -> list[str]:
    """Names of the available backends, best first (``cpp`` > ``numba`` > ``numpy``)."""
    available = {"cpp": _core is not None, "numba": _numba_installed, "numpy": True}
    return [name for name in PREFERENCE if available[name]]


def get_backend(name: str | None) -> Backend:
    """The backend called `name`; None means ``$PYRNN_FAST_BACKEND`` or else the best available."""
    source = "backend"  # what the user set, for the error messages
    if name is None:
        name = os.environ.get("PYRNN_FAST_BACKEND", "")
        source = f"PYRNN_FAST_BACKEND={name!r}"
        if not name.strip():
            name = backends()[0]
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a str or None, got {type(name).__name__}")
    name = name.strip().lower()
    if name in _loaded:
        return _loaded[name]
    if name not in PREFERENCE:
        raise ValueError(f"{source}: expected one of {list(PREFERENCE)}, got {name!r}")
    if name not in backends():
        why = "the compiled extension pyrnn_fast._core is missing" if name == "cpp" else "numba is not installed"
        raise ValueError(f"{source}: {name!r} is not available here ({why}); available: {backends()}")
    if name == "cpp":
        backend = Backend(
            "cpp",
            lambda xw, wh, h0, out, act: _core.forward(xw, wh, h0, out, act, _num_threads),
            lambda dh, h, wh, dh_last, da, dh0, act: _core.backward(dh, h, wh, dh_last, da, dh0, act, _num_threads),
            lambda a, b, bias, out: _core.rows_gemm(a, b, bias, out, _num_threads),
            lambda a, b, out, accumulate: _core.reduce_gemm(a, b, out, accumulate, _num_threads),
        )
    elif name == "numba":
        from . import _numba

        backend = Backend("numba", _numba.forward, _numba.backward)
    else:
        backend = Backend("numpy", _reference.forward, _reference.backward)
    _loaded[name] = backend
    return backend


def set_num_threads(n: int) -> None:
    """Set how many threads the compiled kernels may use (at least 1).

    The kernels still use a single thread when a step is too small to be worth splitting,
    and never more threads than the CPUs the process may run on minus those that other
    calls running at the same time (from other Python threads) already use. The default is
    OpenMP's (``OMP_NUM_THREADS``, else the number of cores).
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"n: expected an int >= 1, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n}")
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads the compiled kernels may use (see ``set_num_threads``)."""
    return _num_threads


def isa() -> str | None:
    """The instruction set the compiled kernels run with ('avx512', 'avx2', 'generic'), or None
    without the compiled backend. ``PYRNN_FAST_ISA`` forces one at import."""
    return _core.isa() if _core is not None else None
