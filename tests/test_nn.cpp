// Modules: parameters and buffers by name, train/eval down the tree, saving
// and all-or-nothing loading, and the initialisations.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>

#include <xgrad.hpp>

#include "helpers.hpp"

namespace {

using namespace xgrad;

// A module with a parameter, a buffer and a child, as a user writes one.
class Scaled : public Module {
public:
    explicit Scaled(Rng& rng) : inner(3, 2, rng) {
        gain = Var(Tensor({2}, 1.5f), true);
        count = Var(Tensor(Shape{}, 0.f));
        register_parameter("gain", gain);
        register_buffer("count", count);
        register_module("inner", inner);
    }
    Var forward(const Var& x) override {
        if (is_training()) count.mutable_value() += 1.f;
        return inner(x) * gain;
    }
    Linear inner;
    Var gain, count;
};

TEST_CASE("parameters and buffers are named down the tree, in registration order") {
    Rng rng(1);
    Sequential net;
    net.add<Scaled>(rng);
    net.add<ReLU>();
    net.add<Linear>(2, 1, rng, Init::he_normal, false);
    std::vector<std::string> names;
    for (const auto& [name, p] : net.named_parameters()) names.push_back(name);
    CHECK(names == std::vector<std::string>{"0.gain", "0.inner.weight", "0.inner.bias", "2.weight"});
    const NamedVars buffers = net.named_buffers();
    REQUIRE(buffers.size() == 1);
    CHECK(buffers[0].first == "0.count");
    CHECK(net.parameters().size() == 4);
    CHECK_FALSE(buffers[0].second.requires_grad());
}

TEST_CASE("train() and eval() switch every module below, and a layer added later follows its container") {
    Rng rng(2);
    Sequential net;
    Scaled& scaled = net.add<Scaled>(rng);
    Dropout& dropout = net.add<Dropout>(0.5f, rng);
    net.eval();
    CHECK_FALSE(net.is_training());
    CHECK_FALSE(scaled.is_training());
    CHECK_FALSE(scaled.inner.is_training());
    CHECK_FALSE(dropout.is_training());
    Dropout& late = net.add<Dropout>(0.5f, rng);
    CHECK_FALSE(late.is_training());
    const Var x(Tensor({4, 3}, 1.f));
    const Var y = net(x);
    CHECK(scaled.count.item() == 0.f);                     // evaluation mode: the buffer is left alone
    CHECK(xt::all(xt::equal(y.value(), net(x).value())));  // dropout is the identity
    net.train();
    CHECK(late.is_training());
    net(x);
    CHECK(scaled.count.item() == 1.f);
}

TEST_CASE("save and load carry parameters and buffers bit-exactly; a failed load changes nothing") {
    Rng rng(3), other_rng(4);
    Scaled a(rng), b(other_rng);
    a.count.mutable_value() = Tensor(Shape{}, 7.f);
    Archive archive;
    a.save(archive, "m.");
    CHECK(archive.contains("m.count"));
    CHECK(archive.contains("m.inner.weight"));
    b.load(archive, "m.");
    CHECK(b.count.item() == 7.f);
    CHECK(b.inner.weight.value() == a.inner.weight.value());
    CHECK(b.gain.value() == a.gain.value());

    // A wrong shape in the last entry: nothing is taken, not even the first ones.
    Archive damaged = archive;
    damaged.put("m.count", Tensor({2}, 0.f));
    Scaled c(other_rng);
    const Tensor before = c.inner.weight.value();
    CHECK_THROWS_WITH_AS(c.load(damaged, "m."), doctest::Contains("'m.count' is () but the archive holds (2)"), ShapeError);
    CHECK(c.inner.weight.value() == before);
    Archive missing;
    a.inner.save(missing, "m.inner.");
    CHECK_THROWS_AS(c.load(missing, "m."), std::out_of_range);
    CHECK(c.inner.weight.value() == before);
}

TEST_CASE("freeze and unfreeze reach every parameter, and no buffer") {
    Rng rng(5);
    Scaled m(rng);
    m.freeze();
    for (const Var& p : m.parameters()) CHECK_FALSE(p.requires_grad());
    m.unfreeze();
    for (const Var& p : m.parameters()) CHECK(p.requires_grad());
    CHECK_FALSE(m.count.requires_grad());
}

TEST_CASE("Flatten and Reshape modules") {
    const Var x = Var(test::random_tensor({2, 3, 4}, -1.f, 1.f, 6), true);
    Flatten flatten;
    Reshape reshape({-1, 4, 3});
    CHECK(flatten(x).shape() == Shape{2, 12});
    CHECK(reshape(flatten(x)).shape() == Shape{2, 4, 3});
}

TEST_CASE("MaxPool2d, AvgPool2d and Upsample modules: the ops with their settings, no parameters") {
    // (1, 1, 2, 4): two 2 x 2 windows side by side.
    const Var x(Tensor{{{{1, 2, 5, 6}, {3, 4, 7, 8}}}}, true);
    MaxPool2d max_pool(2);
    AvgPool2d avg_pool(2);
    AvgPool2d avg_pool_padded(Size2{1, 2}, Size2{1, 2}, Size2{0, 1});
    Upsample upsample(Size2{2, 1});
    CHECK(max_pool.parameters().empty());
    CHECK(avg_pool.parameters().empty());
    CHECK(upsample.parameters().empty());
    CHECK(max_pool(x).value() == Tensor{{{{4, 8}}}});
    CHECK(avg_pool(x).value() == Tensor{{{{2.5f, 6.5f}}}});
    // 1 x 2 windows, stride 2 along the width, one zero of padding each side:
    // (0, 1), (2, 5), (6, 0) on the first row.
    CHECK(avg_pool_padded(x).value() == Tensor{{{{0.5f, 3.5f, 3.f}, {1.5f, 5.5f, 4.f}}}});
    const Var up = upsample(x);
    CHECK(up.value() == Tensor{{{{1, 2, 5, 6}, {1, 2, 5, 6}, {3, 4, 7, 8}, {3, 4, 7, 8}}}});
    // The gradient of each module reaches x: AvgPool2d spreads dy evenly,
    // Upsample sums each block.
    backward(sum(avg_pool(x)));
    CHECK(x.grad() == Tensor({1, 1, 2, 4}, 0.25f));
    Var y(Tensor{{{{1, 2}, {3, 4}}}}, true);
    backward(sum(upsample(y)));
    CHECK(y.grad() == Tensor({1, 1, 2, 2}, 2.f));
}

TEST_CASE("BatchNorm2d: running statistics are buffers, switched by train/eval, untouched by optimizers") {
    BatchNorm2d bn(3);
    CHECK(bn.named_parameters().size() == 2);
    REQUIRE(bn.named_buffers().size() == 2);
    CHECK(bn.named_buffers()[0].first == "running_mean");
    const Var x = Var(test::random_tensor({4, 3, 2, 2}, 1.f, 3.f, 8), true);
    Adam adam(bn.parameters());
    const Var loss = sum(bn(x) * bn(x));
    const Tensor mean_after = bn.running_mean.value();
    CHECK(xt::all(mean_after > 0.f));  // moved towards the batch means near 2
    backward(loss);
    adam.step();
    CHECK(bn.running_mean.value() == mean_after);  // the optimizer left the buffers alone
    bn.eval();
    const Tensor y1 = bn(x).value();
    CHECK(bn.running_mean.value() == mean_after);  // evaluation does not update them
    CHECK(y1 == bn(x).value());
    Archive archive;
    bn.save(archive);
    BatchNorm2d restored(3);
    restored.load(archive);
    restored.eval();
    CHECK(restored.running_var.value() == bn.running_var.value());
    CHECK(restored(x).value() == y1);
    CHECK_THROWS_WITH_AS(bn(Var::zeros({4, 3})), doctest::Contains("BatchNorm2d"), ShapeError);
    CHECK_NOTHROW(BatchNorm1d(3)(Var::zeros({4, 3})));
    LayerNorm ln({2, 2});
    CHECK(ln(x).shape() == x.shape());
    CHECK_THROWS_AS(ln(Var::zeros({4, 3})), ShapeError);
}

// A user's layer derived from ReLU, with a forward of its own.
class DoubledReLU : public ReLU {
public:
    Var forward(const Var& x) override { return relu(x) * 2.f; }
};

TEST_CASE("Sequential runs a BatchNorm and the rectifier after it as one op, with the same values and names") {
    Sequential net, single;  // single: the same layers, each run on its own below
    for (Sequential* s : {&net, &single}) {
        s->add<BatchNorm2d>(3);
        s->add<LeakyReLU>(0.2f);
        s->add<BatchNorm2d>(3);
        s->add<ReLU>();
        s->add<BatchNorm2d>(3);
        s->add<LeakyReLU>(-0.5f);  // a slope batch_norm does not take: run on its own
        s->add<BatchNorm2d>(3);    // last: nothing to fuse
    }
    for (std::size_t i : {0, 2, 4}) {
        auto &fused = dynamic_cast<BatchNorm&>(net[i]), &alone = dynamic_cast<BatchNorm&>(single[i]);
        fused.weight.mutable_value() = test::random_tensor({3}, -1.5f, 1.5f, 20 + i);  // negative: the mask flips
        fused.bias.mutable_value() = test::random_tensor({3}, -1.f, 1.f, 30 + i);
        alone.weight.mutable_value() = fused.weight.value();
        alone.bias.mutable_value() = fused.bias.value();
    }
    std::vector<std::string> names;
    for (const auto& [name, p] : net.named_parameters()) names.push_back(name);
    CHECK(names ==
          std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "6.weight", "6.bias"});
    const Var x(test::random_tensor({4, 3, 5, 5}, -2.f, 2.f, 9), true);
    const Tensor dy = test::random_tensor(x.shape(), -1.f, 1.f, 10);
    for (const bool training : {true, false}) {
        CAPTURE(training);
        net.train(training);
        single.train(training);
        const Var y = net(x);
        backward(sum(y * Var(dy)));
        const Tensor dx = x.grad();
        Var(x).zero_grad();
        Var h = x;
        for (std::size_t i = 0; i < single.size(); ++i) h = single[i](h);
        backward(sum(h * Var(dy)));
        CHECK(xt::allclose(y.value(), h.value(), 1e-6, 1e-6));
        CHECK(xt::allclose(dx, x.grad(), 1e-5, 1e-6));
        for (std::size_t k = 0; k < net.parameters().size(); ++k) {
            CHECK(xt::allclose(net.parameters()[k].grad(), single.parameters()[k].grad(), 1e-5, 1e-5));
        }
        Var(x).zero_grad();
        net.zero_grad();
        single.zero_grad();
    }
    CHECK(xt::allclose(dynamic_cast<BatchNorm&>(net[2]).running_var.value(),
                       dynamic_cast<BatchNorm&>(single[2]).running_var.value()));
    Sequential pair;  // one op: its result is batch_norm's, not relu's
    pair.add<BatchNorm2d>(3);
    pair.add<ReLU>();
    CHECK(std::string(pair(x).op_name()) == "batch_norm");
    Sequential own;  // a subclass's forward is its own: never skipped
    own.add<BatchNorm2d>(3);
    own.add<DoubledReLU>();
    CHECK(xt::allclose(own(x).value(), 2.f * pair(x).value()));
}

