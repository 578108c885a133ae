// What every binding file shares. Arrays arrive C-contiguous with the exact dtype (the
// Python layer validates and converts); outputs are allocated here, then the GIL released.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "jacgeom/types.hpp"

namespace py = pybind11;
using jacgeom::index_t;

template <class T>
using carray = py::array_t<T, py::array::c_style>;
