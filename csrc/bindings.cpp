// pyrnn_fast._core: the only file that knows about Python. It checks every array's dtype,
// shape, strides, alignment and writability against the others before the kernel touches
// memory, so that no call from Python can make the C++ layer read or write out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <new>
#include <string>
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
    return s + ")";
}

// Checks `a` against dtype T, the expected shape, writability, alignment and strides that the
// kernel can address (non-negative, whole elements, unit stride on the last axis). Returns the
// strides in elements.
template <class T>
std::vector<idx> checked(const py::array& a, const char* name, const std::vector<idx>& shape,
                         bool writable) {
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
        if (i + 1 == shape.size() && strides[i] != 1)
            throw py::value_error(std::string(name) + ": the last axis must be contiguous");
    }
    return strides;
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

template <class T>
void forward_typed(const py::array& xw, const py::array& wh, const py::object& h0, py::array& out,
                   prf::Activation act, int threads) {
    if (xw.ndim() != 3) throw py::value_error("xw: expected a 3-D (T, N, H) array, got shape " + shape_str(xw));
    const std::vector<idx> seq_shape{idx(xw.shape(0)), idx(xw.shape(1)), idx(xw.shape(2))};
    const idx N = seq_shape[1], H = seq_shape[2];
    auto sx = checked<T>(xw, "xw", seq_shape, false);
    auto sw = checked<T>(wh, "Wh", {H, H}, false);
    auto so = checked<T>(out, "out", seq_shape, true);
    prf::ForwardArgs<T> args{seq<T>(static_cast<const T*>(xw.data()), seq_shape, sx),
                             {static_cast<const T*>(wh.data()), H, H, sw[0]},
                             {nullptr, N, H, 0},
                             seq<T>(static_cast<T*>(out.mutable_data()), seq_shape, so),
                             act,
                             threads};
    py::array h0a;
    if (!h0.is_none()) {
        if (!py::isinstance<py::array>(h0)) throw py::type_error("h0: expected a numpy array or None");
        h0a = h0.cast<py::array>();
        auto sh = checked<T>(h0a, "h0", {N, H}, false);
        args.h0 = {static_cast<const T*>(h0a.data()), N, H, sh[0]};
    }
    bool ok;
    {
        py::gil_scoped_release release;
        ok = prf::forward<T>(args);
    }
    if (!ok) throw std::bad_alloc();
}

template <class T>
void backward_typed(const py::array& dh, const py::array& h, const py::array& wh, const py::object& dh_last,
                    py::array& da, py::array& dh0, prf::Activation act, int threads) {
    if (dh.ndim() != 3) throw py::value_error("dh: expected a 3-D (T, N, H) array, got shape " + shape_str(dh));
    const std::vector<idx> seq_shape{idx(dh.shape(0)), idx(dh.shape(1)), idx(dh.shape(2))};
    const idx N = seq_shape[1], H = seq_shape[2];
    auto sg = checked<T>(dh, "dh", seq_shape, false);
    auto sh = checked<T>(h, "h", seq_shape, false);
    auto sw = checked<T>(wh, "Wh", {H, H}, false);
    auto sa = checked<T>(da, "da", seq_shape, true);
    auto s0 = checked<T>(dh0, "dh0", {N, H}, true);
    prf::BackwardArgs<T> args{seq<T>(static_cast<const T*>(dh.data()), seq_shape, sg),
                              seq<T>(static_cast<const T*>(h.data()), seq_shape, sh),
                              {static_cast<const T*>(wh.data()), H, H, sw[0]},
                              {nullptr, N, H, 0},
                              seq<T>(static_cast<T*>(da.mutable_data()), seq_shape, sa),
                              {static_cast<T*>(dh0.mutable_data()), N, H, s0[0]},
                              act,
                              threads};
    py::array dla;
    if (!dh_last.is_none()) {
        if (!py::isinstance<py::array>(dh_last)) throw py::type_error("dh_last: expected a numpy array or None");
        dla = dh_last.cast<py::array>();
        auto sl = checked<T>(dla, "dh_last", {N, H}, false);
        args.dh_last = {static_cast<const T*>(dla.data()), N, H, sl[0]};
    }
    bool ok;
    {
        py::gil_scoped_release release;
        ok = prf::backward<T>(args);
    }
    if (!ok) throw std::bad_alloc();
}