TEST_CASE("Sequential runs a Conv2d and the rectifier after it as one op, with the same values") {
    Rng rng(5);
    Sequential net;
    net.add<Conv2d>(2, 3, 4, rng, Conv2dOptions{2, 1});
    net.add<LeakyReLU>(0.2f);
    Conv2dOptions own_rectifier{1, 1};
    own_rectifier.rectifier_slope = 0.1f;
    auto& rectified = net.add<Conv2d>(3, 3, 3, rng, own_rectifier);  // a rectifier of its own: the ReLU runs on its own
    net.add<ReLU>();
    const Var x(test::random_tensor({4, 2, 8, 8}, -2.f, 2.f, 11), true);
    const Tensor dy = test::random_tensor({4, 3, 4, 4}, -1.f, 1.f, 12);
    const Var y = net(x);
    CHECK(std::string(y.op_name()) == "relu");
    backward(sum(y * Var(dy)));
    const Tensor dx = x.grad();
    Var(x).zero_grad();
    Var h = x;
    for (std::size_t i = 0; i < net.size(); ++i) h = net[i](h);  // each layer on its own
    CHECK(std::string(h.op_name()) == "relu");
    backward(sum(h * Var(dy)));
    CHECK(xt::all(xt::equal(y.value(), h.value())));
    CHECK(xt::all(xt::equal(dx, x.grad())));
    Sequential pair;
    pair.add<Conv2d>(2, 3, 4, rng, Conv2dOptions{2, 1});
    pair.add<ReLU>();
    CHECK(std::string(pair(x).op_name()) == "conv2d");  // one op: its result is conv2d's, not relu's
    CHECK_THROWS_WITH_AS(rectified.forward_rectified(h, 0.f), doctest::Contains("a rectifier of its own"), std::invalid_argument);
}

