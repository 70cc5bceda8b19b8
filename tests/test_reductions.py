"""float32 sums over all N·T rows (db, dWx, dWh) stay within a fixed number of roundings of
the exact sum however many rows there are (issue 9, finding 7).

Adding rows one after another in float32 does not: the sum stalls once it is 2^24 times
larger than a row (db of 2^25 rows of ones came out 2^24), and adding a GEMM's K blocks one
after another into float32 C gains an error of about eps per block. The tests at scale run
over 2^25 rows, on inputs with a nonzero mean: each implementation of each sum once
(the backends' reduce_gemm for dWx and dWh, and rnn_backward's db, which _api computes
the same way whatever the backend), since 2^25 rows through a whole backward pass take
seconds per backend.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import BACKEND_PARAMS, assert_close, backend_id, use_backend
from pyrnn_fast import _backends, _reference

U = 2.0**-24  # unit roundoff of float32

# Error bounds. A computed sum of terms in which each term goes through at most h roundings
# (the height of the summation tree, whatever its order) errs by at most
# gamma_h * Σ|terms|, gamma_h = h·u / (1 - h·u) (Higham, Accuracy and Stability of Numerical
# Algorithms, 2nd ed., §4.2). The inputs below are positive, so Σ|terms| is the exact sum.
# h for each way the library sums N·T rows in float32:
#   db: summed in float64 (error <= (N·T)·2^-53·Σ = 2^-28·Σ here, 0.004 u), then rounded to
#       float32 once: h = 2 covers both.
#   dWx, dWh on cpp: a micro-kernel lane adds kKC products (one rounding each, or two
#       without FMA: +1), float32 C adds kWideK / kKC such blocks, then C goes into a double
#       copy (negligible error) that is rounded to float32 once (+1). kKC is 512 in the
#       AVX-512 and portable builds: h = 512 + 1 + 128 + 1 = 642; 256 with AVX2: h = 514
#       (csrc/kernels/config.hpp, kKC and kWideK). The larger covers both.
#   dWx, dWh on numba and numpy: BLAS sums blocks of 4096 rows in float32 in its own order
#       (at most 4096 roundings per term: its product and up to 4095 additions), the blocks
#       are added in float64 and the total rounded to float32 once: h = 4097
#       (_reference.REDUCE_BLOCK_ROWS).
# For comparison, the best blocked float32 summation of K = 2^25 terms (blocks of sqrt(K))
# has h = 2·sqrt(K) = 11585; adding rows or blocks one after another has h ~ K or K/256.
HEIGHT_DB = 2
HEIGHT_GEMM = {"cpp": 642, "numba": 4097, "numpy": 4097}


def gamma(h: int) -> float:
    return h * U / (1 - h * U)


def _check(got: dict, exact: dict, bounds: dict) -> None:
    """Each got[what] within bounds[what] of exact[what], relative to it (all positive)."""
    errors = {}
    for what in bounds:
        assert got[what].dtype == np.float32, what
        errors[what] = float(np.max(np.abs(got[what].astype(np.float64) - exact[what]) / exact[what]))
    report = ", ".join(f"{w}: {e / U:.0f} u (bound {bounds[w] / U:.0f} u)" for w, e in errors.items())
    assert all(errors[w] <= bounds[w] for w in bounds), f"relative errors {report}"


# T·N = 33·2^20 rows, so that dWh (over the T-1 steps after the first) has 2^25 rows too.
# D = 1 and H = 2 keep the arrays small (x, hs, dA and dx: 0.8 GB together); H >= 2 because
# with H = 1 NumPy's row sum runs along a contiguous axis and sums pairwise anyway.
T, N, D, H = 33, 1 << 20, 1, 2


@pytest.fixture(scope="module")
def problem():
    """Time-major x (T, N, D) and hs (T, N, H), and the sums that rnn_backward makes of them,
    computed exactly: in float64, in which products of float32 values are exact.

    relu with Wh = 0 and hs > 0 makes dA_t = (dhs_t + dA_{t+1}·Whᵀ)·relu'(h_t) = dhs_t exactly
    on every backend; with dhs = hs (the gradient of ½·Σ hs²), db = Σ_rows hs,
    dWx = Σ_rows xᵀ·hs and dWh = Σ_{t>=1} hs_{t-1}ᵀ·hs_t. Half of each step's rows are one
    constant (a sum of equal terms rounds the same way at every addition: the worst case for
    adding rows or blocks one after another), half are random (a sum that drops or repeats a
    block of rows cannot pass)."""
    rng = np.random.default_rng(20260523)
    half = N // 2
    x = np.full((T, N, D), 0.1, np.float32)
    x[:, :half] = rng.random((T, half, D), dtype=np.float32)
    hs = np.full((T, N, H), 0.3, np.float32)
    hs[:, :half] = rng.random((T, half, H), dtype=np.float32) + np.float32(2**-10)  # > 0

    def exact(a, b):  # Σ over steps and rows of a_rowᵀ·b_row, in float64, one step at a time
        return sum(a[t].astype(np.float64).T @ b[t].astype(np.float64) for t in range(len(a)))

    expected = {
        "db": sum(np.ones(N) @ hs[t].astype(np.float64) for t in range(T)),
        "dWx": exact(x, hs),
        "dWh": exact(hs[:-1], hs[1:]),
    }
    return x, hs, expected


# dWx and dWh: each backend's reduce_gemm over 2^25 rows and more (the compiled one at the
# machine's own instruction set: the order of its sums is the same at every one).
@pytest.mark.parametrize("backend", prf.backends())
def test_reduce_gemm_over_2_25_rows(backend, problem):
    x, hs, expected = problem
    kernel = _backends.get_backend(backend)
    bound = gamma(HEIGHT_GEMM[backend])
    dWx = np.full((D, H), np.nan, np.float32)
    kernel.reduce_gemm(x, hs, dWx, False)
    dWh = np.full((H, H), np.nan, np.float32)
    kernel.reduce_gemm(hs[:-1], hs[1:], dWh, False)
    _check({"dWx": dWx, "dWh": dWh}, expected, {"dWx": bound, "dWh": bound})


# db, and the whole of rnn_backward at that scale (on the numpy backend, the quickest here at
# H = 2; db is the same code for every backend).
def test_rnn_backward_over_2_25_rows(problem):
    x, hs, expected = problem
    grads = prf.rnn_backward(
        hs,
        x,
        np.ones((D, H), np.float32),
        np.zeros((H, H), np.float32),
        hs,
        activation="relu",
        time_major=True,
        backend="numpy",
    )
    bounds = {"db": gamma(HEIGHT_DB), "dWx": gamma(HEIGHT_GEMM["numpy"]), "dWh": gamma(HEIGHT_GEMM["numpy"])}
    _check(grads._asdict(), expected, bounds)


def _f64(a):
    return a.astype(np.float64)


@functools.cache
def _long_problem(T, N):
    """Time-major float32 inputs with a nonzero mean, and the reference's float64 results."""
    rng = np.random.default_rng(7)
    D, H = 8, 40
    x = (rng.standard_normal((T, N, D)) * 0.1 + 0.05).astype(np.float32)
    Wx = (rng.standard_normal((D, H)) * 0.1).astype(np.float32)
    Wh = (rng.standard_normal((H, H)) * 0.1).astype(np.float32)
    b = rng.standard_normal(H).astype(np.float32)
    h0 = rng.standard_normal((N, H)).astype(np.float32)
    dhs = (rng.standard_normal((T, N, H)) + 0.5).astype(np.float32)
    ref_hs, _ = _reference.rnn_forward(_f64(x), _f64(Wx), _f64(Wh), _f64(b), _f64(h0))
    ref = _reference.rnn_backward(_f64(dhs), _f64(x), _f64(Wx), _f64(Wh), ref_hs, _f64(h0))
    return (x, Wx, Wh, b, h0, dhs), ref_hs, dict(zip(("dWx", "dWh", "db"), ref[1:4]))


