// Pooling and upsampling (lib/ops/pool.cpp): NCHW tensors, float32; sizes
// of two (height, width) are a Size2 (conv.hpp).
#pragma once

#include <xgrad/core/var.hpp>
#include <xgrad/ops/conv.hpp>  // Size2

namespace xgrad {

// The largest element of each window (padding counts as -infinity); the
// gradient goes to that element (the first of ties, in row-major order of
// the window; a NaN wins). stride 0 means the kernel size.
Var max_pool2d(const Var& x, Size2 kernel, Size2 stride = 0, Size2 padding = 0);
// The mean of each window, padding counted as zeros in it (PyTorch's
// default count_include_pad); the gradient is spread evenly over the window.
Var avg_pool2d(const Var& x, Size2 kernel, Size2 stride = 0, Size2 padding = 0);
// Each pixel repeated scale.h x scale.w times; dx sums each block of dy.
Var upsample_nearest2d(const Var& x, Size2 scale);

}  // namespace xgrad
