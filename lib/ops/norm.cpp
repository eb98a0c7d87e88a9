#include <xgrad/ops/norm.hpp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <xgrad/core/kernels.hpp>
#include <xgrad/core/op.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/elementwise.hpp>
#include <xgrad/ops/reduce.hpp>
#include <xgrad/ops/shape.hpp>

#include "rectifier.hpp"

namespace xgrad {
namespace {

[[noreturn]] void fail(const char* op, const std::string& why) { throw ShapeError(std::string("xgrad::") + op + ": " + why); }

void require_affine(const char* op, const Var& weight, const Var& bias, const Shape& shape) {
    if (weight.defined() != bias.defined()) fail(op, "give both weight and bias, or neither");
    if (weight.defined() && (weight.shape() != shape || bias.shape() != shape)) {
        fail(op, "weight " + shape_string(weight.shape()) + " and bias " + shape_string(bias.shape()) + " must both be " +
                     shape_string(shape));
    }
}

// A hyperparameter as an error message shows it.
std::string number_text(float v) {
    std::ostringstream s;
    s << v;
    return s.str();
}

// eps <= 0 divides by zero for a constant input, NaN or infinity gives NaN
// or zeros; a momentum outside [0, 1] (or NaN) makes the running statistics
// diverge.
void check_hyperparameters(const char* op, float eps, const float* momentum) {
    if (!(std::isfinite(eps) && eps > 0.f)) {
        throw std::invalid_argument(std::string("xgrad::") + op + ": eps " + number_text(eps) +
                                    " (expected a finite number > 0)");
    }
    if (momentum && !(*momentum >= 0.f && *momentum <= 1.f)) {
        throw std::invalid_argument(std::string("xgrad::") + op + ": momentum " + number_text(*momentum) +
                                    " (expected 0 <= momentum <= 1)");
    }
}

// Per channel over (N, C, inner): what backward needs besides x and dy.
struct BatchNormState {
    AxisLanes lanes;  // outer = N, n = C, inner = the other axes
    bool training;
    float eps;
    std::optional<float> rectifier_slope;  // BatchNormOptions'
};

// The rectifiers batch_norm can apply to y in its own passes: each one's
// value of y and the gradient through it at y, the same as relu's and
// leaky_relu's (NaN passes, the gradient at 0 is the negative side's).
struct NoRectifier {
    float operator()(float y) const { return y; }
    float gradient(float /*y*/, float dy) const { return dy; }
};
struct Relu {
    float operator()(float y) const { return y < 0.f ? 0.f : y; }
    float gradient(float y, float dy) const { return y > 0.f ? dy : 0.f; }
};
struct LeakyRelu {
    float slope;
    // y > 0 ? y : slope y (NaN, infinities and signed zeros alike), as
    // max and min, which vectorize: the select stayed a branch per element.
    float operator()(float y) const { return std::max(y, 0.f) + slope * std::min(y, 0.f); }
    float gradient(float y, float dy) const { return y > 0.f ? dy : slope * dy; }
};

// f(rectifier) with the one that `slope` asks for: a type each, so that the
// loops over x are compiled for each without a branch per element.
template <class F>
void with_rectifier(const std::optional<float>& slope, const F& f) {
    if (!slope) {
        f(NoRectifier{});
    } else if (*slope == 0.f) {
        f(Relu{});
    } else {
        f(LeakyRelu{*slope});
    }
}

// Per channel c: y = (x - mean) scale + shift with scale = inv_std w and
// shift = b (w, b null: none). The forward pass and the gradient's
// rectifier compute y by this one formula, so that they agree on its sign.
struct ChannelNorm {
    const float *mean, *inv_std, *w, *b;
    float scale(std::size_t c) const { return inv_std[c] * (w ? w[c] : 1.f); }
    float shift(std::size_t c) const { return b ? b[c] : 0.f; }
};

// At most this many channels are summed at a time (their running sums live
// on the stack).
constexpr std::size_t kChannelBlock = 64;

// Calls f(c0, c1) for blocks of channels, split over xgrad's threads when the
// channels hold enough work; each channel is computed on one thread, so
// results do not depend on the thread count.
template <class F>
void for_each_channel_block(const AxisLanes& l, const F& f) {
    const std::size_t per_channel = std::max<std::size_t>(l.outer * l.inner, 1);
    parallel_for(l.n, std::max<std::size_t>(1, 32768 / per_channel), [&](std::size_t begin, std::size_t end) {
        for (std::size_t c0 = begin; c0 < end; c0 += kChannelBlock) f(c0, std::min(end, c0 + kChannelBlock));
    });
}

// Calls f(c, base) for every contiguous run of channels [c0, c1): run (n, c)
// holds l.inner elements from index base. Runs come in memory order, so a
// pass streams through the tensor (channel by channel, it jumped between
// batch items and measured 2-3x slower on (64, 64, 14, 14)).
template <class F>
void for_each_run(const AxisLanes& l, std::size_t c0, std::size_t c1, const F& f) {
    for (std::size_t n = 0; n < l.outer; ++n) {
        for (std::size_t c = c0; c < c1; ++c) f(c, (n * l.n + c) * l.inner);
    }
}

// Calls f(dz, offset, count) over run (n, c) of x and dy (l.inner elements
// from base), dz[i] the gradient through the rectifier at y for element
// offset + i of the run: dy itself without one, else pieces of at most 512
// computed into a buffer by a plain loop, which the compiler vectorizes (as
// a term of lane_sum, the rectifier's select stayed a branch per element).
// The pieces are lane_sum's own stretches of 512: the same float sums as
// over a whole dz (their total in double rounds differently only for runs
// longer than 512).
template <class Rectifier, class F>
void for_each_gradient_piece(const float* x, const float* dy, std::size_t base, std::size_t inner, const ChannelNorm& norm,
                             std::size_t c, Rectifier rectifier, const F& f) {
    if constexpr (std::is_same_v<Rectifier, NoRectifier>) {
        f(dy + base, std::size_t{0}, inner);
    } else {
        const float centre = norm.mean[c], scale = norm.scale(c), shift = norm.shift(c);
        alignas(64) float dz[512];
        for (std::size_t offset = 0; offset < inner; offset += 512) {
            const std::size_t count = std::min<std::size_t>(512, inner - offset);
            const float *xs = x + base + offset, *dys = dy + base + offset;
            for (std::size_t i = 0; i < count; ++i) dz[i] = rectifier.gradient((xs[i] - centre) * scale + shift, dys[i]);
            f(static_cast<const float*>(dz), offset, count);
        }
    }
}

// Per channel over x and dy: sum dz (the bias's gradient) and sum dz * xhat
// (the weight's), from the saved mean and 1/sqrt(var + eps); dz as above.
template <class Rectifier = NoRectifier>
void channel_gradient_sums(const AxisLanes& l, const float* x, const float* dy, const ChannelNorm& norm, float* sum_dy,
                           float* sum_dy_xhat, Rectifier rectifier = {}) {
    for_each_channel_block(l, [&](std::size_t c0, std::size_t c1) {
        double total_dy[kChannelBlock] = {}, total_dy_centred[kChannelBlock] = {};
        for_each_run(l, c0, c1, [&](std::size_t c, std::size_t base) {
            const float centre = norm.mean[c];
            for_each_gradient_piece(
                x, dy, base, l.inner, norm, c, rectifier, [&](const float* dz, std::size_t offset, std::size_t count) {
                    const float* xs = x + base + offset;
                    total_dy[c - c0] += lane_sum(count, [&](std::size_t i) { return dz[i]; });
                    total_dy_centred[c - c0] += lane_sum(count, [&](std::size_t i) { return dz[i] * (xs[i] - centre); });
                });
        });
        for (std::size_t c = c0; c < c1; ++c) {
            sum_dy[c] = static_cast<float>(total_dy[c - c0]);
            sum_dy_xhat[c] = static_cast<float>(double(norm.inv_std[c]) * total_dy_centred[c - c0]);
        }
    });
}

// put(i, dx[i]) for every element of x, from channel_gradient_sums' sums
// (dz as there).
template <class Put, class Rectifier = NoRectifier>
void batch_norm_input_gradient(const BatchNormState& s, const float* x, const float* dy, const ChannelNorm& norm,
                               const float* sum_dy, const float* sum_dy_xhat, Put&& put, Rectifier rectifier = {}) {
    const AxisLanes& l = s.lanes;
    const double m = double(l.outer * l.inner);
    for_each_channel_block(l, [&](std::size_t c0, std::size_t c1) {
        for_each_run(l, c0, c1, [&](std::size_t c, std::size_t base) {
            // Locals: put's stores could alias the arrays.
            const float g = norm.scale(c), centre = norm.mean[c], inv_std = norm.inv_std[c];
            const float mean_dy = static_cast<float>(sum_dy[c] / m), mean_dy_xhat = static_cast<float>(sum_dy_xhat[c] / m);
            const bool training = s.training;
            for_each_gradient_piece(x, dy, base, l.inner, norm, c, rectifier,
                                    [&](const float* dz, std::size_t offset, std::size_t count) {
                                        const std::size_t first = base + offset;
                                        if (!training) {  // the statistics are constants
                                            for (std::size_t i = 0; i < count; ++i) put(first + i, g * dz[i]);
                                            return;
                                        }
                                        // dx = g / m (m dz - sum dz - xhat sum(dz xhat)): the exact
                                        // gradient through the batch mean and variance.
                                        for (std::size_t i = 0; i < count; ++i) {
                                            const float xhat = (x[first + i] - centre) * inv_std;
                                            put(first + i, g * (dz[i] - mean_dy - xhat * mean_dy_xhat));
                                        }
                                    });
        });
    });
}

// The exact gradient through the batch statistics (training) or through
// constant running statistics (evaluation), from the saved mean and
// 1/sqrt(var + eps).
void batch_norm_backward(BackwardContext& ctx) {
    const BatchNormState& s = ctx.state<BatchNormState>();
    const AxisLanes& l = s.lanes;
    const float *x = ctx.input(0).data(), *dy = ctx.grad_output().data();
    const bool affine = ctx.num_inputs() == 3;
    const ChannelNorm norm{ctx.saved().data(), ctx.saved().data() + l.n, affine ? ctx.input(1).data() : nullptr,
                           affine ? ctx.input(2).data() : nullptr};
    Scratch sums(Shape{2, l.n});
    float *sum_dy = sums.data(), *sum_dy_xhat = sums.data() + l.n;
    with_rectifier(s.rectifier_slope, [&](auto rectifier) {
        channel_gradient_sums(l, x, dy, norm, sum_dy, sum_dy_xhat, rectifier);
        if (ctx.needs_grad(0))
            ctx.sink(0).elements(
                [&](auto&& put) { batch_norm_input_gradient(s, x, dy, norm, sum_dy, sum_dy_xhat, put, rectifier); });
    });
    if (affine) {
        if (ctx.needs_grad(1))
            ctx.sink(1).elements([&](auto&& put) {
                for (std::size_t c = 0; c < l.n; ++c) put(c, sum_dy_xhat[c]);
            });
        if (ctx.needs_grad(2))
            ctx.sink(2).elements([&](auto&& put) {
                for (std::size_t c = 0; c < l.n; ++c) put(c, sum_dy[c]);
            });
    }
}

// The running statistics that a training batch_norm moves towards the
// batch's (null: not updated).
struct RunningUpdate {
    float *mean, *var;
    float momentum;
};

// Channels [c0, c1) of a training batch: their means and 1/sqrt(var + eps),
// and the running statistics updated (with the unbiased variance).
void batch_statistics(const AxisLanes& l, const float* in, std::size_t c0, std::size_t c1, float eps,
                      const RunningUpdate& running, float* mean, float* inv_std) {
    const std::size_t m = l.outer * l.inner;
    float *rm = running.mean, *rv = running.var;
    // Two passes: no cancellation for large means.
    double total[kChannelBlock] = {}, squares[kChannelBlock] = {};
    for_each_run(l, c0, c1, [&](std::size_t c, std::size_t base) {
        total[c - c0] += lane_sum(l.inner, [&](std::size_t i) { return in[base + i]; });
    });
    for (std::size_t c = c0; c < c1; ++c) mean[c] = static_cast<float>(total[c - c0] / double(m));
    for_each_run(l, c0, c1, [&](std::size_t c, std::size_t base) {
        const float centre = mean[c];
        squares[c - c0] += lane_sum(l.inner, [&](std::size_t i) { return (in[base + i] - centre) * (in[base + i] - centre); });
    });
    for (std::size_t c = c0; c < c1; ++c) {
        const double mu = total[c - c0] / double(m), var = squares[c - c0] / double(m);
        if (rm) rm[c] = static_cast<float>((1.0 - running.momentum) * rm[c] + running.momentum * mu);
        if (rv) rv[c] = static_cast<float>((1.0 - running.momentum) * rv[c] + running.momentum * var * double(m) / double(m - 1));
        inv_std[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
    }
}

// The axes of x (N, C, ...) but the channels', and the shape (1, C, 1, ...)
// of a per-channel value broadcast over x.
void channel_axes(const Var& x, Axes& axes, ShapeSpec& per_channel) {
    for (std::size_t d = 0; d < x.dim(); ++d) {
        if (d != 1) axes.push_back(static_cast<int>(d));
        per_channel.push_back(d == 1 ? static_cast<long>(x.shape()[1]) : 1L);
    }
}

// Per channel over x, dy and v (the gradient of dx): the means the second
// derivative needs (below), into terms (5, C) as A, B, V, C and K.
void second_order_terms(const AxisLanes& l, const float* x, const float* dy, const float* v, const float* mean,
                        const float* inv_std, float* terms) {
    struct Sums {
        double dy, v, dy_xhat, v_xhat, v_dy;
    };
    const double m = double(l.outer * l.inner);
    for_each_channel_block(l, [&](std::size_t c0, std::size_t c1) {
        Sums sums[kChannelBlock] = {};
        for_each_run(l, c0, c1, [&](std::size_t ch, std::size_t base) {
            const float centre = mean[ch], scale = inv_std[ch];
            const auto xhat = [&](std::size_t i) { return (x[base + i] - centre) * scale; };
            Sums& t = sums[ch - c0];
            t.dy += lane_sum(l.inner, [&](std::size_t i) { return dy[base + i]; });
            t.v += lane_sum(l.inner, [&](std::size_t i) { return v[base + i]; });
            t.dy_xhat += lane_sum(l.inner, [&](std::size_t i) { return dy[base + i] * xhat(i); });
            t.v_xhat += lane_sum(l.inner, [&](std::size_t i) { return v[base + i] * xhat(i); });
            t.v_dy += lane_sum(l.inner, [&](std::size_t i) { return v[base + i] * dy[base + i]; });
        });
        for (std::size_t ch = c0; ch < c1; ++ch) {
            const Sums& t = sums[ch - c0];
            const double a = t.dy / m, b = t.dy_xhat / m, v_mean = t.v / m, c = t.v_xhat / m;
            const double values[5] = {a, b, v_mean, c, t.v_dy / m - a * v_mean - b * c};
            for (std::size_t j = 0; j < 5; ++j) terms[j * l.n + ch] = static_cast<float>(values[j]);
        }
    });
}

// With A = mean(dy), B = mean(dy xhat), V = mean(v), C = mean(v xhat) and
// K = mean(v dy) - A V - B C per channel, g = w inv_std:
//   d/d dy = g (v - V - xhat C)                   (P is symmetric)
//   d/d x  = -g inv_std (xhat K + C P(dy) + B P(v))
//   d/d w  = inv_std m K                           (m values per channel)
// (differentiating inv_std and xhat through the batch's mean and variance).
void batch_norm_input_gradient_backward(BackwardContext& ctx) {
    const BatchNormState& s = ctx.state<BatchNormState>();
    const AxisLanes& l = s.lanes;
    const float *x = ctx.input(0).data(), *dy = ctx.input(1).data(), *v = ctx.grad_output().data();
    const bool affine = ctx.num_inputs() == 3;
    const float* w = affine ? ctx.input(2).data() : nullptr;
    const float *mean = ctx.saved().data(), *inv_std = mean + l.n;  // the forward pass's
    Scratch terms(Shape{5, l.n});
    float *a = terms.data(), *b = a + l.n, *vm = b + l.n, *c = vm + l.n, *k = c + l.n;
    second_order_terms(l, x, dy, v, mean, inv_std, a);
    const double m = double(l.outer * l.inner);
    const auto each_element = [&](const GradSink& sink, auto&& value) {
        sink.elements([&](auto&& put) {
            for_each_channel_block(l, [&](std::size_t c0, std::size_t c1) {
                for_each_run(l, c0, c1, [&](std::size_t ch, std::size_t base) {
                    const float g = (w ? w[ch] : 1.f) * inv_std[ch];
                    for (std::size_t i = 0; i < l.inner; ++i) {
                        const float xhat = (x[base + i] - mean[ch]) * inv_std[ch];
                        put(base + i, value(ch, base + i, g, xhat));
                    }
                });
            });
        });
    };
    if (ctx.needs_grad(0)) {
        each_element(ctx.sink(0), [&](std::size_t ch, std::size_t e, float g, float xhat) {
            const float p_dy = dy[e] - a[ch] - xhat * b[ch], p_v = v[e] - vm[ch] - xhat * c[ch];
            return -g * inv_std[ch] * (xhat * k[ch] + c[ch] * p_dy + b[ch] * p_v);
        });
    }
    if (ctx.needs_grad(1)) {
        each_element(ctx.sink(1),
                     [&](std::size_t ch, std::size_t e, float g, float xhat) { return g * (v[e] - vm[ch] - xhat * c[ch]); });
    }
    if (affine && ctx.needs_grad(2)) {
        ctx.sink(2).elements([&](auto&& put) {
            for (std::size_t ch = 0; ch < l.n; ++ch) put(ch, static_cast<float>(double(inv_std[ch]) * m * double(k[ch])));
        });
    }
}

// The same with ops, the statistics computed again from x.
void batch_norm_input_gradient_graph(GraphContext& g) {
    const BatchNormState& s = g.state<BatchNormState>();
    const Var x = g.input(0), dy = g.input(1);
    const Var& v = g.grad_output();
    const bool affine = g.num_inputs() == 3;
    Axes axes;
    ShapeSpec per_channel;
    channel_axes(x, axes, per_channel);
    const Var centred = x - xgrad::mean(x, axes, true);
    const Var inv_std = pow(xgrad::mean(centred * centred, axes, true) + s.eps, -0.5f);
    const Var xhat = centred * inv_std;
    const Var scale = affine ? inv_std * reshape(g.input(2), per_channel) : inv_std;
    const Var b = xgrad::mean(dy * xhat, axes, true), c = xgrad::mean(v * xhat, axes, true);
    const Var p_dy = dy - xgrad::mean(dy, axes, true) - xhat * b, p_v = v - xgrad::mean(v, axes, true) - xhat * c;
    // K = mean(v dy) - A V - B C = mean(v P(dy)): P(dy) is orthogonal to 1, and mean(xhat v) = C.
    const Var k = xgrad::mean(v * p_dy, axes, true);
    if (g.needs_grad(0)) g.accumulate(0, -(scale * inv_std) * (xhat * k + c * p_dy + b * p_v));
    if (g.needs_grad(1)) g.accumulate(1, scale * p_v);
    if (affine && g.needs_grad(2)) g.accumulate(2, xgrad::sum(v * p_dy * inv_std, axes));
}

// The input gradient of a training batch_norm as one op of (x, dy[, w]):
// dx = w inv_std P(dy), P(u) = u - mean(u) - xhat mean(u xhat) per channel.
// Written with ops, a recorded pass (create_graph) kept about ten tensors
// of x's size for it; this keeps one (docs/design.md, "Two rules per op").
// `batch_stats` holds the means and 1/sqrt(var + eps) of x's channels that
// batch_norm's forward pass saved. Read as values only: this op's graph rule
// computes them again from x, so no derivative is lost.
Var batch_norm_input_gradient_op(const Var& x, const Var& dy, const Var& weight, const BatchNormState& s,
                                 const Tensor& batch_stats) {
    const AxisLanes& l = s.lanes;
    const std::initializer_list<Var> with_weight = {x, dy, weight}, without = {x, dy};
    Op op("batch_norm_input_gradient", weight.defined() ? with_weight : without, x.shape());
    BatchNormState& state = op.state<BatchNormState>(s);
    state.rectifier_slope.reset();                                              // dy is the gradient of y, before any rectifier
    if (op.records()) xt::noalias(op.save(batch_stats.shape())) = batch_stats;  // for the kernel rule
    const ChannelNorm norm{batch_stats.data(), batch_stats.data() + l.n, weight.defined() ? weight.value().data() : nullptr,
                           nullptr};
    Scratch sums(Shape{2, l.n});
    float *sum_dy = sums.data(), *sum_dy_xhat = sum_dy + l.n;
    const float *in = x.value().data(), *d = dy.value().data();
    channel_gradient_sums(l, in, d, norm, sum_dy, sum_dy_xhat);
    float* out = op.out().data();
    batch_norm_input_gradient(state, in, d, norm, sum_dy, sum_dy_xhat, [out](std::size_t i, float value) { out[i] = value; });
    return op.finish(batch_norm_input_gradient_backward, batch_norm_input_gradient_graph);
}

// The gradient with ops: in training, the input's through the op above and
// the weight's with the normalised x computed again by batch_norm itself;
// in evaluation, through the running statistics (constants). A rectifier's
// mask is a constant, as relu's and leaky_relu's are; where the output is
// > 0, so was y (the slope is >= 0).
void batch_norm_graph(GraphContext& g) {
    const BatchNormState& s = g.state<BatchNormState>();
    const Var x = g.input(0);
    const Var dy = s.rectifier_slope ? g.grad_output() * constant(xt::where(g.output().value() > 0.f, 1.f, *s.rectifier_slope))
                                     : g.grad_output();
    const bool affine = g.num_inputs() == 3;
    Axes axes;
    ShapeSpec per_channel;
    channel_axes(x, axes, per_channel);
    if (s.training) {
        if (affine && g.needs_grad(1)) {
            BatchNormOptions normalised;
            normalised.eps = s.eps;
            normalised.update_running = false;
            g.accumulate(1, xgrad::sum(dy * batch_norm(x, Var(), Var(), Var(), Var(), normalised), axes));
        }
        if (affine && g.needs_grad(2)) g.accumulate(2, xgrad::sum(dy, axes));
        if (g.needs_grad(0)) g.accumulate(0, batch_norm_input_gradient_op(x, dy, affine ? g.input(1) : Var(), s, g.saved()));
        return;
    }
    const Tensor& stats = g.saved();
    Var scale = Var::zeros(Shape(per_channel.begin(), per_channel.end())), mean_c = Var::zeros(scale.shape());
    std::copy_n(stats.data(), s.lanes.n, mean_c.mutable_value().data());
    std::copy_n(stats.data() + s.lanes.n, s.lanes.n, scale.mutable_value().data());  // inv_std
    if (affine && g.needs_grad(1)) g.accumulate(1, xgrad::sum(dy * (x - mean_c) * scale, axes));
    if (affine && g.needs_grad(2)) g.accumulate(2, xgrad::sum(dy, axes));
    if (affine) scale = scale * reshape(g.input(1), per_channel);
    if (g.needs_grad(0)) g.accumulate(0, dy * scale);
}

// Rows of x normalised over their last `axes` axes, `width` elements.
struct LayerNormState {
    std::size_t rows, width, axes;
    float eps;
};

// put(i, dx[i]) for every element of x, from the saved row means and
// 1/sqrt(var + eps) and the weight w (null: none).
template <class Put>
void layer_norm_input_gradient(const LayerNormState& s, const float* x, const float* dy, const float* w, const float* mean,
                               const float* inv_std, Put&& put) {
    for (std::size_t r = 0; r < s.rows; ++r) {
        const float *row = x + r * s.width, *d = dy + r * s.width;
        // With g = dy * w (the gradient of xhat):
        // dx = inv_std (g - mean(g) - xhat mean(g xhat)).
        auto g = [&](std::size_t i) { return d[i] * (w ? w[i] : 1.f); };
        const double sum_g = lane_sum(s.width, g);
        const double sum_g_centred = lane_sum(s.width, [&](std::size_t i) { return g(i) * (row[i] - mean[r]); });
        const float mean_g = static_cast<float>(sum_g / double(s.width));
        const float mean_g_xhat = static_cast<float>(sum_g_centred * inv_std[r] / double(s.width));
        for (std::size_t i = 0; i < s.width; ++i) {
            const float xhat = (row[i] - mean[r]) * inv_std[r];
            put(r * s.width + i, inv_std[r] * (d[i] * (w ? w[i] : 1.f) - mean_g - xhat * mean_g_xhat));
        }
    }
}

// dw = sum over rows of dy * xhat, db = sum over rows of dy.
void layer_norm_affine_gradients(const LayerNormState& s, const float* x, const float* dy, const float* mean,
                                 const float* inv_std, float* dw, float* db) {
    std::fill(dw, dw + s.width, 0.f);
    std::fill(db, db + s.width, 0.f);
    for (std::size_t r = 0; r < s.rows; ++r) {
        for (std::size_t i = 0; i < s.width; ++i) {
            const float g = dy[r * s.width + i];
            dw[i] += g * (x[r * s.width + i] - mean[r]) * inv_std[r];
            db[i] += g;
        }
    }
}

void layer_norm_backward(BackwardContext& ctx) {
    const LayerNormState& s = ctx.state<LayerNormState>();
    const float *mean = ctx.saved().data(), *inv_std = ctx.saved().data() + s.rows;
    const float *x = ctx.input(0).data(), *dy = ctx.grad_output().data();
    const bool affine = ctx.num_inputs() == 3;
    const float* w = affine ? ctx.input(1).data() : nullptr;
    if (ctx.needs_grad(0)) ctx.sink(0).elements([&](auto&& put) { layer_norm_input_gradient(s, x, dy, w, mean, inv_std, put); });
    if (!affine || !(ctx.needs_grad(1) || ctx.needs_grad(2))) return;
    Scratch sums(Shape{2, s.width});
    float *dw = sums.data(), *db = sums.data() + s.width;
    layer_norm_affine_gradients(s, x, dy, mean, inv_std, dw, db);
    if (ctx.needs_grad(1))
        ctx.sink(1).elements([&](auto&& put) {
            for (std::size_t i = 0; i < s.width; ++i) put(i, dw[i]);
        });
    if (ctx.needs_grad(2))
        ctx.sink(2).elements([&](auto&& put) {
            for (std::size_t i = 0; i < s.width; ++i) put(i, db[i]);
        });
}

void layer_norm_graph(GraphContext& g) {
    const LayerNormState& s = g.state<LayerNormState>();
    const Var x = g.input(0);
    const Var& dy = g.grad_output();
    Axes last;
    for (std::size_t d = x.dim() - s.axes; d < x.dim(); ++d) last.push_back(static_cast<int>(d));
    const Var centred = x - xgrad::mean(x, last, true);
    const Var inv_std = pow(xgrad::mean(centred * centred, last, true) + s.eps, -0.5f);
    const Var xhat = centred * inv_std;
    const bool affine = g.num_inputs() == 3;
    if (affine) {  // summed down to the weight's shape by accumulate
        if (g.needs_grad(1)) g.accumulate(1, dy * xhat);
        if (g.needs_grad(2)) g.accumulate(2, dy);
    }
    if (!g.needs_grad(0)) return;
    const Var dxhat = affine ? dy * g.input(1) : dy;
    g.accumulate(0, inv_std * (dxhat - xgrad::mean(dxhat, last, true) - xhat * xgrad::mean(dxhat * xhat, last, true)));
}

// Every argument of batch_norm checked; the lanes of x around its channel axis.
AxisLanes check_batch_norm(const Var& x, const Var& weight, const Var& bias, const Var& running_mean, const Var& running_var,
                           const BatchNormOptions& options) {
    check_hyperparameters("batch_norm", options.eps, &options.momentum);
    check_rectifier_slope("batch_norm", options.rectifier_slope);
    if (x.dim() < 2) fail("batch_norm", "expected an (N, C, ...) input, got " + shape_string(x.shape()));
    const AxisLanes l = lanes_around(x.shape(), 1);
    const Shape channels{l.n};
    require_affine("batch_norm", weight, bias, channels);
    for (const Var* r : {&running_mean, &running_var}) {
        if (r->defined() && r->shape() != channels) {
            fail("batch_norm", "running statistics " + shape_string(r->shape()) + " for " + std::to_string(l.n) + " channels");
        }
    }
    const std::size_t m = l.outer * l.inner;  // values per channel
    if (options.training && m < 2) {
        fail("batch_norm",
             "training needs more than one value per channel to "
             "estimate a variance; got " +
                 shape_string(x.shape()));
    }
    if (!options.training && !(running_mean.defined() && running_var.defined())) {
        fail("batch_norm", "evaluation mode needs the running mean and variance");
    }
    return l;
}

// out = rectifier((in - mean) inv_std w + b) over channels [c0, c1).
template <class Rectifier>
void normalize_channels(const AxisLanes& l, const float* in, std::size_t c0, std::size_t c1, const ChannelNorm& norm,
                        Rectifier rectifier, float* out) {
    for_each_run(l, c0, c1, [&](std::size_t c, std::size_t base) {
        const float scale = norm.scale(c), shift = norm.shift(c), centre = norm.mean[c];
        for (std::size_t i = 0; i < l.inner; ++i) out[base + i] = rectifier((in[base + i] - centre) * scale + shift);
    });
}

// Every argument of layer_norm checked; the width of its rows (the `axes`
// last axes of x).
std::size_t check_layer_norm(const Var& x, std::size_t axes, const Var& weight, const Var& bias, float eps) {
    check_hyperparameters("layer_norm", eps, nullptr);
    if (axes == 0 || axes > x.dim()) {
        fail("layer_norm", "normalising over the last " + std::to_string(axes) + " axes of " + shape_string(x.shape()));
    }
    const Shape trailing(x.shape().end() - static_cast<std::ptrdiff_t>(axes), x.shape().end());
    require_affine("layer_norm", weight, bias, trailing);
    const std::size_t width = numel(trailing);
    if (width == 0) fail("layer_norm", "nothing to normalise over in " + shape_string(x.shape()));
    return width;
}

// Row r of `in`, `width` long: its mean and 1/sqrt(var + eps), and the row
// normalised into `out` (times w plus b; null: none).
void normalize_row(const float* in, std::size_t r, std::size_t width, float eps, const float* w, const float* b, float* mean,
                   float* inv_std, float* out) {
    const float* row = in + r * width;
    mean[r] = static_cast<float>(lane_sum(width, [&](std::size_t i) { return row[i]; }) / double(width));
    const float centre = mean[r];
    const double squares = lane_sum(width, [&](std::size_t i) { return (row[i] - centre) * (row[i] - centre); });
    inv_std[r] = static_cast<float>(1.0 / std::sqrt(squares / double(width) + eps));
    float* o = out + r * width;
    for (std::size_t i = 0; i < width; ++i) {
        const float xhat = (row[i] - mean[r]) * inv_std[r];
        o[i] = w ? xhat * w[i] + b[i] : xhat;
    }
}

}  // namespace

bool valid_rectifier_slope(float slope) { return std::isfinite(slope) && slope >= 0.f; }

void check_rectifier_slope(const char* op, const std::optional<float>& slope) {
    if (slope && !valid_rectifier_slope(*slope)) {
        throw std::invalid_argument(std::string("xgrad::") + op + ": rectifier slope " + number_text(*slope) +
                                    " (expected a finite number >= 0)");
    }
}

Var batch_norm(const Var& x, const Var& weight, const Var& bias, const Var& running_mean, const Var& running_var,
               const BatchNormOptions& options) {
    const AxisLanes l = check_batch_norm(x, weight, bias, running_mean, running_var, options);
    const bool affine = weight.defined();
    const std::initializer_list<Var> with_affine = {x, weight, bias}, without = {x};
    Op op("batch_norm", affine ? with_affine : without, x.shape());
    op.state<BatchNormState>(BatchNormState{l, options.training, options.eps, options.rectifier_slope});
    // The channel means and 1/sqrt(var + eps): all that backward needs beside x.
    Tensor& stats = op.save_or_scratch(Shape{2, l.n});
    float *mean = stats.data(), *inv_std = stats.data() + l.n;
    const float* in = x.value().data();
    float* out = op.out().data();
    const bool update = options.training && options.update_running;
    const RunningUpdate running{running_mean.defined() && update ? Var(running_mean).mutable_value().data() : nullptr,
                                running_var.defined() && update ? Var(running_var).mutable_value().data() : nullptr,
                                options.momentum};
    const ChannelNorm norm{mean, inv_std, affine ? weight.value().data() : nullptr, affine ? bias.value().data() : nullptr};

    with_rectifier(options.rectifier_slope, [&](auto rectifier) {
        for_each_channel_block(l, [&](std::size_t c0, std::size_t c1) {
            if (options.training) {
                batch_statistics(l, in, c0, c1, options.eps, running, mean, inv_std);
            } else {  // the running statistics, constants
                for (std::size_t c = c0; c < c1; ++c) {
                    mean[c] = running_mean.value().data()[c];
                    inv_std[c] = static_cast<float>(1.0 / std::sqrt(double(running_var.value().data()[c]) + options.eps));
                }
            }
            normalize_channels(l, in, c0, c1, norm, rectifier, out);
        });
    });

    return op.finish(batch_norm_backward, batch_norm_graph);
}

Var layer_norm(const Var& x, std::size_t axes, const Var& weight, const Var& bias, float eps) {
    const std::size_t width = check_layer_norm(x, axes, weight, bias, eps), rows = x.numel() / width;
    const bool affine = weight.defined();
    const std::initializer_list<Var> with_affine = {x, weight, bias}, without = {x};
    Op op("layer_norm", affine ? with_affine : without, x.shape());
    op.state<LayerNormState>(LayerNormState{rows, width, axes, eps});
    Tensor& stats = op.save_or_scratch(Shape{2, rows});
    float *mean = stats.data(), *inv_std = stats.data() + rows;
    const float* in = x.value().data();
    float* out = op.out().data();
    const float* w = affine ? weight.value().data() : nullptr;
    const float* b = affine ? bias.value().data() : nullptr;
    parallel_for(rows, items_per_block(width), [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r) normalize_row(in, r, width, eps, w, b, mean, inv_std, out);
    });

    return op.finish(layer_norm_backward, layer_norm_graph);
}

}  // namespace xgrad
