// The ops a classifier needs beyond the GAN's: softmax_cross_entropy (checked
// against a double reference, by gradcheck, and at saturated logits) and
// dropout (its mask statistics, its gradient and the Dropout module's
// evaluation mode).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/core/random.hpp>
#include <xgrad/nn.hpp>
#include <xgrad/ops.hpp>
#include "helpers.hpp"

namespace {

using test::check_gradients;

using xgrad::Rng;
using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;
using Inputs = std::vector<Var>;

// A single row, a single class and full matrices: one-class rows have
// softmax 1 and must give loss and gradient 0. Then other ranks: a rank-1
// input is one row; rank 3 has rows at every position of its first two axes.
const Shape kShapes[] = {{1, 1}, {1, 7}, {5, 1}, {5, 7}, {3, 10}, {7}, {2, 3, 4}, {1, 2, 5}, {3, 2, 1}};

// Rows of a tensor whose classes lie along the last axis.
std::size_t rows_of(const Shape& shape) { return xgrad::numel(shape) / shape.back(); }

Var random_var(const Shape& shape, float lo, float hi, std::uint64_t seed, bool requires_grad = true) {
    Tensor t(shape);
    Rng(seed).fill_uniform(t, lo, hi);
    return Var(t, requires_grad);
}

// Rows of class probabilities (along the last axis): one-hot at a random
// class, or random and normalised.
Var random_targets(const Shape& shape, bool one_hot, std::uint64_t seed) {
    Rng rng(seed);
    Tensor t(shape, 0.f);
    const std::size_t cols = shape.back();
    for (std::size_t r = 0; r < rows_of(shape); ++r) {
        float* row = t.data() + r * cols;
        if (one_hot) {
            row[rng.below(cols)] = 1.f;
            continue;
        }
        float total = 0.f;
        for (std::size_t c = 0; c < cols; ++c) total += row[c] = rng.uniform(0.1f, 1.f);
        for (std::size_t c = 0; c < cols; ++c) row[c] /= total;
    }
    return Var(t, true);
}

struct Reference {
    double loss = 0;
    std::vector<double> dlogits, dtargets;
};

// Loss and gradients for upstream gradient dy, in double, from the definition
// -sum t log softmax(x), with log softmax written as x - log sum exp x.
// Rows are every position of the leading axes, classes the last axis.
Reference cross_entropy_reference(const Tensor& x_tensor, const Tensor& t_tensor, double dy) {
    const std::size_t cols = x_tensor.shape().back(), rows = rows_of(x_tensor.shape());
    const auto x = [&](std::size_t r, std::size_t c) { return double(x_tensor.data()[r * cols + c]); };
    const auto t = [&](std::size_t r, std::size_t c) { return double(t_tensor.data()[r * cols + c]); };
    Reference ref;
    ref.dlogits.resize(x_tensor.size());
    ref.dtargets.resize(x_tensor.size());
    for (std::size_t r = 0; r < rows; ++r) {
        double m = -HUGE_VAL, s = 0, mass = 0;
        for (std::size_t c = 0; c < cols; ++c) m = std::max(m, x(r, c));
        for (std::size_t c = 0; c < cols; ++c) s += std::exp(x(r, c) - m);
        for (std::size_t c = 0; c < cols; ++c) mass += t(r, c);
        for (std::size_t c = 0; c < cols; ++c) {
            const double log_p = x(r, c) - m - std::log(s);
            ref.loss -= t(r, c) * log_p / double(rows);
            ref.dlogits[r * cols + c] = dy * (std::exp(log_p) * mass - t(r, c)) / double(rows);
            ref.dtargets[r * cols + c] = -dy * log_p / double(rows);
        }
    }
    return ref;
}

void check_close(const std::string& what, const Tensor& got, const std::vector<double>& want, double tol = 1e-5) {
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        INFO(what << " element " << i << ": got " << got.data()[i] << ", want " << want[i]);
        CHECK(std::abs(double(got.data()[i]) - want[i]) <= tol * (1.0 + std::abs(want[i])));
    }
}

}  // namespace

// ---- softmax_cross_entropy ---------------------------------------------------------------

