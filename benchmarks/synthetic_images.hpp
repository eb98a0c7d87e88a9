// A fixed in-memory set of random images for the benchmarks' GAN steps: a
// batch costs one memcpy per row, as gathering real images would.
#pragma once

#include <algorithm>
#include <cstring>

#include <xgrad.hpp>

#include "data.hpp"

namespace bench {

class SyntheticImages : public gan::DataSource {
public:
    SyntheticImages(std::size_t count, std::size_t dim, std::uint64_t seed) : images_(xgrad::Tensor::from_shape({count, dim})) {
        xgrad::Rng(seed).fill_uniform(images_, 0.f, 1.f);
    }
    std::size_t dim() const override { return images_.shape()[1]; }
    void sample(xgrad::Tensor& batch, xgrad::Rng& rng) override {
        const std::size_t rows = batch.shape()[0], d = dim();
        for (std::size_t r = 0; r < rows; ++r) {
            std::memcpy(batch.data() + r * d, images_.data() + rng.below(images_.shape()[0]) * d, d * sizeof(float));
        }
    }
    // Image i is of class i mod the number of classes.
    void sample_labelled(xgrad::Tensor& batch, xgrad::Tensor& classes, xgrad::Rng& rng) override {
        const std::size_t rows = batch.shape()[0], d = dim(), width = classes.shape()[1];
        std::fill(classes.begin(), classes.end(), 0.f);
        for (std::size_t r = 0; r < rows; ++r) {
            const std::size_t i = rng.below(images_.shape()[0]);
            std::memcpy(batch.data() + r * d, images_.data() + i * d, d * sizeof(float));
            classes(r, i % width) = 1.f;
        }
    }

private:
    xgrad::Tensor images_;
};

}  // namespace bench
