// Binding of the spectral summary of the Monte Carlo (jacgeom.montecarlo); receives a
// C-contiguous (B, m, n) stack of the exact dtype.
#include "common.hpp"

#include <limits>
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
        release_gil release;
        jacgeom::spectral_summary<T>(args);
    }
    return py::make_tuple(rank, log_smax, log_smin, frobenius2, log_volume);
}

template <class T>
py::tuple spectral_summary_rows(const carray<T>& rows, const carray<std::int64_t>& counts,
                                index_t m, double scale,
                                const std::optional<carray<std::int64_t>>& rank_bound,
                                bool spectra) {
    if (rows.ndim() != 2) throw py::value_error("expected rows (K, n)");
    if (counts.ndim() != 1) throw py::value_error("expected counts (B,)");
    const index_t B = counts.shape(0), n = rows.shape(1);
    // m sets the tolerance and the count of singular values; the workspaces follow the rows
    if (m < 0 || m > std::numeric_limits<int>::max())
        throw py::value_error("m must be in [0, 2**31 - 1]");
    std::int64_t total = 0;
    for (index_t b = 0; b < B; ++b) {
        const std::int64_t c = counts.data()[b];
        if (c < 0 || c > m) throw py::value_error("every count must be in [0, m]");
        total += c;
    }
    if (total != rows.shape(0)) throw py::value_error("counts must add up to the rows given");
    if (rank_bound && (rank_bound->ndim() != 1 || rank_bound->shape(0) != B))
        throw py::value_error("rank_bound must be (B,)");
    carray<std::int64_t> rank({B});
    carray<T> log_smax({B}), log_smin({B}), frobenius2({B}), log_volume({B});
    jacgeom::SpectralArgs<T> args{nullptr, B, m, n, rank.mutable_data(),
                                  log_smax.mutable_data(), log_smin.mutable_data(),
                                  frobenius2.mutable_data(), log_volume.mutable_data(),
                                  rank_bound ? rank_bound->data() : nullptr, spectra,
                                  true, rows.data(), counts.data(), static_cast<T>(scale)};
    {
        release_gil release;
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
    const char* rows_doc =
        "spectral_summary of the (B, m, n) stack whose sample b has the next counts[b] rows "
        "of rows (K, n), times scale, and zero rows for the rest.";
    m.def("spectral_summary_rows", &spectral_summary_rows<double>, py::arg("rows"),
          py::arg("counts"), py::arg("m"), py::arg("scale") = 1.0,
          py::arg("rank_bound") = py::none(), py::arg("spectra") = true, rows_doc);
    m.def("spectral_summary_rows", &spectral_summary_rows<float>, py::arg("rows"),
          py::arg("counts"), py::arg("m"), py::arg("scale") = 1.0,
          py::arg("rank_bound") = py::none(), py::arg("spectra") = true, rows_doc);
}
