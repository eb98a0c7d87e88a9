// How far two tensors are apart, relative to their magnitude: the
// equivalence measure of the distributed tests and benchmark.
#pragma once

#include <algorithm>
#include <cmath>

#include <vector>

#include <xgrad/core/tensor.hpp>
#include <xgrad/core/var.hpp>

namespace test {

// max_j |a_j - b_j| / max_j |b_j| (0 when equal). Element by element the
// ratio is larger where a value is near zero: Adam moves every element by
// about lr whatever its size, so an element passing through 0 keeps an
// absolute difference of the tensor's scale times ~1e-7.
inline double relative_difference(const xgrad::Tensor& a, const xgrad::Tensor& b) {
    double difference = 0, scale = 0;
    for (std::size_t j = 0; j < a.size() && j < b.size(); ++j) {
        difference = std::max(difference, std::fabs(double(a.data()[j]) - double(b.data()[j])));
        scale = std::max(scale, std::fabs(double(b.data()[j])));
    }
    return difference > 0 ? difference / scale : 0.0;
}

// The largest relative_difference between corresponding values.
inline double relative_difference(const std::vector<xgrad::Var>& a, const std::vector<xgrad::Var>& b) {
    double worst = 0;
    for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
        worst = std::max(worst, relative_difference(a[i].value(), b[i].value()));
    return worst;
}

}  // namespace test
