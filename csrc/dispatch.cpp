// Run-time choice of the instruction set and of each call's thread count. Compiled with
// baseline flags only: this file runs before we know what the CPU supports.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <initializer_list>

#include <pthread.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "rnn.hpp"

namespace prf {

// PRF_IF_<arch>(yes, no): `yes` where the instruction sets of that arch are compiled in.
#define PRF_IF_ANY(yes, no) yes
#ifdef PRF_HAVE_X86_KERNELS
#define PRF_IF_X86(yes, no) yes
#else
#define PRF_IF_X86(yes, no) no
#endif

bool isa_supported(Isa isa) {
    switch (isa) {
#define PRF_ISA_CASE(name, arch, cpu_check) \
    case Isa::name: return PRF_IF_##arch(cpu_check, false);
        PRF_ISAS(PRF_ISA_CASE)
#undef PRF_ISA_CASE
    }
    return false;
}

Isa best_isa() {
    for (int i = kIsaCount - 1; i > 0; --i)
        if (isa_supported(Isa(i))) return Isa(i);
    return Isa(0);
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

// The kernel tables of each instruction set, indexed by Isa (null where not compiled in).
struct IsaKernels {
    const char* name;
    const KernelTable<float>* f32;
    const KernelTable<double>* f64;
};
#define PRF_ISA_COMPILED(name) {#name, &isa_##name::kernels_f32, &isa_##name::kernels_f64}
#define PRF_ISA_MISSING(name) {#name, nullptr, nullptr}
#define PRF_ISA_ENTRY(name, arch, cpu_check) PRF_IF_##arch(PRF_ISA_COMPILED(name), PRF_ISA_MISSING(name)),
static const IsaKernels kIsaKernels[kIsaCount] = {PRF_ISAS(PRF_ISA_ENTRY)};
#undef PRF_ISA_ENTRY
#undef PRF_ISA_MISSING
#undef PRF_ISA_COMPILED

const char* isa_name(Isa isa) { return kIsaKernels[int(isa)].name; }

// The kernels of the current instruction set (set_isa accepts only supported, so compiled, ones).
template <class T>
static const KernelTable<T>& current_kernels() {
    const IsaKernels& k = kIsaKernels[int(current_isa())];
    if constexpr (sizeof(T) == sizeof(float))
        return *k.f32;
    else
        return *k.f64;
}

// The CPUs this process may run on. omp_get_num_procs() asks the OS (sched_getaffinity) every
// time, ~0.3 µs, a fifth of a small streaming step's call; the affinity rarely changes, so it
// is asked again at most every 10 ms (a coarse clock read costs nanoseconds).
static int available_cpus() {
#ifdef _OPENMP
    static std::atomic<int> cpus{0};
    static std::atomic<long long> next_read_ns{0};
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    const long long now = ts.tv_sec * 1000000000LL + ts.tv_nsec;
    int n = cpus.load(std::memory_order_relaxed);
    if (n == 0 || now >= next_read_ns.load(std::memory_order_relaxed)) {
        n = omp_get_num_procs();
        cpus.store(n, std::memory_order_relaxed);
        next_read_ns.store(now + 10 * 1000 * 1000, std::memory_order_relaxed);
    }
    return n;
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------
// How many threads a call may use: OpenMP's own setting (the nthreads ICV, what
// omp_get_max_threads() returns), read at each call, so that OMP_NUM_THREADS and
// threadpoolctl (which calls omp_set_num_threads) work. That setting belongs to each OS
// thread; one that never set it sees OpenMP's default. set_num_threads is process-wide: it
// sets the calling thread's and publishes the value with a generation number; every other
// thread applies a newer value at its next call, unless it has a setting of its own: if its
// setting is no longer the one we last applied there (or the default, if we never did),
// something else set it in that thread (threadpool_limits, torch.set_num_threads), and that
// wins there; we apply ours once the thread's setting is back to ours (threadpool_limits
// restores it on exit). Otherwise a worker thread's first call inside a threadpool_limits(1)
// block would raise its limit to set_num_threads's value. (A thread we never set, limited to
// exactly OpenMP's default, is taken for unset: values are all we can compare.)
// One 64-bit word (generation << 32 | value) so that a reader never pairs a generation with
// another writer's value. Generation 0: set_num_threads was never called.
static std::atomic<unsigned long long> g_setting{0};
static thread_local unsigned t_applied_generation = 0;
static thread_local int t_applied_value = 0;  // 0: none yet, the thread had OpenMP's default

// After fork only the forking thread exists in the child, but libgomp's thread pools (ours and
// those of any other library on the same libgomp, e.g. PyTorch or Numba) still list the
// parent's threads: a team of more than one thread would wait for them forever. So a forked
// child runs every call on its one thread (as PyTorch does), whether or not the parent ran
// threads: we cannot know what other libraries did. Calls in progress in other threads of the
// parent do not exist in the child: their CPUs are free there.
static std::atomic<bool> g_forked_child{false};
static std::atomic<int> g_threads_in_use{0};

static void after_fork_in_child() {
    g_forked_child.store(true, std::memory_order_relaxed);
    g_threads_in_use.store(0, std::memory_order_relaxed);
}
static const int g_atfork_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child);

static void* read_openmp_setting(void* out) {
#ifdef _OPENMP
    *static_cast<int*>(out) = omp_get_max_threads();
#else
    (void)out;
#endif
    return nullptr;
}

// OpenMP's default: what a new thread sees (libgomp never changes it after start-up).
int default_num_threads() {
    static std::atomic<int> known{0};
    int n = known.load(std::memory_order_relaxed);
    if (n > 0) return n;
    pthread_t reader;
    if (pthread_create(&reader, nullptr, read_openmp_setting, &n) != 0) return std::max(1, available_cpus());
    pthread_join(reader, nullptr);
    n = std::max(1, n);
    known.store(n, std::memory_order_relaxed);
    return n;
}

void set_num_threads(int n) {
    if (n < 1) n = 1;
    unsigned long long old = g_setting.load(std::memory_order_relaxed), next;
    do {
        next = (((old >> 32) + 1) << 32) | (unsigned long long)(unsigned)n;
    } while (!g_setting.compare_exchange_weak(old, next, std::memory_order_release, std::memory_order_relaxed));
    t_applied_generation = unsigned(next >> 32);
    t_applied_value = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

// Read by every kernel call (run_team) on its calling thread, once: a change made while a call
// runs applies from the next one, and all threads of a call run in the same mode.
#if defined(__x86_64__)
static int g_flush_subnormals = 1;
#else
static int g_flush_subnormals = 0;
#endif

bool flush_subnormals() { return __atomic_load_n(&g_flush_subnormals, __ATOMIC_RELAXED) != 0; }

bool set_flush_subnormals(bool on) {
#if !defined(__x86_64__)
    if (on) return false;
#endif
    __atomic_store_n(&g_flush_subnormals, on ? 1 : 0, __ATOMIC_RELAXED);
    return true;
}

// A limit of the calling thread alone (pyrnn_fast.dask limits each task's thread so): while it
// is in force, newer set_num_threads values wait (a flag, not a value comparison, so a limit
// equal to the process's setting holds too); lifting it restores the thread's setting from
// before, and a value published meanwhile applies at the next call.
static thread_local int t_limit = 0;  // 0: none
static thread_local int t_setting_before_limit = 0;

int num_threads() {
    if (g_forked_child.load(std::memory_order_relaxed)) return 1;
#ifdef _OPENMP
    const unsigned long long setting = g_setting.load(std::memory_order_acquire);
    if (t_limit == 0 && unsigned(setting >> 32) != t_applied_generation) {
        const int ours = t_applied_value ? t_applied_value : default_num_threads();
        if (omp_get_max_threads() == ours) {  // else the thread's own setting wins (see above)
            t_applied_generation = unsigned(setting >> 32);
            t_applied_value = int(setting & 0xffffffffu);
            omp_set_num_threads(t_applied_value);
        }
    }
    return std::max(1, omp_get_max_threads());
#else
    return 1;
#endif
}

int limit_calling_thread(int n) {
    const int previous = t_limit;
#ifdef _OPENMP
    if (n >= 1) {
        if (t_limit == 0) {
            num_threads();  // apply a pending set_num_threads first: that is the setting to restore
            t_setting_before_limit = omp_get_max_threads();
        }
        t_limit = n;
        omp_set_num_threads(n);
    } else if (t_limit != 0) {
        t_limit = 0;
        omp_set_num_threads(t_setting_before_limit);
    }
#else
    (void)n;
#endif
    return previous;
}

// ---------------------------------------------------------------------------------------
// Threads that cannot be created. libgomp exits the process ("Thread creation failed") when
// pthread_create fails, e.g. when a new thread's stack (8 MB by default) cannot be mapped under
// a memory limit. So before a team larger than any this OS thread has started (libgomp keeps a
// pool of threads per thread that starts teams), we create and join the extra threads
// ourselves, with the stack size libgomp uses, and give the call only as many as that worked.
// Best effort: memory can still run out between this check and libgomp's own thread creation,
// and libgomp recreates threads after a smaller team has shrunk its pool.
static thread_local int t_team_verified = 1;
static std::atomic<ThreadShortfallHandler> g_shortfall_handler{nullptr};

// libgomp's thread stack size: OMP_STACKSIZE, else GOMP_STACKSIZE: a number with an optional
// B, K, M or G suffix (K if none). 0: not set, or not valid (libgomp then ignores it too).
static size_t openmp_stack_size() {
    for (const char* var : {"OMP_STACKSIZE", "GOMP_STACKSIZE"}) {
        const char* s = std::getenv(var);
        if (!s) continue;
        while (std::isspace((unsigned char)*s)) ++s;
        if (!std::isdigit((unsigned char)*s)) return 0;
        char* end;
        errno = 0;
        const unsigned long long value = std::strtoull(s, &end, 10);
        if (errno) return 0;
        while (std::isspace((unsigned char)*end)) ++end;
        int shift = 10;
        if (*end) {
            switch (std::tolower((unsigned char)*end)) {
                case 'b': shift = 0; break;
                case 'k': shift = 10; break;
                case 'm': shift = 20; break;
                case 'g': shift = 30; break;
                default: return 0;
            }
            ++end;
            while (std::isspace((unsigned char)*end)) ++end;
            if (*end) return 0;
        }
        if (((value << shift) >> shift) != value) return 0;
        return size_t(value << shift);
    }
    return 0;
}

static void* idle(void*) { return nullptr; }

// How many of `extra` threads can exist at the same time now (0..extra); *error: why not all.
static int creatable_threads(int extra, int* error) {
    pthread_t stack_ids[64];
    pthread_t* ids = extra <= 64 ? stack_ids : static_cast<pthread_t*>(std::malloc(sizeof(pthread_t) * size_t(extra)));
    if (!ids) {
        *error = ENOMEM;
        return 0;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (const size_t stack = openmp_stack_size()) pthread_attr_setstacksize(&attr, stack);
    int created = 0;
    for (; created < extra; ++created) {
        const int err = pthread_create(&ids[created], &attr, idle, nullptr);
        if (err != 0) {
            *error = err;
            break;
        }
    }
    for (int i = 0; i < created; ++i) pthread_join(ids[i], nullptr);
    pthread_attr_destroy(&attr);
    if (ids != stack_ids) std::free(ids);
    return created;
}

// The largest team of at most `wanted` threads that this thread can start now.
static int startable_team(int wanted) {
    if (wanted <= t_team_verified) return wanted;
    int error = 0;
    const int team = 1 + creatable_threads(wanted - 1, &error);
    if (team == wanted) {
        t_team_verified = wanted;
    } else if (ThreadShortfallHandler report = g_shortfall_handler.exchange(nullptr)) {
        report(wanted, team, error);  // once per process
    }
    return team;
}

void set_thread_shortfall_handler(ThreadShortfallHandler handler) { g_shortfall_handler.store(handler); }

// ---------------------------------------------------------------------------------------
// Cores handed out to calls in progress. A team larger than the cores it runs on is
// catastrophic for a kernel with a barrier per step: a thread that has to wait for the
// scheduler stalls all the others (measured on 2 cores: 4 threads made the typical shape's
// step 18x slower, 480 µs instead of 27). So a call gets at most the CPUs not already used
// by other calls of ours (several Python threads at once), and always at least its own.
// Results do not depend on the thread count, so this changes speed only.
class ThreadGrant {
  public:
    explicit ThreadGrant(int requested) {
        const int cpus = available_cpus();
        int in_use = g_threads_in_use.load(std::memory_order_relaxed);
        do {
            granted_ = std::max(1, std::min(requested, cpus - in_use));
        } while (!g_threads_in_use.compare_exchange_weak(in_use, in_use + granted_, std::memory_order_relaxed));
    }
    ~ThreadGrant() { g_threads_in_use.fetch_sub(granted_, std::memory_order_relaxed); }
    ThreadGrant(const ThreadGrant&) = delete;
    ThreadGrant& operator=(const ThreadGrant&) = delete;
    int threads() const { return granted_; }
    void reduce_to(int n) {  // hands back what the call will not use
        g_threads_in_use.fetch_sub(granted_ - n, std::memory_order_relaxed);
        granted_ = n;
    }

  private:
    int granted_ = 1;
};

// Runs `kernel` on a copy of `args` whose thread count (an upper bound: the kernels use fewer
// when the work is small) is what the CPUs and thread creation allow; one in a forked child.
template <class Args, class Kernel>
static bool with_granted_threads(const Args& args, Kernel kernel) {
    ThreadGrant grant(g_forked_child.load(std::memory_order_relaxed) ? 1 : args.threads);
    if (grant.threads() > 1) grant.reduce_to(startable_team(grant.threads()));
    Args a = args;
    a.threads = grant.threads();
    return kernel(a);
}

// The dispatched entry points of rnn.hpp, one per PRF_KERNELS entry, for float and double.
#define PRF_DEFINE_DISPATCHED(name, Args)                                                                 \
    template <class T>                                                                                    \
    bool name(const Args<T>& args) {                                                                      \
        return with_granted_threads(args, [](const Args<T>& a) { return current_kernels<T>().name(a); }); \
    }                                                                                                     \
    template bool name<float>(const Args<float>&);                                                        \
    template bool name<double>(const Args<double>&);
PRF_KERNELS(PRF_DEFINE_DISPATCHED)
#undef PRF_DEFINE_DISPATCHED

}  // namespace prf
