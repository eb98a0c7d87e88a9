#include <stdexcept>
#include <string>

#include <xgrad/core/op.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/dropout.hpp>

namespace xgrad {

Var dropout(const Var& x, float p, Rng& rng) {
    if (!(p >= 0.f && p < 1.f)) {
        throw std::invalid_argument("xgrad::dropout: the drop probability p = " + std::to_string(p) + " must be in [0, 1)");
    }
    Op op("dropout", {x}, x.shape());
    const float scale = 1.f / (1.f - p);
    // The mask holds 0 or 1/(1-p), so backward is one multiplication.
    float* mask = op.records() ? op.save(x.shape()).data() : nullptr;
    const float* in = x.value().data();
    float* out = op.out().data();
    for (std::size_t i = 0, n = x.value().size(); i < n; ++i) {
        // uniform is in [0, 1): kept with probability exactly 1 - p.
        const float m = rng.uniform(0.f, 1.f) >= p ? scale : 0.f;
        out[i] = in[i] * m;
        if (mask) mask[i] = m;
    }
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() * ctx.saved()); },
                     [](GraphContext& g) { g.accumulate(0, g.grad_output() * constant(g.saved())); });
}

}  // namespace xgrad
