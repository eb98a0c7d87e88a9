// The checker is only trusted once it rejects deliberately wrong backward
// rules (docs/extending.md, "What else a rule can use"). Each rule below is written with the public op API,
// exactly as a user writes a custom op, and each mistake is one that real
// backward rules make.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <xtensor/xbroadcast.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/core/op.hpp>
#include <xgrad/core/random.hpp>
#include <xgrad/ops.hpp>

namespace {

using xgrad::BackwardContext;
using xgrad::GradcheckOptions;
using xgrad::GradcheckResult;
using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;
using Inputs = std::vector<Var>;

// Where a corrupting rule acts: element `element` (flat) of input `input`'s
// gradient gets `value` added, or is set to it. Kept as the op's typed state.
struct Corruption {
    std::size_t input = 0, element = 0;
    float value = 0.f;
    bool assign = false;
};

// y = a * b with b broadcast to a's shape; the backward rule is what the
// tests vary.
Var custom_mul(const Var& a, const Var& b, xgrad::BackwardFn rule, const Corruption& corruption = {}) {
    xgrad::Op op("custom_mul", {a, b}, a.shape());
    xt::noalias(op.out()) = a.value() * b.value();
    op.state<Corruption>(corruption);
    return op.finish(rule);
}

void correct_da(BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() * ctx.input(1)); }
void correct_db(BackwardContext& ctx) { ctx.accumulate(1, ctx.grad_output() * ctx.input(0)); }
void correct(BackwardContext& ctx) {
    correct_da(ctx);
    correct_db(ctx);
}

// The correct gradient, then the op's Corruption applied to it through the
// buffer a rule adds into.
void corrupted(BackwardContext& ctx) {
    correct(ctx);
    const Corruption& c = ctx.state<Corruption>();
    float& element = ctx.accumulator(c.input).data()[c.element];
    element = c.assign ? c.value : element + c.value;
}

// The flat index of the element of `from` (broadcast to `to`) that flat
// element k of a `to`-shaped tensor reads: what a hand-written broadcast
// reduction has to get right.
std::size_t broadcast_source(std::size_t k, const Shape& to, const Shape& from) {
    std::size_t source = 0, stride = 1;
    for (std::size_t d = 0; d < from.size(); ++d) {
        const std::size_t axis_to = to.size() - 1 - d, axis_from = from.size() - 1 - d;
        std::size_t below = 1;  // elements of `to` per step along axis_to
        for (std::size_t e = axis_to + 1; e < to.size(); ++e) below *= to[e];
        const std::size_t position = (k / below) % to[axis_to];
        if (from[axis_from] != 1) source += position * stride;
        stride *= from[axis_from];
    }
    return source;
}

Var random_var(const Shape& shape, float lo, float hi, std::uint64_t seed, bool requires_grad = true) {
    Tensor t = Tensor::from_shape(shape);
    xgrad::Rng(seed).fill_uniform(t, lo, hi);
    return Var(std::move(t), requires_grad);
}

constexpr std::size_t kRows = 4, kCols = 5;

// The operand shapes the rules are checked on: the original (R, C) with a
// (1, C) row, and what the N-d ops allow besides: a rank-1 bias, a scalar,
// and a rank-3 a with b broadcast along its first and last axes.
struct Layout {
    const char* name;
    Shape a, b;
};
const Layout kLayouts[] = {
    {"(4, 5) * (1, 5)", {kRows, kCols}, {1, kCols}},
    {"(4, 5) * (5)", {kRows, kCols}, {kCols}},
    {"(4, 5) * ()", {kRows, kCols}, {}},
    {"(2, 3, 4) * (3, 1)", {2, 3, 4}, {3, 1}},
};
const Layout& kMatrix = kLayouts[0];

// Positive operands: no cancellation hides a wrong term.
Inputs operands(const Layout& layout = kMatrix) {
    return {random_var(layout.a, 0.5f, 1.5f, 1), random_var(layout.b, 0.5f, 1.5f, 2)};
}

