// The register-blocked micro-kernel and what feeds it: packed panels of B, the ways of
// reading A, and the sweep of one step's product over a thread's panels.
#pragma once
#include "simd.hpp"
#include <type_traits>
#include <utility>

namespace prf {
namespace PRF_ISA_NAMESPACE {

// Transposes L x L values held as L vectors of L lanes (L a power of two): at each level H (a
// one-bit mask: L/2, ..., 2, 1), rows i and i + H (i & H clear) exchange the lanes whose H bit
// differs from the row's, so that that bit of the row index and of the lane index trade places;
// after every level, element (i, c) is at (c, i). L log2(L) two-vector shuffles (AVX-512,
// float: 64 for 256 values). `__builtin_shuffle` with a constant index vector (GCC 4.7 on;
// the release wheels' GCC 10 has no `__builtin_shufflevector`, which came with GCC 12).
template <int H, class T, std::size_t... C>
static inline void exchange_lanes(Vec<T>& lo, Vec<T>& hi, std::index_sequence<C...>) {
    constexpr int L = int(sizeof...(C));
    const Vec<T> a = lo, b = hi;
    lo = __builtin_shuffle(a, b, Mask<T>{((C & H) ? L + int(C) - H : int(C))...});
    hi = __builtin_shuffle(a, b, Mask<T>{((C & H) ? L + int(C) : int(C) + H)...});
}
template <class T, int H = kLanes<T> / 2>
static inline void transpose_lanes(Vec<T> (&r)[kLanes<T>]) {
    if constexpr (H >= 1) {
        for (int i = 0; i < kLanes<T>; ++i)
            if (!(i & H)) exchange_lanes<H, T>(r[i], r[i + H], std::make_index_sequence<kLanes<T>>{});
        transpose_lanes<T, H / 2>(r);
    }
}

// Packing: panels [p0, p1) of the (K x ncols) operand B, each stored at dst + p*K*NR as K rows
// of NR values; columns past ncols are zero. B(k, j) = src[k*ld + j] (the forward's Wh, row-major).
template <class T>
static void pack_panels(T* dst, const T* src, idx ld, idx K, idx ncols, idx p0, idx p1) {
    constexpr int NR = kNR<T>;
    for (idx p = p0; p < p1; ++p) {
        T* d = dst + p * K * NR;
        idx j0 = p * NR, nj = imin(NR, ncols - j0);
        for (idx k = 0; k < K; ++k) {
            const T* s = src + k * ld + j0;
            idx j = 0;
            for (; j < nj; ++j) d[k * NR + j] = s[j];
            for (; j < NR; ++j) d[k * NR + j] = T(0);
        }
    }
}

// The same of B stored transposed, B(k, j) = src[j*ld + k] (the backward's Wh^T): in each panel,
// a vector of each of L rows of src at a time, transposed in registers (transpose_lanes) and
// stored as L rows of the panel; what no whole L x L tile covers (a panel's last columns when
// they are not a multiple of L, the last K % L rows) value by value. Value by value throughout
// (each k reading NR values ld apart), the panel's rows crowded a few L1 sets (all 32 in one
// where ld * sizeof(T) is a multiple of 4 KB, the LSTM's Wh^T at H = 256, float32; 16 in one at
// 2 KB) and their lines were lost before the next k read them: ~6 cycles a value, 0.44 ms of
// an LSTM backward at H = 256 (at T = 4, 40 % of the call). p1 <= ceil(ncols / NR).
template <class T>
static void pack_transposed_panels(T* dst, const T* src, idx ld, idx K, idx ncols, idx p0, idx p1) {
    constexpr int NR = kNR<T>, L = kLanes<T>;
    const idx kw = K / L * L;  // the depth of the whole tiles
    for (idx p = p0; p < p1; ++p) {
        T* d = dst + p * K * NR;
        const T* s = src + p * NR * ld;
        const idx nj = imin(NR, ncols - p * NR), whole = nj / L * L;  // the panel's columns; in whole tiles
        for (idx k0 = 0; k0 < kw; k0 += L)
            for (idx j0 = 0; j0 < whole; j0 += L) {
                Vec<T> r[L];
                for (int i = 0; i < L; ++i) r[i] = load(s + (j0 + i) * ld + k0);
                transpose_lanes<T>(r);
                for (int k = 0; k < L; ++k) store(d + (k0 + k) * NR + j0, r[k]);
            }
        for (idx k = 0; k < K; ++k)
            for (idx j = k < kw ? whole : 0; j < NR; ++j) d[k * NR + j] = j < nj ? s[j * ld + k] : T(0);
    }
}

// Epilogues finish an M x (NVT vectors) tile held in registers and store it once: the tile's
// last use before memory (the cells' epilogues are in cell_*.hpp, the GEMM's in gemm.hpp).
// `row0` and `col0` locate the tile; only `ncols` columns are valid (the rest is padding).
// Their loops over the tile's rows are unrolled (PRF_UNROLL_TILE_ROWS): with a row index
// known at compile time the accumulators stay in registers; a rolled loop indexes them, so
// GCC stored all of them to the stack after every tile and loaded them back. (Not the LSTM
// backward's, which is never inlined and is rolled: cell_lstm.hpp.) Measured on
// Sapphire Rapids (AVX-512), 2 threads, two builds in one process, alternating calls, median
// of the ratios: vanilla forward recurrence (T, N, H) = (100, 32, 256) 0.91-0.96x the time,
// (50, 128, 512) 0.96-0.98x, the LSTM `typical` recurrence 0.97-0.98x, `large` within 1-2 %.
// Runs f(io, v) for each vector v of one row of a tile (columns col0 .. col0 + ncols), io
// addressing those columns as in for_each_vector (simd.hpp): every epilogue's one formula for
// whole tiles (no test per vector) and for a tile that ends in part of a vector.
template <class T, int NVT, class F>
static inline void for_tile_vectors(Vec<T> (&acc)[NVT], idx col0, idx ncols, const F& f) {
    constexpr int W = kLanes<T>;
    if (ncols >= NVT * W) {
        for (int i = 0; i < NVT; ++i) f(WholeVector<T>{col0 + i * W}, acc[i]);
        return;
    }
    for (int i = 0; i < NVT && i * W < ncols; ++i) {
        const idx rem = ncols - i * W;
        if (rem >= W)
            f(WholeVector<T>{col0 + i * W}, acc[i]);
        else
            f(PartialVector<T>{col0 + i * W, int(rem)}, acc[i]);
    }
}

template <class T>
struct StoreEpilogue {  // out = acc
    T* out;
    idx out_ld;
    void prefetch(idx, int, idx) const {}
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        PRF_UNROLL_TILE_ROWS
        for (int r = 0; r < M && r < nrows; ++r) {
            T* o = out + (row0 + r) * out_ld;
            for_tile_vectors<T, NVT>(acc[r], col0, ncols, [&](const auto& io, Vec<T> v) { io.put(o, v); });
        }
    }
};

// ---------------------------------------------------------------------------------------
// Operand A of the micro-kernel, element (r, k) of the current tile.
template <class T>
struct StridedRowsA {  // rows of a matrix: a[r*lda + k]
    const T* a;
    idx lda;
    T operator()(int r, idx k) const { return a[r * lda + k]; }
};
template <class T>
struct RowPointersA {  // kMR rows anywhere in memory: a[r][k]
    const T* const* a;
    T operator()(int r, idx k) const { return a[r][k]; }
};
template <class T>
struct PackedA {  // a packed sliver: kMR values per k
    const T* a;
    T operator()(int r, idx k) const { return a[k * kMR + r]; }
};

// Operand B of the micro-kernel: vector v of the tile's panel p at depth k, from consecutive
// packed panels (pack_panels, pack_transposed_panels; gemm.hpp's pack_b) `panel_size` values apart.
template <class T>
struct PackedB {
    const T* b;
    idx panel_size;
    Vec<T> operator()(int p, idx k, int v) const { return load(b + p * panel_size + k * kNR<T> + v * kLanes<T>); }
};
// B's rows where they are (row k at b + k * ld, the tile's first column at b), for a product
// too shallow in rows of A to repay packing B (config.hpp, kMinRowsToPackWeights). Only the
// tile's first `ncols` columns are read unless `Whole` (all of them exist): lanes past them are
// zeros, as a packed panel's padding is, and their memory (past a row, or the array) is not
// touched. The same multiply-adds in the same order as from packed panels: the same bits.
template <class T, bool Whole>
struct InPlaceB {
    const T* b;
    idx ld, ncols;
    Vec<T> operator()(int p, idx k, int v) const {
        const idx j = p * kNR<T> + v * kLanes<T>;
        if (Whole || j + kLanes<T> <= ncols) return load(b + k * ld + j);
        if (j >= ncols) return Vec<T>{};
        return PartialVector<T>{j, int(ncols - j)}.get(b + k * ld);
    }
};

// Micro-kernel: M rows of A (K columns) times NP consecutive panels of B; the tile stays in
// registers until `epi` finishes and stores it.
// It starts from zeros, or from the partial sums at `init` (rows init_ld apart, the tile's
// columns at col0) when a product deeper than one block is summed block by block.
template <class T, int M, int NP, class A, class B, class Epi>
static inline void micro_tile(const A& a, idx K, const B& bop, idx row0, int nrows, idx col0, idx ncols, const Epi& epi,
                              const T* init = nullptr, idx init_ld = 0) {
    constexpr int W = kLanes<T>, NVT = NP * kNV;
    epi.prefetch(row0, nrows, col0);  // what the epilogue reads arrives while the tile computes
    Vec<T> acc[M][NVT];
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r)
#pragma GCC unroll 16
        for (int i = 0; i < NVT; ++i)
            acc[r][i] = init && r < nrows ? load(init + (row0 + r) * init_ld + col0 + i * W) : Vec<T>{};
#pragma GCC unroll 4
    for (idx k = 0; k < K; ++k) {
        Vec<T> b[NVT];
#pragma GCC unroll 16
        for (int p = 0; p < NP; ++p)
#pragma GCC unroll 16
            for (int v = 0; v < kNV; ++v) b[p * kNV + v] = bop(p, k, v);
#pragma GCC unroll 16
        for (int r = 0; r < M; ++r) {
            Vec<T> av = splat<T>(a(r, k));
#pragma GCC unroll 16
            for (int i = 0; i < NVT; ++i) acc[r][i] += av * b[i];
        }
    }
    epi.template operator()<M, NVT>(acc, row0, nrows, col0, ncols);
}

