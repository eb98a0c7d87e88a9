#include <xgrad/core/random.hpp>

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace xgrad {

float Rng::uniform(float low, float high) {
    const float unit = static_cast<float>(engine_() >> 40) * (1.f / 16777216.f);  // [0, 1) on a 2^-24 grid
    return low + (high - low) * unit;
}

float Rng::normal(float mean, float stddev) {
    // 1 - u lies in (0, 1]: the logarithm stays finite.
    const double u1 = 1.0 - static_cast<double>(engine_() >> 11) * 0x1.0p-53;
    const double u2 = static_cast<double>(engine_() >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    return mean + stddev * static_cast<float>(radius * std::cos(2.0 * M_PI * u2));
}

std::size_t Rng::below(std::size_t n) {
    if (n == 0) throw std::invalid_argument("xgrad::Rng::below: n = 0 (expected n >= 1)");
    // Rejection keeps every value equally likely.
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    std::uint64_t draw;
    do {
        draw = engine_();
    } while (draw >= limit);
    return static_cast<std::size_t>(draw % n);
}

void Rng::fill_uniform(Tensor& t, float low, float high) {
    for (float& v : t) v = uniform(low, high);
}

void Rng::fill_normal(Tensor& t, float mean, float stddev) {
    for (float& v : t) v = normal(mean, stddev);
}

std::string Rng::state() const {
    std::ostringstream out;
    out << engine_;
    return out.str();
}

void Rng::set_state(const std::string& state) {
    std::istringstream in(state);
    std::mt19937_64 engine;
    in >> engine;
    if (in.fail()) throw std::invalid_argument("xgrad::Rng::set_state: not a saved random state");
    engine_ = engine;
}

}  // namespace xgrad
