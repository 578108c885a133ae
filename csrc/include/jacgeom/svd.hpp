// Singular values (no vectors) of one dense matrix at a time.
//
// Up to a few MiB (reduced_here below) the reduction to bidiagonal form is written out:
// Householder bidiagonalisation in place with the reflectors of LAPACK's dgebd2 (4 m n^2 -
// 4/3 n^3 flops), arranged so that each column costs one reading and one rewriting pass
// over the trailing matrix, vectorised at the machine's width (detail::bidiagonalize); then
// LAPACK's bdsqr without vectors, which runs dqds (dlasq1) on the bidiagonal and returns
// its singular values to high relative accuracy. Both stages are backward stable like
// gesdd's. LAPACK's own reduction (gebrd, inside gesdd) makes a BLAS-2 call per column and
// reflector: about a hundred calls for a 16 x 16 problem, and at 256 x 256 its gemv calls
// run at well under half the rate the passes reach in cache. Larger matrices go to gesdd.
// The measurements are in docs/benchmarks.md, "Measurements behind design choices".
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "lapack.hpp"
#include "types.hpp"
#include "simd.hpp"

namespace jacgeom {

// The written-out reduction (bidiagonalize below) serves every matrix of at most
// kReducedBytes bytes (4 MiB: a 724 x 724 float64 matrix, up to which it is still ahead of
// gesdd on one thread); larger ones go to LAPACK (gesdd; geqrf and gebrd for the rank).
inline constexpr index_t kReducedBytes = index_t(4) << 20;
// A matrix at least twice as tall as wide and larger than this (about a core's L2 cache
// here) is first factored M = Q R by geqrf (blocked, half the flops of reducing M); the
// reduction then works on R. Below it the passes over the matrix stay in cache and the
// direct reduction is as fast or faster.
inline constexpr index_t kQrFirstBytes = index_t(1) << 20;

template <class T>
inline bool reduced_here(index_t rows, index_t cols) {
    return rows * cols * index_t(sizeof(T)) <= kReducedBytes;
}

namespace detail {

// Householder vector of x (len entries, stride apart), as LAPACK's larfg: on return
// x[0] is unchanged, x[1..] hold v's tail (v_0 = 1), tau is set and beta returned, with
// (I - tau v v^T) x = beta e_0. Callers pass entries of magnitude <= 1 (no overflow). A
// vector whose squares reach the subnormal range (norm below sqrt(min / eps)) is first
// scaled by an exact power of two, as larfg does: its sum of squares would otherwise
// lose digits, and a reflector with an inexact tau is not orthogonal (it would corrupt
// the large columns it is applied to). Tails too small to register against alpha are
// left alone (tau = 0).
template <class T>
inline T reflector(T* x, index_t len, index_t stride, T& tau) {
    constexpr T small = std::numeric_limits<T>::min() / std::numeric_limits<T>::epsilon();
    const T alpha = x[0];
    T tail2 = 0, tmax = 0;
    for (index_t i = 1; i < len; ++i) {
        const T xi = x[i * stride];
        tail2 += xi * xi;
        tmax = std::max(tmax, std::fabs(xi));
    }
    const T norm2 = alpha * alpha + tail2;
    if (tmax == T(0) || (tail2 == T(0) && norm2 >= small)) {
        tau = 0;
        return alpha;
    }
    if (norm2 >= small) {
        const T beta = -std::copysign(std::sqrt(norm2), alpha);
        tau = (beta - alpha) / beta;
        const T scale = T(1) / (alpha - beta);
        for (index_t i = 1; i < len; ++i) x[i * stride] *= scale;
        return beta;
    }
    int ex = 0;
    std::frexp(std::max(std::fabs(alpha), tmax), &ex);  // largest entry in [0.5, 1) after
    const T as = std::ldexp(alpha, -ex);
    T ts = 0;
    for (index_t i = 1; i < len; ++i) {
        const T xi = std::ldexp(x[i * stride], -ex);
        ts += xi * xi;
    }
    const T beta = -std::copysign(std::sqrt(as * as + ts), as);
    tau = (beta - as) / beta;
    const T scale = T(1) / (as - beta);
    for (index_t i = 1; i < len; ++i) x[i * stride] = std::ldexp(x[i * stride], -ex) * scale;
    return std::ldexp(beta, ex);
}

// The column loops of the reduction below are compiled for AVX-512, AVX2 and baseline
// x86-64 and chosen at load time (JACGEOM_VECTOR_CLONES, simd.hpp). Reductions are
// vectorised (omp simd), so results differ between machines by rounding only.

// For each of the K columns a_k = a + k lda (len entries): a_k -= s_k u + t_k x, then
// out_k = w . a_k. u, x and w are loaded once for all K columns.
template <class T, int K>
JACGEOM_VECTOR_CLONES void rank2_dot(T* a, index_t lda, const T* __restrict u, const T* s,
                                     const T* __restrict x, const T* t, const T* __restrict w,
                                     index_t len, T* out) {
    static_assert(K == 1 || K == 4, "one or four columns");
    if constexpr (K == 1) {
        T* __restrict a0 = a;
        const T s0 = s[0], t0 = t[0];
        T c0 = 0;
#pragma omp simd reduction(+ : c0)
        for (index_t i = 0; i < len; ++i) {
            const T b0 = a0[i] - u[i] * s0 - x[i] * t0;
            a0[i] = b0;
            c0 += w[i] * b0;
        }
        out[0] = c0;
    } else {
        T* __restrict a0 = a;
        T* __restrict a1 = a + lda;
        T* __restrict a2 = a + 2 * lda;
        T* __restrict a3 = a + 3 * lda;
        const T s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
        const T t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3];
        T c0 = 0, c1 = 0, c2 = 0, c3 = 0;
#pragma omp simd reduction(+ : c0, c1, c2, c3)
        for (index_t i = 0; i < len; ++i) {
            const T ui = u[i], xi = x[i], wi = w[i];
            const T b0 = a0[i] - ui * s0 - xi * t0, b1 = a1[i] - ui * s1 - xi * t1;
            const T b2 = a2[i] - ui * s2 - xi * t2, b3 = a3[i] - ui * s3 - xi * t3;
            a0[i] = b0;
            a1[i] = b1;
            a2[i] = b2;
            a3[i] = b3;
            c0 += wi * b0;
            c1 += wi * b1;
            c2 += wi * b2;
            c3 += wi * b3;
        }
        out[0] = c0;
        out[1] = c1;
        out[2] = c2;
        out[3] = c3;
    }
}

// x += sum_k v_k a_k over the K columns a_k = a + k lda (len entries); reads them only.
template <class T, int K>
JACGEOM_VECTOR_CLONES void gemv_columns(const T* a, index_t lda, const T* v, T* __restrict x, index_t len) {
    static_assert(K == 1 || K == 4, "one or four columns");
    if constexpr (K == 1) {
        const T* __restrict a0 = a;
        const T v0 = v[0];
#pragma omp simd
        for (index_t i = 0; i < len; ++i) x[i] += a0[i] * v0;
    } else {
        const T* __restrict a0 = a;
        const T* __restrict a1 = a + lda;
        const T* __restrict a2 = a + 2 * lda;
        const T* __restrict a3 = a + 3 * lda;
        const T v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3];
#pragma omp simd
        for (index_t i = 0; i < len; ++i) x[i] += (a0[i] * v0 + a1[i] * v1) + (a2[i] * v2 + a3[i] * v3);
    }
}

