// The streaming step (StepArgs in rnn.hpp): one time step of a stack of layers, for the
// real-time path (a sensor reading, an audio frame, a token at a time) where the cost of a
// call, not the FMA units, is the limit. Each layer's product is a short, wide GEMV-like
// sweep over the weights as they are in memory: packing them (what the recurrence does once
// per sequence) would cost as much as the step itself.
//
// Threads split a layer's stacked weights [wx; wh] by rows, in chunks: each thread sweeps its
// chunks' rows over all the columns, contiguous memory that stays in its own cache from step
// to step, and sums them pairwise into the root of its subtree of a binary tree over the chunks;
// after a barrier each thread adds the roots for its own columns (hidden units) and applies the
// activation. The chunks and the tree depend on the shape only, so every thread count gives the
// same bits. Threads beyond the chunks take other blocks of rows of x. Layer l+1 reads every
// column of layer l: the team meets at a barrier between layers. (A split by columns, each thread
// a slice of every row, ran float64 H = 512 at 24-32 µs on two threads, this one at 14-16: a
// slice is half a page, too short for the prefetchers, and at 4 KB strides it maps to half
// the cache sets.)
#pragma once
#include "activations.hpp"
#include "team.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

// out[m][c0:c1] += a[m][0:K] . w[0:K, c0:c1] (`fresh`: out = ...; K >= kStepSweepRows then),
// sweeping the weights row by row, kStepSweepRows rows at a time, each row from c0 to c1: the
// weights are read in memory order, as the hardware prefetchers expect, and each vector of them
// serves the M rows. (Sweeping a tile of columns down all rows instead, with the sums in
// registers, jumps a row, often a page, per read: it ran at half of NumPy's speed on weights
// that come from L3, float64 H = 512.) `ahead`: prefetch the next kStepSweepRows rows, which w
// has (step_sweep: where that pays, and w has at least 2·kStepSweepRows rows from row k, its
// `rows_in_memory`, so that the prefetch may run past K into the rows the next sweep reads).
template <class T, int M, bool Fresh>
static inline void step_sweep_block(const T* const (&a)[M], idx k, const T* w, idx ldw, T* const (&out)[M], idx c0,
                                    idx c1, bool ahead) {
    constexpr int L = kLanes<T>, U = kStepSweepRows;
    static_assert(U % 2 == 0, "the sums run in two chains, even and odd rows");
    Vec<T> am[M][U];
    for (int m = 0; m < M; ++m)
        for (int u = 0; u < U; ++u) am[m][u] = splat<T>(a[m][k + u]);
    const T* wk = w + k * ldw;
    idx c = c0;
    for (; c + L <= c1; c += L) {
        // The next U rows prefetched while these are swept.
        if (ahead)
#pragma GCC unroll 8
            for (int u = 0; u < U; ++u) __builtin_prefetch(wk + (U + u) * ldw + c);
        Vec<T> wv[U];
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) wv[u] = load<T>(wk + u * ldw + c);
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m) {  // two chains of sums: half the latency of one
            Vec<T> even = Fresh ? Vec<T>{} : load<T>(out[m] + c), odd = {};
#pragma GCC unroll 8
            for (int u = 0; u < U; u += 2) {
                even += am[m][u] * wv[u];
                odd += am[m][u + 1] * wv[u + 1];
            }
            store<T>(out[m] + c, even + odd);
        }
    }
    for (; c < c1; ++c)
        for (int m = 0; m < M; ++m) {
            T sum = Fresh ? T(0) : out[m][c];
            for (int u = 0; u < U; ++u) sum += a[m][k + u] * wk[u * ldw + c];
            out[m][c] = sum;
        }
}

