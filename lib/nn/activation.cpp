#include <xgrad/nn/activation.hpp>

#include <stdexcept>
#include <string>

namespace xgrad {

Dropout::Dropout(float p, Rng& rng) : p_(p), rng_(rng) {
    if (!(p >= 0.f && p < 1.f)) {
        throw std::invalid_argument("xgrad::Dropout: the drop probability p = " + std::to_string(p) + " must be in [0, 1)");
    }
}

}  // namespace xgrad
