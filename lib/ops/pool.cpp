// Pooling and upsampling: each output pixel reads a window of its input
// plane, so both directions run plane by plane (planes split over xgrad's
// threads; each writes only its own plane, so results do not depend on the
// thread count).
#include <xgrad/ops/pool.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include <xgrad/core/op.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/shape.hpp>

namespace xgrad {
namespace {

// The windows of a pooling op over (N, C, H, W) planes.
struct PoolGeometry {
    std::size_t planes, h, w, out_h, out_w;
    Size2 kernel, stride, padding;

    std::size_t in_plane() const { return h * w; }
    std::size_t out_plane() const { return out_h * out_w; }
};

[[noreturn]] void fail(const char* op, const std::string& why) { throw ShapeError(std::string("xgrad::") + op + ": " + why); }

std::string size2_string(Size2 s) { return "(" + std::to_string(s.h) + ", " + std::to_string(s.w) + ")"; }

void require_nchw(const char* op, const Var& x) {
    if (x.dim() != 4) fail(op, "expected an (N, C, H, W) input, got " + shape_string(x.shape()));
}

PoolGeometry pool_geometry(const char* op, const Var& x, Size2 kernel, Size2 stride, Size2 padding) {
    require_nchw(op, x);
    if (stride.h == 0) stride.h = kernel.h;
    if (stride.w == 0) stride.w = kernel.w;
    if (kernel.h == 0 || kernel.w == 0) fail(op, "kernel " + size2_string(kernel) + " (each size must be at least 1)");
    // The windows are walked in signed (long) coordinates.
    constexpr std::size_t kLargest = std::size_t(1) << 62;
    if (kernel.h > kLargest || kernel.w > kLargest) fail(op, "kernel " + size2_string(kernel) + " is too large (at most 2^62)");
    // Without multiplying: 2 * padding wraps for a padding of 2^63 or more.
    if (padding.h > kernel.h / 2 || padding.w > kernel.w / 2) {
        fail(op, "padding " + size2_string(padding) + " is more than half the kernel " + size2_string(kernel));
    }
    const Shape& s = x.shape();
    if (s[2] + 2 * padding.h < kernel.h || s[3] + 2 * padding.w < kernel.w) {
        fail(op, "kernel " + size2_string(kernel) + " is larger than the padded input " + shape_string(s));
    }
    PoolGeometry g{s[0] * s[1],
                   s[2],
                   s[3],
                   (s[2] + 2 * padding.h - kernel.h) / stride.h + 1,
                   (s[3] + 2 * padding.w - kernel.w) / stride.w + 1,
                   kernel,
                   stride,
                   padding};
    return g;
}

Shape pooled_shape(const Var& x, const PoolGeometry& g) { return {x.shape()[0], x.shape()[1], g.out_h, g.out_w}; }

// Calls f(plane) for every plane, in parallel when there is enough work.
template <class F>
void for_each_plane(std::size_t planes, std::size_t work_per_plane, const F& f) {
    parallel_for(planes, items_per_block(work_per_plane), [&](std::size_t begin, std::size_t end) {
        for (std::size_t p = begin; p < end; ++p) f(p);
    });
}

// Calls f(plane, out_index, i, j) for every output pixel (i, j) of every
// plane, planes split over xgrad's threads.
template <class F>
void for_each_output(const PoolGeometry& g, const F& f) {
    for_each_plane(g.planes, g.out_plane() * g.kernel.h * g.kernel.w, [&](std::size_t p) {
        for (std::size_t i = 0; i < g.out_h; ++i) {
            for (std::size_t j = 0; j < g.out_w; ++j) f(p, p * g.out_plane() + i * g.out_w + j, i, j);
        }
    });
}

// Calls f(in_index) for each input pixel inside window (i, j); rows and
// columns of the window that fall into the padding are skipped.
template <class F>
void for_each_in_window(const PoolGeometry& g, std::size_t i, std::size_t j, const F& f) {
    const long top = long(i * g.stride.h) - long(g.padding.h), left = long(j * g.stride.w) - long(g.padding.w);
    for (long r = std::max(top, 0L); r < std::min(top + long(g.kernel.h), long(g.h)); ++r) {
        for (long c = std::max(left, 0L); c < std::min(left + long(g.kernel.w), long(g.w)); ++c) {
            f(std::size_t(r) * g.w + std::size_t(c));
        }
    }
}

}  // namespace

Var max_pool2d(const Var& x, Size2 kernel, Size2 stride, Size2 padding) {
    const PoolGeometry g = pool_geometry("max_pool2d", x, kernel, stride, padding);
    Op op("max_pool2d", {x}, pooled_shape(x, g));
    op.state<PoolGeometry>(g);
    const float* in = x.value().data();
    float* out = op.out().data();
    // The arg-max of each output, as an index into x (only kept for backward).
    std::size_t* arg = op.records() ? op.index(op.out().size()) : nullptr;
    for_each_output(g, [&](std::size_t p, std::size_t o, std::size_t i, std::size_t j) {
        const float* plane = in + p * g.in_plane();
        float best = -std::numeric_limits<float>::infinity();
        std::size_t best_at = std::size_t(-1);
        for_each_in_window(g, i, j, [&](std::size_t at) {
            const float v = plane[at];
            if (best_at == std::size_t(-1) || (!std::isnan(best) && (std::isnan(v) || v > best))) {
                best = v;
                best_at = at;
            }
        });
        out[o] = best;
        if (arg) arg[o] = p * g.in_plane() + best_at;
    });
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            float* dx = ctx.accumulator(0).data();
            const float* dy = ctx.grad_output().data();
            const std::vector<std::size_t>& arg = ctx.index();
            // Windows overlap when the stride is below the kernel: one pass, in order.
            for (std::size_t o = 0; o < arg.size(); ++o) dx[arg[o]] += dy[o];
        },
        [](GraphContext& g) { g.accumulate(0, scatter_add(g.grad_output(), g.index(), g.input(0).shape())); });
}

