// conv2d and conv_transpose2d over the im2col + GEMM engine of
// conv_kernels.hpp: each pass is split into chunks of images over xgrad's
// threads (one chunk per thread, so results depend on the thread count only),
// with its scratch from the pool.
//
// For one geometry (conv_kernels.hpp: an image side and a column side) three
// ops, each differentiable any number of times through the other two:
//   to_columns(image, w)          conv2d: image side -> column side
//   to_image(columns, w)          conv_transpose2d, its adjoint in the input
//   weight_gradient(image, cols)  d <to_columns(image, w), cols> / d w
// d to_columns = (to_image(dy, w), weight_gradient(image, dy));
// d to_image = (to_columns(dy, w), weight_gradient(dy, columns));
// d weight_gradient = (to_image(columns, dw), to_columns(image, dw)).
#include <xgrad/ops/conv.hpp>

#include <climits>
#include <optional>
#include <stdexcept>
#include <string>

#include <xtensor/xoperation.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/core/parallel.hpp>
#include <xgrad/core/simd.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/reduce.hpp>

#include "conv_kernels.hpp"
#include "rectifier.hpp"

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
// The messages are built only on failure: a training step calls this.
void check_extent(const char* op, const char* side, long long in, long long k, long long stride, long long pad, long long dil,
                  long long output_padding, bool transposed) {
    constexpr long long most = INT_MAX;
    const auto why = [] {
        return " is too large (the geometry is computed in 32-bit integers: at most " + std::to_string(most) + ")";
    };
    const long long span = dil * (k - 1) + 1;
    if (span > most) {
        fail(op, std::string("kernel ") + side + " " + std::to_string(k) + " with dilation " + std::to_string(dil) + " spans " +
                     std::to_string(span) + ", which" + why());
    }
    long long image = in;  // the image side: the input of conv2d, the output of conv_transpose2d
    if (transposed) {
        image = (in - 1) * stride - 2 * pad + span + output_padding;
        if (image > most || (in - 1) * stride > most) {
            fail(op, std::string("output ") + side + " (" + std::to_string(in) + " - 1) * stride " + std::to_string(stride) +
                         " - 2 * padding " + std::to_string(pad) + " + " + std::to_string(span + output_padding) + " = " +
                         std::to_string(image) + why());
        }
    }
    if (image + 2 * pad > most) {
        fail(op, side + (" " + std::to_string(image)) + " + 2 * padding " + std::to_string(pad) + " = " +
                     std::to_string(image + 2 * pad) + why());
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

// Runs one engine pass with pooled scratch, a chunk of images per thread.
template <class Pass>
void run(const Conv2dGeometry& g, ConvPass pass, bool transposed, const Pass& body) {
    const int chunks = num_threads();
    const std::size_t floats =
        transposed ? conv::conv_transpose2d_scratch_floats(g, pass, chunks) : conv::conv2d_scratch_floats(g, pass, chunks);
    Scratch scratch(Shape{floats});
    body(conv::ConvScratch{scratch.data(), floats}, chunks);
}

Shape image_side(const Conv2dGeometry& g) {
    return {std::size_t(g.batch), std::size_t(g.in_c), std::size_t(g.in_h), std::size_t(g.in_w)};
}
Shape column_side(const Conv2dGeometry& g) {
    return {std::size_t(g.batch), std::size_t(g.out_c), std::size_t(g.out_h), std::size_t(g.out_w)};
}

// ---- the engine's passes into gradient sinks ------------------------------------

// image (=/+=) the column side through w (conv2d's data gradient).
void add_image(const float* columns, const float* w, const GradSink& image, const Conv2dGeometry& g) {
    run(g, ConvPass::backward_data, false,
        [&](const conv::ConvScratch& s, int n) { conv::conv2d_backward_data(columns, w, image.data(), g, s, n, image.add); });
}
// columns (=/+=) the image side through w (conv_transpose2d's data gradient).
void add_columns(const float* image, const float* w, const GradSink& columns, const Conv2dGeometry& g) {
    run(g, ConvPass::backward_data, true, [&](const conv::ConvScratch& s, int n) {
        conv::conv_transpose2d_backward_data(image, w, columns.data(), g, s, n, columns.add);
    });
}
// dw (=/+=) the weight gradient of image and columns; `transposed` picks
// conv_transpose2d's kernel (the same sum, arranged for that op).
void add_weight(const float* image, const float* columns, const GradSink& dw, const Conv2dGeometry& g, bool transposed) {
    run(g, ConvPass::backward_weight, transposed, [&](const conv::ConvScratch& s, int n) {
        if (transposed) {
            conv::conv_transpose2d_backward_weight(image, columns, dw.data(), g, s, n, dw.add);
        } else {
            conv::conv2d_backward_weight(columns, image, dw.data(), g, s, n, dw.add);
        }
    });
}

// The gradient before conv2d's rectifier, from the gradient after it: into
// `before`, or dy itself without a rectifier. The output's sign is the sign
// before the rectifier (its slope is >= 0), so the mask comes from the
// output, as relu's does; leaky_relu's kernel takes it in place of its input.
const float* gradient_before_rectifier(BackwardContext& ctx, const std::optional<float>& slope, std::optional<Scratch>& before) {
    const Tensor& dy = ctx.grad_output();
    if (!slope) return dy.data();
    const float *y = ctx.output().data(), *g = dy.data();
    float* out = before.emplace(dy.shape()).data();
    const float s = *slope;
    parallel_for(dy.size(), kBlockElements, [&](std::size_t begin, std::size_t end) {
        if (s == 0.f) {
            simd::relu_backward(y + begin, g + begin, out + begin, end - begin);
        } else {
            simd::leaky_relu_backward(y + begin, g + begin, out + begin, end - begin, s);
        }
    });
    return out;
}

// The bias gradient: dy summed over every axis but the channels (axis 1).
// Each plane in float lanes, as batch norm sums its gradients (lane_sum),
// the planes in double: about twice as fast as sum_to, whose sums run all in
// double, which a loss's digits need (a finite-difference gradcheck failed
// with lane_sum there) and a gradient does not. A channel is summed on one
// thread, so the bits do not depend on the number of threads.
void add_bias(BackwardContext& ctx, const float* dy) {
    if (ctx.num_inputs() < 3 || !ctx.needs_grad(2)) return;
    const Shape& shape = ctx.grad_output().shape();
    const GradSink db = ctx.sink(2);
    const std::size_t images = shape[0], channels = shape[1], plane = shape[2] * shape[3];
    const auto sum_channels = [&](std::size_t begin, std::size_t end) {
        for (std::size_t c = begin; c < end; ++c) {
            double total = 0.0;
            for (std::size_t n = 0; n < images; ++n) {
                const float* run = dy + (n * channels + c) * plane;
                total += lane_sum(plane, [run](std::size_t i) { return run[i]; });
            }
            db.data()[c] = db.add ? db.data()[c] + static_cast<float>(total) : static_cast<float>(total);
        }
    };
    parallel_for(channels, items_per_block(images * plane), sum_channels);
}
void add_bias(GraphContext& g, const Var& dy) {
    if (g.num_inputs() == 3 && g.needs_grad(2)) g.accumulate(2, xgrad::sum(dy, {0, 2, 3}));
}

// conv2d's: the geometry, and the rectifier its output went through, if any.
struct Conv2dState {
    Conv2dGeometry g;
    std::optional<float> rectifier_slope;
};

struct WeightGradientState {
    Conv2dGeometry g;
    bool transposed;
};

Var to_columns(const Var& image, const Var& w, const Var& b, const Conv2dGeometry& g,
               std::optional<float> rectifier_slope = std::nullopt);
Var to_image(const Var& columns, const Var& w, const Var& b, const Conv2dGeometry& g);

Var weight_gradient(const Var& image, const Var& columns, const Conv2dGeometry& g, bool transposed) {
    Op op("conv2d_weight_grad", {image, columns},
          Shape{std::size_t(g.out_c), std::size_t(g.in_c), std::size_t(g.kernel_h), std::size_t(g.kernel_w)});
    op.state<WeightGradientState>(WeightGradientState{g, transposed});
    add_weight(image.value().data(), columns.value().data(), GradSink{op.out(), false}, g, transposed);
    return op.finish(
        [](BackwardContext& ctx) {
            const Conv2dGeometry& g = ctx.state<WeightGradientState>().g;
            const float* dw = ctx.grad_output().data();
            if (ctx.needs_grad(0)) add_image(ctx.input(1).data(), dw, ctx.sink(0), g);
            if (ctx.needs_grad(1)) add_columns(ctx.input(0).data(), dw, ctx.sink(1), g);
        },
        [](GraphContext& gc) {
            const Conv2dGeometry& g = gc.state<WeightGradientState>().g;
            if (gc.needs_grad(0)) gc.accumulate(0, to_image(gc.input(1), gc.grad_output(), Var(), g));
            if (gc.needs_grad(1)) gc.accumulate(1, to_columns(gc.input(0), gc.grad_output(), Var(), g));
        });
}

Var to_columns(const Var& image, const Var& w, const Var& b, const Conv2dGeometry& g, std::optional<float> rectifier_slope) {
    const std::initializer_list<Var> with_bias = {image, w, b}, without_bias = {image, w};
    Op op("conv2d", b.defined() ? with_bias : without_bias, column_side(g));
    op.state<Conv2dState>(Conv2dState{g, rectifier_slope});
    run(g, ConvPass::forward, false, [&](const conv::ConvScratch& s, int n) {
        conv::conv2d_forward(image.value().data(), w.value().data(), b.defined() ? b.value().data() : nullptr, op.out().data(), g,
                             s, n, rectifier_slope);
    });
    // Each gradient only when wanted: a frozen conv costs no weight-gradient GEMM.
    return op.finish(
        [](BackwardContext& ctx) {
            const Conv2dState& state = ctx.state<Conv2dState>();
            std::optional<Scratch> before;
            const float* dy = gradient_before_rectifier(ctx, state.rectifier_slope, before);
            if (ctx.needs_grad(0)) add_image(dy, ctx.input(1).data(), ctx.sink(0), state.g);
            if (ctx.needs_grad(1)) add_weight(ctx.input(0).data(), dy, ctx.sink(1), state.g, false);
            add_bias(ctx, dy);
        },
        [](GraphContext& gc) {
            const Conv2dState& state = gc.state<Conv2dState>();
            Var dy = gc.grad_output();
            if (state.rectifier_slope) {  // the mask is a constant, as relu's and leaky_relu's are
                dy = dy * constant(xt::where(gc.output().value() > 0.f, 1.f, *state.rectifier_slope));
            }
            if (gc.needs_grad(0)) gc.accumulate(0, to_image(dy, gc.input(1), Var(), state.g));
            if (gc.needs_grad(1)) gc.accumulate(1, weight_gradient(gc.input(0), dy, state.g, false));
            add_bias(gc, dy);
        });
}

Var to_image(const Var& columns, const Var& w, const Var& b, const Conv2dGeometry& g) {
    const std::initializer_list<Var> with_bias = {columns, w, b}, without_bias = {columns, w};
    Op op("conv_transpose2d", b.defined() ? with_bias : without_bias, image_side(g));
    op.state<Conv2dGeometry>(g);
    run(g, ConvPass::forward, true, [&](const conv::ConvScratch& s, int n) {
        conv::conv_transpose2d_forward(columns.value().data(), w.value().data(), b.defined() ? b.value().data() : nullptr,
                                       op.out().data(), g, s, n);
    });
    return op.finish(
        [](BackwardContext& ctx) {
            const Conv2dGeometry& g = ctx.state<Conv2dGeometry>();
            const float* dy = ctx.grad_output().data();
            if (ctx.needs_grad(0)) add_columns(dy, ctx.input(1).data(), ctx.sink(0), g);
            if (ctx.needs_grad(1)) add_weight(dy, ctx.input(0).data(), ctx.sink(1), g, true);
            add_bias(ctx, dy);
        },
        [](GraphContext& gc) {
            const Conv2dGeometry& g = gc.state<Conv2dGeometry>();
            if (gc.needs_grad(0)) gc.accumulate(0, to_columns(gc.grad_output(), gc.input(1), Var(), g));
            if (gc.needs_grad(1)) gc.accumulate(1, weight_gradient(gc.grad_output(), gc.input(0), g, true));
            add_bias(gc, gc.grad_output());
        });
}

}  // namespace

Var conv2d(const Var& x, const Var& w, const Var& b, const Conv2dOptions& o) {
    const char* op = "conv2d";
    check_rectifier_slope(op, o.rectifier_slope);
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
    return to_columns(x, w, b, g, o.rectifier_slope);
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
    return to_image(x, w, b, g);
}

}  // namespace xgrad
