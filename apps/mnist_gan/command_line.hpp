// mnist_gan's command line: its options, and the GAN configuration they
// select (the preset's, with the flags given overriding it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "data_location.hpp"
#include "gan.hpp"
#include "program.hpp"

namespace gan {

// What the command line asked for. The settings a preset holds are optional:
// given, they override the preset; not given, the preset's value stands, so
// each has one default (presets.cpp, or GanConfig's). The others are the
// run's own, with their defaults here.
struct Options : common::SharedOptions {
    common::DataLocation data;
    std::string preset_name = "default", out = "out", export_dir, generator, noise, classifier;
    std::optional<long> steps;
    std::optional<double> minutes;  // a wall-clock budget for the training steps; --steps is then an upper bound
    std::optional<std::size_t> k, batch, z_dim, hidden, channels;
    std::optional<float> lr, r1;
    std::optional<long> r1_every;
    std::optional<std::string> g_loss;
    std::optional<std::string> loss;     // --loss: bce or hinge
    std::optional<std::string> augment;  // --augment POLICY (xgrad::parse_augment_policy)
    std::optional<float> augment_p;
    std::optional<bool> averaged;  // --ema / --no-ema: grids and samples from the averaged generator, or the raw one
    bool sample_batch_stats = false;
    std::optional<float> truncation;  // --truncation PSI: GanConfig::sample_truncation
    std::size_t samples = 0;
    std::optional<std::size_t> digit;  // a conditional preset's class for every sample of --samples
    long grid_every = 500, checkpoint_every = 1000, log_every = 50, eval_every = 0;
    std::size_t grid_scale = 3;  // an 8 x 8 grid of 28-pixel digits: 690 pixels wide
    bool resume = false;
};

// The most steps a run can take (--steps).
constexpr long kMostSteps = 100000000;
// The longest time budget (--minutes): about two years.
constexpr double kMostMinutes = 1e6;

// Declares mnist_gan's options on `cli`, to be parsed into `o`.
void add_options(CLI::App& cli, Options& o);

// The configuration a parsed command line asks for: the preset's, each flag
// given overriding it (its steps and sample_averaged are the run's --steps
// and --ema). Throws std::invalid_argument for a flag that the preset would
// ignore (the run would silently differ from the one asked for), naming the
// flag and the preset.
GanConfig configure(const Options& o);

}  // namespace gan