// The same sum for a range of columns of NV whole vectors, at most kStepRegisterVectors for M
// rows: the sums stay in registers over all K rows, which are read in memory order all the same
// (the whole range of each row, one row after the other). The sweep above loads and stores
// `out` once per block of kStepSweepRows rows: a chain of store-to-load forwarding through each
// vector of `out`, which is what limits it where a row is only a few vectors (float32 H = 64:
// four vectors, so four such chains in flight). No software prefetch here: whole rows in memory
// order are what the hardware prefetchers follow, and prefetching 4 or 8 rows ahead only took
// load slots (Sapphire Rapids: float32 H = 256 2.64-2.73 -> 2.44-2.54 µs without, H = 512 6.9-7.2 -> 6.6;
// float64 H = 256 4.75-4.81 -> 4.58-4.67).
template <class T, int M, int NV>
static void step_sweep_registers(const T* const (&a)[M], idx K, const T* w, idx ldw, T* const (&out)[M], idx c0,
                                 bool fresh) {
    constexpr int L = kLanes<T>;
    constexpr int C = M * NV >= 8 ? 1 : 2;  // chains per sum: enough of them in flight to hide the FMA latency
    Vec<T> acc[C][M][NV];
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
        for (int i = 0; i < NV; ++i) {
            acc[0][m][i] = fresh ? Vec<T>{} : load<T>(out[m] + c0 + i * L);
            if constexpr (C == 2) acc[1][m][i] = Vec<T>{};
        }
    const T* wk = w + c0;
    idx k = 0;
    for (; k + C <= K; k += C, wk += C * ldw) {
#pragma GCC unroll 2
        for (int c = 0; c < C; ++c) {
#pragma GCC unroll 2
            for (int m = 0; m < M; ++m) {
                const Vec<T> x = splat<T>(a[m][k + c]);
#pragma GCC unroll 16
                for (int i = 0; i < NV; ++i) acc[c][m][i] += x * load<T>(wk + c * ldw + i * L);
            }
        }
    }
    for (; k < K; ++k, wk += ldw)
#pragma GCC unroll 2
        for (int m = 0; m < M; ++m) {
            const Vec<T> x = splat<T>(a[m][k]);
#pragma GCC unroll 16
            for (int i = 0; i < NV; ++i) acc[0][m][i] += x * load<T>(wk + i * L);
        }
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
        for (int i = 0; i < NV; ++i) store<T>(out[m] + c0 + i * L, C == 2 ? acc[0][m][i] + acc[1][m][i] : acc[0][m][i]);
}

// step_sweep_registers for nv (> 0) vectors, if that is at most kStepRegisterVectors / M.
template <class T, int M, int NV = 1>
static bool sweep_in_registers(int nv, const T* const (&a)[M], idx K, const T* w, idx ldw, T* const (&out)[M], idx c0,
                               bool fresh) {
    if constexpr (NV * M > kStepRegisterVectors) {
        return false;
    } else {
        if (nv != NV) return sweep_in_registers<T, M, NV + 1>(nv, a, K, w, ldw, out, c0, fresh);
        step_sweep_registers<T, M, NV>(a, K, w, ldw, out, c0, fresh);
        return true;
    }
}

template <class T, int M>
static void step_sweep(const T* const (&a)[M], idx K, const T* w, idx ldw, T* const (&out)[M], idx c0, idx c1,
                       bool fresh, idx rows_in_memory) {
    constexpr int L = kLanes<T>, U = kStepSweepRows;
    if (c1 > c0 && (c1 - c0) % L == 0 && (c1 - c0) / L <= kStepRegisterTiles * kStepRegisterVectors / M) {
        const idx tile = kStepRegisterVectors / M * L;
        for (idx c = c0; c < c1; c += tile)
            sweep_in_registers<T, M>(int(imin(c1 - c, tile) / L), a, K, w, ldw, out, c, fresh);
        return;
    }
    // The weights' next rows prefetched where that pays (config.hpp, kStepPrefetch: not on AMD).
    const bool prefetch = kStepPrefetch && !amd_cpu();
    idx k = 0;
    if (fresh && K >= U) {
        step_sweep_block<T, M, true>(a, 0, w, ldw, out, c0, c1, prefetch && 2 * U <= rows_in_memory);
        k = U;
    }
    for (; k + U <= K; k += U)
        step_sweep_block<T, M, false>(a, k, w, ldw, out, c0, c1, prefetch && k + 2 * U <= rows_in_memory);
    for (; k < K; ++k)
        for (int m = 0; m < M; ++m) {
            const T x = a[m][k];
            const T* wk = w + k * ldw;
            idx c = c0;
            for (; c + L <= c1; c += L) store<T>(out[m] + c, load<T>(out[m] + c) + splat<T>(x) * load<T>(wk + c));
            for (; c < c1; ++c) out[m][c] += x * wk[c];
        }
}

