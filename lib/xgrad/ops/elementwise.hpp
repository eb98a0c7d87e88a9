// Elementwise functions of one tensor (lib/ops/elementwise.cpp). Any shape;
// the result has the input's shape. Gradient formulas with dy = d loss / d y.
#pragma once

#include <xgrad/core/var.hpp>

namespace xgrad {

Var exp(const Var& x);   // dx = dy * y
Var log(const Var& x);   // dx = dy / x
Var sqrt(const Var& x);  // dx = dy / (2 y)  (inf at x = 0, as in PyTorch)
Var abs(const Var& x);   // dx = dy * sign(x), 0 at x = 0
// x^p for a constant p, as std::pow at every element (0^0 = 1, 0^-1 = inf);
// dx = dy * p * x^(p-1), and 0 for p = 0, as in PyTorch (at x = 0: 1 for
// p = 1, +-inf for p < 1).
Var pow(const Var& x, float p);
// min(max(x, low), high); dx = dy where low <= x <= high (both ends
// included, as in PyTorch), else 0; NaN stays NaN.
Var clamp(const Var& x, float low, float high);

Var relu(const Var& x);  // dx = dy * (x > 0); the gradient at exactly 0 is 0, and relu(NaN) = NaN, as in PyTorch
Var leaky_relu(const Var& x, float negative_slope = 0.01f);  // dx = dy * (x > 0 ? 1 : slope)
Var sigmoid(const Var& x);                                   // y = 1/(1+e^-x); dx = dy * y * (1-y)
Var tanh(const Var& x);                                      // dx = dy * (1 - y^2)

}  // namespace xgrad
