#include "options.hpp"

#include <sstream>

#include "numbers.hpp"

namespace common {

CLI::Validator unsigned_in(std::uint64_t lo, std::uint64_t hi) {
    const std::string expected = "expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            const std::optional<std::uint64_t> value = parse_unsigned(text);
            return value && *value >= lo && *value <= hi ? "" : expected + ", got '" + text + "'";
        },
        "INT in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

CLI::Validator real_in(double lo, double hi) {
    std::ostringstream range;
    range << lo << " to " << hi;
    const std::string expected = "expected a number from " + range.str();
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            const std::optional<double> value = parse_finite(text);
            return value && *value >= lo && *value <= hi ? "" : expected + ", got '" + text + "'";
        },
        "NUMBER in [" + range.str() + "]");
}

CLI::Validator positive_real_up_to(double hi) {
    std::ostringstream bound;
    bound << hi;
    const std::string expected = "expected a number greater than 0 and at most " + bound.str();
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            const std::optional<double> value = parse_finite(text);
            return value && *value > 0 && *value <= hi ? "" : expected + ", got '" + text + "'";
        },
        "NUMBER in (0, " + bound.str() + "]");
}

}  // namespace common
