// End-to-end Jacobians of plain layers on their active sub-blocks.
//
// J = D_L W_L ... D_1 W_1. Rows of D_l W_l with d_i = 0 are zero, and so are the matching
// columns of the next factor's contribution, so J restricted to the active rows S_L is
//   d_L[S_L] W_L[S_L, S_{L-1}] d_{L-1}[S_{L-1}] ... d_1[S_1] W_1[S_1, :]
// with S_0 = all inputs: the same non-zero entries from sub-blocks k_l x k_{l-1}. For relu
// (k_l ~ n_l / 2) that is about a quarter of the dense flops. Each sample runs its own
// chain of row-major products (product.hpp: jacgeom's own AVX-512 kernel or scipy's BLAS),
// one thread per sample.
//
// Accumulation order: forward (from the input) costs n0 sum_(l>=2) k_l k_(l-1) flops per
// sample, reverse (from the output) k_L sum_(l<L) k_l k_(l-1) (k_0 = n0). Each sample takes
// the cheaper for its own active counts (for relu k_L ~ n_L / 2, so reverse wins even when
// n_L = n0); the caller's `reverse` breaks ties.
// Singular values (chain_singular_values): the product splits at its narrowest layer j
// (k_j = min over 0..L of the active counts, k_0 = n0), J = A B with A = blocks above j
// (k_L x k_j) and B = blocks below (k_j x n0). Both are accumulated from layer j outwards,
// so every gemm has k_j as one side: k_j sum_l k_l k_(l-1) flops instead of
// min(n0, k_L) sum_l k_l k_(l-1). Then B^T = Q R (geqrf, Q orthonormal columns) gives
// J = A R^T Q^T, so the non-zero singular values of J are those of the k_L x k_j matrix
// A R^T: a smaller SVD than the k_L x n0 one of the live rows of J, with no dense J written.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "lapack.hpp"
#include "types.hpp"
#include "parallel.hpp"
#include "product.hpp"
#include "svd.hpp"

namespace jacgeom {

template <class T>
struct ChainArgs {
    std::vector<const T*> W;  // layer l: (widths[l+1], widths[l]) row-major
    std::vector<index_t> W_stride;  // 0: shared by all samples; else elements per sample
    std::vector<const T*> D;  // layer l: (B, widths[l+1]) row-major
    std::vector<index_t> widths;  // n0, n1, ..., nL
    index_t widest() const {
        index_t w = 1;
        for (index_t x : widths) w = std::max(w, x);
        return w;
    }
    // max(n0, nL): every partial product from either end has at most widest() x ends()
    // entries, and every core of a spectrum at most ends() x ends() (a split lies where the
    // active count is below both ends), so scratch is sized by these, never widest()^2 (a
    // network 16 -> 4000 -> 16 needs 64,000 entries per buffer, not 16 million).
    index_t ends() const { return std::max<index_t>(1, std::max(widths.front(), widths.back())); }
    // ends() rounded up to a whole panel of the tiled kernel (16 entries covers both dtypes):
    // the columns of a partial product's buffer, which may hold it as panels.
    index_t buffer_columns() const { return (ends() + 15) / 16 * 16; }
    // The largest layer block, n_l x n_(l-1) entries.
    index_t largest_block() const {
        index_t m = 1;
        for (size_t l = 0; l + 1 < widths.size(); ++l) m = std::max(m, widths[l] * widths[l + 1]);
        return m;
    }
    index_t B;
    bool reverse;
    T* J;  // (B, nL, n0)
};


namespace detail {

// One thread's view of the active sub-blocks of one sample at a time.
template <class T>
class ActiveChain {
    const ChainArgs<T>& a_;
    index_t L_;
    std::vector<std::vector<index_t>> S_;  // S_[0] = all inputs, S_[l+1] = live units of layer l
    std::vector<double> wlog_;  // log2 max |W_l| (NaN for per-sample weights: unknown)
    std::vector<double> blog_;  // log2 of a bound on |entries| of block l of the loaded sample
    index_t b_ = 0;

   public:
    std::vector<T> sub;  // the last gathered block, row-major
    std::vector<T> packed;  // the last block packed for the tiled kernel
    // The tiled kernel for every product of this chain (inner dimensions up to widest()),
    // or BLAS for every one.
    const bool tiled_;

