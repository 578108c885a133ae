// jacgeom._core: registers one area per function; validation lives in the Python layer.
#include "common.hpp"

void register_runtime(py::module_& m);
void register_layer(py::module_& m);
void register_rank(py::module_& m);
void register_chain(py::module_& m);
void register_spectral(py::module_& m);

PYBIND11_MODULE(_core, m) {
    m.doc() = "jacgeom's compiled kernels (private; use the jacgeom package)";
    main_thread_ident =
        py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    register_runtime(m);
    register_layer(m);
    register_rank(m);
    register_chain(m);
    register_spectral(m);
}
