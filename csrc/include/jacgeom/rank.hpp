// Masked-row ranks: rank(diag(s) W) restricted to the rows with s_i != 0, for many row
// scalings s (a 0/1 mask gives rank(W[mask])), with numpy.linalg.matrix_rank's semantics.
//
// Method per mask (k kept rows, p = min(k, n)):
//   1. Certificate of full rank p from a Gram matrix held in double precision:
//      k <= n: the k x k row Gram W_S W_S^T, gathered from W W^T precomputed once per W
//              (no flops per mask beyond the gather);
//      k >  n: the n x n column Gram W_S^T W_S by one syrk (k n^2 flops).
//      Full rank is certified when sigma_min(W_S) provably exceeds need = twice the upper
//      bound of the tolerance (tol, or rtol ||W_S||_F, with numpy's default
//      rtol = max(k, n) eps) plus 16 max(k, n) eps ||W_S||_F, the accuracy of an SVD in the
//      input precision: the Cholesky factorisation (p^3 / 3) of G - c I runs to completion,
//      with the shift c = need^2 plus the rounding of forming and factoring G,
//      gamma ||W_S||_F^2 (Rump's verification of positive definiteness).
//   2. Otherwise (rank deficiency, tolerance close to a singular value, Cholesky failure):
//      the singular values of W_S in the input precision (gesdd, values only), counted as
//      numpy counts them. This is exact by definition, only slower.
// A Gram matrix never decides a rank below full; it only certifies full rank with a margin.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "layer.hpp"