// Rows [k0, k1) of the layer's stacked weights [wx; wh] (D + H rows, each H wide) times the
// same entries of the rows' stacked inputs [in; h], for M rows: part[m][0:H] = that sum.
template <class T, int M>
static void step_rows_part(const StepLayer<T>& layer, const T* const (&in)[M], const T* const (&h)[M], idx k0, idx k1,
                           T* const (&part)[M], idx H) {
    const idx D = layer.wx.rows;
    bool fresh = imin(k1, D) - k0 >= kStepSweepRows || (k0 >= D && k1 - k0 >= kStepSweepRows);
    if (!fresh)
        for (int m = 0; m < M; ++m)
            for (idx c = 0; c < H; ++c) part[m][c] = T(0);
    if (k0 < D) {
        const idx e = imin(k1, D);
        const T* a[M];
        for (int m = 0; m < M; ++m) a[m] = in[m] + k0;
        step_sweep<T, M>(a, e - k0, layer.wx.data + k0 * layer.wx.ld, layer.wx.ld, part, 0, H, fresh, D - k0);
        fresh = false;
    }
    if (k1 > D) {
        const idx s = imax(k0, D) - D;
        const T* a[M];
        for (int m = 0; m < M; ++m) a[m] = h[m] + s;
        step_sweep<T, M>(a, k1 - D - s, layer.wh.data + s * layer.wh.ld, layer.wh.ld, part, 0, H, fresh, H - s);
    }
}

template <class T, int M>
static void step_block_part(const StepArgs<T>& a, idx l, idx n, idx k0, idx k1, T* part, idx ld) {
    const T *in[M], *h[M];
    T* p[M];
    for (int m = 0; m < M; ++m) {
        in[m] = l == 0 ? a.x.data + (n + m) * a.x.ld : a.out.at(l - 1, n + m);
        h[m] = a.h.at(l, n + m);
        p[m] = part + m * ld;
    }
    step_rows_part<T, M>(a.layers[l], in, h, k0, k1, p, a.layers[l].wh.cols);
}

// How a layer's K stacked weight rows [wx; wh] are cut: `count` chunks, the power of two at
// least `team` (the most threads the step's shape can use), but at most kStepChunks and each
// chunk at least kStepChunkMinRows rows of whole kStepSweepRows blocks; chunk j is rows
// [begin(j), begin(j + 1)). It depends on the shape only, never on the team that runs it. (Each
// chunk costs ~70 cycles more than sweeping on: 16 chunks where one thread does all the work
// made float32 H = 256 3.15 -> 3.6 µs.)
struct StepChunks {
    idx K, blocks, count, offset;  // K rows from stacked row `offset`
    idx begin(idx j) const { return offset + imin(K, blocks * j / count * kStepSweepRows); }
};
static inline StepChunks step_chunks(idx K, idx team, idx offset = 0) {
    idx count = 1;
    while (count < team && count * 2 <= kStepChunks && count * 2 * kStepChunkMinRows <= K) count *= 2;
    return {K, (K + kStepSweepRows - 1) / kStepSweepRows, count, offset};
}

// Rows [n0, n0 + rows) of layer l, chunk j: part (rows x ld) = the chunk's sums.
template <class T>
static void step_chunk(const StepArgs<T>& a, idx l, const StepChunks& ch, idx j, idx n0, idx rows, T* part, idx ld) {
    const idx k0 = ch.begin(j), k1 = ch.begin(j + 1);
    idx n = 0;
    for (; n + kStepRows <= rows; n += kStepRows)
        step_block_part<T, kStepRows>(a, l, n0 + n, k0, k1, part + n * ld, ld);
    for (; n < rows; ++n) step_block_part<T, 1>(a, l, n0 + n, k0, k1, part + n * ld, ld);
}

