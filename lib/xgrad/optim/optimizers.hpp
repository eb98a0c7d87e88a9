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
    explicit Optimizer(std::vector<Var> parameters);
    virtual ~Optimizer() = default;
    virtual void step() = 0;
    void zero_grad();
    const std::vector<Var>& parameters() const { return parameters_; }

    // The optimizer's own state (moments, step count) under `prefix`.
    virtual void save(Archive& archive, const std::string& prefix) const = 0;
    virtual void load(const Archive& archive, const std::string& prefix) = 0;

protected:
    std::vector<Var> parameters_;
};

// p -= lr * v, v = momentum * v + grad (PyTorch's form; momentum 0 is plain SGD).
class SGD : public Optimizer {
public:
    SGD(std::vector<Var> parameters, float lr, float momentum = 0.f);
    void step() override;
    void save(Archive& archive, const std::string& prefix) const override;
    void load(const Archive& archive, const std::string& prefix) override;

private:
    float lr_, momentum_;
    std::vector<Tensor> velocity_;
};

struct AdamOptions {
    float lr = 1e-3f;
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float eps = 1e-8f;
};

// Adam with bias correction (Kingma & Ba 2015, Algorithm 1):
//   m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
class Adam : public Optimizer {
public:
    Adam(std::vector<Var> parameters, const AdamOptions& options = {});
    void step() override;
    void save(Archive& archive, const std::string& prefix) const override;
    void load(const Archive& archive, const std::string& prefix) override;
    long steps() const { return t_; }
    // For learning-rate schedules; the moments are kept.
    void set_lr(float lr) { options_.lr = lr; }
    float lr() const { return options_.lr; }

private:
    AdamOptions options_;
    long t_ = 0;
    std::vector<Tensor> m_, v_;
};

}  // namespace xgrad
