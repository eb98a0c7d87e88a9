// Calibration sets for the sample-quality metrics: real digits degraded in
// known ways, so that a metric's values for generated samples can be read
// against values whose quality is obvious (docs/evaluation.md).
#pragma once

#include <cstdint>
#include <vector>

#include <xgrad/core/tensor.hpp>

namespace quality {

// Each image (a row of side x side pixels) blurred with a Gaussian of
// standard deviation `sigma` pixels (a separable 5-tap kernel for sigma 1,
// 2 * ceil(2 sigma) + 1 taps in general, renormalised at the borders).
xgrad::Tensor blurred(const xgrad::Tensor& images, std::size_t side, double sigma);
// Row i the average of images i and (i + shift) mod n: two different real
// digits superimposed, each at half intensity.
xgrad::Tensor pair_averages(const xgrad::Tensor& images, std::size_t shift = 1);
// Row i the mean image of the class of image i: perfect class statistics,
// no individual digits.
xgrad::Tensor class_means(const xgrad::Tensor& images, const std::vector<std::uint8_t>& labels, std::size_t classes = 10);
// The images whose label is below `limit` (classes 0-4 for 5): real digits
// of only half the classes.
xgrad::Tensor classes_below(const xgrad::Tensor& images, const std::vector<std::uint8_t>& labels, std::size_t limit);

}  // namespace quality
