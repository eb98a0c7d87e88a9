// Pooling, upsampling and the normalisations, each against a direct loop in
// double written from its definition, and by gradcheck: several strides and
// paddings, odd sizes, windows larger than the stride, a batch of one.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/ops.hpp>

#include "op_reference.hpp"

namespace {

using namespace test;
using xgrad::Shape;
using xgrad::Size2;
using xgrad::Tensor;
using xgrad::Var;
using Inputs = std::vector<Var>;

struct PoolCase {
    Shape x;
    Size2 kernel, stride, padding;
};

const PoolCase kPoolCases[] = {
    {{2, 3, 6, 6}, 2, 2, 0},            // the common 2x2 pooling
    {{1, 2, 7, 5}, 3, 2, 1},            // odd sizes, a window larger than the stride, padding
    {{2, 1, 5, 5}, 3, 1, 0},            // overlapping windows
    {{1, 1, 4, 7}, {2, 3}, {1, 2}, 0},  // rectangular kernel and stride
    {{1, 2, 3, 3}, 3, 0, 1},            // stride 0: the kernel size
};

// Window (i, j) of plane p of x: the indices inside the input (padding skipped).
std::vector<std::size_t> window(const PoolCase& c, std::size_t p, std::size_t i, std::size_t j) {
    const Size2 stride{c.stride.h ? c.stride.h : c.kernel.h, c.stride.w ? c.stride.w : c.kernel.w};
    std::vector<std::size_t> at;
    for (std::size_t a = 0; a < c.kernel.h; ++a) {
        for (std::size_t b = 0; b < c.kernel.w; ++b) {
            const long r = long(i * stride.h + a) - long(c.padding.h), q = long(j * stride.w + b) - long(c.padding.w);
            if (r >= 0 && q >= 0 && r < long(c.x[2]) && q < long(c.x[3]))
                at.push_back((p * c.x[2] + std::size_t(r)) * c.x[3] + std::size_t(q));
        }
    }
    return at;
}

Shape pooled(const PoolCase& c) {
    const Size2 stride{c.stride.h ? c.stride.h : c.kernel.h, c.stride.w ? c.stride.w : c.kernel.w};
    return {c.x[0], c.x[1], (c.x[2] + 2 * c.padding.h - c.kernel.h) / stride.h + 1,
            (c.x[3] + 2 * c.padding.w - c.kernel.w) / stride.w + 1};
}

// Distinct values 0.1 apart in a random order: no tie, and no finite
// difference of gradcheck changes an arg-max.
Var distinct_var(const Shape& s, std::uint64_t seed) {
    Var x = random_var(s, 0.f, 1.f, seed);
    std::vector<std::size_t> order(x.numel());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&x](std::size_t a, std::size_t b) { return x.value().data()[a] < x.value().data()[b]; });
    for (std::size_t r = 0; r < order.size(); ++r) x.mutable_value().data()[order[r]] = 0.1f * float(r) - 3.f;
    return x;
}

// Steps of at most 0.02 (|x| < 20) against values 0.1 apart.
xgrad::GradcheckOptions small_steps() {
    xgrad::GradcheckOptions o;
    o.step = 1e-3;
    return o;
}

TEST_CASE("max_pool2d and avg_pool2d against direct loops") {
    std::uint64_t seed = 10;
    for (const PoolCase& c : kPoolCases) {
        for (const bool average : {false, true}) {
            INFO((average ? "avg_pool2d" : "max_pool2d")
                 << " of " << xgrad::shape_string(c.x) << ", kernel " << c.kernel.h << "x" << c.kernel.w << ", stride "
                 << c.stride.h << "x" << c.stride.w << ", padding " << c.padding.h);
            const Var x = distinct_var(c.x, ++seed);
            const Var y = average ? xgrad::avg_pool2d(x, c.kernel, c.stride, c.padding)
                                  : xgrad::max_pool2d(x, c.kernel, c.stride, c.padding);
            const Shape out = pooled(c);
            REQUIRE(y.shape() == out);
            const Tensor dy = random_tensor(out, -1.f, 1.f, ++seed);
            backward_with(y, dy);
            Reference value = zeros(out), grad = zeros(c.x);
            for (std::size_t e = 0; e < xgrad::numel(out); ++e) {
                const Shape at = unravel(e, out);
                const std::vector<std::size_t> w = window(c, at[0] * c.x[1] + at[1], at[2], at[3]);
                if (average) {
                    for (std::size_t k : w) value.data()[e] += x.value().data()[k] / double(c.kernel.h * c.kernel.w);
                    for (std::size_t k : w) grad.data()[k] += dy.data()[e] / double(c.kernel.h * c.kernel.w);
                } else {
                    std::size_t best = w[0];
                    for (std::size_t k : w) best = x.value().data()[k] > x.value().data()[best] ? k : best;
                    value.data()[e] = x.value().data()[best];
                    grad.data()[best] += dy.data()[e];
                }
            }
            check_matches("value", y.value(), value);
            check_matches("gradient", x.grad(), grad);
            check_gradients(
                average ? "avg_pool2d" : "max_pool2d",
                [&c, average](const Inputs& in) {
                    return average ? xgrad::avg_pool2d(in[0], c.kernel, c.stride, c.padding)
                                   : xgrad::max_pool2d(in[0], c.kernel, c.stride, c.padding);
                },
                {distinct_var(c.x, ++seed)}, average ? xgrad::GradcheckOptions{} : small_steps());
        }
    }
}

