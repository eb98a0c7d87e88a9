#include <xgrad/nn/linear.hpp>

#include <xgrad/ops/linalg.hpp>

namespace xgrad {

Linear::Linear(std::size_t in, std::size_t out, Rng& rng, Init init, bool with_bias) {
    Tensor w = Tensor::from_shape({in, out});
    initialize(w, init, in, out, rng);
    weight = Var(std::move(w), true);
    register_parameter("weight", weight);
    if (with_bias) {
        bias = Var(Tensor(Shape{out}, 0.f), true);
        register_parameter("bias", bias);
    }
}

Var Linear::forward(const Var& x) { return linear(x, spectral_ ? spectral_->normalize(weight, is_training()) : weight, bias); }

void Linear::apply_spectral_norm(Rng& rng) {
    if (spectral_) return;
    spectral_ = std::make_unique<SpectralNorm>(weight.shape(), rng);
    register_buffer("weight_u", spectral_->u);
    register_buffer("weight_v", spectral_->v);
}

}  // namespace xgrad
