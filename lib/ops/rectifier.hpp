// Internal to lib/ops: the check batch_norm and conv2d make of the rectifier
// slope in their options (valid_rectifier_slope, lib/xgrad/ops/norm.hpp).
#pragma once

#include <optional>

namespace xgrad {

// Throws std::invalid_argument naming `op` and the slope unless it is unset
// or finite and >= 0.
void check_rectifier_slope(const char* op, const std::optional<float>& slope);

}  // namespace xgrad