TEST_CASE("max_pool2d: ties go to the first element of the window, NaN wins") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    Tensor x{1.f, 5.f, 5.f, 2.f, 0.f, nan, 3.f, 4.f};
    x.reshape({1, 2, 2, 2});
    const Var v(x, true);
    const Var y = xgrad::max_pool2d(v, 2);
    CHECK(y.value()(0, 0, 0, 0) == 5.f);
    CHECK(std::isnan(y.value()(0, 1, 0, 0)));
    xgrad::backward(xgrad::sum(xgrad::narrow(y, 1, 0, 1)));
    CHECK(v.grad()(0, 0, 0, 1) == 1.f);
    CHECK(v.grad()(0, 0, 1, 0) == 0.f);
}

TEST_CASE("upsample_nearest2d repeats pixels; its gradient sums each block") {
    const Var x = random_var({2, 3, 2, 3}, -1.f, 1.f, 30);
    const Var y = xgrad::upsample_nearest2d(x, {2, 3});
    REQUIRE(y.shape() == Shape{2, 3, 4, 9});
    const Tensor dy = random_tensor(y.shape(), -1.f, 1.f, 31);
    backward_with(y, dy);
    Reference value = zeros(y.shape()), grad = zeros(x.shape());
    for (std::size_t e = 0; e < y.numel(); ++e) {
        const Shape at = unravel(e, y.shape());
        const std::size_t k = ravel({at[0], at[1], at[2] / 2, at[3] / 3}, x.shape());
        value.data()[e] = x.value().data()[k];
        grad.data()[k] += dy.data()[e];
    }
    check_matches("value", y.value(), value);
    check_matches("gradient", x.grad(), grad);
    check_gradients("upsample_nearest2d", [](const Inputs& in) { return xgrad::upsample_nearest2d(in[0], 2); },
                    {random_var({1, 2, 3, 2}, -1.f, 1.f, 32)});
}

TEST_CASE("pooling rejects what it cannot pool, naming the op") {
    const Var x = Var::zeros({1, 1, 4, 4});
    CHECK_THROWS_WITH_AS(xgrad::max_pool2d(Var::zeros({4, 4}), 2),
                         doctest::Contains("xgrad::max_pool2d: expected an (N, C, H, W)"), xgrad::ShapeError);
    CHECK_THROWS_WITH_AS(xgrad::avg_pool2d(x, 5), doctest::Contains("larger than the padded input"), xgrad::ShapeError);
    CHECK_THROWS_WITH_AS(xgrad::max_pool2d(x, 2, 1, 2), doctest::Contains("more than half the kernel"), xgrad::ShapeError);
    CHECK_THROWS_AS(xgrad::upsample_nearest2d(x, 0), xgrad::ShapeError);
}

// ---- normalisations ----------------------------------------------------------------

// Per channel c of x (N, C, ...): the indices of its elements.
std::vector<std::size_t> channel(const Shape& s, std::size_t c) {
    std::vector<std::size_t> at;
    for (std::size_t e = 0; e < xgrad::numel(s); ++e) {
        if (unravel(e, s)[1] == c) at.push_back(e);
    }
    return at;
}

TEST_CASE("batch_norm in training mode: values, the exact batch-statistics gradient, running statistics") {
    std::uint64_t seed = 50;
    // Also more channels than the kernel sums at a time (64), and runs longer
    // than one stretch of its partial sums (512).
    for (const Shape& s :
         {Shape{4, 3}, Shape{2, 3, 5}, Shape{3, 2, 3, 4}, Shape{1, 2, 3, 3}, Shape{3, 70, 2}, Shape{2, 2, 600}}) {
        for (const bool affine : {true, false}) {
            INFO(xgrad::shape_string(s) << (affine ? " affine" : ""));
            const std::size_t channels = s[1];
            const Var x = random_var(s, -2.f, 3.f, ++seed);
            const Var w = affine ? random_var({channels}, 0.5f, 1.5f, ++seed) : Var();
            const Var b = affine ? random_var({channels}, -1.f, 1.f, ++seed) : Var();
            const Var rm = random_var({channels}, -1.f, 1.f, ++seed, false),
                      rv = random_var({channels}, 0.5f, 2.f, ++seed, false);
            const Tensor rm0 = rm.value(), rv0 = rv.value();
            const Var y = xgrad::batch_norm(x, w, b, rm, rv, {true, 0.1f, 1e-5f});
            const Tensor dy = random_tensor(s, -1.f, 1.f, ++seed);
            backward_with(y, dy);
            Reference value = zeros(s), dx = zeros(s), dw = zeros({channels}), db = zeros({channels});
            for (std::size_t c = 0; c < channels; ++c) {
                const std::vector<std::size_t> at = channel(s, c);
                const double m = double(at.size());
                double mu = 0, var = 0, sum_dy = 0, sum_dy_xhat = 0;
                for (std::size_t k : at) mu += x.value().data()[k] / m;
                for (std::size_t k : at) var += (x.value().data()[k] - mu) * (x.value().data()[k] - mu) / m;
                const double inv = 1.0 / std::sqrt(var + 1e-5), g = affine ? w.value()(c) : 1.0;
                for (std::size_t k : at) {
                    const double xhat = (x.value().data()[k] - mu) * inv;
                    value.data()[k] = xhat * g + (affine ? b.value()(c) : 0.0);
                    sum_dy += dy.data()[k];
                    sum_dy_xhat += dy.data()[k] * xhat;
                }
                for (std::size_t k : at) {
                    const double xhat = (x.value().data()[k] - mu) * inv;
                    dx.data()[k] = g * inv * (dy.data()[k] - sum_dy / m - xhat * sum_dy_xhat / m);
                }
                dw(c) = sum_dy_xhat;
                db(c) = sum_dy;
                CHECK(rm.value()(c) == doctest::Approx(0.9 * rm0(c) + 0.1 * mu));
                CHECK(rv.value()(c) == doctest::Approx(0.9 * rv0(c) + 0.1 * var * m / (m - 1)));
            }
            check_matches("value", y.value(), value);
            check_matches("gradient of x", x.grad(), dx, 2e-5);
            if (affine) {
                check_matches("gradient of weight", w.grad(), dw);
                check_matches("gradient of bias", b.grad(), db);
            }
        }
    }
}

