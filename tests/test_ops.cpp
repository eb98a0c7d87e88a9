// The arithmetic, elementwise, reduction, product and loss ops, each checked
// two ways (docs/extending.md, "Adding an op"): by gradcheck against central differences of its
// own forward pass, and against its textbook gradient computed independently
// in double. Then saturated inputs (where NaN bugs live), ties, shape errors
// and frozen inputs. The structural ops are in test_shape_ops.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xmanipulation.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/core/op.hpp>
#include <xgrad/ops.hpp>

#include "op_reference.hpp"

namespace {

using namespace test;
using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;
using Inputs = std::vector<Var>;

// A scalar, vectors, a column, a matrix and a rank-3 tensor: the degenerate
// shapes are where broadcasting and BLAS leading dimensions go wrong.
const Shape kShapes[] = {{}, {1}, {7}, {5, 1}, {5, 7}, {2, 3, 4}};

// Magnitudes in [lo, hi) with random signs: with lo above gradcheck's step,
// no finite difference straddles a kink at 0.
Var random_signed_var(const Shape& s, float lo, float hi, std::uint64_t seed) {
    Var v = random_var(s, lo, hi, seed);
    xgrad::Rng signs(seed + 7919);
    for (float& x : v.mutable_value()) {
        if (signs.uniform(0.f, 1.f) < 0.5f) x = -x;
    }
    return v;
}

double sigmoid_ref(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
double softplus_ref(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

// A user op whose differentiable rule is its only rule, serving the
// ordinary backward too (docs/extending.md, section 4): silu(x) =
// x sigmoid(x), dy/dx = s (1 + x (1 - s)) with s = sigmoid(x).
Var silu(const Var& x) {
    xgrad::Op op("silu", {x}, x.shape());
    xt::noalias(op.out()) = x.value() / (1.f + xt::exp(-x.value()));
    return op.finish([](xgrad::GraphContext& g) {
        const Var in = g.input(0), s = xgrad::sigmoid(in);
        g.accumulate(0, g.grad_output() * (s * (1.f + in * (1.f - s))));
    });
}

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
    // x > 0.2 keeps x - step inside log's and sqrt's domains.
    {"log", [](const Var& x) { return xgrad::log(x); }, [](double x) { return std::log(x); }, [](double x) { return 1.0 / x; },
     0.2f, 3.f, false, false},
    {"sqrt", [](const Var& x) { return xgrad::sqrt(x); }, [](double x) { return std::sqrt(x); },
     [](double x) { return 0.5 / std::sqrt(x); }, 0.2f, 3.f, false, false},
    {"abs", [](const Var& x) { return xgrad::abs(x); }, [](double x) { return std::abs(x); },
     [](double x) { return x > 0 ? 1.0 : -1.0; }, 0.1f, 2.f, true, false},
    {"pow 3", [](const Var& x) { return xgrad::pow(x, 3.f); }, [](double x) { return x * x * x; },
     [](double x) { return 3 * x * x; }, -1.5f, 1.5f, false, false},
    {"pow 0.5", [](const Var& x) { return xgrad::pow(x, 0.5f); }, [](double x) { return std::sqrt(x); },
     [](double x) { return 0.5 / std::sqrt(x); }, 0.2f, 3.f, false, false},
    {"pow -2", [](const Var& x) { return xgrad::pow(x, -2.f); }, [](double x) { return 1.0 / (x * x); },
     [](double x) { return -2.0 / (x * x * x); }, 0.5f, 2.f, false, false},
    {"clamp to [-0.5, 0.7]", [](const Var& x) { return xgrad::clamp(x, -0.5f, 0.7f); },
     [](double x) { return std::min(std::max(x, -0.5), 0.7); }, [](double x) { return x >= -0.5 && x <= 0.7 ? 1.0 : 0.0; }, 0.1f,
     0.4f, true, false},
    {"clamp, outside", [](const Var& x) { return xgrad::clamp(x, -0.5f, 0.7f); },
     [](double x) { return std::min(std::max(x, -0.5), 0.7); }, [](double) { return 0.0; }, 0.8f, 2.f, true, false},
    {"relu", [](const Var& x) { return xgrad::relu(x); }, [](double x) { return x > 0 ? x : 0.0; },
     [](double x) { return x > 0 ? 1.0 : 0.0; }, 0.1f, 2.f, true, false},
    {"leaky_relu (default slope)", [](const Var& x) { return xgrad::leaky_relu(x); },
     [](double x) { return x > 0 ? x : 0.01 * x; }, [](double x) { return x > 0 ? 1.0 : 0.01; }, 0.1f, 2.f, true, false},
    {"leaky_relu (slope 0.2)", [](const Var& x) { return xgrad::leaky_relu(x, 0.2f); },
     [](double x) { return x > 0 ? x : 0.2 * x; }, [](double x) { return x > 0 ? 1.0 : 0.2; }, 0.1f, 2.f, true, false},
    {"sigmoid", [](const Var& x) { return xgrad::sigmoid(x); }, sigmoid_ref,
     [](double x) { return sigmoid_ref(x) * (1.0 - sigmoid_ref(x)); }, -4.f, 4.f, false, true},
    {"tanh", [](const Var& x) { return xgrad::tanh(x); }, [](double x) { return std::tanh(x); },
     [](double x) { return 1.0 - std::tanh(x) * std::tanh(x); }, -3.f, 3.f, false, true},
    {"softplus", [](const Var& x) { return xgrad::softplus(x); }, softplus_ref, sigmoid_ref, -4.f, 4.f, false, true},
    {"silu", [](const Var& x) { return silu(x); }, [](double x) { return x * sigmoid_ref(x); },
     [](double x) { return sigmoid_ref(x) * (1 + x * (1 - sigmoid_ref(x))); }, -4.f, 4.f, false, false},
    {"neg", [](const Var& x) { return xgrad::neg(x); }, [](double x) { return -x; }, [](double) { return -1.0; }, -2.f, 2.f,
     false, false},
    {"scale by 2.5", [](const Var& x) { return xgrad::scale(x, 2.5f); }, [](double x) { return 2.5 * x; },
     [](double) { return 2.5; }, -2.f, 2.f, false, false},
    {"add_scalar -1.5", [](const Var& x) { return xgrad::add_scalar(x, -1.5f); }, [](double x) { return x - 1.5; },
     [](double) { return 1.0; }, -2.f, 2.f, false, false},
    {"-x", [](const Var& x) { return -x; }, [](double x) { return -x; }, [](double) { return -1.0; }, -2.f, 2.f, false, false},
    {"x * 3", [](const Var& x) { return x * 3.f; }, [](double x) { return x * 3; }, [](double) { return 3.0; }, -2.f, 2.f, false,
     false},
    {"3 * x", [](const Var& x) { return 3.f * x; }, [](double x) { return 3 * x; }, [](double) { return 3.0; }, -2.f, 2.f, false,
     false},
    {"x / 4", [](const Var& x) { return x / 4.f; }, [](double x) { return x / 4; }, [](double) { return 0.25; }, -2.f, 2.f, false,
     false},
    {"x + 2", [](const Var& x) { return x + 2.f; }, [](double x) { return x + 2; }, [](double) { return 1.0; }, -2.f, 2.f, false,
     false},
    {"2 + x", [](const Var& x) { return 2.f + x; }, [](double x) { return 2 + x; }, [](double) { return 1.0; }, -2.f, 2.f, false,
     false},
    {"x - 2", [](const Var& x) { return x - 2.f; }, [](double x) { return x - 2; }, [](double) { return 1.0; }, -2.f, 2.f, false,
     false},
    {"2 - x", [](const Var& x) { return 2.f - x; }, [](double x) { return 2 - x; }, [](double) { return -1.0; }, -2.f, 2.f, false,
     false},
};

Var sample(const UnaryCase& u, const Shape& s, std::uint64_t seed) {
    return u.either_sign ? random_signed_var(s, u.lo, u.hi, seed) : random_var(s, u.lo, u.hi, seed);
}

// Runs u on x with upstream gradient dy and compares value and dx with the
// double references.
void check_unary_closed_form(const UnaryCase& u, const Var& x, const Tensor& dy, double tol) {
    const Var y = u.op(x);
    backward_with(y, dy);
    Reference value = zeros(x.shape()), grad = zeros(x.shape());
    for (std::size_t i = 0; i < x.numel(); ++i) {
        const double xi = x.value().data()[i];
        value.data()[i] = u.value(xi);
        grad.data()[i] = double(dy.data()[i]) * u.derivative(xi);
    }
    check_matches("value", y.value(), value, tol);
    check_matches("gradient", x.grad(), grad, tol);
}

TEST_CASE("elementwise ops: values and gradients match closed forms in double, at every rank") {
    std::uint64_t seed = 100;
    for (const UnaryCase& u : kUnaryCases) {
        for (const Shape& s : kShapes) {
            INFO(std::string(u.name) << " on " << xgrad::shape_string(s));
            seed += 2;
            check_unary_closed_form(u, sample(u, s, seed), random_tensor(s, -1.f, 1.f, seed + 1), 1e-5);
        }
    }
}

TEST_CASE("elementwise ops pass gradcheck") {
    std::uint64_t seed = 200;
    for (const UnaryCase& u : kUnaryCases) {
        for (const Shape& s : kShapes) {
            check_gradients(std::string(u.name) + " on " + xgrad::shape_string(s), [&u](const Inputs& in) { return u.op(in[0]); },
                            {sample(u, s, ++seed)});
        }
    }
}

TEST_CASE("activations and clamp pass NaN through, so a diverged model is noticed") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const Var x(Tensor{nan, 1.f, -1.f, nan, 2.f, -2.f, nan, 0.5f, -0.5f, nan});  // NaN in several SIMD lanes
    for (const auto& [name, f] : std::vector<std::pair<const char*, Var (*)(const Var&)>>{
             {"relu", [](const Var& v) { return xgrad::relu(v); }},
             {"leaky_relu", [](const Var& v) { return xgrad::leaky_relu(v); }},
             {"sigmoid", [](const Var& v) { return xgrad::sigmoid(v); }},
             {"tanh", [](const Var& v) { return xgrad::tanh(v); }},
             {"softplus", [](const Var& v) { return xgrad::softplus(v); }},
             {"abs", [](const Var& v) { return xgrad::abs(v); }},
             {"clamp", [](const Var& v) { return xgrad::clamp(v, -0.7f, 0.7f); }}}) {
        const std::string op_name = name;  // INFO captures by reference; clang cannot capture a structured binding
        INFO(op_name);
        const Tensor y = f(x).value();
        for (std::size_t i = 0; i < x.numel(); ++i) CHECK(std::isnan(y(i)) == std::isnan(x.value()(i)));
    }
    CHECK_THROWS_AS(xgrad::clamp(x, 1.f, -1.f), std::invalid_argument);
}

TEST_CASE("sigmoid, tanh and softplus are finite and exact when saturated") {
    const Tensor x{-1000.f, -100.f, -30.f, 30.f, 100.f, 1000.f};
    const Tensor ones(x.shape(), 1.f);
    for (const UnaryCase& u : kUnaryCases) {
        if (!u.saturates) continue;
        INFO(std::string(u.name));
        // The limits (0, 1, +-1, x) are float-exact, so the tolerance is tight.
        check_unary_closed_form(u, Var(x, true), ones, 1e-6);
    }
}

// The same value, infinities of the same sign, or both NaN; nonzero finite
// values within float rounding. `signed_zero`: 0 and -0 differ.
bool same_float(float got, float expected, bool signed_zero) {
    if (std::isnan(expected)) return std::isnan(got);
    if (expected == 0.f && signed_zero) return got == 0.f && std::signbit(got) == std::signbit(expected);
    if (std::isinf(expected) || expected == 0.f) return got == expected;
    return std::fabs(got - expected) <= 2e-6f * std::fabs(expected);
}

TEST_CASE("pow at x = 0 and x = -0 matches std::pow and PyTorch wherever the zero sits in the tensor") {
    // Lengths around the SIMD widths (4, 8, 16 floats) and their tails.
    for (const float p : {-2.f, -1.f, -0.5f, 0.f, 0.5f, 1.f, 2.f, 3.f}) {
        for (std::size_t n = 1; n <= 37; ++n) {
            for (std::size_t at = 0; at < n; ++at) {
                for (const float zero : {0.f, -0.f}) {
                    Tensor x = random_tensor({n}, 0.5f, 2.f, 40 + n);
                    x(at) = zero;
                    const Var v(x, true);
                    const Var y = xgrad::pow(v, p);
                    xgrad::backward(y, Tensor({n}, 1.f));
                    for (std::size_t k = 0; k < n; ++k) {
                        // PyTorch's pow_backward: zeros for p = 0, else dy * p * x^(p - 1).
                        const float value = std::pow(x(k), p), grad = p == 0.f ? 0.f : p * std::pow(x(k), p - 1.f);
                        INFO("pow(" << x(k) << ", " << p << ") at element " << k << " of " << n << ": " << y.value()(k)
                                    << ", gradient " << v.grad()(k) << "; expected " << value << ", " << grad);
                        CHECK(same_float(y.value()(k), value, true));
                        // A leaf's gradient is added to zeros: -0 arrives as 0.
                        CHECK(same_float(v.grad()(k), grad, false));
                    }
                }
            }
        }
    }
}

// ---- binary ops with broadcasting --------------------------------------------------

struct BinaryCase {
    const char* name;
    Var (*op)(const Var&, const Var&);
    double (*value)(double a, double b);
    double (*da)(double a, double b);
    double (*db)(double a, double b);
    bool positive_b;  // b kept away from 0 (a divisor)
    bool apart;       // a and b kept 0.05 apart (a kink where they meet)
};

const BinaryCase kBinaryCases[] = {
    {"add", xgrad::add, [](double a, double b) { return a + b; }, [](double, double) { return 1.0; },
     [](double, double) { return 1.0; }, false, false},
    {"sub", xgrad::sub, [](double a, double b) { return a - b; }, [](double, double) { return 1.0; },
     [](double, double) { return -1.0; }, false, false},
    {"mul", xgrad::mul, [](double a, double b) { return a * b; }, [](double, double b) { return b; },
     [](double a, double) { return a; }, false, false},
    {"div", xgrad::div, [](double a, double b) { return a / b; }, [](double, double b) { return 1.0 / b; },
     [](double a, double b) { return -a / (b * b); }, true, false},
    {"maximum", xgrad::maximum, [](double a, double b) { return std::max(a, b); },
     [](double a, double b) { return a > b ? 1.0 : 0.0; }, [](double a, double b) { return b > a ? 1.0 : 0.0; }, false, true},
    {"minimum", xgrad::minimum, [](double a, double b) { return std::min(a, b); },
     [](double a, double b) { return a < b ? 1.0 : 0.0; }, [](double a, double b) { return b < a ? 1.0 : 0.0; }, false, true},
    {"a + b", [](const Var& a, const Var& b) { return a + b; }, [](double a, double b) { return a + b; },
     [](double, double) { return 1.0; }, [](double, double) { return 1.0; }, false, false},
    {"a - b", [](const Var& a, const Var& b) { return a - b; }, [](double a, double b) { return a - b; },
     [](double, double) { return 1.0; }, [](double, double) { return -1.0; }, false, false},
    {"a * b", [](const Var& a, const Var& b) { return a * b; }, [](double a, double b) { return a * b; },
     [](double, double b) { return b; }, [](double a, double) { return a; }, false, false},
    {"a / b", [](const Var& a, const Var& b) { return a / b; }, [](double a, double b) { return a / b; },
     [](double, double b) { return 1.0 / b; }, [](double a, double b) { return -a / (b * b); }, true, false},
};

// NumPy broadcasts of every kind, each on both sides: equal shapes, a
// trailing vector, rows against columns, a missing leading dimension, a
// scalar, and rank 4 against rank 2.
const std::pair<Shape, Shape> kBroadcastPairs[] = {
    {{5, 7}, {5, 7}},       {{5, 7}, {7}},       {{7}, {5, 7}}, {{5, 1}, {1, 7}}, {{5, 7}, {5, 1}}, {{2, 3, 4}, {3, 1}},
    {{3, 1}, {2, 3, 4}},    {{2, 1, 4}, {3, 4}}, {{}, {2, 3}},  {{2, 3}, {}},     {{}, {}},         {{1}, {1}},
    {{4, 1, 1, 2}, {3, 2}}, {{1, 3}, {2, 1, 1}},
};

// On a grid, a at odd and b at even multiples of 0.05: never closer than 0.05.
void spread_apart(Var& v, bool odd) {
    for (float& x : v.mutable_value()) x = (std::round(x / 0.1f) + (odd ? 0.5f : 0.f)) * 0.1f;
}

std::pair<Var, Var> binary_operands(const BinaryCase& op, const Shape& sa, const Shape& sb, std::uint64_t seed) {
    Var a = random_var(sa, -1.5f, 1.5f, seed);
    Var b = op.positive_b ? random_var(sb, 0.5f, 1.5f, seed + 1) : random_var(sb, -1.5f, 1.5f, seed + 1);
    if (op.apart) {
        spread_apart(a, true);
        spread_apart(b, false);
    }
    return {a, b};
}

TEST_CASE("binary ops: values and gradients summed back to each operand's shape") {
    std::uint64_t seed = 300;
    for (const BinaryCase& op : kBinaryCases) {
        for (const auto& [sa, sb] : kBroadcastPairs) {
            const std::string label = std::string(op.name) + " of " + xgrad::shape_string(sa) + " and " + xgrad::shape_string(sb);
            INFO(label);
            seed += 3;
            const auto [a, b] = binary_operands(op, sa, sb, seed);
            const Shape out = xgrad::broadcast_shapes("test", sa, sb);
            const Tensor dy = random_tensor(out, -1.f, 1.f, seed + 2);
            const Var y = op.op(a, b);
            backward_with(y, dy);

            Reference value = zeros(out), da = zeros(sa), db = zeros(sb);
            for (std::size_t e = 0; e < xgrad::numel(out); ++e) {
                const Shape at = unravel(e, out);
                const std::size_t ia = broadcast_source(at, sa), ib = broadcast_source(at, sb);
                const double av = a.value().data()[ia], bv = b.value().data()[ib];
                value.data()[e] = op.value(av, bv);
                da.data()[ia] += dy.data()[e] * op.da(av, bv);
                db.data()[ib] += dy.data()[e] * op.db(av, bv);
            }
            check_matches("value", y.value(), value);
            check_matches("gradient of a", a.grad(), da);
            check_matches("gradient of b", b.grad(), db);
        }
    }
}

TEST_CASE("binary ops pass gradcheck for every broadcast") {
    std::uint64_t seed = 400;
    for (const BinaryCase& op : kBinaryCases) {
        for (const auto& [sa, sb] : kBroadcastPairs) {
            seed += 2;
            const auto [a, b] = binary_operands(op, sa, sb, seed);
            check_gradients(std::string(op.name) + " of " + xgrad::shape_string(sa) + " and " + xgrad::shape_string(sb),
                            [&op](const Inputs& in) { return op.op(in[0], in[1]); }, {a, b});
        }
    }
}

TEST_CASE("maximum and minimum split the gradient at ties and propagate NaN") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const Var a(Tensor{1.f, 2.f, 3.f, nan, 5.f}, true), b(Tensor{1.f, 3.f, 2.f, 4.f, nan}, true);
    for (const bool largest : {true, false}) {
        INFO((largest ? "maximum" : "minimum"));
        Var ga = Var(a.value(), true), gb = Var(b.value(), true);
        const Var y = largest ? xgrad::maximum(ga, gb) : xgrad::minimum(ga, gb);
        CHECK(y.value()(0) == 1.f);
        CHECK(y.value()(1) == (largest ? 3.f : 2.f));
        CHECK(std::isnan(y.value()(3)));
        CHECK(std::isnan(y.value()(4)));
        xgrad::backward(xgrad::sum(xgrad::narrow(y, 0, 0, 3)));
        CHECK(ga.grad()(0) == 0.5f);  // a tie: half each, as in PyTorch
        CHECK(gb.grad()(0) == 0.5f);
        CHECK(ga.grad()(1) == (largest ? 0.f : 1.f));
        CHECK(gb.grad()(1) == (largest ? 1.f : 0.f));
    }
}

