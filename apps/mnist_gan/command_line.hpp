// mnist_gan's command line: its options, and the GAN configuration they
// select (the preset's, with the flags given overriding it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "data_location.hpp"
#include "gan.hpp"

namespace gan {

struct Options {
    common::DataLocation data;
    std::string preset_name = "default", g_loss, out = "out", export_dir;
    long steps = 0;  // 0: the preset's
    std::size_t k = 1, batch = 128, z_dim = 100, hidden = 128, channels = 64, samples = 0;
    float lr = 0.f, r1 = 0.f;  // read only when given, as the other overrides of the preset
    long r1_every = 16;
    std::uint64_t seed = 1;
    int threads = 1;
    long grid_every = 500, checkpoint_every = 1000, log_every = 50;
    std::string classifier;
    long eval_every = 0;
    bool resume = false;
    bool averaged =
        true;  // grids and samples from the averaged generator when the preset keeps one (--ema/--no-ema, else the preset's)
    bool sample_batch_stats = false;
};

// The most steps a run can take (--steps).
constexpr long kMostSteps = 100000000;

// Declares mnist_gan's options on `cli`, to be parsed into `o`.
void add_options(CLI::App& cli, Options& o);

// The configuration a parsed command line asks for: the preset's, each flag
// given overriding it; o.steps and o.averaged take the preset's values when
// not given. Throws std::invalid_argument for a flag that the preset would
// ignore (the run would silently differ from the one asked for), naming the
// flag and the preset.
GanConfig configure(Options& o, const CLI::App& cli);

}  // namespace gan
