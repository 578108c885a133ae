// Singular values (no vectors) of one small or large dense matrix at a time.
//
// LAPACK's gesdd reduces to bidiagonal form through BLAS-2 calls (dgebd2 below its block
// size of 128): a 16 x 16 problem makes about a hundred BLAS calls, each costing more than
// its arithmetic. For small matrices (small_svd below) the reduction is written out: Householder
// bidiagonalisation in place (the same reflectors as dgebd2, 4 m n^2 - 4/3 n^3 flops, no calls),
// then LAPACK's bdsqr without vectors, which runs dqds (dlasq1) on the bidiagonal and returns
// its singular values to high relative accuracy. Both stages are backward stable like gesdd's.
// Above them gesdd is faster (QR first for wide shapes, blocked BLAS-3 reduction).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "lapack.hpp"

namespace jacgeom {

using index_t = std::int64_t;

// The hand-written reduction is used for matrices of at most kSmallSvd rows and columns and
// kSmallSvdEntries entries. Measured on the development machine (one thread, values only):
// 8 x 16 3.6 vs 6.7 us (gesdd), 16 x 32 13 vs 20, 32 x 32 36 vs 45, 32 x 64 67 vs 69; but
// 40 x 64 97 vs 86, 64 x 64 199 vs 170, and for wide shapes (16 x 128 35 vs 31, 64 x 128 414
// vs 281) gesdd's QR first and its blocked reduction win.
inline constexpr index_t kSmallSvd = 64;
inline constexpr index_t kSmallSvdEntries = 2048;

inline bool small_svd(index_t rows, index_t cols) {
    return std::max(rows, cols) <= kSmallSvd && rows * cols <= kSmallSvdEntries;
}

namespace detail {

// Householder vector of x (len entries, stride apart), as LAPACK's larfg: on return
// x[0] is unchanged, x[1..] hold v's tail (v_0 = 1), tau is set and beta returned, with
// (I - tau v v^T) x = beta e_0. No rescaling: callers pass entries of magnitude <= 1.
template <class T>
inline T reflector(T* x, index_t len, index_t stride, T& tau) {
    const T alpha = x[0];
    T tail2 = 0;
    for (index_t i = 1; i < len; ++i) tail2 += x[i * stride] * x[i * stride];
    if (tail2 == T(0)) {
        tau = 0;
        return alpha;
    }
    const T beta = -std::copysign(std::sqrt(alpha * alpha + tail2), alpha);
    tau = (beta - alpha) / beta;
    const T scale = T(1) / (alpha - beta);
    for (index_t i = 1; i < len; ++i) x[i * stride] *= scale;
    return beta;
}

// Upper bidiagonal form of the column-major (m, n) matrix A (m >= n, leading dimension
// lda; destroyed): d (n) and e (n - 1). w is scratch of m entries.
template <class T>
void bidiagonalize(T* A, index_t m, index_t n, index_t lda, T* d, T* e, T* w) {
    for (index_t j = 0; j < n; ++j) {
        T* col = A + j + j * lda;  // A[j:m, j]
        T tau;
        d[j] = reflector(col, m - j, 1, tau);
        if (tau != T(0)) {
            // A[j:m, c] -= tau v (v^T A[j:m, c]) for the columns right of j.
            for (index_t c = j + 1; c < n; ++c) {
                T* a = A + j + c * lda;
                T s = a[0];
                for (index_t i = 1; i < m - j; ++i) s += col[i] * a[i];
                s *= tau;
                a[0] -= s;
                for (index_t i = 1; i < m - j; ++i) a[i] -= s * col[i];
            }
        }
        if (j + 1 >= n) break;
        T* row = A + j + (j + 1) * lda;  // A[j, j+1:n], stride lda
        e[j] = reflector(row, n - j - 1, lda, tau);
        if (tau == T(0)) continue;
        // A[j+1:m, j+1:n] -= tau (A v) v^T, column by column (contiguous inner loops).
        const index_t r0 = j + 1, rows = m - r0;
        T* first = A + r0 + (j + 1) * lda;
        for (index_t i = 0; i < rows; ++i) w[i] = first[i];
        for (index_t c = j + 2; c < n; ++c) {
            const T v = row[(c - j - 1) * lda];
            const T* a = A + r0 + c * lda;
            for (index_t i = 0; i < rows; ++i) w[i] += v * a[i];
        }
        for (index_t i = 0; i < rows; ++i) w[i] *= tau;
        for (index_t i = 0; i < rows; ++i) first[i] -= w[i];
        for (index_t c = j + 2; c < n; ++c) {
            const T v = row[(c - j - 1) * lda];
            T* a = A + r0 + c * lda;
            for (index_t i = 0; i < rows; ++i) a[i] -= v * w[i];
        }
    }
}

}  // namespace detail

// Workspace for the singular values of column-major (rows, cols) matrices, values only;
// one per thread, sized for the largest problem it will see.
template <class T>
struct SvdWorkspace {
    std::vector<T> work;
    std::vector<int> iwork;