TEST_CASE("batch_norms finds every batch norm below a module; StatisticsFrozen keeps their running statistics") {
    Rng rng(3);
    Sequential net;
    net.add<Linear>(4, 3, rng);
    auto& first = net.add<BatchNorm1d>(3);
    auto& inner = net.add<Sequential>();
    auto& second = inner.add<BatchNorm1d>(3);
    const std::vector<BatchNorm*> norms = batch_norms(net);
    REQUIRE(norms.size() == 2);
    CHECK(norms[0] == &first);
    CHECK(norms[1] == &second);

    const Var x(test::random_tensor({8, 4}, 1.f, 3.f, 5));
    second.update_running_stats = false;  // already frozen: stays so after the guard
    Tensor y_frozen;
    {
        const StatisticsFrozen frozen(norms);
        y_frozen = net(x).value();
        CHECK(first.running_mean.value() == Tensor({3}, 0.f));
        CHECK(second.running_var.value() == Tensor({3}, 1.f));
    }
    CHECK(first.update_running_stats);
    CHECK_FALSE(second.update_running_stats);
    CHECK(net(x).value() == y_frozen);  // still the batch statistics: the output is the same
    CHECK_FALSE(first.running_mean.value() == Tensor({3}, 0.f));
    CHECK(second.running_mean.value() == Tensor({3}, 0.f));
}