// u . a over len entries (a vectorised reduction).
template <class T>
JACGEOM_VECTOR_CLONES T dot(const T* __restrict u, const T* __restrict a, index_t len) {
    T c = 0;
#pragma omp simd reduction(+ : c)
    for (index_t i = 0; i < len; ++i) c += u[i] * a[i];
    return c;
}

// Upper bidiagonal form of the column-major (m, n) matrix A (m >= n, leading dimension
// lda; destroyed): d (n) and e (n - 1). w is scratch of m + 2 n entries.
//
// The reflectors of LAPACK's dgebd2 (backward stable alike), with the updates arranged so
// that each step passes over the trailing matrix once reading it and once rewriting it
// (dgebd2's two rank-one updates and two products make four passes, two of them rewrites):
// with A_j the matrix after every update of the steps before j, u_j its column j's left
// reflector and y_j = tau_j A_j^T u_j (from the previous step), row j gives the right
// reflector v_j; then
//   pass B (reads):    x_j = pi_j (A_j v_j - u_j (y_j . v_j)), the right update's column
//                      computed before the left update is applied;
//   column j + 1:      both updates, then the next left reflector u_(j+1);
//   pass A (rewrites): A_(j+1) = A_j - u_j y_j^T - x_j v_j^T on the remaining columns, and
//                      y_(j+1) = tau_(j+1) A_(j+1)^T u_(j+1) from the updated columns while
//                      they are in registers.
// Columns go four at a time, so u, x and the next u are loaded once per four columns. The
// trailing matrix stays in cache for the shapes this serves (kReducedBytes); the passes run
// at about the L2 cache's bandwidth.
template <class T>
void bidiagonalize(T* A, index_t m, index_t n, index_t lda, T* d, T* e, T* w) {
    T* x = w;      // x_j (rows j + 1 .. m - 1)
    T* y = w + m;  // y[c] = tau_j u_j . A_j[j:, c] for the columns c > j
    T* v = y + n;  // v_j over the columns j + 1 .. n - 1 (v_0 = 1)
    T s4[4], t4[4];
    if (n == 0) return;
    T tau;
    d[0] = reflector(A, m, index_t(1), tau);
    if (n == 1) return;
    A[0] = T(1);
    for (index_t c = 1; c < n; ++c) y[c] = tau * dot(A, A + c * lda, m);
    for (index_t j = 0; j + 1 < n; ++j) {
        const T* u = A + j + j * lda;  // u_j, from the updated column j
        const index_t len = n - j - 1;
        for (index_t c = j + 1; c < n; ++c) v[c - j - 1] = A[j + c * lda] - y[c];
        T pi;
        e[j] = reflector(v, len, index_t(1), pi);
        v[0] = T(1);
        const index_t r1 = m - j - 1;  // rows j + 1 ..
        const T* ub = u + 1;
        // Pass B: x = pi (A_j v - u (y . v)) on rows j + 1.., reading A_j only (x = 0 when
        // the row needs no right reflector).
        std::fill(x, x + r1, T(0));
        if (pi != T(0)) {
            index_t c = j + 1;
            for (; c + 4 <= n; c += 4) gemv_columns<T, 4>(A + j + 1 + c * lda, lda, v + (c - j - 1), x, r1);
            for (; c < n; ++c) gemv_columns<T, 1>(A + j + 1 + c * lda, lda, v + (c - j - 1), x, r1);
            T yv = 0;
            for (c = j + 1; c < n; ++c) yv += y[c] * v[c - j - 1];
            for (index_t i = 0; i < r1; ++i) x[i] = pi * (x[i] - ub[i] * yv);
        }
        // Column j + 1 after both updates of step j: the next left reflector.
        T* un = A + (j + 1) + (j + 1) * lda;
        const T sy = y[j + 1];
        for (index_t i = 0; i < r1; ++i) un[i] -= ub[i] * sy + x[i];
        T taun;
        d[j + 1] = reflector(un, r1, index_t(1), taun);
        if (j + 2 == n) break;
        un[0] = T(1);
        // Pass A: both updates of step j on the rest, then y for step j + 1.
        index_t c = j + 2;
        for (; c + 4 <= n; c += 4) {
            for (int k = 0; k < 4; ++k) {
                s4[k] = y[c + k];
                t4[k] = v[c + k - j - 1];
            }
            rank2_dot<T, 4>(A + j + 1 + c * lda, lda, ub, s4, x, t4, un, r1, y + c);
        }
        for (; c < n; ++c) {
            s4[0] = y[c];
            t4[0] = v[c - j - 1];
            rank2_dot<T, 1>(A + j + 1 + c * lda, lda, ub, s4, x, t4, un, r1, y + c);
        }
        for (c = j + 2; c < n; ++c) y[c] *= taun;
    }
}