template <class T>
static void add_rows(T* dst, const T* src, idx rows, idx ld, idx H) {
    for (idx n = 0; n < rows; ++n)
        for_each_vector<T>(0, H,
                           [&](const auto& io) { io.put(dst + n * ld, io.get(dst + n * ld) + io.get(src + n * ld)); });
}

// A thread's chunks [j0, j1) (an aligned run of a power of two of them) summed pairwise, as the
// nodes of a binary tree over all the layer's chunks: a stack of partial sums, the two on top
// added whenever they are sibling nodes of the same size. The root of the thread's subtree ends
// in `root`; `stack` holds the others (log2(j1 - j0) blocks of rows x ld). `backwards`: the
// chunks from last to first, the same tree (each sibling pair added the other way round,
// which IEEE addition does not tell apart), so the same bits (but for which of two NaNs a sum
// of them keeps).
template <class T>
static void step_subtree(const StepArgs<T>& a, idx l, const StepChunks& ch, idx j0, idx j1, idx n0, idx rows, T* root,
                         T* stack, idx ld, bool backwards) {
    const idx block = rows * ld;
    idx size[kStepChunkLevels + 1];
    int depth = 0;
    for (idx i = j0; i < j1; ++i) {
        const idx j = backwards ? j0 + j1 - 1 - i : i;
        T* top = depth == 0 ? root : stack + (depth - 1) * block;
        step_chunk<T>(a, l, ch, j, n0, rows, top, ld);
        size[depth++] = 1;
        while (depth >= 2 && size[depth - 1] == size[depth - 2]) {
            T* left = depth == 2 ? root : stack + (depth - 3) * block;
            add_rows<T>(left, stack + (depth - 2) * block, rows, ld, a.layers[l].wh.cols);
            size[depth - 2] *= 2;
            --depth;
        }
    }
}

// Columns [c0, c1) of rows [n0, n0 + rows) of layer l's new state: the team's subtree roots
// (`roots`, `root_stride` apart) added pairwise, the bias, and the cell: the vanilla cell's
// activation, an LSTM's gates (blocks H apart) and cell update, or a GRU's (its roots sum
// h·Wh only; x·Wx is the pairwise sum of the `x_team` roots at `x_roots`, as far apart);
// stored to out and to the carried state.
template <class T, StepCell Cell, class Act>
static void step_finish(const StepArgs<T>& a, idx l, int team, const T* roots, idx root_stride, int x_team,
                        const T* x_roots, idx ld, idx n0, idx rows, idx c0, idx c1) {
    const T* b = a.layers[l].b;
    const idx H = a.h.cols;
    for (idx n = 0; n < rows; ++n) {
        T* out = a.out.at(l, n0 + n);
        T* h = a.h.at(l, n0 + n);
        const T* part = roots + n * ld;
        for_each_vector<T>(c0, c1, [&](const auto& io) {
            // Gate block `gate` of the sum of `count` roots from `first` (added pairwise);
            // `biased` adds a bias's block.
            auto pairwise = [&](const T* first, int count, idx gate) {
                Vec<T> v[kStepChunks];
                v[0] = io.get(first + gate * H);  // (count >= 1)
                for (int t = 1; t < count; ++t) v[t] = io.get(first + gate * H + t * root_stride);
                for (int w = 1; w < count; w *= 2)
                    for (int t = 0; t + w < count; t += 2 * w) v[t] += v[t + w];
                return v[0];
            };
            auto roots_sum = [&](idx gate) { return pairwise(part, team, gate); };
            auto biased = [&](Vec<T> s, const T* bias, idx gate) { return bias ? s + io.get(bias + gate * H) : s; };
            auto sum = [&](idx gate) { return biased(roots_sum(gate), b, gate); };  // x·Wx + h·Wh + b
            if constexpr (Cell == StepCell::gru) {
                const T* xr = x_roots + n * ld;
                auto input = [&](idx gate) { return biased(pairwise(xr, x_team, gate), b, gate); };        // x·Wx + b
                auto recurrent = [&](idx gate) { return biased(roots_sum(gate), a.layers[l].bh, gate); };  // h·Wh + bh
                const T one = 1;
                const Vec<T> r = vsigmoid<T>(input(0) + recurrent(0));
                const Vec<T> z = vsigmoid<T>(input(1) + recurrent(1));
                const Vec<T> nn = vtanh<T>(input(2) + r * recurrent(2));
                const Vec<T> hn = z * io.get(h) + (one - z) * nn;
                io.put(out, hn);
                io.put(h, hn);
            } else if constexpr (Cell == StepCell::lstm) {
                T* c = a.c.at(l, n0 + n);
                const Vec<T> i = vsigmoid<T>(sum(0)), f = vsigmoid<T>(sum(1)), g = vtanh<T>(sum(2));
                const Vec<T> o = vsigmoid<T>(sum(3));
                const Vec<T> cn = f * io.get(c) + i * g, hn = o * vtanh<T>(cn);
                io.put(c, cn);
                io.put(out, hn);
                io.put(h, hn);
            } else {
                const Vec<T> s = Act::template apply<T>(sum(0));
                io.put(out, s);
                io.put(h, s);
            }
        });
    }
}

