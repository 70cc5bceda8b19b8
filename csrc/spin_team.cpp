// The streaming step's team (rnn.hpp, run_spinning_team): helper threads of the calling thread
// that wait for work spinning on a line of their own, instead of libgomp's parallel region.
//
// Why not libgomp's: its region start makes a futex_wake system call whether or not the
// helpers are spinning (libgomp's bar.c wakes at every barrier release), and its end is a
// second barrier. Timed with rdtsc inside the step kernel (Zen 4 KVM guest, two threads,
// float32 N = 1, D = 32): the calling thread reached its own share of the step 530-690 ns after
// it asked for the region, and left 350-500 ns after finishing it, ~1 µs of a 2.6 µs step
// (H = 256) that its sums and barrier took ~1.6 µs of. Here a start is one store to each
// helper's line, an end one load of each helper's answer: a line each way between the cores.
//
// A helper spins (pause) until `spin_ns` after its last work, then sleeps on a futex: the
// steps it serves come back to back or not at all (a step after a longer pause runs on one
// thread, step.hpp kStepTeamIdleNs), so an idle program gets its CPUs back. Helpers are made
// on a thread's first team step, one per thread beyond the caller's, and end with it (joined
// by its thread_local destructor). Linux only (a futex); elsewhere the step uses libgomp's
// region (returns false).
#include "rnn.hpp"

#if defined(__linux__)
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <new>
#include <vector>

namespace prf {
namespace {

long futex(std::atomic<unsigned>* word, int op, unsigned value) {
    return syscall(SYS_futex, reinterpret_cast<unsigned*>(word), op | FUTEX_PRIVATE_FLAG, value, nullptr, nullptr, 0);
}

long long now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void cpu_pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// One helper thread: the caller writes `work` and `ctx`, then `posted`; the helper claims that
// number in `claimed`, runs the work as thread `tid` and stores the number in `done`. The
// caller may claim a post first (take_back_spinning_team): the helper then runs nothing and
// only stores `done`. Each on a line of its own: `claimed` is the helper's alone but for a
// take-back, so its claim, a locked instruction, finds the line in its own cache.
struct Helper {
    alignas(64) std::atomic<unsigned> posted{0};
    std::atomic<int> sleeping{0};
    std::atomic<bool> quit{false};
    SpinTeamWork work = nullptr;
    const void* ctx = nullptr;
    std::atomic<long long> spin_ns{0};  // (read while spinning, written at a post)
    int tid = 0;
    alignas(64) std::atomic<unsigned> claimed{0};  // the last post claimed, by the helper or the caller
    std::atomic<long long> runs{0};                // posts the helper ran (spinning_team_counts)
    alignas(64) std::atomic<unsigned> done{0};
    // The caller's own: the number of its last post to this helper, and when.
    alignas(64) unsigned number = 0;
    long long posted_ns = 0;
    pthread_t thread{};
};

// Helpers spinning now, in the whole process, and the CPUs the process may use: a helper spins
// only while the spinners and one calling thread fit on them, else it sleeps at once (several
// Python threads stepping in turn each have helpers, which would otherwise take the CPUs from
// each other's callers for kStepTeamIdleNs after every step).
std::atomic<int> g_spinning{0};
int process_cpus() {
    static const int cpus = [] {
        cpu_set_t set;
        return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    }();
    return cpus;
}

// Until `posted` differs from `seen`: spinning for spin_ns (if the CPUs allow it), then asleep
// on a futex until the caller wakes it (wake_if_asleep); the futex wait returns at once if
// `posted` has changed since the read.
unsigned wait_for_post(Helper& h, unsigned seen) {
    for (;;) {
        if (g_spinning.fetch_add(1, std::memory_order_relaxed) + 2 <= process_cpus()) {
            const long long since = now_ns();
            for (unsigned spins = 1;; ++spins) {
                const unsigned p = h.posted.load(std::memory_order_acquire);
                if (p != seen) {
                    g_spinning.fetch_sub(1, std::memory_order_relaxed);
                    return p;
                }
                cpu_pause();
                if (spins % 256 == 0 && now_ns() - since > h.spin_ns.load(std::memory_order_relaxed)) break;
            }
        }
        g_spinning.fetch_sub(1, std::memory_order_relaxed);
        h.sleeping.store(1, std::memory_order_seq_cst);
        if (h.posted.load(std::memory_order_seq_cst) == seen) futex(&h.posted, FUTEX_WAIT, seen);
        h.sleeping.store(0, std::memory_order_relaxed);
        const unsigned p = h.posted.load(std::memory_order_acquire);
        if (p != seen) return p;
    }
}

constexpr size_t kHelperStackBytes = size_t(512) << 10;

// Testing only (set_spinning_helper_delay_ns): ns a helper spins between seeing a post and
// claiming it, as one that the OS took off its CPU would be late.
std::atomic<long long> g_helper_delay_ns{0};

void* helper_main(void* arg) {
    Helper& h = *static_cast<Helper*>(arg);
    for (unsigned seen = 0;;) {
        seen = wait_for_post(h, seen);
        if (h.quit.load(std::memory_order_acquire)) return nullptr;
        if (const long long delay = g_helper_delay_ns.load(std::memory_order_relaxed))
            for (const long long until = now_ns() + delay; now_ns() < until;) cpu_pause();
        // Every post before this one was claimed (its caller waited for it or took it back) and
        // the posts come one by one: `claimed` holds seen - 1 unless the caller took this one.
        unsigned last = seen - 1;
        if (h.claimed.compare_exchange_strong(last, seen, std::memory_order_acq_rel)) {
            h.work(h.ctx, h.tid);
            h.runs.store(h.runs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // (its only writer)
        }
        h.done.store(seen, std::memory_order_release);
    }
}

// A plain store, which does not wait for the line to reach the helper: a sequentially
// consistent one (a full fence, for the check below) held the caller ~250 ns, the line's
// transfer from the spinning helper, before it could start its own share.
void post(Helper& h, unsigned number) { h.posted.store(number, std::memory_order_release); }

// The helper stores `sleeping` and then reads `posted`; the caller has stored `posted` and
// reads `sleeping` after this fence: at least one of them sees the other's store, so a helper
// is never left asleep after a post that checked.
void wake_if_asleep(Helper& h) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (h.sleeping.load(std::memory_order_relaxed)) futex(&h.posted, FUTEX_WAKE, 1);
}

// After fork the child has the memory of the forking thread's team but none of its helpers
// (and dispatch runs a child's calls on one thread): its teams are never run or joined.
std::atomic<bool> g_forked_child{false};
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, [] { g_forked_child.store(true); });

// The helpers of one calling thread.
struct SpinTeam {
    std::vector<Helper*> helpers;
    size_t active = 0;         // helpers in the team now running
    bool failed = false;       // a helper could not be made: not tried again
    bool taken_back = false;   // the running team's post taken back (take_back_spinning_team)
    bool away = false;         // the helper has not answered a post taken back yet
    long long take_backs = 0;  // posts taken back (spinning_team_counts)

