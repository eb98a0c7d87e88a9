// Layers without parameters: activations, dropout and reshaping, as modules
// for Sequential.
#pragma once

#include <xgrad/core/random.hpp>
#include <xgrad/nn/module.hpp>
#include <xgrad/ops/dropout.hpp>
#include <xgrad/ops/elementwise.hpp>
#include <xgrad/ops/shape.hpp>

namespace xgrad {

class ReLU : public Module {
public:
    Var forward(const Var& x) override { return relu(x); }
};
class LeakyReLU : public Module {
public:
    explicit LeakyReLU(float negative_slope = 0.2f) : slope_(negative_slope) {}
    Var forward(const Var& x) override { return leaky_relu(x, slope_); }
    float negative_slope() const { return slope_; }

private:
    float slope_;
};
class Sigmoid : public Module {
public:
    Var forward(const Var& x) override { return sigmoid(x); }
};
class Tanh : public Module {
public:
    Var forward(const Var& x) override { return tanh(x); }
};

// Inverted dropout (see xgrad::dropout) while training; the identity in
// evaluation mode, where it draws nothing.
// It draws its masks from an Rng it is given rather than one it owns: the
// training loop's stream then decides every mask, and saving that one
// stream's state (as a checkpoint does) is enough to resume bit-exactly.
// `rng` must outlive the module.
class Dropout : public Module {
public:
    // Throws std::invalid_argument unless 0 <= p < 1.
    Dropout(float p, Rng& rng);
    Var forward(const Var& x) override { return is_training() ? dropout(x, p_, rng_) : x; }
    float p() const { return p_; }

private:
    float p_;
    Rng& rng_;
};

// (N, C, H, W) -> (N, C*H*W) by default; see xgrad::flatten.
class Flatten : public Module {
public:
    explicit Flatten(int start_axis = 1, int end_axis = -1) : start_(start_axis), end_(end_axis) {}
    Var forward(const Var& x) override { return flatten(x, start_, end_); }

private:
    int start_, end_;
};

// Reshapes to a fixed shape, -1 standing for the batch (or any one) size:
// Reshape({-1, 128, 7, 7}) turns (N, 6272) into (N, 128, 7, 7).
class Reshape : public Module {
public:
    explicit Reshape(ShapeSpec shape) : shape_(std::move(shape)) {}
    Var forward(const Var& x) override { return reshape(x, shape_); }

private:
    ShapeSpec shape_;
};

}  // namespace xgrad