// Whether a step that would run on a team runs on it or on the calling thread alone, chosen by
// timing both, for each stepping layer (its weights' address and rows) of the calling thread:
// what a second thread gains depends on what a line costs to move between the cores, and that
// changes under a virtual machine's feet. (Zen 4 KVM guest: a line's round trip between the two
// vCPUs took ~90 ns for a while, then ~390 ns for a while; float32 H = 256, N = 1 took 2.6 µs
// on two threads and 3.3 on one in the first state, 5.6 on two in the second.) The team's
// choice is what the rules above made; after kStepTrialFirst steps, and then every
// kStepTrialEvery, kStepTrialSteps steps run the other way, and the way with the lower mean
// time per step is taken. A step's bits do not depend on it (the chunks are the same).
struct StepTeamTrial {
    struct Layer {
        const void* weights = nullptr;
        idx rows = 0;
        long long mean_ns[2] = {0, 0};  // a step's time on the team [0] and alone [1], decaying means (0: none yet)
        unsigned steps = 0, trial_left = 0;
        unsigned next_trial = kStepTrialFirst, every = kStepTrialEvery;  // steps before the next trial, between trials
        bool trial_alone = false, last_alone = false;
        bool way_alone = false;  // the way of the last step that was not a trial's
        bool untimed = false;    // the next step: the first on the team after a pause (a helper's wake-up)
    };
    Layer layers[kStepTrialLayers];
    unsigned replace = 0;

    Layer& layer(const void* weights, idx rows) {
        for (Layer& l : layers)
            if (l.weights == weights && l.rows == rows) return l;
        Layer& l = layers[replace++ % kStepTrialLayers];
        l = Layer{};
        l.weights = weights;
        l.rows = rows;
        return l;
    }
    static bool better_alone(const Layer& l) { return l.mean_ns[0] && l.mean_ns[1] && l.mean_ns[1] < l.mean_ns[0]; }
    static bool alone(Layer& l) {
        if (l.trial_left == 0 && l.steps == l.next_trial) {
            l.trial_left = kStepTrialSteps;
            l.trial_alone = !better_alone(l);
        }
        return l.trial_left ? l.trial_alone : better_alone(l);
    }
    // The first step after a change of way is not timed (its caches hold the other way's share).
    // A trial that finds the way taken still the faster doubles the steps to the next one: up
    // to kStepTrialEveryMost after a trial of the team (its helpers sleep between such trials,
    // and the first step of each pays their wake-up), up to kStepTrialAloneEveryMost after a
    // trial alone (each costs its steps' difference).
    static void record(Layer& l, bool alone, long long ns) {
        ++l.steps;
        if (!l.trial_left && alone != l.way_alone) {
            // The way changed (on the means, or after a trial it won): the trials of the
            // other way start again from kStepTrialEvery.
            l.way_alone = alone;
            l.every = kStepTrialEvery;
            l.next_trial = l.steps + l.every;
        }
        if (l.trial_left && --l.trial_left == 0) {
            const bool stays = l.trial_alone != better_alone(l);  // the trial's way lost
            const unsigned most = l.trial_alone ? kStepTrialAloneEveryMost : kStepTrialEveryMost;
            l.every = stays ? imin(2 * l.every, most) : kStepTrialEvery;
            l.next_trial = l.steps + l.every;
        }
        if (alone == l.last_alone && !l.untimed) {
            // A step that took more than 1.5x the mean (a thread preempted, an interrupt)
            // counts as 1.5x: one such step would otherwise outweigh many.
            long long& m = l.mean_ns[alone];
            m = m ? m + (imin(ns, m + m / 2) - m) / 4 : ns;
        }
        l.last_alone = alone;
        l.untimed = false;
    }
};

