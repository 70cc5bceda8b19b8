// The streaming step (StepArgs in rnn.hpp): one time step of a stack of layers, for the
// real-time path (a sensor reading, an audio frame, a token at a time) where the cost of a
// call, not the FMA units, is the limit. Each layer's product is a short, wide GEMV-like
// sweep over the weights as they are in memory: packing them (what the recurrence does once
// per sequence) would cost as much as the step itself.
//
// Thread i owns a contiguous range of whole vectors of columns (hidden units) in every layer;
// layer l+1 reads every column of layer l, so the team meets at a barrier between layers.
#pragma once
#include "activations.hpp"
#include "team.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

// What one layer's step reads and writes, for M rows starting at row n.
template <class T, int M>
struct StepRows {
    const T* in[M];  // the layer's input rows (x, or the layer below's new state)
    const T* h[M];   // the carried state's rows
    T* out[M];       // the new state's rows
};

// out[m][c0:c1] += a[m][0:K] . w[0:K, c0:c1], sweeping the weights row by row, kStepSweepRows
// rows at a time, each row from c0 to c1: the weights are read in memory order, as the
// hardware prefetchers expect, and each vector of them serves the M rows. (Sweeping a tile of
// columns down all rows instead, with the sums in registers, jumps a row, often a page, per
// read: it ran at half of NumPy's speed on weights that come from L3, float64 H = 512.)
template <class T, int M>
static void step_sweep(const T* const (&a)[M], idx K, const T* w, idx ldw, T* const (&out)[M], idx c0, idx c1) {
    constexpr int L = kLanes<T>, U = kStepSweepRows;
    static_assert(U % 2 == 0, "the sums run in two chains, even and odd rows");
    idx k = 0;
    for (; k + U <= K; k += U) {
        Vec<T> am[M][U];
        for (int m = 0; m < M; ++m)
            for (int u = 0; u < U; ++u) am[m][u] = splat<T>(a[m][k + u]);
        const T* wk = w + k * ldw;
        // The next U rows are prefetched while these are swept: the weights stream from L2 (or
        // L3), and the hardware prefetchers alone kept one core at ~55 GB/s. Measured on
        // Sapphire Rapids, one thread, N = 1, D = 32, interleaved with the NumPy one-liner,
        // float32 µs: H = 128 2.09-2.33 -> 1.82-1.93, H = 512 17.8-18.1 -> 13.8-15.0; float64
        // H = 128 3.4-3.5 -> 2.9-3.1. Two blocks ahead: the same; 8 rows per block: slower.
        const bool ahead = k + 2 * U <= K;
        idx c = c0;
        for (; c + L <= c1; c += L) {
            if (ahead)
#pragma GCC unroll 8
                for (int u = 0; u < U; ++u) __builtin_prefetch(wk + (U + u) * ldw + c);
            Vec<T> wv[U];
#pragma GCC unroll 8
            for (int u = 0; u < U; ++u) wv[u] = load<T>(wk + u * ldw + c);
#pragma GCC unroll 4
            for (int m = 0; m < M; ++m) {  // two chains of sums: half the latency of one
                Vec<T> even = load<T>(out[m] + c), odd = {};
#pragma GCC unroll 8
                for (int u = 0; u < U; u += 2) {
                    even += am[m][u] * wv[u];
                    odd += am[m][u + 1] * wv[u + 1];
                }
                store<T>(out[m] + c, even + odd);
            }
        }
        for (; c < c1; ++c)
            for (int m = 0; m < M; ++m)
                for (int u = 0; u < U; ++u) out[m][c] += a[m][k + u] * wk[u * ldw + c];
    }
    for (; k < K; ++k)
        for (int m = 0; m < M; ++m) {
            const T x = a[m][k];
            const T* wk = w + k * ldw;
            idx c = c0;
            for (; c + L <= c1; c += L) store<T>(out[m] + c, load<T>(out[m] + c) + splat<T>(x) * load<T>(wk + c));
            for (; c < c1; ++c) out[m][c] += x * wk[c];
        }
}

