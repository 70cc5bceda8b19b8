// Vectorised activations and their derivatives.
#pragma once
#include "simd.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

// Vectorised activations. tanh follows Cody & Waite: a rational function for |x| < ln(3)/2,
// 1 - 2/(exp(2|x|)+1) above; exp by Cody-Waite range reduction and a Taylor polynomial
// whose truncation error is below half an ulp. Accurate to a few ulp in both precisions
// (tests compare against numpy.tanh). NaN propagates: every clamp and select is written so
// that a NaN compares false and is kept.

template <class T>
struct TanhConst;
template <>
struct TanhConst<float> {
    static constexpr float clamp = 10.0f;              // tanh(10) rounds to 1 in float
    static constexpr float exp_max = 80.0f;            // exp(80) < FLT_MAX: sigmoid's bound
    static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23
    static constexpr float ln2_hi = 0.693359375f;
    static constexpr float ln2_lo = -2.12194440054690583e-4f;
    static constexpr int taylor_degree = 7;
    static constexpr int mant_bits = 23, exp_bias = 127;
};
template <>
struct TanhConst<double> {
    static constexpr double clamp = 20.0;                      // tanh(20) rounds to 1 in double
    static constexpr double exp_max = 700.0;                   // exp(700) < DBL_MAX: sigmoid's bound
    static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double ln2_hi = 6.93147180369123816490e-01;
    static constexpr double ln2_lo = 1.90821492927058770002e-10;
    static constexpr int taylor_degree = 13;
    static constexpr int mant_bits = 52, exp_bias = 1023;
};

// exp(y) for 0 <= y <= exp_max (or NaN); the range reduction is exact there.
template <class T>
static inline Vec<T> exp_bounded(Vec<T> y) {
    using C = TanhConst<T>;
    const T log2e = T(1.44269504088896340736);
    Vec<T> t = y * log2e + C::round_magic;
    Vec<T> n = t - C::round_magic;  // round(y / ln2), exact
    Vec<T> r = y - n * C::ln2_hi;
    r = r - n * C::ln2_lo;  // |r| <= ln2/2
    // Taylor series of exp(r), Horner form, coefficients 1/k!.
    T coef[C::taylor_degree + 1];
    coef[0] = 1;
    for (int k = 1; k <= C::taylor_degree; ++k) coef[k] = coef[k - 1] / T(k);
    Vec<T> p = splat<T>(coef[C::taylor_degree]);
    for (int k = C::taylor_degree - 1; k >= 0; --k) p = p * r + coef[k];
    Mask<T> e = __builtin_convertvector(n, Mask<T>);
    e = (e + C::exp_bias) << C::mant_bits;
    return p * (Vec<T>)e;  // same-size vector cast reinterprets the bits: 2^n
}

template <class T>
static inline Vec<T> small_tanh_ratio(Vec<T> g);  // R(g) with tanh(f) = f + f*R(f^2)
template <>
inline Vec<float> small_tanh_ratio<float>(Vec<float> g) {
    const float p0 = -0.8237728127f, p1 = -0.3831010665e-2f, q0 = 2.471319654f;
    return g * (g * p1 + p0) / (g + q0);
}
template <>
inline Vec<double> small_tanh_ratio<double>(Vec<double> g) {
    const double p0 = -0.16134119023996228053e+4, p1 = -0.99225929672236083313e+2, p2 = -0.96437492777225469787e+0;
    const double q0 = 0.48402357071988688686e+4, q1 = 0.22337720718962312926e+4, q2 = 0.11274474380534949335e+3;
    return g * ((g * p2 + p1) * g + p0) / (((g + q2) * g + q1) * g + q0);
}

template <class T>
static inline Vec<T> vtanh(Vec<T> x) {
    const T zero = 0, one = 1, two = 2;
    Vec<T> f = x < zero ? -x : x;  // |x|, NaN kept
    f = f > TanhConst<T>::clamp ? splat<T>(TanhConst<T>::clamp) : f;
    Vec<T> large = one - two / (exp_bounded<T>(two * f) + one);
    Vec<T> small = f + f * small_tanh_ratio<T>(f * f);
    Vec<T> r = f < T(0.54930614433405484570) ? small : large;  // ln(3)/2
    return x < zero ? -r : r;
}

// The logistic sigmoid 1 / (1 + exp(-x)), written through s = 1 / (1 + exp(|x|)) = sigmoid(-|x|),
// which keeps its relative accuracy in the tail (sigmoid(-30) = 9.4e-14, not 0); past
// exp_max it is a denormal or 0 in the dtype anyway. NaN propagates.
template <class T>
static inline Vec<T> vsigmoid(Vec<T> x) {
    const T zero = 0, one = 1;
    Vec<T> f = x < zero ? -x : x;
    f = f > TanhConst<T>::exp_max ? splat<T>(TanhConst<T>::exp_max) : f;
    Vec<T> s = one / (exp_bounded<T>(f) + one);
    return x < zero ? s : one - s;
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
