// Ops for differentiable data augmentation (lib/ops/augment.cpp): moves of
// each image of a batch by its own amount, differentiable (any number of
// times) so that a GAN's generator learns through an augmented D input.
#pragma once

#include <vector>

#include <xgrad/core/var.hpp>

namespace xgrad {

// Each image n of x (N, C, H, W) moved by shifts[2n] rows down and
// shifts[2n + 1] columns right (negative: up, left), zeros moving in:
// y[n, c, i, j] = x[n, c, i - dy, j - dx], or 0 outside x. dx = the same
// move backwards (its adjoint). Throws ShapeError unless shifts holds 2N values.
Var translate2d(const Var& x, const std::vector<long>& shifts);

}  // namespace xgrad
