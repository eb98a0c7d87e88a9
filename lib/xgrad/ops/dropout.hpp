// Dropout (lib/ops/dropout.cpp).
#pragma once

#include <xgrad/core/random.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

// Inverted dropout: each element is kept with probability 1-p and scaled by
// 1/(1-p), else zeroed, so the expected value is x and evaluation needs no
// rescaling. Draws one rng.uniform per element (whatever p), in row-major
// order. dx = dy * mask / (1-p), with the mask of the forward pass.
// Throws std::invalid_argument unless 0 <= p < 1.
Var dropout(const Var& x, float p, Rng& rng);

}  // namespace xgrad
