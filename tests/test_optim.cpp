// Optimizers against the textbook update rules computed here in double, and
// small learning problems that the tape, the modules and the optimizers
// must solve together.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xio.hpp>

#include <xgrad/nn/module.hpp>
#include <xgrad/optim/optimizers.hpp>

using namespace xgrad;

namespace {

// The gradient of step t (1-based). It changes sign and size between steps,
// so that momentum and Adam's moments matter to the result.
Tensor gradient_of_step(int t) {
    const float factor[] = {1.f, -0.5f, 2.f};
    Tensor g{{0.5f, -1.5f, 2.f}, {-0.25f, 3.f, -4.f}};
    g *= factor[t - 1];
    return g;
}

// One element's expected trajectory: its value and up to two moment estimates.
struct Expected {
    double value, first = 0.0, second = 0.0;
};
using TextbookUpdate = std::function<void(Expected&, double gradient, int t)>;

// Runs three steps where d loss / d w is gradient_of_step(t) exactly
// (loss = sum(w * c)), comparing w after each with `update` applied in double.
void check_three_steps(const std::function<std::unique_ptr<Optimizer>(std::vector<Var>)>& make_optimizer,
                       const TextbookUpdate& update) {
    Var w(Tensor{{1.f, -2.f, 0.5f}, {3.f, 0.25f, -1.f}}, true);
    const auto optimizer = make_optimizer({w});
    std::vector<Expected> expected;
    for (float v : w.value()) expected.push_back({v});
    for (int t = 1; t <= 3; ++t) {
        const Tensor g = gradient_of_step(t);
        optimizer->zero_grad();
        backward(sum(w * Var(g)));
        optimizer->step();
        for (std::size_t i = 0; i < expected.size(); ++i) {
            update(expected[i], g.flat(i), t);
            CAPTURE(t);
            CAPTURE(i);
            CHECK(w.value().flat(i) == doctest::Approx(expected[i].value).epsilon(2e-6));
        }
    }
}

// The reference uses the optimizer's own float constants, widened, so that
// only the arithmetic differs (0.9f is not 0.9).
double wide(float v) { return static_cast<double>(v); }

}  // namespace

TEST_CASE("SGD matches p -= lr * v, v = momentum * v + g") {
    const float lr = 0.1f;
    for (const float momentum : {0.f, 0.9f}) {
        CAPTURE(momentum);
        check_three_steps([&](std::vector<Var> p) { return std::make_unique<SGD>(std::move(p), lr, momentum); },
                          [&](Expected& e, double g, int) {
                              e.first = wide(momentum) * e.first + g;
                              e.value -= wide(lr) * e.first;
                          });
    }
}

TEST_CASE("Adam matches Kingma & Ba's Algorithm 1 with bias correction") {
    AdamOptions custom;
    custom.lr = 0.1f;
    custom.beta1 = 0.8f;
    custom.beta2 = 0.95f;
    custom.eps = 1e-2f;  // large enough that its place in the formula shows
    AdamOptions defaults;
    defaults.lr = 0.1f;  // the defaults otherwise: 0.9, 0.999, 1e-8
    for (const AdamOptions& o : {defaults, custom}) {
        CAPTURE(o.beta1);
        check_three_steps([&](std::vector<Var> p) { return std::make_unique<Adam>(std::move(p), o); },
                          [&](Expected& e, double g, int t) {
                              e.first = wide(o.beta1) * e.first + (1 - wide(o.beta1)) * g;
                              e.second = wide(o.beta2) * e.second + (1 - wide(o.beta2)) * g * g;
                              const double m_hat = e.first / (1 - std::pow(wide(o.beta1), t));
                              const double v_hat = e.second / (1 - std::pow(wide(o.beta2), t));
                              e.value -= wide(o.lr) * m_hat / (std::sqrt(v_hat) + wide(o.eps));
                          });
    }
}

TEST_CASE("an optimizer updates only its own parameters, and skips frozen ones") {
    Var own(Tensor{{1, 2}}, true);
    Var frozen(Tensor{{3, 4}}, true);
    Var other(Tensor{{5, 6}}, true);
    backward(sum(own + frozen + other));
    frozen.set_requires_grad(false);

    std::unique_ptr<Optimizer> optimizer;
    SUBCASE("SGD") { optimizer = std::make_unique<SGD>(std::vector<Var>{own, frozen}, 0.5f, 0.9f); }
    SUBCASE("Adam") { optimizer = std::make_unique<Adam>(std::vector<Var>{own, frozen}); }
    const auto frozen_version = frozen.version();
    optimizer->step();
    CHECK(own.value()(0, 0) < 1.f);
    CHECK(own.value()(0, 1) < 2.f);
    CHECK(frozen.value() == Tensor{{3, 4}});
    CHECK(frozen.version() == frozen_version);  // not even touched
    CHECK(other.value() == Tensor{{5, 6}});

    optimizer->zero_grad();
    CHECK(own.grad() == Tensor{{0, 0}});
    CHECK(frozen.grad() == Tensor{{1, 1}});
    CHECK(other.grad() == Tensor{{1, 1}});
}

