// Tensor: the one array type of xgrad, and the buffer pool that lets a
// training step reuse every buffer of the previous one.
#pragma once

#include <array>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <xtensor/xtensor.hpp>

namespace xgrad {

// Every value is a float32 matrix (rows x cols): a batch is batch x features,
// a scalar is 1 x 1. Fixed rank keeps shapes checkable and buffers reusable.
using Tensor = xt::xtensor<float, 2>;
using Shape = std::array<std::size_t, 2>;

inline Shape shape_of(const Tensor& t) { return {t.shape()[0], t.shape()[1]}; }

// "(128, 784)": the form every shape error message uses.
std::string shape_string(const Shape& s);
inline std::string shape_string(const Tensor& t) { return shape_string(shape_of(t)); }

// Thrown when an op's operands do not fit; the message names the op and both shapes.
struct ShapeError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// Reuses tensor storage by element count. glibc hands large buffers back to
// the kernel on free and page-faults them in again on the next allocation,
// which costs more than the arithmetic of a step (see docs/design.md);
// recycling through this pool makes a steady-state step allocation-free.
class TensorPool {
public:
    // A tensor of the given shape with unspecified contents.
    Tensor acquire(const Shape& shape);
    // Returns the storage of t to the pool; t is left empty.
    void release(Tensor& t);
    std::size_t cached_buffers() const;

private:
    std::unordered_map<std::size_t, std::vector<Tensor>> free_;
};

}  // namespace xgrad
