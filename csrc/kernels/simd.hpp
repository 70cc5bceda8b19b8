// Vector types of the instruction set being compiled, and their load / store / broadcast.
// GCC vector extensions: one source for every width (kVecBytes in config.hpp).
#pragma once
#include <immintrin.h>  // masked loads and stores of a vector's first lanes (PartialVector)

#include <cstdint>

#include "config.hpp"

namespace prf {
namespace PRF_ISA_NAMESPACE {

template <class T>
struct VecOf;
// `unaligned` is the same vector, readable at any element-aligned address and allowed to
// alias T (as the intrinsics' __m256 is): loads through it compile to plain vmovups.
template <>
struct VecOf<float> {
    typedef float type __attribute__((vector_size(kVecBytes)));
    typedef float unaligned __attribute__((vector_size(kVecBytes), aligned(4), may_alias));
    typedef std::int32_t mask __attribute__((vector_size(kVecBytes)));
    typedef std::uint32_t bits __attribute__((vector_size(kVecBytes)));
};
template <>
struct VecOf<double> {
    typedef double type __attribute__((vector_size(kVecBytes)));
    typedef double unaligned __attribute__((vector_size(kVecBytes), aligned(8), may_alias));
    typedef std::int64_t mask __attribute__((vector_size(kVecBytes)));
    typedef std::uint64_t bits __attribute__((vector_size(kVecBytes)));
};
template <class T>
using Vec = typename VecOf<T>::type;
template <class T>
using Mask = typename VecOf<T>::mask;
template <class T>
using Bits = typename VecOf<T>::bits;  // unsigned lanes: shifts that drop set bits are defined
template <class T>
constexpr int kLanes = kVecBytes / int(sizeof(T));
template <class T>
constexpr int kNR = kNV * kLanes<T>;  // columns per packed panel

static inline idx imin(idx a, idx b) { return a < b ? a : b; }
static inline idx imax(idx a, idx b) { return a > b ? a : b; }
// The i-th of `count` in order, or counted from the last (a recurrence's backwards steps).
static inline idx nth(idx i, idx count, bool backwards) { return backwards ? count - 1 - i : i; }
// a * b for a, b >= 0, saturated at the largest idx: the work estimates that pick thread counts
// multiply sizes of different arrays, whose product can exceed 2^63 for zero-stride views.
static inline idx mul_sat(idx a, idx b) {
    idx r;
    return __builtin_mul_overflow(a, b, &r) ? idx(__PTRDIFF_MAX__) : r;
}

template <class T>
static inline Vec<T> load(const T* p) {
    return *reinterpret_cast<const typename VecOf<T>::unaligned*>(p);
}
template <class T>
static inline void store(T* p, Vec<T> v) {
    *reinterpret_cast<typename VecOf<T>::unaligned*>(p) = v;
}
template <class T>
static inline Vec<T> splat(T x) {
    // x - 0 is x for every x (also -0 and NaN), so this folds to a plain broadcast; 0 + x
    // would not fold (it turns -0 into +0) and costs an add per broadcast.
    return x - Vec<T>{};
}

// Elementwise work over a run of columns [j0, j1) of some rows, in vectors of kLanes<T>, with
// one formula for whole vectors and the tail: f(io) reads with io.get(p) the vector of p at
// the current columns (lanes past j1 read as 0) and writes with io.put(p, v) (lanes past j1
// are not written). `p` points at column 0 of its row.
template <class T>
struct WholeVector {
    idx j;
    Vec<T> get(const T* p) const { return load(p + j); }
    void put(T* p, Vec<T> v) const { store(p + j, v); }
};
// The first n lanes (0 < n < kLanes<T>) at column j: masked loads and stores with AVX-512 and
// AVX2, which neither touch the memory of the lanes left out (nor fault on it) nor cost more
// than a whole vector. The element loops they replaced compiled to `rep movs` copies (a start-up
// of tens of cycles each, two per row of a tile): a GEMM whose output is one partial panel,
// dx = dA·Wxᵀ at D = 8, ran 5.7 µs where its FMAs take ~1.5.
template <class T>
struct PartialVector {
    idx j;
    int n;
#if defined(PRF_ISA_AVX512)
    unsigned mask() const { return (1u << n) - 1; }
    Vec<T> get(const T* p) const {
        if constexpr (sizeof(T) == 4)
            return (Vec<T>)_mm512_maskz_loadu_ps(__mmask16(mask()), p + j);
        else
            return (Vec<T>)_mm512_maskz_loadu_pd(__mmask8(mask()), p + j);
    }
    void put(T* p, Vec<T> v) const {
        if constexpr (sizeof(T) == 4)
            _mm512_mask_storeu_ps(p + j, __mmask16(mask()), (__m512)v);
        else
            _mm512_mask_storeu_pd(p + j, __mmask8(mask()), (__m512d)v);
    }
#elif defined(PRF_ISA_AVX2)
    __m256i mask() const {  // lane l selected (all ones) when l < n
        if constexpr (sizeof(T) == 4)
            return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        else
            return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    }
    Vec<T> get(const T* p) const {
        if constexpr (sizeof(T) == 4)
            return (Vec<T>)_mm256_maskload_ps(p + j, mask());
        else
            return (Vec<T>)_mm256_maskload_pd(p + j, mask());
    }
    void put(T* p, Vec<T> v) const {
        if constexpr (sizeof(T) == 4)
            _mm256_maskstore_ps(p + j, mask(), (__m256)v);
        else
            _mm256_maskstore_pd(p + j, mask(), (__m256d)v);
    }
#else
    Vec<T> get(const T* p) const {
        T b[kLanes<T>] __attribute__((aligned(64)));
        for (int l = 0; l < kLanes<T>; ++l) b[l] = l < n ? p[j + l] : T(0);
        return load(b);
    }
    void put(T* p, Vec<T> v) const {
        T b[kLanes<T>] __attribute__((aligned(64)));
        store(b, v);
        for (int l = 0; l < n; ++l) p[j + l] = b[l];
    }
#endif
};
template <class T, class F>
static inline void for_each_vector(idx j0, idx j1, const F& f) {
    constexpr int W = kLanes<T>;
    idx j = j0;
    for (; j + W <= j1; j += W) f(WholeVector<T>{j});
    if (j < j1) f(PartialVector<T>{j, int(j1 - j)});
}

}  // namespace PRF_ISA_NAMESPACE
}  // namespace prf
