// Activation derivatives phi'(z), one switch shared by every C++ kernel.
// The codes match jacgeom.activations.CODES. Every branch is finite for every finite z:
// large arguments go through exp(-|z|), which underflows to 0, never through exp(|z|).
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>

#include "vecmath.hpp"

namespace jacgeom {

enum ActivationCode : int {
    kIdentity = 0,
    kRelu = 1,
    kLeakyRelu = 2,
    kSigmoid = 3,
    kTanh = 4,
    kGelu = 5,
    kGeluTanh = 6,
    kSoftplus = 7,
    kElu = 8,
    kSilu = 9,
};

inline bool activation_supported(int code) { return code >= kIdentity && code <= kSilu; }

// The parameter's range, as jacgeom.activation checks it: finite, and > 0 for the
// activations that use one (leaky_relu's and elu's alpha, softplus's beta); the others
// ignore it.
template <class T>
inline bool activation_parameter_valid(int code, T param) {
    if (code == kLeakyRelu || code == kElu || code == kSoftplus)
        return std::isfinite(param) && param > T(0);
    return true;
}

template <class T>
inline T stable_sigmoid(T z) {
    const T e = std::exp(-std::fabs(z));
    return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// z clipped to [lo, hi] with NaN kept NaN (std::fmin / fmax drop a NaN operand, so
// elu'(nan) was alpha and gelu_tanh'(nan) finite here while numpy and numba give NaN).
template <class T>
inline T clip(T z, T lo, T hi) {
    return z < lo ? lo : (z > hi ? hi : z);
}

// s(z) (1 - s(z)) = e / (1 + e)^2 with e = exp(-|z|).
template <class T>
inline T sigmoid_derivative(T z) {
    const T e = std::exp(-std::fabs(z));
    return e / ((T(1) + e) * (T(1) + e));
}

// phi'(z) in the arithmetic of T (the working precision of derivative() below).
template <class T>
inline T derivative_in(int code, T p, T z) {
    switch (code) {
        case kIdentity:
            return T(1);
        case kRelu:
            return z > T(0) ? T(1) : T(0);
        case kLeakyRelu:
            return z > T(0) ? T(1) : p;
        case kSigmoid:
            return sigmoid_derivative(z);
        case kTanh:
            return T(vecmath::evaluate<vecmath::TanhDerivative>(double(z)));
        case kGelu:
            return T(vecmath::evaluate<vecmath::GeluDerivative>(double(z)));
        case kGeluTanh: {
            const T zc = clip(z, T(-30), T(30));
            const T c = T(0.79788456080286535588);
            const T u = c * (zc + T(0.044715) * zc * zc * zc);
            const T du = c * (T(1) + T(3 * 0.044715) * zc * zc);
            return stable_sigmoid(T(2) * u) + zc * T(2) * sigmoid_derivative(T(2) * u) * du;
        }
        case kSoftplus:
            return stable_sigmoid(z * p);
        case kElu:
            return z > T(0) ? T(1) : p * std::exp(z);  // z <= 0 or NaN here
        case kSilu:
            // z clipped in the product where s' is 0 anyway: silu'(+-inf) = 1, 0, not nan
            return stable_sigmoid(z) + clip(z, T(-1000), T(1000)) * sigmoid_derivative(z);
        default:
            return T(NAN);
    }
}

// phi'(z) for z of type T: one rounding rule on every backend (jacgeom.activations, the
// Numba kernels and these): the parameter is a value of type T (the caller rounds it, as it
// rounds the weights), phi' is evaluated in double and rounded once to T. In float32 that is the correctly rounded value wherever double's own error is
// below half a float ulp, subnormals included (tanh'(52) = 2.7e-45 rounds to 2.8e-45, not
// to the 0 that float arithmetic's exp(-104) underflows to).
template <class T>
inline T derivative(int code, double p, T z) {
    return static_cast<T>(derivative_in<double>(code, p, static_cast<double>(z)));
}

// The four-lane function of an activation's derivative (vecmath.hpp), or void.
template <int Code>
struct VectorDerivative {
    using type = void;
};
template <>
struct VectorDerivative<kGelu> {
    using type = vecmath::GeluDerivative;
};
template <>
struct VectorDerivative<kTanh> {
    using type = vecmath::TanhDerivative;
};

// out[i * os] = derivative<T>(Code, p, z[i * zs]), i < count: one loop per activation with
// the switch folded away (relu's vectorises), a run of four-lane calls where there are some.
template <class T, int Code>
inline void derivative_run(const T* z, index_t zs, T* out, index_t os, index_t count, double p) {
    using Op = typename VectorDerivative<Code>::type;
    if constexpr (!std::is_void_v<Op>) {
        vecmath::evaluate_run<Op>(z, zs, out, os, count);
    } else {
        for (index_t i = 0; i < count; ++i) out[i * os] = derivative<T>(Code, p, z[i * zs]);
    }
}

// derivative_run for an activation chosen at run time (an unsupported code: NaN).
template <class T>
inline void derivative_runs(int code, double p, const T* z, index_t zs, T* out, index_t os,
                            index_t count) {
    switch (code) {
        case kIdentity: return derivative_run<T, kIdentity>(z, zs, out, os, count, p);
        case kRelu: return derivative_run<T, kRelu>(z, zs, out, os, count, p);
        case kLeakyRelu: return derivative_run<T, kLeakyRelu>(z, zs, out, os, count, p);
        case kSigmoid: return derivative_run<T, kSigmoid>(z, zs, out, os, count, p);
        case kTanh: return derivative_run<T, kTanh>(z, zs, out, os, count, p);
        case kGelu: return derivative_run<T, kGelu>(z, zs, out, os, count, p);
        case kGeluTanh: return derivative_run<T, kGeluTanh>(z, zs, out, os, count, p);
        case kSoftplus: return derivative_run<T, kSoftplus>(z, zs, out, os, count, p);
        case kElu: return derivative_run<T, kElu>(z, zs, out, os, count, p);
        case kSilu: return derivative_run<T, kSilu>(z, zs, out, os, count, p);
        default:
            for (index_t i = 0; i < count; ++i) out[i * os] = std::numeric_limits<T>::quiet_NaN();
    }
}

// phi(z), evaluated in double and rounded once to T (jacgeom.activations' formulas; a NaN
// z gives NaN wherever numpy's does: relu's 0 for NaN is numpy's np.where too).
template <class T>
inline T value_of(int code, double p, T zt) {
    const double z = zt;
    double v;
    switch (code) {
        case kIdentity: v = z; break;
        case kRelu: v = z > 0 ? z : 0.0; break;
        case kLeakyRelu: v = z > 0 ? z : z * p; break;
        case kSigmoid: v = stable_sigmoid(z); break;
        case kTanh: v = std::tanh(z); break;
        case kGelu: v = vecmath::evaluate<vecmath::GeluValue>(z); break;
        case kGeluTanh: {
            const double zc = std::fmin(std::fmax(z, -30.0), 30.0);
            const double u = 0.79788456080286535588 * (zc + 0.044715 * zc * zc * zc);
            v = z * stable_sigmoid(2 * u);
            break;
        }
        case kSoftplus: {
            const double bz = z * p;
            v = (std::fmax(bz, 0.0) + std::log1p(std::exp(-std::fabs(bz)))) / p;
            break;
        }
        case kElu: v = z > 0 ? z : p * std::expm1(z); break;  // z <= 0 or NaN here
        case kSilu: v = z * stable_sigmoid(z); break;
        default: v = NAN;
    }
    return static_cast<T>(v);
}

}  // namespace jacgeom
