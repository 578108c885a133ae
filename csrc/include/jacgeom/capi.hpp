// One-sample kernels over raw pointers and element strides, with the caller's workspace:
// the C-level API that jacgeom.cython_kernels exports to Cython, Numba and C/C++ callers.
//
// Nothing here allocates, throws or touches Python: each function returns a status (>= 0
// success, < 0 one of the Status codes) so that it can run inside a caller's nogil loop.
// The arithmetic is that of the batched kernels, step for step (the same inline functions
// of activations.hpp, rank.hpp and svd.hpp wherever they take no allocating workspace), so
// a result equals the Python API's (backend "cpp") bit for bit when both are built with the
// same flags (setup.py builds both from tools/build_flags.py).
//
// Strides count elements, not bytes, and may be negative or zero (a zero stride repeats
// one entry). Workspaces are arrays of doubles of the length the *_workspace functions
// return; their address needs only double alignment (regions inside are rounded up to
// 64 bytes from wherever the buffer starts).
//
// BLAS/LAPACK: the kernels call lapack::routines<T>(), which the including module must fill
// (jacgeom.cython_kernels does it at import, from scipy's capsules, as jacgeom._core does).
// A C++ program that includes this header fills them itself with the same routines.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "activations.hpp"
#include "gram.hpp"
#include "lapack.hpp"
#include "rank.hpp"
#include "svd.hpp"

