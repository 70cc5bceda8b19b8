// The LSTM cell (rnn.hpp), forward and backward, on the recurrence driver.
//   forward : per step, the four gate blocks' products h_{t-1} . Wh_b added to xw_t into
//             `gates`, then each thread's hidden units: i, f, o = sigmoid, g = tanh,
//             c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)
//   backward: per step, dh_t's recurrent part da_{t+1} . Wh^T (depth 4H) and, in the same
//             epilogue, the whole cell derivative for the tile's units (dc carried in dc0)
#pragma once
#include "cell_gated.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

template <class T>
struct LstmForward {
    const LstmForwardArgs<T>& a;
    idx rows(idx t) const { return running_rows(a.active, t, a.hs.rows); }
    StepOperand<T> operand(idx t) const { return previous_state<T>(a.hs, a.h0, t); }
    ForwardEpilogue<T, ActIdentity> epilogue(idx t, int b) const {  // gates_b = xw_b + h_{t-1} . Wh_b
        const idx off = b * a.hs.cols;
        return {a.xw.at(t, 0) + off, a.xw.row_stride, a.gates.at(t, 0) + off, a.gates.row_stride};
    }
    void after_products(idx t, idx n0, idx n1, idx j0, idx j1) const {
        const idx H = a.hs.cols;
        for (idx n = n0; n < n1; ++n) {
            T* g = a.gates.at(t, n);
            const T* c_prev = t > 0 ? a.cs.at(t - 1, n) : row_of(a.c0, n);
            T* c = a.cs.at(t, n);
            T* h = a.hs.at(t, n);
            // Two passes over the units: in one, tanh(c_t) waited for the gates' activations,
            // a chain of two (~60 cycles of latency per vector) that the out-of-order window
            // could not cover; apart, each pass's vectors are independent (activations.hpp).
            for_each_vector<T>(j0, j1, [&](const auto& io) {
                const Vec<T> i = vsigmoid<T>(io.get(g)), f = vsigmoid<T>(io.get(g + H));
                const Vec<T> gg = vtanh<T>(io.get(g + 2 * H)), o = vsigmoid<T>(io.get(g + 3 * H));
                io.put(g, i);
                io.put(g + H, f);
                io.put(g + 2 * H, gg);
                io.put(g + 3 * H, o);
                Vec<T> cn = i * gg;
                if (c_prev) cn = f * io.get(c_prev) + cn;
                io.put(c, cn);
            });
            for_each_vector<T>(j0, j1, [&](const auto& io) { io.put(h, io.get(g + 3 * H) * vtanh<T>(io.get(c))); });
        }
    }
    template <class Sweep>
    void finish(Sweep&) const {}
};

