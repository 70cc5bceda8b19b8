// What every multi-threaded kernel shares: per-thread scratch memory, the thread's place in
// its OpenMP team, and the Ctrl-C poller (Interrupt in rnn.hpp).
#pragma once
#include <sched.h>

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
// One buffer per (type, purpose, thread): the recurrence's packed weights and partial sums,
// the GEMM's packed blocks of A and B, and the streaming step's sums.
enum Scratch { kRecurrenceWeights, kRecurrencePartial, kRecurrenceA, kGemmA, kGemmB, kGemmWide, kStepSums };
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

// Runs body(team, tid) on a team of nt threads (team: the team's size, tid: this thread's
// place in it): in an OpenMP parallel region when nt > 1, else directly on the calling thread
// as body(1, 0). libgomp's region costs a futex wake-up even for a team of one: measured
// ~1 µs, more than half of a small streaming step's whole call. (The team is passed, not read
// with omp_get_num_threads() in the body: a caller inside someone else's parallel region
// would read that region's team.)
template <class Body>
static void run_team(idx nt, const Body& body) {
    if (nt <= 1) {
        body(1, 0);
        return;
    }
#pragma omp parallel num_threads(int(nt))
    body(team_threads(), thread_id());
}

// The per-step barrier of the recurrence (and of the streaming step, between layers). libgomp's `omp barrier` makes a
// futex_wake system call at every barrier, even when every thread is spinning, which costs more than a whole step of a
// small recurrence (measured: N = 1, H = 128 took 1.07 µs/step on two threads against 0.86 on one). This one costs a
// cache-line transfer: threads spin on a generation counter, and after a bounded spin yield the core (a descheduled
// teammate, an oversubscribed machine), never sleeping on a futex. GCC's __atomic builtins on a plain int, not
// std::atomic: no standard-library template may be instantiated here (kernels_isa.cpp).
struct StepBarrier {
    alignas(64) int arrived = 0;
    alignas(64) int generation = 0;
    int team = 1;
    // Every thread of the team stores the same size before its first wait, so each one reads
    // its own store or an identical one: no extra barrier needed to publish it.
    void join(int size) { __atomic_store_n(&team, size, __ATOMIC_RELAXED); }
    void wait() {
        const int gen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
        if (__atomic_add_fetch(&arrived, 1, __ATOMIC_ACQ_REL) == __atomic_load_n(&team, __ATOMIC_RELAXED)) {
            __atomic_store_n(&arrived, 0, __ATOMIC_RELAXED);  // nobody touches it until gen moves
            __atomic_store_n(&generation, gen + 1, __ATOMIC_RELEASE);
            return;
        }
        for (unsigned spins = 0; __atomic_load_n(&generation, __ATOMIC_ACQUIRE) == gen; ++spins) {
            if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            } else {
                sched_yield();
            }
        }
    }
};

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
