"""Backend registry and thread settings.

A backend is the recurrence kernels with the contract of ``_reference`` (the vanilla cell)
and ``_reference_gated`` (LSTM, GRU):

    forward(xw, wh, h0, out, activation)                 # out may be the same array as xw
    backward(dh, h, wh, dh_last, da, dh0, activation)
    lstm_forward(xw, wh, h0, c0, hs, cs, gates)          # gates may be the same array as xw
    lstm_backward(dhs, gates, cs, c0, wh, dh_last, dc_last, da, dh0, dc0)
    gru_forward(xw, wh, bh, h0, hs, gates)
    gru_backward(dhs, hs, h0, gates, wh, dh_last, du, dv, dh0)

each with the keyword ``active`` (None, or (T,) int64 row counts that never grow: step t runs
rows [0, active[t]) of a batch sorted longest first; ``_reference.rows_per_step``),

and the two GEMM shapes the orchestration needs (NumPy's by default; the compiled backend
brings its own, faster than NumPy's bundled BLAS and on the kernels' own threads):

    rows_gemm(a, b, bias, out)            # out[s, n] = a[s, n] @ b (+ bias)
    reduce_gemm(a, b, out, accumulate)    # out (+)= Σ_{s,n} a[s, n]ᵀ b[s, n]

and the bias gradients' sums (NumPy's by default):

    column_sums(a, out)                   # out = Σ_{s,n} a[s, n], summed in float64

All (T, N, ·) arguments are time-major views (possibly non-contiguous, last axis contiguous);
h0, c0, dh_last, dc_last, bh and bias may be None. Validation and the order of calls are
shared, in ``_orchestration`` (which ``_api`` and ``_api_gated`` call).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import operator
import os
import pathlib
import threading
import warnings
from typing import Callable, NamedTuple

from . import _reference, _reference_gated
from ._orchestration import _check_flag

PREFERENCE = ("cpp", "numba", "numpy")


class Backend(NamedTuple):
    name: str
    forward: Callable
    backward: Callable
    lstm_forward: Callable
    lstm_backward: Callable
    gru_forward: Callable
    gru_backward: Callable
    rows_gemm: Callable = _reference.rows_gemm
    reduce_gemm: Callable = _reference.reduce_gemm
    column_sums: Callable = _reference.column_sums


def _with_threads(fn, threads: Callable[[], int]) -> Callable:
    """fn with the calling thread's thread count appended to its arguments at each call."""
    return lambda *args, **keywords: fn(*args, threads(), **keywords)


def _load_core():
    """Import the compiled extension: ``(module, None)``, or ``(None, why)`` with the ImportError's
    text when it cannot be imported, and a RuntimeWarning unless it was simply never built."""
    try:  # not "from . import _core": that turns "No module named ..." into a vague "cannot import name"
        _core = importlib.import_module(f"{__package__}._core")
    except ImportError as e:
        why = f"{type(e).__name__}: {e}"
        _check_numba_imports()  # numba is then the default: known to work, or not the default
        if not _never_built(e):
            warnings.warn(
                f"pyrnn_fast: the compiled backend 'cpp' could not be loaded, so the slower "
                f"{'numba' if _numba_error is None else 'numpy'} backend is used instead. "
                f"The import of pyrnn_fast._core failed with {why}",
                RuntimeWarning,
                stacklevel=2,
            )
        return None, why
    isa = os.environ.get("PYRNN_FAST_ISA", "").strip().lower()
    if isa:
        try:
            _core.set_isa(isa)
        except ValueError as e:
            raise ValueError(f"PYRNN_FAST_ISA={isa!r}: {e}") from None
    return _core, None


def _never_built(error: ImportError) -> bool:
    """True when ``_core`` is absent because nobody built it: an uninstalled source tree (e.g.
    ``PYTHONPATH=src``) with no compiled ``_core`` file in it. Anything else is a broken install:
    a ``_core`` file that fails to load (missing libgomp, wrong Python, undefined symbol), or a
    pip-installed package without the ``_core`` its wheel had (every wheel and pip install
    builds it; users never get the package without it)."""
    if not isinstance(error, ModuleNotFoundError) or error.name != f"{__package__}._core":
        return False  # _core itself, or a library it needs, was found but failed to load
    here = pathlib.Path(__file__).resolve().parent
    if any(p.suffix in (".so", ".pyd") for p in here.glob("_core.*")):
        return False  # built, but not for this interpreter (or not loadable)
    try:
        dist = importlib.metadata.distribution("pyrnn-fast")
        files = dist.files or []
    except importlib.metadata.PackageNotFoundError:
        return True
    # Installed by pip (its RECORD lists this very package directory) yet without _core.
    return not any(
        f.name == "__init__.py" and pathlib.Path(dist.locate_file(f)).resolve().parent == here  # type: ignore[arg-type]
        for f in files
    )


