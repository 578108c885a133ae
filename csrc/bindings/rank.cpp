// Binding of the masked-row rank kernel. Validation and mask deduplication happen in
// jacgeom.rank; this receives C-contiguous arrays of the exact dtype.
#include "common.hpp"

#include <optional>

#include "jacgeom/rank.hpp"

namespace {

template <class T>
py::tuple masked_rank(const carray<T>& W, const carray<T>& scale,
                      const std::optional<carray<double>>& row_gram, int tol_mode,
                      double tol_value, bool want_singular_values) {
    // W is (m, n), shared by every mask, or (U, m, n), one per mask.
    const bool per_mask = W.ndim() == 3;
    const int o = per_mask ? 1 : 0;
    if ((W.ndim() != 2 && !per_mask) || scale.ndim() != 2 || scale.shape(1) != W.shape(o) ||
        (per_mask && W.shape(0) != scale.shape(0)))
        throw py::value_error("expected W (m, n) or (U, m, n) and scale (U, m)");
    const index_t U = scale.shape(0), m = W.shape(o), n = W.shape(o + 1);
    if (per_mask && row_gram) throw py::value_error("row_gram needs one shared W");
    if (row_gram && (row_gram->ndim() != 2 || row_gram->shape(0) != m || row_gram->shape(1) != m))
        throw py::value_error("row_gram must be (m, m)");
    carray<std::int64_t> rank({U});
    carray<T> sv(want_singular_values ? std::vector<py::ssize_t>{U, std::min(m, n)}
                                      : std::vector<py::ssize_t>{0, 0});
    jacgeom::MaskedRankArgs<T> args{W.data(), per_mask ? m * n : 0,
                                    row_gram ? row_gram->data() : nullptr,
                                    scale.data(), U, m, n,
                                    jacgeom::RankTolerance{tol_mode, tol_value},
                                    rank.mutable_data(),
                                    want_singular_values ? sv.mutable_data() : nullptr};
    std::int64_t fallbacks;
    {
        release_gil release;
        fallbacks = jacgeom::masked_rank<T>(args);
    }
    return py::make_tuple(rank, sv, fallbacks);
}

}  // namespace

void register_rank(py::module_& m) {
    m.def("masked_rank", &masked_rank<double>, py::arg("W"), py::arg("scale"),
          py::arg("row_gram"), py::arg("tol_mode"), py::arg("tol_value"),
          py::arg("singular_values"));
    m.def("masked_rank", &masked_rank<float>, py::arg("W"), py::arg("scale"),
          py::arg("row_gram"), py::arg("tol_mode"), py::arg("tol_value"),
          py::arg("singular_values"));
}
