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

namespace test {

// SPLIT-images-idx3-ubyte and SPLIT-labels-idx1-ubyte in dir: `count`
// random 28 x 28 images, labels cycling through 0-9.
inline void write_random_split(const std::filesystem::path& dir, const std::string& split, std::size_t count,
                               std::uint64_t seed = 1) {
    xgrad::IdxImages images;
    images.count = count;
    images.rows = images.cols = 28;
    xgrad::Rng rng(seed);
    for (std::size_t i = 0; i < count * 784; ++i) images.pixels.push_back(static_cast<std::uint8_t>(rng.below(256)));
    std::vector<std::uint8_t> labels;
    for (std::size_t i = 0; i < count; ++i) labels.push_back(static_cast<std::uint8_t>(i % 10));
    xgrad::write_idx_images((dir / (split + "-images-idx3-ubyte")).string(), images);
    xgrad::write_idx_labels((dir / (split + "-labels-idx1-ubyte")).string(), labels);
}

// gan::run_app with these arguments after the program name.
inline int run_mnist_gan(std::vector<std::string> args) {
    args.insert(args.begin(), "mnist_gan");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    return gan::run_app(static_cast<int>(argv.size()), argv.data());
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