TEST_CASE("EvaluationMode puts a module tree in evaluation mode and gives back the mode it had") {
    Rng rng(4);
    Sequential net;
    auto& bn = net.add<BatchNorm1d>(2);
    auto& dropout = net.add<Dropout>(0.5f, rng);
    {
        const EvaluationMode evaluation(net);
        CHECK_FALSE(net.is_training());
        CHECK_FALSE(bn.is_training());
        CHECK_FALSE(dropout.is_training());
        const Var x(Tensor({{1.f, 2.f}, {3.f, 4.f}}));
        CHECK(net(x).value() == bn(x).value());  // dropout passes values through
        CHECK(bn.running_mean.value() == Tensor({2}, 0.f));
    }
    CHECK(net.is_training());
    CHECK(bn.is_training());
    net.eval();
    {
        const EvaluationMode evaluation(net);
        CHECK_FALSE(net.is_training());
    }
    CHECK_FALSE(net.is_training());
}

TEST_CASE("initialisations have the stated scale") {
    Rng rng(7);
    const std::size_t fan_in = 400, fan_out = 100;
    struct Case {
        Init init;
        double stddev;
    };
    const Case cases[] = {
        {Init::pytorch, 1.0 / std::sqrt(400.0) / std::sqrt(3.0)},
        {Init::xavier_uniform, std::sqrt(6.0 / 500.0) / std::sqrt(3.0)},
        {Init::xavier_normal, std::sqrt(2.0 / 500.0)},
        {Init::he_uniform, std::sqrt(6.0 / 400.0) / std::sqrt(3.0)},
        {Init::he_normal, std::sqrt(2.0 / 400.0)},
        {Init::normal_002, 0.02},
    };
    for (const Case& c : cases) {
        INFO("init " << static_cast<int>(c.init));
        Tensor w = Tensor::from_shape({fan_in, fan_out});
        initialize(w, c.init, fan_in, fan_out, rng);
        double sum = 0, squares = 0;
        for (float v : w) {
            sum += v;
            squares += double(v) * v;
        }
        const double n = double(w.size()), mean = sum / n;
        CHECK(std::abs(mean) < 0.05 * c.stddev + 1e-4);
        CHECK(std::sqrt(squares / n - mean * mean) == doctest::Approx(c.stddev).epsilon(0.02));
    }
}

