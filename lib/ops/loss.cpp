#include <string>

#include <xtensor/xmath.hpp>

#include <xgrad/op.hpp>
#include <xgrad/ops.hpp>

namespace xgrad {
namespace {

// Mean of max(x,0) - x*t + log1p(exp(-|x|)); `targets` is a Tensor or a float.
template <class T>
float mean_bce(const Tensor& logits, const T& targets) {
    Tensor losses = tensor_pool().acquire(shape_of(logits));
    xt::noalias(losses) = xt::maximum(logits, 0.f) - logits * targets + xt::log1p(xt::exp(-xt::abs(logits)));
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

}  // namespace xgrad
