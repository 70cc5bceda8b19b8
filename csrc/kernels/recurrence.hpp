// The recurrence driver: one template over the cell, for forward and backward through time.
//
// Structure of one call:
//   - one OpenMP parallel region for the whole sequence, its work split one of two ways
//     (recurrence_split): by column panels of the output (hidden units), thread i owning a
//     contiguous range of them (and, where the panels do not divide evenly, a range of the
//     rows of those left over), or by rows (samples), thread i owning a range of the batch;
//   - the threads pack the recurrent weights once (Wh forward, Wh^T backward), each a share
//     of the panels: panel p holds columns [p*NR, p*NR+NR) as K rows of NR contiguous values,
//     zero padded, so the micro-kernel streams them (forward over a row or two of h in all:
//     read in place instead, kMinRowsToPackWeights);
//   - per step, register-blocked micro-kernels compute MR rows x NR columns of the step's
//     product (h_{t-1} . Wh forward, da_{t+1} . Wh^T backward) and the cell's epilogue
//     finishes the tile in registers (forward: add xw_t, activation; backward: add dh_t,
//     times the activation's derivative) before a single store. Split by columns, one barrier
//     per step, because step t reads every column of step t-1; split by rows, none but where
//     the count of rows the steps run changes (a batch of variable lengths, `active`): a
//     sample's recurrence reads only its own row, and the rows are then shared out again.
// A cell (cell_vanilla.hpp) says only what is particular to it: the step's left factor and
// its epilogue, and anything to do after the last step.
#pragma once
#include "microkernel.hpp"
#include "team.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

// How the team of a recurrence leaves early. Split by columns, every thread leaves after the
// same step: thread 0 records how many steps are done (`after`) before arriving at that step's
// barrier; every thread checks (`now`) right after the barrier, so it sees the record. A thread
// still behind can never see a later record too early: thread 0 records only the count of the
// step it is on, which is larger than the count that thread checks. Split by rows, the threads
// are not in step: each leaves after the step it is on when it sees the record (or finishes),
// and one that waits at a barrier where the rows are shared out again stops waiting once
// there is a record (`any`): thread 0 may have left a step or more before that barrier.
struct StepStop {
    idx steps_done;  // initially the number of steps + 1: never
    const idx never;
    explicit StepStop(idx steps) : steps_done(steps + 1), never(steps + 1) {}
    void after(idx done) { __atomic_store_n(&steps_done, done, __ATOMIC_RELAXED); }
    bool now(idx done) const { return __atomic_load_n(&steps_done, __ATOMIC_RELAXED) <= done; }
    bool any() const { return __atomic_load_n(&steps_done, __ATOMIC_RELAXED) < never; }
};

// How a recurrence's team shares the work: `threads` threads, each owning a range of column
// panels (by_rows false; the panels left over after an even share, by rows) or of rows,
// kMinRowsPerThread at a time (by_rows true).
struct Split {
    int threads;
    bool by_rows;
};

