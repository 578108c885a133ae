// The products of the end-to-end chains (chain.hpp): C = diag(s) A B with the layer's
// scaling folded in.
//
// A chain multiplies one sample's partial product (a few hundred rows at most) by one
// layer's block d_l W_l, thousands of times, one product per thread at a time. They fit in
// the L2 cache, where a plain register-tiled loop needs no cache blocking, and at these sizes
// such a loop is ahead of OpenBLAS's AVX-512 kernels in float64, level in float32, and twice
// as fast as its AVX2 kernels (which it runs on AVX-512 CPUs it does not recognise, or when
// OPENBLAS_CORETYPE says so). So on CPUs with AVX-512 a kernel of jacgeom's own computes them
// (in the style of gram.hpp's Gram kernel): B is packed into column panels of one vector
// register's width (16 float32 or 8 float64 entries), and each register tile holds R = 4
// panel vectors of C = 6 output rows (24 accumulators, 4 panel vectors and one broadcast of
// the 32 zmm registers). Elsewhere, and where the panels one tile reads would not fit in L2,
// BLAS gemm on operands the chain gathers first.
//
// The kernel takes its operands where they lie, so that a dense layer costs the product's
// flops and nothing besides:
// - A's rows through an optional index (the live units of a layer: rows of W_l read in
//   place), each output row scaled by its unit's d_i after its sums (the D_l of the layer,
//   applied to 6 x 4 accumulators per tile instead of a scaled copy of W_l per sample);
// - B packed from any rows and columns of a matrix, each row scaled (the gather and the
//   scaling of a block done by the packing itself);
// - C written row-major, or straight into the panel layout that the next product reads as
//   its B (a chain accumulated from the input side never packs its partial product).
// The rates on the development machine are in docs/benchmarks.md.
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

// Entries of one panel row: one 64-byte vector.
template <class T>
constexpr index_t panel_width() {
    return 64 / static_cast<index_t>(sizeof(T));
}

// Whether the tiled kernel is in use for products of inner dimension up to k.
template <class T>
bool tiled_for(index_t k) {
#if JACGEOM_X86_DISPATCH
    return static_cast<Kernel>(kernel_setting().load()) == Kernel::avx512 &&
           static_cast<std::size_t>(k) * 4 * 64 <= kPanelGroupBytes;
#else
    (void)k;
    return false;
#endif
}

// Entries of a (rows x cols) matrix stored as panels: cols rounded up to the panel width.
template <class T>
index_t panel_entries(index_t rows, index_t cols) {
    constexpr index_t V = panel_width<T>();
    return rows * ((cols + V - 1) / V) * V;
}

// Rows of a matrix in place: entry (r, c) = scale_r * base[row_r * ld + col_c], with
// row_r = rows ? rows[r] : r, col_c = cols ? cols[c] : c and scale_r = scale ? scale[row_r] : 1
// (the scale indexed like the rows of base: a layer's d over its units).
template <class T>
struct Operand {
    const T* base;
    index_t ld;
    const index_t* rows = nullptr;
    const index_t* cols = nullptr;
    const T* scale = nullptr;
    index_t row(index_t r) const { return rows ? rows[r] : r; }
};

