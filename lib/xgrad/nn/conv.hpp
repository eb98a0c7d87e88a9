// Convolution, pooling and upsampling layers (NCHW).
#pragma once

#include <xgrad/nn/init.hpp>
#include <xgrad/nn/weighted_layer.hpp>
#include <xgrad/ops/conv.hpp>
#include <xgrad/ops/pool.hpp>

namespace xgrad {

// conv2d with weight (out, in, kH, kW) initialised with `init` (fan-in
// in * kH * kW, fan-out out * kH * kW), bias (out) by initial_bias or none.
class Conv2d : public WeightedLayer {
public:
    Conv2d(std::size_t in, std::size_t out, Size2 kernel, Rng& rng, const Conv2dOptions& options = {}, Init init = Init::pytorch,
           bool bias = true);
    Var forward(const Var& x) override;
    // relu (negative_slope 0) or leaky_relu of forward(x), as one op (see
    // Conv2dOptions::rectifier_slope; Sequential runs a Conv2d and the ReLU
    // or LeakyReLU after it so). std::invalid_argument for a slope < 0 or
    // not finite, and for a layer whose options have a rectifier already.
    Var forward_rectified(const Var& x, float negative_slope);
    const Conv2dOptions& options() const { return options_; }

private:
    Conv2dOptions options_;
};

// conv_transpose2d with weight (in, out, kH, kW) as in PyTorch, whose fans
// it also takes: fan-in out * kH * kW (the weight's dim 1), fan-out
// in * kH * kW; bias (out) by initial_bias or none.
class ConvTranspose2d : public WeightedLayer {
public:
    ConvTranspose2d(std::size_t in, std::size_t out, Size2 kernel, Rng& rng, const ConvTranspose2dOptions& options = {},
                    Init init = Init::pytorch, bool bias = true);
    Var forward(const Var& x) override;
    std::size_t output_dim() const override { return 1; }

private:
    ConvTranspose2dOptions options_;
};

class MaxPool2d : public Module {
public:
    explicit MaxPool2d(Size2 kernel, Size2 stride = 0, Size2 padding = 0) : kernel_(kernel), stride_(stride), padding_(padding) {}
    Var forward(const Var& x) override { return max_pool2d(x, kernel_, stride_, padding_); }

private:
    Size2 kernel_, stride_, padding_;
};

class AvgPool2d : public Module {
public:
    explicit AvgPool2d(Size2 kernel, Size2 stride = 0, Size2 padding = 0) : kernel_(kernel), stride_(stride), padding_(padding) {}
    Var forward(const Var& x) override { return avg_pool2d(x, kernel_, stride_, padding_); }

private:
    Size2 kernel_, stride_, padding_;
};

// Nearest-neighbour upsampling by an integer factor.
class Upsample : public Module {
public:
    explicit Upsample(Size2 scale) : scale_(scale) {}
    Var forward(const Var& x) override { return upsample_nearest2d(x, scale_); }

private:
    Size2 scale_;
};

}  // namespace xgrad
