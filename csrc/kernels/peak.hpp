// The instruction set's floating-point peak, measured (PeakArgs in rnn.hpp): kPeakChains
// independent chains of vector FMAs that never leave the registers, so that nothing but the
// FMA units' throughput (ports x lanes x clock, under the frequency the ISA runs at) limits
// it. This is the bar for GEMM-bound work (docs/DESIGN.md): a ratio to a peer's BLAS depends
// on which BLAS the peer got.
#pragma once
#include "microkernel.hpp"
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

// The ceiling of the GEMMs and step products below that peak: the micro-kernel itself, fed
// as the GEMM feeds it at its best (gemm.hpp): one packed sliver of A (kMR x kKC, in L1)
// against an L2-sized group of packed panels of B (kGroupBytes), tiles stored to a small
// buffer. It differs from fma_peak only by the loads the tile needs (kNV vectors of B and kMR
// broadcasts of A per step of k): measured on Sapphire Rapids VMs (AVX-512), 96-97 % of
// fma_peak on a quiet host, 82-88 % on busy ones (docs/DESIGN.md, "How speed is
// established").
template <class T>
static bool microkernel_peak_kernel(const PeakArgs<T>& a) {
    constexpr int NR = kNR<T>;
    constexpr idx kc = kKC;
    const idx panels = imax(1, kGroupBytes / (kc * NR * idx(sizeof(T))));
    int ran = 0;
    bool ok = true;
    run_team(a.threads, [&](int, int) {
        T* pa = scratch<T, kGemmA>(kMR * kc);
        T* pb = scratch<T, kGemmB>(panels * kc * NR);
        if (!pa || !pb) {
            __atomic_store_n(&ok, false, __ATOMIC_RELAXED);
            return;
        }
        for (idx i = 0; i < kMR * kc; ++i) pa[i] = T(1e-3) * T(i % 7);
        for (idx i = 0; i < panels * kc * NR; ++i) pb[i] = T(1e-3) * T(i % 5);
        T tile[kMR * NR] __attribute__((aligned(64)));
        const StoreEpilogue<T> epi{tile, NR};
        for (idx it = 0; it < a.iterations; ++it)
            for (idx p = 0; p < panels; ++p) {
                micro_tile<T, kMR, 1>(PackedA<T>{pa}, kc, PackedB<T>{pb + p * kc * NR, kc * NR}, 0, kMR, 0, NR, epi);
                // Memory may have changed: every tile is computed again, none hoisted or merged.
                __asm__ volatile("" : : "r"(tile) : "memory");
            }
        volatile T sink = tile[0];  // the result is used
        (void)sink;
        __atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
    });
    *a.flops = 2.0 * kMR * NR * kc * double(panels) * double(a.iterations) * ran;
    return ok;
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
