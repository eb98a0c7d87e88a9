// Strict numbers for the apps' command lines (options.hpp) and checkpoint
// fields: plain decimal digits only, no sign, spaces, prefixes or trailing
// text; reals finite. Empty optionals for anything else.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace common {

std::optional<std::uint64_t> parse_unsigned(std::string_view text);
std::optional<double> parse_finite(std::string_view text);

}  // namespace common
