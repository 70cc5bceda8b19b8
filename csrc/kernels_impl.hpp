// pyrnn_fast: the recurrence kernels, written once and compiled once per instruction set.
//
// The including translation unit defines PRF_ISA_NAMESPACE and one of PRF_ISA_AVX512 /
// PRF_ISA_AVX2 (or neither, for the portable build) and is compiled with matching -m flags.
// Everything here lives in that namespace, and nothing here instantiates a standard-library
// template: an inline function compiled with AVX flags must never be merged by the linker
// into the portable path, which runs on CPUs without AVX.
//
// Structure of one call (forward; backward is the same with Wh^T and another epilogue):
//   - one OpenMP parallel region for the whole sequence; thread i owns a contiguous range
//     of column panels of the output (hidden units);
//   - each thread packs its own panels of Wh once: panel p holds columns [p*NR, p*NR+NR)
//     as K rows of NR contiguous values, zero padded, so the micro-kernel streams them;
//   - per time step, register-blocked micro-kernels compute MR rows x NR columns of
//     h_{t-1} . Wh and finish the tile in registers (add xw_t, activation) before a single
//     store; one barrier per step, because step t reads every column of step t-1.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <sched.h>
#include <time.h>

#include "rnn.hpp"

#ifndef PRF_ISA_NAMESPACE
#error "define PRF_ISA_NAMESPACE before including kernels_impl.hpp"
#endif

