// What the gated cells (cell_lstm.hpp, cell_gru.hpp) share: their steps run on the recurrence
// driver like the vanilla cell's, with B split into gate blocks forward (a thread owns every
// gate of its hidden units, so the elementwise update after the products needs no barrier)
// and Wh^T (all gates deep) backward, where the whole cell derivative is the product's epilogue.
#pragma once
#include "cell_vanilla.hpp"  // its ForwardEpilogue, with ActIdentity, adds xw_t to a product

namespace prf {
namespace PRF_ISA_NAMESPACE {

// Row n of an optional matrix (null when the matrix is).
template <class T>
static inline T* row_of(const Mat<T>& m, idx n) {
    return m.data ? m.data + n * m.ld : nullptr;
}

template <class T>
struct AddBiasEpilogue {  // out = acc (+ bias, indexed by column, when not null)
    const T* bias;
    T* out;
    idx out_ld;
    void prefetch(idx, int, idx) const {}
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        PRF_UNROLL_TILE_ROWS
        for (int r = 0; r < M && r < nrows; ++r) {
            T* o = out + (row0 + r) * out_ld;
            for_tile_vectors<T, NVT>(acc[r], col0, ncols,
                                     [&](const auto& io, Vec<T> v) { io.put(o, bias ? v + io.get(bias) : v); });
        }
    }
};

// The forward step's left factor, h_{t-1} (h0, or nothing: K = 0, at t = 0), as for the
// vanilla cell.
template <class T>
static inline StepOperand<T> previous_state(const Seq<T>& hs, const Mat<const T>& h0, idx t) {
    if (t > 0) return {hs.at(t - 1, 0), hs.row_stride, hs.cols};
    if (!h0.data) return {hs.at(0, 0), h0.ld, 0};
    return {h0.data, h0.ld, hs.cols};
}

// The backward step's left factor, the gradient of step t+1's pre-activations (none at the
// last step: K = 0).
template <class T>
static inline StepOperand<T> next_gradient(const Seq<T>& d, idx i) {
    const idx t = d.steps - 1 - i;
    if (i == 0) return {d.at(t, 0), d.row_stride, 0};
    return {d.at(t + 1, 0), d.row_stride, d.cols};
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
