// The checker is only trusted once it rejects deliberately wrong backward
// rules (style.md §2). Each rule below is written with the public op API,
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
#include <xgrad/ops.hpp>
#include <xgrad/core/random.hpp>

namespace {

using xgrad::BackwardContext;
using xgrad::GradcheckOptions;
using xgrad::GradcheckResult;
using xgrad::Tensor;
using xgrad::Var;
using Inputs = std::vector<Var>;

// y = a * b with b (1, C) broadcast down a's (R, C) rows; the backward rule
// is what the tests vary. attr 0 and 1 tell the corrupting rules where to act.
Var custom_mul(const Var& a, const Var& b, xgrad::BackwardFn rule, float attr0 = 0.f, float attr1 = 0.f) {
    xgrad::Op op("custom_mul", {a, b}, a.shape());
    xt::noalias(op.out()) = a.value() * b.value();
    op.set_attr(0, attr0);
    op.set_attr(1, attr1);
    return op.finish(rule);
}

void correct_da(BackwardContext& ctx) { ctx.accumulate_broadcast(0, ctx.grad_output() * ctx.input(1)); }
void correct_db(BackwardContext& ctx) { ctx.accumulate_broadcast(1, ctx.grad_output() * ctx.input(0)); }
void correct(BackwardContext& ctx) {
    correct_da(ctx);
    correct_db(ctx);
}

// b's raw (1, C) gradient buffer, zeroed if it holds no data yet: what a
// hand-written broadcast reduction starts from.
Tensor& db_buffer(BackwardContext& ctx) {
    bool overwrite = false;
    Tensor& g = ctx.grad_buffer(1, overwrite);
    if (overwrite) g.fill(0.f);
    return g;
}

// The element at flat index attr(1) of input attr(0)'s gradient.
float& corrupted_element(BackwardContext& ctx) {
    bool overwrite = false;  // correct() wrote the buffer already
    return ctx.grad_buffer(static_cast<int>(ctx.attr(0)), overwrite).data()[static_cast<std::size_t>(ctx.attr(1))];
}

Var random_var(std::size_t rows, std::size_t cols, float lo, float hi, std::uint64_t seed, bool requires_grad = true) {
    Tensor t(xgrad::Shape{rows, cols});
    xgrad::Rng(seed).fill_uniform(t, lo, hi);
    return Var(std::move(t), requires_grad);
}

constexpr std::size_t kRows = 4, kCols = 5;

// Positive operands: no cancellation hides a wrong term.
Inputs operands() { return {random_var(kRows, kCols, 0.5f, 1.5f, 1), random_var(1, kCols, 0.5f, 1.5f, 2)}; }

GradcheckResult check_rule(xgrad::BackwardFn rule, float attr0 = 0.f, float attr1 = 0.f,
                           const GradcheckOptions& options = {}) {
    return xgrad::gradcheck([=](const Inputs& in) { return custom_mul(in[0], in[1], rule, attr0, attr1); }, operands(),
                            options);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST_CASE("a correct custom op passes") {
    const GradcheckResult r = check_rule(correct);
    INFO(r.report());
    CHECK(r.ok);
    CHECK(r.worst_ratio <= 1.0);
    CHECK(r.checked == kRows * kCols + kCols);
    CHECK(contains(r.report(), "passed"));
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
             ctx.accumulate_broadcast(0, -(ctx.grad_output() * ctx.input(1)));
             correct_db(ctx);
         },
         0},
        {"factor 2",
         [](BackwardContext& ctx) {
             correct_da(ctx);
             ctx.accumulate_broadcast(1, 2.f * ctx.grad_output() * ctx.input(0));
         },
         1},
        {"broadcast not summed: only row 0 reaches b",
         [](BackwardContext& ctx) {
             correct_da(ctx);
             Tensor& g = db_buffer(ctx);
             for (std::size_t c = 0; c < g.shape()[1]; ++c) g(0, c) += ctx.grad_output()(0, c) * ctx.input(0)(0, c);
         },
         1},
        {"broadcast assigned instead of summed: the last row wins",
         [](BackwardContext& ctx) {
             correct_da(ctx);
             Tensor& g = db_buffer(ctx);
             for (std::size_t r = 0; r < ctx.output().shape()[0]; ++r)
                 for (std::size_t c = 0; c < g.shape()[1]; ++c) g(0, c) = ctx.grad_output()(r, c) * ctx.input(0)(r, c);
         },
         1},
        {"forgets input b", correct_da, 1},
        {"forgets input a", correct_db, 0},
    };
    const GradcheckOptions defaults;
    for (const Flaw& flaw : flaws) {
        const GradcheckResult r = check_rule(flaw.rule);
        INFO(flaw.name << ": " << r.report());
        CHECK_FALSE(r.ok);
        CHECK(r.worst_ratio > 1.0);
        CHECK(r.input == flaw.wrong_input);
        CHECK(r.row < (flaw.wrong_input == 0 ? kRows : 1));
        CHECK(r.col < kCols);
        // The reported element really is outside the tolerance.
        CHECK(std::abs(r.analytic - r.numeric) > defaults.atol + defaults.rtol * std::abs(r.numeric));
        CHECK(contains(r.report(), "FAILED"));
        CHECK(contains(r.report(), "input " + std::to_string(flaw.wrong_input)));
    }
}

