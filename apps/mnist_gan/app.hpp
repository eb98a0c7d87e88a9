// The mnist_gan command line program, callable from tests.
#pragma once

#include <string>

#include "gan.hpp"
#include "presets.hpp"

namespace gan {

// Exit codes: 0 done, 1 bad input or I/O error (message on stderr),
// 3 training diverged (a NaN/Inf loss, or a non-finite parameter or
// optimizer moment about to be saved: the last good checkpoint is kept),
// 130 interrupted (checkpoint written); CLI11's codes for command-line errors.
// With `distributed` (started by mpirun or srun: main.cpp), every rank calls
// it and they train one GAN data-parallel; rank 0 alone writes and prints.
int run_app(int argc, const char* const* argv, const xgrad::Distributed* distributed = nullptr);

// Loads the checkpoint at `path` into a fresh GAN of `config` as --resume
// does, without training, and returns its step count; throws
// std::runtime_error naming the file. For tests and the fuzz harness.
long verify_checkpoint(const std::string& path, const GanConfig& config);

}  // namespace gan
