// What the tests of the apps share: tiny MNIST-format data sets, running
// mnist_gan in the test process, and reading the files the apps write.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <xgrad/core/random.hpp>
#include <xgrad/io/idx.hpp>

#include "app.hpp"
#include "idx_files.hpp"

namespace test {

// gan::run_app with these arguments after the program name.
inline int run_mnist_gan(std::vector<std::string> args) {
    args.insert(args.begin(), "mnist_gan");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    return gan::run_app(static_cast<int>(argv.size()), argv.data());
}

// The arguments of a tiny mnist_gan run (the mlp preset at batch 8, 16
// hidden units, 10 noise dimensions) on `data`, writing to `out`; callers
// add how often it logs, draws and checkpoints.
inline std::vector<std::string> tiny_run(const std::filesystem::path& data, const std::filesystem::path& out, long steps) {
    return {"--data", data.string(), "--out", out.string(), "--steps", std::to_string(steps), "--preset", "mlp", "--batch",
            "8",      "--hidden",    "16",    "--z-dim",    "10"};
}

inline std::vector<std::string> lines_of(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

inline std::string file_bytes(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace test
