"""The compiled extension on its own: whatever it is handed, it raises instead of touching
memory it should not."""

import numpy as np
import pytest

from pyrnn_fast import _backends

core = _backends._core
pytestmark = pytest.mark.skipif(core is None, reason="compiled backend not built")

T, N, H = 3, 4, 5


def fwd_args(dtype=np.float64):
    return dict(
        xw=np.zeros((T, N, H), dtype),
        wh=np.zeros((H, H), dtype),
        h0=np.zeros((N, H), dtype),
        out=np.zeros((T, N, H), dtype),
        activation="tanh",
        threads=2,
    )


def bwd_args(dtype=np.float64):
    return dict(
        dh=np.zeros((T, N, H), dtype),
        h=np.zeros((T, N, H), dtype),
        wh=np.zeros((H, H), dtype),
        dh_last=None,
        da=np.zeros((T, N, H), dtype),
        dh0=np.zeros((N, H), dtype),
        activation="relu",
        threads=2,
    )


def test_good_calls_work():
    core.forward(**fwd_args())
    core.backward(**bwd_args(np.float32))


@pytest.mark.parametrize(
    "name,bad,exc,pattern",
    [
        ("wh", np.zeros((H, H + 1)), ValueError, r"_core.forward: wh \(Wh\): expected shape \(5, 5\), got \(5, 6\)"),
        ("wh", np.zeros((H, H), np.float32), TypeError, r"_core.forward: wh \(Wh\): expected a float64"),
        ("h0", np.zeros((N + 1, H)), ValueError, r"_core.forward: h0: expected shape \(4, 5\)"),
        ("h0", [[0.0] * H] * N, TypeError, "h0"),
        ("out", np.zeros((T + 1, N, H)), ValueError, r"_core.forward: out \(hs\): expected shape \(3, 4, 5\)"),
        (
            "out",
            np.zeros((T, N, 2 * H))[:, :, ::2],
            ValueError,
            r"_core.forward: out \(hs\): the last axis must be contiguous",
        ),
        (
            "out",
            np.zeros((T, N, H), ">f8"),
            TypeError,
            r"_core.forward: out \(hs\): expected a float64 array in native byte order",
        ),
        ("xw", np.zeros((T, N)), ValueError, r"_core.forward: xw \(x @ Wx \+ b\): expected a 3-D"),
        (
            "xw",
            np.zeros((T, N, H), np.int64),
            TypeError,
            r"_core.forward: xw \(x @ Wx \+ b\): expected float32 or float64",
        ),
        (
            "xw",
            np.zeros((T, N, H))[::-1],
            ValueError,
            r"_core.forward: xw \(x @ Wx \+ b\): strides must be non-negative",
        ),
        ("activation", "gelu", ValueError, "activation"),
    ],
)
def test_forward_rejects(name, bad, exc, pattern):
    args = fwd_args()
    args[name] = bad
    with pytest.raises(exc, match=pattern):
        core.forward(**args)


def test_read_only_and_misaligned_outputs_are_rejected():
    args = fwd_args()
    args["out"].setflags(write=False)
    with pytest.raises(ValueError, match=r"_core.forward: out \(hs\): output array is read-only"):
        core.forward(**args)
    buf = np.zeros(T * N * H * 8 + 1, np.uint8)
    args = fwd_args()
    args["out"] = buf[1:].view(np.float64).reshape(T, N, H)
    with pytest.raises(ValueError, match=r"_core.forward: out \(hs\): array data is not aligned"):
        core.forward(**args)


def test_lists_are_not_converted():
    args = fwd_args()
    args["out"] = args["out"].tolist()
    with pytest.raises(TypeError):
        core.forward(**args)


@pytest.mark.parametrize(
    "name,bad,pattern",
    [
        ("h", np.zeros((T, N + 1, H)), r"_core.backward: h \(hs\): expected shape \(3, 4, 5\)"),
        ("dh_last", np.zeros((N, H + 1)), r"_core.backward: dh_last: expected shape \(4, 5\)"),
        ("dh0", np.zeros((N, H), np.float32), "_core.backward: dh0: expected a float64"),
        ("da", np.zeros((T, N, H)).T, r"_core.backward: da \(pre-activation gradient\): expected shape"),
    ],
)
def test_backward_rejects(name, bad, pattern):
    args = bwd_args()
    args[name] = bad
    with pytest.raises((ValueError, TypeError), match=pattern):
        core.backward(**args)


def test_isa_controls():
    isas = core.available_isas()
    assert "generic" in isas and core.isa() in isas
    with pytest.raises(ValueError, match="isa"):
        core.set_isa("neon")
    previous = core.isa()
    try:
        for isa in isas:
            core.set_isa(isa)
            assert core.isa() == isa
    finally:
        core.set_isa(previous)