namespace prf {
namespace PRF_ISA_NAMESPACE {

#if defined(PRF_ISA_AVX512)
constexpr int kVecBytes = 64;  // 32 zmm registers: 8 rows x 2 vectors = 16 accumulators
constexpr int kMR = 8;
#elif defined(PRF_ISA_AVX2)
constexpr int kVecBytes = 32;  // 16 ymm registers: 6 rows x 2 vectors = 12 accumulators
constexpr int kMR = 6;
#else
// Portable build: the same vector width and blocking as the AVX-512 build (GCC lowers the
// 64-byte vectors to whatever the target has), so the AVX-512 path's tiling logic is
// exercised by the test suite on machines without AVX-512.
constexpr int kVecBytes = 64;
constexpr int kMR = 8;
#endif
constexpr int kNV = 2;  // vectors per packed panel

template <class T>
struct VecOf;
// `unaligned` is the same vector, readable at any element-aligned address and allowed to
// alias T (as the intrinsics' __m256 is): loads through it compile to plain vmovups.
template <>
struct VecOf<float> {
    typedef float type __attribute__((vector_size(kVecBytes)));
    typedef float unaligned __attribute__((vector_size(kVecBytes), aligned(4), may_alias));
    typedef std::int32_t mask __attribute__((vector_size(kVecBytes)));
};
template <>
struct VecOf<double> {
    typedef double type __attribute__((vector_size(kVecBytes)));
    typedef double unaligned __attribute__((vector_size(kVecBytes), aligned(8), may_alias));
    typedef std::int64_t mask __attribute__((vector_size(kVecBytes)));
};
template <class T>
using Vec = typename VecOf<T>::type;
template <class T>
using Mask = typename VecOf<T>::mask;
template <class T>
constexpr int kLanes = kVecBytes / int(sizeof(T));
template <class T>
constexpr int kNR = kNV * kLanes<T>;  // columns per packed panel

static inline idx imin(idx a, idx b) { return a < b ? a : b; }
static inline idx imax(idx a, idx b) { return a > b ? a : b; }

template <class T>
static inline Vec<T> load(const T* p) {
    return *reinterpret_cast<const typename VecOf<T>::unaligned*>(p);
}
template <class T>
static inline void store(T* p, Vec<T> v) {
    *reinterpret_cast<typename VecOf<T>::unaligned*>(p) = v;
}
template <class T>
static inline Vec<T> splat(T x) {
    // x - 0 is x for every x (also -0 and NaN), so this folds to a plain broadcast; 0 + x
    // would not fold (it turns -0 into +0) and costs an add per broadcast.
    return x - Vec<T>{};
}

// ---------------------------------------------------------------------------------------
// Vectorised activations. tanh follows Cody & Waite: a rational function for |x| < ln(3)/2,
// 1 - 2/(exp(2|x|)+1) above; exp by Cody-Waite range reduction and a Taylor polynomial
// whose truncation error is below half an ulp. Accurate to a few ulp in both precisions
// (tests compare against numpy.tanh). NaN propagates: every clamp and select is written so
// that a NaN compares false and is kept.

template <class T>
struct TanhConst;
template <>
struct TanhConst<float> {
    static constexpr float clamp = 10.0f;  // tanh(10) rounds to 1 in float
    static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23
    static constexpr float ln2_hi = 0.693359375f;
    static constexpr float ln2_lo = -2.12194440054690583e-4f;
    static constexpr int taylor_degree = 7;
    static constexpr int mant_bits = 23, exp_bias = 127;
};
template <>
struct TanhConst<double> {
    static constexpr double clamp = 20.0;  // tanh(20) rounds to 1 in double
    static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double ln2_hi = 6.93147180369123816490e-01;
    static constexpr double ln2_lo = 1.90821492927058770002e-10;
    static constexpr int taylor_degree = 13;
    static constexpr int mant_bits = 52, exp_bias = 1023;
};

// exp(y) for 0 <= y <= 2*clamp (or NaN).
template <class T>
static inline Vec<T> exp_bounded(Vec<T> y) {
    using C = TanhConst<T>;
    const T log2e = T(1.44269504088896340736);
    Vec<T> t = y * log2e + C::round_magic;
    Vec<T> n = t - C::round_magic;  // round(y / ln2), exact
    Vec<T> r = y - n * C::ln2_hi;
    r = r - n * C::ln2_lo;          // |r| <= ln2/2
    // Taylor series of exp(r), Horner form, coefficients 1/k!.
    T coef[C::taylor_degree + 1];
    coef[0] = 1;
    for (int k = 1; k <= C::taylor_degree; ++k) coef[k] = coef[k - 1] / T(k);
    Vec<T> p = splat<T>(coef[C::taylor_degree]);
    for (int k = C::taylor_degree - 1; k >= 0; --k) p = p * r + coef[k];
    Mask<T> e = __builtin_convertvector(n, Mask<T>);
    e = (e + C::exp_bias) << C::mant_bits;
    return p * (Vec<T>)e;  // same-size vector cast reinterprets the bits: 2^n
}

template <class T>
static inline Vec<T> small_tanh_ratio(Vec<T> g);  // R(g) with tanh(f) = f + f*R(f^2)
template <>
inline Vec<float> small_tanh_ratio<float>(Vec<float> g) {
    const float p0 = -0.8237728127f, p1 = -0.3831010665e-2f, q0 = 2.471319654f;
    return g * (g * p1 + p0) / (g + q0);
}
template <>
inline Vec<double> small_tanh_ratio<double>(Vec<double> g) {
    const double p0 = -0.16134119023996228053e+4, p1 = -0.99225929672236083313e+2,
                 p2 = -0.96437492777225469787e+0;
    const double q0 = 0.48402357071988688686e+4, q1 = 0.22337720718962312926e+4,
                 q2 = 0.11274474380534949335e+3;
    return g * ((g * p2 + p1) * g + p0) / (((g + q2) * g + q1) * g + q0);
}

template <class T>
static inline Vec<T> vtanh(Vec<T> x) {
    const T zero = 0, one = 1, two = 2;
    Vec<T> f = x < zero ? -x : x;  // |x|, NaN kept
    f = f > TanhConst<T>::clamp ? splat<T>(TanhConst<T>::clamp) : f;
    Vec<T> large = one - two / (exp_bounded<T>(two * f) + one);
    Vec<T> small = f + f * small_tanh_ratio<T>(f * f);
    Vec<T> r = f < T(0.54930614433405484570) ? small : large;  // ln(3)/2
    return x < zero ? -r : r;
}

struct ActTanh {
    template <class T>
    static Vec<T> apply(Vec<T> a) { return vtanh<T>(a); }
    // derivative expressed through the output h = tanh(a)
    template <class T>
    static Vec<T> grad(Vec<T> h) { return T(1) - h * h; }
};
struct ActRelu {
    template <class T>
    static Vec<T> apply(Vec<T> a) { return a < T(0) ? Vec<T>{} : a; }  // relu(NaN) = NaN
    template <class T>
    static Vec<T> grad(Vec<T> h) {
        Vec<T> d = h > T(0) ? splat<T>(1) : Vec<T>{};
        return h != h ? h : d;  // NaN in, NaN out
    }
};

// ---------------------------------------------------------------------------------------
// Packing: panel p of the (K x ncols) operand B, B(k, j) = src[k*sk + j*sj], is stored at
// dst + p*K*NR as K rows of NR values; columns past ncols are zero.
template <class T>
static void pack_panels(T* dst, const T* src, idx sk, idx sj, idx K, idx ncols, idx p0, idx p1) {
    constexpr int NR = kNR<T>;
    for (idx p = p0; p < p1; ++p) {
        T* d = dst + p * K * NR;
        idx j0 = p * NR, nj = imin(NR, ncols - j0);
        for (idx k = 0; k < K; ++k) {
            const T* s = src + k * sk + j0 * sj;
            idx j = 0;
            for (; j < nj; ++j) d[k * NR + j] = s[j * sj];
            for (; j < NR; ++j) d[k * NR + j] = T(0);
        }
    }
}

// Epilogues finish an M x (NVT vectors) tile held in registers and store it once.
// `row0` and `col0` locate the tile; only `ncols` columns are valid (the rest is padding).
template <class T, class Act>
struct ForwardEpilogue {  // out = act(acc + xw)
    const T* xw;
    idx xw_ld;
    T* out;
    idx out_ld;
    void prefetch(idx row0, int nrows, idx col0) const {
        for (int r = 0; r < nrows; ++r) __builtin_prefetch(xw + (row0 + r) * xw_ld + col0);
    }
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        constexpr int W = kLanes<T>;
        for (int r = 0; r < M && r < nrows; ++r) {
            const T* x = xw + (row0 + r) * xw_ld + col0;
            T* o = out + (row0 + r) * out_ld + col0;
            if (ncols >= NVT * W) {
                for (int i = 0; i < NVT; ++i) store(o + i * W, Act::template apply<T>(acc[r][i] + load(x + i * W)));
            } else {
                T buf[NVT * W] __attribute__((aligned(64)));
                for (idx j = 0; j < NVT * W; ++j) buf[j] = j < ncols ? x[j] : T(0);
                for (int i = 0; i < NVT; ++i)
                    store(buf + i * W, Act::template apply<T>(acc[r][i] + load(buf + i * W)));
                for (idx j = 0; j < ncols; ++j) o[j] = buf[j];
            }
        }
    }
};

template <class T, class Act>
struct BackwardEpilogue {  // da = (acc + dh [+ extra]) * act'(h)
    const T* dh;
    idx dh_ld;
    const T* h;
    idx h_ld;
    const T* extra;  // dh_last at the last step, else null
    idx extra_ld;
    T* da;
    idx da_ld;
    void prefetch(idx row0, int nrows, idx col0) const {
        for (int r = 0; r < nrows; ++r) {
            __builtin_prefetch(dh + (row0 + r) * dh_ld + col0);
            __builtin_prefetch(h + (row0 + r) * h_ld + col0);
        }
    }
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        constexpr int W = kLanes<T>;
        for (int r = 0; r < M && r < nrows; ++r) {
            const T* g = dh + (row0 + r) * dh_ld + col0;
            const T* hv = h + (row0 + r) * h_ld + col0;
            const T* e = extra ? extra + (row0 + r) * extra_ld + col0 : nullptr;
            T* o = da + (row0 + r) * da_ld + col0;
            if (ncols >= NVT * W) {
                for (int i = 0; i < NVT; ++i) {
                    Vec<T> s = acc[r][i] + load(g + i * W);
                    if (e) s = s + load(e + i * W);
                    store(o + i * W, s * Act::template grad<T>(load(hv + i * W)));
                }
            } else {
                T bg[NVT * W] __attribute__((aligned(64)));
                T bh[NVT * W] __attribute__((aligned(64)));
                T be[NVT * W] __attribute__((aligned(64)));
                for (idx j = 0; j < NVT * W; ++j) {
                    bg[j] = j < ncols ? g[j] : T(0);
                    bh[j] = j < ncols ? hv[j] : T(0);
                    be[j] = (e && j < ncols) ? e[j] : T(0);
                }
                for (int i = 0; i < NVT; ++i) {
                    Vec<T> s = acc[r][i] + load(bg + i * W);
                    if (e) s = s + load(be + i * W);
                    store(bg + i * W, s * Act::template grad<T>(load(bh + i * W)));
                }
                for (idx j = 0; j < ncols; ++j) o[j] = bg[j];
            }
        }
    }
};

