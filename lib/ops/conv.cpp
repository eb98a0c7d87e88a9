// conv2d and conv_transpose2d over the im2col + GEMM engine of
// conv_kernels.hpp: each pass is split into chunks of images over xgrad's
// threads (one chunk per thread, so results depend on the thread count only),
// with its scratch from the pool.
#include <xgrad/ops/conv.hpp>

#include <climits>
#include <stdexcept>
#include <string>

#include <xgrad/core/op.hpp>

#include "conv_kernels.hpp"

namespace xgrad {
namespace {

using conv::Conv2dGeometry;
using conv::ConvPass;

[[noreturn]] void fail(const char* op, const std::string& why) { throw ShapeError(std::string("xgrad::") + op + ": " + why); }

int to_int(const char* op, std::size_t v, const char* what) {
    if (v > std::size_t(1) << 30) fail(op, std::string(what) + " " + std::to_string(v) + " is too large");
    return static_cast<int>(v);
}

// x (N, C_in, H, W), w (., ., kH, kW), b (C) or empty, checked against each
// other; `channel_axis` says which axis of w must equal C_in.
void check_operands(const char* op, const Var& x, const Var& w, const Var& b, std::size_t channel_axis, std::size_t out_axis) {
    const auto shapes = [&] {
        return "x " + shape_string(x.shape()) + ", w " + shape_string(w.shape()) +
               (b.defined() ? ", b " + shape_string(b.shape()) : std::string(", no b"));
    };
    if (x.dim() != 4 || w.dim() != 4) fail(op, "expected an (N, C, H, W) input and a rank-4 weight; got " + shapes());
    if (w.shape()[channel_axis] != x.shape()[1]) fail(op, "the weight does not fit the input's channels: " + shapes());
    if (b.defined() && (b.dim() != 1 || b.shape()[0] != w.shape()[out_axis]))
        fail(op, "the bias does not fit the weight: " + shapes());
}

std::string size2_string(Size2 s) { return "(" + std::to_string(s.h) + ", " + std::to_string(s.w) + ")"; }

// Before any geometry is computed: the output size divides by the stride.
void check_steps(const char* op, Size2 stride, Size2 dilation) {
    if (stride.h == 0 || stride.w == 0) fail(op, "stride " + size2_string(stride) + " (each must be at least 1)");
    if (dilation.h == 0 || dilation.w == 0) fail(op, "dilation " + size2_string(dilation) + " (each must be at least 1)");
}

// One side (height or width) of the geometry in 64 bits. The engine
// computes it in int, where in + 2 * pad, dil * (k - 1) and (in - 1) *
// stride overflow for sizes that each pass to_int (up to 2^30).
void check_extent(const char* op, const std::string& side, long long in, long long k, long long stride, long long pad,
                  long long dil, long long output_padding, bool transposed) {
    const long long most = INT_MAX;
    const std::string why = " is too large (the geometry is computed in 32-bit integers: at most " + std::to_string(most) + ")";
    const long long span = dil * (k - 1) + 1;
    if (span > most) {
        fail(op, "kernel " + side + " " + std::to_string(k) + " with dilation " + std::to_string(dil) + " spans " +
                     std::to_string(span) + ", which" + why);
    }
    long long image = in;  // the image side: the input of conv2d, the output of conv_transpose2d
    if (transposed) {
        image = (in - 1) * stride - 2 * pad + span + output_padding;
        if (image > most || (in - 1) * stride > most) {
            fail(op, "output " + side + " (" + std::to_string(in) + " - 1) * stride " + std::to_string(stride) +
                         " - 2 * padding " + std::to_string(pad) + " + " + std::to_string(span + output_padding) + " = " +
                         std::to_string(image) + why);
        }
    }
    if (image + 2 * pad > most) {
        fail(op, side + " " + std::to_string(image) + " + 2 * padding " + std::to_string(pad) + " = " +
                     std::to_string(image + 2 * pad) + why);
    }
}

// The engine's geometry from make(), validated; its messages speak of the
// engine's terms, so they are said again with the op's name and shapes.
template <class Make>
Conv2dGeometry checked(const char* op, const Var& x, const Var& w, const Make& make) {
    Conv2dGeometry g;
    try {
        g = make();
        g.validate();
    } catch (const std::invalid_argument& e) {
        fail(op, std::string(e.what()) + " (x " + shape_string(x.shape()) + ", w " + shape_string(w.shape()) + ")");
    }
    if (g.out_h <= 0 || g.out_w <= 0 || g.in_h <= 0 || g.in_w <= 0) {
        fail(op, "the kernel and padding leave no output for x " + shape_string(x.shape()) + " and w " + shape_string(w.shape()));
    }
    return g;
}

int chunks() { return num_threads(); }

// Runs one engine pass with pooled scratch, its image chunks on xgrad's threads.
template <class Pass>
void run(const Conv2dGeometry& g, ConvPass pass, bool transposed, const Pass& body) {
    const int n = chunks();
    const std::size_t floats =
        transposed ? conv::conv_transpose2d_scratch_floats(g, pass, 0, n) : conv::conv2d_scratch_floats(g, pass, 0, n);
    Scratch scratch(Shape{floats});
    const conv::ConvScratch s{scratch.data(), floats};
    const auto pf = [](std::size_t count, std::size_t grain, conv::RangeBody range) {
        parallel_for(count, grain, [&](std::size_t begin, std::size_t end) { range(begin, end); });
    };
    body(s, conv::ParallelFor(pf), n);
}

Shape image_side(const Conv2dGeometry& g) {
    return {std::size_t(g.batch), std::size_t(g.in_c), std::size_t(g.in_h), std::size_t(g.in_w)};
}
Shape column_side(const Conv2dGeometry& g) {
    return {std::size_t(g.batch), std::size_t(g.out_c), std::size_t(g.out_h), std::size_t(g.out_w)};
}

// The bias gradient: dy summed over every axis but the channels (axis 1).
void accumulate_bias(BackwardContext& ctx, std::size_t input, const Shape& dy_shape) {
    if (ctx.num_inputs() <= input) return;
    const Shape per_channel{dy_shape[1], 1, 1};
    ctx.accumulate_into(
        input, [&](float* db, bool add) { sum_to(ctx.op_name(), ctx.grad_output().data(), dy_shape, db, per_channel, add); });
}

}  // namespace

Var conv2d(const Var& x, const Var& w, const Var& b, const Conv2dOptions& o) {
    const char* op = "conv2d";
    check_operands(op, x, w, b, 1, 0);
    check_steps(op, o.stride, o.dilation);
    const Shape &xs = x.shape(), &ws = w.shape();
    check_extent(op, "height", to_int(op, xs[2], "height"), to_int(op, ws[2], "kernel height"), to_int(op, o.stride.h, "stride"),
                 to_int(op, o.padding.h, "padding"), to_int(op, o.dilation.h, "dilation"), 0, false);
    check_extent(op, "width", to_int(op, xs[3], "width"), to_int(op, ws[3], "kernel width"), to_int(op, o.stride.w, "stride"),
                 to_int(op, o.padding.w, "padding"), to_int(op, o.dilation.w, "dilation"), 0, false);
    const Conv2dGeometry g = checked(op, x, w, [&] {
        return Conv2dGeometry::conv2d(
            to_int(op, xs[0], "batch"), to_int(op, xs[1], "channels"), to_int(op, xs[2], "height"), to_int(op, xs[3], "width"),
            to_int(op, ws[0], "output channels"), to_int(op, ws[2], "kernel height"), to_int(op, ws[3], "kernel width"),
            to_int(op, o.stride.h, "stride"), to_int(op, o.stride.w, "stride"), to_int(op, o.padding.h, "padding"),
            to_int(op, o.padding.w, "padding"), to_int(op, o.dilation.h, "dilation"), to_int(op, o.dilation.w, "dilation"));
    });
    const std::initializer_list<Var> with_bias = {x, w, b}, without_bias = {x, w};
    Op node(op, b.defined() ? with_bias : without_bias, column_side(g));
    node.state<Conv2dGeometry>(g);
    run(g, ConvPass::forward, false, [&](const conv::ConvScratch& s, conv::ParallelFor pf, int n) {
        conv::conv2d_forward_parallel(x.value().data(), w.value().data(), b.defined() ? b.value().data() : nullptr,
                                      node.out().data(), g, s, pf, n);
    });
    return node.finish([](BackwardContext& ctx) {
        const Conv2dGeometry& g = ctx.state<Conv2dGeometry>();
        const float *dy = ctx.grad_output().data(), *x = ctx.input(0).data(), *w = ctx.input(1).data();
        // Each gradient only when wanted: a frozen conv costs no weight-gradient GEMM.
        ctx.accumulate_into(0, [&](float* dx, bool add) {
            run(g, ConvPass::backward_data, false, [&](const conv::ConvScratch& s, conv::ParallelFor pf, int n) {
                conv::conv2d_backward_data_parallel(dy, w, dx, g, s, pf, n, add);
            });
        });
        ctx.accumulate_into(1, [&](float* dw, bool add) {
            run(g, ConvPass::backward_weight, false, [&](const conv::ConvScratch& s, conv::ParallelFor pf, int n) {
                conv::conv2d_backward_weight_parallel(dy, x, dw, nullptr, g, s, pf, n, add);
            });
        });
        accumulate_bias(ctx, 2, ctx.grad_output().shape());
    });
}

Var conv_transpose2d(const Var& x, const Var& w, const Var& b, const ConvTranspose2dOptions& o) {
    const char* op = "conv_transpose2d";
    check_operands(op, x, w, b, 0, 1);
    check_steps(op, o.stride, o.dilation);
    if (o.output_padding.h >= std::max(o.stride.h, o.dilation.h) || o.output_padding.w >= std::max(o.stride.w, o.dilation.w)) {
        fail(op, "output padding (" + std::to_string(o.output_padding.h) + ", " + std::to_string(o.output_padding.w) +
                     ") must be smaller than the stride or the dilation");
    }
    const Shape &xs = x.shape(), &ws = w.shape();
    check_extent(op, "height", to_int(op, xs[2], "height"), to_int(op, ws[2], "kernel height"), to_int(op, o.stride.h, "stride"),
                 to_int(op, o.padding.h, "padding"), to_int(op, o.dilation.h, "dilation"),
                 to_int(op, o.output_padding.h, "output padding"), true);
    check_extent(op, "width", to_int(op, xs[3], "width"), to_int(op, ws[3], "kernel width"), to_int(op, o.stride.w, "stride"),
                 to_int(op, o.padding.w, "padding"), to_int(op, o.dilation.w, "dilation"),
                 to_int(op, o.output_padding.w, "output padding"), true);
    const Conv2dGeometry g = checked(op, x, w, [&] {
        return Conv2dGeometry::conv_transpose2d(
            to_int(op, xs[0], "batch"), to_int(op, xs[1], "channels"), to_int(op, xs[2], "height"), to_int(op, xs[3], "width"),
            to_int(op, ws[1], "output channels"), to_int(op, ws[2], "kernel height"), to_int(op, ws[3], "kernel width"),
            to_int(op, o.stride.h, "stride"), to_int(op, o.stride.w, "stride"), to_int(op, o.padding.h, "padding"),
            to_int(op, o.padding.w, "padding"), to_int(op, o.output_padding.h, "output padding"),
            to_int(op, o.output_padding.w, "output padding"), to_int(op, o.dilation.h, "dilation"),
            to_int(op, o.dilation.w, "dilation"));
    });
    const std::initializer_list<Var> with_bias = {x, w, b}, without_bias = {x, w};
    Op node(op, b.defined() ? with_bias : without_bias, image_side(g));
    node.state<Conv2dGeometry>(g);
    run(g, ConvPass::forward, true, [&](const conv::ConvScratch& s, conv::ParallelFor pf, int n) {
        conv::conv_transpose2d_forward_parallel(x.value().data(), w.value().data(), b.defined() ? b.value().data() : nullptr,
                                                node.out().data(), g, s, pf, n);
    });
    return node.finish([](BackwardContext& ctx) {
        const Conv2dGeometry& g = ctx.state<Conv2dGeometry>();
        const float *dy = ctx.grad_output().data(), *x = ctx.input(0).data(), *w = ctx.input(1).data();
        ctx.accumulate_into(0, [&](float* dx, bool add) {
            run(g, ConvPass::backward_data, true, [&](const conv::ConvScratch& s, conv::ParallelFor pf, int n) {
                conv::conv_transpose2d_backward_data_parallel(dy, w, dx, g, s, pf, n, add);
            });
        });
        ctx.accumulate_into(1, [&](float* dw, bool add) {
            run(g, ConvPass::backward_weight, true, [&](const conv::ConvScratch& s, conv::ParallelFor pf, int n) {
                conv::conv_transpose2d_backward_weight_parallel(dy, x, dw, nullptr, g, s, pf, n, add);
            });
        });
        accumulate_bias(ctx, 2, ctx.grad_output().shape());
    });
}

}  // namespace xgrad