GUARD = 19  # columns of NaN beside an output, more than a vector's lanes in every build


@pytest.mark.parametrize("isa", core.available_isas() if core is not None else [])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [1, 5, 13, 37])
def test_recurrences_stay_in_their_columns(isa, dtype, H):
    """The vanilla recurrences on hidden sizes that end in a part of a vector, their outputs
    views into wider buffers of NaN: equal to a NumPy loop, and nothing written past column H."""
    rng = np.random.default_rng(H)
    T, N = 4, 11
    previous = core.isa()
    core.set_isa(isa)
    try:
        xw = rng.standard_normal((T, N, H)).astype(dtype)
        Wh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
        hs_buf = np.full((T, N, H + GUARD), np.nan, dtype)
        hs = hs_buf[..., :H]
        core.forward(xw, Wh, None, hs, "tanh", 2)
        h, expected = np.zeros((N, H)), []
        for t in range(T):
            h = np.tanh(xw[t] + h @ Wh)
            expected.append(h)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(hs, np.array(expected), rtol=tol, atol=tol)
        assert np.isnan(hs_buf[..., H:]).all(), "forward wrote past the hidden units"

        dhs = rng.standard_normal((T, N, H)).astype(dtype)
        da_buf = np.full((T, N, H + GUARD), np.nan, dtype)
        da, dh0 = da_buf[..., :H], np.empty((N, H), dtype)
        core.backward(dhs, hs, Wh, None, da, dh0, "tanh", 2)
        dh, expected = np.zeros((N, H)), [None] * T
        for t in reversed(range(T)):
            expected[t] = (dhs[t] + dh) * (1 - hs[t].astype(np.float64) ** 2)
            dh = expected[t] @ Wh.T
        np.testing.assert_allclose(da, np.array(expected), rtol=tol, atol=tol)
        np.testing.assert_allclose(dh0, dh, rtol=tol, atol=tol)
        assert np.isnan(da_buf[..., H:]).all(), "backward wrote past the hidden units"
    finally:
        core.set_isa(previous)


@pytest.mark.parametrize("isa", core.available_isas() if core is not None else [])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "M,K,P",
    [
        (1, 1, 1),
        (7, 3, 5),
        (500, 700, 37),
        (241, 257, 65),
        (300, 260, 300),
        (250, 21, 300),
        (3, 0, 4),
        (0, 5, 4),
        (4, 5, 0),
        (0, 0, 0),
    ],
)
def test_gemms_match_numpy(isa, dtype, M, K, P):
    """Both GEMM shapes against NumPy, on sizes that cross every block boundary (MR, NR, kc=256,
    mc=240), strided operands, bias, accumulation. P <= 8 panels reads A's rows in place, P = 300
    packs them (more than 8 panels in every build; K = 21: the AVX2 pack's transposition of 8
    floats or 4 doubles at a time, and what is left)."""
    rng = np.random.default_rng(M + K + P)
    previous = core.isa()
    core.set_isa(isa)
    try:
        a = rng.standard_normal((M, 2, K)).astype(dtype)  # rows (s, n) of a (S, N, K) view
        b_full = rng.standard_normal((P, K)).astype(dtype)
        b = b_full.T  # (K, P) with a column stride
        bias = rng.standard_normal(P).astype(dtype)
        # Outputs are views into wider buffers of NaN: the columns past P must stay untouched
        # (the last vector of a row is a masked store of its first lanes).
        out_buf = np.full((2, M, P + GUARD), np.nan, dtype)
        out = out_buf[:, :, :P].transpose(1, 0, 2)  # non-contiguous (S, N, P) view
        core.rows_gemm(a, b, bias, out, 2)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        expected = a.astype(np.float64) @ b.astype(np.float64) + bias
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * max(1, np.sqrt(K)))
        assert np.isnan(out_buf[:, :, P:]).all(), "rows_gemm wrote past the output's columns"

        c = rng.standard_normal((M, 2, P)).astype(dtype)
        acc_buf = np.full((K, P + GUARD), np.nan, dtype)
        acc = acc_buf[:, :P]
        acc[...] = rng.standard_normal((K, P))
        before = acc.astype(np.float64)
        core.reduce_gemm(a, c, acc, True, 2)
        expected = before + np.tensordot(a.astype(np.float64), c.astype(np.float64), axes=([0, 1], [0, 1]))
        np.testing.assert_allclose(acc, expected, rtol=tol, atol=tol * max(1, np.sqrt(2 * M)))
        core.reduce_gemm(a, c, acc, False, 1)
        np.testing.assert_allclose(acc, expected - before, rtol=tol, atol=tol * max(1, np.sqrt(2 * M)))
        assert np.isnan(acc_buf[:, P:]).all(), "reduce_gemm wrote past the output's columns"
    finally:
        core.set_isa(previous)