namespace jacgeom::capi {

enum Status : int {
    kOk = 0,
    kBadArgument = -1,     // a negative size, an unknown activation, a bad tolerance
    kNotRegistered = -2,   // BLAS/LAPACK pointers missing (the module was not initialised)
    kTooLarge = -3,        // beyond kMaxMatrixBytes (see below)
    kWorkspaceSmall = -4,  // lwork below what the *_workspace function returns
    kNonFinite = -5,       // a NaN or an infinity where a finite matrix is needed
    kLapackFailed = -6,    // dqds did not converge (LAPACK's info > 0)
};

// The one-sample SVD here is svd.hpp's written-out path (Householder bidiagonalisation,
// then LAPACK's dqds), which the batched kernels take for every matrix up to kQrFirstBytes
// (they factor larger tall ones by geqrf first, and go to gesdd above kReducedBytes).
// Above this size a call returns kTooLarge rather than give different bits; the per-call
// API is meant for small matrices, where Python's overhead dominates.
inline constexpr index_t kMaxMatrixBytes = kQrFirstBytes;

// rows * cols * sizeof(T) > kMaxMatrixBytes, without overflowing for huge sizes; also
// either dimension alone above kMaxMatrixBytes / sizeof(T) (a (2^61, 0) matrix: the
// workspace's per-row regions would overflow the size computation).
template <class T>
inline bool too_large(index_t rows, index_t cols) {
    constexpr index_t most = kMaxMatrixBytes / index_t(sizeof(T));
    return rows > most || cols > most || (rows > 0 && cols > most / rows);
}

inline index_t round_up(index_t bytes) { return (bytes + 63) / 64 * 64; }
inline index_t bytes_to_doubles(index_t bytes) { return (bytes + 7) / 8 + 8; }  // + 64 B slack to align the start

// The first 64-byte boundary at or after work: regions are laid out from there.
inline char* aligned_start(double* work) {
    const auto a = reinterpret_cast<std::uintptr_t>(work);
    return reinterpret_cast<char*>((a + 63) / 64 * 64);
}

template <class T>
inline bool routines_ready() {
    const auto& r = lapack::routines<T>();
    return r.syrk && r.gesdd && r.geqrf && r.trtri && r.potrf && r.gemm && r.bdsqr && r.gebrd;
}

// ---------------------------------------------------------------------------------------
// phi'(z) of a vector: out[i * out_stride] = phi'(z[i * z_stride]), i < count.
// activations.hpp's derivative_runs, as layer.hpp's derivatives.

template <class T>
int derivatives(int code, T param, const T* z, index_t zs, T* out, index_t os, index_t count) {
    if (count < 0 || !activation_supported(code) || !activation_parameter_valid(code, param))
        return kBadArgument;
    derivative_runs<T>(code, param, z, zs, out, os, count);
    return kOk;
}

// ---------------------------------------------------------------------------------------
// Singular values of a column-major (rows, cols) matrix A (leading dimension lda,
// destroyed) into s (min(rows, cols), descending): SvdWorkspace::run's written-out path
// (run_reduced, bidiagonal, finish) with the buffer bd of bd_entries<T>(rows, cols) entries
// given instead of owned. Only for rows * cols * sizeof(T) <= kMaxMatrixBytes, where that
// path never factors by geqrf first.

template <class T>
inline index_t bd_entries(index_t rows, index_t cols) {
    const index_t p = std::min(rows, cols), q = std::max(rows, cols);
    return (rows < cols ? p * q : 0) + 8 * p + q + 1;
}

template <class T>
int svd_values(T* A, index_t rows, index_t cols, index_t lda, T* s, T* bd) {
    const index_t p = std::min(rows, cols), q = std::max(rows, cols);
    if (p == 0) return kOk;
    T* M = nullptr;
    index_t ldm = 0;
    int exponent = 0;
    const int scaled = detail::scaled_tall(A, rows, cols, lda, bd, M, ldm, exponent);
    if (scaled < 0) {
        std::fill(s, s + p, std::numeric_limits<T>::quiet_NaN());
        return kNonFinite;
    }
    if (scaled == 1) {  // A = 0
        std::fill(s, s + p, T(0));
        return kOk;
    }
    T* d = bd + (rows < cols ? p * q : 0);
    T* e = d + p;
    detail::bidiagonalize(M, q, p, ldm, d, e, e + p);  // q + 2 p scratch, then 4 p for bdsqr
    if (detail::bidiagonal_values(lapack::routines<T>(), d, e, p, exponent, s) != 0) {
        std::fill(s, s + p, std::numeric_limits<T>::quiet_NaN());
        return kLapackFailed;
    }
    return kOk;
}

// Workspace (doubles) of singular_values for a (rows, cols) matrix; -1 when too large.
template <class T>
index_t singular_values_workspace(index_t rows, index_t cols) {
    if (rows < 0 || cols < 0) return kBadArgument;
    if (too_large<T>(rows, cols)) return kTooLarge;
    const index_t bytes = round_up(rows * cols * index_t(sizeof(T))) +
                          round_up(bd_entries<T>(cols, rows) * index_t(sizeof(T)));
    return bytes_to_doubles(bytes);
}

// Singular values of the (rows, cols) matrix A[i * rs + j * cs], descending, into
// s[k * ss], k < min(rows, cols). As jacgeom.layer_singular_values (identity activation):
// A is copied row-major, which is the column-major (cols, rows) matrix of A^T (the same
// singular values), and reduced as layer.hpp's singular_values reduces it.
// log_values: s holds log(sigma_k) instead (std::log; -inf for an exact zero).
template <class T>
int singular_values(const T* A, index_t rows, index_t cols, index_t rs, index_t cs, T* s,
                    index_t ss, double* work, index_t lwork, bool log_values) {
    const index_t need = singular_values_workspace<T>(rows, cols);
    if (need < 0) return static_cast<int>(need);
    if (lwork < need) return kWorkspaceSmall;
    if (!routines_ready<T>()) return kNotRegistered;
    const index_t p = std::min(rows, cols);
    if (p == 0) return kOk;
    char* base = aligned_start(work);
    T* a = reinterpret_cast<T*>(base);
    T* bd = reinterpret_cast<T*>(base + round_up(rows * cols * index_t(sizeof(T))));
    for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j) a[i * cols + j] = A[i * rs + j * cs];
    // svd_values writes p contiguous values; with a stride they go to a first (the copy of
    // A is dead once the bidiagonal form is in bd), then out.
    const int status = svd_values(a, cols, rows, cols, ss == 1 ? s : a, bd);
    if (ss != 1)
        for (index_t k = 0; k < p; ++k) s[k * ss] = a[k];
    if (status == kOk && log_values)
        for (index_t k = 0; k < p; ++k) s[k * ss] = std::log(s[k * ss]);
    return status;
}

// ---------------------------------------------------------------------------------------
// Rank of diag(scale) W restricted to the rows with scale != 0 (a 0/1 mask: rank(W[mask])),
// numpy.linalg.matrix_rank's rule: rank.hpp's masked_rank for one mask, the same
// certificate (shifted Cholesky of the double Gram matrix, gathered from row_gram when the
// caller passes W W^T and k <= n, else one syrk) and the same fallback to the singular
// values, counted by count_above. tol_mode / tol_value: RankTolerance (0 numpy's default
// rtol, 1 absolute tol, 2 relative rtol).

template <class T>
index_t masked_rank_workspace(index_t m, index_t n) {
    if (m < 0 || n < 0) return kBadArgument;
    if (too_large<T>(m, n)) return kTooLarge;
    const index_t p = std::min(m, n);
    const index_t bytes = round_up(m * index_t(sizeof(index_t))) +  // idx
                          round_up(m * n * 8) +                    // Ad (double)
                          round_up(p * p * 8) +                    // G (double)
                          round_up(m * n * index_t(sizeof(T))) +   // At
                          round_up(p * index_t(sizeof(T))) +       // s
                          round_up(bd_entries<T>(n, m) * index_t(sizeof(T)));  // SVD
    return bytes_to_doubles(bytes);
}

