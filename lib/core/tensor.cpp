#include <xgrad/core/tensor.hpp>

#include <utility>

namespace xgrad {

std::string shape_string(const Shape& s) {
    return "(" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ")";
}

Tensor TensorPool::acquire(const Shape& shape) {
    auto it = free_.find(shape[0] * shape[1]);
    if (it == free_.end() || it->second.empty()) return Tensor(shape);
    Tensor t = std::move(it->second.back());
    it->second.pop_back();
    t.resize(shape);  // same element count: only the strides change, no allocation
    return t;
}

void TensorPool::release(Tensor& t) {
    if (t.size() == 0) return;
    free_[t.size()].push_back(std::move(t));
    t = Tensor();
}

std::size_t TensorPool::cached_buffers() const {
    std::size_t n = 0;
    for (const auto& entry : free_) n += entry.second.size();
    return n;
}

}  // namespace xgrad
