// Binding of the spectral summary of the Monte Carlo (jacgeom.montecarlo); receives a
// C-contiguous (B, m, n) stack of the exact dtype.
#include "common.hpp"

#include <optional>

#include "jacgeom/spectral.hpp"

namespace {

template <class T>
py::tuple spectral_summary(const carray<T>& J,
                           const std::optional<carray<std::int64_t>>& rank_bound,
                           bool spectra) {
    if (J.ndim() != 3) throw py::value_error("expected J (B, m, n)");
    const index_t B = J.shape(0), m = J.shape(1), n = J.shape(2);
    if (rank_bound && (rank_bound->ndim() != 1 || rank_bound->shape(0) != B))
        throw py::value_error("rank_bound must be (B,)");
    carray<std::int64_t> rank({B});
    carray<T> log_smax({B}), log_smin({B}), frobenius2({B}), log_volume({B});
    jacgeom::SpectralArgs<T> args{J.data(), B, m, n, rank.mutable_data(),
                                  log_smax.mutable_data(), log_smin.mutable_data(),
                                  frobenius2.mutable_data(), log_volume.mutable_data(),
                                  rank_bound ? rank_bound->data() : nullptr, spectra};
    {
        py::gil_scoped_release release;
        jacgeom::spectral_summary<T>(args);
    }
    return py::make_tuple(rank, log_smax, log_smin, frobenius2, log_volume);
}

}  // namespace

void register_spectral(py::module_& m) {
    const char* doc =
        "(rank, log_smax, log_smin, frobenius2, log_volume) of every J[b], rank by numpy's "
        "matrix_rank rule; spectra=False: the rank only, the rest NaN; see "
        "csrc/include/jacgeom/spectral.hpp.";
    m.def("spectral_summary", &spectral_summary<double>, py::arg("J"),
          py::arg("rank_bound") = py::none(), py::arg("spectra") = true, doc);
    m.def("spectral_summary", &spectral_summary<float>, py::arg("J"),
          py::arg("rank_bound") = py::none(), py::arg("spectra") = true, doc);
}
