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
#include "kernels/cell_gru.hpp"
#include "kernels/cell_lstm.hpp"
#include "kernels/cell_vanilla.hpp"
#include "kernels/peak.hpp"
#include "kernels/step.hpp"

// This instruction set's kernel tables, declared in rnn.hpp: name##_kernel<T> for every
// entry of PRF_KERNELS (constant-initialised: addresses only, no code runs at load time).
namespace prf {
namespace PRF_ISA_NAMESPACE {
#define PRF_KERNEL_F32(name, Args) name##_kernel<float>,
#define PRF_KERNEL_F64(name, Args) name##_kernel<double>,
extern const KernelTable<float> kernels_f32 = {PRF_KERNELS(PRF_KERNEL_F32)};
extern const KernelTable<double> kernels_f64 = {PRF_KERNELS(PRF_KERNEL_F64)};
#undef PRF_KERNEL_F32
#undef PRF_KERNEL_F64
}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
