// The vanilla cell, h_t = act(xw_t + h_{t-1} . Wh), as the recurrence driver's two instances:
// forward (the step's tile plus xw_t, through the activation) and backward (the step's tile
// plus dh_t, times the activation's derivative). A gated cell (LSTM, GRU) adds its own pair.
#pragma once
#include "activations.hpp"
#include "recurrence.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

// The first row at its last step at time t of a backward (the rows from there up to those step
// t runs have no step t+1): all at the last time step, else active[t+1] (none without active).
static inline idx entering_rows(const idx* active, idx t, idx steps) {
    if (t == steps - 1) return 0;
    return active ? active[t + 1] : PTRDIFF_MAX;
}

// The outputs of a backward call over no steps: the gradients w.r.t. the initial state are
// those w.r.t. the final one (or zeros).
template <class T>
static void copy_or_zero(const Mat<T>& dst, const Mat<const T>& src) {
    for (idx n = 0; n < dst.rows; ++n)
        for (idx j = 0; j < dst.cols; ++j) dst.data[n * dst.ld + j] = src.data ? src.data[n * src.ld + j] : T(0);
}

// A backward's gradient w.r.t. the initial state of the rows that have no step at all (active[0]
// and beyond): the one w.r.t. their final state, or zeros.
template <class T>
static void without_steps(const Mat<T>& d0, const Mat<const T>& d_last, const idx* active) {
    if (!active) return;
    const idx n = active[0];
    copy_or_zero<T>({d0.data + n * d0.ld, d0.rows - n, d0.cols, d0.ld},
                    {d_last.data ? d_last.data + n * d_last.ld : nullptr, d0.rows - n, d0.cols, d_last.ld});
}

template <class T, class Act>
struct ForwardEpilogue {  // out = act(acc + xw)
    const T* xw;
    idx xw_ld;
    T* out;
    idx out_ld;
    void prefetch(idx row0, int nrows, idx col0) const {
        for (int r = 0; r < nrows; ++r) __builtin_prefetch(xw + (row0 + r) * xw_ld + col0);
    }
    // Every row's xw is read before the tile stores any row: `out` may be `xw` itself, and where
    // a row is narrower than a vector (H < 16 in float32, 8 in float64) a row's masked store spans
    // the next rows' loads, which must then wait until it reaches the cache (a masked store does
    // not forward to loads): vanilla forward, N = 4096, H = 4, one thread, 2.5x the time in the
    // tiles of H = 16, which have the same count of tiles and 4x the FMAs.
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        PRF_UNROLL_TILE_ROWS
        for (int r = 0; r < M && r < nrows; ++r) {
            const T* x = xw + (row0 + r) * xw_ld;
            for_tile_vectors<T, NVT>(acc[r], col0, ncols, [&](const auto& io, Vec<T>& v) { v = v + io.get(x); });
        }
        PRF_UNROLL_TILE_ROWS
        for (int r = 0; r < M && r < nrows; ++r) {
            T* o = out + (row0 + r) * out_ld;
            for_tile_vectors<T, NVT>(acc[r], col0, ncols,
                                     [&](const auto& io, Vec<T> v) { io.put(o, Act::template apply<T>(v)); });
        }
    }
};

template <class T, class Act>
struct BackwardEpilogue {  // da = (acc + dh) * act'(h); (dh [+ dh_last]) * act'(h) in rows >= enter
    const T* dh;
    idx dh_ld;
    const T* h;
    idx h_ld;
    const T* extra;  // dh_last (or null: zeros)
    idx extra_ld;
    T* da;
    idx da_ld;
    idx enter;  // rows from here are at their last step: no da_{t+1} (acc, not read), dh_last instead
    void prefetch(idx row0, int nrows, idx col0) const {
        for (int r = 0; r < nrows; ++r) {
            __builtin_prefetch(dh + (row0 + r) * dh_ld + col0);
            __builtin_prefetch(h + (row0 + r) * h_ld + col0);
        }
    }
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        PRF_UNROLL_TILE_ROWS
        for (int r = 0; r < M && r < nrows; ++r) {
            const T* g = dh + (row0 + r) * dh_ld;
            const T* hv = h + (row0 + r) * h_ld;
            const bool enters = row0 + r >= enter;
            const T* e = enters && extra ? extra + (row0 + r) * extra_ld : nullptr;
            T* o = da + (row0 + r) * da_ld;
            for_tile_vectors<T, NVT>(acc[r], col0, ncols, [&](const auto& io, Vec<T> s) {
                if (enters) s = Vec<T>{};
                s += io.get(g);
                if (e) s = s + io.get(e);
                io.put(o, s * Act::template grad<T>(io.get(hv)));
            });
        }
    }
};

