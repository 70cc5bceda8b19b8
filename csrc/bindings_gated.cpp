// pyrnn_fast._core: the gated cells' kernels (LSTM, GRU). As in bindings.cpp, every array is
// checked (dtype, shape, strides, alignment, writability) against the sizes taken from the
// state sequence before the kernel runs, so that no call can make it address memory outside
// the arrays it was given.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "binding_helpers.hpp"

namespace prf_binding {
namespace {

// The (T, N, H) extent of a call, from its state sequence (hs or dhs), and the checked views
// of the other arguments against it. `fn` names the function in error messages.
struct Extent {
    std::string fn;
    idx T, N, H;

    Extent(const char* name, const py::array& states, const char* what) : fn(std::string("_core.") + name) {
        if (states.ndim() != 3)
            throw py::value_error(fn + ": " + what + ": expected a 3-D (T, N, H) array, got shape " +
                                  shape_str(states));
        T = states.shape(0), N = states.shape(1), H = states.shape(2);
    }
    // A (T, N, gates * H) sequence; writable ones are outputs.
    template <class T_, class P>
    prf::Seq<P> seq_of(py::array a, const char* what, idx gates, bool writable) const {
        const std::vector<idx> shape{T, N, gates * H};
        auto st = checked<T_>(a, (fn + ": " + what).c_str(), shape, writable);
        return seq<T_>(static_cast<P*>(writable ? a.mutable_data() : const_cast<void*>(a.data())), shape, st);
    }
    template <class T_>
    prf::Mat<const T_> weights(const py::array& a, idx gates) const {  // Wh, (H, gates * H)
        auto st = checked<T_>(a, (fn + ": wh (Wh)").c_str(), {H, gates * H}, false);
        return {static_cast<const T_*>(a.data()), H, gates * H, st[0]};
    }
    template <class T_>
    prf::Mat<T_> output_state(py::array a, const char* what) const {  // (N, H)
        auto st = checked<T_>(a, (fn + ": " + what).c_str(), {N, H}, true);
        return {static_cast<T_*>(a.mutable_data()), N, H, st[0]};
    }
    // An optional (N, H) state (None: zeros), kept alive by `keep`.
    template <class T_>
    prf::Mat<const T_> optional_state(const py::object& obj, py::array& keep, const char* what) const {
        prf::Mat<const T_> m{nullptr, N, H, 0};
        m.data = optional_array<T_>(obj, keep, fn + ": " + what, {N, H}, &m.ld);
        return m;
    }
};

template <class T>
void lstm_forward_typed(const py::array& xw, const py::array& wh, const py::object& h0, const py::object& c0,
                        const py::array& hs, const py::array& cs, const py::array& gates, int threads,
                        const py::object& active) {
    const Extent e("lstm_forward", hs, "hs");
    py::array h0a, c0a;
    prf::LstmForwardArgs<T> args{e.seq_of<T, const T>(xw, "xw (x @ Wx + b)", 4, false),
                                 e.weights<T>(wh, 4),
                                 e.optional_state<T>(h0, h0a, "h0"),
                                 e.optional_state<T>(c0, c0a, "c0"),
                                 e.seq_of<T, T>(hs, "hs", 1, true),
                                 e.seq_of<T, T>(cs, "cs (cell states)", 1, true),
                                 e.seq_of<T, T>(gates, "gates", 4, true),
                                 threads};
    std::vector<idx> rows;
    args.active = active_rows(active, rows, e.fn, e.T, e.N);
    run_kernel(args, prf::lstm_forward<T>);
}

template <class T>
void lstm_backward_typed(const py::array& dhs, const py::array& gates, const py::array& cs, const py::object& c0,
                         const py::array& wh, const py::object& dh_last, const py::object& dc_last, const py::array& da,
                         const py::array& dh0, const py::array& dc0, int threads, const py::object& active) {
    const Extent e("lstm_backward", dhs, "dhs");
    py::array c0a, dla, dca;
    prf::LstmBackwardArgs<T> args{e.seq_of<T, const T>(dhs, "dhs", 1, false),
                                  e.seq_of<T, const T>(gates, "gates", 4, false),
                                  e.seq_of<T, const T>(cs, "cs (cell states)", 1, false),
                                  e.optional_state<T>(c0, c0a, "c0"),
                                  e.weights<T>(wh, 4),
                                  e.optional_state<T>(dh_last, dla, "dh_last"),
                                  e.optional_state<T>(dc_last, dca, "dc_last"),
                                  e.seq_of<T, T>(da, "da (pre-activation gradient)", 4, true),
                                  e.output_state<T>(dh0, "dh0"),
                                  e.output_state<T>(dc0, "dc0"),
                                  threads};
    std::vector<idx> rows;
    args.active = active_rows(active, rows, e.fn, e.T, e.N);
    run_kernel(args, prf::lstm_backward<T>);
}

template <class T>
void gru_forward_typed(const py::array& xw, const py::array& wh, const py::object& bh, const py::object& h0,
                       const py::array& hs, const py::array& gates, int threads, const py::object& active) {
    const Extent e("gru_forward", hs, "hs");
    py::array bha, h0a;
    prf::GruForwardArgs<T> args{e.seq_of<T, const T>(xw, "xw (x @ Wx + b)", 3, false),
                                e.weights<T>(wh, 3),
                                optional_array<T>(bh, bha, e.fn + ": bh", {3 * e.H}),
                                e.optional_state<T>(h0, h0a, "h0"),
                                e.seq_of<T, T>(hs, "hs", 1, true),
                                e.seq_of<T, T>(gates, "gates", 4, true),
                                threads};
    if (args.gates.data != nullptr && args.gates.data == args.xw.data && e.T * e.N * e.H > 0)
        throw py::value_error(e.fn + ": gates must not be the same array as xw");
    std::vector<idx> rows;
    args.active = active_rows(active, rows, e.fn, e.T, e.N);
    run_kernel(args, prf::gru_forward<T>);
}

template <class T>
void gru_backward_typed(const py::array& dhs, const py::array& hs, const py::object& h0, const py::array& gates,
                        const py::array& wh, const py::object& dh_last, const py::array& du, const py::array& dv,
                        const py::array& dh0, int threads, const py::object& active) {
    const Extent e("gru_backward", dhs, "dhs");
    py::array h0a, dla;
    prf::GruBackwardArgs<T> args{e.seq_of<T, const T>(dhs, "dhs", 1, false),
                                 e.seq_of<T, const T>(hs, "hs", 1, false),
                                 e.optional_state<T>(h0, h0a, "h0"),
                                 e.seq_of<T, const T>(gates, "gates", 4, false),
                                 e.weights<T>(wh, 3),
                                 e.optional_state<T>(dh_last, dla, "dh_last"),
                                 e.seq_of<T, T>(du, "du (input-side gradient)", 3, true),
                                 e.seq_of<T, T>(dv, "dv (recurrent-side gradient)", 3, true),
                                 e.output_state<T>(dh0, "dh0"),
                                 threads};
    std::vector<idx> rows;
    args.active = active_rows(active, rows, e.fn, e.T, e.N);
    run_kernel(args, prf::gru_backward<T>);
}

}  // namespace

void bind_gated(py::module_& m) {
    m.def(
        "lstm_forward",
        [](const py::array& xw, const py::array& wh, const py::object& h0, const py::object& c0, const py::array& hs,
           const py::array& cs, const py::array& gates, int threads, const py::object& active) {
            by_dtype(hs, "_core.lstm_forward: hs",
                     [&](auto t) { lstm_forward_typed<decltype(t)>(xw, wh, h0, c0, hs, cs, gates, threads, active); });
        },
        py::arg("xw").noconvert(), py::arg("wh").noconvert(), py::arg("h0").none(true), py::arg("c0").none(true),
        py::arg("hs").noconvert(), py::arg("cs").noconvert(), py::arg("gates").noconvert(), py::arg("threads"),
        py::kw_only(), py::arg("active").none(true) = py::none(),
        "LSTM over a sequence: hs, cs (T, N, H) and the activated gates (T, N, 4H; may be xw itself).");
    m.def(
        "lstm_backward",
        [](const py::array& dhs, const py::array& gates, const py::array& cs, const py::object& c0, const py::array& wh,
           const py::object& dh_last, const py::object& dc_last, const py::array& da, const py::array& dh0,
           const py::array& dc0, int threads, const py::object& active) {
            by_dtype(dhs, "_core.lstm_backward: dhs", [&](auto t) {
                lstm_backward_typed<decltype(t)>(dhs, gates, cs, c0, wh, dh_last, dc_last, da, dh0, dc0, threads,
                                                 active);
            });
        },
        py::arg("dhs").noconvert(), py::arg("gates").noconvert(), py::arg("cs").noconvert(), py::arg("c0").none(true),
        py::arg("wh").noconvert(), py::arg("dh_last").none(true), py::arg("dc_last").none(true),
        py::arg("da").noconvert(), py::arg("dh0").noconvert(), py::arg("dc0").noconvert(), py::arg("threads"),
        py::kw_only(), py::arg("active").none(true) = py::none(),
        "LSTM backward through time: da (T, N, 4H), the gradient w.r.t. the pre-activations; dh0, dc0 (N, H).");
    m.def(
        "gru_forward",
        [](const py::array& xw, const py::array& wh, const py::object& bh, const py::object& h0, const py::array& hs,
           const py::array& gates, int threads, const py::object& active) {
            by_dtype(hs, "_core.gru_forward: hs",
                     [&](auto t) { gru_forward_typed<decltype(t)>(xw, wh, bh, h0, hs, gates, threads, active); });
        },
        py::arg("xw").noconvert(), py::arg("wh").noconvert(), py::arg("bh").none(true), py::arg("h0").none(true),
        py::arg("hs").noconvert(), py::arg("gates").noconvert(), py::arg("threads"), py::kw_only(),
        py::arg("active").none(true) = py::none(),
        "GRU over a sequence: hs (T, N, H) and gates (T, N, 4H) = [r, z, n, v_n].");
    m.def(
        "gru_backward",
        [](const py::array& dhs, const py::array& hs, const py::object& h0, const py::array& gates, const py::array& wh,
           const py::object& dh_last, const py::array& du, const py::array& dv, const py::array& dh0, int threads,
           const py::object& active) {
            by_dtype(dhs, "_core.gru_backward: dhs", [&](auto t) {
                gru_backward_typed<decltype(t)>(dhs, hs, h0, gates, wh, dh_last, du, dv, dh0, threads, active);
            });
        },
        py::arg("dhs").noconvert(), py::arg("hs").noconvert(), py::arg("h0").none(true), py::arg("gates").noconvert(),
        py::arg("wh").noconvert(), py::arg("dh_last").none(true), py::arg("du").noconvert(), py::arg("dv").noconvert(),
        py::arg("dh0").noconvert(), py::arg("threads"), py::kw_only(), py::arg("active").none(true) = py::none(),
        "GRU backward through time: du, dv (T, N, 3H), the gradients w.r.t. x.Wx + b and h.Wh + bh; dh0 (N, H).");
}

}  // namespace prf_binding
