#pragma once

#include <xgrad/optim/optimizer.hpp>

namespace xgrad {

struct AdamOptions {
    float lr = 1e-3f;
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float eps = 1e-8f;
};

// Adam with bias correction (Kingma & Ba 2015, Algorithm 1):
//   m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
// The corrections 1 - b^t are computed in double: rounding b^t to float
// first would cost them three digits in the first steps.
class Adam : public Optimizer {
public:
    // Throws std::invalid_argument unless 0 <= beta1, beta2 < 1 and eps is a
    // finite number >= 0 (and for what Optimizer refuses).
    explicit Adam(std::vector<Var> parameters, const AdamOptions& options = {});
    void step() override;
    void save(Archive& archive, const std::string& prefix) const override;
    void load(const Archive& archive, const std::string& prefix) override;
    long steps() const { return t_; }

protected:
    float decoupled_weight_decay_ = 0.f;

private:
    float beta1_, beta2_, eps_;  // the learning rate is Optimizer's lr(), which set_lr changes
    long t_ = 0;
    std::vector<Tensor> m_, v_;
};

// AdamW (Loshchilov & Hutter 2019): Adam plus decoupled weight decay, each
// step first shrinking every parameter by p -= lr * weight_decay * p.
class AdamW : public Adam {
public:
    explicit AdamW(std::vector<Var> parameters, const AdamOptions& options = {}, float weight_decay = 1e-2f);
};

}  // namespace xgrad
