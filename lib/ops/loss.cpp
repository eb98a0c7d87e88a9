#include <algorithm>
#include <cmath>
#include <string>

#include <xtensor/xmath.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/ops.hpp>

namespace xgrad {
namespace {

// Mean of max(x,0) - x*t + log1p(exp(-|x|)); `targets` is a Tensor or a float.
template <class T>
float mean_bce(const Tensor& logits, const T& targets) {
    Tensor losses = tensor_pool().acquire(shape_of(logits));
    // Three passes: GCC does not vectorise the one expression holding all
    // of it (log1p of exp plus the rest ran 3x slower than this).
    xt::noalias(losses) = xt::exp(-xt::abs(logits));
    xt::noalias(losses) = xt::log1p(losses);
    xt::noalias(losses) += xt::maximum(logits, 0.f) - logits * targets;
    double total = 0.0;
    for (float l : losses) total += l;
    tensor_pool().release(losses);
    return static_cast<float>(total / static_cast<double>(logits.size()));
}

// d loss / d logit = (sigmoid(x) - t) * dy / n.
template <class T>
void accumulate_dlogits(BackwardContext& ctx, const T& targets) {
    const float g = ctx.grad_output()(0, 0) / static_cast<float>(ctx.input(0).size());
    ctx.accumulate(0, (1.f / (1.f + xt::exp(-ctx.input(0))) - targets) * g);
}

}  // namespace

Var bce_with_logits(const Var& logits, const Var& targets) {
    if (logits.shape() != targets.shape()) {
        throw ShapeError("xgrad::bce_with_logits: logits " + shape_string(logits.shape()) + " and targets " +
                         shape_string(targets.shape()) + " differ in shape");
    }
    Op op("bce_with_logits", {logits, targets}, {1, 1});
    op.out()(0, 0) = mean_bce(logits.value(), targets.value());
    return op.finish([](BackwardContext& ctx) {
        accumulate_dlogits(ctx, ctx.input(1));
        const float g = ctx.grad_output()(0, 0) / static_cast<float>(ctx.input(0).size());
        ctx.accumulate(1, ctx.input(0) * -g);
    });
}

Var bce_with_logits(const Var& logits, float target) {
    Op op("bce_with_logits", {logits}, {1, 1});
    op.out()(0, 0) = mean_bce(logits.value(), target);
    op.set_attr(0, target);
    return op.finish([](BackwardContext& ctx) { accumulate_dlogits(ctx, ctx.attr(0)); });
}

Var softmax_cross_entropy(const Var& logits, const Var& targets) {
    if (logits.shape() != targets.shape()) {
        throw ShapeError("xgrad::softmax_cross_entropy: logits " + shape_string(logits.shape()) + " and targets " +
                         shape_string(targets.shape()) + " differ in shape");
    }
    if (logits.rows() == 0 || logits.cols() == 0) {
        throw ShapeError("xgrad::softmax_cross_entropy: logits " + shape_string(logits.shape()) +
                         " need at least one row and one class");
    }
    const std::size_t rows = logits.rows(), cols = logits.cols();
    Op op("softmax_cross_entropy", {logits, targets}, {1, 1});
    // Backward needs log softmax(x) (and softmax = its exp); keep it only then.
    float* log_p = op.records() ? op.saved({rows, cols}).data() : nullptr;
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
    op.out()(0, 0) = static_cast<float>(total / double(rows));
    return op.finish([](BackwardContext& ctx) {
        const Tensor& log_p = ctx.saved();
        const float g = ctx.grad_output()(0, 0) / static_cast<float>(log_p.shape()[0]);
        if (ctx.needs_grad(0)) {
            const Tensor& t = ctx.input(1);
            const std::size_t rows = t.shape()[0], cols = t.shape()[1];
            Tensor target_mass = tensor_pool().acquire({rows, 1});
            for (std::size_t r = 0; r < rows; ++r) {
                float s = 0.f;
                for (std::size_t c = 0; c < cols; ++c) s += t(r, c);
                target_mass(r, 0) = s;
            }
            ctx.accumulate(0, (xt::exp(log_p) * target_mass - t) * g);
            tensor_pool().release(target_mass);
        }
        ctx.accumulate(1, log_p * -g);
    });
}

}  // namespace xgrad
