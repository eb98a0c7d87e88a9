// Normalisation layers.
#pragma once

#include <vector>

#include <xgrad/nn/module.hpp>
#include <xgrad/ops/norm.hpp>

namespace xgrad {

// Batch normalisation over channel axis 1 (see xgrad::batch_norm): batch
// statistics while training (and running mean and variance updated, both
// buffers: saved in checkpoints, never touched by optimizers), the running
// statistics in evaluation mode. weight starts at 1, bias at 0, running mean
// 0 and variance 1, as in PyTorch.
class BatchNorm : public Module {
public:
    // Throws std::invalid_argument unless 0 <= momentum <= 1 and eps > 0 (finite).
    explicit BatchNorm(std::size_t channels, float momentum = 0.1f, float eps = 1e-5f, bool affine = true);
    Var forward(const Var& x) override;
    // relu (negative_slope 0) or leaky_relu of forward(x), as one op: the
    // same values in fewer passes over memory (Sequential runs a BatchNorm
    // and the ReLU or LeakyReLU after it so). Throws std::invalid_argument
    // for a slope < 0 or not finite.
    Var forward_rectified(const Var& x, float negative_slope);
    Var weight, bias, running_mean, running_var;
    // While false, training mode still normalises with batch statistics but
    // leaves the running ones alone (see StatisticsFrozen).
    bool update_running_stats = true;
    float momentum() const { return momentum_; }
    // A momentum of 1/k for the k-th of a series of batches makes the running
    // statistics the plain average of those batches (recomputing them, say).
    // Throws std::invalid_argument unless 0 <= momentum <= 1.
    void set_momentum(float momentum);

protected:
    // Throws ShapeError unless the layer takes x (any rank >= 2 here).
    virtual void check_input(const Var& /*x*/) const {}
    // Throws ShapeError naming the layer unless x has one of `ranks`.
    void require_rank(const Var& x, std::size_t rank_a, std::size_t rank_b, const char* layer) const;

private:
    Var normalize(const Var& x, std::optional<float> rectifier_slope);
    float momentum_, eps_;
};

// Over (N, C) or (N, C, L).
class BatchNorm1d : public BatchNorm {
public:
    using BatchNorm::BatchNorm;

protected:
    void check_input(const Var& x) const override;
};

// Over (N, C, H, W).
class BatchNorm2d : public BatchNorm {
public:
    using BatchNorm::BatchNorm;

protected:
    void check_input(const Var& x) const override;
};

// The batch norm layers of `net` and of every module below it, parents first.
std::vector<BatchNorm*> batch_norms(Module& net);

// While a StatisticsFrozen lives, the given batch norm layers leave their
// running statistics alone: in training mode they still normalise with each
// batch's own statistics, but do not fold them into the running ones. A GAN
// runs its generator so to make the discriminator's fake batch: only the
// generator's own update should move its statistics. Each layer gets its
// previous setting back at the end. It keeps a reference to the list, which
// must outlive it; for up to 16 layers it allocates nothing.
class StatisticsFrozen {
public:
    explicit StatisticsFrozen(const std::vector<BatchNorm*>& norms);
    ~StatisticsFrozen();
    StatisticsFrozen(const StatisticsFrozen&) = delete;
    StatisticsFrozen& operator=(const StatisticsFrozen&) = delete;

private:
    const std::vector<BatchNorm*>& norms_;
    xt::svector<bool, 16> were_updating_;
};

// Layer normalisation over the trailing axes of the given shape (see
// xgrad::layer_norm); weight 1 and bias 0 of that shape.
class LayerNorm : public Module {
public:
    explicit LayerNorm(const Shape& normalized_shape, float eps = 1e-5f, bool affine = true);
    Var forward(const Var& x) override;
    Var weight, bias;

private:
    Shape shape_;
    float eps_;
};

}  // namespace xgrad
