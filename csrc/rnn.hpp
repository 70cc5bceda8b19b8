// pyrnn_fast: the pure C++ interface of the recurrence kernels (no Python here).
//
//   forward : out_t = act(xw_t + out_{t-1} . Wh),  out_{-1} = h0 (zeros when null)
//   backward: da_t  = (dh_t + da_{t+1} . Wh^T) * act'(h_t),  da_T . Wh^T := dh_last (zeros when null)
//             dh0   = da_0 . Wh^T
//
// Arrays are described by raw pointers, sizes and strides (in elements) so that the caller
// can hand over batch-major or time-major views without copying; the last axis is contiguous.
#pragma once
#include <cstddef>

namespace prf {

using idx = std::ptrdiff_t;

enum class Activation : int { tanh = 0, relu = 1 };
// Every instruction set the kernels are compiled for, from the portable one to the best (the
// best one the CPU supports is the default). X(name, arch, cpu_check):
//   name      the kernels' namespace isa_<name> and prf_kernel_variant(<name> ...) in CMakeLists.txt;
//   arch      ANY, or X86: compiled on x86 only (PRF_HAVE_X86_KERNELS, set by CMakeLists.txt);
//   cpu_check whether this CPU and OS support it (__builtin_cpu_supports also checks that the OS
//             saves the wider registers).
// Adding an instruction set is one line here and one prf_kernel_variant call in CMakeLists.txt.
#define PRF_ISAS(X)                                                               \
    X(generic, ANY, true)                                                         \
    X(avx2, X86, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) \
    X(avx512, X86, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))

#define PRF_ISA_ENUMERATOR(name, arch, cpu_check) name,
enum class Isa : int { PRF_ISAS(PRF_ISA_ENUMERATOR) };
#undef PRF_ISA_ENUMERATOR
#define PRF_ISA_PLUS_ONE(name, arch, cpu_check) +1
constexpr int kIsaCount = 0 PRF_ISAS(PRF_ISA_PLUS_ONE);
#undef PRF_ISA_PLUS_ONE

// A (steps, rows, cols) array: element (t, n, c) is data[t*step_stride + n*row_stride + c].
template <class T>
struct Seq {
    T* data;
    idx steps, rows, cols;
    idx step_stride, row_stride;
    T* at(idx t, idx n) const { return data + t * step_stride + n * row_stride; }
};

// A (rows, cols) matrix: element (i, j) is data[i*ld + j]. data may be null where the
// interface says "zeros when null".
template <class T>
struct Mat {
    T* data;
    idx rows, cols, ld;
};

// Lets the caller end a long call early (Ctrl-C). The calling thread (OpenMP team thread 0)
// calls poll(ctx) about every 50 ms of work; when it returns nonzero the call stops as soon
// as every thread has left its loop (at a time step, or a GEMM block), leaving the outputs
// partly written. `stop` is set by the calling thread and read by all (GCC __atomic builtins).
struct Interrupt {
    int (*poll)(void* ctx);
    void* ctx;
    int stop;
};

template <class T>
struct ForwardArgs {
    Seq<const T> xw;  // (T, N, H)
    Mat<const T> wh;  // (H, H)
    Mat<const T> h0;  // (N, H), data may be null
    Seq<T> out;       // (T, N, H)
    Activation act;
    int threads;                     // upper bound; the kernel uses fewer when the work is small
    Interrupt* interrupt = nullptr;  // null: the call cannot be interrupted
    // (T,) the rows each step runs, or null: all. A batch sorted longest first runs rows
    // [0, active[t]) at step t (counts in [0, N] that never grow); the other rows of the
    // step's outputs are left as they are. Backward, a row's dh_last (dc_last) enters at its
    // own last step, and dh0 (dc0) of a row with no step is its dh_last (dc_last) or zeros.
    const idx* active = nullptr;
};