template <class T>
struct StoreEpilogue {  // out = acc
    T* out;
    idx out_ld;
    void prefetch(idx, int, idx) const {}
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        constexpr int W = kLanes<T>;
        for (int r = 0; r < M && r < nrows; ++r) {
            T* o = out + (row0 + r) * out_ld + col0;
            if (ncols >= NVT * W) {
                for (int i = 0; i < NVT; ++i) store(o + i * W, acc[r][i]);
            } else {
                T buf[NVT * W] __attribute__((aligned(64)));
                for (int i = 0; i < NVT; ++i) store(buf + i * W, acc[r][i]);
                for (idx j = 0; j < ncols; ++j) o[j] = buf[j];
            }
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

// Micro-kernel: M rows of A (K columns) times NP consecutive packed panels starting at `bp`
// (`panel_size` values apart); the tile stays in registers until `epi` finishes and stores it.
template <class T, int M, int NP, class A, class Epi>
static inline void micro_tile(const A& a, idx K, const T* bp, idx panel_size, idx row0, int nrows,
                              idx col0, idx ncols, const Epi& epi) {
    constexpr int W = kLanes<T>, NR = kNR<T>, NVT = NP * kNV;
    epi.prefetch(row0, nrows, col0);  // what the epilogue reads arrives while the tile computes
    Vec<T> acc[M][NVT];
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r)
#pragma GCC unroll 16
        for (int i = 0; i < NVT; ++i) acc[r][i] = Vec<T>{};
#pragma GCC unroll 4
    for (idx k = 0; k < K; ++k) {
        Vec<T> b[NVT];
#pragma GCC unroll 16
        for (int p = 0; p < NP; ++p)
#pragma GCC unroll 16
            for (int v = 0; v < kNV; ++v) b[p * kNV + v] = load(bp + p * panel_size + k * NR + v * W);
#pragma GCC unroll 16
        for (int r = 0; r < M; ++r) {
            Vec<T> av = splat<T>(a(r, k));
#pragma GCC unroll 16
            for (int i = 0; i < NVT; ++i) acc[r][i] += av * b[i];
        }
    }
    epi.template operator()<M, NVT>(acc, row0, nrows, col0, ncols);
}

// How many panels a tile of M rows spans: few rows reuse each broadcast of A too little and
// leave the FMA latency exposed, so they take more columns (more independent accumulators).
template <int M>
constexpr int panels_for_rows() { return M == 1 ? 4 : (M <= 3 ? 2 : 1); }

// All tiles of M rows starting at row0 (rows of a matrix), for panels [p0, p1).
template <class T, int M, class Epi>
static void tiles_for_rows(const T* a, idx lda, idx K, const T* packed, idx ncols, idx p0, idx p1,
                           idx row0, const Epi& epi) {
    constexpr int NR = kNR<T>, NP = panels_for_rows<M>();
    const idx panel_size = K * NR;
    const StridedRowsA<T> arows{a + row0 * lda, lda};
    idx p = p0;
    for (; p + NP <= p1; p += NP)
        micro_tile<T, M, NP>(arows, K, packed + p * panel_size, panel_size, row0, M, p * NR, ncols - p * NR, epi);
    for (; p < p1; ++p)
        micro_tile<T, M, 1>(arows, K, packed + p * panel_size, panel_size, row0, M, p * NR, ncols - p * NR, epi);
}

template <class T, class Epi, int M = 1>
static void remainder_rows(int m, const T* a, idx lda, idx K, const T* packed, idx ncols, idx p0,
                           idx p1, idx row0, const Epi& epi) {
    if constexpr (M < kMR) {
        if (m == M)
            tiles_for_rows<T, M>(a, lda, K, packed, ncols, p0, p1, row0, epi);
        else
            remainder_rows<T, Epi, M + 1>(m, a, lda, K, packed, ncols, p0, p1, row0, epi);
    }
}

// Packed B panels swept per row block (per A sliver in the GEMMs): half an L2. The rows of A
// then stay in L1 across the group's panels, and the group stays in L2 across all row blocks,
// instead of A coming from L3 once per panel when it is larger than L2 (the `large` shape's
// h_{t-1} is 512 KB): measured +3 % on its recurrences at 2 threads, up to +8 % on `typical`'s.
constexpr idx kGroupBytes = idx(256) << 10;

// One recurrence step: C[0:nrows, panels p0..p1) = epi(A . B) where A is (nrows x K) with
// leading dimension lda and B is packed over its full K. Panel groups outer, rows inner.
template <class T, class Epi>
static void panel_gemm(const T* a, idx lda, idx nrows, idx K, const T* packed, idx ncols, idx p0,
                       idx p1, const Epi& epi) {
    const idx full = nrows - nrows % kMR;
    const idx group = imax(1, kGroupBytes / idx(imax(K, 1) * kNR<T> * sizeof(T)));
    for (idx pg = p0; pg < p1; pg += group)
        for (idx r = 0; r < full; r += kMR)
            tiles_for_rows<T, kMR>(a, lda, K, packed, ncols, pg, imin(pg + group, p1), r, epi);
    if (full < nrows) remainder_rows<T>(int(nrows - full), a, lda, K, packed, ncols, p0, p1, full, epi);
}

// ---------------------------------------------------------------------------------------
// Scratch memory for the packed weights, owned by the calling thread and reused across calls.
template <class T>
struct PackBuffer {
    T* data = nullptr;
    idx capacity = 0;
    T* get(idx n) {
        if (n > capacity) {
            std::free(data);
            void* p = nullptr;
            if (posix_memalign(&p, 64, size_t(n) * sizeof(T)) != 0) return data = nullptr, capacity = 0, nullptr;
            data = static_cast<T*>(p);
            capacity = n;
        }
        return data;
    }
    ~PackBuffer() { std::free(data); }
};
// One buffer per (type, purpose, thread): the recurrence's packed weights, and the GEMM's
// packed blocks of A and B.
enum Scratch { kRecurrenceWeights, kGemmA, kGemmB, kGemmWide };
template <class T, int Purpose>
static T* scratch(idx n) {
    static thread_local PackBuffer<T> buf;
    return buf.get(n);
}

static inline void thread_range(idx n, int nt, int tid, idx& lo, idx& hi) {
    lo = n * tid / nt;
    hi = n * (tid + 1) / nt;
}

static inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static inline int team_threads() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------
// Ctrl-C (Interrupt in rnn.hpp). Only the calling thread, team thread 0 (the thread that
// starts an OpenMP region is its thread 0), may call poll: in the binding it takes the GIL to
// run Python's signal handlers. It reads the clock after every kPollWork multiply-adds it has
// done (~50 µs of one core's work; a clock read costs ~20 ns) and polls when kPollIntervalNs
// have passed since the start or the last poll, so a call shorter than that never polls and
// a longer one polls 20 times a second: taking the GIL waits up to Python's switch interval
// (5 ms) when another Python thread is running, at most 10 % of the time then, ~0 otherwise.
constexpr idx kPollWork = idx(1) << 20;
constexpr long long kPollIntervalNs = 50 * 1000 * 1000;

static inline long long monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct InterruptPoller {
    Interrupt* in;  // null on the other threads, and when the caller cannot be interrupted
    idx work = 0;
    long long next_poll = 0;
    explicit InterruptPoller(Interrupt* i) : in(i) {
        if (in) next_poll = monotonic_ns() + kPollIntervalNs;
    }
    // Called after each unit of `w` multiply-adds; true when the call must stop.
    bool operator()(idx w) {
        if (!in || (work += w) < kPollWork) return false;
        work = 0;
        if (monotonic_ns() < next_poll) return false;
        const bool stop = in->poll(in->ctx) != 0;
        next_poll = monotonic_ns() + kPollIntervalNs;
        if (stop) __atomic_store_n(&in->stop, 1, __ATOMIC_RELAXED);
        return stop;
    }
};

static inline bool interrupted(const Interrupt* in) { return in && __atomic_load_n(&in->stop, __ATOMIC_RELAXED); }

// Returns false only when the packed weights cannot be allocated.
// ---------------------------------------------------------------------------------------
// The big GEMMs of the orchestration, C (M x P) = sum_k A(i, k) B(k, j), with the same
// micro-kernel. GotoBLAS blocking: a kc-deep block of B (the thread's columns) is packed into
// panels, an mc x kc block of A into MR-row slivers (zero padded), and every MR x NR tile
// of C is accumulated in registers over kc before its epilogue.
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
    RowCursor(const SeqRows<T>& rows, idx m)
        : s(rows), t(rows.rows ? m / rows.rows : 0), n(m - t * rows.rows) {}
    T* get() const { return s.base + t * s.step_stride + n * s.row_stride; }
    void next() {
        if (++n == s.rows) n = 0, ++t;
    }
};

