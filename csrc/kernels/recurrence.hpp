// The recurrence drivers, forward and backward through time.
//
// Structure of one call (forward; backward is the same with Wh^T and another epilogue):
//   - one OpenMP parallel region for the whole sequence; thread i owns a contiguous range
//     of column panels of the output (hidden units);
//   - each thread packs its own panels of Wh once: panel p holds columns [p*NR, p*NR+NR)
//     as K rows of NR contiguous values, zero padded, so the micro-kernel streams them;
//   - per time step, register-blocked micro-kernels compute MR rows x NR columns of
//     h_{t-1} . Wh and finish the tile in registers (add xw_t, activation) before a single
//     store; one barrier per step, because step t reads every column of step t-1.
#pragma once
#include <sched.h>

#include "activations.hpp"
#include "microkernel.hpp"
#include "team.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

template <class T, class Act>
struct ForwardEpilogue {  // out = act(acc + xw)
    const T* xw;
    idx xw_ld;
    T* out;
    idx out_ld;
    void prefetch(idx row0, int nrows, idx col0) const {
        for (int r = 0; r < nrows; ++r) __builtin_prefetch(xw + (row0 + r) * xw_ld + col0);
    }
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        constexpr int W = kLanes<T>;
        for (int r = 0; r < M && r < nrows; ++r) {
            const T* x = xw + (row0 + r) * xw_ld + col0;
            T* o = out + (row0 + r) * out_ld + col0;
            if (ncols >= NVT * W) {
                for (int i = 0; i < NVT; ++i) store(o + i * W, Act::template apply<T>(acc[r][i] + load(x + i * W)));
            } else {
                T buf[NVT * W] __attribute__((aligned(64)));
                for (idx j = 0; j < NVT * W; ++j) buf[j] = j < ncols ? x[j] : T(0);
                for (int i = 0; i < NVT; ++i)
                    store(buf + i * W, Act::template apply<T>(acc[r][i] + load(buf + i * W)));
                for (idx j = 0; j < ncols; ++j) o[j] = buf[j];
            }
        }
    }
};

template <class T, class Act>
struct BackwardEpilogue {  // da = (acc + dh [+ extra]) * act'(h)
    const T* dh;
    idx dh_ld;
    const T* h;
    idx h_ld;
    const T* extra;  // dh_last at the last step, else null
    idx extra_ld;
    T* da;
    idx da_ld;
    void prefetch(idx row0, int nrows, idx col0) const {
        for (int r = 0; r < nrows; ++r) {
            __builtin_prefetch(dh + (row0 + r) * dh_ld + col0);
            __builtin_prefetch(h + (row0 + r) * h_ld + col0);
        }
    }
    template <int M, int NVT>
    void operator()(Vec<T> (&acc)[M][NVT], idx row0, int nrows, idx col0, idx ncols) const {
        constexpr int W = kLanes<T>;
        for (int r = 0; r < M && r < nrows; ++r) {
            const T* g = dh + (row0 + r) * dh_ld + col0;
            const T* hv = h + (row0 + r) * h_ld + col0;
            const T* e = extra ? extra + (row0 + r) * extra_ld + col0 : nullptr;
            T* o = da + (row0 + r) * da_ld + col0;
            if (ncols >= NVT * W) {
                for (int i = 0; i < NVT; ++i) {
                    Vec<T> s = acc[r][i] + load(g + i * W);
                    if (e) s = s + load(e + i * W);
                    store(o + i * W, s * Act::template grad<T>(load(hv + i * W)));
                }
            } else {
                T bg[NVT * W] __attribute__((aligned(64)));
                T bh[NVT * W] __attribute__((aligned(64)));
                T be[NVT * W] __attribute__((aligned(64)));
                for (idx j = 0; j < NVT * W; ++j) {
                    bg[j] = j < ncols ? g[j] : T(0);
                    bh[j] = j < ncols ? hv[j] : T(0);
                    be[j] = (e && j < ncols) ? e[j] : T(0);
                }
                for (int i = 0; i < NVT; ++i) {
                    Vec<T> s = acc[r][i] + load(bg + i * W);
                    if (e) s = s + load(be + i * W);
                    store(bg + i * W, s * Act::template grad<T>(load(bh + i * W)));
                }
                for (idx j = 0; j < ncols; ++j) o[j] = bg[j];
            }
        }
    }
};

// The per-step barrier of the recurrence. libgomp's `omp barrier` makes a futex_wake system
// call at every barrier, even when every thread is spinning, which costs more than a whole
// step of a small recurrence (measured: N = 1, H = 128 took 1.07 µs/step on two threads
// against 0.86 on one). This one costs a cache-line transfer: threads spin on a generation
// counter, and after a bounded spin yield the core (a descheduled teammate, an
// oversubscribed machine), never sleeping on a futex. GCC's __atomic builtins on a plain int,
// not std::atomic: no standard-library template may be instantiated here (see the top).
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

// How the team of a recurrence leaves early, every thread after the same step. Thread 0 records
// how many steps are done (`after`) before arriving at that step's barrier; every thread checks
// (`now`) right after the barrier, so it sees the record. A thread still behind can never see
// a later record too early: thread 0 records only the count of the step it is on, which is
// larger than the count that thread checks.
struct StepStop {
    idx steps_done;  // initially the number of steps + 1: never
    explicit StepStop(idx steps) : steps_done(steps + 1) {}
    void after(idx done) { __atomic_store_n(&steps_done, done, __ATOMIC_RELAXED); }
    bool now(idx done) const { return __atomic_load_n(&steps_done, __ATOMIC_RELAXED) <= done; }
};

