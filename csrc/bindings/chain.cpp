// Binding of the active-sub-block Jacobian chain. Inputs validated by jacgeom.network.
#include "common.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "jacgeom/capi.hpp"
#include "jacgeom/chain.hpp"

namespace {

// W[l] is (n_l, n_{l-1}) shared by all samples, or (B, n_l, n_{l-1}), one per sample.
template <class T>
jacgeom::ChainArgs<T> chain_args(const std::vector<carray<T>>& W, const std::vector<carray<T>>& D) {
    if (W.empty() || W.size() != D.size()) throw py::value_error("need one D per W, at least one layer");
    jacgeom::ChainArgs<T> a;
    a.B = D[0].ndim() == 2 ? D[0].shape(0) : 0;
    for (size_t l = 0; l < W.size(); ++l) {
        const bool per_sample = W[l].ndim() == 3;
        const int o = per_sample ? 1 : 0;
        if ((W[l].ndim() != 2 && !per_sample) || (per_sample && W[l].shape(0) != a.B))
            throw py::value_error("W[l] must be (n_l, n_{l-1}) or (B, n_l, n_{l-1})");
        if (l == 0) a.widths.push_back(W[l].shape(1 + o));
        if (D[l].ndim() != 2 || W[l].shape(1 + o) != a.widths.back() ||
            D[l].shape(1) != W[l].shape(o) || D[l].shape(0) != a.B)
            throw py::value_error("W and D do not chain");
        a.widths.push_back(W[l].shape(o));
        a.W.push_back(W[l].data());
        a.W_stride.push_back(per_sample ? W[l].shape(1) * W[l].shape(2) : 0);
        a.D.push_back(D[l].data());
    }
    return a;
}

template <class T>
carray<T> chain_active(const std::vector<carray<T>>& W, const std::vector<carray<T>>& D, bool reverse,
                       const py::object& out) {
    jacgeom::ChainArgs<T> a = chain_args(W, D);
    a.reverse = reverse;
    const std::vector<py::ssize_t> shape{a.B, a.widths.back(), a.widths.front()};
    carray<T> J;
    if (out.is_none()) {
        J = carray<T>(shape);
    } else {
        // Written in place: a converted copy would take the result and leave `out` unchanged.
        if (!py::isinstance<carray<T>>(out)) throw py::type_error("out must be a C-contiguous array of W's dtype");
        J = py::reinterpret_borrow<carray<T>>(out);
        if (!J.writeable() || J.ndim() != 3 || !std::equal(shape.begin(), shape.end(), J.shape()))
            throw py::value_error("out must be a writeable (B, n_L, n_0) array");
        if (reinterpret_cast<std::uintptr_t>(J.data()) % alignof(T) != 0)
            throw py::value_error("out must be aligned to its dtype");
        // Each sample's rows are zeroed before its inputs are read: out must not share memory
        // with W or D.
        const auto* lo = reinterpret_cast<const char*>(J.data());
        const auto* hi = lo + J.nbytes();
        auto overlaps = [&](const carray<T>& x) {
            const auto* a = reinterpret_cast<const char*>(x.data());
            return x.nbytes() > 0 && a < hi && lo < a + x.nbytes();
        };
        for (size_t l = 0; l < W.size(); ++l)
            if (overlaps(W[l]) || overlaps(D[l])) throw py::value_error("out must not overlap W or D");
    }
    a.J = J.mutable_data();
    release_gil release;
    jacgeom::chain_active<T>(a);
    return J;
}

template <class T>
carray<T> chain_singular_values(const std::vector<carray<T>>& W, const std::vector<carray<T>>& D) {
    const jacgeom::ChainArgs<T> a = chain_args(W, D);
    carray<T> S({a.B, std::min(a.widths.back(), a.widths.front())});
    T* s = S.mutable_data();
    release_gil release;
    jacgeom::chain_singular_values<T>(a, s);
    return S;
}

template <class T>
py::array_t<std::int64_t> chain_rank(const std::vector<carray<T>>& W, const std::vector<carray<T>>& D, double tol, double rtol,
                                       bool rtol_double) {
    const jacgeom::ChainArgs<T> a = chain_args(W, D);
    py::array_t<std::int64_t> r(a.B);
    std::int64_t* out = r.mutable_data();
    release_gil release;
    jacgeom::chain_rank<T>(a, tol, rtol, rtol_double, out);
    return r;
}

// Network.jacobian at one input: the C-level API's network_jacobian itself (capi.hpp), so
// that the two agree bit for bit. W[l] (n_l, n_{l-1}) and b[l] C-contiguous; J (n_L, n_0)
// C-contiguous, written in place. Returns capi's status (0, or < 0: the caller falls back
// to the batched path, which raises the Python API's error).
template <class T>
int network_jacobian_one(const std::vector<carray<T>>& W, const std::vector<carray<T>>& b,
                         const std::vector<int>& codes, const std::vector<T>& params, const carray<T>& x,
                         carray<T>& J) {
    const index_t L = index_t(W.size());
    if (L < 1 || b.size() != W.size() || codes.size() != W.size() || params.size() != W.size())
        throw py::value_error("need one bias, code and parameter per weight matrix");
    std::vector<index_t> widths{index_t(W[0].ndim() == 2 ? W[0].shape(1) : -1)};
    std::vector<const T*> weights, biases;
    std::vector<index_t> strides, bias_strides(W.size(), 1);
    for (index_t l = 0; l < L; ++l) {
        if (W[l].ndim() != 2 || W[l].shape(1) != widths.back() || b[l].ndim() != 1 ||
            b[l].shape(0) != W[l].shape(0))
            throw py::value_error("W and b do not chain");
        widths.push_back(W[l].shape(0));
        weights.push_back(W[l].data());
        biases.push_back(b[l].data());
        strides.push_back(W[l].shape(1));
        strides.push_back(1);
    }
    if (x.ndim() != 1 || x.shape(0) != widths.front() || J.ndim() != 2 || J.shape(0) != widths.back() ||
        J.shape(1) != widths.front() || !J.writeable())
        throw py::value_error("x must be (n_0,) and J a writeable (n_L, n_0) array");
    const index_t lwork = jacgeom::capi::network_jacobian_workspace<T>(L, widths.data());
    if (lwork < 0) return int(lwork);
    std::vector<double> work(static_cast<size_t>(lwork));
    T* out = J.mutable_data();
    release_gil release;
    return jacgeom::capi::network_jacobian<T>(L, widths.data(), weights.data(), strides.data(), biases.data(),
                                              bias_strides.data(), codes.data(), params.data(), x.data(), 1,
                                              out, widths.front(), 1, work.data(), index_t(work.size()));
}

}  // namespace

