// Reductions (lib/ops/reduce.cpp). `axes` may be negative (counted from the
// end) and lists each axis at most once; `keepdim` keeps the reduced axes as
// size 1 (so the result broadcasts against the input).
#pragma once

#include <xgrad/core/var.hpp>

namespace xgrad {

// Sum of all elements -> a scalar (rank 0); dx = dy broadcast.
Var sum(const Var& x);
Var sum(const Var& x, const Axes& axes, bool keepdim = false);
// sum / count; throws ShapeError for an empty x (the mean of nothing).
Var mean(const Var& x);
Var mean(const Var& x, const Axes& axes, bool keepdim = false);

// Largest / smallest element along `axis`; the gradient goes to the arg-max
// element only: on ties, to the first (lowest index) of them, and NaN counts
// as the largest (and smallest) value, so a NaN propagates (torch.max(x, dim)).
// Throws ShapeError when the axis is empty.
Var max(const Var& x, int axis, bool keepdim = false);
Var min(const Var& x, int axis, bool keepdim = false);
// Over all elements -> a scalar; the gradient is split evenly over the
// elements equal to it (over the NaNs when it is NaN), as torch.max(x).
Var max(const Var& x);
Var min(const Var& x);

// softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m), m the maximum along
// `axis` (stable for any |x|); dx = y * (dy - sum(dy * y)).
Var softmax(const Var& x, int axis = -1);
// (x_i - m) - log sum_j exp(x_j - m), never log of a rounded softmax;
// dx = dy - softmax(x) * sum(dy).
Var log_softmax(const Var& x, int axis = -1);

}  // namespace xgrad
