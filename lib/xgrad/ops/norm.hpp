// Normalisations (lib/ops/norm.cpp).
#pragma once

#include <optional>

#include <xgrad/core/var.hpp>

namespace xgrad {

struct BatchNormOptions {
    bool training = true;   // batch statistics (and running statistics updated) or the running ones
    float momentum = 0.1f;  // running = (1 - momentum) running + momentum batch, as in PyTorch
    float eps = 1e-5f;
    bool update_running = true;  // training mode: false uses batch statistics but leaves the running ones
    // When set, y is rectified in the same passes over memory: relu(y) for a
    // slope of 0, leaky_relu(y, slope) for a slope > 0. The same values as
    // batch_norm followed by that op, with one pass fewer forward and one
    // fewer backward (Sequential runs a BatchNorm and the ReLU or LeakyReLU
    // after it so).
    std::optional<float> rectifier_slope = std::nullopt;
};

// Whether batch_norm takes `slope` as its rectifier_slope: finite and >= 0.
bool valid_rectifier_slope(float slope);

// Per channel (axis 1) over the batch and every other axis of x (N, C, ...):
//   y = (x - mean) / sqrt(var + eps) * weight + bias,
// weight and bias (C) or empty (no affine part). Training mode uses the
// batch's mean and biased variance, and updates running_mean and
// running_var (C, either may be empty) with the batch mean and the unbiased
// variance, as PyTorch does; the backward is the exact gradient through the
// batch statistics. Evaluation mode uses the running statistics (required),
// which it copies: changing them later does not affect the recorded graph.
// Throws ShapeError for fewer than two values per channel in training mode,
// std::invalid_argument for a rectifier slope < 0 or not finite.
Var batch_norm(const Var& x, const Var& weight, const Var& bias, const Var& running_mean, const Var& running_var,
               const BatchNormOptions& options = {});

// Over the last `axes` axes of x, for each position of the others:
//   y = (x - mean) / sqrt(var + eps) * weight + bias  (biased variance),
// weight and bias of the shape of those axes, or empty.
Var layer_norm(const Var& x, std::size_t axes, const Var& weight, const Var& bias, float eps = 1e-5f);

}  // namespace xgrad
