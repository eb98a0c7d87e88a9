// Fully connected layer.
#pragma once

#include <xgrad/nn/init.hpp>
#include <xgrad/nn/spectral_norm.hpp>

namespace xgrad {

// y = x . weight^T + bias for x (..., in): weight (out, in) as in PyTorch,
// initialised with `init`, bias (out) zero (or none).
class Linear : public WeightedLayer {
public:
    Linear(std::size_t in, std::size_t out, Rng& rng, Init init = Init::xavier_uniform, bool bias = true);
    Var forward(const Var& x) override;
};

}  // namespace xgrad