    explicit ActiveChain(const ChainArgs<T>& a)
        : a_(a), L_(static_cast<index_t>(a.W.size())), S_(static_cast<size_t>(L_ + 1)),
          wlog_(static_cast<size_t>(L_)), blog_(static_cast<size_t>(L_)),
          tiled_(product::tiled_for<T>(a.widest())) {
        sub.resize(static_cast<size_t>(a.largest_block()));
        const index_t n0 = a.widths[0];
        S_[0].resize(static_cast<size_t>(n0));
        for (index_t j = 0; j < n0; ++j) S_[0][static_cast<size_t>(j)] = j;
        for (index_t l = 0; l < L_; ++l) {
            const size_t ls = static_cast<size_t>(l);
            if (a.W_stride[ls] != 0) {
                wlog_[ls] = std::numeric_limits<double>::quiet_NaN();
                continue;
            }
            T m = 0;
            const index_t n = a.widths[ls] * a.widths[ls + 1];
            for (index_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a.W[ls][i]));
            wlog_[ls] = std::log2(double(m));
        }
    }

    // Active sets of sample b.
    void load(index_t b) {
        b_ = b;
        for (index_t l = 0; l < L_; ++l) {
            const index_t w = a_.widths[static_cast<size_t>(l + 1)];
            const T* d = a_.D[static_cast<size_t>(l)] + b * w;
            auto& s = S_[static_cast<size_t>(l + 1)];
            s.clear();
            T dmax = 0;
            for (index_t i = 0; i < w; ++i)
                if (d[i] != T(0)) {
                    s.push_back(i);
                    dmax = std::max(dmax, std::fabs(d[i]));
                }
            blog_[static_cast<size_t>(l)] = wlog_[static_cast<size_t>(l)] + std::log2(double(dmax));
        }
    }

    // k_j: n0 for j = 0, the live units of layer j - 1 otherwise.
    index_t k(index_t j) const { return static_cast<index_t>(S_[static_cast<size_t>(j)].size()); }
    const std::vector<index_t>& live(index_t j) const { return S_[static_cast<size_t>(j)]; }
    // Flops-per-row of block l (k_(l+1) x k_l).
    double block(index_t l) const { return l < 0 || l >= L_ ? 0.0 : double(k(l + 1)) * double(k(l)); }
    double blocks() const {
        double all = 0;
        for (index_t l = 0; l < L_; ++l) all += block(l);
        return all;
    }

    // d_l[S_(l+1)] W_l[S_(l+1), S_l] (k_(l+1) x k_l) as the product kernel's operand:
    // W_l's entries in place, its live rows and columns through the index of each (none
    // where every unit is live), scaled by d_l over the rows.
    product::Operand<T> block_operand(index_t l) const {
        const size_t ls = static_cast<size_t>(l);
        const index_t ncol = a_.widths[ls];
        const auto& rows = S_[ls + 1];
        const auto& cols = S_[ls];
        return {a_.W[ls] + b_ * a_.W_stride[ls], ncol,
                static_cast<index_t>(rows.size()) == a_.widths[ls + 1] ? nullptr : rows.data(),
                static_cast<index_t>(cols.size()) == ncol ? nullptr : cols.data(),
                a_.D[ls] + b_ * a_.widths[ls + 1]};
    }

    // d_l[S_(l+1)] W_l[S_(l+1), S_l] into `out` (k_(l+1) x k_l), row-major.
    void gather(index_t l, T* out) const {
        const product::Operand<T> M = block_operand(l);
        const index_t kr = k(l + 1), kc = k(l);
        for (index_t r = 0; r < kr; ++r) {
            const index_t ri = M.row(r);
            const T di = M.scale[ri];
            const T* w = M.base + ri * M.ld;
            T* o = out + r * kc;
            if (M.cols == nullptr) {
                // every column live (no dead unit below, as with tanh): a contiguous,
                // vectorisable scaled copy instead of an indexed gather
                for (index_t c = 0; c < kc; ++c) o[c] = di * w[c];
            } else {
                for (index_t c = 0; c < kc; ++c) o[c] = di * w[M.cols[c]];
            }
        }
    }