TEST_CASE("softmax_cross_entropy: loss and both gradients match the definition in double") {
    std::uint64_t seed = 100;
    for (const Shape& s : kShapes) {
        for (const bool one_hot : {true, false}) {
            INFO("shape " << xgrad::shape_string(s) << (one_hot ? ", one-hot targets" : ", soft targets"));
            const Var x = random_var(s, -4.f, 4.f, ++seed);
            const Var t = random_targets(s, one_hot, ++seed);
            const double dy = -1.7;  // not 1: the rule must scale by the upstream gradient
            const Var loss = xgrad::softmax_cross_entropy(x, t);
            REQUIRE(loss.shape() == Shape{});  // a scalar, rank 0
            xgrad::backward(xgrad::scale(loss, float(dy)));
            const Reference ref = cross_entropy_reference(x.value(), t.value(), dy);
            CHECK(loss.item() == doctest::Approx(ref.loss).epsilon(1e-5));
            check_close("d logits", x.grad(), ref.dlogits);
            check_close("d targets", t.grad(), ref.dtargets);
        }
    }
}

TEST_CASE("softmax_cross_entropy: closed forms") {
    SUBCASE("equal logits cost log C whatever the one-hot class") {
        const Var x = Var::full({2, 4}, 0.3f, true);
        const Var t(Tensor{{0.f, 0.f, 1.f, 0.f}, {1.f, 0.f, 0.f, 0.f}});
        const Var loss = xgrad::softmax_cross_entropy(x, t);
        xgrad::backward(loss);
        CHECK(loss.item() == doctest::Approx(std::log(4.0)));
        // (softmax - t) / N = (1/4 - t) / 2
        CHECK(x.grad()(0, 0) == doctest::Approx(0.125));
        CHECK(x.grad()(0, 2) == doctest::Approx(-0.375));
        CHECK(x.grad()(1, 0) == doctest::Approx(-0.375));
    }
    SUBCASE("two classes reduce to the logistic loss of the logit difference") {
        const float a = 1.3f, b = -0.4f;
        const Var loss = xgrad::softmax_cross_entropy(Var(Tensor{{a, b}}), Var(Tensor{{1.f, 0.f}}));
        CHECK(loss.item() == doctest::Approx(std::log1p(std::exp(-(double(a) - double(b))))));
    }
    SUBCASE("the row gradients sum to zero for probability targets") {
        const Var x = random_var({4, 6}, -3.f, 3.f, 7);
        xgrad::backward(xgrad::softmax_cross_entropy(x, random_targets({4, 6}, false, 8)));
        for (std::size_t r = 0; r < 4; ++r) {
            double s = 0;
            for (std::size_t c = 0; c < 6; ++c) s += x.grad()(r, c);
            CHECK(std::abs(s) < 1e-6);
        }
    }
}

