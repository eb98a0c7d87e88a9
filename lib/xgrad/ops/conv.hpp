// Convolutions (lib/ops/conv.cpp): NCHW tensors, float32; pooling and
// upsampling are in pool.hpp. Sizes of two (height, width) are a Size2: one
// number for both, or {h, w}.
#pragma once

#include <cstddef>
#include <optional>

#include <xgrad/core/var.hpp>

namespace xgrad {

struct Size2 {
    std::size_t h, w;
    Size2(std::size_t both = 0) : h(both), w(both) {}  // NOLINT(google-explicit-constructor): Size2 s = 2 is the point
    Size2(std::size_t height, std::size_t width) : h(height), w(width) {}
    bool operator==(const Size2& o) const { return h == o.h && w == o.w; }
};

struct Conv2dOptions {
    Size2 stride = 1;
    Size2 padding = 0;
    Size2 dilation = 1;
    // When set, y is rectified while each block of images is in cache:
    // relu(y) for a slope of 0, leaky_relu(y, slope) for a slope > 0. The
    // same values and gradients as conv2d followed by that op, with one pass
    // over y fewer (Sequential runs a Conv2d and the ReLU or LeakyReLU after
    // it so). std::invalid_argument for a slope < 0 or not finite.
    std::optional<float> rectifier_slope = std::nullopt;
};

// y[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q] x[n, c, i*s - pad + p*d, j*s - pad + q*d]
// (zero outside x), for x (N, C_in, H, W), w (C_out, C_in, kH, kW), b (C_out)
// or empty; y (N, C_out, H_out, W_out), H_out = (H + 2 pad - d (kH - 1) - 1) / s + 1.
// The backward computes dx, dw and db each only when needed (a frozen conv
// does no weight-gradient work).
Var conv2d(const Var& x, const Var& w, const Var& b, const Conv2dOptions& options = {});

struct ConvTranspose2dOptions {
    Size2 stride = 1;
    Size2 padding = 0;
    Size2 output_padding = 0;  // added to one side of the output (below the stride)
    Size2 dilation = 1;
};

// The adjoint of conv2d with respect to its input (how a DCGAN generator
// upsamples): x (N, C_in, H, W), w (C_in, C_out, kH, kW) as in PyTorch, b
// (C_out) or empty; y (N, C_out, H_out, W_out),
// H_out = (H - 1) s - 2 pad + d (kH - 1) + output_padding + 1.
Var conv_transpose2d(const Var& x, const Var& w, const Var& b, const ConvTranspose2dOptions& options = {});

}  // namespace xgrad