constexpr idx kKC = 256;                // depth of a packed block: an A sliver stays in L1
// Accuracy of long float32 sums (the reduction GEMMs sum over N*T rows): C is accumulated in
// float32 over at most kWideK rows of K, then added into a double copy of the thread's block
// of C. Adding every kc block's tile into float32 C for the whole of K let the error grow
// like (K/kc)*eps: measured 1.4e4 eps (8.5e-4 relative) at K = 2^25 on constant data. Now a
// term goes through at most kKC + kWideK/kKC + 2 = 514 float32 roundings whatever K is. K up
// to kWideK (every benchmark shape) takes exactly the float32 path as before, at no cost.
constexpr idx kWideK = idx(1) << 16;
constexpr idx kMC = 240;                // rows of a packed A block (multiple of 6 and 8)
constexpr idx kMaxPanelsUnpackedA = 8;       // up to this many panels per thread, A is not packed
// Multiply-adds per thread below which a GEMM runs on one thread: ~50 µs of work. Waking a
// second thread costs microseconds on bare metal but can cost a scheduler time slice when
// that core is busy (another library's spinning pool, a virtual CPU the host took away):
// measured on the `stream` shape, 2-thread GEMMs of 4M multiply-adds made fwd+bwd 4x slower.
constexpr idx kMinGemmWorkPerThread = idx(1) << 22;

