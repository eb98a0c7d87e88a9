#include <xgrad/core/broadcast.hpp>

#include <string>

#include <xgrad/core/op.hpp>

namespace xgrad {

Var broadcast_to(const Var& x, const Shape& shape) {
    checked_numel("broadcast_to", shape);
    if (!broadcasts_to(x.shape(), shape)) {
        throw ShapeError("xgrad::broadcast_to: " + shape_string(x.shape()) + " does not broadcast to " + shape_string(shape));
    }
    Op op("broadcast_to", {x}, shape);
    expand_to("broadcast_to", x.value(), op.out(), false);
    return op.finish(
        [](BackwardContext& ctx) {
            if (ctx.needs_grad(0)) sum_to(ctx.op_name(), ctx.grad_output(), ctx.sink(0));
        },
        [](GraphContext& g) { g.accumulate(0, sum_to(g.grad_output(), g.input(0).shape())); });
}

Var sum_to(const Var& x, const Shape& shape) {
    if (!broadcasts_to(shape, x.shape())) {
        throw ShapeError("xgrad::sum_to: " + shape_string(shape) + " does not broadcast to " + shape_string(x.shape()) + ", so " +
                         shape_string(x.shape()) + " cannot be summed down to it");
    }
    Op op("sum_to", {x}, shape);
    sum_to("sum_to", x.value(), op.out(), false);
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor& dy = ctx.grad_output();
            if (ctx.needs_grad(0)) expand_to(ctx.op_name(), dy.data(), dy.shape(), ctx.sink(0));
        },
        [](GraphContext& g) { g.accumulate(0, broadcast_to(g.grad_output(), g.input(0).shape())); });
}

namespace detail {

Var add_gradients(const Var& a, const Var& b) {
    if (a.shape() != b.shape()) {
        throw ShapeError("xgrad::add_gradients: " + shape_string(a.shape()) + " and " + shape_string(b.shape()) + " differ");
    }
    Op op("add_gradients", {a, b}, a.shape());
    parallel_elementwise(
        op.out(), [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p + q; }, a.value(), b.value());
    return op.finish(
        [](BackwardContext& ctx) {
            ctx.accumulate(0, ctx.grad_output());
            ctx.accumulate(1, ctx.grad_output());
        },
        [](GraphContext& g) {
            g.accumulate(0, g.grad_output());
            g.accumulate(1, g.grad_output());
        });
}

}  // namespace detail

}  // namespace xgrad