TEST_CASE("where picks a or b by the condition, broadcasting all three, and routes the gradient") {
    Tensor condition{1.f, 0.f, 1.f};
    condition.reshape({3, 1});
    const Var a = random_var({3, 4}, -1.f, 1.f, 1), b = random_var({4}, -1.f, 1.f, 2);
    const Tensor dy = random_tensor({3, 4}, -1.f, 1.f, 3);
    const Var y = xgrad::where(condition, a, b);
    backward_with(y, dy);
    Reference value = zeros({3, 4}), da = zeros({3, 4}), db = zeros({4});
    for (std::size_t r = 0; r < 3; ++r) {
        for (std::size_t c = 0; c < 4; ++c) {
            const bool pick_a = condition(r, 0) != 0.f;
            value(r, c) = pick_a ? a.value()(r, c) : b.value()(c);
            (pick_a ? da(r, c) : db(c)) += dy(r, c);
        }
    }
    check_matches("value", y.value(), value);
    check_matches("gradient of a", a.grad(), da);
    check_matches("gradient of b", b.grad(), db);
    check_gradients("where", [&](const Inputs& in) { return xgrad::where(condition, in[0], in[1]); },
                    {random_var({3, 4}, -1.f, 1.f, 4), random_var({4}, -1.f, 1.f, 5)});
}

