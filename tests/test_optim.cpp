// Optimizers against the textbook update rules computed here in double, the
// pieces around them (weight decay, gradient clipping, learning-rate
// schedules, loading state), and small learning problems that the tape, the
// modules and the optimizers must solve together.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xio.hpp>
#include <xtensor/xmath.hpp>

#include <xgrad/core/archive.hpp>
#include <xgrad/nn.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/optim.hpp>

#include "helpers.hpp"

using namespace xgrad;
using doctest::Contains;

namespace {

// The factor of step t (1-based) and the pattern it scales: the gradient
// changes sign and size between steps, so that momentum and Adam's moments
// matter to the result.
const float kStepFactor[] = {1.f, -0.5f, 2.f, 0.25f, -3.f, 1.5f, -0.75f, 0.5f, 4.f, -1.f};
const float kGradientPattern[] = {0.5f, -1.5f, 2.f, -0.25f, 3.f, -4.f};
const float kStartPattern[] = {1.f, -2.f, 0.5f, 3.f, 0.25f, -1.f};

Tensor pattern_tensor(const Shape& shape, const float (&pattern)[6], float factor = 1.f) {
    Tensor t = Tensor::from_shape(shape);
    for (std::size_t i = 0; i < t.size(); ++i) t.flat(i) = pattern[i % 6] * factor;
    return t;
}

Tensor gradient_of_step(int t, const Shape& shape = {2, 3}) {
    return pattern_tensor(shape, kGradientPattern, kStepFactor[t - 1]);
}

// One element's expected trajectory: its value and up to two moment estimates.
struct Expected {
    double value, first = 0.0, second = 0.0;
};
using TextbookUpdate = std::function<void(Expected&, double gradient, int t)>;
using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(std::vector<Var>)>;

// Runs `steps` steps where d loss / d w is gradient_of_step(t) exactly
// (loss = sum(w * c)), comparing w after each with `update` applied in
// double. `before_step` may change the optimizer (its learning rate) first.
void check_steps(const MakeOptimizer& make_optimizer, const TextbookUpdate& update, const Shape& shape = {2, 3}, int steps = 3,
                 const std::function<void(Optimizer&, int)>& before_step = nullptr) {
    Var w(pattern_tensor(shape, kStartPattern), true);
    const auto optimizer = make_optimizer({w});
    std::vector<Expected> expected;
    for (float v : w.value()) expected.push_back({v});
    for (int t = 1; t <= steps; ++t) {
        const Tensor g = gradient_of_step(t, shape);
        optimizer->zero_grad();
        backward(sum(w * Var(g)));
        if (before_step) before_step(*optimizer, t);
        optimizer->step();
        REQUIRE(w.shape() == shape);
        for (std::size_t i = 0; i < expected.size(); ++i) {
            update(expected[i], g.flat(i), t);
            CAPTURE(t);
            CAPTURE(i);
            CHECK(w.value().flat(i) == doctest::Approx(expected[i].value).epsilon(2e-6));
        }
    }
}

// The original (2, 3) parameter and parameters of other ranks: a scalar, a
// vector (a bias) and a rank-3 tensor.
const Shape kShapes[] = {{2, 3}, {}, {5}, {2, 1, 3}};

// The reference uses the optimizer's own float constants, widened, so that
// only the arithmetic differs (0.9f is not 0.9).
double wide(float v) { return static_cast<double>(v); }

// Kingma & Ba's Algorithm 1 on one element, in double.
void adam_reference(Expected& e, double g, int t, const AdamOptions& o, double lr) {
    e.first = wide(o.beta1) * e.first + (1 - wide(o.beta1)) * g;
    e.second = wide(o.beta2) * e.second + (1 - wide(o.beta2)) * g * g;
    const double m_hat = e.first / (1 - std::pow(wide(o.beta1), t));
    const double v_hat = e.second / (1 - std::pow(wide(o.beta2), t));
    e.value -= lr * m_hat / (std::sqrt(v_hat) + wide(o.eps));
}

}  // namespace

