// pyrnn_fast._core's streaming step (RNN.step) and FMA peak loop: the bindings of the
// `step` and `fma_peak` kernels (csrc/kernels/step.hpp, peak.hpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

#include "binding_helpers.hpp"

namespace prf_binding {

// Whether `o` is a numpy.ma.MaskedArray. Nothing is imported, nor any Python code run, so the
// GIL is never given up here (a first version imported numpy.ma inside a function-local
// static's initialisation: another thread taking the GIL meanwhile and reaching the same
// static waited on its guard while holding the GIL, and both hung; found by a review). A
// masked array can exist only once numpy.ma has been imported: until then none is. The type,
// once found, is kept for the process's life (set with the GIL held).
static bool is_masked_array(PyObject* o) {
    static PyObject* masked = nullptr;
    if (!masked) {
        PyObject* ma = PyDict_GetItemString(PyImport_GetModuleDict(), "numpy.ma");  // borrowed
        if (!ma) return false;
        PyObject* t = PyModule_Check(ma) ? PyDict_GetItemString(PyModule_GetDict(ma), "MaskedArray") : nullptr;
        if (!t || !PyType_Check(t)) return true;  // cannot tell: the layer's checks decide
        Py_INCREF(t);
        masked = t;
    }
    return PyType_IsSubtype(Py_TYPE(o), reinterpret_cast<PyTypeObject*>(masked)) != 0;
}

namespace {

// The streaming step of a stack of unidirectional layers (pyrnn_fast.layers' step()): built
// once from the layers' weights, their carried state (L, N, H) and a scratch array like it,
// with every argument checked then; each step checks only x, the one argument that changes,
// and that the layer still has the same state and parameter arrays (`params`, the layer's
// dict of them: its values are compared by identity with those it had at construction).
// The arrays are kept alive and read in place, so changes made to them in place are seen.
class Stepper {
  public:
    Stepper(const py::list& wx, const py::list& wh, const py::list& b, const py::array& state, const py::array& out,
            const std::string& activation, const py::dict& params, const py::object& cell_state,
            const py::object& state_key, const py::object& bh)
        : act_(parse_activation(activation)),
          f64_(is_dtype(state, py::dtype::of<double>())),
          state_key_(state_key.is_none() ? py::object(state) : state_key) {
        for (auto item : params) params_.push_back(py::reinterpret_borrow<py::object>(item.second));
        // A list's items can be replaced while it stays the same object (`layer.state[1] =
        // new_c`): its items are compared too (found by a review: the stepper went on with the
        // old arrays). A tuple's cannot.
        key_is_list_ = PyList_Check(state_key_.ptr());
        if (key_is_list_)
            for (auto item : py::reinterpret_borrow<py::list>(state_key_))
                key_items_.push_back(py::reinterpret_borrow<py::object>(item));
        if (!f64_ && !is_dtype(state, py::dtype::of<float>()))
            throw py::type_error("_core.Stepper: state: expected float32 or float64, got dtype " +
                                 py::str(state.dtype()).cast<std::string>());
        if (f64_)
            build<double>(wx, wh, b, state, out, cell_state, bh);
        else
            build<float>(wx, wh, b, state, out, cell_state, bh);
    }

    // Whether `state` and the values of `params` are the objects this stepper was built from.
    bool current(const py::dict& params, const py::object& state) const {
        if (state.ptr() != state_key_.ptr() || size_t(PyDict_Size(params.ptr())) != params_.size()) return false;
        if (key_is_list_) {
            PyObject* list = state.ptr();
            if (size_t(PyList_GET_SIZE(list)) != key_items_.size()) return false;
            for (size_t i = 0; i < key_items_.size(); ++i)
                if (PyList_GET_ITEM(list, Py_ssize_t(i)) != key_items_[i].ptr()) return false;
        }
        Py_ssize_t pos = 0, i = 0;
        PyObject *key, *value;
        while (PyDict_Next(params.ptr(), &pos, &key, &value))
            if (value != params_[size_t(i++)].ptr()) return false;
        return layouts_unchanged();
    }

