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

// maximum / minimum: dy goes to the winner of each pair, half to each on a
// tie; the choice is a constant (its derivative is zero almost everywhere).
void accumulate_share(GraphContext& g, bool larger) {
    const Tensor &x = g.input(0).value(), &y = g.input(1).value();
    for (std::size_t i = 0; i < 2; ++i) {
        if (!g.needs_grad(i)) continue;
        const Tensor& mine = i == 0 ? x : y;
        const Tensor& other = i == 0 ? y : x;
        const auto tie = xt::where(xt::equal(mine, other), 0.5f, 0.f);
        const Var share = larger ? constant(xt::where(mine > other, 1.f, tie)) : constant(xt::where(mine < other, 1.f, tie));
        g.accumulate(i, g.grad_output() * share);
    }
}

}  // namespace

Var add(const Var& a, const Var& b) {
    Op op("add", {a, b}, broadcast_shapes("add", a.shape(), b.shape()));
    binary(op.out(), a, b, [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p + q; });
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

Var sub(const Var& a, const Var& b) {
    Op op("sub", {a, b}, broadcast_shapes("sub", a.shape(), b.shape()));
    binary(op.out(), a, b, [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p - q; });
    return op.finish(
        [](BackwardContext& ctx) {
            ctx.accumulate(0, ctx.grad_output());
            ctx.accumulate(1, -ctx.grad_output());
        },
        [](GraphContext& g) {
            g.accumulate(0, g.grad_output());
            g.accumulate(1, neg(g.grad_output()));
        });
}

Var mul(const Var& a, const Var& b) {
    Op op("mul", {a, b}, broadcast_shapes("mul", a.shape(), b.shape()));
    binary(op.out(), a, b, [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p * q; });
    return op.finish(
        [](BackwardContext& ctx) {
            ctx.accumulate(0, ctx.grad_output() * ctx.input(1));
            ctx.accumulate(1, ctx.grad_output() * ctx.input(0));
        },
        [](GraphContext& g) {
            if (g.needs_grad(0)) g.accumulate(0, g.grad_output() * g.input(1));
            if (g.needs_grad(1)) g.accumulate(1, g.grad_output() * g.input(0));
        });
}

Var div(const Var& a, const Var& b) {
    Op op("div", {a, b}, broadcast_shapes("div", a.shape(), b.shape()));
    binary(op.out(), a, b, [](auto& y, const auto& p, const auto& q) { xt::noalias(y) = p / q; });
    // d(a/b)/db = -(a/b)/b = -y/b.
    return op.finish(
        [](BackwardContext& ctx) {
            ctx.accumulate(0, ctx.grad_output() / ctx.input(1));
            ctx.accumulate(1, -ctx.grad_output() * ctx.output() / ctx.input(1));
        },
        [](GraphContext& g) {
            if (g.needs_grad(0)) g.accumulate(0, g.grad_output() / g.input(1));
            if (g.needs_grad(1)) g.accumulate(1, -g.grad_output() * g.output() / g.input(1));
        });
}

Var maximum(const Var& a, const Var& b) {
    Op op("maximum", {a, b}, broadcast_shapes("maximum", a.shape(), b.shape()));
    // a > b, or a NaN, takes a; otherwise b (which is NaN if b is).
    binary(op.out(), a, b,
           [](auto& out, const auto& x, const auto& y) { xt::noalias(out) = xt::where(x > y || xt::isnan(x), x, y); });
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor &x = ctx.input(0), &y = ctx.input(1), &dy = ctx.grad_output();
            ctx.accumulate(0, xt::where(x > y, dy, xt::where(xt::equal(x, y), 0.5f * dy, 0.f)));
            ctx.accumulate(1, xt::where(y > x, dy, xt::where(xt::equal(x, y), 0.5f * dy, 0.f)));
        },
        [](GraphContext& g) { accumulate_share(g, /*larger=*/true); });
}

Var minimum(const Var& a, const Var& b) {
    Op op("minimum", {a, b}, broadcast_shapes("minimum", a.shape(), b.shape()));
    binary(op.out(), a, b,
           [](auto& out, const auto& x, const auto& y) { xt::noalias(out) = xt::where(x < y || xt::isnan(x), x, y); });
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor &x = ctx.input(0), &y = ctx.input(1), &dy = ctx.grad_output();
            ctx.accumulate(0, xt::where(x < y, dy, xt::where(xt::equal(x, y), 0.5f * dy, 0.f)));
            ctx.accumulate(1, xt::where(y < x, dy, xt::where(xt::equal(x, y), 0.5f * dy, 0.f)));
        },
        [](GraphContext& g) { accumulate_share(g, /*larger=*/false); });
}

Var where(const Tensor& condition, const Var& a, const Var& b) {
    const Shape shape = broadcast_shapes("where", condition.shape(), broadcast_shapes("where", a.shape(), b.shape()));
    Op op("where", {a, b}, shape);
    xt::noalias(op.out()) = xt::where(xt::not_equal(condition, 0.f), a.value(), b.value());
    if (op.records()) xt::noalias(op.save(condition.shape())) = condition;
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor &mask = ctx.saved(), &dy = ctx.grad_output();
            ctx.accumulate(0, xt::where(xt::not_equal(mask, 0.f), dy, 0.f));
            ctx.accumulate(1, xt::where(xt::not_equal(mask, 0.f), 0.f, dy));
        },
        [](GraphContext& g) {
            // The condition is a constant: the same selection of dy.
            const Tensor& mask = g.saved();
            if (g.needs_grad(0)) g.accumulate(0, g.grad_output() * constant(xt::where(xt::not_equal(mask, 0.f), 1.f, 0.f)));
            if (g.needs_grad(1)) g.accumulate(1, g.grad_output() * constant(xt::where(xt::not_equal(mask, 0.f), 0.f, 1.f)));
        });
}

Var neg(const Var& x) {
    Op op("neg", {x}, x.shape());
    parallel_elementwise(
        op.out(), [](auto& y, const auto& in) { xt::noalias(y) = -in; }, x.value());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, -ctx.grad_output()); },
                     [](GraphContext& g) { g.accumulate(0, neg(g.grad_output())); });
}

Var scale(const Var& x, float s) {
    Op op("scale", {x}, x.shape());
    parallel_elementwise(
        op.out(), [s](auto& y, const auto& in) { xt::noalias(y) = in * s; }, x.value());
    op.state<float>(s);
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() * ctx.state<float>()); },
                     [](GraphContext& g) { g.accumulate(0, scale(g.grad_output(), g.state<float>())); });
}

Var add_scalar(const Var& x, float s) {
    Op op("add_scalar", {x}, x.shape());
    parallel_elementwise(
        op.out(), [s](auto& y, const auto& in) { xt::noalias(y) = in + s; }, x.value());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output()); },
                     [](GraphContext& g) { g.accumulate(0, g.grad_output()); });
}

}  // namespace xgrad
