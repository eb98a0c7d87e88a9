#include <xgrad/ops/elementwise.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/core/simd.hpp>
#include <xgrad/ops/arithmetic.hpp>

namespace xgrad {
namespace {

// grad(input 0) += dx, where kernel(a, b, dx, n) is a backward kernel of
// xgrad::simd. The first contribution is written straight into the
// gradient; later ones in chunks small enough to stay in L1, each added to
// it: no zero-fill, no pooled buffer. Large tensors are split into ranges
// over xgrad's threads.
template <class Kernel>
void accumulate_kernel(BackwardContext& ctx, const Tensor& a, const Tensor& b, const Kernel& kernel) {
    if (!ctx.needs_grad(0)) return;
    const GradSink dx = ctx.sink(0);
    if (!dx.add) {  // the first contribution: straight into the buffer
        parallel_for(a.size(), kBlockElements, [&](std::size_t first, std::size_t end) {
            kernel(a.data() + first, b.data() + first, dx.data() + first, end - first);
        });
        return;
    }
    parallel_for(a.size(), kBlockElements, [&](std::size_t first, std::size_t end) {
        constexpr std::size_t kChunk = 1024;
        alignas(64) float chunk[kChunk];
        for (std::size_t begin = first; begin < end; begin += kChunk) {
            const std::size_t n = std::min(kChunk, end - begin);
            kernel(a.data() + begin, b.data() + begin, chunk, n);
            dx.run(begin, chunk, n);
        }
    });
}

// The differentiable rule of an op whose derivative is piecewise constant
// (a mask, a sign, a slope): dx = dy * that constant.
template <class E>
void accumulate_times(GraphContext& g, const E& factor) {
    g.accumulate(0, g.grad_output() * constant(factor));
}

}  // namespace

// exp, log, relu, leaky_relu, sigmoid and tanh run through xgrad::simd (and
// the backward passes of the last four): at the CPU's best SIMD level, not
// the portable build's SSE2 (docs/design.md, "SIMD dispatch", has the gain).

Var exp(const Var& x) {
    Op op("exp", {x}, x.shape());
    simd::parallel_map(simd::exp, x.value().data(), op.out().data(), x.numel());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() * ctx.output()); },
                     [](GraphContext& g) { g.accumulate(0, g.grad_output() * g.output()); });
}

Var log(const Var& x) {
    Op op("log", {x}, x.shape());
    simd::parallel_map(simd::log, x.value().data(), op.out().data(), x.numel());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() / ctx.input(0)); },
                     [](GraphContext& g) { g.accumulate(0, g.grad_output() / g.input(0)); });
}

Var sqrt(const Var& x) {
    Op op("sqrt", {x}, x.shape());
    parallel_elementwise(
        op.out(), [](auto& y, const auto& in) { xt::noalias(y) = xt::sqrt(in); }, x.value());
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() / (2.f * ctx.output())); },
                     [](GraphContext& g) { g.accumulate(0, g.grad_output() / (2.f * g.output())); });
}

Var abs(const Var& x) {
    Op op("abs", {x}, x.shape());
    parallel_elementwise(
        op.out(), [](auto& y, const auto& in) { xt::noalias(y) = xt::abs(in); }, x.value());
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor& in = ctx.input(0);
            ctx.accumulate(0, xt::where(in > 0.f, ctx.grad_output(), xt::where(in < 0.f, -ctx.grad_output(), 0.f)));
        },
        [](GraphContext& g) {
            const Tensor& in = g.input(0).value();
            accumulate_times(g, xt::where(in > 0.f, 1.f, xt::where(in < 0.f, -1.f, 0.f)));
        });
}

namespace {
// y = x^p as std::pow gives it. xsimd 8.1's pow selects 0 wherever x == 0,
// whatever p (0^0 = 0, 0^-1 = 0), while the elements past the last full
// SIMD batch go through std::pow: the zeros are recomputed by std::pow
// (which also keeps the sign of -0 for odd p).
template <class Out, class In>
void pow_elements(Out& y, const In& x, float p) {
    xt::noalias(y) = xt::pow(x, p);
    for (std::size_t k = 0; k < y.size(); ++k) {
        if (x(k) == 0.f) y(k) = std::pow(x(k), p);
    }
}
}  // namespace