// Scale: any callable i -> T (the i-th row's factor; 0 drops the row).
template <class T, class Scale>
std::int64_t scaled_rank(const T* W, index_t m, index_t n, index_t rs, index_t cs, Scale scale,
                         int tol_mode, double tol_value, const double* row_gram, double* work,
                         index_t lwork) {
    const index_t need = masked_rank_workspace<T>(m, n);
    if (need < 0) return need;
    if (tol_mode < 0 || tol_mode > 2 || !(tol_value >= 0) || !std::isfinite(tol_value))
        return kBadArgument;
    if (lwork < need) return kWorkspaceSmall;
    if (!routines_ready<T>()) return kNotRegistered;
    const index_t pmax = std::min(m, n);
    char* base = aligned_start(work);
    index_t* idx = reinterpret_cast<index_t*>(base);
    base += round_up(m * index_t(sizeof(index_t)));
    double* Ad = reinterpret_cast<double*>(base);
    base += round_up(m * n * 8);
    double* G = reinterpret_cast<double*>(base);
    base += round_up(pmax * pmax * 8);
    T* At = reinterpret_cast<T*>(base);
    base += round_up(m * n * index_t(sizeof(T)));
    T* s = reinterpret_cast<T*>(base);
    base += round_up(pmax * index_t(sizeof(T)));
    T* bd = reinterpret_cast<T*>(base);

    const RankTolerance tol{tol_mode, tol_value};
    const double eps_t = std::numeric_limits<T>::epsilon();
    index_t k = 0;
    for (index_t i = 0; i < m; ++i)
        if (scale(i) != T(0)) idx[k++] = i;
    const index_t p = std::min(k, n);
    if (p == 0) return 0;
    // Step 1 of rank.hpp: the certificate of full rank p.
    const auto& Ld = lapack::routines<double>();
    const int pp = static_cast<int>(p), nn = static_cast<int>(n), kk = static_cast<int>(k);
    if (k <= n && row_gram) {
        for (index_t c = 0; c < p; ++c) {
            const index_t ic = idx[c];
            const double sc_c = double(scale(ic));
            const double* rg = row_gram + ic * m;
            for (index_t r = 0; r <= c; ++r) {
                const index_t ir = idx[r];
                G[r + c * p] = sc_c * double(scale(ir)) * rg[ir];
            }
        }
    } else {
        for (index_t r = 0; r < k; ++r) {
            const index_t i = idx[r];
            const double si = double(scale(i));
            const T* w = W + i * rs;
            double* o = Ad + r * n;
            for (index_t j = 0; j < n; ++j) o[j] = si * double(w[j * cs]);
        }
        const double one = 1, zero = 0;
        if (k <= n)
            Ld.syrk("U", "T", &kk, &nn, &one, Ad, &nn, &zero, G, &pp);
        else
            Ld.syrk("U", "N", &nn, &kk, &one, Ad, &nn, &zero, G, &pp);
    }
    if (certify_full_rank(G, p, k, n, k, tol, eps_t)) return p;
    // Step 2: the singular values of the kept, scaled rows (row-major (k, n) = column-major
    // (n, k)), in the input precision.
    for (index_t r = 0; r < k; ++r) {
        const index_t i = idx[r];
        const T si = scale(i);
        const T* w = W + i * rs;
        T* o = At + r * n;
        for (index_t j = 0; j < n; ++j) o[j] = si * w[j * cs];
    }
    // The batched kernel counts the NaNs SvdWorkspace::run returns for a non-finite W as
    // rank 0 (the Python layer has rejected such W before); here the caller learns why.
    const int status = svd_values(At, n, k, n, s, bd);
    if (status != kOk) return status;
    return count_above(s, p, tol, k, n);
}

template <class T>
std::int64_t masked_rank(const T* W, index_t m, index_t n, index_t rs, index_t cs,
                         const unsigned char* mask, index_t ms, int tol_mode, double tol_value,
                         const double* row_gram, double* work, index_t lwork) {
    return scaled_rank<T>(
        W, m, n, rs, cs, [&](index_t i) { return mask[i * ms] ? T(1) : T(0); }, tol_mode,
        tol_value, row_gram, work, lwork);
}

template <class T>
std::int64_t row_scaled_rank(const T* W, index_t m, index_t n, index_t rs, index_t cs,
                             const T* scale, index_t ss, int tol_mode, double tol_value,
                             const double* row_gram, double* work, index_t lwork) {
    return scaled_rank<T>(
        W, m, n, rs, cs, [&](index_t i) { return scale[i * ss]; }, tol_mode, tol_value,
        row_gram, work, lwork);
}

