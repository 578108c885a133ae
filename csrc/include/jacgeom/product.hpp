// C = A B for the small row-major products of the end-to-end chains (chain.hpp).
//
// A chain multiplies one sample's partial product (a few hundred rows at most) by one
// layer's scaled block, thousands of times, one product per thread at a time. They fit in
// the L2 cache, where a plain register-tiled loop needs no cache blocking, and at these sizes
// such a loop is ahead of OpenBLAS's AVX-512 kernels in float64, level in float32, and twice
// as fast as its AVX2 kernels (which it runs on AVX-512 CPUs it does not recognise, or when
// OPENBLAS_CORETYPE says so). So on CPUs with AVX-512 a kernel of jacgeom's own computes them
// (detail::tiled, in the style of gram.hpp's Gram kernel): B is packed into column panels of
// one vector register's width (16 float32 or 8 float64 entries), and each register tile
// holds R = 4 panel vectors of C = 6 output rows (24 accumulators, 4 panel vectors and one
// broadcast of the 32 zmm registers). Elsewhere, and where the panels one tile reads would
// not fit in L2, BLAS gemm.
// The rates of both on the development machine are in docs/benchmarks.md.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "lapack.hpp"
#include "simd.hpp"
#include "types.hpp"

namespace jacgeom {
namespace product {

// The tiled kernel (AVX-512) or BLAS gemm.
enum class Kernel : int { blas = 0, avx512 = 2 };

inline bool supported(Kernel k) { return cpu_supports(static_cast<Isa>(static_cast<int>(k))); }

// The kernel in use: the tiled one where the CPU supports it, unless a test chose BLAS
// (both must give the same values up to rounding).
inline std::atomic<int>& kernel_setting() {
    static std::atomic<int> k{static_cast<int>(supported(Kernel::avx512) ? Kernel::avx512 : Kernel::blas)};
    return k;
}

// One tile reads R = 4 panels of k rows of one 64-byte vector each (256 k bytes): at most this
// many bytes, half of a 1 MiB L2, so that they stay cached while the tile's rows of A stream
// past; k <= 2048 in either dtype.
constexpr std::size_t kPanelGroupBytes = std::size_t(1) << 19;

// Per-thread scratch, reused across products.
template <class T>
struct Workspace {
    std::vector<T> panels;
};

namespace detail {

constexpr int kTileRows = 6;
constexpr int kTilePanels = 4;

// B (k x n) row-major into panels of V columns: panel p holds, for each row i, the V entries
// of columns p V .. p V + V - 1 (zero past n).
template <class T, int V>
[[gnu::always_inline]] inline void pack(const T* B, index_t k, index_t n, T* P) {
    const index_t np = (n + V - 1) / V;
    for (index_t p = 0; p < np; ++p) {
        const index_t j0 = p * V;
        T* o = P + p * k * V;
        if (j0 + V <= n) {
            for (index_t i = 0; i < k; ++i) std::memcpy(o + i * V, B + i * n + j0, sizeof(T) * V);
        } else {
            for (index_t i = 0; i < k; ++i)
                for (index_t l = 0; l < V; ++l) o[i * V + l] = j0 + l < n ? B[i * n + j0 + l] : T(0);
        }
    }
}

// One register tile: rows 0 .. C - 1 of A (row stride k) times panels p .. p + R - 1, into the
// matching rows and columns of C (row stride n); stores what lies inside n.
template <class T, int V, int R, int C>
[[gnu::always_inline]] inline void tile(const T* __restrict A, const T* __restrict P, index_t k,
                                        index_t p, T* __restrict Cm, index_t n) {
    typedef typename vec<T, V>::type v;
    const index_t stride = k * V;
    v acc[C][R];
    for (int c = 0; c < C; ++c)
        for (int h = 0; h < R; ++h) acc[c][h] = v{};
    const T* rp = P + p * stride;
    for (index_t i = 0; i < k; ++i) {
        v b[R];
        for (int h = 0; h < R; ++h) std::memcpy(&b[h], rp + h * stride + i * V, sizeof(v));
        for (int c = 0; c < C; ++c) {
            const T a = A[c * k + i];
            for (int h = 0; h < R; ++h) acc[c][h] += b[h] * a;
        }
    }
    for (int c = 0; c < C; ++c) {
        for (int h = 0; h < R; ++h) {
            const index_t col = (p + h) * V;
            T* g = Cm + c * n + col;
            if (col + V <= n) {
                std::memcpy(g, &acc[c][h], sizeof(v));
            } else {
                for (index_t l = 0; col + l < n; ++l) g[l] = acc[c][h][l];
            }
        }
    }
}

// Rows of A in tiles of C, the last r mod C in one narrower tile, against panels p .. p + R - 1.
template <class T, int V, int R, int C>
[[gnu::always_inline]] inline void rows(const T* A, const T* P, index_t r, index_t k, index_t p, T* Cm,
                                        index_t n) {
    static_assert(C == 6, "the remainder tiles below are written for 6-row tiles");
    index_t i = 0;
    for (; i + C <= r; i += C) tile<T, V, R, C>(A + i * k, P, k, p, Cm + i * n, n);
    const T* a = A + i * k;
    T* c = Cm + i * n;
    switch (r - i) {
        case 5: tile<T, V, R, 5>(a, P, k, p, c, n); break;
        case 4: tile<T, V, R, 4>(a, P, k, p, c, n); break;
        case 3: tile<T, V, R, 3>(a, P, k, p, c, n); break;
        case 2: tile<T, V, R, 2>(a, P, k, p, c, n); break;
        case 1: tile<T, V, R, 1>(a, P, k, p, c, n); break;
        default: break;
    }
}

template <class T, int V>
[[gnu::always_inline]] inline void tiled(const T* A, const T* B, T* Cm, index_t r, index_t k, index_t n,
                                         Workspace<T>& ws) {
    constexpr int R = kTilePanels, C = kTileRows;
    const index_t np = (n + V - 1) / V;
    ws.panels.resize(static_cast<std::size_t>(np * k * V));
    pack<T, V>(B, k, n, ws.panels.data());
    const T* P = ws.panels.data();
    index_t p = 0;
    for (; p + R <= np; p += R) rows<T, V, R, C>(A, P, r, k, p, Cm, n);
    for (; p < np; ++p) rows<T, V, 1, C>(A, P, r, k, p, Cm, n);
}

#if JACGEOM_X86_DISPATCH
template <class T>
JACGEOM_TARGET_AVX512 void tiled_avx512(const T* A, const T* B, T* Cm, index_t r, index_t k, index_t n,
                                        Workspace<T>& ws) {
    tiled<T, 64 / sizeof(T)>(A, B, Cm, r, k, n, ws);
}
#endif

template <class T>
void blas(const T* A, const T* B, T* Cm, index_t r, index_t k, index_t n) {
    const auto& L = lapack::get<T>();
    const int ri = static_cast<int>(r), ki = static_cast<int>(k), ni = static_cast<int>(n);
    const T one = 1, zero = 0;
    // Row-major C = A B is column-major C^T = B^T A^T.
    L.gemm("N", "N", &ni, &ri, &ki, &one, B, &ni, A, &ki, &zero, Cm, &ni);
}

}  // namespace detail

// C (r x n) = A (r x k) B (k x n), all row-major and contiguous, C not overlapping A or B.
template <class T>
void matmul(const T* A, const T* B, T* Cm, index_t r, index_t k, index_t n, Workspace<T>& ws) {
    if (r == 0 || n == 0) return;
    if (k == 0) {
        std::fill(Cm, Cm + r * n, T(0));
        return;
    }
#if JACGEOM_X86_DISPATCH
    constexpr index_t V = 64 / sizeof(T);
    const auto group = static_cast<std::size_t>(k) * detail::kTilePanels * V * sizeof(T);
    if (static_cast<Kernel>(kernel_setting().load()) == Kernel::avx512 && group <= kPanelGroupBytes) {
        detail::tiled_avx512(A, B, Cm, r, k, n, ws);
        return;
    }
#else
    (void)ws;
#endif
    detail::blas(A, B, Cm, r, k, n);
}

}  // namespace product
}  // namespace jacgeom