@pytest.mark.parametrize("isa", core.available_isas() if core is not None else [])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("S,N,P", [(3, 5, 37), (1, 1, 1), (40, 64, 300), (2, 3, 0), (0, 4, 5), (4, 0, 5)])
def test_column_sums_match_numpy(isa, dtype, S, N, P):
    """Sums over the rows of an (S, N, P) view, at widths that split between threads in whole
    cache lines and end in part of one, against NumPy's float64 sum; nothing written past P."""
    rng = np.random.default_rng(S + N + P)
    previous = core.isa()
    core.set_isa(isa)
    try:
        a = rng.standard_normal((N, S, P)).astype(dtype).transpose(1, 0, 2)  # a batch-major array, time-major view
        out_buf = np.full(P + GUARD, np.nan, dtype)
        for threads in (1, 2):
            out = out_buf[:P]
            core.column_sums(a, out, threads)
            expected = a.astype(np.float64).sum(axis=(0, 1))
            np.testing.assert_allclose(out, expected, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-12)
            assert np.isnan(out_buf[P:]).all(), "column_sums wrote past its output"
    finally:
        core.set_isa(previous)


def test_column_sums_add_in_double():
    """float32 rows summed in double: 1000 ones after 1e8 are kept (a float32 running sum stays at
    1e8: its spacing there is 8)."""
    a = np.ones((1001, 1, 3), np.float32)
    a[0] = 1e8
    out = np.empty(3, np.float32)
    core.column_sums(a, out, 2)
    np.testing.assert_array_equal(out, np.float32(1e8 + 1000))


@pytest.mark.parametrize(
    "args,pattern",
    [
        ((np.zeros((2, 3), np.float32), np.zeros(3, np.float32)), "3-D"),
        ((np.zeros((2, 3, 4), np.float32), np.zeros(5, np.float32)), r"out.*expected shape \(4,\)"),
        ((np.zeros((2, 3, 4), np.float32), np.zeros(4, np.float64)), "out.*float32"),
        ((np.zeros((2, 3, 4), np.float32), np.zeros(8, np.float32)[::2]), "contiguous"),
        ((np.zeros((2, 3, 4), np.float32)[..., ::2], np.zeros(2, np.float32)), "contiguous"),
        ((np.zeros((2, 3, 4), np.int32), np.zeros(4, np.int32)), "float"),
    ],
)
def test_column_sums_rejects(args, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        core.column_sums(*args, 1)
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        core.column_sums(np.zeros((2, 3, 4), np.float32), ro, 1)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (
            lambda: core.rows_gemm(np.zeros((2, 3, 4)), np.zeros((5, 6)), None, np.zeros((2, 3, 6)), 1),
            r"_core.rows_gemm: b \(the \(K, P\) weights\): expected shape \(4, 6\), got \(5, 6\)",
        ),
        (
            lambda: core.rows_gemm(np.zeros((2, 3, 4)), np.zeros((4, 6)), np.zeros(5), np.zeros((2, 3, 6)), 1),
            r"_core.rows_gemm: bias \(b\): expected shape \(6,\)",
        ),
        (
            lambda: core.rows_gemm(np.zeros((2, 3, 4)), np.zeros((4, 6)), None, np.zeros((2, 3, 7)), 1),
            r"_core.rows_gemm: out \(the \(S, N, P\) product\): expected shape \(2, 3, 6\)",
        ),
        (
            lambda: core.reduce_gemm(np.zeros((2, 3, 4)), np.zeros((2, 4, 6)), np.zeros((4, 6)), False, 1),
            r"_core.reduce_gemm: b \(the \(S, N, P\) right factor\): expected shape \(2, 3, 6\)",
        ),
        (
            lambda: core.reduce_gemm(np.zeros((2, 3, 4)), np.zeros((2, 3, 6)), np.zeros((6, 4)), False, 1),
            r"_core.reduce_gemm: out \(the \(M, P\) sum\): expected shape \(4, 6\)",
        ),
        (
            lambda: core.reduce_gemm(np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 6)), np.zeros((4, 6)), False, 1),
            r"_core.reduce_gemm: b \(the \(S, N, P\) right factor\): expected a float32",
        ),
    ],
)
def test_gemm_rejects(call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()