bool is_dtype(const py::array& a, const py::dtype& d) { return a.dtype().equal(d); }

prf::Isa parse_isa(const std::string& s) {
    for (prf::Isa isa : {prf::Isa::generic, prf::Isa::avx2, prf::Isa::avx512})
        if (s == prf::isa_name(isa)) {
            if (!prf::isa_supported(isa))
                throw py::value_error("isa: '" + s + "' is not supported by this CPU or build; available: avx512, avx2, generic as supported");
            return isa;
        }
    throw py::value_error("isa: expected one of 'avx512', 'avx2', 'generic', got '" + s + "'");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyrnn_fast compiled recurrence kernels (C++17, OpenMP). Use pyrnn_fast's public API instead.";

    m.def(
        "forward",
        [](const py::array& xw, const py::array& wh, const py::object& h0, py::array& out,
           const std::string& activation, int threads) {
            auto act = parse_activation(activation);
            if (is_dtype(xw, py::dtype::of<float>()))
                forward_typed<float>(xw, wh, h0, out, act, threads);
            else if (is_dtype(xw, py::dtype::of<double>()))
                forward_typed<double>(xw, wh, h0, out, act, threads);
            else
                throw py::type_error("xw: expected float32 or float64, got dtype " + py::str(xw.dtype()).cast<std::string>());
        },
        py::arg("xw").noconvert(), py::arg("wh").noconvert(), py::arg("h0").none(true), py::arg("out").noconvert(),
        py::arg("activation"), py::arg("threads"),
        "out[t] = act(xw[t] + out[t-1] @ wh), out[-1] = h0 (zeros if None). Arrays are (T, N, H) views.");

    m.def(
        "backward",
        [](const py::array& dh, const py::array& h, const py::array& wh, const py::object& dh_last, py::array& da,
           py::array& dh0, const std::string& activation, int threads) {
            auto act = parse_activation(activation);
            if (is_dtype(dh, py::dtype::of<float>()))
                backward_typed<float>(dh, h, wh, dh_last, da, dh0, act, threads);
            else if (is_dtype(dh, py::dtype::of<double>()))
                backward_typed<double>(dh, h, wh, dh_last, da, dh0, act, threads);
            else
                throw py::type_error("dh: expected float32 or float64, got dtype " + py::str(dh.dtype()).cast<std::string>());
        },
        py::arg("dh").noconvert(), py::arg("h").noconvert(), py::arg("wh").noconvert(), py::arg("dh_last").none(true),
        py::arg("da").noconvert(), py::arg("dh0").noconvert(), py::arg("activation"), py::arg("threads"),
        "da[t] = (dh[t] + da[t+1] @ wh.T) * act'(h[t]) (dh_last in place of da[T] @ wh.T); dh0 = da[0] @ wh.T.");

    m.def("isa", [] { return std::string(prf::isa_name(prf::current_isa())); },
          "The instruction set the kernels run with now.");
    m.def("set_isa", [](const std::string& name) { prf::set_isa(parse_isa(name)); }, py::arg("name"),
          "Force the kernels' instruction set ('avx512', 'avx2' or 'generic'); it must be supported.");
    m.def("available_isas", [] {
        std::vector<std::string> out;
        for (prf::Isa isa : {prf::Isa::avx512, prf::Isa::avx2, prf::Isa::generic})
            if (prf::isa_supported(isa)) out.emplace_back(prf::isa_name(isa));
        return out;
    }, "The instruction sets this CPU and build support, best first.");
    m.def("max_threads", &prf::max_threads, "OpenMP's default thread count (1 when built without OpenMP).");
#ifdef _OPENMP
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
}