GradcheckResult check_rule(xgrad::BackwardFn rule, const Corruption& corruption = {}, const GradcheckOptions& options = {},
                           const Layout& layout = kMatrix) {
    return xgrad::gradcheck([=](const Inputs& in) { return custom_mul(in[0], in[1], rule, corruption); }, operands(layout),
                            options);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::size_t flat_index(const Shape& position, const Shape& shape) {
    std::size_t flat = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + position[d];
    return flat;
}

TEST_CASE("a correct custom op passes") {
    for (const Layout& layout : kLayouts) {
        const GradcheckResult r = check_rule(correct, {}, {}, layout);
        INFO(std::string(layout.name) << ": " << r.report());
        CHECK(r.ok);
        CHECK(r.worst_ratio <= 1.0);
        CHECK(r.checked == xgrad::numel(layout.a) + xgrad::numel(layout.b));
        CHECK(contains(r.report(), "passed"));
    }
}

TEST_CASE("wrong backward rules fail and the report points at the wrong input") {
    struct Flaw {
        const char* name;
        xgrad::BackwardFn rule;
        std::size_t wrong_input;
    };
    const Flaw flaws[] = {
        {"sign flip",
         [](BackwardContext& ctx) {
             ctx.accumulate(0, -(ctx.grad_output() * ctx.input(1)));
             correct_db(ctx);
         },
         0},
        {"factor 2",
         [](BackwardContext& ctx) {
             correct_da(ctx);
             ctx.accumulate(1, 2.f * ctx.grad_output() * ctx.input(0));
         },
         1},
        {"broadcast not summed: only the first output element reading each b element reaches it (row 0 for a row b)",
         [](BackwardContext& ctx) {
             correct_da(ctx);
             Tensor& g = ctx.accumulator(1);
             std::vector<bool> reached(g.size(), false);
             for (std::size_t k = 0; k < ctx.output().size(); ++k) {
                 const std::size_t j = broadcast_source(k, ctx.output().shape(), g.shape());
                 if (reached[j]) continue;
                 reached[j] = true;
                 g.data()[j] += ctx.grad_output().data()[k] * ctx.input(0).data()[k];
             }
         },
         1},
        {"broadcast assigned instead of summed: the last output element wins (the last row for a row b)",
         [](BackwardContext& ctx) {
             correct_da(ctx);
             Tensor& g = ctx.accumulator(1);
             for (std::size_t k = 0; k < ctx.output().size(); ++k) {
                 const std::size_t j = broadcast_source(k, ctx.output().shape(), g.shape());
                 g.data()[j] = ctx.grad_output().data()[k] * ctx.input(0).data()[k];
             }
         },
         1},
        {"forgets input b", correct_da, 1},
        {"forgets input a", correct_db, 0},
    };
    const GradcheckOptions defaults;
    for (const Layout& layout : kLayouts) {
        for (const Flaw& flaw : flaws) {
            const GradcheckResult r = check_rule(flaw.rule, {}, {}, layout);
            INFO(std::string(layout.name) << ", " << flaw.name << ": " << r.report());
            CHECK_FALSE(r.ok);
            CHECK(r.worst_ratio > 1.0);
            CHECK(r.input == flaw.wrong_input);
            // The position is one of the wrong input's elements.
            const Shape& shape = flaw.wrong_input == 0 ? layout.a : layout.b;
            REQUIRE(r.position.size() == shape.size());
            for (std::size_t d = 0; d < shape.size(); ++d) CHECK(r.position[d] < shape[d]);
            // The reported element really is outside the tolerance.
            CHECK(std::abs(r.analytic - r.numeric) > defaults.atol + defaults.rtol * std::abs(r.numeric));
            CHECK(contains(r.report(), "FAILED"));
            CHECK(contains(r.report(), "input " + std::to_string(flaw.wrong_input)));
        }
    }
}

TEST_CASE("the broadcast helper of the flawed rules maps output elements to b's elements") {
    // (4, 5) against a (1, 5) or (5) b: element (r, c) reads b's c; a scalar
    // b is read by all; (2, 3, 4) against (3, 1): element (i, j, k) reads b's j.
    CHECK(broadcast_source(2 * kCols + 3, {kRows, kCols}, {1, kCols}) == 3);
    CHECK(broadcast_source(2 * kCols + 3, {kRows, kCols}, {kCols}) == 3);
    CHECK(broadcast_source(13, {kRows, kCols}, {}) == 0);
    CHECK(broadcast_source(1 * 12 + 2 * 4 + 3, {2, 3, 4}, {3, 1}) == 2);
    CHECK(broadcast_source(7, {2, 3, 4}, {2, 3, 4}) == 7);
}

TEST_CASE("a wrong rule is found through the ops around it") {
    // sigmoid(exp(a) * b) with a rule that forgets its first operand: the
    // missing gradient belongs to an op node and must be traced back through
    // exp to leaf a, scaled by sigmoid on the way.
    for (const Layout& layout : kLayouts) {
        const GradcheckResult r = xgrad::gradcheck(
            [](const Inputs& in) { return xgrad::sigmoid(custom_mul(xgrad::exp(in[0]), in[1], correct_db)); }, operands(layout));
        INFO(std::string(layout.name) << ": " << r.report());
        CHECK_FALSE(r.ok);
        CHECK(r.input == 0);
    }
}

TEST_CASE("the report names the worst element and its two derivatives") {
    struct Where {
        const Layout& layout;
        std::size_t input;
        Shape position;
        const char* printed;
    };
    const Where places[] = {
        {kMatrix, 0, {2, 3}, "(2, 3)"},
        {kMatrix, 0, {0, 0}, "(0, 0)"},
        {kMatrix, 0, {kRows - 1, kCols - 1}, "(3, 4)"},
        {kMatrix, 1, {0, 4}, "(0, 4)"},
        {kLayouts[1], 1, {2}, "(2)"},
        {kLayouts[2], 1, {}, "()"},
        {kLayouts[3], 0, {1, 2, 3}, "(1, 2, 3)"},
        {kLayouts[3], 1, {2, 0}, "(2, 0)"},
    };
    for (const Where& w : places) {
        const Shape& shape = w.input == 0 ? w.layout.a : w.layout.b;
        const GradcheckResult r = check_rule(corrupted, Corruption{w.input, flat_index(w.position, shape), 1.f}, {}, w.layout);
        const std::string report = r.report();
        INFO(w.layout.name << ": " << report);
        CHECK_FALSE(r.ok);
        CHECK(r.input == w.input);
        CHECK(r.position == w.position);
        CHECK(r.analytic - r.numeric == doctest::Approx(1.0).epsilon(1e-3));
        CHECK(contains(report, "input " + std::to_string(w.input) + " at " + w.printed));
        CHECK(contains(report, "analytic"));
        CHECK(contains(report, "numeric"));
    }
}

TEST_CASE("the tolerance decides: an error of 1 passes only when atol exceeds it") {
    const Corruption off_by_one{0, 7, 1.f};
    GradcheckOptions loose;
    loose.atol = 2.0;
    const GradcheckResult r = check_rule(corrupted, off_by_one, loose);
    INFO(r.report());
    CHECK(r.ok);
    CHECK(r.worst_ratio == doctest::Approx(std::abs(r.analytic - r.numeric) / (loose.atol + loose.rtol * std::abs(r.numeric))));
    CHECK(r.worst_ratio > 0.4);        // the error of 1 is still the worst element
    CHECK(r.position == Shape{1, 2});  // element 7
    CHECK_FALSE(check_rule(corrupted, off_by_one).ok);
}

TEST_CASE("NaN makes the check fail, from backward or from the forward pass") {
    SUBCASE("NaN in one element of the backward") {
        const GradcheckResult r =
            check_rule(corrupted, Corruption{0, 6, std::numeric_limits<float>::quiet_NaN(), /*assign=*/true});  // (1, 1)
        INFO(r.report());
        CHECK_FALSE(r.ok);
        CHECK(std::isnan(r.analytic));
        CHECK(r.input == 0);
        CHECK(r.position == Shape{1, 1});
        CHECK(contains(r.report(), "nan"));
    }
    SUBCASE("NaN in the finite differences") {
        // sqrt is undefined below 0: at x = 0.005 the step down to x - 0.01
        // gives NaN, while backward's 1 / (2 sqrt(x)) is finite. Only that
        // element's difference is NaN, and the report names it.
        Var x = random_var({2, 3}, 0.5f, 2.f, 3);
        x.mutable_value()(1, 2) = 0.005f;
        const GradcheckResult r = xgrad::gradcheck([](const Inputs& in) { return xgrad::sqrt(in[0]); }, {x});
        INFO(r.report());
        CHECK_FALSE(r.ok);
        CHECK(std::isnan(r.numeric));
        CHECK(r.position == Shape{1, 2});
    }
    SUBCASE("NaN in the finite differences of a rank-3 input") {
        Var x = random_var({2, 2, 3}, 0.5f, 2.f, 3);
        x.mutable_value()(1, 0, 2) = 0.005f;
        const GradcheckResult r = xgrad::gradcheck([](const Inputs& in) { return xgrad::sqrt(in[0]); }, {x});
        INFO(r.report());
        CHECK_FALSE(r.ok);
        CHECK(std::isnan(r.numeric));
        CHECK(r.position == Shape{1, 0, 2});
        CHECK(contains(r.report(), "at (1, 0, 2)"));
    }
    SUBCASE("the first NaN is reported when every difference is NaN") {
        // log(-1) makes every evaluation of the projection NaN.
        Var x = random_var({2, 3}, 0.5f, 2.f, 3);
        x.mutable_value()(1, 2) = -1.f;
        const GradcheckResult r = xgrad::gradcheck([](const Inputs& in) { return xgrad::log(in[0]); }, {x});
        CHECK_FALSE(r.ok);
        CHECK(std::isnan(r.numeric));
        CHECK(r.position == Shape{0, 0});
    }
}

TEST_CASE("a non-scalar output is checked through a random projection") {
    // Right only when dy is the same everywhere, as it is for a scalar loss
    // summed from the output: da = mean(dy) * b.
    auto uniform_dy = [](BackwardContext& ctx) {
        double total = 0.0;
        for (float g : ctx.grad_output()) total += g;
        const float mean = static_cast<float>(total / double(ctx.grad_output().size()));
        ctx.accumulate(0, xt::broadcast(ctx.input(1) * mean, ctx.output().shape()));
        correct_db(ctx);
    };
    for (const Layout& layout : kLayouts) {
        const GradcheckResult direct = check_rule(uniform_dy, {}, {}, layout);
        INFO(std::string(layout.name) << ", non-scalar: " << direct.report());
        CHECK_FALSE(direct.ok);
        CHECK(direct.input == 0);

        // Summing first makes dy uniform, so the mistake is invisible: the reason
        // gradcheck projects a non-scalar output with random weights.
        const GradcheckResult summed = xgrad::gradcheck(
            [=](const Inputs& in) { return xgrad::sum(custom_mul(in[0], in[1], uniform_dy)); }, operands(layout));
        INFO(std::string(layout.name) << ", summed: " << summed.report());
        CHECK(summed.ok);
    }
}

TEST_CASE("the projection weights are fixed by the seed and left in the gradients") {
    // For y = 1 * x, d sum(w .* y) / dx = w: the gradients show the weights.
    auto weights = [](unsigned seed, const Shape& shape) {
        Var x = random_var(shape, -1.f, 1.f, 4);
        GradcheckOptions options;
        options.seed = seed;
        const GradcheckResult r = xgrad::gradcheck([](const Inputs& in) { return xgrad::scale(in[0], 1.f); }, {x}, options);
        INFO(r.report());
        CHECK(r.ok);
        return Tensor(x.grad());
    };
    for (const Shape& shape : {Shape{3, 4}, Shape{12}, Shape{2, 3, 2}}) {
        CAPTURE(xgrad::shape_string(shape));
        const Tensor w1 = weights(1, shape), w1_again = weights(1, shape), w2 = weights(2, shape);
        CHECK(w1 == w1_again);
        CHECK(w1 != w2);
        CHECK(xt::all(xt::abs(w1) <= 1.f));
        CHECK(xt::any(xt::not_equal(w1, w1.flat(0))));  // not uniform, or uniform_dy-style errors would pass
    }
    // A one-element output is used as it is (w = 1), whatever its shape.
    for (const Shape& shape : {Shape{}, Shape{1}, Shape{1, 1}}) {
        CAPTURE(xgrad::shape_string(shape));
        Var x = random_var(shape, -1.f, 1.f, 5);
        GradcheckOptions options;
        options.seed = 3;
        const GradcheckResult r = xgrad::gradcheck([](const Inputs& in) { return xgrad::scale(in[0], 1.f); }, {x}, options);
        CHECK(r.ok);
        CHECK(r.checked == 1);
        CHECK(x.grad().shape() == shape);
        CHECK(*x.grad().data() == 1.f);
    }
}

TEST_CASE("stale gradients are cleared and input values restored") {
    Inputs in = operands();
    // Leave a large gradient behind that a correct check must not see.
    xgrad::backward(xgrad::sum(xgrad::scale(in[0] * in[1], 100.f)));
    const Tensor a_before = in[0].value(), b_before = in[1].value();
    const GradcheckResult r = xgrad::gradcheck([](const Inputs& v) { return custom_mul(v[0], v[1], correct); }, in);
    INFO(r.report());
    CHECK(r.ok);
    CHECK(in[0].value() == a_before);
    CHECK(in[1].value() == b_before);
}

TEST_CASE("frozen inputs are skipped but keep their index in the report") {
    // (a, frozen c, b): the wrong gradient belongs to b, input 2.
    Inputs in = operands();
    in.insert(in.begin() + 1, random_var({2, 2}, -1.f, 1.f, 5, false));
    auto check = [&](xgrad::BackwardFn rule) {
        return xgrad::gradcheck([=](const Inputs& v) { return custom_mul(v[0], v[2], rule); }, in);
    };
    const GradcheckResult good = check(correct);
    INFO(good.report());
    CHECK(good.ok);
    CHECK(good.checked == kRows * kCols + kCols);

    const GradcheckResult bad = check(correct_da);
    INFO(bad.report());
    CHECK_FALSE(bad.ok);
    CHECK(bad.input == 2);
}

}  // namespace

