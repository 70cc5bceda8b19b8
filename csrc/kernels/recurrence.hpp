// The recurrence driver: one template over the cell, for forward and backward through time.
//
// Structure of one call:
//   - one OpenMP parallel region for the whole sequence; thread i owns a contiguous range
//     of column panels of the output (hidden units);
//   - each thread packs its own panels of the recurrent weights once (Wh forward, Wh^T
//     backward): panel p holds columns [p*NR, p*NR+NR) as K rows of NR contiguous values,
//     zero padded, so the micro-kernel streams them;
//   - per step, register-blocked micro-kernels compute MR rows x NR columns of the step's
//     product (h_{t-1} . Wh forward, da_{t+1} . Wh^T backward) and the cell's epilogue
//     finishes the tile in registers (forward: add xw_t, activation; backward: add dh_t,
//     times the activation's derivative) before a single store; one barrier per step,
//     because step t reads every column of step t-1.
// A cell (cell_vanilla.hpp) says only what is particular to it: the step's left factor and
// its epilogue, and anything to do after the last step.
#pragma once
#include "microkernel.hpp"
#include "team.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

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

// The left factor of one step's product: rows of A (N x K, leading dimension lda). K = 0 when
// the product is zero (no h0 forward, the last step backward): A is then never read.
template <class T>
struct StepOperand {
    const T* a;
    idx lda, K;
};

// What the driver needs to know of a call: the (steps, N, H) extent (H: hidden units, the
// columns each thread owns a range of), the recurrent weights and the caller's limits. The
// step's product is (N x depth) . B, with B = `weights` split into `blocks` column blocks of
// H (a gated cell's gates: LSTM 4, GRU 3, forward; B (depth = H) x (blocks * H)), or B = its
// transpose when `transposed` (backward: B = weights^T, (depth = blocks' * H) x H, blocks = 1).
template <class T>
struct RecurrenceShape {
    idx steps, rows, cols;
    Mat<const T> weights;
    bool transposed;
    int threads;
    Interrupt* interrupt;
    idx depth;       // rows of B (K of the step product)
    int blocks = 1;  // column blocks of B, each H wide, each packed into its own panels
};

// Runs the `steps` steps of `cell` in order: step i computes, for each block b of B,
// cell.epilogue(i, b)(cell.operand(i) . B_b) over the thread's columns, then
// cell.after_products(i, j0, j1) on the thread's hidden units [j0, j1) (a gated cell's
// elementwise update, which needs every gate of a unit: a thread owns all gates of its units);
// one barrier per step. Then cell.finish(sweep) may run more products (sweep(operand,
// epilogue), block 0) unless the call was interrupted. Returns false only when the packed
// weights cannot be allocated.
template <class T, class Cell>
static bool run_recurrence(const RecurrenceShape<T>& s, const Cell& cell) {
    const idx steps = s.steps, N = s.rows, H = s.cols, K = s.depth;
    if (steps == 0 || N == 0 || H == 0) return true;
    constexpr int NR = kNR<T>;
    const idx panels = (H + NR - 1) / NR;
    const idx block_size = panels * NR * K;  // one block's packed panels
    T* packed = scratch<T, kRecurrenceWeights>(s.blocks * block_size);
    // Partial sums of a product deeper than one block (step_product), each thread in its columns.
    const idx partial_ld = panels * NR;
    T* partial = K > kStepKC ? scratch<T, kRecurrencePartial>(N * partial_ld) : nullptr;
    if (!packed || (K > kStepKC && !partial)) return false;
    const idx step_work = N * K * H * s.blocks;
    const int nt = team_size(s.threads, step_work, H, panels);
    StepBarrier step_barrier;
    StepStop stop{steps};
    run_team(nt, [&](int team, int tid) {
        idx p0, p1;
        thread_range(panels, team, tid, p0, p1);
        step_barrier.join(team);
        InterruptPoller poll(tid == 0 ? s.interrupt : nullptr);
        // Each thread packs and then only reads its own panels: no barrier needed here.
        for (int b = 0; b < s.blocks; ++b) {
            if (s.transposed)
                pack_panels<T>(packed + b * block_size, s.weights.data + b * H * s.weights.ld, 1, s.weights.ld, K, H,
                               p0, p1);
            else
                pack_panels<T>(packed + b * block_size, s.weights.data + b * H, s.weights.ld, 1, K, H, p0, p1);
        }
        // This thread's copy of the step's left factor in slivers, packed once per product
        // (null: read in place, for few rows or when it cannot be allocated).
        T* abuf = N >= kMinPackedRows ? scratch<T, kRecurrenceA>(((N + kMR - 1) / kMR) * kMR * K) : nullptr;
        auto pack = [&](const StepOperand<T>& op) -> const T* {
            if (!abuf || op.K == 0) return nullptr;
            pack_rows<T>(abuf, op.a, op.lda, N, op.K);
            return abuf;
        };
        auto sweep = [&](const StepOperand<T>& op, const auto& epi) {
            step_product<T>(op.a, op.lda, pack(op), N, op.K, packed, H, p0, p1, partial, partial_ld, epi);
        };
        const idx j0 = imin(p0 * NR, H), j1 = imin(p1 * NR, H);
        for (idx i = 0; i < steps; ++i) {
            const StepOperand<T> op = cell.operand(i);
            const T* a_packed = pack(op);
            for (int b = 0; b < s.blocks; ++b)
                step_product<T>(op.a, op.lda, a_packed, N, op.K, packed + b * block_size, H, p0, p1, partial,
                                partial_ld, cell.epilogue(i, b));
            cell.after_products(i, j0, j1);
            if (poll(step_work)) stop.after(i + 1);
            if (team > 1) step_barrier.wait();
            if (stop.now(i + 1)) break;
        }
        if (!stop.now(steps)) cell.finish(sweep);
    });
    return true;
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
