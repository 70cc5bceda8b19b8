// The instruction set's floating-point peak, measured (PeakArgs in rnn.hpp): kPeakChains
// independent chains of vector FMAs that never leave the registers, so that nothing but the
// FMA units' throughput (ports x lanes x clock, under the frequency the ISA runs at) limits
// it. This is the bar for GEMM-bound work (docs/DESIGN.md): a ratio to a peer's BLAS depends
// on which BLAS the peer got.
#pragma once
#include "team.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

template <class T>
static bool fma_peak_kernel(const PeakArgs<T>& a) {
    int ran = 0;
    run_team(a.threads, [&](int, int) {
        // Values that stay finite and normal for any number of rounds: x -> x*m + c
        // converges to c / (1 - m).
        volatile T seed = T(1);  // unknown to the compiler: the loop cannot be folded away
        const Vec<T> m = splat<T>(T(0.999) * seed), c = splat<T>(T(0.001) * seed);
        Vec<T> acc[kPeakChains];
        for (int i = 0; i < kPeakChains; ++i) acc[i] = splat<T>(T(i) * seed);
        for (idx it = 0; it < a.iterations; ++it) {
#pragma GCC unroll 32
            for (int i = 0; i < kPeakChains; ++i) acc[i] = acc[i] * m + c;
        }
        T sum = 0;
        for (int i = 0; i < kPeakChains; ++i) sum += acc[i][0];
        seed = sum;  // the result is used
        __atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
    });
    *a.flops = 2.0 * kPeakChains * kLanes<T> * double(a.iterations) * ran;
    return true;
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
