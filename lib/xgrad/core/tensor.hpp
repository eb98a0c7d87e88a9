// Tensor: the one array type of xgrad, its shapes, and the buffer pool that
// lets a training step reuse every buffer of the previous one.
#pragma once

// xsimd changes xt::xarray's allocator, and so xgrad::Tensor's type: code
// compiled without it would not be using the library's Tensor (cryptic link
// errors, or an ODR violation that links and misbehaves).
#ifndef XTENSOR_USE_XSIMD
#error \
    "xgrad: compile with -DXTENSOR_USE_XSIMD, as the library was (pkg-config --cflags xgrad, Meson's dependency('xgrad') and CMake's xgrad::xgrad pass it on): it changes xgrad::Tensor's type"
#endif

#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <xtensor/xarray.hpp>

namespace xgrad {

// Every value is an N-d float32 array, row-major, of any rank (a scalar is
// rank 0). xtensor's xarray keeps its shape and strides in a small inline
// vector of 4, so tensors of rank <= 4 never touch the heap for them
// (docs/design.md has the measurements behind this choice).
//
// Pitfall: Tensor({2, 3}) is the 1-D tensor [2, 3] (a braced list is read
// as values). Make a 2 x 3 tensor with Tensor::from_shape({2, 3}) or
// Tensor({2, 3}, fill).
using Tensor = xt::xarray<float>;
using Shape = Tensor::shape_type;

// Axes of an op (negative values count from the end, as in NumPy); inline
// storage for up to 4, so passing {0, 2} allocates nothing.
using Axes = xt::svector<int, 4>;

std::size_t numel(const Shape& shape);

// "(128, 784)", "(5)" for rank 1, "()" for a scalar: the form every shape
// error message uses.
std::string shape_string(const Shape& shape);
inline std::string shape_string(const Tensor& t) { return shape_string(t.shape()); }

// Thrown when an op's operands do not fit; the message names the op and the shapes.
struct ShapeError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// The NumPy broadcast of two shapes: aligned at the last dimension, each
// pair of sizes equal or one of them 1. Throws ShapeError naming `op` and
// both shapes.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);

// Whether `from` broadcasts to `to`: aligned at the last dimension, each of
// its sizes is 1 or equal to to's (and it has no more dimensions).
bool broadcasts_to(const Shape& from, const Shape& to);

// `axis` in [-rank, rank) as an index in [0, rank); throws ShapeError naming
// `op` and the shape otherwise.
std::size_t normalize_axis(const char* op, int axis, const Shape& shape);

// The shape's element count, throwing std::length_error naming `what` when
// it does not fit in a size_t.
std::size_t checked_numel(const char* what, const Shape& shape);

// A tensor without storage (size 0), made without allocating. Not
// Tensor(): a default xarray is a rank-0 scalar and allocates its element.
inline Tensor empty_tensor() { return Tensor(Tensor::storage_type(), Shape{0}, Tensor::strides_type{0}); }
// Frees t's storage and leaves it empty (size 0).
inline void release_storage(Tensor& t) { Tensor::storage_type gone = std::move(t.storage()); }

// Reuses tensor storage by element count. glibc hands large buffers back to
// the kernel on free and page-faults them in again on the next allocation,
// which costs more than the arithmetic of a step (see docs/design.md);
// recycling through this pool makes a steady-state step allocation-free.
// It keeps bare storage, not tensors: tensors stay where they live (in the
// graph's nodes), and only their storage moves, which is three pointers.
class TensorPool {
public:
    // Gives t (whose storage must be empty) storage for `shape`, with
    // unspecified contents, and that shape.
    void acquire(Tensor& t, const Shape& shape);
    // Takes back t's storage; t is left empty (size 0; its shape is stale).
    void release(Tensor& t);
    std::size_t cached_buffers() const;

private:
    std::unordered_map<std::size_t, std::vector<Tensor::storage_type>> free_;
};

}  // namespace xgrad