TEST_CASE("softmax_cross_entropy on rank-3 logits: classes on the last axis, the mean over all leading positions") {
    const Shape shape{2, 3, 5};
    for (const bool one_hot : {true, false}) {
        INFO((one_hot ? "one-hot targets" : "soft targets"));
        const Var x = random_var(shape, -4.f, 4.f, 300 + one_hot);
        const Var t = random_targets(shape, one_hot, 310 + one_hot);
        const Var loss = xgrad::softmax_cross_entropy(x, t);
        CHECK(loss.shape() == Shape{});
        xgrad::backward(loss);
        const Reference ref = cross_entropy_reference(x.value(), t.value(), 1.0);
        CHECK(loss.item() == doctest::Approx(ref.loss).epsilon(1e-5));
        check_close("d logits", x.grad(), ref.dlogits);
        check_close("d targets", t.grad(), ref.dtargets);
        CHECK(x.grad().shape() == shape);
        CHECK(t.grad().shape() == shape);

        // The same rows as a (6, 5) matrix: the same loss and gradients, bit for bit.
        Tensor x_rows = x.value(), t_rows = t.value();
        x_rows.reshape({6, 5});
        t_rows.reshape({6, 5});
        const Var x2(x_rows, true), t2(t_rows, true);
        const Var loss2 = xgrad::softmax_cross_entropy(x2, t2);
        xgrad::backward(loss2);
        CHECK(loss2.item() == loss.item());
        CHECK(std::equal(x.grad().begin(), x.grad().end(), x2.grad().begin()));
        CHECK(std::equal(t.grad().begin(), t.grad().end(), t2.grad().begin()));

        // The mean of the six single-row losses: the classes are the last
        // axis, each (i, j) position one row.
        double mean = 0;
        for (std::size_t i = 0; i < 2; ++i) {
            for (std::size_t j = 0; j < 3; ++j) {
                Tensor xr = Tensor::from_shape({5}), tr = Tensor::from_shape({5});
                for (std::size_t c = 0; c < 5; ++c) {
                    xr(c) = x.value()(i, j, c);
                    tr(c) = t.value()(i, j, c);
                }
                mean += xgrad::softmax_cross_entropy(Var(xr), Var(tr)).item() / 6.0;
            }
        }
        CHECK(loss.item() == doctest::Approx(mean).epsilon(1e-5));
    }
    // The gradient of each (i, j) row sums to zero for probability targets.
    const Var x = random_var(shape, -3.f, 3.f, 320);
    xgrad::backward(xgrad::softmax_cross_entropy(x, random_targets(shape, false, 321)));
    for (std::size_t i = 0; i < 2; ++i) {
        for (std::size_t j = 0; j < 3; ++j) {
            double s = 0;
            for (std::size_t c = 0; c < 5; ++c) s += x.grad()(i, j, c);
            CHECK(std::abs(s) < 1e-6);
        }
    }
}

TEST_CASE("softmax_cross_entropy passes gradcheck") {
    std::uint64_t seed = 200;
    for (const Shape& s : kShapes) {
        const std::string shape = xgrad::shape_string(s);
        const auto f = [](const Inputs& in) { return xgrad::softmax_cross_entropy(in[0], in[1]); };
        check_gradients("probability targets " + shape, f, {random_var(s, -3.f, 3.f, ++seed), random_targets(s, false, ++seed)});
        // Targets that do not sum to 1 exercise the T_r factor of dx.
        check_gradients("unnormalised targets " + shape, f, {random_var(s, -3.f, 3.f, ++seed), random_var(s, 0.f, 2.f, ++seed)});
        check_gradients("frozen targets " + shape, f,
                        {random_var(s, -3.f, 3.f, ++seed), random_var(s, 0.f, 1.f, ++seed, /*requires_grad=*/false)});
    }
}

TEST_CASE("softmax_cross_entropy is finite and exact at saturated logits") {
    struct Case {
        Tensor logits, targets;
        double loss;
        std::vector<double> dlogits;
    };
    // A confidently wrong row costs the logit gap and its gradient is
    // (one-hot of the winner - target) / N; a confidently right one costs 0.
    const Case cases[] = {
        {Tensor{{1000.f, -1000.f, 0.f}}, Tensor{{1.f, 0.f, 0.f}}, 0.0, {0, 0, 0}},
        {Tensor{{1000.f, -1000.f, 0.f}}, Tensor{{0.f, 1.f, 0.f}}, 2000.0, {1, -1, 0}},
        {Tensor{{1000.f, -1000.f, 0.f}}, Tensor{{0.f, 0.f, 1.f}}, 1000.0, {1, 0, -1}},
        {Tensor{{-1000.f, 1000.f}}, Tensor{{0.5f, 0.5f}}, 1000.0, {-0.5, 0.5}},
        {Tensor{{-1000.f, -1000.f}}, Tensor{{1.f, 0.f}}, std::log(2.0), {-0.5, 0.5}},
        {Tensor{{1000.f, 1000.f}, {-1000.f, 1000.f}},
         Tensor{{0.f, 1.f}, {1.f, 0.f}},
         (std::log(2.0) + 2000.0) / 2,
         {0.25, -0.25, -0.5, 0.5}},
    };
    for (const Case& k : cases) {
        INFO("logits " << k.logits << ", targets " << k.targets);
        const Var x(k.logits, true), t(k.targets, true);
        const Var loss = xgrad::softmax_cross_entropy(x, t);
        xgrad::backward(loss);
        CHECK(std::isfinite(loss.item()));
        CHECK(loss.item() == doctest::Approx(k.loss));
        for (std::size_t i = 0; i < k.dlogits.size(); ++i) {
            CHECK(x.grad().data()[i] == doctest::Approx(k.dlogits[i]));
            CHECK(std::isfinite(t.grad().data()[i]));
        }
    }
    // Shifting every logit of a row leaves softmax unchanged.
    const Var base = random_var({3, 5}, -2.f, 2.f, 31, false);
    const Var targets = random_targets({3, 5}, true, 32);
    for (const float shift : {1000.f, -1000.f}) {
        CHECK(xgrad::softmax_cross_entropy(base + shift, targets).item() ==
              doctest::Approx(xgrad::softmax_cross_entropy(base, targets).item()).epsilon(1e-3));
    }
}

