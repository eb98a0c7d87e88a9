#include <xgrad/nn/weighted_layer.hpp>

namespace xgrad {

void WeightedLayer::register_weight_and_bias() {
    register_parameter("weight", weight);
    if (bias.defined()) register_parameter("bias", bias);
}

void WeightedLayer::apply_spectral_norm(Rng& rng) {
    if (spectral_) return;
    spectral_ = std::make_unique<SpectralNorm>(weight.shape(), rng, 1e-12f, output_dim());
    register_buffer("weight_u", spectral_->u);
    register_buffer("weight_v", spectral_->v);
}

Var WeightedLayer::effective_weight() { return spectral_ ? spectral_->normalize(weight, is_training()) : weight; }

}  // namespace xgrad
