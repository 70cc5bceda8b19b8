// The big GEMMs of the orchestration (x.Wx, dA.Wx^T, the weight gradients), on the same
// micro-kernel as the recurrence.
#pragma once
#include "microkernel.hpp"
#include "team.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

// ---------------------------------------------------------------------------------------
// The big GEMMs of the orchestration, C (M x P) = sum_k A(i, k) B(k, j), with the same
// micro-kernel. GotoBLAS blocking: a kc-deep block of B (the thread's columns) is packed into
// panels, an mc x kc block of A into MR-row slivers (zero padded), and every MR x NR tile
// of C is accumulated in registers over kc before its epilogue. (At most one tile of rows: B
// read in place instead, few_rows_tiles.)
//
// Rows of sequences are addressed through SeqRows, so batch-major and time-major views
// need no copy: row m of a (steps, rows, cols) view is at(m / rows, m % rows).
template <class T>
struct SeqRows {
    T* base;
    idx rows, step_stride, row_stride;
    T* operator()(idx m) const {
        const idx t = m / rows;
        return base + t * step_stride + (m - t * rows) * row_stride;
    }
};

// Walks rows m, m+1, ... of a SeqRows with one division at the start.
template <class T>
struct RowCursor {
    const SeqRows<T>& s;
    idx t, n;
    // rows.rows is 0 only for an empty operand (K = 0), whose rows are never read.
    RowCursor(const SeqRows<T>& rows, idx m) : s(rows), t(rows.rows ? m / rows.rows : 0), n(m - t * rows.rows) {}
    T* get() const { return s.base + t * s.step_stride + n * s.row_stride; }
    void next() {
        if (++n == s.rows) n = 0, ++t;
    }
};

// The row kPackAhead rows ahead of a pack's current one (of rows [k0, k0 + kc)), prefetched to
// L2 as the pack moves on: a pack's operand is read from memory (config.hpp, kPackAhead).
template <class T>
struct RowsAhead {
    RowCursor<const T> row;
    idx left;  // rows still to prefetch
    RowsAhead(const SeqRows<const T>& rows, idx k0, idx kc) : row(rows, k0), left(kc - kPackAhead) {
        for (idx k = 0; k < kPackAhead && k < kc; ++k) row.next();
    }
    void fetch(idx col0, idx cols) {  // once per row packed: columns [col0, col0 + cols) of the row ahead
        if (left <= 0) return;
        const char* f = reinterpret_cast<const char*>(row.get() + col0);
        for (idx b = 0; b < cols * idx(sizeof(T)); b += 64) __builtin_prefetch(f + b, 0, 2);
        row.next();
        --left;
    }
};

// Pack A(i, k) for i in [i0, i0+mc), k in [k0, k0+kc) into slivers dst[s][k][r].
// A_ROWS: A(i, k) = arow(i)[k] (rows GEMM); otherwise A(i, k) = arow(k)[i] (reduction GEMM).
template <class T, bool A_ROWS>
static void pack_a(T* dst, const SeqRows<const T>& arow, idx M, idx i0, idx mc, idx k0, idx kc) {
    const idx slivers = (mc + kMR - 1) / kMR;
    if (kc == 0) return;
    if (A_ROWS) {
        RowCursor<const T> row(arow, i0);
        for (idx s = 0; s < slivers; ++s) {
            if (i0 + (s + 1) * kMR <= imin(i0 + mc, M)) {  // kMR rows: transposed in registers
                const T* rows[kMR];
                for (int r = 0; r < kMR; ++r, row.next()) rows[r] = row.get() + k0;
                pack_sliver<T>(dst + s * kc * kMR, rows, kc);
                continue;
            }
            for (int r = 0; r < kMR; ++r) {
                const idx i = i0 + s * kMR + r;
                T* d = dst + s * kc * kMR + r;
                if (i < i0 + mc && i < M) {
                    const T* src = row.get() + k0;
                    row.next();
                    for (idx k = 0; k < kc; ++k) d[k * kMR] = src[k];
                } else {
                    for (idx k = 0; k < kc; ++k) d[k * kMR] = T(0);
                }
            }
        }
    } else {
        RowCursor<const T> row(arow, k0);
        RowsAhead<T> ahead(arow, k0, kc);
        const idx full = mc / kMR;  // slivers with no padding: a fixed-length copy
        for (idx k = 0; k < kc; ++k, row.next()) {
            const T* src = row.get() + i0;
            ahead.fetch(i0, mc);
            // A copy of kMR contiguous values: whole-vector moves (element by element, GCC
            // moved one value at a time: 5 % of dWx on Zen 3, each thread packing all of Xᵀ).
            for (idx s = 0; s < full; ++s)
                __builtin_memcpy(dst + s * kc * kMR + k * kMR, src + s * kMR, kMR * sizeof(T));
            for (idx s = full; s < slivers; ++s) {
                T* d = dst + s * kc * kMR + k * kMR;
                for (int r = 0; r < kMR; ++r) {
                    const idx i = s * kMR + r;
                    d[r] = i < mc ? src[i] : T(0);
                }
            }
        }
    }
}