TEST_CASE("softmax_cross_entropy rejects mismatched and empty operands") {
    const auto message = [](const Var& x, const Var& t) {
        try {
            xgrad::softmax_cross_entropy(x, t);
        } catch (const xgrad::ShapeError& e) {
            return std::string(e.what());
        }
        return std::string("no exception");
    };
    const std::string mismatch = message(Var::full({2, 10}, 0.f, true), Var::full({2, 9}, 0.f));
    CHECK(mismatch.find("softmax_cross_entropy") != std::string::npos);
    CHECK(mismatch.find("(2, 10)") != std::string::npos);
    CHECK(mismatch.find("(2, 9)") != std::string::npos);
    CHECK(message(Var(Tensor::from_shape({0, 10})), Var(Tensor::from_shape({0, 10}))).find("at least one row") !=
          std::string::npos);
    // The same elements in another shape are not the same rows.
    const std::string ranks = message(Var::full({2, 3, 4}, 0.f, true), Var::full({6, 4}, 0.f));
    CHECK(ranks.find("(2, 3, 4)") != std::string::npos);
    CHECK(ranks.find("(6, 4)") != std::string::npos);
    // Empty along any axis, or a scalar: no row or no class.
    CHECK(message(Var(Tensor::from_shape({2, 0, 3})), Var(Tensor::from_shape({2, 0, 3}))).find("at least one row") !=
          std::string::npos);
    CHECK(message(Var(Tensor::from_shape({3, 0})), Var(Tensor::from_shape({3, 0}))).find("one class") != std::string::npos);
    CHECK(message(Var::scalar(1.f, true), Var::scalar(1.f)).find("()") != std::string::npos);
}

// ---- dropout ------------------------------------------------------------------------------

TEST_CASE("dropout keeps each element with probability 1-p, scaled by 1/(1-p)") {
    const std::size_t rows = 200, cols = 500;  // 1e5 draws: the kept fraction's std is < 0.0016
    for (const float p : {0.1f, 0.3f, 0.5f, 0.8f}) {
        INFO("p = " << p);
        Rng rng(11);
        const Var y = xgrad::dropout(Var::full({rows, cols}, 1.f), p, rng);
        const float scale = 1.f / (1.f - p);
        std::size_t kept = 0, odd = 0;
        std::vector<std::size_t> kept_per_row(rows, 0);
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t c = 0; c < cols; ++c) {
                const float v = y.value()(r, c);
                if (v == scale) {
                    ++kept;
                    ++kept_per_row[r];
                } else if (v != 0.f) {
                    ++odd;
                }
            }
        }
        CHECK(odd == 0);
        const double fraction = double(kept) / double(rows * cols);
        CHECK(std::abs(fraction - (1.0 - p)) < 0.01);
        // Not one mask repeated: rows differ in how many they keep.
        CHECK(*std::max_element(kept_per_row.begin(), kept_per_row.end()) !=
              *std::min_element(kept_per_row.begin(), kept_per_row.end()));
    }
}

