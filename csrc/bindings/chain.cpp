// Binding of the active-sub-block Jacobian chain. Inputs validated by jacgeom.network.
#include "common.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

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
    py::gil_scoped_release release;
    jacgeom::chain_active<T>(a);
    return J;
}

template <class T>
carray<T> chain_singular_values(const std::vector<carray<T>>& W, const std::vector<carray<T>>& D) {
    const jacgeom::ChainArgs<T> a = chain_args(W, D);
    carray<T> S({a.B, std::min(a.widths.back(), a.widths.front())});
    T* s = S.mutable_data();
    py::gil_scoped_release release;
    jacgeom::chain_singular_values<T>(a, s);
    return S;
}

template <class T>
py::array_t<std::int64_t> chain_rank(const std::vector<carray<T>>& W, const std::vector<carray<T>>& D, double tol, double rtol,
                                       bool rtol_double) {
    const jacgeom::ChainArgs<T> a = chain_args(W, D);
    py::array_t<std::int64_t> r(a.B);
    std::int64_t* out = r.mutable_data();
    py::gil_scoped_release release;
    jacgeom::chain_rank<T>(a, tol, rtol, rtol_double, out);
    return r;
}

}  // namespace

void register_chain(py::module_& m) {
    m.def("chain_active", &chain_active<double>, py::arg("W"), py::arg("D"), py::arg("reverse"),
          py::arg("out") = py::none());
    m.def("chain_active", &chain_active<float>, py::arg("W"), py::arg("D"), py::arg("reverse"),
          py::arg("out") = py::none());
    m.def("chain_singular_values", &chain_singular_values<double>, py::arg("W"), py::arg("D"));
    m.def("chain_singular_values", &chain_singular_values<float>, py::arg("W"), py::arg("D"));
    m.def("chain_rank", &chain_rank<double>, py::arg("W"), py::arg("D"), py::arg("tol"), py::arg("rtol"),
          py::arg("rtol_double"));
    m.def("chain_rank", &chain_rank<float>, py::arg("W"), py::arg("D"), py::arg("tol"), py::arg("rtol"),
          py::arg("rtol_double"));
}