// One block of depth of a step's product over a thread's rows and panels: C[rows, panels) =
// epi(init + A . B) for rows [row0, row0 + nrows) where A has leading dimension lda (`a` at row
// 0 and the block's first column) and panel p's block of B is at packed + p * panel_size (or,
// in_place, its columns at packed + p * NR, rows weights_ld apart).
template <class T>
struct StepBlock {
    const T* a;
    idx lda, row0, nrows, K;
    const T* packed;  // B's panels packed, or (in_place) B itself, row k at packed + k * weights_ld
    idx panel_size, ncols;
    const T* init;  // partial sums of the blocks before (null: none), the thread's tile columns
    idx init_ld;
    const T* packed_a = nullptr;  // rows from row0 packed in slivers of kMR (pack_rows), or null: read in place
    idx sliver_stride = 0;        // between the slivers of packed_a
    bool in_place = false;
    idx weights_ld = 0;
    bool backwards = false;  // the panels (tiles, groups) from the last to the first: see step_product
};

// f(B operand) for NP panels of the step's B starting at panel p, for a tile of M rows:
// packed, or in place. Tiles of kMinRowsToPackWeights rows or more are not compiled for B in
// place (it would triple the micro-kernels' variants): the recurrence reads its weights in
// place only for fewer rows than that, or when it reads none (every product K = 0).
template <class T, int M, int NP, class F>
static inline void with_panels(const StepBlock<T>& s, idx p, const F& f) {
    constexpr int NR = kNR<T>;
    const idx left = s.ncols - p * NR;
    if constexpr (M < kMinRowsToPackWeights) {
        if (s.in_place) {
            if (left >= NP * NR)
                f(InPlaceB<T, true>{s.packed + p * NR, s.weights_ld, left});
            else
                f(InPlaceB<T, false>{s.packed + p * NR, s.weights_ld, left});
            return;
        }
    }
    f(PackedB<T>{s.in_place ? nullptr : s.packed + p * s.panel_size, s.panel_size});  // (null: never read)
}