template <class T>
struct BackwardArgs {
    Seq<const T> dh;       // (T, N, H) gradient w.r.t. every output
    Seq<const T> h;        // (T, N, H) the forward outputs
    Mat<const T> wh;       // (H, H)
    Mat<const T> dh_last;  // (N, H), data may be null
    Seq<T> da;             // (T, N, H) gradient w.r.t. the pre-activations
    Mat<T> dh0;            // (N, H)
    Activation act;
    int threads;
    Interrupt* interrupt = nullptr;
    const idx* active = nullptr;  // as in ForwardArgs
};

// The gated cells, row-vector convention, gates as column blocks of H (see README):
//   LSTM, blocks [i | f | g | o]: a_t = xw_t + h_{t-1} . Wh, i, f, o = sigmoid, g = tanh,
//        c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)
//   GRU, blocks [r | z | n]: u_t = xw_t, v_t = h_{t-1} . Wh + bh, r = sig(u_r + v_r),
//        z = sig(u_z + v_z), n = tanh(u_n + r * v_n), h_t = (1 - z) * n + z * h_{t-1}
// Forward keeps what backward needs in `gates` (LSTM: the four activated gates; GRU: r, z, n
// and v_n) and, for LSTM, the cell states. Backward gives the gradient w.r.t. the step's
// pre-activations: LSTM's da_t (its input and recurrent sides are the same), GRU's du_t (input
// side) and dv_t (recurrent side; differs from du_t in the n block, scaled by r).
template <class T>
struct LstmForwardArgs {
    Seq<const T> xw;      // (T, N, 4H) = x . Wx + b
    Mat<const T> wh;      // (H, 4H)
    Mat<const T> h0, c0;  // (N, H), data may be null
    Seq<T> hs, cs;        // (T, N, H) hidden and cell states
    Seq<T> gates;         // (T, N, 4H) activated [i | f | g | o]; may be the same memory as xw
    int threads;
    Interrupt* interrupt = nullptr;
    const idx* active = nullptr;  // as in ForwardArgs
};

template <class T>
struct LstmBackwardArgs {
    Seq<const T> dhs;               // (T, N, H) gradient w.r.t. every output
    Seq<const T> gates;             // (T, N, 4H) from forward
    Seq<const T> cs;                // (T, N, H) from forward
    Mat<const T> c0;                // (N, H), data may be null
    Mat<const T> wh;                // (H, 4H)
    Mat<const T> dh_last, dc_last;  // (N, H), data may be null
    Seq<T> da;                      // (T, N, 4H) gradient w.r.t. the pre-activations a_t
    Mat<T> dh0, dc0;                // (N, H); dc0 also carries dc from step to step
    int threads;
    Interrupt* interrupt = nullptr;
    const idx* active = nullptr;  // as in ForwardArgs
};

template <class T>
struct GruForwardArgs {
    Seq<const T> xw;  // (T, N, 3H) = x . Wx + b
    Mat<const T> wh;  // (H, 3H)
    const T* bh;      // (3H,), may be null
    Mat<const T> h0;  // (N, H), data may be null
    Seq<T> hs;        // (T, N, H)
    Seq<T> gates;     // (T, N, 4H) [r | z | n | v_n]; never the same memory as xw
    int threads;
    Interrupt* interrupt = nullptr;
    const idx* active = nullptr;  // as in ForwardArgs
};

template <class T>
struct GruBackwardArgs {
    Seq<const T> dhs;      // (T, N, H)
    Seq<const T> hs;       // (T, N, H) from forward
    Mat<const T> h0;       // (N, H), data may be null
    Seq<const T> gates;    // (T, N, 4H) from forward
    Mat<const T> wh;       // (H, 3H)
    Mat<const T> dh_last;  // (N, H), data may be null
    Seq<T> du, dv;         // (T, N, 3H) gradients w.r.t. u_t and v_t
    Mat<T> dh0;            // (N, H); also carries dh_t * z_t from step to step
    int threads;
    Interrupt* interrupt = nullptr;
    const idx* active = nullptr;  // as in ForwardArgs
};

