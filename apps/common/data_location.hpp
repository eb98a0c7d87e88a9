// Where the apps find their MNIST-format data: --data DIR, or data/<dataset>
// as scripts/fetch_data.sh lays it out.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace common {

// NAME or NAME.gz inside dir; throws std::runtime_error saying how to get the data.
std::string find_idx(const std::string& dir, const std::string& name);

struct DataLocation {
    std::string dir;
    std::string dataset = "mnist";

    // `files` says which IDX files the app reads from the directory.
    void add_options(CLI::App& cli, const std::string& files) {
        cli.add_option("--data", dir, "Directory with " + files + " (or .gz); default data/<dataset>");
        cli.add_option("--dataset", dataset, "Which fetched data set to use when --data is not given")
            ->check(CLI::IsMember({"mnist", "fashion"}))
            ->capture_default_str();
    }
    std::string directory() const { return dir.empty() ? "data/" + dataset : dir; }
};

}  // namespace common
