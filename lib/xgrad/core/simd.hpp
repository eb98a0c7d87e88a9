// Elementwise kernels on raw float arrays, compiled for several x86 SIMD
// levels and chosen once per process by what the CPU supports, so that the
// default (portable, x86-64 baseline) build runs AVX2 or AVX-512 code where
// it can. Ops call these on ranges of their tensors (split over xgrad's
// threads by the op); your own ops can too.
//
//   xgrad::simd::sigmoid(x.data(), y.data(), x.size());
//
// Every function processes [0, n) and touches nothing else; y may be x (in
// place); no function allocates, throws or depends on thread timing. The
// partial batches at either end (before the first batch-aligned element of
// y, after the last full batch) are computed by the same SIMD code through
// padded copies, so an element's result depends only on its inputs and the
// level, not on where it sits or where a thread's range ends. Results may differ between levels in the last
// bits (vector width does not matter, but FMA does): for a given machine,
// level and thread count a run is reproducible.
//
// The level: the best the CPU and OS support (avx512 = AVX-512 F/CD/DQ/BW/VL
// with FMA; avx2 = AVX2 with FMA; sse2 = the x86-64 baseline), unless the
// environment variable XGRAD_SIMD=sse2|avx2|avx512 asks for a lower one (for
// tests and benchmarks; a level the CPU lacks, or an unknown name, falls back
// to the best with a message on stderr). On other architectures there is one
// level, sse2 in name, the portable xsimd code of that build.
#pragma once

#include <cstddef>

#include <xgrad/core/parallel.hpp>

namespace xgrad::simd {

enum class Level { sse2, avx2, avx512 };

// "sse2", "avx2", "avx512".
const char* name(Level level);
// Whether this CPU (and its OS) can run the level's kernels.
bool cpu_supports(Level level);
// The highest level cpu_supports().
Level best_level();

// The level in use.
Level level();
// Switches every kernel to `level` (tests, benchmarks). Process-wide; call it
// while no op runs. Throws std::invalid_argument when the CPU lacks it.
void set_level(Level level);

// What XGRAD_SIMD=request selects when the best level is `best`: the named
// level if it is known and at most `best` (honoured), otherwise `best`.
// A null or empty request, or "auto", is `best` (honoured).
struct LevelChoice {
    Level level;
    bool honoured;
};
LevelChoice choose_level(const char* request, Level best);

// ---- kernels: y[i] = f(x[i]) for i < n --------------------------------------

void exp(const float* x, float* y, std::size_t n);
// log(0) = -inf, log(x < 0) = NaN.
void log(const float* x, float* y, std::size_t n);
// 1 / (1 + exp(-x)): exactly 0 below about -88 (exp overflows to inf) and
// exactly 1 above about 17, never NaN for a number.
void sigmoid(const float* x, float* y, std::size_t n);
void tanh(const float* x, float* y, std::size_t n);
// log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)): no overflow for large x.
void softplus(const float* x, float* y, std::size_t n);
// x < 0 ? 0 : x, so relu(NaN) = NaN (a plain max would return 0 and hide a
// diverged model) and relu(-0) = -0.
void relu(const float* x, float* y, std::size_t n);
// x > 0 ? x : slope * x.
void leaky_relu(const float* x, float* y, std::size_t n, float slope);

// ---- backward pieces: dx[i] = f(y[i] or x[i], dy[i]) for i < n -------------

// dy y (1 - y), from y = sigmoid(x).
void sigmoid_backward(const float* y, const float* dy, float* dx, std::size_t n);
// dy (1 - y^2), from y = tanh(x).
void tanh_backward(const float* y, const float* dy, float* dx, std::size_t n);
// y > 0 ? dy : 0, from y = relu(x).
void relu_backward(const float* y, const float* dy, float* dx, std::size_t n);
// x > 0 ? dy : slope dy.
void leaky_relu_backward(const float* x, const float* dy, float* dx, std::size_t n, float slope);

// y = kernel(x) for i < n (any of the above, or a lambda binding leaky_relu's
// slope), large arrays split over xgrad's threads in ranges of at least
// kBlockElements (parallel.hpp), as parallel_elementwise (kernels.hpp) splits.
//   simd::parallel_map(simd::sigmoid, x.data(), y.data(), x.size());
template <class Kernel>
void parallel_map(const Kernel& kernel, const float* x, float* y, std::size_t n) {
    parallel_for(n, kBlockElements, [&](std::size_t begin, std::size_t end) { kernel(x + begin, y + begin, end - begin); });
}

// ---- Adam's update, fused ---------------------------------------------------

struct AdamConstants {
    float beta1, beta2;
    float step_size;    // lr / (1 - beta1^t)
    float inv_sqrt_c2;  // 1 / sqrt(1 - beta2^t)
    float eps;
    float keep;  // 1 - lr * decoupled weight decay (1 for Adam)
};
// For i < n, in one pass:
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
//   p = keep p - step_size m / (sqrt(v) inv_sqrt_c2 + eps).
void adam(float* p, const float* g, float* m, float* v, std::size_t n, const AdamConstants& c);

}  // namespace xgrad::simd
