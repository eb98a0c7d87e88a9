#include <xgrad/nn/linear.hpp>

#include <xgrad/ops/linalg.hpp>

namespace xgrad {

Linear::Linear(std::size_t in, std::size_t out, Rng& rng, Init init, bool with_bias) {
    Tensor w = Tensor::from_shape({out, in});
    initialize(w, init, in, out, rng);
    weight = Var(std::move(w), true);
    if (with_bias) bias = Var(initial_bias(out, init, in, rng), true);
    register_weight_and_bias();
}

Var Linear::forward(const Var& x) { return linear(x, effective_weight(), bias); }

}  // namespace xgrad
