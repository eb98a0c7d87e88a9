// Structural ops (lib/ops/shape.cpp): they move elements without arithmetic,
// and each one's gradient is its partner moving the gradient back
// (reshape <- reshape, permute <- the inverse permutation, broadcast_to <->
// sum_to, concat <- narrow, slice and the gathers <- scatter_add <-> take).
// So each is differentiable any number of times. Every result is a tensor
// of its own (xgrad never aliases storage), so changing one never changes
// another. Axes may be negative (counted from the end).
#pragma once

#include <vector>

#include <xgrad/core/broadcast.hpp>  // broadcast_to and sum_to, two shape ops the core needs too
#include <xgrad/core/var.hpp>

namespace xgrad {

// A shape for reshape: sizes, with at most one -1 standing for whatever
// size makes the element count match.
using ShapeSpec = xt::svector<long, 4>;

// The same elements in row-major order under another shape; throws
// ShapeError when the element counts differ.
Var reshape(const Var& x, const ShapeSpec& shape);
// Axes start_axis..end_axis merged into one: (N, C, H, W) -> (N, C*H*W) by default.
Var flatten(const Var& x, int start_axis = 1, int end_axis = -1);
// A new axis of size 1 at `axis` (in [-rank-1, rank]).
Var unsqueeze(const Var& x, int axis);
// Axis `axis`, which must have size 1, removed.
Var squeeze(const Var& x, int axis);

// y = x with its axes reordered: y.shape[i] = x.shape[order[i]]; `order`
// lists every axis once. dx = dy permuted back.
Var permute(const Var& x, const Axes& order);
// Two axes swapped.
Var transpose(const Var& x, int axis0 = -2, int axis1 = -1);

// The inputs joined along `axis`: their shapes must agree on every other
// axis. Input k's gradient is its own stretch of dy.
Var concat(const std::vector<Var>& xs, int axis = 0);
// Inputs (equal shapes) joined along a new axis `axis` (in [-rank-1, rank]).
Var stack(const std::vector<Var>& xs, int axis = 0);
// Elements start, start+step, ... (below end) along `axis`; start and end
// are clamped to the axis as in Python slicing (negative values count from
// the end); step >= 1. dx = dy added into those positions, zero elsewhere.
Var slice(const Var& x, int axis, long start, long end, long step = 1);
// length elements from start along axis; throws ShapeError past the end.
Var narrow(const Var& x, int axis, std::size_t start, std::size_t length);
// Consecutive pieces of the given sizes along axis (they must sum to its size).
std::vector<Var> split(const Var& x, const std::vector<std::size_t>& sizes, int axis = 0);
// `chunks` pieces of equal size along axis, the last one smaller if needed
// (as torch.chunk: ceil(size / chunks) each).
std::vector<Var> chunk(const Var& x, std::size_t chunks, int axis = 0);

// The entries indices[0], indices[1], ... of x along axis (an embedding
// lookup is index_select(table, 0, ids)); dx scatters dy back, summing the
// contributions of repeated indices. Throws std::out_of_range for an index
// past the axis.
Var index_select(const Var& x, int axis, const std::vector<std::size_t>& indices);
// torch.gather: y has the shape of `index` (same rank as x, every size but
// axis's at most x's) and y[..., j, ...] = x[..., index[..., j, ...], ...]
// along axis; dx scatters dy back, summing repeated positions.
Var gather(const Var& x, int axis, const xt::xarray<std::size_t>& index);

// Elements at flat (row-major) positions: y (of `shape`, as many elements as
// indices) holds x's elements indices[0], indices[1], ...; dx =
// scatter_add(dy, indices, x's shape). Throws std::out_of_range for an index
// past x's elements.
Var take(const Var& x, const std::vector<std::size_t>& indices, const Shape& shape);
// The adjoint of take: zeros of `shape` with values' element k added at
// flat position indices[k] (repeated positions add up); dvalues =
// take(dy, indices, values' shape).
Var scatter_add(const Var& values, const std::vector<std::size_t>& indices, const Shape& shape);

}  // namespace xgrad