namespace detail {

constexpr int kTileRows = 6;
constexpr int kTilePanels = 4;

// M's (k x n) entries into panels of V columns: panel p holds, for each row i, the V entries
// of columns p V .. p V + V - 1 (zero past n).
template <class T, int V>
[[gnu::always_inline]] inline void pack(const Operand<T>& M, index_t k, index_t n, T* P) {
    const index_t np = (n + V - 1) / V;
    for (index_t i = 0; i < k; ++i) {
        const index_t ri = M.row(i);
        const T* w = M.base + ri * M.ld;
        const T s = M.scale ? M.scale[ri] : T(1);
        for (index_t p = 0; p < np; ++p) {
            const index_t j0 = p * V;
            T* o = P + p * k * V + i * V;
            if (M.cols == nullptr && j0 + V <= n) {
                for (int l = 0; l < V; ++l) o[l] = s * w[j0 + l];
            } else if (M.cols == nullptr) {
                for (int l = 0; l < V; ++l) o[l] = j0 + l < n ? s * w[j0 + l] : T(0);
            } else {
                for (int l = 0; l < V; ++l) o[l] = j0 + l < n ? s * w[M.cols[j0 + l]] : T(0);
            }
        }
    }
}

// Where the tile's results go: row-major (row stride n) or panels of V columns of `rows`
// rows each (pack's layout, the padding columns stored as the zeros they are).
template <class T>
struct Out {
    T* data;
    bool panels;
    index_t rows;
};

// One register tile: rows r0 .. r0 + C - 1 of A times panels p .. p + R - 1 (k rows), each
// output row scaled by its scale where A has one.
template <class T, int V, int R, int C>
[[gnu::always_inline]] inline void tile(const Operand<T>& A, index_t r0, const T* __restrict P, index_t k,
                                        index_t p, const Out<T>& o, index_t n) {
    typedef typename vec<T, V>::type v;
    const T* a[C];
    for (int c = 0; c < C; ++c) a[c] = A.base + A.row(r0 + c) * A.ld;
    const index_t stride = k * V;
    v acc[C][R];
    for (int c = 0; c < C; ++c)
        for (int h = 0; h < R; ++h) acc[c][h] = v{};
    const T* rp = P + p * stride;
    for (index_t i = 0; i < k; ++i) {
        v b[R];
        for (int h = 0; h < R; ++h) std::memcpy(&b[h], rp + h * stride + i * V, sizeof(v));
        for (int c = 0; c < C; ++c) {
            const T ai = a[c][i];
            for (int h = 0; h < R; ++h) acc[c][h] += b[h] * ai;
        }
    }
    if (A.scale)
        for (int c = 0; c < C; ++c) {
            const T s = A.scale[A.row(r0 + c)];
            for (int h = 0; h < R; ++h) acc[c][h] *= s;
        }
    for (int c = 0; c < C; ++c) {
        for (int h = 0; h < R; ++h) {
            const index_t col = (p + h) * V;
            if (o.panels) {
                std::memcpy(o.data + (p + h) * o.rows * V + (r0 + c) * V, &acc[c][h], sizeof(v));
                continue;
            }
            T* g = o.data + (r0 + c) * n + col;
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
[[gnu::always_inline]] inline void rows(const Operand<T>& A, index_t r, const T* P, index_t k, index_t p,
                                        const Out<T>& o, index_t n) {
    static_assert(C == 6, "the remainder tiles below are written for 6-row tiles");
    index_t i = 0;
    // A remainder of 1 or 2 rows would load 4 panel vectors per 4 or 8 multiply-adds: the
    // last full tile and it become 4 + 3 or 4 + 4 rows instead.
    const index_t full = (r % C == 1 || r % C == 2) && r > C ? r / C - 1 : r / C;
    for (; i < full * C; i += C) tile<T, V, R, C>(A, i, P, k, p, o, n);
    if (r - i == C + 1 || r - i == C + 2) {
        tile<T, V, R, 4>(A, i, P, k, p, o, n);
        i += 4;
    }
    switch (r - i) {
        case 5: tile<T, V, R, 5>(A, i, P, k, p, o, n); break;
        case 4: tile<T, V, R, 4>(A, i, P, k, p, o, n); break;
        case 3: tile<T, V, R, 3>(A, i, P, k, p, o, n); break;
        case 2: tile<T, V, R, 2>(A, i, P, k, p, o, n); break;
        case 1: tile<T, V, R, 1>(A, i, P, k, p, o, n); break;
        default: break;
    }
}

template <class T, int V>
[[gnu::always_inline]] inline void tiled(const Operand<T>& A, index_t r, const T* P, index_t k, index_t n,
                                         const Out<T>& o) {
    constexpr int R = kTilePanels, C = kTileRows;
    const index_t np = (n + V - 1) / V;
    index_t p = 0;
    for (; p + R <= np; p += R) rows<T, V, R, C>(A, r, P, k, p, o, n);
    for (; p < np; ++p) rows<T, V, 1, C>(A, r, P, k, p, o, n);
}

#if JACGEOM_X86_DISPATCH
template <class T>
JACGEOM_TARGET_AVX512 void pack_avx512(const Operand<T>& M, index_t k, index_t n, T* P) {
    pack<T, panel_width<T>()>(M, k, n, P);
}

template <class T>
JACGEOM_TARGET_AVX512 void tiled_avx512(const Operand<T>& A, index_t r, const T* P, index_t k, index_t n,
                                        const Out<T>& o) {
    tiled<T, panel_width<T>()>(A, r, P, k, n, o);
}
#endif

}  // namespace detail

// M's (k x n) entries (Operand's rule) as panels into P (panel_entries(k, n) entries), the
// layout `product` reads its right operand in. Only where tiled_for(k).
template <class T>
void pack(const Operand<T>& M, index_t k, index_t n, T* P) {
#if JACGEOM_X86_DISPATCH
    detail::pack_avx512(M, k, n, P);
#else
    (void)M, (void)k, (void)n, (void)P;
#endif
}

// C (r x n) = diag(s) A B: A's r rows of k entries (Operand's rows and scale; no column
// index), B (k x n) as panels (pack), C row-major (C[i, j] at C + i n + j) or, with
// `panels`, as panels of its r rows. C overlaps neither operand. Only where tiled_for(k).
template <class T>
void product(const Operand<T>& A, index_t r, const T* B, index_t k, index_t n, T* C, bool panels) {
    if (r == 0 || n == 0) return;
    if (k == 0) {
        std::fill(C, C + (panels ? panel_entries<T>(r, n) : r * n), T(0));
        return;
    }
#if JACGEOM_X86_DISPATCH
    detail::tiled_avx512(A, r, B, k, n, detail::Out<T>{C, panels, r});
#endif
}

// C (r x n) = A (r x k) B (k x n), all row-major and contiguous, by BLAS gemm.
template <class T>
void gemm(const T* A, const T* B, T* Cm, index_t r, index_t k, index_t n) {
    if (r == 0 || n == 0) return;
    if (k == 0) {
        std::fill(Cm, Cm + r * n, T(0));
        return;
    }
    const auto& L = lapack::get<T>();
    const int ri = static_cast<int>(r), ki = static_cast<int>(k), ni = static_cast<int>(n);
    const T one = 1, zero = 0;
    // Row-major C = A B is column-major C^T = B^T A^T.
    L.gemm("N", "N", &ni, &ri, &ki, &one, B, &ni, A, &ki, &zero, Cm, &ni);
}

}  // namespace product
}  // namespace jacgeom
