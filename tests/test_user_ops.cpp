// Ops of the kinds a user adds (docs/extending.md): a user header in
// lib/xgrad/ops/ or a function made of ops, each checked by one row of the
// table below: its value against a reference computed in double by plain
// loops, and both checkers (gradcheck, gradgradcheck). The table takes any
// op — elementwise, structural with a constant border, a scan with state,
// a reduction over two inputs — and this file is small, so editing an op's
// header and re-running its rows rebuilds one small translation unit.
//
//   meson test -C build user_ops      or      build/tests/xgrad_tests -sf='*test_user_ops*'
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/ops/cumsum.hpp>
#include <xgrad/ops/pad2d.hpp>

#include "op_reference.hpp"

namespace {

using namespace test;
using xgrad::Shape;
using xgrad::Var;
using Inputs = std::vector<Var>;
using References = std::vector<Reference>;

// Ops made of ops need no backward rules at all: both orders come from the
// ops they call.
Var cosine_similarity(const Var& a, const Var& b, int axis = -1, float eps = 1e-8f) {
    const Var dot = xgrad::sum(a * b, {axis});
    const Var norms = xgrad::sqrt(xgrad::sum(a * a, {axis}) * xgrad::sum(b * b, {axis}));
    return dot / xgrad::clamp(norms, eps, std::numeric_limits<float>::max());
}

// (N, C r^2, H, W) -> (N, C, H r, W r), as torch.nn.functional.pixel_shuffle.
Var pixel_shuffle(const Var& x, std::size_t r) {
    const Shape& s = x.shape();
    const std::size_t c = s[1] / (r * r);
    const Var split = xgrad::reshape(x, {long(s[0]), long(c), long(r), long(r), long(s[2]), long(s[3])});
    return xgrad::reshape(xgrad::permute(split, {0, 1, 4, 2, 5, 3}), {long(s[0]), long(c), long(s[2] * r), long(s[3] * r)});
}

struct ReferenceCase {
    std::string name;
    std::vector<Shape> inputs;
    std::function<Var(const Inputs&)> op;
    std::function<Reference(const References&)> reference;
};

Reference cumsum_reference(const Reference& x, std::size_t axis, bool reverse) {
    const Shape shape(x.shape().begin(), x.shape().end());
    Reference y = zeros(shape);
    for (std::size_t e = 0; e < x.size(); ++e) {
        const Shape at = unravel(e, shape);
        for (std::size_t i = 0; i < shape[axis]; ++i) {
            if (reverse ? i < at[axis] : i > at[axis]) continue;
            Shape from = at;
            from[axis] = i;
            y.data()[e] += x.data()[ravel(from, shape)];
        }
    }
    return y;
}

Reference pad2d_reference(const Reference& x, std::size_t ph, std::size_t pw, double fill) {
    const Shape in(x.shape().begin(), x.shape().end());
    const Shape out{in[0], in[1], in[2] + 2 * ph, in[3] + 2 * pw};
    Reference y(out, fill);
    for (std::size_t e = 0; e < x.size(); ++e) {
        Shape at = unravel(e, in);
        at[2] += ph;
        at[3] += pw;
        y.data()[ravel(at, out)] = x.data()[e];
    }
    return y;
}

// Rows of (2, 3, 4) a and b: their dot products over the norms' product.
Reference cosine_reference(const Reference& a, const Reference& b) {
    Reference y = zeros({2, 3});
    for (std::size_t r = 0; r < 6; ++r) {
        double dot = 0, aa = 0, bb = 0;
        for (std::size_t k = 0; k < 4; ++k) {
            dot += a.data()[r * 4 + k] * b.data()[r * 4 + k];
            aa += a.data()[r * 4 + k] * a.data()[r * 4 + k];
            bb += b.data()[r * 4 + k] * b.data()[r * 4 + k];
        }
        y.data()[r] = dot / std::sqrt(aa * bb);
    }
    return y;
}

// Output (n, c, i, j) of pixel_shuffle with factor 2 reads input
// (n, 4 c + 2 (i % 2) + j % 2, i / 2, j / 2).
Reference pixel_shuffle_reference(const Reference& x) {
    const Shape in(x.shape().begin(), x.shape().end());
    const Shape out{in[0], in[1] / 4, in[2] * 2, in[3] * 2};
    Reference y = zeros(out);
    for (std::size_t e = 0; e < y.size(); ++e) {
        const Shape at = unravel(e, out);
        const Shape from{at[0], 4 * at[1] + 2 * (at[2] % 2) + at[3] % 2, at[2] / 2, at[3] / 2};
        y.data()[e] = x.data()[ravel(from, in)];
    }
    return y;
}

std::vector<ReferenceCase> cases() {
    std::vector<ReferenceCase> c;
    for (int axis : {0, 1, -1}) {
        for (bool reverse : {false, true}) {
            c.push_back({"cumsum (3, 4, 2) along " + std::to_string(axis) + (reverse ? " reversed" : ""),
                         {{3, 4, 2}},
                         [axis, reverse](const Inputs& in) { return xgrad::cumsum(in[0], axis, reverse); },
                         [axis, reverse](const References& x) {
                             return cumsum_reference(x[0], std::size_t(axis < 0 ? axis + 3 : axis), reverse);
                         }});
        }
    }
    for (const Shape& pad : {Shape{1, 2}, Shape{0, 1}, Shape{2, 0}}) {
        const std::size_t ph = pad[0], pw = pad[1];
        c.push_back({"pad2d (2, 3, 2, 4) by (" + std::to_string(ph) + ", " + std::to_string(pw) + ") with 0.5",
                     {{2, 3, 2, 4}},
                     [ph, pw](const Inputs& in) {
                         return xgrad::pad2d(in[0], {ph, pw}, 0.5f);
                     },
                     [ph, pw](const References& x) { return pad2d_reference(x[0], ph, pw, 0.5); }});
    }
    c.push_back({"cosine_similarity of (2, 3, 4) rows",
                 {{2, 3, 4}, {2, 3, 4}},
                 [](const Inputs& in) { return cosine_similarity(in[0], in[1]); },
                 [](const References& x) { return cosine_reference(x[0], x[1]); }});
    c.push_back({"pixel_shuffle (2, 8, 2, 3) by 2",
                 {{2, 8, 2, 3}},
                 [](const Inputs& in) { return pixel_shuffle(in[0], 2); },
                 [](const References& x) { return pixel_shuffle_reference(x[0]); }});
    return c;
}

TEST_CASE("user ops: values against a double reference, gradients of both orders against finite differences") {
    std::uint64_t seed = 9000;
    for (const ReferenceCase& c : cases()) {
        INFO(c.name);
        Inputs inputs;
        References references;
        for (const Shape& s : c.inputs) {
            inputs.push_back(random_var(s, -1.f, 1.f, ++seed));
            references.push_back(to_double(inputs.back().value()));
        }
        check_matches("value", c.op(inputs).value(), c.reference(references), 1e-5);
        check_gradients(c.name, c.op, inputs);
    }
}

TEST_CASE("user ops refuse bad operands, naming the op") {
    const Var x = Var::zeros({2, 3});
    CHECK_THROWS_WITH(xgrad::cumsum(x, 2), doctest::Contains("cumsum"));
    CHECK_THROWS_WITH(xgrad::pad2d(x, 1), doctest::Contains("xgrad::pad2d: expected an (N, C, H, W) input, got (2, 3)"));
}

}  // namespace