// The largest |element|, for checking a uniform draw's bound.
double largest_magnitude(const Tensor& t) {
    double m = 0;
    for (float v : t) m = std::max(m, double(std::abs(v)));
    return m;
}

TEST_CASE("the layers' default initialisation is PyTorch's, weights and biases; a transposed conv's fan-in is out * k * k") {
    Rng rng(11);
    struct Case {
        const char* layer;
        WeightedLayer* module;
        double bound;  // 1 / sqrt(fan_in)
    };
    Linear linear(50, 30, rng);
    Conv2d conv(3, 40, 5, rng);
    ConvTranspose2d transposed(40, 3, 4, rng);
    const Case cases[] = {
        {"Linear(50, 30)", &linear, 1.0 / std::sqrt(50.0)},
        {"Conv2d(3, 40, 5)", &conv, 1.0 / std::sqrt(3.0 * 25.0)},
        {"ConvTranspose2d(40, 3, 4)", &transposed, 1.0 / std::sqrt(3.0 * 16.0)},  // not 40 * 16
    };
    for (const Case& c : cases) {
        INFO(c.layer);
        for (const Var* v : {&c.module->weight, &c.module->bias}) {
            const double largest = largest_magnitude(v->value());
            CHECK(largest <= c.bound);
            CHECK(largest > 0.8 * c.bound);  // 30+ draws of U(-a, a): the largest is near a
        }
    }
}

TEST_CASE("an explicit initialisation leaves the bias at 0 and draws nothing for it") {
    Rng with_layer(3), weights_only(3);
    const Linear layer(4, 3, with_layer, Init::he_normal);
    Tensor w = Tensor::from_shape({3, 4});
    initialize(w, Init::he_normal, 4, 3, weights_only);
    CHECK(layer.weight.value() == w);
    CHECK(layer.bias.value() == Tensor(Shape{3}, 0.f));
    CHECK(with_layer.uniform(0.f, 1.f) == weights_only.uniform(0.f, 1.f));  // the same place in the stream
}

}  // namespace

