// The kernels of one instruction set. CMakeLists.txt compiles this file once per instruction
// set, each time with its own -m flags and -DPRF_ISA_NAMESPACE=isa_<name> (plus the ISA's
// PRF_ISA_* macro, which config.hpp reads), so every header under csrc/kernels/ is compiled
// into that namespace with those flags.
//
// Nothing in these headers may instantiate a standard-library template (std::vector,
// std::atomic, std::min, ...): such an instantiation is an inline function with vague linkage,
// which the linker merges across translation units, so the copy compiled with AVX flags could
// replace the portable one and run on a CPU without AVX. Use GCC __atomic builtins on plain
// ints, plain structs and function pointers instead.
#include "kernels/gemm.hpp"
#include "kernels/cell_vanilla.hpp"

// The entry points declared in rnn.hpp.
namespace prf {
namespace PRF_ISA_NAMESPACE {
bool forward(const ForwardArgs<float>& a) { return forward_dispatch(a); }
bool forward(const ForwardArgs<double>& a) { return forward_dispatch(a); }
bool backward(const BackwardArgs<float>& a) { return backward_dispatch(a); }
bool backward(const BackwardArgs<double>& a) { return backward_dispatch(a); }
bool gemm(const GemmArgs<float>& g) { return gemm_impl(g); }
bool gemm(const GemmArgs<double>& g) { return gemm_impl(g); }
}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
