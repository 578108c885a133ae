// What every binding file shares. Arrays arrive C-contiguous with the exact dtype (the
// Python layer validates and converts); outputs are allocated here, then the GIL released.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <thread>

#include "jacgeom/types.hpp"

namespace py = pybind11;
using jacgeom::index_t;

// Python's main thread (threading.main_thread().ident), set when the module is made: the
// thread that finalises the interpreter, which must never park below.
inline unsigned long main_thread_ident = 0;

// The GIL released for a kernel, as py::gil_scoped_release, and taken back at the end of
// the scope unless the interpreter is finalising and this is not the main thread. CPython
// 3.11 to 3.13 end a daemon thread that takes the GIL back during finalisation with
// pthread_exit, whose forced unwind through a noexcept destructor calls std::terminate: a
// program that returned while a daemon thread was inside a kernel aborted (exit 134). Such
// a thread now sleeps until the process ends; the destructor is noexcept(false) so that an
// unwind that starts just after the check passes through it. The main thread, which runs
// the finalisation (a __del__ that calls a kernel), takes the GIL back as usual. Python
// 3.14 and later hang such threads themselves.
class release_gil {
public:
    release_gil() : state_(PyEval_SaveThread()) {}
    ~release_gil() noexcept(false) {
        if (finalizing() && PyThread_get_thread_ident() != main_thread_ident) {
            for (;;) {
                std::this_thread::sleep_for(std::chrono::hours(1));
            }
        }
        PyEval_RestoreThread(state_);
    }
    release_gil(const release_gil&) = delete;
    release_gil& operator=(const release_gil&) = delete;

private:
    static bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
        return Py_IsFinalizing() != 0;
#else
        return _Py_IsFinalizing() != 0;
#endif
    }
    PyThreadState* state_;
};

template <class T>
using carray = py::array_t<T, py::array::c_style>;
