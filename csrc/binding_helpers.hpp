// What every binding of pyrnn_fast._core shares: the checks of array arguments against what
// the kernels can address (dtype, shape, strides, alignment, writability), and run_kernel,
// which runs a kernel without the GIL, interruptible by Ctrl-C. Included by bindings.cpp
// and bindings_step.cpp (one copy of its thread-local state for both: inline variables).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "rnn.hpp"

namespace prf_binding {
namespace py = pybind11;
using prf::idx;

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

inline std::string dims_str(const std::vector<idx>& d) {
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

// The recurrence kernels' optional `active` (rnn.hpp, ForwardArgs): None gives null; else T
// row counts in [0, N], none larger than the one before, copied into `keep` before they are
// checked (a count past N would address rows past the arrays, and another Python thread could
// change the caller's array while the kernel runs).
inline const idx* active_rows(const py::object& obj, std::vector<idx>& keep, const std::string& fn, idx T, idx N) {
    if (obj.is_none()) return nullptr;
    const std::string name = fn + ": active";
    if (!py::isinstance<py::array>(obj)) throw py::type_error(name + ": expected a numpy int64 array or None");
    const py::array a = obj.cast<py::array>();
    const auto st = checked<idx>(a, name.c_str(), {T}, false, /*unit_last=*/false);
    keep.resize(size_t(T));
    for (idx t = 0; t < T; ++t) keep[size_t(t)] = static_cast<const idx*>(a.data())[t * st[0]];
    for (idx t = 0; t < T; ++t)
        if (keep[size_t(t)] < 0 || keep[size_t(t)] > N || (t > 0 && keep[size_t(t)] > keep[size_t(t - 1)]))
            throw py::value_error(name + ": expected row counts in [0, N = " + std::to_string(N) +
                                  "] that never grow from one step to the next, got " +
                                  std::to_string(keep[size_t(t)]) + " at step " + std::to_string(t) +
                                  (t > 0 ? " after " + std::to_string(keep[size_t(t - 1)]) : std::string()));
    return keep.data();
}

template <class T, class P>
prf::Seq<P> seq(P* data, const std::vector<idx>& shape, const std::vector<idx>& st) {
    return prf::Seq<P>{data, shape[0], shape[1], shape[2], st[0], st[1]};
}

inline prf::Activation parse_activation(const std::string& s) {
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
inline thread_local bool t_running_signal_handlers = false;
// The ident of the thread Python runs signal handlers on (threading.main_thread()): set when
// _core is imported, and in a child made by fork, whose one thread is its main thread.
inline unsigned long g_main_thread = 0;

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
#if defined(__x86_64__)
    unsigned caller_mode_ = prf::read_fp_mode();  // made on the calling thread, before the kernel
#endif
    // Called by the kernel without the GIL, inside its OpenMP region: must not throw.
    static int poll(void* ctx) {
        auto* self = static_cast<SignalPoll*>(ctx);
        // Handlers run only on the main thread: elsewhere the GIL is never taken here. (It was,
        // once per call, to ask which thread this is: a daemon thread doing so while the
        // interpreter finalized was ended by CPython with pthread_exit inside the OpenMP
        // region, std::terminate, found by a review.) The main thread is the one finalizing.
        if (PyThread_get_thread_ident() != g_main_thread) return 0;
        // Python's handlers run in the caller's own floating-point mode, not the kernel's
        // (which may flush subnormals: team.hpp, SubnormalMode).
#if defined(__x86_64__)
        const unsigned kernel_mode = prf::read_fp_mode();
        prf::write_fp_mode(self->caller_mode_);
#endif
        PyGILState_STATE gil = PyGILState_Ensure();
        // Set before any Python code runs: a handler may run, and one that calls us must be
        // refused (found by a review: a handler's call at the first poll ran on this thread's
        // scratch, and the interrupted call gave other bits or hung).
        t_running_signal_handlers = true;
        if (!self->raised && PyErr_CheckSignals() != 0) self->raised = true;
        t_running_signal_handlers = false;
        PyGILState_Release(gil);
#if defined(__x86_64__)
        prf::write_fp_mode(kernel_mode);
#endif
        return self->raised;
    }
};

// Releases the GIL (when `release`) until the end of its scope. Not pybind11's
// gil_scoped_release, which takes the GIL back in a noexcept destructor: when the interpreter
// has begun finalizing meanwhile (the main thread returned while a daemon thread's call ran),
// CPython ends the thread inside PyEval_RestoreThread with pthread_exit, whose forced unwind
// through a noexcept destructor is std::terminate ("terminate called without an active
// exception": the process aborted at exit, found by a review). Such a thread is parked for
// good instead (what Python 3.14 does itself); should finalization begin while it waits for
// the GIL, the destructor lets the forced unwind through (pybind11 rethrows it). The main
// thread is the one finalizing (a call from an atexit handler or a finaliser there): it
// takes the GIL back as usual.
class GilReleased {
  public:
    explicit GilReleased(bool release = true) : state_(release ? PyEval_SaveThread() : nullptr) {}
    ~GilReleased() noexcept(false) {
        if (!state_) return;
        if (finalizing() && PyThread_get_thread_ident() != g_main_thread)
            for (;;) pause();
        PyEval_RestoreThread(state_);
    }
    GilReleased(const GilReleased&) = delete;
    GilReleased& operator=(const GilReleased&) = delete;

  private:
    static bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
        return Py_IsFinalizing();
#else
        return _Py_IsFinalizing();
#endif
    }
    PyThreadState* state_;
};

// Runs kernel(args) without the GIL, interruptible by signals; raises what a signal handler
// raised, or MemoryError when the kernel could not allocate its scratch memory.
template <class Args, class Kernel>
void run_kernel(Args& args, Kernel kernel) {
    SignalPoll signals;
    args.interrupt = &signals.interrupt;
    bool ok;
    {
        GilReleased release;
        ok = kernel(args);
    }
    if (signals.raised) throw py::error_already_set();
    if (!ok) throw std::bad_alloc();
}

inline bool is_dtype(const py::array& a, const py::dtype& d) { return a.dtype().equal(d); }

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

// Adds Stepper and fma_peak to the module (bindings_step.cpp).
void bind_step(py::module_& m);
// Adds the LSTM and GRU kernels (bindings_gated.cpp).
void bind_gated(py::module_& m);

}  // namespace prf_binding