// Columns [c0, c1) of M rows: out = act(in . wx + h . wh + b). The sums are kept in this
// thread's own scratch (`acc`, M rows of `ld` elements, 64-byte aligned) and out is written
// once. Summed in out itself, every block of weight rows stored to lines of out that the next
// thread's columns share (out's columns need not start a cache line), and the two cores
// passed those lines back and forth: one layer, N = 1, D = 32, float32, 2 threads (the
// threshold below lowered to allow them), the kernel alone, Sapphire Rapids: H = 256
// 8.0-8.7 -> 4.6-5.3 µs, H = 512 12.8-20.2 -> 11.7-11.9.
template <class T, class Act, int M>
static void step_rows(const StepLayer<T>& layer, const StepRows<T, M>& r, idx c0, idx c1, T* acc, idx ld) {
    constexpr int L = kLanes<T>;
    const idx width = c1 - c0;
    T* sums[M];
    for (int m = 0; m < M; ++m) {
        sums[m] = acc + m * ld;
        for (idx c = 0; c < width; ++c) sums[m][c] = layer.b ? layer.b[c0 + c] : T(0);
    }
    step_sweep<T, M>(r.in, layer.wx.rows, layer.wx.data + c0, layer.wx.ld, sums, 0, width);
    step_sweep<T, M>(r.h, layer.wh.rows, layer.wh.data + c0, layer.wh.ld, sums, 0, width);
    for (int m = 0; m < M; ++m) {
        T* s = sums[m];
        for (idx c = width; c % L != 0; ++c) s[c] = T(0);  // the last vector's padding (ld holds it)
        for (idx c = 0; c < width; c += L) store<T>(s + c, Act::template apply<T>(load<T>(s + c)));
        for (idx c = 0; c < width; ++c) r.out[m][c0 + c] = s[c];
    }
}

template <class T, class Act, int M>
static void step_row_block(const StepArgs<T>& a, idx l, idx n, idx c0, idx c1, T* acc, idx ld) {
    StepRows<T, M> r;
    for (int m = 0; m < M; ++m) {
        r.in[m] = l == 0 ? a.x.data + (n + m) * a.x.ld : a.out.at(l - 1, n + m);
        r.h[m] = a.h.at(l, n + m);
        r.out[m] = a.out.at(l, n + m);
    }
    step_rows<T, Act, M>(a.layers[l], r, c0, c1, acc, ld);
}

template <class T, class Act>
static void step_layer_columns(const StepArgs<T>& a, idx l, idx c0, idx c1, T* acc, idx ld) {
    const idx N = a.x.rows;
    idx n = 0;
    for (; n + kStepRows <= N; n += kStepRows) step_row_block<T, Act, kStepRows>(a, l, n, c0, c1, acc, ld);
    for (; n < N; ++n) step_row_block<T, Act, 1>(a, l, n, c0, c1, acc, ld);
}

template <class T, class Act>
static bool run_step(const StepArgs<T>& a) {
    const idx N = a.x.rows, H = a.h.cols, L = a.num_layers;
    if (N == 0 || H == 0 || L == 0) return true;
    constexpr int W = kLanes<T>;
    const idx vectors = (H + W - 1) / W;  // the last one may be partial
    // The weights of every layer; a step's work is N times as many multiply-adds.
    idx weights = 0;
    for (idx l = 0; l < L; ++l) weights += (a.layers[l].wx.rows + H) * H;
    const idx most = imin(idx(a.threads < 1 ? 1 : a.threads), imin(vectors, H / kMinStepColumnsPerThread));
    // Enough threads for the work, and for the weights to stay in the threads' caches.
    idx nt = imax(N * weights / L / kMinStepCallWorkPerThread,
                  (weights * idx(sizeof(T)) + kStepCacheBytes - 1) / kStepCacheBytes);
    nt = imax(idx(1), imin(most, nt));
    // The team only while steps come back to back (kStepTeamIdleNs): this calling thread's.
    static thread_local long long previous_step_end_ns = 0;
    if (nt > 1 && monotonic_ns() - previous_step_end_ns > kStepTeamIdleNs) nt = 1;
    // Each thread's sums (step_rows): kStepRows rows of its columns, whole 64-byte lines apart.
    constexpr idx kLine = 64 / sizeof(T);
    const idx sums_ld = ((vectors + nt - 1) / nt * W + kLine - 1) / kLine * kLine;
    T* sums = scratch<T, kStepSums>(nt * kStepRows * sums_ld);
    if (!sums) return false;
    StepBarrier barrier;
    run_team(nt, [&](int team, int tid) {
        barrier.join(team);
        idx v0, v1;
        thread_range(vectors, team, tid, v0, v1);
        const idx c0 = v0 * W, c1 = imin(v1 * W, H);
        for (idx l = 0; l < L; ++l) {
            step_layer_columns<T, Act>(a, l, c0, c1, sums + tid * kStepRows * sums_ld, sums_ld);
            if (team > 1) barrier.wait();  // layer l's new state is complete and h[l] read by all
            for (idx n = 0; n < N; ++n) {  // this thread's columns of the carried state
                const T* o = a.out.at(l, n);
                T* h = a.h.at(l, n);
                for (idx j = c0; j < c1; ++j) h[j] = o[j];
            }
        }
    });
    previous_step_end_ns = monotonic_ns();
    return true;
}

template <class T>
static bool step_kernel(const StepArgs<T>& a) {
    return a.act == Activation::relu ? run_step<T, ActRelu>(a) : run_step<T, ActTanh>(a);
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