    // At least `count` helpers; false if they could not all be made (those made are kept, and
    // this thread's steps run on libgomp's region from then on: dispatch has already fitted
    // the team to the threads that can be created, but counting libgomp's own).
    bool reserve(size_t count) {
        if (failed || g_forked_child.load(std::memory_order_relaxed)) return false;
        while (helpers.size() < count) {
            Helper* h = new (std::nothrow) Helper;
            if (!h) return !(failed = true);
            h->tid = int(helpers.size()) + 1;
            // A helper takes no signal (they are the calling thread's to handle), and has a
            // small stack: the step's sweep keeps its sums in registers and a few vectors.
            sigset_t all, old;
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &old);
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, kHelperStackBytes);
            const int error = pthread_create(&h->thread, &attr, helper_main, h);
            pthread_attr_destroy(&attr);
            pthread_sigmask(SIG_SETMASK, &old, nullptr);
            if (error != 0) {
                delete h;
                return !(failed = true);
            }
            helpers.push_back(h);
        }
        return true;
    }

    ~SpinTeam() {
        if (g_forked_child.load(std::memory_order_relaxed)) return;  // no thread to join
        for (Helper* h : helpers) {
            h->quit.store(true, std::memory_order_release);
            post(*h, h->number + 1);
            wake_if_asleep(*h);
        }
        for (Helper* h : helpers) {
            pthread_join(h->thread, nullptr);
            delete h;
        }
    }
};

thread_local SpinTeam t_team;

}  // namespace

