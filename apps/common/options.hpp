// Validators for the apps' numeric options. CLI11 2.1.2 reads "-1" and
// "18446744073709551617" as 2^64 - 1, "010" as octal and "1e23" as an
// integer, and lets "nan" through CLI::Range; these accept only what
// numbers.hpp parses, in range. Use: cli.add_option(...)->check(unsigned_in(1, 100)).
// A rejected value fails as "--NAME: expected an integer from LO to HI, got 'TEXT'".
#pragma once

#include <cstdint>

#include <CLI/CLI.hpp>

namespace common {

CLI::Validator unsigned_in(std::uint64_t lo, std::uint64_t hi);
CLI::Validator real_in(double lo, double hi);
// A number greater than 0 (however small) and at most hi: a duration, say.
// Fails as "--NAME: expected a number greater than 0 and at most HI, got 'TEXT'".
CLI::Validator positive_real_up_to(double hi);

}  // namespace common
