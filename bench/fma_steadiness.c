/* How steadily does the host give this machine its FMA peak? (docs/DESIGN.md, "How speed is
 * established".) Each of P threads runs register-only AVX2 FMAs (12 independent chains) in
 * chunks of `iters` iterations for S seconds and times every chunk; it prints, per thread,
 * the fastest chunk, the mean, the share of chunks slower than 1.5x the fastest, and the
 * work done as a fraction of what the fastest chunk's rate would have done; with a fourth
 * argument, the time lost to slow chunks in each 100 ms.
 *
 *     gcc -O3 -mavx2 -mfma -fopenmp bench/fma_steadiness.c -o /tmp/fma_steadiness
 *     /tmp/fma_steadiness 2 8 20000 v     # threads, seconds, iterations per chunk, per-100-ms
 *
 * Measured on the 2-vCPU Zen 3 KVM guest (thirty-fourth session), 8 s: a first build whose
 * chains stayed in memory (0.086 ms chunks), on a busy host: one thread 85 % of its fastest rate,
 * two threads 80 % and 89 %, the time lost per 100 ms 5-10 ms most of the time and ~50 ms
 * (half speed) in stretches of 0.2-1 s; this build (0.037 ms chunks) half an hour later, two
 * threads: 94 % and 90 %, one stretch at ~40 ms lost. /proc/stat showed no steal time. A
 * machine that gives its peak steadily reads close to 100 %. x86-64 with AVX2 and FMA, a POSIX
 * clock_gettime. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s threads seconds iterations_per_chunk [per-100-ms]\n", argv[0]);
        return 2;
    }
    const int P = atoi(argv[1]);
    const double S = atof(argv[2]);
    const long iters = atol(argv[3]);
    if (P < 1 || S <= 0 || iters < 1) return 2;
    const int most = (int)(S * 100000) + 1; /* chunks a thread can record (>= 10 µs each) */
    double* start = calloc((size_t)P * most, sizeof(double));
    double* took = calloc((size_t)P * most, sizeof(double));
    int* count = calloc((size_t)P, sizeof(int));
    if (!start || !took || !count) return 1;
    const double t0 = now();
#pragma omp parallel num_threads(P)
    {
        const int id = omp_get_thread_num();
        int c = 0;
        __m256 acc[12];
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(1.0f + (float)i * 1e-7f);
        const __m256 m = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);
        while (c < most) {
            const double s = now();
            if (s - t0 > S) break;
            for (long k = 0; k < iters; ++k)
#pragma GCC unroll 12
                for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, b);
            start[id * most + c] = s - t0;
            took[id * most + c] = now() - s;
            ++c;
        }
        float sink = 0;
        for (int i = 0; i < 12; ++i) sink += acc[i][0];
        if (sink == 12345.0f) printf("%g\n", sink); /* keeps the chains */
        count[id] = c;
    }
    for (int id = 0; id < P; ++id) {
        const int c = count[id];
        const double* d = took + (size_t)id * most;
        double fastest = 1e9, total = 0;
        int slow = 0;
        for (int i = 0; i < c; ++i) {
            if (d[i] < fastest) fastest = d[i];
            total += d[i];
        }
        for (int i = 0; i < c; ++i) slow += d[i] > 1.5 * fastest;
        printf("thread %d: %d chunks, fastest %.3f ms, mean %.3f ms, slower than 1.5x the fastest %.1f %%, "
               "work %.1f %% of the fastest rate\n",
               id, c, fastest * 1e3, total / c * 1e3, 100.0 * slow / c, 100.0 * fastest * c / total);
        if (argc > 4) {
            const int bins = (int)(S * 10) + 1;
            double* lost = calloc((size_t)bins, sizeof(double));
            if (!lost) return 1;
            for (int i = 0; i < c; ++i) {
                const int bin = (int)(start[id * most + i] * 10);
                if (bin < bins) lost[bin] += d[i] - fastest;
            }
            printf("  ms lost per 100 ms:");
            for (int bin = 0; bin < bins; ++bin) printf(" %.0f", lost[bin] * 1e3);
            printf("\n");
            free(lost);
        }
    }
    free(start);
    free(took);
    free(count);
    return 0;
}
