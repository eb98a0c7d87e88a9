#include <xgrad/nn/spectral_norm.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/linalg.hpp>
#include <xgrad/ops/reduce.hpp>
#include <xgrad/ops/shape.hpp>

namespace xgrad {
namespace {

// x /= max(|x|, eps); in double, so that u and v stay unit vectors.
void normalize_in_place(float* x, std::size_t n, float eps) {
    double squares = 0.0;
    for (std::size_t i = 0; i < n; ++i) squares += double(x[i]) * x[i];
    const double norm = std::max(std::sqrt(squares), double(eps));
    for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>(x[i] / norm);
}

// Whether x can start a power iteration: finite and not all zero.
bool usable(const float* x, std::size_t n) {
    bool nonzero = false;
    for (std::size_t i = 0; i < n; ++i) {
        if (!std::isfinite(x[i])) return false;
        nonzero = nonzero || x[i] != 0.f;
    }
    return nonzero;
}

}  // namespace

namespace {
std::size_t checked_dim(const Shape& weight_shape, std::size_t dim) {
    if (dim > 1 || (dim == 1 && weight_shape.size() < 2)) {
        throw ShapeError("xgrad::SpectralNorm: dim " + std::to_string(dim) + " of a weight " + shape_string(weight_shape) +
                         " (expected 0, or 1 for a weight of rank >= 2)");
    }
    return dim;
}
}  // namespace

SpectralNorm::SpectralNorm(const Shape& weight_shape, Rng& rng, float eps, std::size_t dim)
    : dim_(checked_dim(weight_shape, dim)),
      rows_(weight_shape.empty() ? 1 : weight_shape[dim_]),
      cols_(rows_ == 0 ? 0 : numel(weight_shape) / rows_),
      inner_(weight_shape.size() < 2 ? 1 : numel(Shape(weight_shape.begin() + 2, weight_shape.end()))),
      eps_(eps) {
    Tensor tu = Tensor::from_shape({rows_}), tv = Tensor::from_shape({cols_});
    rng.fill_normal(tu, 0.f, 1.f);
    rng.fill_normal(tv, 0.f, 1.f);
    normalize_in_place(tu.data(), rows_, eps_);
    normalize_in_place(tv.data(), cols_, eps_);
    u = Var(std::move(tu));
    v = Var(std::move(tv));
}

Var SpectralNorm::normalize(const Var& weight, bool training) {
    const float* w = weight.value().data();
    const std::size_t size = weight.numel();
    // A zero weight has no direction to iterate towards: W^T u = 0 would
    // make v and then u zero, for good (and a NaN weight, NaN for good).
    if (training && usable(w, size)) {
        float* pu = u.mutable_value().data();
        float* pv = v.mutable_value().data();
        if (!usable(pu, rows_)) std::fill(pu, pu + rows_, static_cast<float>(1.0 / std::sqrt(double(rows_))));
        for (std::size_t c = 0; c < cols_; ++c) {
            double s = 0.0;
            for (std::size_t r = 0; r < rows_; ++r) s += double(w[offset(r, c)]) * pu[r];
            pv[c] = static_cast<float>(s);
        }
        normalize_in_place(pv, cols_, eps_);
        for (std::size_t r = 0; r < rows_; ++r) {
            double s = 0.0;
            for (std::size_t c = 0; c < cols_; ++c) s += double(w[offset(r, c)]) * pv[c];
            pu[r] = static_cast<float>(s);
        }
        normalize_in_place(pu, rows_, eps_);
    }
    // sigma = u^T W v through ops, so that backward carries d sigma / dW.
    const ShapeSpec matrix_shape{static_cast<long>(rows_), static_cast<long>(cols_)};
    const Var matrix = reshape(dim_ == 0 ? weight : transpose(weight, 0, 1), matrix_shape);
    const Var sigma = sum(mul(u.detach(), matmul(matrix, v.detach())));
    sigma_ = sigma.item();
    // The spectral norm of a zero weight is zero: the weight is used as it
    // is (W / 0 would be NaN forward and backward).
    if (sigma_ == 0.f) return weight;
    return div(weight, sigma);
}

}  // namespace xgrad
