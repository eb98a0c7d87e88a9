// A seeded random source whose streams are the same on every platform and
// whose whole state can be saved, so a resumed run continues bit-exactly.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include <xgrad/core/tensor.hpp>

namespace xgrad {

class Rng {
public:
    explicit Rng(std::uint64_t seed = 1) : engine_(seed) {}

    // Uniform in [low, high), from the top 24 bits of one draw.
    float uniform(float low, float high);
    // Normal by Box-Muller without a cached second value, so the state is
    // the engine's state alone (std::normal_distribution keeps one hidden).
    float normal(float mean, float stddev);
    // Uniform integer in [0, n); throws std::invalid_argument for n = 0.
    std::size_t below(std::size_t n);

    void fill_uniform(Tensor& t, float low, float high);
    void fill_normal(Tensor& t, float mean, float stddev);

    // The engine state as text, and back (throws on a malformed state).
    std::string state() const;
    void set_state(const std::string& state);

private:
    std::mt19937_64 engine_;
};

}  // namespace xgrad
