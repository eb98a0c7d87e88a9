// Internal: the one place that writes files that must never be half-written.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace xgrad::detail {

// Writes `parts` in order to a temporary file beside `path`, syncs it and
// renames it over `path`: a crash leaves either the old or the new file
// whole. Throws std::runtime_error naming the path, the step and the reason.
void write_file_atomically(const std::string& path, std::initializer_list<std::string_view> parts);

}  // namespace xgrad::detail
