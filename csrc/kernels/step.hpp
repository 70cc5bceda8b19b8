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
            for (int m = 0; m < M; ++m) {
                Vec<T> acc = load<T>(out[m] + c);
#pragma GCC unroll 8
                for (int u = 0; u < U; ++u) acc += am[m][u] * wv[u];
                store<T>(out[m] + c, acc);
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

// Columns [c0, c1) of M rows: out = act(in . wx + h . wh + b), summed in place in out.
template <class T, class Act, int M>
static void step_rows(const StepLayer<T>& layer, const StepRows<T, M>& r, idx c0, idx c1) {
    constexpr int L = kLanes<T>;
    for (int m = 0; m < M; ++m)
        for (idx c = c0; c < c1; ++c) r.out[m][c] = layer.b ? layer.b[c] : T(0);
    step_sweep<T, M>(r.in, layer.wx.rows, layer.wx.data, layer.wx.ld, r.out, c0, c1);
    step_sweep<T, M>(r.h, layer.wh.rows, layer.wh.data, layer.wh.ld, r.out, c0, c1);
    for (int m = 0; m < M; ++m) {
        idx c = c0;
        for (; c + L <= c1; c += L) store<T>(r.out[m] + c, Act::template apply<T>(load<T>(r.out[m] + c)));
        if (c < c1) {  // the last H mod L columns, through a vector
            T tail[kLanes<T>] __attribute__((aligned(64))) = {};
            for (idx j = c; j < c1; ++j) tail[j - c] = r.out[m][j];
            const Vec<T> t = Act::template apply<T>(load<T>(tail));
            for (idx j = c; j < c1; ++j) r.out[m][j] = t[j - c];
        }
    }
}

template <class T, class Act, int M>
static void step_row_block(const StepArgs<T>& a, idx l, idx n, idx c0, idx c1) {
    StepRows<T, M> r;
    for (int m = 0; m < M; ++m) {
        r.in[m] = l == 0 ? a.x.data + (n + m) * a.x.ld : a.out.at(l - 1, n + m);
        r.h[m] = a.h.at(l, n + m);
        r.out[m] = a.out.at(l, n + m);
    }
    step_rows<T, Act, M>(a.layers[l], r, c0, c1);
}

template <class T, class Act>
static void step_layer_columns(const StepArgs<T>& a, idx l, idx c0, idx c1) {
    const idx N = a.x.rows;
    idx n = 0;
    for (; n + kStepRows <= N; n += kStepRows) step_row_block<T, Act, kStepRows>(a, l, n, c0, c1);
    for (; n < N; ++n) step_row_block<T, Act, 1>(a, l, n, c0, c1);
}

template <class T, class Act>
static bool run_step(const StepArgs<T>& a) {
    const idx N = a.x.rows, H = a.h.cols, L = a.num_layers;
    if (N == 0 || H == 0 || L == 0) return true;
    constexpr int W = kLanes<T>;
    const idx vectors = (H + W - 1) / W;  // the last one may be partial
    idx work = 0;
    for (idx l = 0; l < L; ++l) work += N * (a.layers[l].wx.rows + H) * H;
    idx nt = imin(idx(a.threads < 1 ? 1 : a.threads), imin(vectors, H / kMinStepColumnsPerThread));
    nt = imin(nt, work / L / kMinStepCallWorkPerThread);
    if (nt < 1) nt = 1;
    StepBarrier barrier;
    run_team(nt, [&](int team, int tid) {
        barrier.join(team);
        idx v0, v1;
        thread_range(vectors, team, tid, v0, v1);
        const idx c0 = v0 * W, c1 = imin(v1 * W, H);
        for (idx l = 0; l < L; ++l) {
            step_layer_columns<T, Act>(a, l, c0, c1);
            if (team > 1) barrier.wait();  // layer l's new state is complete and h[l] read by all
            for (idx n = 0; n < N; ++n) {  // this thread's columns of the carried state
                const T* o = a.out.at(l, n);
                T* h = a.h.at(l, n);
                for (idx j = c0; j < c1; ++j) h[j] = o[j];
            }
        }
    });
    return true;
}

template <class T>
static bool step_kernel(const StepArgs<T>& a) {
    return a.act == Activation::relu ? run_step<T, ActRelu>(a) : run_step<T, ActTanh>(a);
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