// Pack B(k, j) = brow(k)[j * sj] for k in [k0, k0+kc), j in [j0, j1) into panels of NR.
template <class T>
static void pack_b(T* dst, const SeqRows<const T>& brow, idx sj, idx k0, idx kc, idx j0, idx j1) {
    constexpr int NR = kNR<T>;
    const idx panels = (j1 - j0 + NR - 1) / NR;
    if (kc == 0) return;  // K = 0: B has no rows (and its strides mean nothing)
    if (sj != 1) {
        // A transposed matrix (B = W^T, one "step"): walk each column j, which is contiguous
        // or at least the shorter stride, instead of touching a new cache line per element.
        const T* base = brow(k0);
        const idx sk = brow.row_stride;
        for (idx p = 0; p < panels; ++p) {
            T* d = dst + p * kc * NR;
            const idx jb = j0 + p * NR, nj = imin(NR, j1 - jb);
            for (idx j = 0; j < NR; ++j) {
                if (j < nj) {
                    const T* src = base + (jb + j) * sj;
                    for (idx k = 0; k < kc; ++k) d[k * NR + j] = src[k * sk];
                } else {
                    for (idx k = 0; k < kc; ++k) d[k * NR + j] = T(0);
                }
            }
        }
        return;
    }
    RowCursor<const T> row(brow, k0);
    RowsAhead<T> ahead(brow, k0, kc);
    for (idx k = 0; k < kc; ++k, row.next()) {
        const T* src = row.get();
        ahead.fetch(j0, j1 - j0);
        // Whole panels as one memcpy of NR values (vector moves; element by element this pack
        // was 30 % of a small reduction GEMM's time on Zen 3: (8, 128) += (8 x 128)·(128 x 128)).
        const idx whole = (j1 - j0) / NR;
        for (idx p = 0; p < whole; ++p) __builtin_memcpy(dst + p * kc * NR + k * NR, src + j0 + p * NR, NR * sizeof(T));
        for (idx p = whole; p < panels; ++p) {
            T* d = dst + p * kc * NR + k * NR;
            const idx jb = j0 + p * NR, nj = imin(NR, j1 - jb);
            idx j = 0;
            for (; j < nj; ++j) d[j] = src[jb + j];
            for (; j < NR; ++j) d[j] = T(0);
        }
    }
}

template <class T>
struct GemmEpilogue {  // C = acc + bias (first k block), C += acc (later blocks)
    SeqRows<T> crow;
    const T* bias;  // indexed by column, may be null
    bool accumulate;
    void prefetch(idx row0, int nrows, idx col0) const {
        if (!accumulate) return;
        RowCursor<T> c(crow, row0);
        for (int r = 0; r < nrows; ++r, c.next()) __builtin_prefetch(c.get() + col0, 1);
    }
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        RowCursor<T> c(crow, row0);
        PRF_UNROLL_TILE_ROWS
        for (int r = 0; r < M && r < nrows; ++r, c.next()) {
            T* o = c.get();
            for_tile_vectors<T, NVT>(acc[r], col0, ncols, [&](const auto& io, Vec<T> v) {
                if (accumulate)
                    v += io.get(o);
                else if (bias)
                    v += io.get(bias);
                io.put(o, v);
            });
        }
    }
};

