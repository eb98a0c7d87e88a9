#include <xgrad/nn/conv.hpp>

#include <stdexcept>
#include <string>

namespace xgrad {
namespace {

Var conv_weight(const Shape& shape, std::size_t fan_in, std::size_t fan_out, Init init, Rng& rng) {
    Tensor w = Tensor::from_shape(shape);
    initialize(w, init, fan_in, fan_out, rng);
    return Var(std::move(w), true);
}

}  // namespace

Conv2d::Conv2d(std::size_t in, std::size_t out, Size2 kernel, Rng& rng, const Conv2dOptions& options, Init init, bool with_bias)
    : options_(options) {
    const std::size_t area = kernel.h * kernel.w;
    weight = conv_weight({out, in, kernel.h, kernel.w}, in * area, out * area, init, rng);
    if (with_bias) bias = Var(initial_bias(out, init, in * area, rng), true);
    register_weight_and_bias();
}

Var Conv2d::forward(const Var& x) { return conv2d(x, effective_weight(), bias, options_); }

Var Conv2d::forward_rectified(const Var& x, float negative_slope) {
    if (options_.rectifier_slope) {
        throw std::invalid_argument("xgrad::Conv2d::forward_rectified: the layer has a rectifier of its own (slope " +
                                    std::to_string(*options_.rectifier_slope) + ")");
    }
    Conv2dOptions rectified = options_;
    rectified.rectifier_slope = negative_slope;
    return conv2d(x, effective_weight(), bias, rectified);
}

ConvTranspose2d::ConvTranspose2d(std::size_t in, std::size_t out, Size2 kernel, Rng& rng, const ConvTranspose2dOptions& options,
                                 Init init, bool with_bias)
    : options_(options) {
    const std::size_t area = kernel.h * kernel.w;
    weight = conv_weight({in, out, kernel.h, kernel.w}, out * area, in * area, init, rng);
    if (with_bias) bias = Var(initial_bias(out, init, out * area, rng), true);
    register_weight_and_bias();
}

Var ConvTranspose2d::forward(const Var& x) { return conv_transpose2d(x, effective_weight(), bias, options_); }

}  // namespace xgrad