static int team_size(int requested, idx step_work, idx columns, idx panels) {
    idx t = requested < 1 ? 1 : requested;
    t = imin(t, panels);
    t = imin(t, columns / kMinStepColumnsPerThread);
    t = imin(t, step_work / kMinStepWorkPerThread);
    return t < 1 ? 1 : int(t);
}

template <class T, class Act>
static bool forward_impl(const ForwardArgs<T>& a) {
    const idx steps = a.out.steps, N = a.out.rows, H = a.out.cols;
    if (steps == 0 || N == 0 || H == 0) return true;
    constexpr int NR = kNR<T>;
    const idx panels = (H + NR - 1) / NR;
    T* packed = scratch<T, kRecurrenceWeights>(panels * NR * H);
    if (!packed) return false;
    const int nt = team_size(a.threads, N * H * H, H, panels);
    StepBarrier step_barrier;
    StepStop stop{steps};
#pragma omp parallel num_threads(nt)
    {
        const int team = team_threads(), tid = thread_id();
        idx p0, p1;
        thread_range(panels, team, tid, p0, p1);
        step_barrier.join(team);
        InterruptPoller poll(tid == 0 ? a.interrupt : nullptr);
        // Each thread packs and then only reads its own panels: no barrier needed here.
        pack_panels<T>(packed, a.wh.data, a.wh.ld, 1, H, H, p0, p1);
        for (idx t = 0; t < steps; ++t) {
            ForwardEpilogue<T, Act> epi{a.xw.at(t, 0), a.xw.row_stride, a.out.at(t, 0), a.out.row_stride};
            // At t = 0 without h0 the product is zero: K = 0, and A is never read.
            const bool from_h0 = t == 0;
            const T* hprev = from_h0 ? a.h0.data : a.out.at(t - 1, 0);
            const idx K = (from_h0 && !hprev) ? 0 : H;
            if (!hprev) hprev = a.out.at(0, 0);
            panel_gemm<T>(hprev, from_h0 ? a.h0.ld : a.out.row_stride, N, K, packed, H, p0, p1, epi);
            if (poll(N * H * H)) stop.after(t + 1);
            if (team > 1) step_barrier.wait();
            if (stop.now(t + 1)) break;
        }
    }
    return true;
}

template <class T, class Act>
static bool backward_impl(const BackwardArgs<T>& a) {
    const idx steps = a.da.steps, N = a.da.rows, H = a.da.cols;
    if (N == 0 || H == 0) return true;
    if (steps == 0) {  // dh0 = dh_last
        for (idx n = 0; n < N; ++n)
            for (idx j = 0; j < H; ++j) a.dh0.data[n * a.dh0.ld + j] = a.dh_last.data ? a.dh_last.data[n * a.dh_last.ld + j] : T(0);
        return true;
    }
    constexpr int NR = kNR<T>;
    const idx panels = (H + NR - 1) / NR;
    T* packed = scratch<T, kRecurrenceWeights>(panels * NR * H);
    if (!packed) return false;
    const int nt = team_size(a.threads, N * H * H, H, panels);
    StepBarrier step_barrier;
    StepStop stop{steps};
#pragma omp parallel num_threads(nt)
    {
        const int team = team_threads(), tid = thread_id();
        idx p0, p1;
        thread_range(panels, team, tid, p0, p1);
        step_barrier.join(team);
        InterruptPoller poll(tid == 0 ? a.interrupt : nullptr);
        pack_panels<T>(packed, a.wh.data, 1, a.wh.ld, H, H, p0, p1);  // B = Wh^T
        for (idx t = steps - 1; t >= 0; --t) {
            const bool last = t == steps - 1;
            BackwardEpilogue<T, Act> epi{a.dh.at(t, 0), a.dh.row_stride, a.h.at(t, 0), a.h.row_stride,
                                         last ? a.dh_last.data : nullptr, a.dh_last.ld,
                                         a.da.at(t, 0), a.da.row_stride};
            // The last step has no da_{t+1}: K = 0 and A (a dummy) is never read.
            const T* next = a.da.at(last ? t : t + 1, 0);
            panel_gemm<T>(next, a.da.row_stride, N, last ? 0 : H, packed, H, p0, p1, epi);
            if (poll(N * H * H)) stop.after(steps - t);
            if (team > 1) step_barrier.wait();
            if (stop.now(steps - t)) break;
        }
        if (!stop.now(steps)) {
            StoreEpilogue<T> epi{a.dh0.data, a.dh0.ld};
            panel_gemm<T>(a.da.at(0, 0), a.da.row_stride, N, H, packed, H, p0, p1, epi);
        }
    }
    return true;
}

template <class T>
static bool forward_dispatch(const ForwardArgs<T>& a) {
    return a.act == Activation::relu ? forward_impl<T, ActRelu>(a) : forward_impl<T, ActTanh>(a);
}
template <class T>
static bool backward_dispatch(const BackwardArgs<T>& a) {
    return a.act == Activation::relu ? backward_impl<T, ActRelu>(a) : backward_impl<T, ActTanh>(a);
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