TEST_CASE("an optimizer refuses op results as parameters") {
    const Var p(Tensor{{1}}, true);
    CHECK_THROWS_AS(SGD({p * p}, 0.1f), std::invalid_argument);
}

namespace {

// Fraction of rows whose logit has the sign of the 0/1 label.
double accuracy(Module& model, const Var& x, const Tensor& labels) {
    NoGrad no_grad;
    const Var logits = model(x);
    std::size_t correct = 0;
    for (std::size_t i = 0; i < labels.shape()[0]; ++i) correct += (logits.value()(i, 0) > 0.f) == (labels(i, 0) > 0.5f);
    return static_cast<double>(correct) / static_cast<double>(labels.shape()[0]);
}

// Full-batch training that stops as soon as every example is classified
// correctly; returns the number of steps taken (max_steps + 1 if never).
int steps_to_perfect(Module& model, Optimizer& optimizer, const Var& x, const Tensor& labels, int max_steps) {
    const Var targets(labels);
    for (int step = 1; step <= max_steps; ++step) {
        optimizer.zero_grad();
        backward(bce_with_logits(model(x), targets));
        optimizer.step();
        if (accuracy(model, x, labels) == 1.0) return step;
    }
    return max_steps + 1;
}

}  // namespace

TEST_CASE("a 2-layer MLP learns XOR") {
    Rng rng(42);
    Sequential net;
    net.add<Linear>(2, 8, rng);
    net.add<Tanh>();
    net.add<Linear>(8, 1, rng);
    AdamOptions options;
    options.lr = 0.05f;
    Adam optimizer(net.parameters(), options);
    const Var x(Tensor{{0, 0}, {0, 1}, {1, 0}, {1, 1}});
    const Tensor labels{{0}, {1}, {1}, {0}};

    CHECK(accuracy(net, x, labels) < 1.0);  // not solved by the initialisation
    MESSAGE("XOR solved after ", steps_to_perfect(net, optimizer, x, labels, 100), " steps (at most 100)");
    CHECK(accuracy(net, x, labels) == 1.0);
}

TEST_CASE("logistic regression separates a linearly separable set") {
    // Points labelled by the side of the line x0 - 2 x1 + 0.25 = 0, keeping a
    // margin of 0.1 so that a perfect separator exists with room to spare.
    Rng rng(5);
    constexpr std::size_t kPoints = 64;
    Tensor points = Tensor::from_shape({kPoints, 2});
    Tensor labels = Tensor::from_shape({kPoints, 1});
    for (std::size_t i = 0; i < kPoints;) {
        const float a = rng.uniform(-1.f, 1.f), b = rng.uniform(-1.f, 1.f);
        const float side = a - 2.f * b + 0.25f;
        if (std::abs(side) < 0.1f) continue;
        points(i, 0) = a;
        points(i, 1) = b;
        labels(i, 0) = side > 0.f ? 1.f : 0.f;
        ++i;
    }
    Linear model(2, 1, rng);
    SGD optimizer(model.parameters(), 1.f, 0.9f);
    const Var x(points);

    CHECK(accuracy(model, x, labels) < 1.0);
    MESSAGE("separated after ", steps_to_perfect(model, optimizer, x, labels, 200), " steps (at most 200)");
    CHECK(accuracy(model, x, labels) == 1.0);
}

TEST_CASE("named_parameters names each parameter by its path") {
    Rng rng(1);
    Sequential net;
    auto& first = net.add<Linear>(3, 4, rng);
    net.add<ReLU>();
    net.add<Linear>(4, 2, rng);
    auto& inner = net.add<Sequential>();
    inner.add<Linear>(2, 1, rng);

    const NamedParameters named = net.named_parameters();
    const std::vector<std::pair<std::string, Shape>> expected = {
        {"0.weight", {3, 4}}, {"0.bias", {1, 4}}, {"2.weight", {4, 2}},
        {"2.bias", {1, 2}},   {"3.0.weight", {2, 1}}, {"3.0.bias", {1, 1}},
    };
    REQUIRE(named.size() == expected.size());
    const std::vector<Var> plain = net.parameters();
    REQUIRE(plain.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        CAPTURE(i);
        CHECK(named[i].first == expected[i].first);
        CHECK(named[i].second.shape() == expected[i].second);
        CHECK(&plain[i].value() == &named[i].second.value());  // same order, same nodes
    }
    // Handles to the layer's own parameters, not copies.
    CHECK(&named[0].second.value() == &first.weight.value());
    CHECK(&named[1].second.value() == &first.bias.value());
}
