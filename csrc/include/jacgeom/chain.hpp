// End-to-end Jacobians of plain layers on their active sub-blocks.
//
// J = D_L W_L ... D_1 W_1. Rows of D_l W_l with d_i = 0 are zero, and so are the matching
// columns of the next factor's contribution, so J restricted to the active rows S_L is
//   d_L[S_L] W_L[S_L, S_{L-1}] d_{L-1}[S_{L-1}] ... d_1[S_1] W_1[S_1, :]
// with S_0 = all inputs: the same non-zero entries from sub-blocks k_l x k_{l-1}. For relu
// (k_l ~ n_l / 2) that is about a quarter of the dense flops. Each sample runs its own
// chain of row-major gemms (through scipy's BLAS, one thread per sample).
//
// Accumulation order: forward (from the input) costs n0 sum_(l>=2) k_l k_(l-1) flops per
// sample, reverse (from the output) k_L sum_(l<L) k_l k_(l-1) (k_0 = n0). Each sample takes
// the cheaper for its own active counts (for relu k_L ~ n_L / 2, so reverse wins even when
// n_L = n0); the caller's `reverse` breaks ties.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lapack.hpp"
#include "parallel.hpp"

namespace jacgeom {

using index_t = std::int64_t;

template <class T>
struct ChainArgs {
    std::vector<const T*> W;  // layer l: (widths[l+1], widths[l]) row-major
    std::vector<index_t> W_stride;  // 0: shared by all samples; else elements per sample
    std::vector<const T*> D;  // layer l: (B, widths[l+1]) row-major
    std::vector<index_t> widths;  // n0, n1, ..., nL
    index_t B;
    bool reverse;
    T* J;  // (B, nL, n0)
};

namespace detail {

// C (r x c) = A (r x k) B (k x c), all row-major and contiguous.
template <class T>
inline void matmul(const T* A, const T* Bm, T* C, index_t r, index_t k, index_t c) {
    if (r == 0 || c == 0) return;
    if (k == 0) {
        std::fill(C, C + r * c, T(0));
        return;
    }
    const auto& L = lapack::get<T>();
    const int ri = static_cast<int>(r), ki = static_cast<int>(k), ci = static_cast<int>(c);
    const T one = 1, zero = 0;
    L.gemm("N", "N", &ci, &ri, &ki, &one, Bm, &ci, A, &ki, &zero, C, &ci);
}

}  // namespace detail

template <class T>
void chain_active(const ChainArgs<T>& a) {
    const index_t L = static_cast<index_t>(a.W.size());
    const index_t n0 = a.widths[0], nL = a.widths[static_cast<size_t>(L)];
    index_t wmax = 0;
    for (index_t w : a.widths) wmax = std::max(wmax, w);
    parallel_for(a.B, 1, [&](index_t, index_t begin, index_t end) {
        std::vector<std::vector<index_t>> S(static_cast<size_t>(L + 1));
        std::vector<T> sub(static_cast<size_t>(std::max<index_t>(1, wmax * wmax)));
        const index_t buf = std::max<index_t>(1, wmax * std::max(n0, nL));
        std::vector<T> P(static_cast<size_t>(buf)), Q(static_cast<size_t>(buf));
        for (index_t b = begin; b < end; ++b) {
            S[0].resize(static_cast<size_t>(n0));
            for (index_t j = 0; j < n0; ++j) S[0][static_cast<size_t>(j)] = j;
            for (index_t l = 0; l < L; ++l) {
                const T* d = a.D[static_cast<size_t>(l)] + b * a.widths[static_cast<size_t>(l + 1)];
                auto& s = S[static_cast<size_t>(l + 1)];
                s.clear();
                for (index_t i = 0; i < a.widths[static_cast<size_t>(l + 1)]; ++i)
                    if (d[i] != T(0)) s.push_back(i);
            }
            // Gather d_l[S_l] W_l[S_l, S_{l-1}] into `sub` (k_l x k_{l-1}), row-major.
            auto gather = [&](index_t l) {
                const auto& rows = S[static_cast<size_t>(l + 1)];
                const auto& cols = S[static_cast<size_t>(l)];
                const index_t ncol = a.widths[static_cast<size_t>(l)];
                const T* W = a.W[static_cast<size_t>(l)] + b * a.W_stride[static_cast<size_t>(l)];
                const T* d = a.D[static_cast<size_t>(l)] + b * a.widths[static_cast<size_t>(l + 1)];
                const index_t kc = static_cast<index_t>(cols.size());
                for (size_t r = 0; r < rows.size(); ++r) {
                    const T di = d[rows[r]];
                    const T* w = W + rows[r] * ncol;
                    T* o = sub.data() + static_cast<index_t>(r) * kc;
                    if (kc == ncol) {
                        // every column live (no dead unit below, as with tanh): a contiguous,
                        // vectorisable scaled copy instead of an indexed gather
                        for (index_t c = 0; c < kc; ++c) o[c] = di * w[c];
                    } else {
                        for (index_t c = 0; c < kc; ++c) o[c] = di * w[cols[static_cast<size_t>(c)]];
                    }
                }
            };
            const index_t kL = static_cast<index_t>(S[static_cast<size_t>(L)].size());
            T* out = a.J + b * nL * n0;
            std::fill(out, out + nL * n0, T(0));
            if (kL == 0) continue;
            T* cur = P.data();
            T* nxt = Q.data();
            // Both orders multiply the same sub-blocks k_(l+1) x k_l except one end's.
            const auto block = [&](index_t l) {
                return double(S[static_cast<size_t>(l + 1)].size()) * double(S[static_cast<size_t>(l)].size());
            };
            double all = 0;
            for (index_t l = 0; l < L; ++l) all += block(l);
            const double fwd = double(n0) * (all - block(0)), rev = double(kL) * (all - block(L - 1));
            if (fwd < rev || (fwd == rev && !a.reverse)) {
                // P = d_1 W_1[S_1, :] (k_1 x n0), then P <- sub_l P.
                gather(0);
                const index_t k1 = static_cast<index_t>(S[1].size());
                std::memcpy(cur, sub.data(), sizeof(T) * static_cast<size_t>(k1 * n0));
                for (index_t l = 1; l < L; ++l) {
                    gather(l);
                    const index_t kr = static_cast<index_t>(S[static_cast<size_t>(l + 1)].size());
                    const index_t kc = static_cast<index_t>(S[static_cast<size_t>(l)].size());
                    detail::matmul(sub.data(), cur, nxt, kr, kc, n0);
                    std::swap(cur, nxt);
                }
            } else {
                // R = sub_L (k_L x k_{L-1}), then R <- R sub_l down to the input.
                gather(L - 1);
                const index_t kc0 = static_cast<index_t>(S[static_cast<size_t>(L - 1)].size());
                const index_t c0 = L - 1 == 0 ? n0 : kc0;
                std::memcpy(cur, sub.data(), sizeof(T) * static_cast<size_t>(kL * c0));
                for (index_t l = L - 2; l >= 0; --l) {
                    gather(l);
                    const index_t kr = static_cast<index_t>(S[static_cast<size_t>(l + 1)].size());
                    const index_t kc = l == 0 ? n0 : static_cast<index_t>(S[static_cast<size_t>(l)].size());
                    detail::matmul(cur, sub.data(), nxt, kL, kr, kc);
                    std::swap(cur, nxt);
                }
            }
            const auto& rows = S[static_cast<size_t>(L)];
            for (size_t r = 0; r < rows.size(); ++r)
                std::memcpy(out + rows[r] * n0, cur + static_cast<index_t>(r) * n0, sizeof(T) * static_cast<size_t>(n0));
        }
    });
}

}  // namespace jacgeom
