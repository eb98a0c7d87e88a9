#include <xgrad/core/tensor.hpp>

#include <limits>
#include <utility>

namespace xgrad {

std::size_t numel(const Shape& shape) {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    return n;
}

std::size_t checked_numel(const char* what, const Shape& shape) {
    std::size_t n = 1;
    bool zero = false;
    for (std::size_t d : shape) zero = zero || d == 0;
    if (zero) return 0;
    for (std::size_t d : shape) {
        if (n > std::numeric_limits<std::size_t>::max() / d) {
            throw std::length_error(std::string("xgrad::") + what + ": a tensor of shape " + shape_string(shape) +
                                    " has more elements than memory can address");
        }
        n *= d;
    }
    return n;
}

std::string shape_string(const Shape& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i > 0) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + ")";
}

bool broadcasts_to(const Shape& from, const Shape& to) {
    if (from.size() > to.size()) return false;
    const std::size_t lead = to.size() - from.size();
    for (std::size_t d = 0; d < from.size(); ++d) {
        if (from[d] != 1 && from[d] != to[lead + d]) return false;
    }
    return true;
}

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
    const std::size_t rank = std::max(a.size(), b.size());
    Shape out(rank, 1);
    for (std::size_t i = 0; i < rank; ++i) {
        // Aligned at the last dimension; a missing leading dimension is 1.
        const std::size_t m = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
        const std::size_t n = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
        if (m != n && m != 1 && n != 1) {
            throw ShapeError(std::string("xgrad::") + op + ": shapes " + shape_string(a) + " and " + shape_string(b) +
                             " cannot be broadcast (aligned at the last dimension, each pair of sizes must match or be 1)");
        }
        out[i] = m == 1 ? n : m;
    }
    return out;
}

std::size_t normalize_axis(const char* op, int axis, const Shape& shape) {
    const auto rank = static_cast<long>(shape.size());
    const long a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= rank) {
        throw ShapeError(std::string("xgrad::") + op + ": axis " + std::to_string(axis) + " is out of range for shape " +
                         shape_string(shape) + " (rank " + std::to_string(rank) + ")");
    }
    return static_cast<std::size_t>(a);
}

void TensorPool::acquire(Tensor& t, const Shape& shape) {
    const std::size_t n = numel(shape);
    auto it = free_.find(n);
    if (it == free_.end() || it->second.empty()) {
        t.resize(shape, true);  // allocates
        return;
    }
    t.storage() = std::move(it->second.back());
    it->second.pop_back();
    // The storage already has n elements: resizing only sets the shape and
    // strides (nothing when t's stale shape is this one).
    t.resize(shape);
}

void TensorPool::release(Tensor& t) {
    if (t.storage().size() == 0) return;
    free_[t.storage().size()].push_back(std::move(t.storage()));
}

std::size_t TensorPool::cached_buffers() const {
    std::size_t n = 0;
    for (const auto& entry : free_) n += entry.second.size();
    return n;
}

}  // namespace xgrad
