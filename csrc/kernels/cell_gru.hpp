// The GRU cell (rnn.hpp, PyTorch's form: the reset gate applied after the recurrent product),
// forward and backward, on the recurrence driver.
//   forward : per step, the three blocks of v_t = h_{t-1} . Wh + bh into `gates`, then each
//             thread's hidden units: r, z, n and h_t, keeping r, z, n, v_n for backward
//   backward: per step, dv_{t+1} . Wh^T (depth 3H) and, in the same epilogue, the cell
//             derivative; dh_t * z_t, the state's direct path, is carried in dh0
#pragma once
#include "cell_gated.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

template <class T>
struct GruForward {
    const GruForwardArgs<T>& a;
    idx rows(idx t) const { return running_rows(a.active, t, a.hs.rows); }
    StepOperand<T> operand(idx t) const { return previous_state<T>(a.hs, a.h0, t); }
    AddBiasEpilogue<T> epilogue(idx t, int b) const {  // gates_b = v_b = h_{t-1} . Wh_b + bh_b
        const idx off = b * a.hs.cols;
        return {a.bh ? a.bh + off : nullptr, a.gates.at(t, 0) + off, a.gates.row_stride};
    }
    void after_products(idx t, idx n0, idx n1, idx j0, idx j1) const {
        const idx H = a.hs.cols;
        for (idx n = n0; n < n1; ++n) {
            const T* u = a.xw.at(t, n);
            T* g = a.gates.at(t, n);
            const T* h_prev = t > 0 ? a.hs.at(t - 1, n) : row_of(a.h0, n);
            T* h = a.hs.at(t, n);
            // n waits for r: two passes, as in the LSTM's forward (cell_lstm.hpp)
            for_each_vector<T>(j0, j1, [&](const auto& io) {
                io.put(g, vsigmoid<T>(io.get(u) + io.get(g)));
                io.put(g + H, vsigmoid<T>(io.get(u + H) + io.get(g + H)));
                io.put(g + 3 * H, io.get(g + 2 * H));
            });
            for_each_vector<T>(j0, j1, [&](const auto& io) {
                const T one = 1;
                const Vec<T> r = io.get(g), z = io.get(g + H), vn = io.get(g + 3 * H);
                const Vec<T> nn = vtanh<T>(io.get(u + 2 * H) + r * vn);
                io.put(g + 2 * H, nn);
                Vec<T> hn = (one - z) * nn;
                if (h_prev) hn = z * io.get(h_prev) + hn;
                io.put(h, hn);
            });
        }
    }
    template <class Sweep>
    void finish(Sweep&) const {}
};

template <class T>
struct GruBackwardEpilogue {  // the cell derivative at step t, given dh_t's recurrent product
    const GruBackwardArgs<T>& a;
    idx t;
    idx enter;  // rows from here are at their last step: acc (no dv_{t+1}) is not read
    void prefetch(idx, int, idx) const {}
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        const idx H = a.hs.cols;
        PRF_UNROLL_TILE_ROWS
        for (int r = 0; r < M && r < nrows; ++r) {
            const idx n = row0 + r;
            const T* dh_out = a.dhs.at(t, n);
            const T* g = a.gates.at(t, n);
            const T* h_prev = t > 0 ? a.hs.at(t - 1, n) : row_of(a.h0, n);
            // dh0 carries dh_{t+1} * z_{t+1} from the step before (each thread its own units, in
            // its rows of them this step: handed on across the step's barrier; dh_last, or zeros,
            // until a row's last step).
            T* carry = a.dh0.data + n * a.dh0.ld;
            const bool enters = n >= enter;
            T* du = a.du.at(t, n);
            T* dv = a.dv.at(t, n);
            for_tile_vectors<T, NVT>(acc[r], col0, ncols, [&](const auto& io, Vec<T> dh) {
                const T one = 1;
                if (enters) dh = Vec<T>{};
                dh += io.get(dh_out);
                dh += io.get(carry);
                const Vec<T> rr = io.get(g), z = io.get(g + H), nn = io.get(g + 2 * H), vn = io.get(g + 3 * H);
                const Vec<T> hp = h_prev ? io.get(h_prev) : Vec<T>{};
                const Vec<T> da_n = dh * (one - z) * (one - nn * nn);
                const Vec<T> da_r = da_n * vn * rr * (one - rr);
                const Vec<T> da_z = dh * (hp - nn) * z * (one - z);
                io.put(du, da_r);
                io.put(du + H, da_z);
                io.put(du + 2 * H, da_n);
                io.put(dv, da_r);
                io.put(dv + H, da_z);
                io.put(dv + 2 * H, da_n * rr);
                io.put(carry, dh * z);
            });
        }
    }
};

template <class T>
struct GruBackward {  // step i is time t = T-1-i
    const GruBackwardArgs<T>& a;
    idx rows(idx i) const { return running_rows(a.active, a.dv.steps - 1 - i, a.dv.rows); }
    StepOperand<T> operand(idx i) const { return next_gradient<T>(a.dv, i); }
    GruBackwardEpilogue<T> epilogue(idx i, int) const {
        const idx t = a.dv.steps - 1 - i;
        return {a, t, entering_rows(a.active, t, a.dv.steps)};
    }
    void after_products(idx, idx, idx, idx, idx) const {}
    template <class Sweep>
    void finish(Sweep& sweep) const {  // dh0 = dh_0 * z_0 (carried) + dv_0 . Wh^T
        sweep(StepOperand<T>{a.dv.at(0, 0), a.dv.row_stride, a.dv.cols},
              ForwardEpilogue<T, ActIdentity>{a.dh0.data, a.dh0.ld, a.dh0.data, a.dh0.ld});
    }
};

template <class T>
static bool gru_forward_kernel(const GruForwardArgs<T>& a) {
    const idx H = a.hs.cols;
    const RecurrenceShape<T> s{a.hs.steps, a.hs.rows, H, a.wh, false, a.threads, a.interrupt, H, 3};
    return run_recurrence<T>(s, GruForward<T>{a});
}

template <class T>
static bool gru_backward_kernel(const GruBackwardArgs<T>& a) {
    const idx steps = a.hs.steps, N = a.hs.rows, H = a.hs.cols;
    if (N == 0 || H == 0) return true;
    if (steps == 0) {
        copy_or_zero<T>(a.dh0, a.dh_last);
        return true;
    }
    copy_or_zero<T>(a.dh0, a.dh_last);  // the carry's start (and dh0 of the rows with no step)
    const RecurrenceShape<T> s{steps, N, H, a.wh, true, a.threads, a.interrupt, 3 * H, 1};
    return run_recurrence<T>(s, GruBackward<T>{a});
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
