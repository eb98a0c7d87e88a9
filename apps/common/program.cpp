#include "program.hpp"

#include <iostream>
#include <new>

#include "options.hpp"

namespace common {

void SharedOptions::add_shared_options(CLI::App& cli, const std::string& seed_help) {
    cli.add_option("--seed", seed, seed_help)->check(unsigned_in(0, UINT64_MAX))->capture_default_str();
    cli.add_option("--threads", threads,
                   "Threads for matrix products and elementwise work (results are identical for the same count)")
        ->check(unsigned_in(1, 256))
        ->capture_default_str();
}

std::optional<int> parse(CLI::App& cli, int argc, const char* const* argv, bool quiet) {
    try {
        cli.parse(argc, argv);
        return std::nullopt;
    } catch (const CLI::ParseError& e) {
        return quiet ? e.get_exit_code() : cli.exit(e);
    }
}

int report_exception(const std::string& program, const std::string& out_of_memory_hint) {
    try {
        throw;
    } catch (const std::bad_alloc&) {
        std::cerr << program << ": error: out of memory; " << out_of_memory_hint << "\n";
    } catch (const std::exception& e) {
        std::cerr << program << ": error: " << e.what() << "\n";
    }
    return 1;
}

}  // namespace common
