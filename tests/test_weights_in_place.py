"""Products of a few rows read the weights where they are instead of packing them (the
recurrence forward with fewer than kMinRowsToPackWeights rows of h in all, the GEMM x·Wx with at
most one tile of rows: csrc/kernels/microkernel.hpp, InPlaceB). The same multiply-adds in the
same order as from packed panels: a sample alone (in place) and the same sample in a batch
(packed) must agree bit for bit, on every instruction set this machine has, and no read may
pass the end of the weights (a tile's last, partial vector)."""

from __future__ import annotations

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import assert_close, run_python, use_backend
from pyrnn_fast import _backends

pytestmark = pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")

ISAS = _backends._core.available_isas() if "cpp" in prf.backends() else []
BATCH_EXTRA = 15  # rows added around the sample(s): a batch of them packs the weights


def _cpp():
    return _backends.get_backend("cpp")


DEPTHS_AND_WIDTHS = ((0, 17), (2, 3), (7, 100), (33, 16), (600, 37))
SHAPES = [(dt, M, K, P) for dt in (np.float32, np.float64) for M in (1, 2, 3, 5, 8, 9) for K, P in DEPTHS_AND_WIDTHS]
SHAPES += [(np.float32, M, 1100, 8000) for M in (1, 9)]  # two threads: once per path and ISA


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype, M, K, P", SHAPES)
@pytest.mark.parametrize("wide", [False, True])
def test_rows_gemm_of_few_rows_equals_the_packed_product_bitwise(isa, dtype, M, K, P, wide):
    """K = 600: more than one block of depth (kKC); P = 8000 with K = 1100: enough work for two
    threads, each its own columns (in place from column j0 > 0); `wide`: W a slice of a wider
    array (its rows further apart than P)."""
    rng = np.random.default_rng(M * 1000 + K + P)
    W = rng.standard_normal((K, P + 5 if wide else P)).astype(dtype)[:, :P]
    b = rng.standard_normal(P).astype(dtype)
    batch = rng.standard_normal((M + BATCH_EXTRA, 1, K)).astype(dtype)
    rows = batch[:M].copy()
    with use_backend(("cpp", isa)):
        alone, packed = np.empty((M, 1, P), dtype), np.empty((M + BATCH_EXTRA, 1, P), dtype)
        _cpp().rows_gemm(rows, W, b, alone)
        _cpp().rows_gemm(batch, W, b, packed)
    np.testing.assert_array_equal(alone, packed[:M])
    expected = rows[:, 0].astype(np.float64) @ W.astype(np.float64) + b
    assert_close(alone[:, 0], expected.astype(dtype).astype(np.float64), dtype, "x·W + b")