// A mean 10^4 times the spread must cost the variance no digits (as the sum
// of squares minus the squared mean would: the statistics take two passes),
// nor a first image far from the rest (as one pass around a shift taken
// from it would).
TEST_CASE("batch_norm's batch statistics keep their digits for a large mean and an unrepresentative first image") {
    for (const float first_offset : {0.f, 40.f}) {
        CAPTURE(first_offset);
        Var x = random_var({8, 2, 3, 3}, -1.f, 1.f, 95);
        for (std::size_t k = 0; k < x.numel(); ++k) {
            const bool first_image = k < 2 * 9;
            x.mutable_value().data()[k] += 1e4f + (first_image ? first_offset : 0.f);
        }
        const Var rm = Var::zeros({2}), rv = Var::zeros({2});
        xgrad::BatchNormOptions options;
        options.momentum = 1.f;  // the running statistics become the batch's
        xgrad::batch_norm(x, Var(), Var(), rm, rv, options);
        for (std::size_t c = 0; c < 2; ++c) {
            const std::vector<std::size_t> at = channel(x.shape(), c);
            double mu = 0, var = 0;
            for (std::size_t k : at) mu += double(x.value().data()[k]) / double(at.size());
            for (std::size_t k : at) var += (x.value().data()[k] - mu) * (x.value().data()[k] - mu) / double(at.size() - 1);
            CHECK(rm.value()(c) == doctest::Approx(mu).epsilon(1e-7));
            CHECK(rv.value()(c) == doctest::Approx(var).epsilon(1e-5));
        }
    }
}

TEST_CASE("batch_norm in evaluation mode uses the running statistics, copied") {
    const Var x = random_var({3, 2, 2, 2}, -1.f, 1.f, 60);
    const Var w = random_var({2}, 0.5f, 1.5f, 61), b = random_var({2}, -1.f, 1.f, 62);
    Var rm(Tensor{0.3f, -0.2f}), rv(Tensor{1.5f, 0.7f});
    const Var y = xgrad::batch_norm(x, w, b, rm, rv, {false});
    rm.mutable_value()(0) = 100.f;  // a later update must not reach the recorded graph
    const Tensor dy = random_tensor(x.shape(), -1.f, 1.f, 63);
    backward_with(y, dy);
    Reference value = zeros(x.shape()), dx = zeros(x.shape());
    const double mean[] = {0.3f, -0.2f}, var[] = {1.5f, 0.7f};
    for (std::size_t e = 0; e < x.numel(); ++e) {
        const std::size_t c = unravel(e, x.shape())[1];
        const double inv = 1.0 / std::sqrt(var[c] + 1e-5);
        value.data()[e] = (x.value().data()[e] - mean[c]) * inv * w.value()(c) + b.value()(c);
        dx.data()[e] = dy.data()[e] * w.value()(c) * inv;
    }
    check_matches("value", y.value(), value);
    check_matches("gradient of x", x.grad(), dx);
    CHECK_THROWS_WITH_AS(xgrad::batch_norm(x, w, b, Var(), Var(), {false}), doctest::Contains("running mean and variance"),
                         xgrad::ShapeError);
}

