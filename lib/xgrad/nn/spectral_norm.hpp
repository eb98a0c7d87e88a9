// Spectral normalisation (Miyato et al. 2018): a weight divided by its
// largest singular value sigma, estimated by power iteration, which bounds
// the layer's Lipschitz constant (a GAN discriminator's usual use).
#pragma once

#include <cstddef>
#include <memory>

#include <xgrad/core/random.hpp>
#include <xgrad/core/var.hpp>
#include <xgrad/nn/module.hpp>

namespace xgrad {

// For a weight seen as a matrix W (its first dimension by the product of
// the others): u and v, unit vectors of those two sizes, estimate sigma =
// u^T W v. In training mode each normalize() first runs one power iteration
// v = W^T u / |W^T u|, u = W v / |W v| (no gradient: u and v are buffers,
// saved in checkpoints and never touched by optimizers). The gradient flows
// through sigma as the paper derives it: d sigma / dW = u v^T, with u and v
// held fixed.
class SpectralNorm {
public:
    // u and v drawn from N(0, 1) with `rng` and normalised.
    SpectralNorm(const Shape& weight_shape, Rng& rng, float eps = 1e-12f);
    // W / sigma(W), the same shape as `weight`. A zero weight has sigma 0
    // and is returned as it is (its spectral norm is zero; the gradient
    // passes unchanged); the power iteration skips it, and a u that is zero
    // or not finite starts again from a unit vector.
    Var normalize(const Var& weight, bool training);
    // The sigma of the last normalize().
    float sigma() const { return sigma_; }
    Var u, v;

private:
    std::size_t rows_, cols_;
    float eps_;
    float sigma_ = 0.f;
};

// A layer with a weight and an optional bias (Linear, Conv2d,
// ConvTranspose2d), whose weight can be spectrally normalised.
class WeightedLayer : public Module {
public:
    // From now on every forward pass uses weight / sigma(weight) (see
    // SpectralNorm), with u and v registered as buffers "weight_u" and "weight_v".
    void apply_spectral_norm(Rng& rng);
    const SpectralNorm* spectral_norm() const { return spectral_.get(); }
    Var weight, bias;  // bias is empty without one

protected:
    // Registers weight and (when it is defined) bias as parameters.
    void register_weight_and_bias();
    // The weight the forward pass uses: weight, or weight / sigma(weight)
    // (updating u and v in training mode).
    Var effective_weight();

private:
    std::unique_ptr<SpectralNorm> spectral_;
};

}  // namespace xgrad