// Pack A(i, k) for i in [i0, i0+mc), k in [k0, k0+kc) into slivers dst[s][k][r].
// A_ROWS: A(i, k) = arow(i)[k] (rows GEMM); otherwise A(i, k) = arow(k)[i] (reduction GEMM).
template <class T, bool A_ROWS>
static void pack_a(T* dst, const SeqRows<const T>& arow, idx M, idx i0, idx mc, idx k0, idx kc) {
    const idx slivers = (mc + kMR - 1) / kMR;
    if (kc == 0) return;
    if (A_ROWS) {
        RowCursor<const T> row(arow, i0);
        for (idx s = 0; s < slivers; ++s)
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
    } else {
        RowCursor<const T> row(arow, k0);
        const idx full = mc / kMR;  // slivers with no padding: a fixed-length copy
        for (idx k = 0; k < kc; ++k, row.next()) {
            const T* src = row.get() + i0;
            for (idx s = 0; s < full; ++s) {
                T* d = dst + s * kc * kMR + k * kMR;
                for (int r = 0; r < kMR; ++r) d[r] = src[s * kMR + r];
            }
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
    for (idx k = 0; k < kc; ++k, row.next()) {
        const T* src = row.get();
        for (idx p = 0; p < panels; ++p) {
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
        constexpr int W = kLanes<T>;
        RowCursor<T> c(crow, row0);
        for (int r = 0; r < M && r < nrows; ++r, c.next()) {
            T* o = c.get() + col0;
            T buf[NVT * W] __attribute__((aligned(64)));
            const bool full = ncols >= NVT * W;
            T* dst = full ? o : buf;
            if (!full)
                for (idx j = 0; j < ncols; ++j) buf[j] = o[j];
            for (int i = 0; i < NVT; ++i) {
                Vec<T> v = acc[r][i];
                if (accumulate) v += load(dst + i * W);
                else if (bias) v += full ? load(bias + col0 + i * W) : Vec<T>{};
                store(dst + i * W, v);
            }
            if (!full) {
                if (bias && !accumulate)
                    for (idx j = 0; j < ncols; ++j) buf[j] += bias[col0 + j];
                for (idx j = 0; j < ncols; ++j) o[j] = buf[j];
            }
        }
    }
};

// wide += C over rows [i0, i1), columns [j0, j1) of C; at the end of K, C = wide instead.
template <class T>
static void add_block_to_wide(const SeqRows<T>& crow, idx i0, idx i1, idx j0, idx j1, double* wide, idx ld,
                              bool last) {
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

// One thread's block of C: rows [i0, i1), columns [j0, j1). `poll` is thread 0's, else null.
// Every thread leaves at its next mc x kc block once the call is interrupted (C is then
// partly written).
template <class T, bool A_ROWS>
static bool gemm_block(const GemmArgs<T>& g, idx i0, idx i1, idx j0, idx j1, InterruptPoller& poll) {
    constexpr int NR = kNR<T>;
    if (i0 >= i1 || j0 >= j1) return true;
    const idx panels = (j1 - j0 + NR - 1) / NR;
    T* bbuf = scratch<T, kGemmB>(panels * NR * kKC);
    T* abuf = scratch<T, kGemmA>(((kMC + kMR - 1) / kMR) * kMR * kKC);
    if (!bbuf || !abuf) return false;
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
        pack_b<T>(bbuf, brow, g.b_col_stride, k0, kc, j0, j1);
        const idx group = imin(panels, imax(1, kGroupBytes / idx(imax(kc, 1) * NR * sizeof(T))));  // kc = 0 when K = 0
        for (idx ib = i0; ib < i1; ib += kMC) {
            const idx mc = imin(kMC, i1 - ib);
            if (interrupted(g.interrupt) || poll(mc * imax(kc, 1) * (j1 - j0))) return true;
            // Few panels reuse each packed value of A too little to repay packing it (the
            // stream and typical shapes' dx = dA·Wxᵀ spent more time packing A than computing):
            // rows of A are then read where they are.
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
                            micro_tile<T, kMR, 1>(PackedA<T>{abuf + s * kc * kMR}, kc, bp, kc * NR, row0, nrows,
                                                  col0, ncols, epi);
                        else
                            micro_tile<T, kMR, 1>(RowPointersA<T>{rows}, kc, bp, kc * NR, row0, nrows, col0,
                                                  ncols, epi);
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
static bool gemm_impl(const GemmArgs<T>& g) {
    if (g.M == 0 || g.P == 0) return true;
    constexpr int NR = kNR<T>;
    // Split the longer side of C between threads, in whole slivers or panels.
    const bool split_rows = g.M >= g.P;
    const idx units = split_rows ? (g.M + kMR - 1) / kMR : (g.P + NR - 1) / NR;
    idx nt = imin(idx(g.threads < 1 ? 1 : g.threads), units);
    nt = imin(nt, (g.M * g.P * (g.K ? g.K : 1)) / kMinGemmWorkPerThread);
    if (nt < 1) nt = 1;
    bool ok = true;
#pragma omp parallel num_threads(int(nt)) reduction(&& : ok)
    {
        const int team = team_threads(), tid = thread_id();
        idx u0, u1;
        thread_range(units, team, tid, u0, u1);
        InterruptPoller poll(tid == 0 ? g.interrupt : nullptr);
        if (split_rows)
            ok = g.a_is_rows ? gemm_block<T, true>(g, u0 * kMR, imin(u1 * kMR, g.M), 0, g.P, poll)
                             : gemm_block<T, false>(g, u0 * kMR, imin(u1 * kMR, g.M), 0, g.P, poll);
        else
            ok = g.a_is_rows ? gemm_block<T, true>(g, 0, g.M, u0 * NR, imin(u1 * NR, g.P), poll)
                             : gemm_block<T, false>(g, 0, g.M, u0 * NR, imin(u1 * NR, g.P), poll);
    }
    return ok;
}

// The per-step barrier of the recurrence. libgomp's `omp barrier` makes a futex_wake system
// call at every barrier, even when every thread is spinning, which costs more than a whole
// step of a small recurrence (measured: N = 1, H = 128 took 1.07 µs/step on two threads
// against 0.86 on one). This one costs a cache-line transfer: threads spin on a generation
// counter, and after a bounded spin yield the core (a descheduled teammate, an
// oversubscribed machine), never sleeping on a futex. GCC's __atomic builtins on a plain int,
// not std::atomic: no standard-library template may be instantiated here (see the top).
struct StepBarrier {
    alignas(64) int arrived = 0;
    alignas(64) int generation = 0;
    int team = 1;
    // Every thread of the team stores the same size before its first wait, so each one reads
    // its own store or an identical one: no extra barrier needed to publish it.
    void join(int size) { __atomic_store_n(&team, size, __ATOMIC_RELAXED); }
    void wait() {
        const int gen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
        if (__atomic_add_fetch(&arrived, 1, __ATOMIC_ACQ_REL) == __atomic_load_n(&team, __ATOMIC_RELAXED)) {
            __atomic_store_n(&arrived, 0, __ATOMIC_RELAXED);  // nobody touches it until gen moves
            __atomic_store_n(&generation, gen + 1, __ATOMIC_RELEASE);
            return;
        }
        for (unsigned spins = 0; __atomic_load_n(&generation, __ATOMIC_ACQUIRE) == gen; ++spins) {
            if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            } else {
                sched_yield();
            }
        }
    }
    // ~0.1-1 ms of pause instructions: longer than a balanced step waits, short enough that
    // an oversubscribed machine gets the core back soon.
    static constexpr unsigned kSpinsBeforeYield = 1u << 14;
};

// How the team of a recurrence leaves early, every thread after the same step. Thread 0 records
// how many steps are done (`after`) before arriving at that step's barrier; every thread checks
// (`now`) right after the barrier, so it sees the record. A thread still behind can never see
// a later record too early: thread 0 records only the count of the step it is on, which is
// larger than the count that thread checks.
struct StepStop {
    idx steps_done;  // initially the number of steps + 1: never
    explicit StepStop(idx steps) : steps_done(steps + 1) {}
    void after(idx done) { __atomic_store_n(&steps_done, done, __ATOMIC_RELAXED); }
    bool now(idx done) const { return __atomic_load_n(&steps_done, __ATOMIC_RELAXED) <= done; }
};

// A second thread pays for itself when each thread gets at least this many multiply-adds per
// step and this many hidden units (whole panels): below that, the barrier per step and the
// team's wake-up per call cost more than the split saves. Measured on two cores with the
// spin barrier above: N = 1, H = 128 (8K per thread) runs 1.4x faster on two threads, while
// N = 16, H = 32 (one 16-column panel each, 8 steps) ran slower.
constexpr idx kMinStepWorkPerThread = idx(1) << 13;
constexpr idx kMinStepColumnsPerThread = 64;

static int team_size(int requested, idx step_work, idx columns, idx panels) {
    idx t = requested < 1 ? 1 : requested;
    t = imin(t, panels);
    t = imin(t, columns / kMinStepColumnsPerThread);
    t = imin(t, step_work / kMinStepWorkPerThread);
    return t < 1 ? 1 : int(t);
}

template <class T, class Act>
static bool forward_impl(const ForwardArgs<T>& a) {
    const idx steps = a.out.steps, N = a.out.rows, H = a.out.cols;
    if (steps == 0 || N == 0 || H == 0) return true;
    constexpr int NR = kNR<T>;
    const idx panels = (H + NR - 1) / NR;
    T* packed = scratch<T, kRecurrenceWeights>(panels * NR * H);
    if (!packed) return false;
    const int nt = team_size(a.threads, N * H * H, H, panels);
    StepBarrier step_barrier;
    StepStop stop{steps};
#pragma omp parallel num_threads(nt)
    {
        const int team = team_threads(), tid = thread_id();
        idx p0, p1;
        thread_range(panels, team, tid, p0, p1);
        step_barrier.join(team);
        InterruptPoller poll(tid == 0 ? a.interrupt : nullptr);
        // Each thread packs and then only reads its own panels: no barrier needed here.
        pack_panels<T>(packed, a.wh.data, a.wh.ld, 1, H, H, p0, p1);
        for (idx t = 0; t < steps; ++t) {
            ForwardEpilogue<T, Act> epi{a.xw.at(t, 0), a.xw.row_stride, a.out.at(t, 0), a.out.row_stride};
            // At t = 0 without h0 the product is zero: K = 0, and A is never read.
            const bool from_h0 = t == 0;
            const T* hprev = from_h0 ? a.h0.data : a.out.at(t - 1, 0);
            const idx K = (from_h0 && !hprev) ? 0 : H;
            if (!hprev) hprev = a.out.at(0, 0);
            panel_gemm<T>(hprev, from_h0 ? a.h0.ld : a.out.row_stride, N, K, packed, H, p0, p1, epi);
            if (poll(N * H * H)) stop.after(t + 1);
            if (team > 1) step_barrier.wait();
            if (stop.now(t + 1)) break;
        }
    }
    return true;
}

template <class T, class Act>
static bool backward_impl(const BackwardArgs<T>& a) {
    const idx steps = a.da.steps, N = a.da.rows, H = a.da.cols;
    if (N == 0 || H == 0) return true;
    if (steps == 0) {  // dh0 = dh_last
        for (idx n = 0; n < N; ++n)
            for (idx j = 0; j < H; ++j) a.dh0.data[n * a.dh0.ld + j] = a.dh_last.data ? a.dh_last.data[n * a.dh_last.ld + j] : T(0);
        return true;
    }
    constexpr int NR = kNR<T>;
    const idx panels = (H + NR - 1) / NR;
    T* packed = scratch<T, kRecurrenceWeights>(panels * NR * H);
    if (!packed) return false;
    const int nt = team_size(a.threads, N * H * H, H, panels);
    StepBarrier step_barrier;
    StepStop stop{steps};
#pragma omp parallel num_threads(nt)
    {
        const int team = team_threads(), tid = thread_id();
        idx p0, p1;
        thread_range(panels, team, tid, p0, p1);
        step_barrier.join(team);
        InterruptPoller poll(tid == 0 ? a.interrupt : nullptr);
        pack_panels<T>(packed, a.wh.data, 1, a.wh.ld, H, H, p0, p1);  // B = Wh^T
        for (idx t = steps - 1; t >= 0; --t) {
            const bool last = t == steps - 1;
            BackwardEpilogue<T, Act> epi{a.dh.at(t, 0), a.dh.row_stride, a.h.at(t, 0), a.h.row_stride,
                                         last ? a.dh_last.data : nullptr, a.dh_last.ld,
                                         a.da.at(t, 0), a.da.row_stride};
            // The last step has no da_{t+1}: K = 0 and A (a dummy) is never read.
            const T* next = a.da.at(last ? t : t + 1, 0);
            panel_gemm<T>(next, a.da.row_stride, N, last ? 0 : H, packed, H, p0, p1, epi);
            if (poll(N * H * H)) stop.after(steps - t);
            if (team > 1) step_barrier.wait();
            if (stop.now(steps - t)) break;
        }
        if (!stop.now(steps)) {
            StoreEpilogue<T> epi{a.dh0.data, a.dh0.ld};
            panel_gemm<T>(a.da.at(0, 0), a.da.row_stride, N, H, packed, H, p0, p1, epi);
        }
    }
    return true;
}

template <class T>
static bool forward_dispatch(const ForwardArgs<T>& a) {
    return a.act == Activation::relu ? forward_impl<T, ActRelu>(a) : forward_impl<T, ActTanh>(a);
}
template <class T>
static bool backward_dispatch(const BackwardArgs<T>& a) {
    return a.act == Activation::relu ? backward_impl<T, ActRelu>(a) : backward_impl<T, ActTanh>(a);
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf

// The translation unit's exported entry points (declared in rnn.hpp).
#define PRF_DEFINE_ISA_ENTRY_POINTS                                                              \
    namespace prf {                                                                               \
    namespace PRF_ISA_NAMESPACE {                                                                 \
    bool forward(const ForwardArgs<float>& a) { return forward_dispatch(a); }                     \
    bool forward(const ForwardArgs<double>& a) { return forward_dispatch(a); }                    \
    bool backward(const BackwardArgs<float>& a) { return backward_dispatch(a); }                  \
    bool backward(const BackwardArgs<double>& a) { return backward_dispatch(a); }                 \
    bool gemm(const GemmArgs<float>& g) { return gemm_impl(g); }                                  \
    bool gemm(const GemmArgs<double>& g) { return gemm_impl(g); }                                 \
    }                                                                                             \
    }
