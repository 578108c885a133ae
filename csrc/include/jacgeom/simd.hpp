// Load-time choice between code compiled for AVX-512, AVX2 and baseline x86-64.
//
// The package is built for any x86-64 (no -march), so the loops that must run at the
// machine's vector width are compiled several times and chosen when the extension loads:
// GCC's target_clones for plain loops, and an explicit target attribute where a kernel's
// register tiling depends on the width (gram.hpp). Other compilers and architectures get
// the baseline build only.
#pragma once

// GCC 12 is the first to accept x86-64-v4 in __builtin_cpu_supports.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12
#define JACGEOM_X86_DISPATCH 1
#define JACGEOM_VECTOR_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define JACGEOM_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#define JACGEOM_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#else
#define JACGEOM_X86_DISPATCH 0
#define JACGEOM_VECTOR_CLONES
#endif

namespace jacgeom {

// Instruction-set levels of x86-64: x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512 F/BW/CD/
// DQ/VL).
enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2 };

// Whether this process may run code built for isa.
inline bool cpu_supports(Isa isa) {
#if JACGEOM_X86_DISPATCH
    __builtin_cpu_init();
    switch (isa) {
        case Isa::avx512:
            return __builtin_cpu_supports("x86-64-v4");
        case Isa::avx2:
            return __builtin_cpu_supports("x86-64-v3");
        default:
            return true;
    }
#else
    return isa == Isa::baseline;
#endif
}

// V entries of T as one vector register (GCC's vector extension: the arithmetic compiles to
// the instruction set of the function it is inlined into).
template <class T, int V>
struct vec {
    typedef T type __attribute__((vector_size(V * sizeof(T))));
};

}  // namespace jacgeom
