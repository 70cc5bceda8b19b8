// Vectorised activations and their derivatives.
#pragma once
#include <immintrin.h>  // AVX-512 rounding and scaling (scaled_round)

#include "simd.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

// Vectorised activations, both through exp: sigmoid(x) = 1 / (1 + exp(-x)) and
// tanh(|x|) = expm1(2|x|) / (expm1(2|x|) + 2), one division each. exp and expm1 by Cody-Waite
// range reduction (y = n ln2 + r, |r| <= ln2/2) and the Taylor polynomial of exp(r) or
// expm1(r), whose truncation error is below half an ulp; expm1(y) = 2^n expm1(r) + (2^n - 1)
// keeps tanh's relative accuracy near 0 without a second formula. Measured against long
// double over [-100, 100] and powers of two down to 2^-140: sigmoid within 2.5 ulp where it is
// a normal number (below, within the least normal one), tanh within 2.2 ulp, float and double.
// This form replaced one that computed tanh twice (a rational function below ln(3)/2, the exp
// form above, then a select), with two divisions:
// the LSTM cell's update (3 sigmoids, 2 tanh per unit) ran 28 % faster, 18.4 -> 13.3 µs for
// N = 32, 256 units on Sapphire Rapids (AVX-512), 16.3 -> 10.8 with AVX2's 8-lane vectors.
// NaN propagates: every clamp is written so that a NaN compares false and is kept. sigmoid is 0
// below sigmoid_low (of -inf too, so that a saturated gate times inf is NaN, as in IEEE
// arithmetic and the NumPy reference): clamping there instead, as before, left a floor of
// 1.8e-35 (found by a review: gates never 0, inf where the reference has NaN).

template <class T>
struct ExpConst;
template <>
struct ExpConst<float> {
    static constexpr float sigmoid_high = 80.0f;       // sigmoid(80) rounds to 1
    static constexpr float sigmoid_low = 88.0f;        // exp(88) < FLT_MAX; sigmoid(-88) = 6.1e-39, subnormal
    static constexpr float tanh_clamp = 10.0f;         // tanh(10) rounds to 1 in float
    static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23
    static constexpr float ln2_hi = 0.693359375f;
    static constexpr float ln2_lo = -2.12194440054690583e-4f;
    static constexpr int taylor_degree = 7;
    static constexpr int mant_bits = 23;
};
template <>
struct ExpConst<double> {
    static constexpr double sigmoid_high = 40.0;  // sigmoid(40) rounds to 1
    static constexpr double sigmoid_low = 709.0;  // 2^1023 exp(r) < DBL_MAX; sigmoid(-709) = 1.2e-308, subnormal
    static constexpr double tanh_clamp = 20.0;    // tanh(20) rounds to 1 in double
    static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double ln2_hi = 6.93147180369123816490e-01;
    static constexpr double ln2_lo = 1.90821492927058770002e-10;
    static constexpr int taylor_degree = 13;
    static constexpr int mant_bits = 52;
};

// 1/k! for k = 0 .. taylor_degree, computed at compile time.
template <class T>
struct Factorials {
    T inv[ExpConst<T>::taylor_degree + 1];
    constexpr Factorials() : inv{} {
        inv[0] = 1;
        for (int k = 1; k <= ExpConst<T>::taylor_degree; ++k) inv[k] = inv[k - 1] / T(k);
    }
};

// n = round(x * k) and 2^n, for |x * k| small enough that 2^n is a normal number (the clamps
// below keep it there). AVX-512 rounds and scales with its own instructions (the masked forms
// with every lane selected: GCC 12's unmasked ones start from an "undefined" register that
// -Wmaybe-uninitialized reports at every use). Elsewhere one multiply-add does both: z = x * k +
// 1.5 * 2^m (m the mantissa's width) holds n in its low mantissa bits, so z - 1.5 * 2^m is n and
// z's bits shifted up by m are n's in the exponent field. This replaced a rounding by adding and
// subtracting 1.5 * 2^m and a conversion of n to integers, which AVX2 lacks for 64-bit lanes
// (GCC emulated it): the LSTM's cell update ran 25 % faster in double, 2 % in float (Zen 3,
// docs/DESIGN.md, "Activations"). The results were the same to the bit on 202,000 arguments
// (AVX2); x * k rounded once instead of twice could only move a tie of x * k to the other n,
// and r by ln 2, both still exact.
template <class T>
struct ScaledRound {
    Vec<T> n;     // round(x * k)
    Vec<T> pow2;  // 2^n
};
template <class T>
static inline ScaledRound<T> scaled_round(Vec<T> x, T k) {
#if defined(PRF_ISA_AVX512)
    constexpr int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const Vec<T> t = x * k;
    Vec<T> n, pow2;
    if constexpr (sizeof(T) == 4) {
        n = (Vec<T>)_mm512_mask_roundscale_ps((__m512)t, 0xffff, (__m512)t, mode);
        pow2 = (Vec<T>)_mm512_mask_scalef_ps(_mm512_set1_ps(1), 0xffff, _mm512_set1_ps(1), (__m512)n);
    } else {
        n = (Vec<T>)_mm512_mask_roundscale_pd((__m512d)t, 0xff, (__m512d)t, mode);
        pow2 = (Vec<T>)_mm512_mask_scalef_pd(_mm512_set1_pd(1), 0xff, _mm512_set1_pd(1), (__m512d)n);
    }
    return {n, pow2};
#else
    using C = ExpConst<T>;
    const Vec<T> z = x * k + C::round_magic;
    // (bits(1.5 * 2^m) + n) << m is n << m (the magic's bits shift out); + the bits of 1.0 adds
    // the exponent's bias
    const Bits<T> e = ((Bits<T>)z << C::mant_bits) + (Bits<T>)splat<T>(T(1));
    return {z - C::round_magic, (Vec<T>)e};
#endif
}

