// softplus(x) = log(1 + e^x): the worked example of docs/extending.md.
// An op is this one file: a function that checks its operands, computes the
// forward result into op.out(), and hands op.finish() its two backward
// rules, the kernel one and the differentiable one.
#pragma once

#include <xtensor/xmath.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/elementwise.hpp>

namespace xgrad {

// y = max(x, 0) + log1p(exp(-|x|))  (never overflows, unlike log(1 + exp(x)));
// dy/dx = sigmoid(x).
inline Var softplus(const Var& x) {
    Op op("softplus", {x}, x.shape());
    xt::noalias(op.out()) = xt::maximum(x.value(), 0.f) + xt::log1p(xt::exp(-xt::abs(x.value())));
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() / (1.f + xt::exp(-ctx.input(0)))); },
                     [](GraphContext& g) { g.accumulate(0, g.grad_output() * sigmoid(g.input(0))); });
}

}  // namespace xgrad