    // The new top-layer state (N, H), a new array; None, with nothing done, when the layer's
    // arrays are no longer those it was built from (`current`) or x is not a C-addressable
    // (N, D) array of the state's dtype: the caller then checks and converts, and calls again.
    py::object step(const py::object& x, const py::dict& params, const py::object& state) {
        if (!current(params, state)) return py::none();
        return f64_ ? run<double>(x, a64_) : run<float>(x, a32_);
    }

  private:
    // What the kernel addresses of an array it keeps, as it was when built. The same object can
    // change in place (`a.shape = ...`, `a.strides = ...`, `a.flags.writeable = False`,
    // `a.resize(..., refcheck=False)`), which comparing identities cannot see (found by fuzzing:
    // a state made read-only after the first step was still written by later steps, and a
    // parameter reshaped in place was still read with its old shape).
    // Each kept array's data pointer, writability (recorded for all; required only of those that
    // were writable when built), rank, dtype (type number and byte order), shape and strides,
    // one after another in one flat vector: compared in one pass at every step.
    static void append_layout(std::vector<Py_intptr_t>& sig, PyObject* a) {
        const auto* p = py::detail::array_proxy(a);
        const auto* d = py::detail::array_descriptor_proxy(p->descr);
        sig.push_back(reinterpret_cast<Py_intptr_t>(p->data));
        sig.push_back(p->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_);
        sig.push_back(p->nd);
        // The dtype too: `a.dtype = np.int32` (or a byte-swapped float) keeps data, shape and
        // strides; the kernel would then read integer bits as floats (or write floats into it).
        sig.push_back(d->type_num);
        sig.push_back(d->byteorder);
        sig.insert(sig.end(), p->dimensions, p->dimensions + p->nd);
        sig.insert(sig.end(), p->strides, p->strides + p->nd);
    }
    // Every kept array still has the data, dtype, shape and strides it had when built, and those
    // that were writable (the state and outputs the kernel writes) still are.
    bool layouts_unchanged() const {
        const Py_intptr_t* l = layouts_.data();
        for (const auto& kept : keep_) {
            const auto* p = py::detail::array_proxy(kept.ptr());
            const auto* d = py::detail::array_descriptor_proxy(p->descr);
            if (reinterpret_cast<Py_intptr_t>(p->data) != l[0] ||
                (l[1] && !(p->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_)) || p->nd != l[2] ||
                d->type_num != l[3] || d->byteorder != l[4])
                return false;
            const int nd = p->nd;
            l += 5;
            for (int d = 0; d < nd; ++d)
                if (p->dimensions[d] != l[d] || p->strides[d] != l[nd + d]) return false;
            l += 2 * nd;
        }
        return true;
    }

