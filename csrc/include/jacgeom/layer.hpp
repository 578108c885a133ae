// Single-layer kernels on precomputed derivatives d = phi'(z).
// Layout: W (m, n) row-major, D (B, m) row-major, outputs row-major. Index arithmetic is
// 64-bit throughout; LAPACK sees at most one (m, n) matrix at a time (32-bit is enough there).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "activations.hpp"
#include "gram.hpp"
#include "lapack.hpp"
#include "parallel.hpp"
#include "svd.hpp"

namespace jacgeom {

// d = phi'(z) elementwise (activations.hpp's derivative_runs: one loop per activation with
// the switch folded away). A thread pays for its start-up only over enough elements: many
// for the piecewise-linear activations (a fraction of a nanosecond each), fewer for the
// others.
template <class T>
void derivatives(const T* Z, T* D, index_t count, int code, double param) {
    const bool cheap = code == kIdentity || code == kRelu || code == kLeakyRelu;
    parallel_for(count, cheap ? index_t(1) << 18 : index_t(1) << 14,
                 [&](index_t, index_t begin, index_t end) {
                     derivative_runs<T>(code, param, Z + begin, 1, D + begin, 1, end - begin);
                 });
}

// a = phi(z) elementwise (value_of: double, rounded once to T), for the activations whose
// phi is cheaper here than in numpy: gelu, whose erfc runs four lanes at a time (vecmath.hpp)
// against scipy's scalar one. Any code is accepted, so that the rule can be tested on all.
template <class T>
void values(const T* Z, T* A, index_t count, int code, double param) {
    parallel_for(count, index_t(1) << 14, [&](index_t, index_t begin, index_t end) {
        if (code == kGelu) {
            vecmath::evaluate_run<vecmath::GeluValue>(Z + begin, 1, A + begin, 1, end - begin);
        } else {
            for (index_t i = begin; i < end; ++i) A[i] = value_of<T>(code, param, Z[i]);
        }
    });
}

// out[j] = a * w[j] (w == nullptr: zeros) for j < n, with non-temporal stores where the
// target has them: a store that bypasses the cache writes a line without first reading it
// (no read-for-ownership), so a write-only stream moves half the bytes of an ordinary one.
// Only worth it when the output is far larger than the caches (the caller decides).
template <class T>
inline void scaled_row_streaming(T* out, const T* w, T a, index_t n) {
    index_t j = 0;
#if defined(__SSE2__)
    constexpr index_t lanes = 16 / sizeof(T);
    for (; j < n && (reinterpret_cast<std::uintptr_t>(out + j) & 15) != 0; ++j)
        out[j] = w ? a * w[j] : T(0);
    if constexpr (std::is_same_v<T, double>) {
        const __m128d va = _mm_set1_pd(a);
        for (; j + lanes <= n; j += lanes)
            _mm_stream_pd(out + j, w ? _mm_mul_pd(va, _mm_loadu_pd(w + j)) : _mm_setzero_pd());
    } else {
        const __m128 va = _mm_set1_ps(a);
        for (; j + lanes <= n; j += lanes)
            _mm_stream_ps(out + j, w ? _mm_mul_ps(va, _mm_loadu_ps(w + j)) : _mm_setzero_ps());
    }
#endif
    for (; j < n; ++j) out[j] = w ? a * w[j] : T(0);
}

// Outputs above this many bytes are written with streaming stores (larger than any
// last-level cache they would otherwise evict; below it the result stays cached for the
// caller).
inline constexpr index_t streaming_store_bytes = index_t(64) << 20;

// Rows begin..end of J[b, i, :] = d(b * m + i) * W[i, :] on the calling thread.
template <class T, class RowDerivative>
void jacobian_rows_serial(const T* W, RowDerivative d, T* J, index_t begin, index_t end,
                          index_t m, index_t n, bool streaming) {
    for (index_t r = begin; r < end; ++r) {
        const T di = d(r);
        T* out = J + r * n;
        const T* w = W + (r % m) * n;
        // Every row is multiplied, dead ones included: IEEE's 0 * nan = nan and
        // 0 * inf = nan is the documented rule for non-finite weights (check_finite=False),
        // and the numpy reference's D[:, :, None] * W gives the same bits (-0.0 too).
        // The row of W is in cache, so a multiplication costs what a memset does.
        if (streaming) {
            scaled_row_streaming(out, w, di, n);
        } else {
            for (index_t j = 0; j < n; ++j) out[j] = di * w[j];
        }
    }
#if defined(__SSE2__)
    if (streaming) _mm_sfence();  // streaming stores are weakly ordered
#endif
}

// J[b, i, :] = d(b * m + i) * W[i, :], d a function of the row. Writes B*m*n elements once:
// bandwidth-bound.
template <class T, class RowDerivative>
void jacobian_rows(const T* W, RowDerivative d, T* J, index_t B, index_t m, index_t n) {
    const bool streaming = B * m * n * index_t(sizeof(T)) >= streaming_store_bytes;
    parallel_for(B * m, 64, [&](index_t, index_t begin, index_t end) {
        jacobian_rows_serial(W, d, J, begin, end, m, n, streaming);
    });
}

// J[b, i, :] = D[b, i] * W[i, :] for precomputed derivatives D (B, m).
template <class T>
void jacobian(const T* W, const T* D, T* J, index_t B, index_t m, index_t n) {
    jacobian_rows(W, [D](index_t r) { return D[r]; }, J, B, m, n);
}

// J[b, i, :] = phi'(Z[b, i]) * W[i, :]: the derivatives are evaluated a block of rows at a
// time as the rows are written (derivative_runs, four lanes at a time where it can), where
// they overlap the stores instead of taking a pass of their own.
template <class T>
void jacobian_from_preactivations(const T* W, const T* Z, int code, double param, T* J, index_t B,
                                  index_t m, index_t n) {
    constexpr index_t kBlock = 64;
    parallel_for(B * m, 64, [&](index_t, index_t begin, index_t end) {
        T d[kBlock];
        for (index_t r0 = begin; r0 < end; r0 += kBlock) {
            const index_t len = std::min(kBlock, end - r0);
            derivative_runs<T>(code, param, Z + r0, 1, d, 1, len);
            jacobian_rows_serial(W, [&](index_t r) { return d[r - r0]; }, J, r0, r0 + len, m, n,
                                 B * m * n * index_t(sizeof(T)) >= streaming_store_bytes);
        }
    });
}

// G_b = W^T D_b^2 W for every sample: one Gram matrix of the scaled, compacted rows per
// sample (gram.hpp), about k n^2 flops. Never forms the (B, m, n) Jacobian.
template <class T>
void pullback(const T* W, const T* D, T* G, index_t B, index_t m, index_t n) {
    parallel_for(B, 1, [&](index_t, index_t begin, index_t end) {
        gram::Workspace<T> ws;
        for (index_t b = begin; b < end; ++b)
            gram::scaled_gram(W, D + b * m, m, n, ws, G + b * n * n);
    });
}

// Singular values of D_b W for every sample, descending, (B, min(m, n)). Values of the
// compacted k x n matrix, then min(m, n) - min(k, n) exact zeros. gesdd with jobz = 'N'.
template <class T>
void singular_values(const T* W, const T* D, T* S, index_t B, index_t m, index_t n) {
    const index_t p = std::min(m, n);
    parallel_for(B, 1, [&](index_t, index_t begin, index_t end) {
        std::vector<T> A(static_cast<size_t>(std::max<index_t>(1, m * n)));
        SvdWorkspace<T> svd(n, m);
        for (index_t b = begin; b < end; ++b) {
            T* s = S + b * p;
            std::fill(s, s + p, T(0));
            const index_t k = gather_rows(W, D + b * m, m, n, A.data(), false);
            if (k == 0 || n == 0) continue;
            // Row-major (k, n) = column-major (n, k): same singular values.
            svd.run(A.data(), n, k, n, s, p);
        }
    });
}

// Singular values of each row-major (r, c) matrix of a stack, descending, (B, min(r, c)).
// Rows that are exactly zero (dead relu units) are dropped before the SVD: they change no
// singular value, and the k x c problem is cheaper; min(r, c) - min(k, c) zeros are appended.
// A row-major (k, c) matrix is the column-major (c, k) matrix of its transpose (same values).
template <class T>
void batched_singular_values(const T* A, T* S, index_t B, index_t r, index_t c) {
    const index_t p = std::min(r, c);
    parallel_for(B, 1, [&](index_t, index_t begin, index_t end) {
        std::vector<T> work(static_cast<size_t>(std::max<index_t>(1, r * c)));
        SvdWorkspace<T> svd(c, r);
        for (index_t b = begin; b < end; ++b) {
            T* s = S + b * p;
            std::fill(s, s + p, T(0));
            if (p == 0) continue;
            index_t k = 0;
            for (index_t i = 0; i < r; ++i) {
                const T* row = A + (b * r + i) * c;
                bool zero = true;
                for (index_t j = 0; j < c && zero; ++j) zero = row[j] == T(0);
                if (zero) continue;
                std::copy(row, row + c, work.begin() + k * c);
                ++k;
            }
            if (k > 0) svd.run(work.data(), c, k, c, s, p);
        }
    });
}

// log volume = 0.5 log det(J^T J) = sum log sigma_i(J), -inf when rank(J) < n with numpy's
// matrix_rank tolerance sigma_max * max(m, n) * eps. Requires m >= n.
//
// Method: k < n non-zero rows -> -inf exactly. Otherwise Householder QR of the compacted
// A (k x n) = Q R (2 k n^2 - 2/3 n^3 flops), |det R| = prod sigma_i(A). Full rank is
// certified when the lower bound sigma_min >= 1 / ||R^-1||_F (R^-1 by trtri, n^3 / 3 flops)
// exceeds 8 times the upper bound of the tolerance, ||R||_F * max(m, n) * eps (the factor
// covers the rounding of QR and of the inverse). Otherwise the singular values of R decide
// exactly as numpy would (gesdd, about 4x the cost), which only happens near rank deficiency.
template <class T>
void log_volume(const T* W, const T* D, T* out, index_t B, index_t m, index_t n) {
    const T eps = std::numeric_limits<T>::epsilon();
    const T tol_scale = static_cast<T>(std::max(m, n)) * eps;
    const T ninf = -std::numeric_limits<T>::infinity();
    parallel_for(B, 1, [&](index_t, index_t begin, index_t end) {
        const auto& L = lapack::get<T>();
        std::vector<T> A(static_cast<size_t>(std::max<index_t>(1, m * n)));
        std::vector<T> R(static_cast<size_t>(std::max<index_t>(1, n * n)));
        std::vector<T> Rinv(R.size()), tau(static_cast<size_t>(std::max<index_t>(1, n))), s(tau.size());
        SvdWorkspace<T> svd(n, n);
        int lwork = -1, info = 0;
        {
            const int mm = static_cast<int>(std::max<index_t>(1, m)), nn = static_cast<int>(std::max<index_t>(1, n));
            T query = 0;
            L.geqrf(&mm, &nn, A.data(), &mm, tau.data(), &query, &lwork, &info);
            lwork = static_cast<int>(std::max<T>(query, T(1))) + 1;
        }
        std::vector<T> work(static_cast<size_t>(lwork));
        for (index_t b = begin; b < end; ++b) {
            if (n == 0) {
                out[b] = T(0);
                continue;
            }
            const index_t k = gather_rows(W, D + b * m, m, n, A.data(), true);
            if (k < n) {
                out[b] = ninf;
                continue;
            }
            const int kk = static_cast<int>(k), nn = static_cast<int>(n);
            L.geqrf(&kk, &nn, A.data(), &kk, tau.data(), work.data(), &lwork, &info);
            T fro2 = 0, logdet = 0;
            for (index_t j = 0; j < n; ++j) {
                for (index_t i = 0; i < n; ++i) {
                    const T v = i <= j ? A[i + j * k] : T(0);
                    R[i + j * n] = v;
                    fro2 += v * v;
                }
                logdet += std::log(std::fabs(A[j + j * k]));
            }
            std::copy(R.begin(), R.end(), Rinv.begin());
            L.trtri("U", "N", &nn, Rinv.data(), &nn, &info);
            bool certified = false;
            if (info == 0) {
                T inv2 = 0;
                for (index_t j = 0; j < n; ++j)
                    for (index_t i = 0; i <= j; ++i) inv2 += Rinv[i + j * n] * Rinv[i + j * n];
                const T lower = T(1) / std::sqrt(inv2);
                certified = lower > T(8) * std::sqrt(fro2) * tol_scale;
            }
            if (certified) {
                out[b] = logdet;
                continue;
            }
            if (svd.run(R.data(), n, n, n, s.data()) != 0) {
                out[b] = std::numeric_limits<T>::quiet_NaN();
                continue;
            }
            const T tol = s[0] * tol_scale;
            T total = 0;
            bool full = true;
            for (index_t i = 0; i < n; ++i) {
                full = full && s[static_cast<size_t>(i)] > tol;
                total += std::log(s[static_cast<size_t>(i)]);
            }
            out[b] = full ? total : ninf;
        }
    });
}

}  // namespace jacgeom
