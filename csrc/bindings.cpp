// pyrnn_fast._core: the only file that knows about Python. It checks every array's dtype,
// shape, strides, alignment and writability against the others before the kernel touches
// memory, so that no call from Python can make the C++ layer read or write out of bounds.
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

#include "rnn.hpp"

namespace py = pybind11;
using prf::idx;

namespace {

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string dims_str(const std::vector<idx>& d) {
    std::string s = "(";
    for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + (d.size() == 1 ? ",)" : ")");  // as Python writes a 1-tuple
}

// Checks `a` against dtype T, the expected shape, writability, alignment and strides that the
// kernel can address (non-negative, whole elements, unit stride on the last axis). Returns the
// strides in elements.
template <class T>
std::vector<idx> checked(const py::array& a, const char* name, const std::vector<idx>& shape, bool writable,
                         bool unit_last = true) {
    if (!py::isinstance<py::array_t<T, 0>>(a))
        throw py::type_error(std::string(name) + ": expected a " + py::str(py::dtype::of<T>()).cast<std::string>() +
                             " array in native byte order, got dtype " + py::str(a.dtype()).cast<std::string>());
    if (a.ndim() != py::ssize_t(shape.size()))
        throw py::value_error(std::string(name) + ": expected shape " + dims_str(shape) + ", got " + shape_str(a));
    for (size_t i = 0; i < shape.size(); ++i)
        if (a.shape(i) != shape[i])
            throw py::value_error(std::string(name) + ": expected shape " + dims_str(shape) + ", got " + shape_str(a));
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": output array is read-only");
    if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) != 0)
        throw py::value_error(std::string(name) + ": array data is not aligned to its element size");
    std::vector<idx> strides(shape.size(), 0);
    if (a.size() == 0) return strides;  // no element is ever addressed
    for (size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] <= 1) continue;  // never stepped along
        idx s = a.strides(i);
        if (s < 0 || s % idx(sizeof(T)) != 0)
            throw py::value_error(std::string(name) + ": strides must be non-negative multiples of the item size");
        strides[i] = s / idx(sizeof(T));
        if (unit_last && i + 1 == shape.size() && strides[i] != 1)
            throw py::value_error(std::string(name) + ": the last axis must be contiguous");
    }
    return strides;
}

// An optional array argument: None gives null data; an array is checked as by `checked`
// (read-only) and kept alive in `keep` for the call. `ld` gets the stride of its first axis.
template <class T>
const T* optional_array(const py::object& obj, py::array& keep, const std::string& name, const std::vector<idx>& shape,
                        idx* ld = nullptr) {
    if (obj.is_none()) return nullptr;
    if (!py::isinstance<py::array>(obj)) throw py::type_error(name + ": expected a numpy array or None");
    keep = obj.cast<py::array>();
    const auto strides = checked<T>(keep, name.c_str(), shape, false);
    if (ld) *ld = strides[0];
    return static_cast<const T*>(keep.data());
}

template <class T, class P>
prf::Seq<P> seq(P* data, const std::vector<idx>& shape, const std::vector<idx>& st) {
    return prf::Seq<P>{data, shape[0], shape[1], shape[2], st[0], st[1]};
}

prf::Activation parse_activation(const std::string& s) {
    if (s == "tanh") return prf::Activation::tanh;
    if (s == "relu") return prf::Activation::relu;
    throw py::value_error("activation: expected 'tanh' or 'relu', got '" + s + "'");
}

// Ctrl-C during a call. Python's C signal handler only sets a flag; the Python handler (which
// raises KeyboardInterrupt for SIGINT) runs when the main thread calls PyErr_CheckSignals with
// the GIL. The kernels' calling thread (this one) calls `poll` about every 50 ms of work; it
// takes the GIL and runs the pending handlers. When one raises, the exception stays set, the
// kernel stops at its next step or block, and run_kernel raises it once the GIL is back. A
// handler that does not raise (the user's own) lets the call go on.
thread_local bool t_running_signal_handlers = false;

class SignalPoll {
  public:
    SignalPoll() {
        // A handler that calls us while we are stopped in its middle would reuse this thread's
        // scratch buffers, which the interrupted kernel is still using.
        if (t_running_signal_handlers)
            throw std::runtime_error(
                "pyrnn_fast cannot be called from a signal handler that runs during a call of "
                "pyrnn_fast's compiled backend on the same thread");
    }
    prf::Interrupt interrupt{&SignalPoll::poll, this, 0};
    bool raised = false;

