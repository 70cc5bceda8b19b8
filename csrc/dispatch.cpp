// Run-time choice of the instruction set. Compiled with baseline flags only: this file runs
// before we know what the CPU supports.
#include <algorithm>
#include <atomic>
#include <initializer_list>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "rnn.hpp"

namespace prf {

bool isa_supported(Isa isa) {
    switch (isa) {
        case Isa::generic:
            return true;
#ifdef PRF_HAVE_X86_KERNELS
        // __builtin_cpu_supports also checks that the OS saves the wider registers.
        case Isa::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#endif
        default:
            return false;
    }
}

Isa best_isa() {
    for (Isa isa : {Isa::avx512, Isa::avx2})
        if (isa_supported(isa)) return isa;
    return Isa::generic;
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

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Cores handed out to calls in progress. A team larger than the cores it runs on is
// catastrophic for a kernel with a barrier per step: a thread that has to wait for the
// scheduler stalls all the others (measured on 2 cores: 4 threads made the typical shape's
// step 18x slower, 480 µs instead of 27). So a call gets at most the CPUs not already used
// by other calls of ours (several Python threads at once), and always at least its own.
// Results do not depend on the thread count, so this changes speed only.
static std::atomic<int> g_threads_in_use{0};

static int available_cpus() {
#ifdef _OPENMP
    return omp_get_num_procs();  // the CPUs this process may run on
#else
    return 1;
#endif
}

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

  private:
    int granted_ = 1;
};

// Runs `kernel` on a copy of `args` whose thread count is what a ThreadGrant allows.
template <class Args, class Kernel>
static bool with_granted_threads(const Args& args, Kernel kernel) {
    ThreadGrant grant(args.threads);
    Args a = args;
    a.threads = grant.threads();
    return kernel(a);
}

template <class T>
bool forward(const ForwardArgs<T>& args) {
    return with_granted_threads(args, [](const ForwardArgs<T>& a) {
        switch (current_isa()) {
#ifdef PRF_HAVE_X86_KERNELS
            case Isa::avx512: return isa_avx512::forward(a);
            case Isa::avx2: return isa_avx2::forward(a);
#endif
            default: return isa_generic::forward(a);
        }
    });
}

template <class T>
bool backward(const BackwardArgs<T>& args) {
    return with_granted_threads(args, [](const BackwardArgs<T>& a) {
        switch (current_isa()) {
#ifdef PRF_HAVE_X86_KERNELS
            case Isa::avx512: return isa_avx512::backward(a);
            case Isa::avx2: return isa_avx2::backward(a);
#endif
            default: return isa_generic::backward(a);
        }
    });
}

template <class T>
bool gemm(const GemmArgs<T>& args) {
    return with_granted_threads(args, [](const GemmArgs<T>& g) {
        switch (current_isa()) {
#ifdef PRF_HAVE_X86_KERNELS
            case Isa::avx512: return isa_avx512::gemm(g);
            case Isa::avx2: return isa_avx2::gemm(g);
#endif
            default: return isa_generic::gemm(g);
        }
    });
}

template bool gemm<float>(const GemmArgs<float>&);
template bool gemm<double>(const GemmArgs<double>&);
template bool forward<float>(const ForwardArgs<float>&);
template bool forward<double>(const ForwardArgs<double>&);
template bool backward<float>(const BackwardArgs<float>&);
template bool backward<double>(const BackwardArgs<double>&);

}  // namespace prf