namespace {

// out = the mean of each window of `in`.
void average_windows(const PoolGeometry& g, const float* in, float* out) {
    const float scale = 1.f / static_cast<float>(g.kernel.h * g.kernel.w);
    for_each_output(g, [&](std::size_t p, std::size_t o, std::size_t i, std::size_t j) {
        const float* plane = in + p * g.in_plane();
        float total = 0.f;
        for_each_in_window(g, i, j, [&](std::size_t at) { total += plane[at]; });
        out[o] = total * scale;
    });
}

// dx += each dy spread evenly over its window: the adjoint of average_windows.
void spread_windows(const PoolGeometry& g, const float* dy, float* dx) {
    const float scale = 1.f / static_cast<float>(g.kernel.h * g.kernel.w);
    // Each plane on one thread: overlapping windows add in a fixed order.
    for_each_output(g, [&](std::size_t p, std::size_t o, std::size_t i, std::size_t j) {
        float* plane = dx + p * g.in_plane();
        const float d = dy[o] * scale;
        for_each_in_window(g, i, j, [&](std::size_t at) { plane[at] += d; });
    });
}

Var average_pool(const Var& x, const PoolGeometry& g);

// avg_pool2d's gradient as an op: its own gradient is avg_pool2d again.
Var spread_pool(const Var& dy, const PoolGeometry& g, const Shape& input_shape) {
    Op op("avg_pool2d_backward", {dy}, input_shape);
    op.state<PoolGeometry>(g);
    op.out().fill(0.f);
    spread_windows(g, dy.value().data(), op.out().data());
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            const PoolGeometry& g = ctx.state<PoolGeometry>();
            Scratch pooled(ctx.input(0).shape());
            average_windows(g, ctx.grad_output().data(), pooled.data());
            ctx.accumulate(0, pooled.tensor());
        },
        [](GraphContext& gc) { gc.accumulate(0, average_pool(gc.grad_output(), gc.state<PoolGeometry>())); });
}

Var average_pool(const Var& x, const PoolGeometry& g) {
    Op op("avg_pool2d", {x}, pooled_shape(x, g));
    op.state<PoolGeometry>(g);
    average_windows(g, x.value().data(), op.out().data());
    return op.finish(
        [](BackwardContext& ctx) {
            if (ctx.needs_grad(0)) spread_windows(ctx.state<PoolGeometry>(), ctx.grad_output().data(), ctx.accumulator(0).data());
        },
        [](GraphContext& gc) { gc.accumulate(0, spread_pool(gc.grad_output(), gc.state<PoolGeometry>(), gc.input(0).shape())); });
}

}  // namespace

Var avg_pool2d(const Var& x, Size2 kernel, Size2 stride, Size2 padding) {
    return average_pool(x, pool_geometry("avg_pool2d", x, kernel, stride, padding));
}

Var upsample_nearest2d(const Var& x, Size2 scale) {
    require_nchw("upsample_nearest2d", x);
    if (scale.h == 0 || scale.w == 0) fail("upsample_nearest2d", "scale " + size2_string(scale) + " (each at least 1)");
    const Shape& s = x.shape();
    // Each output side (an empty batch would hide a side that wraps), then the whole.
    constexpr std::size_t kMost = std::numeric_limits<std::size_t>::max();
    if (s[2] > kMost / scale.h || s[3] > kMost / scale.w) {
        fail("upsample_nearest2d", "scale " + size2_string(scale) + " of an input " + shape_string(s) +
                                       " gives output sides past what memory can address");
    }
    checked_numel("upsample_nearest2d", {s[0], s[1], s[2] * scale.h, s[3] * scale.w});
    Op op("upsample_nearest2d", {x}, Shape{s[0], s[1], s[2] * scale.h, s[3] * scale.w});
    op.state<Size2>(scale);
    const std::size_t h = s[2], w = s[3], out_w = w * scale.w;
    const float* in = x.value().data();
    float* out = op.out().data();
    for_each_plane(s[0] * s[1], h * w * scale.h * scale.w, [&](std::size_t p) {
        for (std::size_t i = 0; i < h * scale.h; ++i) {
            const float* row = in + p * h * w + (i / scale.h) * w;
            float* o = out + (p * h * scale.h + i) * out_w;
            for (std::size_t j = 0; j < out_w; ++j) o[j] = row[j / scale.w];
        }
    });
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            const Size2 scale = ctx.state<Size2>();
            const Shape& s = ctx.input(0).shape();
            const std::size_t h = s[2], w = s[3], out_w = w * scale.w;
            float* dx = ctx.accumulator(0).data();
            const float* dy = ctx.grad_output().data();
            for_each_plane(s[0] * s[1], h * w * scale.h * scale.w, [&](std::size_t p) {
                for (std::size_t i = 0; i < h * scale.h; ++i) {
                    float* row = dx + p * h * w + (i / scale.h) * w;
                    const float* d = dy + (p * h * scale.h + i) * out_w;
                    for (std::size_t j = 0; j < out_w; ++j) row[j / scale.w] += d[j];
                }
            });
        },
        [](GraphContext& g) {
            const Size2 scale = g.state<Size2>();
            g.accumulate(0, avg_pool2d(g.grad_output(), scale, scale) * static_cast<float>(scale.h * scale.w));
        });
}

}  // namespace xgrad