// C (M x P) = bias + sum_k A(i, k) B(k, j), or C += sum_k A(i, k) B(k, j) when accumulate.
// Rows of A, B and C are addressed as rows of (steps, rows, cols) views: row m is at
// data + (m / rows) * step_stride + (m % rows) * row_stride.
//   a_is_rows: A(i, k) = A_row(i)[k]   (C = A . B, A's rows are C's rows: X.Wx, dA.Wx^T)
//   otherwise: A(i, k) = A_row(k)[i]   (C = A^T . B over all rows k: X^T.dA, H^T.dA)
// B(k, j) = B_row(k)[j * b_col_stride]; b_col_stride != 1 only for a plain matrix (b_step_stride = 0).
template <class T>
struct GemmArgs {
    idx M, P, K;
    const T* a;
    idx a_rows, a_step_stride, a_row_stride;
    bool a_is_rows;
    const T* b;
    idx b_rows, b_step_stride, b_row_stride, b_col_stride;
    const T* bias;  // (P,), may be null
    T* c;
    idx c_rows, c_step_stride, c_row_stride;
    bool accumulate;
    int threads;
    Interrupt* interrupt = nullptr;
};

// out[j] = sum over s, n of a[s, n, j], summed in double and rounded once (the bias gradients:
// a float32 sum of many rows loses the small terms once it is large).
template <class T>
struct ColumnSumArgs {
    Seq<const T> a;  // (S, N, P)
    T* out;          // (P,)
    int threads;
    Interrupt* interrupt = nullptr;  // unused: one pass over a, at memory speed
};

// One time step of a stack of unidirectional layers (streaming inference): for l = 0..L-1
//   out[l] = act(in_l . wx[l] + h[l] . wh[l] + b[l]),   in_0 = x,  in_l = out[l-1],
// then h[l] = out[l] (the carried state, updated in place). The weights are read where they
// are (row-major, unpacked): a step is too short to repay packing them, and the caller may
// change them in place between steps.
template <class T>
struct StepLayer {
    Mat<const T> wx;        // (D_l, G·H): G gate blocks (1 vanilla, 4 LSTM, 3 GRU)
    Mat<const T> wh;        // (H, G·H)
    const T* b;             // (G·H,), may be null
    const T* bh = nullptr;  // a GRU's recurrent bias (3H,), may be null
};
enum class StepCell { vanilla, lstm, gru };
template <class T>
struct StepArgs {
    const StepLayer<T>* layers;
    idx num_layers;
    Mat<const T> x;  // (N, D)
    Seq<T> h;        // (L, N, H) the carried state
    Seq<T> out;      // (L, N, H) every layer's new state
    Activation act;  // the vanilla cell's
    int threads;
    Interrupt* interrupt = nullptr;  // unused: a step takes microseconds
    // The cell: an LSTM's weights' columns are the gate blocks [i | f | g | o] and `c` its
    // carried cell state (L, N, H); a GRU's are [r | z | n] (PyTorch's form, b and bh apart).
    StepCell cell = StepCell::vanilla;
    Seq<T> c{};
};

// The register-only FMA loop that measures the instruction set's floating-point peak (the
// bar for GEMM-bound work): each thread runs `iterations` rounds of kPeakChains independent
// vector FMAs (config.hpp) on registers. `flops` receives the floating-point operations
// done, 2 per lane per FMA, summed over the threads that ran; time the call to get a rate.
// The same arguments measure the micro-kernel's ceiling (microkernel_peak): `iterations`
// sweeps of one packed sliver of A over a cache-resident group of packed panels of B.
template <class T>
struct PeakArgs {
    idx iterations;
    double* flops;
    int threads;
    Interrupt* interrupt = nullptr;  // Ctrl-C stops the loop (every kPeakPollRounds rounds, peak.hpp)
};

