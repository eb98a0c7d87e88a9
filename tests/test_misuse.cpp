// Library misuse, one row per case: the call (an op, a module, an optimizer)
// with its arguments, and a fragment of the message it must throw. It runs
// in the normal suite, and so under AddressSanitizer and
// UndefinedBehaviorSanitizer in CI (scripts/ci_sanitizers.sh): a misuse that
// crashes, overflows or reads out of bounds fails there even when it happens
// to throw the right words here. A new op joins the table when it lands.
#include <doctest/doctest.h>

#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <xgrad.hpp>

namespace {

using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;

struct Misuse {
    const char* call;  // what the user wrote
    std::function<void()> run;
    const char* message;  // a fragment of what() that says what was expected
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Var parameter() { return Var::full(Shape{3}, 1.f, true); }
Var image() { return Var::zeros({1, 2, 5, 5}); }
Var kernel() { return Var::zeros({3, 2, 3, 3}); }

// A module that gains a layer after `ema` averaged it.
struct Grown {
    xgrad::Rng rng{1};
    xgrad::Sequential net;
    std::unique_ptr<xgrad::EmaWeights> ema;
    Grown() {
        net.add<xgrad::Linear>(3, 4, rng);
        ema = std::make_unique<xgrad::EmaWeights>(net, 0.9f);
        net.add<xgrad::Linear>(4, 5, rng);
    }
};

std::vector<Misuse> misuses() {
    return {
        {"EmaWeights::save after its module gained parameters",
         [] {
             Grown g;
             xgrad::Archive archive;
             g.ema->save(archive, "average.");
         },
         "xgrad::EmaWeights::save: the module has 4 parameters, it had 2 when the averages were made"},
        {"EmaWeights::load after its module gained parameters",
         [] {
             Grown g;
             xgrad::Archive archive;
             g.net.save(archive, "average.");
             archive.put_integer("average.updates", 1);
             g.ema->load(archive, "average.");
         },
         "xgrad::EmaWeights::load: the module has 4 parameters, it had 2"},
        {"EmaWeights::copy_to after its module gained parameters",
         [] {
             Grown g;
             g.ema->copy_to(g.net);
         },
         "xgrad::EmaWeights::copy_to: the module has 4 parameters, it had 2"},
        {"conv2d(x, w, b, {stride 0})", [] { xgrad::conv2d(image(), kernel(), Var(), {0}); }, "xgrad::conv2d: stride (0, 0)"},
        {"conv2d(x, w, b, {stride (1, 0)})",
         [] {
             xgrad::conv2d(image(), kernel(), Var(), {{1, 0}});
         },
         "xgrad::conv2d: stride (1, 0)"},
        {"conv2d(x, w, b, {dilation 0})",
         [] {
             xgrad::conv2d(image(), kernel(), Var(), {1, 0, 0});
         },
         "xgrad::conv2d: dilation (0, 0)"},
        {"conv_transpose2d(x, w, b, {stride 0})",
         [] {
             xgrad::conv_transpose2d(Var::zeros({1, 3, 5, 5}), kernel(), Var(), {0});
         },
         "xgrad::conv_transpose2d: stride (0, 0)"},
        {"conv2d(x of 2 channels, w of 4)",
         [] {
             xgrad::conv2d(image(), Var::zeros({3, 4, 3, 3}), Var());
         },
         "xgrad::conv2d: the weight does not fit the input's channels"},
        // Pooling: 2 * padding wrapped to 0 and passed the checks.
        {"max_pool2d(x, 2, 1, padding (2^63, 0))",
         [] {
             xgrad::max_pool2d(Var::zeros({1, 1, 4, 4}), 2, 1, {std::size_t(1) << 63, 0});
         },
         "xgrad::max_pool2d: padding (9223372036854775808, 0) is more than half the kernel (2, 2)"},
        {"avg_pool2d(x, 2, 1, padding 2^63)",
         [] {
             xgrad::avg_pool2d(Var::zeros({1, 1, 4, 4}), 2, 1, std::size_t(1) << 63);
         },
         "xgrad::avg_pool2d: padding (9223372036854775808, 9223372036854775808) is more than half the kernel (2, 2)"},
        {"max_pool2d(x, kernel 2^64 - 1, 1, padding 2^63 - 1)",
         [] {
             xgrad::max_pool2d(Var::zeros({1, 1, 4, 4}), ~std::size_t(0), 1, ~std::size_t(0) / 2);
         },
         "xgrad::max_pool2d: kernel (18446744073709551615, 18446744073709551615) is too large (at most 2^62)"},
        // Shapes whose element count overflows: a tensor claiming 2^66 elements over 16 floats.
        {"reshape(x of 16 floats, {-1, 2^33, 2^33})",
         [] {
             xgrad::reshape(Var::zeros({16}), {-1, 1L << 33, 1L << 33});
         },
         "xgrad::reshape: a tensor of shape (8589934592, 8589934592) has more elements than memory can address"},
        {"reshape(x of 16 floats, {16, 2^60 + 1})",
         [] {
             xgrad::reshape(Var::zeros({16}), {16, (1L << 60) + 1});
         },
         "xgrad::reshape: a tensor of shape (16, 1152921504606846977) has more elements than memory can address"},
        {"broadcast_to(x of 1 float, (2^33, 2^33))",
         [] {
             xgrad::broadcast_to(Var::zeros({1}), {std::size_t(1) << 33, std::size_t(1) << 33});
         },
         "xgrad::broadcast_to: a tensor of shape (8589934592, 8589934592) has more elements than memory can address"},
        {"upsample_nearest2d(x (2, 1, 4, 4), scale (2^61, 1))",
         [] {
             xgrad::upsample_nearest2d(Var::zeros({2, 1, 4, 4}), {std::size_t(1) << 61, 1});
         },
         "xgrad::upsample_nearest2d: a tensor of shape (2, 1, 9223372036854775808, 4) has more elements than memory can "
         "address"},
        {"upsample_nearest2d(x (0, 1, 4, 4), scale (2^63, 1))",
         [] {
             xgrad::upsample_nearest2d(Var::zeros({0, 1, 4, 4}), {std::size_t(1) << 63, 1});
         },
         "xgrad::upsample_nearest2d: scale (9223372036854775808, 1) of an input (0, 1, 4, 4) gives output sides past what "
         "memory can address"},
        // Convolution geometry past int, with sizes each below 2^30.
        {"conv2d(x, w, b, {padding 2^30 - 1})",
         [] {
             xgrad::conv2d(image(), kernel(), Var(), {1, (std::size_t(1) << 30) - 1});
         },
         "xgrad::conv2d: height 5 + 2 * padding 1073741823 = 2147483651 is too large"},
        {"conv2d(x, w, b, {dilation 2^30})",
         [] {
             xgrad::conv2d(image(), kernel(), Var(), {1, 0, std::size_t(1) << 30});
         },
         "xgrad::conv2d: kernel height 3 with dilation 1073741824 spans 2147483649, which is too large"},
        {"conv_transpose2d(x, w, b, {stride 2^30 - 1})",
         [] {
             xgrad::conv_transpose2d(Var::zeros({1, 3, 5, 5}), kernel(), Var(), {(std::size_t(1) << 30) - 1});
         },
         "xgrad::conv_transpose2d: output height (5 - 1) * stride 1073741823 - 2 * padding 0 + 3 = 4294967295 is too large"},
        {"conv_transpose2d(x, w, b, {stride 2^30 - 1, padding 2^30 - 2})",
         [] {
             xgrad::conv_transpose2d(Var::zeros({1, 3, 5, 5}), kernel(), Var(),
                                     {(std::size_t(1) << 30) - 1, (std::size_t(1) << 30) - 2});
         },
         "xgrad::conv_transpose2d: output height (5 - 1) * stride 1073741823 - 2 * padding 1073741822 + 3 = 2147483651"},
        // Hyper-parameters that gave silent NaN or nonsense.
        {"clip_grad_norm(parameters, -1)", [] { xgrad::clip_grad_norm({parameter()}, -1.0); },
         "xgrad::clip_grad_norm: max_norm -1 (expected a number >= 0)"},
        {"clip_grad_norm(parameters, NaN)", [] { xgrad::clip_grad_norm({parameter()}, kNaN); },
         "xgrad::clip_grad_norm: max_norm nan (expected a number >= 0)"},
        {"Adam(parameters, {beta1 1})",
         [] {
             xgrad::Adam({parameter()}, {1e-3f, 1.f});
         },
         "xgrad::Adam: beta1 1 (expected 0 <= beta1 < 1)"},
        {"Adam(parameters, {beta2 NaN})",
         [] {
             xgrad::Adam({parameter()}, {1e-3f, 0.9f, float(kNaN)});
         },
         "xgrad::Adam: beta2 nan (expected 0 <= beta2 < 1)"},
        {"AdamW(parameters, {beta1 -0.1})",
         [] {
             xgrad::AdamW({parameter()}, {1e-3f, -0.1f});
         },
         "xgrad::Adam: beta1 -0.1 (expected 0 <= beta1 < 1)"},
        {"Adam(parameters, {eps -1e-8})",
         [] {
             xgrad::Adam({parameter()}, {1e-3f, 0.9f, 0.999f, -1e-8f});
         },
         "xgrad::Adam: eps -1e-08 (expected a finite number >= 0)"},
        {"SGD(parameters, 0.1, momentum -0.5)", [] { xgrad::SGD({parameter()}, 0.1f, -0.5f); },
         "xgrad::SGD: momentum -0.5 (expected a finite number >= 0)"},
        {"SGD(parameters, 0.1, nesterov without momentum)",
         [] {
             xgrad::SGDOptions o;
             o.nesterov = true;
             xgrad::SGD({parameter()}, 0.1f, o);
         },
         "xgrad::SGD: nesterov with momentum 0 and dampening 0 (expected momentum > 0 and dampening 0)"},
        {"SGD(parameters, 0.1, weight_decay -1)",
         [] {
             xgrad::SGDOptions o;
             o.weight_decay = -1.f;
             xgrad::SGD({parameter()}, 0.1f, o);
         },
         "xgrad::SGD: weight_decay -1 (expected a finite number >= 0)"},
        {"SGD(parameters, 0.1, momentum NaN)", [] { xgrad::SGD({parameter()}, 0.1f, float(kNaN)); },
         "xgrad::SGD: momentum nan (expected a finite number >= 0)"},
        {"Adam with a parameter listed twice",
         [] {
             const Var p = parameter();
             xgrad::Adam({p, parameter(), p});
         },
         "xgrad: an optimizer got parameter 0 twice (again as parameter 2)"},
        {"batch_norm(x, ..., {eps 0})",
         [] {
             xgrad::batch_norm(Var::zeros({4, 3}), Var(), Var(), Var(), Var(), {true, 0.1f, 0.f});
         },
         "xgrad::batch_norm: eps 0 (expected a finite number > 0)"},
        {"batch_norm(x, ..., {momentum NaN})",
         [] {
             xgrad::batch_norm(Var::zeros({4, 3}), Var(), Var(), Var(), Var(), {true, float(kNaN)});
         },
         "xgrad::batch_norm: momentum nan (expected 0 <= momentum <= 1)"},
        {"layer_norm(x, 1, w, b, eps -1)",
         [] {
             xgrad::layer_norm(Var::zeros({4, 3}), 1, Var(), Var(), -1.f);
         },
         "xgrad::layer_norm: eps -1 (expected a finite number > 0)"},
        {"BatchNorm1d(3, momentum 2)", [] { xgrad::BatchNorm1d(3, 2.f); },
         "xgrad::BatchNorm: momentum 2 (expected 0 <= momentum <= 1)"},
        {"LayerNorm((3), eps 0)", [] { xgrad::LayerNorm(Shape{3}, 0.f); },
         "xgrad::LayerNorm: eps 0 (expected a finite number > 0)"},
        {"initialize(w, he_normal, fan_in 0)",
         [] {
             Tensor w = Tensor::from_shape({2, 2});
             xgrad::Rng rng(1);
             xgrad::initialize(w, xgrad::Init::he_normal, 0, 2, rng);
         },
         "xgrad::initialize: he_normal with fan_in 0 (expected fan_in >= 1)"},
        {"initialize(w, pytorch, fan_in 0)",
         [] {
             Tensor w = Tensor::from_shape({2, 2});
             xgrad::Rng rng(1);
             xgrad::initialize(w, xgrad::Init::pytorch, 0, 2, rng);
         },
         "xgrad::initialize: pytorch with fan_in 0 (expected fan_in >= 1)"},
        {"initialize(w, xavier_uniform, fan_in 0, fan_out 0)",
         [] {
             Tensor w = Tensor::from_shape({2, 2});
             xgrad::Rng rng(1);
             xgrad::initialize(w, xgrad::Init::xavier_uniform, 0, 0, rng);
         },
         "xgrad::initialize: xavier_uniform with fan_in + fan_out 0 (expected at least 1)"},
        {"Rng::below(0)", [] { xgrad::Rng(1).below(0); }, "xgrad::Rng::below: n = 0 (expected n >= 1)"},
        // Messages that blamed the op called inside.
        {"stack(inputs of shape (3), 3)",
         [] {
             xgrad::stack({Var::zeros({3}), Var::zeros({3})}, 3);
         },
         "xgrad::stack: axis 3 is out of range for stacking inputs of shape (3) (the result has rank 2)"},
        {"split(x (4), sizes (2^64 - 1, 5))",
         [] {
             xgrad::split(Var::zeros({4}), {~std::size_t(0), 5}, 0);
         },
         "xgrad::split: sizes (18446744073709551615, 5) sum past axis 0 of (4)"},
        // A parameter whose value was replaced by one of another shape.
        {"Adam::step after a parameter changed shape",
         [] {
             Var p = parameter();
             xgrad::Adam adam({p});
             p.mutable_value() = Tensor(Shape{5}, 1.f);
             adam.step();
         },
         "xgrad::Adam::step: parameter 0 is (5) but its gradient is (3) and its state (3)"},
        {"backward() after a parameter changed shape",
         [] {
             Var p = parameter();
             p.mutable_value() = Tensor(Shape{5}, 1.f);
             xgrad::backward(xgrad::sum(p * p));
         },
         "input 0 is a leaf whose value is now (5) but whose gradient is (3)"},
        {"SGD::step after a parameter changed shape",
         [] {
             Var p = parameter();
             xgrad::SGD sgd({p}, 0.1f, 0.9f);
             p.mutable_value() = Tensor(Shape{5}, 1.f);
             sgd.step();
         },
         "xgrad::SGD::step: parameter 0 is (5) but its gradient is (3) and its state (3)"},
        {"add((2, 3), (4, 3))",
         [] {
             xgrad::add(Var::zeros({2, 3}), Var::zeros({4, 3}));
         },
         "xgrad::add: shapes (2, 3) and (4, 3)"},
        {"sum(x, {2}) of rank 2",
         [] {
             xgrad::sum(Var::zeros({2, 3}), {2});
         },
         "xgrad::sum: axis 2 is out of range"},
    };
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("library misuse is refused with a message that names the call and what was expected") {
    for (const Misuse& m : misuses()) {
        std::string what = "(nothing was thrown)";
        try {
            m.run();
        } catch (const std::exception& e) {
            what = e.what();
        }
        const std::string context = std::string(m.call) + " threw: " + what;
        INFO(context);
        CHECK(contains(what, m.message));
    }
}