TEST_CASE("SGD matches p -= lr * v, v = momentum * v + g") {
    const float lr = 0.1f;
    for (const Shape& shape : kShapes) {
        for (const float momentum : {0.f, 0.9f}) {
            CAPTURE(shape_string(shape));
            CAPTURE(momentum);
            check_steps([&](std::vector<Var> p) { return std::make_unique<SGD>(std::move(p), lr, momentum); },
                        [&](Expected& e, double g, int) {
                            e.first = wide(momentum) * e.first + g;
                            e.value -= wide(lr) * e.first;
                        },
                        shape);
        }
    }
}

TEST_CASE("SGD with weight decay, dampening and nesterov matches torch.optim.SGD's rule") {
    const float lr = 0.1f;
    struct Case {
        const char* what;
        SGDOptions o;
    };
    SGDOptions decay, damped, nesterov, plain_decay;
    decay.momentum = 0.9f;
    decay.weight_decay = 0.05f;
    damped.momentum = 0.8f;
    damped.dampening = 0.3f;
    nesterov.momentum = 0.9f;
    nesterov.nesterov = true;
    nesterov.weight_decay = 0.01f;
    plain_decay.weight_decay = 0.2f;
    const Case cases[] = {{"momentum + weight decay", decay},
                          {"dampening: the first step takes all of d", damped},
                          {"nesterov", nesterov},
                          {"weight decay, no momentum", plain_decay}};
    for (const Shape& shape : kShapes) {
        for (const Case& c : cases) {
            CAPTURE(shape_string(shape));
            INFO(c.what);
            const SGDOptions o = c.o;
            check_steps([&](std::vector<Var> p) { return std::make_unique<SGD>(std::move(p), lr, o); },
                        [&](Expected& e, double g, int t) {
                            const double d = g + wide(o.weight_decay) * e.value;
                            if (o.momentum == 0.f) {
                                e.value -= wide(lr) * d;
                                return;
                            }
                            e.first = t == 1 ? d : wide(o.momentum) * e.first + (1 - wide(o.dampening)) * d;
                            e.value -= wide(lr) * (o.nesterov ? d + wide(o.momentum) * e.first : e.first);
                        },
                        shape);
        }
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
    for (const Shape& shape : kShapes) {
        for (const AdamOptions& o : {defaults, custom}) {
            CAPTURE(shape_string(shape));
            CAPTURE(o.beta1);
            check_steps([&](std::vector<Var> p) { return std::make_unique<Adam>(std::move(p), o); },
                        [&](Expected& e, double g, int t) { adam_reference(e, g, t, o, wide(o.lr)); }, shape);
        }
    }
}

TEST_CASE("Adam's bias corrections are exact: 10 steps stay within 3e-7 of the double-precision algorithm") {
    // Rounding b^t to float before 1 - b^t (xgrad 0.1's 1.f - float(pow(b2, t)))
    // costs 1 - 0.999^t up to 7e-6 of its value in the first steps. The
    // library computes the corrections in double; its remaining error is the
    // float arithmetic of the update itself, about 1.5e-7 here.
    constexpr double kBound = 3e-7;
    AdamOptions o;  // beta1 0.9, beta2 0.999, eps 1e-8
    o.lr = 1.f;     // steps as large as the parameters: the corrections' error shows in them
    // Every gradient pushes its parameter away from zero (the factors keep
    // their sign, the sizes vary), so relative errors stay meaningful.
    const float factors[] = {1.f, 0.5f, 2.f, 0.25f, 3.f, 1.5f, 0.75f, 0.5f, 4.f, 1.f};
    const Tensor start{{-1.f, 2.f, -0.5f}, {3.f, -0.25f, 1.f}};
    Var w(start, true);
    Adam adam({w}, o);

    // The exact reference, and the same with float-rounded corrections.
    std::vector<Expected> exact, rounded;
    for (float v : start) {
        exact.push_back({v});
        rounded.push_back({v});
    }
    double worst = 0.0, worst_rounded = 0.0;
    for (int t = 1; t <= 10; ++t) {
        const Tensor g = pattern_tensor({2, 3}, kGradientPattern, factors[t - 1]);
        adam.zero_grad();
        backward(sum(w * Var(g)));
        adam.step();
        const double c1 = double(1.f - float(std::pow(o.beta1, t))), c2 = double(1.f - float(std::pow(o.beta2, t)));
        for (std::size_t i = 0; i < exact.size(); ++i) {
            adam_reference(exact[i], g.flat(i), t, o, wide(o.lr));
            Expected& r = rounded[i];
            r.first = wide(o.beta1) * r.first + (1 - wide(o.beta1)) * g.flat(i);
            r.second = wide(o.beta2) * r.second + (1 - wide(o.beta2)) * double(g.flat(i)) * double(g.flat(i));
            r.value -= wide(o.lr) * (r.first / c1) / (std::sqrt(r.second / c2) + wide(o.eps));

            const double error = std::abs(double(w.value().flat(i)) - exact[i].value) / std::abs(exact[i].value);
            CAPTURE(t);
            CAPTURE(i);
            CHECK(error < kBound);
            worst = std::max(worst, error);
            worst_rounded = std::max(worst_rounded, std::abs(r.value - exact[i].value) / std::abs(exact[i].value));
        }
    }
    MESSAGE("Adam, 10 steps: worst relative error ", worst, "; with float-rounded corrections it would be ", worst_rounded);
    // The bound discriminates: the float-rounded corrections alone, even
    // with every other operation in double, break it.
    CHECK(worst_rounded > 2 * kBound);
    CHECK(adam.steps() == 10);
}

TEST_CASE("a learning-rate schedule applied before each step: Adam keeps its moments across set_lr") {
    const StepLr schedule(0.2f, 2, 0.5f);
    AdamOptions o;
    o.lr = 123.f;  // replaced before the first step
    check_steps([&](std::vector<Var> p) { return std::make_unique<Adam>(std::move(p), o); },
                [&](Expected& e, double g, int t) { adam_reference(e, g, t, o, wide(schedule.lr_at(t))); }, {2, 3}, 6,
                [&](Optimizer& optimizer, int t) {
                    schedule.apply(optimizer, t);
                    CHECK(optimizer.lr() == schedule.lr_at(t));
                });
}

TEST_CASE("AdamW decays each parameter by lr * weight_decay * p, decoupled from the gradient") {
    SUBCASE("with a zero gradient the decay is all there is") {
        // m = v = 0, so Adam's step is 0 / (0 + eps) = 0, and p = p0 (1 - lr wd)^t.
        const Tensor start{{1.f, -2.f}, {4.f, 0.5f}};
        Var w(start, true);
        AdamOptions o;
        o.lr = 0.5f;
        AdamW adamw({w}, o, 0.5f);  // 1 - lr wd = 0.75: every value below is exact
        float keep = 1.f;
        for (int t = 1; t <= 3; ++t) {
            adamw.step();
            keep *= 0.75f;
            CHECK(w.value() == Tensor(start * keep));
        }
    }
    SUBCASE("one step by hand, and what coupled L2 decay would give instead") {
        // The first step has m_hat = g and v_hat = g^2:
        //   p1 = p0 (1 - lr wd) - lr g / (|g| + eps).
        const Tensor start{2.f, -1.f, 0.5f}, g{0.5f, -4.f, 0.f};
        const float lr = 0.1f, wd = 0.2f;
        AdamOptions o;
        o.lr = lr;
        const auto one_step = [&](bool decoupled, float l2) {
            Var w(start, true);
            std::unique_ptr<Optimizer> optimizer;
            if (decoupled) {
                optimizer = std::make_unique<AdamW>(std::vector<Var>{w}, o, wd);
            } else {
                optimizer = std::make_unique<Adam>(std::vector<Var>{w}, o);
            }
            backward(sum(w * Var(g)) + sum(w * w) * (l2 / 2.f));  // gradient g + l2 p
            optimizer->step();
            return Tensor(w.value());
        };
        const Tensor decoupled = one_step(true, 0.f);
        for (std::size_t i = 0; i < start.size(); ++i) {
            const double p0 = start(i), gi = g(i);
            const double by_hand = p0 * (1 - wide(lr) * wide(wd)) - wide(lr) * gi / (std::abs(gi) + wide(o.eps));
            CAPTURE(i);
            CHECK(decoupled(i) == doctest::Approx(by_hand).epsilon(1e-6));
        }
        // The decay does not pass through Adam's normalisation: adding it to
        // the gradient instead moves the parameters by about lr whatever wd is.
        const Tensor coupled = one_step(false, wd);
        CHECK(coupled(2) == doctest::Approx(0.5 - 0.1).epsilon(1e-6));  // only decay acts on it, normalised to a full step
        CHECK(decoupled(2) == doctest::Approx(0.5 * (1 - 0.02)).epsilon(1e-6));
        // And without weight decay AdamW is Adam.
        Var a(start, true), b(start, true);
        Adam plain({a}, o);
        AdamW none({b}, o, 0.f);
        backward(sum(a * Var(g)));
        backward(sum(b * Var(g)));
        plain.step();
        none.step();
        CHECK(a.value() == b.value());
    }
    SUBCASE("several steps, several ranks, against the double reference") {
        AdamOptions o;
        o.lr = 0.1f;
        const float wd = 0.05f;
        for (const Shape& shape : kShapes) {
            CAPTURE(shape_string(shape));
            check_steps([&](std::vector<Var> p) { return std::make_unique<AdamW>(std::move(p), o, wd); },
                        [&](Expected& e, double g, int t) {
                            e.value -= wide(o.lr) * wide(wd) * e.value;  // first shrink, then Adam's step on p
                            adam_reference(e, g, t, o, wide(o.lr));
                        },
                        shape, 5);
        }
    }
    SUBCASE("frozen parameters are not decayed") {
        Var frozen(Tensor{1.f, 2.f}, true), trained(Tensor{1.f, 2.f}, true);
        frozen.set_requires_grad(false);
        AdamOptions o;
        o.lr = 0.5f;
        AdamW adamw({frozen, trained}, o, 0.5f);
        adamw.step();
        CHECK(frozen.value() == Tensor{1.f, 2.f});
        CHECK(trained.value() == Tensor{0.75f, 1.5f});
    }
    SUBCASE("a weight decay that is negative or not finite is refused") {
        Var w(Tensor{1.f}, true);
        for (const float wd : {-0.1f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
            CAPTURE(wd);
            CHECK_THROWS_WITH_AS(AdamW({w}, AdamOptions{}, wd), Contains("weight decay"), std::invalid_argument);
        }
    }
}

TEST_CASE("clip_grad_norm scales all gradients by one factor down to max_norm") {
    Var a(Tensor{{1, 1}, {1, 1}}, true), b(Tensor{1, 1, 1}, true), frozen(Tensor{1}, true), scalar = Var::scalar(1.f, true);
    a.mutable_grad() = Tensor{{3, 0}, {0, 4}};
    b.mutable_grad() = Tensor{0, 12, 0};
    frozen.mutable_grad() = Tensor{100};
    frozen.set_requires_grad(false);                   // neither counted nor scaled
    const std::vector<Var> all{a, b, frozen, scalar};  // scalar: a zero gradient of rank 0
    SUBCASE("a norm within the bound is left alone") {
        CHECK(clip_grad_norm(all, 13.1) == doctest::Approx(13.0));  // sqrt(9 + 16 + 144)
        CHECK(clip_grad_norm(all, 100.0) == doctest::Approx(13.0));
        CHECK(a.grad() == Tensor{{3, 0}, {0, 4}});
        CHECK(b.grad() == Tensor{0, 12, 0});
    }
    SUBCASE("PyTorch's factor max_norm / (norm + 1e-6): a norm equal to the bound is scaled by a hair") {
        CHECK(clip_grad_norm(all, 13.0) == doctest::Approx(13.0));
        CHECK(b.grad()(1) == static_cast<float>(12.0 * static_cast<float>(13.0 / (13.0 + 1e-6))));
        CHECK(b.grad()(1) < 12.f);
        Var zero(Tensor{0, 0}, true);
        zero.mutable_grad() = Tensor{0, 0};
        CHECK(clip_grad_norm({zero}, 0.0) == 0.0);  // 0 / (0 + 1e-6): no NaN
        CHECK(zero.grad() == Tensor{0, 0});
    }
    SUBCASE("a larger norm is scaled down, keeping the direction") {
        CHECK(clip_grad_norm(all, 6.5) == doctest::Approx(13.0));            // the norm before clipping
        CHECK(xt::allclose(a.grad(), Tensor{{1.5, 0}, {0, 2}}, 1e-6, 0.0));  // factor 6.5 / (13 + 1e-6)
        CHECK(xt::allclose(b.grad(), Tensor{0, 6, 0}, 1e-6, 0.0));
        CHECK(b.grad()(1) < 6.f);
        CHECK(frozen.grad() == Tensor{100});
        CHECK(scalar.grad()() == 0.f);
        CHECK(clip_grad_norm(all, 100.0) == doctest::Approx(6.5));
    }
    SUBCASE("a non-finite norm: PyTorch's zeros and NaNs, or an error that changes nothing") {
        const float inf = std::numeric_limits<float>::infinity();
        b.mutable_grad()(0) = inf;
        CHECK_THROWS_WITH_AS(clip_grad_norm(all, 1.0, true),
                             "xgrad::clip_grad_norm: the gradients' total norm is inf (expected a finite number, as "
                             "error_if_nonfinite asks)",
                             std::runtime_error);
        CHECK(a.grad() == Tensor{{3, 0}, {0, 4}});
        CHECK(clip_grad_norm(all, 1.0) == inf);  // factor 1 / inf = 0
        CHECK(a.grad() == Tensor{{0, 0}, {0, 0}});
        CHECK(std::isnan(b.grad()(0)));  // inf * 0
        CHECK(b.grad()(1) == 0.f);
        b.mutable_grad() = Tensor{std::numeric_limits<float>::quiet_NaN(), 12, 0};
        a.mutable_grad() = Tensor{{3, 0}, {0, 4}};
        CHECK(std::isnan(clip_grad_norm(all, 1.0)));
        CHECK(xt::all(xt::isnan(a.grad())));
        CHECK(frozen.grad() == Tensor{100});  // not in the norm, not scaled
    }
    SUBCASE("only the parameters in the list") {
        CHECK(clip_grad_norm({b}, 6.0) == doctest::Approx(12.0));
        CHECK(xt::allclose(b.grad(), Tensor{0, 6, 0}, 1e-6, 0.0));
        CHECK(a.grad() == Tensor{{3, 0}, {0, 4}});
    }
}

TEST_CASE("learning-rate schedules: StepLr and CosineLr") {
    SUBCASE("StepLr: base * gamma^floor(step / every)") {
        const StepLr s(0.1f, 3, 0.5f);
        for (long step : {0L, 1L, 2L}) CHECK(s.lr_at(step) == 0.1f);
        for (long step : {3L, 4L, 5L}) CHECK(s.lr_at(step) == 0.05f);
        CHECK(s.lr_at(6) == 0.025f);
        CHECK(s.lr_at(30) == doctest::Approx(0.1 * std::pow(0.5, 10)));
        CHECK(s.lr_at(-4) == 0.1f);  // before the start: the base rate
        CHECK_THROWS_AS(StepLr(0.1f, 0, 0.5f), std::invalid_argument);
        CHECK_THROWS_AS(StepLr(0.1f, -1, 0.5f), std::invalid_argument);
    }
    SUBCASE("CosineLr: linear warm-up, then half a cosine down to the final rate") {
        const CosineLr c(1.f, 10, 0.1f, 2);
        CHECK(c.lr_at(0) == 0.f);
        CHECK(c.lr_at(1) == 0.5f);
        CHECK(c.lr_at(2) == 1.f);  // the end of the warm-up: cosine at 0
        CHECK(c.lr_at(4) == doctest::Approx(0.1 + 0.45 * (1 + std::cos(3.14159265358979323846 / 4))));
        CHECK(c.lr_at(6) == doctest::Approx(0.55));  // half way: the mean of base and final
        CHECK(c.lr_at(10) == 0.1f);
        CHECK(c.lr_at(1000) == 0.1f);
        for (long step = 2; step < 10; ++step) CHECK(c.lr_at(step + 1) < c.lr_at(step));
        const CosineLr plain(0.5f, 4);
        CHECK(plain.lr_at(0) == 0.5f);
        CHECK(plain.lr_at(2) == doctest::Approx(0.25));
        CHECK(plain.lr_at(4) == 0.f);
        CHECK_THROWS_AS(CosineLr(1.f, 10, 0.f, 10), std::invalid_argument);
        CHECK_THROWS_AS(CosineLr(1.f, 10, 0.f, -1), std::invalid_argument);
        CHECK_THROWS_AS(CosineLr(1.f, 0), std::invalid_argument);
    }
    SUBCASE("apply sets the optimizer's rate") {
        Var w(Tensor{1.f}, true);
        SGD sgd({w}, 1.f);
        const CosineLr c(1.f, 10, 0.1f, 2);
        c.apply(sgd, 1);
        CHECK(sgd.lr() == 0.5f);
        StepLr(0.1f, 3, 0.5f).apply(sgd, 7);
        CHECK(sgd.lr() == 0.025f);
    }
}

TEST_CASE("set_lr on the Optimizer base class") {
    Var w(Tensor{1.f, -2.f}, true), v(Tensor{1.f, -2.f}, true);
    SGD sgd({w}, 0.5f);
    Adam adam({v});
    for (Optimizer* o : {static_cast<Optimizer*>(&sgd), static_cast<Optimizer*>(&adam)}) {
        o->set_lr(0.25f);
        CHECK(o->lr() == 0.25f);
        for (const float bad : {-0.1f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
            CAPTURE(bad);
            CHECK_THROWS_WITH_AS(o->set_lr(bad), Contains("learning rate"), std::invalid_argument);
            CHECK(o->lr() == 0.25f);  // unchanged
        }
    }
    // The step uses the new rate.
    backward(sum(w * Var(Tensor{2.f, 4.f})));
    sgd.step();
    CHECK(w.value() == Tensor{0.5f, -3.f});
    backward(sum(v * Var(Tensor{2.f, -4.f})));
    adam.step();  // the first Adam step moves each parameter by lr
    CHECK(v.value()(0) == doctest::Approx(0.75).epsilon(1e-6));
    CHECK(v.value()(1) == doctest::Approx(-1.75).epsilon(1e-6));
    // A rate of 0 is allowed and stops the updates.
    sgd.set_lr(0.f);
    sgd.step();
    CHECK(w.value() == Tensor{0.5f, -3.f});
    // Constructors check the rate the same way.
    CHECK_THROWS_AS(SGD({w}, -1.f), std::invalid_argument);
    AdamOptions nan_lr;
    nan_lr.lr = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(Adam({w}, nan_lr), std::invalid_argument);
}

namespace {

Archive state_of(const Optimizer& o) {
    Archive a;
    o.save(a, "s.");
    return a;
}

// The same entries with the same bits.
bool same_archive(const Archive& a, const Archive& b) {
    if (a.texts() != b.texts() || a.tensors().size() != b.tensors().size()) return false;
    for (const auto& [name, t] : a.tensors()) {
        if (!b.contains(name)) return false;
        const Tensor& u = b.tensor(name);
        if (t.shape() != u.shape() || std::memcmp(t.data(), u.data(), t.size() * sizeof(float)) != 0) return false;
    }
    return true;
}

// Two parameters with two steps of history, so every state slot is nonzero.
struct Trained {
    Var a{Tensor{{1.f, 2.f}, {3.f, 4.f}}, true};
    Var b{Tensor{-1.f, 0.5f, 2.f}, true};
    void steps(Optimizer& o, int n) {
        for (int i = 0; i < n; ++i) {
            o.zero_grad();
            backward(sum(a * a) + sum(b * Var(Tensor{1.f, -2.f, 3.f})));
            o.step();
        }
    }
};

// A copy of `from` whose first slot `first` is changed to 7s, so that a
// load that took entries before failing on a later one would show.
Archive with_changed_first(const Archive& from, const std::string& first) {
    Archive a = from;
    a.put(first, Tensor(from.tensor(first).shape(), 7.f));
    return a;
}

}  // namespace

TEST_CASE("SGD::load is all or nothing") {
    Trained p;
    SGD sgd({p.a, p.b}, 0.1f, 0.9f);
    p.steps(sgd, 2);
    const Archive before = state_of(sgd);
    REQUIRE(before.tensors().size() == 2);

    Archive wrong_shape = with_changed_first(before, "s.velocity.0");
    wrong_shape.put("s.velocity.1", Tensor(Shape{1, 3}, 0.f));  // (3) expected
    CHECK_THROWS_WITH_AS(sgd.load(wrong_shape, "s."), Contains("'s.velocity.1'"), ShapeError);
    CHECK_THROWS_WITH_AS(sgd.load(wrong_shape, "s."), Contains("(1, 3)"), ShapeError);
    CHECK(same_archive(state_of(sgd), before));

    Archive missing;
    missing.put("s.velocity.0", Tensor(Shape{2, 2}, 7.f));
    CHECK_THROWS_WITH_AS(sgd.load(missing, "s."), Contains("'s.velocity.1'"), std::out_of_range);
    CHECK(same_archive(state_of(sgd), before));

    // The refused loads left the optimizer exactly as a twin that never saw them.
    Trained q;
    SGD twin({q.a, q.b}, 0.1f, 0.9f);
    q.steps(twin, 2);
    p.steps(sgd, 1);
    q.steps(twin, 1);
    CHECK(p.a.value() == q.a.value());
    CHECK(p.b.value() == q.b.value());

    // A good load takes every entry.
    const Archive good = with_changed_first(state_of(sgd), "s.velocity.0");
    sgd.load(good, "s.");
    CHECK(same_archive(state_of(sgd), good));
}

TEST_CASE("Adam::load is all or nothing") {
    Trained p;
    Adam adam({p.a, p.b});
    p.steps(adam, 2);
    const Archive before = state_of(adam);
    REQUIRE(before.tensors().size() == 4);
    REQUIRE(before.text("s.t") == "2");

    const auto refused = [&](const Archive& bad, const char* message) {
        CAPTURE(message);
        CHECK_THROWS_WITH(adam.load(bad, "s."), Contains(message));
        CHECK(same_archive(state_of(adam), before));
        CHECK(adam.steps() == 2);
    };
    SUBCASE("a slot of another shape") {
        Archive bad = with_changed_first(before, "s.m.0");
        bad.put("s.v.1", Tensor(Shape{3, 1}, 0.f));
        CHECK_THROWS_AS(adam.load(bad, "s."), ShapeError);
        refused(bad, "'s.v.1'");
    }
    SUBCASE("a missing slot") {
        Archive bad;
        for (const auto& [name, t] : before.tensors()) {
            if (name != "s.v.1") bad.put(name, Tensor(t.shape(), 7.f));
        }
        bad.put_text("s.t", "9");
        CHECK_THROWS_AS(adam.load(bad, "s."), std::out_of_range);
        refused(bad, "'s.v.1'");
    }
    SUBCASE("a missing step count") {
        Archive bad;
        for (const auto& [name, t] : before.tensors()) bad.put(name, Tensor(t.shape(), 7.f));
        CHECK_THROWS_AS(adam.load(bad, "s."), std::out_of_range);
        refused(bad, "'s.t'");
    }
    SUBCASE("a step count that is not a number >= 0") {
        for (const char* text : {"", "abc", "-1", "3x", " ", "99999999999999999999999"}) {
            CAPTURE(text);
            Archive bad = with_changed_first(before, "s.v.0");
            bad.put_text("s.t", text);
            CHECK_THROWS_AS(adam.load(bad, "s."), std::runtime_error);
            refused(bad, "'s.t'");
        }
    }
    SUBCASE("a good load takes every entry and the step count") {
        Archive good = with_changed_first(before, "s.m.1");
        good.put_text("s.t", "5");
        adam.load(good, "s.");
        CHECK(same_archive(state_of(adam), good));
        CHECK(adam.steps() == 5);
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
    const Var p = Var::scalar(1.f, true);
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
    const Tensor labels = test::matrix({{0}, {1}, {1}, {0}});

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

    const NamedVars named = net.named_parameters();
    // Weights (out, in) as in PyTorch, biases rank 1 (out).
    const std::vector<std::pair<std::string, Shape>> expected = {
        {"0.weight", {4, 3}}, {"0.bias", {4}}, {"2.weight", {2, 4}}, {"2.bias", {2}}, {"3.0.weight", {1, 2}}, {"3.0.bias", {1}},
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
    CHECK(net.named_buffers().empty());  // Linear keeps no buffers

    // A layer without a bias registers only its weight.
    Linear no_bias(3, 2, rng, Init::xavier_uniform, false);
    REQUIRE(no_bias.named_parameters().size() == 1);
    CHECK(no_bias.named_parameters()[0].first == "weight");
    CHECK_FALSE(no_bias.bias.defined());
}
