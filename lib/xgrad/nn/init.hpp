// Weight initialisations, by the fan-in and fan-out of a layer (for a
// convolution: channels times kernel area).
#pragma once

#include <cstddef>

#include <xgrad/core/random.hpp>
#include <xgrad/core/tensor.hpp>

namespace xgrad {

enum class Init {
    xavier_uniform,  // U(-a, a), a = sqrt(6 / (fan_in + fan_out))   (Glorot & Bengio 2010)
    xavier_normal,   // N(0, sqrt(2 / (fan_in + fan_out)))
    he_uniform,      // U(-a, a), a = sqrt(6 / fan_in)               (He et al. 2015, for ReLU)
    he_normal,       // N(0, sqrt(2 / fan_in)), which is N(0, 1/sqrt(fan_in/2))
    normal_002,      // N(0, 0.02): the DCGAN initialisation (Radford et al. 2016)
};

// Fills w from `rng` with the given distribution. Throws
// std::invalid_argument for a fan of 0 that the distribution divides by.
void initialize(Tensor& w, Init init, std::size_t fan_in, std::size_t fan_out, Rng& rng);

}  // namespace xgrad