// The clamps: c > x ? c : x (Max) and c < x ? c : x, lane by lane, which are x wherever x is
// NaN (a NaN compares false), as the instruction set's max and min of (c, x) are (c the first
// operand): one instruction where the ternary is a compare and a blend (GCC does not turn one
// into the other; sigmoid's lower clamp shares its compare with the final select). AVX-512 in
// the masked forms with every lane selected, as scaled_round. Zen 3, AVX2, a C++ loop of the
// LSTM's forward cell update (N = 32, 128 units): float32 13.0 -> 12.0 µs, float64 39.5 ->
// 37.8, the same results.
template <class T, bool Max>
static inline Vec<T> clamp(T c, Vec<T> x) {
#if defined(PRF_ISA_AVX512)
    if constexpr (sizeof(T) == 4) {
        const __m512 a = _mm512_set1_ps(c), v = (__m512)x;
        return (Vec<T>)(Max ? _mm512_mask_max_ps(a, 0xffff, a, v) : _mm512_mask_min_ps(a, 0xffff, a, v));
    } else {
        const __m512d a = _mm512_set1_pd(c), v = (__m512d)x;
        return (Vec<T>)(Max ? _mm512_mask_max_pd(a, 0xff, a, v) : _mm512_mask_min_pd(a, 0xff, a, v));
    }
#elif defined(PRF_ISA_AVX2)
    if constexpr (sizeof(T) == 4) {
        const __m256 a = _mm256_set1_ps(c), v = (__m256)x;
        return (Vec<T>)(Max ? _mm256_max_ps(a, v) : _mm256_min_ps(a, v));
    } else {
        const __m256d a = _mm256_set1_pd(c), v = (__m256d)x;
        return (Vec<T>)(Max ? _mm256_max_pd(a, v) : _mm256_min_pd(a, v));
    }
#else
    return (Max ? c > x : c < x) ? splat<T>(c) : x;
#endif
}

template <class T>
static inline Vec<T> vsigmoid(Vec<T> x) {
    using C = ExpConst<T>;
    constexpr Factorials<T> F;
    const auto below = x < -C::sigmoid_low;
    x = clamp<T, false>(C::sigmoid_high, clamp<T, true>(-C::sigmoid_low, x));
    // exp(-x) = 2^n exp(-r) with r = x + n ln2
    const ScaledRound<T> q = scaled_round<T>(x, T(-1.44269504088896340736));
    const Vec<T> n = q.n;
    Vec<T> r = x + n * C::ln2_hi;
    r = r + n * C::ln2_lo;
    Vec<T> p = splat<T>(C::taylor_degree % 2 ? -F.inv[C::taylor_degree] : F.inv[C::taylor_degree]);
    for (int k = C::taylor_degree - 1; k >= 0; --k) p = p * r + (k % 2 ? -F.inv[k] : F.inv[k]);
    const Vec<T> s = T(1) / (p * q.pow2 + T(1));
    return below ? splat<T>(0) : s;
}

template <class T>
static inline Vec<T> vtanh(Vec<T> x) {
    using C = ExpConst<T>;
    constexpr Factorials<T> F;
    const Mask<T> sign = (Mask<T>)x & (Mask<T>)splat<T>(T(-0.0));
    Vec<T> a = (Vec<T>)((Mask<T>)x ^ sign);  // |x|
    a = clamp<T, false>(C::tanh_clamp, a);
    const Vec<T> y = a + a;  // expm1(y) = 2^n expm1(r) + 2^n - 1 with y = n ln2 + r
    const ScaledRound<T> q = scaled_round<T>(y, T(1.44269504088896340736));
    const Vec<T> n = q.n;
    Vec<T> r = y - n * C::ln2_hi;
    r = r - n * C::ln2_lo;
    Vec<T> p = splat<T>(F.inv[C::taylor_degree]);
    for (int k = C::taylor_degree - 1; k >= 2; --k) p = p * r + F.inv[k];
    const Vec<T> expm1_r = (r * r) * p + r;
    const Vec<T> pow2 = q.pow2;
    const Vec<T> expm1_y = expm1_r * pow2 + (pow2 - T(1));
    const Vec<T> t = expm1_y / (expm1_y + T(2));
    return (Vec<T>)((Mask<T>)t | sign);
}

struct ActIdentity {  // the gated cells' step products: their nonlinearities come after all gates
    template <class T>
    static Vec<T> apply(Vec<T> a) {
        return a;
    }
};

struct ActTanh {
    template <class T>
    static Vec<T> apply(Vec<T> a) {
        return vtanh<T>(a);
    }
    // derivative expressed through the output h = tanh(a)
    template <class T>
    static Vec<T> grad(Vec<T> h) {
        return T(1) - h * h;
    }
};
struct ActRelu {
    template <class T>
    static Vec<T> apply(Vec<T> a) {  // relu(NaN) = NaN
        return a < T(0) ? Vec<T>{} : a;
    }
    template <class T>
    static Vec<T> grad(Vec<T> h) {
        Vec<T> d = h > T(0) ? splat<T>(1) : Vec<T>{};
        return h != h ? h : d;  // NaN in, NaN out
    }
};

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