// The read loop that measures what a thread's caches deliver (the bar for a step's sweep over
// weights that stay in L2 or come from L3 at every step): each thread reads a buffer of its own
// of `bytes` (rounded down to whole rounds of vectors, at least one) `iterations` times, summing
// it in independent chains of vector adds; `bytes_read` receives the bytes read, summed over
// the threads that ran, and `seconds` the time of the reading alone (not the buffers'
// allocation and first touch). The buffer's size places it in L1, L2 or L3, as a step's
// weights are.
template <class T>
struct ReadArgs {
    idx bytes, iterations;
    double *bytes_read, *seconds;
    int threads;
    Interrupt* interrupt = nullptr;  // unused: callers keep it short
};

// Every kernel entry point, X(name, Args): each is implemented for float and double by a
// template `name##_kernel` in csrc/kernels/ and exists once per instruction set and once
// dispatched (below). A new cell (LSTM, GRU) adds its argument structs above and its lines
// here; the per-ISA tables, the dispatch and the dispatched functions follow from this list.
#define PRF_KERNELS(X)                 \
    X(forward, ForwardArgs)            \
    X(backward, BackwardArgs)          \
    X(lstm_forward, LstmForwardArgs)   \
    X(lstm_backward, LstmBackwardArgs) \
    X(gru_forward, GruForwardArgs)     \
    X(gru_backward, GruBackwardArgs)   \
    X(gemm, GemmArgs)                  \
    X(column_sums, ColumnSumArgs)      \
    X(step, StepArgs)                  \
    X(fma_peak, PeakArgs)              \
    X(microkernel_peak, PeakArgs)      \
    X(read_peak, ReadArgs)

// One table of kernels per dtype and instruction set: plain function pointers, so that the
// tables compiled with AVX flags share no inline code with the portable one.
template <class T>
struct KernelTable {
#define PRF_KERNEL_POINTER(name, Args) bool (*name)(const Args<T>&);
    PRF_KERNELS(PRF_KERNEL_POINTER)
#undef PRF_KERNEL_POINTER
};

// Each instruction set's tables, compiled from csrc/kernels/ (by csrc/kernels_isa.cpp) in its
// own translation unit with its own compiler flags and namespace.
#define PRF_DECLARE_ISA_KERNELS(name, arch, cpu_check) \
    namespace isa_##name {                             \
        extern const KernelTable<float> kernels_f32;   \
        extern const KernelTable<double> kernels_f64;  \
    }
PRF_ISAS(PRF_DECLARE_ISA_KERNELS)
#undef PRF_DECLARE_ISA_KERNELS

// Run-time dispatch (csrc/dispatch.cpp).
bool isa_supported(Isa isa);  // compiled in and supported by this CPU and OS
Isa best_isa();               // the last supported one in PRF_ISAS
Isa current_isa();
void set_isa(Isa isa);  // precondition: isa_supported(isa)
const char* isa_name(Isa isa);

