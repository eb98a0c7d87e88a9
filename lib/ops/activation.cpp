#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/ops.hpp>

namespace xgrad {

Var exp(const Var& x) {
    Op op("exp", {x}, x.shape());
    parallel_elementwise(op.out(), [](auto& y, const auto& in) { xt::noalias(y) = xt::exp(in); }, x.value());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() * ctx.output()); });
}

Var log(const Var& x) {
    Op op("log", {x}, x.shape());
    parallel_elementwise(op.out(), [](auto& y, const auto& in) { xt::noalias(y) = xt::log(in); }, x.value());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() / ctx.input(0)); });
}

Var relu(const Var& x) {
    Op op("relu", {x}, x.shape());
    // Not maximum(x, 0): the SIMD max returns 0 for a NaN x, which would
    // hide a diverged model; as in PyTorch, relu(NaN) is NaN.
    xt::noalias(op.out()) = xt::where(x.value() < 0.f, 0.f, x.value());
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate(0, xt::where(ctx.output() > 0.f, ctx.grad_output(), 0.f));
    });
}

Var leaky_relu(const Var& x, float negative_slope) {
    Op op("leaky_relu", {x}, x.shape());
    xt::noalias(op.out()) = xt::where(x.value() > 0.f, x.value(), negative_slope * x.value());
    op.set_attr(0, negative_slope);
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate(0, xt::where(ctx.input(0) > 0.f, ctx.grad_output(), ctx.attr(0) * ctx.grad_output()));
    });
}

Var sigmoid(const Var& x) {
    Op op("sigmoid", {x}, x.shape());
    // exp(-x) overflows to inf for x < -88 and 1/inf = 0: exact, never NaN.
    parallel_elementwise(op.out(), [](auto& y, const auto& in) { xt::noalias(y) = 1.f / (1.f + xt::exp(-in)); }, x.value());
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate(0, ctx.grad_output() * ctx.output() * (1.f - ctx.output()));
    });
}

Var tanh(const Var& x) {
    Op op("tanh", {x}, x.shape());
    parallel_elementwise(op.out(), [](auto& y, const auto& in) { xt::noalias(y) = xt::tanh(in); }, x.value());
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate(0, ctx.grad_output() * (1.f - ctx.output() * ctx.output()));
    });
}

}  // namespace xgrad