TEST_CASE("batch_norm and layer_norm pass gradcheck") {
    std::uint64_t seed = 70;
    for (const bool training : {true, false}) {
        const Var rm = random_var({3}, -1.f, 1.f, ++seed, false), rv = random_var({3}, 0.5f, 2.f, ++seed, false);
        // The running statistics are updated by every forward pass of gradcheck: held fixed copies keep f deterministic.
        check_gradients(std::string("batch_norm, training ") + (training ? "on" : "off"),
                        [&](const Inputs& in) {
                            const Var m(rm.value()), v(rv.value());
                            return xgrad::batch_norm(in[0], in[1], in[2], m, v, {training});
                        },
                        {random_var({4, 3, 2, 2}, -2.f, 2.f, ++seed), random_var({3}, 0.5f, 1.5f, ++seed),
                         random_var({3}, -1.f, 1.f, ++seed)});
    }
    check_gradients("batch_norm of (N, C)", [](const Inputs& in) { return xgrad::batch_norm(in[0], Var(), Var(), Var(), Var()); },
                    {random_var({5, 2}, -2.f, 2.f, ++seed)});
    // Training batch_norm's input gradient is an op of its own (x, dy, w):
    // its first derivative is checked above; here its second and third, as
    // the derivatives of batch_norm's gradient.
    for (const bool affine : {true, false}) {
        check_gradients(std::string("batch_norm's input gradient, ") + (affine ? "affine" : "without affine"),
                        [affine](const Inputs& in) {
                            const Var w = affine ? in[2] : Var(), b = affine ? Var::zeros({3}) : Var();
                            xgrad::GradOptions recorded;
                            recorded.create_graph = true;
                            recorded.grad_outputs = {in[1]};
                            return xgrad::grad(xgrad::batch_norm(in[0], w, b, Var(), Var()), in[0], recorded);
                        },
                        {random_var({4, 3, 2, 2}, -2.f, 2.f, ++seed), random_var({4, 3, 2, 2}, -1.f, 1.f, ++seed),
                         random_var({3}, 0.5f, 1.5f, ++seed, affine)});
    }
    check_gradients("layer_norm over 2 axes", [](const Inputs& in) { return xgrad::layer_norm(in[0], 2, in[1], in[2]); },
                    {random_var({3, 2, 4}, -2.f, 2.f, ++seed), random_var({2, 4}, 0.5f, 1.5f, ++seed),
                     random_var({2, 4}, -1.f, 1.f, ++seed)});
    check_gradients("layer_norm without affine", [](const Inputs& in) { return xgrad::layer_norm(in[0], 1, Var(), Var()); },
                    {random_var({4, 5}, -2.f, 2.f, ++seed)});
}

// The fused rectifier against batch_norm followed by relu / leaky_relu: the
// same values, and the same gradients of x, weight and bias, in training
// and evaluation mode, with and without the affine part.
TEST_CASE("batch_norm with a rectifier is batch_norm followed by relu or leaky_relu") {
    std::uint64_t seed = 90;
    // 24 values per run, and 600: the rectifier's gradient in two pieces.
    for (const Shape& s : {Shape{5, 3, 4, 6}, Shape{2, 3, 24, 25}}) {
        for (const float slope : {0.f, 0.2f}) {
            for (const bool training : {true, false}) {
                for (const bool affine : {true, false}) {
                    CAPTURE(slope);
                    CAPTURE(training);
                    CAPTURE(affine);
                    const Var x = random_var(s, -2.f, 2.f, ++seed);
                    const Var w = affine ? random_var({3}, -1.5f, 1.5f, ++seed) : Var();  // negative weights flip the mask
                    const Var b = affine ? random_var({3}, -1.f, 1.f, ++seed) : Var();
                    const Var rm = random_var({3}, -1.f, 1.f, ++seed, false), rv = random_var({3}, 0.5f, 2.f, ++seed, false);
                    const Tensor dy = random_tensor(s, -1.f, 1.f, ++seed);
                    const auto run = [&](bool fused) {
                        xgrad::BatchNormOptions options;
                        options.training = training;
                        options.update_running = false;
                        if (fused) options.rectifier_slope = slope;
                        const Var y = xgrad::batch_norm(x, w, b, rm, rv, options);
                        return fused ? y : (slope == 0.f ? xgrad::relu(y) : xgrad::leaky_relu(y, slope));
                    };
                    const Var fused = run(true);
                    CHECK(std::string(fused.op_name()) == "batch_norm");
                    backward_with(fused, dy);
                    const Tensor dx = x.grad(), dw = affine ? w.grad() : Tensor(), db = affine ? b.grad() : Tensor();
                    for (const Var& v : {x, w, b}) {
                        if (v.defined()) Var(v).zero_grad();
                    }
                    const Var composed = run(false);
                    backward_with(composed, dy);
                    CHECK(xt::allclose(fused.value(), composed.value(), 1e-6, 1e-6));
                    CHECK(xt::allclose(dx, x.grad(), 1e-5, 1e-6));
                    if (affine) {
                        CHECK(xt::allclose(dw, w.grad(), 1e-5, 1e-5));
                        CHECK(xt::allclose(db, b.grad(), 1e-5, 1e-5));
                    }
                    CHECK(xt::any(xt::equal(fused.value(), 0.f)) == (slope == 0.f));  // the rectifier ran
                }
            }
        }
    }
    const Var x = random_var({4, 2, 3}, -1.f, 1.f, 99);
    for (const float bad : {-0.1f, std::numeric_limits<float>::infinity()}) {
        xgrad::BatchNormOptions options;
        options.rectifier_slope = bad;
        CHECK_THROWS_WITH_AS(xgrad::batch_norm(x, Var(), Var(), Var(), Var(), options), doctest::Contains("rectifier slope"),
                             std::invalid_argument);
    }
}

TEST_CASE("batch_norm with a rectifier passes gradcheck and gradgradcheck") {
    std::uint64_t seed = 110;
    for (const float slope : {0.f, 0.2f}) {
        for (const bool training : {true, false}) {
            const Var rm = random_var({3}, -1.f, 1.f, ++seed, false), rv = random_var({3}, 0.5f, 2.f, ++seed, false);
            const auto f = [&](const Inputs& in) {
                xgrad::BatchNormOptions options;
                options.training = training;
                options.update_running = false;
                options.rectifier_slope = slope;
                return xgrad::batch_norm(in[0], in[1], in[2], rm, rv, options);
            };
            // Inputs whose y (before the rectifier) keeps 0.1 from the kink at
            // 0, which the checkers' steps of 0.02 would cross: drawn again
            // until they do.
            Inputs in;
            float closest = 0.f;
            for (int draw = 0; draw < 100 && closest < 0.1f; ++draw) {
                in = {random_var({4, 3, 2, 2}, -2.f, 2.f, ++seed), random_var({3}, 0.5f, 1.5f, ++seed),
                      random_var({3}, -1.f, 1.f, ++seed)};
                xgrad::BatchNormOptions plain;
                plain.training = training;
                plain.update_running = false;
                closest = xt::amin(xt::abs(xgrad::batch_norm(in[0], in[1], in[2], rm, rv, plain).value()))();
            }
            REQUIRE(closest >= 0.1f);
            check_gradients(std::string("batch_norm with rectifier slope ") + std::to_string(slope) + ", training " +
                                (training ? "on" : "off"),
                            f, in);
        }
    }
}