# Whether numba is installed is known without importing it (slow); whether it imports, at the
# first use of the backend: _numba_error then says why not, and backends() leaves it out.
_numba_error = None if importlib.util.find_spec("numba") is not None else "numba is not installed"
_KERNELS = ("forward", "backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward")


def _check_numba_imports():
    """Import numba now (slow, so only where the compiled backend is missing and numba would be
    the default): one that is installed but fails to import is then not the default."""
    global _numba_error
    if _numba_error is None:
        try:
            importlib.import_module("numba")
        except Exception as e:
            _numba_error = f"numba is installed but could not be imported: {type(e).__name__}: {e}"


# The numba kernels' loops (a row block of h times the weights, LLVM-vectorised) lose to
# NumPy's matmul once a step is a GEMM of some size (twenty-third session, Sapphire Rapids VM,
# float32, numba on 2 threads against NumPy's OpenBLAS on 1, forward: vanilla `typical`, 2^21
# multiply-adds a step, 15.7 ms against 7.5; LSTM 66.9 against 50.6; GRU 40.3 against 39.8;
# `large` vanilla 338 against 160, LSTM 1510 against 779; the gated cells' `stream` and `tiny`
# steps, 2^14-2^16, 1.1-2.4x faster in numba). So the numba backend runs a call whose steps
# have at least this many multiply-adds (N times Wh's size) on the NumPy reference kernels.
NUMBA_MAX_STEP_WORK = 1 << 20
_WEIGHTS_AT = {"forward": 1, "backward": 2, "lstm_forward": 1, "lstm_backward": 4, "gru_forward": 1, "gru_backward": 4}


def _reference_kernel(name: str) -> Callable:
    """The NumPy reference's kernel `name` (the numpy backend's)."""
    return getattr(_reference, name) if name in ("forward", "backward") else getattr(_reference_gated, f"{name}_kernel")


def _numba_kernel(kernel: Callable, module, name: str) -> Callable:
    """A numba kernel as _with_threads makes it, run inside ``module.parallel_guard()`` (the
    workqueue layer's lock), which then gives the calling thread back its own numba thread
    count (see _numba._parallel); a call of big steps on the reference (NUMBA_MAX_STEP_WORK)."""
    reference, weights_at = _reference_kernel(name), _WEIGHTS_AT[name]

    def run(*args, **keywords):
        if args[0].shape[1] * args[weights_at].size >= NUMBA_MAX_STEP_WORK:
            if keywords.get("active") is not None:  # checked as numba's loops check it
                module.rows_per_step(keywords["active"], *args[0].shape[:2])
            return reference(*args, **keywords)
        try:
            with module.parallel_guard():
                return kernel(*args, get_num_threads(), **keywords)
        finally:
            module.restore_threads()

    return run


def _unavailable(source: str, name: str) -> ValueError:
    why = f"pyrnn_fast._core could not be imported: {_core_error}" if name == "cpp" else _numba_error
    return ValueError(f"{source}: {name!r} is not available here ({why}); available: {backends()}")


_core, _core_error = _load_core()
_loaded: dict[str, Backend] = {}
_num_threads: int | None = None  # set_num_threads's value when there is no _core (for numba)
_thread_limit = threading.local()  # .n: calling_thread_limit's value when there is no _core (0: none)


def backends() -> list[str]:
    """Names of the available backends, best first (``cpp`` > ``numba`` > ``numpy``).

    ``cpp`` is missing only if the compiled extension ``pyrnn_fast._core`` could not be imported;
    the reason (the ImportError's text) is then in the error that ``backend="cpp"`` raises, and
    a RuntimeWarning says so at import unless the package is an uninstalled source tree that
    was never built."""
    available = {"cpp": _core is not None, "numba": _numba_error is None, "numpy": True}
    return [name for name in PREFERENCE if available[name]]


_BEST = backends()[0]  # what backend=None means without PYRNN_FAST_BACKEND (fixed at import)