    // For every matrix of at most rows x cols: the small path's buffer for those of them that
    // take it, gesdd's workspace unless none can.
    SvdWorkspace(index_t rows, index_t cols) {
        const auto& L = lapack::get<T>();
        const int r = static_cast<int>(std::max<index_t>(1, rows));
        const int c = static_cast<int>(std::max<index_t>(1, cols));
        const index_t p = std::min<index_t>({r, c, kSmallSvd});
        const index_t q = std::min<index_t>(std::max<index_t>(r, c), kSmallSvd);
        bd_.resize(static_cast<size_t>(p * q + 8 * p + q + 1));
        if (small_svd(r, c)) return;
        int lwork = -1, info = 0, one = 1;
        T query = 0, dummy = 0;
        iwork.resize(static_cast<size_t>(8 * std::min(r, c)));
        L.gesdd("N", &r, &c, &dummy, &r, &dummy, &dummy, &one, &dummy, &one, &query, &lwork,
                iwork.data(), &info);
        work.resize(static_cast<size_t>(std::max<T>(query, T(1))) + 1);
    }

    // Values of the column-major (rows, cols) matrix A (destroyed), descending, into s
    // (min(rows, cols) entries, the rest of the `filled` ones untouched: callers that dropped
    // zero rows keep exact zeros there). Returns LAPACK's info, or -1 when A holds a NaN or an
    // infinity; then all max(min(rows, cols), filled) entries of s are NaN: no value is known.
    int run(T* A, index_t rows, index_t cols, index_t lda, T* s, index_t filled = 0) {
        const index_t p = std::min(rows, cols);
        if (p == 0) return 0;
        const int info = small_svd(rows, cols) ? run_small(A, rows, cols, lda, s)
                                               : run_gesdd(A, rows, cols, lda, s);
        if (info != 0) std::fill(s, s + std::max(p, filled), std::numeric_limits<T>::quiet_NaN());
        return info;
    }

    // numpy.linalg.matrix_rank of the column-major (rows, cols) matrix A (destroyed): the
    // singular values above tol, or above rtol * sigma_max when tol is NaN (compared as
    // numpy compares, count_above). 0 when A
    // holds a NaN or an infinity (NaN thresholds: nothing is above them).
    //
    // A is reduced to bidiagonal form B (the first stage of its SVD); full rank p =
    // min(rows, cols) is certified there in O(p): sigma_min >= 1 / ||B^-1||_F (the entries
    // of B^-1 are products of the ratios e_i / d_i: ||B^-1||_F^2 = sum_j c_j / d_j^2 with
    // c_0 = 1, c_j = 1 + (e_(j-1) / d_(j-1))^2 c_(j-1)), sigma_max <= sqrt(||B||_1 ||B||_inf).
    // A lower bound above 8 times both the threshold's upper bound and the reduction's
    // rounding (max(rows, cols) eps sigma_max) settles the rank; otherwise dqds finishes the
    // singular values of B and they are counted.
    std::int64_t rank(T* A, index_t rows, index_t cols, index_t lda, double tol, double rtol, bool rtol_double) {
        const index_t p = std::min(rows, cols), q = std::max(rows, cols);
        if (p == 0) return 0;
        int exponent = 0;
        T* d = nullptr;
        T* e = nullptr;
        const int info = bidiagonal(A, rows, cols, lda, d, e, exponent);
        if (info < 0) return 0;
        if (info == 1) return 0;  // A = 0
        // Certificate, on the scaled bidiagonal (largest entry of A in [0.5, 1)).
        T n1 = 0, ninf = 0;
        for (index_t i = 0; i < p; ++i) {
            const T ei = i + 1 < p ? std::fabs(e[i]) : T(0), ep = i > 0 ? std::fabs(e[i - 1]) : T(0);
            ninf = std::max(ninf, std::fabs(d[i]) + ei);
            n1 = std::max(n1, std::fabs(d[i]) + ep);
        }
        const T upper = std::sqrt(n1 * ninf);
        T inv2 = 0, c = 1;
        for (index_t j = 0; j < p; ++j) {
            if (j > 0) {
                const T r = e[j - 1] / d[j - 1];
                c = T(1) + r * r * c;
            }
            inv2 += c / (d[j] * d[j]);
        }
        const T scale = std::ldexp(T(1), -exponent);  // the thresholds in B's scale
        const T threshold = std::isnan(tol) ? T(rtol) * upper : T(tol) * scale;
        const T rounding = T(q) * std::numeric_limits<T>::epsilon() * upper;
        if (std::isfinite(inv2) && inv2 > T(0) &&
            T(1) / std::sqrt(inv2) > T(8) * std::max(threshold, rounding))
            return p;
        T* s = d;
        if (finish(d, e, p, exponent, s) != 0) return 0;
        return count_above(s, p, tol, rtol, rtol_double);
    }