TEST_CASE("layer_norm: values and gradients against a direct loop") {
    const Var x = random_var({3, 2, 4}, -2.f, 2.f, 80), w = random_var({2, 4}, 0.5f, 1.5f, 81),
              b = random_var({2, 4}, -1.f, 1.f, 82);
    const Var y = xgrad::layer_norm(x, 2, w, b);
    const Tensor dy = random_tensor(x.shape(), -1.f, 1.f, 83);
    backward_with(y, dy);
    Reference value = zeros(x.shape()), dx = zeros(x.shape()), dw = zeros({2, 4}), db = zeros({2, 4});
    for (std::size_t r = 0; r < 3; ++r) {
        double mu = 0, var = 0;
        for (std::size_t i = 0; i < 8; ++i) mu += x.value().data()[r * 8 + i] / 8.0;
        for (std::size_t i = 0; i < 8; ++i) var += std::pow(x.value().data()[r * 8 + i] - mu, 2) / 8.0;
        const double inv = 1.0 / std::sqrt(var + 1e-5);
        double sum_g = 0, sum_g_xhat = 0;
        for (std::size_t i = 0; i < 8; ++i) {
            const double xhat = (x.value().data()[r * 8 + i] - mu) * inv, g = dy.data()[r * 8 + i] * double(w.value().data()[i]);
            value.data()[r * 8 + i] = xhat * w.value().data()[i] + b.value().data()[i];
            sum_g += g;
            sum_g_xhat += g * xhat;
            dw.data()[i] += dy.data()[r * 8 + i] * xhat;
            db.data()[i] += dy.data()[r * 8 + i];
        }
        for (std::size_t i = 0; i < 8; ++i) {
            const double xhat = (x.value().data()[r * 8 + i] - mu) * inv, g = dy.data()[r * 8 + i] * double(w.value().data()[i]);
            dx.data()[r * 8 + i] = inv * (g - sum_g / 8.0 - xhat * sum_g_xhat / 8.0);
        }
    }
    check_matches("value", y.value(), value);
    check_matches("gradient of x", x.grad(), dx, 2e-5);
    check_matches("gradient of weight", w.grad(), dw);
    check_matches("gradient of bias", b.grad(), db);
    CHECK_THROWS_AS(xgrad::layer_norm(x, 4, Var(), Var()), xgrad::ShapeError);
    CHECK_THROWS_AS(xgrad::layer_norm(x, 1, w, b), xgrad::ShapeError);
}

}  // namespace

// ---- convolutions -------------------------------------------------------------------

namespace {

struct ConvCase {
    Shape x;            // (N, C_in, H, W)
    std::size_t out_c;  // C_out
    Size2 kernel, stride, padding, dilation, output_padding;
};

const ConvCase kConvCases[] = {
    {{2, 3, 7, 6}, 4, 3, 1, 1, 1, 0},                 // 'same' 3x3
    {{1, 1, 8, 8}, 2, 4, 2, 1, 1, 0},                 // the DCGAN layer shape, batch of one
    {{2, 2, 9, 7}, 3, {3, 2}, {2, 3}, {1, 0}, 1, 0},  // odd sizes, rectangular everything
    {{1, 2, 8, 8}, 2, 3, 1, 2, 2, 0},                 // dilation
    {{3, 1, 5, 5}, 1, 5, 3, 2, 1, {1, 2}},            // kernel larger than the stride; output padding (transposed only)
    {{1, 4, 3, 3}, 5, 1, 1, 0, 1, 0},                 // 1x1
};

// conv2d by its definition, in double: y[n,o,i,j] = b[o] + sum w[o,c,p,q] x[n,c,i s - pad + p d, j s - pad + q d].
Reference naive_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvCase& c, Shape& out) {
    const std::size_t n = x.shape()[0], ci = x.shape()[1], h = x.shape()[2], wd = x.shape()[3];
    const std::size_t kh = c.kernel.h, kw = c.kernel.w;
    const std::size_t oh = (h + 2 * c.padding.h - c.dilation.h * (kh - 1) - 1) / c.stride.h + 1;
    const std::size_t ow = (wd + 2 * c.padding.w - c.dilation.w * (kw - 1) - 1) / c.stride.w + 1;
    out = {n, c.out_c, oh, ow};
    Reference y = zeros(out);
    for (std::size_t a = 0; a < n; ++a)
        for (std::size_t o = 0; o < c.out_c; ++o)
            for (std::size_t i = 0; i < oh; ++i)
                for (std::size_t j = 0; j < ow; ++j) {
                    double s = b ? (*b)(o) : 0.0;
                    for (std::size_t ch = 0; ch < ci; ++ch)
                        for (std::size_t p = 0; p < kh; ++p)
                            for (std::size_t q = 0; q < kw; ++q) {
                                const long r = long(i * c.stride.h + p * c.dilation.h) - long(c.padding.h);
                                const long t = long(j * c.stride.w + q * c.dilation.w) - long(c.padding.w);
                                if (r >= 0 && t >= 0 && r < long(h) && t < long(wd)) s += double(w(o, ch, p, q)) * x(a, ch, r, t);
                            }
                    y(a, o, i, j) = s;
                }
    return y;
}

