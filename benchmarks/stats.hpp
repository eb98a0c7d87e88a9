// Small helpers the benchmarks share for what they print.
#pragma once

#include <algorithm>
#include <cstddef>
#include <fstream>
#include <string>
#include <vector>

namespace bench {

// The q-quantile (0..1) of v, nearest rank; 0 for no values.
inline double percentile(std::vector<double> v, double q) {
    if (v.empty()) return 0.0;
    const std::size_t i = static_cast<std::size_t>(q * double(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
    return v[i];
}

// The 1-minute load average, as text.
inline std::string load_average() {
    std::ifstream in("/proc/loadavg");
    std::string one;
    in >> one;
    return one.empty() ? "unknown" : one;
}

}  // namespace bench