void register_chain(py::module_& m) {
    m.def("chain_active", &chain_active<double>, py::arg("W"), py::arg("D"), py::arg("reverse"),
          py::arg("out") = py::none());
    m.def("chain_active", &chain_active<float>, py::arg("W"), py::arg("D"), py::arg("reverse"),
          py::arg("out") = py::none());
    m.def("network_jacobian_one", &network_jacobian_one<double>, py::arg("W"), py::arg("b"), py::arg("codes"),
          py::arg("params"), py::arg("x"), py::arg("J").noconvert());
    m.def("network_jacobian_one", &network_jacobian_one<float>, py::arg("W"), py::arg("b"), py::arg("codes"),
          py::arg("params"), py::arg("x"), py::arg("J").noconvert());
    m.def("chain_singular_values", &chain_singular_values<double>, py::arg("W"), py::arg("D"));
    m.def("chain_singular_values", &chain_singular_values<float>, py::arg("W"), py::arg("D"));
    m.def("chain_rank", &chain_rank<double>, py::arg("W"), py::arg("D"), py::arg("tol"), py::arg("rtol"),
          py::arg("rtol_double"));
    m.def("chain_rank", &chain_rank<float>, py::arg("W"), py::arg("D"), py::arg("tol"), py::arg("rtol"),
          py::arg("rtol_double"));
}