// kMR whole rows, rows[r][0 .. kc), into one sliver d[k][r]: a transposition. The AVX2 build
// (kMR = 6, the only one that packs rows of A: config.hpp, kMinPackedRows and
// kMaxPanelsUnpackedA) transposes 8 (float) or 4 (double) columns at a time in registers and
// stores each k's 6 values with one store of a whole vector, whose last lanes the next k's
// store overwrites (a masked store is slow on Zen). Element by element it stored one value
// per cycle: 2.7 % of `large`'s forward recurrence on Zen 3 at 2 threads, where each thread
// packs the step's whole left factor (the reduction GEMM's pack of Xᵀ, a copy of contiguous
// values, is gemm.hpp's).
template <class T>
static inline void pack_sliver(T* d, const T* const* rows, idx kc) {
    idx k = 0;
#if defined(PRF_ISA_AVX2)
    static_assert(kMR == 6, "the AVX2 transposition below is written for 6 rows");
    if constexpr (sizeof(T) == 4) {
        // Columns k .. k+7 of the 6 rows (rows 6 and 7 of the 8 x 8 transposition left out: the
        // lanes they would fill are overwritten). All but the last k's store overrun into the
        // next k's place; the last one stores 4 + 2 values, so that nothing past d[kc - 1][5]
        // is written.
        for (; k + 8 <= kc; k += 8) {
            __m256 r[6];
            for (int i = 0; i < 6; ++i) r[i] = _mm256_loadu_ps(rows[i] + k);
            const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            // s[j] holds rows 0-3 of columns j (low half) and j + 4 (high half); u[j] rows 4-5.
            const __m256 s[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                                 _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
            const __m256 u[4] = {_mm256_shuffle_ps(t4, t4, 0x44), _mm256_shuffle_ps(t4, t4, 0xEE),
                                 _mm256_shuffle_ps(t5, t5, 0x44), _mm256_shuffle_ps(t5, t5, 0xEE)};
            float* o = d + k * 6;
            for (int j = 0; j < 4; ++j) _mm256_storeu_ps(o + j * 6, _mm256_permute2f128_ps(s[j], u[j], 0x20));
            for (int j = 0; j < 3; ++j) _mm256_storeu_ps(o + (j + 4) * 6, _mm256_permute2f128_ps(s[j], u[j], 0x31));
            const __m256 last = _mm256_permute2f128_ps(s[3], u[3], 0x31);
            _mm_storeu_ps(o + 42, _mm256_castps256_ps128(last));
            _mm_storel_pi(reinterpret_cast<__m64*>(o + 46), _mm256_extractf128_ps(last, 1));
        }
    } else {
        // Columns k .. k+3: rows 0-3 by a 4 x 4 transposition, rows 4-5 as pairs.
        for (; k + 4 <= kc; k += 4) {
            __m256d r[6];
            for (int i = 0; i < 6; ++i) r[i] = _mm256_loadu_pd(rows[i] + k);
            const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
            const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
            const __m256d t4 = _mm256_unpacklo_pd(r[4], r[5]), t5 = _mm256_unpackhi_pd(r[4], r[5]);
            const __m256d col[4] = {_mm256_permute2f128_pd(t0, t2, 0x20), _mm256_permute2f128_pd(t1, t3, 0x20),
                                    _mm256_permute2f128_pd(t0, t2, 0x31), _mm256_permute2f128_pd(t1, t3, 0x31)};
            const __m128d pair[4] = {_mm256_castpd256_pd128(t4), _mm256_castpd256_pd128(t5),
                                     _mm256_extractf128_pd(t4, 1), _mm256_extractf128_pd(t5, 1)};
            double* o = d + k * 6;
            for (int j = 0; j < 4; ++j) {
                _mm256_storeu_pd(o + j * 6, col[j]);
                _mm_storeu_pd(o + j * 6 + 4, pair[j]);
            }
        }
    }
#endif
    for (; k < kc; ++k)
        for (int r = 0; r < kMR; ++r) d[k * kMR + r] = rows[r][k];
}

// Rows [0, nrows) x columns [0, K) of A into slivers of kMR rows, dst[s][k][r] (zero padded):
// the micro-kernel then reads A from one contiguous stream instead of kMR rows H apart (4 KB
// apart at H = 1024: the same L1 set for all of them).
template <class T>
static void pack_rows(T* dst, const T* a, idx lda, idx nrows, idx K) {
    for (idx s = 0; s * kMR < nrows; ++s) {
        T* d = dst + s * K * kMR;
        if ((s + 1) * kMR <= nrows) {
            const T* rows[kMR];
            for (int r = 0; r < kMR; ++r) rows[r] = a + (s * kMR + r) * lda;
            pack_sliver<T>(d, rows, K);
            continue;
        }
        for (int r = 0; r < kMR; ++r) {
            const idx i = s * kMR + r;
            if (i < nrows)
                for (idx k = 0; k < K; ++k) d[k * kMR + r] = a[i * lda + k];
            else
                for (idx k = 0; k < K; ++k) d[k * kMR + r] = T(0);
        }
    }
}

// All tiles of M rows starting at row0 (rows of a matrix), for panels [p0, p1).
template <class T, int M, class Epi>
static void tiles_for_rows(const StepBlock<T>& s, idx p0, idx p1, idx row0, const Epi& epi) {
    constexpr int NR = kNR<T>, NP = step_panels_for_rows<M>();
    const StridedRowsA<T> arows{s.a + row0 * s.lda, s.lda};
    // A tile of W panels from panel p (W = NP, 2 or 1).
    auto tile = [&](auto width, idx p) {
        constexpr int W = decltype(width)::value;
        with_panels<T, M, W>(s, p, [&](const auto& b) {
            micro_tile<T, M, W>(arows, s.K, b, row0, M, p * NR, s.ncols - p * NR, epi, s.init, s.init_ld);
        });
    };
    // Tiles of NP panels in [p0, whole), then one of two where NP > 2 and two or three are left
    // (four accumulators rather than tiles of one, with two each: AVX2, float32, H = 32), then
    // tiles of one.
    const idx whole = p0 + (p1 - p0) / NP * NP, pair = NP > 2 && p1 - whole >= 2 ? whole + 2 : whole;
    // Tile t of `count` in that order, or backwards from the last; one call of each tile width
    // in the code (the epilogue's vtanh stays inlined: with the loops written out twice, GCC
    // called it, float64 H = 32 1.08x the time with AVX2).
    const idx wides = (whole - p0) / NP, pairs = pair > whole ? 1 : 0, count = wides + pairs + (p1 - pair);
    for (idx i = 0; i < count; ++i) {
        const idx t = nth(i, count, s.backwards);
        if (t < wides) {
            tile(std::integral_constant<int, NP>{}, p0 + t * NP);
        } else if (t < wides + pairs) {
            if constexpr (NP > 2) tile(std::integral_constant<int, 2>{}, whole);
        } else {
            tile(std::integral_constant<int, 1>{}, pair + (t - wides - pairs));
        }
    }
}

template <class T, class Epi, int M = 1>
static void remainder_rows(int m, const StepBlock<T>& s, idx p0, idx p1, idx row0, const Epi& epi) {
    if constexpr (M < kMR) {
        if (m == M)
            tiles_for_rows<T, M>(s, p0, p1, row0, epi);
        else
            remainder_rows<T, Epi, M + 1>(m, s, p0, p1, row0, epi);
    }
}

// All tiles of the packed sliver starting at row0 (rows past the range are padding).
template <class T, class Epi>
static void tiles_for_sliver(const StepBlock<T>& s, idx p0, idx p1, idx row0, const Epi& epi) {
    constexpr int NR = kNR<T>;
    const PackedA<T> sliver{s.packed_a + ((row0 - s.row0) / kMR) * s.sliver_stride};
    const int nrows = int(imin(kMR, s.row0 + s.nrows - row0));
    for (idx i = 0; i < p1 - p0; ++i) {  // (packed rows of A: at least kMinPackedRows, so B is packed)
        const idx p = p0 + nth(i, p1 - p0, s.backwards);
        micro_tile<T, kMR, 1>(sliver, s.K, PackedB<T>{s.packed + p * s.panel_size, s.panel_size}, row0, nrows, p * NR,
                              s.ncols - p * NR, epi, s.init, s.init_ld);
    }
}

// One block of a step's product over panels [p0, p1). Panel groups outer, rows inner.
template <class T, class Epi>
static void panel_gemm(const StepBlock<T>& s, idx p0, idx p1, const Epi& epi) {
    const idx full = s.row0 + s.nrows - s.nrows % kMR;
    // Whole slivers from the packed copy when there is one; the last rows (fewer than kMR)
    // from A in place with a tile of their own height, not a zero-padded sliver (at N = 32,
    // two rows padded to six cost an eighth of the product). (The divisions only where there
    // are whole slivers: a step of one row is a fifth of a µs.)
    if (full > s.row0) {
        const idx group = imax(1, kGroupBytes / idx(imax(s.K, 1) * kNR<T> * sizeof(T)));
        const idx groups = (p1 - p0 + group - 1) / group;
        for (idx i = 0; i < groups; ++i) {
            const idx pg = p0 + nth(i, groups, s.backwards) * group;
            for (idx r = s.row0; r < full; r += kMR) {
                if (s.packed_a)
                    tiles_for_sliver<T>(s, pg, imin(pg + group, p1), r, epi);
                else
                    tiles_for_rows<T, kMR>(s, pg, imin(pg + group, p1), r, epi);
            }
        }
    }
    if (full < s.row0 + s.nrows) remainder_rows<T>(int(s.row0 + s.nrows - full), s, p0, p1, full, epi);
}

template <class T>
struct PartialSumEpilogue {  // the tile's sums so far, whole vectors (the buffer is panel-padded)
    T* buf;
    idx ld;
    void prefetch(idx, int, idx) const {}
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx) const {
        PRF_UNROLL_TILE_ROWS
        for (int r = 0; r < M && r < nrows; ++r)
            for (int i = 0; i < NVT; ++i) store(buf + (row0 + r) * ld + col0 + i * kLanes<T>, acc[r][i]);
    }
};