    // Blocks hi-1 .. lo multiplied from the top down: R = block(hi-1), R <- R block(l);
    // (k_hi x k_lo) row-major in `cur` (hi > lo), equal to the product times 2^-e (e added
    // to `e`). `nxt` is scratch; the last product goes to `last` instead where given (room
    // for k_hi x k_lo; not with one block, which stays in `cur`); returns where R is. `cur`
    // and `nxt` hold k_hi x max(k) entries.
    // The tiled kernel packs each block straight from W_l (gathered and scaled by the
    // packing); BLAS multiplies by a gathered copy.
    T* right_to(index_t hi, index_t lo, T* cur, T* nxt, int& e, T* last = nullptr) {
        gather(hi - 1, cur);
        double u = blog_[static_cast<size_t>(hi - 1)];
        guard(cur, k(hi) * k(hi - 1), u, e, 0.0);
        for (index_t l = hi - 2; l >= lo; --l) {
            const double grow = blog_[static_cast<size_t>(l)] + std::log2(double(std::max<index_t>(1, k(l + 1))));
            guard(cur, k(hi) * k(l + 1), u, e, grow);  // before: the product must fit
            T* dst = l == lo && last ? last : nxt;
            if (tiled_) {
                const auto need = static_cast<size_t>(product::panel_entries<T>(k(l + 1), k(l)));
                if (packed.size() < need) packed.resize(need);
                T* P = packed.data();
                product::pack(block_operand(l), k(l + 1), k(l), P);
                product::product(product::Operand<T>{cur, k(l + 1)}, k(hi), P, k(l + 1), k(l), dst, false);
            } else {
                gather(l, sub.data());
                product::gemm(cur, sub.data(), dst, k(hi), k(l + 1), k(l));
            }
            nxt = cur;
            cur = dst;
            u += grow;
            guard(cur, k(hi) * k(l), u, e, 0.0);
        }
        return cur;
    }

    // Blocks lo .. hi-1 multiplied from the bottom up: C = block(lo), C <- block(l) C;
    // (k_hi x k_lo) row-major, the product times 2^-e (hi > lo); `last` as in right_to;
    // `cur` and `nxt` hold widest() x buffer_columns() entries (C may be stored as panels).
    // With the tiled kernel, C stays in the kernel's panel layout between products (the
    // last one writes it row-major), and where every column of W_l is live the product
    // reads W_l's rows in place and scales its results by d_l: a dense chain multiplies
    // without a copy. Elsewhere a gathered copy of the block.
    T* left_to(index_t lo, index_t hi, T* cur, T* nxt, int& e, T* last = nullptr) {
        const bool in_panels = tiled_ && hi - lo > 1;
        const index_t klo = k(lo);
        auto entries = [&](index_t rows, bool p) { return p ? product::panel_entries<T>(rows, klo) : rows * klo; };
        if (in_panels)
            product::pack(block_operand(lo), k(lo + 1), klo, cur);
        else
            gather(lo, cur);
        double u = blog_[static_cast<size_t>(lo)];
        guard(cur, entries(k(lo + 1), in_panels), u, e, 0.0);
        for (index_t l = lo + 1; l < hi; ++l) {
            const size_t ls = static_cast<size_t>(l);
            const double width = std::log2(double(std::max<index_t>(1, k(l))));
            const double grow = blog_[ls] + width;
            product::Operand<T> A = block_operand(l);
            // In place, W_l C is formed before the scaling by d_l. guard keeps C's entries
            // below 2^kBand, so W_l C cannot overflow where max |W_l| k_l stays kBand inside
            // the range's ends; with |d_l| <= 2 its sums are at least half the scaled ones,
            // so nothing underflows that the scaled product keeps. Plain networks always
            // qualify; other layers are gathered scaled.
            const double unscaled = wlog_[ls] + width;
            const bool in_place = in_panels && A.cols == nullptr && unscaled <= kTop - kBand &&
                                  unscaled >= kBottom + kBand && blog_[ls] - wlog_[ls] <= 1.0;
            guard(cur, entries(k(l), in_panels), u, e, grow);
            const bool final = l == hi - 1;
            T* dst = final && last ? last : nxt;
            if (in_panels) {
                if (!in_place) {
                    gather(l, sub.data());
                    A = product::Operand<T>{sub.data(), k(l)};
                }
                product::product(A, k(l + 1), cur, k(l), klo, dst, !final);
            } else {
                gather(l, sub.data());
                product::gemm(sub.data(), cur, dst, k(l + 1), k(l), klo);
            }
            nxt = cur;
            cur = dst;
            u += grow;
            guard(cur, entries(k(l + 1), in_panels && !final), u, e, 0.0);
        }
        return cur;
    }