// W W^T in double (m, m, row-major), the row Gram matrix masked_rank gathers from when a
// caller ranks many masks of one W (k <= n kept rows: no flops per mask beyond the gather).
template <class T>
int row_gram(const T* W, index_t m, index_t n, index_t rs, index_t cs, double* out) {
    if (m < 0 || n < 0) return kBadArgument;
    for (index_t i = 0; i < m; ++i)
        for (index_t l = 0; l <= i; ++l) {
            double acc = 0;
            for (index_t j = 0; j < n; ++j) acc += double(W[i * rs + j * cs]) * double(W[l * rs + j * cs]);
            out[i * m + l] = acc;
            out[l * m + i] = acc;
        }
    return kOk;
}

// ---------------------------------------------------------------------------------------
// The pullback metric of one sample: G = W^T diag(d)^2 W, (n, n) row-major (contiguous),
// d = phi'(z). gram.hpp's scaled_gram step for step: the rows with d_i != 0 scaled and
// packed into column panels, then the register-tiled kernel for the best instruction set
// the CPU has (jacgeom._core's default; jacgeom._core.set_gram_kernel changes only
// _core's), or gather + syrk + mirror without AVX2. The panels live in the caller's
// workspace instead of gram::Workspace's vectors.

// The widest vector any kernel packs for: 64 bytes (AVX-512).
template <class T>
inline index_t padded_columns(index_t n) {
    constexpr index_t V = 64 / index_t(sizeof(T));
    return (n + V - 1) / V * V;
}

template <class T>
index_t pullback_metric_workspace(index_t m, index_t n) {
    if (m < 0 || n < 0) return kBadArgument;
    if (too_large<T>(m, n)) return kTooLarge;
    return bytes_to_doubles(round_up(std::max<index_t>(1, m * padded_columns<T>(n)) * index_t(sizeof(T))));
}

namespace gram_detail {

// gram::detail::pack with strided W and d, into P (k * np * V entries). Returns k.
template <class T, int V>
[[gnu::always_inline]] inline index_t pack(const T* W, index_t rs, index_t cs, const T* d,
                                           index_t ds, index_t m, index_t n, T* P) {
    index_t k = 0;
    for (index_t i = 0; i < m; ++i) k += d[i * ds] != T(0);
    const index_t np = (n + V - 1) / V;
    for (index_t p = 0; p < np; ++p) {
        const index_t j0 = p * V;
        T* o = P + p * k * V;
        index_t r = 0;
        for (index_t i = 0; i < m; ++i) {
            const T s = d[i * ds];
            if (s == T(0)) continue;
            const T* w = W + i * rs + j0 * cs;
            for (int l = 0; l < V; ++l) o[r * V + l] = j0 + l < n ? s * w[l * cs] : T(0);
            ++r;
        }
    }
    return k;
}

// gram::detail::tiled, the packing above instead of gram::detail::pack.
template <class T, int V, int R, int C>
[[gnu::always_inline]] inline void tiled(const T* W, index_t rs, index_t cs, const T* d,
                                         index_t ds, index_t m, index_t n, T* P, T* G) {
    const index_t k = pack<T, V>(W, rs, cs, d, ds, m, n, P);
    gram::detail::tiled_panels<T, V, R, C>(P, k, n, G);
}

#if JACGEOM_X86_DISPATCH
template <class T>
JACGEOM_TARGET_AVX512 void tiled_avx512(const T* W, index_t rs, index_t cs, const T* d,
                                        index_t ds, index_t m, index_t n, T* P, T* G) {
    tiled<T, 64 / sizeof(T), 2, 8>(W, rs, cs, d, ds, m, n, P, G);
}

template <class T>
JACGEOM_TARGET_AVX2 void tiled_avx2(const T* W, index_t rs, index_t cs, const T* d,
                                    index_t ds, index_t m, index_t n, T* P, T* G) {
    tiled<T, 32 / sizeof(T), 2, 4>(W, rs, cs, d, ds, m, n, P, G);
}
#endif

}  // namespace gram_detail

