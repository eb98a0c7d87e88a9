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
