// What a cache line costs to move between two CPUs, over time (csrc/spin_team.cpp; the
// streaming step's second thread gains only while it is cheap). A thread on CPU 1 answers each
// number the thread on CPU 0 writes to one line by writing it to another; every 0.2 s this
// prints the mean round trip (two transfers) over 20,000 exchanges, in ns.
//
//     g++ -O2 -pthread bench/pingpong.cpp -o /tmp/pingpong && /tmp/pingpong 60   # seconds
//
// Zen 4 KVM guest (2 vCPUs), 2026-12-06: ~90 ns for minutes, then ~390 ns for minutes, and
// back, with no other load in the guest: the host moves the vCPUs (a sibling core, then one of
// another core complex, or socket). Linux only (pthread_setaffinity_np); 2 CPUs or more.
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

alignas(64) std::atomic<int> ping{0};
alignas(64) std::atomic<int> pong{0};
std::atomic<bool> stop{false};

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int main(int argc, char** argv) {
    const double seconds = argc > 1 ? atof(argv[1]) : 30;
    std::thread answer([] {
        pin(1);
        int seen = 0;
        while (!stop.load(std::memory_order_relaxed)) {
            const int p = ping.load(std::memory_order_acquire);
            if (p != seen) {
                seen = p;
                pong.store(p, std::memory_order_release);
            } else {
                __builtin_ia32_pause();
            }
        }
    });
    pin(0);
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    while (std::chrono::duration<double>(clock::now() - start).count() < seconds) {
        const int n = 20000;
        const auto t0 = clock::now();
        for (int i = 1; i <= n; ++i) {
            ping.store(i, std::memory_order_release);
            while (pong.load(std::memory_order_acquire) != i) __builtin_ia32_pause();
        }
        printf("%.0f ", std::chrono::duration<double, std::nano>(clock::now() - t0).count() / n);
        fflush(stdout);
        ping.store(0);
        while (pong.load() != 0) __builtin_ia32_pause();
        usleep(200000);
    }
    stop = true;
    answer.join();
    printf("\n");
}
