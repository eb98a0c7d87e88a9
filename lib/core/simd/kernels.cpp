// xgrad's SIMD kernels for one level. lib/meson.build compiles this file once
// per level, each time with that level's -m flags and XGRAD_SIMD_TARGET set:
//
//   avx512   -mavx512f -mavx512cd -mavx512dq -mavx512bw -mavx512vl -mfma   batch<float, avx512bw>, 16 lanes
//   avx2     -mavx2 -mfma                                                    batch<float, fma3<avx2>>, 8 lanes
//   sse2     (the build's own flags)                                        batch<float, sse2>, 4 lanes
//
// Each object defines one table (table.hpp) and nothing else with external
// linkage of its own. What must not happen is that two objects compiled with
// different flags both emit the same inline function (a COMDAT): the linker
// keeps one copy for all callers, and an AVX-512 copy reached from the SSE2
// path would crash older CPUs. So this file sees no xtensor and no xgrad
// code beyond table.hpp, its own functions have internal linkage, and the
// xsimd code it instantiates is templated on the level's architecture, so its
// symbols differ per object. The tail of an array goes through the same
// batch code (no scalar std:: or xsimd scalar math, which would be shared).
// lib/meson.build's test `simd_objects_share_no_code` checks this on the
// built objects.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "table.hpp"

