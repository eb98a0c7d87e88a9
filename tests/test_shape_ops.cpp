// The structural ops move elements without arithmetic, so each one is fully
// described by where every output element comes from. Each row of the table
// below gives that source map, written with plain index arithmetic; from it
// the test derives the expected value (y[e] = x[source(e)]) and the expected
// gradient (dx[source(e)] += dy[e], repeated sources summing), and runs
// gradcheck. Then the errors, which name the op and the shapes.
#include <doctest/doctest.h>

#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/ops.hpp>

#include "op_reference.hpp"

namespace {

using namespace test;
using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;
using Inputs = std::vector<Var>;

// Output element `at` (a multi-index) reads element `index` of input
// `input`, or is the constant `fill` (a padding border) when `border`.
struct Source {
    std::size_t input;
    Shape index;
    bool border = false;
    float fill = 0.f;
};
Source border(float fill) { return Source{0, {}, true, fill}; }

struct StructuralCase {
    std::string name;
    std::vector<Shape> inputs;
    std::function<Var(const Inputs&)> op;
    Shape output;
    std::function<Source(const Shape& at)> source;
};

Shape with(Shape s, std::size_t axis, std::size_t value) {
    s[axis] = value;
    return s;
}

std::vector<StructuralCase> cases() {
    std::vector<StructuralCase> c;
    // Reshapes keep the row-major order: output element e is input element e.
    const auto in_order = [](const Shape& in_shape, const Shape& out_shape) {
        return [in_shape, out_shape](const Shape& at) { return Source{0, unravel(ravel(at, out_shape), in_shape)}; };
    };
    c.push_back({"reshape (2, 3, 4) to (4, -1)",
                 {{2, 3, 4}},
                 [](const Inputs& in) {
                     return xgrad::reshape(in[0], {4, -1});
                 },
                 {4, 6},
                 in_order({2, 3, 4}, {4, 6})});
    c.push_back({"reshape a scalar to (1, 1)",
                 {{}},
                 [](const Inputs& in) {
                     return xgrad::reshape(in[0], {1, 1});
                 },
                 {1, 1},
                 in_order({}, {1, 1})});
    c.push_back({"reshape (6) as (-1, 2, 1)",
                 {{6}},
                 [](const Inputs& in) {
                     return xgrad::reshape(in[0], {-1, 2, 1});
                 },
                 {3, 2, 1},
                 in_order({6}, {3, 2, 1})});
    c.push_back({"flatten (2, 3, 4, 5)",
                 {{2, 3, 4, 5}},
                 [](const Inputs& in) { return xgrad::flatten(in[0]); },
                 {2, 60},
                 in_order({2, 3, 4, 5}, {2, 60})});
    c.push_back({"flatten axes 1..2 of (2, 3, 4, 5)",
                 {{2, 3, 4, 5}},
                 [](const Inputs& in) { return xgrad::flatten(in[0], 1, 2); },
                 {2, 12, 5},
                 in_order({2, 3, 4, 5}, {2, 12, 5})});
    c.push_back(
        {"flatten everything", {{2, 3}}, [](const Inputs& in) { return xgrad::flatten(in[0], 0); }, {6}, in_order({2, 3}, {6})});
    c.push_back({"unsqueeze (3, 4) at 1",
                 {{3, 4}},
                 [](const Inputs& in) { return xgrad::unsqueeze(in[0], 1); },
                 {3, 1, 4},
                 in_order({3, 4}, {3, 1, 4})});
    c.push_back({"unsqueeze (3, 4) at -1",
                 {{3, 4}},
                 [](const Inputs& in) { return xgrad::unsqueeze(in[0], -1); },
                 {3, 4, 1},
                 in_order({3, 4}, {3, 4, 1})});
    c.push_back({"squeeze (3, 1, 4) at 1",
                 {{3, 1, 4}},
                 [](const Inputs& in) { return xgrad::squeeze(in[0], 1); },
                 {3, 4},
                 in_order({3, 1, 4}, {3, 4})});

    // y[i0, i1, i2] = x at index[order[d]] = i_d.
    const auto permuted = [](std::vector<std::size_t> order) {
        return [order](const Shape& at) {
            Shape index(order.size());
            for (std::size_t d = 0; d < order.size(); ++d) index[order[d]] = at[d];
            return Source{0, index};
        };
    };
    c.push_back({"permute (2, 3, 4) by (2, 0, 1)",
                 {{2, 3, 4}},
                 [](const Inputs& in) {
                     return xgrad::permute(in[0], {2, 0, 1});
                 },
                 {4, 2, 3},
                 permuted({2, 0, 1})});
    c.push_back({"permute (2, 3, 4, 5) by (3, 1, 0, 2)",
                 {{2, 3, 4, 5}},
                 [](const Inputs& in) {
                     return xgrad::permute(in[0], {3, 1, -4, 2});
                 },
                 {5, 3, 2, 4},
                 permuted({3, 1, 0, 2})});
    c.push_back(
        {"transpose (3, 4)", {{3, 4}}, [](const Inputs& in) { return xgrad::transpose(in[0]); }, {4, 3}, permuted({1, 0})});
    c.push_back({"transpose axes 0 and 2 of (2, 3, 4)",
                 {{2, 3, 4}},
                 [](const Inputs& in) { return xgrad::transpose(in[0], 0, 2); },
                 {4, 3, 2},
                 permuted({2, 1, 0})});

    c.push_back({"broadcast_to (3, 1) to (2, 3, 4)",
                 {{3, 1}},
                 [](const Inputs& in) {
                     return xgrad::broadcast_to(in[0], {2, 3, 4});
                 },
                 {2, 3, 4},
                 [](const Shape& at) {
                     return Source{0, unravel(broadcast_source(at, {3, 1}), {3, 1})};
                 }});
    c.push_back({"broadcast_to a scalar to (2, 2)",
                 {{}},
                 [](const Inputs& in) {
                     return xgrad::broadcast_to(in[0], {2, 2});
                 },
                 {2, 2},
                 [](const Shape&) {
                     return Source{0, {}};
                 }});

    // concat along `axis` of inputs whose sizes along it are `sizes`.
    const auto joined = [](std::size_t axis, std::vector<std::size_t> sizes) {
        return [axis, sizes](const Shape& at) {
            std::size_t k = 0, offset = at[axis];
            while (offset >= sizes[k]) offset -= sizes[k++];
            return Source{k, with(at, axis, offset)};
        };
    };
    c.push_back({"concat (2, 3), (2, 1), (2, 4) along 1",
                 {{2, 3}, {2, 1}, {2, 4}},
                 [](const Inputs& in) { return xgrad::concat(in, 1); },
                 {2, 8},
                 joined(1, {3, 1, 4})});
    c.push_back({"concat (1, 3), (2, 3) along 0",
                 {{1, 3}, {2, 3}},
                 [](const Inputs& in) { return xgrad::concat(in, 0); },
                 {3, 3},
                 joined(0, {1, 2})});
    c.push_back({"concat rank 3 along -1",
                 {{2, 2, 1}, {2, 2, 3}},
                 [](const Inputs& in) { return xgrad::concat(in, -1); },
                 {2, 2, 4},
                 joined(2, {1, 3})});
    c.push_back({"concat (2, 0) and (2, 2) along 1",
                 {{2, 0}, {2, 2}},
                 [](const Inputs& in) { return xgrad::concat(in, 1); },
                 {2, 2},
                 joined(1, {0, 2})});
    {
        std::vector<Shape> hundred(100, Shape{1, 2});
        c.push_back({"concat of 100 inputs",
                     hundred,
                     [](const Inputs& in) { return xgrad::concat(in, 0); },
                     {100, 2},
                     joined(0, std::vector<std::size_t>(100, 1))});
    }
    // stack along `axis`: the new axis picks the input.
    const auto stacked = [](std::size_t axis) {
        return [axis](const Shape& at) {
            Shape index = at;
            index.erase(index.begin() + static_cast<std::ptrdiff_t>(axis));
            return Source{at[axis], index};
        };
    };
    c.push_back({"stack 3 of (2, 3) along 0",
                 {{2, 3}, {2, 3}, {2, 3}},
                 [](const Inputs& in) { return xgrad::stack(in, 0); },
                 {3, 2, 3},
                 stacked(0)});
    c.push_back({"stack 2 of (2, 3) along -1",
                 {{2, 3}, {2, 3}},
                 [](const Inputs& in) { return xgrad::stack(in, -1); },
                 {2, 3, 2},
                 stacked(2)});

    // Output entry j along `axis` reads entry first + j * step.
    const auto strided = [](std::size_t axis, std::size_t first, std::size_t step) {
        return [axis, first, step](const Shape& at) { return Source{0, with(at, axis, first + at[axis] * step)}; };
    };
    c.push_back({"slice 1:6:2 of axis 1 of (5, 6)",
                 {{5, 6}},
                 [](const Inputs& in) { return xgrad::slice(in[0], 1, 1, 6, 2); },
                 {5, 3},
                 strided(1, 1, 2)});
    c.push_back(
        {"slice -3: of (7)", {{7}}, [](const Inputs& in) { return xgrad::slice(in[0], 0, -3, 100); }, {3}, strided(0, 4, 1)});
    c.push_back({"slice ::3 of axis 0 of (7, 2)",
                 {{7, 2}},
                 [](const Inputs& in) { return xgrad::slice(in[0], 0, 0, 7, 3); },
                 {3, 2},
                 strided(0, 0, 3)});
    c.push_back({"slice 2:1 of (4) is empty",
                 {{4}},
                 [](const Inputs& in) { return xgrad::slice(in[0], 0, 2, 1); },
                 {0},
                 strided(0, 2, 1)});
    c.push_back({"narrow 1, 2 of axis 0 of (4, 5)",
                 {{4, 5}},
                 [](const Inputs& in) { return xgrad::narrow(in[0], 0, 1, 2); },
                 {2, 5},
                 strided(0, 1, 1)});
    c.push_back({"narrow of a middle axis",
                 {{2, 5, 3}},
                 [](const Inputs& in) { return xgrad::narrow(in[0], -2, 3, 2); },
                 {2, 2, 3},
                 strided(1, 3, 1)});
    c.push_back({"split (3, 6) into 2, 3, 1 along 1: the middle piece",
                 {{3, 6}},
                 [](const Inputs& in) {
                     return xgrad::split(in[0], {2, 3, 1}, 1)[1];
                 },
                 {3, 3},
                 strided(1, 2, 1)});
    c.push_back({"chunk (7, 2) in 3: the last piece",
                 {{7, 2}},
                 [](const Inputs& in) { return xgrad::chunk(in[0], 3, 0)[2]; },
                 {1, 2},
                 strided(0, 6, 1)});

    c.push_back({"index_select rows 4, 0, 4, 2 of (5, 3): a repeated row sums its gradients",
                 {{5, 3}},
                 [](const Inputs& in) {
                     return xgrad::index_select(in[0], 0, {4, 0, 4, 2});
                 },
                 {4, 3},
                 [](const Shape& at) {
                     const std::size_t rows[] = {4, 0, 4, 2};
                     return Source{0, with(at, 0, rows[at[0]])};
                 }});
    c.push_back({"index_select 2, 2, 0 along the last axis of (2, 3, 4)",
                 {{2, 3, 4}},
                 [](const Inputs& in) {
                     return xgrad::index_select(in[0], -1, {2, 2, 0});
                 },
                 {2, 3, 3},
                 [](const Shape& at) {
                     const std::size_t cols[] = {2, 2, 0};
                     return Source{0, with(at, 2, cols[at[2]])};
                 }});
    {
        const xt::xarray<std::size_t> index{{3, 0}, {1, 1}, {2, 3}};
        c.push_back({"gather along 1 of (3, 4)",
                     {{3, 4}},
                     [index](const Inputs& in) { return xgrad::gather(in[0], 1, index); },
                     {3, 2},
                     [index](const Shape& at) {
                         return Source{0, with(at, 1, index(at[0], at[1]))};
                     }});
        const xt::xarray<std::size_t> rows{{2, 0, 1, 2}, {0, 0, 0, 1}};
        c.push_back({"gather along 0 of (3, 4)",
                     {{3, 4}},
                     [rows](const Inputs& in) { return xgrad::gather(in[0], 0, rows); },
                     {2, 4},
                     [rows](const Shape& at) {
                         return Source{0, with(at, 0, rows(at[0], at[1]))};
                     }});
    }
    // translate2d: image n moved by (dy, dx) = shifts[2n], shifts[2n + 1],
    // zeros moving in; a move as large as the image leaves only zeros.
    {
        const std::vector<long> shifts = {1, -2, 0, 0, -3, 4};
        c.push_back({"translate2d (3, 2, 3, 4) by (1, -2), (0, 0), (-3, 4)",
                     {{3, 2, 3, 4}},
                     [shifts](const Inputs& in) { return xgrad::translate2d(in[0], shifts); },
                     {3, 2, 3, 4},
                     [shifts](const Shape& at) {
                         const long i = long(at[2]) - shifts[2 * at[0]], j = long(at[3]) - shifts[2 * at[0] + 1];
                         if (i < 0 || i >= 3 || j < 0 || j >= 4) return border(0.f);
                         return Source{0, {at[0], at[1], std::size_t(i), std::size_t(j)}};
                     }});
    }
    // take: output element e reads x's flat element positions[e].
    {
        const std::vector<std::size_t> positions = {5, 0, 0, 11, 7, 3};
        c.push_back({"take (3, 4) at 6 flat positions, one repeated, as (2, 3)",
                     {{3, 4}},
                     [positions](const Inputs& in) {
                         return xgrad::take(in[0], positions, {2, 3});
                     },
                     {2, 3},
                     [positions](const Shape& at) {
                         return Source{0, unravel(positions[ravel(at, {2, 3})], {3, 4})};
                     }});
    }
    return c;
}

TEST_CASE("scatter_add adds each value at its position, repeats summing; sum_to sums down a broadcast") {
    const Var v(Tensor{1.f, 2.f, 3.f, 4.f}, true);
    const Var y = xgrad::scatter_add(v, {2, 0, 2, 5}, {2, 3});
    CHECK(y.value() == Tensor{{2.f, 0.f, 4.f}, {0.f, 0.f, 4.f}});
    check_gradients("scatter_add", [](const Inputs& in) { return xgrad::scatter_add(in[0], {2, 0, 2, 5}, {2, 3}); }, {v});
    const Var x = random_var({2, 3, 4}, -1.f, 1.f, 4000);
    const Var s = xgrad::sum_to(x, {3, 1});
    for (std::size_t j = 0; j < 3; ++j) {
        double total = 0;
        for (std::size_t i = 0; i < 2; ++i) {
            for (std::size_t k = 0; k < 4; ++k) total += x.value()(i, j, k);
        }
        CHECK(s.value()(j, 0) == doctest::Approx(total).epsilon(1e-6));
    }
    check_gradients("sum_to (2, 3, 4) -> (3, 1)", [](const Inputs& in) { return xgrad::sum_to(in[0], {3, 1}); }, {x});
}

TEST_CASE("structural ops: every output element comes from its source, and the gradient goes back there") {
    std::uint64_t seed = 2000;
    for (const StructuralCase& c : cases()) {
        INFO(c.name);
        Inputs inputs;
        for (const Shape& s : c.inputs) inputs.push_back(random_var(s, -1.f, 1.f, ++seed));
        const Var y = c.op(inputs);
        REQUIRE(xgrad::shape_string(y.shape()) == xgrad::shape_string(c.output));
        const Tensor dy = random_tensor(c.output, -1.f, 1.f, ++seed);
        backward_with(y, dy);
        Reference value = zeros(c.output);
        std::vector<Reference> grads;
        for (const Shape& s : c.inputs) grads.push_back(zeros(s));
        for (std::size_t e = 0; e < xgrad::numel(c.output); ++e) {
            const Source src = c.source(unravel(e, c.output));
            if (src.border) {
                value.data()[e] = src.fill;
                continue;
            }
            const std::size_t at = ravel(src.index, c.inputs[src.input]);
            value.data()[e] = inputs[src.input].value().data()[at];
            grads[src.input].data()[at] += dy.data()[e];
        }
        check_matches("value", y.value(), value, 0.0);
        for (std::size_t k = 0; k < inputs.size(); ++k) {
            INFO("input " << k);
            check_matches("gradient", inputs[k].grad(), grads[k], 1e-6);
        }
    }
}

TEST_CASE("structural ops pass gradcheck") {
    std::uint64_t seed = 3000;
    for (const StructuralCase& c : cases()) {
        if (c.inputs.size() > 10) continue;  // the 100-input concat is covered by the source map
        Inputs inputs;
        for (const Shape& s : c.inputs) inputs.push_back(random_var(s, -1.f, 1.f, ++seed));
        check_gradients(c.name, c.op, inputs);
    }
}

TEST_CASE("structural ops reject wrong shapes, ranks and axes, naming the op") {
    struct Case {
        const char* op;
        std::function<void()> call;
        const char* detail;
    };
    const Var x = Var::zeros({2, 3}, true);
    const Case cases[] = {
        {"xgrad::reshape",
         [&] {
             xgrad::reshape(x, {4, 2});
         },
         "(2, 3)"},
        {"xgrad::reshape",
         [&] {
             xgrad::reshape(x, {-1, -1});
         },
         "more than one -1"},
        {"xgrad::reshape",
         [&] {
             xgrad::reshape(x, {4, -1});
         },
         "(2, 3)"},
        {"xgrad::flatten", [&] { xgrad::flatten(x, 2); }, "axis 2 is out of range for shape (2, 3)"},
        {"xgrad::squeeze", [&] { xgrad::squeeze(x, 1); }, "has size 3, not 1"},
        {"xgrad::unsqueeze", [&] { xgrad::unsqueeze(x, 3); }, "out of range"},
        {"xgrad::permute", [&] { xgrad::permute(x, {0}); }, "(2, 3)"},
        {"xgrad::permute",
         [&] {
             xgrad::permute(x, {1, 1});
         },
         "appears twice"},
        {"xgrad::transpose", [&] { xgrad::transpose(x, 0, 5); }, "axis 5"},
        {"xgrad::broadcast_to",
         [&] {
             xgrad::broadcast_to(x, {3, 3});
         },
         "(2, 3)"},
        {"xgrad::concat",
         [&] {
             xgrad::concat({x, Var::zeros({3, 2})}, 0);
         },
         "(3, 2)"},
        {"xgrad::concat",
         [&] {
             xgrad::concat({x, Var::zeros({2, 3, 1})}, 0);
         },
         "(2, 3, 1)"},
        {"xgrad::concat", [&] { xgrad::concat({}, 0); }, "no inputs"},
        {"xgrad::translate2d",
         [&] {
             xgrad::translate2d(x, {0, 0});
         },
         "expected an (N, C, H, W) input, got (2, 3)"},
        {"xgrad::translate2d",
         [&] {
             xgrad::translate2d(Var::zeros({2, 1, 3, 3}), {0, 0});
         },
         "2 shifts for 2 images"},
        {"xgrad::sum_to", [&] { xgrad::sum_to(x, {2}); }, "(2) does not broadcast to (2, 3)"},
        {"xgrad::take",
         [&] {
             xgrad::take(x, {0, 1}, {3});
         },
         "2 indices for an output of shape (3)"},
        {"xgrad::scatter_add",
         [&] {
             xgrad::scatter_add(x, {0, 1}, {4});
         },
         "2 indices for 6 values"},
        {"xgrad::concat", [&] { xgrad::concat({x}, 2); }, "axis 2"},
        {"xgrad::stack",
         [&] {
             xgrad::stack({x, Var::zeros({3, 2})});
         },
         "(3, 2)"},
        {"xgrad::slice", [&] { xgrad::slice(x, 1, 0, 3, 0); }, "step 0"},
        {"xgrad::narrow", [&] { xgrad::narrow(x, 1, 2, 2); }, "past its end"},
        {"xgrad::split",
         [&] {
             xgrad::split(x, {1, 1}, 1);
         },
         "summing to 2"},
        {"xgrad::chunk", [&] { xgrad::chunk(x, 0, 1); }, "0 chunks"},
        {"xgrad::gather",
         [&] {
             xgrad::gather(x, 0, xt::xarray<std::size_t>{1, 0});
         },
         "rank 1"},
    };
    for (const Case& c : cases) {
        INFO(std::string(c.op) << ": " << std::string(c.detail));
        std::string message;
        try {
            c.call();
        } catch (const xgrad::ShapeError& e) {
            message = e.what();
        }
        INFO("message: " << message);
        CHECK(message.find(c.op) != std::string::npos);
        CHECK(message.find(c.detail) != std::string::npos);
    }
    CHECK_THROWS_WITH_AS(xgrad::index_select(x, 0, {0, 2}), doctest::Contains("xgrad::index_select: index 2"), std::out_of_range);
    CHECK_THROWS_WITH_AS(xgrad::take(x, {0, 6}, {2}), doctest::Contains("xgrad::take: index 6"), std::out_of_range);
    CHECK_THROWS_WITH_AS(xgrad::scatter_add(x, {0, 1, 2, 3, 4, 9}, {9}), doctest::Contains("xgrad::scatter_add: index 9"),
                         std::out_of_range);
    CHECK_THROWS_WITH_AS(xgrad::gather(x, 1, xt::xarray<std::size_t>{{0, 3}}), doctest::Contains("xgrad::gather: index 3"),
                         std::out_of_range);
}

TEST_CASE("a structural op's result is a tensor of its own") {
    Var x(Tensor{{1.f, 2.f}, {3.f, 4.f}});
    const Var y = xgrad::reshape(x, {4});
    x.mutable_value()(0, 0) = 9.f;
    CHECK(y.value()(0) == 1.f);
}

}  // namespace

TEST_CASE("slice with a step near LONG_MAX takes the first element, and its gradient goes back there") {
    Var x(Tensor{1.f, 2.f, 3.f, 4.f, 5.f}, true);
    for (const long step : {std::numeric_limits<long>::max(), std::numeric_limits<long>::max() - 1, 5L}) {
        INFO("step " << step);
        x.zero_grad();
        const Var y = xgrad::slice(x, 0, 0, 5, step);
        REQUIRE(y.shape() == Shape{1});
        CHECK(y.value()(0) == 1.f);
        xgrad::backward(xgrad::sum(y));
        CHECK(x.grad() == Tensor{1.f, 0.f, 0.f, 0.f, 0.f});
    }
    CHECK(xgrad::slice(x, 0, 2, std::numeric_limits<long>::max(), std::numeric_limits<long>::max()).value() == Tensor{3.f});
}
