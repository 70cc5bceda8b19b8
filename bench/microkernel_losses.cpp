/* Where the distance from the micro-kernel's ceiling to `large` goes (docs/DESIGN.md, "How
 * speed is established"). The library's own micro_tile (csrc/kernels/microkernel.hpp, the
 * AVX-512 build), one thread, timed with rdtsc under conditions closer and closer to a `large`
 * recurrence step (depth block 512, kStepKC until the thirty-third session, 128 rows of
 * h_{t-1} 4 KB apart, `cols` columns of packed weights swept in 256 KB groups), each as a
 * percentage of a register-only FMA loop timed in
 * the same process (best of 5 passes each):
 *   1 the ceiling's own set-up (_core.microkernel_peak): one packed A sliver, one 256 KB group
 *   2 A read in place, 8 rows 4 KB apart (one L1 set)
 *   3 all 16 row tiles of A in place against one group
 *   4 all 16 row tiles as packed slivers
 *   5 A in place, every group of the `cols` columns (each from L3 once, then L2 for 16 tiles)
 *   6 as 5, the tiles stored to the output rows
 *   7 as 6, xw added in the epilogue (the recurrences' forward epilogue)
 *   8 as 5, the next group prefetched to L2 (prefetcht1) one line every 8 k-steps
 *   9 the roles swapped: the weights as packed A slivers (8 hidden units x 512), each read from
 *     L3 once and kept in L1 while it meets the 4 panels of h_{t-1}^T (128 samples, in L2)
 *
 *     g++ -O3 -std=c++17 -ffp-contract=fast -fno-math-errno -fno-trapping-math -Wno-psabi \
 *         -mavx512f -mavx512dq -mavx2 -mfma -Icsrc bench/microkernel_losses.cpp -o /tmp/mk_losses
 *     /tmp/mk_losses 2048     # columns per thread: LSTM `large` on 2 threads (4 MB per block)
 *
 * Measured on the 2-vCPU KVM guest (Sapphire Rapids), 2026-12-03, runs on a quiet machine:
 * 1-4 86-89 %; 5 77-81 %; 6 80-83 %; 7 71-76 % (~50 % in a run right after the arrays were
 * first touched); 8 77-78 %, 2-4 points below 5 (an earlier form with a test per k-step: 66-67
 * % against 76-77 % without the prefetch). Noisy: a run while another process builds reads
 * everything 15-20 points lower, or over 100 % when the register loop was the one disturbed.
 * Thirteenth session (same VM type, a busier host), 8 runs: 1 84-91 %; at `cols` 1024 (2 MB of
 * weights per thread and depth block, as vanilla `large`'s two depth blocks of its 4 MB Wh were then, on 2
 * threads) 5 76-85 %, 9 83-89 % (9 - 5: +1 to +7 points within a run, +4 typical); at 2048
 * (LSTM) 5 77-83 %, 9 82-86 %; at 512 (1 MB, all in L2) both 84-90 %. What 5 loses is the
 * first pass over each group: a tile reads its panels' 128 bytes per k-step (16 per cycle at
 * the FMA rate, more than L3 gives one core), where 9's broadcast operand takes 32. Built as
 * a whole forward recurrence (transposes, tanh, a barrier per step), 9's order was 5-17 %
 * slower than the library's (docs/DESIGN.md, "Recurrence"): this harness misses what counts.
 * Needs AVX-512 (F, DQ). */
#define PRF_ISA_AVX512 1
#define PRF_ISA_NAMESPACE isa_avx512
#include <x86intrin.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/cell_vanilla.hpp"
#include "kernels/microkernel.hpp"

using namespace prf::isa_avx512;
using T = float;
using prf::idx;
constexpr int NR = kNR<T>;

static T* filled(idx n) {
    void* p = nullptr;
    if (posix_memalign(&p, 64, size_t(n) * sizeof(T)) != 0) std::exit(1);
    T* t = static_cast<T*>(p);
    for (idx i = 0; i < n; ++i) t[i] = T(1e-3) * T(i % 7);
    return t;
}

// FMAs per TSC cycle of kPeakChains register-only chains (what _core.fma_peak runs).
static double register_peak() {
    volatile T seed = 1;
    const Vec<T> m = splat<T>(T(0.999) * seed), c = splat<T>(T(0.001) * seed);
    Vec<T> acc[kPeakChains];
    for (int i = 0; i < kPeakChains; ++i) acc[i] = splat<T>(T(i) * seed);
    const idx iterations = 2000000;
    const unsigned long long t0 = __rdtsc();
    for (idx k = 0; k < iterations; ++k) {
#pragma GCC unroll 32
        for (int i = 0; i < kPeakChains; ++i) acc[i] = acc[i] * m + c;
    }
    const double cycles = double(__rdtsc() - t0);
    T sum = 0;
    for (int i = 0; i < kPeakChains; ++i) sum += acc[i][0];
    seed = sum;
    return 2.0 * kPeakChains * kLanes<T> * double(iterations) / cycles;
}

// micro_tile with one software prefetch of `pf` every `every` k-steps (variant 8).
template <class A, class Epi>
static void tile_prefetching(const A& a, idx K, const T* bp, const Epi& epi, const T* pf, int every) {
    constexpr int W = kLanes<T>;
    Vec<T> acc[kMR][kNV] = {};
#pragma GCC unroll 4
    for (idx k = 0; k < K; ++k) {
        if (k % every == 0) _mm_prefetch(reinterpret_cast<const char*>(pf + (k / every) * W), _MM_HINT_T1);
        Vec<T> b[kNV];
        for (int v = 0; v < kNV; ++v) b[v] = load(bp + k * NR + v * W);
#pragma GCC unroll 16
        for (int r = 0; r < kMR; ++r) {
            const Vec<T> av = splat<T>(a(r, k));
            for (int i = 0; i < kNV; ++i) acc[r][i] += av * b[i];
        }
    }
    epi.template operator()<kMR, kNV>(acc, 0, kMR, 0, NR);
}

