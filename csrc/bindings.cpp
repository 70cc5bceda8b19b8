// pyrnn_fast._core: with bindings_step.cpp, the only files that know about Python. They check
// every array's dtype, shape, strides, alignment and writability against the others before
// the kernel touches memory, so that no call from Python can make the C++ layer read or write
// out of bounds (binding_helpers.hpp). Here: the module, and the recurrence and GEMM kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <pthread.h>

#include "binding_helpers.hpp"

using namespace prf_binding;

namespace {

template <class T>
void forward_typed(const py::array& xw, const py::array& wh, const py::object& h0, py::array& out, prf::Activation act,
                   int threads, const py::object& active) {
    if (xw.ndim() != 3)
        throw py::value_error("_core.forward: xw (x @ Wx + b): expected a 3-D (T, N, H) array, got shape " +
                              shape_str(xw));
    const std::vector<idx> seq_shape{idx(xw.shape(0)), idx(xw.shape(1)), idx(xw.shape(2))};
    const idx N = seq_shape[1], H = seq_shape[2];
    auto sx = checked<T>(xw, "_core.forward: xw (x @ Wx + b)", seq_shape, false);
    auto sw = checked<T>(wh, "_core.forward: wh (Wh)", {H, H}, false);
    auto so = checked<T>(out, "_core.forward: out (hs)", seq_shape, true);
    prf::ForwardArgs<T> args{seq<T>(static_cast<const T*>(xw.data()), seq_shape, sx),
                             {static_cast<const T*>(wh.data()), H, H, sw[0]},
                             {nullptr, N, H, 0},
                             seq<T>(static_cast<T*>(out.mutable_data()), seq_shape, so),
                             act,
                             threads};
    py::array h0a;
    args.h0.data = optional_array<T>(h0, h0a, "_core.forward: h0", {N, H}, &args.h0.ld);
    std::vector<idx> rows;
    args.active = active_rows(active, rows, "_core.forward", seq_shape[0], N);
    run_kernel(args, prf::forward<T>);
}

template <class T>
void backward_typed(const py::array& dh, const py::array& h, const py::array& wh, const py::object& dh_last,
                    py::array& da, py::array& dh0, prf::Activation act, int threads, const py::object& active) {
    if (dh.ndim() != 3)
        throw py::value_error("_core.backward: dh (dhs): expected a 3-D (T, N, H) array, got shape " + shape_str(dh));
    const std::vector<idx> seq_shape{idx(dh.shape(0)), idx(dh.shape(1)), idx(dh.shape(2))};
    const idx N = seq_shape[1], H = seq_shape[2];
    auto sg = checked<T>(dh, "_core.backward: dh (dhs)", seq_shape, false);
    auto sh = checked<T>(h, "_core.backward: h (hs)", seq_shape, false);
    auto sw = checked<T>(wh, "_core.backward: wh (Wh)", {H, H}, false);
    auto sa = checked<T>(da, "_core.backward: da (pre-activation gradient)", seq_shape, true);
    auto s0 = checked<T>(dh0, "_core.backward: dh0", {N, H}, true);
    prf::BackwardArgs<T> args{seq<T>(static_cast<const T*>(dh.data()), seq_shape, sg),
                              seq<T>(static_cast<const T*>(h.data()), seq_shape, sh),
                              {static_cast<const T*>(wh.data()), H, H, sw[0]},
                              {nullptr, N, H, 0},
                              seq<T>(static_cast<T*>(da.mutable_data()), seq_shape, sa),
                              {static_cast<T*>(dh0.mutable_data()), N, H, s0[0]},
                              act,
                              threads};
    py::array dla;
    args.dh_last.data = optional_array<T>(dh_last, dla, "_core.backward: dh_last", {N, H}, &args.dh_last.ld);
    std::vector<idx> rows;
    args.active = active_rows(active, rows, "_core.backward", seq_shape[0], N);
    run_kernel(args, prf::backward<T>);
}

template <class T>
void rows_gemm_typed(const py::array& a, const py::array& b, const py::object& bias, py::array& out, int threads) {
    if (a.ndim() != 3)
        throw py::value_error("_core.rows_gemm: a (the (S, N, K) rows): expected a 3-D array, got shape " +
                              shape_str(a));
    if (b.ndim() != 2)
        throw py::value_error("_core.rows_gemm: b (the (K, P) weights): expected a 2-D array, got shape " +
                              shape_str(b));
    const idx S = a.shape(0), N = a.shape(1), K = a.shape(2), P = b.shape(1);
    auto sa = checked<T>(a, "_core.rows_gemm: a (the (S, N, K) rows)", {S, N, K}, false);
    auto sb = checked<T>(b, "_core.rows_gemm: b (the (K, P) weights)", {K, P}, false, /*unit_last=*/false);
    auto so = checked<T>(out, "_core.rows_gemm: out (the (S, N, P) product)", {S, N, P}, true);
    // clang-format off
    prf::GemmArgs<T> g{S * N, P, K,
                       static_cast<const T*>(a.data()), N, sa[0], sa[1], true,
                       static_cast<const T*>(b.data()), K, 0, sb[0], sb[1],
                       nullptr,
                       static_cast<T*>(out.mutable_data()), N, so[0], so[1],
                       false, threads};
    // clang-format on
    py::array bias_a;
    g.bias = optional_array<T>(bias, bias_a, "_core.rows_gemm: bias (b)", {P});
    run_kernel(g, prf::gemm<T>);
}

template <class T>
void reduce_gemm_typed(const py::array& a, const py::array& b, py::array& out, bool accumulate, int threads) {
    if (a.ndim() != 3)
        throw py::value_error("_core.reduce_gemm: a (the (S, N, M) left factor): expected a 3-D array, got shape " +
                              shape_str(a));
    if (b.ndim() != 3)
        throw py::value_error("_core.reduce_gemm: b (the (S, N, P) right factor): expected a 3-D array, got shape " +
                              shape_str(b));
    const idx S = a.shape(0), N = a.shape(1), M = a.shape(2), P = b.shape(2);
    auto sa = checked<T>(a, "_core.reduce_gemm: a (the (S, N, M) left factor)", {S, N, M}, false);
    auto sb = checked<T>(b, "_core.reduce_gemm: b (the (S, N, P) right factor)", {S, N, P}, false);
    auto so = checked<T>(out, "_core.reduce_gemm: out (the (M, P) sum)", {M, P}, true);
    // clang-format off
    prf::GemmArgs<T> g{M, P, S * N,
                       static_cast<const T*>(a.data()), N, sa[0], sa[1], false,
                       static_cast<const T*>(b.data()), N, sb[0], sb[1], 1,
                       nullptr,
                       static_cast<T*>(out.mutable_data()), M, 0, so[0],
                       accumulate, threads};
    // clang-format on
    run_kernel(g, prf::gemm<T>);
}

template <class T>
void column_sums_typed(const py::array& a, py::array& out, int threads) {
    if (a.ndim() != 3)
        throw py::value_error("_core.column_sums: a (the (S, N, P) rows to sum): expected a 3-D array, got shape " +
                              shape_str(a));
    const idx S = a.shape(0), N = a.shape(1), P = a.shape(2);
    auto sa = checked<T>(a, "_core.column_sums: a (the (S, N, P) rows to sum)", {S, N, P}, false);
    checked<T>(out, "_core.column_sums: out (the (P,) sums)", {P}, true);
    prf::ColumnSumArgs<T> g{
        {static_cast<const T*>(a.data()), S, N, P, sa[0], sa[1]}, static_cast<T*>(out.mutable_data()), threads};
    run_kernel(g, prf::column_sums<T>);
}

// The instruction sets of PRF_ISAS (rnn.hpp), best first.
std::vector<prf::Isa> isas_best_first() {
    std::vector<prf::Isa> out;
    for (int i = prf::kIsaCount - 1; i >= 0; --i) out.push_back(prf::Isa(i));
    return out;
}

std::string quoted_names(const std::vector<prf::Isa>& isas, const char* quote) {
    std::string s;
    for (prf::Isa isa : isas) s += (s.empty() ? "" : ", ") + (quote + std::string(prf::isa_name(isa)) + quote);
    return s;
}

prf::Isa parse_isa(const std::string& s) {
    for (prf::Isa isa : isas_best_first())
        if (s == prf::isa_name(isa)) {
            if (!prf::isa_supported(isa))
                throw py::value_error("isa: '" + s + "' is not supported by this CPU or build; available: " +
                                      quoted_names(isas_best_first(), "") + " as supported");
            return isa;
        }
    throw py::value_error("isa: expected one of " + quoted_names(isas_best_first(), "'") + ", got '" + s + "'");
}

// Called (once per process) from a kernel call, in the thread that made it, with the GIL
// released: takes the GIL to issue a RuntimeWarning. No allocation of ours: memory is short.
void warn_thread_shortfall(int wanted, int started, int error) {
    char msg[320];
    std::snprintf(msg, sizeof msg,
                  "pyrnn_fast: a call ran on %d thread(s) instead of %d because no more threads could be "
                  "created (%s); calls use the threads that can be created until more can (warned once)",
                  started, wanted, std::strerror(error));
    PyGILState_STATE gil = PyGILState_Ensure();
    if (PyErr_WarnEx(PyExc_RuntimeWarning, msg, 1) < 0) PyErr_Clear();  // e.g. -W error: the call itself succeeds
    PyGILState_Release(gil);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyrnn_fast compiled recurrence kernels (C++17, OpenMP). Use pyrnn_fast's public API instead.";

    m.def(
        "forward",
        [](const py::array& xw, const py::array& wh, const py::object& h0, py::array& out,
           const std::string& activation, int threads, const py::object& active) {
            auto act = parse_activation(activation);
            by_dtype(xw, "_core.forward: xw (x @ Wx + b)",
                     [&](auto t) { forward_typed<decltype(t)>(xw, wh, h0, out, act, threads, active); });
        },
        py::arg("xw").noconvert(), py::arg("wh").noconvert(), py::arg("h0").none(true), py::arg("out").noconvert(),
        py::arg("activation"), py::arg("threads"), py::kw_only(), py::arg("active").none(true) = py::none(),
        "out[t] = act(xw[t] + out[t-1] @ wh), out[-1] = h0 (zeros if None). Arrays are (T, N, H) views. "
        "active: None, or (T,) int64 row counts that never grow: step t runs rows [0, active[t]) only.");

    m.def(
        "backward",
        [](const py::array& dh, const py::array& h, const py::array& wh, const py::object& dh_last, py::array& da,
           py::array& dh0, const std::string& activation, int threads, const py::object& active) {
            auto act = parse_activation(activation);
            by_dtype(dh, "_core.backward: dh (dhs)",
                     [&](auto t) { backward_typed<decltype(t)>(dh, h, wh, dh_last, da, dh0, act, threads, active); });
        },
        py::arg("dh").noconvert(), py::arg("h").noconvert(), py::arg("wh").noconvert(), py::arg("dh_last").none(true),
        py::arg("da").noconvert(), py::arg("dh0").noconvert(), py::arg("activation"), py::arg("threads"), py::kw_only(),
        py::arg("active").none(true) = py::none(),
        "da[t] = (dh[t] + da[t+1] @ wh.T) * act'(h[t]) (dh_last in place of da[T] @ wh.T); dh0 = da[0] @ wh.T.");

    m.def(
        "rows_gemm",
        [](const py::array& a, const py::array& b, const py::object& bias, py::array& out, int threads) {
            by_dtype(a, "_core.rows_gemm: a (the (S, N, K) rows)",
                     [&](auto t) { rows_gemm_typed<decltype(t)>(a, b, bias, out, threads); });
        },
        py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("bias").none(true), py::arg("out").noconvert(),
        py::arg("threads"), "out[s, n] = a[s, n] @ b (+ bias): a (S, N, K), b (K, P) with any strides, out (S, N, P).");
    m.def(
        "reduce_gemm",
        [](const py::array& a, const py::array& b, py::array& out, bool accumulate, int threads) {
            by_dtype(a, "_core.reduce_gemm: a (the (S, N, M) left factor)",
                     [&](auto t) { reduce_gemm_typed<decltype(t)>(a, b, out, accumulate, threads); });
        },
        py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("out").noconvert(), py::arg("accumulate"),
        py::arg("threads"), "out (+)= sum over s, n of outer(a[s, n], b[s, n]): a (S, N, M), b (S, N, P), out (M, P).");

    m.def(
        "column_sums",
        [](const py::array& a, py::array& out, int threads) {
            by_dtype(a, "_core.column_sums: a (the (S, N, P) rows to sum)",
                     [&](auto t) { column_sums_typed<decltype(t)>(a, out, threads); });
        },
        py::arg("a").noconvert(), py::arg("out").noconvert(), py::arg("threads"),
        "out = sum over s, n of a[s, n], summed in double: a (S, N, P), out (P,).");

    bind_gated(m);
    bind_step(m);

    m.def(
        "isa", [] { return std::string(prf::isa_name(prf::current_isa())); },
        "The instruction set the kernels run with now.");
    m.def(
        "set_isa", [](const std::string& name) { prf::set_isa(parse_isa(name)); }, py::arg("name"),
        ("Force the kernels' instruction set (one of " + quoted_names(isas_best_first(), "'") +
         "); it must be supported.")
            .c_str());
    m.def(
        "available_isas",
        [] {
            std::vector<std::string> out;
            for (prf::Isa isa : isas_best_first())
                if (prf::isa_supported(isa)) out.emplace_back(prf::isa_name(isa));
            return out;
        },
        "The instruction sets this CPU and build support, best first.");
    m.def("get_num_threads", &prf::num_threads,
          "OpenMP's thread count in the calling thread, after applying set_num_threads; 1 in a forked child.");
    m.def("max_threads", &prf::num_threads, "Same as get_num_threads (kept for bench/stages.py).");
    m.def("set_num_threads", &prf::set_num_threads, py::arg("n"),
          "omp_set_num_threads(n) here and, at their next call, in every other thread (n >= 1).");
    m.def(
        "limit_calling_thread", &prf::limit_calling_thread, py::arg("n"),
        "n >= 1: at most n threads in the calling thread only, until lifted; 0: lift that limit. Returns the previous "
        "limit (0: none).");
    m.def("default_num_threads", &prf::default_num_threads,
          "OpenMP's default thread count (OMP_NUM_THREADS, else the CPUs), as a new thread sees it.");
    m.def("get_flush_subnormals", &prf::flush_subnormals,
          "True while the kernels read subnormal operands as zero and flush subnormal results to zero.");
    m.def(
        "set_flush_subnormals",
        [](bool on) {
            if (!prf::set_flush_subnormals(on))
                throw py::value_error("enabled: flushing subnormals needs an x86-64 CPU; this build runs elsewhere");
        },
        py::arg("enabled").noconvert(), "Turn the kernels' flushing of subnormal numbers on or off, process-wide.");
    prf::set_thread_shortfall_handler(&warn_thread_shortfall);
    g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    pthread_atfork(nullptr, nullptr, [] { g_main_thread = PyThread_get_thread_ident(); });
#ifdef _OPENMP
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
}