// The matrix the reduction works on, scaled: A itself (rows >= cols) or its tall (q, p)
// transpose written to t (rows < cols; q p entries, ld q), then multiplied by 2^-exponent
// so that its largest entry lies in [0.5, 1) (exact: a power of two, by ldexp where the
// factor itself would be subnormal). M and ldm say where it is. Returns -1 for a NaN or an
// infinity (M untouched but for the transpose), 1 for A = 0, else 0.
template <class T>
int scaled_tall(T* A, index_t rows, index_t cols, index_t lda, T* t, T*& M, index_t& ldm,
                int& exponent) {
    const index_t p = std::min(rows, cols), q = std::max(rows, cols);
    M = A;
    ldm = lda;
    if (rows < cols) {
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
    return 0;
}

// Singular values of the scaled upper bidiagonal (d, e: p and p - 1 entries) by LAPACK's
// bdsqr without vectors (dqds), unscaled by 2^exponent into s (may be d). bdsqr's 4 p
// entries of work follow e at e + p. Returns LAPACK's info.
template <class T>
int bidiagonal_values(const lapack::Routines<T>& L, T* d, T* e, index_t p, int exponent, T* s) {
    const int n = static_cast<int>(p), zero = 0, one = 1;
    int info = 0;
    T dummy = 0;
    L.bdsqr("U", &n, &zero, &zero, &zero, d, e, &dummy, &one, &dummy, &one, &dummy, &one,
            e + p, &info);
    if (info != 0) return info;
    for (index_t i = 0; i < p; ++i) s[i] = std::ldexp(d[i], exponent);
    return 0;
}

}  // namespace detail