// ---- reductions ----------------------------------------------------------------------

struct AxesCase {
    Shape shape;
    xgrad::Axes axes;  // empty: all
    bool keepdim;
};

const AxesCase kAxesCases[] = {
    {{5, 7}, {}, false},
    {{5, 7}, {0}, false},
    {{5, 7}, {1}, true},
    {{5, 7}, {-1}, false},
    {{2, 3, 4}, {1}, false},
    {{2, 3, 4}, {0, 2}, true},
    {{2, 3, 4}, {2, 0}, false},
    {{2, 3, 4}, {0, 1, 2}, false},
    {{2, 1, 4}, {1}, false},
    {{7}, {0}, false},
    {{}, {}, false},
    {{40, 30}, {0}, false},
    {{3, 1, 2, 5}, {-1, 1}, true},
};

// The reduced shape (kept axes at 1) of a case, and whether axis d is reduced.
Shape kept_of(const AxesCase& c) {
    Shape kept = c.shape;
    for (std::size_t d = 0; d < kept.size(); ++d) {
        bool reduced = c.axes.empty();
        for (int a : c.axes) reduced = reduced || std::size_t(a < 0 ? a + int(kept.size()) : a) == d;
        if (reduced) kept[d] = 1;
    }
    return kept;
}

Var reduce_case(const AxesCase& c, const Var& x, bool mean) {
    if (c.axes.empty()) return mean ? xgrad::mean(x) : xgrad::sum(x);
    return mean ? xgrad::mean(x, c.axes, c.keepdim) : xgrad::sum(x, c.axes, c.keepdim);
}