    template <class T>
    void build(const py::list& wx, const py::list& wh, const py::list& b, const py::array& state, const py::array& out,
               const py::object& cell_state, const py::object& bh) {
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
        // An LSTM: its cell state, and gate blocks [i | f | g | o] as the weights' columns; a
        // GRU: its recurrent biases (entries may be None), and gate blocks [r | z | n].
        const bool lstm = !cell_state.is_none(), gru = !bh.is_none();
        if (lstm && gru) throw py::value_error("_core.Stepper: cell_state and bh: an LSTM or a GRU, not both");
        const py::list bhs = gru ? py::cast<py::list>(bh) : py::list();
        if (gru && idx(py::len(bhs)) != L)
            throw py::value_error("_core.Stepper: bh: expected one entry per layer of state (" + std::to_string(L) +
                                  ")");
        const idx G = lstm ? 4 : (gru ? 3 : 1);
        py::array c;
        std::vector<idx> sc;
        if (lstm) {
            c = py::cast<py::array>(cell_state);
            sc = checked<T>(c, "_core.Stepper: cell_state", {L, N, H}, true);
            keep_.push_back(c);
        }
        auto& layers = layers_<T>();
        layers.clear();
        for (idx l = 0; l < L; ++l) {
            const std::string at = "[" + std::to_string(l) + "]";
            py::array w = py::cast<py::array>(wx[l]), u = py::cast<py::array>(wh[l]);
            if (w.ndim() != 2) throw py::value_error("_core.Stepper: wx" + at + ": expected a 2-D array");
            const idx Din = l == 0 ? w.shape(0) : H;
            if (l == 0) D_ = Din;
            const auto sw = checked<T>(w, ("_core.Stepper: wx" + at).c_str(), {Din, G * H}, false);
            const auto su = checked<T>(u, ("_core.Stepper: wh" + at).c_str(), {H, G * H}, false);
            py::array bl;
            const T* bias = optional_array<T>(b[l], bl, "_core.Stepper: b" + at, {G * H});
            py::array bhl;
            const T* rbias = gru ? optional_array<T>(bhs[l], bhl, "_core.Stepper: bh" + at, {G * H}) : nullptr;
            keep_.insert(keep_.end(), {w, u, bl, bhl});
            layers.push_back({{static_cast<const T*>(w.data()), Din, G * H, sw[0]},
                              {static_cast<const T*>(u.data()), H, G * H, su[0]},
                              bias,
                              rbias});
        }
        auto& a = args<T>();
        a = prf::StepArgs<T>{layers.data(),
                             L,
                             {nullptr, N, D_, 0},
                             seq<T>(static_cast<T*>(py::array(state).mutable_data()), {L, N, H}, ss),
                             seq<T>(static_cast<T*>(py::array(out).mutable_data()), {L, N, H}, so),
                             act_,
                             1};
        if (lstm) a.c = seq<T>(static_cast<T*>(c.mutable_data()), {L, N, H}, sc);
        a.cell = lstm ? prf::StepCell::lstm : (gru ? prf::StepCell::gru : prf::StepCell::vanilla);
        layouts_.clear();
        for (const auto& kept : keep_) append_layout(layouts_, kept.ptr());
    }

