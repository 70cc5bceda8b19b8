// Why the recurrence runs every other step's panels from the last to the first
// (csrc/kernels/recurrence.hpp, microkernel.hpp step_product): a stream of one sample,
// h_t = act(xw_t + h_{t-1} . W), float32 H = 128, whose 64 KB of weights are twice a 32 KB L1.
// Swept in the same order every step, each step reads all of them from L2; swept in column
// groups whose order alternates, a step starts on the group the step before ended on, still
// in L1. Each column's sum is the same chain of multiply-adds either way (the same bits). Prints
// the fastest of 300 runs of 1,000 steps, µs a step:
//   one group of 128 columns; groups of 64 (fixed order, alternating); groups of 32 (same)
//
//     g++ -O3 -mavx512f bench/l1_reuse.cpp -o /tmp/l1_reuse && /tmp/l1_reuse
//
// Zen 4 KVM guest (AVX-512, 32 KB L1d, 1 MB L2), 2026-12-07: 0.565 | 0.568 0.460 | 0.565 0.523
// (the clamp below stands in for tanh: the step's arithmetic is not what is measured).
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {

constexpr int H = 128, T = 1000;
alignas(64) float W[H * H];  // in column groups of G: group g at W + g * H * G, row k at + k * G
alignas(64) float xw[T * H];
alignas(64) float hs[(T + 1) * H];

__m512 clamp(__m512 v) { return _mm512_max_ps(_mm512_min_ps(v, _mm512_set1_ps(1.f)), _mm512_set1_ps(-1.f)); }

template <int G, bool Alternate>
void steps() {
    constexpr int groups = H / G, vectors = G / 16;
    for (int t = 0; t < T; ++t) {
        const float* h = hs + t * H;
        for (int i = 0; i < groups; ++i) {
            const int g = Alternate && t % 2 ? groups - 1 - i : i;
            __m512 acc[vectors];
            for (int j = 0; j < vectors; ++j) acc[j] = _mm512_load_ps(xw + t * H + g * G + 16 * j);
            const float* w = W + g * H * G;
            for (int k = 0; k < H; ++k) {
                const __m512 hk = _mm512_set1_ps(h[k]);
                for (int j = 0; j < vectors; ++j)
                    acc[j] = _mm512_fmadd_ps(hk, _mm512_load_ps(w + k * G + 16 * j), acc[j]);
            }
            for (int j = 0; j < vectors; ++j) _mm512_store_ps(hs + (t + 1) * H + g * G + 16 * j, clamp(acc[j]));
        }
    }
}

template <class F>
double fastest_us_per_step(F run) {
    double best = 1e30;
    for (int r = 0; r < 300; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
        if (us / T < best) best = us / T;
    }
    return best;
}

}  // namespace

int main() {
    for (float& w : W) w = (float(std::rand()) / RAND_MAX - 0.5f) * 0.1f;
    for (float& v : xw) v = float(std::rand()) / RAND_MAX - 0.5f;
    for (int round = 0; round < 3; ++round)
        std::printf("%.3f | %.3f %.3f | %.3f %.3f\n", fastest_us_per_step(steps<128, false>),
                    fastest_us_per_step(steps<64, false>), fastest_us_per_step(steps<64, true>),
                    fastest_us_per_step(steps<32, false>), fastest_us_per_step(steps<32, true>));
}