FORWARDS = {  # each (hs, h_last, and the LSTM's c_last) of a time-major call (h0 = c0, bh = b)
    "rnn": lambda x, Wx, Wh, b, h0: tuple(prf.rnn_forward(x, Wx, Wh, b, h0, time_major=True)),
    "lstm": lambda x, Wx, Wh, b, h0: tuple(prf.lstm_forward(x, Wx, Wh, b, h0, h0, time_major=True))[:3],
    "gru": lambda x, Wx, Wh, b, h0: tuple(prf.gru_forward(x, Wx, Wh, b, b, h0, time_major=True))[:2],
}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cell", sorted(FORWARDS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [1, 5, 16, 33, 1030])
@pytest.mark.parametrize("T, N, with_h0", [(1, 1, True), (1, 2, True), (2, 1, True), (2, 1, False), (3, 1, False)])
def test_a_forward_of_few_rows_equals_the_same_rows_in_a_batch_bitwise(isa, cell, dtype, H, T, N, with_h0):
    """(T, N) of (1, 1), (1, 2), (2, 1) with h0, (2, 1) and (3, 1) without: 1 or 2 rows of h
    multiply the weights in place (none at the first step without h0); the batch of
    N + BATCH_EXTRA samples packs them. H = 1030: a step deeper than kStepKC, summed in blocks."""
    rng = np.random.default_rng(H * 10 + T * 3 + N)
    D, G = 6, GATES[cell]
    Wx = (rng.standard_normal((D, G * H)) / np.sqrt(D)).astype(dtype)
    Wh = (rng.standard_normal((H, G * H)) * 0.9 / np.sqrt(H)).astype(dtype)
    b = (rng.standard_normal(G * H) * 0.3).astype(dtype)
    x = rng.standard_normal((T, N + BATCH_EXTRA, D)).astype(dtype)
    h0 = (rng.standard_normal((N + BATCH_EXTRA, H)) * 0.5).astype(dtype) if with_h0 else None
    with use_backend(("cpp", isa)):
        alone = FORWARDS[cell](x[:, :N].copy(), Wx, Wh, b, None if h0 is None else h0[:N].copy())
        batch = FORWARDS[cell](x, Wx, Wh, b, h0)
    for part, (a, in_batch) in enumerate(zip(alone, batch)):
        np.testing.assert_array_equal(a, in_batch[:, :N] if part == 0 else in_batch[:N])
    with use_backend(("numpy", None)):
        reference = FORWARDS[cell](
            x[:, :N].astype(np.float64),
            Wx.astype(np.float64),
            Wh.astype(np.float64),
            b.astype(np.float64),
            None if h0 is None else h0[:N].astype(np.float64),
        )
    assert_close(alone[0], reference[0], dtype, f"{cell} hs")


@pytest.mark.parametrize("isa", ISAS)
def test_weights_read_in_place_are_not_read_past_their_end(isa, tmp_path):
    """Each array of weights ends where a page without access starts: a read past its last
    element (a whole vector loaded for a row's partial tail) kills the child process."""
    out = run_python(
        f"""
        import ctypes, mmap
        import numpy as np
        from pyrnn_fast import _backends
        _backends._core.set_isa({isa!r})
        cpp = _backends.get_backend("cpp")
        page = mmap.PAGESIZE
        libc = ctypes.CDLL(None, use_errno=True)

        def at_page_end(a):
            size = -(-a.nbytes // page) * page  # whole pages for a, then one without access
            region = mmap.mmap(-1, size + page)
            base = ctypes.addressof(ctypes.c_char.from_buffer(region))
            assert libc.mprotect(ctypes.c_void_p(base + size), page, 0) == 0  # PROT_NONE
            kept.append(region)
            view = np.frombuffer(region, a.dtype, a.size, size - a.nbytes).reshape(a.shape)
            view[...] = a
            return view

        kept = []
        rng = np.random.default_rng(0)
        checked = 0
        for dtype in (np.float32, np.float64):
            for H in (1, 5, 17, 20):
                D = 3
                for G, name in ((1, "forward"), (4, "lstm_forward"), (3, "gru_forward")):
                    wh = at_page_end((rng.standard_normal((H, G * H)) * 0.3).astype(dtype))
                    wx = at_page_end(rng.standard_normal((D, G * H)).astype(dtype))
                    xw = np.empty((1, 1, G * H), dtype)
                    cpp.rows_gemm(rng.standard_normal((1, 1, D)).astype(dtype), wx, None, xw)
                    h0 = rng.standard_normal((1, H)).astype(dtype)
                    hs = np.empty((1, 1, H), dtype)
                    if name == "forward":
                        cpp.forward(xw, wh, h0, hs, "tanh")
                    elif name == "lstm_forward":
                        gates, cs = np.empty((1, 1, 4 * H), dtype), np.empty((1, 1, H), dtype)
                        cpp.lstm_forward(xw, wh, h0, h0, hs, cs, gates)
                    else:
                        cpp.gru_forward(xw, wh, None, h0, hs, np.empty((1, 1, 4 * H), dtype))
                    assert np.isfinite(hs).all()
                    checked += 1
        print(checked)
        """,
        tmp_path,
    )
    assert out == ["24"]
