// Every built-in op and softplus, each checked two ways (style.md §2): by
// gradcheck against central differences of its own forward pass, and against
// its textbook gradient computed independently in double. Then saturated
// inputs (where NaN bugs live), shape errors and frozen inputs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdint>
#include <functional>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xmanipulation.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xtensor.hpp>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/core/op.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/ops/softplus.hpp>
#include <xgrad/core/random.hpp>

#include "helpers.hpp"

namespace {

using test::check_gradcheck;
using test::random_tensor;
using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;
using Inputs = std::vector<Var>;
using Reference = xt::xtensor<double, 2>;

// 1x1, a row, a column and a full matrix: the degenerate shapes are where
// broadcasting and BLAS leading dimensions go wrong.
const Shape kShapes[] = {{1, 1}, {1, 7}, {5, 1}, {5, 7}};

Var random_var(std::size_t rows, std::size_t cols, float lo, float hi, std::uint64_t seed, bool requires_grad = true) {
    return Var(random_tensor({rows, cols}, lo, hi, seed), requires_grad);
}

// Magnitudes in [lo, hi) with random signs: with lo above gradcheck's step,
// no finite difference straddles relu's or leaky_relu's kink at 0.
Var random_signed_var(std::size_t rows, std::size_t cols, float lo, float hi, std::uint64_t seed) {
    Var v = random_var(rows, cols, lo, hi, seed);
    xgrad::Rng signs(seed + 7919);
    for (float& x : v.mutable_value()) {
        if (signs.uniform(0.f, 1.f) < 0.5f) x = -x;
    }
    return v;
}

Reference to_double(const Tensor& t) {
    Reference r(Shape{t.shape()[0], t.shape()[1]}, 0.0);
    std::copy(t.begin(), t.end(), r.begin());
    return r;
}

Reference transpose(const Reference& a) {
    Reference t(Shape{a.shape()[1], a.shape()[0]}, 0.0);
    for (std::size_t r = 0; r < a.shape()[0]; ++r)
        for (std::size_t c = 0; c < a.shape()[1]; ++c) t(c, r) = a(r, c);
    return t;
}

Reference product(const Reference& a, const Reference& b) {
    Reference p(Shape{a.shape()[0], b.shape()[1]}, 0.0);
    for (std::size_t r = 0; r < a.shape()[0]; ++r)
        for (std::size_t k = 0; k < a.shape()[1]; ++k)
            for (std::size_t c = 0; c < b.shape()[1]; ++c) p(r, c) += a(r, k) * b(k, c);
    return p;
}

// sum(weights .* y) written with the public Op API: backward then hands y the
// upstream gradient `weights`, which is not uniform (a rule that ignores
// where dy came from shows), without relying on any op under test.
Var project(const Var& y, const Tensor& weights) {
    REQUIRE(y.shape() == xgrad::shape_of(weights));
    xgrad::Op op("test_projection", {y, Var(weights)}, {1, 1});
    double total = 0.0;
    for (std::size_t i = 0; i < weights.size(); ++i) total += double(y.value().data()[i]) * weights.data()[i];
    op.out()(0, 0) = static_cast<float>(total);
    return op.finish([](xgrad::BackwardContext& ctx) { ctx.accumulate(0, ctx.input(1) * ctx.grad_output()(0, 0)); });
}

void backward_with(const Var& y, const Tensor& dy) { xgrad::backward(project(y, dy)); }

// Each element of `got` within tol * (1 + |want|) of the double reference:
// relative for large values, absolute near zero. Non-finite values fail.
void check_matches(const std::string& what, const Tensor& got, const Reference& want, double tol = 1e-5) {
    REQUIRE(got.shape()[0] == want.shape()[0]);
    REQUIRE(got.shape()[1] == want.shape()[1]);
    double worst = 0.0;
    std::size_t wr = 0, wc = 0;
    for (std::size_t r = 0; r < want.shape()[0]; ++r) {
        for (std::size_t c = 0; c < want.shape()[1]; ++c) {
            const double g = got(r, c), w = want(r, c);
            const double err = std::isfinite(g) ? std::abs(g - w) / (1.0 + std::abs(w)) : HUGE_VAL;
            if (err > worst) {
                worst = err;
                wr = r;
                wc = c;
            }
        }
    }
    INFO(what << ": worst element (" << wr << ", " << wc << "): got " << got(wr, wc) << ", want " << want(wr, wc));
    CHECK(worst <= tol);
}

double sigmoid_ref(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
double softplus_ref(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

// ---- elementwise ops of one operand -------------------------------------------

struct UnaryCase {
    const char* name;
    Var (*op)(const Var&);
    double (*value)(double x);
    double (*derivative)(double x);
    float lo, hi;
    bool either_sign;  // magnitudes in [lo, hi) with random signs
    bool saturates;    // flat tails: checked at |x| >= 30
};

const UnaryCase kUnaryCases[] = {
    {"exp", [](const Var& x) { return xgrad::exp(x); }, [](double x) { return std::exp(x); },
     [](double x) { return std::exp(x); }, -2.f, 2.f, false, false},
    // x > 0.2 keeps x - step inside log's domain.
    {"log", [](const Var& x) { return xgrad::log(x); }, [](double x) { return std::log(x); },
     [](double x) { return 1.0 / x; }, 0.2f, 3.f, false, false},
    {"relu", [](const Var& x) { return xgrad::relu(x); }, [](double x) { return x > 0 ? x : 0.0; },
     [](double x) { return x > 0 ? 1.0 : 0.0; }, 0.1f, 2.f, true, false},
    {"leaky_relu (default slope)", [](const Var& x) { return xgrad::leaky_relu(x); },
     [](double x) { return x > 0 ? x : 0.01 * x; }, [](double x) { return x > 0 ? 1.0 : 0.01; }, 0.1f, 2.f, true,
     false},
    {"leaky_relu (slope 0.2)", [](const Var& x) { return xgrad::leaky_relu(x, 0.2f); },
     [](double x) { return x > 0 ? x : 0.2 * x; }, [](double x) { return x > 0 ? 1.0 : 0.2; }, 0.1f, 2.f, true, false},
    {"sigmoid", [](const Var& x) { return xgrad::sigmoid(x); }, sigmoid_ref,
     [](double x) { return sigmoid_ref(x) * (1.0 - sigmoid_ref(x)); }, -4.f, 4.f, false, true},
    {"tanh", [](const Var& x) { return xgrad::tanh(x); }, [](double x) { return std::tanh(x); },
     [](double x) { return 1.0 - std::tanh(x) * std::tanh(x); }, -3.f, 3.f, false, true},
    {"softplus", [](const Var& x) { return xgrad::softplus(x); }, softplus_ref, sigmoid_ref, -4.f, 4.f, false, true},
    {"neg", [](const Var& x) { return xgrad::neg(x); }, [](double x) { return -x; }, [](double) { return -1.0; }, -2.f,
     2.f, false, false},
    {"scale by 2.5", [](const Var& x) { return xgrad::scale(x, 2.5f); }, [](double x) { return 2.5 * x; },
     [](double) { return 2.5; }, -2.f, 2.f, false, false},
    {"add_scalar -1.5", [](const Var& x) { return xgrad::add_scalar(x, -1.5f); }, [](double x) { return x - 1.5; },
     [](double) { return 1.0; }, -2.f, 2.f, false, false},
    {"-x", [](const Var& x) { return -x; }, [](double x) { return -x; }, [](double) { return -1.0; }, -2.f, 2.f, false,
     false},
    {"x * 3", [](const Var& x) { return x * 3.f; }, [](double x) { return x * 3; }, [](double) { return 3.0; }, -2.f,
     2.f, false, false},
    {"3 * x", [](const Var& x) { return 3.f * x; }, [](double x) { return 3 * x; }, [](double) { return 3.0; }, -2.f,
     2.f, false, false},
    {"x + 2", [](const Var& x) { return x + 2.f; }, [](double x) { return x + 2; }, [](double) { return 1.0; }, -2.f,
     2.f, false, false},
    {"2 + x", [](const Var& x) { return 2.f + x; }, [](double x) { return 2 + x; }, [](double) { return 1.0; }, -2.f,
     2.f, false, false},
    {"x - 2", [](const Var& x) { return x - 2.f; }, [](double x) { return x - 2; }, [](double) { return 1.0; }, -2.f,
     2.f, false, false},
    {"2 - x", [](const Var& x) { return 2.f - x; }, [](double x) { return 2 - x; }, [](double) { return -1.0; }, -2.f,
     2.f, false, false},
};

Var sample(const UnaryCase& u, const Shape& s, std::uint64_t seed) {
    return u.either_sign ? random_signed_var(s[0], s[1], u.lo, u.hi, seed) : random_var(s[0], s[1], u.lo, u.hi, seed);
}

// Runs u on x with upstream gradient dy and compares value and dx with the
// double references.
void check_unary_closed_form(const UnaryCase& u, const Var& x, const Tensor& dy, double tol) {
    const Var y = u.op(x);
    backward_with(y, dy);
    Reference value(x.shape(), 0.0), grad(x.shape(), 0.0);
    for (std::size_t i = 0; i < x.value().size(); ++i) {
        const double xi = x.value().data()[i];
        value.data()[i] = u.value(xi);
        grad.data()[i] = double(dy.data()[i]) * u.derivative(xi);
    }
    check_matches("value", y.value(), value, tol);
    check_matches("gradient", x.grad(), grad, tol);
}

TEST_CASE("elementwise ops: values and gradients match closed forms in double") {
    std::uint64_t seed = 100;
    for (const UnaryCase& u : kUnaryCases) {
        for (const Shape& s : kShapes) {
            INFO(u.name << " on " << xgrad::shape_string(s));
            seed += 2;
            check_unary_closed_form(u, sample(u, s, seed), random_tensor(s, -1.f, 1.f, seed + 1), 1e-5);
        }
    }
}

TEST_CASE("elementwise ops pass gradcheck") {
    std::uint64_t seed = 200;
    for (const UnaryCase& u : kUnaryCases) {
        for (const Shape& s : kShapes) {
            check_gradcheck(std::string(u.name) + " on " + xgrad::shape_string(s),
                            [&u](const Inputs& in) { return u.op(in[0]); }, {sample(u, s, ++seed)});
        }
    }
}

TEST_CASE("activations pass NaN through, so a diverged model is noticed") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const Var x(Tensor{{nan, 1.f, -1.f, nan, 2.f, -2.f, nan, 0.5f, -0.5f, nan}});  // NaN in several SIMD lanes
    for (const auto& [name, f] : std::vector<std::pair<const char*, Var (*)(const Var&)>>{
             {"relu", [](const Var& v) { return xgrad::relu(v); }},
             {"leaky_relu", [](const Var& v) { return xgrad::leaky_relu(v); }},
             {"sigmoid", [](const Var& v) { return xgrad::sigmoid(v); }},
             {"tanh", [](const Var& v) { return xgrad::tanh(v); }},
             {"softplus", [](const Var& v) { return xgrad::softplus(v); }}}) {
        INFO(name);
        const Tensor y = f(x).value();
        for (std::size_t c = 0; c < x.cols(); ++c) CHECK(std::isnan(y(0, c)) == std::isnan(x.value()(0, c)));
    }
}

TEST_CASE("sigmoid, tanh and softplus are finite and exact when saturated") {
    const float saturated[] = {-1000.f, -100.f, -30.f, 30.f, 100.f, 1000.f};
    Tensor x(Shape{1, std::size(saturated)});
    std::copy(std::begin(saturated), std::end(saturated), x.begin());
    const Tensor ones(x.shape(), 1.f);
    for (const UnaryCase& u : kUnaryCases) {
        if (!u.saturates) continue;
        INFO(u.name);
        // The limits (0, 1, +-1, x) are float-exact, so the tolerance is tight.
        check_unary_closed_form(u, Var(x, true), ones, 1e-6);
    }
}

// ---- add, sub, mul with broadcasting ---------------------------------------------

struct BinaryCase {
    const char* name;
    Var (*op)(const Var&, const Var&);
    double (*value)(double a, double b);
    double (*da)(double a, double b);
    double (*db)(double a, double b);
};

const BinaryCase kBinaryCases[] = {
    {"add", xgrad::add, [](double a, double b) { return a + b; }, [](double, double) { return 1.0; },
     [](double, double) { return 1.0; }},
    {"sub", xgrad::sub, [](double a, double b) { return a - b; }, [](double, double) { return 1.0; },
     [](double, double) { return -1.0; }},
    {"mul", xgrad::mul, [](double a, double b) { return a * b; }, [](double, double b) { return b; },
     [](double a, double) { return a; }},
    {"a + b", [](const Var& a, const Var& b) { return a + b; }, [](double a, double b) { return a + b; },
     [](double, double) { return 1.0; }, [](double, double) { return 1.0; }},
    {"a - b", [](const Var& a, const Var& b) { return a - b; }, [](double a, double b) { return a - b; },
     [](double, double) { return 1.0; }, [](double, double) { return -1.0; }},
    {"a * b", [](const Var& a, const Var& b) { return a * b; }, [](double a, double b) { return a * b; },
     [](double, double b) { return b; }, [](double a, double) { return a; }},
};

// Every way two shapes broadcast, each on both sides.
const std::pair<Shape, Shape> kBroadcastPairs[] = {
    {{5, 7}, {5, 7}}, {{5, 7}, {1, 7}}, {{1, 7}, {5, 7}}, {{5, 7}, {5, 1}}, {{5, 1}, {5, 7}},
    {{5, 7}, {1, 1}}, {{1, 1}, {5, 7}}, {{1, 7}, {5, 1}}, {{5, 1}, {1, 7}}, {{1, 1}, {1, 1}},
};

// The element of a `shape` operand that output element (r, c) reads.
std::pair<std::size_t, std::size_t> source(const Shape& shape, std::size_t r, std::size_t c) {
    return {shape[0] == 1 ? 0 : r, shape[1] == 1 ? 0 : c};
}

TEST_CASE("add, sub, mul: values and gradients summed back to each operand's shape") {
    std::uint64_t seed = 300;
    for (const BinaryCase& op : kBinaryCases) {
        for (const auto& [sa, sb] : kBroadcastPairs) {
            INFO(op.name << " of " << xgrad::shape_string(sa) << " and " << xgrad::shape_string(sb));
            const Var a = random_var(sa[0], sa[1], -1.5f, 1.5f, ++seed);
            const Var b = random_var(sb[0], sb[1], -1.5f, 1.5f, ++seed);
            const Shape out{std::max(sa[0], sb[0]), std::max(sa[1], sb[1])};
            const Tensor dy = random_tensor(out, -1.f, 1.f, ++seed);
            const Var y = op.op(a, b);
            backward_with(y, dy);

            Reference value(out, 0.0), da(sa, 0.0), db(sb, 0.0);
            for (std::size_t r = 0; r < out[0]; ++r) {
                for (std::size_t c = 0; c < out[1]; ++c) {
                    const auto [ar, ac] = source(sa, r, c);
                    const auto [br, bc] = source(sb, r, c);
                    const double av = a.value()(ar, ac), bv = b.value()(br, bc);
                    value(r, c) = op.value(av, bv);
                    da(ar, ac) += dy(r, c) * op.da(av, bv);
                    db(br, bc) += dy(r, c) * op.db(av, bv);
                }
            }
            check_matches("value", y.value(), value);
            check_matches("gradient of a", a.grad(), da);
            check_matches("gradient of b", b.grad(), db);
        }
    }
}

TEST_CASE("add, sub, mul pass gradcheck for every broadcast") {
    std::uint64_t seed = 400;
    for (const BinaryCase& op : kBinaryCases) {
        for (const auto& [sa, sb] : kBroadcastPairs) {
            check_gradcheck(
                std::string(op.name) + " of " + xgrad::shape_string(sa) + " and " + xgrad::shape_string(sb),
                [&op](const Inputs& in) { return op.op(in[0], in[1]); },
                {random_var(sa[0], sa[1], -1.5f, 1.5f, ++seed), random_var(sb[0], sb[1], -1.5f, 1.5f, ++seed)});
        }
    }
}

// ---- sum and mean ---------------------------------------------------------------------

struct ReduceCase {
    const char* name;
    Var (*op)(const Var&);
    bool over_rows, over_cols, mean;
};

const ReduceCase kReduceCases[] = {
    {"sum", [](const Var& x) { return xgrad::sum(x); }, true, true, false},
    {"sum over rows", [](const Var& x) { return xgrad::sum(x, xgrad::Axis::rows); }, true, false, false},
    {"sum over cols", [](const Var& x) { return xgrad::sum(x, xgrad::Axis::cols); }, false, true, false},
    {"mean", [](const Var& x) { return xgrad::mean(x); }, true, true, true},
    {"mean over rows", [](const Var& x) { return xgrad::mean(x, xgrad::Axis::rows); }, true, false, true},
    {"mean over cols", [](const Var& x) { return xgrad::mean(x, xgrad::Axis::cols); }, false, true, true},
};

TEST_CASE("sum and mean: values and gradients") {
    std::uint64_t seed = 500;
    std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
    shapes.push_back({40, 30});  // long enough for float rounding of the totals to show
    for (const ReduceCase& op : kReduceCases) {
        for (const Shape& s : shapes) {
            INFO(op.name << " of " << xgrad::shape_string(s));
            const Var x = random_var(s[0], s[1], -1.f, 1.f, ++seed);
            const Shape out{op.over_rows ? 1 : s[0], op.over_cols ? 1 : s[1]};
            const double count = double(op.over_rows ? s[0] : 1) * double(op.over_cols ? s[1] : 1);
            const double k = op.mean ? 1.0 / count : 1.0;
            const Tensor dy = random_tensor(out, -1.f, 1.f, ++seed);
            const Var y = op.op(x);
            backward_with(y, dy);

            Reference value(out, 0.0), grad(s, 0.0);
            for (std::size_t r = 0; r < s[0]; ++r) {
                for (std::size_t c = 0; c < s[1]; ++c) {
                    const auto [orow, ocol] = source(out, r, c);
                    value(orow, ocol) += k * x.value()(r, c);
                    grad(r, c) = k * dy(orow, ocol);
                }
            }
            check_matches("value", y.value(), value);
            check_matches("gradient", x.grad(), grad);
        }
    }
}

TEST_CASE("sum and mean pass gradcheck") {
    std::uint64_t seed = 600;
    for (const ReduceCase& op : kReduceCases) {
        for (const Shape& s : kShapes) {
            check_gradcheck(std::string(op.name) + " of " + xgrad::shape_string(s),
                            [&op](const Inputs& in) { return op.op(in[0]); },
                            {random_var(s[0], s[1], -1.f, 1.f, ++seed)});
        }
    }
}

// ---- matmul and linear ---------------------------------------------------------------

// (rows, inner, cols): scalars, a dot product, an outer product, a vector
// times a matrix and full matrices.
struct ProductShape {
    std::size_t rows, inner, cols;
};
const ProductShape kProductShapes[] = {{1, 1, 1}, {1, 7, 1}, {5, 1, 7}, {1, 7, 3}, {5, 7, 1}, {5, 7, 3}};

TEST_CASE("matmul: values and gradients (da = dy b^T, db = a^T dy)") {
    std::uint64_t seed = 700;
    for (const ProductShape& p : kProductShapes) {
        INFO("(" << p.rows << ", " << p.inner << ") . (" << p.inner << ", " << p.cols << ")");
        const Var a = random_var(p.rows, p.inner, -1.f, 1.f, ++seed);
        const Var b = random_var(p.inner, p.cols, -1.f, 1.f, ++seed);
        const Tensor dy = random_tensor({p.rows, p.cols}, -1.f, 1.f, ++seed);
        const Var y = xgrad::matmul(a, b);
        backward_with(y, dy);
        const Reference A = to_double(a.value()), B = to_double(b.value()), DY = to_double(dy);
        check_matches("value", y.value(), product(A, B));
        check_matches("gradient of a", a.grad(), product(DY, transpose(B)));
        check_matches("gradient of b", b.grad(), product(transpose(A), DY));
    }
}

TEST_CASE("linear: values and gradients (dx = dy w^T, dw = x^T dy, db = column sums of dy)") {
    std::uint64_t seed = 800;
    for (const ProductShape& p : kProductShapes) {
        INFO("x (" << p.rows << ", " << p.inner << "), w (" << p.inner << ", " << p.cols << ")");
        const Var x = random_var(p.rows, p.inner, -1.f, 1.f, ++seed);
        const Var w = random_var(p.inner, p.cols, -1.f, 1.f, ++seed);
        const Var b = random_var(1, p.cols, -1.f, 1.f, ++seed);
        const Tensor dy = random_tensor({p.rows, p.cols}, -1.f, 1.f, ++seed);
        const Var y = xgrad::linear(x, w, b);
        backward_with(y, dy);
        const Reference X = to_double(x.value()), W = to_double(w.value()), DY = to_double(dy);
        Reference value = product(X, W), db(Shape{1, p.cols}, 0.0);
        for (std::size_t r = 0; r < p.rows; ++r) {
            for (std::size_t c = 0; c < p.cols; ++c) {
                value(r, c) += b.value()(0, c);
                db(0, c) += DY(r, c);
            }
        }
        check_matches("value", y.value(), value);
        check_matches("gradient of x", x.grad(), product(DY, transpose(W)));
        check_matches("gradient of w", w.grad(), product(transpose(X), DY));
        check_matches("gradient of b", b.grad(), db);
    }
}

TEST_CASE("matmul and linear pass gradcheck") {
    std::uint64_t seed = 900;
    for (const ProductShape& p : kProductShapes) {
        const std::string shapes = "(" + std::to_string(p.rows) + ", " + std::to_string(p.inner) + ") . (" +
                                   std::to_string(p.inner) + ", " + std::to_string(p.cols) + ")";
        check_gradcheck(
            "matmul " + shapes, [](const Inputs& in) { return xgrad::matmul(in[0], in[1]); },
            {random_var(p.rows, p.inner, -1.f, 1.f, ++seed), random_var(p.inner, p.cols, -1.f, 1.f, ++seed)});
        check_gradcheck("linear " + shapes, [](const Inputs& in) { return xgrad::linear(in[0], in[1], in[2]); },
                        {random_var(p.rows, p.inner, -1.f, 1.f, ++seed), random_var(p.inner, p.cols, -1.f, 1.f, ++seed),
                         random_var(1, p.cols, -1.f, 1.f, ++seed)});
    }
}

// ---- bce_with_logits ------------------------------------------------------------------

// Runs bce_with_logits(logits, targets) (or against the float `target` when
// targets is empty) and compares loss, dlogits = dy (sigmoid(x) - t) / n and
// dtargets = -dy x / n with double references.
void check_bce_closed_form(const Var& logits, const Var& targets, float target, float dy) {
    const bool var_targets = targets.defined();
    const Var loss = var_targets ? xgrad::bce_with_logits(logits, targets) : xgrad::bce_with_logits(logits, target);
    REQUIRE(loss.shape() == Shape{1, 1});
    backward_with(loss, Tensor(Shape{1, 1}, dy));
    const double n = double(logits.value().size());
    double total = 0.0;
    Reference dx(logits.shape(), 0.0), dt(logits.shape(), 0.0);
    for (std::size_t i = 0; i < logits.value().size(); ++i) {
        const double x = logits.value().data()[i];
        const double t = var_targets ? double(targets.value().data()[i]) : double(target);
        total += softplus_ref(x) - x * t;  // = -t log(sigmoid(x)) - (1-t) log(1-sigmoid(x))
        dx.data()[i] = dy * (sigmoid_ref(x) - t) / n;
        dt.data()[i] = -dy * x / n;
    }
    CHECK(loss.item() == doctest::Approx(total / n));
    check_matches("gradient of the logits", logits.grad(), dx);
    if (var_targets) check_matches("gradient of the targets", targets.grad(), dt);
}

TEST_CASE("bce_with_logits: loss and gradients, Var and float targets") {
    std::uint64_t seed = 1000;
    for (const Shape& s : kShapes) {
        INFO("logits " << xgrad::shape_string(s));
        seed += 2;
        check_bce_closed_form(random_var(s[0], s[1], -3.f, 3.f, seed), random_var(s[0], s[1], 0.f, 1.f, seed + 1), 0.f,
                              0.7f);
        for (float target : {0.f, 1.f, 0.3f}) {
            INFO("target " << target);
            check_bce_closed_form(random_var(s[0], s[1], -3.f, 3.f, ++seed), Var(), target, -1.3f);
        }
    }
}

TEST_CASE("bce_with_logits passes gradcheck") {
    std::uint64_t seed = 1100;
    for (const Shape& s : kShapes) {
        const std::string shape = xgrad::shape_string(s);
        check_gradcheck("bce_with_logits, Var targets, " + shape,
                        [](const Inputs& in) { return xgrad::bce_with_logits(in[0], in[1]); },
                        {random_var(s[0], s[1], -3.f, 3.f, ++seed), random_var(s[0], s[1], 0.f, 1.f, ++seed)});
        check_gradcheck("bce_with_logits, target 0.3, " + shape,
                        [](const Inputs& in) { return xgrad::bce_with_logits(in[0], 0.3f); },
                        {random_var(s[0], s[1], -3.f, 3.f, ++seed)});
    }
}

TEST_CASE("bce_with_logits reaches its limits at saturated logits without NaN") {
    struct Limit {
        float logit, target;
        double loss, dlogit;  // per element, before the mean's 1/n
    };
    // A confidently wrong logit x costs |x| and its gradient is +-1; a
    // confidently right one costs nothing.
    const Limit limits[] = {
        {100.f, 0.f, 100.0, 1.0},   {-100.f, 1.f, 100.0, -1.0},   {100.f, 1.f, 0.0, 0.0},  {-100.f, 0.f, 0.0, 0.0},
        {30.f, 0.f, 30.0, 1.0},     {-30.f, 1.f, 30.0, -1.0},     {30.f, 1.f, 0.0, 0.0},   {-30.f, 0.f, 0.0, 0.0},
        {1000.f, 0.f, 1000.0, 1.0}, {-1000.f, 1.f, 1000.0, -1.0}, {1000.f, 1.f, 0.0, 0.0}, {-1000.f, 0.f, 0.0, 0.0},
    };
    const std::size_t n = 3;  // the gradient must carry the mean's 1/n
    for (const Limit& l : limits) {
        for (const bool var_targets : {true, false}) {
            INFO("logit " << l.logit << ", target " << l.target << (var_targets ? " (Var)" : " (float)"));
            const Var x = Var::full(1, n, l.logit, true);
            const Var t = Var::full(1, n, l.target, var_targets);
            const Var loss = var_targets ? xgrad::bce_with_logits(x, t) : xgrad::bce_with_logits(x, l.target);
            xgrad::backward(loss);
            CHECK(loss.item() == doctest::Approx(l.loss));
            for (std::size_t c = 0; c < n; ++c) {
                CHECK(x.grad()(0, c) == doctest::Approx(l.dlogit / double(n)));
                if (var_targets) CHECK(t.grad()(0, c) == doctest::Approx(-double(l.logit) / double(n)));
            }
        }
    }
}

// ---- composition ----------------------------------------------------------------------

TEST_CASE("gradients add up through shared and intermediate operands") {
    // An op node's gradient is assigned by its first consumer and added by the
    // rest; leaves always add. Shared intermediates, broadcast ones included,
    // take the path that leaf-only tests never reach.
    struct Case {
        const char* name;
        std::vector<Shape> shapes;
        Var (*f)(const Inputs&);
    };
    const Case cases[] = {
        {"x * x", {{5, 7}}, [](const Inputs& in) { return in[0] * in[0]; }},
        {"x + x - x", {{5, 7}}, [](const Inputs& in) { return in[0] + in[0] - in[0]; }},
        {"exp(x) * exp(x), one node",
         {{5, 7}},
         [](const Inputs& in) {
             const Var h = xgrad::exp(in[0]);
             return h * h;
         }},
        {"a broadcast intermediate used twice",
         {{5, 7}, {1, 7}},
         [](const Inputs& in) {
             const Var h = xgrad::sigmoid(in[1]);
             return (in[0] + h) * h;
         }},
        {"matmul of a shared intermediate",
         {{5, 5}},
         [](const Inputs& in) {
             const Var h = xgrad::tanh(in[0]);
             return xgrad::matmul(h, h);
         }},
        {"reductions of a shared intermediate",
         {{5, 7}},
         [](const Inputs& in) {
             const Var h = xgrad::exp(in[0]);
             return xgrad::mean(h, xgrad::Axis::rows) * xgrad::sum(h, xgrad::Axis::cols) - xgrad::mean(h);
         }},
        {"a two-layer network's loss",
         {{6, 4}, {4, 5}, {1, 5}, {5, 1}, {1, 1}, {6, 1}},
         [](const Inputs& in) {
             const Var h = xgrad::leaky_relu(xgrad::linear(in[0], in[1], in[2]), 0.2f);
             return xgrad::bce_with_logits(xgrad::linear(h, in[3], in[4]), xgrad::sigmoid(in[5]));
         }},
    };
    std::uint64_t seed = 1200;
    for (const Case& c : cases) {
        Inputs inputs;
        for (const Shape& s : c.shapes) inputs.push_back(random_var(s[0], s[1], -1.f, 1.f, ++seed));
        check_gradcheck(c.name, c.f, inputs);
    }
}

// ---- shape errors -----------------------------------------------------------------------

TEST_CASE("shape errors name the op and both shapes") {
    struct Case {
        const char* op;  // as the message names it
        void (*call)();
        const char* first;
        const char* second;
    };
    const Case cases[] = {
        {"xgrad::matmul", [] { xgrad::matmul(Var::full(2, 3, 1.f, true), Var::full(4, 5, 1.f)); }, "(2, 3)", "(4, 5)"},
        {"xgrad::matmul", [] { xgrad::matmul(Var::full(3, 2, 1.f), Var::full(3, 2, 1.f, true)); }, "(3, 2)", "(3, 2)"},
        {"xgrad::linear", [] { xgrad::linear(Var::full(2, 3, 1.f), Var::full(4, 5, 1.f, true), Var::full(1, 5, 1.f)); },
         "(2, 3)", "(4, 5)"},
        {"xgrad::linear", [] { xgrad::linear(Var::full(2, 3, 1.f), Var::full(3, 5, 1.f, true), Var::full(1, 4, 1.f)); },
         "(3, 5)", "(1, 4)"},
        {"xgrad::linear", [] { xgrad::linear(Var::full(2, 3, 1.f), Var::full(3, 5, 1.f, true), Var::full(2, 5, 1.f)); },
         "(3, 5)", "(2, 5)"},
        {"xgrad::add", [] { xgrad::add(Var::full(2, 3, 1.f, true), Var::full(3, 2, 1.f)); }, "(2, 3)", "(3, 2)"},
        {"xgrad::add", [] { Var::full(2, 3, 1.f) + Var::full(2, 2, 1.f, true); }, "(2, 3)", "(2, 2)"},
        {"xgrad::sub", [] { xgrad::sub(Var::full(4, 3, 1.f, true), Var::full(2, 3, 1.f)); }, "(4, 3)", "(2, 3)"},
        {"xgrad::mul", [] { xgrad::mul(Var::full(1, 3, 1.f), Var::full(2, 4, 1.f, true)); }, "(1, 3)", "(2, 4)"},
        {"xgrad::bce_with_logits", [] { xgrad::bce_with_logits(Var::full(2, 3, 1.f, true), Var::full(3, 2, 0.f)); },
         "(2, 3)", "(3, 2)"},
        {"xgrad::bce_with_logits", [] { xgrad::bce_with_logits(Var::full(1, 4, 1.f, true), Var::full(4, 1, 0.f)); },
         "(1, 4)", "(4, 1)"},
        // The op-authoring API guards custom ops the same way: gemm_into
        // before BLAS reads or writes out of bounds ...
        {"xgrad::my_product",
         [] {
             Tensor c(Shape{2, 5});
             xgrad::gemm_into("my_product", Tensor(Shape{2, 3}, 1.f), false, Tensor(Shape{4, 5}, 1.f), false, c);
         },
         "(2, 3)", "(4, 5)"},
        {"xgrad::my_product",
         [] {
             Tensor c(Shape{2, 4});
             xgrad::gemm_into("my_product", Tensor(Shape{2, 3}, 1.f), false, Tensor(Shape{3, 5}, 1.f), false, c);
         },
         "(3, 5)", "(2, 4)"},
        // ... and accumulate before a rule's wrongly shaped gradient lands.
        {"'my_op'",
         [] {
             const Var x = Var::full(2, 3, 1.f, true);
             xgrad::Op op("my_op", {x}, x.shape());
             op.out().fill(1.f);
             const Var y =
                 op.finish([](xgrad::BackwardContext& ctx) { ctx.accumulate(0, xt::transpose(ctx.grad_output())); });
             xgrad::backward(xgrad::sum(y));
         },
         "(3, 2)", "(2, 3)"},
    };
    for (const Case& c : cases) {
        INFO(c.op << " with " << c.first << " and " << c.second);
        std::string message;
        bool thrown = false;
        try {
            c.call();
        } catch (const xgrad::ShapeError& e) {
            thrown = true;
            message = e.what();
        }
        INFO("message: " << message);
        REQUIRE(thrown);
        CHECK(message.find(c.op) != std::string::npos);
        CHECK(message.find(c.first) != std::string::npos);
        CHECK(message.find(c.second) != std::string::npos);
    }
}

// ---- frozen inputs ------------------------------------------------------------------------

TEST_CASE("a frozen input gets no gradient and the others get the same as unfrozen") {
    struct Case {
        const char* name;
        std::vector<Shape> shapes;
        Var (*f)(const Inputs&);
    };
    const Case cases[] = {
        {"matmul", {{5, 7}, {7, 3}}, [](const Inputs& in) { return xgrad::matmul(in[0], in[1]); }},
        {"linear", {{5, 7}, {7, 3}, {1, 3}}, [](const Inputs& in) { return xgrad::linear(in[0], in[1], in[2]); }},
        {"add", {{5, 7}, {1, 7}}, [](const Inputs& in) { return xgrad::add(in[0], in[1]); }},
        {"sub", {{5, 1}, {5, 7}}, [](const Inputs& in) { return xgrad::sub(in[0], in[1]); }},
        {"mul", {{1, 7}, {5, 1}}, [](const Inputs& in) { return xgrad::mul(in[0], in[1]); }},
        {"bce_with_logits", {{5, 7}, {5, 7}}, [](const Inputs& in) { return xgrad::bce_with_logits(in[0], in[1]); }},
    };
    std::uint64_t seed = 1300;
    for (const Case& c : cases) {
        seed += 10;
        // Values in [0, 1) are valid for every operand, targets included.
        auto make_inputs = [&] {
            Inputs in;
            for (std::size_t k = 0; k < c.shapes.size(); ++k)
                in.push_back(random_var(c.shapes[k][0], c.shapes[k][1], 0.f, 1.f, seed + k));
            return in;
        };
        const Inputs all = make_inputs();
        const Var y = c.f(all);
        const Tensor dy = random_tensor(y.shape(), -1.f, 1.f, seed + 9);
        backward_with(y, dy);

        for (std::size_t frozen = 0; frozen < c.shapes.size(); ++frozen) {
            INFO(c.name << " with input " << frozen << " frozen");
            Inputs in = make_inputs();
            in[frozen].set_requires_grad(false);
            // A rule that wrote the frozen input's gradient would throw here.
            CHECK_NOTHROW(backward_with(c.f(in), dy));
            CHECK(xt::all(xt::equal(in[frozen].grad(), 0.f)));
            for (std::size_t k = 0; k < in.size(); ++k) {
                if (k == frozen) continue;
                INFO("input " << k);
                CHECK(xt::amax(xt::abs(all[k].grad()))() > 0.f);
                check_matches("gradient", in[k].grad(), to_double(all[k].grad()), 1e-6);
            }
        }
    }
}

}  // namespace