    // A partial product can leave the floating-point range where the whole product does
    // not (a split's two factors, a run of tiny then huge layers). u is log2 of an upper
    // bound on its entries (max |d_l| max |W_l| times the inner dimension per product). x is
    // scanned only when u leaves [-kBand, kBand], or when u + grow (the bound after the next
    // product) would come within a tenth of the type's exponent range of overflow or
    // underflow; then, if its largest entry lies outside [2^-16, 2^16], it is brought into
    // [0.5, 1) by a power of two (exact), the exponent added to e and u reset. For plain
    // networks the bound grows by about log2(width) per layer: one scan in tens of layers.
    static constexpr double kBand = std::numeric_limits<T>::max_exponent / 4;
    static constexpr double kTop = 0.9 * std::numeric_limits<T>::max_exponent;
    static constexpr double kBottom = 0.9 * std::numeric_limits<T>::min_exponent;

    static void guard(T* x, index_t n, double& u, int& e, double grow) {
        const double next = u + grow;
        if (u >= -kBand && u <= kBand && next <= kTop && next >= kBottom) return;
        // Four running maxima: independent chains the core can overlap.
        T m0 = 0, m1 = 0, m2 = 0, m3 = 0;
        index_t i = 0;
        for (; i + 4 <= n; i += 4) {
            m0 = std::max(m0, std::fabs(x[i]));
            m1 = std::max(m1, std::fabs(x[i + 1]));
            m2 = std::max(m2, std::fabs(x[i + 2]));
            m3 = std::max(m3, std::fabs(x[i + 3]));
        }
        for (; i < n; ++i) m0 = std::max(m0, std::fabs(x[i]));
        const T amax = std::max(std::max(m0, m1), std::max(m2, m3));
        const T hi = T(65536), lo = T(1) / hi;
        if (amax == T(0) || !(amax <= std::numeric_limits<T>::max())) return;  // u stays out: checked again
        if (amax >= lo && amax <= hi) {
            u = std::log2(double(amax));
            return;
        }
        int ex = 0;
        std::frexp(amax, &ex);
        const T f = std::ldexp(T(1), -ex);
        if (std::isnormal(f))
            for (index_t j = 0; j < n; ++j) x[j] *= f;
        else
            for (index_t j = 0; j < n; ++j) x[j] = std::ldexp(x[j], -ex);
        e += ex;
        u = 0.0;
    }
};

// Flops of the singular values (no vectors) of an r x c matrix: Householder bidiagonalisation.
inline double svd_flops(double r, double c) {
    const double lo = std::min(r, c), hi = std::max(r, c);
    return 4 * hi * lo * lo - 4.0 / 3.0 * lo * lo * lo;
}

}  // namespace detail

template <class T>
void chain_active(const ChainArgs<T>& a) {
    const index_t L = static_cast<index_t>(a.W.size());
    const index_t n0 = a.widths[0], nL = a.widths[static_cast<size_t>(L)];
    const index_t wmax = a.widest();
    parallel_for(a.B, 1, [&](index_t, index_t begin, index_t end) {
        detail::ActiveChain<T> ch(a);
        const index_t buf = wmax * a.buffer_columns();
        std::vector<T> P(static_cast<size_t>(buf)), Q(static_cast<size_t>(buf));
        for (index_t b = begin; b < end; ++b) {
            ch.load(b);
            const index_t kL = ch.k(L);
            T* out = a.J + b * nL * n0;
            if (kL == 0) {
                std::fill(out, out + nL * n0, T(0));
                continue;
            }
            // Both orders multiply the same sub-blocks k_(l+1) x k_l except one end's.
            const double all = ch.blocks();
            const double fwd = double(n0) * (all - ch.block(0)), rev = double(kL) * (all - ch.block(L - 1));
            int e = 0;
            // Every output unit live (tanh, gelu, ...): the live rows are J's rows, so the last
            // product writes J itself (one pass over the result fewer; the result is the largest
            // array a call writes).
            T* last = kL == nL ? out : nullptr;
            T* R = fwd < rev || (fwd == rev && !a.reverse) ? ch.left_to(0, L, P.data(), Q.data(), e, last)
                                                            : ch.right_to(L, 0, P.data(), Q.data(), e, last);
            if (R == out) {
                if (e != 0)
                    for (index_t c = 0; c < nL * n0; ++c) out[c] = std::ldexp(out[c], e);
                continue;
            }
            // Rows of dead output units are zero; the live ones are R's rows in order.
            const auto& rows = ch.live(L);
            index_t next = 0;
            for (size_t r = 0; r < rows.size(); ++r) {
                std::fill(out + next * n0, out + rows[r] * n0, T(0));
                const T* src = R + static_cast<index_t>(r) * n0;
                T* dst = out + rows[r] * n0;
                if (e == 0)
                    std::memcpy(dst, src, sizeof(T) * static_cast<size_t>(n0));
                else
                    for (index_t c = 0; c < n0; ++c) dst[c] = std::ldexp(src[c], e);
                next = rows[r] + 1;
            }
            std::fill(out + next * n0, out + nL * n0, T(0));
        }
    });
}