// ---- small errors, and the second-order checker ------------------------------------

namespace {

// y = f(x) elementwise by a closed form, with a kernel rule scaled by
// `factor` (kept as state): factor 1 is the correct rule.
struct Elementwise {
    const char* name;
    float (*f)(float);
    float (*derivative)(float x, float y);
    float lo, hi;
};
const Elementwise kSmooth[] = {
    {"sigmoid", [](float x) { return 1.f / (1.f + std::exp(-x)); }, [](float, float y) { return y * (1.f - y); }, -3.f, 3.f},
    {"tanh", [](float x) { return std::tanh(x); }, [](float, float y) { return 1.f - y * y; }, -2.f, 2.f},
    {"exp", [](float x) { return std::exp(x); }, [](float, float y) { return y; }, -1.f, 1.f},
    {"log", [](float x) { return std::log(x); }, [](float x, float) { return 1.f / x; }, 0.5f, 2.f},
};

struct ScaledRule {
    const Elementwise* op;
    float factor;
};

Var scaled_rule(const Var& x, const Elementwise& e, float factor) {
    xgrad::Op op(e.name, {x}, x.shape());
    for (std::size_t i = 0; i < x.numel(); ++i) op.out().data()[i] = e.f(x.value().data()[i]);
    op.state<ScaledRule>(ScaledRule{&e, factor});
    return op.finish([](BackwardContext& ctx) {
        const ScaledRule& s = ctx.state<ScaledRule>();
        const float* x = ctx.input(0).data();
        const float *y = ctx.output().data(), *dy = ctx.grad_output().data();
        ctx.sink(0).elements([&](auto&& put) {
            for (std::size_t i = 0; i < ctx.output().size(); ++i) put(i, s.factor * dy[i] * s.op->derivative(x[i], y[i]));
        });
    });
}

}  // namespace

