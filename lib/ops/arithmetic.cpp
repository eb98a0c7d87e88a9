#include <string>

#include <xgrad/core/op.hpp>
#include <xgrad/ops.hpp>

namespace xgrad {
namespace {

Shape broadcast_shape(const char* op, const Var& a, const Var& b) {
    Shape out{};
    for (std::size_t d = 0; d < 2; ++d) {
        const std::size_t m = a.shape()[d], n = b.shape()[d];
        if (m != n && m != 1 && n != 1) {
            throw ShapeError(std::string("xgrad::") + op + ": shapes " + shape_string(a.shape()) + " and " +
                             shape_string(b.shape()) + " cannot be broadcast (each dimension must match or be 1)");
        }
        out[d] = m == 1 ? n : m;
    }
    return out;
}

}  // namespace

Var add(const Var& a, const Var& b) {
    Op op("add", {a, b}, broadcast_shape("add", a, b));
    xt::noalias(op.out()) = a.value() + b.value();
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_broadcast(0, ctx.grad_output());
        ctx.accumulate_broadcast(1, ctx.grad_output());
    });
}

Var sub(const Var& a, const Var& b) {
    Op op("sub", {a, b}, broadcast_shape("sub", a, b));
    xt::noalias(op.out()) = a.value() - b.value();
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_broadcast(0, ctx.grad_output());
        ctx.accumulate_broadcast(1, -ctx.grad_output());
    });
}

Var mul(const Var& a, const Var& b) {
    Op op("mul", {a, b}, broadcast_shape("mul", a, b));
    xt::noalias(op.out()) = a.value() * b.value();
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_broadcast(0, ctx.grad_output() * ctx.input(1));
        ctx.accumulate_broadcast(1, ctx.grad_output() * ctx.input(0));
    });
}

Var neg(const Var& x) {
    Op op("neg", {x}, x.shape());
    xt::noalias(op.out()) = -x.value();
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, -ctx.grad_output()); });
}

Var scale(const Var& x, float s) {
    Op op("scale", {x}, x.shape());
    xt::noalias(op.out()) = x.value() * s;
    op.set_attr(0, s);
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() * ctx.attr(0)); });
}

Var add_scalar(const Var& x, float s) {
    Op op("add_scalar", {x}, x.shape());
    xt::noalias(op.out()) = x.value() + s;
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output()); });
}

}  // namespace xgrad
