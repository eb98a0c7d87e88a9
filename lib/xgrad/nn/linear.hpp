// Fully connected layer.
#pragma once

#include <memory>

#include <xgrad/nn/init.hpp>
#include <xgrad/nn/module.hpp>
#include <xgrad/nn/spectral_norm.hpp>

namespace xgrad {

// y = x . weight + bias for x (..., in): weight (in, out) initialised with
// `init`, bias (out) zero (or none).
class Linear : public Module {
public:
    Linear(std::size_t in, std::size_t out, Rng& rng, Init init = Init::xavier_uniform, bool bias = true);
    Var forward(const Var& x) override;
    // From now on every forward pass uses weight / sigma(weight) (see
    // SpectralNorm), with u and v registered as buffers "weight_u" and "weight_v".
    void apply_spectral_norm(Rng& rng);
    const SpectralNorm* spectral_norm() const { return spectral_.get(); }
    Var weight, bias;  // bias is empty without one

private:
    std::unique_ptr<SpectralNorm> spectral_;
};

}  // namespace xgrad
