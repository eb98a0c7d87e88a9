#include <algorithm>
#include <cmath>
#include <string>

#include <xtensor/xmath.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/core/simd.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/elementwise.hpp>
#include <xgrad/ops/loss.hpp>
#include <xgrad/ops/reduce.hpp>

namespace xgrad {
namespace {

void require_elements(const char* op, const Var& x) {
    if (x.numel() == 0) {
        throw ShapeError(std::string("xgrad::") + op + ": the mean over no elements (input " + shape_string(x.shape()) + ")");
    }
}

void require_same_shape(const char* op, const char* first, const Var& a, const char* second, const Var& b) {
    if (a.shape() != b.shape()) {
        throw ShapeError(std::string("xgrad::") + op + ": " + first + " " + shape_string(a.shape()) + " and " + second + " " +
                         shape_string(b.shape()) + " differ in shape");
    }
}

// Mean of max(x,0) - x*t + log1p(exp(-|x|)) = softplus(x) - x*t, where
// target(i) is t's element i.
template <class Target>
float mean_bce(const Tensor& logits, const Target& target) {
    Scratch scratch(logits.shape());
    float* losses = scratch.data();
    const float* x = logits.data();
    // The transcendental part vectorised through xgrad::simd, the rest
    // while summing.
    simd::parallel_map(simd::softplus, x, losses, logits.size());
    double total = 0.0;
    for (std::size_t i = 0; i < logits.size(); ++i) total += losses[i] - x[i] * target(i);
    return static_cast<float>(total / static_cast<double>(logits.size()));
}

// d loss / d logit = (sigmoid(x) - t) * dy / n; `targets` is a Tensor or a float.
template <class T>
void accumulate_dlogits(BackwardContext& ctx, const T& targets) {
    const Tensor& logits = ctx.input(0);
    const float g = *ctx.grad_output().data() / static_cast<float>(logits.size());
    Scratch p(logits.shape());
    simd::parallel_map(simd::sigmoid, logits.data(), p.data(), logits.size());
    ctx.accumulate(0, (p.tensor() - targets) * g);
}

}  // namespace

Var bce_with_logits(const Var& logits, const Var& targets) {
    require_same_shape("bce_with_logits", "logits", logits, "targets", targets);
    require_elements("bce_with_logits", logits);
    Op op("bce_with_logits", {logits, targets}, Shape{});
    *op.out().data() = mean_bce(logits.value(), [t = targets.value().data()](std::size_t i) { return t[i]; });
    return op.finish(
        [](BackwardContext& ctx) {
            accumulate_dlogits(ctx, ctx.input(1));
            const float g = *ctx.grad_output().data() / static_cast<float>(ctx.input(0).size());
            ctx.accumulate(1, ctx.input(0) * -g);
        },
        [](GraphContext& g) {
            const Var x = g.input(0), t = g.input(1);
            const Var dy_n = g.grad_output() / static_cast<float>(x.numel());
            if (g.needs_grad(0)) g.accumulate(0, (sigmoid(x) - t) * dy_n);
            if (g.needs_grad(1)) g.accumulate(1, -x * dy_n);
        });
}

Var bce_with_logits(const Var& logits, float target) {
    require_elements("bce_with_logits", logits);
    Op op("bce_with_logits", {logits}, Shape{});
    *op.out().data() = mean_bce(logits.value(), [target](std::size_t) { return target; });
    op.state<float>(target);
    return op.finish([](BackwardContext& ctx) { accumulate_dlogits(ctx, ctx.state<float>()); },
                     [](GraphContext& g) {
                         const Var x = g.input(0);
                         g.accumulate(0, (sigmoid(x) - g.state<float>()) * (g.grad_output() / static_cast<float>(x.numel())));
                     });
}

Var softmax_cross_entropy(const Var& logits, const Var& targets) {
    require_same_shape("softmax_cross_entropy", "logits", logits, "targets", targets);
    if (logits.dim() == 0 || logits.numel() == 0) {
        throw ShapeError("xgrad::softmax_cross_entropy: logits " + shape_string(logits.shape()) +
                         " need at least one row and one class (classes along the last axis)");
    }
    const std::size_t cols = logits.shape().back(), rows = logits.numel() / cols;
    Op op("softmax_cross_entropy", {logits, targets}, Shape{});
    // Backward needs log softmax(x) (and softmax = its exp); keep it only then.
    float* log_p = op.records() ? op.save(logits.shape()).data() : nullptr;
    const float* x = logits.value().data();
    const float* t = targets.value().data();
    double total = 0.0;
    for (std::size_t r = 0; r < rows; ++r, x += cols, t += cols) {
        // exp(x - m) <= 1 never overflows and the largest term is exactly 1,
        // so the log never sees 0.
        float m = x[0];
        for (std::size_t c = 1; c < cols; ++c) m = std::max(m, x[c]);
        double s = 0.0;
        for (std::size_t c = 0; c < cols; ++c) s += std::exp(x[c] - m);
        // (x - m) - log s, not x - (m + log s): the small log s is not rounded
        // to the precision of a large m.
        const float log_s = static_cast<float>(std::log(s));
        for (std::size_t c = 0; c < cols; ++c) {
            const float lp = (x[c] - m) - log_s;
            total -= double(t[c]) * double(lp);
            if (log_p) *log_p++ = lp;
        }
    }
    *op.out().data() = static_cast<float>(total / double(rows));
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor& log_p = ctx.saved();
            const std::size_t cols = log_p.shape().back(), rows = log_p.size() / cols;
            const float g = *ctx.grad_output().data() / static_cast<float>(rows);
            if (ctx.needs_grad(0)) {
                const Tensor& t = ctx.input(1);
                Shape mass_shape = t.shape();
                mass_shape.back() = 1;
                Scratch target_mass(mass_shape);
                for (std::size_t r = 0; r < rows; ++r) {
                    float s = 0.f;
                    for (std::size_t c = 0; c < cols; ++c) s += t.data()[r * cols + c];
                    target_mass.data()[r] = s;
                }
                ctx.accumulate(0, (xt::exp(log_p) * target_mass.tensor() - t) * g);
            }
            ctx.accumulate(1, log_p * -g);
        },
        [](GraphContext& g) {
            // log softmax is computed again from x: the saved one is a constant.
            const Var x = g.input(0), t = g.input(1);
            const std::size_t rows = x.numel() / x.shape().back();
            const Var dy_rows = g.grad_output() / static_cast<float>(rows);
            if (g.needs_grad(0)) g.accumulate(0, (softmax(x, -1) * sum(t, {-1}, true) - t) * dy_rows);
            if (g.needs_grad(1)) g.accumulate(1, -log_softmax(x, -1) * dy_rows);
        });
}