bool run_spinning_team(int threads, SpinTeamWork work, const void* ctx, long long spin_ns) {
    if (threads < 2 || !t_team.reserve(size_t(threads - 1))) return false;
    SpinTeam& team = t_team;
    // A helper decides to sleep spin_ns after its last work ended, at the earliest spin_ns after
    // our last post to it: until half of that has passed it is spinning, and sees this post (a
    // store reaches the other cores within the microseconds of our own share), so the fenced
    // check is skipped. Otherwise (a new helper, one left out of the last teams, one put to
    // sleep by quiet_spinning_helpers: posted_ns 0) it is woken if asleep before our share,
    // which may wait for it. (Should a post ever go unseen, our waits below and at the step's
    // barrier check again after a spell of spinning: wake_spinning_helpers.)
    const long long now = now_ns();
    for (int t = 1; t < threads; ++t) {
        Helper& h = *team.helpers[size_t(t - 1)];
        const bool may_sleep = now - h.posted_ns > spin_ns / 2;
        h.posted_ns = now;
        h.work = work;
        h.ctx = ctx;
        h.spin_ns.store(spin_ns, std::memory_order_relaxed);
        post(h, ++h.number);
        if (may_sleep) wake_if_asleep(h);
    }
    team.active = size_t(threads - 1);
    work(ctx, 0);
    if (team.taken_back) {  // the helper has run nothing of this team and will not
        team.taken_back = false;
        team.away = true;
        team.active = 0;
        return true;
    }
    // Every helper's share done. One that the OS took off its CPU gets ours after a while; any
    // still asleep are woken then, all of them at once.
    for (int t = 1; t < threads; ++t) {
        const Helper& h = *team.helpers[size_t(t - 1)];
        for (unsigned spins = 1; h.done.load(std::memory_order_acquire) != h.number; ++spins) {
            if (spins % 16384 == 0) {
                wake_spinning_helpers();
                sched_yield();
            } else {
                cpu_pause();
            }
        }
    }
    team.active = 0;
    return true;
}

void quiet_spinning_helpers() {
    // Spinning for no time: each sleeps within 256 spins, and our next post to it checks
    // before our own share whether it sleeps (posted_ns = 0: run_spinning_team).
    for (Helper* h : t_team.helpers) {
        if (h->posted_ns == 0) continue;
        h->spin_ns.store(0, std::memory_order_relaxed);
        h->posted_ns = 0;
    }
}

void wake_spinning_helpers() {
    SpinTeam& team = t_team;
    for (size_t t = 0; t < team.active; ++t) wake_if_asleep(*team.helpers[t]);
}

bool take_back_spinning_team() {
    SpinTeam& team = t_team;
    // One helper only: of two or more, some could have claimed their shares before the others
    // were taken back, and the team could neither go on nor leave it to the caller.
    if (team.active != 1 || team.taken_back) return false;
    Helper& h = *team.helpers[0];
    unsigned last = h.number - 1;
    if (!h.claimed.compare_exchange_strong(last, h.number, std::memory_order_acq_rel)) return false;
    team.taken_back = true;
    ++team.take_backs;
    wake_if_asleep(h);  // (one that slept through the post would not answer it otherwise)
    return true;
}

bool spinning_team_away() {
    SpinTeam& team = t_team;
    if (!team.away) return false;
    const Helper& h = *team.helpers[0];
    if (h.done.load(std::memory_order_acquire) != h.number) return true;
    team.away = false;
    return false;
}

void spinning_team_counts(long long& runs, long long& take_backs) {
    runs = 0;
    for (const Helper* h : t_team.helpers) runs += h->runs.load(std::memory_order_relaxed);
    take_backs = t_team.take_backs;
}

long long set_spinning_helper_delay_ns(long long ns) { return g_helper_delay_ns.exchange(ns); }