TEST_CASE("a wrong rule is found through the ops around it") {
    // sigmoid(exp(a) * b) with a rule that forgets its first operand: the
    // missing gradient belongs to an op node and must be traced back through
    // exp to leaf a, scaled by sigmoid on the way.
    const GradcheckResult r = xgrad::gradcheck(
        [](const Inputs& in) { return xgrad::sigmoid(custom_mul(xgrad::exp(in[0]), in[1], correct_db)); }, operands());
    INFO(r.report());
    CHECK_FALSE(r.ok);
    CHECK(r.input == 0);
}

TEST_CASE("the report names the worst element and its two derivatives") {
    struct Where {
        std::size_t input, row, col;
    };
    const Where places[] = {{0, 2, 3}, {0, 0, 0}, {0, kRows - 1, kCols - 1}, {1, 0, 4}};
    for (const Where& w : places) {
        const std::size_t flat = w.row * kCols + w.col;  // b is one row of kCols too
        const GradcheckResult r = check_rule(
            [](BackwardContext& ctx) {
                correct(ctx);
                corrupted_element(ctx) += 1.f;
            },
            static_cast<float>(w.input), static_cast<float>(flat));
        const std::string report = r.report();
        INFO(report);
        CHECK_FALSE(r.ok);
        CHECK(r.input == w.input);
        CHECK(r.row == w.row);
        CHECK(r.col == w.col);
        CHECK(r.analytic - r.numeric == doctest::Approx(1.0).epsilon(1e-3));
        CHECK(contains(report, "input " + std::to_string(w.input) + " at (" + std::to_string(w.row) + ", " +
                                   std::to_string(w.col) + ")"));
        CHECK(contains(report, "analytic"));
        CHECK(contains(report, "numeric"));
    }
}

TEST_CASE("the tolerance decides: an error of 1 passes only when atol exceeds it") {
    auto off_by_one = [](BackwardContext& ctx) {
        correct(ctx);
        corrupted_element(ctx) += 1.f;
    };
    GradcheckOptions loose;
    loose.atol = 2.0;
    const GradcheckResult r = check_rule(off_by_one, 0.f, 7.f, loose);
    INFO(r.report());
    CHECK(r.ok);
    CHECK(r.worst_ratio ==
          doctest::Approx(std::abs(r.analytic - r.numeric) / (loose.atol + loose.rtol * std::abs(r.numeric))));
    CHECK(r.worst_ratio > 0.4);  // the error of 1 is still the worst element
    CHECK_FALSE(check_rule(off_by_one, 0.f, 7.f).ok);
}

TEST_CASE("NaN makes the check fail, from backward or from the forward pass") {
    SUBCASE("NaN in one element of the backward") {
        const GradcheckResult r = check_rule(
            [](BackwardContext& ctx) {
                correct(ctx);
                corrupted_element(ctx) = std::numeric_limits<float>::quiet_NaN();
            },
            0.f, 6.f);  // (1, 1)
        INFO(r.report());
        CHECK_FALSE(r.ok);
        CHECK(std::isnan(r.analytic));
        CHECK(r.input == 0);
        CHECK(r.row == 1);
        CHECK(r.col == 1);
        CHECK(contains(r.report(), "nan"));
    }
    SUBCASE("NaN in the finite differences") {
        // log is undefined at -1: backward's 1/x is finite, the difference is not.
        Var x = random_var(2, 3, 0.5f, 2.f, 3);
        x.mutable_value()(1, 2) = -1.f;
        const GradcheckResult r = xgrad::gradcheck([](const Inputs& in) { return xgrad::log(in[0]); }, {x});
        INFO(r.report());
        CHECK_FALSE(r.ok);
        CHECK(std::isnan(r.numeric));
        CHECK(r.row == 1);
        CHECK(r.col == 2);
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
    const GradcheckResult direct = check_rule(uniform_dy);
    INFO("non-scalar: " << direct.report());
    CHECK_FALSE(direct.ok);
    CHECK(direct.input == 0);

    // Summing first makes dy uniform, so the mistake is invisible: the reason
    // gradcheck projects a non-scalar output with random weights.
    const GradcheckResult summed = xgrad::gradcheck(
        [=](const Inputs& in) { return xgrad::sum(custom_mul(in[0], in[1], uniform_dy)); }, operands());
    INFO("summed: " << summed.report());
    CHECK(summed.ok);
}

TEST_CASE("the projection weights are fixed by the seed and left in the gradients") {
    // For y = 1 * x, d sum(w .* y) / dx = w: the gradients show the weights.
    auto weights = [](unsigned seed) {
        Var x = random_var(3, 4, -1.f, 1.f, 4);
        GradcheckOptions options;
        options.seed = seed;
        const GradcheckResult r =
            xgrad::gradcheck([](const Inputs& in) { return xgrad::scale(in[0], 1.f); }, {x}, options);
        INFO(r.report());
        CHECK(r.ok);
        return Tensor(x.grad());
    };
    const Tensor w1 = weights(1), w1_again = weights(1), w2 = weights(2);
    CHECK(w1 == w1_again);
    CHECK(w1 != w2);
    CHECK(xt::all(xt::abs(w1) <= 1.f));
    CHECK(xt::any(xt::not_equal(w1, w1(0, 0))));  // not uniform, or uniform_dy-style errors would pass
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
    in.insert(in.begin() + 1, random_var(2, 2, -1.f, 1.f, 5, false));
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