// wide += C over rows [i0, i1), columns [j0, j1) of C; at the end of K, C = wide instead.
template <class T>
static void add_block_to_wide(const SeqRows<T>& crow, idx i0, idx i1, idx j0, idx j1, double* wide, idx ld, bool last) {
    RowCursor<T> c(crow, i0);
    for (idx i = i0; i < i1; ++i, c.next()) {
        T* o = c.get() + j0;
        double* w = wide + (i - i0) * ld;
        for (idx j = 0; j < j1 - j0; ++j) {
            w[j] += double(o[j]);
            if (last) o[j] = T(w[j]);
        }
    }
}

// C's columns [j0, j1) for M <= kMR rows (`rows`: each row of A from the block's depth k0) over
// one block of depth kc, B read where it is (`b`: its row k0 at column j0, rows ldb apart): with
// one tile of rows, each value of B is used once either way, and packing it was a second pass
// over it (a layer call of a few steps of one sample: x_t·Wx), and a tile of kMR rows computed
// kMR - M rows for nothing. The same sums in the same order as packed: the same bits.
// Measured (Sapphire Rapids, 2 threads, float32, µs, packed -> in place, NumPy's BLAS beside):
// K = 128, P = 384, M = 1 20.6 -> 3.3 (NumPy 3.2); K = 512, P = 1536, M = 1 332 -> 115 (99),
// M = 2 329 -> 98 (292).
template <class T, int M>
static void few_rows_tiles(const T* const (&rows)[M], const T* b, idx ldb, idx kc, idx row0, idx j0, idx j1,
                           const GemmEpilogue<T>& epi) {
    constexpr int NR = kNR<T>, NP = panels_for_rows<M>();
    const RowPointersA<T> a{rows};
    const idx cols = j1 - j0;
    idx j = 0;
    for (; j + NP * NR <= cols; j += NP * NR)
        micro_tile<T, M, NP>(a, kc, InPlaceB<T, true>{b + j, ldb, cols - j}, row0, M, j0 + j, cols - j, epi);
    for (; j < cols; j += NR) {
        if (j + NR <= cols)
            micro_tile<T, M, 1>(a, kc, InPlaceB<T, true>{b + j, ldb, cols - j}, row0, M, j0 + j, cols - j, epi);
        else
            micro_tile<T, M, 1>(a, kc, InPlaceB<T, false>{b + j, ldb, cols - j}, row0, M, j0 + j, cols - j, epi);
    }
}

template <class T, int M = 1>
static void few_rows_block(const SeqRows<const T>& arow, const SeqRows<const T>& brow, idx ldb, int m, idx i0, idx k0,
                           idx kc, idx j0, idx j1, const GemmEpilogue<T>& epi) {
    if constexpr (M <= kMR) {
        if (m != M) return few_rows_block<T, M + 1>(arow, brow, ldb, m, i0, k0, kc, j0, j1, epi);
        const T* rows[M];
        RowCursor<const T> row(arow, i0);
        for (int r = 0; r < M; ++r, row.next()) rows[r] = row.get() + k0;
        few_rows_tiles<T, M>(rows, brow(k0) + j0, ldb, kc, i0, j0, j1, epi);
    }
}