TEST_CASE("dropout: the mask follows the seed, p = 0 is the identity, bad p is rejected") {
    const Var x = random_var({6, 9}, 0.5f, 1.5f, 41, false);  // no zeros: a dropped element shows
    Rng a(5), b(5), c(6);
    const Tensor ya = xgrad::dropout(x, 0.5f, a).value();
    CHECK(xgrad::dropout(x, 0.5f, b).value() == ya);
    CHECK(xgrad::dropout(x, 0.5f, c).value() != ya);
    // Without a graph (NoGrad) the same seed gives the same output.
    {
        xgrad::NoGrad no_grad;
        Rng d(5);
        CHECK(xgrad::dropout(x, 0.5f, d).value() == ya);
    }
    Rng e(5);
    CHECK(xgrad::dropout(x, 0.f, e).value() == x.value());
    for (const float p : {-0.1f, 1.f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
        INFO("p = " << p);
        Rng r(1);
        CHECK_THROWS_WITH_AS(xgrad::dropout(x, p, r), doctest::Contains("must be in [0, 1)"), std::invalid_argument);
        CHECK_THROWS_AS(xgrad::Dropout(p, r), std::invalid_argument);
    }
}

TEST_CASE("dropout's gradient is the upstream gradient times mask / (1-p)") {
    const float p = 0.4f;
    const Var x = random_var({7, 8}, -2.f, 2.f, 51);
    Rng rng(9);
    const Var y = xgrad::dropout(x, p, rng);
    Rng same(9);
    const Tensor mask = xgrad::dropout(Var::full({7, 8}, 1.f), p, same).value();
    const Tensor dy = random_var({7, 8}, -1.f, 1.f, 52, false).value();
    // sum(y .* dy) hands y the upstream gradient dy.
    xgrad::backward(xgrad::sum(y * Var(dy)));
    std::size_t dropped = 0;
    for (std::size_t i = 0; i < mask.size(); ++i) {
        CHECK(x.grad().data()[i] == doctest::Approx(dy.data()[i] * mask.data()[i]));
        CHECK(y.value().data()[i] == doctest::Approx(x.value().data()[i] * mask.data()[i]));
        dropped += mask.data()[i] == 0.f;
    }
    CHECK(dropped > 0);
    CHECK(dropped < mask.size());

    // gradcheck re-runs f: re-seeding makes every run draw the same mask.
    std::uint64_t seed = 60;
    for (const Shape& s : kShapes) {
        check_gradients("dropout " + xgrad::shape_string(s),
                        [p](const Inputs& in) {
                            Rng fixed(77);
                            return xgrad::dropout(in[0], p, fixed);
                        },
                        {random_var(s, -2.f, 2.f, ++seed)});
    }
    // A scalar too: kept (scaled) or dropped as a whole.
    check_gradients("dropout ()",
                    [p](const Inputs& in) {
                        Rng fixed(78);
                        return xgrad::dropout(in[0], p, fixed);
                    },
                    {random_var({}, -2.f, 2.f, 79)});

    // A rank-3 input: the mask has its shape, and dx = dy * mask / (1-p) there too.
    const Var cube = random_var({3, 4, 5}, -2.f, 2.f, 80);
    Rng r1(12), r2(12);
    const Var cube_y = xgrad::dropout(cube, p, r1);
    const Tensor cube_mask = xgrad::dropout(Var::full({3, 4, 5}, 1.f), p, r2).value();
    CHECK(cube_y.shape() == Shape{3, 4, 5});
    xgrad::backward(xgrad::sum(cube_y));
    CHECK(cube.grad() == cube_mask);
}

TEST_CASE("the Dropout module drops while training and is the identity in evaluation mode") {
    Rng rng(3);
    xgrad::Sequential net;
    net.add<xgrad::Dropout>(0.5f, rng);
    const Var x = random_var({20, 30}, 0.5f, 1.5f, 71);

    const Var trained = net(x);
    CHECK(trained.value() != x.value());
    CHECK(std::string(trained.op_name()) == "dropout");

    net.train(false);  // Sequential passes evaluation mode on to its layers
    CHECK_FALSE(net.is_training());
    CHECK_FALSE(net[0].is_training());
    const std::string before = rng.state();
    const Var evaluated = net(x);
    CHECK(evaluated.value() == x.value());
    CHECK(rng.state() == before);  // evaluation draws nothing from the training stream
    xgrad::backward(xgrad::sum(evaluated));
    CHECK(x.grad() == Tensor(Shape{20, 30}, 1.f));

    net.train(true);
    CHECK(net(x).value() != x.value());
    CHECK(rng.state() != before);
}
