// Internal to the optimizers: flush-to-zero while stepping, and the
// optimizer state slots ("m.0", "m.1", ...) in archives.
#pragma once

#include <string>
#include <vector>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include <xgrad/core/archive.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad::detail {

// Optimizer steps flush subnormal floats to zero (as TensorFlow does on its
// CPU threads). A moment whose gradient stays exactly 0 (into a dead ReLU
// unit, say) decays geometrically into the subnormal range, where x86
// arithmetic takes a ~100x slower path: after ~1500 steps of training a
// 784-128-1 / 100-128-784 GAN, Adam took 30% of each step; 5% with this. Only values below 1.2e-38
// are affected. (x86: the MXCSR bits flush-to-zero and denormals-are-zero.)
// It is a per-thread mode: each thread that steps sets it.
class FlushSubnormals {
#if defined(__SSE2__)
public:
    FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
    ~FlushSubnormals() { _mm_setcsr(saved_); }
    FlushSubnormals(const FlushSubnormals&) = delete;
    FlushSubnormals& operator=(const FlushSubnormals&) = delete;

private:
    unsigned saved_;
#endif
};

// Before a step writes parameter i: its value, gradient and state (a moment,
// a velocity) must have one shape, or the step would run past the smaller
// buffers. Throws ShapeError naming the optimizer and the three shapes.
void check_step_shapes(const char* optimizer, std::size_t i, const Var& p, const Tensor& state);

// A hyper-parameter as an error message shows it: "-1", "nan", "1e-08".
std::string number_text(double value);

std::vector<Tensor> zeros_like(const std::vector<Var>& parameters);
void save_slots(Archive& archive, const std::string& prefix, const char* slot, const std::vector<Tensor>& tensors);
// Throws (naming the entry) when a slot is missing or has another shape;
// changes nothing.
void check_slots(const Archive& archive, const std::string& prefix, const char* slot, const std::vector<Tensor>& tensors);
// After check_slots.
void take_slots(const Archive& archive, const std::string& prefix, const char* slot, std::vector<Tensor>& tensors);

}  // namespace xgrad::detail
