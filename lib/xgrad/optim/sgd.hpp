#pragma once

#include <xgrad/optim/optimizer.hpp>

namespace xgrad {

// torch.optim.SGD's options, with its defaults.
struct SGDOptions {
    float momentum = 0.f;
    float dampening = 0.f;     // the velocity takes (1 - dampening) * d from the second step on
    float weight_decay = 0.f;  // L2: d = grad + weight_decay * p
    bool nesterov = false;     // step along d + momentum * v instead of v
};

// PyTorch's SGD: d = grad + weight_decay * p; with momentum, v = d on the
// first step and v = momentum * v + (1 - dampening) * d after it, then
// p -= lr * (nesterov ? d + momentum * v : v); without momentum p -= lr * d.
// A loaded optimizer counts as past its first step (the rule only differs
// with dampening).
class SGD : public Optimizer {
public:
    // Throws std::invalid_argument unless momentum, dampening and
    // weight_decay are finite numbers >= 0, or for nesterov without a
    // momentum > 0 and dampening 0 (as PyTorch), and for what Optimizer refuses.
    SGD(std::vector<Var> parameters, float lr, const SGDOptions& options);
    SGD(std::vector<Var> parameters, float lr, float momentum = 0.f);
    void step() override;
    void save(Archive& archive, const std::string& prefix) const override;
    void load(const Archive& archive, const std::string& prefix) override;
    const SGDOptions& options() const { return options_; }

private:
    SGDOptions options_;
    bool started_ = false;
    std::vector<Tensor> velocity_;
};

}  // namespace xgrad
