// pad2d: a constant border around the planes of an (N, C, H, W) tensor.
// The third worked example of docs/extending.md: a structural op of the
// user's own, in one header, with both backward rules.
#pragma once

#include <algorithm>
#include <limits>
#include <string>

#include <xgrad/core/op.hpp>
#include <xgrad/ops/conv.hpp>   // Size2
#include <xgrad/ops/shape.hpp>  // narrow, for the differentiable rule

namespace xgrad {

namespace pad2d_detail {

// Where the input's rows sit in the output: every one of the N*C planes of
// h x w elements lands `top` rows down and `left` columns in, inside a
// plane of out_h x out_w.
struct Border {
    std::size_t planes, h, w, top, left, out_h, out_w;
};

// Calls f(input_offset, output_offset) for each input row of w elements.
template <class F>
void for_each_row(const Border& b, const F& f) {
    for (std::size_t p = 0; p < b.planes; ++p) {
        for (std::size_t r = 0; r < b.h; ++r) f((p * b.h + r) * b.w, (p * b.out_h + r + b.top) * b.out_w + b.left);
    }
}

}  // namespace pad2d_detail

// y = x with `padding.h` rows of `value` above and below each plane and
// `padding.w` columns left and right: (N, C, H + 2 ph, W + 2 pw), as
// PyTorch's F.pad(x, (pw, pw, ph, ph), value=value). dx = the interior of dy.
inline Var pad2d(const Var& x, Size2 padding, float value = 0.f) {
    using pad2d_detail::Border;
    const Shape& s = x.shape();
    if (x.dim() != 4) throw ShapeError("xgrad::pad2d: expected an (N, C, H, W) input, got " + shape_string(s));
    const std::size_t most = std::numeric_limits<std::size_t>::max() / 4;
    if (padding.h > most || padding.w > most) {
        throw ShapeError("xgrad::pad2d: padding (" + std::to_string(padding.h) + ", " + std::to_string(padding.w) +
                         ") is too large");
    }
    const Shape out{s[0], s[1], s[2] + 2 * padding.h, s[3] + 2 * padding.w};
    checked_numel("pad2d", out);

    Op op("pad2d", {x}, out);
    const Border& b = op.state<Border>(Border{s[0] * s[1], s[2], s[3], padding.h, padding.w, out[2], out[3]});
    float* y = op.out().data();
    std::fill(y, y + op.out().size(), value);
    pad2d_detail::for_each_row(b, [&](std::size_t in, std::size_t at) { std::copy_n(x.value().data() + in, b.w, y + at); });

    return op.finish(
        [](BackwardContext& ctx) {  // dx: each input row's stretch of dy, copied (or added)
            if (!ctx.needs_grad(0)) return;
            const Border& b = ctx.state<Border>();
            const GradSink dx = ctx.sink(0);
            const float* dy = ctx.grad_output().data();
            pad2d_detail::for_each_row(b, [&](std::size_t in, std::size_t at) { dx.run(in, dy + at, b.w); });
        },
        [](GraphContext& g) {  // the same interior, cut out with ops
            const Border& b = g.state<Border>();
            g.accumulate(0, narrow(narrow(g.grad_output(), 2, b.top, b.h), 3, b.left, b.w));
        });
}

}  // namespace xgrad
