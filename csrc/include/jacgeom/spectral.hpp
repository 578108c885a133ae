// Spectral summary of a stack of Jacobians J (B, m, n): what the Monte Carlo records per
// sample (rank, log sigma_max, log sigma_min, ||J||_F^2, log-volume), without a full SVD
// where exact zero rows already settle sigma_min.
//
// Per sample, with k the number of non-zero rows of J (dead units) and p = min(m, n):
// - k < p: sigma_min(J) = 0 exactly and rank(J) <= k < p. If the rank certificate of
//   rank.hpp (a shifted Cholesky factorisation of the k x k Gram matrix of the live rows, in
//   double) proves rank k under numpy's matrix_rank rule for J (tolerance
//   sigma_max max(m, n) eps), the rank is k and only sigma_max is needed: sigma_max^2 is the
//   largest eigenvalue of the Gram matrix, a well-conditioned quantity (absolute error
//   eps ||G|| = eps sigma_max^2), found by Householder tridiagonalisation and Laguerre's
//   iteration from above on det(lambda I - T), which converges monotonically for a
//   polynomial with real roots (cubically at a simple root, in one step at a root of full
//   multiplicity).
// - otherwise (k >= p, certificate failed, iteration not converged): the singular values of
//   the live rows (SvdWorkspace), counted as numpy counts them.
// For a relu layer of width 16 this replaces a 16 x 8 SVD (dqds dominates it) by a few
// hundred flops.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "parallel.hpp"
#include "rank.hpp"
#include "svd.hpp"