namespace {

using namespace xgrad;

TEST_CASE("EmaWeights: warmed-up averages, copied into another module, resumed exactly") {
    Rng rng(11), other(12);
    Linear layer(3, 2, rng), target(3, 2, other);
    EmaWeights ema(layer, 0.9f);
    Tensor average = layer.weight.value();
    for (long t = 0; t < 30; ++t) {
        layer.weight.mutable_value() += 0.1f * float(t % 3);
        ema.update();
        const double d = std::min(0.9, double(1 + t) / double(10 + t));
        average = static_cast<float>(d) * average + (1.f - static_cast<float>(d)) * layer.weight.value();
    }
    CHECK(ema.updates() == 30);
    ema.copy_to(target);
    CHECK(xt::allclose(target.weight.value(), average, 1e-6, 1e-6));

    Archive archive;
    ema.save(archive, "ema.");
    EmaWeights resumed(layer, 0.9f);
    resumed.load(archive, "ema.");
    CHECK(resumed.updates() == 30);
    layer.weight.mutable_value() += 1.f;
    ema.update();
    resumed.update();
    Linear a(3, 2, rng), b(3, 2, rng);
    ema.copy_to(a);
    resumed.copy_to(b);
    CHECK(a.weight.value() == b.weight.value());  // bit-exact

    CHECK_THROWS_AS(EmaWeights(layer, 1.f), std::invalid_argument);
    Linear wider(3, 4, rng);
    CHECK_THROWS_WITH_AS(ema.copy_to(wider), doctest::Contains("'weight'"), ShapeError);
    archive.put_text("ema.updates", "3x");
    CHECK_THROWS_AS(resumed.load(archive, "ema."), std::runtime_error);
    CHECK(resumed.updates() == 31);  // unchanged by the failed load
}

// The largest singular value of a (rows, cols) matrix, by many power
// iterations in double.
double top_singular_value(const Tensor& w, std::size_t rows, std::size_t cols) {
    std::vector<double> v(cols, 1.0), u(rows);
    double sigma = 0;
    for (int it = 0; it < 500; ++it) {
        double norm = 0;
        for (std::size_t r = 0; r < rows; ++r) {
            u[r] = 0;
            for (std::size_t c = 0; c < cols; ++c) u[r] += w.data()[r * cols + c] * v[c];
            norm += u[r] * u[r];
        }
        for (double& x : u) x /= std::sqrt(norm);
        norm = 0;
        for (std::size_t c = 0; c < cols; ++c) {
            v[c] = 0;
            for (std::size_t r = 0; r < rows; ++r) v[c] += w.data()[r * cols + c] * u[r];
            norm += v[c] * v[c];
        }
        sigma = std::sqrt(norm);
        for (double& x : v) x /= sigma;
    }
    return sigma;
}

TEST_CASE("spectral norm: sigma converges to the largest singular value; u and v are buffers") {
    Rng rng(13);
    Linear layer(6, 4, rng);
    layer.apply_spectral_norm(rng);
    const NamedVars buffers = layer.named_buffers();
    REQUIRE(buffers.size() == 2);
    CHECK(buffers[0].first == "weight_u");
    CHECK(buffers[1].first == "weight_v");
    CHECK(layer.parameters().size() == 2);  // u and v are not trained
    const Var x = Var(test::random_tensor({5, 6}, -1.f, 1.f, 14));
    for (int i = 0; i < 60; ++i) layer(x);
    const double sigma = top_singular_value(layer.weight.value(), 4, 6);
    CHECK(layer.spectral_norm()->sigma() == doctest::Approx(sigma).epsilon(1e-4));
    // The normalised weight has spectral norm 1: evaluation uses the stored u and v.
    layer.eval();
    const Tensor u_before = layer.spectral_norm()->u.value();
    const Var normalized = const_cast<SpectralNorm*>(layer.spectral_norm())->normalize(layer.weight, false);
    CHECK(top_singular_value(normalized.value(), 4, 6) == doctest::Approx(1.0).epsilon(1e-4));
    CHECK(layer.spectral_norm()->u.value() == u_before);
}

TEST_CASE("spectral norm of a zero weight is zero with a finite gradient; u and v stay unit vectors and recover") {
    Rng rng(19);
    Linear layer(6, 4, rng);
    layer.apply_spectral_norm(rng);
    layer.weight.mutable_value().fill(0.f);
    const Var x = Var(test::random_tensor({5, 6}, -1.f, 1.f, 20));
    const auto unit = [](const Tensor& t) {
        double squares = 0;
        for (float v : t) squares += double(v) * v;
        return std::fabs(std::sqrt(squares) - 1.0) < 1e-5;
    };
    for (int step = 0; step < 3; ++step) {
        const Var y = layer(x);
        CHECK(xt::all(xt::isfinite(y.value())));
        layer.zero_grad();
        backward(sum(y));
        CHECK(xt::all(xt::isfinite(layer.weight.grad())));
        CHECK(unit(layer.spectral_norm()->u.value()));
        CHECK(unit(layer.spectral_norm()->v.value()));
    }
    CHECK(layer.spectral_norm()->sigma() == 0.f);
    // A weight that becomes nonzero is normalised again.
    layer.weight.mutable_value() = test::random_tensor({4, 6}, -1.f, 1.f, 21);
    for (int i = 0; i < 60; ++i) layer(x);
    CHECK(layer.spectral_norm()->sigma() == doctest::Approx(top_singular_value(layer.weight.value(), 4, 6)).epsilon(1e-4));
}

TEST_CASE("spectral norm of a ConvTranspose2d is over its output channels, the weight's dim 1, as in PyTorch") {
    Rng rng(23);
    ConvTranspose2d layer(3, 5, 2, rng);
    layer.apply_spectral_norm(rng);
    CHECK(layer.spectral_norm()->u.shape() == Shape{5});
    CHECK(layer.spectral_norm()->v.shape() == Shape{12});
    const Var x = Var(test::random_tensor({2, 3, 4, 4}, -1.f, 1.f, 24));
    for (int i = 0; i < 60; ++i) layer(x);
    // The weight (3, 5, 2, 2) as the (5, 12) matrix weight.permute(1, 0, 2, 3).reshape(5, -1).
    const Tensor& w = layer.weight.value();
    Tensor matrix = Tensor::from_shape({5, 12});
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t o = 0; o < 5; ++o)
            for (std::size_t s = 0; s < 4; ++s) matrix(o, i * 4 + s) = w.data()[(i * 5 + o) * 4 + s];
    CHECK(layer.spectral_norm()->sigma() == doctest::Approx(top_singular_value(matrix, 5, 12)).epsilon(1e-4));
    CHECK(layer.spectral_norm()->sigma() != doctest::Approx(top_singular_value(w, 3, 20)).epsilon(1e-2));
    test::check_gradients("spectral norm over dim 1",
                          [&layer](const std::vector<Var>& in) {
                              return const_cast<SpectralNorm*>(layer.spectral_norm())->normalize(in[0], false);
                          },
                          {Var(w, true)});
}