Var pow(const Var& x, float p) {
    Op op("pow", {x}, x.shape());
    parallel_elementwise(
        op.out(), [p](auto& y, const auto& in) { pow_elements(y, in, p); }, x.value());
    op.state<float>(p);
    return op.finish(
        [](BackwardContext& ctx) {
            const float p = ctx.state<float>();
            if (!ctx.needs_grad(0)) return;
            // PyTorch's rule: zero for p = 0 (p * x^-1 would be NaN at x = 0),
            // else dy * (p * x^(p - 1)), infinite at x = 0 for p < 1.
            Scratch dx(ctx.input(0).shape());
            if (p == 0.f) {
                dx.tensor().fill(0.f);
            } else {
                parallel_elementwise(
                    dx.tensor(),
                    [p](auto& d, const auto& in, const auto& dy) {
                        pow_elements(d, in, p - 1.f);
                        xt::noalias(d) = dy * (p * d);
                    },
                    ctx.input(0), ctx.grad_output());
            }
            ctx.accumulate(0, dx.tensor());
        },
        [](GraphContext& g) {
            const float p = g.state<float>();
            // For p = 0 the derivative is 0 everywhere (0 x^-1 would be NaN at 0).
            g.accumulate(0, p == 0.f ? g.grad_output() * 0.f : g.grad_output() * (p * pow(g.input(0), p - 1.f)));
        });
}

namespace {
struct Bounds {
    float low, high;
};
}  // namespace

Var clamp(const Var& x, float low, float high) {
    if (!(low <= high)) {
        throw std::invalid_argument("xgrad::clamp: low " + std::to_string(low) + " is not <= high " + std::to_string(high));
    }
    Op op("clamp", {x}, x.shape());
    // Comparisons with NaN are false, so a NaN passes through unchanged.
    parallel_elementwise(
        op.out(), [=](auto& y, const auto& in) { xt::noalias(y) = xt::where(in < low, low, xt::where(in > high, high, in)); },
        x.value());
    op.state<Bounds>(Bounds{low, high});
    return op.finish(
        [](BackwardContext& ctx) {
            const Bounds& b = ctx.state<Bounds>();
            const Tensor& in = ctx.input(0);
            ctx.accumulate(0, xt::where(in >= b.low && in <= b.high, ctx.grad_output(), 0.f));
        },
        [](GraphContext& g) {
            const Bounds& b = g.state<Bounds>();
            const Tensor& in = g.input(0).value();
            accumulate_times(g, xt::where(in >= b.low && in <= b.high, 1.f, 0.f));
        });
}

Var relu(const Var& x) {
    Op op("relu", {x}, x.shape());
    // As in PyTorch, relu(NaN) is NaN (simd::relu is no max(x, 0)): a
    // diverged model must show in the loss.
    simd::parallel_map(simd::relu, x.value().data(), op.out().data(), x.numel());
    return op.finish([](BackwardContext& ctx) { accumulate_kernel(ctx, ctx.output(), ctx.grad_output(), simd::relu_backward); },
                     [](GraphContext& g) { accumulate_times(g, xt::where(g.output().value() > 0.f, 1.f, 0.f)); });
}

Var leaky_relu(const Var& x, float negative_slope) {
    Op op("leaky_relu", {x}, x.shape());
    simd::parallel_map(
        [negative_slope](const float* in, float* out, std::size_t n) { simd::leaky_relu(in, out, n, negative_slope); },
        x.value().data(), op.out().data(), x.numel());
    op.state<float>(negative_slope);
    return op.finish(
        [](BackwardContext& ctx) {
            const float slope = ctx.state<float>();
            accumulate_kernel(ctx, ctx.input(0), ctx.grad_output(),
                              [slope](const float* x, const float* dy, float* dx, std::size_t n) {
                                  simd::leaky_relu_backward(x, dy, dx, n, slope);
                              });
        },
        [](GraphContext& g) { accumulate_times(g, xt::where(g.input(0).value() > 0.f, 1.f, g.state<float>())); });
}

Var sigmoid(const Var& x) {
    Op op("sigmoid", {x}, x.shape());
    // Exactly 0 or 1 where it saturates, never NaN (simd.hpp).
    simd::parallel_map(simd::sigmoid, x.value().data(), op.out().data(), x.numel());
    return op.finish(
        [](BackwardContext& ctx) { accumulate_kernel(ctx, ctx.output(), ctx.grad_output(), simd::sigmoid_backward); },
        [](GraphContext& g) {
            const Var y = g.output();
            g.accumulate(0, g.grad_output() * (y * (1.f - y)));
        });
}

Var tanh(const Var& x) {
    Op op("tanh", {x}, x.shape());
    simd::parallel_map(simd::tanh, x.value().data(), op.out().data(), x.numel());
    return op.finish([](BackwardContext& ctx) { accumulate_kernel(ctx, ctx.output(), ctx.grad_output(), simd::tanh_backward); },
                     [](GraphContext& g) {
                         const Var y = g.output();
                         g.accumulate(0, g.grad_output() * (1.f - y * y));
                     });
}

}  // namespace xgrad