// Act: the vanilla cell's activation (the gated cells have their own nonlinearities).
template <class T, StepCell Cell, class Act = ActIdentity>
static bool run_step(const StepArgs<T>& a) {
    const idx N = a.x.rows, H = a.h.cols, L = a.num_layers;
    if (N == 0 || H == 0 || L == 0) return true;
    constexpr int W = kLanes<T>;
    const idx vectors = (H + W - 1) / W;  // the last one may be partial
    // The weights of every layer (all gate blocks); a step's work is N times as many multiply-adds.
    const idx width = a.layers[0].wh.cols;  // G·H
    // A GRU's chunks cover h·Wh only (its n gate needs x·Wx apart): x·Wx has chunks and roots
    // of its own, cut and summed the same way.
    constexpr bool split_x = Cell == StepCell::gru;
    auto layer_chunks = [&](idx l, idx team) {
        const idx D = a.layers[l].wx.rows;
        return split_x ? step_chunks(H, team, D) : step_chunks(D + H, team);
    };
    idx weights = 0;
    for (idx l = 0; l < L; ++l) weights += (a.layers[l].wx.rows + H) * width;
    // Chunks enough for the weights to stay in the caches of the threads that share them, and
    // two where a layer's sweep is worth two threads (kMinStepCallBytesPerThread; not more: each
    // chunk costs a little time on one thread): fixed by the weights alone, so a sample's bits
    // do not depend on the batch it steps in. Threads enough for the work too (two from
    // kMinStepWorkForTwoThreads multiply-adds, more from kMinStepCallWorkPerThread each); where
    // the rows are more than one block, the threads beyond what the cache needs take blocks of
    // rows rather than chunks, which need no barrier per block (N = 32, two threads, H = 256:
    // 40 µs split by chunks, 32 by blocks of rows).
    const idx row_blocks = (N + kStepBlockRows - 1) / kStepBlockRows;
    const idx bytes = weights * idx(sizeof(T)), share = core_cache_bytes() / kStepCacheShare;
    const idx cache_team = (bytes + share - 1) / share;
    const idx shape_team = imax(cache_team, imin(2, bytes / L / kMinStepCallBytesPerThread));
    const idx work = mul_sat(N, weights) / L;  // multiply-adds per layer
    const idx work_team = imax(work >= kMinStepWorkForTwoThreads ? 2 : 1, work / kMinStepCallWorkPerThread);
    idx fewest_chunks = kStepChunks;
    for (idx l = 0; l < L; ++l) fewest_chunks = imin(fewest_chunks, layer_chunks(l, shape_team).count);
    const idx wanted = imax(1, imin(idx(a.threads < 1 ? 1 : a.threads), imax(work_team, shape_team)));
    const idx chunk_cap = imin(imin(wanted, fewest_chunks), imin(vectors, row_blocks > 1 ? cache_team : kStepChunks));
    idx chunk_team = 1;  // threads per row block: a power of two, so that each one's chunks are a subtree
    while (chunk_team * 2 <= chunk_cap) chunk_team *= 2;
    idx groups = imax(1, imin(wanted / chunk_team, row_blocks));
    // The team only while steps come back to back (kStepTeamIdleNs): this calling thread's.
    // Within kStepAfterOpenmpNs of this thread's last OpenMP region, whose helpers may still
    // spin on the CPUs our own would take, on that region's runtime, and only where the weights
    // need two cores' caches or the work is worth its dearer start (kMinStepCallWorkPerThread);
    // otherwise on our own helpers, where the weights are over kStepTrialCachePercent of one
    // core's L2 always, else where that has been measured faster than one thread
    // (StepTeamTrial; a trial alone sweeps all of weights that one L2 cannot hold, and leaves
    // each core's share half evicted: float64 H = 512 with trials took 16.8 µs a step against
    // 14.8 without).
    static thread_local long long previous_step_end_ns = 0;
    static thread_local StepTeamTrial trial;
    StepTeamTrial::Layer* tried = nullptr;
    bool alone = false, on_openmp = false;
    const bool wants_team = chunk_team * groups > 1;
    const long long start_ns = wants_team ? monotonic_ns() : 0;
    const bool one_cache_holds = bytes <= core_cache_bytes() * kStepTrialCachePercent / 100;
    const bool idle = wants_team && start_ns - previous_step_end_ns > kStepTeamIdleNs;
    if (wants_team && !idle && start_ns - last_openmp_region_end_ns() < kStepAfterOpenmpNs) {
        on_openmp = true;
        alone = cache_team <= 1 && work < 2 * kMinStepCallWorkPerThread;
    } else if (idle || (wants_team && spinning_team_away())) {
        // The helper is asleep, or has not come back since a step was taken back from it
        // (below): alone, and the team's next step, on caches that lost its share, not timed.
        alone = true;
        if (one_cache_holds) trial.layer(a.layers[0].wh.data, N).untimed = true;
    } else if (wants_team && one_cache_holds) {
        tried = &trial.layer(a.layers[0].wh.data, N);
        alone = StepTeamTrial::alone(*tried);
    }
    if (alone) chunk_team = groups = 1;
    // Each round of blocks of rows sums every thread's chunks in the other order from the round
    // before, this calling thread's previous step's last round included, so that it starts on
    // the chunks the one before ended on, still in the core's L2 where a thread's share of the
    // weights is larger than it (the same bits: step_subtree). Zen 3 (512 KB L2), N = 1, D = 32,
    // one thread, blocks of 1,000 steps alternating with a scratch build's switch, median time
    // ratio: float32 H = 384 0.90x, H = 512 0.89-0.96x, float64 H = 256 0.92x, H = 512
    // 0.95-0.99x, LSTM float32 H = 256 0.92-0.94x, GRU H = 512 (3.2 MB) 0.99-1.00x; two threads
    // float32 H = 512 0.94x, H = 1024 0.96x, float64 H = 256 0.97x, LSTM float32 H = 256 0.95x.
    static thread_local bool next_backwards = false;
    const bool first_backwards = next_backwards;  // the team reads this copy, not the thread_local
    const idx rounds = L * ((row_blocks + groups - 1) / groups);
    next_backwards = first_backwards != (rounds % 2 == 1);  // not the direction of the last round
    // Rows are taken kStepBlockRows at a time, by `groups` groups of chunk_team threads; the
    // roots of a round of blocks in one of two sets while the next round's are summed into the
    // other (one barrier per round where a block's chunks are shared out). Rows of whole
    // 64-byte lines.
    constexpr idx kLine = 64 / sizeof(T);
    const idx ld = (width + kLine - 1) / kLine * kLine, rows = imin(N, kStepBlockRows), block = rows * ld;
    const idx nt = chunk_team * groups, per_thread = kStepChunkLevels * block;  // a thread's stack
    T* roots = scratch<T, kStepSums>((split_x ? 4 : 2) * nt * block + nt * per_thread);
    if (!roots) return false;
    T* stacks = roots + 2 * nt * block;
    T* x_roots = stacks + nt * per_thread;  // a GRU's x·Wx: laid out as roots
    StepBarrier barrier(scratch<BarrierSlot, kStepBarrier>(nt), nt);
    if (!barrier) return false;
    bool taken_back = false;
    auto body = [&](int team, int tid) {
        // A runtime that gave fewer threads than asked: the groups that are whole work, the
        // other threads only meet the barriers.
        const idx kt = team == nt ? chunk_team : 1, gt = team == nt ? groups : 1;
        const idx g = tid / kt, k = tid % kt;
        const bool works = g < gt;
        idx v0, v1;
        thread_range(vectors, kt, k, v0, v1);
        const idx c0 = v0 * W, c1 = imin(v1 * W, H);
        int set = 0;
        for (idx l = 0; l < L; ++l) {
            const StepChunks ch = layer_chunks(l, shape_team);
            idx j0, j1;
            thread_range(ch.count, kt, k, j0, j1);
            // A GRU's x·Wx chunks: as many as its D rows take, so fewer than the team's threads
            // when D is small; then thread k < count takes chunk k, and the others none.
            const StepChunks xch = step_chunks(split_x ? a.layers[l].wx.rows : 0, shape_team);
            const int x_team = int(imin(xch.count, kt));
            idx x0 = imin(k, xch.count), x1 = imin(k + 1, xch.count);
            if (xch.count >= kt) thread_range(xch.count, kt, k, x0, x1);
            for (idx first = 0; first < row_blocks; first += gt, set ^= 1) {
                const bool back = first_backwards != bool(set);
                const idx n0 = (first + g) * rows, r = works ? imax(0, imin(rows, N - n0)) : 0;
                T* group_roots = roots + (set * team + g * kt) * block;
                T* group_x_roots = x_roots + (set * team + g * kt) * block;
                if (r)
                    step_subtree<T>(a, l, ch, j0, j1, n0, r, group_roots + k * block, stacks + tid * per_thread, ld,
                                    back);
                if (split_x && r && x0 < x1)
                    step_subtree<T>(a, l, xch, x0, x1, n0, r, group_x_roots + k * block, stacks + tid * per_thread, ld,
                                    back);
                // Every subtree of these rows is summed. Only where threads share the rows'
                // chunks: a group of one sums all of them itself (a barrier per round of 8 rows
                // had two threads 1.1-4x slower than one on many samples of small layers). At
                // the step's first barrier, before anything but scratch is written, a helper
                // that has not begun (the OS keeps it off its CPU: the Zen 4 VM's helpers waited
                // 1-4 ms there behind a busy thread) leaves the step to the calling thread.
                if (kt > 1 && l == 0 && first == 0) {
                    if (!barrier.wait_or_take_back(team, tid)) {
                        taken_back = true;
                        return;
                    }
                } else if (kt > 1) {
                    barrier.wait(team, tid);
                }
                if (r)
                    step_finish<T, Cell, Act>(a, l, kt, group_roots, block, x_team, group_x_roots, ld, n0, r, c0, c1);
            }
            if (team > 1 && l + 1 < L) barrier.wait(team, tid);  // layer l's new state is complete
        }
    };
    run_step_team(nt, kStepTeamIdleNs, on_openmp, body);
    // The whole step, alone: the same chunks, the same bits. (The trial counts it as the team's
    // step, the wait included, at most 1.5x the team's mean: StepTeamTrial::record.)
    if (taken_back) run_team(1, body);
    previous_step_end_ns = monotonic_ns();
    if (tried) StepTeamTrial::record(*tried, alone, previous_step_end_ns - start_ns);
    return true;
}

template <class T>
static bool step_kernel(const StepArgs<T>& a) {
    if (a.cell == StepCell::lstm) return run_step<T, StepCell::lstm>(a);
    if (a.cell == StepCell::gru) return run_step<T, StepCell::gru>(a);
    return a.act == Activation::relu ? run_step<T, StepCell::vanilla, ActRelu>(a)
                                     : run_step<T, StepCell::vanilla, ActTanh>(a);
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
