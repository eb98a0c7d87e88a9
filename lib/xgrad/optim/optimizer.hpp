// Optimizers: each updates exactly the parameters it was given, and only
// those that currently require a gradient (frozen ones are left alone).
// step() changes parameter values in place, which marks them modified: a
// graph recorded before the step refuses to run backward afterwards.
#pragma once

#include <string>
#include <vector>

#include <xgrad/core/archive.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

class Optimizer {
public:
    // Throws std::invalid_argument for a parameter that is not a leaf or is
    // listed twice, or a learning rate that is not a finite number >= 0.
    Optimizer(std::vector<Var> parameters, float lr);
    virtual ~Optimizer() = default;
    virtual void step() = 0;
    void zero_grad();
    const std::vector<Var>& parameters() const { return parameters_; }

    float lr() const { return lr_; }
    // For learning-rate schedules (schedule.hpp); the optimizer's state is kept.
    void set_lr(float lr);

    // The optimizer's own state (moments, step count) under `prefix`.
    virtual void save(Archive& archive, const std::string& prefix) const = 0;
    // All or nothing: every entry is checked before any is taken, so a failed
    // load leaves the optimizer as it was.
    virtual void load(const Archive& archive, const std::string& prefix) = 0;

protected:
    std::vector<Var> parameters_;
    float lr_;
};

// torch.nn.utils.clip_grad_norm_: scales the gradients of `parameters`
// (those requiring one) by max_norm / (norm + 1e-6) when that is below 1,
// norm being their joint L2 norm (summed in double), and returns the norm
// before scaling. As in PyTorch a non-finite norm scales them too: by 0
// for an infinite norm (an infinite element becomes NaN), to NaN for a NaN
// norm; with error_if_nonfinite it throws std::runtime_error instead,
// changing nothing. Throws std::invalid_argument for a max_norm that is
// negative or NaN.
double clip_grad_norm(const std::vector<Var>& parameters, double max_norm, bool error_if_nonfinite = false);

}  // namespace xgrad
