// Thread count and the BLAS/LAPACK pointers taken from scipy's Cython capsules.
#include <pybind11/pybind11.h>

#include <string>
#include <utility>

#include "jacgeom/gram.hpp"
#include "jacgeom/product.hpp"
#include "jacgeom/lapack.hpp"
#include "jacgeom/parallel.hpp"
#include "jacgeom/vecmath.hpp"

namespace py = pybind11;

namespace {

template <class Fn>
Fn* capsule_pointer(const py::dict& table, const char* name) {
    if (!table.contains(name)) throw py::value_error(std::string("scipy does not export ") + name);
    py::object obj = table[name];
    PyObject* cap = obj.ptr();
    if (!PyCapsule_CheckExact(cap)) throw py::type_error(std::string(name) + " is not a capsule");
    void* ptr = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    if (!ptr) throw py::error_already_set();
    return reinterpret_cast<Fn*>(ptr);
}

template <class T>
void fill(const py::dict& blas, const py::dict& lapack, char prefix) {
    auto& r = jacgeom::lapack::routines<T>();
    const std::string p(1, prefix);
    r.syrk = capsule_pointer<jacgeom::lapack::syrk_t<T>>(blas, (p + "syrk").c_str());
    r.gesdd = capsule_pointer<jacgeom::lapack::gesdd_t<T>>(lapack, (p + "gesdd").c_str());
    r.geqrf = capsule_pointer<jacgeom::lapack::geqrf_t<T>>(lapack, (p + "geqrf").c_str());
    r.trtri = capsule_pointer<jacgeom::lapack::trtri_t<T>>(lapack, (p + "trtri").c_str());
    r.gemm = capsule_pointer<jacgeom::lapack::gemm_t<T>>(blas, (p + "gemm").c_str());
    r.potrf = capsule_pointer<jacgeom::lapack::potrf_t<T>>(lapack, (p + "potrf").c_str());
    r.bdsqr = capsule_pointer<jacgeom::lapack::bdsqr_t<T>>(lapack, (p + "bdsqr").c_str());
    r.gebrd = capsule_pointer<jacgeom::lapack::gebrd_t<T>>(lapack, (p + "gebrd").c_str());
}

using GramKernel = jacgeom::gram::Kernel;

// The Gram kernels by name, fastest first.
constexpr std::pair<const char*, GramKernel> kGramKernels[] = {
    {"avx512", GramKernel::avx512}, {"avx2", GramKernel::avx2}, {"blas", GramKernel::blas}};

GramKernel gram_kernel(const std::string& name) {
    for (const auto& [n, k] : kGramKernels)
        if (name == n) return k;
    throw py::value_error("Gram kernel must be one of 'avx512', 'avx2', 'blas', got '" + name +
                          "'");
}

using ProductKernel = jacgeom::product::Kernel;

// The chain product kernels by name, fastest first.
constexpr std::pair<const char*, ProductKernel> kProductKernels[] = {{"avx512", ProductKernel::avx512},
                                                                     {"blas", ProductKernel::blas}};

}  // namespace

void register_runtime(py::module_& m) {
    m.def(
        "register_lapack",
        [](const py::dict& blas, const py::dict& lapack) {
            fill<double>(blas, lapack, 'd');
            fill<float>(blas, lapack, 's');
        },
        py::arg("blas_capi"), py::arg("lapack_capi"),
        "Take BLAS/LAPACK from scipy.linalg.cython_blas/cython_lapack __pyx_capi__ tables.");
    m.def(
        "set_num_threads", [](int n) { jacgeom::num_threads_setting().store(n < 1 ? 1 : n); },
        py::arg("n"));
    m.def("get_num_threads", []() { return jacgeom::num_threads_setting().load(); });
    // Which Gram kernel the pullback metric uses (gram.hpp): tests run every one this CPU
    // supports against the reference; the default is the fastest.
    m.def("gram_kernels", []() {
        py::list names;
        for (const auto& [name, k] : kGramKernels)
            if (jacgeom::gram::supported(k)) names.append(name);
        return names;
    });
    m.def("get_gram_kernel", []() {
        const auto now = static_cast<GramKernel>(jacgeom::gram::kernel_setting().load());
        for (const auto& [name, k] : kGramKernels)
            if (k == now) return name;
        return "blas";
    });
    m.def(
        "set_gram_kernel",
        [](const std::string& name) {
            const auto k = gram_kernel(name);
            if (!jacgeom::gram::supported(k))
                throw py::value_error("this CPU cannot run the " + name + " Gram kernel");
            jacgeom::gram::kernel_setting().store(static_cast<int>(k));
        },
        py::arg("name"));
    // Whether gelu, gelu' and tanh' take glibc's four-lane erfc and exp (vecmath.hpp).
    m.def("vector_math", []() { return jacgeom::vecmath::available(); });
    // Which kernel the chains' products use (product.hpp), as for the Gram kernel.
    m.def("product_kernels", []() {
        py::list names;
        for (const auto& [name, k] : kProductKernels)
            if (jacgeom::product::supported(k)) names.append(name);
        return names;
    });
    m.def("get_product_kernel", []() {
        const auto now = static_cast<ProductKernel>(jacgeom::product::kernel_setting().load());
        for (const auto& [name, k] : kProductKernels)
            if (k == now) return name;
        return "blas";
    });
    m.def(
        "set_product_kernel",
        [](const std::string& name) {
            for (const auto& [n, k] : kProductKernels) {
                if (name != n) continue;
                if (!jacgeom::product::supported(k))
                    throw py::value_error("this CPU cannot run the " + name + " product kernel");
                jacgeom::product::kernel_setting().store(static_cast<int>(k));
                return;
            }
            throw py::value_error("product kernel must be one of 'avx512', 'blas', got '" + name + "'");
        },
        py::arg("name"));
}