TEST_CASE("sum and mean over any set of axes: values, shapes and gradients") {
    std::uint64_t seed = 500;
    for (const bool mean : {false, true}) {
        for (const AxesCase& c : kAxesCases) {
            INFO((mean ? "mean" : "sum") << " of " << xgrad::shape_string(c.shape) << " over " << c.axes.size()
                                         << " axes, keepdim " << c.keepdim);
            const Var x = random_var(c.shape, -1.f, 1.f, ++seed);
            const Var y = reduce_case(c, x, mean);
            const Shape kept = kept_of(c);
            Shape expected_shape;
            if (c.keepdim) {
                expected_shape = kept;
            } else {
                for (std::size_t d = 0; d < kept.size(); ++d) {
                    if (kept[d] == c.shape[d] && !(c.axes.empty())) {
                        bool reduced = false;
                        for (int a : c.axes) reduced = reduced || std::size_t(a < 0 ? a + int(kept.size()) : a) == d;
                        if (!reduced) expected_shape.push_back(c.shape[d]);
                    }
                }
            }
            CHECK(xgrad::shape_string(y.shape()) == xgrad::shape_string(expected_shape));
            const double k = mean ? double(xgrad::numel(kept)) / double(x.numel()) : 1.0;
            const Tensor dy = random_tensor(y.shape(), -1.f, 1.f, ++seed);
            backward_with(y, dy);
            Reference value = zeros(kept), grad = zeros(c.shape);
            for (std::size_t e = 0; e < x.numel(); ++e) {
                const std::size_t target = broadcast_source(unravel(e, c.shape), kept);
                value.data()[target] += k * x.value().data()[e];
                grad.data()[e] = k * dy.data()[target];
            }
            value.reshape(y.shape());
            check_matches("value", y.value(), value);
            check_matches("gradient", x.grad(), grad);
        }
    }
}

TEST_CASE("sum and mean pass gradcheck") {
    std::uint64_t seed = 600;
    for (const bool mean : {false, true}) {
        for (const AxesCase& c : kAxesCases) {
            if (xgrad::numel(c.shape) > 100) continue;
            check_gradients(std::string(mean ? "mean" : "sum") + " of " + xgrad::shape_string(c.shape),
                            [&c, mean](const Inputs& in) { return reduce_case(c, in[0], mean); },
                            {random_var(c.shape, -1.f, 1.f, ++seed)});
        }
    }
}

TEST_CASE("mean of nothing is an error, sum of nothing is 0, and axes are checked") {
    const Var empty = Var::zeros({0, 3}, true);
    CHECK_THROWS_WITH_AS(xgrad::mean(empty), doctest::Contains("xgrad::mean"), xgrad::ShapeError);
    CHECK_THROWS_AS(xgrad::mean(empty, {0}), xgrad::ShapeError);
    CHECK(xgrad::mean(empty, {1}).shape() == Shape{0});  // a mean over 3 elements for each of no rows
    CHECK(xgrad::sum(empty).item() == 0.f);
    const Var x = Var::zeros({2, 3}, true);
    CHECK_THROWS_WITH_AS(xgrad::sum(x, {2}), doctest::Contains("axis 2 is out of range for shape (2, 3)"), xgrad::ShapeError);
    CHECK_THROWS_WITH_AS(xgrad::sum(x, {0, -2}), doctest::Contains("listed twice"), xgrad::ShapeError);
}

TEST_CASE("max and min along an axis: values, the arg-max gets the gradient, ties go to the first") {
    // (2, 3, 2) with ties along axis 1 at [0, :, 0] (3 and 3) and a NaN at [1, 1, 1].
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const Tensor values{{{1.f, 0.f}, {3.f, 5.f}, {3.f, -1.f}}, {{-2.f, 4.f}, {7.f, nan}, {0.f, 9.f}}};
    for (const bool largest : {true, false}) {
        for (const bool keepdim : {false, true}) {
            INFO((largest ? "max" : "min") << ", keepdim " << keepdim);
            const Var x(values, true);
            const Var y = largest ? xgrad::max(x, 1, keepdim) : xgrad::min(x, -2, keepdim);
            CHECK(y.shape() == (keepdim ? Shape{2, 1, 2} : Shape{2, 2}));
            const Tensor dy = random_tensor(y.shape(), 0.5f, 1.5f, 7);
            backward_with(y, dy);
            Reference want = zeros({2, 2}), grad = zeros({2, 3, 2});
            for (std::size_t o = 0; o < 2; ++o) {
                for (std::size_t i = 0; i < 2; ++i) {
                    std::size_t best = 0;
                    for (std::size_t j = 1; j < 3; ++j) {
                        const float v = values(o, j, i), b = values(o, best, i);
                        if (std::isnan(b)) break;
                        if (std::isnan(v) || (largest ? v > b : v < b)) best = j;
                    }
                    want(o, i) = values(o, best, i);
                    grad(o, best, i) = dy.data()[o * 2 + i];
                }
            }
            want.reshape(y.shape());
            check_matches("value", y.value(), want);
            check_matches("gradient", x.grad(), grad);
        }
    }
    const Var x(values, true);
    CHECK(std::isnan(xgrad::max(x).item()));
    const Var finite(Tensor{{1.f, 8.f}, {8.f, -3.f}}, true);
    xgrad::backward(xgrad::max(finite) + xgrad::min(finite));
    CHECK(finite.grad() == Tensor{{0.f, 0.5f}, {0.5f, 1.f}});  // over all elements ties share, as in PyTorch
    CHECK_THROWS_AS(xgrad::max(Var::zeros({2, 0}), 1), xgrad::ShapeError);
    CHECK_THROWS_AS(xgrad::max(Var::zeros({2, 3}), 2), xgrad::ShapeError);
}

