// Fully connected layer.
#pragma once

#include <xgrad/nn/init.hpp>
#include <xgrad/nn/weighted_layer.hpp>

namespace xgrad {

// y = x . weight^T + bias for x (..., in): weight (out, in) as in PyTorch,
// initialised with `init` (fan-in `in`), bias (out) by initial_bias (or none).
class Linear : public WeightedLayer {
public:
    Linear(std::size_t in, std::size_t out, Rng& rng, Init init = Init::pytorch, bool bias = true);
    Var forward(const Var& x) override;
};

}  // namespace xgrad
