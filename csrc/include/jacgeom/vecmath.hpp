// gelu(z), gelu'(z) and tanh'(z) four lanes at a time through glibc's vector math library
// (libmvec).
//
// gelu(z) = z Phi(z) costs an erfc in double per element, gelu'(z) = Phi(z) + z pdf(z) an
// erfc and an exp, tanh'(z) = 4 e / (1 + e)^2 (e = exp(-2|z|)) an exp: libm's scalar erfc is
// most of a gelu layer's forward pass, its exp most of tanh'. libmvec (glibc 2.35 and later
// on x86-64) has four-lane AVX2 erfc and exp (_ZGVdN4v_erfc, _ZGVdN4v_exp; erfc within 1 ulp
// of 120-bit values at 6,000 points of its normal range, libm's within 2; the formulas below
// on either agree to 4 ulps), a quarter of the time per element. The
// library is found with dlopen when one of these is first needed, not linked: where it is
// missing (another libc, an older glibc, a CPU without AVX2) or JACGEOM_VECTOR_MATH=0 is
// set, every element takes libm's scalar formula, the one rule before.
//
// One element, one answer: a lane's value depends on its own z only (libmvec's functions are
// lane-wise, and lanes outside [-kVectorBound, kVectorBound] or NaN take the scalar
// formula), so a value never depends on its neighbours, the stride, the thread split or
// whether it came through derivative() one at a time or a whole run.
#pragma once

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "simd.hpp"
#include "types.hpp"

#if JACGEOM_X86_DISPATCH
#include <dlfcn.h>
#include <immintrin.h>
#endif

namespace jacgeom {

// The scalar formulas, each compiled once (noinline) for the baseline target: the AVX2
// functions below call the same code for their out-of-bound lanes as every other path does
// (inlined there, GCC would contract a * b + c into an FMA and round differently).

// z Phi(z) with libm's erfc (numpy's -inf * 0 = NaN at z = -inf).
[[gnu::noinline]] inline double gelu_value_scalar(double z) { return z * (0.5 * std::erfc(-z * 0.70710678118654752440)); }

// Phi(z) + z pdf(z) with libm's erfc and exp; z clipped at 40, where pdf(z) is 0 in double.
[[gnu::noinline]] inline double gelu_derivative_scalar(double z) {
    const double zc = z < -40.0 ? -40.0 : (z > 40.0 ? 40.0 : z);  // NaN stays NaN
    const double cdf = 0.5 * std::erfc(-z * 0.70710678118654752440);
    return cdf + zc * std::exp(-0.5 * zc * zc) * 0.39894228040143267794;
}

// 1 - tanh(z)^2 = 4 e / (1 + e)^2 with e = exp(-2|z|): no cancellation, no overflow.
[[gnu::noinline]] inline double tanh_derivative_scalar(double z) {
    const double e = std::exp(-2.0 * std::fabs(z));
    return 4.0 * e / ((1.0 + e) * (1.0 + e));
}

namespace vecmath {

// Lanes with |z| above this take the scalar formula: at z = -30, gelu's pdf(z) is 1e-196 and
// its erfc term 1e-197, tanh' 3.5e-26, normal numbers with a margin of a hundred orders of
// magnitude to the subnormal range (gelu below z = -37.5), where roundings could part.
inline constexpr double kVectorBound = 30.0;

struct Library {
    void* erfc4 = nullptr;  // __m256d (*)(__m256d), kept as void* outside AVX2 code
    void* exp4 = nullptr;
};

inline Library load_library() {
    Library lib;
#if JACGEOM_X86_DISPATCH
    const char* setting = std::getenv("JACGEOM_VECTOR_MATH");
    if (setting != nullptr && std::strcmp(setting, "0") == 0) return lib;
    if (!cpu_supports(Isa::avx2)) return lib;
    // Never closed: the functions are used for the life of the process.
    void* handle = dlopen("libmvec.so.1", RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) return lib;
    void* erfc4 = dlsym(handle, "_ZGVdN4v_erfc");
    void* exp4 = dlsym(handle, "_ZGVdN4v_exp");
    if (erfc4 != nullptr && exp4 != nullptr) {
        lib.erfc4 = erfc4;
        lib.exp4 = exp4;
    }
#endif
    return lib;
}

inline const Library& library() {
    static const Library lib = load_library();
    return lib;
}

// Whether the four-lane path is taken in this process.
inline bool available() { return library().erfc4 != nullptr; }

// The functions: scalar() is libm's formula; lanes() (AVX2 code) the same operations in the
// same order, four lanes: -z * c; z * (0.5 erfc); -0.5 * z * z as ((-0.5 z) z), then
// cdf + (z e) k; exp(-2 |z|), then (4 e) / ((1 + e)(1 + e)).
#if JACGEOM_X86_DISPATCH
// noinline: one compiled copy of each, called by every path (a run, a group, one element).
#define JACGEOM_LANES(body) \
    JACGEOM_TARGET_AVX2 __attribute__((noinline)) static __m256d lanes(__m256d z) body
#else
#define JACGEOM_LANES(body)
#endif

#if JACGEOM_X86_DISPATCH
using Lanes = __m256d (*)(__m256d);

JACGEOM_TARGET_AVX2 inline __m256d half_erfc_neg_scaled(__m256d z) {  // 0.5 erfc(-z c)
    const __m256d neg_z = _mm256_xor_pd(z, _mm256_set1_pd(-0.0));
    const Lanes erfc4 = reinterpret_cast<Lanes>(library().erfc4);
    return _mm256_mul_pd(_mm256_set1_pd(0.5),
                         erfc4(_mm256_mul_pd(neg_z, _mm256_set1_pd(0.70710678118654752440))));
}
#endif

struct GeluValue {
    static double scalar(double z) { return gelu_value_scalar(z); }
    JACGEOM_LANES({ return _mm256_mul_pd(z, half_erfc_neg_scaled(z)); })
};

struct GeluDerivative {
    static double scalar(double z) { return gelu_derivative_scalar(z); }
    JACGEOM_LANES({
        const Lanes exp4 = reinterpret_cast<Lanes>(library().exp4);
        const __m256d cdf = half_erfc_neg_scaled(z);
        const __m256d e = exp4(_mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(-0.5), z), z));
        const __m256d tail =
            _mm256_mul_pd(_mm256_mul_pd(z, e), _mm256_set1_pd(0.39894228040143267794));
        return _mm256_add_pd(cdf, tail);
    })
};

