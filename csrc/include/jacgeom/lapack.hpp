// BLAS / LAPACK entry points taken from scipy.linalg.cython_blas / cython_lapack.
// The pointers are read from their __pyx_capi__ capsules at import (csrc/bindings/runtime.cpp),
// so the process has one BLAS, the one scipy ships, and nothing is linked by hand.
// Row-major callers use the identity (A B)^T = B^T A^T: a row-major (r, c) array is the
// column-major (c, r) array of its transpose, so C = A B row-major is gemm(B, A) column-major.
// Fortran conventions: column-major, every argument by pointer, 32-bit integers.
#pragma once

#include <stdexcept>

namespace jacgeom::lapack {

template <class T>
using syrk_t = void(const char*, const char*, const int*, const int*, const T*, const T*,
                    const int*, const T*, T*, const int*);
template <class T>
using gesdd_t = void(const char*, const int*, const int*, T*, const int*, T*, T*, const int*,
                     T*, const int*, T*, const int*, int*, int*);
template <class T>
using geqrf_t = void(const int*, const int*, T*, const int*, T*, T*, const int*, int*);
template <class T>
using trtri_t = void(const char*, const char*, const int*, T*, const int*, int*);

template <class T>
using gemm_t = void(const char*, const char*, const int*, const int*, const int*, const T*,
                    const T*, const int*, const T*, const int*, const T*, T*, const int*);
template <class T>
using potrf_t = void(const char*, const int*, T*, const int*, int*);
// bdsqr(uplo, n, ncvt, nru, ncc, d, e, vt, ldvt, u, ldu, c, ldc, work, info)
template <class T>
using bdsqr_t = void(const char*, const int*, const int*, const int*, const int*, T*, T*, T*,
                     const int*, T*, const int*, T*, const int*, T*, int*);

// gebrd(m, n, a, lda, d, e, tauq, taup, work, lwork, info)
template <class T>
using gebrd_t = void(const int*, const int*, T*, const int*, T*, T*, T*, T*, T*, const int*, int*);

template <class T>
struct Routines {
    syrk_t<T>* syrk = nullptr;
    gesdd_t<T>* gesdd = nullptr;
    geqrf_t<T>* geqrf = nullptr;
    trtri_t<T>* trtri = nullptr;
    potrf_t<T>* potrf = nullptr;
    gemm_t<T>* gemm = nullptr;
    bdsqr_t<T>* bdsqr = nullptr;
    gebrd_t<T>* gebrd = nullptr;
};

template <class T>
inline Routines<T>& routines() {
    static Routines<T> r;
    return r;
}

template <class T>
inline const Routines<T>& get() {
    const Routines<T>& r = routines<T>();
    if (!r.syrk || !r.gesdd || !r.geqrf || !r.trtri || !r.potrf || !r.gemm ||
        !r.bdsqr || !r.gebrd)
        throw std::runtime_error("jacgeom._core: LAPACK routines were not registered");
    return r;
}

}  // namespace jacgeom::lapack