// conv_transpose2d by its definition: every input pixel scatters w times itself into the output.
Reference naive_conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvCase& c, Shape& out) {
    const std::size_t n = x.shape()[0], ci = x.shape()[1], h = x.shape()[2], wd = x.shape()[3];
    const std::size_t co = w.shape()[1], kh = c.kernel.h, kw = c.kernel.w;
    const std::size_t oh = (h - 1) * c.stride.h - 2 * c.padding.h + c.dilation.h * (kh - 1) + c.output_padding.h + 1;
    const std::size_t ow = (wd - 1) * c.stride.w - 2 * c.padding.w + c.dilation.w * (kw - 1) + c.output_padding.w + 1;
    out = {n, co, oh, ow};
    Reference y = zeros(out);
    for (std::size_t a = 0; a < n; ++a)
        for (std::size_t o = 0; o < co; ++o)
            for (std::size_t i = 0; i < oh; ++i)
                for (std::size_t j = 0; j < ow; ++j) y(a, o, i, j) = b ? (*b)(o) : 0.0;
    for (std::size_t a = 0; a < n; ++a)
        for (std::size_t ch = 0; ch < ci; ++ch)
            for (std::size_t i = 0; i < h; ++i)
                for (std::size_t j = 0; j < wd; ++j)
                    for (std::size_t o = 0; o < co; ++o)
                        for (std::size_t p = 0; p < kh; ++p)
                            for (std::size_t q = 0; q < kw; ++q) {
                                const long r = long(i * c.stride.h + p * c.dilation.h) - long(c.padding.h);
                                const long t = long(j * c.stride.w + q * c.dilation.w) - long(c.padding.w);
                                if (r >= 0 && t >= 0 && r < long(oh) && t < long(ow))
                                    y(a, o, r, t) += double(w(ch, o, p, q)) * x(a, ch, i, j);
                            }
    return y;
}

xgrad::Conv2dOptions conv_options(const ConvCase& c) { return {c.stride, c.padding, c.dilation}; }
xgrad::ConvTranspose2dOptions transposed_options(const ConvCase& c) {
    return {c.stride, c.padding, c.output_padding, c.dilation};
}

}  // namespace

TEST_CASE("conv2d and conv_transpose2d against direct loops, on one and two threads") {
    std::uint64_t seed = 100;
    for (const ConvCase& c : kConvCases) {
        for (const bool transposed : {false, true}) {
            if (!transposed && !(c.output_padding == Size2(0))) continue;
            for (const int threads : {1, 2}) {
                INFO((transposed ? "conv_transpose2d" : "conv2d")
                     << " of " << xgrad::shape_string(c.x) << ", kernel " << c.kernel.h << "x" << c.kernel.w << ", stride "
                     << c.stride.h << "x" << c.stride.w << ", threads " << threads);
                xgrad::set_num_threads(threads);
                const Shape ws =
                    transposed ? Shape{c.x[1], c.out_c, c.kernel.h, c.kernel.w} : Shape{c.out_c, c.x[1], c.kernel.h, c.kernel.w};
                const Var x = random_var(c.x, -1.f, 1.f, ++seed), w = random_var(ws, -1.f, 1.f, ++seed);
                const Var b = random_var({c.out_c}, -1.f, 1.f, ++seed);
                const Var y = transposed ? xgrad::conv_transpose2d(x, w, b, transposed_options(c))
                                         : xgrad::conv2d(x, w, b, conv_options(c));
                Shape out;
                const Reference want = transposed ? naive_conv_transpose2d(x.value(), w.value(), &b.value(), c, out)
                                                  : naive_conv2d(x.value(), w.value(), &b.value(), c, out);
                REQUIRE(y.shape() == out);
                check_matches("value", y.value(), want, 1e-5);
            }
        }
    }
    xgrad::set_num_threads(1);
}

TEST_CASE("conv2d and conv_transpose2d pass gradcheck, with and without a bias") {
    std::uint64_t seed = 200;
    for (const ConvCase& c : kConvCases) {
        for (const bool transposed : {false, true}) {
            if (!transposed && !(c.output_padding == Size2(0))) continue;
            const Shape ws =
                transposed ? Shape{c.x[1], c.out_c, c.kernel.h, c.kernel.w} : Shape{c.out_c, c.x[1], c.kernel.h, c.kernel.w};
            for (const bool bias : {true, false}) {
                const std::string name = std::string(transposed ? "conv_transpose2d" : "conv2d") + " of " +
                                         xgrad::shape_string(c.x) + (bias ? " with bias" : " without bias");
                Inputs in{random_var(c.x, -1.f, 1.f, ++seed), random_var(ws, -1.f, 1.f, ++seed)};
                if (bias) in.push_back(random_var({c.out_c}, -1.f, 1.f, ++seed));
                check_gradients(
                    name,
                    [&c, transposed](const Inputs& v) {
                        const Var b = v.size() > 2 ? v[2] : Var();
                        return transposed ? xgrad::conv_transpose2d(v[0], v[1], b, transposed_options(c))
                                          : xgrad::conv2d(v[0], v[1], b, conv_options(c));
                    },
                    in);
            }
        }
    }
}