// Workspace for the singular values of column-major (rows, cols) matrices, values only;
// one per thread, sized for the largest problem it will see.
template <class T>
struct SvdWorkspace {
    std::vector<T> work;
    std::vector<int> iwork;

    // For every matrix of at most rows x cols: the written-out path's buffer (bidiagonal()
    // grows it for larger shapes and transposes) or, above kReducedBytes, gesdd's workspace.
    SvdWorkspace(index_t rows, index_t cols) {
        const auto& L = lapack::get<T>();
        const int r = static_cast<int>(std::max<index_t>(1, rows));
        const int c = static_cast<int>(std::max<index_t>(1, cols));
        if (reduced_here<T>(r, c)) {  // bidiagonal() adds room for a transpose if one comes
            const index_t p = std::min(r, c), q = std::max(r, c);
            bd_.resize(static_cast<size_t>(8 * p + q + 1));
            return;
        }
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
        const int info = reduced_here<T>(rows, cols) ? run_reduced(A, rows, cols, lda, s)
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
    std::vector<T> bd_;  // the tall transpose (wide inputs only), d, e, scratch, bdsqr's work
    std::vector<T> bd_work_;

    // Upper bidiagonal form (d, e: p and p - 1 entries, into bd_) of A scaled by
    // 2^-exponent so that its largest entry lies in [0.5, 1). Returns -1 for a NaN or an
    // infinity, 1 for A = 0, else 0. The matrix (or its R, for shapes at least twice as tall
    // as wide above kQrFirstBytes) is reduced by detail::bidiagonalize up to kReducedBytes,
    // by LAPACK's gebrd above.
    int bidiagonal(T* A, index_t rows, index_t cols, index_t lda, T*& d, T*& e, int& exponent) {
        const index_t p = std::min(rows, cols), q = std::max(rows, cols);
        const index_t copy = rows < cols ? p * q : 0;  // room for the tall transpose
        const size_t need = static_cast<size_t>(copy + 8 * p + q + 1);
        if (bd_.size() < need) bd_.resize(need);
        T* M = nullptr;
        index_t ldm = 0;
        const int scaled = detail::scaled_tall(A, rows, cols, lda, bd_.data(), M, ldm, exponent);
        if (scaled != 0) return scaled;
        d = bd_.data() + copy;
        e = d + p;
        T* w = e + p;  // q + 2 p scratch, then 4 p for bdsqr
        const auto& L = lapack::get<T>();
        int info = 0;
        index_t m = q;
        // R of M = Q R: the same singular values, a p x p reduction (geqrf's blocked
        // Householder QR costs half the flops of a reduction of M).
        if (q >= 2 * p && q * p * index_t(sizeof(T)) > kQrFirstBytes) {
            const int qq = static_cast<int>(q), pp = static_cast<int>(p), ld = static_cast<int>(ldm);
            query(q, p);
            int lw = static_cast<int>(bd_work_.size());
            L.geqrf(&qq, &pp, M, &ld, w, bd_work_.data(), &lw, &info);
            for (index_t j = 0; j < p; ++j)
                for (index_t i = j + 1; i < p; ++i) M[i + j * ldm] = T(0);
            m = p;
        }
        if (reduced_here<T>(m, p)) {
            detail::bidiagonalize(M, m, p, ldm, d, e, w);
            return 0;
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
        return detail::bidiagonal_values(lapack::get<T>(), d, e, p, exponent, s);
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
        if (work.empty()) {  // sized for the written-out path only: query now
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
    int run_reduced(T* A, index_t rows, index_t cols, index_t lda, T* s) {
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