TEST_CASE("gradcheck catches a rule that is 0.5% off, and passes the exact one") {
    std::uint64_t seed = 40;
    for (const Elementwise& e : kSmooth) {
        for (const Shape& shape : {Shape{7}, Shape{3, 4}}) {
            const Var x = random_var(shape, e.lo, e.hi, ++seed);
            for (float factor : {1.f, 1.005f, 0.995f}) {
                const GradcheckResult r =
                    xgrad::gradcheck([&e, factor](const Inputs& in) { return scaled_rule(in[0], e, factor); }, {x});
                INFO(std::string(e.name) << " " << xgrad::shape_string(shape) << ", rule x " << factor << ": " << r.report());
                CHECK(r.ok == (factor == 1.f));
            }
        }
    }
}

namespace {

// y = a * b (same shapes) with the correct kernel rule and a differentiable
// rule that the tests vary.
Var mul_with_graph_rule(const Var& a, const Var& b, xgrad::GraphFn graph) {
    xgrad::Op op("mul_with_graph_rule", {a, b}, a.shape());
    xt::noalias(op.out()) = a.value() * b.value();
    return op.finish(correct, graph);
}

}  // namespace

TEST_CASE("gradgradcheck passes a correct differentiable rule and catches wrong ones") {
    using xgrad::GraphContext;
    const Inputs in = {random_var({3, 4}, 0.5f, 1.5f, 50), random_var({3, 4}, 0.5f, 1.5f, 51)};
    const auto check = [&](xgrad::GraphFn graph) {
        return xgrad::gradgradcheck([graph](const Inputs& v) { return mul_with_graph_rule(v[0], v[1], graph); }, in);
    };
    const GradcheckResult good = check([](GraphContext& g) {
        g.accumulate(0, g.grad_output() * g.input(1));
        g.accumulate(1, g.grad_output() * g.input(0));
    });
    INFO(good.report());
    CHECK(good.ok);
    CHECK(good.checked == 3 * 12);  // a, b and the random grad_output

    // The saved-intermediate trap: b read as a constant, so d(da)/db is lost;
    // the first derivative is still right.
    const GradcheckResult constant_b = check([](GraphContext& g) {
        g.accumulate(0, g.grad_output() * xgrad::constant(g.input(1).value()));
        g.accumulate(1, g.grad_output() * g.input(0));
    });
    INFO(constant_b.report());
    CHECK_FALSE(constant_b.ok);
    CHECK(constant_b.input == 1);
    CHECK(contains(constant_b.report(), "gradgradcheck FAILED"));

    // A differentiable rule whose first derivative is off (by 0.5%) is caught
    // against the kernel rule.
    const GradcheckResult off = check([](GraphContext& g) {
        g.accumulate(0, g.grad_output() * g.input(1) * 1.005f);
        g.accumulate(1, g.grad_output() * g.input(0));
    });
    INFO(off.report());
    CHECK_FALSE(off.ok);
    CHECK(off.input == 0);
    CHECK(contains(off.report(), "first order"));

    // Forgetting an input leaves its second derivatives out.
    const GradcheckResult forgets = check([](GraphContext& g) { g.accumulate(0, g.grad_output() * g.input(1)); });
    INFO(forgets.report());
    CHECK_FALSE(forgets.ok);
}

