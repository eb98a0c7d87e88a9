// Tiny MNIST-format data sets for the tests that run the apps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <xgrad/core/random.hpp>
#include <xgrad/io/idx.hpp>

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

}  // namespace test
