// Weight initialisations, by the fan-in and fan-out of a layer (for a
// convolution: channels times kernel area; as in PyTorch, the fan-in of a
// transposed convolution counts its output channels, its weight's dim 1).
#pragma once

#include <cstddef>

#include <xgrad/core/random.hpp>
#include <xgrad/core/tensor.hpp>

namespace xgrad {

enum class Init {
    // PyTorch's default for Linear and convolutions (reset_parameters):
    // kaiming_uniform(a = sqrt(5)), which is U(-a, a) with a = 1 / sqrt(fan_in),
    // and a bias drawn from the same U(-a, a). Every other initialisation
    // leaves the bias at 0.
    pytorch,
    xavier_uniform,  // U(-a, a), a = sqrt(6 / (fan_in + fan_out))   (Glorot & Bengio 2010)
    xavier_normal,   // N(0, sqrt(2 / (fan_in + fan_out)))
    he_uniform,      // U(-a, a), a = sqrt(6 / fan_in)               (He et al. 2015, for ReLU)
    he_normal,       // N(0, sqrt(2 / fan_in)), which is N(0, 1/sqrt(fan_in/2))
    normal_002,      // N(0, 0.02): the DCGAN initialisation (Radford et al. 2016)
};

// Fills w from `rng` with the given distribution. Throws
// std::invalid_argument for a fan of 0 that the distribution divides by.
void initialize(Tensor& w, Init init, std::size_t fan_in, std::size_t fan_out, Rng& rng);
// A layer's bias of `size` elements for its weight's `init`: drawn from rng
// for Init::pytorch (0 when fan_in is 0, as PyTorch does), zero otherwise,
// drawing nothing, so the weights of later layers do not depend on it.
Tensor initial_bias(std::size_t size, Init init, std::size_t fan_in, Rng& rng);

}  // namespace xgrad