TEST_CASE("gradgradcheck finds a wrong second derivative of sigmoid written through a constant output") {
    using xgrad::GraphContext;
    // sigmoid's derivative y (1 - y) must be differentiated through y.
    const auto sigmoid_with = [](const Var& x, xgrad::GraphFn graph) {
        xgrad::Op op("sigmoid_with", {x}, x.shape());
        xt::noalias(op.out()) = 1.f / (1.f + xt::exp(-x.value()));
        return op.finish(graph);
    };
    const Var x = random_var({6}, -2.f, 2.f, 52);
    const auto check = [&](xgrad::GraphFn graph) {
        return xgrad::gradgradcheck([&sigmoid_with, graph](const Inputs& v) { return sigmoid_with(v[0], graph); }, {x});
    };
    const GradcheckResult through_y = check([](GraphContext& g) {
        const Var y = g.output();
        g.accumulate(0, g.grad_output() * (y * (1.f - y)));
    });
    INFO(through_y.report());
    CHECK(through_y.ok);
    const GradcheckResult constant_y = check([](GraphContext& g) {
        const Var y = xgrad::constant(g.output().value());
        g.accumulate(0, g.grad_output() * (y * (1.f - y)));
    });
    INFO(constant_y.report());
    CHECK_FALSE(constant_y.ok);
    CHECK(constant_y.input == 0);
}