TEST_CASE("max and min of all elements split the gradient evenly over ties, in both rules, as PyTorch") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    struct Case {
        const char* what;
        Tensor x;
        bool largest;
        Tensor grad;  // for dy = 3
    };
    const Case cases[] = {
        {"max, three ties", Tensor{{2.f, 5.f, 5.f}, {-1.f, 5.f, 0.f}}, true, Tensor{{0.f, 1.f, 1.f}, {0.f, 1.f, 0.f}}},
        {"min, two ties", Tensor{{2.f, -5.f, 5.f}, {-5.f, 5.f, 0.f}}, false, Tensor{{0.f, 1.5f, 0.f}, {1.5f, 0.f, 0.f}}},
        {"max, no tie", Tensor{{2.f, 6.f, 5.f}, {-1.f, 5.f, 0.f}}, true, Tensor{{0.f, 3.f, 0.f}, {0.f, 0.f, 0.f}}},
        {"max, two NaNs: over the NaNs", Tensor{{nan, 6.f, 5.f}, {-1.f, nan, 0.f}}, true,
         Tensor{{1.5f, 0.f, 0.f}, {0.f, 1.5f, 0.f}}},
    };
    for (const Case& c : cases) {
        INFO(c.what);
        const Var x(c.x, true);
        const auto reduce = [&c](const Var& v) { return c.largest ? xgrad::max(v) : xgrad::min(v); };
        xgrad::backward(reduce(x), Tensor(Shape{}, 3.f));  // the kernel rule
        CHECK(x.grad() == c.grad);
        xgrad::GradOptions recorded;
        recorded.create_graph = true;
        recorded.grad_outputs = {Var(Tensor(Shape{}, 3.f), true)};
        const Var g = xgrad::grad(reduce(x), x, recorded);  // the differentiable rule
        CHECK(g.value() == c.grad);
        // It is linear in dy: d sum(g) / d dy = the shares, which add up to 1.
        const Var ddy = xgrad::grad(xgrad::sum(g), recorded.grad_outputs[0]);
        CHECK(ddy.item() == doctest::Approx(1.0));
    }
}

TEST_CASE("max and min pass gradcheck") {
    std::uint64_t seed = 650;
    for (const Shape& s : {Shape{5, 7}, Shape{2, 3, 4}, Shape{6}}) {
        for (int axis = -int(s.size()); axis < int(s.size()); ++axis) {
            // Distinct values 0.1 apart in a random order: no finite difference
            // (steps of 0.01 to 0.035 here) changes an arg-max.
            Var x = random_var(s, 0.f, 1.f, ++seed);
            std::vector<std::size_t> order(x.numel());
            for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
            std::sort(order.begin(), order.end(),
                      [&x](std::size_t i, std::size_t j) { return x.value().data()[i] < x.value().data()[j]; });
            for (std::size_t rank = 0; rank < order.size(); ++rank)
                x.mutable_value().data()[order[rank]] = 0.1f * float(rank) - 1.f;
            check_gradients("max along " + std::to_string(axis) + " of " + xgrad::shape_string(s),
                            [axis](const Inputs& in) { return xgrad::max(in[0], axis); }, {x});
            check_gradients("min along " + std::to_string(axis) + " of " + xgrad::shape_string(s),
                            [axis](const Inputs& in) { return xgrad::min(in[0], axis, true); }, {x});
        }
        Var x = random_var(s, 0.f, 1.f, ++seed);
        for (std::size_t i = 0; i < x.numel(); ++i)
            x.mutable_value().data()[i] = 0.1f * float((i * 11) % x.numel()) - 1.f;  // distinct: 11 is prime to 35, 24, 6
        check_gradients("max of all of " + xgrad::shape_string(s), [](const Inputs& in) { return xgrad::max(in[0]); }, {x});
        check_gradients("min of all of " + xgrad::shape_string(s), [](const Inputs& in) { return xgrad::min(in[0]); }, {x});
    }
}

// ---- softmax ---------------------------------------------------------------------------

TEST_CASE("softmax and log_softmax along any axis: values and gradients in double, stable at +-1000") {
    std::uint64_t seed = 700;
    for (const Shape& s : {Shape{5, 7}, Shape{2, 3, 4}, Shape{6}, Shape{3, 1}}) {
        for (int axis = -int(s.size()); axis < int(s.size()); ++axis) {
            for (const bool log_space : {false, true}) {
                for (const float spread : {3.f, 1000.f}) {
                    INFO((log_space ? "log_softmax" : "softmax")
                         << " along " << axis << " of " << xgrad::shape_string(s) << ", |x| up to " << spread);
                    const Var x = random_var(s, -spread, spread, ++seed);
                    const Var y = log_space ? xgrad::log_softmax(x, axis) : xgrad::softmax(x, axis);
                    const Tensor dy = random_tensor(s, -1.f, 1.f, ++seed);
                    backward_with(y, dy);
                    const std::size_t a = std::size_t(axis < 0 ? axis + int(s.size()) : axis);
                    Reference value = zeros(s), grad = zeros(s);
                    for (std::size_t e = 0; e < x.numel(); ++e) {
                        const Shape at = unravel(e, s);
                        if (at[a] != 0) continue;  // once per lane
                        std::vector<std::size_t> lane;
                        Shape k = at;
                        for (k[a] = 0; k[a] < s[a]; ++k[a]) lane.push_back(ravel(k, s));
                        double m = -HUGE_VAL, total = 0.0, dsum = 0.0, dot = 0.0;
                        for (std::size_t i : lane) m = std::max(m, double(x.value().data()[i]));
                        for (std::size_t i : lane) total += std::exp(double(x.value().data()[i]) - m);
                        for (std::size_t i : lane) {
                            const double lp = double(x.value().data()[i]) - m - std::log(total);
                            value.data()[i] = log_space ? lp : std::exp(lp);
                            dsum += dy.data()[i];
                            dot += dy.data()[i] * std::exp(lp);
                        }
                        for (std::size_t i : lane) {
                            const double p = std::exp(double(x.value().data()[i]) - m - std::log(total));
                            grad.data()[i] = log_space ? dy.data()[i] - p * dsum : p * (dy.data()[i] - dot);
                        }
                    }
                    check_matches("value", y.value(), value, 2e-5);
                    check_matches("gradient", x.grad(), grad, 2e-5);
                }
            }
        }
    }
}

TEST_CASE("softmax and log_softmax pass gradcheck") {
    std::uint64_t seed = 750;
    for (const Shape& s : {Shape{4, 5}, Shape{2, 3, 4}}) {
        for (int axis = 0; axis < int(s.size()); ++axis) {
            check_gradients("softmax along " + std::to_string(axis),
                            [axis](const Inputs& in) { return xgrad::softmax(in[0], axis); }, {random_var(s, -2.f, 2.f, ++seed)});
            check_gradients("log_softmax along " + std::to_string(axis),
                            [axis](const Inputs& in) { return xgrad::log_softmax(in[0], axis); },
                            {random_var(s, -2.f, 2.f, ++seed)});
        }
    }
}