int main(int argc, char** argv) {
    const idx K = 512, N = 128, H = 1024;
    const idx cols = argc > 1 ? std::atol(argv[1]) : 2048;
    const idx panels = cols / NR, panel_size = K * NR;
    const idx group = kGroupBytes / (K * NR * idx(sizeof(T)));
    if (panels < group || cols % kMR) {
        std::fprintf(stderr, "cols: at least %ld\n", long(group * NR));
        return 2;
    }
    T* B = filled(panels * panel_size);
    T* h = filled(N * H);        // h_{t-1}: rows H apart
    T* slivers = filled(N * K);  // the same rows packed
    T* xw = filled(N * 4 * H);
    T* out = filled(N * 4 * H);
    T tile[kMR * NR] __attribute__((aligned(64)));
    const StoreEpilogue<T> to_tile{tile, NR};
    const StoreEpilogue<T> to_out{out, 4 * H};
    const ForwardEpilogue<T, ActIdentity> add_xw{xw, 4 * H, out, 4 * H};
    double peak = 0;
    for (int r = 0; r < 3; ++r) {
        const double p = register_peak();
        peak = p > peak ? p : peak;
    }
    auto report = [&](const char* name, auto pass) {
        double best = 1e300;  // TSC cycles per flop
        for (int r = 0; r < 5; ++r) {
            const unsigned long long t0 = __rdtsc();
            const double flops = pass();
            const double c = double(__rdtsc() - t0) / flops;
            best = c < best ? c : best;
        }
        std::printf("%-62s %5.1f %%\n", name, 100.0 / best / peak);
    };
    const double tile_flops = 2.0 * kMR * NR * K;
    auto keep = [&] { __asm__ volatile("" : : "r"(tile) : "memory"); };
    // `rounds` sweeps of one group of panels by the row tiles from rows [0, rows); a_at(r) is
    // the A operand of the tile at row r.
    auto one_group = [&](int rounds, idx rows, auto a_at) {
        double f = 0;
        for (int it = 0; it < rounds; ++it)
            for (idx r = 0; r < rows; r += kMR)
                for (idx p = 0; p < group; ++p, f += tile_flops, keep())
                    micro_tile<T, kMR, 1>(a_at(r), K, PackedB<T>{B + p * panel_size, panel_size}, 0, kMR, 0, NR,
                                          to_tile);
        return f;
    };
    report("1 ceiling: one packed sliver, one 256 KB group",
           [&] { return one_group(200, kMR, [&](idx) { return PackedA<T>{slivers}; }); });
    report("2 one row tile in place (rows 4 KB apart), one group",
           [&] { return one_group(200, kMR, [&](idx) { return StridedRowsA<T>{h, H}; }); });
    report("3 all 16 row tiles in place, one group",
           [&] { return one_group(12, N, [&](idx r) { return StridedRowsA<T>{h + r * H, H}; }); });
    report("4 all 16 row tiles as packed slivers, one group",
           [&] { return one_group(12, N, [&](idx r) { return PackedA<T>{slivers + (r / kMR) * kMR * K}; }); });
    // One step's sweep: groups outer, row tiles inner, as panel_gemm runs them.
    auto sweep = [&](auto epi, bool at_tile) {
        double f = 0;
        for (idx pg = 0; pg < panels; pg += group)
            for (idx r = 0; r < N; r += kMR)
                for (idx p = pg; p < pg + group && p < panels; ++p, f += tile_flops) {
                    micro_tile<T, kMR, 1>(StridedRowsA<T>{h + r * H, H}, K, PackedB<T>{B + p * panel_size, panel_size},
                                          at_tile ? 0 : r, kMR, at_tile ? 0 : p * NR, NR, epi);
                    if (at_tile) keep();
                }
        return f;
    };
    report("5 every group of `cols` (from L3 once, then L2), tile buffer", [&] { return sweep(to_tile, true); });
    report("6 as 5, tiles stored to the output rows", [&] { return sweep(to_out, false); });
    report("7 as 6, xw added in the epilogue", [&] { return sweep(add_xw, false); });
    report("8 as 5, next group prefetched to L2 every 8 k-steps", [&] {
        double f = 0;
        const idx tiles_per_group = (N / kMR) * group;
        for (idx pg = 0; pg < panels; pg += group) {
            const T* next = B + (pg + group < panels ? pg + group : 0) * panel_size;
            idx t = 0;
            for (idx r = 0; r < N; r += kMR)
                for (idx p = pg; p < pg + group && p < panels; ++p, ++t, f += tile_flops, keep())
                    tile_prefetching(StridedRowsA<T>{h + r * H, H}, K, B + p * panel_size, to_tile,
                                     next + t * (group * panel_size / tiles_per_group), 8);
        }
        return f;
    });
    // One step's sweep with the roles swapped: for each sliver of the weights, the 4 panels of
    // h_{t-1}^T (the first 256 KB of B stand for them).
    T* weight_slivers = filled(cols * K);
    report("9 roles swapped: weight slivers from L3 once, h^T in L2", [&] {
        double f = 0;
        for (idx s = 0; s < cols / kMR; ++s)
            for (idx p = 0; p < N / NR; ++p, f += tile_flops, keep())
                micro_tile<T, kMR, 1>(PackedA<T>{weight_slivers + s * kMR * K}, K,
                                      PackedB<T>{B + p * panel_size, panel_size}, 0, kMR, 0, NR, to_tile);
        return f;
    });
    return 0;
}