Var mse_loss(const Var& prediction, const Var& target) {
    require_same_shape("mse_loss", "prediction", prediction, "target", target);
    require_elements("mse_loss", prediction);
    Op op("mse_loss", {prediction, target}, Shape{});
    const float *p = prediction.value().data(), *t = target.value().data();
    double total = 0.0;
    for (std::size_t i = 0; i < prediction.numel(); ++i) total += double(p[i] - t[i]) * double(p[i] - t[i]);
    *op.out().data() = static_cast<float>(total / double(prediction.numel()));
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor &p = ctx.input(0), &t = ctx.input(1);
            const float g = 2.f * *ctx.grad_output().data() / static_cast<float>(p.size());
            ctx.accumulate(0, (p - t) * g);
            ctx.accumulate(1, (p - t) * -g);
        },
        [](GraphContext& g) {
            const Var p = g.input(0), t = g.input(1);
            const Var d = (p - t) * (g.grad_output() * (2.f / static_cast<float>(p.numel())));
            if (g.needs_grad(0)) g.accumulate(0, d);
            if (g.needs_grad(1)) g.accumulate(1, -d);
        });
}

Var l1_loss(const Var& prediction, const Var& target) {
    require_same_shape("l1_loss", "prediction", prediction, "target", target);
    require_elements("l1_loss", prediction);
    Op op("l1_loss", {prediction, target}, Shape{});
    const float *p = prediction.value().data(), *t = target.value().data();
    double total = 0.0;
    for (std::size_t i = 0; i < prediction.numel(); ++i) total += std::abs(double(p[i]) - double(t[i]));
    *op.out().data() = static_cast<float>(total / double(prediction.numel()));
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor &p = ctx.input(0), &t = ctx.input(1);
            const float g = *ctx.grad_output().data() / static_cast<float>(p.size());
            ctx.accumulate(0, xt::where(p > t, g, xt::where(p < t, -g, 0.f)));
            ctx.accumulate(1, xt::where(p > t, -g, xt::where(p < t, g, 0.f)));
        },
        [](GraphContext& g) {
            const Tensor &p = g.input(0).value(), &t = g.input(1).value();
            const Var d =
                constant(xt::where(p > t, 1.f, xt::where(p < t, -1.f, 0.f))) * (g.grad_output() / static_cast<float>(p.size()));
            if (g.needs_grad(0)) g.accumulate(0, d);
            if (g.needs_grad(1)) g.accumulate(1, -d);
        });
}

}  // namespace xgrad