TEST_CASE("spectral norm's gradient flows through sigma, with u and v fixed") {
    Rng rng(15);
    SpectralNorm sn(Shape{4, 3}, rng);
    const Var w = Var(test::random_tensor({4, 3}, -1.f, 1.f, 16), true);
    for (int i = 0; i < 20; ++i) sn.normalize(w, true);  // settle u and v
    test::check_gradients("spectral norm", [&sn](const std::vector<Var>& in) { return sn.normalize(in[0], false); }, {w});
    // Closed form: with G = dL/dW_sn, dL/dW = (G - <G, W_sn> u v^T) / sigma.
    const Tensor g = test::random_tensor({4, 3}, -1.f, 1.f, 17);
    Var w2(w.value(), true);
    const Var y = sn.normalize(w2, false);
    backward(sum(y * Var(g)));
    const float sigma = sn.sigma();
    double inner = 0;
    for (std::size_t i = 0; i < 12; ++i) inner += double(g.data()[i]) * y.value().data()[i];
    for (std::size_t r = 0; r < 4; ++r) {
        for (std::size_t c = 0; c < 3; ++c) {
            const double want = (g(r, c) - inner * sn.u.value()(r) * sn.v.value()(c)) / sigma;
            CHECK(w2.grad()(r, c) == doctest::Approx(want).epsilon(1e-4));
        }
    }
}

TEST_CASE("minibatch stddev appends the mean batch standard deviation as a feature") {
    const Var x = Var(test::random_tensor({4, 3}, -1.f, 1.f, 18), true);
    const Var y = minibatch_stddev(x, 0.f);
    REQUIRE(y.shape() == Shape{4, 4});
    double total = 0;
    for (std::size_t f = 0; f < 3; ++f) {
        double mean = 0, var = 0;
        for (std::size_t n = 0; n < 4; ++n) mean += x.value()(n, f) / 4.0;
        for (std::size_t n = 0; n < 4; ++n) var += std::pow(x.value()(n, f) - mean, 2) / 4.0;
        total += std::sqrt(var) / 3.0;
    }
    for (std::size_t n = 0; n < 4; ++n) {
        CHECK(y.value()(n, 3) == doctest::Approx(total));
        CHECK(y.value()(n, 0) == x.value()(n, 0));
    }
    test::check_gradients("minibatch stddev (N, F)", [](const std::vector<Var>& in) { return minibatch_stddev(in[0]); },
                          {Var(test::random_tensor({4, 3}, -1.f, 1.f, 19), true)});
    test::check_gradients("minibatch stddev (N, C, H, W)", [](const std::vector<Var>& in) { return minibatch_stddev(in[0]); },
                          {Var(test::random_tensor({3, 2, 2, 2}, -1.f, 1.f, 20), true)});
    MinibatchStddev layer;
    CHECK(layer(Var::zeros({5, 2, 3, 3})).shape() == Shape{5, 3, 3, 3});
}

}  // namespace