TEST_CASE("conv_transpose2d is the adjoint of conv2d") {
    // <conv2d(x, w), y> = <x, conv_transpose2d(y, w)> for the same weight and geometry.
    const ConvCase c{{2, 3, 8, 8}, 4, 4, 2, 1, 1, 0};
    const Var x = random_var(c.x, -1.f, 1.f, 1), w = random_var({4, 3, 4, 4}, -1.f, 1.f, 2);
    const Var y = xgrad::conv2d(x, w, Var(), conv_options(c));
    const Var dy = random_var(y.shape(), -1.f, 1.f, 3);
    const Var back = xgrad::conv_transpose2d(dy, w, Var(), transposed_options(c));
    REQUIRE(back.shape() == x.shape());
    double left = 0, right = 0;
    for (std::size_t i = 0; i < y.numel(); ++i) left += double(y.value().data()[i]) * dy.value().data()[i];
    for (std::size_t i = 0; i < x.numel(); ++i) right += double(x.value().data()[i]) * back.value().data()[i];
    CHECK(left == doctest::Approx(right).epsilon(1e-5));
}

TEST_CASE("a batch of convolutions gives what its images give one by one") {
    // 7 x 7 outputs: a batch of 9 runs as interleaved blocks of images (8 and
    // 1 on one thread, 5 and 4 on two), a batch of one image by image.
    const ConvCase c{{9, 2, 14, 14}, 3, 4, 2, 1, 1, 0};
    std::uint64_t seed = 300;
    for (const bool transposed : {false, true}) {
        for (const int threads : {1, 2}) {
            INFO((transposed ? "conv_transpose2d" : "conv2d") << ", threads " << threads);
            xgrad::set_num_threads(threads);
            // conv2d (9, 2, 14, 14) -> (9, 3, 7, 7); conv_transpose2d (9, 3, 7, 7) -> (9, 2, 14, 14).
            const Shape xs = transposed ? Shape{9, 3, 7, 7} : c.x;
            Var x = random_var(xs, -1.f, 1.f, ++seed);
            const Var w = random_var({3, 2, 4, 4}, -1.f, 1.f, ++seed);
            Var b = random_var({transposed ? 2u : 3u}, -1.f, 1.f, ++seed);
            const auto apply = [&](const Var& input, const Var& weight, const Var& bias) {
                return transposed ? xgrad::conv_transpose2d(input, weight, bias, transposed_options(c))
                                  : xgrad::conv2d(input, weight, bias, conv_options(c));
            };
            const Var y = apply(x, w, b);
            const Tensor dy = random_tensor(y.shape(), -1.f, 1.f, ++seed);
            backward_with(y, dy);

            Reference value = zeros(y.shape()), dx = zeros(xs), dw = zeros(w.shape()), db = zeros(b.shape());
            const std::size_t in_size = x.numel() / 9, out_size = y.numel() / 9;
            for (std::size_t n = 0; n < 9; ++n) {
                Shape one_in = xs, one_out = y.shape();
                one_in[0] = one_out[0] = 1;
                Tensor image = Tensor::from_shape(one_in), dy_n = Tensor::from_shape(one_out);
                std::copy_n(x.value().data() + n * in_size, in_size, image.data());
                std::copy_n(dy.data() + n * out_size, out_size, dy_n.data());
                const Var x_n(image, true), w_n(w.value(), true), b_n(b.value(), true);
                const Var y_n = apply(x_n, w_n, b_n);
                backward_with(y_n, dy_n);
                for (std::size_t i = 0; i < out_size; ++i) value.data()[n * out_size + i] = y_n.value().data()[i];
                for (std::size_t i = 0; i < in_size; ++i) dx.data()[n * in_size + i] = x_n.grad().data()[i];
                dw += to_double(w_n.grad());
                db += to_double(b_n.grad());
            }
            check_matches("value", y.value(), value);
            check_matches("gradient of x", x.grad(), dx);
            check_matches("gradient of weight", w.grad(), dw);
            check_matches("gradient of bias", b.grad(), db);

            // x and b used twice: the second gradient adds to the first, x's
            // inside the engine, where the blocks are taken apart again.
            x.zero_grad();
            b.zero_grad();
            backward_with(apply(x, w, b) + apply(x, w, b), dy);
            const Reference twice = dx * 2.0, bias_twice = db * 2.0;
            check_matches("gradient of x used twice", x.grad(), twice);
            check_matches("gradient of b used twice", b.grad(), bias_twice);
        }
    }
    xgrad::set_num_threads(1);
}