// One thread's block of C: rows [i0, i1), columns [j0, j1). `poll` is thread 0's, else null.
// Every thread leaves at its next mc x kc block once the call is interrupted (C is then
// partly written).
template <class T, bool A_ROWS>
static bool gemm_block(const GemmArgs<T>& g, idx i0, idx i1, idx j0, idx j1, InterruptPoller& poll) {
    constexpr int NR = kNR<T>;
    if (i0 >= i1 || j0 >= j1) return true;
    const idx panels = (j1 - j0 + NR - 1) / NR;
    // At most one tile of rows, B a matrix with unit column stride: B in place (few_rows_tiles),
    // and no pack buffers (kept per thread for the process's life: 8 MB for P = 8000).
    const bool b_in_place = A_ROWS && i1 - i0 <= kMR && g.K > 0 && g.b_col_stride == 1 && g.b_rows >= g.K;
    T* bbuf = b_in_place ? nullptr : scratch<T, kGemmB>(panels * NR * kKC);
    T* abuf = b_in_place ? nullptr : scratch<T, kGemmA>(((kMC + kMR - 1) / kMR) * kMR * kKC);
    if (!b_in_place && (!bbuf || !abuf)) return false;
    const SeqRows<const T> arow{g.a, g.a_rows, g.a_step_stride, g.a_row_stride};
    const SeqRows<const T> brow{g.b, g.b_rows, g.b_step_stride, g.b_row_stride};
    const SeqRows<T> crow{g.c, g.c_rows, g.c_step_stride, g.c_row_stride};
    // Long float32 sums: the double copy of this thread's block of C (see kWideK).
    const bool wide = sizeof(T) < sizeof(double) && g.K > kWideK;
    const idx wide_ld = j1 - j0;
    double* cwide = wide ? scratch<double, kGemmWide>((i1 - i0) * wide_ld) : nullptr;
    if (wide && !cwide) return false;
    if (wide)
        for (idx i = 0; i < (i1 - i0) * wide_ld; ++i) cwide[i] = 0;
    // K = 0 still runs one (empty) block so that C is set to the bias or zeros.
    for (idx k0 = 0; k0 < g.K || k0 == 0; k0 += kKC) {
        const idx kc = imin(kKC, g.K - k0);
        // A new kWideK stretch restarts float32 C from its first block (what C held is in cwide).
        const bool restart = wide && k0 > 0 && k0 % kWideK == 0;
        const GemmEpilogue<T> epi{crow, restart ? nullptr : g.bias, !restart && (g.accumulate || k0 > 0)};
        if (b_in_place) {
            if (interrupted(g.interrupt) || poll((i1 - i0) * imax(kc, 1) * (j1 - j0))) return true;
            few_rows_block<T>(arow, brow, g.b_row_stride, int(i1 - i0), i0, k0, kc, j0, j1, epi);
        } else {
            pack_b<T>(bbuf, brow, g.b_col_stride, k0, kc, j0, j1);
            const idx group =
                imin(panels, imax(1, kGroupBytes / idx(imax(kc, 1) * NR * sizeof(T))));  // kc = 0 when K = 0
            for (idx ib = i0; ib < i1; ib += kMC) {
                const idx mc = imin(kMC, i1 - ib);
                if (interrupted(g.interrupt) || poll(mc * imax(kc, 1) * (j1 - j0))) return true;
                // Few panels reuse each packed value of A too little to repay packing it (the
                // stream and typical shapes' dx = dA·Wxᵀ spent more time packing A than computing):
                // rows of A are then read where they are (with AVX-512 always: kMaxPanelsUnpackedA).
                const bool pack = !A_ROWS || panels > kMaxPanelsUnpackedA;
                if (pack) pack_a<T, A_ROWS>(abuf, arow, g.M, ib, mc, k0, kc);
                // Panels inner, slivers outer, over an L2-sized group of panels: a sliver of A stays
                // in L1 while the group's panels stream from L2, and C is written along its rows
                // (the tile's contiguous direction) instead of down a column of 4 KB-strided rows.
                for (idx pg = 0; pg < panels; pg += group)
                    for (idx s = 0; s * kMR < mc; ++s) {
                        const int nrows = int(imin(kMR, mc - s * kMR));
                        const T* rows[kMR];
                        if (!pack) {
                            RowCursor<const T> row(arow, ib + s * kMR);
                            for (int r = 0; r < nrows; ++r, row.next()) rows[r] = row.get() + k0;
                            for (int r = nrows; r < kMR; ++r) rows[r] = rows[0];  // computed, never stored
                        }
                        for (idx p = pg; p < imin(pg + group, panels); ++p) {
                            const T* bp = bbuf + p * kc * NR;
                            const idx row0 = ib + s * kMR, col0 = j0 + p * NR, ncols = imin(NR, j1 - j0 - p * NR);
                            if (pack)
                                micro_tile<T, kMR, 1>(PackedA<T>{abuf + s * kc * kMR}, kc, PackedB<T>{bp, kc * NR},
                                                      row0, nrows, col0, ncols, epi);
                            else
                                micro_tile<T, kMR, 1>(RowPointersA<T>{rows}, kc, PackedB<T>{bp, kc * NR}, row0, nrows,
                                                      col0, ncols, epi);
                        }
                    }
            }
        }
        if (wide && ((k0 + kc) % kWideK == 0 || k0 + kc == g.K))
            add_block_to_wide(crow, i0, i1, j0, j1, cwide, wide_ld, k0 + kc == g.K);
        if (g.K == 0) break;
    }
    return true;
}