struct TanhDerivative {
    static double scalar(double z) { return tanh_derivative_scalar(z); }
    JACGEOM_LANES({
        const Lanes exp4 = reinterpret_cast<Lanes>(library().exp4);
        const __m256d a = _mm256_andnot_pd(_mm256_set1_pd(-0.0), z);
        const __m256d e = exp4(_mm256_mul_pd(_mm256_set1_pd(-2.0), a));
        const __m256d one_e = _mm256_add_pd(_mm256_set1_pd(1.0), e);
        return _mm256_div_pd(_mm256_mul_pd(_mm256_set1_pd(4.0), e), _mm256_mul_pd(one_e, one_e));
    })
};

#undef JACGEOM_LANES

#if JACGEOM_X86_DISPATCH

// Lanes the vector formula may answer: |z| <= kVectorBound (false for NaN).
JACGEOM_TARGET_AVX2 inline int in_bound(__m256d z) {
    const __m256d a = _mm256_andnot_pd(_mm256_set1_pd(-0.0), z);
    return _mm256_movemask_pd(_mm256_cmp_pd(a, _mm256_set1_pd(kVectorBound), _CMP_LE_OQ));
}

// Entries i..i+3 (fewer at the end) of a run: lanes through memory, the ones out of bound by
// the scalar formula.
template <class Op, class T>
JACGEOM_TARGET_AVX2 void group(const T* z, index_t zs, T* out, index_t os, index_t i,
                               index_t count) {
    alignas(32) double in[4];
    alignas(32) double res[4];
    const index_t lanes = count - i < 4 ? count - i : 4;
    for (index_t k = 0; k < 4; ++k) in[k] = k < lanes ? static_cast<double>(z[(i + k) * zs]) : 0.0;
    const __m256d v = _mm256_load_pd(in);
    const int vector_lanes = in_bound(v);
    _mm256_store_pd(res, Op::lanes(v));
    for (index_t k = 0; k < lanes; ++k) {
        const double r = (vector_lanes >> k) & 1 ? res[k] : Op::scalar(in[k]);
        out[(i + k) * os] = static_cast<T>(r);
    }
}

// One element: a group of one, as a run's last element may be.
template <class Op>
JACGEOM_TARGET_AVX2 double one(double z) {
    double out;
    group<Op>(&z, 1, &out, 1, 0, 1);
    return out;
}

// out[i * os] = Op(z[i * zs]) rounded once to T, i < count.
template <class Op, class T>
JACGEOM_TARGET_AVX2 void run(const T* z, index_t zs, T* out, index_t os, index_t count) {
    index_t i = 0;
    if (zs == 1 && os == 1) {
        // Contiguous: whole groups of four stay in registers when every lane is in bound.
        for (; i + 4 <= count; i += 4) {
            __m256d v;
            if constexpr (sizeof(T) == sizeof(double)) {
                v = _mm256_loadu_pd(reinterpret_cast<const double*>(z + i));
            } else {
                v = _mm256_cvtps_pd(_mm_loadu_ps(reinterpret_cast<const float*>(z + i)));
            }
            if (in_bound(v) != 0xF) {
                group<Op>(z, zs, out, os, i, count);
                continue;
            }
            const __m256d r = Op::lanes(v);
            if constexpr (sizeof(T) == sizeof(double)) {
                _mm256_storeu_pd(reinterpret_cast<double*>(out + i), r);
            } else {
                _mm_storeu_ps(reinterpret_cast<float*>(out + i), _mm256_cvtpd_ps(r));
            }
        }
    }
    for (; i < count; i += 4) group<Op>(z, zs, out, os, i, count);
}

#endif

// Op(z) in double: the four-lane formula where libmvec is present, else libm's.
template <class Op>
inline double evaluate(double z) {
#if JACGEOM_X86_DISPATCH
    if (available()) return one<Op>(z);
#endif
    return Op::scalar(z);
}

// out[i * os] = Op(z[i * zs]) rounded once to T, i < count: evaluate()'s values, a run at a
// time.
template <class Op, class T>
inline void evaluate_run(const T* z, index_t zs, T* out, index_t os, index_t count) {
#if JACGEOM_X86_DISPATCH
    if (available()) return run<Op>(z, zs, out, os, count);
#endif
    for (index_t i = 0; i < count; ++i)
        out[i * os] = static_cast<T>(Op::scalar(static_cast<double>(z[i * zs])));
}

}  // namespace vecmath

}  // namespace jacgeom
