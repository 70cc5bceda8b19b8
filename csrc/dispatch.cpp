// Run-time choice of the instruction set. Compiled with baseline flags only: this file runs
// before we know what the CPU supports.
#include <atomic>
#include <initializer_list>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "rnn.hpp"

namespace prf {

bool isa_supported(Isa isa) {
    switch (isa) {
        case Isa::generic:
            return true;
#ifdef PRF_HAVE_X86_KERNELS
        // __builtin_cpu_supports also checks that the OS saves the wider registers.
        case Isa::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#endif
        default:
            return false;
    }
}

Isa best_isa() {
    for (Isa isa : {Isa::avx512, Isa::avx2})
        if (isa_supported(isa)) return isa;
    return Isa::generic;
}

static std::atomic<int> g_isa{-1};

Isa current_isa() {
    int v = g_isa.load(std::memory_order_relaxed);
    if (v < 0) {
        v = int(best_isa());
        g_isa.store(v, std::memory_order_relaxed);
    }
    return Isa(v);
}

void set_isa(Isa isa) { g_isa.store(int(isa), std::memory_order_relaxed); }

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

template <class T>
bool forward(const ForwardArgs<T>& a) {
    switch (current_isa()) {
#ifdef PRF_HAVE_X86_KERNELS
        case Isa::avx512: return isa_avx512::forward(a);
        case Isa::avx2: return isa_avx2::forward(a);
#endif
        default: return isa_generic::forward(a);
    }
}

template <class T>
bool backward(const BackwardArgs<T>& a) {
    switch (current_isa()) {
#ifdef PRF_HAVE_X86_KERNELS
        case Isa::avx512: return isa_avx512::backward(a);
        case Isa::avx2: return isa_avx2::backward(a);
#endif
        default: return isa_generic::backward(a);
    }
}

template <class T>
bool gemm(const GemmArgs<T>& g) {
    switch (current_isa()) {
#ifdef PRF_HAVE_X86_KERNELS
        case Isa::avx512: return isa_avx512::gemm(g);
        case Isa::avx2: return isa_avx2::gemm(g);
#endif
        default: return isa_generic::gemm(g);
    }
}

template bool gemm<float>(const GemmArgs<float>&);
template bool gemm<double>(const GemmArgs<double>&);
template bool forward<float>(const ForwardArgs<float>&);
template bool forward<double>(const ForwardArgs<double>&);
template bool backward<float>(const BackwardArgs<float>&);
template bool backward<double>(const BackwardArgs<double>&);

}  // namespace prf