    // As numpy counts: s > tol in double; when tol is NaN, s > s[0] * rtol in double for an
    // rtol the caller gave (numpy takes asarray(rtol)), in T for its default rtol.
    static std::int64_t count_above(const T* s, index_t n, double tol, double rtol, bool rtol_double) {
        std::int64_t r = 0;
        if (n == 0) return 0;
        if (std::isnan(tol) && rtol_double) {
            const double t = double(s[0]) * rtol;
            for (index_t i = 0; i < n; ++i) r += double(s[i]) > t;
        } else if (std::isnan(tol)) {
            const T t = s[0] * T(rtol);
            for (index_t i = 0; i < n; ++i) r += s[i] > t;
        } else {
            for (index_t i = 0; i < n; ++i) r += double(s[i]) > tol;
        }
        return r;
    }

   private:
    std::vector<T> bd_;  // tall copy / R, d, e, tauq, taup, bdsqr's work
    std::vector<T> bd_work_;

    // Upper bidiagonal form (d, e: p and p - 1 entries, into bd_) of A scaled by
    // 2^-exponent so that its largest entry lies in [0.5, 1). Returns -1 for a NaN or an
    // infinity, 1 for A = 0, else 0. Small matrices by the written-out reduction, larger by
    // gebrd (after a QR factorisation when at least twice as tall as wide).
    int bidiagonal(T* A, index_t rows, index_t cols, index_t lda, T*& d, T*& e, int& exponent) {
        const index_t p = std::min(rows, cols), q = std::max(rows, cols);
        const size_t need = static_cast<size_t>(p * q + 8 * p + q + 1);
        if (bd_.size() < need) bd_.resize(need);
        T* M = A;
        index_t ldm = lda;
        T* t = bd_.data();
        if (rows < cols) {  // the tall (q, p) transpose
            for (index_t j = 0; j < cols; ++j)
                for (index_t i = 0; i < rows; ++i) t[j + i * cols] = A[i + j * lda];
            M = t;
            ldm = cols;
        }
        T amax = 0;
        bool finite = true;
        for (index_t j = 0; j < p; ++j)
            for (index_t i = 0; i < q; ++i) {
                const T a = std::fabs(M[i + j * ldm]);
                finite = finite && a <= std::numeric_limits<T>::max();
                amax = std::max(amax, a);
            }
        if (!finite) return -1;
        if (amax == T(0)) return 1;
        std::frexp(amax, &exponent);
        const T f = std::ldexp(T(1), -exponent);
        const bool exact = std::isnormal(f);
        for (index_t j = 0; j < p; ++j) {
            T* col = M + j * ldm;
            if (exact)
                for (index_t i = 0; i < q; ++i) col[i] *= f;
            else
                for (index_t i = 0; i < q; ++i) col[i] = std::ldexp(col[i], -exponent);
        }
        d = bd_.data() + p * q;
        e = d + p;
        T* w = e + p;  // q scratch, then 4 p for bdsqr
        if (small_svd(q, p)) {
            detail::bidiagonalize(M, q, p, ldm, d, e, w);
            return 0;
        }
        const auto& L = lapack::get<T>();
        int info = 0;
        index_t m = q;
        if (q >= 2 * p) {  // R of M = Q R: the same singular values, a p x p reduction
            const int qq = static_cast<int>(q), pp = static_cast<int>(p), ld = static_cast<int>(ldm);
            query(q, p);
            int lw = static_cast<int>(bd_work_.size());
            L.geqrf(&qq, &pp, M, &ld, w, bd_work_.data(), &lw, &info);
            for (index_t j = 0; j < p; ++j)
                for (index_t i = j + 1; i < p; ++i) M[i + j * ldm] = T(0);
            m = p;
        }
        query(m, p);
        const int mm = static_cast<int>(m), pp = static_cast<int>(p), ld = static_cast<int>(ldm);
        int lw = static_cast<int>(bd_work_.size()) - static_cast<int>(2 * p);
        T* tauq = bd_work_.data() + lw;
        L.gebrd(&mm, &pp, M, &ld, d, e, tauq, tauq + p, bd_work_.data(), &lw, &info);
        return 0;
    }

