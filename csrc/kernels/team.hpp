// What every multi-threaded kernel shares: per-thread scratch memory, the thread's place in
// its OpenMP team, and the Ctrl-C poller (Interrupt in rnn.hpp).
#pragma once
#include <cstdlib>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

// Scratch memory for the packed weights, owned by the calling thread and reused across calls.
template <class T>
struct PackBuffer {
    T* data = nullptr;
    idx capacity = 0;
    T* get(idx n) {
        if (n > capacity) {
            std::free(data);
            void* p = nullptr;
            if (posix_memalign(&p, 64, size_t(n) * sizeof(T)) != 0) return data = nullptr, capacity = 0, nullptr;
            data = static_cast<T*>(p);
            capacity = n;
        }
        return data;
    }
    ~PackBuffer() { std::free(data); }
};
// One buffer per (type, purpose, thread): the recurrence's packed weights, and the GEMM's
// packed blocks of A and B.
enum Scratch { kRecurrenceWeights, kGemmA, kGemmB, kGemmWide };
template <class T, int Purpose>
static T* scratch(idx n) {
    static thread_local PackBuffer<T> buf;
    return buf.get(n);
}

static inline void thread_range(idx n, int nt, int tid, idx& lo, idx& hi) {
    lo = n * tid / nt;
    hi = n * (tid + 1) / nt;
}

static inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static inline int team_threads() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------
// Ctrl-C (Interrupt in rnn.hpp). Only the calling thread, team thread 0 (the thread that
// starts an OpenMP region is its thread 0), may call poll: in the binding it takes the GIL to
// run Python's signal handlers. How often it polls: kPollWork and kPollIntervalNs (config.hpp).
static inline long long monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct InterruptPoller {
    Interrupt* in;  // null on the other threads, and when the caller cannot be interrupted
    idx work = 0;
    long long next_poll = 0;
    explicit InterruptPoller(Interrupt* i) : in(i) {
        if (in) next_poll = monotonic_ns() + kPollIntervalNs;
    }
    // Called after each unit of `w` multiply-adds; true when the call must stop.
    bool operator()(idx w) {
        if (!in || (work += w) < kPollWork) return false;
        work = 0;
        if (monotonic_ns() < next_poll) return false;
        const bool stop = in->poll(in->ctx) != 0;
        next_poll = monotonic_ns() + kPollIntervalNs;
        if (stop) __atomic_store_n(&in->stop, 1, __ATOMIC_RELAXED);
        return stop;
    }
};

static inline bool interrupted(const Interrupt* in) { return in && __atomic_load_n(&in->stop, __ATOMIC_RELAXED); }

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