namespace xgrad::simd::detail {
namespace {

#if defined(XGRAD_SIMD_TARGET_AVX512)
#if !XSIMD_WITH_AVX512BW || !XSIMD_WITH_FMA3_AVX2
#error "the avx512 kernels need -mavx512f -mavx512cd -mavx512dq -mavx512bw -mfma"
#endif
using Arch = xsimd::avx512bw;
constexpr Level kLevel = Level::avx512;
#define XGRAD_SIMD_TABLE avx512_kernels
#elif defined(XGRAD_SIMD_TARGET_AVX2)
#if !XSIMD_WITH_FMA3_AVX2
#error "the avx2 kernels need -mavx2 -mfma"
#endif
using Arch = xsimd::fma3<xsimd::avx2>;
constexpr Level kLevel = Level::avx2;
#define XGRAD_SIMD_TABLE avx2_kernels
#elif defined(__x86_64__) || defined(__i386__)
// Explicitly SSE2, also in a -Dnative=true build (where the CPU's best level
// is dispatched anyway): the level's name says how wide its vectors are.
using Arch = xsimd::sse2;
constexpr Level kLevel = Level::sse2;
#define XGRAD_SIMD_TABLE sse2_kernels
#else
// Not x86: the one level is the build's own xsimd architecture.
using Arch = xsimd::default_arch;
constexpr Level kLevel = Level::sse2;
#define XGRAD_SIMD_TABLE sse2_kernels
#endif

using B = xsimd::batch<float, Arch>;

// Elements [i, i + count) of the arrays, count < B::size, through zero-padded
// copies: the same batch code as full batches, so an element's result does
// not depend on whether it was in a partial batch, and nothing outside the
// arrays is read or written.
template <std::size_t I, std::size_t O, class F>
inline void transform_partial(std::size_t i, std::size_t count, const float* const (&in)[I], float* const (&out)[O], const F& f) {
    B x[I], y[O];
    alignas(64) float pad[std::max(I, O)][B::size] = {};
    for (std::size_t k = 0; k < I; ++k) {
        for (std::size_t j = 0; j < count; ++j) pad[k][j] = in[k][i + j];
        x[k] = B::load_aligned(pad[k]);
    }
    f(x, y);
    for (std::size_t k = 0; k < O; ++k) {
        y[k].store_aligned(pad[k]);
        for (std::size_t j = 0; j < count; ++j) out[k][i + j] = pad[k][j];
    }
}

// For i < n: loads batch i of each of the I inputs, calls f(x, y) with x
// those I batches, and stores the O batches f wrote to y into the outputs.
// An output may be an input (in place): each batch is loaded before it is
// stored. The full batches start where the first output is aligned to a
// whole batch: tensors are only 16-byte aligned in the portable build, and a
// batch that straddles cache lines made the memory-bound Adam 25% slower at
// AVX-512. The head before and the tail after go through transform_partial.
template <std::size_t I, std::size_t O, class F>
inline void transform(std::size_t n, const float* const (&in)[I], float* const (&out)[O], const F& f) {
    constexpr std::size_t batch_bytes = B::size * sizeof(float);
    const std::size_t offset = reinterpret_cast<std::uintptr_t>(out[0]) % batch_bytes;
    std::size_t i = (batch_bytes - offset) % batch_bytes / sizeof(float);  // < B::size
    if (i > n) i = n;
    if (i > 0) transform_partial(0, i, in, out, f);
    B x[I], y[O];
    for (; i + B::size <= n; i += B::size) {
        for (std::size_t k = 0; k < I; ++k) x[k] = B::load_unaligned(in[k] + i);
        f(x, y);
        for (std::size_t k = 0; k < O; ++k) y[k].store_unaligned(out[k] + i);
    }
    if (i < n) transform_partial(i, n - i, in, out, f);
}

// One kernel of table.hpp's Unary type from a batch function.
template <class F>
inline void map(const float* x, float* y, std::size_t n, const F& f) {
    transform<1, 1>(n, {x}, {y}, [&](const B* in, B* out) { out[0] = f(in[0]); });
}

// One kernel of table.hpp's Binary type from a batch function of two.
template <class F>
inline void zip(const float* a, const float* b, float* y, std::size_t n, const F& f) {
    transform<2, 1>(n, {a, b}, {y}, [&](const B* in, B* out) { out[0] = f(in[0], in[1]); });
}

void exp_kernel(const float* x, float* y, std::size_t n) {
    map(x, y, n, [](B v) { return xsimd::exp(v); });
}

void log_kernel(const float* x, float* y, std::size_t n) {
    map(x, y, n, [](B v) { return xsimd::log(v); });
}

void sigmoid_kernel(const float* x, float* y, std::size_t n) {
    // exp(-x) overflows to inf for x < -88 and 1 / inf = 0: exact, never NaN.
    map(x, y, n, [](B v) { return B(1.f) / (B(1.f) + xsimd::exp(-v)); });
}

void tanh_kernel(const float* x, float* y, std::size_t n) {
    map(x, y, n, [](B v) { return xsimd::tanh(v); });
}

void softplus_kernel(const float* x, float* y, std::size_t n) {
    // log1p(exp(-|x|)) <= log 2 never overflows; max(NaN, 0) may be 0, but
    // the log1p term carries the NaN.
    map(x, y, n, [](B v) { return xsimd::max(v, B(0.f)) + xsimd::log1p(xsimd::exp(-xsimd::abs(v))); });
}

void relu_kernel(const float* x, float* y, std::size_t n) {
    // A select, not max(x, 0): comparisons with NaN are false, so NaN passes.
    map(x, y, n, [](B v) { return xsimd::select(v < B(0.f), B(0.f), v); });
}

void leaky_relu_kernel(const float* x, float* y, std::size_t n, float slope) {
    map(x, y, n, [slope](B v) { return xsimd::select(v > B(0.f), v, B(slope) * v); });
}

void sigmoid_backward_kernel(const float* y, const float* dy, float* dx, std::size_t n) {
    zip(y, dy, dx, n, [](B out, B grad) { return grad * out * (B(1.f) - out); });
}

void tanh_backward_kernel(const float* y, const float* dy, float* dx, std::size_t n) {
    zip(y, dy, dx, n, [](B out, B grad) { return grad * (B(1.f) - out * out); });
}

void relu_backward_kernel(const float* y, const float* dy, float* dx, std::size_t n) {
    zip(y, dy, dx, n, [](B out, B grad) { return xsimd::select(out > B(0.f), grad, B(0.f)); });
}

void leaky_relu_backward_kernel(const float* x, const float* dy, float* dx, std::size_t n, float slope) {
    zip(x, dy, dx, n, [slope](B in, B grad) { return xsimd::select(in > B(0.f), grad, B(slope) * grad); });
}

void adam_kernel(float* p, const float* g, float* m, float* v, std::size_t n, const AdamConstants& c) {
    // Adam is memory-bound: one pass over the four arrays.
    transform<4, 3>(n, {p, g, m, v}, {p, m, v}, [&c](const B* in, B* out) {
        const B grad = in[1];
        const B mean = B(c.beta1) * in[2] + B(1.f - c.beta1) * grad;
        const B var = B(c.beta2) * in[3] + B(1.f - c.beta2) * grad * grad;
        out[0] = in[0] * B(c.keep) - B(c.step_size) * mean / (xsimd::sqrt(var) * B(c.inv_sqrt_c2) + B(c.eps));
        out[1] = mean;
        out[2] = var;
    });
}

}  // namespace

// Declared extern in table.hpp, so this definition has external linkage.
const Kernels XGRAD_SIMD_TABLE = {kLevel,
                                  exp_kernel,
                                  log_kernel,
                                  sigmoid_kernel,
                                  tanh_kernel,
                                  softplus_kernel,
                                  relu_kernel,
                                  leaky_relu_kernel,
                                  sigmoid_backward_kernel,
                                  tanh_backward_kernel,
                                  relu_backward_kernel,
                                  leaky_relu_backward_kernel,
                                  adam_kernel};

}  // namespace xgrad::simd::detail
