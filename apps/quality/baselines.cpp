#include "baselines.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace quality {

using xgrad::Tensor;

namespace {

void check_labels(const Tensor& images, const std::vector<std::uint8_t>& labels, const char* what) {
    if (labels.size() != images.shape()[0]) {
        throw std::invalid_argument(std::string("quality::") + what + ": " + std::to_string(labels.size()) + " labels for " +
                                    std::to_string(images.shape()[0]) + " images");
    }
}

}  // namespace

Tensor blurred(const Tensor& images, std::size_t side, double sigma) {
    if (images.dimension() != 2 || images.shape()[1] != side * side || !(sigma > 0)) {
        throw std::invalid_argument("quality::blurred: images " + xgrad::shape_string(images) + " are not rows of " +
                                    std::to_string(side) + " x " + std::to_string(side) + " pixels, or sigma <= 0");
    }
    const long radius = static_cast<long>(std::ceil(2.0 * sigma));
    std::vector<double> kernel;
    for (long d = -radius; d <= radius; ++d) kernel.push_back(std::exp(-0.5 * double(d * d) / (sigma * sigma)));
    const auto n = static_cast<long>(side);
    Tensor out(images.shape(), 0.f);
    std::vector<double> across(side * side);
    for (std::size_t i = 0; i < images.shape()[0]; ++i) {
        const float* in = images.data() + i * side * side;
        // Rows, then columns; taps past the border are dropped and the rest renormalised.
        for (long y = 0; y < n; ++y) {
            for (long x = 0; x < n; ++x) {
                double s = 0, w = 0;
                for (long d = -radius; d <= radius; ++d) {
                    if (x + d < 0 || x + d >= n) continue;
                    s += kernel[std::size_t(d + radius)] * in[y * n + x + d];
                    w += kernel[std::size_t(d + radius)];
                }
                across[std::size_t(y * n + x)] = s / w;
            }
        }
        float* o = out.data() + i * side * side;
        for (long y = 0; y < n; ++y) {
            for (long x = 0; x < n; ++x) {
                double s = 0, w = 0;
                for (long d = -radius; d <= radius; ++d) {
                    if (y + d < 0 || y + d >= n) continue;
                    s += kernel[std::size_t(d + radius)] * across[std::size_t((y + d) * n + x)];
                    w += kernel[std::size_t(d + radius)];
                }
                o[y * n + x] = static_cast<float>(s / w);
            }
        }
    }
    return out;
}

Tensor pair_averages(const Tensor& images, std::size_t shift) {
    const std::size_t n = images.shape()[0], d = images.shape()[1];
    if (n < 2 || shift % n == 0)
        throw std::invalid_argument("quality::pair_averages: needs two images and a shift that pairs different ones");
    Tensor out(images.shape(), 0.f);
    for (std::size_t i = 0; i < n; ++i) {
        const float *a = images.data() + i * d, *b = images.data() + ((i + shift) % n) * d;
        for (std::size_t k = 0; k < d; ++k) out.data()[i * d + k] = 0.5f * (a[k] + b[k]);
    }
    return out;
}

Tensor class_means(const Tensor& images, const std::vector<std::uint8_t>& labels, std::size_t classes) {
    check_labels(images, labels, "class_means");
    const std::size_t n = images.shape()[0], d = images.shape()[1];
    std::vector<double> sums(classes * d, 0.0);
    std::vector<std::size_t> counts(classes, 0);
    for (std::size_t i = 0; i < n; ++i) {
        if (labels[i] >= classes)
            throw std::invalid_argument("quality::class_means: label " + std::to_string(labels[i]) +
                                        " >= " + std::to_string(classes));
        ++counts[labels[i]];
        for (std::size_t k = 0; k < d; ++k) sums[labels[i] * d + k] += images.data()[i * d + k];
    }
    Tensor out(images.shape(), 0.f);
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t k = 0; k < d; ++k)
            out.data()[i * d + k] = static_cast<float>(sums[labels[i] * d + k] / double(counts[labels[i]]));
    }
    return out;
}

Tensor classes_below(const Tensor& images, const std::vector<std::uint8_t>& labels, std::size_t limit) {
    check_labels(images, labels, "classes_below");
    const std::size_t d = images.shape()[1];
    std::size_t kept = 0;
    for (std::uint8_t l : labels) kept += l < limit;
    Tensor out(xgrad::Shape{kept, d}, 0.f);
    std::size_t r = 0;
    for (std::size_t i = 0; i < labels.size(); ++i) {
        if (labels[i] >= limit) continue;
        std::copy_n(images.data() + i * d, d, out.data() + r++ * d);
    }
    return out;
}

}  // namespace quality
