// Modules: parameters and buffers by name, train/eval down the tree, saving
// and all-or-nothing loading, and the initialisations.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

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
    CHECK(scaled.count.item() == 0.f);  // evaluation mode: the buffer is left alone
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

TEST_CASE("initialisations have the stated scale") {
    Rng rng(7);
    const std::size_t fan_in = 400, fan_out = 100;
    struct Case {
        Init init;
        double stddev;
    };
    const Case cases[] = {
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

}  // namespace
