// The kernel table: one per SIMD level, each defined by lib/core/simd/kernels.cpp
// compiled with that level's -m flags; lib/core/simd.cpp picks one at start-up.
// Only plain function pointers cross between the per-level objects and the
// rest of xgrad: no xtensor, no inline code shared between differently
// compiled translation units (see kernels.cpp).
#pragma once

#include <cstddef>

#include <xgrad/core/simd.hpp>

namespace xgrad::simd::detail {

using Unary = void (*)(const float* x, float* y, std::size_t n);
using Binary = void (*)(const float* a, const float* b, float* y, std::size_t n);

struct Kernels {
    Level level;
    Unary exp, log, sigmoid, tanh, softplus, relu;
    void (*leaky_relu)(const float* x, float* y, std::size_t n, float slope);
    Binary sigmoid_backward, tanh_backward, relu_backward;
    void (*leaky_relu_backward)(const float* x, const float* dy, float* dx, std::size_t n, float slope);
    void (*adam)(float* p, const float* g, float* m, float* v, std::size_t n, const AdamConstants& c);
};

// Defined only in builds for x86-64 where the level's library is compiled
// (XGRAD_SIMD_AVX2 / XGRAD_SIMD_AVX512 say so to simd.cpp).
extern const Kernels sse2_kernels;
extern const Kernels avx2_kernels;
extern const Kernels avx512_kernels;

}  // namespace xgrad::simd::detail