// One step's product C[rows [row0, row0 + nrows), panels [p0, p1)) = epi(A . B), B packed over
// its full depth K (panel p at packed + p * K * NR) or, `in_place`, B itself at `packed` (row k
// at packed + k * weights_ld), `a_packed` (or null) those rows of A.
// `backwards`: the panels from the last to the first, each tile's sums in the same order (the
// same bits): a recurrence that alternates the direction from step to step (recurrence.hpp,
// kAlternateStepBytes: shares of weights within one depth block) starts each step on the
// panels the step before ended on, still in L1 (Zen 4, AVX-512, a 1 x 128 float32 step whose
// 64 KB of weights stream from L2: 0.46 µs a step against 0.57, bench/l1_reuse.cpp).
// Deeper than kStepKC (a gated cell's backward: 3H or 4H), it is summed in blocks of kStepKC,
// the sums between blocks in `partial` (all rows x partial_ld; the thread writes its rows and
// panel columns), so that what a tile reads of A stays bounded (kMR x kStepKC, config.hpp)
// while the panels stream: the whole rows (3H or 4H), read in place, came from L3 once per panel.
template <class T, class Epi>
static void step_product(const T* a, idx lda, const T* a_packed, idx row0, idx nrows, idx K, const T* packed,
                         bool in_place, idx weights_ld, idx ncols, idx p0, idx p1, T* partial, idx partial_ld,
                         bool backwards, const Epi& epi) {
    constexpr int NR = kNR<T>;
    StepBlock<T> s{a, lda, row0, nrows, K, packed, K * NR, ncols, nullptr, 0, a_packed, K * kMR, in_place, weights_ld};
    s.backwards = backwards;
    if (K <= kStepKC || !partial) {
        panel_gemm<T>(s, p0, p1, epi);
        return;
    }
    for (idx k0 = 0; k0 < K; k0 += kStepKC) {
        s.a = a + k0;
        s.K = imin(kStepKC, K - k0);
        s.packed = packed + k0 * (in_place ? weights_ld : NR);
        s.init = k0 ? partial : nullptr;
        s.init_ld = partial_ld;
        s.packed_a = a_packed ? a_packed + k0 * kMR : nullptr;
        if (k0 + s.K == K)
            panel_gemm<T>(s, p0, p1, epi);
        else
            panel_gemm<T>(s, p0, p1, PartialSumEpilogue<T>{partial, partial_ld});
    }
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
