// The base class of the layers with a weight (linear.hpp, conv.hpp).
#pragma once

#include <cstddef>
#include <memory>

#include <xgrad/core/random.hpp>
#include <xgrad/core/var.hpp>
#include <xgrad/nn/module.hpp>
#include <xgrad/nn/spectral_norm.hpp>

namespace xgrad {

// A layer with a weight and an optional bias (Linear, Conv2d,
// ConvTranspose2d), whose weight can be spectrally normalised.
class WeightedLayer : public Module {
public:
    // From now on every forward pass uses weight / sigma(weight) (see
    // SpectralNorm, over output_dim()), with u and v registered as buffers
    // "weight_u" and "weight_v".
    void apply_spectral_norm(Rng& rng);
    // The weight's dimension of output features: 0, or 1 for a transposed
    // convolution (in, out, kH, kW).
    virtual std::size_t output_dim() const { return 0; }
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