// Split by columns, each thread reads its share of the weights every step and all of the
// step before's output: a barrier per step, and the other threads' columns of h_{t-1} cross
// between cores. Split by rows, each thread reads all of the weights every step and only its
// own rows: no barrier and nothing shared after the packing, which pays when all the packed
// weights stay in each core's cache (kRowSplitCachePercent of it) and every thread gets
// kMinRowsPerThread rows (config.hpp has the measurements). The row split takes the place of
// the column split when it can use as many threads; a row split of a sequence pays for the
// team's start once (a GEMM's worth of work per thread), not a barrier per step.
// `step_work`: multiply-adds per step; `weights_bytes`: all the packed panels.
static Split recurrence_split(int requested, idx steps, idx N, idx H, idx panels, idx step_work, idx weights_bytes) {
    const idx want = requested < 1 ? 1 : requested;
    idx by_cols = imin(want, panels);
    by_cols = imin(by_cols, H / kMinStepColumnsPerThread);
    by_cols = imin(by_cols, imax(step_work / kMinStepWorkPerThread, step_work / N / kMinStepWeightsPerThread));
    by_cols = imax(by_cols, 1);
    idx by_rows = 1;
    const bool long_enough = mul_sat(mul_sat(steps, N), kRowSplitBytesPerSampleStep) >= weights_bytes;
    if (long_enough && weights_bytes * 100 <= core_cache_bytes() * kRowSplitCachePercent) {
        by_rows = imin(want, N / kMinRowsPerThread);
        by_rows = imin(by_rows, mul_sat(steps, step_work) / kMinRowSplitWorkPerThread);
    }
    if (by_rows > 1 && by_rows >= by_cols) return {int(by_rows), true};
    return {int(by_cols), false};
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

// The rows step t runs: [0, active[t]), or all N (active null). A batch sorted longest first
// has the samples still running at any step as a prefix of its rows (rnn.hpp, ForwardArgs).
static inline idx running_rows(const idx* active, idx t, idx N) { return active ? active[t] : N; }

// Runs the `steps` steps of `cell` in order: step i runs rows [0, cell.rows(i)) (counts that
// never grow forward, never shrink backward), computing for each block b of B
// cell.epilogue(i, b)(cell.operand(i) . B_b) over the thread's share of those rows and its
// columns, then cell.after_products(i, n0, n1, j0, j1) on the thread's rows [n0, n1) and hidden
// units [j0, j1) (a gated cell's elementwise update, which needs every gate of a unit: a thread
// owns all gates of its units in its rows), and again on its rows of the shared panels' units;
// split by columns, one barrier per step (and one after the packing where panels are shared:
// every thread reads them), and the shared panels' rows shared out again at every step (a
// row's state in them may then pass to another thread, after that barrier); split by rows,
// the rows are shared out again, after a barrier, where the count changes. Then
// cell.finish(sweep) may run more products (sweep(operand, epilogue), block 0, over the last
// step's rows) unless the call was interrupted. Returns false only when its scratch memory
// (packed weights, barrier) cannot be allocated.
template <class T, class Cell>
static bool run_recurrence(const RecurrenceShape<T>& s, const Cell& cell) {
    const idx steps = s.steps, N = s.rows, H = s.cols, K = s.depth;
    if (steps == 0 || N == 0 || H == 0) return true;
    constexpr int NR = kNR<T>;
    const idx panels = (H + NR - 1) / NR;
    // Forward, products of only a few rows of h in all (a step or two of one sample; none in a
    // first step without h0, K = 0) read the weights where they are (kMinRowsToPackWeights);
    // backward reads them transposed, which needs the packing.
    // So B is in place only for N < kMinRowsToPackWeights (the tiles with_panels compiles for
    // it), or when no product reads it. (cell.finish's products count too: every forward
    // cell's finish is empty; a backward's reads Wh^T, packed.)
    const idx rows_reading = mul_sat(steps - (cell.operand(0).K == 0 ? 1 : 0), N);
    const bool pack = s.transposed || rows_reading >= kMinRowsToPackWeights;
    const idx block_size = panels * NR * K;  // one block's packed panels
    T* packed = pack ? scratch<T, kRecurrenceWeights>(s.blocks * block_size) : nullptr;
    // Partial sums of a product deeper than one block (step_product), each thread in its rows and columns.
    const idx partial_ld = panels * NR;
    T* partial = K > kStepKC ? scratch<T, kRecurrencePartial>(N * partial_ld) : nullptr;
    if ((pack && !packed) || (K > kStepKC && !partial)) return false;
    const idx step_work = mul_sat(mul_sat(mul_sat(N, K), H), s.blocks);
    const Split split =
        recurrence_split(s.threads, steps, N, H, panels, step_work, s.blocks * block_size * idx(sizeof(T)));
    StepBarrier step_barrier(scratch<BarrierSlot, kRecurrenceBarrier>(split.threads), split.threads);
    if (!step_barrier) return false;
    StepStop stop{steps};
    run_team(split.threads, [&](int team, int tid) {
        // Split by columns into panels that do not divide evenly between the threads, each thread
        // owns as many whole panels, and the panels left over are shared by rows (whole rows,
        // shared out again at each step, from kMinRowsPerThread a thread): at two threads, 9
        // panels were 5 and 4 (the LSTM at H = 288, float32, AVX-512), 4.5 and 4.5 now. In a
        // step a thread owns its panels' units in every row and the shared panels' units in its
        // rows (all gates of them either way, as after_products needs); a row of the shared
        // units that changes hands between steps does so across the step's barrier.
        const bool share_rest = !split.by_rows && team > 1 && panels % team != 0 && N >= team * kMinRowsPerThread;
        const idx rest0 = share_rest ? panels / team * team : panels;  // the first shared panel
        idx p0, p1;
        thread_range(rest0, team, tid, p0, p1);
        InterruptPoller poll(tid == 0 ? s.interrupt : nullptr);
        // The panels the thread packs: its own, and a share of the shared ones.
        auto pack_range = [&](idx q0, idx q1) {
            for (int b = 0; b < s.blocks && pack; ++b) {
                if (s.transposed)
                    pack_transposed_panels<T>(packed + b * block_size, s.weights.data + b * H * s.weights.ld,
                                              s.weights.ld, K, H, q0, q1);
                else
                    pack_panels<T>(packed + b * block_size, s.weights.data + b * H, s.weights.ld, K, H, q0, q1);
            }
        };
        pack_range(p0, p1);
        if (share_rest) {
            idx q0, q1;
            thread_range(panels - rest0, team, tid, q0, q1);
            pack_range(rest0 + q0, rest0 + q1);
            if (pack) step_barrier.wait(team, tid);  // every thread reads every shared panel
        }
        // The thread's rows of a step that runs `running` rows: all of them split by columns;
        // split by rows, its share of them, kMinRowsPerThread at a time.
        idx n0 = 0, n1 = N, shared = N;
        auto share = [&](idx running) {
            constexpr idx unit = kMinRowsPerThread;
            thread_range((running + unit - 1) / unit, team, tid, n0, n1);
            n0 = imin(n0 * unit, running);
            n1 = imin(n1 * unit, running);
            shared = running;
        };
        // Its rows [r0, r1) of the shared panels [rest0, panels), in shares of whole rows (none
        // without them).
        idx r0 = 0, r1 = 0;
        // Its panels: all of them split by rows, once every thread has packed its share (the
        // only barrier of a row split but where the count of rows changes).
        idx most_rows = N;  // the most rows a step can give this thread
        if (split.by_rows) {
            share(N);
            // At most ceil(units / team) units whatever the count: a thread's share of fewer rows
            // can be larger than its share of N (the last thread's of N ends at row N).
            const idx units = (N + kMinRowsPerThread - 1) / kMinRowsPerThread;
            most_rows = imin(N, (units + team - 1) / team * kMinRowsPerThread);
            p0 = 0;
            p1 = panels;
            step_barrier.wait(team, tid);
        }
        // This thread's copy of its rows of the step's left factor in slivers, packed once per
        // product (null: read in place, for few rows, with AVX-512, or when it cannot be
        // allocated; kMinPackedRows).
        T* abuf = N >= kMinPackedRows ? scratch<T, kRecurrenceA>(((most_rows + kMR - 1) / kMR) * kMR * K) : nullptr;
        idx rows = n1 - n0;
        auto pack_a = [&](const StepOperand<T>& op) -> const T* {
            if (!abuf || op.K == 0) return nullptr;
            pack_rows<T>(abuf, op.a + n0 * op.lda, op.lda, rows, op.K);
            return abuf;
        };
        // Block b of B: its packed panels, or its columns of the weights in place.
        auto block = [&](int b) { return pack ? packed + b * block_size : s.weights.data + b * H; };
        // The thread's part of block b of a step's product: its panels over its rows, then the
        // shared panels over its rows of them (in the other order on alternate steps).
        auto product = [&](const StepOperand<T>& op, const T* a_packed, int b, bool backwards, const auto& epi) {
            auto own = [&] {
                step_product<T>(op.a, op.lda, a_packed, n0, rows, op.K, block(b), !pack, s.weights.ld, H, p0, p1,
                                partial, partial_ld, backwards, epi);
            };
            auto rest = [&] {
                if (r1 > r0)
                    step_product<T>(op.a, op.lda, nullptr, r0, r1 - r0, op.K, block(b), !pack, s.weights.ld, H, rest0,
                                    panels, partial, partial_ld, backwards, epi);
            };
            if (backwards) {
                rest();
                own();
            } else {
                own();
                rest();
            }
        };
        auto sweep = [&](const StepOperand<T>& op, const auto& epi) { product(op, pack_a(op), 0, false, epi); };
        const idx j0 = imin(p0 * NR, H), j1 = imin(p1 * NR, H), rest_j0 = imin(rest0 * NR, H);
        const bool barrier_per_step = team > 1 && !split.by_rows;
        // Every other step from the last block and panel to the first, where the thread's share
        // of the weights is small enough (kAlternateStepBytes): a step then starts on the weights
        // the step before ended on, still in L1 (step_product; the same bits: each block's
        // epilogue and each tile's sums do not depend on the order).
        const bool alternate = mul_sat(mul_sat(mul_sat((p1 - p0 + panels - rest0) * NR, K), s.blocks),
                                       idx(sizeof(T))) <= kAlternateStepBytes;
        for (idx i = 0; i < steps; ++i) {
            const idx running = cell.rows(i);
            if (!split.by_rows)
                n1 = running;
            else if (running != shared)
                share(running);  // (after the barrier that ended the step before)
            rows = n1 - n0;
            if (share_rest) thread_range(running, team, tid, r0, r1);
            const StepOperand<T> op = cell.operand(i);
            const T* a_packed = pack_a(op);
            const bool backwards = alternate && i % 2 == 1;
            for (int k = 0; k < s.blocks; ++k) {
                const int b = int(nth(k, s.blocks, backwards));
                product(op, a_packed, b, backwards, cell.epilogue(i, b));
            }
            cell.after_products(i, n0, n1, j0, j1);
            if (r1 > r0) cell.after_products(i, r0, r1, rest_j0, H);
            if (poll(step_work / N * rows)) stop.after(i + 1);
            // Split by rows, rows change hands where the next step runs another count: every
            // thread finishes this step first (and then sees a stop recorded before it).
            const bool reshare = split.by_rows && team > 1 && i + 1 < steps && cell.rows(i + 1) != running;
            if (barrier_per_step || reshare) step_barrier.wait(team, tid, [&] { return stop.any(); });
            if (stop.now(i + 1)) break;
        }
        if (!stop.now(steps)) cell.finish(sweep);
    });
    return true;
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
