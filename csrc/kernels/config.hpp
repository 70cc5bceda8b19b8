// pyrnn_fast kernels: every tuning constant, in one table, each with the measurement that set it
// (as BLIS keeps its block sizes in one configuration per architecture). The register blocking
// depends on the instruction set, and so do a few cache-level choices measured to differ
// between the machines each build ran on (kKC, kMinPackedRows, kStepPrefetch); the rest of the
// cache blocking and the threading thresholds were measured on the AVX2 and AVX-512 builds
// and suit both.
//
// Every header under csrc/kernels/ is compiled once per instruction set, inside the namespace
// prf::PRF_ISA_NAMESPACE, by csrc/kernels_isa.cpp (see there for why no standard-library
// template may be instantiated in these headers).
#pragma once
#include "../rnn.hpp"

#ifndef PRF_ISA_NAMESPACE
#error "compile csrc/kernels/ through csrc/kernels_isa.cpp, which defines PRF_ISA_NAMESPACE"
#endif

namespace prf {
namespace PRF_ISA_NAMESPACE {

// ---- Register blocking (micro-kernel) ---------------------------------------------------------
// What depends on the instruction set's registers, in one table: a GEMM tile of kMR rows x kNV
// vectors lives in registers while it is computed (kMR * kNV accumulators, plus kNV vectors of
// B and one broadcast of A); the streaming step's register sums (kStepRegisterVectors, below);
// the FMA peak loop's independent chains (kPeakChains, below).
#if defined(PRF_ISA_AVX512)
constexpr int kVecBytes = 64;  // 32 zmm registers: 8 rows x 2 vectors = 16 accumulators
constexpr int kMR = 8;
constexpr int kStepRegisterVectors = 16;
constexpr int kPeakChains = 24;
constexpr int kReadChains = 8;
#elif defined(PRF_ISA_AVX2)
constexpr int kVecBytes = 32;  // 16 ymm registers: 6 rows x 2 vectors = 12 accumulators
constexpr int kMR = 6;
constexpr int kStepRegisterVectors = 12;
constexpr int kPeakChains = 12;
constexpr int kReadChains = 8;
#else
// Portable build: the same vector width and blocking as the AVX-512 build (GCC lowers the
// 64-byte vectors to whatever the target has), so the AVX-512 path's tiling logic is
// exercised by the test suite on machines without AVX-512. No register sums in the step: its
// vectors lowered to SSE2 take 4 registers each, and the sums spilled (float32 H = 64..256
// 10-45 % slower with 16 or 4 vectors, measured); the peak loop's chains likewise.
constexpr int kVecBytes = 64;
constexpr int kMR = 8;
constexpr int kStepRegisterVectors = 0;
constexpr int kPeakChains = 4;
constexpr int kReadChains = 2;
#endif
constexpr int kNV = 2;  // vectors per packed panel (kNR<T> = kNV * lanes columns, simd.hpp)

// Unrolls an epilogue's loop over the rows of a tile, so that its accumulators stay in
// registers (microkernel.hpp, "Epilogues"). Not in the portable build: its vectors, lowered to
// SSE2, do not stay in registers anyway, and unrolled its code grew from 4.9 to 7.8 MB.
#if defined(PRF_ISA_AVX512) || defined(PRF_ISA_AVX2)
#define PRF_UNROLL_TILE_ROWS _Pragma("GCC unroll 16")
#else
#define PRF_UNROLL_TILE_ROWS
#endif

// How many panels a tile of M rows spans: few rows reuse each broadcast of A too little and
// leave the FMA latency exposed, so they take more columns (more independent accumulators).
template <int M>
constexpr int panels_for_rows() {
    return M == 1 ? 4 : (M <= 3 ? 2 : 1);
}

// ... and a tile of a recurrence's step product (microkernel.hpp, tiles_for_rows): with
// 512-bit vectors (and the portable build, which shares that tiling) one row, a stream of one
// sample, takes two panels, not four: its weights, past L1, stream from L2 at half a vector a
// cycle, which four accumulators keep up with, and a tile of four panels covers all of float32
// H = 128, which leaves nothing for the steps' alternating order to find in L1 (recurrence.hpp).
// With 256-bit vectors (a whole vector a cycle from L2, and L1-resident weights wanting every
// accumulator) four stayed better. Zen 4 VM, in one process against tiles of four panels,
// median of 15-21 interleaved rounds, 1 / 2 threads, T = 1000, N = 1, the time: AVX-512 vanilla
// float32 H = 128 forward 0.87x / 0.80x, backward 0.84x / 0.88x, H = 96 0.77x / 0.81x, float64
// H = 128 0.92x / 0.88x, H = 64 0.83x / 0.90x, LSTM and GRU 0.84-1.05x (the method's noise is
// ~5 %); the AVX2 kernels with tiles of two panels instead of four: float32 H = 64 1.23x,
// float64 H = 32 1.17x, and H = 128 0.96x where four with the alternating order read 0.88x.
// As built (alternating processes against the build before, 1 thread, forward, the time):
// AVX-512 float32 H = 96 0.88x, H = 128 0.84x; AVX2 float32 H = 32 0.86x (a tile of two for
// the last two or three panels, microkernel.hpp), H = 96 0.78x, H = 128 0.88x, float64
// H = 32-64 1.00x. (The GEMMs keep panels_for_rows: their one-row tiles were not measured.)
template <int M>
constexpr int step_panels_for_rows() {
#if defined(PRF_ISA_AVX2)
    return panels_for_rows<M>();
#else
    return M <= 3 ? 2 : 1;
#endif
}

// The streaming step (step.hpp) sweeps kStepSweepRows rows of weights at a time (four
// read streams; their vectors and the rows' broadcast inputs stay in registers: 4 + 4 * 2 + 1
// of AVX2's 16) for kStepRows rows of x at a time (each vector of weights read serves them).
constexpr int kStepSweepRows = 4;
constexpr int kStepRows = 2;
// ... except where a row of the weights is at most kStepRegisterTiles x kStepRegisterVectors
// whole vectors (for kStepRows rows of x: half as many each): the sums then stay in registers
// while all the rows are swept (step_sweep_registers), in column tiles of kStepRegisterVectors,
// instead of a load and a store of each vector of sums per kStepSweepRows rows (a chain of
// store-to-load forwarding). Measured on Sapphire Rapids (AVX-512), 2 threads, N = 1, D = 32,
// the main job's step table, 2 alternating builds, µs before -> after: float32 H = 64 0.81-0.84
// -> 0.68, 128 1.31-1.34 -> 1.19-1.22, 256 2.89-2.93 -> 2.46-2.49, 512 7.9-8.5 -> 6.3-6.5 (2
// tiles); float64 H = 64 1.06-1.10 -> 0.99, 128 1.95-2.00 -> 1.75, 256 5.14 -> 4.50, 512
// 12.9-13.4 -> 11.4-11.7 (4 tiles of 1 KB in 4 KB rows); LSTM.step float32 H = 128 3.5-3.8 ->
// 3.1-3.2, 256 9.6-10.0 -> 7.5-8.5. AVX2 keeps 12 (16 ymm: room for the broadcast and a load;
// measured only as the AVX2 build on that AVX-512 machine: float32 H = 64 0.90-0.99 ->
// 0.82-0.84, the rest unchanged). The portable build has none (the table above).
constexpr int kStepRegisterTiles = 4;
// Whether the step's sweep (step.hpp, step_sweep_block) prefetches the next kStepSweepRows rows
// of weights while it sums these. On Sapphire Rapids (the AVX-512 build; the weights stream from
// L2 or L3, and the hardware prefetchers alone kept one core at ~55 GB/s), one thread, N = 1,
// D = 32, interleaved with the NumPy one-liner, float32 µs: H = 128 2.09-2.33 -> 1.82-1.93,
// H = 512 17.8-18.1 -> 13.8-15.0; float64 H = 128 3.4-3.5 -> 2.9-3.1 (two blocks ahead: the
// same; 8 rows per block: slower). On Zen 3 (the AVX2 build) the prefetches cost more than
// they bring: without them, in one process, blocks of 1,000-2,000 back-to-back steps
// alternating (thirty-second session, time without / with, medians of the pairs): 2 threads,
// float32 H = 512 0.90x, H = 1024 0.75x, float64 H = 256 0.85x, H = 512 0.78x, LSTM float32
// H = 256 0.70x, float64 0.78x, GRU float32 H = 256 0.80x; 1 thread float32 H = 512 0.92x,
// H = 1024 0.89x, float64 H = 512 0.90x, LSTM H = 256 0.89x, GRU H = 512 0.63x; the narrower
// steps (summed in registers, never prefetched) unchanged. Prefetching once per line (an
// AVX2 vector is half of one), or to L2 only (prefetcht1), was slower than none too
// (1.10-1.47x its time). On Zen 4 (the AVX-512 build; thirty-fifth session) it cost too, with
// the weights in the threads' L2s as from L3: 2 threads, D = 32, blocks of 1,000 steps
// alternating a scratch build's switch, time without / with: L2, LSTM float32 N = 2 H = 256
// 0.85, vanilla float32 N = 2 H = 640 0.96, vanilla float64 N = 2 H = 384 0.85, GRU float32 N = 2
// H = 320 0.95; L3, float32 N = 2 H = 1024 0.86, N = 1 H = 2048 0.78, float64 N = 1 H = 1024
// 0.75 (1 thread 0.74), N = 2 H = 512 0.89. So it runs on every processor but AMD's (step_sweep's
// amd_cpu(), team.hpp). Sapphire Rapids's figures above are from before the sums in registers:
// those shapes no longer take this sweep (N = 1: float32 up to H = 1024, float64 up to 512,
// half that for two rows of x), and it was not measured on Intel since; nor on Intel's AVX2
// parts (the AVX2 build never prefetches).
#if defined(PRF_ISA_AVX2)
constexpr bool kStepPrefetch = false;
#else
constexpr bool kStepPrefetch = true;
#endif
// A step's stacked weight rows are summed in at most kStepChunks chunks (a power of two,
// 2^kStepChunkLevels) of at least kStepChunkMinRows rows (step.hpp, step_chunks), whole
// chunks per thread, for kStepBlockRows rows of x at a time.
constexpr int kStepChunkLevels = 4;
constexpr idx kStepChunks = idx(1) << kStepChunkLevels;
constexpr idx kStepChunkMinRows = 16;
constexpr idx kStepBlockRows = 8;

// The FMA peak loop (peak.hpp): kPeakChains (the table above) independent chains per thread,
// at least latency x ports (4-5 cycles x 2 ports on Zen 3/4/5, Ice Lake and Sapphire Rapids
// servers) and within the registers (16 ymm with AVX2, 32 zmm with AVX-512; the portable
// build's 64-byte vectors are lowered to narrower registers: 4). The read loop (peak.hpp):
// kReadChains sums of loaded vectors, enough to keep two loads a cycle in flight, within the
// registers (the portable build's 2 take 8 of SSE2's 16: with 8 they spilled, ~23 GB/s from
// L1 against ~200 for the AVX-512 and AVX2 builds on the Zen 4 VM).

// ---- Cache blocking ---------------------------------------------------------------------------
// Packed B panels swept per row block (per A sliver in the GEMMs): half an L2. The rows of A
// (the GEMMs' kMR x kKC sliver; the step's kMR x kStepKC is bounded but spills to L2)
// then stay in L1 across the group's panels, and the group stays in L2 across all row blocks,
// instead of A coming from L3 once per panel when it is larger than L2 (the `large` shape's
// h_{t-1} is 512 KB): measured +3 % on its recurrences at 2 threads, up to +8 % on `typical`'s.
constexpr idx kGroupBytes = idx(256) << 10;
// A recurrence runs every other step from its last weights to the first (recurrence.hpp) only
// where a thread's share of a step's weights is at most this: four 32 KB L1s, of which the
// step before leaves up to one. Beyond it the L1 holds too little of them to matter, and the
// reversed order of `large`'s L2-sized groups had cost its gated cells 1.006-1.017x the time
// (a trial of the same reversal for L2 reuse, docs/DESIGN.md).
constexpr idx kAlternateStepBytes = idx(128) << 10;

// Depth of a packed GEMM block: an A sliver (kMR x kKC) stays in L1 while it sweeps a group
// of panels. AVX-512 parts have 48 KB of L1 (Ice Lake and later): 512 deep (16 KB of float32
// A) halves the passes over C of a 512-deep product; measured on Sapphire Rapids, `large`
// float32, 1 thread, against kKC = 256: X·Wx 63 -> 69 % of the FMA peak, dx = dA·Wxᵀ 53 -> 61 %,
// the other GEMMs within noise. AVX2: 256, as measured on Zen 3 (32 KB of L1). Zen 4 (32 KB of
// L1, the AVX-512 build) also runs its GEMMs faster at 512: `large`'s, 2 threads, float32, a
// scratch build's switch in one process, time at 256 / at 512: X·Wx 1.05, the LSTM's 1.02,
// dx = dA·Wxᵀ 1.06, dWx 1.13, dWh 1.01 (1 thread: 1.05, 1.02, 1.06, 1.00, 1.00).
#if defined(PRF_ISA_AVX2)
constexpr idx kKC = 256;
#else
constexpr idx kKC = 512;
#endif
// A recurrence step's product deeper than this is summed in blocks of this depth
// (microkernel.hpp, step_product), the tile's sums between blocks kept in a buffer: so that
// the rows of A a tile reads (kMR x kStepKC) stay bounded where whole rows of a gated cell's
// backward (3H or 4H deep, read in place) came from L3 once per panel. 1024 (was 512): at
// H = 1024 every forward step and the vanilla backward's is one block (the gated backward's
// 3 or 4 instead of 6 or 8), where the later blocks' reload of the sums and the buffer's
// footprint cost more than the sliver they kept small (a 512-deep sliver did not stay in L1
// either: a 32 KB panel of B streams through beside it). The same sums in the same order,
// so the same bits. Zen 3 (AVX2), `bench/stages.py`'s `large` recurrences in one process,
// alternating a scratch build's switch, 24 rounds, median time ratio 1024 / 512: 2 threads
// float32 forward 0.967, backward 0.979, float64 0.959, 0.965; 1 thread float32 0.974, 0.991,
// float64 0.974, 0.965; whole calls at 2 threads, LSTM `large` forward 0.951, fwd+bwd 0.971
// (blocks of 4096: 0.967, the same within the noise; 1024 keeps a tile's sliver of A at 24 KB
// of float32 however deep the product), GRU 0.986, 0.998; `typical` 0.995-1.007. Sapphire
// Rapids (AVX-512) had read 0.97-1.00x.
constexpr idx kStepKC = 1024;
// A forward recurrence packs its weights (Wh, into panels) when its products have this many
// rows of h in all (steps x N, less the first step's without h0); fewer, and the micro-kernel
// reads them in place. Packing is a pass over the weights; read in place, down rows G·H
// values apart, a step of one sample costs ~1.5 (H = 128) to ~4.5 (H = 512) times a packed
// one (N = 1, GRU float32, Sapphire Rapids, 2 threads, µs for T = 1, 2, 4 steps with h0:
// H = 512 packed 158, 172, 201, in place 69, 133, 264; H = 128 packed 9.0, 10.8, 13.8, in
// place 5.3, 7.9, 12.6). At H = 512 that is L2 set aliasing: each thread reads its units'
// columns of every gate, rows 96 lines apart and gates 32 lines apart, so its lines fill half
// of the L2's sets (1 MB for its 1.5 MB); the same weights with a 6208-byte row stride instead
// of 6144 ran T = 1 in 42 µs against 72, T = 2 in 68 against 127 (`_core.gru_forward` on a
// view of a wider array, twentieth session).
constexpr idx kMinRowsToPackWeights = 3;
// From this many rows a step's left factor is packed into slivers (each thread its own copy,
// once per step) before the product, instead of the micro-kernel reading kMR rows H apart (at
// H = 1024 all in one L1 set). Measured on Zen 3, large (N = 128, H = 1024) float32, 2 threads,
// two interleaved rounds: vanilla forward recurrence 128-138 -> 151-171 GFLOP/s, LSTM forward
// 123-141 -> 132-144, LSTM backward 121 -> 132-141, GRU forward 101-133 -> 151-160; stream,
// typical and tiny unchanged within their (large) noise. Below it the rows are few and the
// copy is overhead: on Sapphire Rapids (AVX-512), `typical` (N = 32, rows 1 KB apart) ran
// faster unpacked, 3 alternating processes each, 2 threads, best ms packed -> unpacked:
// vanilla forward 3.76-3.89 -> 3.11-3.28, fwd+bwd 14.1-14.9 -> 12.4-12.8; LSTM forward
// 13.6-14.0 -> 13.1-13.3, fwd+bwd 46.4-48.2 -> 43.4-46.0; GRU fwd+bwd 44.3-44.6 -> 42.2-43.3.
// Hence 64 (was 24) for AVX2. With AVX-512 `large` (N = 128, rows 4 KB apart) runs faster
// unpacked too (48 KB 12-way L1), 2 alternating builds, 2 threads, best ms packed -> unpacked:
// vanilla forward 68.5-69.0 -> 67.7, fwd+bwd 219-220 -> 215.6-216.2; LSTM forward 279 -> 275,
// fwd+bwd 878 -> 853: never packed there (nor in the portable build, which shares its tiling;
// the AVX2 build keeps the packed path tested). Zen 4 (32 KB 8-way L1, as Zen 3's, where packing
// paid), the AVX-512 build with 64 here and kMaxPanelsUnpackedA = 8, time packed / in place, 2
// threads, one process: vanilla `large` forward recurrence 1.005, LSTM `large` forward 0.99,
// `large`'s GEMMs 0.98-1.015: within the noise, so not packed there either.
#if defined(PRF_ISA_AVX2)
constexpr idx kMinPackedRows = 64;
#else
constexpr idx kMinPackedRows = idx(1) << 40;
#endif
// The GEMMs' packs of B, and the reduction GEMMs' packs of A, prefetch (to L2) the row of the
// operand kPackAhead rows ahead of the one they copy: those operands are whole sequences, read
// from memory, and the packs stalled on each row's loads (a skip of both packs, as a bound,
// made dWx and dWh on `large` 0.85-0.94x the time). Sapphire Rapids, 2 threads, in-process
// A/B, three sets of 9 rounds, median time ratio: 8 rows ahead dWx 0.975-0.982x, dWh 0.92-
// 0.98x, the LSTM's (4H wide) 0.97-1.00x, X·Wx 0.98-1.01x; 4 rows (to L1) 0.995-1.015x; 16
// rows 0.98-1.00x.
constexpr idx kPackAhead = 8;
constexpr idx kMC = 240;  // rows of a packed A block (multiple of 6 and 8)
// Up to this many panels per thread, the rows GEMM reads A where it is instead of packing it:
// few panels reuse each packed value of A too little to repay packing it (the stream and
// typical shapes' dx = dA·Wxᵀ spent more time packing A than computing). Measured on Zen 3
// (AVX2). With AVX-512 (Sapphire Rapids, 48 KB 12-way L1) reading A in place never lost: C++
// harness on gemm_kernel, float32, best of 10, GFLOP/s packed -> in place: (M, K, P) = 1024³
// 1 thread 146-149 -> 158-161; (6400, 1024, 512) 2 threads 277-280 -> 312-314; (6400, 512,
// 1024) 1 thread 153 -> 158, 2 threads 305 -> 307-318; (3200, 128, 1024) 2 threads 321-322 ->
// 315-330. Packing A was 7 % of the 1024³ product (a scalar scatter into slivers), more than
// the strided reads of 8 rows cost the micro-kernel. The portable build shares the AVX-512
// value (and the AVX2 build keeps the packing path tested).
#if defined(PRF_ISA_AVX2)
constexpr idx kMaxPanelsUnpackedA = 8;
#else
constexpr idx kMaxPanelsUnpackedA = idx(1) << 40;
#endif

// Accuracy of long float32 sums (the reduction GEMMs sum over N*T rows): C is accumulated in
// float32 over at most kWideK rows of K, then added into a double copy of the thread's block
// of C. Adding every kc block's tile into float32 C for the whole of K let the error grow
// like (K/kc)*eps: measured 1.4e4 eps (8.5e-4 relative) at K = 2^25 on constant data. Now a
// term goes through at most kKC + kWideK/kKC + 2 float32 roundings whatever K is (514 with
// kKC = 256, 642 with 512). K up
// to kWideK (every benchmark shape) takes exactly the float32 path as before, at no cost.
constexpr idx kWideK = idx(1) << 16;

// ---- Threads ----------------------------------------------------------------------------------
// Multiply-adds per thread below which a GEMM runs on fewer threads: ~5-10 µs of work.
// Waking a second thread costs microseconds on bare metal but can cost a scheduler time slice
// when that core is busy (another library's spinning pool, a virtual CPU the host took away):
// measured on the `stream` shape, 2-thread GEMMs of 4M multiply-adds made fwd+bwd 4x slower,
// probably the helper woken on the caller's vCPU, fixed since (team.hpp, keep_off_cpu); the
// bound was 2^22 then. At 2^20 (twenty-fifth session, Sapphire Rapids VM, 2 threads, float32,
// two builds in alternating processes, 3 rounds): `layer.step` of many samples, whose input
// GEMMs (N x D x G*H, 2^21-2^22) now take two threads: RNN H = 256 N = 256 0.91x the time,
// H = 512 N = 128 0.92x, GRU H = 256 N = 256 0.89x, LSTM H = 128 N = 256 0.88x; vanilla
// `stream` fwd+bwd 0.93-0.97x; LSTM `stream` and `typical`, GRU and RNN `typical`, the
// forwards of `stream` and `tiny`: within noise (0.97-1.03x).
constexpr idx kMinGemmWorkPerThread = idx(1) << 20;
// The same kind of bound for splitting a whole sequence's recurrence by rows (recurrence.hpp):
// kept at 2^22 (with 2^20 there too, LSTM `typical` fwd+bwd read 1.03-1.07x the time in the
// same comparison; not looked into further).
constexpr idx kMinRowSplitWorkPerThread = idx(1) << 22;
// Elements per thread of a column sum (gemm.hpp, column_sums_kernel): one read of each, at
// memory speed, so a second thread pays for its start only on a large array.
constexpr idx kMinSumsPerThread = idx(1) << 16;

// A second thread pays for itself in a recurrence when each thread gets at least this many
// multiply-adds per step and this many hidden units (whole panels): below that, the barrier
// per step and the team's wake-up per call cost more than the split saves. Measured on two
// cores with the spin barrier (recurrence.hpp): N = 1, H = 128 (8K per thread) runs 1.4x
// faster on two threads, while N = 16, H = 32 (one 16-column panel each, 8 steps) ran slower.
// That was Zen 3 (AVX2). The threshold is a time, so it scales with the vector width: 512-bit
// vectors do a step's multiply-adds in half the time while the barrier costs the same. On
// Sapphire Rapids (AVX-512), the same N = 1, H = 128 `stream` shape, 2 threads allowed, 3
// alternating processes, best ms, 8K -> 16K per thread (i.e. one thread): forward 0.97-1.07
// -> 0.66-0.67, fwd+bwd 2.93-3.13 -> 2.11-2.18. And the gated cells' `stream` steps (N = 1,
// H = 128: LSTM 64K multiply-adds, GRU 48K) ran faster on one thread too: 16K -> 64K per
// thread, 2 threads allowed, 3 alternating processes, best ms: LSTM forward 2.90-2.93 ->
// 2.62-2.65, fwd+bwd 6.90-7.02 -> 6.46-6.55; GRU forward 2.31-2.33 -> 1.91-1.99, fwd+bwd
// 5.97-6.31 -> 5.00-5.20. (A barrier per step costs the same whatever the step's size: two
// threads pay from about twice this work per step.) AVX2 keeps Zen 3's 8K (not re-measured);
// the portable build shares the AVX-512 build's value as it shares its tiling.
#if defined(PRF_ISA_AVX2)
constexpr idx kMinStepWorkPerThread = idx(1) << 13;
#else
constexpr idx kMinStepWorkPerThread = idx(1) << 16;
#endif
constexpr idx kMinStepColumnsPerThread = 64;
// ... or when each thread gets at least this many of the step's weights (K x its columns,
// every gate block counted), whatever the batch: a step's time is mostly the sweep over its
// weights when the batch is small. Sapphire Rapids, 2 threads allowed, once the helper threads
// kept off the caller's CPU (team.hpp), 3 alternating builds, best ms, forward, 2^16 -> 2^14
// multiply-adds per thread: the LSTM `stream` (N = 1, H = 128: 32K weights per thread) 2.64-
// 2.69 -> 2.47-2.60, fwd+bwd 6.44-6.75 -> 5.90-6.21; GRU (24K) 2.37-2.42 -> 2.04-2.12, 5.59-6.41
// -> 5.21-5.61; vanilla (T, N, H) = (500, 1, 256) (32K) 1.10-1.15 -> 0.86-0.90; but vanilla
// H = 128 (8K per thread) lost at every batch: N = 1 0.65 -> 0.82-0.91 (the `stream` shape),
// N = 2 0.40-0.42 -> 0.46-0.53, N = 4 0.71-0.75 -> 0.85-0.89. The weights, not the batch's
// multiply-adds, tell them apart: from 16K per thread (AVX2: never, its work threshold is
// already low).
#if defined(PRF_ISA_AVX2)
constexpr idx kMinStepWeightsPerThread = idx(1) << 40;
#else
constexpr idx kMinStepWeightsPerThread = idx(1) << 14;
#endif
// A recurrence splits its batch (rows) between threads instead of its hidden units when each
// thread gets at least kMinRowsPerThread rows (in multiples of it) and all the packed recurrent
// weights fit in kRowSplitCachePercent of a core's L2 (recurrence.hpp, recurrence_split).
// Measured on Sapphire Rapids (2 MB L2), LSTM forward recurrence, T = 100, N = 32, H = 256
// float32 (1 MB of weights), 2 threads, C++ harness: 7.9 ms split by columns (each thread's
// product ran 15 % slower than alone, reading the other core's half of h_{t-1}, and one waited
// 3-19K cycles a step at the barrier for the other), 6.0 ms split by rows. 4 rows rather than
// 8 (alternating builds, 2 threads, float32 forward, best ms): LSTM (T, N, D, H) = (100, 8, 64,
// 256) 2.53-2.65 -> 2.24-2.30, GRU 1.89-1.97 -> 1.71, LSTM (100, 12, 64, 128) 1.64-1.74 ->
// 1.25-1.29; N = 20 and 32 unchanged. The weights' limit: a full L2, 100 % (was 75 %). On
// Sapphire Rapids, float64 with 2 MB of weights, rows against columns: LSTM `typical` 21.2-21.4
// vs 21.8-22.0 ms, vanilla H = 512 15.8-16.1 vs 15.0-15.2. On Zen 4 (AMD EPYC family 25 model
// 17, 1 MB L2, the AVX-512 build; thirty-fifth session), 2 threads, float32, T = 100, N = 32,
// D = 128, one process alternating a scratch build's switch, median time ratio rows / columns:
// the LSTM `typical` (H = 256: exactly 1 MB of weights) forward recurrence 0.89-0.92, the whole
// forward 0.91-0.92, fwd+bwd 0.93; vanilla H = 512 (1 MB) 0.97; GRU H = 288 and LSTM float64
// H = 176 (95 %) 0.62 and 0.57 (an odd count of panels per gate, 9 and 11: one thread has a
// panel more per gate; why it cost that much was not established). Past a full L2
// the rows still won there, by less (vanilla H = 576 to 1024: 0.98-0.99, LSTM H = 320 and 512
// 0.96-0.97, GRU H = 416 0.93), not measured elsewhere: left at 100 %. A known cost: Sapphire
// Rapids's vanilla float64 H = 512 above (2 MB, exactly its L2) now splits by rows, 1.05x the
// time of its columns there, for the LSTM's 0.97x there and Zen 4's gains.
constexpr idx kMinRowsPerThread = 4;
constexpr idx kRowSplitCachePercent = 100;
// ... and when the call has at least one sample-step (steps x N) per kRowSplitBytesPerSampleStep
// bytes of packed weights: split by rows, each thread starts by reading all the packed panels,
// half of them from the other core's cache, which a call of a few steps does not repay (split
// by columns, each reads only its own and any left over). Measured (twenty-second session,
// Sapphire Rapids, 2 threads, float32, a forward kernel alone, µs, rows -> columns): LSTM
// H = 256 (1 MB) N = 32 T = 1 153 -> 100, T = 4 349 -> 320, T = 8 584 -> 591, T = 16 1033
// -> 1138; N = 16 T = 8 352 -> 329, T = 16 585 -> 619; N = 64 T = 2 342 -> 300, T = 3 469
// -> 482; LSTM H = 128 (256 KB)
// N = 16 T = 8 104 -> 136; vanilla H = 512 (1 MB) N = 32 T = 16 941 -> 915; GRU H = 256 (768
// KB) N = 64 T = 4 466 -> 456. The crossing, in sample-steps, grows with the weights: ~64-128
// at 256 KB, ~256 at 1 MB (LSTM), ~512 (vanilla, which gains less per step from the row split).
// A batch of variable lengths runs a kernel call per distinct length (layers/_lengths.py),
// mostly of a step or two: those calls gain the most.
constexpr idx kRowSplitBytesPerSampleStep = 4096;

// A streaming step (step.hpp) is one call, not a sequence: its team starts and ends at every
// step, and a step's weights come from the cache level that holds them, at that level's
// bandwidth per core. So a second thread pays once the weights a thread sweeps take longer
// than the team costs: from kMinStepCallBytesPerThread bytes of weights per thread (weights x
// rows of x, per layer). Thirty-sixth session, Zen 4 (1 MB L2), N = 1, D = 32, one layer,
// blocks of 1,000 steps alternating 1 and 2 threads in one process (30 rounds, median time
// ratio two / one): float32 H = 128 (82 KB) 1.17, H = 160 (123 KB) 1.01, H = 192 (172 KB)
// 0.94, H = 256 (295 KB) 0.83; float64 H = 96 (98 KB) 1.10, H = 128 (164 KB) 0.99, H = 160
// (246 KB) 0.90. That is with the step's own team (run_step_team, team.hpp: ~0.1 µs to start
// the helper, ~0.25 µs to see it done). On libgomp's region (~1.2 µs a step, a futex_wake at
// each start) this was 2^20 multiply-adds (4 MB of float32): measured then on Zen 3 (512 KB
// L2), float32 H = 256 4.7 µs on one thread, 6.8 on two, and on Sapphire Rapids (2 MB L2)
// float32 H = 256 3.5 vs 5.5 µs, H = 512 11.0 vs 11.0, kernel alone (docs/DESIGN.md,
// "Streaming step", has the rest of those figures).
constexpr idx kMinStepCallBytesPerThread = idx(80) << 10;
// Where the rows are more than one block (N > kStepBlockRows), the threads take blocks of rows,
// each sweeping all the weights: two threads from kMinStepWorkForTwoThreads multiply-adds per
// layer (Zen 4, float32, D = 32, 2 threads, two builds in alternating processes, µs: vanilla
// N = 16 H = 64 (98K multiply-adds) 3.50 -> 2.91, H = 128 8.76 -> 6.13; LSTM N = 16 H = 64
// 12.3 -> 7.4; GRU N = 32 H = 64 19.8 -> 12.4, H = 128 51.7 -> 29.0), more only from
// kMinStepCallWorkPerThread each (measured on two cores only).
constexpr idx kMinStepWorkForTwoThreads = idx(1) << 16;
constexpr idx kMinStepCallWorkPerThread = idx(1) << 20;
// ... but a step whose weights a core's L2 cannot hold (server cores: 1.25-2 MB) streams them
// from L3, and spread over more cores they fit in their L2s: one thread per 1/kStepCacheShare
// of a core's L2 (core_cache_bytes(), team.hpp) of weights. Sapphire Rapids (2 MB L2), float64
// H = 512 (2.2 MB), one layer, N = 1, D = 32, interleaved with NumPy's one-liner, 3 alternating
// processes: 54-62 µs on one thread (1.24-1.36x NumPy), 36-46 on two (1.80-1.91x). Float32
// H = 512 (1.1 MB) stayed on one thread under the 1.5 MB this was until the helper threads kept
// off the caller's CPU (team.hpp, keep_off_cpu); since, on two it takes 7.9-8.6 µs against
// 10.0-10.1 on one (the main job's step table, 2 alternating builds), while float32 H = 256
// (295 KB) still lost on two (3.2 -> 4.0 µs): hence half that L2, 1 MB (a constant until the
// twenty-eighth session). Zen 3 (512 KB L2), the same table, 2 threads, 7 alternating pairs of
// processes, 1 MB against half its L2 (256 KB), median µs: float32 H = 512 23.5 -> 16.5 (1.48x
// -> 1.84x NumPy), float64 H = 256 (576 KB, one thread at 1 MB) 12.2 -> 11.0 (1.79x -> 2.24x),
// float64 H = 512 38.7 -> 39.1 and float32 H = 256 5.9 -> 5.3 (2.21x -> 2.02x) within the noise.
// It also sets how finely a step's weights are cut for its threads (step.hpp, step_chunks): the
// power of two at least one chunk per share, so that each thread's rows stay in its L2
// (Sapphire Rapids: float32 H = 512 2 chunks, float64 H = 512 4).
constexpr idx kStepCacheShare = 2;
// A step uses more than one thread only when the calling thread's previous step ended less
// than this long ago, and its helpers (csrc/spin_team.cpp) spin this long after a step, then
// sleep: waking a sleeping one costs more than a step (a virtual CPU's wake-up:
// 0.05-0.3 ms seen, several ms on a busy host). `python bench/step_pauses.py` (1 and 2 threads
// alternating call by call, Sapphire Rapids, median µs) on a build that started the team
// whatever the pause: float32 H = 512 after a 3 ms pause 51 on one thread vs 83 on two, after
// 20 ms 144 vs 219; float32 H = 256: 20 vs 68, 110 vs 178; float64 H = 512 (before this rule):
// 91 vs 106, 246 vs 276. With the rule both settings take the same time after a pause, and a
// stream of calls in a loop gets the team from its second step (back to back: float32 H = 512
// 10.0 -> 8.3, float64 43.0 -> 28.1).
constexpr long long kStepTeamIdleNs = 500 * 1000;
// ... but within kStepAfterOpenmpNs of the end of the calling thread's last OpenMP region of
// two threads or more (team.hpp, run_team), whose helpers spin for a while on the CPUs the
// step's own would take (the Zen 4 VM's libgomp helper spent ~8 ms of CPU per region), a team
// step runs on libgomp's team, as before the step had helpers of its own, and only where it
// did then: where the weights need two cores' caches, or from kMinStepCallWorkPerThread
// multiply-adds per thread. Alternating a sequence call of 2 threads
// (N = 32, T = 20, H = 256, ~0.55 ms) with 5 steps (float32 N = 1, H = 256) on both runtimes,
// each one's helpers spinning while the other's worked made the sequence call 1.8x slower
// and the steps 12x; with the steps alone in that window, float32 H = 512 took 12.5-13.5 µs
// against 8.1-10.0 on libgomp's team. (A stream of such steps renews the window: it stays on
// libgomp until a pause of kStepAfterOpenmpNs.)
constexpr long long kStepAfterOpenmpNs = 10 * 1000 * 1000;
// A step that would run on a team runs alone where that has been measured faster (step.hpp,
// StepTeamTrial): after the first kStepTrialFirst steps of a layer, and then every
// kStepTrialEvery steps, kStepTrialSteps steps run the other way (the first of them not timed:
// its caches hold the other way's share of the weights). Where the calling thread alone stays
// faster, the trials of the team come at twice the interval each time, up to
// kStepTrialEveryMost steps (the helpers sleep in between, and the first step of a trial waits
// for one to wake: 0.05-0.3 ms on a VM); where the team stays faster, the trials alone, up to
// kStepTrialAloneEveryMost (a few ms of steps: the host's state changes over 0.2-2 s, and
// every trial alone costs its steps' difference: ~1.5 % of float64 H = 256's time at every
// 128); a way changed by the means between trials starts the spacing again. Up to
// kStepTrialLayers layers (and row counts) per calling thread are followed at once.
//
// Which teams are timed so: those whose weights one core's L2 could hold, up to
// kStepTrialCachePercent of it (the rest for what else a step touches), where a trial alone
// only adds the other cores' shares to the calling core's cache. Above that a trial would evict
// part of each core's own share (the thirty-seventh session measured it: slower everywhere),
// and the team stays. Until the thirty-eighth session only the teams whose weights fit half an
// L2 (kStepCacheShare) were timed; float64 H = 256 (576 KB, Zen 4's 1 MB L2) ran on two
// threads whatever they took: on Zen 4 (a scratch build switching
// between the two rules every 1,000 steps in one process for 5 minutes, float64 H = 256, N = 1)
// 9.24 -> 6.48 µs in the host's slow state (16 blocks of 20 rounds), 1.008x the time in the
// quiet one (73 blocks), 1.1-1.35x in the 8 blocks just after the slow state ended (the
// team's next trial up to kStepTrialEveryMost steps later); mean 5.69 -> 5.36.
constexpr idx kStepTrialCachePercent = 75;
static_assert(kStepTrialCachePercent * kStepCacheShare >= 100, "every team timed before is timed still");
constexpr unsigned kStepTrialFirst = 8;
constexpr unsigned kStepTrialEvery = 128;
constexpr unsigned kStepTrialEveryMost = 1u << 14;
constexpr unsigned kStepTrialAloneEveryMost = 1024;
constexpr unsigned kStepTrialSteps = 4;
constexpr int kStepTrialLayers = 4;

// How long the calling thread waits at a streaming step's first barrier for a helper that has
// not begun its share before it takes the share back and does the step alone
// (take_back_spinning_team): far longer than a spinning helper takes to start (0.2-0.8 µs on
// the Zen 4 VM) and than an interrupt keeps it, far shorter than the host's or the OS's time
// slice that otherwise holds the step (1-4 ms). A helper woken from its sleep (the first team
// step after a pause, or a new helper) often takes longer too: that step is taken back as well,
// which costs less than waiting for the wake-up.
constexpr long long kStepTakeBackNs = 20 * 1000;

// Pause instructions a thread spins at the step barrier before it yields the core: ~0.1-1 ms,
// longer than a balanced step waits, short enough that an oversubscribed machine gets the
// core back soon.
constexpr unsigned kSpinsBeforeYield = 1u << 14;

// ---- Ctrl-C polling (team.hpp) ----------------------------------------------------------------
// The calling thread reads the clock after every kPollWork multiply-adds it has done (~50 µs
// of one core's work; a clock read costs ~20 ns) and polls when kPollIntervalNs have passed
// since the start or the last poll, so a call shorter than that never polls and a longer one
// polls 20 times a second: taking the GIL waits up to Python's switch interval (5 ms) when
// another Python thread is running, at most 10 % of the time then, ~0 otherwise.
constexpr idx kPollWork = idx(1) << 20;
constexpr long long kPollIntervalNs = 50 * 1000 * 1000;

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
