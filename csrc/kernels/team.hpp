// What every multi-threaded kernel shares: per-thread scratch memory, the thread's place in
// its OpenMP team, and the Ctrl-C poller (Interrupt in rnn.hpp).
#pragma once
#include <sched.h>

#include <cstdlib>
#include <time.h>
#include <unistd.h>  // sysconf

#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

static inline long long monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// The cache a core has to itself (its L2), as the C library reports it; 512 KB (the smallest
// seen on the machines this was measured on, Zen 3) when it does not say. The recurrence's row
// split and the streaming step's share of weights per thread are sized by it.
static inline idx core_cache_bytes() {
    static const idx bytes = [] {
        const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
        return l2 > 0 ? idx(l2) : idx(512) << 10;
    }();
    return bytes;
}

// Whether this is an AMD processor: the streaming step's software prefetch cost time on AMD's
// (Zen 3, Zen 4) and is kept elsewhere (config.hpp, kStepPrefetch).
static inline bool amd_cpu() {
#if defined(__x86_64__) || defined(__i386__)
    static const bool amd = [] {
        __builtin_cpu_init();  // (idempotent; needed before the first test in a constructor)
        return __builtin_cpu_is("amd") != 0;
    }();
    return amd;
#else
    return false;
#endif
}

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
// the GEMM's packed blocks of A and B, the column sums, the streaming step's sums and the
// barriers' slots (the recurrence's, the step's, the read loop's).
enum Scratch {
    kRecurrenceWeights,
    kRecurrencePartial,
    kRecurrenceA,
    kGemmA,
    kGemmB,
    kGemmWide,
    kColumnSums,
    kStepSums,
    kRecurrenceBarrier,
    kStepBarrier,
    kReadBarrier
};
template <class T, int Purpose>
static T* scratch(idx n) {
    static thread_local PackBuffer<T> buf;
    return buf.get(n);
}