template <class T>
int pullback_metric(const T* W, index_t m, index_t n, index_t rs, index_t cs, const T* d,
                    index_t ds, T* G, double* work, index_t lwork) {
    const index_t need = pullback_metric_workspace<T>(m, n);
    if (need < 0) return static_cast<int>(need);
    if (lwork < need) return kWorkspaceSmall;
    if (!routines_ready<T>()) return kNotRegistered;
    if (n == 0) return kOk;
    T* P = reinterpret_cast<T*>(aligned_start(work));
#if JACGEOM_X86_DISPATCH
    // The operand is at most kMaxMatrixBytes, far inside gram::kTiledBytes.
    const auto kernel = gram::best_supported();
    if (kernel == gram::Kernel::avx512) {
        gram_detail::tiled_avx512(W, rs, cs, d, ds, m, n, P, G);
        return kOk;
    }
    if (kernel == gram::Kernel::avx2) {
        gram_detail::tiled_avx2(W, rs, cs, d, ds, m, n, P, G);
        return kOk;
    }
#endif
    // gram::detail::blas for one block of rows (m < kBlasRows here).
    index_t k = 0;
    for (index_t i = 0; i < m; ++i) {
        const T di = d[i * ds];
        if (di == T(0)) continue;
        T* o = P + k * n;
        for (index_t j = 0; j < n; ++j) o[j] = di * W[i * rs + j * cs];
        ++k;
    }
    if (k == 0) {
        std::fill(G, G + n * n, T(0));
        return kOk;
    }
    const int nn = static_cast<int>(n), kk = static_cast<int>(k);
    const T one = 1, zero = 0;
    lapack::routines<T>().syrk("U", "N", &nn, &kk, &one, P, &nn, &zero, G, &nn);
    mirror_upper(G, n);
    return kOk;
}

// ---------------------------------------------------------------------------------------
// The end-to-end Jacobian of a plain network (dense layers h_l = phi_l(W_l h_(l-1) + b_l),
// no normalisation, no residual, no kernel layers) at one input x:
//   J = D_L W_L ... D_1 W_1,  D_l = diag(phi_l'(z_l)),  (n_L, n_0).
// Layer l (0-based here) has W_l (widths[l+1], widths[l]) at W_l[i rs + j cs] with
// (rs, cs) = weight_strides[2 l], [2 l + 1]; b_l at biases[l][i bias_strides[l]] (biases
// NULL: no biases; bias_strides NULL: contiguous); activation codes[l] with parameter
// parameters[l] (alpha of leaky_relu and elu, beta of softplus; read by those only).
//
// Forward pass as jacgeom.Network.forward: z = W h (a dot product per unit, in T) + b,
// phi'(z) as derivatives() computes it, phi(z) in double rounded once to T (value_of).
// Then the product over the live units only (d_i != 0: a dead unit's row of D W is zero and
// so are the columns of the next factor it would feed), accumulated from the input side
// (n_0 k_l k_(l-1) flops per layer after the first, k_l live units) or from the output
// side (k_L k_l k_(l-1) per layer before the last), whichever is cheaper for this x, as
// chain.hpp's chain_active decides (ties: from the output when n_L < n_0). This is the
// code of Network.jacobian at one input on the cpp backend (jacgeom._core's
// network_jacobian_one), so the two agree bit for bit; a batch of several inputs is
// multiplied by batched gemms in another order and agrees to rounding.
// Nothing rescales partial products: J's entries follow IEEE arithmetic, and where one of
// them or a pre-activation is a NaN or an infinity (an input that is not finite, or a
// forward pass or product beyond the float range) J is written as computed and the call
// returns kNonFinite, never kOk.

// The network's description, as the C-level functions receive it.
template <class T>
struct Network {
    index_t depth;
    const index_t* widths;          // depth + 1
    const T* const* weights;        // depth
    const index_t* weight_strides;  // 2 depth
    const T* const* biases;         // depth, or NULL
    const index_t* bias_strides;    // depth, or NULL
    const int* codes;               // depth
    const T* parameters;            // depth

    index_t n0() const { return widths[0]; }
    index_t nL() const { return widths[depth]; }
    index_t widest() const {
        index_t w = 0;
        for (index_t l = 0; l <= depth; ++l) w = std::max(w, widths[l]);
        return w;
    }
    index_t units() const {  // n_1 + ... + n_L
        index_t u = 0;
        for (index_t l = 1; l <= depth; ++l) u += widths[l];
        return u;
    }
    // kBadArgument for depth < 1 or a negative width; kTooLarge when a partial product
    // (widest x max(n_0, n_L)) is above kMaxMatrixBytes.
    int check_shape() const {
        if (depth < 1 || !widths) return kBadArgument;
        for (index_t l = 0; l <= depth; ++l)
            if (widths[l] < 0) return kBadArgument;
        if (too_large<T>(widest(), std::max(n0(), nL()))) return kTooLarge;
        return kOk;
    }
    // check_shape, and kBadArgument for a missing array or an unknown activation code.
    int check() const {
        const int status = check_shape();
        if (status != kOk) return status;
        if (!weights || !weight_strides || !codes || !parameters) return kBadArgument;
        for (index_t l = 0; l < depth; ++l)
            if (!activation_supported(codes[l]) ||
                !activation_parameter_valid(codes[l], parameters[l]) || !weights[l])
                return kBadArgument;
        return kOk;
    }
};