TEST_CASE("softmax and log_softmax over an empty axis give an empty tensor and an empty gradient, as in PyTorch") {
    for (const Shape& s : {Shape{2, 0}, Shape{0, 3}, Shape{2, 0, 3}}) {
        for (int axis = -1; axis < int(s.size()); ++axis) {
            for (const bool log_space : {false, true}) {
                INFO((log_space ? "log_softmax" : "softmax") << " of " << xgrad::shape_string(s) << " along " << axis);
                const Var x = Var::zeros(s, true);
                const Var y = log_space ? xgrad::log_softmax(x, axis) : xgrad::softmax(x, axis);
                CHECK(y.shape() == s);
                xgrad::backward(y, Tensor::from_shape(s));
                CHECK(x.grad().shape() == s);
            }
        }
    }
}

// ---- matmul and linear ---------------------------------------------------------------

// C[b, i, j] = sum_k A[b or 0, i, k] B[b, k, j] for operands reshaped to
// (batches, rows, inner) and (batches, inner, cols); a_batches 1 shares A.
Reference batched_product(const Reference& a, const Reference& b, std::size_t batches, std::size_t rows, std::size_t inner,
                          std::size_t cols, bool shared_a) {
    Reference c = zeros({batches, rows, cols});
    for (std::size_t n = 0; n < batches; ++n)
        for (std::size_t i = 0; i < rows; ++i)
            for (std::size_t k = 0; k < inner; ++k)
                for (std::size_t j = 0; j < cols; ++j)
                    c(n, i, j) += a.data()[((shared_a ? 0 : n) * rows + i) * inner + k] * b.data()[(n * inner + k) * cols + j];
    return c;
}

struct ProductCase {
    Shape a, b, out;
    // The product as (batches, rows, inner) . (batches, inner, cols).
    std::size_t batches, rows, inner, cols;
    bool shared_a;
};

const ProductCase kProductCases[] = {
    {{1, 1}, {1, 1}, {1, 1}, 1, 1, 1, 1, false},
    {{1, 7}, {7, 1}, {1, 1}, 1, 1, 7, 1, false},
    {{5, 1}, {1, 7}, {5, 7}, 1, 5, 1, 7, false},
    {{5, 7}, {7, 3}, {5, 3}, 1, 5, 7, 3, false},
    {{2, 3, 5, 7}, {7, 4}, {2, 3, 5, 4}, 1, 30, 7, 4, false},  // leading dimensions: one GEMM
    {{7}, {7, 3}, {3}, 1, 1, 7, 3, false},
    {{5, 7}, {7}, {5}, 1, 5, 7, 1, false},
    {{2, 3, 7}, {7}, {2, 3}, 1, 6, 7, 1, false},
    {{2, 5, 7}, {2, 7, 3}, {2, 5, 3}, 2, 5, 7, 3, false},  // a GEMM per batch
    {{5, 7}, {2, 3, 7, 4}, {2, 3, 5, 4}, 6, 5, 7, 4, true},
};

TEST_CASE("matmul: values and gradients (da = dy b^T, db = a^T dy) for every case of NumPy's rules") {
    std::uint64_t seed = 800;
    for (const ProductCase& p : kProductCases) {
        INFO(xgrad::shape_string(p.a) << " . " << xgrad::shape_string(p.b));
        const Var a = random_var(p.a, -1.f, 1.f, ++seed), b = random_var(p.b, -1.f, 1.f, ++seed);
        const Var y = xgrad::matmul(a, b);
        REQUIRE(y.shape() == p.out);
        const Tensor dy = random_tensor(p.out, -1.f, 1.f, ++seed);
        backward_with(y, dy);
        const Reference A = to_double(a.value()), B = to_double(b.value()), DY = to_double(dy);
        Reference value = batched_product(A, B, p.batches, p.rows, p.inner, p.cols, p.shared_a);
        Reference da = zeros({p.shared_a ? 1 : p.batches, p.rows, p.inner}), db = zeros({p.batches, p.inner, p.cols});
        for (std::size_t n = 0; n < p.batches; ++n)
            for (std::size_t i = 0; i < p.rows; ++i)
                for (std::size_t k = 0; k < p.inner; ++k)
                    for (std::size_t j = 0; j < p.cols; ++j) {
                        const double d = DY.data()[(n * p.rows + i) * p.cols + j];
                        da(p.shared_a ? 0 : n, i, k) += d * B.data()[(n * p.inner + k) * p.cols + j];
                        db(n, k, j) += d * A.data()[((p.shared_a ? 0 : n) * p.rows + i) * p.inner + k];
                    }
        value.reshape(p.out);
        da.reshape(p.a);
        db.reshape(p.b);
        check_matches("value", y.value(), value);
        check_matches("gradient of a", a.grad(), da);
        check_matches("gradient of b", b.grad(), db);
    }
}

TEST_CASE("matmul over an inner dimension of 0: zeros forward, empty gradients backward, as in PyTorch") {
    const std::pair<Shape, Shape> cases[] = {{{3, 0}, {0, 4}}, {{3, 0}, {0}}, {{2, 3, 0}, {2, 0, 4}}, {{3, 0}, {2, 0, 4}}};
    for (const auto& shapes : cases) {
        const Shape &sa = shapes.first, &sb = shapes.second;  // clang cannot capture a structured binding
        INFO(xgrad::shape_string(sa) << " . " << xgrad::shape_string(sb));
        const Var a = Var::zeros(sa, true), b = Var::zeros(sb, true);
        const Var y = xgrad::matmul(a, b);
        CHECK(xt::all(xt::equal(y.value(), 0.f)));
        xgrad::backward(xgrad::sum(y));
        CHECK(a.grad().shape() == sa);
        CHECK(b.grad().shape() == sb);
    }
}

TEST_CASE("linear on (..., in) inputs, with and without a bias: values and gradients") {
    std::uint64_t seed = 900;
    for (const Shape& xs : {Shape{5, 7}, Shape{1, 7}, Shape{2, 3, 7}, Shape{7}}) {
        for (const bool bias : {true, false}) {
            INFO("x " << xgrad::shape_string(xs) << (bias ? " with" : " without") << " bias");
            const Var x = random_var(xs, -1.f, 1.f, ++seed), w = random_var({3, 7}, -1.f, 1.f, ++seed);
            const Var b = bias ? random_var({3}, -1.f, 1.f, ++seed) : Var();
            const Var y = xgrad::linear(x, w, b);
            Shape out(xs.begin(), xs.end() - 1);
            out.push_back(3);
            REQUIRE(y.shape() == out);
            const Tensor dy = random_tensor(out, -1.f, 1.f, ++seed);
            backward_with(y, dy);
            const std::size_t rows = x.numel() / 7;
            Reference value = zeros({rows, 3}), dx = zeros({rows, 7}), dw = zeros({3, 7}), db = zeros({3});
            for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t c = 0; c < 3; ++c) {
                    const double d = dy.data()[r * 3 + c];
                    value(r, c) = bias ? b.value()(c) : 0.0;
                    db(c) += d;
                    for (std::size_t k = 0; k < 7; ++k) {
                        value(r, c) += double(x.value().data()[r * 7 + k]) * w.value()(c, k);
                        dx(r, k) += d * w.value()(c, k);
                        dw(c, k) += d * x.value().data()[r * 7 + k];
                    }
                }
            value.reshape(out);
            dx.reshape(xs);
            check_matches("value", y.value(), value);
            check_matches("gradient of x", x.grad(), dx);
            check_matches("gradient of w", w.grad(), dw);
            if (bias) check_matches("gradient of b", b.grad(), db);
        }
    }
}

