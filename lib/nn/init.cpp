#include <xgrad/nn/init.hpp>

#include <cmath>

namespace xgrad {

void initialize(Tensor& w, Init init, std::size_t fan_in, std::size_t fan_out, Rng& rng) {
    const auto in = static_cast<float>(fan_in), total = static_cast<float>(fan_in + fan_out);
    switch (init) {
        case Init::xavier_uniform: {
            const float a = std::sqrt(6.f / total);
            rng.fill_uniform(w, -a, a);
            break;
        }
        case Init::xavier_normal:
            rng.fill_normal(w, 0.f, std::sqrt(2.f / total));
            break;
        case Init::he_uniform: {
            const float a = std::sqrt(6.f / in);
            rng.fill_uniform(w, -a, a);
            break;
        }
        case Init::he_normal:
            // Written as 1 / sqrt(fan_in / 2), not sqrt(2 / fan_in): the two
            // round differently, and this form keeps weights made by earlier
            // versions bit-identical.
            rng.fill_normal(w, 0.f, 1.f / std::sqrt(in / 2.f));
            break;
        case Init::normal_002:
            rng.fill_normal(w, 0.f, 0.02f);
            break;
    }
}

}  // namespace xgrad
