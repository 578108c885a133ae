// Bindings of the single-layer kernels. Inputs arrive C-contiguous with the exact dtype
// (jacgeom._validation); outputs are allocated here, then the GIL is released.
#include "common.hpp"

#include <optional>

#include "jacgeom/layer.hpp"

namespace {

// An elementwise kernel of an activation code over Z, Z's shape: phi' (derivatives) or phi
// (values).
template <class T>
using Elementwise = void (*)(const T*, T*, index_t, int, double);

template <class T, Elementwise<T> kernel>
carray<T> elementwise(const carray<T>& Z, int code, double param) {
    if (!jacgeom::activation_supported(code)) throw py::value_error("unsupported activation code");
    std::vector<py::ssize_t> shape(Z.shape(), Z.shape() + Z.ndim());
    carray<T> out(shape);
    const T* z = Z.data();
    T* o = out.mutable_data();
    const index_t count = static_cast<index_t>(Z.size());
    release_gil release;
    kernel(z, o, count, code, static_cast<T>(param));
    return out;
}

struct Dims {
    index_t B, m, n;
};

template <class T>
Dims dims(const carray<T>& W, const carray<T>& D) {
    if (W.ndim() != 2 || D.ndim() != 2 || D.shape(1) != W.shape(0))
        throw py::value_error("expected W (m, n) and D (B, m)");
    return {D.shape(0), W.shape(0), W.shape(1)};
}

// The (B, m, n) result: out when given (a caller-owned C-contiguous array, checked in
// jacgeom.layer; reusing it avoids the first-touch page faults of a fresh allocation, and
// the kernel is bandwidth-bound), else a new array.
template <class T>
carray<T> jacobian_result(const Dims& s, std::optional<carray<T>> out) {
    carray<T> J = out ? *out : carray<T>({s.B, s.m, s.n});
    if (J.ndim() != 3 || J.shape(0) != s.B || J.shape(1) != s.m || J.shape(2) != s.n)
        throw py::value_error("out must have shape (B, m, n)");
    return J;
}

template <class T>
carray<T> jacobian(const carray<T>& W, const carray<T>& D, std::optional<carray<T>> out) {
    const Dims s = dims(W, D);
    carray<T> J = jacobian_result<T>(s, out);
    const T *w = W.data(), *d = D.data();
    T* j = J.mutable_data();
    release_gil release;
    jacgeom::jacobian<T>(w, d, j, s.B, s.m, s.n);
    return J;
}

template <class T>
carray<T> jacobian_z(const carray<T>& W, const carray<T>& Z, int code, double param,
                     std::optional<carray<T>> out) {
    if (!jacgeom::activation_supported(code)) throw py::value_error("unsupported activation code");
    const Dims s = dims(W, Z);
    carray<T> J = jacobian_result<T>(s, out);
    const T *w = W.data(), *z = Z.data();
    T* j = J.mutable_data();
    release_gil release;
    jacgeom::jacobian_from_preactivations<T>(w, z, code, static_cast<T>(param), j, s.B,
                                              s.m, s.n);
    return J;
}

template <class T>
carray<T> pullback(const carray<T>& W, const carray<T>& D) {
    const Dims s = dims(W, D);
    carray<T> G({s.B, s.n, s.n});
    const T *w = W.data(), *d = D.data();
    T* g = G.mutable_data();
    release_gil release;
    jacgeom::pullback<T>(w, d, g, s.B, s.m, s.n);
    return G;
}

template <class T>
carray<T> singular_values(const carray<T>& W, const carray<T>& D) {
    const Dims s = dims(W, D);
    carray<T> S({s.B, std::min(s.m, s.n)});
    const T *w = W.data(), *d = D.data();
    T* out = S.mutable_data();
    release_gil release;
    jacgeom::singular_values<T>(w, d, out, s.B, s.m, s.n);
    return S;
}

template <class T>
carray<T> log_volume(const carray<T>& W, const carray<T>& D) {
    const Dims s = dims(W, D);
    if (s.m < s.n) throw py::value_error("log_volume needs m >= n");
    carray<T> V({s.B});
    const T *w = W.data(), *d = D.data();
    T* out = V.mutable_data();
    release_gil release;
    jacgeom::log_volume<T>(w, d, out, s.B, s.m, s.n);
    return V;
}

// Singular values of every matrix of a (B, r, c) stack, descending, (B, min(r, c)).
template <class T>
carray<T> batched_singular_values(const carray<T>& A) {
    if (A.ndim() != 3) throw py::value_error("expected a (B, r, c) stack");
    const index_t B = A.shape(0), r = A.shape(1), c = A.shape(2), p = std::min(r, c);
    carray<T> S({B, p});
    const T* a = A.data();
    T* out = S.mutable_data();
    release_gil release;
    jacgeom::batched_singular_values<T>(a, out, B, r, c);
    return S;
}

template <class T>
void define_all(py::module_& m) {
    m.def("batched_singular_values", &batched_singular_values<T>, py::arg("A"));
    m.def("derivatives", &elementwise<T, jacgeom::derivatives<T>>, py::arg("Z"), py::arg("code"),
          py::arg("param"));
    m.def("values", &elementwise<T, jacgeom::values<T>>, py::arg("Z"), py::arg("code"),
          py::arg("param"));
    m.def("jacobian", &jacobian<T>, py::arg("W"), py::arg("D"), py::arg("out") = py::none());
    m.def("jacobian_z", &jacobian_z<T>, py::arg("W"), py::arg("Z"), py::arg("code"),
          py::arg("param"), py::arg("out") = py::none());
    m.def("pullback_metric", &pullback<T>, py::arg("W"), py::arg("D"));
    m.def("singular_values", &singular_values<T>, py::arg("W"), py::arg("D"));
    m.def("log_volume", &log_volume<T>, py::arg("W"), py::arg("D"));
}

}  // namespace

void register_layer(py::module_& m) {
    define_all<double>(m);
    define_all<float>(m);
}