namespace detail {

// One thread's workspaces for the spectrum of one sample's product at a time: core(b)
// returns a column-major matrix C whose singular values are the non-zero ones of J(x_b)
// (J's others are exact zeros).
template <class T>
class ChainSpectrum {
    index_t L_, n0_;
    ActiveChain<T> ch_;
    std::vector<T> P_, Q_, Bk_, R_, tau_, work_;
    int lwork_ = 0;

   public:
    SvdWorkspace<T> svd;

    struct Core {
        T* data;
        index_t rows, cols, ld;
        int exponent;  // J's singular values are the core's times 2^exponent
    };

    explicit ChainSpectrum(const ChainArgs<T>& a)
        : L_(static_cast<index_t>(a.W.size())), n0_(a.widths[0]), ch_(a), svd(a.ends(), a.ends()) {
        const index_t e = a.ends(), buf = a.widest() * a.buffer_columns();
        for (auto* v : {&P_, &Q_, &Bk_}) v->resize(static_cast<size_t>(buf));
        R_.resize(static_cast<size_t>(e * e));
        tau_.resize(static_cast<size_t>(e + 1));
        // geqrf of the largest split factor: n0 x k_j with k_j < min(n0, nL), within e x e.
        const int r = static_cast<int>(e);
        int info = 0;
        lwork_ = -1;
        T query = 0;
        lapack::get<T>().geqrf(&r, &r, Bk_.data(), &r, tau_.data(), &query, &lwork_, &info);
        lwork_ = static_cast<int>(std::max<T>(query, T(1))) + 1;
        work_.resize(static_cast<size_t>(lwork_));
    }

    // The core of sample b (cols = 0: J = 0). Its entries are not checked for finiteness.
    Core core(index_t b) {
        const index_t L = L_, n0 = n0_;
        ActiveChain<T>& ch = ch_;
        ch.load(b);
        // The split j with the fewest flops: the products cost k_j per row of every block
        // but the two at j; a split inside adds the QR of B and the product A R^T.
        const double all = ch.blocks();
        const index_t kL = ch.k(L);
        index_t j = 0;
        double best = 0;
        for (index_t c = 0; c <= L; ++c) {
            const double kc = double(ch.k(c));
            // A split inside pays only below both ends' widths (and needs k_c <= n0).
            if (c > 0 && c < L && ch.k(c) >= std::min(n0, kL)) continue;
            double cost = 2 * kc * (all - ch.block(c - 1) - ch.block(c));
            if (c == 0 || c == L)
                cost += svd_flops(double(kL), double(n0));
            else
                cost += 2 * kc * kc * (double(n0) - kc / 3) + 2 * kc * kc * double(kL) + svd_flops(double(kL), kc);
            if (c == 0 || cost < best) {
                best = cost;
                j = c;
            }
        }
        const index_t kj = ch.k(j);
        if (kj == 0) return {P_.data(), std::max<index_t>(kL, 1), 0, std::max<index_t>(kL, 1), 0};
        int e = 0;
        if (j == 0 || j == L) {
            // J's live rows (kL x n0) row-major = column-major (n0 x kL).
            T* J = j == 0 ? ch.left_to(0, L, P_.data(), Q_.data(), e) : ch.right_to(L, 0, P_.data(), Q_.data(), e);
            return {J, n0, kL, n0, e};
        }
        T* A = ch.left_to(j, L, P_.data(), Q_.data(), e);  // kL x kj row-major
        T* spare = A == P_.data() ? Q_.data() : P_.data();
        T* Bm = ch.right_to(j, 0, spare, Bk_.data(), e);  // kj x n0 row-major
        T* M = Bm == Bk_.data() ? spare : Bk_.data();
        if (!all_finite(Bm, kj * n0)) {  // geqrf's output would be meaningless
            std::fill(M, M + kL * kj, std::numeric_limits<T>::quiet_NaN());
            return {M, kL, kj, kL, e};
        }
        // B row-major (kj x n0) = column-major B^T (n0 x kj) = Q R, so J = A R^T Q^T.
        const int nn = static_cast<int>(n0), kk = static_cast<int>(kj), ll = static_cast<int>(kL);
        int info = 0;
        lapack::get<T>().geqrf(&nn, &kk, Bm, &nn, tau_.data(), work_.data(), &lwork_, &info);
        T* R = R_.data();
        for (index_t c = 0; c < kj; ++c)
            for (index_t r = 0; r < kj; ++r) R[r + c * kj] = r <= c ? Bm[r + c * n0] : T(0);
        // M = A R^T column-major (kL x kj): A row-major is A^T column-major (kj x kL).
        const T one = 1, zero = 0;
        lapack::get<T>().gemm("T", "T", &ll, &kk, &kk, &one, A, &kk, R, &kk, &zero, M, &ll);
        return {M, kL, kj, kL, e};
    }