TEST_CASE("conv2d with a rectifier is conv2d followed by relu or leaky_relu, bit for bit") {
    // 12 x 12 outputs: image by image; 7 x 7: blocks of images (8 and 1 on
    // one thread, 5 and 4 on two), each rectified as it is written.
    std::uint64_t seed = 400;
    for (const Shape& xs : {Shape{3, 2, 24, 24}, Shape{9, 2, 14, 14}}) {
        for (const float slope : {0.f, 0.2f}) {
            for (const int threads : {1, 2}) {
                for (const bool bias : {true, false}) {
                    INFO("x " << xgrad::shape_string(xs) << ", slope " << slope << ", threads " << threads << ", bias " << bias);
                    xgrad::set_num_threads(threads);
                    const Var x = random_var(xs, -1.f, 1.f, ++seed), w = random_var({3, 2, 4, 4}, -1.f, 1.f, ++seed);
                    const Var b = bias ? random_var({3}, -1.f, 1.f, ++seed) : Var();
                    xgrad::Conv2dOptions options{2, 1};
                    const auto run = [&](bool fused) {
                        options.rectifier_slope = fused ? std::optional<float>(slope) : std::nullopt;
                        const Var y = xgrad::conv2d(x, w, b, options);
                        return fused ? y : (slope == 0.f ? xgrad::relu(y) : xgrad::leaky_relu(y, slope));
                    };
                    const Var fused = run(true);
                    CHECK(std::string(fused.op_name()) == "conv2d");
                    const Tensor dy = random_tensor(fused.shape(), -1.f, 1.f, ++seed);
                    backward_with(fused, dy);
                    const Tensor dx = x.grad(), dw = w.grad(), db = bias ? b.grad() : Tensor();
                    for (const Var& v : {x, w, b}) {
                        if (v.defined()) Var(v).zero_grad();
                    }
                    const Var composed = run(false);
                    backward_with(composed, dy);
                    CHECK(xt::all(xt::equal(fused.value(), composed.value())));
                    CHECK(xt::all(xt::equal(dx, x.grad())));
                    CHECK(xt::all(xt::equal(dw, w.grad())));
                    if (bias) CHECK(xt::all(xt::equal(db, b.grad())));
                    CHECK(xt::any(xt::equal(fused.value(), 0.f)) == (slope == 0.f));  // the rectifier ran
                }
            }
        }
    }
    xgrad::set_num_threads(1);
    const Var x = random_var({1, 1, 4, 4}, -1.f, 1.f, 1), w = random_var({1, 1, 2, 2}, -1.f, 1.f, 2);
    for (const float bad : {-0.1f, std::numeric_limits<float>::quiet_NaN()}) {
        xgrad::Conv2dOptions options;
        options.rectifier_slope = bad;
        CHECK_THROWS_WITH_AS(xgrad::conv2d(x, w, Var(), options), doctest::Contains("conv2d: rectifier slope"),
                             std::invalid_argument);
    }
}

TEST_CASE("conv2d with a rectifier passes gradcheck and gradgradcheck") {
    std::uint64_t seed = 450;
    for (const float slope : {0.f, 0.2f}) {
        xgrad::Conv2dOptions options{2, 1};
        options.rectifier_slope = slope;
        const auto f = [&](const Inputs& in) { return xgrad::conv2d(in[0], in[1], in[2], options); };
        // Inputs whose output before the rectifier keeps 0.1 from the kink
        // at 0, which the checkers' steps would cross: drawn again until
        // they do.
        Inputs in;
        float closest = 0.f;
        for (int draw = 0; draw < 100 && closest < 0.1f; ++draw) {
            in = {random_var({2, 2, 6, 6}, -1.f, 1.f, ++seed), random_var({3, 2, 4, 4}, -1.f, 1.f, ++seed),
                  random_var({3}, -1.f, 1.f, ++seed)};
            closest = xt::amin(xt::abs(xgrad::conv2d(in[0], in[1], in[2], {2, 1}).value()))();
        }
        REQUIRE(closest >= 0.1f);
        check_gradients("conv2d with rectifier slope " + std::to_string(slope), f, in);
    }
}

TEST_CASE("a frozen convolution weight gets no gradient; the input still does") {
    const Var x = random_var({2, 2, 6, 6}, -1.f, 1.f, 4);
    Var w = random_var({3, 2, 3, 3}, -1.f, 1.f, 5);
    w.set_requires_grad(false);
    xgrad::backward(xgrad::sum(xgrad::conv2d(x, w, Var(), {1, 1})));
    CHECK(xt::all(xt::equal(w.grad(), 0.f)));
    CHECK(xt::amax(xt::abs(x.grad()))() > 0.f);
}

TEST_CASE("convolutions reject operands that do not fit, naming the op and the shapes") {
    const Var x = Var::zeros({1, 2, 5, 5});
    CHECK_THROWS_WITH_AS(xgrad::conv2d(x, Var::zeros({3, 4, 3, 3}), Var()), doctest::Contains("xgrad::conv2d"),
                         xgrad::ShapeError);
    CHECK_THROWS_WITH_AS(xgrad::conv2d(x, Var::zeros({3, 2, 3, 3}), Var::zeros({4})), doctest::Contains("b (4)"),
                         xgrad::ShapeError);
    CHECK_THROWS_WITH_AS(xgrad::conv2d(x, Var::zeros({3, 2, 7, 7}), Var()), doctest::Contains("(1, 2, 5, 5)"), xgrad::ShapeError);
    CHECK_THROWS_WITH_AS(xgrad::conv2d(Var::zeros({2, 5, 5}), Var::zeros({3, 2, 3, 3}), Var()), doctest::Contains("(2, 5, 5)"),
                         xgrad::ShapeError);
    CHECK_THROWS_WITH_AS(xgrad::conv_transpose2d(x, Var::zeros({2, 3, 4, 4}), Var(), {2, 1, 2}),
                         doctest::Contains("xgrad::conv_transpose2d: output padding"), xgrad::ShapeError);
}