template <class T, class Act>
struct VanillaForward {  // step i is time t = i: out_t = act(xw_t + out_{t-1} . Wh)
    const ForwardArgs<T>& a;
    idx rows(idx t) const { return running_rows(a.active, t, a.out.rows); }
    StepOperand<T> operand(idx t) const {
        if (t > 0) return {a.out.at(t - 1, 0), a.out.row_stride, a.out.cols};
        // At t = 0 without h0 the product is zero: K = 0, and A is never read.
        if (!a.h0.data) return {a.out.at(0, 0), a.h0.ld, 0};
        return {a.h0.data, a.h0.ld, a.out.cols};
    }
    ForwardEpilogue<T, Act> epilogue(idx t, int) const {
        return {a.xw.at(t, 0), a.xw.row_stride, a.out.at(t, 0), a.out.row_stride};
    }
    void after_products(idx, idx, idx, idx, idx) const {}
    template <class Sweep>
    void finish(Sweep&) const {}
};

template <class T, class Act>
struct VanillaBackward {  // step i is time t = T-1-i: da_t = (dh_t + da_{t+1} . Wh^T) * act'(h_t)
    const BackwardArgs<T>& a;
    idx rows(idx i) const { return running_rows(a.active, a.da.steps - 1 - i, a.da.rows); }
    StepOperand<T> operand(idx i) const {
        const idx t = a.da.steps - 1 - i;
        // The last time step has no da_{t+1}: K = 0 and A (a dummy) is never read.
        if (i == 0) return {a.da.at(t, 0), a.da.row_stride, 0};
        return {a.da.at(t + 1, 0), a.da.row_stride, a.da.cols};
    }
    BackwardEpilogue<T, Act> epilogue(idx i, int) const {
        const idx t = a.da.steps - 1 - i;
        // clang-format off
        return {a.dh.at(t, 0), a.dh.row_stride,
                a.h.at(t, 0), a.h.row_stride,
                a.dh_last.data, a.dh_last.ld,
                a.da.at(t, 0), a.da.row_stride,
                entering_rows(a.active, t, a.da.steps)};
        // clang-format on
    }
    void after_products(idx, idx, idx, idx, idx) const {}
    template <class Sweep>
    void finish(Sweep& sweep) const {  // dh0 = da_0 . Wh^T
        sweep(StepOperand<T>{a.da.at(0, 0), a.da.row_stride, a.da.cols}, StoreEpilogue<T>{a.dh0.data, a.dh0.ld});
    }
};

template <class T, class Act>
static bool vanilla_forward(const ForwardArgs<T>& a) {
    const RecurrenceShape<T> s{a.out.steps, a.out.rows, a.out.cols, a.wh, false, a.threads, a.interrupt, a.out.cols};
    return run_recurrence<T>(s, VanillaForward<T, Act>{a});
}

template <class T, class Act>
static bool vanilla_backward(const BackwardArgs<T>& a) {
    const idx steps = a.da.steps, N = a.da.rows, H = a.da.cols;
    if (N == 0 || H == 0) return true;
    if (steps == 0) {
        copy_or_zero<T>(a.dh0, a.dh_last);
        return true;
    }
    const RecurrenceShape<T> s{steps, N, H, a.wh, true, a.threads, a.interrupt, H};
    if (!run_recurrence<T>(s, VanillaBackward<T, Act>{a})) return false;
    without_steps(a.dh0, a.dh_last, a.active);
    return true;
}

template <class T>
static bool forward_kernel(const ForwardArgs<T>& a) {
    return a.act == Activation::relu ? vanilla_forward<T, ActRelu>(a) : vanilla_forward<T, ActTanh>(a);
}
template <class T>
static bool backward_kernel(const BackwardArgs<T>& a) {
    return a.act == Activation::relu ? vanilla_backward<T, ActRelu>(a) : vanilla_backward<T, ActTanh>(a);
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
