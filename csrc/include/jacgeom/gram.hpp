// Gram matrices G = A^T A of A = D W: the rows of W scaled by d, the rows with d_i = 0
// dropped. For one sample of a layer this is the pullback metric W^T D^2 W.
//
// On x86-64 with AVX2 or AVX-512 a register-tiled kernel of jacgeom's own computes it
// (detail::tiled); elsewhere, and for operands too large for its unblocked loops, BLAS
// syrk. Both compute each entry as one dot product over the active rows, so they differ by
// rounding only. Why not syrk everywhere: at the sizes of a layer (256 x 256, one sample
// per call, many calls) OpenBLAS's dsyrk runs below its own dgemm rate because it treats
// the diagonal blocks separately; the tiled kernel computes the diagonal blocks whole
// (V x V for a vector of V entries: 8 x 8 for float64 with AVX-512; a few percent more
// flops) and runs at the gemm rate. The measurements are in docs/benchmarks.md,
// "Measurements behind design choices".
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lapack.hpp"
#include "product.hpp"
#include "types.hpp"
#include "simd.hpp"

namespace jacgeom {

// Rows of D W with d_i != 0, compacted. Rows with d_i == 0 are exactly zero in D W and
// contribute nothing to J^T J or to the non-zero singular values, so every kernel below
// works on the k x n compacted matrix (k = number of non-zero d_i), which for relu halves
// the work on average. Row-major (k, n) unless col_major, then column-major with ld = k.
template <class T>
index_t gather_rows(const T* W, const T* d, index_t m, index_t n, T* out, bool col_major) {
    index_t k = 0;
    for (index_t i = 0; i < m; ++i) k += d[i] != T(0);
    index_t r = 0;
    for (index_t i = 0; i < m; ++i) {
        const T di = d[i];
        if (di == T(0)) continue;
        const T* w = W + i * n;
        if (col_major) {
            for (index_t j = 0; j < n; ++j) out[r + j * k] = di * w[j];
        } else {
            T* o = out + r * n;
            for (index_t j = 0; j < n; ++j) o[j] = di * w[j];
        }
        ++r;
    }
    return k;
}

// Copies the upper triangle of the column-major (n, n) g onto its lower triangle, in tiles
// so that the strided side of the transpose stays in L1 (a plain double loop walks a
// stride of n for every element: at n = 256 it cost as much as the syrk).
template <class T>
void mirror_upper(T* g, index_t n) {
    constexpr index_t tile = 32;
    for (index_t jb = 0; jb < n; jb += tile) {
        const index_t je = std::min(n, jb + tile);
        for (index_t ib = 0; ib <= jb; ib += tile) {
            for (index_t j = jb; j < je; ++j) {
                const index_t ie = std::min(j, ib + tile);
                for (index_t i = ib; i < ie; ++i) g[j + i * n] = g[i + j * n];
            }
        }
    }
}

namespace gram {

// The tiled kernel for AVX-512 or AVX2 (simd.hpp's instruction-set levels), or syrk.
enum class Kernel : int { blas = 0, avx2 = 1, avx512 = 2 };

static_assert(int(Kernel::blas) == int(Isa::baseline) && int(Kernel::avx2) == int(Isa::avx2) &&
                  int(Kernel::avx512) == int(Isa::avx512),
              "each kernel runs at its instruction-set level");

inline bool supported(Kernel k) { return cpu_supports(static_cast<Isa>(static_cast<int>(k))); }

inline Kernel best_supported() {
    if (supported(Kernel::avx512)) return Kernel::avx512;
    if (supported(Kernel::avx2)) return Kernel::avx2;
    return Kernel::blas;
}

// The kernel in use: the best the CPU supports, unless a test chose another (every one
// must give the same values up to rounding on the machine that runs the tests).
inline std::atomic<int>& kernel_setting() {
    static std::atomic<int> k{static_cast<int>(best_supported())};
    return k;
}

// The tiled kernel streams the packed operand (k x n, padded to the vector width) from
// panel q on once per C output rows of panel q, without blocking the row dimension as a
// BLAS does, so it wants the operand in cache: up to kTiledBytes = 8 MiB (a 1024 x 1024
// float64 operand) it is still ahead of syrk on one core (docs/benchmarks.md,
// "Measurements behind design choices"). Larger operands go to syrk.
constexpr std::size_t kTiledBytes = std::size_t(8) << 20;

// Per-thread scratch, reused across samples.
template <class T>
struct Workspace {
    std::vector<T> panels;
    std::vector<index_t> rows;
};

namespace detail {

// Packs the active rows of D W into column panels of V entries (product.hpp's packing of
// the rows with d_i != 0, each scaled by d_i): panel p holds, for each of the k active rows
// in order, the V entries of columns p V .. p V + V - 1 (zero past n). Returns k.
template <class T, int V>
[[gnu::always_inline]] inline index_t pack(const T* W, const T* d, index_t m, index_t n,
                                           Workspace<T>& ws) {
    ws.rows.clear();
    for (index_t i = 0; i < m; ++i)
        if (d[i] != T(0)) ws.rows.push_back(i);
    const index_t k = static_cast<index_t>(ws.rows.size());
    const index_t np = (n + V - 1) / V;
    ws.panels.resize(static_cast<std::size_t>(std::max<index_t>(1, k * np * V)));
    product::detail::pack<T, V>(product::Operand<T>{W, n, ws.rows.data(), nullptr, d}, k, n,
                                ws.panels.data());
    return k;
}

// One register tile: for the C output rows c = q V + coff .. + C - 1 and the R V columns
// of panels p .. p + R - 1, G[c, r] = sum_i P_q[i, c] P_p[i, r], the panel entries as
// vectors and the C row entries broadcast (R C accumulators). Stores what lies inside n.
template <class T, int V, int R, int C>
[[gnu::always_inline]] inline void tile(const T* __restrict P, index_t k, index_t q, index_t coff,
                                        index_t p, T* __restrict G, index_t n) {
    typedef typename vec<T, V>::type v;
    const index_t stride = k * V;
    v acc[C][R];
    for (int c = 0; c < C; ++c)
        for (int h = 0; h < R; ++h) acc[c][h] = v{};
    const T* cp = P + q * stride + coff;
    const T* rp = P + p * stride;
    for (index_t i = 0; i < k; ++i) {
        v a[R];
        for (int h = 0; h < R; ++h) std::memcpy(&a[h], rp + h * stride + i * V, sizeof(v));
        for (int c = 0; c < C; ++c) {
            const T b = cp[i * V + c];
            for (int h = 0; h < R; ++h) acc[c][h] += a[h] * b;
        }
    }
    for (int c = 0; c < C; ++c) {
        const index_t row = q * V + coff + c;
        if (row >= n) break;
        for (int h = 0; h < R; ++h) {
            const index_t col = (p + h) * V;
            T* g = G + row * n + col;
            if (col + V <= n) {
                std::memcpy(g, &acc[c][h], sizeof(v));
            } else {
                for (index_t l = 0; col + l < n; ++l) g[l] = acc[c][h][l];
            }
        }
    }
}

// G (n, n) row-major = (D W)^T (D W) from the k rows of D W packed in P (pack's layout).
// Computes, for each panel q of V output rows, the columns from panel q on (the diagonal
// V x V blocks whole), then copies the upper triangle onto the lower one (the diagonal
// blocks' lower halves equal their mirror images already, except for the sign a NaN takes
// from its first operand: copied too, so that G is bitwise symmetric).
template <class T, int V, int R, int C>
[[gnu::always_inline]] inline void tiled_panels(const T* P, index_t k, index_t n, T* G) {
    static_assert(V % C == 0, "output rows are taken C at a time from a panel");
    if (k == 0) {
        std::fill(G, G + n * n, T(0));
        return;
    }
    const index_t np = (n + V - 1) / V;
    for (index_t q = 0; q < np; ++q) {
        for (index_t coff = 0; coff < V && q * V + coff < n; coff += C) {
            index_t p = q;
            for (; p + R <= np; p += R) tile<T, V, R, C>(P, k, q, coff, p, G, n);
            for (; p < np; ++p) tile<T, V, 1, C>(P, k, q, coff, p, G, n);
        }
    }
    for (index_t bi = 0; bi < np; ++bi) {
        const index_t ce = std::min(n, (bi + 1) * V);
        for (index_t bj = bi; bj < np; ++bj) {
            const index_t re = std::min(n, (bj + 1) * V);
            for (index_t r = bj * V; r < re; ++r)
                for (index_t c = bi * V; c < std::min(ce, r); ++c) G[r * n + c] = G[c * n + r];
        }
    }
}

// G (n, n) row-major = (D W)^T (D W): pack, then the tiles.
template <class T, int V, int R, int C>
[[gnu::always_inline]] inline void tiled(const T* W, const T* d, index_t m, index_t n,
                                         Workspace<T>& ws, T* G) {
    const index_t k = pack<T, V>(W, d, m, n, ws);
    tiled_panels<T, V, R, C>(ws.panels.data(), k, n, G);
}

#if JACGEOM_X86_DISPATCH
// 32 zmm registers: 2 x 8 accumulators, two panel vectors and a broadcast.
template <class T>
JACGEOM_TARGET_AVX512 void tiled_avx512(const T* W, const T* d, index_t m, index_t n,
                                        Workspace<T>& ws, T* G) {
    tiled<T, 64 / sizeof(T), 2, 8>(W, d, m, n, ws, G);
}

// 16 ymm registers: 2 x 4 accumulators, two panel vectors and a broadcast (a 3 x 4 tile spills
// accumulators to the stack).
template <class T>
JACGEOM_TARGET_AVX2 void tiled_avx2(const T* W, const T* d, index_t m, index_t n,
                                    Workspace<T>& ws, T* G) {
    tiled<T, 32 / sizeof(T), 2, 4>(W, d, m, n, ws, G);
}
#endif

// syrk takes 32-bit sizes, so the active rows are accumulated in blocks of at most kBlasRows
// (one block for any layer of realistic height; the workspace holds one block).
constexpr index_t kBlasRows = index_t(1) << 16;

template <class T>
void blas(const T* W, const T* d, index_t m, index_t n, Workspace<T>& ws, T* G) {
    const int nn = static_cast<int>(n);
    const T one = 1;
    bool first = true;
    for (index_t i0 = 0; i0 < m; i0 += kBlasRows) {
        const index_t rows = std::min(kBlasRows, m - i0);
        ws.panels.resize(static_cast<std::size_t>(std::max<index_t>(1, rows * n)));
        const index_t k = gather_rows(W + i0 * n, d + i0, rows, n, ws.panels.data(), false);
        if (k == 0) continue;
        const int kk = static_cast<int>(k);
        const T beta = first ? T(0) : T(1);
        // Row-major A (k, n) is column-major A^T (n, k): syrk('N') gives A^T A.
        lapack::get<T>().syrk("U", "N", &nn, &kk, &one, ws.panels.data(), &nn, &beta, G, &nn);
        first = false;
    }
    if (first) {
        std::fill(G, G + n * n, T(0));
        return;
    }
    mirror_upper(G, n);
}

}  // namespace detail

// G (n, n), row-major, = W^T diag(d)^2 W for W (m, n) row-major and d (m,).
template <class T>
void scaled_gram(const T* W, const T* d, index_t m, index_t n, Workspace<T>& ws, T* G) {
    if (n == 0) return;
#if JACGEOM_X86_DISPATCH
    const auto kernel = static_cast<Kernel>(kernel_setting().load());
    if (kernel != Kernel::blas) {
        index_t k = 0;
        for (index_t i = 0; i < m; ++i) k += d[i] != T(0);
        const index_t width = kernel == Kernel::avx512 ? 64 / sizeof(T) : 32 / sizeof(T);
        const index_t padded = (n + width - 1) / width * width;
        const auto bytes = static_cast<std::size_t>(k * padded) * sizeof(T);
        if (bytes <= kTiledBytes) {
            if (kernel == Kernel::avx512)
                detail::tiled_avx512(W, d, m, n, ws, G);
            else
                detail::tiled_avx2(W, d, m, n, ws, G);
            return;
        }
    }
#endif
    detail::blas(W, d, m, n, ws, G);
}

}  // namespace gram
}  // namespace jacgeom