TEST_CASE("matmul and linear pass gradcheck") {
    std::uint64_t seed = 950;
    for (const ProductCase& p : kProductCases) {
        check_gradients("matmul " + xgrad::shape_string(p.a) + " . " + xgrad::shape_string(p.b),
                        [](const Inputs& in) { return xgrad::matmul(in[0], in[1]); },
                        {random_var(p.a, -1.f, 1.f, ++seed), random_var(p.b, -1.f, 1.f, ++seed)});
    }
    check_gradients("linear (2, 3, 4) . (5, 4)^T + (5)", [](const Inputs& in) { return xgrad::linear(in[0], in[1], in[2]); },
                    {random_var({2, 3, 4}, -1.f, 1.f, 1), random_var({5, 4}, -1.f, 1.f, 2), random_var({5}, -1.f, 1.f, 3)});
    check_gradients("linear without bias", [](const Inputs& in) { return xgrad::linear(in[0], in[1], Var()); },
                    {random_var({3, 4}, -1.f, 1.f, 4), random_var({2, 4}, -1.f, 1.f, 5)});
}

// ---- losses ------------------------------------------------------------------------------

// Runs bce_with_logits(logits, targets) (or against the float `target` when
// targets is empty) and compares loss, dlogits = dy (sigmoid(x) - t) / n and
// dtargets = -dy x / n with double references.
void check_bce_closed_form(const Var& logits, const Var& targets, float target, float dy) {
    const bool var_targets = targets.defined();
    const Var loss = var_targets ? xgrad::bce_with_logits(logits, targets) : xgrad::bce_with_logits(logits, target);
    REQUIRE(loss.shape() == Shape{});
    backward_with(loss, Tensor(Shape{}, dy));
    const double n = double(logits.numel());
    double total = 0.0;
    Reference dx = zeros(logits.shape()), dt = zeros(logits.shape());
    for (std::size_t i = 0; i < logits.numel(); ++i) {
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

TEST_CASE("bce_with_logits: loss and gradients, Var and float targets, any rank") {
    std::uint64_t seed = 1000;
    for (const Shape& s : kShapes) {
        INFO("logits " << xgrad::shape_string(s));
        seed += 2;
        check_bce_closed_form(random_var(s, -3.f, 3.f, seed), random_var(s, 0.f, 1.f, seed + 1), 0.f, 0.7f);
        for (float target : {0.f, 1.f, 0.3f}) {
            INFO("target " << target);
            check_bce_closed_form(random_var(s, -3.f, 3.f, ++seed), Var(), target, -1.3f);
        }
    }
}

TEST_CASE("mse_loss and l1_loss: loss and both gradients") {
    std::uint64_t seed = 1050;
    for (const Shape& s : kShapes) {
        for (const bool l1 : {false, true}) {
            INFO((l1 ? "l1_loss" : "mse_loss") << " on " << xgrad::shape_string(s));
            const Var p = random_var(s, -2.f, 2.f, ++seed), t = random_var(s, -2.f, 2.f, ++seed);
            const Var loss = l1 ? xgrad::l1_loss(p, t) : xgrad::mse_loss(p, t);
            REQUIRE(loss.shape() == Shape{});
            xgrad::backward(loss);
            const double n = double(p.numel());
            double total = 0.0;
            Reference dp = zeros(s), dt = zeros(s);
            for (std::size_t i = 0; i < p.numel(); ++i) {
                const double d = double(p.value().data()[i]) - t.value().data()[i];
                total += l1 ? std::abs(d) : d * d;
                dp.data()[i] = (l1 ? (d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0) : 2.0 * d) / n;
                dt.data()[i] = -dp.data()[i];
            }
            CHECK(loss.item() == doctest::Approx(total / n));
            check_matches("gradient of the prediction", p.grad(), dp);
            check_matches("gradient of the target", t.grad(), dt);
            check_gradients(l1 ? "l1_loss" : "mse_loss",
                            [l1](const Inputs& in) { return l1 ? xgrad::l1_loss(in[0], in[1]) : xgrad::mse_loss(in[0], in[1]); },
                            {random_var(s, -2.f, 2.f, ++seed), random_var(s, 2.5f, 3.f, ++seed)});
        }
    }
}

TEST_CASE("losses of nothing are errors, not NaN") {
    const Var empty = Var::zeros({0, 4}, true);
    CHECK_THROWS_WITH_AS(xgrad::bce_with_logits(empty, 1.f), doctest::Contains("no elements"), xgrad::ShapeError);
    CHECK_THROWS_AS(xgrad::bce_with_logits(empty, Var::zeros({0, 4})), xgrad::ShapeError);
    CHECK_THROWS_AS(xgrad::mse_loss(empty, Var::zeros({0, 4})), xgrad::ShapeError);
    CHECK_THROWS_AS(xgrad::l1_loss(empty, Var::zeros({0, 4})), xgrad::ShapeError);
    CHECK_THROWS_AS(xgrad::softmax_cross_entropy(empty, Var::zeros({0, 4})), xgrad::ShapeError);
}

TEST_CASE("bce_with_logits passes gradcheck") {
    std::uint64_t seed = 1100;
    for (const Shape& s : kShapes) {
        const std::string shape = xgrad::shape_string(s);
        check_gradients("bce_with_logits, Var targets, " + shape,
                        [](const Inputs& in) { return xgrad::bce_with_logits(in[0], in[1]); },
                        {random_var(s, -3.f, 3.f, ++seed), random_var(s, 0.f, 1.f, ++seed)});
        check_gradients("bce_with_logits, target 0.3, " + shape,
                        [](const Inputs& in) { return xgrad::bce_with_logits(in[0], 0.3f); }, {random_var(s, -3.f, 3.f, ++seed)});
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
            const Var x = Var::full({n}, l.logit, true);
            const Var t = Var::full({n}, l.target, var_targets);
            const Var loss = var_targets ? xgrad::bce_with_logits(x, t) : xgrad::bce_with_logits(x, l.target);
            xgrad::backward(loss);
            CHECK(loss.item() == doctest::Approx(l.loss));
            for (std::size_t c = 0; c < n; ++c) {
                CHECK(x.grad()(c) == doctest::Approx(l.dlogit / double(n)));
                if (var_targets) CHECK(t.grad()(c) == doctest::Approx(-double(l.logit) / double(n)));
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
        {"x + x - x", {{2, 3, 4}}, [](const Inputs& in) { return in[0] + in[0] - in[0]; }},
        {"exp(x) * exp(x), one node",
         {{5, 7}},
         [](const Inputs& in) {
             const Var h = xgrad::exp(in[0]);
             return h * h;
         }},
        {"a broadcast intermediate used twice",
         {{2, 5, 7}, {7}},
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
             return xgrad::mean(h, {0}, true) * xgrad::sum(h, {1}, true) - xgrad::mean(h);
         }},
        {"a normalisation built from ops",
         {{4, 6}},
         [](const Inputs& in) {
             const Var centred = in[0] - xgrad::mean(in[0], {1}, true);
             return centred / xgrad::sqrt(xgrad::mean(centred * centred, {1}, true) + 1e-3f);
         }},
        {"a two-layer network's loss",
         {{6, 4}, {5, 4}, {5}, {1, 5}, {1}, {6, 1}},
         [](const Inputs& in) {
             const Var h = xgrad::leaky_relu(xgrad::linear(in[0], in[1], in[2]), 0.2f);
             return xgrad::bce_with_logits(xgrad::linear(h, in[3], in[4]), xgrad::sigmoid(in[5]));
         }},
    };
    std::uint64_t seed = 1200;
    for (const Case& c : cases) {
        Inputs inputs;
        for (const Shape& s : c.shapes) inputs.push_back(random_var(s, -1.f, 1.f, ++seed));
        check_gradients(c.name, c.f, inputs);
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
        {"xgrad::matmul",
         [] {
             xgrad::matmul(Var::full({2, 3}, 1.f, true), Var::full({4, 5}, 1.f));
         },
         "(2, 3)", "(4, 5)"},
        {"xgrad::matmul",
         [] {
             xgrad::matmul(Var::full({3, 2}, 1.f), Var::full({3, 2}, 1.f, true));
         },
         "(3, 2)", "(3, 2)"},
        {"xgrad::matmul",
         [] {
             xgrad::matmul(Var::full({2, 3, 4}, 1.f), Var::full({3, 4, 5}, 1.f, true));
         },
         "(2, 3, 4)", "(3, 4, 5)"},
        {"xgrad::linear",
         [] {
             xgrad::linear(Var::full({2, 3}, 1.f), Var::full({5, 4}, 1.f, true), Var::full({5}, 1.f));
         },
         "(2, 3)", "(5, 4)"},
        {"xgrad::linear",
         [] {
             xgrad::linear(Var::full({2, 3}, 1.f), Var::full({5, 3}, 1.f, true), Var::full({4}, 1.f));
         },
         "(5, 3)", "(4)"},
        {"xgrad::linear",
         [] {
             xgrad::linear(Var::full({2, 3}, 1.f), Var::full({5, 3}, 1.f, true), Var::full({1, 5}, 1.f));
         },
         "(5, 3)", "(1, 5)"},
        {"xgrad::add",
         [] {
             xgrad::add(Var::full({2, 3}, 1.f, true), Var::full({3, 2}, 1.f));
         },
         "(2, 3)", "(3, 2)"},
        {"xgrad::add",
         [] {
             Var::full({2, 3}, 1.f) + Var::full({2, 2}, 1.f, true);
         },
         "(2, 3)", "(2, 2)"},
        {"xgrad::sub",
         [] {
             xgrad::sub(Var::full({4, 3}, 1.f, true), Var::full({2, 3}, 1.f));
         },
         "(4, 3)", "(2, 3)"},
        {"xgrad::mul",
         [] {
             xgrad::mul(Var::full({1, 3}, 1.f), Var::full({2, 4}, 1.f, true));
         },
         "(1, 3)", "(2, 4)"},
        {"xgrad::div",
         [] {
             xgrad::div(Var::full({2, 3, 4}, 1.f), Var::full({3, 5}, 1.f, true));
         },
         "(2, 3, 4)", "(3, 5)"},
        {"xgrad::maximum", [] { xgrad::maximum(Var::full({3}, 1.f), Var::full({4}, 1.f)); }, "(3)", "(4)"},
        {"xgrad::bce_with_logits",
         [] {
             xgrad::bce_with_logits(Var::full({2, 3}, 1.f, true), Var::full({3, 2}, 0.f));
         },
         "(2, 3)", "(3, 2)"},
        {"xgrad::mse_loss",
         [] {
             xgrad::mse_loss(Var::full({4}, 1.f, true), Var::full({4, 1}, 0.f));
         },
         "(4)", "(4, 1)"},
        // The op-authoring API guards custom ops the same way: gemm before
        // BLAS reads or writes out of bounds ...
        {"xgrad::my_product",
         [] {
             Tensor a(Shape{2, 3}, 1.f), b(Shape{4, 5}, 1.f), c(Shape{2, 5}, 0.f);
             xgrad::gemm("my_product", xgrad::as_matrix(a), false, xgrad::as_matrix(b), false, xgrad::as_matrix(c));
         },
         "(2, 3)", "(4, 5)"},
        {"xgrad::my_product",
         [] {
             Tensor a(Shape{2, 3}, 1.f), b(Shape{3, 5}, 1.f), c(Shape{2, 4}, 0.f);
             xgrad::gemm("my_product", xgrad::as_matrix(a), false, xgrad::as_matrix(b), false, xgrad::as_matrix(c));
         },
         "(3, 5)", "(2, 4)"},
        // ... and accumulate before a rule's wrongly shaped gradient lands.
        {"'my_op'",
         [] {
             const Var x = Var::full({2, 3}, 1.f, true);
             xgrad::Op op("my_op", {x}, x.shape());
             op.out().fill(1.f);
             const Var y = op.finish([](xgrad::BackwardContext& ctx) { ctx.accumulate(0, xt::transpose(ctx.grad_output())); });
             xgrad::backward(xgrad::sum(y));
         },
         "(3, 2)", "(2, 3)"},
        {"my_op",
         [] {
             const Var x = Var::full({2, 3}, 1.f, true);
             xgrad::Op op("my_op", {x}, Shape{4});
             op.out().fill(1.f);
             const Var y = op.finish([](xgrad::BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output()); });
             xgrad::backward(xgrad::sum(y));
         },
         "(4)", "(2, 3)"},
    };
    for (const Case& c : cases) {
        INFO(std::string(c.op) << " with " << c.first << " and " << c.second);
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
        {"batched matmul", {{2, 5, 7}, {2, 7, 3}}, [](const Inputs& in) { return xgrad::matmul(in[0], in[1]); }},
        {"linear", {{5, 7}, {3, 7}, {3}}, [](const Inputs& in) { return xgrad::linear(in[0], in[1], in[2]); }},
        {"add", {{5, 7}, {7}}, [](const Inputs& in) { return xgrad::add(in[0], in[1]); }},
        {"sub", {{5, 1}, {5, 7}}, [](const Inputs& in) { return xgrad::sub(in[0], in[1]); }},
        {"mul", {{1, 7}, {5, 1}}, [](const Inputs& in) { return xgrad::mul(in[0], in[1]); }},
        {"div", {{5, 7}, {5, 7}}, [](const Inputs& in) { return xgrad::div(in[0], in[1] + 1.f); }},
        {"maximum", {{2, 3}, {3}}, [](const Inputs& in) { return xgrad::maximum(in[0], in[1]); }},
        {"bce_with_logits", {{5, 7}, {5, 7}}, [](const Inputs& in) { return xgrad::bce_with_logits(in[0], in[1]); }},
        {"mse_loss", {{5, 7}, {5, 7}}, [](const Inputs& in) { return xgrad::mse_loss(in[0], in[1]); }},
    };
    std::uint64_t seed = 1300;
    for (const Case& c : cases) {
        seed += 10;
        // Values in [0, 1) are valid for every operand, targets included.
        auto make_inputs = [&] {
            Inputs in;
            for (std::size_t k = 0; k < c.shapes.size(); ++k) in.push_back(random_var(c.shapes[k], 0.f, 1.f, seed + k));
            return in;
        };
        const Inputs all = make_inputs();
        const Var y = c.f(all);
        const Tensor dy = random_tensor(y.shape(), -1.f, 1.f, seed + 9);
        backward_with(y, dy);

        for (std::size_t frozen = 0; frozen < c.shapes.size(); ++frozen) {
            INFO(std::string(c.name) << " with input " << frozen << " frozen");
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
