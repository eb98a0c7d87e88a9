#include <xgrad/nn/init.hpp>

#include <cmath>
#include <stdexcept>
#include <string>

namespace xgrad {

void initialize(Tensor& w, Init init, std::size_t fan_in, std::size_t fan_out, Rng& rng) {
    // The scales divide by these fans: 0 gives infinite weights.
    if ((init == Init::pytorch || init == Init::he_uniform || init == Init::he_normal) && fan_in == 0) {
        const char* name = init == Init::pytorch ? "pytorch" : init == Init::he_uniform ? "he_uniform" : "he_normal";
        throw std::invalid_argument(std::string("xgrad::initialize: ") + name + " with fan_in 0 (expected fan_in >= 1)");
    }
    if ((init == Init::xavier_uniform || init == Init::xavier_normal) && fan_in + fan_out == 0) {
        throw std::invalid_argument(std::string("xgrad::initialize: ") +
                                    (init == Init::xavier_uniform ? "xavier_uniform" : "xavier_normal") +
                                    " with fan_in + fan_out 0 (expected at least 1)");
    }
    const auto in = static_cast<float>(fan_in), total = static_cast<float>(fan_in + fan_out);
    switch (init) {
        case Init::pytorch: {
            const float a = 1.f / std::sqrt(in);
            rng.fill_uniform(w, -a, a);
            break;
        }
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

Tensor initial_bias(std::size_t size, Init init, std::size_t fan_in, Rng& rng) {
    Tensor b(Shape{size}, 0.f);
    if (init == Init::pytorch && fan_in > 0) {
        const float a = 1.f / std::sqrt(static_cast<float>(fan_in));
        rng.fill_uniform(b, -a, a);
    }
    return b;
}

}  // namespace xgrad
