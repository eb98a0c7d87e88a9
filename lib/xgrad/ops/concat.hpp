// concat: tensors joined along an axis. The second worked example of
// docs/extending.md: an op with any number of inputs and typed state of its
// own, written like softplus with nothing but the public op API.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include <xgrad/core/op.hpp>

namespace xgrad {

namespace concat_detail {

// Where the inputs sit in the output: seen as `outer` blocks (the product
// of the sizes before the axis) of `block` elements each, every block holds
// one run of each input in turn (input k's run is its size along the axis
// times the sizes after it).
struct Layout {
    std::size_t outer, block;
};

inline Shape joined_shape(const std::vector<Var>& xs, std::size_t axis) {
    const Shape& first = xs[0].shape();
    Shape out = first;
    out[axis] = 0;
    for (std::size_t k = 0; k < xs.size(); ++k) {
        const Shape& s = xs[k].shape();
        bool fits = s.size() == first.size();
        for (std::size_t d = 0; fits && d < s.size(); ++d) fits = d == axis || s[d] == first[d];
        if (!fits) {
            throw ShapeError("xgrad::concat: input " + std::to_string(k) + " " + shape_string(s) + " does not fit input 0 " +
                             shape_string(first) + " (every size but that of axis " + std::to_string(axis) + " must match)");
        }
        out[axis] += s[axis];
    }
    return out;
}

}  // namespace concat_detail

// The inputs joined along `axis`: their shapes must agree on every other
// axis. Input k's gradient is its own stretch of dy.
inline Var concat(const std::vector<Var>& xs, int axis = 0) {
    using concat_detail::Layout;
    if (xs.empty()) throw ShapeError("xgrad::concat: no inputs");
    const std::size_t a = normalize_axis("concat", axis, xs[0].shape());
    const Shape shape = concat_detail::joined_shape(xs, a);

    Op op("concat", xs, shape);
    const AxisLanes lanes = lanes_around(shape, a);
    const Layout& layout = op.state<Layout>(Layout{lanes.outer, lanes.n * lanes.inner});

    float* out = op.out().data();
    std::size_t offset = 0;  // where input k's run starts inside each block
    for (const Var& x : xs) {
        const std::size_t run = x.shape()[a] * lanes.inner;
        for (std::size_t b = 0; b < layout.outer; ++b) {
            std::copy_n(x.value().data() + b * run, run, out + b * layout.block + offset);
        }
        offset += run;
    }

    return op.finish([](BackwardContext& ctx) {
        const Layout& l = ctx.state<Layout>();
        const float* dy = ctx.grad_output().data();
        std::size_t offset = 0;
        for (std::size_t k = 0; k < ctx.num_inputs(); ++k) {
            const std::size_t run = l.outer == 0 ? 0 : ctx.input(k).size() / l.outer;
            ctx.accumulate_runs(k, [&](auto&& put) {
                for (std::size_t b = 0; b < l.outer; ++b) put(b * run, dy + b * l.block + offset, run);
            });
            offset += run;
        }
    });
}

}  // namespace xgrad