  private:
    bool thread_checked = false, polling = true;

    static bool on_main_thread() {  // with the GIL
        try {
            auto ident = py::module_::import("threading").attr("main_thread")().attr("ident");
            return ident.cast<unsigned long>() == PyThread_get_thread_ident();
        } catch (...) {
            return true;  // polling anyway is harmless
        }
    }
    // Called by the kernel without the GIL, inside its OpenMP region: must not throw.
    static int poll(void* ctx) {
        auto* self = static_cast<SignalPoll*>(ctx);
        if (!self->polling) return 0;
        PyGILState_STATE gil = PyGILState_Ensure();
        if (!self->thread_checked) {  // handlers run only on the main thread: elsewhere, never poll again
            self->thread_checked = true;
            self->polling = on_main_thread();
        }
        if (self->polling) {
            t_running_signal_handlers = true;
            if (PyErr_CheckSignals() != 0) self->raised = true;
            t_running_signal_handlers = false;
        }
        PyGILState_Release(gil);
        return self->raised;
    }
};

// Runs kernel(args) without the GIL, interruptible by signals; raises what a signal handler
// raised, or MemoryError when the kernel could not allocate its scratch memory.
template <class Args, class Kernel>
void run_kernel(Args& args, Kernel kernel) {
    SignalPoll signals;
    args.interrupt = &signals.interrupt;
    bool ok;
    {
        py::gil_scoped_release release;
        ok = kernel(args);
    }
    if (signals.raised) throw py::error_already_set();
    if (!ok) throw std::bad_alloc();
}

template <class T>
void forward_typed(const py::array& xw, const py::array& wh, const py::object& h0, py::array& out, prf::Activation act,
                   int threads) {
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
    run_kernel(args, prf::forward<T>);
}