template <class T>
struct LstmBackwardEpilogue {  // the cell derivative at step t, given dh_t's recurrent part
    const LstmBackwardArgs<T>& a;
    idx t;
    idx enter;  // rows from here are at their last step: dh_last comes in, acc (no da_{t+1}) is not read
    void prefetch(idx, int, idx) const {}
    // Never inlined, and its loop over the rows not unrolled (unlike the epilogues that GCC
    // inlines into the micro-kernel, whose unrolled rows keep the tile in registers:
    // microkernel.hpp). GCC 12 called this one anyway for whole tiles of 8 rows (the tile then
    // in memory either way), and unrolled those 8 rows were 23 KB of code (26 KB float64; about
    // half of it on the whole-tile path) run after every tile beside the micro-kernel's loop;
    // rolled, 2.8 KB (float64 3.1). noinline makes the tile-in-memory case the only one, for
    // every tile height and compiler. Zen 4, one thread, `_core.lstm_backward` T = 100, N = 32,
    // H = 256, float32, alternating processes, rolled (without noinline) against unrolled:
    // 0.955-0.987x the time in each of 12 pairs (median 0.97); float64 0.98x (2 pairs), 2
    // threads 0.97-0.99x (3 pairs). Likely the micro-kernel's loop no longer pushed out of the
    // decoded-op cache (no counters here to show it). The GRU's backward epilogue, also called
    // (15 KB unrolled), read the same either way.
    template <int M, int NVT>
    __attribute__((noinline)) void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        const idx H = a.cs.cols;
#pragma GCC unroll 1
        for (int r = 0; r < M && r < nrows; ++r) {
            const idx n = row0 + r;
            const T* dh_out = a.dhs.at(t, n);
            const T* g = a.gates.at(t, n);
            const T* c = a.cs.at(t, n);
            const T* c_prev = t > 0 ? a.cs.at(t - 1, n) : row_of(a.c0, n);
            const bool enters = n >= enter;
            const T* dh_extra = enters ? row_of(a.dh_last, n) : nullptr;
            // dc0 carries dc_{t+1} * f_{t+1} from the step before (each thread its own units, in
            // its rows of them this step: handed on across the step's barrier; dc_last, or zeros,
            // until a row's last step).
            T* dc_carry = a.dc0.data + n * a.dc0.ld;
            T* da = a.da.at(t, n);
            for_tile_vectors<T, NVT>(acc[r], col0, ncols, [&](const auto& io, Vec<T> dh) {
                const T one = 1;
                if (enters) dh = Vec<T>{};
                dh += io.get(dh_out);
                if (dh_extra) dh += io.get(dh_extra);
                const Vec<T> i = io.get(g), f = io.get(g + H), gg = io.get(g + 2 * H), o = io.get(g + 3 * H);
                const Vec<T> tc = vtanh<T>(io.get(c));
                const Vec<T> dc = dh * o * (one - tc * tc) + io.get(dc_carry);
                const Vec<T> cp = c_prev ? io.get(c_prev) : Vec<T>{};
                io.put(da, dc * gg * i * (one - i));
                io.put(da + H, dc * cp * f * (one - f));
                io.put(da + 2 * H, dc * i * (one - gg * gg));
                io.put(da + 3 * H, dh * tc * o * (one - o));
                io.put(dc_carry, dc * f);
            });
        }
    }
};

template <class T>
struct LstmBackward {  // step i is time t = T-1-i
    const LstmBackwardArgs<T>& a;
    idx rows(idx i) const { return running_rows(a.active, a.da.steps - 1 - i, a.da.rows); }
    StepOperand<T> operand(idx i) const { return next_gradient<T>(a.da, i); }
    LstmBackwardEpilogue<T> epilogue(idx i, int) const {
        const idx t = a.da.steps - 1 - i;
        return {a, t, entering_rows(a.active, t, a.da.steps)};
    }
    void after_products(idx, idx, idx, idx, idx) const {}
    template <class Sweep>
    void finish(Sweep& sweep) const {  // dh0 = da_0 . Wh^T (dc0 is already in place)
        sweep(StepOperand<T>{a.da.at(0, 0), a.da.row_stride, a.da.cols}, StoreEpilogue<T>{a.dh0.data, a.dh0.ld});
    }
};

template <class T>
static bool lstm_forward_kernel(const LstmForwardArgs<T>& a) {
    const idx H = a.hs.cols;
    const RecurrenceShape<T> s{a.hs.steps, a.hs.rows, H, a.wh, false, a.threads, a.interrupt, H, 4};
    return run_recurrence<T>(s, LstmForward<T>{a});
}

template <class T>
static bool lstm_backward_kernel(const LstmBackwardArgs<T>& a) {
    const idx steps = a.cs.steps, N = a.cs.rows, H = a.cs.cols;
    if (N == 0 || H == 0) return true;
    if (steps == 0) {
        copy_or_zero<T>(a.dh0, a.dh_last);
        copy_or_zero<T>(a.dc0, a.dc_last);
        return true;
    }
    copy_or_zero<T>(a.dc0, a.dc_last);  // the carry's start
    const RecurrenceShape<T> s{steps, N, H, a.wh, true, a.threads, a.interrupt, 4 * H, 1};
    if (!run_recurrence<T>(s, LstmBackward<T>{a})) return false;
    without_steps(a.dh0, a.dh_last, a.active);
    return true;
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
