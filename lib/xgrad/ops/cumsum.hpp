// cumsum: running sums along one axis, as torch.cumsum. A user-style op in
// one header (docs/extending.md): an op with state (the axis) whose
// gradient is the same op run the other way, so its differentiable rule is
// one call and it is differentiable to any order.
#pragma once

#include <cstddef>

#include <xgrad/core/op.hpp>

namespace xgrad {

namespace cumsum_detail {

// The tensor as `outer` blocks of `length` x `inner` elements: the sums run
// over the middle index, from its start (forward) or from its end (reverse).
struct Lanes {
    std::size_t outer, length, inner;
    std::size_t axis;
    bool reverse;
};

inline Lanes lanes_of(const Shape& shape, std::size_t axis, bool reverse) {
    Lanes l{1, shape[axis], 1, axis, reverse};
    for (std::size_t d = 0; d < axis; ++d) l.outer *= shape[d];
    for (std::size_t d = axis + 1; d < shape.size(); ++d) l.inner *= shape[d];
    return l;
}

// put(k, running sum) for every element k, the sums of `x` along the lanes.
template <class Put>
void running_sums(const Lanes& l, const float* x, const Put& put) {
    for (std::size_t o = 0; o < l.outer; ++o) {
        for (std::size_t i = 0; i < l.inner; ++i) {
            float total = 0.f;
            for (std::size_t step = 0; step < l.length; ++step) {
                const std::size_t j = l.reverse ? l.length - 1 - step : step;
                const std::size_t k = (o * l.length + j) * l.inner + i;
                total += x[k];
                put(k, total);
            }
        }
    }
}

}  // namespace cumsum_detail

// y[..., j, ...] = sum of x[..., i, ...] for i <= j along `axis` (i >= j
// when `reverse`). dx = cumsum(dy, axis, !reverse): each x[i] reaches every
// y[j] on its far side with weight 1.
inline Var cumsum(const Var& x, int axis, bool reverse = false) {
    const std::size_t a = normalize_axis("cumsum", axis, x.shape());
    Op op("cumsum", {x}, x.shape());
    const cumsum_detail::Lanes& lanes = op.state<cumsum_detail::Lanes>(cumsum_detail::lanes_of(x.shape(), a, reverse));
    float* y = op.out().data();
    cumsum_detail::running_sums(lanes, x.value().data(), [y](std::size_t k, float total) { y[k] = total; });

    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            cumsum_detail::Lanes back = ctx.state<cumsum_detail::Lanes>();
            back.reverse = !back.reverse;
            ctx.sink(0).elements([&](const auto& put) { cumsum_detail::running_sums(back, ctx.grad_output().data(), put); });
        },
        [](GraphContext& g) {
            const cumsum_detail::Lanes& lanes = g.state<cumsum_detail::Lanes>();
            g.accumulate(0, cumsum(g.grad_output(), int(lanes.axis), !lanes.reverse));
        });
}

}  // namespace xgrad