// Thread counts (csrc/dispatch.cpp). The kernels' `threads` is an upper bound, which dispatch
// lowers to the CPUs not used by concurrent calls and to the threads that can be created.
int num_threads();            // OpenMP's setting in the calling thread after set_num_threads; 1 in a forked child
void set_num_threads(int n);  // process-wide: every thread applies it at its next num_threads()
int default_num_threads();    // OpenMP's setting in a thread that never changed it
// n >= 1: at most n threads in the calling thread only; 0: lift that; returns the previous limit (0: none)
int limit_calling_thread(int n);
// Called once per process, in the calling thread, the first time a call gets fewer threads than
// it asked for because threads could not be created (`error`: pthread_create's errno).
using ThreadShortfallHandler = void (*)(int wanted, int started, int error);
void set_thread_shortfall_handler(ThreadShortfallHandler handler);
// The streaming step's team (csrc/spin_team.cpp): work(ctx, tid) for tid 0 .. threads - 1, tid 0
// on the calling thread, the others on helper threads of the calling thread that spin between
// calls for `spin_ns`, then sleep. False, nothing run, when threads < 2 or the helpers could
// not be made (or not on Linux): the caller then runs its team another way.
using SpinTeamWork = void (*)(const void* ctx, int tid);
bool run_spinning_team(int threads, SpinTeamWork work, const void* ctx, long long spin_ns);
// Wakes any helper of the calling thread's running spinning team that sleeps: called by a
// thread that has waited a while for its team (a safety net: run_spinning_team wakes them).
void wake_spinning_helpers();
// Called by the calling thread (tid 0) inside run_spinning_team's work, while it waits for a
// team of one helper that has not begun: true if the helper had not claimed the work, which
// it then never runs (run_spinning_team returns without waiting for it), and the caller does
// the team's whole work itself; false, nothing changed, if it had (or the team is not one
// helper's). A step takes it back at its first barrier, before anything but its own scratch
// was written (step.hpp), and runs alone.
bool take_back_spinning_team();
// Whether the calling thread's helper has not yet answered the last post taken back from it
// (the OS keeps it off its CPU): its steps then run alone rather than post again and wait.
bool spinning_team_away();
// The calling thread's posts so far that its helpers ran, and that it took back; and (testing
// only) a delay each helper spins between seeing a post and claiming it, as if the OS had taken
// it off its CPU, process-wide; returns the previous delay.
void spinning_team_counts(long long& runs, long long& take_backs);
long long set_spinning_helper_delay_ns(long long ns);
// Puts the calling thread's spinning helpers to sleep now: before an OpenMP region, whose
// threads would otherwise share the CPUs with them while they spin (run_team, team.hpp).
void quiet_spinning_helpers();
// What a cache line's round trip between two CPUs costs now, in ns: one thread writes a number
// to a line and waits for another thread, on the other CPU, to write it back to a second line
// (bench/pingpong.py prints it over time); the median over rounds of the `exchanges` (>= 1). Two
// new threads, pinned to the first two CPUs the calling thread may use (its own affinity is not
// touched); -1 where it cannot be measured: fewer than two such CPUs, a thread not created or
// not pinned, or no round done within a second (spin_team.cpp, kRoundTripDeadlineNs). The
// streaming step's team pays about one such round trip at its start, its barrier and its end
// (step.hpp, StepTeamTrial): the main job prints it beside the step's times.
double line_round_trip_ns(long exchanges);

// Subnormal numbers (csrc/dispatch.cpp; README "Subnormal numbers"). While flushing is on (the
// default on x86-64), every thread of a kernel reads subnormal operands as zero and writes zero
// for a subnormal result; off, every thread computes in IEEE arithmetic. set_flush_subnormals
// returns false, changing nothing, when this CPU cannot (not x86-64) and `on` is asked for.
bool flush_subnormals();
bool set_flush_subnormals(bool on);
// The calling thread's floating-point control word (x86's MXCSR), and the bits that make its
// SSE/AVX arithmetic flush: FTZ (bit 15, results) and DAZ (bit 6, operands). Static: each
// translation unit keeps its own copy, so the per-ISA code's (VEX-encoded) one is never merged
// into the portable code's.
#if defined(__x86_64__)
constexpr unsigned kFlushSubnormalBits = 0x8040u;
static inline unsigned read_fp_mode() { return __builtin_ia32_stmxcsr(); }
static inline void write_fp_mode(unsigned mode) { __builtin_ia32_ldmxcsr(mode); }
#endif

// The dispatched entry points: the current instruction set's kernel on the threads the call
// is granted. All return false only when scratch memory for the packed weights cannot be
// allocated (an interrupted call returns true: the caller sees the interrupt through its
// Interrupt).
#define PRF_DECLARE_DISPATCHED(name, Args) \
    template <class T>                     \
    bool name(const Args<T>& a);
PRF_KERNELS(PRF_DECLARE_DISPATCHED)
#undef PRF_DECLARE_DISPATCHED

}  // namespace prf