    template <class T>
    py::object run(const py::object& x, prf::StepArgs<T>& a) {
        // x read through NumPy's structs, as pybind11's own checks do, without the dtype
        // objects and vectors they build on every call (~0.1 µs of a 0.4 µs step at H = 8).
        auto& api = py::detail::npy_api::get();
        // An ndarray, but not a numpy.ma.MaskedArray (whose mask its data would not show): that
        // goes through the layer's checks, which refuse it. (Only subclasses pay the test.)
        if (Py_TYPE(x.ptr()) != api.PyArray_Type_ && (!api.PyArray_Check_(x.ptr()) || is_masked_array(x.ptr())))
            return py::none();
        const auto* xa = py::detail::array_proxy(x.ptr());
        const auto* xd = py::detail::array_descriptor_proxy(xa->descr);
        constexpr int type_num =
            sizeof(T) == sizeof(double) ? py::detail::npy_api::NPY_DOUBLE_ : py::detail::npy_api::NPY_FLOAT_;
        constexpr char native = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '<' : '>';
        if (xd->type_num != type_num || !(xd->byteorder == '=' || xd->byteorder == '|' || xd->byteorder == native))
            return py::none();
        const idx N = a.x.rows, D = a.x.cols, H = a.h.cols;
        if (xa->nd != 2 || xa->dimensions[0] != N || xa->dimensions[1] != D) return py::none();
        const idx s0 = xa->strides[0], s1 = xa->strides[1];
        if ((D > 1 && s1 != idx(sizeof(T))) || (N > 1 && (s0 < 0 || s0 % idx(sizeof(T)) != 0)) ||
            reinterpret_cast<std::uintptr_t>(xa->data) % alignof(T) != 0)
            return py::none();
        if (busy_.exchange(true)) throw std::runtime_error("step: called from two threads at once on the same layer");
        a.x.data = reinterpret_cast<const T*>(xa->data);
        a.x.ld = N > 1 ? s0 / idx(sizeof(T)) : D;
        a.threads = prf::num_threads();
        bool ok;
        {
            // A step takes microseconds: releasing the GIL would cost a sizeable part of it.
            // Long ones (many streams) let other Python threads run.
            // In double: N can be huge (a zero-stride x and state), and the product overflowed.
            GilReleased release(double(N) * double(D + H) * double(H) * double(a.num_layers) > double(1 << 20));
            ok = prf::step<T>(a);
        }
        busy_ = false;
        if (!ok) throw std::bad_alloc();
        Py_intptr_t dims[2] = {N, H};
        auto top = py::reinterpret_steal<py::object>(api.PyArray_NewFromDescr_(
            api.PyArray_Type_, py::dtype::of<T>().release().ptr(), 2, dims, nullptr, nullptr, 0, nullptr));
        if (!top) throw py::error_already_set();
        T* dst = reinterpret_cast<T*>(py::detail::array_proxy(top.ptr())->data);
        for (idx n = 0; n < N; ++n) std::memcpy(dst + n * H, a.out.at(a.num_layers - 1, n), size_t(H) * sizeof(T));
        return top;
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
    py::object state_key_;  // the object `current` compares the caller's state with
    bool key_is_list_ = false;
    std::vector<py::object> key_items_;  // a list key's items when built (held: no address reused)
    std::vector<py::object> keep_;       // state, out, (cell_state,) then per layer wx, wh, b, bh
    std::vector<py::object> params_;     // the values of the layer's params dict, in its order
    std::vector<Py_intptr_t> layouts_;   // of keep_'s arrays, when built (append_layout)
    std::vector<prf::StepLayer<float>> l32_;
    std::vector<prf::StepLayer<double>> l64_;
    prf::StepArgs<float> a32_{};
    prf::StepArgs<double> a64_{};
    std::atomic<bool> busy_{false};
};

// Stepper.step is not a pybind11 method but a METH_FASTCALL function whose `self` is a capsule
// of the Stepper (holding a reference to its Python object). At N = 1, H = 8 the call through
// pybind11 took ~0.5 µs, of which the kernel ~0.1: its dispatch (the self argument's type
// lookup, argument casters) was a third of what was left.
PyObject* stepper_fastcall(PyObject* capsule, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "Stepper.step: expected (x, params: dict, state)");
        return nullptr;
    }
    auto* stepper = static_cast<Stepper*>(PyCapsule_GetPointer(capsule, nullptr));
    if (!stepper) return nullptr;
    try {
        return stepper
            ->step(py::reinterpret_borrow<py::object>(args[0]), py::reinterpret_borrow<py::dict>(args[1]),
                   py::reinterpret_borrow<py::object>(args[2]))
            .release()
            .ptr();
    } catch (py::error_already_set& e) {
        e.restore();
    } catch (const py::builtin_exception& e) {  // py::value_error and the like: their Python type
        e.set_error();
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return nullptr;
}

PyMethodDef stepper_step_def = {
    "step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(stepper_fastcall)), METH_FASTCALL,
    "step(x, params, state), positional: advance every layer by one step; returns the new top state (N, H), or "
    "None (nothing done) if the layer's arrays changed or x needs converting."};

// The step function of the Stepper `self` (which it keeps alive): a new object per attribute
// read, so a caller stepping in a loop keeps one.
// The Stepper held by `self`, or a TypeError when there is none: an instance made by
// Stepper.__new__ without __init__ holds no constructed Stepper, and pybind11's casts would hand
// out uninitialised storage for it (a crash reading stale pointers, found by fuzzing).
Stepper& constructed(const py::handle& self) {
    if (py::isinstance<Stepper>(self)) {
        auto* inst = reinterpret_cast<py::detail::instance*>(self.ptr());
        py::detail::value_and_holder v_h = inst->get_value_and_holder(py::detail::get_type_info(typeid(Stepper)));
        if (v_h.holder_constructed()) return *v_h.value_ptr<Stepper>();
    }
    throw py::type_error("Stepper: not constructed (made by Stepper.__new__ without __init__)");
}

py::object stepper_step(const py::object& self) {
    Stepper* stepper = &constructed(self);
    PyObject* capsule = PyCapsule_New(stepper, nullptr,
                                      [](PyObject* c) { Py_XDECREF(static_cast<PyObject*>(PyCapsule_GetContext(c))); });
    if (!capsule) throw py::error_already_set();
    if (PyCapsule_SetContext(capsule, self.ptr()) != 0) {
        Py_DECREF(capsule);
        throw py::error_already_set();
    }
    Py_INCREF(self.ptr());
    PyObject* f = PyCFunction_New(&stepper_step_def, capsule);
    Py_DECREF(capsule);
    if (!f) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(f);
}

// A kernel's thread count, as the peak and read loops take it: at least one.
void require_threads(int threads) {
    if (threads < 1) throw py::value_error("threads: expected >= 1, got " + std::to_string(threads));
}

// f(float{}) or f(double{}) for a NumPy dtype of float32 or float64; a TypeError naming `dtype`
// for any other.
template <class F>
auto on_float_dtype(const py::object& dtype, const F& f) {
    const py::dtype d = py::dtype::from_args(dtype);
    if (d.equal(py::dtype::of<float>())) return f(float{});
    if (d.equal(py::dtype::of<double>())) return f(double{});
    throw py::type_error("dtype: expected float32 or float64, got " + py::str(d).cast<std::string>());
}

// (flops, seconds) of one call of a peak loop of the current instruction set (the register-only
// FMA loop, or the micro-kernel on cache-resident operands) on `threads` threads, `iterations`
// rounds each.
template <class T>
std::pair<double, double> peak_typed(idx iterations, int threads, bool (*kernel)(const prf::PeakArgs<T>&)) {
    if (iterations < 1) throw py::value_error("iterations: expected >= 1, got " + std::to_string(iterations));
    require_threads(threads);
    double flops = 0;
    prf::PeakArgs<T> args{iterations, &flops, threads};
    const auto t0 = std::chrono::steady_clock::now();
    run_kernel(args, kernel);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return {flops, seconds};
}

// m.name(dtype, iterations, threads) -> (flops, seconds) of one call of a peak loop.
void def_peak(py::module_& m, const char* name, bool (*k32)(const prf::PeakArgs<float>&),
              bool (*k64)(const prf::PeakArgs<double>&), const char* doc) {
    m.def(
        name,
        [k32, k64](const py::object& dtype, idx iterations, int threads) {
            return on_float_dtype(dtype, [&](auto zero) {
                if constexpr (std::is_same_v<decltype(zero), float>)
                    return peak_typed<float>(iterations, threads, k32);
                else
                    return peak_typed<double>(iterations, threads, k64);
            });
        },
        py::arg("dtype"), py::arg("iterations"), py::arg("threads"), doc);
}

// (bytes read, seconds reading) of one call of the read loop: `threads` threads each read a
// buffer of its own of `bytes` `iterations` times.
template <class T>
std::pair<double, double> read_typed(idx bytes, idx iterations, int threads) {
    double bytes_read = 0, seconds = 0;
    prf::ReadArgs<T> args{bytes, iterations, &bytes_read, &seconds, threads};
    run_kernel(args, prf::read_peak<T>);
    return {bytes_read, seconds};
}

}  // namespace

// read_peak: buffers of at most 1 GiB in all, and at most 256 GiB read by a thread (~3 s from
// L3 at ~90 GB/s, ~20 s from memory: the read loop does not poll for Ctrl-C, the peak loops do).
constexpr long long kMaxReadBytes = 1LL << 30, kMaxReadPerThread = 1LL << 38;
// line_round_trip_ns: ~0.4 s of exchanges on a slow host (~400 ns each); a second's spin at most.
constexpr long kMaxRoundTrips = 1000000;
// _set_step_helper_delay_ns: a second at most.
constexpr long long kMaxHelperDelayNs = 1000000000;

void bind_step(py::module_& m) {
    py::class_<Stepper>(m, "Stepper",
                        "One time step of a stack of unidirectional layers, weights and state read in place.")
        .def(py::init<const py::list&, const py::list&, const py::list&, const py::array&, const py::array&,
                      const std::string&, const py::dict&, const py::object&, const py::object&, const py::object&>(),
             py::arg("wx"), py::arg("wh"), py::arg("b"), py::arg("state").noconvert(), py::arg("out").noconvert(),
             py::arg("activation"), py::arg("params"), py::arg("cell_state") = py::none(),
             py::arg("state_key") = py::none(), py::arg("bh") = py::none(),
             "An LSTM's stack when cell_state (L, N, H) is given (weights' columns [i | f | g | o]); a GRU's "
             "when bh (a list of recurrent biases, entries may be None) is given (columns [r | z | n]); "
             "state_key: the object step() and current() are passed as `state` (default: state itself).")
        .def(
            "current",
            [](const py::object& self, const py::dict& params, const py::object& state) {
                return constructed(self).current(params, state);
            },
            py::arg("params"), py::arg("state"),
            "Whether state and params' values are the objects the stepper was built from.")
        .def_property_readonly("step", &stepper_step,
                               "step(x, params, state): advance every layer by one step; returns the new top "
                               "state (N, H), or None (nothing done) if the layer's arrays changed or x needs "
                               "converting. A plain function (positional arguments, no pybind11 dispatch): keep "
                               "it to call it in a loop.");

    def_peak(m, "fma_peak", prf::fma_peak<float>, prf::fma_peak<double>,
             "(flops, seconds) of the register-only FMA loop of the current instruction set: its peak.");
    def_peak(m, "microkernel_peak", prf::microkernel_peak<float>, prf::microkernel_peak<double>,
             "(flops, seconds) of the GEMM micro-kernel on cache-resident packed operands: the ceiling of the "
             "GEMMs.");
    m.def(
        "read_peak",
        [](const py::object& dtype, long long bytes, idx iterations, int threads) {
            require_threads(threads);
            // (the threads that can run: the dispatch grants at most one per CPU)
            const long long most =
                kMaxReadBytes / std::min<long long>(threads, std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
            if (bytes < 1 || bytes > most)
                throw py::value_error("bytes: expected 1 to " + std::to_string(most) +
                                      " (1 GiB over the threads), got " + std::to_string(bytes));
            // (a buffer is at least one round of the read loop's sums: 512 bytes at most)
            const long long most_iterations = kMaxReadPerThread / std::max(bytes, 512LL);
            if (iterations < 1 || iterations > most_iterations)
                throw py::value_error("iterations: expected 1 to " + std::to_string(most_iterations) +
                                      " (256 GiB read by a thread), got " + std::to_string(iterations));
            return on_float_dtype(
                dtype, [&](auto zero) { return read_typed<decltype(zero)>(idx(bytes), iterations, threads); });
        },
        py::arg("dtype"), py::arg("bytes"), py::arg("iterations"), py::arg("threads"),
        "(bytes read, seconds reading) of the read loop of the current instruction set: each of `threads` "
        "threads reads a buffer of its own of `bytes` (whole rounds of vectors, at least one) `iterations` times, "
        "all at once (the buffers' allocation and filling not timed): what the caches that hold that many bytes "
        "deliver.");
    m.def(
        "line_round_trip_ns",
        [](long exchanges) -> py::object {
            if (exchanges < 1 || exchanges > kMaxRoundTrips)
                throw py::value_error("exchanges: expected 1 to " + std::to_string(kMaxRoundTrips) + ", got " +
                                      std::to_string(exchanges));
            double ns;
            {
                py::gil_scoped_release release;
                ns = prf::line_round_trip_ns(exchanges);
            }
            return ns < 0 ? py::object(py::none()) : py::object(py::float_(ns));
        },
        py::arg("exchanges"),
        "ns of a cache line's round trip between the first two CPUs the calling thread may use: the median over "
        "rounds of `exchanges` (two threads of its own, pinned; bench/pingpong.py prints it over time). None "
        "where it cannot be measured: fewer than two such CPUs, threads not created or pinned, or no round done "
        "within a second.");
    m.def(
        "_step_team_counts",
        [] {
            long long runs, take_backs;
            prf::spinning_team_counts(runs, take_backs);
            return py::make_tuple(runs, take_backs);
        },
        "Testing: (shares of streaming steps that the calling thread's helpers ran, steps it took back from a "
        "helper that had not begun and did alone), so far.");
    m.def(
        "_set_step_helper_delay_ns",
        [](long long ns) {
            if (ns < 0 || ns > kMaxHelperDelayNs)
                throw py::value_error("ns: expected 0 to " + std::to_string(kMaxHelperDelayNs) + ", got " +
                                      std::to_string(ns));
            return prf::set_spinning_helper_delay_ns(ns);
        },
        py::arg("ns"),
        "Testing: every streaming-step helper spins `ns` between seeing its work and claiming it, as one the OS "
        "kept off its CPU would be late (0: not at all); returns the previous delay.");
}

}  // namespace prf_binding