// floor(n * tid / nt) without forming n * tid, which overflows for n near 2^63 / nt: a GEMM of
// S*N rows, S at stride 0, has units ~2^57, and from tid 64 on the range was negative (rows
// before the arrays were read and written).
static inline idx share_start(idx n, int nt, int tid) { return n / nt * tid + n % nt * tid / nt; }
static inline void thread_range(idx n, int nt, int tid, idx& lo, idx& hi) {
    lo = share_start(n, nt, tid);
    hi = share_start(n, nt, tid + 1);
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
//
// Each helper thread, as it leaves a region, keeps itself off the CPU the calling thread ran on
// (keep_off_cpu). Found on a 2-vCPU KVM guest: a region that starts after the helper has slept
// (more than ~1 ms of one-thread work, e.g. an N = 1 recurrence, or an idle pause) had the
// guest kernel wake the helper on the *caller's* vCPU about half the time (why was not
// established: an idle, halted vCPU may look preempted to it), and the two threads then took
// turns on one vCPU: a region of 0.1 ms per thread took 3-8 ms (bench/omp_wake.c: 13 of 20
// regions after 150 ms idle, mean 2.9-3.3 ms; with the helper's mask excluding the caller's
// CPU, 0 of 20, mean 0.25 ms). Not a pinning: a helper may run on any CPU it was allowed but
// that one, and the calling thread (the user's Python thread) is never touched. "Allowed" is
// the helper's mask when it first left a region: a later change of every thread's mask from
// outside (taskset -a -p on the running process) is undone for a helper the next time the
// caller's CPU changes.
struct CpuAvoidance {
    bool read = false, usable = false;
    int avoided = -1;
    cpu_set_t allowed;  // the helper's own mask before we changed it
};
static inline void keep_off_cpu(int cpu) {
    static thread_local CpuAvoidance s;
    if (cpu == s.avoided) return;  // the usual case: one compare per region
    if (!s.read) {
        s.read = true;
        s.usable = sched_getaffinity(0, sizeof s.allowed, &s.allowed) == 0;
    }
    s.avoided = cpu;
    if (!s.usable || cpu < 0 || cpu >= CPU_SETSIZE) return;
    cpu_set_t mask = s.allowed;
    if (CPU_ISSET(cpu, &mask) && CPU_COUNT(&mask) > 1) CPU_CLR(cpu, &mask);
    sched_setaffinity(0, sizeof mask, &mask);  // a failure only leaves the scheduler's choice
}

// While a kernel's thread runs it: subnormal operands read as zero and subnormal results
// flushed to zero (rnn.hpp, kFlushSubnormalBits) when `flush`, IEEE arithmetic otherwise; the
// thread's own mode back after. An operation that meets a subnormal takes a microcode assist
// on x86 (~100 cycles), and a backward pass whose gradients vanish over a long sequence meets
// them at every step: T = 1000, N = 32, D = H = 128, 2 threads, Sapphire Rapids, forward +
// backward: LSTM float32 1423 -> 127 ms, vanilla float64 250 -> 83 ms (bench/subnormals.py).
// IEEE is set, not assumed: a thread starts in its creator's mode, so libgomp's helpers
// created while the caller flushed (torch.set_flush_denormal, a library built with -Ofast)
// would flush for good, and a call's threads would mix modes (found by a review).
struct SubnormalMode {
#if defined(__x86_64__)
    unsigned saved;
    bool set;
    explicit SubnormalMode(bool flush) : saved(read_fp_mode()) {
        const unsigned wanted = flush ? saved | kFlushSubnormalBits : saved & ~kFlushSubnormalBits;
        set = wanted != saved;
        if (set) write_fp_mode(wanted);
    }
    ~SubnormalMode() {
        if (set) write_fp_mode(saved);
    }
#else
    explicit SubnormalMode(bool) {}
#endif
    SubnormalMode(const SubnormalMode&) = delete;
    SubnormalMode& operator=(const SubnormalMode&) = delete;
};

// When the calling thread's last OpenMP region of more than one thread ended: libgomp's
// helpers spin for a while after a region (~8 ms per region on the Zen 4 VM, by their CPU
// time), on the CPUs the streaming step's helpers would use (run_step_team).
static inline long long& last_openmp_region_end_ns() {
    static thread_local long long ns = 0;
    return ns;
}

// One thread's part of a team (either runtime's): the body in the call's subnormal mode, then,
// for a helper, off the calling thread's CPU.
template <class Body>
static void team_member(const Body& body, int threads, int tid, bool flush, int caller_cpu) {
    {
        SubnormalMode mode(flush);
        body(threads, tid);
    }
    if (tid != 0) keep_off_cpu(caller_cpu);
}

template <class Body>
static void run_team(idx nt, const Body& body) {
    const bool flush = flush_subnormals();  // read once: every thread of the call in one mode
    if (nt <= 1) {
        SubnormalMode mode(flush);
        body(1, 0);
        return;
    }
    const int caller_cpu = sched_getcpu();
    quiet_spinning_helpers();  // (the streaming step's: they would spin on our CPUs)
#pragma omp parallel num_threads(int(nt))
    team_member(body, team_threads(), thread_id(), flush, caller_cpu);
    last_openmp_region_end_ns() = monotonic_ns();
}

// run_team for the streaming step: the same body on the calling thread's spinning helpers
// (run_spinning_team, csrc/spin_team.cpp), which start and end a team in a line's transfer each
// way where libgomp's region makes a system call; libgomp's region where they cannot be had.
// The helpers spin for `spin_ns` after each team, then sleep. `on_openmp`: libgomp's region
// all the same (its helpers may be spinning, on the CPUs ours would take).
template <class Body>
static void run_step_team(idx nt, long long spin_ns, bool on_openmp, const Body& body) {
    if (nt <= 1 || on_openmp) return run_team(nt, body);
    struct Team {
        const Body* body;
        int threads, caller_cpu;
        bool flush;
    };
    const Team team{&body, int(nt), sched_getcpu(), flush_subnormals()};
    auto work = [](const void* ctx, int tid) {
        const Team& t = *static_cast<const Team*>(ctx);
        team_member(*t.body, t.threads, tid, t.flush, t.caller_cpu);
    };
    if (!run_spinning_team(int(nt), work, &team, spin_ns)) run_team(nt, body);
}

// A thread's line in a StepBarrier.
struct alignas(64) BarrierSlot {
    unsigned epoch;  // wraps around harmlessly: compared by difference
};

// The per-step barrier of the recurrence (and of the streaming step). libgomp's `omp barrier` makes a futex_wake system
// call at every barrier, even when every thread is spinning, which costs more than a whole step of a small recurrence
// (measured: N = 1, H = 128 took 1.07 µs/step on two threads against 0.86 on one). Here each thread announces its
// arrival in a cache line of its own (an epoch, one more per barrier) with a plain store and spins until every other
// thread's epoch has caught up: the last thread to arrive is released by one read of the others' lines and releases
// them with one store, where a shared counter costs a locked read-modify-write of a line another core holds, then a
// store to a second line the waiters read (two transfers, each ~150 ns between this VM's cores). Two threads on
// Sapphire Rapids (KVM), TSC cycles per barrier: back to back 514-547 -> 375-381, the threads arriving 2000 cycles
// apart 590-690 -> ~370 beyond the wait. After a bounded spin a waiter yields the core (a descheduled teammate, an
// oversubscribed machine), never sleeping on a futex. GCC's __atomic builtins on a plain int, not std::atomic: no
// standard-library template may be instantiated here (kernels_isa.cpp).
//
// The slots are the calling thread's scratch, one buffer per kind of kernel (Purpose): a step
// may run inside a signal handler that a recurrence on the same thread runs at its poll
// (binding_helpers.hpp refuses the other kernels there), and must not reset the slots that the
// recurrence's other threads are waiting on (a test hung that way when they were shared).
struct StepBarrier {
    BarrierSlot* slots;  // one per thread of the team; null when they could not be allocated
    // The calling thread, before its region: slots for a team of up to `threads`.
    StepBarrier(BarrierSlot* for_team, idx threads) : slots(for_team) {
        for (idx t = 0; slots && t < threads; ++t) slots[t].epoch = 0;
    }
    explicit operator bool() const { return slots != nullptr; }
    // Thread `tid` of a team of `team`.
    void wait(int team, int tid) const {
        wait(team, tid, [] { return false; });
    }
    // wait() at a streaming step's first barrier: the calling thread (tid 0) of a spinning team
    // of one helper that has not begun its share kStepTakeBackNs after this thread came here
    // takes the share back (take_back_spinning_team) and returns false at once, the step then
    // its own to do; true when every thread came.
    bool wait_or_take_back(int team, int tid) const {
        bool tried = false, taken = false;
        long long since = 0;
        unsigned spins = 0;
        wait(team, tid, [&] {
            if (tid != 0 || tried || ++spins % 64 != 0) return false;  // the clock read every 64 spins
            const long long now = monotonic_ns();
            if (since == 0) {
                since = now;
            } else if (now - since >= kStepTakeBackNs) {
                tried = true;
                taken = take_back_spinning_team();
            }
            return taken;
        });
        return !taken;
    }
    // The same, but it stops waiting (its arrival recorded) once `abandon()` is true: a call
    // that stops, whose other threads may have left without coming here.
    template <class Abandon>
    void wait(int team, int tid, const Abandon& abandon) const {
        const unsigned epoch = slots[tid].epoch + 1;  // only this thread writes its slot
        __atomic_store_n(&slots[tid].epoch, epoch, __ATOMIC_RELEASE);
        for (int t = 0; t < team; ++t) {
            if (t == tid) continue;
            for (unsigned spins = 0; int(epoch - __atomic_load_n(&slots[t].epoch, __ATOMIC_ACQUIRE)) > 0; ++spins) {
                if (abandon()) return;
                if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__) || defined(__i386__)
                    __builtin_ia32_pause();
#endif
                } else {
                    if (spins == kSpinsBeforeYield) wake_spinning_helpers();  // (a step's team)
                    sched_yield();
                }
            }
        }
    }
};

// ---------------------------------------------------------------------------------------
// Ctrl-C (Interrupt in rnn.hpp). Only the calling thread, team thread 0 (the thread that
// starts an OpenMP region is its thread 0), may call poll: in the binding it takes the GIL to
// run Python's signal handlers. How often it polls: kPollWork and kPollIntervalNs (config.hpp).

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
