"""Shared test helpers, imported by the test modules as ``from helpers import ...`` (pytest puts
tests/ on sys.path). conftest.py keeps only pytest's hooks and fixtures.

Functional API: every backend (the compiled one once per instruction set this machine
supports), problem generation, and the comparison against the NumPy reference.
Layers: tolerances against torch and between runs of our own code, ``close``, random arrays.
Threads (test_threads.py, test_fork_and_stacks.py): ``run_python``, a fresh interpreter per test.
Scripts (bench/, examples/): ``load_script`` imports one by path, ``run_script`` runs it as a user
would."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import platform
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import pyrnn_fast as prf
from pyrnn_fast import _backends, _reference
from pyrnn_fast.benchmark import selfcheck

# One tolerance table and one comparison for the tests and the main job's self-check (their
# reasons are in pyrnn_fast/benchmark/selfcheck.py).
TOLERANCE = {np.dtype(name): tol for name, tol in selfcheck.TOLERANCE.items()}


def _backend_params():
    params = []
    if "cpp" in prf.backends():
        params += [("cpp", isa) for isa in _backends._core.available_isas()]
    params += [(name, None) for name in ("numba", "numpy") if name in prf.backends()]
    return params


BACKEND_PARAMS = _backend_params()
# The compiled backend once per instruction set this build has (their register blockings differ).
CPP_PARAMS = [p for p in BACKEND_PARAMS if p[0] == "cpp"]


# Whether the compiled kernels can flush subnormals here (x86-64; on by default there).
CAN_FLUSH = "cpp" in prf.backends() and platform.machine() in ("x86_64", "AMD64")


class num_threads:
    """Context manager: the kernels' process-wide thread count is `n` inside the block; the
    setting from before is back after it."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.before = prf.get_num_threads()
        prf.set_num_threads(self.n)

    def __exit__(self, *exc):
        prf.set_num_threads(self.before)


