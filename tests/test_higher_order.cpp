// Gradients of gradients: grad(), create_graph, a leaf's grad_var(), and the
// rules of the op-authoring API that make them safe: the part of the graph a
// pass walks, an op that says it is once differentiable, an op with only a
// differentiable rule, and the checks on what a rule may touch. Closed forms
// are computed in double.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/core/broadcast.hpp>
#include <xgrad/core/op.hpp>
#include <xgrad/ops.hpp>

#include "op_reference.hpp"

namespace {

using test::random_var;
using xgrad::GradOptions;
using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;

GradOptions recorded() {
    GradOptions o;
    o.create_graph = true;
    return o;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

template <class F>
std::string message_of(const F& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(nothing thrown)";
}

TEST_CASE("grad differentiates x^3 three times: 3x^2, 6x, 6") {
    const Var x(Tensor{0.5f, -1.f, 2.f, 0.f}, true);
    const Var g = xgrad::grad(xgrad::sum(x * x * x), x, recorded());
    const Var gg = xgrad::grad(xgrad::sum(g), x, recorded());
    const Var ggg = xgrad::grad(xgrad::sum(gg), x);
    for (std::size_t i = 0; i < 4; ++i) {
        const double v = x.value()(i);
        CHECK(g.value()(i) == doctest::Approx(3 * v * v));
        CHECK(gg.value()(i) == doctest::Approx(6 * v));
        CHECK(ggg.value()(i) == doctest::Approx(6.0));
    }
    CHECK(g.requires_grad());
    CHECK(gg.requires_grad());
    CHECK_FALSE(ggg.requires_grad());  // not recorded: a plain value
}

TEST_CASE("the second derivative of tanh through its output: -2 tanh (1 - tanh^2)") {
    const Var x = random_var({3, 4}, -2.f, 2.f, 1);
    const Var g = xgrad::grad(xgrad::sum(xgrad::tanh(x)), x, recorded());
    const Var gg = xgrad::grad(xgrad::sum(g), x);
    for (std::size_t i = 0; i < x.numel(); ++i) {
        const double t = std::tanh(double(x.value().data()[i]));
        CHECK(g.value().data()[i] == doctest::Approx(1 - t * t).epsilon(1e-5));
        CHECK(gg.value().data()[i] == doctest::Approx(-2 * t * (1 - t * t)).epsilon(1e-4));
    }
}

TEST_CASE("grad leaves every leaf's grad() alone and walks only what leads to its inputs") {
    Var x = random_var({4}, -1.f, 1.f, 2), w = random_var({4}, -1.f, 1.f, 3);
    const Tensor w_grad_before = w.grad(), x_grad_before = x.grad();
    const Var y = xgrad::sum(x * w);
    const Var gx = xgrad::grad(y, x);
    CHECK(gx.value() == w.value());
    CHECK(w.grad() == w_grad_before);
    CHECK(x.grad() == x_grad_before);
}

TEST_CASE("a gradient penalty: backward through ||d f / d x||^2 reaches the parameters") {
    // f = sum(tanh(x * w)); d f / d x = w (1 - t^2) with t = tanh(x w);
    // P = sum((d f / d x)^2); d P / d w = 2 g (1 - t^2) - 4 g w x t (1 - t^2)
    // with g = w (1 - t^2), element by element.
    Var x = random_var({5}, -1.f, 1.f, 4), w = random_var({5}, -1.5f, 1.5f, 5);
    const Var gx = xgrad::grad(xgrad::sum(xgrad::tanh(x * w)), x, recorded());
    w.zero_grad();
    xgrad::backward(xgrad::sum(gx * gx));
    for (std::size_t i = 0; i < 5; ++i) {
        const double xi = x.value()(i), wi = w.value()(i), t = std::tanh(xi * wi), s = 1 - t * t, g = wi * s;
        CHECK(w.grad()(i) == doctest::Approx(2 * g * s - 4 * g * wi * xi * t * s).epsilon(1e-4));
    }
}

TEST_CASE("backward with create_graph leaves gradients with history in grad_var()") {
    Var x(Tensor{0.5f, -1.f, 2.f}, true);
    xgrad::BackwardOptions o;
    o.create_graph = true;
    xgrad::backward(xgrad::sum(x * x * x), o);
    const Var g = x.grad_var();
    CHECK(g.requires_grad());
    CHECK(g.value() == x.grad());
    // d/dx sum((3 x^2)^2) = 36 x^3
    x.zero_grad();  // also releases the history
    CHECK_FALSE(x.grad_var().requires_grad());
    xgrad::backward(xgrad::sum(g * g));
    for (std::size_t i = 0; i < 3; ++i) CHECK(x.grad()(i) == doctest::Approx(36 * std::pow(double(x.value()(i)), 3)));
}

TEST_CASE("grad_var adds recorded contributions to what grad() held before, and a plain backward drops the history") {
    Var x(Tensor{1.f, 2.f}, true);
    xgrad::backward(xgrad::sum(x * 3.f));  // grad = 3, no history
    xgrad::BackwardOptions o;
    o.create_graph = true;
    xgrad::backward(xgrad::sum(x * x), o);  // + 2x
    const Var g = x.grad_var();
    CHECK(g.value()(0) == doctest::Approx(5.f));
    CHECK(g.value()(1) == doctest::Approx(7.f));
    CHECK(xgrad::grad(xgrad::sum(g), x).value()(0) == doctest::Approx(2.f));  // d(3 + 2x)/dx
    xgrad::backward(xgrad::sum(x));                                           // a plain pass: grad() is right, its history gone
    CHECK(x.grad()(0) == doctest::Approx(6.f));
    CHECK_FALSE(x.grad_var().requires_grad());
}

TEST_CASE("add_gradients, the op that sums recorded contributions, passes gradcheck and gradgradcheck") {
    const Var a = random_var({3, 4}, -1.f, 1.f, 31), b = random_var({3, 4}, -1.f, 1.f, 32);
    const auto add_gradients = [](const std::vector<Var>& in) { return xgrad::detail::add_gradients(in[0], in[1]); };
    const xgrad::GradcheckResult first = xgrad::gradcheck(add_gradients, {a, b});
    CHECK_MESSAGE(first.ok, first.report());
    // Its graph rule is what a twice-recorded gradient goes through.
    const auto squared_sum = [&](const std::vector<Var>& in) {
        const Var s = add_gradients(in);
        return s * s;
    };
    const xgrad::GradcheckResult second = xgrad::gradgradcheck(squared_sum, {a, b});
    CHECK_MESSAGE(second.ok, second.report());
    CHECK_THROWS_WITH_AS(xgrad::detail::add_gradients(a, random_var({4, 3}, -1.f, 1.f, 33)),
                         doctest::Contains("(3, 4) and (4, 3)"), xgrad::ShapeError);
}

TEST_CASE("grad with several outputs, grad_outputs and an intermediate input") {
    const Var x = random_var({2, 3}, -1.f, 1.f, 6);
    const Var h = xgrad::exp(x);
    const Var a = h * 2.f, b = xgrad::sum(h, {1});
    GradOptions o;
    o.grad_outputs = {Var(Tensor(Shape{2, 3}, 1.f)), Var(Tensor{1.f, -1.f})};
    o.retain_graph = true;
    const std::vector<Var> g = xgrad::grad({a, b}, {x, h}, o);
    const std::vector<Var> of_a = xgrad::grad(xgrad::sum(a), {x, h});  // one output, several inputs
    CHECK(of_a[1].value()(0, 0) == doctest::Approx(2.0));
    for (std::size_t r = 0; r < 2; ++r) {
        for (std::size_t c = 0; c < 3; ++c) {
            const double dh = 2.0 + (r == 0 ? 1.0 : -1.0);
            CHECK(g[1].value()(r, c) == doctest::Approx(dh));
            CHECK(g[0].value()(r, c) == doctest::Approx(dh * std::exp(double(x.value()(r, c)))));
        }
    }
}

TEST_CASE("grad refuses what it cannot answer, with messages") {
    const Var x = random_var({3}, -1.f, 1.f, 7), unused = random_var({3}, -1.f, 1.f, 8);
    const Var constant = random_var({3}, -1.f, 1.f, 9, false);
    CHECK(contains(message_of([&] { xgrad::grad(xgrad::sum(x * x), unused); }), "input 0"));
    CHECK(contains(message_of([&] { xgrad::grad(xgrad::sum(x * x), unused); }), "allow_unused"));
    GradOptions allow;
    allow.allow_unused = true;
    const std::vector<Var> g = xgrad::grad({xgrad::sum(x * x)}, {unused, x}, allow);
    CHECK_FALSE(g[0].defined());
    CHECK(g[1].defined());
    CHECK(contains(message_of([&] { xgrad::grad(xgrad::sum(x * constant), constant); }), "does not require a gradient"));
    CHECK(contains(message_of([&] { xgrad::grad(x * x, x); }), "grad_outputs"));
    GradOptions wrong_shape;
    wrong_shape.grad_outputs = {Var(Tensor{1.f, 2.f})};
    CHECK(contains(message_of([&] { xgrad::grad(x * x, x, wrong_shape); }), "grad_outputs[0] (2)"));
    // Without retain_graph the walked graph is freed, as by backward().
    const Var y = xgrad::sum(xgrad::exp(x));
    xgrad::grad(y, x);
    CHECK(contains(message_of([&] { xgrad::grad(y, x); }), "already freed"));
}

TEST_CASE("NoGrad around a recorded pass gives gradients without history") {
    const Var x = random_var({3}, -1.f, 1.f, 10);
    const Var y = xgrad::sum(x * x * x);
    xgrad::NoGrad off;
    const Var g = xgrad::grad(y, x, recorded());
    CHECK_FALSE(g.requires_grad());
    for (std::size_t i = 0; i < 3; ++i) CHECK(g.value()(i) == doctest::Approx(3 * std::pow(double(x.value()(i)), 2)));
}

TEST_CASE("frozen parameters get no gradient work in either order") {
    // An R1-style penalty: d D(x) / d x with D's weight frozen, then the
    // penalty's gradient, which must not reach the frozen weight either.
    Var x = random_var({4, 3}, -1.f, 1.f, 11), w = random_var({2, 3}, -1.f, 1.f, 12);
    const std::vector<Var> frozen = {w};
    xgrad::FreezeGuard guard(frozen);
    const Var gx = xgrad::grad(xgrad::sum(xgrad::tanh(xgrad::linear(x, w, Var()))), x, recorded());
    CHECK(contains(message_of([&] { xgrad::grad(xgrad::sum(gx * gx), w); }), "does not require a gradient"));
    x.zero_grad();
    xgrad::backward(xgrad::sum(gx * gx));
    CHECK(xt::any(xt::not_equal(x.grad(), 0.f)));
}

// ---- the authoring API -----------------------------------------------------------

int twice_rule_calls = 0;

// y = x^2 with only a kernel rule: once differentiable.
Var square_once(const Var& x) {
    xgrad::Op op("square_once", {x}, x.shape());
    xt::noalias(op.out()) = x.value() * x.value();
    return op.finish([](xgrad::BackwardContext& ctx) { ctx.accumulate(0, 2.f * ctx.grad_output() * ctx.input(0)); });
}

// y = x^2 with only a differentiable rule: serves both passes.
Var square_graph_only(const Var& x) {
    xgrad::Op op("square_graph_only", {x}, x.shape());
    xt::noalias(op.out()) = x.value() * x.value();
    return op.finish([](xgrad::GraphContext& g) {
        ++twice_rule_calls;
        g.accumulate(0, 2.f * g.grad_output() * g.input(0));
    });
}

TEST_CASE("an op with only a kernel rule is once differentiable and says so") {
    const Var x = random_var({3}, 0.5f, 1.5f, 13);
    const Var g = xgrad::grad(xgrad::sum(square_once(x)), x);
    for (std::size_t i = 0; i < 3; ++i) CHECK(g.value()(i) == doctest::Approx(2 * x.value()(i)));
    const std::string message = message_of([&] { xgrad::grad(xgrad::sum(square_once(x)), x, recorded()); });
    CHECK(contains(message, "xgrad::square_once: not twice differentiable"));
    CHECK_THROWS_WITH_AS(xgrad::gradgradcheck([](const std::vector<Var>& in) { return square_once(in[0]); }, {x}),
                         doctest::Contains("not twice differentiable"), std::logic_error);
}

TEST_CASE("an op with only a differentiable rule serves the ordinary backward too") {
    Var x = random_var({2, 3}, 0.5f, 1.5f, 14);
    x.zero_grad();
    twice_rule_calls = 0;
    xgrad::backward(xgrad::sum(square_graph_only(x)));
    CHECK(twice_rule_calls == 1);
    for (std::size_t i = 0; i < x.numel(); ++i) CHECK(x.grad().data()[i] == doctest::Approx(2 * x.value().data()[i]));
    const xgrad::GradcheckResult first =
        xgrad::gradcheck([](const std::vector<Var>& in) { return square_graph_only(in[0]); }, {x});
    INFO(first.report());
    CHECK(first.ok);
    const xgrad::GradcheckResult second =
        xgrad::gradgradcheck([](const std::vector<Var>& in) { return square_graph_only(in[0]); }, {x});
    INFO(second.report());
    CHECK(second.ok);
}

TEST_CASE("grad runs no rule of a branch that does not lead to its inputs") {
    const Var x = random_var({3}, 0.5f, 1.5f, 15), w = random_var({3}, 0.5f, 1.5f, 16);
    const Var y = xgrad::sum(x * 2.f) + xgrad::sum(square_graph_only(w));
    twice_rule_calls = 0;
    xgrad::grad(y, x);
    CHECK(twice_rule_calls == 0);
}

TEST_CASE("a rule that asks for an input the op does not have gets a message, not a crash") {
    const Var x = random_var({3}, 0.5f, 1.5f, 17);
    xgrad::Op op("bad_index", {x}, x.shape());
    op.out().fill(1.f);
    const Var y = op.finish([](xgrad::BackwardContext& ctx) { ctx.accumulate(1, ctx.grad_output()); });
    const std::string message = message_of([&] { xgrad::backward(xgrad::sum(y)); });
    CHECK(contains(message, "'bad_index'"));
    CHECK(contains(message, "input 1 of its 1"));
}

#ifndef NDEBUG
// Debug builds only (the ASan stage of CI builds so): release builds do not
// pay for the fill and the scan.
TEST_CASE("debug builds catch a forward pass that leaves part of its output unwritten") {
    const Var x = random_var({4}, 0.5f, 1.5f, 18);
    const std::string message = message_of([&] {
        xgrad::Op op("lazy_op", {x}, x.shape());
        op.out()(0) = 1.f;  // elements 1-3 left as the pool gave them
        op.finish([](xgrad::GraphContext& g) { g.accumulate(0, g.grad_output()); });
    });
    CHECK(contains(message, "'lazy_op' did not write element 1"));
}
#endif

}  // namespace