    // bd_work_ large enough for geqrf and gebrd of (m, p), plus 2 p for gebrd's taus.
    void query(index_t m, index_t p) {
        const auto& L = lapack::get<T>();
        const int mm = static_cast<int>(m), pp = static_cast<int>(p);
        int lw = -1, info = 0;
        T q1 = 0, q2 = 0, dummy = 0;
        L.geqrf(&mm, &pp, &dummy, &mm, &dummy, &q1, &lw, &info);
        L.gebrd(&mm, &pp, &dummy, &mm, &dummy, &dummy, &dummy, &dummy, &q2, &lw, &info);
        const size_t need = static_cast<size_t>(std::max({q1, q2, T(1)})) + static_cast<size_t>(2 * p) + 1;
        if (bd_work_.size() < need) bd_work_.resize(need);
    }

    // Singular values of the scaled upper bidiagonal (d, e) by dqds, unscaled into s (may be d).
    int finish(T* d, T* e, index_t p, int exponent, T* s) {
        const auto& L = lapack::get<T>();
        const int n = static_cast<int>(p), zero = 0, one = 1;
        int info = 0;
        T dummy = 0;
        L.bdsqr("U", &n, &zero, &zero, &zero, d, e, &dummy, &one, &dummy, &one, &dummy, &one,
                e + p, &info);
        if (info != 0) return info;
        for (index_t i = 0; i < p; ++i) s[i] = std::ldexp(d[i], exponent);
        return 0;
    }

    int run_gesdd(T* A, index_t rows, index_t cols, index_t lda, T* s) {
        const index_t p = std::min(rows, cols);
        // gesdd returns NaN for a NaN but may return finite values for an infinity.
        for (index_t j = 0; j < cols; ++j)
            for (index_t i = 0; i < rows; ++i)
                if (!(std::fabs(A[i + j * lda]) <= std::numeric_limits<T>::max())) return -1;
        const auto& L = lapack::get<T>();
        const int r = static_cast<int>(rows), c = static_cast<int>(cols);
        const int ld = static_cast<int>(std::max<index_t>(1, lda));
        int lwork = static_cast<int>(work.size()), info = 0, one = 1;
        T dummy = 0;
        if (work.empty()) {  // sized for small problems only: query now
            lwork = -1;
            T query = 0;
            iwork.resize(static_cast<size_t>(8 * p));
            L.gesdd("N", &r, &c, &dummy, &r, &dummy, &dummy, &one, &dummy, &one, &query,
                    &lwork, iwork.data(), &info);
            work.resize(static_cast<size_t>(std::max<T>(query, T(1))) + 1);
            lwork = static_cast<int>(work.size());
        }
        L.gesdd("N", &r, &c, A, &ld, s, &dummy, &one, &dummy, &one, work.data(), &lwork,
                iwork.data(), &info);
        return info;
    }

    // The written-out reduction (bidiagonal() takes it at these sizes), then dqds.
    int run_small(T* A, index_t rows, index_t cols, index_t lda, T* s) {
        const index_t p = std::min(rows, cols);
        int exponent = 0;
        T* d = nullptr;
        T* e = nullptr;
        const int info = bidiagonal(A, rows, cols, lda, d, e, exponent);
        if (info < 0) return -1;
        if (info == 1) {  // A = 0
            std::fill(s, s + p, T(0));
            return 0;
        }
        return finish(d, e, p, exponent, s);
    }
};

}  // namespace jacgeom