// The network of the flat arguments the C-level functions take (see above).
template <class T>
inline Network<T> network_of(index_t depth, const index_t* widths, const T* const* weights,
                             const index_t* weight_strides, const T* const* biases,
                             const index_t* bias_strides, const int* codes,
                             const T* parameters) {
    return {depth, widths, weights, weight_strides, biases, bias_strides, codes, parameters};
}

// Bytes of network_jacobian's regions: two activations h, every layer's phi', two
// partial products.
template <class T>
inline index_t jacobian_bytes(const Network<T>& net) {
    const index_t w = net.widest(), t = index_t(sizeof(T));
    return 2 * round_up(w * t) + round_up(net.units() * t) +
           2 * round_up(w * std::max(net.n0(), net.nL()) * t);
}

// Workspace (doubles) of network_jacobian for the widths (depth + 1 entries); a status
// (< 0) for bad or too large widths.
template <class T>
index_t network_jacobian_workspace(index_t depth, const index_t* widths) {
    const Network<T> net{depth, widths, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    const int status = net.check_shape();
    if (status != kOk) return status;
    return bytes_to_doubles(jacobian_bytes(net));
}

// The forward pass: phi'(z_l) of every layer into d (n_1 + ... + n_L), h and g scratch of
// the widest layer's length. False where a pre-activation is not finite (an input that is
// not, or a forward pass beyond the float range: phi'(inf) would hide it, e.g. tanh' = 0).
template <class T>
bool forward_derivatives(const Network<T>& net, const T* x, index_t xs, T* h, T* g, T* d) {
    bool finite = true;
    const index_t n0 = net.n0();
    for (index_t j = 0; j < n0; ++j) h[j] = x[j * xs];
    for (index_t l = 0; l < net.depth; ++l) {
        const index_t m = net.widths[l + 1], n = net.widths[l];
        const index_t rs = net.weight_strides[2 * l], cs = net.weight_strides[2 * l + 1];
        const T* W = net.weights[l];
        const T* b = net.biases ? net.biases[l] : nullptr;
        const index_t bs = net.bias_strides ? net.bias_strides[l] : 1;
        const int code = net.codes[l];
        const double p = net.parameters[l];
        for (index_t i = 0; i < m; ++i) {
            const T* w = W + i * rs;
            // Four partial sums: independent chains of adds (one chain waits an add's
            // latency per term); BLAS sums in its own order too.
            T z0 = 0, z1 = 0, z2 = 0, z3 = 0;
            index_t j = 0;
            for (; j + 4 <= n; j += 4) {
                z0 += w[j * cs] * h[j];
                z1 += w[(j + 1) * cs] * h[j + 1];
                z2 += w[(j + 2) * cs] * h[j + 2];
                z3 += w[(j + 3) * cs] * h[j + 3];
            }
            for (; j < n; ++j) z0 += w[j * cs] * h[j];
            T z = (z0 + z1) + (z2 + z3);
            if (b) z += b[i * bs];
            finite &= std::fabs(z) <= std::numeric_limits<T>::max();
            d[i] = derivative<T>(code, p, z);
            g[i] = value_of<T>(code, p, z);
        }
        d += m;
        std::swap(h, g);
    }
    return finite;
}

// J (n_L, n_0) at J[r J_rs + c J_cs]. Returns kOk or a status.
template <class T>
int jacobian_of(const Network<T>& net, const T* x, index_t xs, T* J, index_t J_rs,
                index_t J_cs, double* work, index_t lwork) {
    const int status = net.check();
    if (status != kOk) return status;
    if (lwork < network_jacobian_workspace<T>(net.depth, net.widths)) return kWorkspaceSmall;
    const index_t L = net.depth, n0 = net.n0(), nL = net.nL(), w = net.widest();
    const index_t t = index_t(sizeof(T)), wide = w * std::max(n0, nL);
    char* base = aligned_start(work);
    T* h = reinterpret_cast<T*>(base);
    T* g = reinterpret_cast<T*>(base + round_up(w * t));
    T* D = reinterpret_cast<T*>(base + 2 * round_up(w * t));
    T* P = reinterpret_cast<T*>(base + 2 * round_up(w * t) + round_up(net.units() * t));
    T* Q = reinterpret_cast<T*>(reinterpret_cast<char*>(P) + round_up(wide * t));
    const bool finite_z = forward_derivatives(net, x, xs, h, g, D);

    // d_l (0-based layer l) starts at D + offset[l]; K(l) live units below layer l's
    // output (K(0) = n_0 inputs), as ActiveChain::k.
    auto d_of = [&](index_t l) {
        const T* d = D;
        for (index_t k = 0; k < l; ++k) d += net.widths[k + 1];
        return d;
    };
    auto live = [&](index_t l) {  // live units of layer l - 1's output; n_0 for l = 0
        if (l == 0) return n0;
        const T* d = d_of(l - 1);
        index_t k = 0;
        for (index_t i = 0; i < net.widths[l]; ++i) k += d[i] != T(0);
        return k;
    };
    double all = 0, first = 0, last = 0;
    index_t below = n0;
    for (index_t l = 0; l < L; ++l) {
        const index_t above = live(l + 1);
        const double block = double(above) * double(below);
        all += block;
        if (l == 0) first = block;
        if (l == L - 1) last = block;
        below = above;
    }
    const double kL = double(below);
    const double fwd = double(n0) * (all - first), rev = kL * (all - last);
    const bool reverse = fwd > rev || (fwd == rev && nL < n0);

    auto weight = [&](index_t l, index_t i, index_t j) {
        return net.weights[l][i * net.weight_strides[2 * l] + j * net.weight_strides[2 * l + 1]];
    };
    // J from P (n_L, n_0) row-major; kNonFinite where an entry, or a pre-activation, left
    // the float range.
    auto write = [&](const T* R) {
        bool finite = finite_z;
        for (index_t r = 0; r < nL; ++r)
            for (index_t c = 0; c < n0; ++c) {
                const T v = R[r * n0 + c];
                finite &= std::fabs(v) <= std::numeric_limits<T>::max();
                J[r * J_rs + c * J_cs] = v;
            }
        return finite ? kOk : kNonFinite;
    };
    if (!reverse) {
        // P (n_(l+1), n_0) row-major: rows of dead units are zero and never read.
        const T* d = d_of(0);
        for (index_t i = 0; i < net.widths[1]; ++i) {
            T* o = P + i * n0;
            const T di = d[i];
            if (di == T(0)) {
                std::fill(o, o + n0, T(0));
                continue;
            }
            for (index_t j = 0; j < n0; ++j) o[j] = di * weight(0, i, j);
        }
        for (index_t l = 1; l < L; ++l) {
            const T* dl = d_of(l);
            const T* dp = d_of(l - 1);
            const index_t m = net.widths[l + 1], n = net.widths[l];
            for (index_t i = 0; i < m; ++i) {
                T* o = Q + i * n0;
                std::fill(o, o + n0, T(0));
                const T di = dl[i];
                if (di == T(0)) continue;
                for (index_t j = 0; j < n; ++j) {
                    if (dp[j] == T(0)) continue;
                    const T c = di * weight(l, i, j);
                    const T* src = P + j * n0;
                    for (index_t c0 = 0; c0 < n0; ++c0) o[c0] += c * src[c0];
                }
            }
            std::swap(P, Q);
        }
        return write(P);
    }
    // From the output: R (n_L, n_l) row-major; rows of dead outputs stay zero.
    const T* dL = d_of(L - 1);
    const index_t top = net.widths[L - 1];
    for (index_t r = 0; r < nL; ++r) {
        T* o = P + r * top;
        const T dr = dL[r];
        if (dr == T(0)) {
            std::fill(o, o + top, T(0));
            continue;
        }
        for (index_t j = 0; j < top; ++j) o[j] = dr * weight(L - 1, r, j);
    }
    for (index_t l = L - 2; l >= 0; --l) {
        const T* dl = d_of(l);
        const index_t m = net.widths[l + 1], n = net.widths[l];
        for (index_t r = 0; r < nL; ++r) {
            T* o = Q + r * n;
            std::fill(o, o + n, T(0));
            if (dL[r] == T(0)) continue;
            const T* src = P + r * m;
            const index_t rs = net.weight_strides[2 * l], cs = net.weight_strides[2 * l + 1];
            for (index_t i = 0; i < m; ++i) {
                if (dl[i] == T(0)) continue;
                const T c = src[i] * dl[i];
                const T* w = net.weights[l] + i * rs;
                if (cs == 1)  // the common layout: a contiguous, vectorised axpy
                    for (index_t j = 0; j < n; ++j) o[j] += c * w[j];
                else
                    for (index_t j = 0; j < n; ++j) o[j] += c * w[j * cs];
            }
        }
        std::swap(P, Q);
    }
    return write(P);
}

// Workspace (doubles) of network_log_singular_values: the Jacobian's, J itself, and
// singular_values' for (n_L, n_0).
template <class T>
index_t network_log_singular_values_workspace(index_t depth, const index_t* widths) {
    const index_t jac = network_jacobian_workspace<T>(depth, widths);
    if (jac < 0) return jac;
    const index_t n0 = widths[0], nL = widths[depth];
    const index_t sv = singular_values_workspace<T>(nL, n0);
    if (sv < 0) return sv;
    return jac + bytes_to_doubles(round_up(nL * n0 * index_t(sizeof(T)))) + sv;
}

// log sigma_k(J), k < min(n_L, n_0), descending, into s[k ss]: network_jacobian, then
// singular_values (log_values) of J, so the values equal those of
// jacgeom.layer_singular_values(J, activation="identity") bit for bit. Small singular values
// carry the SVD's absolute error, about eps sigma_max (Network.log_singular_values resolves
// them to relative accuracy through the stable frame).
template <class T>
int log_singular_values_of(const Network<T>& net, const T* x, index_t xs, T* s, index_t ss,
                           double* work, index_t lwork) {
    const int checked = net.check();
    if (checked != kOk) return checked;
    if (lwork < network_log_singular_values_workspace<T>(net.depth, net.widths))
        return kWorkspaceSmall;
    if (!routines_ready<T>()) return kNotRegistered;
    const index_t jac = network_jacobian_workspace<T>(net.depth, net.widths);
    const index_t n0 = net.n0(), nL = net.nL();
    const index_t jbytes = round_up(nL * n0 * index_t(sizeof(T)));
    T* J = reinterpret_cast<T*>(aligned_start(work + jac));
    const int status = jacobian_of(net, x, xs, J, n0, 1, work, jac);
    if (status != kOk) return status;
    double* rest = work + jac + bytes_to_doubles(jbytes);
    return singular_values<T>(J, nL, n0, n0, 1, s, ss, rest, lwork - (rest - work), true);
}

// The C-level entry points, over flat arguments.
template <class T>
int network_jacobian(index_t depth, const index_t* widths, const T* const* weights,
                     const index_t* weight_strides, const T* const* biases,
                     const index_t* bias_strides, const int* codes, const T* parameters,
                     const T* x, index_t xs, T* J, index_t J_rs, index_t J_cs, double* work,
                     index_t lwork) {
    return jacobian_of(network_of(depth, widths, weights, weight_strides, biases, bias_strides,
                                  codes, parameters),
                       x, xs, J, J_rs, J_cs, work, lwork);
}

template <class T>
int network_log_singular_values(index_t depth, const index_t* widths, const T* const* weights,
                                const index_t* weight_strides, const T* const* biases,
                                const index_t* bias_strides, const int* codes,
                                const T* parameters, const T* x, index_t xs, T* s, index_t ss,
                                double* work, index_t lwork) {
    return log_singular_values_of(network_of(depth, widths, weights, weight_strides, biases,
                                             bias_strides, codes, parameters),
                                  x, xs, s, ss, work, lwork);
}

// ---------------------------------------------------------------------------------------
// Registration of the BLAS/LAPACK routines by name ("dsyrk", "sgesdd", ...): a pointer
// read from scipy's capsules. Returns false for a name the kernels do not use.
inline bool set_routine(const char* name, void* pointer) {
    if (!name || !(name[0] == 'd' || name[0] == 's')) return false;
    const char* rest = name + 1;
    auto fill = [&](auto& r) {
        using R = std::remove_reference_t<decltype(r)>;
        if (!std::strcmp(rest, "syrk")) r.syrk = reinterpret_cast<decltype(R::syrk)>(pointer);
        else if (!std::strcmp(rest, "gesdd")) r.gesdd = reinterpret_cast<decltype(R::gesdd)>(pointer);
        else if (!std::strcmp(rest, "geqrf")) r.geqrf = reinterpret_cast<decltype(R::geqrf)>(pointer);
        else if (!std::strcmp(rest, "trtri")) r.trtri = reinterpret_cast<decltype(R::trtri)>(pointer);
        else if (!std::strcmp(rest, "potrf")) r.potrf = reinterpret_cast<decltype(R::potrf)>(pointer);
        else if (!std::strcmp(rest, "gemm")) r.gemm = reinterpret_cast<decltype(R::gemm)>(pointer);
        else if (!std::strcmp(rest, "bdsqr")) r.bdsqr = reinterpret_cast<decltype(R::bdsqr)>(pointer);
        else if (!std::strcmp(rest, "gebrd")) r.gebrd = reinterpret_cast<decltype(R::gebrd)>(pointer);
        else return false;
        return true;
    };
    return name[0] == 'd' ? fill(lapack::routines<double>()) : fill(lapack::routines<float>());
}

}  // namespace jacgeom::capi