# The C++ GEMM's path for K > kWideK = 2^16 (a double copy of C) and the NumPy reduce_gemm's
# blocks (within steps when N >= 4096 rows, whole steps otherwise), against the reference at
# the usual tolerance: several tiles split between two threads (blocks of C that do not
# start at 0), and dWh += h0ᵀ·dA_0 accumulating into C.
@pytest.mark.parametrize("backend", BACKEND_PARAMS, ids=backend_id)
@pytest.mark.parametrize("T, N, time_major", [(2, 70001, False), (40, 2000, True)])
def test_sums_over_more_than_2_16_rows_match_reference(backend, T, N, time_major):
    (x, Wx, Wh, b, h0, dhs), ref_hs, ref_grads = _long_problem(T, N)
    layout = (lambda a: a) if time_major else (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2)))
    with use_backend(backend) as name:
        hs, _ = prf.rnn_forward(layout(x), Wx, Wh, b, h0, time_major=time_major, backend=name)
        grads = prf.rnn_backward(layout(dhs), layout(x), Wx, Wh, hs, h0, time_major=time_major, backend=name)
    assert_close(hs, layout(ref_hs), np.float32, "hs")
    for what, ref in ref_grads.items():
        assert_close(getattr(grads, what), ref, np.float32, what)


# The rows GEMM x·Wx + b over D > 2^16 inputs: the bias is added once, not once per 2^16.
@pytest.mark.parametrize("backend", BACKEND_PARAMS, ids=backend_id)
def test_forward_over_more_than_2_16_inputs(backend):
    rng = np.random.default_rng(8)
    T, N, D, H = 2, 3, 70001, 40
    x = (rng.standard_normal((N, T, D)) + 0.5).astype(np.float32)
    Wx = (rng.standard_normal((D, H)) * 0.005).astype(np.float32)
    Wh = (rng.standard_normal((H, H)) * 0.1).astype(np.float32)
    b = rng.standard_normal(H).astype(np.float32)
    with use_backend(backend) as name:
        hs, _ = prf.rnn_forward(x, Wx, Wh, b, backend=name)
    ref_hs, _ = _reference.rnn_forward(_f64(x.transpose(1, 0, 2)), _f64(Wx), _f64(Wh), _f64(b))
    assert_close(hs, ref_hs.transpose(1, 0, 2), np.float32, "hs")
