// What the op tests check every op against: a reference computed in double
// by naive loops over multi-indices, written independently of xgrad's
// kernels, and the upstream gradient of a non-scalar result.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/core/random.hpp>

#include "helpers.hpp"

namespace test {

using Reference = xt::xarray<double>;

inline xgrad::Var random_var(const xgrad::Shape& shape, float lo, float hi, std::uint64_t seed, bool requires_grad = true) {
    return xgrad::Var(random_tensor(shape, lo, hi, seed), requires_grad);
}

inline Reference to_double(const xgrad::Tensor& t) {
    Reference r = Reference::from_shape(t.shape());
    for (std::size_t i = 0; i < t.size(); ++i) r.data()[i] = t.data()[i];
    return r;
}

inline Reference zeros(const xgrad::Shape& shape) { return Reference(shape, 0.0); }

// The multi-index of flat element e of `shape`, and back.
inline xgrad::Shape unravel(std::size_t e, const xgrad::Shape& shape) {
    xgrad::Shape index(shape.size(), 0);
    for (std::size_t d = shape.size(); d-- > 0;) {
        index[d] = e % shape[d];
        e /= shape[d];
    }
    return index;
}
inline std::size_t ravel(const xgrad::Shape& index, const xgrad::Shape& shape) {
    std::size_t e = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) e = e * shape[d] + index[d];
    return e;
}

// The flat element of an operand of `shape` that element `out_index` of a
// broadcast result reads (NumPy rules: aligned at the last dimension, size-1
// dimensions repeat).
inline std::size_t broadcast_source(const xgrad::Shape& out_index, const xgrad::Shape& shape) {
    const std::size_t offset = out_index.size() - shape.size();
    std::size_t e = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) e = e * shape[d] + (shape[d] == 1 ? 0 : out_index[offset + d]);
    return e;
}

// sum(weights .* y) written with the public Op API: backward then hands y the
// upstream gradient `weights`, which is not uniform (a rule that ignores
// where dy came from shows), without relying on any op under test.
inline xgrad::Var project(const xgrad::Var& y, const xgrad::Tensor& weights) {
    REQUIRE(y.shape() == weights.shape());
    xgrad::Op op("test_projection", {y, xgrad::Var(weights)}, xgrad::Shape{});
    double total = 0.0;
    for (std::size_t i = 0; i < weights.size(); ++i) total += double(y.value().data()[i]) * weights.data()[i];
    *op.out().data() = static_cast<float>(total);
    return op.finish([](xgrad::BackwardContext& ctx) { ctx.accumulate(0, ctx.input(1) * *ctx.grad_output().data()); });
}

inline void backward_with(const xgrad::Var& y, const xgrad::Tensor& dy) { xgrad::backward(project(y, dy)); }

// Each element of `got` within tol * (1 + |want|) of the double reference:
// relative for large values, absolute near zero. Non-finite values fail
// unless the reference has the same non-finite value.
inline void check_matches(const std::string& what, const xgrad::Tensor& got, const Reference& want, double tol = 1e-5) {
    REQUIRE(xgrad::shape_string(got.shape()) == xgrad::shape_string(xgrad::Shape(want.shape().begin(), want.shape().end())));
    double worst = 0.0;
    std::size_t at = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        const double g = got.data()[i], w = want.data()[i];
        double err;
        if (std::isnan(w)) {
            err = std::isnan(g) ? 0.0 : HUGE_VAL;
        } else if (std::isinf(w)) {
            err = g == w ? 0.0 : HUGE_VAL;
        } else {
            err = std::isfinite(g) ? std::abs(g - w) / (1.0 + std::abs(w)) : HUGE_VAL;
        }
        if (err > worst) {
            worst = err;
            at = i;
        }
    }
    INFO(what << ": worst element " << xgrad::shape_string(unravel(at, got.shape())) << ": got "
              << (got.size() ? got.data()[at] : 0.f) << ", want " << (want.size() ? want.data()[at] : 0.0));
    CHECK(worst <= tol);
}

}  // namespace test