class flush_subnormals:
    """Context manager: the compiled kernels flush subnormals (True) or keep IEEE arithmetic
    (False) inside the block; the setting from before is back after it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.before = prf.get_flush_subnormals()
        if "cpp" in prf.backends():
            prf.set_flush_subnormals(self.enabled)

    def __exit__(self, *exc):
        if "cpp" in prf.backends():
            prf.set_flush_subnormals(self.before)


def backend_id(param) -> str:
    name, isa = param
    return name if isa is None else f"{name}-{isa}"


class use_backend:
    """Context manager selecting a backend (and for cpp an instruction set) for a test."""

    def __init__(self, param):
        self.name, self.isa = param

    def __enter__(self):
        if self.isa is not None:
            self.previous = _backends._core.isa()
            _backends._core.set_isa(self.isa)
        return self.name

    def __exit__(self, *exc):
        if self.isa is not None:
            _backends._core.set_isa(self.previous)


def make_problem(T, N, D, H, dtype=np.float64, *, bias=True, h0=True, dh_last=True, seed=0):
    """Random inputs, scaled so that neither activation saturates nor explodes: Wh has
    spectral radius about 0.9 and at most 0.9, pre-activations are O(1). (A Gaussian H x H
    matrix scaled by 0.9 / sqrt(H) has a spectral radius near 0.9 only for large H: at H = 1 it
    is |w|, up to ~3, and the recurrence then amplifies every rounding by up to |w| per step: at
    |w| = 1.94, float32 runs 1 ulp apart per step ended up to 8e-6 apart after 26 steps, beyond
    what a float32 tolerance can tell from a bug.)"""
    rng = np.random.default_rng(seed)
    p = {
        "x": rng.standard_normal((T, N, D)),
        "Wx": rng.standard_normal((D, H)) / np.sqrt(max(D, 1)),
        "Wh": rng.standard_normal((H, H)) * (0.9 / np.sqrt(max(H, 1))),
        "b": rng.standard_normal(H) * 0.3 if bias else None,
        "h0": rng.standard_normal((N, H)) * 0.5 if h0 else None,
        "dhs": rng.standard_normal((T, N, H)),
        "dh_last": rng.standard_normal((N, H)) if dh_last else None,
    }
    radius = float(np.max(np.abs(np.linalg.eigvals(p["Wh"])))) if H else 0.0
    if radius > 0.9:
        p["Wh"] *= 0.9 / radius
    return {k: None if v is None else v.astype(dtype) for k, v in p.items()}


def reference(p, activation):
    """The reference in float64 on exactly the same (possibly float32) input values."""
    f64 = {k: None if v is None else v.astype(np.float64) for k, v in p.items()}
    hs, h_last = _reference.rnn_forward(f64["x"], f64["Wx"], f64["Wh"], f64["b"], f64["h0"], activation)
    return f64, hs, h_last


def weight_term_magnitudes(x, h0, hs, du, dv):
    """{"dWx", "dWh", "db", "dbh"}: (Σ|term|, T·N) of each element of the weight and bias
    gradients, sums over every step and sample of the products of x_t, h_(t-1) (h0 first) or 1
    with du_t (the gradient of the input side of the pre-activations) or dv_t (of the recurrent
    side: the same array but for the GRU), all (T, N, ·) float64 from the reference."""
    T, N = du.shape[:2]
    h_prev = np.concatenate([h0[None], hs[:-1]])[:T]
    du, dv = np.abs(du), np.abs(dv)
    sums = {
        "dWx": np.einsum("tnd,tng->dg", np.abs(x), du),
        "dWh": np.einsum("tnh,tng->hg", np.abs(h_prev), dv),
        "db": du.sum(axis=(0, 1)),
        "dbh": dv.sum(axis=(0, 1)),
    }
    return {name: (m, T * N) for name, m in sums.items()}


def reduction_magnitudes(f64, hs, activation):
    """{name: (Σ|term|, terms)} for the gradients: each element's sum of the absolute values of
    the products it is a sum of, and how many there are. dWx, dWh, db: T·N products of x_t,
    h_(t-1) or 1 and da_t, the reference's gradient of the pre-activation (float64,
    ``weight_term_magnitudes``); dx: H products da_t·Wxᵀ; dh0: H products da_0·Whᵀ. A sum's
    rounding error scales with Σ|term|, which its result does not show where the terms cancel
    (a 1 x 1 dWh of 148 terms summing to 0.0523 from Σ|term| = 45.8; a dh0 of two terms at
    H = 2, 1.1e-3 off relative in float32 against a plain computation's 1.25e-4)."""
    x, Wx, Wh, dhs = f64["x"], f64["Wx"], f64["Wh"], f64["dhs"]
    T, N, _ = x.shape
    H = Wh.shape[0]
    h0 = np.zeros((N, H)) if f64["h0"] is None else f64["h0"]
    dh_next = np.zeros_like(h0) if f64["dh_last"] is None else f64["dh_last"]
    da = np.zeros((T, N, H))
    for t in reversed(range(T)):
        da[t] = (dhs[t] + dh_next) * _reference.activation_grad(hs[t], activation)
        dh_next = da[t] @ Wh.T
    out = weight_term_magnitudes(x, h0, hs, da, da)
    out["dx"] = (np.abs(da) @ np.abs(Wx).T, H)
    out["dh0"] = (np.abs(da[0]) @ np.abs(Wh).T if T else np.zeros((N, H)), H)
    return out


def assert_close(actual, expected, dtype, what="", plain=None, magnitude=None, terms=0, scale=0.0):
    """Within TOLERANCE of the float64 ``expected`` (relative to its largest value, or to
    ``scale`` if that is larger: h_last is hs's last step, and is judged at hs's scale). ``plain``,
    the same result computed by the plain NumPy reference in ``dtype``, is the yardstick where
    the problem itself is ill-conditioned in that precision (a sum that nearly cancels, a state
    decayed to 1e-11 or to subnormals: hypothesis finds such in ~1 % of its runs): then the
    error may be up to 4 times the plain computation's own, and never more than 1e-3: a real
    bug is off by that or more. ``magnitude`` (with ``terms``): for a sum of that many products,
    each element's Σ|term| (``reduction_magnitudes``); an element may then also be off by the
    bound of any float summation order, γ_n Σ|term| with γ_n = n u / (1 - n u), u the unit
    roundoff, n = terms + 4 (the product and the three roundings of each term's da). The plain
    sum is a single sample of that error and can be lucky: hypothesis found a cancelling dWh
    (Σ|term| / |sum| = 875) where it was 1.9e-7 relative, a sequential float32 sum 1.6e-5, a
    pairwise one 1.4e-5, ours 1.1e-5. A term lost or wrong is off by ~Σ|term| / terms, far
    beyond γ_n Σ|term| for these sizes (terms <= 800: 26x). And any element may be off by the
    dtype's least normal number (a result that small has no relative precision left)."""
    dtype = np.dtype(dtype)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return
    scale = max(float(np.max(np.abs(expected))), scale, np.finfo(np.float64).tiny)

    def relative_error(a):
        return float(np.max(np.abs(np.asarray(a, dtype).astype(np.float64) - expected))) / scale

    err = relative_error(actual)
    bound = TOLERANCE[dtype]
    if err > bound and plain is not None:
        bound = max(bound, min(1e-3, 4 * relative_error(plain)))
    if err > bound:
        # Below the dtype's least normal number nothing is relative: a state decaying past it
        # (h_t = tanh(w h_(t-1)), |w| = 7.5e-4: 1e-70 after 22 steps, 0 in float32) is right to
        # that absolute amount only.
        slack = np.finfo(dtype).tiny
        if magnitude is not None:
            n = (terms + 4) * np.finfo(dtype).eps / 2
            slack = slack + n / (1 - n) * magnitude
        if np.all(np.abs(actual.astype(np.float64) - expected) <= bound * scale + slack):
            return
    assert err <= bound, f"{what}: relative error {err:.2e} > {bound:.1e}"


def to_layout(a, time_major):
    """A time-major (T, N, ...) array in the requested layout."""
    return a if time_major or a is None else np.ascontiguousarray(a.transpose(1, 0, 2))


def check_against_reference(p, activation, backend, time_major=True, dtype=None):
    """Run forward and backward through the public API and compare every output with the
    reference. The backward pass of both gets the same hs (the reference's, in the input
    dtype), so that relu's derivative sees identical signs."""
    dtype = np.dtype(dtype or p["x"].dtype)
    f64, hs_ref, hl_ref = reference(p, activation)
    # The plain reference in the inputs' own dtype: the yardstick of what that precision allows.
    plain = {k: None if v is None else v.astype(dtype) for k, v in p.items()}
    hs_plain, hl_plain = _reference.rnn_forward(
        plain["x"], plain["Wx"], plain["Wh"], plain["b"], plain["h0"], activation
    )
    x = to_layout(p["x"], time_major)
    hs, h_last = prf.rnn_forward(
        x, p["Wx"], p["Wh"], p["b"], p["h0"], activation=activation, time_major=time_major, backend=backend
    )
    assert_close(hs, to_layout(hs_ref, time_major), dtype, "hs", to_layout(hs_plain, time_major))
    assert_close(h_last, hl_ref, dtype, "h_last", hl_plain, scale=float(np.max(np.abs(hs_ref), initial=0.0)))

    hs_in = hs_ref.astype(dtype)
    g_ref = _reference.rnn_backward(
        f64["dhs"], f64["x"], f64["Wx"], f64["Wh"], hs_in.astype(np.float64), f64["h0"], f64["dh_last"], activation
    )
    g_plain = _reference.rnn_backward(
        plain["dhs"], plain["x"], plain["Wx"], plain["Wh"], hs_in, plain["h0"], plain["dh_last"], activation
    )
    g = prf.rnn_backward(
        to_layout(p["dhs"], time_major),
        x,
        p["Wx"],
        p["Wh"],
        to_layout(hs_in, time_major),
        p["h0"],
        dh_last=p["dh_last"],
        activation=activation,
        time_major=time_major,
        backend=backend,
    )
    assert isinstance(g, prf.RNNGrads)
    expected = dict(zip(prf.RNNGrads._fields, g_ref))
    expected["dx"] = to_layout(expected["dx"], time_major)
    yardstick = dict(zip(prf.RNNGrads._fields, g_plain))
    yardstick["dx"] = to_layout(yardstick["dx"], time_major)
    magnitudes = reduction_magnitudes(f64, hs_in.astype(np.float64), activation)
    magnitudes["dx"] = (to_layout(magnitudes["dx"][0], time_major), magnitudes["dx"][1])
    for name in prf.RNNGrads._fields:
        assert_close(getattr(g, name), expected[name], dtype, name, yardstick[name], *magnitudes[name])


# --- layers -------------------------------------------------------------------------------------

# Tolerances, relative to the largest magnitude of the expected array:
# - float64 vs torch float64: both compute the same sums in different orders (torch's MKL/
#   own GEMMs vs ours) and their own tanh; rounding errors are ~1e-15 per operation and grow
#   by a small factor through 3 stacked layers and T steps of a contracting recurrence.
#   1e-10 leaves orders of magnitude of margin yet would catch any real bug (O(1e-3) or more).
# - float32 vs torch float32: the same argument with eps = 6e-8; each side is off by ~1e-6 on
#   these small sums, so 1e-5 is the bound (the one docs/DESIGN.md promises for float32).
# - Two runs of our own code that group the same samples differently (a batch with lengths vs
#   one sample alone): only GEMM blocking differs, so float64 agrees to 1e-12.
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
SELF_TOL = 1e-12


def close(actual, expected, tol, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) / scale
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def rng_arrays(seed, *shapes, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# The small problem of the layer tests against torch: T, N, D, H.
T_, N_, D_, H_ = 6, 5, 3, 4


# --- threads ------------------------------------------------------------------------------------

# A thread test that starts threads or forks runs in a fresh interpreter (a hang or a process
# exit then fails the test instead of CI), from a temporary folder so that it imports the
# installed package.
#
# T=20, N=32, D=64, H=256: 32*256*256 multiply-adds and 256 hidden units per step are far above
# the kernels' per-thread minimum (team_size in csrc/kernels/recurrence.hpp, its thresholds in
# csrc/kernels/config.hpp), so the recurrence runs on two threads when two CPUs are free.
PROLOGUE = textwrap.dedent("""
    import os, sys
    import numpy as np
    import pyrnn_fast as prf

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 32, 64)).astype(np.float32)
    Wx = (rng.standard_normal((64, 256)) / 8).astype(np.float32)
    Wh = (rng.standard_normal((256, 256)) * 0.9 / 16).astype(np.float32)

    def forward():
        return prf.rnn_forward(x, Wx, Wh, time_major=True, backend="cpp")[0]

    def os_threads():
        return len(os.listdir("/proc/self/task"))
""")

needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2 or not os.path.isdir("/proc/self/task"),
    reason="needs Linux and 2 CPUs: the kernels never start more threads than the CPUs they may run on",
)


def run_python(code, tmp_path, timeout=120, env=None):
    """Runs `code` after PROLOGUE in a fresh interpreter; returns its stdout lines. The
    interpreter gets its own process group, so that a hang kills its forked children too."""
    full_env = dict(os.environ, **(env or {}))
    for var, value in (env or {}).items():
        if value is None:
            del full_env[var]
    proc = subprocess.Popen(
        [sys.executable, "-c", PROLOGUE + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=full_env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the subprocess hung (killed after {timeout} s)")
    finally:
        try:  # children left behind by a failure (pool workers)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    return stdout.split()


def in_threads(work, count):
    """Run work(i) for i in range(count), each on a thread of its own, all at once: the
    exceptions they raised (an assertion failing in a thread does not fail a test by itself)."""
    errors = []

    def run(i):
        try:
            work(i)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def load_script(path: pathlib.Path):
    """The script at ``path`` (bench/ and examples/ are not packages) as a module of its own name."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(path: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """The script at ``path`` run with ``args`` in this interpreter, as a user runs it (output captured)."""
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=600)