template <class T>
void backward_typed(const py::array& dh, const py::array& h, const py::array& wh, const py::object& dh_last,
                    py::array& da, py::array& dh0, prf::Activation act, int threads) {
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

bool is_dtype(const py::array& a, const py::dtype& d) { return a.dtype().equal(d); }

// Calls fn<float> or fn<double> by the dtype of `a`, else raises TypeError naming it.
template <class F>
void by_dtype(const py::array& a, const char* name, F&& fn) {
    if (is_dtype(a, py::dtype::of<float>()))
        fn(float{});
    else if (is_dtype(a, py::dtype::of<double>()))
        fn(double{});
    else
        throw py::type_error(std::string(name) + ": expected float32 or float64, got dtype " +
                             py::str(a.dtype()).cast<std::string>());
}

// The streaming step of a stack of unidirectional layers (pyrnn_fast.layers' step()): built
// once from the layers' weights, their carried state (L, N, H) and a scratch array like it,
// with every argument checked then; each step checks only x, the one argument that changes,
// and that the layer still has the same state and parameter arrays (`params`, the layer's
// dict of them: its values are compared by identity with those it had at construction).
// The arrays are kept alive and read in place, so changes made to them in place are seen.
class Stepper {
  public:
    Stepper(const py::list& wx, const py::list& wh, const py::list& b, const py::array& state, const py::array& out,
            const std::string& activation, const py::dict& params)
        : act_(parse_activation(activation)), f64_(is_dtype(state, py::dtype::of<double>())) {
        for (auto item : params) params_.push_back(py::reinterpret_borrow<py::object>(item.second));
        if (!f64_ && !is_dtype(state, py::dtype::of<float>()))
            throw py::type_error("_core.Stepper: state: expected float32 or float64, got dtype " +
                                 py::str(state.dtype()).cast<std::string>());
        if (f64_)
            build<double>(wx, wh, b, state, out);
        else
            build<float>(wx, wh, b, state, out);
    }

    // Whether `state` and the values of `params` are the objects this stepper was built from.
    bool current(const py::dict& params, const py::object& state) const {
        if (state.ptr() != keep_.front().ptr() || size_t(PyDict_Size(params.ptr())) != params_.size()) return false;
        Py_ssize_t pos = 0, i = 0;
        PyObject *key, *value;
        while (PyDict_Next(params.ptr(), &pos, &key, &value))
            if (value != params_[size_t(i++)].ptr()) return false;
        return true;
    }

    // The new top-layer state (N, H), a new array; None, with nothing done, when the layer's
    // arrays are no longer those it was built from (`current`) or x is not a C-addressable
    // (N, D) array of the state's dtype: the caller then checks and converts, and calls again.
    py::object step(const py::object& x, const py::dict& params, const py::object& state) {
        if (!current(params, state)) return py::none();
        return f64_ ? run<double>(x, a64_) : run<float>(x, a32_);
    }

  private:
    template <class T>
    void build(const py::list& wx, const py::list& wh, const py::list& b, const py::array& state,
               const py::array& out) {
        if (state.ndim() != 3)
            throw py::value_error("_core.Stepper: state: expected a 3-D (L, N, H) array, got shape " +
                                  shape_str(state));
        const idx L = state.shape(0), N = state.shape(1), H = state.shape(2);
        if (idx(py::len(wx)) != L || idx(py::len(wh)) != L || idx(py::len(b)) != L)
            throw py::value_error("_core.Stepper: wx, wh, b: expected one entry per layer of state (" +
                                  std::to_string(L) + ")");
        if (L == 0) throw py::value_error("_core.Stepper: state: expected at least one layer");
        const auto ss = checked<T>(state, "_core.Stepper: state", {L, N, H}, true);
        const auto so = checked<T>(out, "_core.Stepper: out", {L, N, H}, true);
        keep_ = {state, out};
        auto& layers = layers_<T>();
        layers.clear();
        for (idx l = 0; l < L; ++l) {
            const std::string at = "[" + std::to_string(l) + "]";
            py::array w = py::cast<py::array>(wx[l]), u = py::cast<py::array>(wh[l]);
            if (w.ndim() != 2) throw py::value_error("_core.Stepper: wx" + at + ": expected a 2-D array");
            const idx Din = l == 0 ? w.shape(0) : H;
            if (l == 0) D_ = Din;
            const auto sw = checked<T>(w, ("_core.Stepper: wx" + at).c_str(), {Din, H}, false);
            const auto su = checked<T>(u, ("_core.Stepper: wh" + at).c_str(), {H, H}, false);
            py::array bl;
            const T* bias = optional_array<T>(b[l], bl, "_core.Stepper: b" + at, {H});
            keep_.insert(keep_.end(), {w, u, bl});
            layers.push_back({{static_cast<const T*>(w.data()), Din, H, sw[0]},
                              {static_cast<const T*>(u.data()), H, H, su[0]},
                              bias});
        }
        auto& a = args<T>();
        a = prf::StepArgs<T>{layers.data(),
                             L,
                             {nullptr, N, D_, 0},
                             seq<T>(static_cast<T*>(py::array(state).mutable_data()), {L, N, H}, ss),
                             seq<T>(static_cast<T*>(py::array(out).mutable_data()), {L, N, H}, so),
                             act_,
                             1};
    }

    template <class T>
    py::object run(const py::object& x, prf::StepArgs<T>& a) {
        if (!py::isinstance<py::array_t<T, 0>>(x)) return py::none();
        const auto xa = py::reinterpret_borrow<py::array>(x);
        const idx N = a.x.rows, D = a.x.cols, H = a.h.cols;
        if (xa.ndim() != 2 || xa.shape(0) != N || xa.shape(1) != D) return py::none();
        const idx s0 = xa.strides(0), s1 = xa.strides(1);
        if ((D > 1 && s1 != idx(sizeof(T))) || (N > 1 && (s0 < 0 || s0 % idx(sizeof(T)) != 0)) ||
            reinterpret_cast<std::uintptr_t>(xa.data()) % alignof(T) != 0)
            return py::none();
        if (busy_.exchange(true)) throw std::runtime_error("step: called from two threads at once on the same layer");
        a.x.data = static_cast<const T*>(xa.data());
        a.x.ld = N > 1 ? s0 / idx(sizeof(T)) : D;
        a.threads = prf::num_threads();
        bool ok;
        {
            // A step takes microseconds: releasing the GIL would cost a sizeable part of it.
            // Long ones (many streams) let other Python threads run.
            std::unique_ptr<py::gil_scoped_release> release;
            if (N * (D + H) * H * a.num_layers > (idx(1) << 20)) release.reset(new py::gil_scoped_release);
            ok = prf::step<T>(a);
        }
        busy_ = false;
        if (!ok) throw std::bad_alloc();
        py::array_t<T> top({N, H});
        T* dst = top.mutable_data();
        for (idx n = 0; n < N; ++n) std::memcpy(dst + n * H, a.out.at(a.num_layers - 1, n), size_t(H) * sizeof(T));
        return std::move(top);
    }

    template <class T>
    std::vector<prf::StepLayer<T>>& layers_() {
        if constexpr (sizeof(T) == sizeof(double))
            return l64_;
        else
            return l32_;
    }
    template <class T>
    prf::StepArgs<T>& args() {
        if constexpr (sizeof(T) == sizeof(double))
            return a64_;
        else
            return a32_;
    }

    prf::Activation act_;
    bool f64_;
    idx D_ = 0;
    std::vector<py::object> keep_;    // state, out, then per layer wx, wh, b
    std::vector<py::object> params_;  // the values of the layer's params dict, in its order
    std::vector<prf::StepLayer<float>> l32_;
    std::vector<prf::StepLayer<double>> l64_;
    prf::StepArgs<float> a32_{};
    prf::StepArgs<double> a64_{};
    std::atomic<bool> busy_{false};
};

// The floating-point operations per second of one call of the register-only FMA loop of the
// current instruction set on `threads` threads, `iterations` rounds each.
template <class T>
std::pair<double, double> fma_peak_typed(idx iterations, int threads) {
    if (iterations < 1) throw py::value_error("iterations: expected >= 1, got " + std::to_string(iterations));
    double flops = 0;
    prf::PeakArgs<T> args{iterations, &flops, threads};
    const auto t0 = std::chrono::steady_clock::now();
    run_kernel(args, prf::fma_peak<T>);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return {flops, seconds};
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
           const std::string& activation, int threads) {
            auto act = parse_activation(activation);
            by_dtype(xw, "_core.forward: xw (x @ Wx + b)",
                     [&](auto t) { forward_typed<decltype(t)>(xw, wh, h0, out, act, threads); });
        },
        py::arg("xw").noconvert(), py::arg("wh").noconvert(), py::arg("h0").none(true), py::arg("out").noconvert(),
        py::arg("activation"), py::arg("threads"),
        "out[t] = act(xw[t] + out[t-1] @ wh), out[-1] = h0 (zeros if None). Arrays are (T, N, H) views.");

    m.def(
        "backward",
        [](const py::array& dh, const py::array& h, const py::array& wh, const py::object& dh_last, py::array& da,
           py::array& dh0, const std::string& activation, int threads) {
            auto act = parse_activation(activation);
            by_dtype(dh, "_core.backward: dh (dhs)",
                     [&](auto t) { backward_typed<decltype(t)>(dh, h, wh, dh_last, da, dh0, act, threads); });
        },
        py::arg("dh").noconvert(), py::arg("h").noconvert(), py::arg("wh").noconvert(), py::arg("dh_last").none(true),
        py::arg("da").noconvert(), py::arg("dh0").noconvert(), py::arg("activation"), py::arg("threads"),
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

    py::class_<Stepper>(m, "Stepper",
                        "One time step of a stack of unidirectional layers, weights and state read in place.")
        .def(py::init<const py::list&, const py::list&, const py::list&, const py::array&, const py::array&,
                      const std::string&, const py::dict&>(),
             py::arg("wx"), py::arg("wh"), py::arg("b"), py::arg("state").noconvert(), py::arg("out").noconvert(),
             py::arg("activation"), py::arg("params"))
        .def("current", &Stepper::current, py::arg("params"), py::arg("state"),
             "Whether state and params' values are the objects the stepper was built from.")
        .def("step", &Stepper::step, py::arg("x"), py::arg("params"), py::arg("state"),
             "Advance every layer by one step; returns the new top state (N, H), or None (nothing done) if the "
             "layer's arrays changed or x needs converting.");

    m.def(
        "fma_peak",
        [](const py::object& dtype, idx iterations, int threads) {
            const py::dtype d = py::dtype::from_args(dtype);
            if (d.equal(py::dtype::of<float>())) return fma_peak_typed<float>(iterations, threads);
            if (d.equal(py::dtype::of<double>())) return fma_peak_typed<double>(iterations, threads);
            throw py::type_error("dtype: expected float32 or float64, got " + py::str(d).cast<std::string>());
        },
        py::arg("dtype"), py::arg("iterations"), py::arg("threads"),
        "(flops, seconds) of the register-only FMA loop of the current instruction set: its peak.");

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
    m.def("default_num_threads", &prf::default_num_threads,
          "OpenMP's default thread count (OMP_NUM_THREADS, else the CPUs), as a new thread sees it.");
    prf::set_thread_shortfall_handler(&warn_thread_shortfall);
#ifdef _OPENMP
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
}
