// The two broadcasting ops, each the other's gradient: broadcast_to (a
// tensor repeated up to a larger shape) and sum_to (a tensor summed down to
// a shape that broadcasts to its own). They live in core, beside the
// kernels they run (kernels.hpp), because the backward pass itself uses
// sum_to: a gradient for a broadcast input is summed down to its shape.
#pragma once

#include <xgrad/core/var.hpp>

namespace xgrad {

// x broadcast (NumPy rules) to `shape`; dx = sum_to(dy, x's shape).
Var broadcast_to(const Var& x, const Shape& shape);
// x summed over the axes in which `shape` broadcasts to x's shape (aligned
// at the last axis; 1 or missing there), keeping the sizes of `shape`;
// dx = broadcast_to(dy, x's shape).
Var sum_to(const Var& x, const Shape& shape);

namespace detail {
// a + b of equal shapes: two contributions to one gradient (each gets dy).
Var add_gradients(const Var& a, const Var& b);
}  // namespace detail

}  // namespace xgrad