namespace jacgeom {

struct RankTolerance {
    int mode = 0;  // 0: numpy default, 1: absolute tol, 2: relative rtol
    double value = 0.0;
};

template <class T>
struct MaskedRankArgs {
    const T* W;
    index_t W_stride;        // 0: one W for every mask; m * n: one W per mask
    const double* row_gram;  // (m, m) = W W^T in double, or nullptr (only with W_stride 0)
    const T* scale;          // (U, m): row i of mask u is kept, scaled, when scale != 0
    index_t U, m, n;
    RankTolerance tol;
    std::int64_t* rank;  // (U,)
    T* sv;               // (U, min(m, n)) or nullptr: then singular values decide every rank
};

template <class T>
std::int64_t count_above(const T* s, index_t p, const RankTolerance& tol, index_t k, index_t n) {
    if (p == 0) return 0;
    double t;
    if (tol.mode == 1) {
        t = tol.value;
    } else {
        const double rtol = tol.mode == 2 ? tol.value
                                          : double(std::max(k, n)) * double(std::numeric_limits<T>::epsilon());
        t = double(s[0]) * rtol;
    }
    std::int64_t r = 0;
    for (index_t i = 0; i < p; ++i) r += double(s[i]) > t;
    return r;
}

// Below this order the Cholesky factorisation of the certificate is written out: LAPACK's
// potrf spends more in its calls and blocking logic than in arithmetic on small matrices.
inline constexpr index_t kSmallCholesky = 64;

// true when the Cholesky factorisation of the p x p column-major matrix G (upper triangle
// read, overwritten) runs to completion, i.e. every pivot is positive.
inline bool cholesky_succeeds(double* G, index_t p) {
    if (p > kSmallCholesky) {
        const int pp = static_cast<int>(p);
        int info = 0;
        lapack::get<double>().potrf("U", &pp, G, &pp, &info);
        return info == 0;
    }
    for (index_t j = 0; j < p; ++j) {
        double* cj = G + j * p;  // column j: U[0..j, j]
        double d = cj[j];
        for (index_t i = 0; i < j; ++i) d -= cj[i] * cj[i];
        if (!(d > 0.0)) return false;
        const double ujj = std::sqrt(d);
        cj[j] = ujj;
        for (index_t c = j + 1; c < p; ++c) {
            double* cc = G + c * p;
            double v = cc[j];
            for (index_t i = 0; i < j; ++i) v -= cj[i] * cc[i];
            cc[j] = v / ujj;
        }
    }
    return true;
}

// Certificate that a k x n matrix A of full rank p = min(k, n) keeps rank p under
// matrix_rank's rule for a matrix of `rows` >= k rows (tolerance tol, rtol ||A||, or
// max(rows, n) eps ||A||), from its p x p Gram matrix G in double (upper triangle, column-
// major; destroyed). eps_t: the machine epsilon of A's precision.
//
// sigma_min(A) must exceed twice the tolerance's upper bound plus the accuracy of an SVD in
// the input precision: lambda_min(G) > need^2. ||A||_F^2 is the trace of G (to a relative
// gamma_k, far inside the factor 2 spared below). Shifted Cholesky: if the floating-point
// Cholesky of G - c I runs to completion, G - c I + E is positive semi-definite with
// ||E|| <= gamma_{p+1} tr(G) + eps (max g_ii + c) (Demmel; Rump, BIT 2006), and the computed
// G is within gamma_k ||A||_F^2 of A^T A. gamma below covers both with a factor 2 to spare,
// so success proves lambda_min(A^T A) > c (1 - eps) - gamma ||A||_F^2 = need^2: full rank p.
// One p^3 / 3 factorisation, no inverse. Tiny or huge norms, where underflow would add
// terms, are not certified (the caller goes to the singular values).
inline bool certify_full_rank(double* G, index_t p, index_t k, index_t n, index_t rows,
                              const RankTolerance& tol, double eps_t) {
    const double eps_d = std::numeric_limits<double>::epsilon();
    double fro2 = 0;
    for (index_t c = 0; c < p; ++c) fro2 += G[c + c * p];
    const double fro = std::sqrt(fro2);
    const double kn = double(std::max(std::max(k, rows), n));
    const double t_upper = tol.mode == 1 ? tol.value : (tol.mode == 2 ? tol.value : kn * eps_t) * fro;
    const double need = 2.0 * t_upper + 16.0 * kn * eps_t * fro;
    const double gamma = 2.0 * double(p + std::max(k, n) + 2) * eps_d;
    const double shift = (need * need + gamma * fro2) / (1.0 - 2.0 * eps_d);
    if (!(fro2 > 1e-150 && fro2 < 1e150 && std::isfinite(shift))) return false;
    for (index_t c = 0; c < p; ++c) G[c + c * p] -= shift;
    return cholesky_succeeds(G, p);
}

// Returns the number of masks whose rank needed the SVD.
template <class T>
std::int64_t masked_rank(const MaskedRankArgs<T>& a) {
    const index_t m = a.m, n = a.n, pmax = std::min(m, n);
    const double eps_t = std::numeric_limits<T>::epsilon();
    std::atomic<std::int64_t> fallbacks{0};
    parallel_for(a.U, 1, [&](index_t, index_t begin, index_t end) {
        const auto& Ld = lapack::get<double>();
        std::vector<index_t> idx(static_cast<size_t>(std::max<index_t>(1, m)));
        std::vector<T> At(static_cast<size_t>(std::max<index_t>(1, m * n)));
        std::vector<double> Ad(static_cast<size_t>(std::max<index_t>(1, m * n)));
        std::vector<double> G(static_cast<size_t>(std::max<index_t>(1, pmax * pmax)));
        std::vector<T> s(static_cast<size_t>(std::max<index_t>(1, pmax)));
        SvdWorkspace<T> svd(n, m);
        std::int64_t local_fallbacks = 0;
        for (index_t u = begin; u < end; ++u) {
            const T* sc = a.scale + u * m;
            const T* W = a.W + u * a.W_stride;
            index_t k = 0;
            for (index_t i = 0; i < m; ++i)
                if (sc[i] != T(0)) idx[static_cast<size_t>(k++)] = i;
            const index_t p = std::min(k, n);
            T* sv = a.sv ? a.sv + u * pmax : nullptr;
            if (sv) std::fill(sv, sv + pmax, T(0));
            if (p == 0) {
                a.rank[u] = 0;
                continue;
            }
            bool certified = false;
            if (!sv) {
                const int pp = static_cast<int>(p);
                const int nn = static_cast<int>(n), kk = static_cast<int>(k);
                if (k <= n && a.row_gram && !a.W_stride) {
                    for (index_t c = 0; c < p; ++c) {
                        const index_t ic = idx[static_cast<size_t>(c)];
                        const double sc_c = double(sc[ic]);
                        const double* rg = a.row_gram + ic * m;
                        for (index_t r = 0; r <= c; ++r) {
                            const index_t ir = idx[static_cast<size_t>(r)];
                            G[static_cast<size_t>(r + c * p)] = sc_c * double(sc[ir]) * rg[ir];
                        }
                    }
                } else {
                    // Row-major (k, n) in double = column-major (n, k).
                    for (index_t r = 0; r < k; ++r) {
                        const index_t i = idx[static_cast<size_t>(r)];
                        const double si = double(sc[i]);
                        const T* w = W + i * n;
                        double* o = Ad.data() + r * n;
                        for (index_t j = 0; j < n; ++j) o[j] = si * double(w[j]);
                    }
                    const double one = 1, zero = 0;
                    if (k <= n)  // k x k = (n x k)^T (n x k)
                        Ld.syrk("U", "T", &kk, &nn, &one, Ad.data(), &nn, &zero, G.data(), &pp);
                    else  // n x n = (n x k)(n x k)^T
                        Ld.syrk("U", "N", &nn, &kk, &one, Ad.data(), &nn, &zero, G.data(), &pp);
                }
                certified = certify_full_rank(G.data(), p, k, n, k, a.tol, eps_t);
            }
            if (certified) {
                a.rank[u] = p;
                continue;
            }
            if (!sv) ++local_fallbacks;
            // Row-major (k, n) in T = column-major (n, k): same singular values.
            for (index_t r = 0; r < k; ++r) {
                const index_t i = idx[static_cast<size_t>(r)];
                const T si = sc[i];
                const T* w = W + i * n;
                T* o = At.data() + r * n;
                for (index_t j = 0; j < n; ++j) o[j] = si * w[j];
            }
            T* out = sv ? sv : s.data();
            svd.run(At.data(), n, k, n, out, sv ? pmax : p);
            a.rank[u] = count_above(out, p, a.tol, k, n);
        }
        fallbacks += local_fallbacks;
    });
    return fallbacks.load();
}

}  // namespace jacgeom
