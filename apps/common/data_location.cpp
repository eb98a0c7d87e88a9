#include "data_location.hpp"

#include <filesystem>
#include <stdexcept>

namespace common {

std::string find_idx(const std::string& dir, const std::string& name) {
    for (const std::string& candidate : {dir + "/" + name, dir + "/" + name + ".gz"}) {
        if (std::filesystem::exists(candidate)) return candidate;
    }
    throw std::runtime_error("no " + name + "[.gz] in '" + dir +
                             "': run scripts/fetch_data.sh (see README) or pass --data DIR with MNIST-format IDX files");
}

}  // namespace common