    // rank(J) by numpy's rule (SvdWorkspace::rank: certified from the core's bidiagonal
    // form where it can be, counted from its singular values where it cannot).
    std::int64_t rank(index_t b, double tol, double rtol, bool rtol_double) {
        const Core c = core(b);
        if (c.cols == 0) return 0;
        // An absolute tol in the core's scale; rtol is scale-free.
        const double t = std::isnan(tol) ? tol : std::ldexp(tol, -c.exponent);
        return svd.rank(c.data, c.rows, c.cols, c.ld, t, rtol, rtol_double);
    }

   private:
    static bool all_finite(const T* x, index_t n) {
        bool ok = true;
        for (index_t i = 0; i < n; ++i) ok &= std::fabs(x[i]) <= std::numeric_limits<T>::max();
        return ok;
    }
};

}  // namespace detail

// Singular values of every end-to-end Jacobian, (B, min(n0, nL)) row-major into S,
// descending; NaN for a sample whose partial products hold a NaN or an infinity.
template <class T>
void chain_singular_values(const ChainArgs<T>& a, T* S) {
    const index_t L = static_cast<index_t>(a.W.size());
    const index_t p = std::min(a.widths[0], a.widths[static_cast<size_t>(L)]);
    if (p == 0) return;
    parallel_for(a.B, 1, [&](index_t, index_t begin, index_t end) {
        detail::ChainSpectrum<T> one(a);
        for (index_t b = begin; b < end; ++b) {
            T* s = S + b * p;
            std::fill(s, s + p, T(0));
            const auto c = one.core(b);
            if (c.cols == 0) continue;
            one.svd.run(c.data, c.rows, c.cols, c.ld, s, p);
            if (c.exponent != 0)
                for (index_t i = 0; i < p; ++i) s[i] = std::ldexp(s[i], c.exponent);
        }
    });
}

// rank of every end-to-end Jacobian into r (B,): singular values above tol, or (tol NaN)
// above rtol times the largest (numpy.linalg.matrix_rank's rule; rtol_double: the threshold
// and comparison in double, as numpy makes them for an rtol given, else in T, as for its
// default rtol).
template <class T>
void chain_rank(const ChainArgs<T>& a, double tol, double rtol, bool rtol_double, std::int64_t* r) {
    const index_t L = static_cast<index_t>(a.W.size());
    if (std::min(a.widths[0], a.widths[static_cast<size_t>(L)]) == 0) {
        std::fill(r, r + a.B, std::int64_t(0));
        return;
    }
    parallel_for(a.B, 1, [&](index_t, index_t begin, index_t end) {
        detail::ChainSpectrum<T> one(a);
        for (index_t b = begin; b < end; ++b) r[b] = one.rank(b, tol, rtol, rtol_double);
    });
}

}  // namespace jacgeom