namespace {

// line_round_trip_ns: `ping` written by the measuring thread, `pong` answered by the other.
struct PingPong {
    alignas(64) std::atomic<long> ping{0};
    alignas(64) std::atomic<long> pong{0};
    alignas(64) std::atomic<int> pinned{0};  // threads pinned (or -1: one could not be)
    long exchanges = 0;
    int cpu[2] = {0, 0};
    double ns = -1;
};

bool pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

// Each thread pins itself, then waits for the other's pin: neither measures on the wrong CPU.
bool pinned_both(PingPong& pp, int which) {
    if (!pin_to(pp.cpu[which])) {
        pp.pinned.store(-1, std::memory_order_release);
        return false;
    }
    if (pp.pinned.fetch_add(1, std::memory_order_acq_rel) < 0) return false;  // the other could not
    int p;
    while ((p = pp.pinned.load(std::memory_order_acquire)) >= 0 && p < 2) cpu_pause();
    return p == 2;
}

void* answer_pings(void* arg) {
    PingPong& pp = *static_cast<PingPong*>(arg);
    if (!pinned_both(pp, 1)) return nullptr;
    for (long seen = 0; seen != -1;) {
        const long p = pp.ping.load(std::memory_order_acquire);
        if (p != seen) {
            seen = p;
            pp.pong.store(p, std::memory_order_release);
        } else {
            cpu_pause();
        }
    }
    return nullptr;
}

// The round trip is the median over kRoundTripRounds rounds of exchanges (one host time slice
// of ~4 ms in a round must not read as a slow state). The spinning for answers stops
// kRoundTripDeadlineNs after both threads are pinned (the other CPU taken for long): that
// bounds the spin, not the call, which still waits for both threads to be scheduled.
constexpr int kRoundTripRounds = 20;
constexpr long long kRoundTripDeadlineNs = 1000000000;

void* send_pings(void* arg) {
    PingPong& pp = *static_cast<PingPong*>(arg);
    if (!pinned_both(pp, 0)) return nullptr;
    const long long deadline = now_ns() + kRoundTripDeadlineNs;
    long number = 0;
    auto exchange = [&] {  // false: past the deadline
        pp.ping.store(++number, std::memory_order_release);
        for (unsigned spins = 1; pp.pong.load(std::memory_order_acquire) != number; ++spins) {
            cpu_pause();
            if (spins % 1024 == 0 && now_ns() > deadline) return false;
        }
        return true;
    };
    bool in_time = true;
    for (int i = 0; i < 100 && in_time; ++i) in_time = exchange();  // both threads running, the lines in play
    const int rounds = int(std::min<long>(kRoundTripRounds, pp.exchanges));
    const long per_round = pp.exchanges / rounds;
    double round_ns[kRoundTripRounds];
    int done = 0;
    while (in_time && done < rounds) {
        const long long t0 = now_ns();
        for (long i = 0; i < per_round && in_time; ++i) in_time = exchange();
        if (in_time) round_ns[done++] = double(now_ns() - t0) / double(per_round);
    }
    if (done > 0) {
        std::sort(round_ns, round_ns + done);
        pp.ns = round_ns[done / 2];
    }
    pp.ping.store(-1, std::memory_order_release);  // the answerer's end
    return nullptr;
}

}  // namespace

double line_round_trip_ns(long exchanges) {
    cpu_set_t allowed;
    if (exchanges < 1 || sched_getaffinity(0, sizeof allowed, &allowed) != 0) return -1;
    PingPong pp;
    pp.exchanges = exchanges;
    int found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < 2; ++c)
        if (CPU_ISSET(c, &allowed)) pp.cpu[found++] = c;
    if (found < 2) return -1;
    quiet_spinning_helpers();  // (the step's helpers would spin on the CPUs measured)
    // Both threads take no signal (the calling thread's to handle), as the step's helpers.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t threads[2];
    const bool sender = pthread_create(&threads[0], nullptr, send_pings, &pp) == 0;
    const bool answerer = sender && pthread_create(&threads[1], nullptr, answer_pings, &pp) == 0;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (sender && !answerer) pp.pinned.store(-1, std::memory_order_release);  // the sender gives up
    if (sender) pthread_join(threads[0], nullptr);
    if (answerer) pthread_join(threads[1], nullptr);
    return answerer ? pp.ns : -1;
}

}  // namespace prf

#else

namespace prf {
bool run_spinning_team(int, SpinTeamWork, const void*, long long) { return false; }
void wake_spinning_helpers() {}
bool take_back_spinning_team() { return false; }
bool spinning_team_away() { return false; }
void spinning_team_counts(long long& runs, long long& take_backs) { runs = take_backs = 0; }
long long set_spinning_helper_delay_ns(long long) { return 0; }
void quiet_spinning_helpers() {}
double line_round_trip_ns(long) { return -1; }
}  // namespace prf

#endif
