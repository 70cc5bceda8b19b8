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

// Rounds of a peak loop between two looks at Ctrl-C (InterruptPoller, team.hpp): a few µs of
// FMAs, so that the look costs nothing measurable and a call of any length stops soon.
constexpr idx kPeakPollRounds = idx(1) << 10;

template <class T>
static bool fma_peak_kernel(const PeakArgs<T>& a) {
    int ran = 0;
    run_team(a.threads, [&](int, int tid) {
        InterruptPoller poll(tid == 0 ? a.interrupt : nullptr);
        // Values that stay finite and normal for any number of rounds: x -> x*m + c
        // converges to c / (1 - m).
        volatile T seed = T(1);  // unknown to the compiler: the loop cannot be folded away
        const Vec<T> m = splat<T>(T(0.999) * seed), c = splat<T>(T(0.001) * seed);
        Vec<T> acc[kPeakChains];
        for (int i = 0; i < kPeakChains; ++i) acc[i] = splat<T>(T(i) * seed);
        for (idx done = 0; done < a.iterations && !interrupted(a.interrupt);) {
            const idx rounds = imin(kPeakPollRounds, a.iterations - done);
            for (idx it = 0; it < rounds; ++it) {
#pragma GCC unroll 32
                for (int i = 0; i < kPeakChains; ++i) acc[i] = acc[i] * m + c;
            }
            done += rounds;
            poll(rounds * kPeakChains * kLanes<T>);  // (interrupted: the call raises, `flops` unread)
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
    run_team(a.threads, [&](int, int tid) {
        InterruptPoller poll(tid == 0 ? a.interrupt : nullptr);
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
        // Until Ctrl-C, or until a thread could not allocate (the call fails; that thread may be
        // the one that polls).
        for (idx it = 0; it < a.iterations && !interrupted(a.interrupt) && __atomic_load_n(&ok, __ATOMIC_RELAXED);
             ++it) {
            for (idx p = 0; p < panels; ++p) {
                micro_tile<T, kMR, 1>(PackedA<T>{pa}, kc, PackedB<T>{pb + p * kc * NR, kc * NR}, 0, kMR, 0, NR, epi);
                // Memory may have changed: every tile is computed again, none hoisted or merged.
                __asm__ volatile("" : : "r"(tile) : "memory");
            }
            poll(panels * kMR * NR * kc);
        }
        volatile T sink = tile[0];  // the result is used
        (void)sink;
        __atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
    });
    *a.flops = 2.0 * kMR * NR * kc * double(panels) * double(a.iterations) * ran;
    return ok;
}

// What a thread's caches deliver (ReadArgs in rnn.hpp): its own buffer, filled once (its pages
// and lines its own), then, once every thread of the team has filled its own, read whole
// `iterations` times, as a step sweeps its weights, into kReadChains independent sums
// (config.hpp), with nothing else in the loop. Only the reading is timed: from the first
// thread's start, once all have filled their buffers, to the last one's end. Measured on the
// Zen 4 VM (AVX-512, one thread, limits.read_bandwidth; 1 MB L2): ~200 GB/s from L1, ~110 from
// L2 and up to 1.1 MB, ~98 at 2 MB, ~87 at 8 MB (in one order every pass: ~90 at 1.1 MB).
template <class T>
static bool read_peak_kernel(const ReadArgs<T>& a) {
    constexpr idx round = idx(kReadChains) * kLanes<T>;  // values per round of the chains
    const idx n = imax(1, a.bytes / idx(sizeof(T)) / round) * round;
    int ran = 0;
    long long start_ns = __LONG_LONG_MAX__, end_ns = 0;
    // ns = min(ns, t) (`least`) or max(ns, t), from any thread.
    auto extreme = [](long long& ns, long long t, bool least) {
        long long seen = __atomic_load_n(&ns, __ATOMIC_RELAXED);
        while ((least ? t < seen : t > seen) &&
               !__atomic_compare_exchange_n(&ns, &seen, t, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
    };
    bool ok = true;
    StepBarrier filled(scratch<BarrierSlot, kReadBarrier>(a.threads), a.threads);
    if (!filled) return false;
    run_team(a.threads, [&](int team, int tid) {
        void* p = nullptr;
        const bool got = posix_memalign(&p, 64, size_t(n) * sizeof(T)) == 0;
        T* buf = static_cast<T*>(p);
        if (got)
            for (idx i = 0; i < n; ++i) buf[i] = T(1e-3) * T(i % 7);
        // Every thread reads while the others do (the caches' shared parts are shared as in a
        // team's step); one that could not allocate only meets the barrier.
        filled.wait(team, tid);
        if (!got) {
            __atomic_store_n(&ok, false, __ATOMIC_RELAXED);
            return;
        }
        extreme(start_ns, monotonic_ns(), true);  // the first thread to start reading
        Vec<T> acc[kReadChains];
        for (int c = 0; c < kReadChains; ++c) acc[c] = Vec<T>{};
        for (idx it = 0; it < a.iterations; ++it) {
            // Every other pass from the end to the start, as a step alternates the order of its
            // chunks: a buffer a little larger than L2 then comes mostly from L2 (each pass starts
            // on what the one before ended on), where the same order every time finds none of it.
            const bool back = it % 2 == 1;
            for (idx j = 0; j < n; j += round) {
                const idx i = back ? n - round - j : j;
#pragma GCC unroll 8
                for (int c = 0; c < kReadChains; ++c) acc[c] += load<T>(buf + i + c * kLanes<T>);
            }
            // Memory may have changed: every round is read again, none hoisted or merged.
            __asm__ volatile("" : : "r"(buf) : "memory");
        }
        extreme(end_ns, monotonic_ns(), false);  // the last to finish
        for (int c = 1; c < kReadChains; ++c) acc[0] += acc[c];
        T sum = 0;
        for (int l = 0; l < kLanes<T>; ++l) sum += acc[0][l];
        volatile T sink = sum;  // every lane of every sum is used: no load is dead
        (void)sink;
        std::free(p);
        __atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
    });
    *a.bytes_read = double(n) * sizeof(T) * double(a.iterations) * ran;
    *a.seconds = ran ? double(end_ns - start_ns) * 1e-9 : 0.0;
    return ok;
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
