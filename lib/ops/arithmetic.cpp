#include <xgrad/ops/arithmetic.hpp>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <xgrad/core/op.hpp>

namespace xgrad {
namespace {

// out = f(a, b): over flat views when the shapes are equal (the common case,
// and the cheap one: fixed-rank views skip xtensor's shape computations),
// with NumPy broadcasting otherwise.
template <class F>
void binary(Tensor& out, const Var& a, const Var& b, const F& f) {
    if (a.shape() == b.shape()) {
        parallel_elementwise(out, f, a.value(), b.value());
    } else {
        f(out, a.value(), b.value());
    }
}

}  // namespace

Var add(const Var& a, const Var& b) {
    Op op("add", {a, b}, broadcast_shapes("add", a.shape(), b.shape()));
    binary(op.out(), a, b, [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p + q; });
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_sum_to(0, ctx.grad_output());
        ctx.accumulate_sum_to(1, ctx.grad_output());
    });
}

Var sub(const Var& a, const Var& b) {
    Op op("sub", {a, b}, broadcast_shapes("sub", a.shape(), b.shape()));
    binary(op.out(), a, b, [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p - q; });
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_sum_to(0, ctx.grad_output());
        ctx.accumulate_sum_to(1, ctx.grad_output(), -1.f);
    });
}

Var mul(const Var& a, const Var& b) {
    Op op("mul", {a, b}, broadcast_shapes("mul", a.shape(), b.shape()));
    binary(op.out(), a, b, [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p * q; });
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_broadcast(0, ctx.grad_output() * ctx.input(1));
        ctx.accumulate_broadcast(1, ctx.grad_output() * ctx.input(0));
    });
}

Var div(const Var& a, const Var& b) {
    Op op("div", {a, b}, broadcast_shapes("div", a.shape(), b.shape()));
    binary(op.out(), a, b, [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p / q; });
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_broadcast(0, ctx.grad_output() / ctx.input(1));
        // d(a/b)/db = -(a/b)/b = -y/b.
        ctx.accumulate_broadcast(1, -ctx.grad_output() * ctx.output() / ctx.input(1));
    });
}

Var maximum(const Var& a, const Var& b) {
    Op op("maximum", {a, b}, broadcast_shapes("maximum", a.shape(), b.shape()));
    // a > b, or a NaN, takes a; otherwise b (which is NaN if b is).
    binary(op.out(), a, b,
           [](auto& out, const auto& x, const auto& y) { xt::noalias(out) = xt::where(x > y || xt::isnan(x), x, y); });
    return op.finish([](BackwardContext& ctx) {
        const Tensor &x = ctx.input(0), &y = ctx.input(1), &dy = ctx.grad_output();
        ctx.accumulate_broadcast(0, xt::where(x > y, dy, xt::where(xt::equal(x, y), 0.5f * dy, 0.f)));
        ctx.accumulate_broadcast(1, xt::where(y > x, dy, xt::where(xt::equal(x, y), 0.5f * dy, 0.f)));
    });
}

Var minimum(const Var& a, const Var& b) {
    Op op("minimum", {a, b}, broadcast_shapes("minimum", a.shape(), b.shape()));
    binary(op.out(), a, b,
           [](auto& out, const auto& x, const auto& y) { xt::noalias(out) = xt::where(x < y || xt::isnan(x), x, y); });
    return op.finish([](BackwardContext& ctx) {
        const Tensor &x = ctx.input(0), &y = ctx.input(1), &dy = ctx.grad_output();
        ctx.accumulate_broadcast(0, xt::where(x < y, dy, xt::where(xt::equal(x, y), 0.5f * dy, 0.f)));
        ctx.accumulate_broadcast(1, xt::where(y < x, dy, xt::where(xt::equal(x, y), 0.5f * dy, 0.f)));
    });
}

Var where(const Tensor& condition, const Var& a, const Var& b) {
    const Shape shape = broadcast_shapes("where", condition.shape(), broadcast_shapes("where", a.shape(), b.shape()));
    Op op("where", {a, b}, shape);
    xt::noalias(op.out()) = xt::where(xt::not_equal(condition, 0.f), a.value(), b.value());
    if (op.records()) xt::noalias(op.save(condition.shape())) = condition;
    return op.finish([](BackwardContext& ctx) {
        const Tensor &mask = ctx.saved(), &dy = ctx.grad_output();
        ctx.accumulate_broadcast(0, xt::where(xt::not_equal(mask, 0.f), dy, 0.f));
        ctx.accumulate_broadcast(1, xt::where(xt::not_equal(mask, 0.f), 0.f, dy));
    });
}

Var neg(const Var& x) {
    Op op("neg", {x}, x.shape());
    parallel_elementwise(
        op.out(), [](auto& y, const auto& in) { xt::noalias(y) = -in; }, x.value());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, -ctx.grad_output()); });
}

Var scale(const Var& x, float s) {
    Op op("scale", {x}, x.shape());
    parallel_elementwise(
        op.out(), [s](auto& y, const auto& in) { xt::noalias(y) = in * s; }, x.value());
    op.state<float>(s);
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() * ctx.state<float>()); });
}

Var add_scalar(const Var& x, float s) {
    Op op("add_scalar", {x}, x.shape());
    parallel_elementwise(
        op.out(), [s](auto& y, const auto& in) { xt::noalias(y) = in + s; }, x.value());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output()); });
}

}  // namespace xgrad