namespace jacgeom {

namespace detail {

// Householder reduction of the symmetric k x k column-major matrix S (both triangles
// stored; destroyed) to tridiagonal form: diagonal a (k), off-diagonal b (k - 1). w: k scratch.
inline void tridiagonalize(double* S, index_t k, double* a, double* b, double* w) {
    for (index_t j = 0; j + 2 < k; ++j) {
        double* x = S + (j + 1) + j * k;  // S[j+1:k, j]
        const index_t len = k - j - 1;
        double tau;
        const double beta = reflector(x, len, 1, tau);
        b[j] = beta;
        a[j] = S[j + j * k];
        if (tau == 0.0) continue;
        // v = x with x[0] = 1 (beta is kept in b[j]); trailing block A = S[j+1:, j+1:] <-
        // H A H with H = I - tau v v^T: p = tau A v, q = p - (tau / 2)(p . v) v,
        // A <- A - v q^T - q v^T. A is symmetric, so A v is accumulated column by column.
        double* A = S + (j + 1) + (j + 1) * k;
        double* v = x;
        v[0] = 1.0;
        for (index_t i = 0; i < len; ++i) w[i] = 0.0;
        for (index_t c = 0; c < len; ++c) {
            const double vc = v[c];
            const double* col = A + c * k;
            for (index_t i = 0; i < len; ++i) w[i] += col[i] * vc;
        }
        double pv = 0;
        for (index_t i = 0; i < len; ++i) {
            w[i] *= tau;
            pv += w[i] * v[i];
        }
        const double half = 0.5 * tau * pv;
        for (index_t i = 0; i < len; ++i) w[i] -= half * v[i];
        for (index_t c = 0; c < len; ++c) {
            const double vc = v[c], wc = w[c];
            double* col = A + c * k;
            for (index_t i = 0; i < len; ++i) col[i] -= v[i] * wc + w[i] * vc;
        }
    }
    if (k >= 2) {
        a[k - 2] = S[(k - 2) + (k - 2) * k];
        b[k - 2] = S[(k - 1) + (k - 2) * k];
    }
    if (k >= 1) a[k - 1] = S[(k - 1) + (k - 1) * k];
}

// x . y over n entries, accumulated in Acc with four partial sums (the adds do not wait on
// each other).
template <class Acc, class T>
inline Acc dot4(const T* x, const T* y, index_t n) {
    Acc acc[4] = {0, 0, 0, 0};
    index_t j = 0;
    for (; j + 4 <= n; j += 4)
        for (int t = 0; t < 4; ++t) acc[t] += Acc(x[j + t]) * Acc(y[j + t]);
    for (; j < n; ++j) acc[0] += Acc(x[j]) * Acc(y[j]);
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// Gram matrix of the k contiguous rows of A (k x n) in double, upper triangle, column-major:
// G[r + c k] = a_r . a_c. Used up to kSmallGram entries of A, where a syrk call costs more in
// packing and dispatch than in arithmetic (an 8 x 16 relu Jacobian); above, syrk is faster
// (docs/benchmarks.md, "Measurements behind design choices").
inline constexpr index_t kSmallGram = 1024;

template <class T>
void row_gram(const T* A, index_t k, index_t n, double* G) {
    for (index_t c = 0; c < k; ++c)
        for (index_t r = 0; r <= c; ++r) G[r + c * k] = dot4<double>(A + r * n, A + c * n, n);
}

// Largest eigenvalue of the symmetric tridiagonal (a, b) of order k, by Laguerre's method
// on p(l) = det(l I - T) from `start` > lambda_max. Returns NaN if it does not settle.
// The LDL^T pivots q_i of l I - T give (log p)' = sum q_i'/q_i and (log p)'' =
// sum (q_i''/q_i - (q_i'/q_i)^2), one division per row.
inline double largest_eigenvalue(const double* a, const double* b, index_t k, double start) {
    const double eps = std::numeric_limits<double>::epsilon();
    double l = start;
    const double kd = double(k);
    for (int it = 0; it < 60; ++it) {
        double q = l - a[0], dq = 1.0, ddq = 0.0;
        double g = 0, h = 0;  // g = (log p)', h = -(log p)''
        bool positive = q > 0.0;
        for (index_t i = 0;; ++i) {
            const double r = 1.0 / q;
            const double t = dq * r;
            g += t;
            h += t * t - ddq * r;
            if (i + 1 >= k) break;
            const double b2 = b[i] * b[i];
            const double nq = (l - a[i + 1]) - b2 * r;
            const double ndq = 1.0 + b2 * dq * r * r;
            const double nddq = b2 * (ddq * r * r - 2.0 * dq * dq * r * r * r);
            q = nq;
            dq = ndq;
            ddq = nddq;
            positive = positive && q > 0.0;
        }
        if (!positive) return it == 0 ? std::numeric_limits<double>::quiet_NaN() : l;
        const double disc = std::max(0.0, (kd - 1.0) * (kd * h - g * g));
        const double step = kd / (g + std::sqrt(disc));
        if (!(step >= 0.0) || !std::isfinite(step)) return std::numeric_limits<double>::quiet_NaN();
        const double next = l - step;
        if (step <= 4.0 * eps * l) return next;
        // Past the root (pivots turn non-positive) only through rounding at the end: the
        // next iteration then returns the current point.
        l = next;
    }
    return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace detail

template <class T>
struct SpectralArgs {
    // Either a dense stack J (B, m, n) row-major whose zero rows are the dead units, or
    // (packed) the live rows alone: rows (sum of counts, n) row-major, counts[b] <= m of them
    // for sample b in order, each multiplied by `scale` on the way in; J is then unused.
    const T* J;
    index_t B, m, n;
    std::int64_t* rank;
    T* log_smax;
    T* log_smin;
    T* frobenius2;
    T* log_volume;  // -inf when rank < n (m >= n); NaN when m < n
    // (B,) or nullptr: an upper bound of each rank known to the caller (for a chain of
    // plain layers, the fewest active units of any layer). Below the live row count, the
    // certificate cannot succeed and is skipped.
    const std::int64_t* rank_bound = nullptr;
    // false: the rank only (the other outputs are NaN): a certified rank needs no
    // eigenvalue, and the SVD is left to the samples that the certificate does not settle.
    bool spectra = true;
    bool packed = false;
    const T* rows = nullptr;
    const std::int64_t* counts = nullptr;
    T scale = T(1);
};

namespace detail {

// The per-sample work of spectral_summary, with one thread's workspaces for at most
// max_rows live rows: summarize() takes the k live rows of sample b in A (k, n) row-major
// (destroyed).
template <class T>
class SpectralSample {
    const SpectralArgs<T>& a_;  // outlives the object: the caller's arguments
    index_t p_;

   public:
    SpectralSample(const SpectralArgs<T>& a, index_t max_rows)
        : a_(a),
          p_(std::min(a.m, a.n)),
          A(static_cast<size_t>(std::max<index_t>(1, max_rows * a.n))),
          s_(static_cast<size_t>(std::max<index_t>(1, p_))),
          G_(static_cast<size_t>(std::max<index_t>(1, p_ * p_))),
          S_(G_.size()),
          tri_(static_cast<size_t>(3 * std::max<index_t>(1, p_))),
          Ad_(A.size()),
          svd_(a.n, max_rows) {}

    std::vector<T> A;  // the live rows, filled by the caller

    void summarize(index_t k, index_t b) {
        const SpectralArgs<T>& a = a_;
        const index_t m = a.m, n = a.n, p = p_;
        const T ninf = -std::numeric_limits<T>::infinity();
        const T nan = std::numeric_limits<T>::quiet_NaN();
        const T rtol = T(std::max(m, n)) * std::numeric_limits<T>::epsilon();
        const double eps_t = std::numeric_limits<T>::epsilon();
        a.frobenius2[b] = a.spectra ? dot4<T>(A.data(), A.data(), k * n) : nan;
        a.log_volume[b] = m >= n && a.spectra ? ninf : nan;
        if (p == 0 || k == 0) {
            a.rank[b] = 0;
            a.log_smax[b] = a.log_smin[b] = a.spectra ? ninf : nan;
            return;
        }
        if (k < p && k <= kSmallCholesky && !(a.rank_bound && a.rank_bound[b] < k)) {
            double* G = G_.data();
            double* S = S_.data();
            // Gram matrix of the live rows in double; S keeps both triangles.
            if (k * n <= kSmallGram) {
                row_gram(A.data(), k, n, G);
            } else {
                // Row-major (k, n) in double = column-major (n, k): syrk('T') = A A^T.
                for (index_t i = 0; i < k * n; ++i) Ad_[static_cast<size_t>(i)] = double(A[static_cast<size_t>(i)]);
                const int kk = static_cast<int>(k), nn = static_cast<int>(n);
                const double one = 1, zero = 0;
                lapack::get<double>().syrk("U", "T", &kk, &nn, &one, Ad_.data(), &nn, &zero, G, &kk);
            }
            for (index_t c = 0; c < k; ++c)
                for (index_t r = 0; r <= c; ++r) S[r + c * k] = S[c + r * k] = G[r + c * k];
            double trace = 0;
            for (index_t c = 0; c < k; ++c) trace += G[c + c * k];
            if (certify_full_rank(G, k, k, n, m, RankTolerance{}, eps_t)) {
                if (!a.spectra) {
                    a.rank[b] = k;
                    a.log_smax[b] = a.log_smin[b] = nan;
                    return;
                }
                double lmax;
                if (k == 1) {
                    lmax = trace;
                } else {
                    double* da = tri_.data();
                    double* db = da + k;
                    double* w = db + k;
                    // Start above lambda_max: the largest absolute row sum of G bounds it
                    // (and is usually far closer than the trace, which the other k - 1
                    // certified-positive eigenvalues put strictly above it); the margin
                    // covers the rounding of the reduction (a start not above the
                    // tridiagonal's largest eigenvalue returns NaN: SVD below).
                    double row_max = 0;
                    for (index_t r = 0; r < k; ++r) {
                        double sum = 0;
                        for (index_t c = 0; c < k; ++c) sum += std::fabs(S[r + c * k]);
                        row_max = std::max(row_max, sum);
                    }
                    const double margin = 8.0 * double(k) * std::numeric_limits<double>::epsilon() * trace;
                    tridiagonalize(S, k, da, db, w);
                    lmax = largest_eigenvalue(da, db, k, std::min(trace, row_max) + margin);
                }
                if (std::isfinite(lmax) && lmax > 0) {
                    a.rank[b] = k;
                    a.log_smax[b] = static_cast<T>(0.5 * std::log(lmax));
                    a.log_smin[b] = ninf;
                    return;
                }
            }
        }
        // Singular values of the live rows; min(k, n) .. p - 1 are exact zeros.
        std::fill(s_.begin(), s_.end(), T(0));
        svd_.run(A.data(), n, k, n, s_.data(), p);
        const T tol = s_[0] * rtol;
        std::int64_t r = 0;
        T logsum = 0;
        for (index_t i = 0; i < p; ++i) {
            r += s_[static_cast<size_t>(i)] > tol;
            logsum += std::log(s_[static_cast<size_t>(i)]);
        }
        a.rank[b] = r;
        if (!a.spectra) {
            a.log_smax[b] = a.log_smin[b] = nan;
            return;
        }
        a.log_smax[b] = std::log(s_[0]);
        a.log_smin[b] = std::log(s_[static_cast<size_t>(p - 1)]);
        if (m >= n) a.log_volume[b] = r == n ? logsum : ninf;
    }

   private:
    std::vector<T> s_;
    std::vector<double> G_, S_, tri_, Ad_;
    SvdWorkspace<T> svd_;
};

}  // namespace detail

template <class T>
void spectral_summary(const SpectralArgs<T>& a) {
    const index_t m = a.m, n = a.n;
    std::vector<std::int64_t> offset;
    index_t max_rows = m;
    if (a.packed) {  // where each sample's packed rows start; workspaces for the most rows
        offset.resize(static_cast<size_t>(a.B));
        std::int64_t o = 0;
        max_rows = 0;
        for (index_t b = 0; b < a.B; ++b) {
            offset[static_cast<size_t>(b)] = o;
            o += a.counts[b];
            max_rows = std::max<index_t>(max_rows, a.counts[b]);
        }
    }
    parallel_for(a.B, 64, [&](index_t, index_t begin, index_t end) {
        detail::SpectralSample<T> one(a, max_rows);
        T* A = one.A.data();
        for (index_t b = begin; b < end; ++b) {
            index_t k = 0;
            if (!a.packed) {
                const T* Jb = a.J + b * m * n;
                for (index_t i = 0; i < m; ++i) {
                    const T* row = Jb + i * n;
                    bool zero = true;
                    for (index_t j = 0; j < n && zero; ++j) zero = row[j] == T(0);
                    if (zero) continue;
                    std::copy(row, row + n, A + k * n);  // row-major (k, n) = col-major (n, k)
                    ++k;
                }
            } else {
                k = static_cast<index_t>(a.counts[b]);
                const T* src = a.rows + offset[static_cast<size_t>(b)] * n;
                for (index_t i = 0; i < k * n; ++i) A[i] = a.scale * src[i];
            }
            one.summarize(k, b);
        }
    });
}

}  // namespace jacgeom
