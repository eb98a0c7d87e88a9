#pragma once

#include <xgrad/optim/optimizer.hpp>

namespace xgrad {

// p -= lr * v, v = momentum * v + grad (PyTorch's form; momentum 0 is plain SGD).
class SGD : public Optimizer {
public:
    // Throws std::invalid_argument unless momentum is a finite number >= 0
    // (and for what Optimizer refuses).
    SGD(std::vector<Var> parameters, float lr, float momentum = 0.f);
    void step() override;
    void save(Archive& archive, const std::string& prefix) const override;
    void load(const Archive& archive, const std::string& prefix) override;

private:
    float momentum_;
    std::vector<Tensor> velocity_;
};

}  // namespace xgrad
