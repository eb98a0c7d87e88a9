// What every app's main shares: the --seed and --threads options, parsing
// the command line, and the report of a run that fails.
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace common {

// --seed and --threads, which decide together what a run computes.
struct SharedOptions {
    std::uint64_t seed = 1;
    int threads = 1;

    // `seed_help` says what the seed decides.
    void add_shared_options(CLI::App& cli, const std::string& seed_help);
};

// Parses the command line into cli's options. For --help or a bad command
// line, returns CLI11's exit code after printing the help or the error,
// unless `quiet`.
std::optional<int> parse(CLI::App& cli, int argc, const char* const* argv, bool quiet = false);

// For a catch block: prints the exception being handled as "PROGRAM: error:
// WHAT" on stderr (std::bad_alloc as "out of memory; OUT_OF_MEMORY_HINT")
// and returns 1, the apps' exit code for bad input or an I/O error.
int report_exception(const std::string& program, const std::string& out_of_memory_hint);

struct NothingPassed {};

// Returns work()'s exit code, or report_exception's for a std::exception it
// throws; a `Passed` exception propagates (one its caller reports).
template <class Passed = NothingPassed, class Work>
int run_reporting_errors(const std::string& program, const std::string& out_of_memory_hint, const Work& work) {
    try {
        return work();
    } catch (const Passed&) {
        throw;
    } catch (const std::exception&) {
        return report_exception(program, out_of_memory_hint);
    }
}

}  // namespace common