template <class T>
static bool gemm_kernel(const GemmArgs<T>& g) {
    if (g.M == 0 || g.P == 0) return true;
    constexpr int NR = kNR<T>;
    // Split the longer side of C between threads, in whole slivers or panels.
    const bool split_rows = g.M >= g.P;
    const idx units = split_rows ? (g.M + kMR - 1) / kMR : (g.P + NR - 1) / NR;
    idx nt = imin(idx(g.threads < 1 ? 1 : g.threads), units);
    nt = imin(nt, mul_sat(mul_sat(g.M, g.P), g.K ? g.K : 1) / kMinGemmWorkPerThread);
    if (nt < 1) nt = 1;
    int failed = 0;
    run_team(nt, [&](int team, int tid) {
        idx u0, u1;
        thread_range(units, team, tid, u0, u1);
        InterruptPoller poll(tid == 0 ? g.interrupt : nullptr);
        bool ok;
        if (split_rows)
            ok = g.a_is_rows ? gemm_block<T, true>(g, u0 * kMR, imin(u1 * kMR, g.M), 0, g.P, poll)
                             : gemm_block<T, false>(g, u0 * kMR, imin(u1 * kMR, g.M), 0, g.P, poll);
        else
            ok = g.a_is_rows ? gemm_block<T, true>(g, 0, g.M, u0 * NR, imin(u1 * NR, g.P), poll)
                             : gemm_block<T, false>(g, 0, g.M, u0 * NR, imin(u1 * NR, g.P), poll);
        if (!ok) __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
    });
    return !failed;
}

// The column sums (ColumnSumArgs): each thread sums its range of columns over all rows, one row
// after the other (contiguous reads, the sums in L1), into double sums in its scratch.
template <class T>
static bool column_sums_kernel(const ColumnSumArgs<T>& g) {
    const idx S = g.a.steps, N = g.a.rows, P = g.a.cols;
    constexpr idx unit = 64 / idx(sizeof(T));  // columns per share: whole cache lines of a row
    const idx units = (P + unit - 1) / unit;
    idx nt = imin(idx(g.threads < 1 ? 1 : g.threads), units);
    nt = imax(1, imin(nt, S * N * P / kMinSumsPerThread));
    int failed = 0;
    run_team(int(nt), [&](int team, int tid) {
        idx u0, u1;
        thread_range(units, team, tid, u0, u1);
        const idx j0 = u0 * unit, j1 = imin(u1 * unit, P), n = j1 - j0;
        if (n <= 0) return;
        double* sums = scratch<double, kColumnSums>(n);
        if (!sums) {
            __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
            return;
        }
        for (idx j = 0; j < n; ++j) sums[j] = 0;
        for (idx s = 0; s < S; ++s)
            for (idx r = 0; r < N; ++r) {
                const T* row = g.a.at(s, r) + j0;
                for (idx j = 0; j < n; ++j) sums[j] += double(row[j]);
            }
        for (idx j = 0; j < n; ++j) g.out[j0 + j] = T(sums[j]);
    });
    return !failed;
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