def _backend_name(name: object, source: str = "backend", none_allowed: bool = True) -> str:
    """`name` (what `source` set) as the backends are keyed: stripped, lower case, one of
    PREFERENCE; else the TypeError or ValueError naming `source` (and saying that None would do,
    as it does for the argument, not for the environment variable)."""
    if not isinstance(name, str):
        raise TypeError(f"{source}: expected a str or None, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in PREFERENCE:
        or_none = " or None" if none_allowed else ""
        raise ValueError(f"{source}: expected one of {list(PREFERENCE)}{or_none}, got {name!r}")
    return key


def check_backend_name(name: str | None) -> str | None:
    """A layer's ``backend`` argument, checked when the layer is made: None or the name of a
    backend this package has (a typo fails there, not at the first call). Whether it is
    available is left to the call, which may run elsewhere (a Dask worker)."""
    if name is not None:
        _backend_name(name)
    return name


def get_backend(name: str | None) -> Backend:
    """The backend called `name`; None means ``$PYRNN_FAST_BACKEND`` or else the best available."""
    source, from_env = "backend", name is None  # what the user set, for the error messages
    if from_env:
        name = os.environ.get("PYRNN_FAST_BACKEND", "")
        if not name and _BEST in _loaded:  # the common case, in a fraction of a µs
            return _loaded[_BEST]
        source = f"PYRNN_FAST_BACKEND={name!r}"
        if not name.strip():
            name = _BEST
    name = _backend_name(name, source, none_allowed=not from_env)
    if name in _loaded:
        return _loaded[name]
    if name != "numba":
        return _load(name, source)
    # Loading numba takes ~1 s: a signal handler or finaliser that asks for it on the thread
    # doing so meets half-imported modules, whose ImportError had been kept as the reason the
    # backend is unavailable, for good (found by a review). That call is refused instead.
    if getattr(_loading, "numba", False):
        raise RuntimeError(
            f"{source}: the numba backend is being loaded by the code this call interrupted "
            "(a signal handler or finaliser); call it again once that load is done"
        )
    _loading.numba = True
    try:
        _check_numba_imports()  # installed, but it may not import (a numba too old for this NumPy)
        return _load(name, source)
    finally:
        _loading.numba = False


_loading = threading.local()  # .numba: this thread is loading the numba backend (get_backend)


def _load(name: str, source: str) -> Backend:
    """Make the available backend `name` (what get_backend has not made yet) and keep it."""
    global _numba_error  # set when numba, installed, fails to import
    if name not in backends():
        raise _unavailable(source, name)
    if name == "cpp":
        # The thread count is read in the calling thread at each call: OpenMP's setting is per
        # thread (see get_num_threads).
        threads = _core.get_num_threads
        kernels = (*_KERNELS, "rows_gemm", "reduce_gemm", "column_sums")
        backend = Backend("cpp", *(_with_threads(getattr(_core, k), threads) for k in kernels))
    elif name == "numba":
        try:
            from . import _numba, _numba_gated
        except Exception as e:  # numba imports, but our kernels do not (a warning made an error, say)
            _numba_error = f"the numba backend could not be loaded: {type(e).__name__}: {e}"
            raise _unavailable(source, name) from e
        modules = (_numba, _numba) + (_numba_gated,) * 4
        backend = Backend("numba", *(_numba_kernel(getattr(m, k), _numba, k) for m, k in zip(modules, _KERNELS)))
    else:
        backend = Backend("numpy", *(_reference_kernel(k) for k in _KERNELS))
    _loaded[name] = backend
    return backend


_INT_MAX = 2**31 - 1  # the kernels' thread count is a C int


def set_num_threads(n: int | None) -> None:
    """Set how many threads the compiled kernels may use, in every thread of the process.

    ``n`` is an int >= 1, or None for OpenMP's default (``OMP_NUM_THREADS``, else the number
    of CPUs the process may run on). This is OpenMP's own setting (``omp_set_num_threads``),
    so ``threadpoolctl`` reports it. It applies at once in the calling thread and at their next
    call in the others, except in a thread that has a setting of its own (inside
    ``threadpoolctl.threadpool_limits``, after ``torch.set_num_threads`` there): that one keeps
    its own until it is back to ours, so ``threadpool_limits`` limits in every thread.

    A call still uses a single thread when a step is too small to be worth splitting, and
    never more threads than the CPUs the process may run on minus those that calls running at
    the same time (from other Python threads) already use, nor more than can be created (out of
    memory for thread stacks: fewer threads and a one-time ``RuntimeWarning``). In a child made
    by ``fork`` the kernels run on one thread (libgomp's threads do not survive fork).
    """
    global _num_threads
    if n is None:
        n = _core.default_num_threads() if _core is not None else None
    elif isinstance(n, bool) or not hasattr(type(n), "__index__"):
        raise TypeError(f"n: expected an int >= 1 or None, got {type(n).__name__}")
    else:
        n = operator.index(n)
        if not 1 <= n <= _INT_MAX:
            raise ValueError(f"n: expected an int from 1 to {_INT_MAX}, got {n}")
    if _core is not None:
        _core.set_num_threads(n)
    else:
        _num_threads = n


def get_num_threads() -> int:
    """How many threads the compiled kernels may use in the calling thread (see ``set_num_threads``).

    OpenMP's setting as this thread sees it (what ``threadpoolctl`` reports), 1 in a forked child.
    A given call may use fewer (small work, CPUs busy with other calls, threads not creatable).
    """
    if _core is not None:
        return _core.get_num_threads()
    if _forked_without_core:
        return 1
    return getattr(_thread_limit, "n", 0) or _num_threads or _openmp_default()


@functools.cache  # read once, as OpenMP reads them at start-up
def _openmp_default() -> int:
    """What OpenMP's default would be, for the Numba backend where _core is missing (it read
    os.cpu_count(), ignoring OMP_NUM_THREADS and the CPUs the process may run on): the first
    entry of OMP_NUM_THREADS, else the CPUs this process may run on."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdecimal() and int(first) >= 1:
        return int(first)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


# Without _core, a forked child runs the Numba kernels on one thread too (_core's atfork
# handler does it otherwise): numba's OpenMP layer kills a child forked after a parallel call.
_forked_without_core = False


def _mark_forked() -> None:
    global _forked_without_core
    _forked_without_core = True


if _core is None and hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked)


def _limit_without_core(n: int) -> int:
    """``_core.limit_calling_thread`` for the Numba backend alone: n >= 1 limits, 0 lifts;
    returns the previous limit (0: none)."""
    previous = getattr(_thread_limit, "n", 0)
    _thread_limit.n = n
    return previous


@contextlib.contextmanager
def calling_thread_limit(n: int):
    """Inside the block the kernels called from this OS thread use at most `n` threads (>= 1),
    whatever ``set_num_threads`` says meanwhile elsewhere; other threads are not affected. The
    thread's OpenMP setting is restored on exit (nested blocks restore the outer limit)."""
    limit = _core.limit_calling_thread if _core is not None else _limit_without_core
    previous = limit(n)
    try:
        yield
    finally:
        limit(previous)


def set_flush_subnormals(enabled: bool) -> None:
    """Turn on or off the compiled backend's flushing of subnormal numbers, process-wide.

    On (the default on x86-64), the ``cpp`` kernels read a subnormal operand (a magnitude below
    the smallest normal number: 1.2e-38 in float32, 2.2e-308 in float64) as zero and write zero
    where a result would be subnormal, as TensorFlow does on CPU: x86 spends ~100 cycles on each
    operation that meets one, and a backward pass whose gradients vanish over a long sequence
    meets them at every step (README, "Subnormal numbers": 2-11x the time). Off, the kernels
    compute in IEEE arithmetic (whatever mode the calling thread is in), as the ``numpy`` and
    ``numba`` backends always do. Each kernel reads the setting when it starts, and all its
    threads use it; a Python call may run several kernels, so change it between calls, not
    from another thread during one. The calling thread's own floating-point mode is untouched
    outside the kernels (and while Python's signal handlers run during them).
    Raises ValueError when asked to flush on a machine whose kernels cannot (not x86-64, or no
    compiled backend).
    """
    enabled = _check_flag("enabled", enabled)
    if _core is not None:
        _core.set_flush_subnormals(enabled)
    elif enabled:
        raise ValueError("enabled: flushing subnormals is done by the compiled backend, which is not available")


def get_flush_subnormals() -> bool:
    """Whether the compiled kernels flush subnormal numbers to zero (``set_flush_subnormals``);
    False without the compiled backend."""
    return _core.get_flush_subnormals() if _core is not None else False


def isa() -> str | None:
    """The instruction set the compiled kernels run with ('avx512', 'avx2', 'generic'), or None
    without the compiled backend. ``PYRNN_FAST_ISA`` forces one at import."""
    return _core.isa() if _core is not None else None
